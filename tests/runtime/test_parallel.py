"""Client work in worker processes: the same run, bit for bit, as in one process."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from typing import Any

import numpy as np
import pytest

from fedbus import Message, RecordDict, Worker
from fedbus.errors import FedbusError, InvalidArgumentError
from fedbus.message import ConfigRecord
from fedbus.run import load_config
from fedbus.run.federation import Federation, build_federation
from fedbus.runtime.simulation import Simulation, SimulationResult, cores, loop
from fedbus.runtime.simulation.loop import AUTO_MIN_SECONDS, AUTO_SAMPLE
from fedbus.runtime.simulation.loop import _Trial as Trial
from fedbus.runtime.simulation.processes import ProcessPool

BASE = [
    "federation.num_clients=30",
    "federation.clients_per_round=8",
    "federation.num_rounds=4",
    "model.name=mlp",
    "model.hidden=16",
    "trainer.epochs=1",
]


def run_configured(overrides: list[str], workers: int) -> tuple[Federation, SimulationResult]:
    config = load_config(None, [*BASE, *overrides, f"simulation.workers={workers}"])
    federation = build_federation(config)
    return federation, federation.simulation.run()


def fingerprint(
    federation: Federation, result: SimulationResult, where: tuple[str, ...] = ("offloaded",)
) -> dict[str, Any]:
    """Everything a run produced that could differ: model, history, clock, counters, trace;
    less the counters named in ``where``, which say where work ran (they may differ)."""
    stats = dataclasses.replace(result.stats, **dict.fromkeys(where, 0))
    return {
        "arrays": {k: v.tobytes() for k, v in federation.server.arrays.to_numpy_dict().items()},
        "history": [dataclasses.asdict(record) for record in federation.server.history],
        "time": result.time,
        "stats": dataclasses.asdict(stats),
        "trace": [
            (entry.time, entry.event, entry.metadata.message_id, entry.metadata.message_type)
            for entry in result.trace
        ],
    }


SCENARIOS = {
    "fedavg on varied devices": [
        "simulation.speed_sigma=1.0",
        "simulation.latency=0.2",
        "simulation.dropout=0.1",
        "federation.round_timeout=60",
    ],
    "devices online part of the time (held messages)": [
        "simulation.availability=0.5",
        "simulation.availability_period=40",
        "simulation.speed_sigma=0.5",
    ],
    "scaffold (client state)": ["strategy.name=scaffold"],
    "ditto (personal models)": ["strategy.name=ditto"],
    "fedprox (a client mod, built with each client)": [
        "strategy.name=fedprox",
        "strategy.proximal_mu=0.1",
    ],
    "fedbuff (asynchronous)": [
        "strategy.name=fedbuff",
        "aggregation.trigger=goal",
        "aggregation.goal=4",
        "aggregation.concurrency=8",
        "simulation.slow_fraction=0.3",
    ],
    "local differential privacy (seeded noise)": [
        "privacy.mode=local",
        "privacy.clipping_norm=1.0",
        "privacy.noise_multiplier=0.1",
    ],
    "attackers": ["attack.kind=gaussian", "attack.fraction=0.2", "strategy.name=median"],
}


@pytest.mark.slow
@pytest.mark.parametrize("overrides", SCENARIOS.values(), ids=SCENARIOS.keys())
def test_two_worker_processes_give_the_run_of_one(overrides: list[str]) -> None:
    one = run_configured(overrides, workers=1)
    two = run_configured(overrides, workers=2)
    assert one[1].stats.offloaded == 0
    assert two[1].stats.offloaded > 0
    assert fingerprint(*two) == fingerprint(*one)


@pytest.mark.slow
def test_secure_aggregation_clients_are_answered_in_the_loop() -> None:
    overrides = ["privacy.secure_aggregation=true", "federation.clients_per_round=6"]
    one = run_configured(overrides, workers=1)
    two = run_configured(overrides, workers=2)
    assert two[1].stats.offloaded == 0  # their round secrets live on the object
    assert fingerprint(*two) == fingerprint(*one)


def test_light_client_work_stays_in_this_process() -> None:
    federation, result = run_configured([], workers=0)
    assert result.stats.offloaded == 0
    assert federation.server.history[-1].test_accuracy is not None


# -- the Python API, with workers of its own --------------------------------------------------
class Ticker(Worker):
    """Asks every client for ``rounds`` numbers; counts the answers."""

    start_sends = ("tick",)

    def __init__(self, num_clients: int, rounds: int) -> None:
        super().__init__(0)
        self.num_clients, self.rounds, self.answers = num_clients, rounds, []
        self.register_handlers("tick", self.on_answer, sends=["tick"])

    def on_start(self) -> None:
        self.ask(0)

    def ask(self, round_: int) -> None:
        for node in range(1, self.num_clients + 1):
            self.send(Message(RecordDict({"c": ConfigRecord({"round": round_})}), node, "tick"))

    def on_answer(self, message: Message) -> None:
        if message.has_error():
            self.answers.append(("error", message.sender, message.error.reason or ""))
            return
        value = message.content.config_records["c"]
        self.answers.append(
            (message.sender, value["round"], value["value"], message.metadata.created_at)
        )
        if message.sender == self.num_clients and value["round"] + 1 < self.rounds:
            self.ask(int(value["round"]) + 1)


class Answerer(Worker):
    """A portable client: answers with arithmetic on its id; optionally slow, or with a timer."""

    portable = True

    def __init__(self, node_id: int, busy: float = 0.0, timer: bool = False) -> None:
        super().__init__(node_id)
        self.busy, self.timer = busy, timer
        self.register_handlers("tick", self.on_tick, sends=["tick"])

    def on_tick(self, message: Message) -> Message | None:
        round_ = message.content.config_records["c"]["round"]
        if self.busy:
            deadline = time.perf_counter() + self.busy
            while time.perf_counter() < deadline:
                pass
        self.report_work(100 * self.node_id)
        reply = message.create_reply(
            RecordDict({"c": ConfigRecord({"round": round_, "value": self.node_id * 7})})
        )
        if self.timer:
            self.call_later(1.0, lambda: self.send(reply))
            return None
        return reply


class Answerers:
    """A client factory that worker processes can rebuild."""

    def __init__(self, busy: float = 0.0, timer: bool = False, fail_on: int = 0) -> None:
        self.busy, self.timer, self.fail_on = busy, timer, fail_on
        self.parent = os.getpid()

    def __call__(self, node_id: int) -> Worker:
        if node_id == self.fail_on:
            raise ValueError(f"no data for node {node_id}")
        return Answerer(node_id, self.busy, self.timer)


class DyingAnswerers(Answerers):
    def __call__(self, node_id: int) -> Worker:
        if os.getpid() != self.parent:
            os._exit(3)
        return super().__call__(node_id)


def run_ticks(factory: Answerers, workers: int, num_clients: int = 6) -> tuple[Any, Any]:
    server = Ticker(num_clients, rounds=3)
    simulation = Simulation(server, factory, num_clients=num_clients, workers=workers)
    result = simulation.run()
    trace = [(e.time, e.event, e.metadata.message_id) for e in result.trace]
    return (server.answers, trace, result.time), result.stats


def test_answers_from_worker_processes_keep_the_loop_s_clock() -> None:
    one, _ = run_ticks(Answerers(), workers=1)
    two, stats = run_ticks(Answerers(), workers=2)
    assert stats.offloaded == 18
    assert two == one


def test_a_handler_that_sets_a_timer_is_run_in_the_loop() -> None:
    one, _ = run_ticks(Answerers(timer=True), workers=1)
    two, stats = run_ticks(Answerers(timer=True), workers=2)
    assert stats.offloaded == 0
    assert two == one
    assert len(one[0]) == 18


@pytest.fixture
def ready_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Worker processes started in the background take over at the first delivery after their
    start (the loop waits for them), however long they take to start on this machine."""

    def ready(pool: ProcessPool) -> bool:
        pool.wait_ready()
        return True

    monkeypatch.setattr(ProcessPool, "ready", ready)


BUSY = 1.5 * AUTO_MIN_SECONDS  # a handler heavy enough for worker processes


@pytest.mark.skipif(cores() < 2, reason="needs two cores")
@pytest.mark.usefixtures("ready_when_asked")
def test_worker_processes_take_over_when_client_work_is_heavy() -> None:
    one, _ = run_ticks(Answerers(busy=BUSY), workers=1, num_clients=12)
    auto, stats = run_ticks(Answerers(busy=BUSY), workers=0, num_clients=12)
    assert stats.offloaded == 36 - AUTO_SAMPLE  # the first answers were timed here
    assert auto == one


@pytest.mark.skipif(cores() < 2, reason="needs two cores")
@pytest.mark.usefixtures("ready_when_asked")
def test_client_work_that_keeps_several_cores_busy_stays_here(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(loop, "AUTO_MAX_CORES_BUSY", 0.0)  # any handler looks multi-core
    one, _ = run_ticks(Answerers(busy=BUSY), workers=1, num_clients=12)
    auto, stats = run_ticks(Answerers(busy=BUSY), workers=0, num_clients=12)
    assert stats.offloaded == 0
    assert auto == one


@pytest.mark.skipif(cores() < 2, reason="needs two cores")
@pytest.mark.usefixtures("ready_when_asked")
def test_worker_processes_slower_than_this_one_hand_the_work_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(loop, "AUTO_TRIAL", 3)
    monkeypatch.setattr(loop, "_Trial", lambda here: Trial(here=0.0))  # nothing is faster
    one, _ = run_ticks(Answerers(busy=BUSY), workers=1, num_clients=12)
    auto, stats = run_ticks(Answerers(busy=BUSY), workers=0, num_clients=12)
    assert stats.offloaded == 3 + 1  # the trial's answers and the first, which is not timed
    assert auto == one


def test_a_factory_error_is_the_error_of_one_process() -> None:
    with pytest.raises(ValueError, match="no data for node 4"):
        run_ticks(Answerers(fail_on=4), workers=1)
    with pytest.raises(ValueError, match="no data for node 4"):
        run_ticks(Answerers(fail_on=4), workers=2)


def test_a_worker_process_that_dies_is_reported() -> None:
    with pytest.raises(FedbusError, match=r"worker process \d died"):
        run_ticks(DyingAnswerers(), workers=2)


def test_worker_processes_need_a_factory_and_a_sane_count() -> None:
    with pytest.raises(InvalidArgumentError, match="needs a client factory"):
        Simulation(Ticker(1, 1), [Answerer(1)], workers=2)
    with pytest.raises(InvalidArgumentError, match="workers must be an int >= 0"):
        Simulation(Ticker(1, 1), Answerers(), num_clients=1, workers=-1)
    with pytest.raises(InvalidArgumentError, match="no backend 'dask' is registered"):
        Simulation(Ticker(1, 1), Answerers(), num_clients=1, backend="dask")


# In a fresh interpreter: this test session imported fedbus.runtime.ray long ago.
RAY_IS_A_PLUGIN = """
import sys
from fedbus.errors import InvalidArgumentError
from fedbus.runtime.simulation import Simulation
from fedbus.runtime.simulation.executors import registered_backends
from fedbus.worker import Worker

assert "fedbus.runtime.ray" not in sys.modules, "the simulation imported the Ray backend"
try:
    Simulation(Worker(0), lambda node_id: Worker(), num_clients=1, backend="ray")
except InvalidArgumentError as exc:
    print(exc)
else:
    raise AssertionError("an unregistered backend was accepted")
import fedbus.runtime.ray
assert registered_backends() == ("local", "ray"), registered_backends()
Simulation(Worker(0), lambda node_id: Worker(), num_clients=1, backend="ray")
"""


def test_the_ray_backend_is_registered_by_importing_it() -> None:
    run = subprocess.run(
        [sys.executable, "-c", RAY_IS_A_PLUGIN], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    assert "no backend 'ray' is registered" in run.stdout
    assert "import fedbus.runtime.ray before building the Simulation" in run.stdout
    assert 'pip install "fedbus[ray]"' in run.stdout


def test_state_travels_with_the_task_and_comes_back() -> None:
    # SCAFFOLD keeps a control variate per client: with workers, it lives in the driver's
    # store and must be there after the run, equal to the one-process run's.
    one, _ = run_configured(["strategy.name=scaffold"], workers=1)
    two, _ = run_configured(["strategy.name=scaffold"], workers=2)
    for node_id in range(1, 31):
        a = one.client_fn.state.entries(node_id)
        b = two.client_fn.state.entries(node_id)
        assert a.keys() == b.keys()
        for name in a:
            for key in a[name]:
                np.testing.assert_array_equal(a[name][key], b[name][key])
    assert any(one.client_fn.state.entries(n) for n in range(1, 31))


@pytest.mark.skipif(cores() < 2, reason="needs two cores")
@pytest.mark.usefixtures("ready_when_asked")
def test_worker_processes_that_cannot_start_leave_the_work_here(
    caplog: pytest.LogCaptureFixture,
) -> None:
    one, _ = run_ticks(Answerers(busy=BUSY), workers=1, num_clients=12)
    auto, stats = run_ticks(DyingAnswerers(busy=BUSY), workers=0, num_clients=12)
    assert stats.offloaded == 0
    assert auto == one
    assert "client work stays in this process" in caplog.text
