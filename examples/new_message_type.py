"""A new algorithm from two new message types: ``gradients`` and ``updated_model``.

The server broadcasts the aggregated model update as a ``gradients`` message. Each client applies
it to its copy of the global model and trains locally only when that model has drifted past a
threshold since the client last trained, or when it has skipped ``patience`` rounds in a row (so
training never stalls); either way it answers with an ``updated_model`` message (its update, or
a note that it skipped). The server averages the updates it got into the
next ``gradients`` message. Skipping saves the uplink: clients whose view barely moved stay quiet.

Run it::

    python examples/new_message_type.py

Nothing here changes fedbus: the two workers only register handlers.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedbus import ArrayRecord, Message, MetricRecord, RecordDict
from fedbus.data import PartitionedDataset, load_digits
from fedbus.runtime.simulation import simulate
from fedbus.train import NumpyTrainer, SoftmaxRegression
from fedbus.worker import Worker

Arrays = dict[str, np.ndarray[Any, Any]]


def norm(arrays: Arrays) -> float:
    return float(
        np.sqrt(sum(float(np.sum(value.astype(np.float64) ** 2)) for value in arrays.values()))
    )


class DriftClient(Worker):
    """Applies ``gradients``; trains when its model drifted past ``threshold``."""

    def __init__(
        self, trainer: NumpyTrainer, model: SoftmaxRegression, threshold: float, patience: int
    ):
        super().__init__()
        self.trainer, self.threshold, self.patience = trainer, threshold, patience
        self.skipped_in_a_row = 0
        self.model: Arrays = {key: np.zeros_like(value) for key, value in model.init(0).items()}
        self.trained_from: Arrays | None = None  # the model this client last trained from
        self.skipped = 0
        self.register_handlers(
            message_type="gradients",
            callback_func=self.callback_for_message_gradients,
            sends=["updated_model"],
        )
        self.register_handlers(message_type="finish", callback_func=lambda message: self.stop())

    def update_by_gradients(self, gradients: Arrays) -> None:
        self.model = {key: self.model[key] + gradients[key] for key in self.model}

    def get_delta_of_model(self) -> float:
        if self.trained_from is None:
            return float("inf")
        return norm({key: self.model[key] - self.trained_from[key] for key in self.model})

    def local_train(self) -> RecordDict:
        self.trained_from = self.model
        trained, num_examples, metrics = self.trainer.fit(self.model, {})
        self.report_work(int(metrics["samples_processed"]))
        delta = {key: trained[key] - self.model[key] for key in self.model}
        return RecordDict(
            {
                "delta": ArrayRecord(delta),
                "metrics": MetricRecord({"num_examples": num_examples, **metrics}),
            }
        )

    def callback_for_message_gradients(self, message: Message) -> None:
        # parse the payload
        sender, model_gradients = message.sender, message.content
        assert sender == self.server_ID

        # update the model with what the server aggregated
        self.update_by_gradients(model_gradients["gradients"].to_numpy_dict())

        # trigger local training only when the model drifted enough, or was left alone too long
        if self.get_delta_of_model() > self.threshold or self.skipped_in_a_row >= self.patience:
            self.skipped_in_a_row = 0
            updated_model = self.local_train()
        else:
            self.skipped += 1
            self.skipped_in_a_row += 1
            updated_model = RecordDict({"metrics": MetricRecord({"num_examples": 0})})

        # return the feedback through the communicator
        self.comm_manager.send(  # type: ignore[union-attr]
            Message(
                sender=self.ID,
                receiver=sender,
                msg_type="updated_model",
                content=updated_model,
                group_id=message.metadata.group_id,
            )
        )


class GradientServer(Worker):
    """Broadcasts ``gradients``; averages ``updated_model`` messages into the next ones."""

    start_sends = ("gradients", "finish")

    def __init__(self, model: SoftmaxRegression, num_clients: int, num_rounds: int, test: Any):
        super().__init__(0)
        self.model, self.num_clients, self.num_rounds = model, num_clients, num_rounds
        self.x_test, self.y_test = test
        self.arrays: Arrays = model.init(seed=0)
        self.round = 0
        self.accuracy: list[float] = []
        self.updates_received = 0
        self._answers: list[RecordDict] = []
        self.register_handlers(
            message_type="updated_model",
            callback_func=self.callback_for_message_updated_model,
            sends=["gradients", "finish"],
        )

    def on_start(self) -> None:
        # The clients start from zeros: the first "gradients" carry the initial model.
        self.broadcast(self.arrays)

    def broadcast(self, gradients: Arrays) -> None:
        self.round += 1
        content = RecordDict({"gradients": ArrayRecord(gradients)})
        for node_id in range(1, self.num_clients + 1):
            self.send(Message(content, node_id, "gradients", group_id=str(self.round)))

    def callback_for_message_updated_model(self, message: Message) -> None:
        self._answers.append(message.content)
        if len(self._answers) < self.num_clients:
            return
        updates = [answer for answer in self._answers if "delta" in answer]
        self._answers = []
        self.updates_received += len(updates)
        gradients = self.average(updates)
        self.arrays = {key: self.arrays[key] + gradients[key] for key in self.arrays}
        predictions = self.model.predict(self.arrays, self.x_test)
        self.accuracy.append(float(np.mean(predictions == self.y_test)))
        if self.round < self.num_rounds:
            self.broadcast(gradients)
        else:
            for node_id in range(1, self.num_clients + 1):
                self.send(Message(RecordDict(), node_id, "finish"))
            self.stop()

    def average(self, updates: list[RecordDict]) -> Arrays:
        total = sum(int(update["metrics"]["num_examples"]) for update in updates)  # type: ignore[call-overload]
        average = {key: np.zeros_like(value) for key, value in self.arrays.items()}
        for update in updates:
            weight = int(update["metrics"]["num_examples"]) / total  # type: ignore[call-overload]
            for key, value in update["delta"].to_numpy_dict().items():  # type: ignore[union-attr]
                average[key] += weight * value
        return average


@dataclass
class Outcome:
    accuracy: list[float]
    updates_received: int
    updates_skipped: int
    simulated_time: float


def run(
    num_clients: int = 20,
    num_rounds: int = 20,
    threshold: float = 0.5,
    patience: int = 2,
    seed: int = 0,
) -> Outcome:
    """Run the algorithm on scikit-learn's digits, split IID among ``num_clients``."""
    dataset = PartitionedDataset.from_arrays(load_digits(), num_clients, partition="iid", seed=seed)
    model = SoftmaxRegression(dataset.num_features, dataset.num_classes)
    clients = []
    for index in range(num_clients):
        data = dataset.client(index)
        trainer = NumpyTrainer(
            model, data.x_train, data.y_train, epochs=2, lr=0.5, seed=seed + index
        )
        clients.append(DriftClient(trainer, model, threshold, patience))
    server = GradientServer(model, num_clients, num_rounds, dataset.test_set())
    result = simulate(server, clients, seed=seed, check_serialization=True)
    skipped = sum(client.skipped for client in clients)
    return Outcome(server.accuracy, server.updates_received, skipped, result.time)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--patience", type=int, default=2)
    args = parser.parse_args()
    outcome = run(args.clients, args.rounds, args.threshold, args.patience)
    for number, accuracy in enumerate(outcome.accuracy, start=1):
        print(f"round {number:2d}: test accuracy {accuracy:.3f}")
    print(
        f"{outcome.updates_received} updates sent, {outcome.updates_skipped} skipped "
        f"(drift below {args.threshold}); {outcome.simulated_time:.1f} simulated seconds"
    )


if __name__ == "__main__":
    main()
