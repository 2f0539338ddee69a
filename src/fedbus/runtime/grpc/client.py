"""The client end: one worker, one stream to the server, kept open and reopened when lost.

A ``GrpcClient`` opens its stream, learns its node id and the run id from the server's initial
metadata, starts its worker, then reads frames until the server says GOODBYE. The stream is a
coroutine on the process's ``IoLoop``: a process can host thousands of client nodes with the
same few threads (``connect_many``), each node with its own channel and TCP connection, as
each device of a fleet would have.

A lost connection (server restarted, network cut, heartbeat timeout) is reopened under the same
node id, after a jittered exponential backoff: a storm of reconnections spreads out instead of
arriving at once. Every connection presents the node's proof: its key's signature over a fresh
challenge, or the resume secret it drew at start, so that only this node gets its id back. A
refusal that cannot change by retrying (wrong token or key, wrong protocol, bad input) ends
the client with an error. "The server is full" is retried with backoff until the timeout.

Every message goes to the server, which routes it: a client never talks to another directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import threading
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio

from fedbus.errors import DecodeError, InvalidArgumentError, RunError
from fedbus.message import DecodeLimits, ErrorCode, Message, RecordDict, decode_message
from fedbus.message.codec import decode_metadata, encoded_size
from fedbus.message.spill import SpillDirectory, SpillError
from fedbus.runtime.grpc.dispatcher import Activity, Dispatcher
from fedbus.runtime.grpc.framing import (
    DATA,
    GOODBYE,
    HEADER_SIZE,
    Reassembler,
    TransportLimits,
    announced_size,
    encode_for_stream,
)
from fedbus.runtime.grpc.host import Endpoint, WorkerHost
from fedbus.runtime.grpc.identity import (
    CHALLENGE_KEY,
    NODE_NAME_KEY,
    SIGNATURE_KEY,
    NodeKey,
    check_node_name,
)
from fedbus.runtime.grpc.ioloop import IoLoop
from fedbus.runtime.grpc.security import (
    NODE_ID_KEY,
    PROTOCOL_KEY,
    PROTOCOL_VERSION,
    RESUME_KEY,
    RUN_ID_KEY,
    TOKEN_KEY,
)
from fedbus.runtime.grpc.stream import CHALLENGE_METHOD, METHOD, Heartbeat, Outbox, channel_options
from fedbus.worker import Worker

__all__ = ["ClientSettings", "GrpcClient", "NodeIdentity"]

logger = logging.getLogger("fedbus.grpc.client")

# Refusals that no retry can change.
_PERMANENT = frozenset(
    {
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)
_FIRST_BACKOFF = 0.05
# While connecting keeps failing, what was tried is logged at the first failure, then at most
# this often: a client retrying for 5 minutes writes 30 lines, not 300.
_REPORT_EVERY = 10.0
# After its worker stops, a client waits this long for the server to end the stream.
_CLOSE_GRACE = 5.0


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    """A node's name and private key, to join a server that keeps a key registry."""

    name: str
    key: NodeKey = field(repr=False)

    def __post_init__(self) -> None:
        check_node_name(self.name)
        if not isinstance(self.key, NodeKey):
            raise InvalidArgumentError(
                f"NodeIdentity.key must be a NodeKey (NodeKey.from_file), got "
                f"{type(self.key).__name__}"
            )


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
        Longest wait between two attempts; waits double from 0.05 s up to this, each drawn
        between half and all of its value (jitter).
    identity
        The node's name and key, for a server with a key registry; None joins with the token.
    limits, heartbeat
        Message and chunk sizes; liveness (see ``Heartbeat``).
    spill_above, spill_dir
        A message from the server larger than ``spill_above`` bytes (default 2 GiB) arrives
        in a spill file in ``spill_dir`` (None: the system's temporary directory) instead of
        memory, and is decoded from it without a copy.
    """

    node_id: int | None = None
    connect_timeout: float = 60.0
    reconnect: bool = True
    reconnect_timeout: float = 300.0
    max_backoff: float = 5.0
    identity: NodeIdentity | None = None
    limits: TransportLimits = field(default_factory=TransportLimits)
    heartbeat: Heartbeat = field(default_factory=Heartbeat)
    spill_above: int = 2 << 30
    spill_dir: str | None = None


class _CallFailedError(Exception):
    def __init__(self, code: Any, details: str) -> None:
        super().__init__(f"{getattr(code, 'name', code)}: {details}")
        self.code, self.details = code, details


def connect_hint(code: Any, details: str, address: str) -> str:
    """What to check when connecting to ``address`` failed with status ``code`` and
    ``details``, judged from the kind of failure; "" when the failure says nothing useful.

    >>> connect_hint(grpc.StatusCode.UNAVAILABLE, "...: Connection refused", "10.0.0.2:9092")
    'is `fedbus server` running and listening on 10.0.0.2:9092? check --listen on the server'
    """
    text = details.lower()
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return "check the token file (--token-file) or the node key (--key, --name)"
    if "resolving" in text or "domain name not found" in text or "dns" in text:
        return f"check the host name in {address}"
    # "Socket closed" during the handshake: a client without TLS meeting a server with it
    if any(
        mark in text for mark in ("ssl", "tls", "tsi_", "handshake", "certificate", "socket closed")
    ):
        return (
            "check --root-cert matches the server's certificate (or its CA), or that both "
            "use --insecure"
        )
    if "connection refused" in text:
        return (
            f"is `fedbus server` running and listening on {address}? check --listen on the server"
        )
    if code == grpc.StatusCode.DEADLINE_EXCEEDED or "deadline" in text or "timed out" in text:
        return "the server may be overloaded or a firewall drops packets"
    return ""


@dataclass(slots=True)
class _Attempts:
    """How connecting has gone so far: for the log and the final error."""

    address: str
    started: float
    count: int = 0
    reported: float | None = None
    last: _CallFailedError | None = None

    def summary(self, now: float) -> str:
        last = self.last
        assert last is not None
        text = (
            f"{self.count} attempt{'s' if self.count != 1 else ''} in {now - self.started:.1f} "
            f"s; last error: {last}"
        )
        hint = connect_hint(last.code, last.details, self.address)
        return f"{text}; hint: {hint}" if hint else text


class _Session:
    """One open stream: the call, its outbox and its writer task."""

    __slots__ = ("call", "outbox", "writer")

    def __init__(self, call: Any, outbox: Outbox) -> None:
        self.call, self.outbox = call, outbox
        self.writer: asyncio.Task[None] | None = None


class GrpcClient(Endpoint):
    """Hosts one worker as a client node over one gRPC stream (see ``connect``).

    ``dispatcher`` runs the worker's handlers; None gives the worker a thread of its own.
    Nodes hosted together (``connect_many``) share a few dispatchers.
    """

    def __init__(
        self,
        worker: Worker,
        address: str,
        *,
        token: str | None,
        credentials: grpc.ChannelCredentials | None,
        settings: ClientSettings,
        activity: Activity | None = None,
        io: IoLoop | None = None,
        dispatcher: Dispatcher | None = None,
    ) -> None:
        self.address, self.settings = address, settings
        self._io = io or IoLoop.shared()
        self._token = token
        self._limits = settings.limits
        self._decode_limits = DecodeLimits(max_message_bytes=settings.limits.max_message_bytes)
        self._spill = SpillDirectory(
            settings.spill_dir, ("ClientSettings.spill_dir", "ClientSettings.spill_above")
        )
        self._host = WorkerHost(
            worker, self._route, self._on_worker_stop, activity, dispatcher=dispatcher
        )
        self._host.rules.max_message_bytes = settings.limits.max_message_bytes
        self._credentials = credentials
        self._channel: grpc.aio.Channel | None = None
        self._lock = threading.Lock()
        self._session: _Session | None = None
        self._last_received = 0.0
        self._stopping = threading.Event()
        self._stop_requested: asyncio.Event | None = None
        self._done = threading.Event()
        # Drawn once per life of this client: it alone can take this node id back.
        self._resume = secrets.token_urlsafe(24)
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
        self._io.run(self.open())
        if start_worker:
            self.start_worker()

    async def open(self) -> None:
        """On the loop: connect, attach the worker and run the session in the background."""
        self._stop_requested = asyncio.Event()
        if self._stopping.is_set():
            self._stop_requested.set()
        try:
            session, node_id, run_id = await self._connect(self.settings.connect_timeout)
        except BaseException:
            await self._close_channel()
            self._done.set()
            raise
        self.node_id = self._requested = node_id
        self._host.attach(node_id, run_id)
        self._host.ready = False
        self._host.start_dispatcher()
        asyncio.get_running_loop().create_task(self._run(session))

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
        self._io.call_soon(self._stop_on_loop)

    def _stop_on_loop(self) -> None:
        if self._stop_requested is not None:
            self._stop_requested.set()
        with self._lock:
            session = self._session
        if session is not None:
            session.outbox.say_goodbye()
            self._io.loop.call_later(_CLOSE_GRACE, session.call.cancel)

    @property
    def connected(self) -> bool:
        """True while a stream to the server is open (sends between two streams fail)."""
        with self._lock:
            return self._session is not None and not self._session.outbox.closed

    @property
    def worker(self) -> Worker:
        """The hosted worker."""
        return self._host.worker

    def _on_worker_stop(self) -> None:
        logger.info("node %s: the worker stopped, leaving", self.node_id)
        self.stop()

    # -- connecting -----------------------------------------------------------------------
    def _new_channel(self) -> grpc.aio.Channel:
        options: list[tuple[str, Any]] = [
            *channel_options(self._limits),
            # gRPC's own reconnect backoff starts at 1 s and grows to 120 s: ours decides.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", int(self.settings.max_backoff * 1000)),
            # One TCP connection per node, as each device of a fleet has: channels to the
            # same server would otherwise share one.
            ("grpc.use_local_subchannel_pool", 1),
        ]
        if self._credentials is None:
            return grpc.aio.insecure_channel(self.address, options=options)
        return grpc.aio.secure_channel(self.address, self._credentials, options=options)

    async def _close_channel(self) -> None:
        """Drop the channel: the next attempt opens a new TCP connection, never a frozen one."""
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close()

    async def _metadata(self, channel: grpc.aio.Channel) -> list[tuple[str, Any]]:
        metadata: list[tuple[str, Any]] = [
            (PROTOCOL_KEY, PROTOCOL_VERSION),
            (RESUME_KEY, self._resume),
        ]
        if self._token is not None:
            metadata.append((TOKEN_KEY, self._token))
        if self._requested is not None:
            metadata.append((NODE_ID_KEY, str(self._requested)))
        identity = self.settings.identity
        if identity is not None:
            ask = channel.unary_unary(CHALLENGE_METHOD)
            challenge = await ask(b"", timeout=self.settings.heartbeat.timeout)
            signature = identity.key.sign_challenge(challenge, identity.name, self._requested)
            metadata += [
                (NODE_NAME_KEY, identity.name),
                (CHALLENGE_KEY, challenge),
                (SIGNATURE_KEY, signature),
            ]
        return metadata

    async def _open(self) -> tuple[_Session, int, int]:
        if self._channel is None:
            self._channel = self._new_channel()
        channel = self._channel
        try:
            metadata = await self._metadata(channel)
        except grpc.aio.AioRpcError as exc:
            raise _CallFailedError(exc.code(), exc.details() or "no details") from None
        outbox = Outbox(self._io, self._host.fail, self._limits, self.settings.heartbeat)
        call = channel.stream_stream(METHOD)(metadata=metadata)
        timeout = self.settings.heartbeat.timeout
        try:
            # A server that accepts the connection but never answers must not hang the client.
            headers = await asyncio.wait_for(call.initial_metadata(), timeout)
            node_id, run_id = int(headers[NODE_ID_KEY]), int(headers[RUN_ID_KEY])
        except (KeyError, ValueError, TypeError, TimeoutError, grpc.aio.AioRpcError) as exc:
            outbox.close("the connection failed")
            call.cancel()
            code = await call.code()
            if code == grpc.StatusCode.CANCELLED:
                await self._close_channel()  # the handshake timed out: try a fresh connection
            if isinstance(exc, TimeoutError):
                raise _CallFailedError(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"the server accepted the connection but did not answer within {timeout:g} s",
                ) from None
            raise _CallFailedError(code, await call.details() or "no details") from None
        return _Session(call, outbox), node_id, run_id

    async def _connect(self, timeout: float) -> tuple[_Session, int, int]:
        """Connect, retrying with backoff for ``timeout`` seconds; log what fails (the first
        failure, then every ``_REPORT_EVERY`` s) with what to check, and raise ``RunError``
        with the same summary when the time is up or the server refuses for good."""
        loop = asyncio.get_running_loop()
        attempts = _Attempts(self.address, loop.time())
        deadline = attempts.started + timeout
        delay = _FIRST_BACKOFF
        while True:
            attempts.count += 1
            try:
                async with self._io.connecting:
                    return await self._open()
            except _CallFailedError as failed:
                attempts.last = failed
                if failed.code in _PERMANENT:
                    hint = connect_hint(failed.code, failed.details, self.address)
                    raise RunError(
                        f"the server at {self.address} refused this client: {failed}"
                        + (f"; hint: {hint}" if hint else "")
                    ) from None
            now = loop.time()
            remaining = deadline - now
            if remaining > 0 and (
                attempts.reported is None or now - attempts.reported >= _REPORT_EVERY
            ):
                attempts.reported = now
                logger.warning(
                    "node %s: cannot connect to the server at %s yet (%s); retrying for %.0f s "
                    "more",
                    self._requested if self._requested is not None else "(new)",
                    self.address,
                    attempts.summary(now),
                    remaining,
                )
            wait = min(random.uniform(delay / 2, delay), remaining)
            if remaining <= 0 or await self._stop_within(wait):
                raise RunError(
                    f"could not connect to the server at {self.address} within {timeout:g} s: "
                    f"{attempts.summary(loop.time())}"
                )
            delay = min(delay * 2, self.settings.max_backoff)

    async def _stop_within(self, seconds: float) -> bool:
        """Wait ``seconds``; True at once if the client is asked to stop meanwhile."""
        assert self._stop_requested is not None
        try:
            await asyncio.wait_for(self._stop_requested.wait(), max(0.0, seconds))
        except TimeoutError:
            return False
        return True

    # -- the session ----------------------------------------------------------------------
    async def _run(self, session: _Session) -> None:
        try:
            while True:
                goodbye, failure = await self._pump(session)
                if goodbye or self._stopping.is_set():
                    break
                if failure is not None and failure.code in _PERMANENT:
                    self.error = RunError(f"the server closed this client's stream: {failure}")
                    break
                if not self.settings.reconnect:
                    self.error = RunError(f"lost the connection to the server: {failure}")
                    break
                logger.warning("node %s: connection lost (%s); reconnecting", self.node_id, failure)
                await self._close_channel()
                try:
                    session, _, _ = await self._connect(self.settings.reconnect_timeout)
                except RunError as exc:
                    self.error = exc
                    break
                logger.info("node %s: reconnected", self.node_id)
        finally:
            await self._finish()

    async def _pump(self, session: _Session) -> tuple[bool, _CallFailedError | None]:
        """Read one connection until it ends: (the server said GOODBYE, why it failed)."""
        loop = asyncio.get_running_loop()
        call = session.call
        with self._lock:
            self._session = session
        if self._stopping.is_set():
            session.outbox.say_goodbye()
        session.writer = loop.create_task(self._write(session))
        self._last_received = loop.time()
        self._watch(session)
        reassembler = Reassembler(self._limits)
        goodbye, failure = False, None
        try:
            while True:
                frame = await call.read()
                if frame is grpc.aio.EOF:
                    break
                self._last_received = loop.time()
                if not reassembler.in_progress:
                    self._place(reassembler, frame)
                kind, encoded = reassembler.feed(frame)
                if kind == DATA and encoded is not None:
                    self._on_message(encoded)
                elif kind == GOODBYE:
                    goodbye = True
            code = await call.code()
            if code != grpc.StatusCode.OK and not goodbye:
                failure = _CallFailedError(code, await call.details() or "")
        except DecodeError as exc:
            logger.error("node %s: the server sent bad input: %s", self.node_id, exc)
            failure = _CallFailedError(grpc.StatusCode.DATA_LOSS, str(exc))
            call.cancel()
        except grpc.aio.AioRpcError as exc:
            failure = _CallFailedError(exc.code(), exc.details() or "")
        except asyncio.CancelledError:
            if not call.cancelled():
                raise  # this task itself was cancelled: not a connection matter
            # the call was cancelled here: the server went silent, or the client is leaving
            failure = _CallFailedError(grpc.StatusCode.CANCELLED, "the stream was cancelled")
        finally:
            with self._lock:
                self._session = None
            session.outbox.close("the connection to the server was lost")
            session.writer.cancel()
        return goodbye, failure

    async def _write(self, session: _Session) -> None:
        try:
            async for frame in session.outbox.frames():
                await session.call.write(frame)
            await session.call.done_writing()
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            pass  # the call ended: the reader reports why

    def _place(self, reassembler: Reassembler, frame: bytes) -> None:
        """A message larger than ``spill_above`` arrives in a spill file; one that no file can
        hold is read and dropped, and its sender told (its request fails, not the stream)."""
        size = announced_size(frame)
        if size <= self.settings.spill_above or size > self._limits.max_message_bytes:
            return  # in memory; or the reassembler refuses it
        try:
            reassembler.into(self._spill.open(size))
        except SpillError as exc:
            reassembler.skip()
            logger.error("node %s: no room for a message of %d bytes: %s", self.node_id, size, exc)
            with contextlib.suppress(DecodeError):  # no metadata: nobody to tell
                first = memoryview(frame)[HEADER_SIZE:]
                metadata = decode_metadata(first, limits=self._decode_limits)
                stub = Message.from_metadata(metadata, content=RecordDict())
                self._host.fail(stub, ErrorCode.RESOURCE_EXHAUSTED, f"refused: {exc}")

    @property
    def messages_spilled(self) -> int:
        """Messages from the server that arrived in spill files so far."""
        return self._spill.messages_spilled

    async def _finish(self) -> None:
        with self._lock:
            session = self._session
        if session is not None:
            session.call.cancel()
        self._host.worker_stopped = True
        await self._close_channel()
        await asyncio.get_running_loop().run_in_executor(None, self._host.stop_dispatcher)
        self._spill.close()  # messages still in use keep their (nameless) files
        self._done.set()
        if self.error is not None:
            logger.error("node %s: %s", self.node_id, self.error)
        else:
            logger.info("node %s: done", self.node_id)

    def _watch(self, session: _Session) -> None:
        loop = asyncio.get_running_loop()
        timeout = self.settings.heartbeat.timeout

        def check() -> None:
            if self._session is not session:
                return
            silent = loop.time() - self._last_received
            if silent < timeout:
                loop.call_later(timeout - silent, check)
                return
            logger.warning("node %s: nothing from the server for %.1f s", self.node_id, silent)
            session.call.cancel()

        loop.call_later(timeout, check)

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
            session = self._session
        if session is None or not session.outbox.put(message, encode_for_stream(message)):
            self._host.fail(message, ErrorCode.NODE_UNAVAILABLE, "not connected to the server")
