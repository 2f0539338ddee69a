"""A two-stage protocol on ``RequestGroup``: power-of-choice client selection.

Each round has two stages (Cho et al., 2020, "Client selection in federated learning"):

1. *probe*: ``candidates`` sampled clients evaluate the global model on their own data and
   report their loss (the standard ``evaluate`` request);
2. *train*: the ``clients_per_round`` candidates with the highest loss train (``train``), and
   the strategy aggregates their updates.

Each stage is one ``RequestGroup``: it accepts a reply only from the node its request went to,
closes when every request is answered (or at ``stage_timeout``), and its ``on_close`` opens the
next stage. The clients are fedbus's standard ``Client``. Run: python examples/power_of_choice.py
"""

from __future__ import annotations

import argparse

from fedbus import Message
from fedbus.data import PartitionedDataset, load_digits
from fedbus.fl import (
    CentralEvaluation,
    Client,
    FedAvg,
    RequestGroup,
    RoundRecord,
    ServerBase,
    Strategy,
    TrainingSettings,
)
from fedbus.fl.protocol import EVALUATE, FINISH, TRAIN, model_content, read_metrics
from fedbus.message import ArrayRecord, ConfigRecord
from fedbus.runtime.simulation import simulate
from fedbus.train import NumpyTrainer, SoftmaxRegression
from fedbus.train.base import Arrays


class PowerOfChoiceServer(ServerBase):
    """Probes ``candidates`` clients' losses, then trains the ``clients_per_round`` worst."""

    start_sends = (EVALUATE, TRAIN, FINISH)

    def __init__(self, strategy: Strategy, arrays: ArrayRecord, settings: TrainingSettings, *,
                 candidates: int, clients_per_round: int,
                 stage_timeout: float | None = None) -> None:  # fmt: skip
        super().__init__(strategy, arrays, settings, node_id=0)
        if settings.min_clients is None:
            self.min_clients = candidates  # round 1 can probe as many as it asks
        self.candidates, self.clients_per_round = candidates, clients_per_round
        self.stage_timeout = stage_timeout
        self.probed: list[dict[int, float]] = []  # candidates' losses, round by round
        self.chosen: list[list[int]] = []  # who trained
        # replies of both types come back through request groups
        self.register_request_types([EVALUATE, TRAIN], sends=self.start_sends)

    def begin_training(self) -> None:
        self.probe(1)

    def ask(self, group: RequestGroup, node_ids: list[int], kind: str, server_round: int) -> None:
        """Send the global model to ``node_ids`` as ``kind`` requests of ``group``."""
        config = ConfigRecord({**self.train_config, "server_round": server_round})
        content = model_content(self.arrays, config)
        for node_id in node_ids:
            self.note_participant(node_id)  # told to finish when the run ends
        group.send_all(
            [Message(content, node, kind, group_id=str(server_round)) for node in node_ids]
        )

    # -- stage 1: who is doing worst? --------------------------------------------------------
    def probe(self, server_round: int) -> None:
        losses: dict[int, float] = {}

        def on_loss(node_id: int, reply: Message) -> None:
            losses[node_id] = float(read_metrics(reply.content)["loss"])  # type: ignore[arg-type]

        group = RequestGroup(
            self, on_reply=on_loss, on_close=lambda _: self.train(server_round, losses),
            deadline=self.stage_timeout, name=f"round {server_round} probe",
        )  # fmt: skip
        self.ask(group, self.sample(self.candidates), EVALUATE, server_round)

    # -- stage 2: they train ---------------------------------------------------------------
    def train(self, server_round: int, losses: dict[int, float]) -> None:
        chosen = sorted(losses, key=lambda node: (-losses[node], node))[: self.clients_per_round]
        self.probed.append(losses)
        self.chosen.append(chosen)
        aggregator = self.strategy.start_aggregation(server_round, self.arrays)
        contributors: list[int] = []

        def on_update(node_id: int, reply: Message) -> None:
            self.accept_update(aggregator, node_id, reply.content)  # refuses NaN, bad shapes
            contributors.append(node_id)

        def on_close(group: RequestGroup) -> None:
            record = RoundRecord(server_round, clients_sampled=group.sent)
            record.clients_replied, record.clients_failed = group.replied, group.failed
            if contributors:
                self.arrays, metrics = aggregator.result()
                self.record_aggregation(record, contributors, metrics)
            # runs the callbacks (central evaluation here), ends the run after the last round
            if self.end_round(record):
                self.probe(server_round + 1)

        group = RequestGroup(
            self, on_reply=on_update, on_close=on_close, deadline=self.stage_timeout,
            name=f"round {server_round} train",
        )  # fmt: skip
        self.ask(group, chosen, TRAIN, server_round)


def run(num_rounds: int = 20, candidates: int = 10, per_round: int = 5) -> PowerOfChoiceServer:
    """Power-of-choice FedAvg on digits split by a Dirichlet(0.3) partition (skewed labels)."""
    num_clients, seed = 20, 0
    dataset = PartitionedDataset.from_arrays(
        load_digits(), num_clients, partition="dirichlet", alpha=0.3, seed=seed
    )
    model = SoftmaxRegression(dataset.num_features, dataset.num_classes)
    clients = []
    for index in range(num_clients):
        data = dataset.client(index)
        splits = (data.x_train, data.y_train, data.x_test, data.y_test)
        clients.append(Client(NumpyTrainer(model, *splits, seed=seed + index)))
    x_test, y_test = dataset.test_set()
    central = NumpyTrainer(model, x_test, y_test, x_test, y_test)

    def evaluate(arrays: Arrays) -> tuple[float, dict[str, float]]:
        loss, _, metrics = central.evaluate(arrays, {})
        return loss, metrics

    settings = TrainingSettings(
        num_rounds=num_rounds, train_config={"epochs": 1, "lr": 0.2},
        callbacks=(CentralEvaluation(evaluate),),
    )  # fmt: skip
    server = PowerOfChoiceServer(
        FedAvg(), ArrayRecord(model.init(seed)), settings, candidates=candidates,
        clients_per_round=per_round,
    )  # fmt: skip
    simulate(server, clients, seed=seed, check_serialization=True)
    return server


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    done = run(num_rounds=args.rounds)
    for record, chosen in zip(done.history, done.chosen, strict=True):
        print(f"round {record.round}: trained {chosen}, accuracy {record.test_accuracy:.3f}")
