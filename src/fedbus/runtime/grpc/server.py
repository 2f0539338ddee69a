"""The server end: node 0, the router of every message, and the judge of who is who.

Each client holds one bidirectional stream open. For each stream the server runs two blocking
threads and no more: gRPC's handler thread writes (it iterates the connection's ``Outbox``),
a reader thread reads and reassembles frames. Neither runs worker code: a message for the
server worker is posted to its dispatcher; one for another client is put in that client's
outbox, as the bytes it arrived in (relayed, never re-encoded).

Identity: the server assigns each connection its node id (1, 2, ... in join order, or the id
the client asks for when it is free) and stamps it on the connection. A message whose
``src_node_id`` is not its connection's id is refused with an ``UNAUTHENTICATED`` error reply
and logged; a client therefore cannot speak as another, and receives only messages addressed
to it.

Routing follows the flow declaration (``RoutingPolicy``): a message from a client whose type
its role does not declare towards the receiver's role (a ``finish`` or ``train`` for another
client, say) gets a ``PERMISSION_DENIED`` error reply and is never delivered or relayed.

Departure: when a client's stream ends (it left, its connection broke, or its heartbeat
stopped), the server worker is told at once (``Worker.nodes_departed``): every request in
flight to that node gets a ``NODE_UNAVAILABLE`` error reply, and an FL server takes the node
out of its sampling pool until it connects again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field

import grpc

from fedbus.errors import DecodeError, RunError
from fedbus.message import DecodeLimits, ErrorCode, Message, decode_message, mark_sent
from fedbus.message.codec import encoded_size
from fedbus.runtime.grpc.dispatcher import Activity, Dispatcher
from fedbus.runtime.grpc.framing import DATA, GOODBYE, TransportLimits, encode_for_stream
from fedbus.runtime.grpc.host import Endpoint, WorkerHost
from fedbus.runtime.grpc.registry import ClientRegistry, Connection, RefusedError
from fedbus.runtime.grpc.security import (
    NODE_ID_KEY,
    PROTOCOL_KEY,
    PROTOCOL_VERSION,
    RUN_ID_KEY,
    Authenticator,
)
from fedbus.runtime.grpc.stream import METHOD_NAME, SERVICE, Heartbeat, Outbox, channel_options
from fedbus.worker import SERVER_NODE_ID, RoutingPolicy, Worker

__all__ = ["GrpcServer", "ServerSettings", "TransportStats"]

logger = logging.getLogger("fedbus.grpc.server")

# How long a stopping server waits for its clients to take their last messages and GOODBYE.
_DRAIN_SECONDS = 10.0


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
    """

    min_clients: int = 1
    join_timeout: float | None = None
    max_clients: int = 1000
    first_node_id: int = 1
    run_id: int = 1
    limits: TransportLimits = field(default_factory=TransportLimits)
    heartbeat: Heartbeat = field(default_factory=Heartbeat)


@dataclass(slots=True)
class TransportStats:
    """Messages and encoded bytes the server received from and sent to clients."""

    messages_in: int = 0
    messages_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    #: Messages refused for their sender (impersonation, run id, routing policy).
    messages_refused: int = 0


class GrpcServer(Endpoint):
    """Hosts the server worker as node 0 and serves the fedbus stream (see ``serve``).

    ``policy`` is the routing policy messages from clients must follow (default: the one the
    server's own declarations imply, ``RoutingPolicy.from_server``).
    """

    def __init__(
        self,
        worker: Worker,
        authenticator: Authenticator,
        settings: ServerSettings,
        activity: Activity | None = None,
        *,
        policy: RoutingPolicy | None = None,
    ) -> None:
        self.settings = settings
        self._limits = settings.limits
        self._decode_limits = DecodeLimits(max_message_bytes=settings.limits.max_message_bytes)
        self._host = WorkerHost(worker, self._route, self._on_worker_stop, activity)
        self._host.attach(SERVER_NODE_ID, settings.run_id)
        # the server is the trust boundary: clients' messages follow the routing policy here
        rules = self._host.rules
        rules.policy = RoutingPolicy.from_server(worker) if policy is None else policy
        rules.max_message_bytes = settings.limits.max_message_bytes
        self._host.ready = False
        self._watchdog = Dispatcher("fedbus-grpc-watchdog")
        self._clients = ClientRegistry(authenticator, settings.max_clients, settings.first_node_id)
        self._waiting: list[int] = []
        self._started = False
        self._done = threading.Event()
        self._grpc: grpc.Server | None = None
        self._stats = TransportStats()
        self._stats_lock = threading.Lock()
        self._executor: futures.ThreadPoolExecutor | None = None
        self.error: RunError | None = None
        self.port = 0
        if activity is not None:
            activity.add()  # the server's start is still to happen

    # -- lifecycle ------------------------------------------------------------------------
    def start(self, address: str, credentials: grpc.ServerCredentials | None) -> int:
        """Bind ``address``, start serving and return the port."""
        # One handler thread per connected client (it writes the stream), plus a few for
        # connection attempts being refused.
        workers = self.settings.max_clients + 8
        self._executor = futures.ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="fedbus-grpc"
        )
        server = grpc.server(
            self._executor,
            handlers=[self._handlers()],
            options=channel_options(self._limits),
            maximum_concurrent_rpcs=workers,
        )
        try:
            if credentials is None:
                port = server.add_insecure_port(address)
            else:
                port = server.add_secure_port(address, credentials)
        except RuntimeError as exc:
            raise RunError(f"cannot listen on {address!r}: {exc}") from exc
        if port == 0:
            raise RunError(f"cannot listen on {address!r}: the address is in use or invalid")
        self._grpc, self.port = server, int(port)
        self._host.dispatcher.start()
        self._watchdog.start()
        server.start()
        if self.settings.join_timeout is not None:
            self._watchdog.call_later(self.settings.join_timeout, self._join_timed_out)
        logger.info("listening on %s (port %d)", address, port)
        return self.port

    def _handlers(self) -> grpc.GenericRpcHandler:
        # Identity (de)serializers: the payload is our own frame, no protobuf involved.
        method = grpc.stream_stream_rpc_method_handler(self._stream)
        return grpc.method_handlers_generic_handler(SERVICE, {METHOD_NAME: method})

    def stop(self, failure: str | None = None) -> None:
        """Say GOODBYE to every client, let them drain, then shut down (from any thread)."""
        connections = self._clients.close()
        if connections is None:
            return
        if failure is not None and self.error is None:
            self.error = RunError(failure)
        for connection in connections:
            connection.outbox.say_goodbye()
        threading.Thread(
            target=self._shut_down, args=(connections,), name="fedbus-grpc-stop", daemon=True
        ).start()

    def _shut_down(self, connections: list[Connection]) -> None:
        deadline = time.monotonic() + _DRAIN_SECONDS
        for connection in connections:
            connection.ended.wait(max(0.0, deadline - time.monotonic()))
        if self._grpc is not None:
            self._grpc.stop(grace=1.0).wait(5.0)
            if self._executor is not None:
                self._executor.shutdown(wait=False)
        for connection in self._clients.connections():
            self._disconnect(connection, "the server stopped")
        self._host.worker_stopped = True
        self._host.dispatcher.stop()
        self._watchdog.stop()
        self._host.dispatcher.join(5.0)
        self._watchdog.join(5.0)
        if self._host.activity is not None:
            if not self._started:
                self._host.activity.done()  # the start that never happened
            self._host.activity.close()
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
    def _stream(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        peer = context.peer()
        outbox = Outbox(self._host.fail, self._limits, self.settings.heartbeat)
        try:
            connection = self._clients.admit(
                dict(context.invocation_metadata() or ()),
                lambda node_id: Connection(node_id, peer, context, outbox, self._limits),
            )
        except RefusedError as refused:
            logger.warning("refused %s: %s", peer, refused.details)
            context.abort(refused.code, refused.details)
            raise  # not reached: abort raises
        context.send_initial_metadata(
            (
                (NODE_ID_KEY, str(connection.node_id)),
                (RUN_ID_KEY, str(self.settings.run_id)),
                (PROTOCOL_KEY, PROTOCOL_VERSION),
            )
        )
        logger.info("node %d connected from %s", connection.node_id, peer)
        # Registered before its first message can be read: the worker learns of a node
        # before it hears from it.
        self._host.post(lambda: self._joined(connection.node_id))
        self._watch(connection)
        threading.Thread(
            target=self._read,
            args=(connection, requests),
            name=f"fedbus-grpc-read-{connection.node_id}",
            daemon=True,
        ).start()
        return self._write(connection)

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
    def _read(self, connection: Connection, requests: Iterator[bytes]) -> None:
        reason = "the client closed its stream"
        try:
            for frame in requests:
                connection.last_seen = time.monotonic()
                kind, encoded = connection.reassembler.feed(frame)
                if kind == DATA and encoded is not None:
                    self._on_message(connection, encoded)
                elif kind == GOODBYE:
                    connection.said_goodbye = True
                    reason = "the client left"
        except DecodeError as exc:
            reason = f"bad input: {exc}"
            logger.warning("node %d (%s) sent %s", connection.node_id, connection.peer, reason)
            connection.status = (grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except grpc.RpcError:
            reason = "the connection was lost"
        finally:
            self._disconnect(connection, reason)

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
            self._host.fail(message, ErrorCode.UNAUTHENTICATED, f"refused: the message {problem}")
            return
        rules = self._host.rules
        refusal = rules.check_route(message)
        if refusal is not None:
            logger.warning("refused a message of node %d: %s", connection.node_id, refusal.reason)
            self._count_refusal()
            self._host.fail(message, refusal.code, f"refused: {refusal.reason}")
        elif (refusal := rules.check_arrived(message)) is not None:
            self._host.fail(message, refusal.code, refusal.reason)
        elif metadata.dst_node_id == SERVER_NODE_ID:
            self._host.deliver(message)
        else:
            self._forward(message, encoded)

    def _count_refusal(self) -> None:
        with self._stats_lock:
            self._stats.messages_refused += 1

    # -- routing --------------------------------------------------------------------------
    def _route(self, message: Message) -> None:
        """A message of the server worker (or a runtime error reply) for a client."""
        refusal = self._host.rules.check_size(encoded_size(message))
        if refusal is not None:
            self._host.fail(message, refusal.code, refusal.reason)
            return
        if message.metadata.dst_node_id == SERVER_NODE_ID:
            self._host.deliver(message)
            return
        self._forward(message, encode_for_stream(message))

    def _forward(self, message: Message, encoded: bytes | bytearray | memoryview) -> None:
        node_id = message.metadata.dst_node_id
        connection = self._clients.get(node_id)
        if connection is None or not connection.outbox.put(message, encoded):
            reason = f"node {node_id} is not connected"
            self._host.fail(message, ErrorCode.NODE_UNAVAILABLE, reason)
            return
        with self._stats_lock:
            self._stats.messages_out += 1
            self._stats.bytes_out += len(encoded)

    # -- writing and leaving --------------------------------------------------------------
    def _write(self, connection: Connection) -> Iterator[bytes]:
        try:
            yield from connection.outbox.frames()
        finally:
            if connection.status is not None:
                connection.context.set_code(connection.status[0])
                connection.context.set_details(connection.status[1])

    def _disconnect(self, connection: Connection, reason: str) -> None:
        if self._clients.remove(connection):
            logger.info("node %d disconnected: %s", connection.node_id, reason)
            node_id = connection.node_id
            self._host.post(lambda: self._departed(node_id))
        connection.outbox.close(f"node {connection.node_id} disconnected")
        if connection.status is not None:
            # The writer ends the call with this status; cancel only if it is stuck writing.
            self._watchdog.call_later(1.0, connection.context.cancel)
        elif not connection.said_goodbye:
            connection.context.cancel()
        connection.ended.set()

    def _watch(self, connection: Connection) -> None:
        timeout = self.settings.heartbeat.timeout

        def check() -> None:
            if connection.ended.is_set():
                return
            silent = time.monotonic() - connection.last_seen
            if silent < timeout:
                self._watchdog.call_later(timeout - silent, check)
                return
            logger.warning(
                "node %d sent nothing for %.1f s: marked unavailable", connection.node_id, silent
            )
            connection.status = (grpc.StatusCode.UNAVAILABLE, "heartbeat timeout")
            self._disconnect(connection, f"no heartbeat for {silent:.1f} s")

        self._watchdog.call_later(timeout, check)

    @property
    def stats(self) -> TransportStats:
        """A copy of the message and byte counters so far."""
        with self._stats_lock:
            return TransportStats(**{k: getattr(self._stats, k) for k in TransportStats.__slots__})

    @property
    def connected(self) -> list[int]:
        """Node ids of the clients connected now."""
        return self._clients.node_ids()
