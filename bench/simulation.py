"""How much does fedbus's simulation cost on top of the training arithmetic itself?

Runs one FedAvg workload twice in this process and compares wall times:

- through fedbus: ``Server`` + ``Client`` workers in ``simulate`` (messages, handlers, the event
  loop, simulated time, streaming aggregation);
- as a bare NumPy loop: the same client sampling, the same trainers on the same data, the same
  weighted average, with nothing else.

Both produce the same final model (checked), so the difference is the framework's own cost.
A second pass uses a trainer that does no work at all, which leaves only that cost: the time per
train message and its reply.

Usage::

    python bench/simulation.py [--clients 1000] [--per-round 50] [--rounds 20] [--repeat 3]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from fedbus.data import SyntheticDataset
from fedbus.fl import Client, FedAvg, Server
from fedbus.runtime.simulation import simulate
from fedbus.train import NumpyTrainer, SoftmaxRegression

Arrays = dict[str, np.ndarray[Any, Any]]
TrainerFactory = Callable[[int], Any]


class IdleTrainer:
    """Does no training: returns the arrays it got. What remains is the framework."""

    def fit(self, arrays: Arrays, config: dict[str, Any]) -> tuple[Arrays, int, dict[str, float]]:
        return arrays, 64, {"samples_processed": 64, "train_loss": 0.0}

    def evaluate(
        self, arrays: Arrays, config: dict[str, Any]
    ) -> tuple[float, int, dict[str, float]]:
        return 0.0, 64, {"accuracy": 0.0}


def through_fedbus(
    make_trainer: TrainerFactory, initial: Arrays, args: argparse.Namespace
) -> Arrays:
    server = Server(
        FedAvg(),
        initial,
        num_rounds=args.rounds,
        clients_per_round=args.per_round,
        train_config={},
        evaluate_every=0,
        seed=args.seed,
    )
    simulate(
        server,
        lambda node_id: Client(make_trainer(node_id), node_id),
        num_clients=args.clients,
        record_trace=False,
    )
    return server.arrays.to_numpy_dict()


def bare_loop(make_trainer: TrainerFactory, initial: Arrays, args: argparse.Namespace) -> Arrays:
    """The same arithmetic with no framework: sample, fit, weighted average, repeat."""
    rng = np.random.default_rng(args.seed)
    trainers: dict[int, Any] = {}
    clients = list(range(1, args.clients + 1))
    arrays = initial
    for _ in range(args.rounds):
        picks = rng.choice(len(clients), size=args.per_round, replace=False)
        sums: dict[str, np.ndarray[Any, Any]] | None = None
        total = 0
        for index in picks:
            node_id = clients[int(index)]
            trainer = trainers.get(node_id)
            if trainer is None:
                trainer = trainers[node_id] = make_trainer(node_id)
            local, weight, _ = trainer.fit(arrays, {})
            if sums is None:
                sums = {key: value.astype(np.float64) * weight for key, value in local.items()}
            else:
                for key, value in local.items():
                    sums[key] += value.astype(np.float64) * weight
            total += weight
        assert sums is not None
        arrays = {key: (value / total).astype(initial[key].dtype) for key, value in sums.items()}
    return arrays


def best_of(repeat: int, run: Callable[[], Arrays]) -> tuple[float, Arrays]:
    best, result = float("inf"), {}
    for _ in range(repeat):
        start = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description="fedbus simulation against a bare NumPy loop")
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--per-round", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    dataset = SyntheticDataset(
        args.clients, 1.0, 1.0, samples_per_client=64, client_test_fraction=0.0
    )
    data = [
        dataset.client(index) for index in range(args.clients)
    ]  # generated once, outside timing
    model = SoftmaxRegression(dataset.num_features, dataset.num_classes)
    initial = model.init(seed=args.seed)

    def make_trainer(node_id: int) -> NumpyTrainer:
        part = data[node_id - 1]
        return NumpyTrainer(
            model, part.x_train, part.y_train, epochs=1, batch_size=32, lr=0.1, seed=node_id
        )

    updates = args.rounds * args.per_round
    print(
        f"FedAvg, softmax regression ({sum(v.size for v in initial.values())} parameters), "
        f"{args.clients} clients x 64 samples, {args.per_round} per round, {args.rounds} rounds "
        f"= {updates} client updates; best of {args.repeat}"
    )
    fedbus_time, fedbus_model = best_of(
        args.repeat, lambda: through_fedbus(make_trainer, initial, args)
    )
    bare_time, bare_model = best_of(args.repeat, lambda: bare_loop(make_trainer, initial, args))
    for key in initial:
        np.testing.assert_array_equal(fedbus_model[key], bare_model[key])
    print(f"  fedbus           {fedbus_time * 1e3:8.1f} ms")
    print(f"  bare NumPy loop  {bare_time * 1e3:8.1f} ms   (same final model, checked)")
    print(f"  ratio            {fedbus_time / bare_time:8.3f}     (target <= 1.15)")

    idle_fedbus, _ = best_of(
        args.repeat, lambda: through_fedbus(lambda n: IdleTrainer(), initial, args)
    )
    idle_bare, _ = best_of(args.repeat, lambda: bare_loop(lambda n: IdleTrainer(), initial, args))
    overhead = (idle_fedbus - idle_bare) / updates
    print("with a trainer that does nothing:")
    print(f"  fedbus {idle_fedbus * 1e3:.1f} ms, bare loop {idle_bare * 1e3:.1f} ms")
    print(f"  framework cost per train message and reply: {overhead * 1e6:.1f} us (target <= 50)")


if __name__ == "__main__":
    main()
