"""``Server``: the standard synchronous FL flow as event-driven round logic, written once.

A round is a *phase* of requests (``train``, then optionally ``evaluate``) sent to sampled
clients; it advances when a condition holds, never by a blocking loop:

- every sampled client answered (a reply or an error reply), or
- ``clients_per_round`` replies arrived when more were sampled (``over_selection``), or
- ``round_timeout`` passed (simulated seconds in simulation, wall seconds in deployment).

A train phase that closes with at least ``min_replies`` replies is aggregated by the strategy;
with fewer, it is retried with a fresh sample up to ``max_round_retries`` times, after which
the run stops with ``failure`` set. Replies to an earlier phase are counted as late and dropped.
Asynchronous training (aggregating after K updates or every T seconds) is ``AsyncServer``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedbus.errors import FedbusError, InvalidArgumentError
from fedbus.fl.protocol import EVALUATE, FINISH, TRAIN
from fedbus.fl.server_base import EvaluateFn, RoundRecord, ServerBase, mean_wait
from fedbus.fl.strategy.base import Aggregator, Strategy
from fedbus.message import ArrayRecord, ConfigRecord, Message, RecordDict, now
from fedbus.worker import SERVER_NODE_ID, TimerHandle

__all__ = ["EvaluateFn", "RoundRecord", "Server"]

logger = logging.getLogger("fedbus.server")


@dataclass(slots=True)
class _Phase:
    kind: str
    server_round: int
    attempt: int
    pending: dict[str, int]  # message_id -> node id
    sampled: int
    aggregator: Aggregator | None = None
    replies: list[tuple[int, RecordDict]] = field(default_factory=list)
    contributors: list[int] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    failed: int = 0
    timer: TimerHandle | None = None

    @property
    def replied(self) -> int:
        return self.sampled - len(self.pending) - self.failed


class Server(ServerBase):
    """The FL server: samples clients, sends them work, aggregates, evaluates, repeats.

    Parameters
    ----------
    strategy
        Configures rounds and aggregates replies (e.g. ``FedAvg()``). The server registers
        handlers for the strategy's message types when it is built: to change the strategy,
        build a new server.
    initial_arrays
        The initial global model.
    num_rounds, clients_per_round
        How many rounds, and how many clients each samples.
    min_replies
        Replies a round needs to be aggregated when it closes by timeout (default: all).
    round_timeout
        Seconds after which a phase closes with the replies it has (default: wait for all).
    max_round_retries
        Fresh samples tried for a round that got fewer than ``min_replies``.
    over_selection
        Sample ``ceil(clients_per_round * (1 + over_selection))`` clients and close the round
        on the first ``clients_per_round`` replies; the stragglers' replies arrive late and are
        dropped (default 0: sample exactly ``clients_per_round``).
    train_config
        Settings sent to clients with each ``train`` request (e.g. lr, epochs, batch_size).
    evaluate_fn
        Central evaluation of the global model on held-out data.
    evaluate_every
        Run ``evaluate_fn`` every K rounds (0: only after the last round).
    federated_evaluate_every, clients_per_evaluation
        Ask this many clients to evaluate every K rounds (0: never).
    min_clients
        Clients that must be known before round 1 starts (default: ``clients_per_round``).
    seed
        Seed of client sampling.
    first_round, sampler_state
        Continue a run: start at ``first_round`` (rounds keep their numbers), sampling from
        ``sampler_state`` (what ``sampler_state()`` returned after round ``first_round - 1``).
    on_round_end
        Called with each ``RoundRecord``.
    """

    start_sends = (TRAIN, EVALUATE, FINISH)

    def __init__(
        self,
        strategy: Strategy,
        initial_arrays: ArrayRecord | Mapping[str, np.ndarray[Any, Any]],
        *,
        num_rounds: int,
        clients_per_round: int,
        min_replies: int | None = None,
        round_timeout: float | None = None,
        max_round_retries: int = 2,
        over_selection: float = 0.0,
        train_config: Mapping[str, Any] | None = None,
        evaluate_fn: EvaluateFn | None = None,
        evaluate_every: int = 1,
        federated_evaluate_every: int = 0,
        clients_per_evaluation: int | None = None,
        min_clients: int | None = None,
        seed: int = 0,
        first_round: int = 1,
        sampler_state: Mapping[str, Any] | None = None,
        on_round_end: Callable[[RoundRecord], None] | None = None,
        node_id: int = SERVER_NODE_ID,
    ) -> None:
        super().__init__(
            strategy,
            initial_arrays,
            num_rounds=num_rounds,
            min_clients=clients_per_round if min_clients is None else min_clients,
            train_config=train_config,
            evaluate_fn=evaluate_fn,
            evaluate_every=evaluate_every,
            seed=seed,
            first_round=first_round,
            sampler_state=sampler_state,
            on_round_end=on_round_end,
            node_id=node_id,
        )
        require = self.require
        require(clients_per_round >= 1, "clients_per_round", ">= 1", clients_per_round)
        min_replies = clients_per_round if min_replies is None else min_replies
        require(
            1 <= min_replies <= clients_per_round,
            "min_replies",
            "in 1..clients_per_round",
            min_replies,
        )
        require(
            round_timeout is None or round_timeout > 0,
            "round_timeout",
            "> 0 or None",
            round_timeout,
        )
        require(max_round_retries >= 0, "max_round_retries", ">= 0", max_round_retries)
        require(
            math.isfinite(over_selection) and over_selection >= 0,
            "over_selection",
            "a finite number >= 0",
            over_selection,
        )
        if strategy.asynchronous:
            raise InvalidArgumentError(
                f"Server: strategy {strategy.name!r} aggregates asynchronously; "
                'run it with AsyncServer (aggregation.trigger = "goal" or "time")'
            )
        strategy.check_round_size(min_replies)
        self.clients_per_round = clients_per_round
        self.min_replies = min_replies
        self.round_timeout = round_timeout
        self.max_round_retries = max_round_retries
        self.over_selection = over_selection
        self.federated_evaluate_every = federated_evaluate_every
        self.clients_per_evaluation = clients_per_evaluation or clients_per_round
        self._phase: _Phase | None = None
        self._record = RoundRecord(round=0)  # the round in progress, filled in as it goes
        self._message_types = {
            TRAIN: strategy.train_message_type,
            EVALUATE: strategy.evaluate_message_type,
        }
        sends = (strategy.train_message_type, strategy.evaluate_message_type, FINISH)
        self.start_sends = sends
        self.register_handlers(strategy.train_message_type, self.on_train_reply, sends=sends)
        self.register_handlers(strategy.evaluate_message_type, self.on_evaluate_reply, sends=sends)

    def begin_training(self) -> None:
        """Start round ``first_round``."""
        self._start_round(self.first_round)

    # -- rounds ---------------------------------------------------------------------------------
    def _start_round(self, server_round: int, attempt: int = 0) -> None:
        if attempt == 0:
            if self.stopped_by_strategy(server_round):
                return
            self._record = RoundRecord(round=server_round)
        node_ids = self.sample(math.ceil(self.clients_per_round * (1 + self.over_selection)))
        config = ConfigRecord({**self.train_config, "server_round": server_round})
        contents = self.strategy.configure_train(server_round, self.arrays, config, node_ids)
        aggregator = self.strategy.start_aggregation(server_round, self.arrays)
        self._open_phase(TRAIN, server_round, attempt, node_ids, contents, aggregator)

    def _open_phase(
        self,
        kind: str,
        server_round: int,
        attempt: int,
        node_ids: Sequence[int],
        contents: RecordDict | Mapping[int, RecordDict],
        aggregator: Aggregator | None = None,
    ) -> None:
        phase = _Phase(kind, server_round, attempt, {}, len(node_ids), aggregator)
        self._phase = phase
        for node_id in node_ids:
            content = contents if isinstance(contents, RecordDict) else contents[node_id]
            message_type = self._message_types[kind]
            message = Message(content, node_id, message_type, group_id=str(server_round))
            self.send(message)
            phase.pending[message.metadata.message_id] = node_id
            self.note_participant(node_id)
        if self.round_timeout is not None:
            phase.timer = self.call_later(self.round_timeout, lambda: self._on_timeout(phase))
        if not phase.pending:
            self._close_phase()

    def on_train_reply(self, message: Message) -> None:
        """A client's reply (or error reply) to ``train``."""
        self._on_reply(TRAIN, message)

    def on_evaluate_reply(self, message: Message) -> None:
        """A client's reply (or error reply) to ``evaluate``."""
        self._on_reply(EVALUATE, message)

    def _on_reply(self, kind: str, message: Message) -> None:
        if not message.metadata.reply_to_message_id and not message.has_error():
            raise InvalidArgumentError(f"the server accepts only replies to {kind!r} requests")
        phase = self._phase
        node_id = (
            None if phase is None else phase.pending.pop(message.metadata.reply_to_message_id, None)
        )
        if phase is None or phase.kind != kind or node_id is None:
            self._record.late_replies += 1
            return
        if message.has_error():
            phase.failed += 1
            logger.info("round %s: node %s failed: %r", phase.server_round, node_id, message.error)
        elif phase.aggregator is not None:
            try:
                phase.aggregator.add(node_id, message.content)
            except FedbusError as exc:
                phase.failed += 1
                logger.warning(
                    "round %s: reply of node %s refused: %s", phase.server_round, node_id, exc
                )
            else:
                phase.contributors.append(node_id)
                phase.arrivals.append(now())
        else:
            phase.replies.append((node_id, message.content))
        # over-selected: the first clients_per_round replies close the round
        enough = kind == TRAIN and phase.replied >= self.clients_per_round
        if not phase.pending or enough:
            self._close_phase()

    def _on_timeout(self, phase: _Phase) -> None:
        if phase is self._phase:
            logger.info("round %s: %s phase timed out", phase.server_round, phase.kind)
            self._close_phase()

    def _close_phase(self) -> None:
        phase = self._phase
        assert phase is not None
        self._phase = None
        if phase.timer is not None:
            phase.timer.cancel()
        if phase.kind == EVALUATE:
            metrics = self.strategy.aggregate_evaluate(phase.server_round, phase.replies)
            self._end_round(phase.server_round, metrics)
        elif phase.replied >= self.min_replies:
            self._finish_train(phase)
        elif phase.attempt < self.max_round_retries:
            self._record.retries += 1
            self._start_round(phase.server_round, phase.attempt + 1)
        else:
            self.stop_run(
                f"round {phase.server_round}: {phase.replied} of {phase.sampled} sampled clients "
                f"replied, fewer than min_replies={self.min_replies}, after "
                f"{phase.attempt + 1} attempts; lower min_replies or raise round_timeout"
            )

    def _finish_train(self, phase: _Phase) -> None:
        assert phase.aggregator is not None
        self.arrays, train_metrics = phase.aggregator.result()
        server_round = phase.server_round
        record = self._record
        record.clients_sampled, record.clients_replied = phase.sampled, phase.replied
        record.clients_failed = phase.failed
        record.straggler_wait = mean_wait(phase.arrivals, now())
        if phase.contributors:
            record.staleness = {0: len(phase.contributors)}
        self.record_aggregation(record, phase.contributors, train_metrics)
        self.evaluate_centrally(record)
        if self.federated_evaluate_every > 0 and self.is_due(
            server_round, self.federated_evaluate_every
        ):
            node_ids = self.sample(self.clients_per_evaluation)
            config = ConfigRecord({**self.train_config, "server_round": server_round})
            contents = self.strategy.configure_evaluate(server_round, self.arrays, config, node_ids)
            self._open_phase(EVALUATE, server_round, 0, node_ids, contents)
        else:
            self._end_round(server_round, {})

    def _end_round(self, server_round: int, federated: dict[str, float]) -> None:
        record = self._record
        record.federated_loss = federated.get("loss")
        record.federated_accuracy = federated.get("accuracy")
        record.federated_metrics = federated
        self.end_round(record)
        if server_round >= self.num_rounds:
            self.stop_run(None)
        else:
            self._start_round(server_round + 1)
