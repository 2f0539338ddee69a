"""How much does fedbus cost on top of PyTorch training itself?

Runs one FedAvg workload twice in this process and compares wall times:

- through fedbus: ``Server(FedAvg())`` + ``Client(TorchTrainer(...))`` workers in the simulation
  runtime (messages, handlers, the event loop, simulated time, streaming aggregation, and the
  trainer's copies of the state in and out);
- as a bare PyTorch loop: the same clients sampled with the same NumPy generator as the server,
  the same per-client shuffles (``torch.randperm`` from ``torch.Generator(node_id)``), the same
  plain SGD steps and the same example-weighted average in float64, with nothing else.

The model is the ``"cnn"`` of ``fedbus.train.torch_models`` (two convolution blocks with
BatchNorm, 6,138 parameters) on scikit-learn's 8x8 digits split among the clients. Both halves
end with the same model (checked). Replies reach the server in the order clients finish, not in
the order they were sampled, so the float64 sums may be added in another order: the check allows
float32 rounding differences.

Threads: torch's intra-op pool is set to ``--threads`` (default 1) once, before both halves, so
they run alike; a model this small runs fastest on one thread.

Usage::

    python bench/torch_cnn.py [--clients 100] [--per-round 10] [--rounds 20] [--epochs 2]
                              [--batch-size 32] [--partition iid] [--repeat 5]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from fedbus.data import ClientData, build_dataset
from fedbus.fl import Client, FedAvg, Server
from fedbus.runtime.simulation import simulate
from fedbus.train.torch_models import build_torch_model, init_state
from fedbus.train.torch_trainer import TorchTrainer

Arrays = dict[str, np.ndarray[Any, Any]]


def through_fedbus(
    model: torch.nn.Module, data: list[ClientData], initial: Arrays, args: argparse.Namespace
) -> Arrays:
    server = Server(
        FedAvg(),
        initial,
        num_rounds=args.rounds,
        clients_per_round=args.per_round,
        train_config={"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr},
        evaluate_every=0,
        seed=args.seed,
    )

    def make_client(node_id: int) -> Client:
        part = data[node_id - 1]
        # One module shared by every client: each fit loads the whole state first.
        trainer = TorchTrainer(model, part.x_train, part.y_train, seed=node_id)
        return Client(trainer, node_id)

    simulate(server, make_client, num_clients=args.clients, record_trace=False)
    return server.arrays.to_numpy_dict()


def bare_loop(
    model: torch.nn.Module, data: list[ClientData], initial: Arrays, args: argparse.Namespace
) -> Arrays:
    """The same arithmetic with no framework: sample, train, weighted average, repeat."""
    rng = np.random.default_rng(args.seed)
    clients: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Generator]] = {}
    state = {name: torch.from_numpy(value.copy()) for name, value in initial.items()}
    for _ in range(args.rounds):
        picks = rng.choice(args.clients, size=args.per_round, replace=False)
        sums: dict[str, torch.Tensor] = {}
        total = 0
        for index in picks:
            node_id = int(index) + 1
            if node_id not in clients:
                part = data[node_id - 1]
                x, y = torch.from_numpy(part.x_train), torch.from_numpy(part.y_train)
                clients[node_id] = (x, y, torch.Generator().manual_seed(node_id))
            x, y, generator = clients[node_id]
            model.load_state_dict(state)
            train_one_client(model, x, y, generator, args)
            weight = len(y)
            for name, tensor in model.state_dict().items():
                contribution = tensor.double() * weight
                sums[name] = contribution if name not in sums else sums[name] + contribution
            total += weight
        state = {name: (sums[name] / total).to(state[name].dtype) for name in state}
    return {name: tensor.numpy() for name, tensor in state.items()}


def train_one_client(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    generator: torch.Generator,
    args: argparse.Namespace,
) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr)
    model.train()
    for _ in range(args.epochs):
        if args.batch_size >= len(y):
            batches = [(x, y)]
        else:
            order = torch.randperm(len(y), generator=generator)
            xs, ys = x[order], y[order]
            batches = [
                (xs[start : start + args.batch_size], ys[start : start + args.batch_size])
                for start in range(0, len(y), args.batch_size)
            ]
        for inputs, labels in batches:
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(inputs), labels)
            loss.backward()
            optimizer.step()


def best_of(repeat: int, runs: list[Callable[[], Arrays]]) -> list[tuple[float, Arrays]]:
    """Best wall time and result of each run; the runs take turns, so a busy spell of the
    machine slows both rather than one. One untimed turn first: torch's first calls allocate
    memory and choose kernels, which would otherwise land on whichever half runs first."""
    for run in runs:
        run()
    best = [(float("inf"), {}) for _ in runs]
    for _ in range(repeat):
        for index, run in enumerate(runs):
            start = time.perf_counter()
            result = run()
            elapsed = time.perf_counter() - start
            if elapsed < best[index][0]:
                best[index] = (elapsed, result)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description="fedbus + TorchTrainer against a bare loop")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--per-round", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--partition", choices=["iid", "dirichlet"], default="iid")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    dataset = build_dataset(
        "digits", args.clients, partition=args.partition, seed=args.seed, client_test_fraction=0.0
    )
    data = [dataset.client(index) for index in range(args.clients)]  # split once, untimed
    model = build_torch_model("cnn", dataset.num_features, dataset.num_classes, seed=args.seed)
    initial = init_state(model, seed=args.seed)

    sizes = [part.num_train for part in data]
    updates = args.rounds * args.per_round
    print(
        f"FedAvg, cnn ({sum(p.numel() for p in model.parameters())} parameters), digits split "
        f"{args.partition} among {args.clients} clients ({min(sizes)}-{max(sizes)} samples), "
        f"{args.per_round} per round, {args.rounds} rounds = {updates} client updates of "
        f"{args.epochs} epoch(s), batch {args.batch_size}; torch threads {args.threads}; "
        f"best of {args.repeat}"
    )
    (fedbus_time, fedbus_model), (bare_time, bare_model) = best_of(
        args.repeat,
        [
            lambda: through_fedbus(model, data, initial, args),
            lambda: bare_loop(model, data, initial, args),
        ],
    )
    for name in initial:
        np.testing.assert_allclose(fedbus_model[name], bare_model[name], rtol=1e-5, atol=1e-6)
    x_test, y_test = dataset.test_set()
    _, _, metrics = TorchTrainer(model, x_test, y_test).evaluate(fedbus_model, {})
    print(f"  fedbus           {fedbus_time * 1e3:8.1f} ms")
    print(f"  bare PyTorch     {bare_time * 1e3:8.1f} ms   (same final model, checked)")
    print(f"  ratio            {fedbus_time / bare_time:8.3f}     (target <= 1.10)")
    print(f"  per client update: fedbus {fedbus_time / updates * 1e3:.2f} ms, ", end="")
    print(f"bare {bare_time / updates * 1e3:.2f} ms; final test accuracy {metrics['accuracy']:.3f}")


if __name__ == "__main__":
    main()
