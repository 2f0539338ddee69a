"""Asynchronous training over gRPC: the AsyncServer of the simulation, on the wall clock."""

from __future__ import annotations

import itertools
import time
from typing import Any

import numpy as np
import pytest

from fedbus.fl import AsyncServer, Client, Staleness
from fedbus.fl.strategy import FedBuff
from fedbus.runtime.grpc import run_local
from fedbus.train import NumpyTrainer, SoftmaxRegression

Arrays = dict[str, np.ndarray]


class DelayedTrainer:
    """A trainer that takes ``delay`` more wall-clock seconds: a straggling device."""

    def __init__(self, trainer: NumpyTrainer, delay: float) -> None:
        self.trainer, self.delay = trainer, delay
        self.versions: list[int] = []

    def fit(self, arrays: Arrays, config: dict[str, Any]) -> tuple[Arrays, int, dict[str, float]]:
        self.versions.append(int(config["model_version"]))
        time.sleep(self.delay)
        return self.trainer.fit(arrays, config)

    def evaluate(
        self, arrays: Arrays, config: dict[str, Any]
    ) -> tuple[float, int, dict[str, float]]:
        return self.trainer.evaluate(arrays, config)


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    return (data.data / 16.0).astype(np.float64), data.target.astype(np.int64)


def federation(
    digits: tuple[np.ndarray, np.ndarray], **server_options: Any
) -> tuple[AsyncServer, list[DelayedTrainer]]:
    x, y = digits
    model = SoftmaxRegression(64, 10)
    parts = np.array_split(np.arange(len(y)), 3)
    # client 3 is the straggler: 0.8 s per update against 0.05 s for the others
    trainers = [
        DelayedTrainer(NumpyTrainer(model, x[p], y[p], epochs=1, lr=0.3, seed=i), delay)
        for i, (p, delay) in enumerate(zip(parts, (0.05, 0.05, 0.8), strict=True))
    ]

    def evaluate(arrays: Arrays) -> tuple[float, dict[str, float]]:
        return model.loss(arrays, x, y), {"accuracy": float(np.mean(model.predict(arrays, x) == y))}

    server = AsyncServer(
        FedBuff(),
        model.init(seed=0, dtype=np.float64),
        concurrency=3,
        staleness=Staleness(tolerance=100, discount="polynomial", exponent=0.5),
        evaluate_fn=evaluate,
        evaluate_every=0,
        **server_options,
    )
    return server, trainers


def test_fedbuff_over_grpc_aggregates_without_waiting_for_the_straggler(digits: Any) -> None:
    server, trainers = federation(digits, num_rounds=10, goal=2)
    run_local(server, [Client(t) for t in trainers], timeout=60)
    assert server.finished, server.failure
    assert [r.round for r in server.history] == list(range(1, 11))
    fast_updates = server.participation.get(1, 0) + server.participation.get(2, 0)
    # 20 updates in all; the straggler took 0.8 s per update while the others cycled
    assert sum(server.participation.values()) == 20
    assert fast_updates >= 16
    # what the straggler sent was computed on an older version and discounted as stale
    assert trainers[2].versions[0] == 0
    assert any(age >= 1 for r in server.history for age in r.staleness)
    final = server.history[-1]
    assert final.test_accuracy is not None
    assert final.test_accuracy > 0.8


def test_time_trigger_over_grpc_uses_the_wall_clock(digits: Any) -> None:
    server, trainers = federation(digits, num_rounds=4, trigger="time", period=0.3)
    started = time.monotonic()
    run_local(server, [Client(t) for t in trainers], timeout=60)
    elapsed = time.monotonic() - started
    assert server.finished, server.failure
    times = [r.time for r in server.history]
    # windows of 0.3 wall seconds: the versions are that far apart on the runtime's clock
    assert all(later - earlier >= 0.29 for earlier, later in itertools.pairwise(times))
    assert elapsed >= 4 * 0.29
    assert all(r.clients_replied >= 1 for r in server.history)
