"""What every FL server shares, whatever decides when it aggregates.

``ServerBase`` holds the global model and the strategy, keeps the list of known clients and the
seeded sampler, evaluates centrally, writes one ``RoundRecord`` per aggregation and ends the run.
The two servers built on it differ only in when they aggregate and whom they send the model:

- ``Server`` (``fl.server``): synchronous rounds, aggregating once the sampled clients answered;
- ``AsyncServer`` (``fl.asynchronous``): aggregating after K updates or every T seconds, with
  stale updates discounted.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedbus.errors import InvalidArgumentError
from fedbus.fl.protocol import FINISH, JOIN, read_arrays
from fedbus.fl.strategy.base import Aggregator, Strategy
from fedbus.message import ArrayRecord, Message, RecordDict, now
from fedbus.worker import CLIENT_ROLE, Worker

__all__ = ["EvaluateFn", "RoundRecord", "ServerBase"]

logger = logging.getLogger("fedbus.server")

#: Central evaluation: the global arrays -> (loss, metrics such as {"accuracy": ...}).
EvaluateFn = Callable[[dict[str, np.ndarray[Any, Any]]], tuple[float, dict[str, float]]]


@dataclass(slots=True)
class RoundRecord:
    """What happened in one round, i.e. one aggregation (one line of ``metrics.jsonl``).

    ``time`` is the runtime's clock when the round ended: simulated seconds in simulation.
    Test metrics come from central evaluation, federated ones from the clients; ``None`` when
    that evaluation did not run this round. ``late_replies`` counts replies to earlier rounds
    (or earlier attempts of this one) that arrived while this round ran, and were dropped;
    ``refused_replies`` replies that answered a request sent to another node (an impostor), and
    were refused.

    ``straggler_wait`` is the mean time, in the runtime's seconds, that the updates aggregated
    this round waited at the server between their arrival and the aggregation: in a synchronous
    round, the time the fast clients' work sat idle until the slowest answered. ``staleness``
    counts the aggregated updates by how many model versions old they were (all 0 in a
    synchronous run), and ``stale_dropped`` the updates older than the tolerance.
    ``strategy_metrics`` is what the strategy reported for the round (``Strategy.report``:
    differential privacy's epsilon).
    """

    round: int
    time: float = 0.0
    train_loss: float | None = None
    test_loss: float | None = None
    test_accuracy: float | None = None
    federated_loss: float | None = None
    federated_accuracy: float | None = None
    clients_sampled: int = 0
    clients_replied: int = 0
    clients_failed: int = 0
    late_replies: int = 0
    refused_replies: int = 0
    retries: int = 0
    straggler_wait: float = 0.0
    stale_dropped: int = 0
    staleness: dict[int, int] = field(default_factory=dict)
    strategy_metrics: dict[str, float] = field(default_factory=dict)
    train_metrics: dict[str, float] = field(default_factory=dict)
    federated_metrics: dict[str, float] = field(default_factory=dict)


class ServerBase(Worker):
    """The global model, the known clients, the sampler, central evaluation and the run's end.

    Subclasses start training in ``begin_training`` and call ``evaluate_centrally``,
    ``record_aggregation``, ``end_round`` and ``stop_run`` as their own schedule dictates. See
    ``Server`` for the parameters they share.
    """

    def __init__(
        self,
        strategy: Strategy,
        initial_arrays: ArrayRecord | Mapping[str, np.ndarray[Any, Any]],
        *,
        num_rounds: int,
        min_clients: int,
        train_config: Mapping[str, Any] | None,
        evaluate_fn: EvaluateFn | None,
        evaluate_every: int,
        seed: int,
        first_round: int,
        sampler_state: Mapping[str, Any] | None,
        on_round_end: Callable[[RoundRecord], None] | None,
        node_id: int,
    ) -> None:
        super().__init__(node_id)
        self.require(num_rounds >= 1, "num_rounds", ">= 1", num_rounds)
        self.require(1 <= first_round <= num_rounds, "first_round", "in 1..num_rounds", first_round)
        self.require(evaluate_every >= 0, "evaluate_every", ">= 0", evaluate_every)
        self.strategy = strategy
        self.arrays = (
            initial_arrays
            if isinstance(initial_arrays, ArrayRecord)
            else ArrayRecord(dict(initial_arrays))
        )
        self.num_rounds = num_rounds
        self.first_round = first_round
        self.min_clients = min_clients
        self.train_config = dict(train_config or {})
        self.evaluate_fn = evaluate_fn
        self.evaluate_every = evaluate_every
        self.on_round_end = on_round_end
        self.history: list[RoundRecord] = []
        #: Updates aggregated per client over the run: node id -> count.
        self.participation: dict[int, int] = {}
        self.finished = False
        #: Why the run stopped early, or None.
        self.failure: str | None = None
        #: Why the strategy ended a run before its last round (a privacy budget), or None.
        self.stopped_early: str | None = None
        self._rng = np.random.default_rng(seed)
        if sampler_state is not None:
            try:
                self._rng.bit_generator.state = dict(sampler_state)
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
        self.register_handlers(JOIN, self.on_join, senders=[CLIENT_ROLE], replies=False)

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
        check_finite(node_id, content)
        aggregator.add(node_id, content)

    def on_client_added(self, node_id: int) -> None:
        """A client became known after training started; nothing to do by default."""

    def on_start(self) -> None:
        """Start training as soon as ``min_clients`` clients are known."""
        self._maybe_start()

    def _maybe_start(self) -> None:
        if not self._started and len(self._clients) >= self.min_clients:
            self._started = True
            self.begin_training()

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

    # -- rounds ---------------------------------------------------------------------------------
    def record_aggregation(
        self, record: RoundRecord, contributors: Sequence[int], train_metrics: dict[str, float]
    ) -> None:
        """Fill ``record`` with an aggregation's train metrics and count who contributed."""
        record.train_metrics, record.train_loss = train_metrics, train_metrics.get("train_loss")
        record.strategy_metrics = self.strategy.report(record.round)
        for node_id in contributors:
            self.participation[node_id] = self.participation.get(node_id, 0) + 1

    def evaluate_centrally(self, record: RoundRecord) -> None:
        """Evaluate the global model into ``record`` if ``evaluate_every`` says so this round."""
        if self.is_due(record.round, self.evaluate_every) and self.evaluate_fn is not None:
            loss, metrics = self.evaluate_fn(self.arrays.to_numpy_dict())
            record.test_loss, record.test_accuracy = float(loss), metrics.get("accuracy")

    def is_due(self, server_round: int, every: int) -> bool:
        """True in the last round and every ``every`` rounds (never when ``every`` is 0)."""
        return server_round == self.num_rounds or (every > 0 and server_round % every == 0)

    def end_round(self, record: RoundRecord) -> None:
        """Stamp ``record`` with the clock, keep it and hand it to ``on_round_end``."""
        record.time = now()
        self.history.append(record)
        if self.on_round_end is not None:
            self.on_round_end(record)

    def stopped_by_strategy(self, server_round: int) -> bool:
        """End the run cleanly if the strategy says ``server_round`` must not run."""
        reason = self.strategy.stop_reason(server_round)
        if reason is None:
            return False
        logger.info("the run ends before round %s: %s", server_round, reason)
        self.stopped_early = reason
        self.stop_run(None)
        return True

    def stop_run(self, failure: str | None) -> None:
        """Tell every client that took part to finish, then stop."""
        self.failure = failure
        if failure is not None:
            logger.error("the run stops: %s", failure)
        for node_id in sorted(self._participants):
            self.send(Message(RecordDict(), node_id, FINISH))
        self.finished = failure is None
        self.stop()


def _never_called(message: Message) -> None:  # pragma: no cover - refused by dispatch
    raise InvalidArgumentError(f"the server does not accept {message.msg_type!r} requests")


def check_finite(node_id: int, content: RecordDict) -> None:
    """Raise ``InvalidArgumentError`` unless every array of the update in ``content`` is
    finite (integer arrays always are)."""
    for name, array in read_arrays(content).to_numpy_dict().items():
        if array.dtype.kind in "fc" and not np.isfinite(array).all():
            bad = int(array.size - np.count_nonzero(np.isfinite(array)))
            raise InvalidArgumentError(
                f"the update of node {node_id} has {bad} non-finite values in {name!r}"
            )


def mean_wait(arrivals: Sequence[float], until: float) -> float:
    """The mean of ``until - arrival`` over ``arrivals`` (0 when there are none)."""
    return sum(until - arrival for arrival in arrivals) / len(arrivals) if arrivals else 0.0
