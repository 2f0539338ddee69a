"""``AsyncServer``: asynchronous training, aggregating whenever a trigger fires.

Clients train on whatever model version they were sent; the server never waits for a round's
slowest client. What it does, all in handlers and timers:

- **Trigger** (when to aggregate): ``goal``, after ``goal`` updates have arrived; ``time``,
  every ``period`` seconds (simulated in simulation, wall-clock in deployment). A time window
  that closes with no update is *extended*: no timer spins, and the next update to arrive
  closes it. Aggregating makes the next model version.
- **Broadcast** (whom to send the model): ``after_receiving``, a fresh client is sent the
  current model as soon as one reports, so ``concurrency`` clients are always busy;
  ``after_aggregating``, idle slots are refilled only when a new version exists.
- **Staleness**: every request carries the version it was sent (``config.model_version`` and
  the group id); an update ``s`` versions old is discounted by ``Staleness.weight(s)`` through
  the strategy's ``stale_update`` and aggregated by the strategy's own aggregator, or dropped
  and counted beyond the tolerance. Any aggregation rule works with any trigger.

A client that fails, times out (``request_timeout``) or sends a dropped update frees its slot
at once, whatever the broadcast, so the federation keeps moving. Each aggregation is one
``RoundRecord`` (``round`` = the new version); the run ends after ``num_rounds`` versions.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Unpack

import numpy as np

from fedbus.errors import FedbusError, InvalidArgumentError
from fedbus.fl.asynchronous.staleness import Staleness
from fedbus.fl.protocol import ARRAYS, FINISH, read_arrays
from fedbus.fl.record import RoundRecord
from fedbus.fl.requests import RequestGroup
from fedbus.fl.server_base import ServerBase, mean_wait
from fedbus.fl.settings import SharedOptions, TrainingSettings, settings_from_options
from fedbus.fl.strategy.base import Aggregator, Strategy
from fedbus.fl.watchdog import WaitingFor
from fedbus.message import ArrayRecord, ConfigRecord, Message, RecordDict, now
from fedbus.worker import SERVER_NODE_ID, TimerHandle

__all__ = ["BROADCASTS", "MODEL_VERSION", "TRIGGERS", "AsyncServer"]

logger = logging.getLogger("fedbus.server")

TRIGGERS: Final = ("goal", "time")
BROADCASTS: Final = ("after_receiving", "after_aggregating")
#: The ``train`` config key that names the model version a request carries.
MODEL_VERSION: Final = "model_version"


@dataclass(slots=True)
class _Request:
    node_id: int
    version: int
    base: ArrayRecord | None  # the model sent, by reference; None once too stale to matter


class AsyncServer(ServerBase):
    """The FL server of asynchronous training (FedAsync, FedBuff, or any strategy).

    Parameters
    ----------
    strategy
        Aggregates each batch of (staleness-discounted) updates, e.g. ``FedBuff()``.
    initial_arrays
        The initial global model (version ``first_round - 1``).
    num_rounds
        Aggregations to run: the run ends at model version ``num_rounds``.
    concurrency
        Clients kept training at once.
    trigger, goal, period
        ``"goal"``: aggregate after ``goal`` updates; ``"time"``: every ``period`` seconds.
    broadcast
        ``"after_receiving"`` or ``"after_aggregating"`` (see the module docstring). With
        ``after_aggregating`` and the goal trigger, ``goal`` must not exceed ``concurrency``.
    staleness
        Which stale updates count and how much (default ``Staleness()``).
    request_timeout
        Seconds after which a client that has not answered is given up (default: never).
    max_failures
        Failed requests in a row (errors, timeouts, dropped updates) after which the run stops
        (default ``10 * concurrency``): a federation whose clients all fail ends, not spins.
    settings
        What every server shares (``TrainingSettings``), or its fields as keywords, with
        ``evaluate_fn``, ``evaluate_every`` and ``on_round_end``: as for ``Server``;
        ``min_clients`` defaults to ``concurrency``.
    """

    start_sends: tuple[str, ...] = (FINISH,)

    def __init__(
        self,
        strategy: Strategy,
        initial_arrays: ArrayRecord | Mapping[str, np.ndarray[Any, Any]],
        *,
        concurrency: int,
        trigger: str = "goal",
        goal: int = 1,
        period: float | None = None,
        broadcast: str = "after_receiving",
        staleness: Staleness | None = None,
        request_timeout: float | None = None,
        max_failures: int | None = None,
        settings: TrainingSettings | None = None,
        node_id: int = SERVER_NODE_ID,
        **shared: Unpack[SharedOptions],
    ) -> None:
        settings = settings_from_options(type(self).__name__, settings, shared)
        super().__init__(strategy, initial_arrays, settings, node_id=node_id)
        require = self.require
        require(concurrency >= 1, "concurrency", ">= 1", concurrency)
        require(trigger in TRIGGERS, "trigger", f"one of {', '.join(TRIGGERS)}", trigger)
        require(broadcast in BROADCASTS, "broadcast", f"one of {', '.join(BROADCASTS)}", broadcast)
        require(goal >= 1, "goal", ">= 1", goal)
        if trigger == "time":
            require(
                period is not None and math.isfinite(period) and period > 0,
                "period",
                "a finite number of seconds > 0 with the time trigger",
                period,
            )
        elif broadcast == "after_aggregating":
            require(
                goal <= concurrency,
                "goal",
                f"<= concurrency ({concurrency}) with after_aggregating: the clients sent a "
                "version must be able to reach the goal",
                goal,
            )
        require(
            request_timeout is None or request_timeout > 0,
            "request_timeout",
            "> 0 or None",
            request_timeout,
        )
        max_failures = 10 * concurrency if max_failures is None else max_failures
        require(max_failures >= 1, "max_failures", ">= 1", max_failures)
        if strategy.synchronous_only:
            raise InvalidArgumentError(
                f"AsyncServer: strategy {strategy.name!r} needs every update computed on the "
                'current model; run it with the synchronous Server (aggregation.trigger = "all")'
            )
        # a time window may close on a single update
        strategy.check_round_size(goal if trigger == "goal" else 1)
        if settings.min_clients is None:
            self.min_clients = concurrency
        self.concurrency = concurrency
        self.trigger, self.goal, self.period = trigger, goal, period
        self.broadcast = broadcast
        self.staleness = Staleness() if staleness is None else staleness
        self.request_timeout = request_timeout
        self.max_failures = max_failures
        #: The current model version: the number of aggregations so far.
        self.version = settings.first_round - 1
        self._requests: dict[str, _Request] = {}  # message id -> request in flight
        # One rolling group for the whole run: it checks who answers and times requests out.
        self._group = RequestGroup(
            self,
            on_reply=self._on_update,
            on_failure=self._on_request_failed,
            request_timeout=request_timeout,
            rolling=True,
            name="async training",
        )
        self._busy: set[int] = set()
        self._record = RoundRecord(round=self.version + 1)
        self._aggregator: Aggregator | None = None
        self._contributors: list[int] = []
        self._arrivals: list[float] = []
        self._failures_in_row = 0
        self._window: TimerHandle | None = None
        self._window_overdue = False
        self._stopped = False
        self._wait: object = None  # the watchdog's token for this version's wait
        train_type = strategy.train_message_type
        self.start_sends = (train_type, FINISH)
        self.register_request_types([train_type], (train_type, FINISH))

    # -- schedule -------------------------------------------------------------------------------
    def begin_training(self) -> None:
        """Start the first version's buffer and window, and keep ``concurrency`` clients busy."""
        if self.stopped_by_strategy(self.version + 1):
            return
        self._open_buffer()
        self._refill()

    def on_client_added(self, node_id: int) -> None:
        """A client joined while training runs: give it work if a slot is free."""
        if self._started and not self._stopped:
            self._refill()

    def _open_buffer(self) -> None:
        self._record = RoundRecord(round=self.version + 1)
        self._aggregator = self.strategy.start_aggregation(self.version + 1, self.arrays)
        self._contributors, self._arrivals = [], []
        if self.trigger == "time":
            assert self.period is not None
            self._window_overdue = False
            self._window = self.call_later(self.period, self._on_window_end)
        else:  # a time window is followed once it is overdue: before, waiting is the rule
            self._wait = self.watchdog.watch(f"model version {self.version + 1}", self._waiting)

    def _refill(self) -> None:
        """Send the current model to idle clients until ``concurrency`` are busy."""
        node_ids = self.sample_excluding(self.concurrency - len(self._busy), self._busy)
        if not node_ids:
            if not self._requests and self.num_clients == 0 and not self._stopped:
                self.stop_run(
                    f"version {self.version}: no client is left to train{self.departed_note()}"
                )
            return
        version = self.version
        config = ConfigRecord(
            {**self.train_config, "server_round": version + 1, MODEL_VERSION: version}
        )
        contents = self.strategy.configure_train(version + 1, self.arrays, config, node_ids)
        message_type = self.strategy.train_message_type
        for node_id in node_ids:
            content = contents if isinstance(contents, RecordDict) else contents[node_id]
            message = Message(content, node_id, message_type, group_id=str(version))
            message_id = self._group.send(message)
            self._requests[message_id] = _Request(node_id, version, self.arrays)
            self._busy.add(node_id)
            self.note_participant(node_id)
            self._record.clients_sampled += 1

    # -- replies --------------------------------------------------------------------------------
    def _on_update(self, node_id: int, message: Message) -> None:
        """A client's update: discount it, buffer it, maybe aggregate (raising refuses it)."""
        request = self._take_request(message.metadata.reply_to_message_id)
        if request is None or self._stopped:
            self._record.late_replies += 1
            return
        staleness = self.version - request.version
        weight = self.staleness.weight(staleness)
        if weight is None:
            self._record.stale_dropped += 1
            self._failed(counted=False)
            return
        try:
            self._buffer(request, message.content, weight)
        except FedbusError:
            self._failed()
            raise  # the group logs the refusal with the node id
        self._failures_in_row = 0
        self._record.staleness[staleness] = self._record.staleness.get(staleness, 0) + 1
        if self._trigger_fired():
            self._aggregate()
        elif self.broadcast == "after_receiving":
            self._refill()

    def _on_request_failed(self, node_id: int, message_id: str, reason: str) -> None:
        """An error reply or a timeout (the group logged it): free the slot."""
        request = self._take_request(message_id)
        if request is not None and not self._stopped:
            self._failed()

    def _take_request(self, message_id: str) -> _Request | None:
        """Forget a request (answered or given up); None if it was not in flight."""
        request = self._requests.pop(message_id, None)
        if request is not None:
            self._busy.discard(request.node_id)
        return request

    def _buffer(self, request: _Request, content: RecordDict, weight: float) -> None:
        base = request.base
        assert base is not None  # only requests older than the tolerance lose their base
        update = read_arrays(content)
        moved = self.strategy.stale_update(self.arrays, base, update, weight)
        if moved is not update:
            content = RecordDict({**content, ARRAYS: moved})
        assert self._aggregator is not None
        self.accept_update(self._aggregator, request.node_id, content)
        self._contributors.append(request.node_id)
        self._arrivals.append(now())

    def _failed(self, *, counted: bool = True) -> None:
        """A request gave nothing to aggregate: free its slot, or stop if nothing works."""
        if counted:
            self._record.clients_failed += 1
        self._failures_in_row += 1
        if self._failures_in_row >= self.max_failures:
            self.stop_run(
                f"version {self.version}: {self._failures_in_row} requests in a row failed, "
                f"timed out or were too stale (max_failures={self.max_failures}); check the "
                "clients, or raise request_timeout or staleness_tolerance"
            )
            return
        self._refill()

    def _trigger_fired(self) -> bool:
        if self.trigger == "goal":
            return len(self._contributors) >= self.goal
        return self._window_overdue

    def _on_window_end(self) -> None:
        self._window = None
        if self._stopped:
            return
        if self._contributors:
            self._aggregate()
        else:  # extended: the next update closes the window, no timer spins meanwhile
            self._window_overdue = True
            self._wait = self.watchdog.watch(f"model version {self.version + 1}", self._waiting)

    def _waiting(self) -> WaitingFor:
        """What this version waits for, and the clients training (for the watchdog)."""
        training = [request.node_id for request in self._requests.values()]
        if self.trigger == "goal":
            done = len(self._contributors)
            what = f"for {self.goal - done} more of its goal of {self.goal} updates"
            return WaitingFor(what, training, done, self.goal)
        what = f"for an update to close its {self.period:g} s window, which has passed"
        return WaitingFor(what, training)

    # -- aggregation ----------------------------------------------------------------------------
    def _aggregate(self) -> None:
        assert self._aggregator is not None
        if self._window is not None:
            self._window.cancel()
            self._window = None
        self.watchdog.release(self._wait)
        self.arrays, train_metrics = self._aggregator.result()
        record = self._record
        record.clients_replied = len(self._contributors)
        record.straggler_wait = mean_wait(self._arrivals, now())
        self.record_aggregation(record, self._contributors, train_metrics)
        self.version += 1
        # updates older than the tolerance are dropped on arrival: their base models can go
        oldest = self.version - self.staleness.tolerance
        for request in self._requests.values():
            if request.version < oldest:
                request.base = None
        if not self.end_round(record):
            return
        if self.stopped_by_strategy(self.version + 1):
            return
        self._open_buffer()
        self._refill()

    def stop_run(self, failure: str | None) -> None:
        """Cancel every timer, then tell the clients to finish and stop."""
        self._stopped = True
        if self._window is not None:
            self._window.cancel()
        self._group.close()
        super().stop_run(failure)
