"""Transport frames: chunking, reassembly, and refusal of every malformed frame."""

from __future__ import annotations

import itertools
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedbus.errors import DecodeError, InvalidArgumentError
from fedbus.message import ArrayRecord, Message, RecordDict
from fedbus.runtime.grpc.framing import (
    DATA,
    GOODBYE,
    HEADER_SIZE,
    HEARTBEAT,
    Reassembler,
    TransportLimits,
    control_frame,
    encode_for_stream,
    encoded_length,
    message_frames,
)
from fedbus.runtime.grpc.ioloop import IoLoop
from fedbus.runtime.grpc.stream import Heartbeat, Outbox

MIB = 1 << 20
LIMITS = TransportLimits(chunk_size=MIB, max_message_bytes=64 * MIB)


def frame(kind: int, flags: int, sequence: int, total: int, offset: int, payload: bytes) -> bytes:
    return struct.pack("<BBHIQQ", kind, flags, 0, sequence, total, offset) + payload


@pytest.mark.parametrize("size", [1, MIB - 1, MIB, MIB + 1, 3 * MIB + 17])
def test_a_message_is_cut_into_chunks_and_put_back_together(size: int) -> None:
    message = bytes(range(256)) * (size // 256) + bytes(size % 256)
    frames = list(message_frames(message, 7, MIB))
    assert len(frames) == -(-size // MIB)
    assert all(len(f) <= HEADER_SIZE + MIB for f in frames)
    reassembler = Reassembler(LIMITS)
    results = [reassembler.feed(f) for f in frames]
    assert all(kind == DATA for kind, _ in results)
    assert all(done is None for _, done in results[:-1])
    whole = results[-1][1]
    assert whole is not None
    assert bytes(whole) == message
    assert whole.readonly
    assert not reassembler.in_progress


def test_control_frames_and_messages_interleave_only_between_messages() -> None:
    reassembler = Reassembler(LIMITS)
    assert reassembler.feed(control_frame(HEARTBEAT)) == (HEARTBEAT, None)
    first, _ = message_frames(bytes(MIB + 1), 1, MIB)
    reassembler.feed(first)
    with pytest.raises(DecodeError, match="control frame inside a message"):
        reassembler.feed(control_frame(GOODBYE))


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        (b"short", "the header alone is 24"),
        (frame(9, 0, 0, 0, 0, b""), "unknown kind 9"),
        (frame(DATA, 0x80, 1, 4, 0, b"abcd"), "flags 0x80"),
        (frame(DATA, 1, 1, 4, 2, b"ab"), "starts at byte 2"),
        (frame(DATA, 1, 1, 0, 0, b""), "announces 0 bytes"),
        (frame(DATA, 1, 1, 65 * MIB, 0, b"ab"), "announces 68157440 bytes"),
        (frame(DATA, 1, 1, 4, 0, b"abcdef"), "chunk ends at byte 6 of 4"),
        (frame(DATA, 0, 1, 4, 0, b"abcd"), "last-chunk flag clear"),
        (frame(DATA, 1, 1, 2 * MIB, 0, bytes(MIB + 1)), "more than the chunk size"),
        (frame(HEARTBEAT, 0, 0, 0, 0, b"x"), "with data"),
    ],
)
def test_malformed_frames_raise_decode_error(bad: bytes, problem: str) -> None:
    with pytest.raises(DecodeError, match=problem):
        Reassembler(LIMITS).feed(bad)


def test_chunks_out_of_order_are_refused() -> None:
    reassembler = Reassembler(LIMITS)
    first, second, _ = message_frames(bytes(2 * MIB + 1), 5, MIB)
    reassembler.feed(first)
    with pytest.raises(DecodeError, match="out of order"):
        reassembler.feed(first)
    other = Reassembler(LIMITS)
    other.feed(first)
    other.feed(second)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=8))
def test_arbitrary_frames_give_decode_error_or_progress(frames: list[bytes]) -> None:
    reassembler = Reassembler(TransportLimits(chunk_size=MIB, max_message_bytes=1024))
    for data in frames:
        try:
            kind, _ = reassembler.feed(data)
        except DecodeError:
            return
        assert kind in (DATA, HEARTBEAT, GOODBYE)


def test_limits_are_checked() -> None:
    with pytest.raises(InvalidArgumentError, match="1 MiB to 4 MiB"):
        TransportLimits(chunk_size=512)
    with pytest.raises(InvalidArgumentError, match="max_message_bytes"):
        TransportLimits(max_message_bytes=0)
    assert TransportLimits(chunk_size=4 * MIB).max_frame_bytes == 4 * MIB + HEADER_SIZE


@pytest.mark.parametrize("cuts", [(1,), (MIB - 1, MIB + 1), (10, 11, 2 * MIB), (0, 5, 5)])
def test_frames_of_parts_are_the_frames_of_their_join(cuts: tuple[int, ...]) -> None:
    whole = bytes(range(256)) * ((2 * MIB + 300) // 256)
    bounds = [0, *cuts, len(whole)]
    parts = [memoryview(whole)[a:b] for a, b in itertools.pairwise(bounds)]
    assert list(message_frames(parts, 9, MIB)) == list(message_frames(whole, 9, MIB))


def test_the_outbox_reports_each_message_of_many_chunks_once_written() -> None:
    io, sent = IoLoop.shared(), []
    outbox = Outbox(
        io, lambda *failed: None, TransportLimits(), Heartbeat(),
        sent=lambda size, seconds: sent.append((size, seconds)),
    )  # fmt: skip
    large = Message(RecordDict({"m": ArrayRecord({"w": np.ones(3 << 20, np.uint8)})}), 0, "x")
    small = Message(RecordDict(), 0, "x")
    encoded = [encode_for_stream(message) for message in (large, small)]
    for message, parts in zip((large, small), encoded, strict=True):
        outbox.put(message, parts)
    outbox.say_goodbye()

    async def write_all() -> int:
        return len([frame async for frame in outbox.frames()])

    assert io.run(write_all(), timeout=60) == 4 + 1 + 1  # 4 chunks, 1, then GOODBYE
    [(size, seconds)] = sent  # the small message is not a transfer worth timing
    assert size == encoded_length(encoded[0])
    assert seconds >= 0
