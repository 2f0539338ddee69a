"""A compressed model inside a message: the payload arrays and the header that reads them.

Compression replaces a content's ``arrays`` record by two records:

- ``compressed`` (ArrayRecord): the payloads, named ``"<i>"`` or ``"<i>.<part>"`` for the
  ``i``-th array of the model (top-k has two parts, ``indices`` and ``values``);
- ``compression`` (ConfigRecord): ``version`` (1), ``method``, and one list entry per array:
  ``names``, ``dtypes``, ``ranks`` and ``dims`` (the shapes, concatenated), ``encodings`` (a
  method, or ``raw`` for an array that travels as it is: integers, bfloat16), ``relative``
  (True: the payload is an update to add to the model the receiver sent; for a lossless method
  the exclusive-or of the bits), ``offsets`` and ``scales`` (the quantisers' numbers).

A content without ``compression`` is not compressed and passes untouched, so nodes with and
without compression, and messages without a model (evaluation replies), mix freely. With the
``arrays`` record gone, a node without the mod fails loudly ("expected an ArrayRecord named
'arrays'") instead of training on codes.

Reading trusts nothing in the header: every list must have one entry per array and entries of
the right type; dtypes, ranks, dimensions and counts are bounded; a ``relative`` array must
match the model the receiver sent in name, dtype and shape; without such a model the arrays
decoded may hold at most ``max_elements`` values together; the payload names must be exactly
those the header implies. Anything else raises ``DecodeError``.

>>> import numpy as np
>>> from fedbus.fl.compression.base import build_codec
>>> model = ArrayRecord({"w": np.ones(4, np.float32), "steps": np.array([3])})
>>> packed = compress(model, build_codec("int8"), np.random.default_rng(0))
>>> sorted(packed.arrays), list(packed.header["encodings"])
(['0', '1'], ['int8', 'raw'])
>>> decompress(packed.arrays, packed.header)["w"].numpy()
array([1., 1., 1., 1.], dtype=float32)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from fedbus.errors import DecodeError, InvalidArgumentError, InvalidTypeError
from fedbus.fl.compression.base import AnyArray, Codec, Encoded, decoder
from fedbus.fl.protocol import ARRAYS
from fedbus.message import ArrayRecord, ConfigRecord, PackedList, RecordDict
from fedbus.message.array import DTYPE_NAMES, MAX_RANK, Array

__all__ = [
    "COMPRESSED",
    "COMPRESSION",
    "FORMAT_VERSION",
    "MAX_ARRAYS",
    "MAX_ELEMENTS",
    "Compressed",
    "compress",
    "compress_content",
    "decompress",
    "decompress_content",
    "is_compressed",
]

#: Record names: the payload arrays, and the header that reads them.
COMPRESSED: Final = "compressed"
COMPRESSION: Final = "compression"
#: The header's ``version``: a reader refuses any other.
FORMAT_VERSION: Final = 1
#: Most arrays one compressed model may have (a 1,000-layer network has a few thousand).
MAX_ARRAYS: Final = 100_000
#: Most values decoded together without a model to compare with: 2^28 float32 values is 1 GiB.
MAX_ELEMENTS: Final = 1 << 28
#: Arrays compressed; any other dtype travels raw.
FLOAT_DTYPES: Final = ("float16", "float32", "float64")
#: The encoding of an array that travels as it is.
RAW: Final = "raw"

_UNSIGNED = {2: np.uint16, 4: np.uint32, 8: np.uint64}


@dataclass(slots=True)
class Compressed:
    """A model compressed: the payloads, their header, and what error feedback keeps.

    ``residual`` holds, for each array compressed relative to the base by a codec with error
    feedback, the part of the update (plus the previous residual) that was not sent.
    """

    arrays: ArrayRecord
    header: ConfigRecord
    residual: dict[str, AnyArray] = field(default_factory=dict)


def compress(
    arrays: ArrayRecord,
    codec: Codec,
    rng: np.random.Generator,
    *,
    base: ArrayRecord | None = None,
    residual: Mapping[str, AnyArray] | None = None,
) -> Compressed:
    """Compress the float arrays of ``arrays`` with ``codec``.

    Parameters
    ----------
    arrays
        The model to send.
    codec
        How to compress each float array.
    rng
        Randomness of a stochastic codec.
    base
        The model the receiver already has (a client's received model): each array with the
        same name, dtype and shape in it is sent relative to it. With a base, a lossy codec
        sends the other arrays raw, never approximated weights.
    residual
        Error feedback's residual from the last update, added to this one (arrays whose shape
        no longer fits are left out).

    Raises
    ------
    InvalidArgumentError
        A lossy codec was given non-finite values (which a receiver would refuse anyway).
    """
    header: dict[str, list[Any]] = {key: [] for key in _LISTS}
    payloads: dict[str, AnyArray | Array] = {}
    kept: dict[str, AnyArray] = {}
    for index, (name, array) in enumerate(arrays.items()):
        reference = _reference(base, name, array)
        encoding = codec.name
        if array.dtype not in FLOAT_DTYPES or (
            base is not None and reference is None and codec.lossy
        ):
            encoding = RAW
        header["names"].append(name)
        header["dtypes"].append(array.dtype)
        header["ranks"].append(len(array.shape))
        header["dims"].extend(array.shape)
        header["encodings"].append(encoding)
        header["relative"].append(reference is not None and encoding != RAW)
        if encoding == RAW:
            header["offsets"].append(0.0)
            header["scales"].append(0.0)
            payloads[str(index)] = array
            continue
        values = _to_send(name, array.numpy(), reference, codec)
        if codec.error_feedback and reference is not None:
            values = _with_residual(values, (residual or {}).get(name))
        encoded = codec.encode(values, rng)
        if codec.error_feedback and reference is not None:
            sent = codec.decode(encoded, values.dtype, values.shape)
            kept[name] = np.asarray(values - sent)
        header["offsets"].append(float(encoded.offset))
        header["scales"].append(float(encoded.scale))
        for part in codec.parts:
            payloads[_key(index, part)] = encoded.parts[part]
    record = ConfigRecord({"version": FORMAT_VERSION, "method": codec.name, **header})
    return Compressed(ArrayRecord(payloads), record, kept)


_LISTS: Final = ("names", "dtypes", "ranks", "dims", "encodings", "relative", "offsets", "scales")


def _reference(base: ArrayRecord | None, name: str, array: Array) -> AnyArray | None:
    """``base[name]`` as NumPy when it has ``array``'s float dtype and shape, else None."""
    if base is None or array.dtype not in FLOAT_DTYPES:
        return None
    other = base.get(name)
    if other is None or other.dtype != array.dtype or other.shape != array.shape:
        return None
    return other.numpy()


def _to_send(name: str, values: AnyArray, reference: AnyArray | None, codec: Codec) -> AnyArray:
    """What ``codec`` compresses: the values, or their change from ``reference``."""
    if codec.lossy:
        if reference is not None:
            values = np.asarray(values - reference)  # a 0-d difference is a scalar otherwise
        if not bool(np.isfinite(values).all()):
            raise InvalidArgumentError(
                f"cannot compress {name!r} with {codec.name}: it has non-finite values"
            )
        return values
    if reference is None:
        return values
    return _xor(values, reference)


def _xor(values: AnyArray, other: AnyArray) -> AnyArray:
    """The exclusive-or of two float arrays' bits, as an array of their dtype."""
    unsigned = _UNSIGNED[values.dtype.itemsize]
    xored: AnyArray = np.asarray(np.bitwise_xor(values.view(unsigned), other.view(unsigned)))
    return xored.view(values.dtype)


def _with_residual(values: AnyArray, residual: AnyArray | None) -> AnyArray:
    if residual is None or residual.shape != values.shape:
        return values
    return np.asarray(values + residual).astype(values.dtype, copy=False)


def _key(index: int, part: str) -> str:
    return f"{index}.{part}" if part else str(index)


# -- reading ------------------------------------------------------------------------------------
def decompress(
    payloads: ArrayRecord,
    header: ConfigRecord,
    *,
    base: ArrayRecord | None = None,
    max_elements: int = MAX_ELEMENTS,
) -> ArrayRecord:
    """The model that ``payloads`` and ``header`` hold (``base``: the model sent, for the
    ``relative`` arrays); ``DecodeError`` for anything malformed (see the module docstring)."""
    try:
        entries = _read_header(header)
        _check_payload_names(payloads, entries)
        budget = max_elements
        arrays: dict[str, AnyArray | Array] = {}
        for index, entry in enumerate(entries):
            if entry.encoding == RAW:
                arrays[entry.name] = _raw(payloads[str(index)], entry)
                continue
            reference = _base_for(base, entry) if entry.relative else None
            if reference is None:
                budget -= entry.size
                if budget < 0:
                    raise DecodeError(f"the compressed arrays hold more than {max_elements} values")
            arrays[entry.name] = _decode_one(payloads, index, entry, reference)
        return ArrayRecord(arrays)
    except DecodeError:
        raise
    except (InvalidArgumentError, InvalidTypeError, ValueError, TypeError) as exc:
        raise DecodeError(f"malformed compressed model: {exc}") from exc


@dataclass(frozen=True, slots=True)
class _Entry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    encoding: str
    relative: bool
    offset: float
    scale: float

    @property
    def size(self) -> int:
        return math.prod(self.shape)


def _read_header(header: ConfigRecord) -> list[_Entry]:
    version = header.get("version")
    if version != FORMAT_VERSION or isinstance(version, bool):
        raise DecodeError(
            f"compression header version {version!r}; this node reads {FORMAT_VERSION}"
        )
    names = _list(header, "names", str)
    count = len(names)
    if count > MAX_ARRAYS:
        raise DecodeError(f"the compressed model has {count} arrays, more than {MAX_ARRAYS}")
    lists = {key: _list(header, key, kind) for key, kind in _KINDS.items()}
    for key, values in lists.items():
        if key != "dims" and len(values) != count:
            raise DecodeError(f"compression header {key!r}: {len(values)} entries for {count}")
    dims = lists["dims"]
    if sum(lists["ranks"]) != len(dims) or any(
        not 0 <= rank <= MAX_RANK for rank in lists["ranks"]
    ):
        raise DecodeError("compression header: ranks and dims do not fit together")
    entries, start = [], 0
    for index, name in enumerate(names):
        rank = lists["ranks"][index]
        shape = tuple(dims[start : start + rank])
        start += rank
        dtype, encoding = lists["dtypes"][index], lists["encodings"][index]
        if dtype not in DTYPE_NAMES or any(dim < 0 for dim in shape):
            raise DecodeError(f"array {name[:64]!r}: dtype {dtype[:16]!r} or shape {shape} refused")
        if encoding != RAW:
            decoder(encoding)  # a known method, or DecodeError
            if dtype not in FLOAT_DTYPES:
                raise DecodeError(f"array {name[:64]!r}: {encoding} compresses floats, not {dtype}")
        entries.append(
            _Entry(
                name,
                dtype,
                shape,
                encoding,
                lists["relative"][index],
                lists["offsets"][index],
                lists["scales"][index],
            )
        )
    if len({entry.name for entry in entries}) != count:
        raise DecodeError("compression header: array names repeat")
    return entries


_KINDS: Final[dict[str, type]] = {
    "dtypes": str,
    "ranks": int,
    "dims": int,
    "encodings": str,
    "relative": bool,
    "offsets": float,
    "scales": float,
}


def _list(header: ConfigRecord, key: str, kind: type) -> list[Any]:
    """``header[key]`` as a list of ``kind`` (ints accepted as floats), or DecodeError."""
    value = header.get(key)
    if not isinstance(value, list | PackedList):
        raise DecodeError(
            f"compression header {key!r}: expected a list, got {type(value).__name__}"
        )
    items: list[Any] = value.tolist() if isinstance(value, PackedList) else list(value)
    for item in items:
        exact = type(item) is kind or (kind is float and type(item) is int)
        if not exact:
            raise DecodeError(
                f"compression header {key!r}: expected {kind.__name__} items, got "
                f"{type(item).__name__}"
            )
    if kind is int and any(not -(2**62) <= item <= 2**62 for item in items):
        raise DecodeError(f"compression header {key!r}: a value is out of range")
    return [float(item) for item in items] if kind is float else items


def _check_payload_names(payloads: ArrayRecord, entries: list[_Entry]) -> None:
    expected: set[str] = set()
    for index, entry in enumerate(entries):
        parts = ("",) if entry.encoding == RAW else decoder(entry.encoding).parts
        expected.update(_key(index, part) for part in parts)
    if set(payloads) != expected:
        strange = sorted(set(payloads) ^ expected)[:5]
        raise DecodeError(f"compressed payloads do not match the header: {strange} ...")


def _raw(array: Array, entry: _Entry) -> Array:
    if array.dtype != entry.dtype or array.shape != entry.shape:
        raise DecodeError(
            f"array {entry.name!r}: raw payload is {array.dtype} {array.shape}, the header says "
            f"{entry.dtype} {entry.shape}"
        )
    return array


def _base_for(base: ArrayRecord | None, entry: _Entry) -> AnyArray:
    reference = None if base is None else base.get(entry.name)
    if reference is None or reference.dtype != entry.dtype or reference.shape != entry.shape:
        raise DecodeError(
            f"array {entry.name!r} is an update to a model this node did not send "
            f"({entry.dtype} {entry.shape})"
        )
    return reference.numpy()


def _decode_one(
    payloads: ArrayRecord, index: int, entry: _Entry, reference: AnyArray | None
) -> AnyArray:
    codec = decoder(entry.encoding)
    parts = {part: payloads[_key(index, part)].numpy() for part in codec.parts}
    dtype = np.dtype(DTYPE_NAMES[entry.dtype])
    values = codec.decode(Encoded(parts, entry.offset, entry.scale), dtype, entry.shape)
    if reference is None:
        return values
    if codec.lossy:
        restored: AnyArray = np.asarray(reference + values).astype(dtype, copy=False)
        return restored
    return _xor(reference, values)


# -- contents -----------------------------------------------------------------------------------
def is_compressed(content: RecordDict) -> bool:
    """Whether ``content`` carries a compressed model (a ``compression`` header)."""
    return COMPRESSION in content


def compress_content(content: RecordDict, compressed: Compressed) -> RecordDict:
    """``content`` with its ``arrays`` record replaced by ``compressed``'s two records."""
    records = {key: record for key, record in content.items() if key != ARRAYS}
    return RecordDict({COMPRESSED: compressed.arrays, COMPRESSION: compressed.header, **records})


def decompress_content(
    content: RecordDict, *, base: ArrayRecord | None = None, max_elements: int = MAX_ELEMENTS
) -> RecordDict:
    """``content`` with its compressed model restored as the ``arrays`` record.

    Raises ``DecodeError`` for a malformed compressed model (see ``decompress``).
    """
    header, payloads = content.get(COMPRESSION), content.get(COMPRESSED)
    if not isinstance(header, ConfigRecord) or not isinstance(payloads, ArrayRecord):
        raise DecodeError(
            f"a compressed content needs a ConfigRecord {COMPRESSION!r} and an ArrayRecord "
            f"{COMPRESSED!r}; found {list(content)}"
        )
    if ARRAYS in content:
        raise DecodeError(f"a compressed content may not also carry {ARRAYS!r}")
    arrays = decompress(payloads, header, base=base, max_elements=max_elements)
    others = {
        key: record for key, record in content.items() if key not in (COMPRESSED, COMPRESSION)
    }
    return RecordDict({ARRAYS: arrays, **others})
