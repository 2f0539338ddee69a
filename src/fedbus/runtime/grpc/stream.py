"""What both ends of a connection share: the outbox, liveness settings and gRPC options.

An ``Outbox`` holds the messages waiting to be written on one stream, in order. The gRPC
thread that writes the stream iterates ``Outbox.frames()``, which blocks on the queue and, when
nothing has been sent for ``heartbeat.interval`` seconds, yields a HEARTBEAT frame instead: a
blocking wait with a timeout, never a polling loop.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final, cast

from fedbus.errors import InvalidArgumentError
from fedbus.message import ErrorCode, Message
from fedbus.runtime.grpc.framing import (
    GOODBYE,
    HEARTBEAT,
    TransportLimits,
    control_frame,
    message_frames,
)

__all__ = ["METHOD", "Heartbeat", "Outbox", "channel_options"]

#: The one gRPC method of the fedbus service: a bidirectional stream of transport frames.
METHOD: Final = "/fedbus.Transport/Connect"
SERVICE: Final = "fedbus.Transport"
METHOD_NAME: Final = "Connect"

_HEARTBEAT_FRAME = control_frame(HEARTBEAT)
_GOODBYE_FRAME = control_frame(GOODBYE)
_CLOSE = object()
_SAY_GOODBYE = object()

Fail = Callable[[Message, ErrorCode, str], None]


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """How a silent peer is told apart from a dead one.

    Parameters
    ----------
    interval
        Seconds of silence after which a node sends a HEARTBEAT frame. Default 5.
    timeout
        Seconds without any frame after which the peer is taken for gone: the server marks a
        client unavailable, a client reconnects. Default 15 (three missed heartbeats).
    """

    interval: float = 5.0
    timeout: float = 15.0

    def __post_init__(self) -> None:
        for name in ("interval", "timeout"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise InvalidArgumentError(f"Heartbeat.{name} must be seconds > 0, got {value!r}")
        if self.timeout <= self.interval:
            raise InvalidArgumentError(
                f"Heartbeat.timeout ({self.timeout}) must exceed interval ({self.interval}): "
                "a peer must get the chance to send at least one heartbeat"
            )


def channel_options(limits: TransportLimits) -> list[tuple[str, int]]:
    """gRPC options both ends set: message sizes bounded explicitly to one frame."""
    # 4 MiB is gRPC's default receive limit; a frame is one chunk plus a 24-byte header, so
    # the limits are set to exactly that: anything larger is refused by gRPC itself.
    return [
        ("grpc.max_receive_message_length", limits.max_frame_bytes),
        ("grpc.max_send_message_length", limits.max_frame_bytes),
        ("grpc.so_reuseport", 0),
    ]


class Outbox:
    """Encoded messages waiting to be written on one stream, in the order they were sent.

    Parameters
    ----------
    fail
        Called with each message that will never be written (the stream closed first).
    limits, heartbeat
        Chunk size; heartbeat interval.
    """

    def __init__(self, fail: Fail, limits: TransportLimits, heartbeat: Heartbeat) -> None:
        self._fail = fail
        self._chunk_size = limits.chunk_size
        self._interval = heartbeat.interval
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self.closed = False

    def put(self, message: Message, encoded: bytes | bytearray | memoryview) -> bool:
        """Queue ``message``; False (nothing queued) once the outbox is closed."""
        with self._lock:
            if not self.closed:
                self._queue.put((message, encoded))
                return True
        return False

    def say_goodbye(self) -> None:
        """Write a GOODBYE frame after what is queued, then end the stream."""
        with self._lock:
            if not self.closed:
                self._queue.put(_SAY_GOODBYE)

    def close(self, reason: str) -> None:
        """Stop writing; every message still queued is failed with ``NODE_UNAVAILABLE``."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
        pending: list[Message] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, tuple):
                pending.append(item[0])
        self._queue.put(_CLOSE)  # wakes the writer, blocked in frames()
        for message in pending:
            self._fail(message, ErrorCode.NODE_UNAVAILABLE, reason)

    def frames(self) -> Iterator[bytes]:
        """The frames to write, until GOODBYE or ``close``; heartbeats while idle."""
        sequence = 0
        while True:
            try:
                item = self._queue.get(timeout=self._interval)
            except queue.Empty:
                if self.closed:
                    return
                yield _HEARTBEAT_FRAME
                continue
            if item is _CLOSE:
                return
            if item is _SAY_GOODBYE:
                yield _GOODBYE_FRAME
                return
            message, encoded = cast("tuple[Message, bytes | bytearray | memoryview]", item)
            if self.closed:
                self._fail(message, ErrorCode.NODE_UNAVAILABLE, "the connection closed")
                continue
            sequence += 1
            yield from message_frames(encoded, sequence, self._chunk_size)
