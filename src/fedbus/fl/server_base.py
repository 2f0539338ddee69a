"""What every FL server shares, whatever decides when it aggregates.

``ServerBase`` holds the global model and the strategy, keeps the list of known clients and the
seeded sampler, writes one ``RoundRecord`` per aggregation, runs the callbacks on it (central
evaluation, early stopping, checkpointing: ``fl.callbacks``) and ends the run. The servers built
on it differ only in when they aggregate and whom they send the model:

- ``Server`` (``fl.server``): synchronous rounds, aggregating once the sampled clients answered;
- ``AsyncServer`` (``fl.asynchronous``): aggregating after K updates or every T seconds, with
  stale updates discounted;
- ``SecAggServer`` (``fl.secagg``): synchronous rounds whose updates are only seen summed.

What they share comes in one ``TrainingSettings`` (``fl.settings``).
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np

from fedbus.errors import FedbusError, InvalidArgumentError
from fedbus.fl.callbacks import Callback, CentralEvaluation, EvaluateFn, RoundEndFunction
from fedbus.fl.protocol import FINISH, JOIN, read_arrays
from fedbus.fl.record import RoundRecord
from fedbus.fl.settings import TrainingSettings
from fedbus.fl.strategy.base import Aggregator, Strategy
from fedbus.fl.updates import check_finite
from fedbus.fl.watchdog import WaitingFor, Watchdog
from fedbus.message import ArrayRecord, Message, RecordDict, now
from fedbus.worker import CLIENT_ROLE, TimerHandle, Worker

__all__ = ["EvaluateFn", "RoundRecord", "ServerBase", "TrainingSettings"]

logger = logging.getLogger("fedbus.server")


class ServerBase(Worker):
    """The global model, the known clients, the sampler, the callbacks and the run's end.

    Subclasses start training in ``begin_training`` and call ``record_aggregation`` and
    ``end_round`` as their own schedule dictates; ``end_round`` runs the callbacks and says
    whether to go on. See ``TrainingSettings`` for what ``settings`` holds.
    """

    def __init__(
        self,
        strategy: Strategy,
        initial_arrays: ArrayRecord | Mapping[str, np.ndarray[Any, Any]],
        settings: TrainingSettings,
        *,
        node_id: int,
    ) -> None:
        super().__init__(node_id)
        self.strategy = strategy
        self.arrays = (
            initial_arrays
            if isinstance(initial_arrays, ArrayRecord)
            else ArrayRecord(dict(initial_arrays))
        )
        self.settings = settings
        self.num_rounds = settings.num_rounds
        self.first_round = settings.first_round
        #: Clients that must be known before training starts; a server sets its own default.
        self.min_clients = 1 if settings.min_clients is None else settings.min_clients
        self.train_config = dict(settings.train_config)
        #: Run in order after each aggregation (``fl.callbacks``); append to add one.
        self.callbacks: list[Callback] = list(settings.callbacks)
        self.history: list[RoundRecord] = []
        #: Updates aggregated per client over the run: node id -> count.
        self.participation: dict[int, int] = {}
        self.finished = False
        #: Why the run stopped early, or None.
        self.failure: str | None = None
        #: Why the run ended cleanly before its last round (a privacy budget spent, early
        #: stopping), or None.
        self.stopped_early: str | None = None
        self._stop_request: str | None = None
        self._rng = np.random.default_rng(settings.seed)
        if settings.sampler_state is not None:
            try:
                self._rng.bit_generator.state = dict(settings.sampler_state)
            except (TypeError, ValueError, KeyError) as exc:
                raise InvalidArgumentError(
                    f"{type(self).__name__}: unusable sampler_state: {exc}"
                ) from exc
        self._clients: list[int] = []
        self._known: set[int] = set()
        self._departed: set[int] = set()
        self._participants: set[int] = set()
        self._started = False
        self._record = RoundRecord(round=0)  # the round in progress, filled in as it goes
        #: Warns when the server waits too long (``fl.watchdog``); schedules follow their waits
        #: with it (``RequestGroup(watchdog=...)``, ``watchdog.watch``).
        self.watchdog = Watchdog(self, settings.watchdog)
        self._joining: object = None  # the watchdog's token for the wait for clients
        self.register_handlers(JOIN, self.on_join, senders=[CLIENT_ROLE], replies=False)

    @property
    def on_round_end(self) -> Callable[[RoundRecord], object] | None:
        """The function given as ``on_round_end`` (the first ``RoundEndFunction`` callback).

        Setting it replaces that callback, or appends one: ``server.on_round_end =
        records.append`` still works.
        """
        for callback in self.callbacks:
            if isinstance(callback, RoundEndFunction):
                return callback.function
        return None

    @on_round_end.setter
    def on_round_end(self, function: Callable[[RoundRecord], object] | None) -> None:
        index = next(
            (i for i, c in enumerate(self.callbacks) if isinstance(c, RoundEndFunction)), None
        )
        if index is not None:
            del self.callbacks[index]
        if function is not None:
            self.callbacks.insert(
                len(self.callbacks) if index is None else index, RoundEndFunction(function)
            )

    @property
    def evaluate_fn(self) -> EvaluateFn | None:
        """The function of the first ``CentralEvaluation`` callback, or None."""
        central = self._central_evaluation()
        return None if central is None else central.evaluate_fn

    @property
    def evaluate_every(self) -> int:
        """How often the first ``CentralEvaluation`` callback evaluates (0 when it has none)."""
        central = self._central_evaluation()
        return 0 if central is None else central.every

    def _central_evaluation(self) -> CentralEvaluation | None:
        return next((c for c in self.callbacks if isinstance(c, CentralEvaluation)), None)

    def require(self, condition: bool, name: str, expected: str, value: object) -> None:
        """Raise ``InvalidArgumentError`` naming this server's parameter unless ``condition``."""
        if not condition:
            raise InvalidArgumentError(
                f"{type(self).__name__}: {name} must be {expected}, got {value!r}"
            )

    # -- membership -----------------------------------------------------------------------------
    def register_request_types(self, message_types: Iterable[str], sends: Sequence[str]) -> None:
        """Declare the types this server sends as requests (for the message flow, which the
        runtimes' routing follows): their replies come back through ``RequestGroup``; a request
        of such a type sent *to* the server is refused, and a late reply is counted."""
        for message_type in dict.fromkeys(message_types):
            self.register_handlers(
                message_type, _never_called, sends=sends, senders=(), replies=False
            )

    def on_nodes_registered(self, node_ids: Sequence[int]) -> None:
        """Clients the runtime registered (simulation, or connected over gRPC): available for
        sampling, a departed client again once it is back."""
        # In bulk: a simulation registers every client at once, 100,000 of them at times.
        known = self._known
        back = [node_id for node_id in node_ids if node_id in self._departed]
        for node_id in back:
            self._departed.discard(node_id)
            self._clients.append(node_id)
        new = [node_id for node_id in dict.fromkeys(node_ids) if node_id not in known]
        known.update(new)
        self._clients.extend(new)
        if self._started:
            for node_id in new + back:
                self.on_client_added(node_id)

    def on_nodes_departed(self, node_ids: Sequence[int]) -> None:
        """Clients that left: out of the sampling pool until they are registered again."""
        gone = {node_id for node_id in node_ids if node_id in self._known}
        gone -= self._departed
        if not gone:
            return
        self._departed |= gone
        self._clients = [node_id for node_id in self._clients if node_id not in gone]
        logger.info("clients %s departed; %d left to sample from", sorted(gone), len(self._clients))
        self.on_clients_departed(sorted(gone))

    def on_clients_departed(self, node_ids: Sequence[int]) -> None:
        """Clients left the sampling pool after training started; nothing to do by default."""

    def departed_note(self) -> str:
        """``" (departed: 3, 5)"`` when clients departed, for failure messages; else ``""``."""
        if not self._departed:
            return ""
        return f" (clients departed and not back: {', '.join(map(str, sorted(self._departed)))})"

    def on_join(self, message: Message) -> Message | None:
        """A client asked to join: register it and acknowledge."""
        self._add_client(message.sender)
        self._participants.add(message.sender)  # a joined client is told when the run ends
        self._maybe_start()
        return message.create_reply(RecordDict())

    def _add_client(self, node_id: int) -> None:
        if node_id not in self._known or node_id in self._departed:
            self.on_nodes_registered([node_id])

    # -- what the dispatch refused --------------------------------------------------------------
    def on_late_reply(self, message: Message) -> None:
        """A reply to a request given up (an earlier round or attempt): counted as late."""
        super().on_late_reply(message)
        self._record.late_replies += 1

    def on_refused_reply(self, message: Message, expected_node: int | None) -> None:
        """A reply from another node than the one its request went to, or one that answers
        nothing this server asked: refused and counted in the round's ``refused_replies``."""
        super().on_refused_reply(message, expected_node)
        self._record.refused_replies += 1

    def accept_update(self, aggregator: Aggregator, node_id: int, content: RecordDict) -> None:
        """Give a client's update to ``aggregator`` if it is usable: every array finite.

        Raises ``InvalidArgumentError`` (the request group counts it as that node's failure)
        for a non-finite update, so no rule's model is poisoned by one NaN.
        """
        check_finite(node_id, read_arrays(content))
        aggregator.add(node_id, content)

    def on_client_added(self, node_id: int) -> None:
        """A client became known after training started; nothing to do by default."""

    def on_start(self) -> None:
        """Start training as soon as ``min_clients`` clients are known."""
        self._maybe_start()
        if not self._started:
            self._joining = self.watchdog.watch("the server", self._waiting_for_clients)

    def _maybe_start(self) -> None:
        if not self._started and len(self._clients) >= self.min_clients:
            self._started = True
            self.watchdog.release(self._joining)
            self.begin_training()

    def _waiting_for_clients(self) -> WaitingFor:
        known = len(self._clients)
        return WaitingFor(
            f"for {self.min_clients - known} more clients to join before training starts "
            f"({known} of min_clients={self.min_clients} known)",
            [],
            known,
            self.min_clients,
        )

    # -- events: the watchdog looks before each ---------------------------------------------------
    def deliver(self, message: Message) -> None:
        """Handle ``message`` (runtimes call this); the watchdog looks first, since the message
        may end the wait it follows, and notes that its sender was heard from."""
        watchdog = self.watchdog
        if watchdog.enabled:
            watchdog.check()
            if not message.has_error():
                watchdog.heard(message.metadata.src_node_id)
        super().deliver(message)

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        """Run ``callback`` after ``delay`` seconds of the runtime's clock; the watchdog looks
        first (in the simulation, events are the only moments it can)."""
        if not self.watchdog.enabled:
            return super().call_later(delay, callback)
        return super().call_later(delay, partial(_checked, self.watchdog, callback))

    @abstractmethod
    def begin_training(self) -> None:
        """Enough clients are known: send the first requests."""

    @property
    def num_clients(self) -> int:
        """Clients known to the server."""
        return len(self._clients)

    # -- sampling -------------------------------------------------------------------------------
    def sample(self, count: int) -> list[int]:
        """``count`` distinct known clients (fewer if fewer are known), drawn by the seeded
        sampler."""
        count = min(count, len(self._clients))
        picks = self._rng.choice(len(self._clients), size=count, replace=False)
        return [self._clients[int(index)] for index in picks]

    def sample_excluding(self, count: int, busy: set[int]) -> list[int]:
        """``count`` distinct known clients not in ``busy`` (fewer if fewer are idle).

        Draws by rejection while most clients are idle, so sampling 1 of 100,000 clients does
        not list them all; the draws depend only on the seed and the calls, never on timing.
        """
        idle = len(self._clients) - len((busy & self._known) - self._departed)
        count = min(count, idle)
        if count <= 0:
            return []
        if 2 * len(busy) > len(self._clients):
            candidates = [node for node in self._clients if node not in busy]
            picks = self._rng.choice(len(candidates), size=count, replace=False)
            return [candidates[int(index)] for index in picks]
        chosen: list[int] = []
        taken = set(busy)
        while len(chosen) < count:
            node = self._clients[int(self._rng.integers(len(self._clients)))]
            if node not in taken:
                taken.add(node)
                chosen.append(node)
        return chosen

    def sampler_state(self) -> dict[str, Any]:
        """The client sampler's state (JSON-serialisable), to continue a run exactly later."""
        return dict(self._rng.bit_generator.state)

    def note_participant(self, node_id: int) -> None:
        """``node_id`` was sent work: it is told to finish when the run ends."""
        self._participants.add(node_id)

    def progress_state(self) -> dict[str, Any]:
        """What the run has done so far beyond the model, sampler and strategy (JSON data): who
        contributed how often, who was sent work, and each callback's state, so that a resumed
        run reports and stops as the uninterrupted one would (``load_progress_state``)."""
        return {
            "participation": {str(node): count for node, count in self.participation.items()},
            "participants": sorted(self._participants),
            "callbacks": [
                [type(callback).__name__, callback.state()] for callback in self.callbacks
            ],
        }

    def load_progress_state(self, state: Mapping[str, Any]) -> None:
        """Restore what ``progress_state`` returned, into a server built with the same callbacks.

        Raises ``InvalidArgumentError`` when it does not fit this server.
        """
        try:
            participation = {int(node): int(n) for node, n in state["participation"].items()}
            participants = {int(node) for node in state["participants"]}
            saved = [(str(name), dict(data)) for name, data in state["callbacks"]]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InvalidArgumentError(f"unusable server progress: {exc!r}") from exc
        names = [type(callback).__name__ for callback in self.callbacks]
        if [name for name, _ in saved] != names:
            raise InvalidArgumentError(
                f"the saved callbacks {[name for name, _ in saved]} are not this server's {names}"
            )
        for callback, (_, data) in zip(self.callbacks, saved, strict=True):
            callback.load_state(data)
        self.participation = participation
        self._participants = participants

    # -- rounds ---------------------------------------------------------------------------------
    def record_aggregation(
        self, record: RoundRecord, contributors: Sequence[int], train_metrics: dict[str, float]
    ) -> None:
        """Fill ``record`` with an aggregation's train metrics and count who contributed."""
        record.train_metrics, record.train_loss = train_metrics, train_metrics.get("train_loss")
        record.strategy_metrics = self.strategy.report(record.round)
        for node_id in contributors:
            self.participation[node_id] = self.participation.get(node_id, 0) + 1

    def is_due(self, server_round: int, every: int) -> bool:
        """True in the last round and every ``every`` rounds (never when ``every`` is 0)."""
        return server_round == self.num_rounds or (every > 0 and server_round % every == 0)

    def end_round(self, record: RoundRecord) -> bool:
        """Stamp ``record`` with the clock, keep it, run the callbacks on it in order, and say
        whether the run goes on.

        Returns False when the run has ended: after the last round, when a callback asked to
        stop (``request_stop``: ``stopped_early`` says why) or when one raised (``failure``
        names it); the clients were then told to finish. The schedule starts the next round
        only on True.
        """
        record.time = now()
        self.history.append(record)
        for callback in self.callbacks:
            try:
                callback.on_round_end(self, record)
            except Exception as exc:
                logger.error("callback %r raised in round %s", callback, record.round, exc_info=exc)
                self.stop_run(
                    f"round {record.round}: callback {callback!r} raised "
                    f"{type(exc).__name__}: {exc}"
                )
                return False
        if record.round >= self.num_rounds:
            self.stop_run(None)
            return False
        if self._stop_request is not None:
            logger.info("the run ends after round %s: %s", record.round, self._stop_request)
            self.stopped_early = self._stop_request
            self.stop_run(None)
            return False
        return True

    def request_stop(self, reason: str) -> None:
        """End the run cleanly once the round in progress has ended (a callback calls it:
        ``EarlyStopping``); ``stopped_early`` becomes ``reason`` unless it was the last round."""
        if self._stop_request is None:
            self._stop_request = reason

    def stopped_by_strategy(self, server_round: int) -> bool:
        """End the run cleanly if the strategy says ``server_round`` must not run."""
        reason = self.strategy.stop_reason(server_round)
        if reason is None:
            return False
        logger.info("the run ends before round %s: %s", server_round, reason)
        self.stopped_early = reason
        self.stop_run(None)
        return True

    def _raised(self, message: Message, exc: Exception) -> None:
        """The server's own code (its strategy, a callback, a handler) raised while handling
        ``message``. A ``FedbusError`` is about the message (bad input from its sender) and is
        answered as any worker answers it; anything else is a bug that no later round can
        mend: the run stops, with the traceback in the log and ``failure`` naming it."""
        if isinstance(exc, FedbusError) or self.failure is not None or self.finished:
            super()._raised(message, exc)
            return
        logger.error(
            "the server raised while handling %r: a bug in the strategy, a callback or the "
            "server's code",
            message,
            exc_info=exc,
        )
        detail = f": {exc}" if str(exc) else ""
        self.stop_run(
            f"{type(exc).__name__}{detail} while handling {message.metadata.message_type!r} "
            f"from node {message.sender} (the traceback is in the log)"
        )

    def stop_run(self, failure: str | None) -> None:
        """Tell every client that took part to finish, run the callbacks' ``on_run_end``,
        then stop."""
        self.failure = failure
        self.watchdog.stop()
        if failure is not None:
            logger.error("the run stops: %s", failure)
        for node_id in sorted(self._participants):
            self.send(Message(RecordDict(), node_id, FINISH))
        self.finished = failure is None
        for callback in self.callbacks:
            try:
                callback.on_run_end(self)
            except Exception as exc:
                logger.error("callback %r raised at the run's end", callback, exc_info=exc)
                if self.failure is None:
                    self.failure = (
                        f"callback {callback!r} raised {type(exc).__name__}: {exc} at the run's end"
                    )
                    self.finished = False
        self.stop()


def _checked(watchdog: Watchdog, callback: Callable[[], None]) -> None:
    watchdog.check()
    callback()


def _never_called(message: Message) -> None:  # pragma: no cover - refused by dispatch
    raise InvalidArgumentError(f"the server does not accept {message.msg_type!r} requests")


def mean_wait(arrivals: Sequence[float], until: float) -> float:
    """The mean of ``until - arrival`` over ``arrivals`` (0 when there are none)."""
    return sum(until - arrival for arrival in arrivals) / len(arrivals) if arrivals else 0.0
