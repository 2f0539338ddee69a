"""What does SecAgg+ cost next to plain FedAvg, per round, in simulation?

For each number of clients (all sampled, one round) and each model size, this runs one round of
plain FedAvg (``Server`` + ``Client``) and one of secure aggregation (``SecAggServer`` +
``SecAggClient``) in the simulation, with a trainer that adds a fixed step to the model, so that
only the protocol is measured. It reports:

- client compute: seconds spent in the client handlers, per client (training is a copy);
- server compute: seconds spent in the server handlers for the round;
- bytes per client: the encoded size of what each client sends and receives;
- the expansion factors, secure / plain.

Every message is counted at its encoded size (the codec's ``encoded_size``), as a network would
carry it. Timings are wall-clock on one core of this machine (``time.perf_counter``).

Usage::

    python bench/secagg.py [--clients 100 500 1000] [--params 10000 1000000]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from fedbus.fl import Client, FedAvg, Server
from fedbus.fl.secagg import SecAggClient, SecAggServer
from fedbus.message import Message
from fedbus.runtime.simulation import simulate
from fedbus.worker import Worker

Arrays = dict[str, np.ndarray]


class StepTrainer:
    """Training is one vector addition: what is left to measure is the protocol."""

    def __init__(self, step: float) -> None:
        self.step = step

    def fit(self, arrays: Arrays, config: dict[str, Any]) -> tuple[Arrays, int, dict[str, float]]:
        trained = (arrays["w"] + self.step).astype(arrays["w"].dtype)
        return {"w": trained}, 10, {"samples_processed": 10}

    def evaluate(
        self, arrays: Arrays, config: dict[str, Any]
    ) -> tuple[float, int, dict[str, float]]:
        return 0.0, 10, {"accuracy": 0.0}


class Stopwatch:
    """Seconds spent inside the handlers of the workers it wraps."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def wrap(self, worker: Worker) -> Worker:
        deliver: Callable[[Message], None] = worker.deliver

        def timed(message: Message) -> None:
            start = time.perf_counter()
            try:
                deliver(message)
            finally:
                self.seconds += time.perf_counter() - start

        worker.deliver = timed  # type: ignore[method-assign]
        return worker


def one_round(secure: bool, clients: int, params: int) -> dict[str, float]:
    steps = np.random.default_rng(0).uniform(-0.01, 0.01, clients)
    initial = {"w": np.zeros(params, dtype=np.float32)}
    client_clock, server_clock = Stopwatch(), Stopwatch()
    workers: list[Worker]
    server: Worker
    if secure:
        server = SecAggServer(
            FedAvg(), initial, num_rounds=1, clients_per_round=clients, evaluate_every=0,
            clip_range=0.1,
        )  # fmt: skip
        workers = [client_clock.wrap(SecAggClient(StepTrainer(s))) for s in steps]
    else:
        server = Server(
            FedAvg(), initial, num_rounds=1, clients_per_round=clients, evaluate_every=0
        )
        workers = [client_clock.wrap(Client(StepTrainer(s))) for s in steps]
    server_clock.wrap(server)
    started = time.perf_counter()
    result = simulate(server, workers, record_trace=False)
    wall = time.perf_counter() - started
    stats = result.stats
    return {
        "client_s": client_clock.seconds / clients,
        "server_s": server_clock.seconds,
        "wall_s": wall,
        "bytes_per_client": (stats.bytes_up + stats.bytes_down) / clients,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[100, 500, 1000])
    parser.add_argument("--params", type=int, nargs="+", default=[10_000, 1_000_000])
    args = parser.parse_args()
    header = (
        f"{'clients':>7} {'params':>9} | {'client ms':>9} {'x plain':>7} | "
        f"{'server s':>8} {'x plain':>7} | {'MB/client':>9} {'x plain':>7} | {'wall s':>6}"
    )
    print(header)
    print("-" * len(header))
    for params in args.params:
        for clients in args.clients:
            plain = one_round(False, clients, params)
            secure = one_round(True, clients, params)
            print(
                f"{clients:>7} {params:>9} | {secure['client_s'] * 1e3:>9.2f} "
                f"{secure['client_s'] / plain['client_s']:>7.1f} | {secure['server_s']:>8.3f} "
                f"{secure['server_s'] / plain['server_s']:>7.1f} | "
                f"{secure['bytes_per_client'] / 1e6:>9.3f} "
                f"{secure['bytes_per_client'] / plain['bytes_per_client']:>7.2f} | "
                f"{secure['wall_s']:>6.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
