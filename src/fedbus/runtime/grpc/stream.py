"""What both ends of a connection share: the outbox, liveness settings and gRPC options.

An ``Outbox`` holds the messages waiting to be written on one stream, in order. The coroutine
that writes the stream iterates ``Outbox.frames()``, which waits for the next message and,
when nothing has been sent for ``heartbeat.interval`` seconds, yields a HEARTBEAT frame
instead: an event and one loop timer, never a polling loop.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Final, cast

from fedbus.errors import InvalidArgumentError
from fedbus.message import ErrorCode, Message
from fedbus.runtime.grpc.framing import (
    GOODBYE,
    HEARTBEAT,
    EncodedParts,
    TransportLimits,
    control_frame,
    encoded_length,
    message_frames,
)
from fedbus.runtime.grpc.ioloop import IoLoop

__all__ = ["CHALLENGE_METHOD", "METHOD", "Heartbeat", "Outbox", "channel_options"]

#: The fedbus service's stream: a bidirectional stream of transport frames, one per node.
METHOD: Final = "/fedbus.Transport/Connect"
#: Its one unary method: a fresh challenge for a node to sign before it connects with a key.
CHALLENGE_METHOD: Final = "/fedbus.Transport/Challenge"
SERVICE: Final = "fedbus.Transport"
METHOD_NAME: Final = "Connect"
CHALLENGE_METHOD_NAME: Final = "Challenge"

_HEARTBEAT_FRAME = control_frame(HEARTBEAT)
_GOODBYE_FRAME = control_frame(GOODBYE)
_CLOSE = object()
_SAY_GOODBYE = object()

Fail = Callable[[Message, ErrorCode, str], None]
#: Told the bytes and the seconds of each message of more than one chunk once it is written.
Sent = Callable[[int, float], None]


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

    Any thread may ``put``; the stream's writer, a coroutine on the ``IoLoop``, iterates
    ``frames()``. A writer with nothing to write waits on an event with one loop timer for
    the heartbeat: no task and no thread per idle connection.

    Parameters
    ----------
    io
        The loop the writer runs on.
    fail
        Called with each message that will never be written (the stream closed first).
    limits, heartbeat
        Chunk size; heartbeat interval.
    sent
        Called with the bytes of each message of more than one chunk, and the seconds from
        handing its first chunk to gRPC to the last being written, for the transfer figures.
    """

    def __init__(
        self,
        io: IoLoop,
        fail: Fail,
        limits: TransportLimits,
        heartbeat: Heartbeat,
        sent: Sent | None = None,
    ) -> None:
        self._io = io
        self._fail = fail
        self._sent = sent
        self._chunk_size = limits.chunk_size
        self._interval = heartbeat.interval
        self._items: deque[object] = deque()
        self._lock = threading.Lock()
        self._ready = asyncio.Event()
        # True while a wake-up is on its way to the writer: one per burst of puts, not per put.
        self._wake_pending = False
        self.closed = False

    def _push(self, item: object, *, after_close: bool = False) -> bool:
        with self._lock:
            if self.closed and not after_close:
                return False
            self._items.append(item)
            wake, self._wake_pending = not self._wake_pending, True
        if wake:
            if self._io.on_loop():
                self._ready.set()
            else:
                self._io.call_soon(self._ready.set)
        return True

    def put(self, message: Message, encoded: EncodedParts) -> bool:
        """Queue ``message``; False (nothing queued) once the outbox is closed."""
        return self._push((message, encoded))

    def say_goodbye(self) -> None:
        """Write a GOODBYE frame after what is queued, then end the stream."""
        self._push(_SAY_GOODBYE)

    def close(self, reason: str) -> None:
        """Stop writing; every message still queued is failed with ``NODE_UNAVAILABLE``."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            pending = [item[0] for item in self._items if isinstance(item, tuple)]
            self._items.clear()
        self._push(_CLOSE, after_close=True)  # wakes the writer, waiting in frames()
        for message in pending:
            self._fail(message, ErrorCode.NODE_UNAVAILABLE, reason)

    def _next(self) -> object | None:
        with self._lock:
            if self._items:
                return self._items.popleft()
            self._wake_pending = False
            self._ready.clear()
            return None

    async def frames(self) -> AsyncIterator[bytes]:
        """The frames to write, until GOODBYE or ``close``; heartbeats while idle."""
        loop = asyncio.get_running_loop()
        sequence = 0
        while True:
            item = self._next()
            if item is None:
                timer = loop.call_later(self._interval, self._ready.set)
                await self._ready.wait()
                timer.cancel()
                with self._lock:
                    idle = not self._items
                if idle:  # woken by the timer: nothing was sent for a whole interval
                    yield _HEARTBEAT_FRAME
                continue
            if item is _CLOSE:
                return
            if item is _SAY_GOODBYE:
                yield _GOODBYE_FRAME
                return
            message, encoded = cast("tuple[Message, EncodedParts]", item)
            if self.closed:
                self._fail(message, ErrorCode.NODE_UNAVAILABLE, "the connection closed")
                continue
            sequence += 1
            started, size = loop.time(), encoded_length(encoded)
            for frame in message_frames(encoded, sequence, self._chunk_size):
                yield frame
            if self._sent is not None and size > self._chunk_size:
                self._sent(size, loop.time() - started)
