"""Lossless compression with Zstandard (``zstd``): the same bits arrive, in fewer bytes.

Float bytes compress poorly as they are; two steps make them compress better. The bytes of each
array are regrouped by position within a value (all first bytes, then all second bytes, ...), so
that the slowly varying sign and exponent bytes sit together. And an update is sent as the
exclusive-or of the trained and the received values' bits (``fedbus.fl.compression.wire``):
where a weight moved little, the leading bits agree and the xor is zeros. The receiver undoes
both exactly.

A frame is read back only up to the size its header announces (the array's dtype and shape):
a frame that holds more (a decompression bomb) or less is refused before more memory is spent.

>>> import numpy as np
>>> codec = Zstd(level=3)
>>> values = np.zeros(1000, dtype=np.float32)
>>> encoded = codec.encode(values, np.random.default_rng(0))
>>> encoded.parts[""].nbytes < values.nbytes / 50
True
>>> bool((codec.decode(encoded, np.dtype(np.float32), (1000,)) == values).all())
True
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import zstandard

from fedbus.errors import DecodeError, InvalidArgumentError
from fedbus.fl.compression.base import AnyArray, Codec, Encoded, register_codec

__all__ = ["Zstd"]

#: Bytes read from a frame at a time while decompressing.
_CHUNK = 1 << 22


class Zstd(Codec):
    """Zstandard on the byte-regrouped bits of each array.

    Parameters
    ----------
    level
        Zstandard's compression level, 1 (fastest) to 22 (smallest).
    """

    name = "zstd"
    lossy = False

    def __init__(self, level: int = 3) -> None:
        if isinstance(level, bool) or not isinstance(level, int) or not 1 <= level <= 22:
            raise InvalidArgumentError(f"Zstd: level must be an int in 1..22, got {level!r}")
        self.level = level

    def encode(self, values: AnyArray, rng: np.random.Generator) -> Encoded:
        """One Zstandard frame (announcing its size) of the regrouped bytes of ``values``."""
        flat = np.ascontiguousarray(values).reshape(-1)
        grouped = flat.view(np.uint8).reshape(flat.size, flat.itemsize).T
        # a compressor per call: one may be used by one thread only, and clients run in several
        frame = zstandard.ZstdCompressor(level=self.level).compress(grouped.tobytes())
        return Encoded({"": np.frombuffer(frame, dtype=np.uint8)})

    def decode(self, encoded: Encoded, dtype: np.dtype[Any], shape: tuple[int, ...]) -> AnyArray:
        """The array of ``dtype`` and ``shape`` whose bytes the frame holds, exactly."""
        frame = encoded.parts[""]
        if frame.dtype != np.uint8 or frame.ndim != 1:
            raise DecodeError(f"zstd: expected a frame of uint8, got {frame.dtype.name}")
        size = math.prod(shape)
        expected = size * dtype.itemsize
        raw = _decompress(frame.tobytes(), expected)
        grouped = np.frombuffer(raw, dtype=np.uint8).reshape(dtype.itemsize, size)
        return np.ascontiguousarray(grouped.T).view(dtype).reshape(shape)

    def __repr__(self) -> str:
        return f"Zstd(level={self.level})"


def _decompress(frame: bytes, expected: int) -> bytes:
    """The ``expected`` bytes a frame holds; ``DecodeError`` if it holds other than that.

    Never more than ``expected + 1`` bytes are produced, whatever the frame claims.
    """
    try:
        announced = zstandard.frame_content_size(frame)
    except zstandard.ZstdError as exc:
        raise DecodeError(f"zstd: not a Zstandard frame ({exc})") from exc
    if announced != expected:
        raise DecodeError(
            f"zstd: the frame announces {announced} bytes; the array's header "
            f"{expected} (-1: not announced)"
        )
    chunks: list[bytes] = []
    produced = 0
    try:
        with zstandard.ZstdDecompressor().stream_reader(frame, read_across_frames=True) as reader:
            while produced <= expected:
                chunk = reader.read(min(_CHUNK, expected + 1 - produced))
                if not chunk:
                    break
                chunks.append(chunk)
                produced += len(chunk)
    except zstandard.ZstdError as exc:
        raise DecodeError(f"zstd: the frame is corrupt ({exc})") from exc
    if produced != expected:
        what = "more" if produced > expected else f"only {produced}"
        raise DecodeError(f"zstd: the frame holds {what} bytes, the header announces {expected}")
    return b"".join(chunks)


register_codec("zstd", lambda options: Zstd(options.zstd_level))
