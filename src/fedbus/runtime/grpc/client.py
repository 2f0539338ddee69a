"""The client end: one worker, one stream to the server, kept open and reopened when lost.

A ``GrpcClient`` opens the stream, learns its node id and the run id from the server's
initial metadata, starts its worker, then reads frames on a session thread until the server
says GOODBYE. A lost connection (server restarted, network cut, heartbeat timeout) is reopened
with exponential backoff under the same node id; a refusal that cannot change by retrying
(wrong token, wrong protocol, server full, bad input) ends the client with an error.

Every message goes to the server, which routes it: a client never talks to another directly.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import grpc

from fedbus.errors import DecodeError, RunError
from fedbus.message import DecodeLimits, ErrorCode, Message, decode_message
from fedbus.message.codec import encoded_size
from fedbus.runtime.grpc.dispatcher import Activity, Dispatcher
from fedbus.runtime.grpc.framing import (
    DATA,
    GOODBYE,
    Reassembler,
    TransportLimits,
    encode_for_stream,
)
from fedbus.runtime.grpc.host import Endpoint, WorkerHost
from fedbus.runtime.grpc.security import (
    NODE_ID_KEY,
    PROTOCOL_KEY,
    PROTOCOL_VERSION,
    RUN_ID_KEY,
    TOKEN_KEY,
)
from fedbus.runtime.grpc.stream import METHOD, Heartbeat, Outbox, channel_options
from fedbus.worker import Worker

__all__ = ["ClientSettings", "GrpcClient"]

logger = logging.getLogger("fedbus.grpc.client")

# Refusals that no retry can change.
_PERMANENT = frozenset(
    {
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)
_FIRST_BACKOFF = 0.05
# After its worker stops, a client waits this long for the server to end the stream.
_CLOSE_GRACE = 5.0


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """How a client connects and reconnects.

    Parameters
    ----------
    node_id
        The node id to ask for; None takes the worker's own id if it has one, else lets the
        server assign one.
    connect_timeout
        Seconds to keep trying the first connection (the server may start later).
    reconnect
        Reopen a lost connection; False ends the client instead.
    reconnect_timeout
        Seconds to keep trying to reconnect before giving up with an error.
    max_backoff
        Longest wait between two attempts; waits double from 0.05 s up to this.
    limits, heartbeat
        Message and chunk sizes; liveness (see ``Heartbeat``).
    """

    node_id: int | None = None
    connect_timeout: float = 60.0
    reconnect: bool = True
    reconnect_timeout: float = 300.0
    max_backoff: float = 5.0
    limits: TransportLimits = field(default_factory=TransportLimits)
    heartbeat: Heartbeat = field(default_factory=Heartbeat)


class _CallFailedError(Exception):
    def __init__(self, code: Any, details: str) -> None:
        super().__init__(f"{getattr(code, 'name', code)}: {details}")
        self.code, self.details = code, details


class GrpcClient(Endpoint):
    """Hosts one worker as a client node over one gRPC stream (see ``connect``)."""

    def __init__(
        self,
        worker: Worker,
        address: str,
        *,
        token: str | None,
        credentials: grpc.ChannelCredentials | None,
        settings: ClientSettings,
        activity: Activity | None = None,
    ) -> None:
        self.address, self.settings = address, settings
        self._token = token
        self._limits = settings.limits
        self._decode_limits = DecodeLimits(max_message_bytes=settings.limits.max_message_bytes)
        self._host = WorkerHost(worker, self._route, self._on_worker_stop, activity)
        self._host.rules.max_message_bytes = settings.limits.max_message_bytes
        self._watchdog = Dispatcher("fedbus-grpc-client-watchdog")
        self._credentials = credentials
        self._channel: grpc.Channel | None = None
        self._lock = threading.Lock()
        self._outbox: Outbox | None = None
        self._call: Any = None
        self._last_received = time.monotonic()
        self._stopping = threading.Event()
        self._done = threading.Event()
        self._requested = settings.node_id if settings.node_id is not None else None
        if self._requested is None and worker.node_id >= 0:
            self._requested = worker.node_id
        self.node_id: int | None = None
        self.error: RunError | None = None

    # -- lifecycle ------------------------------------------------------------------------
    def start(self, *, start_worker: bool = True) -> None:
        """Connect (retrying up to ``connect_timeout``), then start the session.

        With ``start_worker=False`` the worker's ``on_start`` waits for ``start_worker()``,
        and messages that arrive before are held for it.
        """
        self._watchdog.start()
        try:
            call, outbox, node_id, run_id = self._connect(self.settings.connect_timeout)
        except RunError:
            self._close_channel()
            self._watchdog.stop()
            self._done.set()
            raise
        self.node_id = self._requested = node_id
        with self._lock:
            self._call, self._outbox = call, outbox
        self._host.attach(node_id, run_id)
        self._host.ready = False
        self._host.dispatcher.start()
        threading.Thread(
            target=self._session,
            args=(call, outbox),
            name=f"fedbus-grpc-client-{node_id}",
            daemon=True,
        ).start()
        if start_worker:
            self.start_worker()

    def start_worker(self) -> None:
        """Run the worker's ``on_start``, then deliver what arrived before it."""

        def start() -> None:
            try:
                self._host.worker.on_start()
            finally:  # what waited for the start is delivered even if on_start raised
                self._host.release()

        self._host.post(start)

    def stop(self) -> None:
        """Leave the federation: say GOODBYE and close the stream (from any thread)."""
        self._stopping.set()
        with self._lock:
            outbox, call = self._outbox, self._call
        if outbox is not None:
            outbox.say_goodbye()
        if call is not None:
            self._watchdog.call_later(_CLOSE_GRACE, call.cancel)

    @property
    def connected(self) -> bool:
        """True while a stream to the server is open (sends between two streams fail)."""
        with self._lock:
            return self._outbox is not None and not self._outbox.closed

    @property
    def worker(self) -> Worker:
        """The hosted worker."""
        return self._host.worker

    def _on_worker_stop(self) -> None:
        logger.info("node %s: the worker stopped, leaving", self.node_id)
        self.stop()

    # -- connecting -----------------------------------------------------------------------
    def _new_channel(self) -> grpc.Channel:
        options: list[tuple[str, Any]] = [
            *channel_options(self._limits),
            # gRPC's own reconnect backoff starts at 1 s and grows to 120 s: ours decides.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", int(self.settings.max_backoff * 1000)),
        ]
        if self._credentials is None:
            return grpc.insecure_channel(self.address, options=options)
        return grpc.secure_channel(self.address, self._credentials, options=options)

    def _close_channel(self) -> None:
        """Drop the channel: the next attempt opens a new TCP connection, never a frozen one."""
        channel, self._channel = self._channel, None
        if channel is not None:
            channel.close()

    def _open(self) -> tuple[Any, Outbox, int, int]:
        if self._channel is None:
            self._channel = self._new_channel()
        outbox = Outbox(self._host.fail, self._limits, self.settings.heartbeat)
        metadata = [(PROTOCOL_KEY, PROTOCOL_VERSION)]
        if self._token is not None:
            metadata.append((TOKEN_KEY, self._token))
        if self._requested is not None:
            metadata.append((NODE_ID_KEY, str(self._requested)))
        call = self._channel.stream_stream(METHOD)(outbox.frames(), metadata=metadata)
        # A server that accepts the connection but never answers must not hang the client.
        handshake = self._watchdog.call_later(self.settings.heartbeat.timeout, call.cancel)
        headers = dict(call.initial_metadata() or ())
        handshake.cancel()
        try:
            node_id, run_id = int(headers[NODE_ID_KEY]), int(headers[RUN_ID_KEY])
        except (KeyError, ValueError):
            outbox.close("the connection failed")
            call.cancel()
            code = call.code()
            if code == grpc.StatusCode.CANCELLED:
                self._close_channel()  # the handshake timed out: try a fresh connection
            raise _CallFailedError(code, call.details() or "no details") from None
        return call, outbox, node_id, run_id

    def _connect(self, timeout: float) -> tuple[Any, Outbox, int, int]:
        deadline = time.monotonic() + timeout
        delay = _FIRST_BACKOFF
        while True:
            try:
                return self._open()
            except _CallFailedError as failed:
                if failed.code in _PERMANENT:
                    raise RunError(
                        f"the server at {self.address} refused this client: {failed}"
                    ) from None
                last = failed
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._stopping.wait(min(delay, remaining)):
                raise RunError(
                    f"could not connect to the server at {self.address} within {timeout:g} s; "
                    f"last error: {last}"
                )
            delay = min(delay * 2, self.settings.max_backoff) * random.uniform(0.8, 1.2)

    # -- the session ----------------------------------------------------------------------
    def _session(self, call: Any, outbox: Outbox) -> None:
        try:
            while True:
                goodbye, failure = self._pump(call, outbox)
                if goodbye or self._stopping.is_set():
                    break
                if failure is not None and failure.code in _PERMANENT:
                    self.error = RunError(f"the server closed this client's stream: {failure}")
                    break
                if not self.settings.reconnect:
                    self.error = RunError(f"lost the connection to the server: {failure}")
                    break
                logger.warning("node %s: connection lost (%s); reconnecting", self.node_id, failure)
                self._close_channel()
                try:
                    call, outbox, _, _ = self._connect(self.settings.reconnect_timeout)
                except RunError as exc:
                    self.error = exc
                    break
                logger.info("node %s: reconnected", self.node_id)
        finally:
            self._finish()

    def _pump(self, call: Any, outbox: Outbox) -> tuple[bool, _CallFailedError | None]:
        """Read one connection until it ends: (the server said GOODBYE, why it failed)."""
        with self._lock:
            self._call, self._outbox = call, outbox
        if self._stopping.is_set():
            outbox.say_goodbye()
        self._last_received = time.monotonic()
        self._watch(call)
        reassembler = Reassembler(self._limits)
        goodbye, failure = False, None
        try:
            for frame in call:
                self._last_received = time.monotonic()
                kind, encoded = reassembler.feed(frame)
                if kind == DATA and encoded is not None:
                    self._on_message(encoded)
                elif kind == GOODBYE:
                    goodbye = True
        except DecodeError as exc:
            logger.error("node %s: the server sent bad input: %s", self.node_id, exc)
            failure = _CallFailedError(grpc.StatusCode.DATA_LOSS, str(exc))
            call.cancel()
        except grpc.RpcError as exc:
            failure = _CallFailedError(exc.code(), exc.details() or "")
        finally:
            with self._lock:
                self._call, self._outbox = None, None
            outbox.close("the connection to the server was lost")
        return goodbye, failure

    def _finish(self) -> None:
        with self._lock:
            call = self._call
        if call is not None:
            call.cancel()
        self._host.worker_stopped = True
        self._host.dispatcher.stop()
        self._watchdog.stop()
        self._host.dispatcher.join(10.0)
        self._watchdog.join(5.0)
        self._close_channel()
        self._done.set()
        if self.error is not None:
            logger.error("node %s: %s", self.node_id, self.error)
        else:
            logger.info("node %s: done", self.node_id)

    def _watch(self, call: Any) -> None:
        timeout = self.settings.heartbeat.timeout

        def check() -> None:
            if self._call is not call:
                return
            silent = time.monotonic() - self._last_received
            if silent < timeout:
                self._watchdog.call_later(timeout - silent, check)
                return
            logger.warning("node %s: nothing from the server for %.1f s", self.node_id, silent)
            call.cancel()

        self._watchdog.call_later(timeout, check)

    # -- messages -------------------------------------------------------------------------
    def _on_message(self, encoded: memoryview) -> None:
        message = decode_message(encoded, limits=self._decode_limits)
        if message.metadata.dst_node_id != self.node_id:
            logger.warning(
                "node %s: dropped a message for node %s", self.node_id, message.metadata.dst_node_id
            )
            self._host.count(-1)
        elif (refusal := self._host.rules.check_arrived(message)) is not None:
            self._host.fail(message, refusal.code, refusal.reason)
        else:
            self._host.deliver(message)

    def _route(self, message: Message) -> None:
        refusal = self._host.rules.check_size(encoded_size(message))
        if refusal is not None:
            self._host.fail(message, refusal.code, refusal.reason)
            return
        with self._lock:
            outbox = self._outbox
        if outbox is None or not outbox.put(message, encode_for_stream(message)):
            self._host.fail(message, ErrorCode.NODE_UNAVAILABLE, "not connected to the server")
