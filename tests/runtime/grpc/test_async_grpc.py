"""Asynchronous training over gRPC: the AsyncServer of the simulation, on the wall clock.

Who is slow is decided by events, not by sleeps: a straggler's first update waits until the
others have made two versions, so every assertion holds however busy the machine is.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from fedbus.fl import AsyncServer, Client, RoundRecord, Staleness
from fedbus.fl.strategy import FedBuff
from fedbus.message import RecordDict
from fedbus.runtime.grpc import run_local
from fedbus.train import NumpyTrainer, SoftmaxRegression

Arrays = dict[str, np.ndarray]

#: Seconds after which a run or a gate counts as stuck: it only fails a test that hangs.
STUCK = 60.0


class GatedTrainer:
    """A trainer that first calls ``gate`` (which may wait for an event): a straggling device."""

    def __init__(self, trainer: NumpyTrainer, gate: Callable[[], None] = lambda: None) -> None:
        self.trainer, self.gate = trainer, gate
        self.versions: list[int] = []

    def fit(self, arrays: Arrays, config: dict[str, Any]) -> tuple[Arrays, int, dict[str, float]]:
        self.versions.append(int(config["model_version"]))
        self.gate()
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


class WatchedServer(AsyncServer):
    """An AsyncServer that sets ``straggler_accepted`` once it accepted an update of node 3."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.straggler_accepted = threading.Event()

    def accept_update(self, aggregator: Any, node_id: int, content: RecordDict) -> None:
        super().accept_update(aggregator, node_id, content)
        if node_id == 3:  # run_local numbers the clients 1, 2, 3 in order
            self.straggler_accepted.set()


def waited(event: threading.Event) -> None:
    assert event.wait(STUCK), "a gate stayed shut: the federation is stuck"


def federation(
    digits: tuple[np.ndarray, np.ndarray],
    gates: tuple[Callable[[], None], ...] = (),
    **server_options: Any,
) -> tuple[WatchedServer, list[GatedTrainer]]:
    x, y = digits
    model = SoftmaxRegression(64, 10)
    parts = np.array_split(np.arange(len(y)), 3)
    trainers = [
        GatedTrainer(NumpyTrainer(model, x[p], y[p], epochs=1, lr=0.3, seed=i), *gates[i : i + 1])
        for i, p in enumerate(parts)
    ]

    def evaluate(arrays: Arrays) -> tuple[float, dict[str, float]]:
        return model.loss(arrays, x, y), {"accuracy": float(np.mean(model.predict(arrays, x) == y))}

    server = WatchedServer(
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
    two_versions, first_update = threading.Event(), threading.Event()

    def straggle() -> None:  # the straggler's first update waits for two versions
        if not first_update.is_set():
            first_update.set()
            waited(two_versions)

    def then_wait_for_the_straggler() -> None:
        # After two versions, the fast clients wait until the straggler's update is in: the
        # run cannot end before its stale update is aggregated.
        if two_versions.is_set():
            waited(server.straggler_accepted)

    def on_round_end(record: RoundRecord) -> None:
        if record.round >= 2:
            two_versions.set()

    gates = (then_wait_for_the_straggler, then_wait_for_the_straggler, straggle)
    server, trainers = federation(digits, gates, num_rounds=10, goal=2, on_round_end=on_round_end)
    run_local(server, [Client(t) for t in trainers], timeout=STUCK)
    assert server.finished, server.failure
    assert [r.round for r in server.history] == list(range(1, 11))
    # 20 updates in all; versions 1 and 2 were made while the straggler was still training
    assert sum(server.participation.values()) == 20
    fast_updates = server.participation.get(1, 0) + server.participation.get(2, 0)
    assert fast_updates >= 4
    assert server.participation.get(3, 0) >= 1
    # what the straggler sent was computed on version 0 and discounted as stale
    assert trainers[2].versions[0] == 0
    assert max(age for r in server.history for age in r.staleness) >= 2
    final = server.history[-1]
    assert final.test_accuracy is not None
    assert final.test_accuracy > 0.8


def test_time_trigger_over_grpc_uses_the_wall_clock(digits: Any) -> None:
    server, trainers = federation(digits, num_rounds=4, trigger="time", period=0.3)
    started = time.monotonic()
    run_local(server, [Client(t) for t in trainers], timeout=STUCK)
    elapsed = time.monotonic() - started
    assert server.finished, server.failure
    times = [r.time for r in server.history]
    # windows of 0.3 wall seconds: the versions are that far apart on the runtime's clock
    assert all(later - earlier >= 0.29 for earlier, later in itertools.pairwise(times))
    assert elapsed >= 4 * 0.29
    assert all(r.clients_replied >= 1 for r in server.history)
