"""The server's watchdog: a long wait says in the log what it waits for, and changes nothing."""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_digits

from fedbus.errors import InvalidArgumentError
from fedbus.fl import AsyncServer, Client, FedAvg, Server, TrainingSettings
from fedbus.fl.protocol import TRAIN
from fedbus.fl.watchdog import MAX_NAMED_NODES, Watchdog
from fedbus.message import Message, use_clock
from fedbus.runtime.simulation import ClientProfile, ProfileTable, SimulationResult, simulate
from fedbus.train import NumpyTrainer, SoftmaxRegression
from fedbus.worker import Worker

WAITED = re.compile(r"round (\d+) train has waited (\d+(?:\.\d)?) s")


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    data = load_digits()
    return (data.data / 16.0).astype(np.float64), data.target.astype(np.int64)


def clients_for(data: tuple[np.ndarray, np.ndarray], count: int) -> list[Client]:
    x, y = data
    model = SoftmaxRegression(64, 10)
    parts = np.array_split(np.arange(len(y)), count)
    return [
        Client(NumpyTrainer(model, x[p], y[p], batch_size=32, lr=0.3, seed=int(i)))
        for i, p in enumerate(parts)
    ]


def run(
    data: tuple[np.ndarray, np.ndarray],
    watchdog: float | None,
    profiles: ProfileTable | None = None,
    **options: Any,
) -> tuple[Server, SimulationResult]:
    model = SoftmaxRegression(64, 10)
    settings: dict[str, Any] = {"num_rounds": 3, "clients_per_round": 6, "seed": 1}
    settings.update(options)
    server = Server(FedAvg(), model.init(seed=0, dtype=np.float64), watchdog=watchdog, **settings)
    result = simulate(server, clients_for(data, 6), profiles=profiles)
    return server, result


# Clients 2, 4 and 6 compute 1000x to 4000x slower than the others: ~150 to ~600 simulated s.
SLOW = ProfileTable(
    {2: ClientProfile(speed=2.0), 4: ClientProfile(speed=1.0), 6: ClientProfile(speed=0.5)}
)


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "fedbus.server" and r.levelno == logging.WARNING
    ]


def test_a_slow_round_names_the_nodes_it_waits_on(digits, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO)
    server, _ = run(digits, 60.0, SLOW)
    assert server.finished
    lines = [line for line in warnings_of(caplog) if "round 1 train" in line]
    assert lines, warnings_of(caplog)
    first = lines[0]
    # waited for all three slow nodes, none of the fast ones; they answered the join never
    assert "for 3 of 6 replies" in first
    assert "waiting on nodes 2, 4, 6 (last heard from: node 2 never" in first
    assert "(since t=0.0)" in first
    # repeated while the round waits, never more often than every 60 s, ending with it
    waited = [float(WAITED.match(line).group(2)) for line in lines]  # type: ignore[union-attr]
    assert waited[0] >= 60
    assert all(later - earlier >= 60 for earlier, later in itertools.pairwise(waited))
    assert "waiting on node 6 " in lines[-1]
    rounds = {int(WAITED.match(line).group(1)) for line in warnings_of(caplog)}  # type: ignore[union-attr]
    assert rounds == {1, 2, 3}


def test_a_fast_run_logs_no_warning(digits, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO)
    server, _ = run(digits, 60.0)
    assert server.finished
    assert warnings_of(caplog) == []


def test_the_watchdog_changes_nothing_in_the_run(digits, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO)
    watched, with_dog = run(digits, 1.0, SLOW, round_timeout=400.0, min_replies=3)
    assert len(warnings_of(caplog)) > 3
    plain, without = run(digits, None, SLOW, round_timeout=400.0, min_replies=3)
    for key, value in watched.arrays.to_numpy_dict().items():
        assert value.tobytes() == plain.arrays.to_numpy_dict()[key].tobytes()
    assert with_dog.time == without.time
    assert with_dog.trace == without.trace
    assert [r.time for r in watched.history] == [r.time for r in plain.history]
    assert watched.sampler_state() == plain.sampler_state()


class Silent(Worker):
    """A client that takes train requests and never answers them."""

    def __init__(self) -> None:
        super().__init__()
        self.register_handlers(TRAIN, self.on_train, sends=[TRAIN])

    def on_train(self, message: Message) -> None:
        return None


def test_a_node_that_never_answers_is_named_when_the_deadline_comes(digits, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO)
    model = SoftmaxRegression(64, 10)
    clients: list[Worker] = [*clients_for(digits, 5), Silent()]
    server = Server(
        FedAvg(),
        model.init(seed=0, dtype=np.float64),
        num_rounds=1,
        clients_per_round=6,
        round_timeout=300.0,
        watchdog=100.0,
    )
    simulate(server, clients)
    assert server.finished
    (line,) = warnings_of(caplog)
    assert line.startswith("round 1 train has waited 300 s (since t=0.0) for 1 of 6 replies")
    assert line.endswith("waiting on node 6 (last heard from: node 6 never)")


def test_an_async_version_that_waits_names_the_clients_training(digits, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO)
    model = SoftmaxRegression(64, 10)
    server = AsyncServer(
        FedAvg(),
        model.init(seed=0, dtype=np.float64),
        concurrency=3,
        goal=3,
        num_rounds=2,
        seed=0,
        watchdog=60.0,
    )
    # every client is slow: each version waits ~300 s for its goal
    slow = ProfileTable({}, default=ClientProfile(speed=2.0))
    simulate(server, clients_for(digits, 3), profiles=slow)
    assert server.finished
    lines = warnings_of(caplog)
    assert lines
    assert lines[0].startswith("model version 1 has waited")
    assert "more of its goal of 3 updates; waiting on nodes 1, 2, 3" in lines[0]


# -- the watchdog's timers, where the runtime offers background ones (deployments) ----------


class _Timer:
    def __init__(self, delay: float, callback: Callable[[], None]) -> None:
        self.delay, self.callback, self.cancelled = delay, callback, False

    def cancel(self) -> None:
        self.cancelled = True


class _WallComm:
    """A runtime with background timers, driven by hand."""

    def __init__(self) -> None:
        self.timers: list[_Timer] = []
        self.background: list[_Timer] = []

    def send(self, message: Message) -> None:
        pass

    def call_later(self, delay: float, callback: Callable[[], None]) -> _Timer:
        self.timers.append(_Timer(delay, callback))
        return self.timers[-1]

    def call_later_background(self, delay: float, callback: Callable[[], None]) -> _Timer:
        self.background.append(_Timer(delay, callback))
        return self.background[-1]

    def report_work(self, num_samples: int) -> None:
        pass

    def stop(self) -> None:
        pass


def test_background_timers_repeat_the_warning_until_the_wait_ends(caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.WARNING)
    worker, comm = Worker(0), _WallComm()
    worker.attach(comm, 0)
    clock = [100.0]
    nodes = list(range(1, 31))
    with use_clock(lambda: clock[0]):
        watchdog = Watchdog(worker, 60.0)
        watchdog.heard(7)
        wait = watchdog.watch("round 2 train", lambda: ("for 30 of 40 replies", nodes))
        (timer,) = comm.background
        assert timer.delay == 60.0
        clock[0] = 160.0
        timer.callback()
        assert len(comm.background) == 2
        assert comm.background[1].delay == 60.0
        clock[0] = 220.0
        comm.background[1].callback()
        watchdog.release(wait)
        assert comm.background[2].cancelled
    first, second = (r.getMessage() for r in caplog.records)
    named = ", ".join(map(str, range(1, MAX_NAMED_NODES + 1)))
    assert first == (
        f"round 2 train has waited 60 s (since t=100.0) for 30 of 40 replies; waiting on nodes "
        f"{named} and 10 more (last heard from: node 1 never, "
        + ", ".join(f"node {n} never" for n in range(2, 7))
        + ", node 7 60 s ago, "
        + ", ".join(f"node {n} never" for n in range(8, MAX_NAMED_NODES + 1))
        + ")"
    )
    assert second.startswith("round 2 train has waited 120 s")


def test_the_watchdog_is_off_with_none_and_checked_in_settings() -> None:
    worker, comm = Worker(0), _WallComm()
    worker.attach(comm, 0)
    Watchdog(worker, None).watch("round 1 train", lambda: ("", []))
    assert comm.background == []
    for wrong in (0, -1.0, float("inf"), True):
        with pytest.raises(InvalidArgumentError, match="watchdog"):
            TrainingSettings(num_rounds=1, watchdog=wrong)  # type: ignore[arg-type]
    assert TrainingSettings(num_rounds=1).watchdog == 60.0
