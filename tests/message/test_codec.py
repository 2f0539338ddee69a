"""The binary codec: round trips, zero-copy decoding, sizes, limits and hostile input."""

from __future__ import annotations

import doctest
import gc
import math
import re
import struct
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fedbus
from fedbus.errors import DecodeError, InvalidArgumentError, InvalidTypeError
from fedbus.message import (
    DTYPE_NAMES,
    Array,
    ArrayRecord,
    ConfigRecord,
    DecodeLimits,
    Error,
    ErrorCode,
    Message,
    Metadata,
    MetricRecord,
    RecordDict,
    codec,
    decode_message,
    encode_message,
    encoded_size,
    mark_sent,
    use_clock,
)
from fedbus.message.codec import ALIGNMENT, MAGIC, VERSION, decode_metadata, encode_message_parts

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
HEADER_SIZE = 72


def metadata(**changes: Any) -> Metadata:
    fields: dict[str, Any] = {
        "run_id": 7,
        "message_id": "m1",
        "src_node_id": 0,
        "dst_node_id": 3,
        "reply_to_message_id": "",
        "group_id": "1",
        "created_at": 2.5,
        "ttl": 60.0,
        "message_type": "train",
    }
    fields.update(changes)
    return Metadata(**fields)


def content_message(content: RecordDict, **changes: Any) -> Message:
    return Message.from_metadata(metadata(**changes), content=content)


def round_trip(message: Message) -> Message:
    frame = encode_message(message)
    assert len(frame) == encoded_size(message)
    decoded = decode_message(frame)
    assert decoded == message
    assert decode_message(bytes(frame)) == message
    return decoded


def float_bits(value: float) -> bytes:
    return struct.pack("<d", value)


def example_message() -> Message:
    """The message of the annotated example in docs/wire-format.md."""
    content = RecordDict(
        {
            "w": ArrayRecord({"b": np.array([1, 2], np.float32)}),
            "cfg": ConfigRecord({"lr": 0.5}),
        }
    )
    return content_message(content)


# --- the format itself ---------------------------------------------------------------------------

EXAMPLE_FRAME = bytes.fromhex(
    "46425553 0100 0000 a300000000000000"  # magic, version 1, flags 0, 163 bytes
    "0700000000000000 0000000000000000 0300000000000000"  # run_id 7, src 0, dst 3
    "0000000000000440 0000000000004e40"  # created_at 2.5, ttl 60.0
    "02000000 00000000 01000000 05000000"  # string lengths 2, 0, 1, 5
    "6d31 31 747261696e"  # "m1", "1", "train"
    "02000000"  # 2 records
    "01 01000000 01000000 77"  # ArrayRecord "w", 1 entry
    "01000000 0b 01 0800000000000000 62"  # key length 1, float32, rank 1, 8 bytes, "b"
    "0200000000000000"  # shape (2,)
    "0000000000000000000000"  # 11 bytes of padding: the data starts at 128, a multiple of 64
    "0000803f 00000040"  # 1.0, 2.0
    "03 03000000 01000000 636667"  # ConfigRecord "cfg", 1 entry
    "02000000 02 6c72 000000000000e03f"  # key length 2, float64, "lr", 0.5
)


def test_the_documented_example_frame_is_exactly_what_encode_writes() -> None:
    message = example_message()
    assert bytes(encode_message(message)) == EXAMPLE_FRAME
    assert decode_message(EXAMPLE_FRAME) == message


def documented_frames() -> list[bytes]:
    """The annotated hex dumps in docs/wire-format.md, checked offset by offset."""
    text = (Path(__file__).parents[2] / "docs" / "wire-format.md").read_text(encoding="utf-8")
    frames: list[bytes] = []
    for block in re.findall(r"```\noffset  bytes.*?\n(.*?)```", text, re.DOTALL):
        frame = bytearray()
        for line in block.splitlines():
            match = re.match(r"([0-9a-f]{4})    ((?:[0-9a-f]{2} ?)*)", line)
            assert match, f"not a dump line: {line!r}"
            assert int(match[1], 16) == len(frame), f"wrong offset in {line!r}"
            frame += bytes.fromhex(match[2])
        frames.append(bytes(frame))
    return frames


def test_the_documented_hex_dumps_are_what_encode_writes() -> None:
    reply = Message.from_metadata(
        metadata(message_id="", src_node_id=3, dst_node_id=0, reply_to_message_id="m1",
                 created_at=3.0, ttl=59.5),
        error=Error(2, "boom"),
    )  # fmt: skip
    content_frame, error_frame = documented_frames()
    assert content_frame == EXAMPLE_FRAME
    assert error_frame == bytes(encode_message(reply))
    assert decode_message(error_frame) == reply


def test_frame_starts_with_magic_version_and_its_own_length() -> None:
    frame = encode_message(example_message())
    magic, version, flags, size = struct.unpack_from("<4sHHQ", frame)
    assert (magic, version, flags, size) == (MAGIC, VERSION, 0, len(frame))


def test_docstring_examples_run() -> None:
    result = doctest.testmod(codec)
    assert result.attempted > 0
    assert result.failed == 0


def test_the_codec_is_exported_from_fedbus() -> None:
    assert fedbus.encode_message is encode_message
    assert fedbus.decode_message is decode_message
    assert fedbus.DecodeError is DecodeError


# --- round trips of hand-made messages -----------------------------------------------------------


def test_every_value_kind_round_trips_with_its_exact_type() -> None:
    config = {
        "int": -5,
        "big": INT64_MAX,
        "small": INT64_MIN,
        "float": 0.1,
        "str": "héllo ✓",
        "empty_str": "",
        "bytes": b"\x00\xff",
        "true": True,
        "false": False,
        "ints": [1, -2, INT64_MAX],
        "floats": [0.5, -1e300],
        "strs": ["a", "", "ü"],
        "bytes_list": [b"", b"\x01"],
        "bools": [True, False, True],
        "empty": [],
    }
    metrics = {"loss": 0.25, "n": 64, "losses": [0.5, 0.25], "counts": [3], "none": []}
    message = content_message(
        RecordDict({"config": ConfigRecord(config), "metrics": MetricRecord(metrics)})
    )
    decoded = round_trip(message)
    for key, value in config.items():
        got = decoded.content.config_records["config"][key]
        assert got == value
        assert type(got) is type(value)
        if isinstance(value, list) and value:
            assert [type(item) for item in got] == [type(item) for item in value]
    assert dict(decoded.content.metric_records["metrics"]) == metrics


def test_empty_lists_round_trip_as_empty_lists() -> None:
    message = content_message(
        RecordDict({"c": ConfigRecord({"e": []}), "m": MetricRecord({"e": []})})
    )
    decoded = round_trip(message)
    assert decoded.content.config_records["c"]["e"] == []
    assert decoded.content.metric_records["m"]["e"] == []


@pytest.mark.parametrize(
    "bits",
    [
        "7ff8000000000000",  # quiet NaN
        "7ff0000000000001",  # signalling NaN
        "fff8000000000123",  # negative NaN with a payload
        "7ff0000000000000",  # inf
        "fff0000000000000",  # -inf
        "8000000000000000",  # -0.0
        "0000000000000001",  # smallest subnormal
    ],
)
def test_floats_keep_every_bit(bits: str) -> None:
    value = struct.unpack(">d", bytes.fromhex(bits))[0]
    message = content_message(
        RecordDict(
            {
                "m": MetricRecord({"x": value, "xs": [value, 1.0]}),
                "c": ConfigRecord({"x": value, "xs": [value]}),
            }
        )
    )
    decoded = decode_message(encode_message(message))
    metric = decoded.content.metric_records["m"]
    config = decoded.content.config_records["c"]
    for got in (metric["x"], metric["xs"][0], config["x"], config["xs"][0]):
        assert float_bits(got) == float_bits(value)


def test_record_and_key_order_is_kept() -> None:
    names = ["z", "a", "m", "b"]
    content = RecordDict({name: MetricRecord({k: 1 for k in reversed(names)}) for name in names})
    content["arrays"] = ArrayRecord({k: np.zeros(1) for k in names})
    decoded = round_trip(content_message(content)).content
    assert list(decoded) == [*names, "arrays"]
    assert list(decoded["z"]) == list(reversed(names))
    assert list(decoded["arrays"]) == names


@pytest.mark.parametrize("dtype", sorted(set(DTYPE_NAMES) - {"bfloat16"}))
def test_every_numpy_dtype_round_trips(dtype: str) -> None:
    values = np.arange(24).reshape(2, 3, 4).astype(DTYPE_NAMES[dtype])
    message = content_message(RecordDict({"a": ArrayRecord({"x": values, "row": values[0, 1]})}))
    decoded = round_trip(message).content.array_records["a"]
    assert decoded["x"].dtype == dtype
    np.testing.assert_array_equal(decoded["x"].numpy(), values)
    assert decoded["x"].numpy().dtype == DTYPE_NAMES[dtype]


def test_bfloat16_tensors_round_trip_through_torch() -> None:
    torch = pytest.importorskip("torch")
    tensor = torch.tensor([[1.5, -2.0], [3.25, 1e30]], dtype=torch.bfloat16)
    message = content_message(RecordDict({"model": ArrayRecord({"w": tensor})}))
    decoded = round_trip(message).content.array_records["model"]["w"]
    assert decoded.dtype == "bfloat16"
    assert torch.equal(decoded.torch(), tensor)


def test_odd_shapes_round_trip() -> None:
    arrays = {
        "scalar": Array.from_buffer("float64", (), struct.pack("<d", 3.5)),
        "empty": np.zeros((0, 5), np.float32),
        "rank32": np.zeros((1,) * 32, np.int8),
        "big_side": np.ones((1, 3000), np.uint16),
    }
    decoded = round_trip(content_message(RecordDict({"a": ArrayRecord(arrays)})))
    record = decoded.content.array_records["a"]
    assert record["scalar"].shape == ()
    assert record["scalar"].numpy()[()] == 3.5
    assert record["empty"].shape == (0, 5)
    assert record["rank32"].shape == (1,) * 32


def test_replies_and_error_replies_round_trip() -> None:
    with use_clock(lambda: 100.0):
        ask = Message(RecordDict({"m": MetricRecord({"x": 1})}), 4, "evaluate", group_id="r3")
    with use_clock(lambda: 130.0):
        reply = ask.create_reply(RecordDict())
        failures = [
            ask.create_error_reply(Error(ErrorCode.HANDLER_EXCEPTION, "ValueError: boom ✗")),
            ask.create_error_reply(Error(ErrorCode.MESSAGE_EXPIRED)),
            ask.create_error_reply(Error(INT64_MIN, "")),
            ask.create_error_reply(Error(INT64_MAX, None)),
        ]
    assert reply.metadata.src_node_id == 4
    assert reply.metadata.dst_node_id == -1
    decoded = round_trip(reply)
    assert decoded.metadata.reply_to_message_id == ask.metadata.message_id
    assert decoded.metadata.ttl == ask.metadata.ttl - 30.0
    for failure in failures:
        decoded = round_trip(failure)
        assert decoded.has_error()
        assert not decoded.has_content()
        assert decoded.error == failure.error
        assert decoded.error.reason == failure.error.reason  # "" stays "", None stays None


def test_a_message_built_by_the_public_constructor_round_trips() -> None:
    message = Message(
        RecordDict({"model": ArrayRecord([np.ones((3, 3), np.float32)])}), 12, "train", ttl=5.0
    )
    assert round_trip(message).metadata == message.metadata


def test_an_integer_clock_time_travels_as_the_float_it_equals() -> None:
    with use_clock(lambda: 1_700_000_000):
        message = Message(RecordDict(), 1, "ping")
    decoded = round_trip(message)
    assert decoded.metadata.created_at == 1_700_000_000.0


# --- zero copy and alignment ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_decoded_arrays_are_read_only_aligned_views_of_the_frame(kind: type) -> None:
    values = {f"w{i}": np.arange(i + 1, dtype=np.float64) for i in range(5)}
    frame = kind(encode_message(content_message(RecordDict({"m": ArrayRecord(values)}))))
    raw = np.frombuffer(frame, np.uint8)
    decoded = decode_message(frame).content.array_records["m"]
    for key, expected in values.items():
        array = decoded[key].numpy()
        np.testing.assert_array_equal(array, expected)
        assert np.shares_memory(array, raw)
        assert not array.flags.writeable
        assert (array.ctypes.data - raw.ctypes.data) % ALIGNMENT == 0


def test_decoded_arrays_keep_the_frame_alive() -> None:
    frame = bytes(encode_message(example_message()))
    array = decode_message(frame).content.array_records["w"]["b"].numpy()
    del frame
    gc.collect()
    assert array.tolist() == [1.0, 2.0]


def test_a_numpy_uint8_buffer_decodes_too() -> None:
    frame = np.frombuffer(bytes(encode_message(example_message())), np.uint8).copy()
    assert decode_message(frame) == example_message()


# --- encoded_size --------------------------------------------------------------------------------


def test_encoded_size_counts_non_ascii_text_in_utf8_bytes() -> None:
    message = content_message(
        RecordDict({"ü": ConfigRecord({"ключ": "значение", "l": ["✓", "a"]})}), group_id="é"
    )
    assert encoded_size(message) == len(encode_message(message))


def test_encoded_size_does_not_read_array_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    message = content_message(RecordDict({"a": ArrayRecord({"w": np.zeros(1 << 20, np.float32)})}))
    size = len(encode_message(message))

    def no_data(self: Array) -> memoryview:
        raise AssertionError("the array's bytes were read")

    monkeypatch.setattr(Array, "data", property(no_data))
    assert encoded_size(message) == size
    assert size - 4 * (1 << 20) < 256


# --- property-based: arbitrary messages round-trip ----------------------------------------------

keys = st.text(min_size=1, max_size=6)
int64s = st.integers(INT64_MIN, INT64_MAX)
finite_floats = st.floats(allow_nan=False)
small_lists = {"max_size": 4}


@st.composite
def arrays(draw: st.DrawFn) -> Array:
    dtype = draw(st.sampled_from(sorted(DTYPE_NAMES)))
    shape = tuple(draw(st.lists(st.integers(0, 3), max_size=4)))
    size = math.prod(shape) * DTYPE_NAMES[dtype].itemsize
    return Array.from_buffer(dtype, shape, draw(st.binary(min_size=size, max_size=size)))


metric_values = st.one_of(
    int64s, finite_floats, st.lists(int64s, **small_lists), st.lists(finite_floats, **small_lists)
)
config_scalars = [int64s, finite_floats, st.text(max_size=8), st.binary(max_size=8), st.booleans()]
config_values = st.one_of(
    *config_scalars, *(st.lists(scalar, **small_lists) for scalar in config_scalars)
)
records = st.one_of(
    st.dictionaries(keys, arrays(), max_size=3).map(ArrayRecord),
    st.dictionaries(keys, metric_values, max_size=4).map(MetricRecord),
    st.dictionaries(keys, config_values, max_size=4).map(ConfigRecord),
)
record_dicts = st.dictionaries(keys, records, max_size=4).map(RecordDict)
metadatas = st.builds(
    Metadata,
    run_id=int64s,
    message_id=st.text(max_size=8),
    src_node_id=st.integers(-1, INT64_MAX),
    dst_node_id=st.integers(-1, INT64_MAX),
    reply_to_message_id=st.text(max_size=8),
    group_id=st.text(max_size=8),
    created_at=st.floats(allow_nan=False, allow_infinity=False),
    ttl=st.floats(allow_nan=False, allow_infinity=False),
    message_type=st.text("abcXYZ019_.-", min_size=1, max_size=12),
)
errors = st.builds(Error, int64s, st.none() | st.text(max_size=12))
messages = st.one_of(
    st.builds(
        lambda meta, body: Message.from_metadata(meta, content=body), metadatas, record_dicts
    ),
    st.builds(lambda meta, error: Message.from_metadata(meta, error=error), metadatas, errors),
)


@settings(max_examples=300, deadline=None)
@given(messages)
def test_any_message_round_trips_to_an_equal_message(message: Message) -> None:
    frame = encode_message(message)
    assert len(frame) == encoded_size(message)
    assert b"".join(encode_message_parts(message)) == frame
    decoded = decode_message(frame)
    assert decoded == message
    if decoded.has_content():
        assert [list(record) for record in decoded.content.values()] == [
            list(record) for record in message.content.values()
        ]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(), min_size=1, max_size=4))
def test_any_float_list_keeps_its_bits(values: list[float]) -> None:
    message = content_message(RecordDict({"m": MetricRecord({"v": values, "s": values[0]})}))
    decoded = decode_message(encode_message(message)).content.metric_records["m"]
    assert [float_bits(v) for v in decoded["v"]] == [float_bits(v) for v in values]
    assert float_bits(decoded["s"]) == float_bits(values[0])


# --- property-based: hostile input gives DecodeError or a valid message -------------------------


def decode_or_decode_error(frame: bytes | bytearray, limits: DecodeLimits | None = None) -> None:
    """Decoding may fail only with DecodeError; what it returns must be a sound message."""
    try:
        message = decode_message(frame, limits=limits)
    except DecodeError:
        return
    assert isinstance(message, Message)
    again = encode_message(message)
    assert len(again) == encoded_size(message)
    # Bytes, not Message equality: a mutation may have made a float NaN, and NaN != NaN.
    assert encode_message(decode_message(again)) == again


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_give_decode_error_or_a_message(data: bytes) -> None:
    decode_or_decode_error(data)


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_after_a_valid_header_give_decode_error_or_a_message(data: bytes) -> None:
    size = HEADER_SIZE + 1 + len(data)
    header = struct.pack("<4sHHQqqqddIIII", MAGIC, VERSION, 0, size, 0, 0, 0, 0.0, 1.0, 0, 0, 0, 1)
    header += b"t"
    decode_or_decode_error(header + data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages, st.data())
def test_mutated_frames_give_decode_error_or_a_message(message: Message, data: Any) -> None:
    frame = encode_message(message)
    for _ in range(data.draw(st.integers(1, 3))):
        position = data.draw(st.integers(0, len(frame) - 1))
        frame[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(frame)))
    decode_or_decode_error(frame)
    decode_or_decode_error(frame[:cut])
    decode_or_decode_error(frame, DecodeLimits(max_records=1, max_entries=1, max_rank=2))


def rich_frame() -> bytearray:
    content = RecordDict(
        {
            "a": ArrayRecord({"w": np.arange(6, dtype=np.int16).reshape(2, 3)}),
            "m": MetricRecord({"l": 0.5, "ls": [1, 2]}),
            "c": ConfigRecord({"s": "x", "b": [b"y"], "t": True, "ts": [False], "n": ["z"]}),
        }
    )
    return encode_message(content_message(content, reply_to_message_id="r"))


def test_every_single_byte_change_gives_decode_error_or_a_message() -> None:
    original = rich_frame()
    for position in range(len(original)):
        for value in {0x00, 0x01, 0x7F, 0x80, 0xFF, original[position] ^ 0x02}:
            frame = bytearray(original)
            frame[position] = value
            decode_or_decode_error(frame)


def test_every_truncation_and_extension_gives_decode_error() -> None:
    frame = rich_frame()
    for cut in range(len(frame)):
        with pytest.raises(DecodeError):
            decode_message(frame[:cut])
    for extra in (b"\x00", b"\x00" * 64):
        with pytest.raises(DecodeError, match="bytes"):
            decode_message(frame + extra)


# --- specific invalid input ----------------------------------------------------------------------


def patched(frame: bytes | bytearray, offset: int, fmt: str, *values: Any) -> bytearray:
    copy = bytearray(frame)
    struct.pack_into(fmt, copy, offset, *values)
    return copy


def decode_error(frame: bytes | bytearray, match: str, limits: DecodeLimits | None = None) -> None:
    with pytest.raises(DecodeError, match=match):
        decode_message(frame, limits=limits)


def test_header_problems_are_named() -> None:
    frame = EXAMPLE_FRAME
    decode_error(patched(frame, 0, "4s", b"FBUZ"), "not a fedbus frame")
    decode_error(patched(frame, 4, "<H", 2), "format version 2 is not supported")
    decode_error(patched(frame, 6, "<H", 4), "unknown flags")
    decode_error(patched(frame, 8, "<Q", 999), "the header says 999 bytes")
    decode_error(b"", "needs 72 bytes")


@pytest.mark.parametrize(
    ("offset", "fmt", "value", "match"),
    [
        (24, "<q", -2, "node ids must be >= -1"),
        (32, "<q", INT64_MIN, "node ids must be >= -1"),
        (40, "<d", math.nan, "created_at must be a finite"),
        (48, "<d", math.inf, "ttl must be a finite"),
        (75, "B", ord(" "), "invalid message_type"),
        (72, "B", 0xFF, "not valid UTF-8"),
    ],
)
def test_invalid_metadata_is_refused(offset: int, fmt: str, value: Any, match: str) -> None:
    decode_error(patched(EXAMPLE_FRAME, offset, fmt, value), match)


def test_invalid_content_is_refused() -> None:
    frame = EXAMPLE_FRAME
    array_header = EXAMPLE_FRAME.index(b"\x01\x00\x00\x00\x0b")
    decode_error(patched(frame, 84, "B", 9), "unknown record kind 9")
    decode_error(patched(frame, 85, "<I", 0), "empty key")
    decode_error(patched(frame, array_header + 4, "B", 99), "unknown dtype code 99")
    decode_error(patched(frame, array_header + 4, "B", 12), "does not hold 8 bytes")  # float64
    decode_error(patched(frame, array_header + 15, "<Q", 3), "shape \\(3,\\)")
    config_tag = EXAMPLE_FRAME.index(b"lr") - 1
    decode_error(patched(frame, config_tag, "B", 0x07), "value tag 0x07 is not allowed")
    # Read as a MetricRecord, the array entry's dtype code 0x0b is no value tag it allows.
    decode_error(patched(frame, 84, "B", 2), "not allowed in this record")


def test_duplicate_keys_are_refused() -> None:
    message = content_message(
        RecordDict(
            {
                "aa": MetricRecord({"x": 1, "y": 2}),
                "ab": ArrayRecord({"p": np.zeros(1), "q": np.zeros(2)}),
            }
        )
    )
    encoded = encode_message(message)
    decode_error(encoded.replace(b"ab", b"aa"), "repeats a record key")
    decode_error(encoded.replace(b"y", b"x"), "a record repeats a key")
    decode_error(encoded.replace(b"q", b"p"), "an ArrayRecord repeats a key")


def test_bool_bytes_other_than_0_and_1_are_refused() -> None:
    message = content_message(RecordDict({"c": ConfigRecord({"t": True, "ts": [True, False]})}))
    frame = encode_message(message)
    scalar = frame.index(b"t\x01") + 1
    decode_error(patched(frame, scalar, "B", 2), "a bool must be 0 or 1")
    listed = frame.index(b"\x01\x00", scalar + 6)
    decode_error(patched(frame, listed, "B", 7), "a bool must be 0 or 1")


def test_error_frames_are_checked() -> None:
    reply = Message.from_metadata(metadata(), error=Error(2, "boom"))
    frame = encode_message(reply)
    error_at = frame.index(b"train") + 5
    decode_error(patched(frame, error_at + 8, "B", 2), "has_reason")
    decode_error(patched(frame, error_at + 8, "<BI", 0, 4), "has_reason")
    decode_error(patched(frame, error_at + 13, "B", 0xC3), "not valid UTF-8")


def test_huge_dims_of_an_empty_array_are_refused() -> None:
    message = content_message(RecordDict({"a": ArrayRecord({"w": np.zeros((0, 1), np.int8)})}))
    frame = encode_message(message)
    dims = frame.index(b"w") + 1
    decode_error(patched(frame, dims + 8, "<Q", 2**64 - 1), "too large for NumPy")
    decode_error(patched(frame, dims + 8, "<Q", 2**63), "too large for NumPy")
    huge_but_empty = decode_message(patched(frame, dims + 8, "<Q", 2**40))
    assert huge_but_empty.content.array_records["a"]["w"].shape == (0, 2**40)


def test_rank_above_32_is_refused_whatever_the_limits() -> None:
    frame = bytearray(EXAMPLE_FRAME)
    array_header = EXAMPLE_FRAME.index(b"\x01\x00\x00\x00\x0b")
    decode_error(patched(frame, array_header + 5, "B", 33), "rank 33 exceeds")
    with pytest.raises(InvalidArgumentError, match="max_rank must be <= 32"):
        DecodeLimits(max_rank=33)


def test_non_buffers_and_non_contiguous_buffers_give_decode_error() -> None:
    for value in (None, 3, "text", [1, 2], memoryview(bytes(EXAMPLE_FRAME) * 2)[::2]):
        with pytest.raises(DecodeError):
            decode_message(value)


# --- limits --------------------------------------------------------------------------------------


def test_limits_are_enforced_and_configurable() -> None:
    frame = EXAMPLE_FRAME
    decode_error(frame, "max_message_bytes=100", DecodeLimits(max_message_bytes=100))
    decode_error(frame, "max_records=1", DecodeLimits(max_records=1))
    decode_error(frame, "max_entries", DecodeLimits(max_entries=0))
    decode_error(frame, "max_string_bytes=4", DecodeLimits(max_string_bytes=4))
    decode_error(frame, "max_string_bytes", DecodeLimits(max_string_bytes=1))
    decode_error(frame, "rank 1 exceeds", DecodeLimits(max_rank=0))
    lists = content_message(RecordDict({"m": MetricRecord({"l": [1.0, 2.0, 3.0]})}))
    decode_error(encode_message(lists), "max_list_length=2", DecodeLimits(max_list_length=2))
    exact = DecodeLimits(
        max_message_bytes=len(frame), max_records=2, max_entries=1, max_rank=1, max_string_bytes=5
    )
    assert decode_message(frame, limits=exact) == example_message()


def test_decode_limits_must_be_non_negative_ints() -> None:
    assert DecodeLimits().max_message_bytes == 2**31
    for bad in (-1, 1.5, True, "10"):
        with pytest.raises(InvalidArgumentError, match="max_records must be an int >= 0"):
            DecodeLimits(max_records=bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidTypeError, match="limits must be DecodeLimits"):
        decode_message(EXAMPLE_FRAME, limits={"max_records": 1})  # type: ignore[arg-type]


def hostile_frames() -> list[bytearray]:
    """Small frames that declare huge lengths and counts."""
    frame = EXAMPLE_FRAME
    array_header = EXAMPLE_FRAME.index(b"\x01\x00\x00\x00\x0b")
    strings = content_message(RecordDict({"c": ConfigRecord({"s": ["a"], "b": b"x"})}))
    numbers = content_message(RecordDict({"m": MetricRecord({"f": [1.0]})}))
    encoded_strings, encoded_numbers = encode_message(strings), encode_message(numbers)
    return [
        patched(frame, 56, "<I", 2**32 - 1),  # message_id length
        patched(frame, 80, "<I", 2**32 - 1),  # record count
        patched(frame, 85, "<I", 2**32 - 1),  # record key length
        patched(frame, 89, "<I", 2**32 - 1),  # entry count
        patched(frame, array_header, "<I", 2**32 - 1),  # array key length
        patched(frame, array_header + 6, "<Q", 2**64 - 1),  # array data length
        patched(frame, array_header + 15, "<Q", 2**64 - 1),  # a dim
        patched(encoded_strings, encoded_strings.index(b"\x14s") + 2, "<I", 2**24),  # list
        patched(encoded_strings, encoded_strings.index(b"\x05b") + 2, "<I", 2**24),  # bytes
        patched(encoded_numbers, encoded_numbers.index(b"\x12f") + 2, "<I", 2**24),  # floats
    ]


@pytest.mark.parametrize("frame", hostile_frames())
def test_huge_declared_lengths_fail_without_allocating(frame: bytearray) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(DecodeError):
            decode_message(frame)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024, f"decoding a {len(frame)}-byte frame allocated {peak} bytes"


# --- encoding refuses what could not be decoded --------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"ttl": math.nan}, "ttl must be a finite"),
        ({"created_at": math.inf}, "created_at must be a finite"),
        ({"src_node_id": -2}, "node ids must be >= -1"),
        ({"dst_node_id": 2**63}, "dst_node_id must be an int64"),
        ({"run_id": -(2**63) - 1}, "run_id must be an int64"),
        ({"message_type": "no spaces"}, "invalid message_type"),
    ],
)
def test_encode_refuses_invalid_metadata(changes: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        encode_message(content_message(RecordDict(), **changes))


def test_encode_refuses_strings_that_are_not_utf8_and_codes_beyond_64_bits() -> None:
    with pytest.raises(InvalidArgumentError, match="lone surrogates"):
        encode_message(content_message(RecordDict({"c": ConfigRecord({"s": "\ud800"})})))
    with pytest.raises(InvalidArgumentError, match="lone surrogates"):
        encoded_size(content_message(RecordDict(), group_id="\udfff"))
    with pytest.raises(InvalidArgumentError, match="does not fit in 64 bits"):
        encode_message(Message.from_metadata(metadata(), error=Error(2**64)))
    with pytest.raises(InvalidTypeError, match="expected a Message"):
        encode_message(b"bytes")  # type: ignore[arg-type]


def test_encoding_into_a_dirty_buffer_writes_every_byte() -> None:
    """``allocate`` may hand out unzeroed memory: padding and all must be written anyway."""
    arrays = {"a": np.arange(3, dtype=np.float32), "b": np.ones((2, 5), dtype=np.int16)}
    message = content_message(
        RecordDict({"w": ArrayRecord(arrays), "m": MetricRecord({"loss": 0.5})})
    )
    dirty = encode_message(message, allocate=lambda size: np.full(size, 0xAB, dtype=np.uint8))
    assert isinstance(dirty, np.ndarray)
    assert dirty.tobytes() == bytes(encode_message(message))
    assert decode_message(dirty) == message


def test_an_allocator_of_the_wrong_size_is_refused() -> None:
    message = content_message(RecordDict())
    with pytest.raises(InvalidArgumentError, match="must be writable and exactly that size"):
        encode_message(message, allocate=lambda size: bytearray(size + 1))
    with pytest.raises(InvalidArgumentError, match="read-only"):
        encode_message(message, allocate=lambda size: bytes(size))


# --- parts: large arrays are sent from where they are ------------------------------------------


def test_message_parts_leave_large_arrays_in_place_and_join_to_the_frame() -> None:
    rng = np.random.default_rng(1)
    large = rng.standard_normal(20_000)  # 160 KB: shared
    small = rng.standard_normal(100).astype(np.float32)  # copied
    last = rng.integers(0, 9, size=(300, 300)).astype(np.int8)  # 90 KB: shared, at the end
    content = RecordDict(
        {
            "model": ArrayRecord({"large": large, "small": small}),
            "metrics": MetricRecord({"loss": 0.5}),
            "tail": ArrayRecord({"last": last}),
        }
    )
    message = Message(content, 3, "train")
    parts = encode_message_parts(message)
    assert b"".join(parts) == encode_message(message)
    assert all(part.readonly for part in parts)
    shared = [part for part in parts if part.nbytes in (large.nbytes, last.nbytes)]
    assert len(shared) == 2
    assert np.shares_memory(np.frombuffer(shared[0], np.uint8), large)
    assert np.shares_memory(np.frombuffer(shared[1], np.uint8), last)
    # The rest is headers: a few hundred bytes beside the arrays' own.
    assert sum(part.nbytes for part in parts) - large.nbytes - last.nbytes < 1024
    assert decode_message(b"".join(parts)) == message


def test_an_error_message_is_one_part() -> None:
    message = Message(RecordDict(), 3, "train").create_error_reply(Error(2, "boom"))
    (part,) = encode_message_parts(message)
    assert bytes(part) == encode_message(message)


def test_metadata_reads_from_the_first_bytes_of_a_frame() -> None:
    message = Message(RecordDict({"m": ArrayRecord({"w": np.zeros(100_000)})}), 4, "train")
    mark_sent(message, run_id=3, message_id="abc", src_node_id=7)
    frame = encode_message(message)
    assert decode_metadata(frame[:300]) == message.metadata
    with pytest.raises(DecodeError, match="the header needs"):
        decode_metadata(frame[:20])
    with pytest.raises(DecodeError, match="needs"):
        decode_metadata(frame[:75])  # the header, not the strings
    with pytest.raises(DecodeError, match="not a fedbus frame"):
        decode_metadata(b"XXXX" + bytes(frame[4:300]))
