"""``Server``: the standard synchronous FL flow as event-driven round logic, written once.

A round is a *phase* of requests (``train``, then optionally ``evaluate``) sent to sampled
clients as one ``RequestGroup``; it advances when the group closes, never by a blocking loop:

- every sampled client answered (a reply or an error reply), or
- ``clients_per_round`` replies arrived when more were sampled (``over_selection``), or
- ``round_timeout`` passed (simulated seconds in simulation, wall seconds in deployment).

A train phase that closes with at least ``min_replies`` replies is aggregated by the strategy;
with fewer, it is retried with a fresh sample up to ``max_round_retries`` times, after which
the run stops with ``failure`` set. Replies to an earlier phase are counted as late and dropped;
a reply from any node but the one its request went to is refused and counted.
Asynchronous training (aggregating after K updates or every T seconds) is ``AsyncServer``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Unpack

import numpy as np

from fedbus.errors import InvalidArgumentError
from fedbus.fl.callbacks import EvaluateFn
from fedbus.fl.protocol import CONFIG, EVALUATE, FINISH, TRAIN
from fedbus.fl.record import RoundRecord
from fedbus.fl.requests import RequestGroup
from fedbus.fl.server_base import ServerBase, mean_wait
from fedbus.fl.settings import SharedOptions, TrainingSettings, settings_from_options
from fedbus.fl.stragglers import Stragglers
from fedbus.fl.strategy.base import Aggregator, Strategy
from fedbus.message import ArrayRecord, ConfigRecord, Message, RecordDict, now
from fedbus.worker import SERVER_NODE_ID

__all__ = ["EvaluateFn", "RoundRecord", "Server"]

logger = logging.getLogger("fedbus.server")


@dataclass(slots=True)
class _Phase:
    """One phase of a round: what its replies feed (aggregator or evaluation replies)."""

    kind: str
    server_round: int
    attempt: int
    aggregator: Aggregator | None = None
    replies: list[tuple[int, RecordDict]] = field(default_factory=list)
    contributors: list[int] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)


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
        Replies a round needs to be aggregated; fewer (clients failed, departed, timed out or
        sent an update that was refused) retry the round. Default: half of
        ``clients_per_round``, rounded up, or the fewest the strategy works with if more.
    round_timeout
        Seconds after which a phase closes with the replies it has (default: wait for all).
    max_round_retries
        Fresh samples tried for a round that got fewer than ``min_replies``.
    over_selection
        Sample ``ceil(clients_per_round * (1 + over_selection))`` clients and close the round
        on the first ``clients_per_round`` replies; the stragglers' replies arrive late and are
        dropped (default 0: sample exactly ``clients_per_round``).
    federated_evaluate_every, clients_per_evaluation
        Ask this many clients to evaluate every K rounds (0: never).
    stragglers
        Emulated stragglers (``fedbus.fl.stragglers``): each round, some sampled clients train
        fewer epochs or are not asked at all. ``min_replies`` may not exceed the clients left
        when they are dropped.
    settings
        What every server shares (``TrainingSettings``: train_config, min_clients, seed,
        first_round, sampler_state, callbacks); or give those as keywords (``SharedOptions``).
        ``min_clients`` defaults to ``clients_per_round``.
    evaluate_fn, evaluate_every
        Keywords for ``callbacks=[CentralEvaluation(evaluate_fn, every=evaluate_every)]``:
        central evaluation of the global model every K rounds and after the last one (0: only
        after the last one).
    on_round_end
        Keyword for ``RoundEndFunction(on_round_end)``, run after the other callbacks: called
        with each ``RoundRecord``.
    """

    start_sends = (TRAIN, EVALUATE, FINISH)

    def __init__(
        self,
        strategy: Strategy,
        initial_arrays: ArrayRecord | Mapping[str, np.ndarray[Any, Any]],
        *,
        clients_per_round: int,
        min_replies: int | None = None,
        round_timeout: float | None = None,
        max_round_retries: int = 2,
        over_selection: float = 0.0,
        federated_evaluate_every: int = 0,
        clients_per_evaluation: int | None = None,
        stragglers: Stragglers | None = None,
        settings: TrainingSettings | None = None,
        node_id: int = SERVER_NODE_ID,
        **shared: Unpack[SharedOptions],
    ) -> None:
        settings = settings_from_options(type(self).__name__, settings, shared)
        super().__init__(strategy, initial_arrays, settings, node_id=node_id)
        require = self.require
        require(clients_per_round >= 1, "clients_per_round", ">= 1", clients_per_round)
        most_replies, most_text = clients_per_round, "in 1..clients_per_round"
        if stragglers is not None and stragglers.drop:
            most_replies = stragglers.active(clients_per_round)
            most_text = f"in 1..{most_replies} (clients_per_round less the dropped stragglers)"
        if min_replies is None:
            min_replies = min(default_min_replies(strategy, clients_per_round), most_replies)
        require(1 <= min_replies <= most_replies, "min_replies", most_text, min_replies)
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
        if settings.min_clients is None:
            self.min_clients = clients_per_round
        self.clients_per_round = clients_per_round
        self.min_replies = min_replies
        self.round_timeout = round_timeout
        self.max_round_retries = max_round_retries
        self.over_selection = over_selection
        self.federated_evaluate_every = federated_evaluate_every
        self.clients_per_evaluation = clients_per_evaluation or clients_per_round
        self.stragglers = stragglers
        self._message_types = {
            TRAIN: strategy.train_message_type,
            EVALUATE: strategy.evaluate_message_type,
        }
        sends = (strategy.train_message_type, strategy.evaluate_message_type, FINISH)
        self.start_sends = sends
        self.register_request_types(self._message_types.values(), sends)

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
        if self.stragglers is not None:
            node_ids, contents = self._straggle(server_round, attempt, node_ids, contents)
        aggregator = self.strategy.start_aggregation(server_round, self.arrays)
        self._open_phase(TRAIN, server_round, attempt, node_ids, contents, aggregator)

    def _straggle(
        self,
        server_round: int,
        attempt: int,
        node_ids: Sequence[int],
        contents: RecordDict | Mapping[int, RecordDict],
    ) -> tuple[list[int], dict[int, RecordDict]]:
        """Drop this round's stragglers, or lower the epochs of their requests."""
        assert self.stragglers is not None
        epochs = int(self.train_config.get("epochs", 1))
        slow = self.stragglers.assign(server_round, attempt, node_ids, epochs)
        kept = [node for node in node_ids if slow.get(node, -1) != 0]
        each: dict[int, RecordDict] = {}
        for node in kept:
            content = contents if isinstance(contents, RecordDict) else contents[node]
            if node in slow:
                config = content.get(CONFIG)
                assert isinstance(config, ConfigRecord)
                content = RecordDict(
                    {**content, CONFIG: ConfigRecord({**config, "epochs": slow[node]})}
                )
            each[node] = content
        if slow:
            logger.debug("round %d: stragglers %s", server_round, slow)
        return kept, each

    def _open_phase(
        self,
        kind: str,
        server_round: int,
        attempt: int,
        node_ids: Sequence[int],
        contents: RecordDict | Mapping[int, RecordDict],
        aggregator: Aggregator | None = None,
    ) -> None:
        phase = _Phase(kind, server_round, attempt, aggregator)
        group = RequestGroup(
            self,
            on_reply=partial(self._on_reply, phase),
            on_close=partial(self._close_phase, phase),
            # over-selected: the first clients_per_round replies close the round
            enough=self.clients_per_round if kind == TRAIN else None,
            deadline=self.round_timeout,
            name=f"round {server_round} {kind}",
            watchdog=self.watchdog,
        )
        message_type = self._message_types[kind]
        messages = []
        for node_id in node_ids:
            content = contents if isinstance(contents, RecordDict) else contents[node_id]
            messages.append(Message(content, node_id, message_type, group_id=str(server_round)))
            self.note_participant(node_id)
        group.send_all(messages)

    def _on_reply(self, phase: _Phase, node_id: int, reply: Message) -> None:
        if phase.aggregator is None:
            phase.replies.append((node_id, reply.content))
            return
        self.accept_update(phase.aggregator, node_id, reply.content)
        phase.contributors.append(node_id)
        phase.arrivals.append(now())

    def _close_phase(self, phase: _Phase, group: RequestGroup) -> None:
        if self.failure is not None or self.finished:
            return
        if phase.kind == EVALUATE:
            metrics = self.strategy.aggregate_evaluate(phase.server_round, phase.replies)
            self._end_round(phase.server_round, metrics)
        elif group.replied >= self.min_replies:
            self._finish_train(phase, group)
        elif phase.attempt < self.max_round_retries and self.num_clients > 0:
            self._record.retries += 1
            self._start_round(phase.server_round, phase.attempt + 1)
        else:
            self.stop_run(
                f"round {phase.server_round}: {group.replied} of {group.sent} sampled clients "
                f"replied, fewer than min_replies={self.min_replies}, after "
                f"{phase.attempt + 1} attempts{self.departed_note()}; lower min_replies or "
                "raise round_timeout"
            )

    def _finish_train(self, phase: _Phase, group: RequestGroup) -> None:
        assert phase.aggregator is not None
        self.arrays, train_metrics = phase.aggregator.result()
        server_round = phase.server_round
        record = self._record
        record.clients_sampled, record.clients_replied = group.sent, group.replied
        record.clients_failed = group.failed
        record.straggler_wait = mean_wait(phase.arrivals, now())
        if phase.contributors:
            record.staleness = {0: len(phase.contributors)}
        self.record_aggregation(record, phase.contributors, train_metrics)
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
        if self.end_round(record):
            self._start_round(server_round + 1)


def default_min_replies(strategy: Strategy, clients_per_round: int) -> int:
    """Half the round, rounded up, or the fewest replies ``strategy`` works with if more.

    A round goes on when some clients fail (an error, a departure, a refused update) rather
    than stopping the run at the first bad client.
    """
    for size in range(math.ceil(clients_per_round / 2), clients_per_round):
        try:
            strategy.check_round_size(size)
        except InvalidArgumentError:
            continue
        return size
    return clients_per_round
