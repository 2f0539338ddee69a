"""The binary codec: one ``Message`` as one versioned, self-contained frame.

A frame is a fixed 72-byte header (magic, version, flags, frame length, the numeric metadata and
the lengths of the four metadata strings), the strings, then either the content (records) or the
error. Everything is little-endian. Array data is written raw, at an offset from the frame start
that is a multiple of ``ALIGNMENT`` (64): the views ``decode_message`` returns are aligned as
well as the frame's first byte is, and CPython's ``bytes`` and ``bytearray`` data are at least
8-byte aligned, so views are always aligned to their item size. ``docs/wire-format.md``
specifies every byte.

Costs, for a message whose arrays hold N bytes:

- ``encoded_size``: metadata and record headers only, never array bytes;
- ``encode_message``: one allocation of the exact size and one copy of each array;
- ``decode_message``: no copy of array data; arrays are read-only views into the input, which
  they keep alive. Lists of 64 items or more are read-only ``PackedList`` s that keep the
  input's bytes too: int, float and bool lists as NumPy views, str and bytes lists as the
  input's bytes plus 4 bytes per item (one Python step per item finds them). Shorter lists are
  ``list`` s. The items of all lists together are bounded by
  ``DecodeLimits.max_list_items_per_message``.

Nothing is unpickled or evaluated: every field is a tagged value of a fixed set of kinds, and
every length is checked against the bytes that remain before anything is allocated. Decoding
raises ``DecodeError``, and nothing else, for any input that is not a valid frame.

Examples
--------
>>> import numpy as np
>>> from fedbus.message import ArrayRecord, Message, RecordDict
>>> message = Message(RecordDict({"model": ArrayRecord([np.ones(4, np.float32)])}), 1, "train")
>>> frame = encode_message(message)
>>> len(frame) == encoded_size(message)
True
>>> decode_message(frame) == message
True
"""

from __future__ import annotations

import codecs
import contextlib
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, Final, NoReturn, TypeVar, overload

import numpy as np

from fedbus.errors import DecodeError, InvalidArgumentError, InvalidTypeError
from fedbus.message.array import DTYPE_NAMES, MAX_RANK, Array
from fedbus.message.message import Error, Message, Metadata, check_message_type
from fedbus.message.packed import PackedList, PackedNumbers, PackedStrings
from fedbus.message.records import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

__all__ = [
    "ALIGNMENT",
    "MAGIC",
    "VERSION",
    "DecodeLimits",
    "decode_message",
    "decode_metadata",
    "encode_message",
    "encode_message_parts",
    "encoded_size",
]

#: First four bytes of every frame.
MAGIC: Final = b"FBUS"
#: The format version this module writes and the only one it reads.
VERSION: Final = 1
#: Array data starts at a multiple of this many bytes from the frame start (a cache line).
ALIGNMENT: Final = 64
_ZEROS = bytes(ALIGNMENT)
#: ``encode_message_parts`` leaves arrays this large in place; smaller ones are copied, as a
#: part of their own would cost more than the copy.
_SHARED_FROM = 64 * 1024
_Buffer = TypeVar("_Buffer")

_FLAG_ERROR = 0x0001
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_isfinite = math.isfinite

# Precompiled layouts: no format-string cache lookup per call (~20% of a small unpack).
_HEADER = struct.Struct("<4sHHQqqqddIIII")  # 72 bytes, see docs/wire-format.md
_U32 = struct.Struct("<I")
_I64 = struct.Struct("<q")
_F64 = struct.Struct("<d")
_RECORD = struct.Struct("<BII")  # kind, key length, entry count
_ARRAY = struct.Struct("<IBBQ")  # key length, dtype code, rank, data length
_ENTRY = struct.Struct("<IB")  # key length, value tag
_ERROR = struct.Struct("<qBI")  # code, has reason, reason length
_DIMS = [struct.Struct(f"<{rank}Q") for rank in range(MAX_RANK + 1)]

_ARRAY_RECORD, _METRIC_RECORD, _CONFIG_RECORD = 1, 2, 3
_RECORD_KINDS: dict[type, int] = {
    ArrayRecord: _ARRAY_RECORD,
    MetricRecord: _METRIC_RECORD,
    ConfigRecord: _CONFIG_RECORD,
}

# Value tags; a list of a kind is that kind's tag with bit 0x10 set.
_INT, _FLOAT, _BOOL, _STR, _BYTES, _LIST = 0x01, 0x02, 0x03, 0x04, 0x05, 0x10
_TAG_OF_TYPE: dict[type, int] = {int: _INT, float: _FLOAT, bool: _BOOL, str: _STR, bytes: _BYTES}
_METRIC_TAGS = frozenset({_INT, _FLOAT, _LIST | _INT, _LIST | _FLOAT})
_CONFIG_TAGS = frozenset(tag | flag for tag in _TAG_OF_TYPE.values() for flag in (0, _LIST))
_NUMBER_DTYPES = {_INT: np.dtype("<i8"), _FLOAT: np.dtype("<f8")}
# Lists this long or longer decode as packed lists. Shorter ones decode as lists: as fast to
# build, faster to read, and at most 63 Python objects each (every item counts against
# max_list_items_per_message).
_PACKED_FROM = 64
# Non-ASCII str lists are checked for UTF-8 this many bytes (or one item) at a time: the copy
# checked and the str it decodes to are temporary, 256 KiB keeps them well under the frame.
_UTF8_CHUNK = 1 << 18

# Wire codes of the dtypes; the table belongs to the format version, never renumber it.
_DTYPE_CODES: dict[str, int] = {
    "bool": 1, "int8": 2, "int16": 3, "int32": 4, "int64": 5, "uint8": 6, "uint16": 7,
    "uint32": 8, "uint64": 9, "float16": 10, "float32": 11, "float64": 12, "bfloat16": 13,
}  # fmt: skip
_DTYPES_BY_CODE = {code: (name, DTYPE_NAMES[name]) for name, code in _DTYPE_CODES.items()}

# message_type is checked with a regex (~0.3 us); a federation uses a handful of types, so
# types already seen skip it. Bounded so that hostile input cannot grow it without limit.
_KNOWN_MESSAGE_TYPES: set[str] = set()
_MAX_KNOWN_MESSAGE_TYPES = 1024


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """Upper bounds ``decode_message`` enforces before it trusts a frame.

    Every length in a frame is also checked against the bytes actually present, so a small
    frame can never make the decoder allocate much; these limits bound what a frame that *is*
    that large may contain. Raise them for trusted peers that send bigger models.

    Parameters
    ----------
    max_message_bytes
        Largest frame accepted, in bytes. Default 2 GiB (gRPC's limit for one message).
    max_records
        Most records in a message's content. Default 10,000.
    max_entries
        Most entries (arrays or values) in one record. Default 1,000,000.
    max_rank
        Most dimensions of one array; at most ``MAX_RANK`` (32). Default 32.
    max_string_bytes
        Longest single str or bytes (metadata strings, keys, values, list items), in bytes.
        Default 16 MiB.
    max_list_length
        Most items in one list value. Default 16,777,216 (2**24).
    max_list_items_per_message
        Most list items in one message, all its list values together. Default 67,108,864
        (2**26): a list item takes 1 to 8 bytes on the wire but costs the decoder a step (a
        str or bytes item a Python step, ~0.2 us), and a short list a Python object per item.

    Examples
    --------
    >>> strict = DecodeLimits(max_message_bytes=1 << 20, max_records=8)
    >>> strict.max_rank
    32
    """

    max_message_bytes: int = 2**31
    max_records: int = 10_000
    max_entries: int = 1_000_000
    max_rank: int = MAX_RANK
    max_string_bytes: int = 2**24
    max_list_length: int = 2**24
    max_list_items_per_message: int = 2**26

    def __post_init__(self) -> None:
        for field in fields(self):
            name, value = field.name, getattr(self, field.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidArgumentError(
                    f"DecodeLimits.{name} must be an int >= 0, got {value!r}"
                )
        if self.max_rank > MAX_RANK:
            raise InvalidArgumentError(
                f"DecodeLimits.max_rank must be <= {MAX_RANK} (fedbus's MAX_RANK), "
                f"got {self.max_rank}"
            )


_DEFAULT_LIMITS = DecodeLimits()


# ---------------------------------------------------------------------------------------------
# Sizes. encoded_size walks the frame exactly as the writers below do; encode_message checks
# that the two agree.


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidArgumentError(
            f"cannot encode the string {text[:40]!r}: {exc.reason} at index {exc.start}; "
            "fedbus strings must be valid UTF-8 (no lone surrogates)"
        ) from exc


def _text_size(text: str) -> int:
    # ASCII text is the common case, and its UTF-8 length is its length: no encoding needed.
    return len(text) if text.isascii() else len(_utf8(text))


def _aligned(offset: int) -> int:
    return (offset + ALIGNMENT - 1) & -ALIGNMENT


def _entries(record: Any) -> Any:
    # Records' items() is their dict's own view: MutableMapping's would cost ~0.5 us per
    # record, a visible share of encoding a small message.
    return record.items()


def _kind_of(record: Any) -> int:
    kind = _RECORD_KINDS.get(type(record))
    if kind is None:  # a subclass of a record type
        kind = next(code for cls, code in _RECORD_KINDS.items() if isinstance(record, cls))
    return kind


def _tag_of(key: str, value: Any) -> int:
    tag = _TAG_OF_TYPE.get(type(value))
    if tag is not None:
        return tag
    if type(value) is list:
        # An empty list has no item kind; it travels as an empty list of int64.
        item_tag = _TAG_OF_TYPE.get(type(value[0])) if value else _INT
        if item_tag is not None:
            return _LIST | item_tag
    elif isinstance(value, PackedList):
        return _LIST | (_TAG_OF_TYPE[value.item_type] if value else _INT)
    raise InvalidTypeError(
        f"record key {key!r}: cannot encode a value of type {type(value).__name__}; "
        "records hold int, float, str, bytes, bool or lists of one of them"
    )


def _value_size(tag: int, value: Any) -> int:
    if tag <= _FLOAT:
        return 8
    if tag == _BOOL:
        return 1
    if tag == _STR:
        return 4 + _text_size(value)
    if tag == _BYTES:
        return 4 + len(value)
    item = tag & ~_LIST
    if item <= _FLOAT:
        return 4 + 8 * len(value)
    if item == _BOOL:
        return 4 + len(value)
    if type(value) is not list:  # a PackedStrings: its data is the items' wire layout
        return 4 + len(value.data)
    if item == _STR:
        return 4 + sum(4 + _text_size(text) for text in value)
    return 4 + sum(4 + len(blob) for blob in value)


def _record_end(key: str, record: Any, pos: int) -> int:
    """Offset where ``record`` ends when it starts at ``pos`` (alignment depends on ``pos``)."""
    pos += _RECORD.size + _text_size(key)
    if _kind_of(record) == _ARRAY_RECORD:
        for name, array in _entries(record):
            pos += _ARRAY.size + _text_size(name) + 8 * array.stored.ndim
            pos = ((pos + ALIGNMENT - 1) & -ALIGNMENT) + array.nbytes
        return pos
    for name, value in _entries(record):
        pos += _ENTRY.size + _text_size(name) + _value_size(_tag_of(name, value), value)
    return pos


def encoded_size(message: Message) -> int:
    """Return ``len(encode_message(message))`` without encoding anything.

    Reads only metadata, keys and record headers: the cost grows with the number of records
    and keys, never with array bytes, so runtimes may call it for every message.

    >>> from fedbus.message import Message, MetricRecord, RecordDict
    >>> encoded_size(Message(RecordDict({"m": MetricRecord({"loss": 0.5})}), 2, "train"))
    108
    """
    meta = message.metadata
    pos = _HEADER.size + sum(map(_text_size, _metadata_strings(meta)))
    if message.has_error():
        reason = message.error.reason
        return pos + _ERROR.size + (0 if reason is None else _text_size(reason))
    pos += 4
    for key, record in _entries(message.content):
        pos = _record_end(key, record, pos)
    return pos


def _metadata_strings(meta: Metadata) -> tuple[str, str, str, str]:
    return (meta.message_id, meta.reply_to_message_id, meta.group_id, meta.message_type)


# ---------------------------------------------------------------------------------------------
# Encoding.


def _is_finite_seconds(value: object) -> bool:
    # A clock may return an int; it travels as the float64 it equals.
    if type(value) is int and abs(value) < 2**1023:
        return True
    return type(value) is float and _isfinite(value)


def _metadata_problem(meta: Metadata) -> str | None:
    """What makes ``meta`` impossible to encode or decode, or None; shared by both directions."""
    for name in ("run_id", "src_node_id", "dst_node_id"):
        value = getattr(meta, name)
        if type(value) is not int or not _INT64_MIN <= value <= _INT64_MAX:
            return f"{name} must be an int64, got {value!r}"
    if meta.src_node_id < -1 or meta.dst_node_id < -1:
        return f"node ids must be >= -1, got {meta.src_node_id} -> {meta.dst_node_id}"
    for name in ("created_at", "ttl"):
        value = getattr(meta, name)
        if not _is_finite_seconds(value):
            return f"{name} must be a finite number of seconds, got {value!r}"
    for name in ("message_id", "reply_to_message_id", "group_id"):
        if type(getattr(meta, name)) is not str:
            return f"{name} must be str, got {type(getattr(meta, name)).__name__}"
    message_type = meta.message_type
    if message_type not in _KNOWN_MESSAGE_TYPES:
        try:
            check_message_type(message_type)
        except (InvalidArgumentError, InvalidTypeError) as exc:
            return str(exc)
        if len(_KNOWN_MESSAGE_TYPES) < _MAX_KNOWN_MESSAGE_TYPES:
            _KNOWN_MESSAGE_TYPES.add(message_type)
    return None


def _write_blob(out: memoryview, pos: int, blob: bytes) -> int:
    end = pos + 4 + len(blob)
    _U32.pack_into(out, pos, len(blob))
    out[pos + 4 : end] = blob
    return end


def _write_list(out: memoryview, pos: int, item: int, values: Any) -> int:
    _U32.pack_into(out, pos, len(values))
    pos += 4
    if type(values) is not list:  # a PackedList: its data is the items' wire layout
        blob = values.data
    elif item in _NUMBER_DTYPES:
        # NumPy converts a list in one C loop; float64 keeps every bit (NaN payloads, -0.0).
        blob = np.array(values, dtype=_NUMBER_DTYPES[item]).tobytes()
    elif item == _BOOL:
        blob = bytes(values)
    else:
        for value in values:
            pos = _write_blob(out, pos, _utf8(value) if item == _STR else value)
        return pos
    out[pos : pos + len(blob)] = blob
    return pos + len(blob)


def _write_value(out: memoryview, pos: int, tag: int, value: Any) -> int:
    if tag == _INT:
        _I64.pack_into(out, pos, value)
        return pos + 8
    if tag == _FLOAT:
        _F64.pack_into(out, pos, value)
        return pos + 8
    if tag == _BOOL:
        out[pos] = value
        return pos + 1
    if tag == _STR:
        return _write_blob(out, pos, _utf8(value))
    if tag == _BYTES:
        return _write_blob(out, pos, value)
    return _write_list(out, pos, tag & ~_LIST, value)


def _write_record(
    out: memoryview, pos: int, key: str, record: Any, shared: list[tuple[int, memoryview]] | None
) -> int:
    """Write one record at ``pos``; with ``shared``, large arrays' bytes are not copied: their
    (position, bytes) go to ``shared`` and the frame's bytes there are left as they are."""
    key_bytes = _utf8(key)
    kind = _kind_of(record)
    _RECORD.pack_into(out, pos, kind, len(key_bytes), len(record))
    pos += _RECORD.size
    out[pos : pos + len(key_bytes)] = key_bytes
    pos += len(key_bytes)
    if kind == _ARRAY_RECORD:
        for name, array in _entries(record):
            name_bytes = _utf8(name)
            values = array.stored
            code = _DTYPE_CODES[array.dtype]
            _ARRAY.pack_into(out, pos, len(name_bytes), code, values.ndim, values.nbytes)
            pos += _ARRAY.size
            out[pos : pos + len(name_bytes)] = name_bytes
            pos += len(name_bytes)
            _DIMS[values.ndim].pack_into(out, pos, *values.shape)
            dims_end = pos + 8 * values.ndim
            pos = _aligned(dims_end)
            # Written, not assumed: a buffer from ``allocate`` may hold old bytes.
            out[dims_end:pos] = _ZEROS[: pos - dims_end]
            if shared is not None and values.nbytes >= _SHARED_FROM:
                shared.append((pos, array.data))
            else:
                # The one copy of the array: a memcpy from the Array's memory into the frame.
                out[pos : pos + values.nbytes] = array.data
            pos += values.nbytes
        return pos
    for name, value in _entries(record):
        name_bytes = _utf8(name)
        tag = _tag_of(name, value)
        _ENTRY.pack_into(out, pos, len(name_bytes), tag)
        pos += _ENTRY.size
        out[pos : pos + len(name_bytes)] = name_bytes
        pos = _write_value(out, pos + len(name_bytes), tag, value)
    return pos


@overload
def encode_message(message: Message) -> bytearray: ...
@overload
def encode_message(message: Message, *, allocate: Callable[[int], _Buffer]) -> _Buffer: ...


def encode_message(message: Message, *, allocate: Callable[[int], Any] = bytearray) -> Any:
    """Encode ``message`` (metadata and content or error) as one frame.

    The frame is allocated once, at its exact size, and each array's bytes are copied into it
    once. See ``docs/wire-format.md`` for the layout.

    Parameters
    ----------
    message
        Any ``Message``; its metadata must be valid (node ids >= -1, finite ``created_at`` and
        ``ttl``, a valid ``message_type``), as it is for every message fedbus builds.
    allocate
        Makes the frame's buffer: called with the size, returns a writable buffer of exactly
        that many bytes. The encoder writes every byte, so the buffer need not be zeroed: a
        transport may pass ``lambda n: numpy.empty(n, numpy.uint8)``, which skips the page-by-page
        zeroing that makes a fresh 100 MB ``bytearray`` cost as much as the copy itself.

    Returns
    -------
    bytearray
        The frame (or what ``allocate`` returned, filled); ``decode_message`` turns it back into
        an equal ``Message``.

    Raises
    ------
    InvalidArgumentError
        The metadata is invalid, a string is not valid UTF-8 (a lone surrogate), or an int
        does not fit in 64 bits.
    InvalidTypeError
        ``message`` is not a ``Message`` or a record holds a value of an unsupported type.
    """
    return _encode(message, allocate, None)


def encode_message_parts(message: Message) -> list[memoryview]:
    """Encode ``message`` as buffers whose concatenation is ``encode_message(message)``.

    Arrays of 64 KiB or more are not copied: their parts are read-only views of the arrays'
    own memory, so a message costs a few pages of headers however large its model, and a
    model sent to many nodes is never copied per recipient. The arrays must not change until
    the parts are used (as with any sent message: fedbus never changes an array it sent).
    The other parts view one buffer whose pages under the arrays are never touched.

    >>> import numpy as np
    >>> from fedbus.message import ArrayRecord, RecordDict
    >>> message = Message(RecordDict({"m": ArrayRecord({"w": np.zeros(50_000)})}), 1, "train")
    >>> parts = encode_message_parts(message)
    >>> b"".join(parts) == encode_message(message), len(parts)  # the headers, then the array
    (True, 2)
    """
    shared: list[tuple[int, memoryview]] = []
    frame = memoryview(_encode(message, _untouched, shared)).cast("B")
    parts, pos = [], 0
    for start, data in shared:
        parts += [frame[pos:start], data]
        pos = start + len(data)
    parts.append(frame[pos:])
    return [part.toreadonly() for part in parts if len(part)]


def _untouched(size: int) -> np.ndarray[Any, Any]:
    """Memory mapped as it is written: pages under shared arrays never exist."""
    return np.empty(size, dtype=np.uint8)


def _encode(
    message: Message, allocate: Callable[[int], Any], shared: list[tuple[int, memoryview]] | None
) -> Any:
    if not isinstance(message, Message):
        raise InvalidTypeError(f"encode_message: expected a Message, got {type(message).__name__}")
    meta = message.metadata
    problem = _metadata_problem(meta)
    if problem is not None:
        raise InvalidArgumentError(f"encode_message: invalid metadata: {problem}")
    size = encoded_size(message)
    frame = allocate(size)
    out = memoryview(frame).cast("B")
    if out.nbytes != size or out.readonly:
        raise InvalidArgumentError(
            f"encode_message: allocate({size}) returned a buffer of {out.nbytes} bytes"
            f"{' (read-only)' if out.readonly else ''}; it must be writable and exactly that size"
        )
    strings = [_utf8(text) for text in _metadata_strings(meta)]
    flags = _FLAG_ERROR if message.has_error() else 0
    _HEADER.pack_into(
        out, 0, MAGIC, VERSION, flags, size, meta.run_id, meta.src_node_id, meta.dst_node_id,
        meta.created_at, meta.ttl, *map(len, strings),
    )  # fmt: skip
    pos = _HEADER.size
    for blob in strings:
        out[pos : pos + len(blob)] = blob
        pos += len(blob)
    if flags:
        pos = _write_error(out, pos, message.error)
    else:
        content = message.content
        _U32.pack_into(out, pos, len(content))
        pos += 4
        for key, record in _entries(content):
            pos = _write_record(out, pos, key, record, shared)
    if pos != size:  # pragma: no cover - encoded_size and the writers share their sizes
        raise AssertionError(f"encode_message wrote {pos} bytes, encoded_size said {size}")
    return frame


def _write_error(out: memoryview, pos: int, error: Error) -> int:
    code = error.code
    if not _INT64_MIN <= code <= _INT64_MAX:
        raise InvalidArgumentError(f"encode_message: error code {code} does not fit in 64 bits")
    reason = b"" if error.reason is None else _utf8(error.reason)
    _ERROR.pack_into(out, pos, int(code), error.reason is not None, len(reason))
    pos += _ERROR.size
    out[pos : pos + len(reason)] = reason
    return pos + len(reason)


# ---------------------------------------------------------------------------------------------
# Decoding. Every length is compared with the bytes that remain before it is used, so a
# truncated or lying frame stops with a DecodeError before anything of the declared size exists.
# Frames are always bytes or a read-only memoryview of bytes here ("Frame").
#
# The array path is written out inline: a 1 MB array decodes in a few microseconds, so each
# Python call (~0.1 us) is a visible share of it.

Frame = bytes | memoryview


def _fail(problem: str, pos: int) -> DecodeError:
    return DecodeError(f"invalid fedbus frame at byte {pos}: {problem}")


def _need(pos: int, count: int, end: int, what: str) -> None:
    if count > end - pos:
        raise _fail(f"{what} needs {count} bytes, only {end - pos} remain (truncated frame?)", pos)


def _text_problem(frame: Frame, pos: int, length: int, end: int, limits: DecodeLimits) -> NoReturn:
    """Raise the DecodeError that explains why the string at ``pos`` cannot be read."""
    if length > limits.max_string_bytes:
        raise _fail(
            f"a string of {length} bytes exceeds DecodeLimits.max_string_bytes="
            f"{limits.max_string_bytes}",
            pos,
        )
    _need(pos, length, end, "a string")
    try:
        str(frame[pos : pos + length], "utf-8")
    except UnicodeDecodeError as exc:
        raise _fail(f"a string is not valid UTF-8 ({exc.reason})", pos) from exc
    raise _fail("a string cannot be read", pos)  # pragma: no cover - callers saw a problem


def _read_text(frame: Frame, pos: int, length: int, end: int, limits: DecodeLimits) -> str:
    if length > limits.max_string_bytes or length > end - pos:
        _text_problem(frame, pos, length, end, limits)
    try:
        return str(frame[pos : pos + length], "utf-8")
    except UnicodeDecodeError:
        _text_problem(frame, pos, length, end, limits)


def _read_key(frame: Frame, pos: int, length: int, end: int, limits: DecodeLimits) -> str:
    if length == 0:
        raise _fail("an empty key (keys are non-empty strings)", pos)
    return _read_text(frame, pos, length, end, limits)


def _read_count(frame: Frame, pos: int, end: int, limit: int, name: str) -> int:
    _need(pos, 4, end, "a count")
    count: int = _U32.unpack_from(frame, pos)[0]
    if count > limit:
        raise _fail(f"{count} items exceed DecodeLimits.{name}={limit}", pos)
    return count


def _read_value(
    frame: Frame, pos: int, end: int, tag: int, limits: DecodeLimits
) -> tuple[Any, int]:
    if tag in (_INT, _FLOAT):
        _need(pos, 8, end, "a number")
        return (_I64 if tag == _INT else _F64).unpack_from(frame, pos)[0], pos + 8
    if tag == _BOOL:
        _need(pos, 1, end, "a bool")
        if frame[pos] > 1:
            raise _fail(f"a bool must be 0 or 1, got {frame[pos]}", pos)
        return frame[pos] == 1, pos + 1
    if tag in (_STR, _BYTES):
        length = _read_count(frame, pos, end, limits.max_string_bytes, "max_string_bytes")
        pos += 4
        if tag == _STR:
            return _read_text(frame, pos, length, end, limits), pos + length
        _need(pos, length, end, "a bytes value")
        return bytes(frame[pos : pos + length]), pos + length
    raise _fail(f"value tag {tag:#04x} is not a scalar", pos)  # pragma: no cover - see callers


def _read_list(
    frame: Frame, pos: int, end: int, item: int, limits: DecodeLimits, budget: int
) -> tuple[Any, int]:
    """A list value of ``item`` tags: a list when short, a packed list from _PACKED_FROM on."""
    count = _read_count(frame, pos, end, limits.max_list_length, "max_list_length")
    if count > budget:
        raise _fail(
            f"a list of {count} items exceeds DecodeLimits.max_list_items_per_message="
            f"{limits.max_list_items_per_message} with the lists before it",
            pos,
        )
    pos += 4
    if item in _NUMBER_DTYPES:
        _need(pos, 8 * count, end, f"a list of {count} numbers")
        numbers = np.frombuffer(frame, _NUMBER_DTYPES[item], count, pos)
        if count < _PACKED_FROM:
            return numbers.tolist(), pos + 8 * count
        return PackedNumbers.from_checked(numbers), pos + 8 * count
    if item == _BOOL:
        _need(pos, count, end, f"a list of {count} bools")
        if count < _PACKED_FROM:
            raw = bytes(frame[pos : pos + count])
            if raw.translate(None, b"\x00\x01"):
                raise _fail("a bool must be 0 or 1", pos)
            return [byte == 1 for byte in raw], pos + count
        # One vectorised test, no temporary array: the largest byte.
        flags = np.frombuffer(frame, np.uint8, count, pos)
        if flags.max() > 1:
            index = int(np.argmax(flags > 1))
            raise _fail(
                f"list item {index}: a bool must be 0 or 1, got {flags[index]}", pos + index
            )
        return PackedNumbers.from_checked(flags.view(np.bool_)), pos + count
    _need(pos, 4 * count, end, f"a list of {count} strings")  # each has a 4-byte length
    if count >= _PACKED_FROM:
        return _read_packed_strings(frame, pos, end, count, item, limits)
    values = []
    for _ in range(count):
        value, pos = _read_value(frame, pos, end, item, limits)
        values.append(value)
    return values, pos


def _read_packed_strings(
    frame: Frame, pos: int, end: int, count: int, item: int, limits: DecodeLimits
) -> tuple[PackedStrings[Any], int]:
    """A str or bytes list kept as the frame's bytes, with the offset of each item's length.

    Each length says where the next item starts, so finding them is one Python step per item
    (~0.2 us; a list item has 4 bytes at least), writing a 4-byte offset. Every other check
    is vectorised: UTF-8 256 KiB at a time, and only when a byte is not ASCII.
    """
    region = memoryview(frame)[pos:end]
    # Offsets within the region: 4 bytes each unless the region is 4 GiB or larger.
    bounds = np.empty(count + 1, np.uint32 if len(region) < 2**32 else np.int64)
    store, unpack, offset, longest = bounds.data, _U32.unpack_from, 0, 0
    try:
        for index in range(count):
            store[index] = offset
            length = unpack(region, offset)[0]
            offset += 4 + length
            if length > longest:
                longest = length
        store[count] = offset
    except (struct.error, ValueError):  # past the end: an offset or length is out of range
        _packed_strings_problem(frame, pos, end, count, limits)
    if offset > len(region) or longest > limits.max_string_bytes:
        _packed_strings_problem(frame, pos, end, count, limits)
    region = region[:offset]
    bounds.flags.writeable = False
    if item == _STR:
        bad = _first_invalid_utf8(region, bounds)
        if bad is not None:
            index, reason = bad
            raise _fail(
                f"list item {index}: a string is not valid UTF-8 ({reason})",
                pos + int(bounds[index]),
            )
    return PackedStrings.from_checked(region, bounds, str if item == _STR else bytes), pos + offset


def _packed_strings_problem(
    frame: Frame, pos: int, end: int, count: int, limits: DecodeLimits
) -> NoReturn:
    """Raise the DecodeError that explains which item of the list at ``pos`` is invalid."""
    for index in range(count):
        _need(pos, 4, end, f"the length of list item {index}")
        length = _U32.unpack_from(frame, pos)[0]
        if length > limits.max_string_bytes:
            raise _fail(
                f"list item {index}: {length} bytes exceed DecodeLimits.max_string_bytes="
                f"{limits.max_string_bytes}",
                pos,
            )
        _need(pos + 4, length, end, f"list item {index}")
        pos += 4 + length
    raise _fail("a list cannot be read", pos)  # pragma: no cover - callers saw a problem


def _first_invalid_utf8(region: memoryview, bounds: np.ndarray[Any, Any]) -> tuple[int, str] | None:
    """(index, reason) of the first item of ``region`` that is not valid UTF-8, or None.

    With each item's 4 length bytes made ASCII, the region is valid UTF-8 exactly when every
    item is: an ASCII byte is a whole character, so no character can span two items.
    """
    values = np.frombuffer(region, np.uint8)
    if values.max() < 0x80:  # all ASCII, lengths included: the usual short strings
        return None
    count, first = len(bounds) - 1, 0
    while first < count:
        # Whole items, about _UTF8_CHUNK bytes (one item when it alone is longer).
        start = int(bounds[first])
        stop = min(start + _UTF8_CHUNK, int(bounds[count]))  # Python ints: no uint32 overflow
        # Searched as bounds' own dtype: a Python int would make NumPy convert all of bounds.
        found = int(np.searchsorted(bounds, bounds.dtype.type(stop), "right"))
        last = min(max(found - 1, first + 1), count)
        chunk = values[start : int(bounds[last])].copy()
        lengths_at = bounds[first:last] - start
        for byte in range(4):
            chunk[lengths_at + byte] = 0
        if chunk.max() >= 0x80:
            try:
                codecs.utf_8_decode(chunk.data, "strict", True)
            except UnicodeDecodeError as exc:
                bad = bounds.dtype.type(start + exc.start)
                index = int(np.searchsorted(bounds, bad, "right")) - 1
                return index, str(exc.reason)
        first = last
    return None


def _read_values(
    frame: Frame,
    pos: int,
    end: int,
    count: int,
    kind: int,
    limits: DecodeLimits,
    budget: int,
) -> tuple[MetricRecord | ConfigRecord, int, int]:
    """The record at ``pos``, where it ends, and ``budget`` less the list items it holds."""
    allowed = _METRIC_TAGS if kind == _METRIC_RECORD else _CONFIG_TAGS
    values: dict[str, Any] = {}
    for _ in range(count):
        _need(pos, _ENTRY.size, end, "a value header")
        key_length, tag = _ENTRY.unpack_from(frame, pos)
        key = _read_key(frame, pos + _ENTRY.size, key_length, end, limits)
        if tag not in allowed:
            raise _fail(f"key {key!r}: value tag {tag:#04x} is not allowed in this record", pos)
        pos += _ENTRY.size + key_length
        if tag & _LIST:
            value, pos = _read_list(frame, pos, end, tag & ~_LIST, limits, budget)
            budget -= len(value)
        else:
            value, pos = _read_value(frame, pos, end, tag, limits)
        values[key] = value
    if len(values) != count:
        raise _fail("a record repeats a key", pos)
    # The constructors check every value again (a packed list at once, by its item type); a
    # failure becomes a DecodeError.
    record = MetricRecord(values) if kind == _METRIC_RECORD else ConfigRecord(values)
    return record, pos, budget


def _too_big_for_numpy(shape: tuple[int, ...], itemsize: int) -> bool:
    return math.prod(dim for dim in shape if dim) * itemsize > _INT64_MAX


def _array_problem(
    frame: Frame, pos: int, end: int, limits: DecodeLimits, header: tuple[int, ...]
) -> NoReturn:
    """Raise the DecodeError that explains why the array at ``pos`` is invalid."""
    key_length, code, rank, nbytes = header
    key = _read_key(frame, pos + _ARRAY.size, key_length, end, limits)
    pos += _ARRAY.size + key_length
    if code not in _DTYPES_BY_CODE:
        raise _fail(f"array {key!r}: unknown dtype code {code}", pos)
    if rank > limits.max_rank:
        raise _fail(f"array {key!r}: rank {rank} exceeds DecodeLimits.max_rank", pos)
    _need(pos, _aligned(pos + 8 * rank) - pos + nbytes, end, f"array {key!r}")
    shape = _DIMS[rank].unpack_from(frame, pos)
    dtype_name, dtype = _DTYPES_BY_CODE[code]
    if _too_big_for_numpy(shape, dtype.itemsize):
        raise _fail(f"array {key!r}: shape {shape} is too large for NumPy", pos)
    raise _fail(f"array {key!r}: shape {shape} of {dtype_name} does not hold {nbytes} bytes", pos)


def _read_arrays(
    frame: Frame, pos: int, end: int, count: int, limits: DecodeLimits
) -> tuple[ArrayRecord, int]:
    arrays: dict[str, Array] = {}
    max_rank, max_key = limits.max_rank, limits.max_string_bytes
    for _ in range(count):
        if pos + _ARRAY.size > end:
            raise _fail("truncated frame: an array header is cut off", pos)
        header = _ARRAY.unpack_from(frame, pos)
        key_length, code, rank, nbytes = header
        key_start = pos + _ARRAY.size
        dims_start = key_start + key_length
        start = (dims_start + 8 * rank + ALIGNMENT - 1) & -ALIGNMENT
        dtype = _DTYPES_BY_CODE.get(code)
        # One test for the common case; _array_problem finds and explains any failure.
        if (
            dtype is None
            or rank > max_rank
            or start + nbytes > end
            or not 0 < key_length <= max_key
        ):
            _array_problem(frame, pos, end, limits, header)
        shape = _DIMS[rank].unpack_from(frame, dims_start)
        # Python ints: huge dims cannot overflow into a plausible byte count. Only an empty
        # array can have a huge dim; NumPy needs the product of the others to fit in int64.
        if math.prod(shape) * dtype[1].itemsize != nbytes or (
            not nbytes and _too_big_for_numpy(shape, dtype[1].itemsize)
        ):
            _array_problem(frame, pos, end, limits, header)
        # The view Array.from_buffer would build, after the same checks (made above); its
        # general path costs ~4 us, which would dominate decoding a 1 MB array.
        array = Array.from_checked(dtype[0], np.ndarray(shape, dtype[1], frame, start))
        arrays[str(frame[key_start:dims_start], "utf-8")] = array
        pos = start + nbytes
    if len(arrays) != count:
        raise _fail("an ArrayRecord repeats a key", pos)
    # Keys are non-empty str and values Arrays: nothing left to check.
    return ArrayRecord.from_checked(arrays), pos


def _read_content(frame: Frame, pos: int, end: int, limits: DecodeLimits) -> tuple[RecordDict, int]:
    if pos + 4 > end:
        raise _fail("truncated frame: the record count is cut off", pos)
    count = _U32.unpack_from(frame, pos)[0]
    if count > limits.max_records:
        raise _fail(f"{count} records exceed DecodeLimits.max_records={limits.max_records}", pos)
    pos += 4
    records: dict[str, ArrayRecord | MetricRecord | ConfigRecord] = {}
    budget = limits.max_list_items_per_message
    for _ in range(count):
        if pos + _RECORD.size > end:
            raise _fail("truncated frame: a record header is cut off", pos)
        kind, key_length, entries = _RECORD.unpack_from(frame, pos)
        if entries > limits.max_entries:
            raise _fail(f"{entries} entries exceed DecodeLimits.max_entries", pos)
        key_start, pos = pos + _RECORD.size, pos + _RECORD.size + key_length
        if not 0 < key_length <= limits.max_string_bytes or pos > end:
            _read_key(frame, key_start, key_length, end, limits)  # raises, saying why
        key = str(frame[key_start:pos], "utf-8")
        if kind == _ARRAY_RECORD:
            records[key], pos = _read_arrays(frame, pos, end, entries, limits)
        elif kind in (_METRIC_RECORD, _CONFIG_RECORD):
            records[key], pos, budget = _read_values(frame, pos, end, entries, kind, limits, budget)
        else:
            raise _fail(f"record {key!r}: unknown record kind {kind}", pos)
    if len(records) != count:
        raise _fail("the content repeats a record key", pos)
    return RecordDict.from_checked(records), pos  # every value is a record built above


def _read_error(frame: Frame, pos: int, end: int, limits: DecodeLimits) -> tuple[Error, int]:
    _need(pos, _ERROR.size, end, "an error")
    code, has_reason, length = _ERROR.unpack_from(frame, pos)
    pos += _ERROR.size
    if has_reason > 1 or (has_reason == 0 and length != 0):
        raise _fail(f"error has_reason must be 0 (with length 0) or 1, got {has_reason}", pos)
    reason = _read_text(frame, pos, length, end, limits) if has_reason else None
    return Error(code, reason), pos + length


def _as_frame(buffer: Any) -> memoryview:
    """A read-only byte view of ``buffer`` (bytes need none: they are immutable already)."""
    try:
        view = memoryview(buffer)
    except TypeError as exc:
        raise DecodeError(
            f"decode_message: expected bytes, bytearray or another buffer, "
            f"got {type(buffer).__name__}"
        ) from exc
    # Read-only views: arrays decoded from a frame must not write into the caller's buffer.
    return view.cast("B").toreadonly()


def _check_header(frame: Frame, end: int) -> NoReturn:
    """Raise the DecodeError that explains what is wrong with the fixed header."""
    magic, version, flags, size = _HEADER.unpack_from(frame)[:4]
    if magic != MAGIC:
        raise _fail(f"magic is {magic!r}, expected {MAGIC!r}: not a fedbus frame", 0)
    if version != VERSION:
        raise _fail(f"format version {version} is not supported (this fedbus reads {VERSION})", 4)
    if flags & ~_FLAG_ERROR:
        raise _fail(f"unknown flags {flags:#06x}", 6)
    raise _fail(f"the header says {size} bytes, the buffer has {end}: pass one whole frame", 8)


def _read_strings(
    frame: Frame, lengths: tuple[int, ...], end: int, limits: DecodeLimits
) -> list[str]:
    """The metadata strings one by one, with a precise error for the first bad one."""
    pos, strings = _HEADER.size, []
    for length in lengths:
        strings.append(_read_text(frame, pos, length, end, limits))
        pos += length
    return strings


def _decode(buffer: Any, limits: DecodeLimits) -> Message:
    frame = buffer if type(buffer) is bytes else _as_frame(buffer)
    end = len(frame)
    if end > limits.max_message_bytes:
        raise _fail(
            f"the frame has {end} bytes, more than DecodeLimits.max_message_bytes="
            f"{limits.max_message_bytes}; raise the limit for trusted senders",
            0,
        )
    if end < _HEADER.size:
        raise _fail(f"the header needs {_HEADER.size} bytes, the frame has {end}", 0)
    magic, version, flags, size, run_id, src, dst, created_at, ttl, a, b, c, d = (
        _HEADER.unpack_from(frame)
    )
    if magic != MAGIC or version != VERSION or flags > _FLAG_ERROR or size != end:
        _check_header(frame, end)
    # The four metadata strings follow the header back to back: decode them at once and, when
    # they are ASCII (one byte per character, the usual case), cut them at their byte lengths.
    pos = _HEADER.size + a + b + c + d
    text = ""
    if pos <= end and max(a, b, c, d) <= limits.max_string_bytes:
        with contextlib.suppress(UnicodeDecodeError):  # _read_strings explains the error
            text = str(frame[_HEADER.size : pos], "utf-8")
    if len(text) == pos - _HEADER.size:
        strings = [text[:a], text[a : a + b], text[a + b : a + b + c], text[a + b + c :]]
    else:
        strings = _read_strings(frame, (a, b, c, d), end, limits)
    content: RecordDict | None = None
    error: Error | None = None
    if flags:
        error, pos = _read_error(frame, pos, end, limits)
    else:
        content, pos = _read_content(frame, pos, end, limits)
    if pos != end:
        raise _fail(f"{end - pos} bytes after the end of the message", pos)
    metadata = Metadata(
        run_id, strings[0], src, dst, strings[1], strings[2], created_at, ttl, strings[3]
    )
    # The integers came from int64 fields; what is left to check is cheap except message_type,
    # which _metadata_problem checks only the first time a type is seen.
    if (
        src < -1
        or dst < -1
        or not _isfinite(created_at)
        or not _isfinite(ttl)
        or strings[3] not in _KNOWN_MESSAGE_TYPES
    ):
        problem = _metadata_problem(metadata)
        if problem is not None:
            raise _fail(f"invalid metadata: {problem}", 16)
    return Message.from_metadata(metadata, content=content, error=error)


def decode_metadata(prefix: Any, *, limits: DecodeLimits | None = None) -> Metadata:
    """The ``Metadata`` of a frame, read from its first bytes only (the header and the
    metadata strings; the rest of the frame need not be there).

    A receiver that will not take a message whole (no room for it) still learns whom to tell.

    Raises
    ------
    DecodeError
        The prefix is too short, or the header or a metadata field is invalid.

    >>> from fedbus.message import Message, RecordDict
    >>> frame = encode_message(Message(RecordDict(), 4, "evaluate"))
    >>> decode_metadata(frame[:200]).message_type
    'evaluate'
    """
    limits = limits or _DEFAULT_LIMITS
    frame = _as_frame(prefix)
    end = len(frame)
    if end < _HEADER.size:
        raise _fail(f"the header needs {_HEADER.size} bytes, the prefix has {end}", 0)
    magic, version, flags, _, run_id, src, dst, created_at, ttl, *lengths = _HEADER.unpack_from(
        frame
    )
    if magic != MAGIC or version != VERSION or flags > _FLAG_ERROR:
        _check_header(frame, -1)
    strings = _read_strings(frame, tuple(lengths), end, limits)
    metadata = Metadata(
        run_id, strings[0], src, dst, strings[1], strings[2], created_at, ttl, strings[3]
    )
    problem = _metadata_problem(metadata)
    if problem is not None:
        raise _fail(f"invalid metadata: {problem}", 16)
    return metadata


def decode_message(buffer: Any, *, limits: DecodeLimits | None = None) -> Message:
    """Decode one frame made by ``encode_message`` back into a ``Message``.

    Arrays are read-only, zero-copy views into ``buffer`` (which they keep alive); copy one
    before changing it. Every length, tag, dtype, shape, string and metadata field is checked.

    Parameters
    ----------
    buffer
        Exactly one frame: ``bytes``, ``bytearray``, ``memoryview`` or any contiguous buffer.
    limits
        Bounds on what the frame may contain; ``DecodeLimits()`` by default.

    Returns
    -------
    Message
        A message equal to the one encoded.

    Raises
    ------
    DecodeError
        For anything that is not a valid frame within ``limits`` (wrong magic or version,
        truncation, trailing bytes, a bad tag, dtype, shape, UTF-8 string or metadata field, a
        limit exceeded), and for nothing else.

    Examples
    --------
    >>> from fedbus.message import Error, Message, RecordDict
    >>> ask = Message(RecordDict(), 4, "evaluate")
    >>> decode_message(encode_message(ask.create_error_reply(Error(2, "boom")))).error
    Error(code=2 (HANDLER_EXCEPTION), reason='boom')
    """
    if limits is None:
        limits = _DEFAULT_LIMITS
    elif not isinstance(limits, DecodeLimits):
        raise InvalidTypeError(f"decode_message: limits must be DecodeLimits, got {limits!r}")
    try:
        return _decode(buffer, limits)
    except DecodeError:
        raise
    except (struct.error, ValueError, TypeError, IndexError, OverflowError) as exc:
        # Record and Array validation (InvalidArgumentError, InvalidTypeError) lands here too.
        raise DecodeError(f"invalid fedbus frame: {exc}") from exc
