"""The runtime side of one worker: its dispatcher, stamping on send, and the checks on delivery.

Both ends of a connection host one worker each (the server node 0, a client node K). What a
runtime owes every worker lives here, once:

- on send: fill ``run_id``, ``message_id`` (128 random bits, unguessable: ``runtime.ids``) and
  ``src_node_id`` (``mark_sent``), and refuse a message whose TTL has already passed (the
  sender gets a ``MESSAGE_EXPIRED`` error reply);
- on delivery: run the handler on the worker's dispatcher thread, unless the TTL passed in
  transit (``MESSAGE_EXPIRED``) or the worker has stopped (``NODE_UNAVAILABLE``);
- never answer an error with an error: a failed error message is logged and dropped.

How a message reaches another node is the caller's business (``route``): the server hands it
to a connection, a client to its stream.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from fedbus.message import ErrorCode, Message
from fedbus.runtime.grpc.dispatcher import Activity, Dispatcher, Timer
from fedbus.runtime.ids import MessageIds
from fedbus.runtime.rules import DeliveryRules, Refusal
from fedbus.worker import Worker

__all__ = ["Endpoint", "WorkerHost"]

logger = logging.getLogger("fedbus.grpc")

Route = Callable[[Message], None]


class _Comm:
    """The ``CommManager`` a hosted worker sees."""

    __slots__ = ("_host",)

    def __init__(self, host: WorkerHost) -> None:
        self._host = host

    def send(self, message: Message) -> None:
        self._host.send(message)

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        return self._host.dispatcher.call_later(delay, callback)

    def call_later_background(self, delay: float, callback: Callable[[], None]) -> Timer:
        # not counted: a local run whose only timers are watchdogs' is idle, hence over
        return self._host.dispatcher.call_later(delay, callback, counted=False)

    def report_work(self, num_samples: int) -> None:
        """Nothing to do: a deployment's clock is the wall clock, work takes real time."""

    def stop(self) -> None:
        self._host.stop_worker()


class WorkerHost:
    """One worker, the thread it runs on, and the runtime's duties around its messages.

    Parameters
    ----------
    worker
        The worker to host.
    route
        Carries a stamped message to another node (or fails it); called on the sending thread.
    on_worker_stop
        Called once, on the dispatcher thread, when the worker calls ``stop()``.
    activity
        Shared pending-work counter, for ``run_local``; None in a real deployment.
    dispatcher
        The thread to run the worker on, shared with other workers (``connect_many``);
        None gives the worker a dispatcher of its own, started and stopped with it.
    """

    def __init__(
        self,
        worker: Worker,
        route: Route,
        on_worker_stop: Callable[[], None],
        activity: Activity | None = None,
        *,
        dispatcher: Dispatcher | None = None,
    ) -> None:
        self.worker = worker
        self.node_id = worker.node_id
        self.activity = activity
        self._owns_dispatcher = dispatcher is None
        self.dispatcher = dispatcher or Dispatcher(f"fedbus-node-{worker.node_id}", activity)
        self.worker_stopped = False
        #: False holds deliveries back (the server before ``on_start``); ``release`` sends them.
        self.ready = True
        self._held: list[Message] = []
        self._route = route
        self._on_worker_stop = on_worker_stop
        # The runtime's duties (runtime.rules): ids random, not counted (a peer must not guess
        # the id of a request it did not receive); TTLs on this machine's wall clock. The server
        # adds its routing policy and size limit.
        self.rules = DeliveryRules(0, MessageIds(), time.time)

    def start_dispatcher(self) -> None:
        """Start the worker's own dispatcher (a shared one is started by its owner)."""
        if self._owns_dispatcher:
            self.dispatcher.start()

    def stop_dispatcher(self) -> None:
        """Stop and join the worker's own dispatcher (blocking: not on the IoLoop)."""
        if self._owns_dispatcher:
            self.dispatcher.stop()
            self.dispatcher.join(10.0)

    def attach(self, node_id: int, run_id: int) -> None:
        """Give the worker its node id and its ``CommManager``."""
        self.node_id, self.rules.run_id = node_id, run_id
        self.worker.attach(_Comm(self), node_id)

    # -- sending --------------------------------------------------------------------------
    def send(self, message: Message) -> None:
        """What the worker's ``send`` does: stamp, check the TTL, then route or deliver."""
        self.rules.stamp(message, self.node_id)
        self.count(1)
        if self.rules.expired(message):
            self.fail(message, ErrorCode.MESSAGE_EXPIRED, "its TTL had passed when sent")
        elif message.metadata.dst_node_id == self.node_id:
            self.deliver(message)
        else:
            self._route(message)

    def fail(self, message: Message, code: ErrorCode, reason: str) -> None:
        """``message`` cannot be delivered: its sender gets an error reply, unless it is one.

        The reply comes from the node ``message`` was for, as if that node had answered, and
        is routed like any message. ``message`` was counted in ``activity``; it is done now.
        """
        reply = self.rules.error_reply(message, Refusal(code, reason))
        if reply is None:
            logger.info("dropped an error message that cannot be delivered: %r", message)
        else:
            self.count(1)
            if reply.metadata.dst_node_id == self.node_id:
                self.deliver(reply)
            else:
                self._route(reply)
        self.count(-1)

    # -- delivering -----------------------------------------------------------------------
    def deliver(self, message: Message) -> None:
        """Run the worker's handler for ``message`` on its thread (callable from any thread)."""
        self.dispatcher.post(lambda: self._deliver_now(message), counted=True)

    def _deliver_now(self, message: Message) -> None:
        if not self.ready:
            self.count(1)  # still to happen; counted done when released
            self._held.append(message)
        elif self.worker_stopped:
            self.count(1)  # fail() ends this message's count; the action's own end follows
            self.fail(message, ErrorCode.NODE_UNAVAILABLE, f"node {self.node_id} stopped")
        elif (refusal := self.rules.check_arrived(message)) is not None:
            self.count(1)
            self.fail(message, refusal.code, refusal.reason)
        else:
            self.worker.deliver(message)

    def release(self) -> None:
        """On the dispatcher thread: deliver what was held back, in arrival order."""
        self.ready = True
        held, self._held = self._held, []
        for message in held:
            self._deliver_now(message)
            self.count(-1)

    def post(self, action: Callable[[], None]) -> None:
        """Run a runtime action (start, registration) on the worker's thread, counted."""
        self.count(1)
        self.dispatcher.post(action, counted=True)

    def register(self, node_ids: Sequence[int]) -> None:
        """Tell the worker (on its thread) about nodes that joined."""
        self.post(lambda: self.worker.on_nodes_registered(list(node_ids)))

    def stop_worker(self) -> None:
        """The worker called ``stop()``: it receives nothing more; the runtime is told once."""
        if not self.worker_stopped:
            self.worker_stopped = True
            self._on_worker_stop()

    def count(self, delta: int) -> None:
        """Add to (or, negative, take from) the shared pending-work counter."""
        if self.activity is not None:
            if delta > 0:
                self.activity.add(delta)
            else:
                self.activity.done(-delta)


class Endpoint:
    """What the server and client handles share: their worker's host and an end signal.

    Subclasses set ``_host`` (the ``WorkerHost`` of their worker) and ``_done`` (set once
    the endpoint has ended) in their constructor.
    """

    _host: WorkerHost
    _done: threading.Event

    def submit(self, action: Callable[[], None]) -> None:
        """Run ``action`` on the worker's thread: how other threads call the worker."""
        self._host.post(action)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until this endpoint has ended; False if ``timeout`` passed first."""
        return self._done.wait(timeout)

    @property
    def done(self) -> bool:
        """True once this endpoint has ended."""
        return self._done.is_set()
