"""Long list values decode to packed lists: memory within 2x of the frame, list behaviour, and
refusal of hostile list bytes with a DecodeError naming the problem."""

from __future__ import annotations

import copy
import doctest
import math
import pickle
import struct
import tracemalloc
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedbus.errors import DecodeError, InvalidArgumentError, InvalidTypeError
from fedbus.message import (
    ConfigRecord,
    DecodeLimits,
    Message,
    Metadata,
    MetricRecord,
    PackedList,
    PackedNumbers,
    PackedStrings,
    RecordDict,
    decode_message,
    encode_message,
    encoded_size,
    packed,
)

MILLION = 1_000_000
PACKED_FROM = 64  # lists this long or longer decode packed (codec._PACKED_FROM)


# Fixed metadata (no clock): frames of equal content are equal bytes.
METADATA = Metadata(1, "m1", 0, 3, "", "", 2.5, 60.0, "train")


def message_of(values: Any, record: type[ConfigRecord | MetricRecord] = ConfigRecord) -> Message:
    return Message.from_metadata(METADATA, content=RecordDict({"r": record({"v": values})}))


def decoded_value(frame: bytes | bytearray, limits: DecodeLimits | None = None) -> Any:
    return decode_message(frame, limits=limits).content["r"]["v"]


def frame_of(values: Any, record: type[ConfigRecord | MetricRecord] = ConfigRecord) -> bytes:
    return bytes(encode_message(message_of(values, record)))


def decode_traced(frame: bytes) -> tuple[Any, int, int]:
    """The decoded list value, and the bytes decoding allocated: still held, and at the peak.

    The frame exists before tracing starts, so it is not counted: a decoded value within 2x
    of its frame is the frame plus at most one frame's worth of allocations.
    """
    tracemalloc.start()
    try:
        value = decoded_value(frame)
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return value, held, peak


def shares_frame(buffer: Any, frame: bytes) -> bool:
    return bool(np.shares_memory(np.frombuffer(buffer, np.uint8), np.frombuffer(frame, np.uint8)))


def decode_error(frame: bytes | bytearray, match: str, limits: DecodeLimits | None = None) -> None:
    with pytest.raises(DecodeError, match=match):
        decode_message(frame, limits=limits)


# --- memory: a million items cost memory within 2x of their frame -----------------------------


def test_a_million_bools_decode_as_a_view_into_the_frame() -> None:
    values = [index % 3 == 0 for index in range(MILLION)]
    frame = frame_of(values)
    assert len(frame) < MILLION + 200  # one byte per bool
    value, held, peak = decode_traced(frame)
    assert isinstance(value, PackedNumbers)
    assert value.item_type is bool
    assert shares_frame(value.data, frame)
    # Nothing proportional to the items: a few objects of headers.
    assert held < 10_000
    assert peak < 10_000
    assert len(frame) + peak <= 2 * len(frame)
    assert value == values
    assert values == value


@pytest.mark.parametrize(
    "items",
    [["ab", "x123"], ["é1", "ab"]],  # ASCII (one vectorised check), and not (checked in chunks)
    ids=["ascii", "non-ascii"],
)
def test_a_million_short_strings_cost_memory_within_2x_of_their_frame(items: list[str]) -> None:
    values = items * (MILLION // 2)
    frame = frame_of(values)
    value, held, peak = decode_traced(frame)
    assert isinstance(value, PackedStrings)
    assert value.item_type is str
    assert len(value) == MILLION
    assert shares_frame(value.data, frame)
    # 4 bytes per item say where it starts; an item takes 4 + its length in the frame.
    assert held <= 4 * (MILLION + 1) + 10_000
    assert len(frame) + held <= 2 * len(frame)
    assert len(frame) + peak <= 2 * len(frame)
    assert value == values
    assert values == value
    assert value[-1] == items[-1]
    assert value[MILLION // 2 : MILLION // 2 + 3] == values[:3]


def test_a_million_numbers_decode_as_views_into_the_frame() -> None:
    ints = list(range(-MILLION // 2, MILLION // 2))
    floats = [index / 7 for index in range(MILLION)]
    frame = bytes(encode_message(message_of(ints)))
    other = bytes(encode_message(message_of(floats, MetricRecord)))
    for raw, values in ((frame, ints), (other, floats)):
        value, _, peak = decode_traced(raw)
        assert isinstance(value, PackedNumbers)
        assert shares_frame(value.data, raw)
        assert np.shares_memory(value.numpy(), np.frombuffer(raw, np.uint8))
        assert peak < 10_000
        assert value == values
        assert value[123_456] == values[123_456]
        assert type(value[0]) is type(values[0])


# --- behaving like the list it stands for ------------------------------------------------------

LONG_LISTS = [
    [index % 2 == 0 for index in range(100)],
    list(range(-50, 50)),
    [index / 4 for index in range(70)],
    ["ab", "é", "", "x123", "✓" * 40] * 20,
    [b"", b"\x00\xff", b"x" * 300] * 30,
]


@pytest.mark.parametrize("values", LONG_LISTS, ids=["bool", "int", "float", "str", "bytes"])
def test_packed_lists_behave_like_the_lists_they_replace(values: list[Any]) -> None:
    message = message_of(values)
    frame = encode_message(message)
    decoded = decode_message(frame)
    value = decoded.content["r"]["v"]
    assert isinstance(value, PackedList)
    assert not isinstance(value, list)
    assert value.item_type is type(values[0])
    # equality both ways, and inequality
    assert value == values
    assert values == value
    assert (value != values) is False
    assert (values != value) is False
    assert value != values[:-1]
    assert value != [*values[:-1], values[0] if values[-1] != values[0] else values[1]]
    assert value != tuple(values)  # as a list is not equal to a tuple
    assert decoded == message
    assert message == decoded
    # reading
    assert len(value) == len(values)
    assert [value[index] for index in range(len(values))] == values
    assert [type(value[index]) for index in range(len(values))] == [type(v) for v in values]
    assert value[-1] == values[-1]
    assert value[-len(values)] == values[0]
    assert value[3:17] == values[3:17]
    assert value[::-3] == values[::-3]
    assert value[90:10] == []
    assert type(value[1:3]) is list
    assert list(value) == values
    assert value.tolist() == values
    assert type(value.tolist()) is list
    assert list(reversed(value)) == values[::-1]
    assert values[5] in value
    assert value.index(values[5]) == values.index(values[5])
    assert value.count(values[0]) == values.count(values[0])
    assert repr(value) == repr(values)
    for index in (len(values), -len(values) - 1):
        with pytest.raises(IndexError):
            value[index]
    with pytest.raises(TypeError):
        value["0"]  # type: ignore[call-overload]
    with pytest.raises(TypeError):
        hash(value)
    # read-only, with no list methods that change it
    assert not hasattr(value, "append")
    with pytest.raises(TypeError):
        value[0] = values[0]  # type: ignore[index]
    # copies: a deep copy holds its own bytes, no longer the frame
    assert copy.copy(value) is value
    clone = copy.deepcopy(value)
    assert clone == values
    assert not shares_frame(clone.data, bytes(frame))
    assert copy.deepcopy(decoded) == message
    assert pickle.loads(pickle.dumps(value)) == values


def test_lists_shorter_than_64_items_decode_as_lists() -> None:
    for length in (0, 1, PACKED_FROM - 1):
        assert type(decoded_value(frame_of(["a"] * length))) is list
        assert type(decoded_value(frame_of([1.5] * length))) is list
    assert isinstance(decoded_value(frame_of(["a"] * PACKED_FROM)), PackedStrings)
    assert isinstance(decoded_value(frame_of([1.5] * PACKED_FROM)), PackedNumbers)


def test_packed_lists_compare_as_lists_compare() -> None:
    ints = decoded_value(frame_of(list(range(100))))
    floats = decoded_value(frame_of([float(index) for index in range(100)]))
    assert ints == floats  # as [0, 1] == [0.0, 1.0]
    assert floats == list(range(100))
    strings = decoded_value(frame_of(["a"] * 100))
    blobs = decoded_value(frame_of([b"a"] * 100))
    assert strings != blobs
    assert strings != ints
    assert strings == decoded_value(frame_of(["a"] * 100))
    nans = decoded_value(frame_of([math.nan] * 100))
    assert nans == nans  # the same list: its items are themselves, as in a list
    assert nans != decoded_value(frame_of([math.nan] * 100))  # NaN != NaN
    bools = decoded_value(frame_of([True] * 100))
    assert bools == [1] * 100  # as [True] == [1]


def test_packed_lists_are_numpy_arrays_without_a_copy() -> None:
    value = decoded_value(frame_of([index / 2 for index in range(100)]))
    array = np.asarray(value)
    assert array.dtype == np.float64
    assert array is value.numpy()
    assert not array.flags.writeable
    assert np.array(value, dtype=np.float32).flags.writeable  # a copy when asked for one


# --- records and the encoder take packed lists as they are -------------------------------------


@pytest.mark.parametrize("values", LONG_LISTS, ids=["bool", "int", "float", "str", "bytes"])
def test_packed_lists_encode_as_their_bytes_and_round_trip(values: list[Any]) -> None:
    frame = frame_of(values)
    value = decoded_value(frame)
    forwarded = message_of(value)  # ConfigRecord holds the packed list itself
    assert forwarded.content["r"]["v"] is value
    assert encoded_size(forwarded) == len(frame)
    assert encode_message(forwarded) == frame
    assert decode_message(encode_message(forwarded)) == forwarded


def test_metric_records_take_packed_numbers_and_refuse_other_packed_lists() -> None:
    losses = decoded_value(frame_of([0.5] * 100, MetricRecord))
    assert MetricRecord({"losses": losses})["losses"] is losses
    for values in ([True] * 100, ["a"] * 100, [b"a"] * 100):
        packed_list = decoded_value(frame_of(values))
        with pytest.raises(InvalidTypeError) as caught:
            MetricRecord({"v": packed_list})
        assert str(caught.value) == (
            f"MetricRecord key 'v': expected int | float or a list of one of them, "
            f"got a {type(packed_list).__name__} of {type(values[0]).__name__}"
        )


def test_records_repr_packed_lists_cut_short() -> None:
    record = decode_message(frame_of([float(i) for i in range(1000)], MetricRecord)).content["r"]
    text = repr(record)
    assert text.endswith("14.0, 15.0, ... 984 more]})")


def test_packed_lists_can_be_built_from_arrays_and_strings() -> None:
    ints: PackedNumbers[int] = PackedNumbers(np.arange(5, dtype=np.uint16))
    assert ints == [0, 1, 2, 3, 4]
    assert ints.item_type is int
    assert not ints.numpy().flags.writeable
    assert PackedNumbers(np.array([1.5], np.float32)) == [1.5]
    with pytest.raises(InvalidArgumentError, match="does not fit in int64"):
        PackedNumbers(np.array([2**64 - 1], np.uint64))
    with pytest.raises(InvalidTypeError, match=r"expected a 1-D numpy\.ndarray"):
        PackedNumbers(np.zeros((2, 2)))
    with pytest.raises(InvalidTypeError, match="expected bool, integer or floating"):
        PackedNumbers(np.array(["a"]))
    names = PackedStrings(["ab", "", "é"])
    assert names == ["ab", "", "é"]
    assert bytes(names.data) == b"\x02\x00\x00\x00ab\x00\x00\x00\x00\x02\x00\x00\x00\xc3\xa9"
    assert PackedStrings([], item_type=bytes) == []
    with pytest.raises(InvalidTypeError, match="expected str items, got bytes"):
        PackedStrings([b"a"])
    with pytest.raises(InvalidArgumentError, match="not valid UTF-8"):
        PackedStrings(["\ud800"])
    # built ones travel too, and come back equal (and packed when long)
    message = message_of(PackedStrings(["ab"] * 100))
    assert decode_message(encode_message(message)) == message
    empty = message_of(PackedStrings([], item_type=bytes))
    assert encode_message(empty) == encode_message(message_of([]))  # tag 0x11, count 0


def test_the_module_examples_hold() -> None:
    result = doctest.testmod(packed)
    assert result.attempted > 0
    assert result.failed == 0


# --- hostile list bytes are refused, naming the problem ----------------------------------------


def test_one_invalid_utf8_string_in_a_long_list_is_refused() -> None:
    values = ["ab"] * 100
    values[37] = "QQ"
    frame = bytearray(frame_of(values))
    at = frame.index(b"QQ")
    frame[at : at + 2] = b"\xc3\x28"  # a lead byte, then no continuation
    decode_error(frame, r"at byte \d+: list item 37: a string is not valid UTF-8")


def test_a_character_split_across_two_strings_is_refused() -> None:
    # Each item alone must be UTF-8: c3 | a9 is "é" only when the items are joined.
    values = ["é" * 100] * 80  # long items: their length bytes are not ASCII either
    values[50], values[51] = "Q", "R"
    frame = bytearray(frame_of(values))
    frame[frame.index(b"Q")] = 0xC3
    frame[frame.index(b"R")] = 0xA9
    decode_error(frame, "list item 50: a string is not valid UTF-8")


def test_a_bool_byte_of_2_in_a_long_list_is_refused() -> None:
    frame = bytearray(frame_of([False] * 100))
    frame[len(frame) - 100 + 57] = 2  # the list is the frame's last value
    decode_error(frame, "list item 57: a bool must be 0 or 1, got 2")


@pytest.mark.parametrize("length", [5, 1000, 2**24])
def test_a_last_string_running_past_the_end_is_refused(length: int) -> None:
    frame = bytearray(frame_of(["ab"] * 99 + ["last"]))
    struct.pack_into("<I", frame, frame.rindex(b"last") - 4, length)
    decode_error(frame, rf"list item 99 needs {length} bytes, only 4 remain")


@pytest.mark.parametrize("length", [2**24, 2**31, 2**32 - 1])
def test_a_length_in_the_middle_jumping_past_the_end_is_refused(length: int) -> None:
    values = ["ab"] * 100
    values[49] = "MM"
    frame = bytearray(frame_of(values))
    struct.pack_into("<I", frame, frame.index(b"MM") - 4, length)
    limits = DecodeLimits(max_string_bytes=2**32 - 1)  # only the bytes present can stop it
    decode_error(frame, rf"list item 49 needs {length} bytes, only \d+ remain", limits)


def test_a_string_longer_than_the_limit_in_a_long_list_is_refused() -> None:
    frame = frame_of(["ab"] * 99 + ["x12345"])  # the metadata's longest string has 5 bytes
    decode_error(
        frame,
        "list item 99: 6 bytes exceed DecodeLimits.max_string_bytes=5",
        DecodeLimits(max_string_bytes=5),
    )


@pytest.mark.parametrize("values", LONG_LISTS, ids=["bool", "int", "float", "str", "bytes"])
def test_a_list_count_past_the_bytes_is_refused(values: list[Any]) -> None:
    frame = bytearray(frame_of(values))
    count_at = frame.index(b"v") + 1  # the key "v", then the count
    assert struct.unpack_from("<I", frame, count_at)[0] == len(values)
    struct.pack_into("<I", frame, count_at, 2**24)
    decode_error(frame, "needs .* bytes, only .* remain")
    struct.pack_into("<I", frame, count_at, 2**32 - 1)
    decode_error(frame, f"{2**32 - 1} items exceed DecodeLimits.max_list_length={2**24}")


def test_a_list_longer_than_max_list_length_is_refused() -> None:
    frame = frame_of(["ab"] * 100)
    decode_error(
        frame, "100 items exceed DecodeLimits.max_list_length=99", DecodeLimits(max_list_length=99)
    )
    assert decoded_value(frame, DecodeLimits(max_list_length=100)) == ["ab"] * 100


def test_list_items_per_message_are_capped_across_records() -> None:
    content = RecordDict(
        {
            "c": ConfigRecord({"a": ["x"] * 100, "b": [True] * 10}),
            "m": MetricRecord({"c": [1.5] * 60, "d": [], "e": 2.0}),
        }
    )
    frame = encode_message(Message(content, 1, "train"))
    assert (
        decode_message(frame, limits=DecodeLimits(max_list_items_per_message=170)).content
        == content
    )
    # short lists count as much as long ones
    decode_error(
        frame,
        "a list of 60 items exceeds DecodeLimits.max_list_items_per_message=169",
        DecodeLimits(max_list_items_per_message=169),
    )
    decode_error(
        frame,
        "a list of 100 items exceeds DecodeLimits.max_list_items_per_message=99",
        DecodeLimits(max_list_items_per_message=99),
    )
    assert DecodeLimits().max_list_items_per_message == 2**26
    with pytest.raises(InvalidArgumentError, match="max_list_items_per_message must be an int"):
        DecodeLimits(max_list_items_per_message=-1)


def long_lists_frame() -> bytes:
    content = RecordDict(
        {
            "c": ConfigRecord(
                {
                    "b": [True, False] * 40,
                    "s": ["ab", "é", ""] * 30,
                    "y": [b"\x00", b"xyz"] * 40,
                    "i": list(range(70)),
                }
            ),
            "m": MetricRecord({"f": [0.25] * 80}),
        }
    )
    return bytes(encode_message(Message(content, 1, "train")))


LONG_LISTS_FRAME = long_lists_frame()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.integers(0, len(LONG_LISTS_FRAME) - 1), st.integers(0, 255)),
        min_size=1,
        max_size=4,
    ),
    st.integers(0, 40),
)
def test_mutated_long_lists_give_decode_error_or_a_sound_message(
    changes: list[tuple[int, int]], cut: int
) -> None:
    frame = bytearray(LONG_LISTS_FRAME)
    for at, byte in changes:
        frame[at] = byte
    if cut:
        del frame[-cut:]
        struct.pack_into("<Q", frame, 8, len(frame))  # a consistent header, a shorter body
    try:
        message = decode_message(frame)
    except DecodeError:
        return
    again = encode_message(message)
    assert len(again) == encoded_size(message)
    assert encode_message(decode_message(again)) == again
