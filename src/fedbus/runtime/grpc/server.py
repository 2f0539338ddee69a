"""The server end: node 0, the router of every message, and the judge of who is who.

Every connection is served by coroutines on the process's ``IoLoop``: the stream handler
writes (it iterates the connection's ``Outbox``) and one reader task reads and reassembles
frames. The server's threads are the same few whatever the number of clients: the loop, gRPC's
own, and the server worker's dispatcher. Neither coroutine runs worker code: a message for the
server worker is posted to its dispatcher; one for another client is put in that client's
outbox, as the bytes it arrived in (relayed, never re-encoded).

Identity: admission (``ClientRegistry``) decides who a connection is (a registered key, a
client certificate, or the federation token with a resume secret) and which node id it holds;
the id is stamped on the connection. A message whose ``src_node_id`` is not its connection's id
is refused with an ``UNAUTHENTICATED`` error reply and logged; a client therefore cannot speak
as another, and receives only messages addressed to it. A revoked key is disconnected as soon
as the registry file says so. Joins, refusals, revocations, reconnections and departures go to
the audit log.

Routing follows the flow declaration (``RoutingPolicy``): a message from a client whose type
its role does not declare towards the receiver's role gets a ``PERMISSION_DENIED`` error reply
and is never delivered or relayed.

Bounded work per peer: a message in reassembly is reserved in the receive budget (per peer
and in all, ``ReceiveBudget``) and released when its peer goes, or when it is complete: then a
message in memory stays counted until the worker lets go of it (so what clients sent takes at
most the budget's memory, and the rest waits in spill files); a connection
that has not finished its HTTP/2 (or TLS) handshake within ``handshake_timeout`` is closed.

Departure: when a client's stream ends (it left, its connection broke, or its heartbeat
stopped), the server worker is told at once (``Worker.nodes_departed``): every request in
flight to that node gets a ``NODE_UNAVAILABLE`` error reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio

from fedbus.errors import DecodeError, FedbusError, RunError
from fedbus.message import (
    DecodeLimits,
    Error,
    ErrorCode,
    Message,
    RecordDict,
    decode_message,
    mark_sent,
)
from fedbus.message.codec import decode_metadata, encoded_size
from fedbus.message.spill import SpillDirectory, SpillError
from fedbus.runtime.grpc.audit import AuditLog
from fedbus.runtime.grpc.budget import BudgetExceededError, ReceiveBudget, ReceiveLimits
from fedbus.runtime.grpc.dispatcher import Activity, Dispatcher
from fedbus.runtime.grpc.framing import (
    DATA,
    GOODBYE,
    HEADER_SIZE,
    EncodedParts,
    TransportLimits,
    announced_size,
    encode_for_stream,
    encoded_length,
)
from fedbus.runtime.grpc.host import Endpoint, WorkerHost
from fedbus.runtime.grpc.identity import Challenges, KeyRegistry
from fedbus.runtime.grpc.ioloop import IoLoop
from fedbus.runtime.grpc.observer import OUTCOME_OF_CODE, ServerObserver, error_of
from fedbus.runtime.grpc.registry import Admission, ClientRegistry, Connection, RefusedError
from fedbus.runtime.grpc.security import (
    NODE_ID_KEY,
    PROTOCOL_KEY,
    PROTOCOL_VERSION,
    RUN_ID_KEY,
    Authenticator,
)
from fedbus.runtime.grpc.stream import (
    CHALLENGE_METHOD_NAME,
    METHOD_NAME,
    SERVICE,
    Heartbeat,
    Outbox,
    channel_options,
)
from fedbus.worker import SERVER_NODE_ID, RoutingPolicy, Worker

__all__ = ["GrpcServer", "ServerSettings", "TransportStats"]

logger = logging.getLogger("fedbus.grpc.server")

# How long a stopping server waits for its clients to take their last messages and GOODBYE.
_DRAIN_SECONDS = 10.0
# How long a closed connection's writer may take to end the call before it is cancelled.
_WRITER_GRACE = 1.0


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """Everything about the server end except its address and credentials.

    Parameters
    ----------
    min_clients
        Clients that must be connected before the server worker starts (``on_start``).
    join_timeout
        Seconds to wait for ``min_clients``; None waits for ever.
    max_clients
        Most clients connected at once; more are refused (``RESOURCE_EXHAUSTED``).
    first_node_id
        The first id given to a client that asks for none (ids below stay free for clients
        that ask for theirs, e.g. one per data partition).
    run_id
        Stamped on every message of the run.
    limits, heartbeat
        Message and chunk sizes; liveness (see ``Heartbeat``).
    receive
        The receive budget: bytes of messages in reassembly per peer and in all in memory,
        and in spill files beyond it.
    spill_dir
        Where spill files go (a private directory in it, removed when the server stops);
        None: the system's temporary directory.
    handshake_timeout
        Seconds a new TCP connection has to complete its HTTP/2 and TLS handshake; a
        connection without any call for twice as long is closed too.
    keys_check_interval
        Seconds between two looks at the key registry file (a revocation made by
        ``fedbus keys revoke`` takes effect within this time).
    """

    min_clients: int = 1
    join_timeout: float | None = None
    max_clients: int = 10_000
    first_node_id: int = 1
    run_id: int = 1
    limits: TransportLimits = field(default_factory=TransportLimits)
    heartbeat: Heartbeat = field(default_factory=Heartbeat)
    receive: ReceiveLimits = field(default_factory=ReceiveLimits)
    spill_dir: str | None = None
    handshake_timeout: float = 5.0
    keys_check_interval: float = 1.0


@dataclass(slots=True)
class TransportStats:
    """Messages and encoded bytes the server received from and sent to clients."""

    messages_in: int = 0
    messages_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    #: Messages refused for their sender (impersonation, run id, routing policy).
    messages_refused: int = 0
    #: Connection attempts refused (credentials, node id, room, protocol).
    connections_refused: int = 0
    #: Bytes of messages in reassembly, reserved in the receive budget now: in memory.
    bytes_buffered: int = 0
    #: Bytes of received messages in memory that the worker has not let go of yet.
    bytes_held: int = 0
    #: ... and in spill files.
    bytes_spilling: int = 0
    #: Messages received into spill files since the server started, and their bytes.
    messages_spilled: int = 0
    bytes_spilled: int = 0
    #: Messages of more than one chunk received and sent: their bytes, and the seconds each
    #: took from its first chunk to its last, summed. Bytes over seconds is the rate of one
    #: transfer (transfers at the same time share the machine; a round's rate is lower).
    large_bytes_in: int = 0
    large_seconds_in: float = 0.0
    large_bytes_out: int = 0
    large_seconds_out: float = 0.0


class GrpcServer(Endpoint):
    """Hosts the server worker as node 0 and serves the fedbus stream (see ``serve``).

    ``policy`` is the routing policy messages from clients must follow (default: the one the
    server's own declarations imply, ``RoutingPolicy.from_server``). ``keys`` is the registry
    of node keys (None: nodes join with the token or a certificate), ``audit`` the audit log.
    """

    def __init__(
        self,
        worker: Worker,
        authenticator: Authenticator,
        settings: ServerSettings,
        activity: Activity | None = None,
        *,
        policy: RoutingPolicy | None = None,
        keys: KeyRegistry | None = None,
        audit: AuditLog | None = None,
        io: IoLoop | None = None,
        observer: ServerObserver | None = None,
    ) -> None:
        self.settings = settings
        #: Told of every message's fate and of clients coming and going (a trace, a dashboard).
        self.observer = observer or ServerObserver()
        self._io = io or IoLoop.shared()
        self._limits = settings.limits
        self._decode_limits = DecodeLimits(max_message_bytes=settings.limits.max_message_bytes)
        self._host = WorkerHost(worker, self._route, self._on_worker_stop, activity)
        self._host.attach(SERVER_NODE_ID, settings.run_id)
        # the server is the trust boundary: clients' messages follow the routing policy here
        rules = self._host.rules
        rules.policy = RoutingPolicy.from_server(worker) if policy is None else policy
        rules.max_message_bytes = settings.limits.max_message_bytes
        self._host.ready = False
        self._timers = Dispatcher("fedbus-grpc-timers")
        challenges = Challenges(capacity=max(1024, 2 * settings.max_clients))
        self._clients = ClientRegistry(
            authenticator, settings.max_clients, settings.first_node_id,
            keys=keys, challenges=challenges,
        )  # fmt: skip
        self._audit = audit or AuditLog(None)
        self._budget = ReceiveBudget(settings.receive)
        self._spill = SpillDirectory(
            settings.spill_dir, ("deployment.spill_dir", "deployment.receive_budget_total_mb")
        )
        self._waiting: list[int] = []
        self._started = False
        self._done = threading.Event()
        self._grpc: grpc.aio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._stats = TransportStats()
        self._stats_lock = threading.Lock()
        self.error: RunError | None = None
        self.port = 0
        if activity is not None:
            activity.add()  # the server's start is still to happen

    # -- lifecycle ------------------------------------------------------------------------
    def start(self, address: str, credentials: grpc.ServerCredentials | None) -> int:
        """Bind ``address``, start serving and return the port."""
        port = self._io.run(self._start(address, credentials))
        self._host.dispatcher.start()
        self._timers.start()
        if self.settings.join_timeout is not None:
            self._timers.call_later(self.settings.join_timeout, self._join_timed_out)
        logger.info("listening on %s (port %d)", address, port)
        return port

    async def _start(self, address: str, credentials: grpc.ServerCredentials | None) -> int:
        options: list[tuple[str, Any]] = [
            *channel_options(self._limits),
            ("grpc.server_handshake_timeout_ms", int(self.settings.handshake_timeout * 1000)),
            # A connection that finished its handshake but holds no call (a client between
            # two attempts, or a peer that only opened a socket) is closed after twice that.
            ("grpc.max_connection_idle_ms", int(self.settings.handshake_timeout * 2000)),
        ]
        server = grpc.aio.server(options=options)
        server.add_generic_rpc_handlers([self._handlers()])
        try:
            if credentials is None:
                port = server.add_insecure_port(address)
            else:
                port = server.add_secure_port(address, credentials)
        except RuntimeError as exc:
            raise RunError(f"cannot listen on {address!r}: {exc}") from exc
        if port == 0:
            raise RunError(f"cannot listen on {address!r}: the address is in use or invalid")
        await server.start()
        self._grpc, self.port = server, int(port)
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        return self.port

    def _handlers(self) -> grpc.GenericRpcHandler:
        # Identity (de)serializers: the payload is our own frame, no protobuf involved.
        stream = grpc.stream_stream_rpc_method_handler(self._stream)
        challenge = grpc.unary_unary_rpc_method_handler(self._challenge)
        return grpc.method_handlers_generic_handler(
            SERVICE, {METHOD_NAME: stream, CHALLENGE_METHOD_NAME: challenge}
        )

    def stop(self, failure: str | None = None) -> None:
        """Say GOODBYE to every client, let them drain, then shut down (from any thread)."""
        connections = self._clients.close()
        if connections is None:
            return
        if failure is not None and self.error is None:
            self.error = RunError(failure)
        for connection in connections:
            connection.outbox.say_goodbye()
        self._io.submit(self._shut_down(connections))

    async def _shut_down(self, connections: list[Connection]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _DRAIN_SECONDS
        for connection in connections:
            remaining = max(0.0, deadline - loop.time())
            await loop.run_in_executor(None, connection.ended.wait, remaining)
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._grpc is not None:
            await self._grpc.stop(grace=1.0)
        for connection in self._clients.connections():
            self._disconnect(connection, "the server stopped")
        await loop.run_in_executor(None, self._stop_threads)

    def _stop_threads(self) -> None:
        self._host.worker_stopped = True
        self._host.dispatcher.stop()
        self._timers.stop()
        self._host.dispatcher.join(5.0)
        self._timers.join(5.0)
        if self._host.activity is not None:
            if not self._started:
                self._host.activity.done()  # the start that never happened
            self._host.activity.close()
        self._audit.close()
        self._spill.close()  # messages still in use keep their (nameless) files
        self._done.set()
        logger.info("server stopped")

    def _on_worker_stop(self) -> None:
        logger.info("the server worker stopped: closing the federation")
        self.stop()

    def _join_timed_out(self) -> None:
        if not self._started:
            waiting = len(self._clients.node_ids())
            self.stop(
                f"only {waiting} of min_clients={self.settings.min_clients} clients joined "
                f"within join_timeout={self.settings.join_timeout} s"
            )

    # -- admission ------------------------------------------------------------------------
    async def _challenge(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        """A fresh challenge for a node that will prove its key."""
        if self._clients.keys is None:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                "this server has no key registry: join with the federation token",
            )
        return self._clients.challenges.issue()

    def _admit(self, context: grpc.aio.ServicerContext, peer: str) -> Admission:
        metadata = dict(context.invocation_metadata() or ())
        identity = self._clients.identify(metadata, _certificate_name(context))
        outbox = Outbox(
            self._io, self._host.fail, self._limits, self.settings.heartbeat, self._count_sent
        )
        return self._clients.admit(
            identity,
            metadata,
            lambda node_id: Connection(node_id, identity, peer, outbox, self._limits),
        )

    async def _stream(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> None:
        peer = context.peer()
        try:
            admission = self._admit(context, peer)
        except RefusedError as refused:
            with self._stats_lock:
                self._stats.connections_refused += 1
            logger.warning("refused %s: %s", peer, refused.details)
            self._audit.record(
                "refused", peer=peer, reason=refused.details, name=refused.name or None
            )
            await context.abort(refused.code, refused.details)
            return
        connection = admission.connection
        connection.task = asyncio.current_task()
        connection.last_seen = asyncio.get_running_loop().time()
        if admission.replaced is not None:
            self._disconnect(admission.replaced, "replaced by a new connection of the same node")
        await context.send_initial_metadata(
            (
                (NODE_ID_KEY, str(connection.node_id)),
                (RUN_ID_KEY, str(self.settings.run_id)),
                (PROTOCOL_KEY, PROTOCOL_VERSION),
            )
        )
        self._audit_join(connection, admission.returning)
        # Registered before its first message can be read: the worker learns of a node
        # before it hears from it.
        self._host.post(lambda: self._joined(connection.node_id))
        reader = asyncio.get_running_loop().create_task(self._read(connection, context))
        try:
            async for frame in connection.outbox.frames():
                await context.write(frame)
        except asyncio.CancelledError:
            self._disconnect(connection, connection.closed_because or "the connection was lost")
            raise
        finally:
            reader.cancel()
            connection.ended.set()
        if connection.status is not None:
            context.set_code(connection.status[0])
            context.set_details(connection.status[1])

    def _audit_join(self, connection: Connection, returning: bool) -> None:
        self.observer.connected(connection.node_id)
        identity = connection.identity
        logger.info(
            "node %d %s from %s (%s)",
            connection.node_id,
            "reconnected" if returning else "connected",
            connection.peer,
            identity.describe(),
        )
        self._audit.record(
            "reconnect" if returning else "join",
            node_id=connection.node_id,
            peer=connection.peer,
            proof=identity.kind,
            name=None if identity.kind == "resume" else identity.name,
            fingerprint=identity.fingerprint or None,
        )

    def _departed(self, node_id: int) -> None:
        """On the server worker's thread: the node left; requests in flight to it fail now."""
        if not self._started:
            self._waiting = [waiting for waiting in self._waiting if waiting != node_id]
            return
        if not self._host.worker_stopped:
            self._host.worker.nodes_departed([node_id])

    def _joined(self, node_id: int) -> None:
        """On the server worker's thread: register the node; start once enough are here."""
        worker = self._host.worker
        if self._started:
            worker.on_nodes_registered([node_id])
            return
        if node_id not in self._waiting:
            self._waiting.append(node_id)
        if len(self._waiting) < self.settings.min_clients:
            return
        self._started = True
        worker.on_nodes_registered(sorted(self._waiting))
        logger.info("%d clients connected: starting the server worker", len(self._waiting))
        try:
            worker.on_start()
        finally:  # what waited for the start is delivered even if on_start raised
            self._host.release()
            self._host.count(-1)  # the start counted at construction has happened

    # -- reading --------------------------------------------------------------------------
    async def _read(self, connection: Connection, context: grpc.aio.ServicerContext) -> None:
        reason = "the client closed its stream"
        loop = asyncio.get_running_loop()
        try:
            while True:
                frame = await context.read()
                if frame is grpc.aio.EOF:
                    break
                connection.last_seen = loop.time()
                self.observer.heard(connection.node_id)
                if not connection.reassembler.in_progress:
                    size = announced_size(frame)
                    if size:
                        await self._begin(connection, frame, size)
                        connection.receiving_since = loop.time()
                kind, encoded = connection.reassembler.feed(frame)
                if kind == DATA and encoded is not None:
                    if len(encoded) > self._limits.chunk_size:
                        self._count_received(len(encoded), loop.time() - connection.receiving_since)
                    self._complete(connection, encoded)
                    self._on_message(connection, encoded)
                elif kind == GOODBYE:
                    connection.said_goodbye = True
                    reason = "the client left"
        except (DecodeError, BudgetExceededError, SpillError) as exc:
            reason = f"bad input: {exc}"
            if isinstance(exc, SpillError):
                reason = f"no room for its message: {exc}"
            logger.warning("node %d (%s) sent %s", connection.node_id, connection.peer, reason)
            code = (
                grpc.StatusCode.INVALID_ARGUMENT
                if isinstance(exc, DecodeError)
                else grpc.StatusCode.RESOURCE_EXHAUSTED
            )
            connection.status = (code, str(exc))
        except (grpc.RpcError, asyncio.CancelledError, grpc.aio.AioRpcError):
            reason = connection.closed_because or "the connection was lost"
        finally:
            self._disconnect(connection, reason)

    async def _reserve(self, connection: Connection, size: int) -> None:
        # Only sizes the frame layout accepts are reserved; the reassembler refuses the rest.
        if size > self._limits.max_message_bytes:
            return
        connection.reserved_in_memory = await self._budget.reserve(size)
        connection.reserved = size
        # Waiting for room is the server's choice, not the peer's silence.
        connection.last_seen = asyncio.get_running_loop().time()

    async def _begin(self, connection: Connection, frame: bytes, size: int) -> None:
        """Make room for the message ``frame`` starts: in memory or in a spill file. A message
        there is no room for is refused for its sender alone and its chunks are read and
        dropped; the stream goes on."""
        try:
            await self._reserve(connection, size)
            if not connection.reserved_in_memory:
                connection.reassembler.into(self._spill.open(size))
        except (BudgetExceededError, SpillError) as exc:
            self._release(connection)
            self._refuse(connection, frame, size, exc)
            connection.reassembler.skip()

    def _refuse(
        self, connection: Connection, frame: bytes, size: int, exc: BudgetExceededError | SpillError
    ) -> None:
        """Answer a message the server has no room for, from its first chunk's metadata: a
        reply to the server fails its request at once (an error reply in its place); anything
        else gets a RESOURCE_EXHAUSTED error reply. Raises ``exc`` when the chunk says nothing
        trustworthy about whom to answer (the stream then ends)."""
        try:
            metadata = decode_metadata(memoryview(frame)[HEADER_SIZE:], limits=self._decode_limits)
        except DecodeError:
            raise exc from None
        if metadata.src_node_id != connection.node_id or metadata.run_id != self.settings.run_id:
            raise exc
        reason = f"refused: no room for a message of {size} bytes: {exc}"
        logger.warning("node %d: %r: %s", connection.node_id, metadata.message_type, reason)
        self._count_refusal()
        stub = Message.from_metadata(metadata, content=RecordDict())
        refusal = self._host.rules.check_route(stub)  # what it may not send is refused as such
        if refusal is not None:
            self._fail(stub, size, refusal.code, f"refused: {refusal.reason}")
        elif metadata.dst_node_id == SERVER_NODE_ID and metadata.reply_to_message_id:
            self.observer.message(metadata, size, "no_room", 0)
            error = Error(ErrorCode.RESOURCE_EXHAUSTED, reason)
            self._host.deliver(Message.from_metadata(metadata, error=error))
        else:
            self._fail(stub, size, ErrorCode.RESOURCE_EXHAUSTED, reason)

    def _complete(self, connection: Connection, encoded: memoryview) -> None:
        """A message is whole: in memory, it stays counted until its buffer is freed."""
        size = connection.reserved
        if not size or not connection.reserved_in_memory:
            self._release(connection)
            return
        connection.reserved = 0
        self._budget.hold(size)
        weakref.finalize(encoded.obj, self._let_go, size).atexit = False

    def _let_go(self, size: int) -> None:
        """On whichever thread dropped the last view of a held message's buffer."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to account for
            self._io.call_soon(self._budget.let_go, size)

    def _release(self, connection: Connection) -> None:
        if connection.reserved:
            self._budget.release(connection.reserved, connection.reserved_in_memory)
            connection.reserved = 0

    def _fail(self, message: Message, size: int, code: ErrorCode, reason: str) -> None:
        """Refuse ``message`` (its sender gets the error reply) and tell the observer."""
        outcome = OUTCOME_OF_CODE.get(int(code), "refused")
        self.observer.message(message.metadata, size, outcome, error_of(message))
        self._host.fail(message, code, reason)

    def _on_message(self, connection: Connection, encoded: memoryview) -> None:
        message = decode_message(encoded, limits=self._decode_limits)
        with self._stats_lock:
            self._stats.messages_in += 1
            self._stats.bytes_in += len(encoded)
        metadata = message.metadata
        problem = None
        if metadata.src_node_id != connection.node_id:
            problem = f"claims to come from node {metadata.src_node_id}"
        elif metadata.run_id != self.settings.run_id:
            problem = f"belongs to run {metadata.run_id}, not {self.settings.run_id}"
        if problem is not None:
            logger.warning("refused a message of node %d: it %s", connection.node_id, problem)
            self._count_refusal()
            # Answer the connection's true owner, whatever the message claims.
            mark_sent(
                message,
                run_id=self.settings.run_id,
                message_id=metadata.message_id,
                src_node_id=connection.node_id,
            )
            size = len(encoded)
            self._fail(message, size, ErrorCode.UNAUTHENTICATED, f"refused: the message {problem}")
            return
        rules = self._host.rules
        refusal = rules.check_route(message)
        if refusal is not None:
            logger.warning("refused a message of node %d: %s", connection.node_id, refusal.reason)
            self._count_refusal()
            self._fail(message, len(encoded), refusal.code, f"refused: {refusal.reason}")
        elif (refusal := rules.check_arrived(message)) is not None:
            self._fail(message, len(encoded), refusal.code, refusal.reason)
        elif metadata.dst_node_id == SERVER_NODE_ID:
            self.observer.message(metadata, len(encoded), "delivered", error_of(message))
            self._host.deliver(message)
        else:
            self._forward(message, (encoded,))  # relayed as it came, never re-encoded

    def _count_received(self, size: int, seconds: float) -> None:
        with self._stats_lock:
            self._stats.large_bytes_in += size
            self._stats.large_seconds_in += seconds

    def _count_sent(self, size: int, seconds: float) -> None:
        with self._stats_lock:
            self._stats.large_bytes_out += size
            self._stats.large_seconds_out += seconds

    def _count_refusal(self) -> None:
        with self._stats_lock:
            self._stats.messages_refused += 1

    # -- routing --------------------------------------------------------------------------
    def _route(self, message: Message) -> None:
        """A message of the server worker (or a runtime error reply) for a client."""
        size = encoded_size(message)
        refusal = self._host.rules.check_size(size)
        if refusal is not None:
            self._fail(message, size, refusal.code, refusal.reason)
            return
        if message.metadata.dst_node_id == SERVER_NODE_ID:
            self.observer.message(message.metadata, size, "delivered", error_of(message))
            self._host.deliver(message)
            return
        self._forward(message, encode_for_stream(message))

    def _forward(self, message: Message, encoded: EncodedParts) -> None:
        node_id = message.metadata.dst_node_id
        connection = self._clients.get(node_id)
        size = encoded_length(encoded)
        if connection is None or not connection.outbox.put(message, encoded):
            reason = f"node {node_id} is not connected"
            self._fail(message, size, ErrorCode.NODE_UNAVAILABLE, reason)
            return
        self.observer.message(message.metadata, size, "delivered", error_of(message))
        with self._stats_lock:
            self._stats.messages_out += 1
            self._stats.bytes_out += size

    # -- leaving --------------------------------------------------------------------------
    def _disconnect(self, connection: Connection, reason: str) -> None:
        """Forget the connection and end its stream (on the loop, or from a worker thread)."""
        if not self._io.on_loop():
            self._io.call_soon(self._disconnect, connection, reason)
            return
        if self._clients.remove(connection):
            logger.info("node %d disconnected: %s", connection.node_id, reason)
            node_id = connection.node_id
            self.observer.disconnected(node_id)
            self._audit.record("leave", node_id=node_id, reason=reason)
            self._host.post(lambda: self._departed(node_id))
        connection.closed_because = connection.closed_because or reason
        connection.reassembler.abandon()  # a partial message (or its file) goes with its peer
        self._release(connection)
        connection.outbox.close(f"node {connection.node_id} disconnected")
        task = connection.task
        if task is not None and not task.done():
            if connection.status is None and not connection.said_goodbye:
                task.cancel()  # the peer is gone or must go: nothing more to write
            else:  # the writer ends the call with the status; cancel it only if it sticks
                asyncio.get_running_loop().call_later(_WRITER_GRACE, task.cancel)

    def _close(self, connection: Connection, code: grpc.StatusCode, reason: str) -> None:
        """End a connection for a reason its peer is told (on the loop)."""
        connection.status = (code, reason)
        self._disconnect(connection, reason)

    async def _sweep(self) -> None:
        """Once per heartbeat interval: silent peers go; revoked keys go."""
        loop = asyncio.get_running_loop()
        timeout = self.settings.heartbeat.timeout
        interval = min(self.settings.heartbeat.interval, self.settings.keys_check_interval)
        while True:
            await asyncio.sleep(interval)
            now = loop.time()
            for connection in self._clients.connections():
                silent = now - connection.last_seen
                if silent >= timeout:
                    logger.warning(
                        "node %d sent nothing for %.1f s: marked unavailable",
                        connection.node_id,
                        silent,
                    )
                    self._close(connection, grpc.StatusCode.UNAVAILABLE, "heartbeat timeout")
            self._check_keys()

    def _check_keys(self) -> None:
        keys = self._clients.keys
        if keys is None:
            return
        try:
            if not keys.reload_if_changed():
                return
        except (FedbusError, OSError) as exc:  # a bad edit must not stop the server
            logger.error("the key registry could not be read again, kept as it was: %s", exc)
            return
        self._clients.keys_changed()
        for connection in self._clients.revoked_connections():
            name = connection.identity.name
            logger.warning("node %d: the key of %r was revoked", connection.node_id, name)
            self._audit.record("revoked", node_id=connection.node_id, name=name)
            self._close(connection, grpc.StatusCode.PERMISSION_DENIED, f"key {name!r} revoked")

    @property
    def stats(self) -> TransportStats:
        """A copy of the message and byte counters so far."""
        with self._stats_lock:
            stats = TransportStats(**{k: getattr(self._stats, k) for k in TransportStats.__slots__})
        stats.bytes_buffered = self._budget.used
        stats.bytes_held = self._budget.held
        stats.bytes_spilling = self._budget.spilled
        stats.messages_spilled = self._spill.messages_spilled
        stats.bytes_spilled = self._spill.bytes_spilled
        return stats

    @property
    def connected(self) -> list[int]:
        """Node ids of the clients connected now."""
        return self._clients.node_ids()

    def revoke_now(self) -> None:
        """Read the key registry again at once and disconnect revoked nodes (any thread)."""
        self._io.call_soon(self._check_keys)


def _certificate_name(context: grpc.aio.ServicerContext) -> str | None:
    """The common name of the peer's verified client certificate (mutual TLS), or None."""
    auth = context.auth_context() or {}
    names = auth.get("x509_common_name") or []
    if not names:
        return None
    with contextlib.suppress(UnicodeDecodeError):
        return bytes(names[0]).decode("utf-8")[:256]
    return None
