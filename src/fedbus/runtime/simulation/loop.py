"""The simulation runtime: many workers on one thread, in simulated time.

A priority queue of events ordered by (simulated time, sequence number) drives everything: a
message is delivered at the time it arrives, a timer fires at the time it was set for. Ties are
broken by the order events were scheduled, so a run never stalls and the same seed gives the
same trace. Nothing sleeps: simulated time jumps from one event to the next, and a run costs only
the handlers' own compute.

When is a message delivered? ``send time + transfer + latency``, where the send time is the
handler's start plus ``HANDLER_TIME`` plus the samples it reported divided by the node's speed
(see ``profiles``). Messages travel by reference; ``check_serialization=True`` instead sends each
one through the codec, proving the same code would run over a network.

Clients whose profile has availability windows are offline outside them (the server never is).
An offline device cannot send: a message it sends leaves at the start of its next window (and is
lost if none is left). A message that arrives while its receiver is offline waits for the
receiver's next window (``offline="wait"``, what a store-and-forward server does; its TTL still
applies) or fails at once with ``NODE_UNAVAILABLE`` to the sender (``offline="fail"``).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from fedbus.errors import FedbusError, InvalidArgumentError
from fedbus.message import Message, Metadata, mark_sent, use_clock
from fedbus.message.codec import decode_message, encode_message, encoded_size
from fedbus.message.message import ErrorCode
from fedbus.runtime.simulation.profiles import (
    HANDLER_TIME,
    SERVER_PROFILE,
    ClientProfile,
    ProfileSource,
)
from fedbus.worker import SERVER_NODE_ID, MessageFlow, Worker, runtime_error_reply

__all__ = ["Simulation", "SimulationResult", "SimulationStats", "TraceEntry", "simulate"]

logger = logging.getLogger("fedbus.simulation")

TraceEvent = Literal[
    "delivered", "expired", "unavailable", "undeliverable", "dropped", "held", "offline"
]
ClientFactory = Callable[[int], Worker]


@dataclass(frozen=True, slots=True)
class TraceEntry:
    """One thing that happened to a message, at a simulated time.

    ``event`` is ``delivered`` (a handler ran), ``expired`` (its TTL passed first),
    ``unavailable`` (the receiver had stopped), ``undeliverable`` (no such node),
    ``dropped`` (lost by the receiver's dropout), ``held`` (the receiver was offline: the
    message waits for its next window, where it gets another entry) or ``offline`` (lost
    because its receiver, or its sender, was offline and had no window left, or because the
    receiver was offline with ``offline="fail"``).
    """

    time: float
    event: TraceEvent
    metadata: Metadata


@dataclass(slots=True)
class SimulationStats:
    """Counters of a simulation; bytes are encoded sizes (what a network would carry)."""

    messages_sent: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    events: dict[str, int] = field(default_factory=dict)
    timer_failures: int = 0


@dataclass(frozen=True, slots=True)
class SimulationResult:
    """What a simulation returns.

    Attributes
    ----------
    time
        Simulated seconds when the last event ran.
    trace
        Every delivery, expiry, drop and failed delivery, in the order they happened.
    server
        The server worker (node 0).
    workers
        Every worker that took part, by node id (lazily created clients only if used).
    stats
        Message and byte counters.
    """

    time: float
    trace: list[TraceEntry]
    server: Worker
    workers: Mapping[int, Worker]
    stats: SimulationStats


class _Timer:
    __slots__ = ("callback", "cancelled", "node_id")

    def __init__(self, node_id: int, callback: Callable[[], None]) -> None:
        self.node_id, self.callback, self.cancelled = node_id, callback, False

    def cancel(self) -> None:
        self.cancelled = True


class _NodeComm:
    """The CommManager one worker sees: every call is attributed to its node."""

    __slots__ = ("_node_id", "_simulation")

    def __init__(self, simulation: Simulation, node_id: int) -> None:
        self._simulation, self._node_id = simulation, node_id

    def send(self, message: Message) -> None:
        self._simulation._send(self._node_id, message)

    def call_later(self, delay: float, callback: Callable[[], None]) -> _Timer:
        return self._simulation._call_later(self._node_id, delay, callback)

    def report_work(self, num_samples: int) -> None:
        self._simulation._report_work(self._node_id, num_samples)

    def stop(self) -> None:
        self._simulation._stopped.add(self._node_id)


class Simulation:
    """A deterministic event-driven simulation of one server and many clients.

    Parameters
    ----------
    server
        The worker that plays node 0.
    clients
        A list of workers (given ids 1..N in order unless built with their own), or a factory
        ``client_fn(node_id) -> Worker`` together with ``num_clients``: clients are then built
        when first needed, so registered clients cost nothing until sampled.
    num_clients
        Number of clients a factory serves (ids 1..num_clients).
    seed
        Seed of the runtime's own randomness (dropouts).
    profiles
        ``node_id -> ClientProfile``; default: every client ``ClientProfile()``.
    check_serialization
        Send every message through the codec and deliver the decoded copy.
    record_trace
        Keep the trace (on by default; large runs may turn it off).
    run_id
        Stamped on every message.
    offline
        What a message that reaches a client outside its availability windows does:
        ``"wait"`` for the client's next window, or ``"fail"`` at once with a
        ``NODE_UNAVAILABLE`` error to the sender.
    """

    def __init__(
        self,
        server: Worker,
        clients: Sequence[Worker] | ClientFactory,
        *,
        num_clients: int | None = None,
        seed: int = 0,
        profiles: ProfileSource | None = None,
        check_serialization: bool = False,
        record_trace: bool = True,
        run_id: int = 1,
        offline: Literal["wait", "fail"] = "wait",
    ) -> None:
        if offline not in ("wait", "fail"):
            raise InvalidArgumentError(
                f'simulate: offline must be "wait" or "fail", got {offline!r}'
            )
        self.server = server
        self._offline = offline
        self.stats = SimulationStats()
        self.trace: list[TraceEntry] = []
        self._record_trace = record_trace
        self._check_serialization = check_serialization
        self._run_id = run_id
        self._rng = np.random.default_rng(seed)
        self._profile_source = profiles or (lambda node_id: _DEFAULT_PROFILE)
        self._profiles: dict[int, ClientProfile] = {SERVER_NODE_ID: SERVER_PROFILE}
        self._queue: list[tuple[float, int, Message | _Timer]] = []
        self._sequence = itertools.count()
        self._message_ids = itertools.count(1)
        self._now = 0.0
        self._elapsed = 0.0  # simulated seconds the running handler has used so far
        self._stopped: set[int] = set()
        self._workers: dict[int, Worker] = {}
        self._unstarted: set[int] = set()  # built by the factory, on_start not yet called
        self._factory: ClientFactory | None = None
        self._client_ids: Sequence[int]
        self._started = False
        self._setup_clients(clients, num_clients)
        self._attach(SERVER_NODE_ID, server)

    # -- set-up -------------------------------------------------------------------------------
    def _setup_clients(
        self, clients: Sequence[Worker] | ClientFactory, num_clients: int | None
    ) -> None:
        if callable(clients) and not isinstance(clients, Sequence):
            if num_clients is None or num_clients < 1:
                raise InvalidArgumentError(
                    "simulate: a client factory needs num_clients >= 1, "
                    f"got num_clients={num_clients!r}"
                )
            self._factory = clients
            self._client_ids = range(1, num_clients + 1)
            return
        if num_clients is not None and num_clients != len(clients):
            raise InvalidArgumentError(
                f"simulate: num_clients={num_clients} but {len(clients)} clients were given"
            )
        for position, worker in enumerate(clients, start=1):
            node_id = position if worker.node_id < 0 else worker.node_id
            if node_id == SERVER_NODE_ID:
                raise InvalidArgumentError("simulate: node 0 is the server; give clients ids >= 1")
            if node_id in self._workers:
                raise InvalidArgumentError(f"simulate: two clients have node id {node_id}")
            self._attach(node_id, worker)
        self._client_ids = sorted(self._workers)

    def _attach(self, node_id: int, worker: Worker) -> None:
        if not isinstance(worker, Worker):
            raise InvalidArgumentError(
                f"simulate: node {node_id} must be a fedbus Worker, got {type(worker).__name__}"
            )
        worker.attach(_NodeComm(self, node_id), node_id)
        self._workers[node_id] = worker

    def _worker(self, node_id: int) -> Worker | None:
        worker = self._workers.get(node_id)
        if worker is None and self._factory is not None and node_id in self._client_ids:
            worker = self._factory(node_id)
            self._attach(node_id, worker)
            self._unstarted.add(node_id)
        return worker

    def message_flow(self) -> MessageFlow:
        """The message flow of the server and one client of each class."""
        if self._factory is not None:
            # One client stands for all: the factory is expected to build one class.
            built = self._worker(self._client_ids[0])
            clients = [] if built is None else [built]
        else:
            clients = [self._workers[node_id] for node_id in self._client_ids]
        samples: dict[type, Worker] = {}
        for worker in clients:
            samples.setdefault(type(worker), worker)
        roles: list[tuple[str, Worker]] = [("server", self.server)]
        single = len(samples) == 1
        roles += [("client" if single else f"client:{k.__name__}", w) for k, w in samples.items()]
        return MessageFlow.from_roles(roles)

    # -- running --------------------------------------------------------------------------------
    def run(self, *, until: float | None = None) -> SimulationResult:
        """Check the message flow, start every worker and run until no event is left.

        Parameters
        ----------
        until
            Stop at this simulated time even if events remain.
        """
        if self._started:
            raise InvalidArgumentError("a Simulation runs once; build a new one to run again")
        self._started = True
        with use_clock(self._clock):
            self.message_flow().check()
            self.server.on_nodes_registered(self._client_ids)
            self._run_on(self.server.on_start)
            if self._factory is None:
                for node_id in self._client_ids:
                    self._run_on(self._workers[node_id].on_start)
            self._loop(until)
        return SimulationResult(self._now, self.trace, self.server, dict(self._workers), self.stats)

    def _loop(self, until: float | None) -> None:
        queue = self._queue
        while queue:
            if until is not None and queue[0][0] > until:
                self._now = until
                return
            time, _, item = heapq.heappop(queue)
            self._now = time
            if isinstance(item, _Timer):
                self._fire(item)
            else:
                self._deliver(item)

    def _fire(self, timer: _Timer) -> None:
        if timer.cancelled or timer.node_id in self._stopped:
            return
        try:
            self._run_on(timer.callback)
        except Exception:
            self.stats.timer_failures += 1
            logger.exception("timer callback on node %s raised", timer.node_id)

    def _run_on(self, action: Callable[[], None]) -> None:
        """Run a worker's code: the simulated clock starts at HANDLER_TIME past the event."""
        self._elapsed = HANDLER_TIME
        action()

    def _deliver(self, message: Message) -> None:
        metadata = message.metadata
        node_id = metadata.dst_node_id
        if self._now > metadata.expires_at:
            self._fail(message, "expired", ErrorCode.MESSAGE_EXPIRED, "its TTL passed in transit")
            return
        if node_id in self._stopped:
            self._fail(
                message, "unavailable", ErrorCode.NODE_UNAVAILABLE, f"node {node_id} stopped"
            )
            return
        worker = self._worker(node_id)
        if worker is None:
            self._fail(message, "undeliverable", ErrorCode.NODE_UNAVAILABLE, f"no node {node_id}")
            return
        profile = self._profile(node_id)
        if profile.windows and not self._online_or_held(message, profile):
            return
        if profile.dropout > 0 and self._rng.random() < profile.dropout:
            self._record("dropped", metadata)
            return
        if node_id in self._unstarted:
            self._unstarted.discard(node_id)
            self._run_on(worker.on_start)
        self._record("delivered", metadata)
        self._run_on(lambda: worker.deliver(message))

    def _online_or_held(self, message: Message, profile: ClientProfile) -> bool:
        """Whether the receiver is online now; if not, hold the message or fail it."""
        back = profile.next_online(self._now)
        if back <= self._now:  # online now
            return True
        if self._offline == "fail" or back == math.inf:
            node_id = message.metadata.dst_node_id
            left = " and has no window left" if back == math.inf else ""
            reason = f"node {node_id} is offline{left}"
            self._fail(message, "offline", ErrorCode.NODE_UNAVAILABLE, reason)
            return False
        self._record("held", message.metadata)
        self._push(back, message)  # a new sequence number: ties still break deterministically
        return False

    def _fail(self, message: Message, event: TraceEvent, code: ErrorCode, reason: str) -> None:
        """Record a failed delivery and tell the sender, unless the message was an error."""
        self._record(event, message.metadata)
        if message.has_error():
            return  # an error about an error would never end
        reply = runtime_error_reply(
            message, code, f"message {message.metadata.message_id}: {reason}"
        )
        self._stamp(reply, message.metadata.dst_node_id)
        self._push(self._now, reply)

    # -- what workers call through their CommManager ------------------------------------------
    def _clock(self) -> float:
        return self._now + self._elapsed

    def _send(self, node_id: int, message: Message) -> None:
        self._stamp(message, node_id)
        metadata = message.metadata
        depart = self._clock()
        profile = self._profile(node_id)
        if profile.windows:  # an offline device sends when it is back
            depart = profile.next_online(depart)
            if depart == math.inf:
                self._record("offline", metadata)
                return
        if metadata.ttl <= 0 or depart > metadata.expires_at:
            self._fail(
                message, "expired", ErrorCode.MESSAGE_EXPIRED, "its TTL had passed when sent"
            )
            return
        if self._check_serialization:
            frame = encode_message(message)
            size = len(frame)
            copy = decode_message(frame)
            # Bytes, not ==: a NaN metric (a diverged loss) never equals itself.
            if encode_message(copy) != frame:
                raise FedbusError(f"codec round trip changed {message!r}")
            message = copy
        else:
            size = encoded_size(message)
        self._count_bytes(metadata, size)
        self._push(depart + self._transfer_time(metadata, size), message)

    def _call_later(self, node_id: int, delay: float, callback: Callable[[], None]) -> _Timer:
        if not delay >= 0:
            raise InvalidArgumentError(f"call_later: delay must be >= 0, got {delay}")
        timer = _Timer(node_id, callback)
        heapq.heappush(self._queue, (self._clock() + delay, next(self._sequence), timer))
        return timer

    def _report_work(self, node_id: int, num_samples: int) -> None:
        self._elapsed += num_samples / self._profile(node_id).speed

    # -- helpers --------------------------------------------------------------------------------
    def _stamp(self, message: Message, node_id: int) -> None:
        mark_sent(
            message,
            run_id=self._run_id,
            message_id=str(next(self._message_ids)),
            src_node_id=node_id,
        )
        self.stats.messages_sent += 1

    def _push(self, time: float, message: Message) -> None:
        heapq.heappush(self._queue, (time, next(self._sequence), message))

    def _profile(self, node_id: int) -> ClientProfile:
        profile = self._profiles.get(node_id)
        if profile is None:
            profile = self._profiles[node_id] = self._profile_source(node_id)
        return profile

    def _transfer_time(self, metadata: Metadata, size: int) -> float:
        source = self._profile(metadata.src_node_id)
        target = self._profile(metadata.dst_node_id)
        megabits = size * 8e-6
        bandwidth = min(source.uplink_mbps, target.downlink_mbps)
        return megabits / bandwidth + source.latency + target.latency

    def _count_bytes(self, metadata: Metadata, size: int) -> None:
        if metadata.dst_node_id == SERVER_NODE_ID:
            self.stats.bytes_up += size
        elif metadata.src_node_id == SERVER_NODE_ID:
            self.stats.bytes_down += size
        else:  # client to client: relayed by the server in a deployment, so both ways
            self.stats.bytes_up += size
            self.stats.bytes_down += size

    def _record(self, event: TraceEvent, metadata: Metadata) -> None:
        events = self.stats.events
        events[event] = events.get(event, 0) + 1
        if self._record_trace:
            self.trace.append(TraceEntry(self._now, event, metadata))

    @property
    def now(self) -> float:
        """The current simulated time in seconds."""
        return self._now


_DEFAULT_PROFILE = ClientProfile()


def simulate(
    server: Worker,
    clients: Sequence[Worker] | ClientFactory,
    *,
    num_clients: int | None = None,
    seed: int = 0,
    profiles: ProfileSource | None = None,
    check_serialization: bool = False,
    record_trace: bool = True,
    until: float | None = None,
    offline: Literal["wait", "fail"] = "wait",
) -> SimulationResult:
    """Run ``server`` and ``clients`` in simulated time until no message is in flight.

    See ``Simulation`` for the parameters. Raises ``FlowError`` before anything runs if a
    declared message type has no handler.

    Examples
    --------
    >>> from fedbus import Message, RecordDict, Worker
    >>> class Ping(Worker):
    ...     start_sends = ["ping"]
    ...     def on_start(self):
    ...         self.send(Message(RecordDict(), 1, "ping"))
    ...     def __init__(self):
    ...         super().__init__(0)
    ...         self.register_handlers("ping", lambda m: None)  # receives the pong reply
    >>> class Pong(Worker):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.register_handlers("ping", lambda m: m.create_reply(RecordDict()))
    >>> result = simulate(Ping(), [Pong()])
    >>> [entry.event for entry in result.trace]
    ['delivered', 'delivered']
    """
    simulation = Simulation(
        server,
        clients,
        num_clients=num_clients,
        seed=seed,
        profiles=profiles,
        check_serialization=check_serialization,
        record_trace=record_trace,
        offline=offline,
    )
    return simulation.run(until=until)
