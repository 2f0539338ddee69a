"""Stochastic quantisation to 8 or 4 bits per value (``int8``, ``int4``).

Each array is mapped onto ``2^bits`` evenly spaced levels between its smallest and its largest
value (``offset`` and ``scale``, the step between levels, travel in the header). A value between
two levels goes to the upper one with probability equal to how far it lies toward it, so the
decoded value is right on average (unbiased): the rounding errors of many clients cancel out in
the server's average instead of adding up. ``int4`` packs two values per byte, the first in the
low four bits; an odd-length array leaves the last high half zero.

>>> import numpy as np
>>> codec = Int8()
>>> values = np.array([0.0, 0.5, 1.0], dtype=np.float32)
>>> encoded = codec.encode(values, np.random.default_rng(0))
>>> encoded.parts[""].dtype, encoded.offset, round(encoded.scale * 255, 6)
(dtype('uint8'), 0.0, 1.0)
>>> codec.decode(encoded, np.dtype(np.float32), (3,))[[0, 2]]
array([0., 1.], dtype=float32)
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from fedbus.errors import DecodeError, InvalidArgumentError
from fedbus.fl.compression.base import AnyArray, Codec, Encoded, payload, register_codec

__all__ = ["Int4", "Int8", "StochasticQuantizer", "pack_nibbles", "unpack_nibbles"]


class StochasticQuantizer(Codec):
    """Unbiased stochastic rounding of each array to ``2^bits`` levels (``Int8``, ``Int4``)."""

    lossy = True
    bits: ClassVar[int]

    @property
    def levels(self) -> int:
        """The highest code: ``2^bits - 1``."""
        return int(2**self.bits - 1)

    def encode(self, values: AnyArray, rng: np.random.Generator) -> Encoded:
        """The codes of ``values`` (uint8, packed by two for 4 bits), with offset and scale."""
        flat = values.reshape(-1)
        if flat.size == 0:
            return Encoded({"": np.empty(0, np.uint8)})
        # float32 arithmetic for float16/32 (half the memory); float64 stays float64
        work = flat.astype(_working_dtype(flat.dtype), copy=False)
        low, high = float(work.min()), float(work.max())
        scale = (high - low) / self.levels
        if not math.isfinite(scale):
            raise InvalidArgumentError(
                f"int{self.bits}: the values span [{low}, {high}], too wide to quantise"
            )
        if scale == 0:
            codes = np.zeros(flat.size, np.uint8)
        else:
            position = (work - work.dtype.type(low)) / work.dtype.type(scale)
            position += rng.random(flat.size, dtype=work.dtype)
            np.floor(position, out=position)
            # rounding may lift the top value a hair past the last level
            np.clip(position, 0, self.levels, out=position)
            codes = position.astype(np.uint8)
        packed = codes if self.bits == 8 else pack_nibbles(codes)
        return Encoded({"": packed}, offset=low, scale=scale)

    def decode(self, encoded: Encoded, dtype: np.dtype[Any], shape: tuple[int, ...]) -> AnyArray:
        """``offset + code * scale`` for each value, as ``dtype`` in ``shape``."""
        size = math.prod(shape)
        length = size if self.bits == 8 else (size + 1) // 2
        codes = payload(encoded, "", np.uint8, length)
        offset, scale = encoded.offset, encoded.scale
        if not (math.isfinite(offset) and math.isfinite(scale) and scale >= 0):
            raise DecodeError(f"int{self.bits}: offset {offset} and scale {scale} are not usable")
        if self.bits == 4:
            codes = unpack_nibbles(codes, size)
        work = _working_dtype(dtype)
        values = codes.astype(work) * work.type(scale) + work.type(offset)
        decoded: AnyArray = values.astype(dtype, copy=False).reshape(shape)
        if not bool(np.isfinite(decoded).all()):
            raise DecodeError(f"int{self.bits}: the decoded values overflow {dtype.name}")
        return decoded


class Int8(StochasticQuantizer):
    """Stochastic quantisation to 256 levels: one byte per value."""

    name = "int8"
    bits = 8


class Int4(StochasticQuantizer):
    """Stochastic quantisation to 16 levels: two values per byte."""

    name = "int4"
    bits = 4


def _working_dtype(dtype: np.dtype[Any]) -> np.dtype[Any]:
    return np.dtype(np.float64 if dtype == np.float64 else np.float32)


def pack_nibbles(codes: AnyArray) -> AnyArray:
    """Two 4-bit codes per byte, the first in the low half; an odd count pads with zero.

    >>> pack_nibbles(np.array([1, 2, 3], dtype=np.uint8))
    array([33,  3], dtype=uint8)
    """
    if codes.size % 2:
        codes = np.append(codes, np.uint8(0))
    return np.ascontiguousarray(codes[0::2] | (codes[1::2] << 4))


def unpack_nibbles(packed: AnyArray, size: int) -> AnyArray:
    """The ``size`` codes that ``pack_nibbles`` packed; ``DecodeError`` if the padding is not 0.

    >>> unpack_nibbles(np.array([33, 3], dtype=np.uint8), 3)
    array([1, 2, 3], dtype=uint8)
    """
    codes = np.empty(packed.size * 2, np.uint8)
    codes[0::2] = packed & 0x0F
    codes[1::2] = packed >> 4
    if codes.size > size and codes[size:].any():
        raise DecodeError("int4: the padding of an odd-length array is not zero")
    return codes[:size]


register_codec("int8", lambda options: Int8())
register_codec("int4", lambda options: Int4())
