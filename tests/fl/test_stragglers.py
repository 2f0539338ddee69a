"""Emulated stragglers: who straggles, the work they are asked for, and runs that use them."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest

from fedbus.errors import ConfigError, InvalidArgumentError
from fedbus.fl import Client, FedAvg, Server
from fedbus.fl.stragglers import Stragglers
from fedbus.run import load_config
from fedbus.run.federation import build_federation
from fedbus.runtime.simulation import simulate
from fedbus.train import NumpyTrainer, SoftmaxRegression


class RecordingTrainer(NumpyTrainer):
    """A trainer that notes the epochs of every train request it gets."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.epochs_asked: list[int] = []

    def fit(self, arrays: Any, config: Any, *args: Any, **kwargs: Any) -> Any:
        self.epochs_asked.append(int(config["epochs"]))
        return super().fit(arrays, config, *args, **kwargs)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    ("sampled", "fraction", "expected"), [(10, 0.9, 9), (10, 0.5, 5), (3, 0.5, 1), (4, 0.0, 0)]
)
def test_the_share_of_stragglers_and_their_work(
    seed: int, sampled: int, fraction: float, expected: int
) -> None:
    plan = Stragglers(fraction, seed=seed)
    nodes = list(range(100, 100 + sampled))
    slow = plan.assign(3, 0, nodes, epochs=20)
    assert len(slow) == expected == plan.count(sampled)
    assert set(slow) <= set(nodes)
    assert all(1 <= epochs <= 19 for epochs in slow.values())
    assert slow == plan.assign(3, 0, nodes, epochs=20)


def test_each_round_and_attempt_draws_anew() -> None:
    plan = Stragglers(0.5, seed=0)
    nodes = list(range(40))
    draws = {
        tuple(sorted(plan.assign(r, a, nodes, epochs=20).items())) for r in (1, 2) for a in (0, 1)
    }
    assert len(draws) == 4


def test_dropped_stragglers_get_no_work() -> None:
    slow = Stragglers(0.9, drop=True, seed=0).assign(1, 0, list(range(10)), epochs=1)
    assert len(slow) == 9
    assert set(slow.values()) == {0}


def test_impossible_plans_are_refused() -> None:
    with pytest.raises(InvalidArgumentError, match=r"fraction: expected a number in \[0, 1\]"):
        Stragglers(1.5)
    with pytest.raises(InvalidArgumentError, match="leaves no client to train"):
        Stragglers(1.0, drop=True)
    with pytest.raises(InvalidArgumentError, match="epochs is 1; train at least 2 epochs"):
        Stragglers(0.5).assign(1, 0, [1, 2], epochs=1)


def _federation(
    fraction: float, drop: bool, min_replies: int | None = None
) -> tuple[Server, list[RecordingTrainer]]:
    rng = np.random.default_rng(0)
    model = SoftmaxRegression(num_features=4, num_classes=2)
    trainers = [
        RecordingTrainer(model, rng.normal(size=(8, 4)), rng.integers(0, 2, 8), epochs=6, lr=0.1)
        for _ in range(10)
    ]
    server = Server(
        FedAvg(),
        model.init(seed=0),
        num_rounds=4,
        clients_per_round=10,
        min_replies=min_replies,
        train_config={"epochs": 6, "batch_size": 0, "lr": 0.1},
        stragglers=Stragglers(fraction, drop=drop, seed=0),
    )
    simulate(server, [Client(t) for t in trainers])
    return server, trainers


def test_partial_work_lowers_the_stragglers_epochs_only() -> None:
    server, trainers = _federation(0.5, drop=False)
    assert server.finished
    assert server.failure is None
    asked = [e for t in trainers for e in t.epochs_asked]
    assert len(asked) == 40  # every sampled client trained each round
    assert sum(e == 6 for e in asked) == 20  # half did the full work
    assert all(1 <= e <= 5 for e in asked if e != 6)


def test_dropped_stragglers_are_not_asked_and_the_round_goes_on() -> None:
    server, trainers = _federation(0.9, drop=True)
    assert server.finished
    assert server.failure is None
    assert [record.clients_sampled for record in server.history] == [1, 1, 1, 1]
    assert sum(len(t.epochs_asked) for t in trainers) == 4
    assert server.min_replies == 1  # the default follows the clients left


def test_min_replies_above_the_clients_left_is_refused() -> None:
    expected = "min_replies must be in 1..1 (clients_per_round less the dropped stragglers), got 2"
    with pytest.raises(InvalidArgumentError, match=re.escape(expected)):
        _federation(0.9, drop=True, min_replies=2)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["federation.straggler_fraction=1", "federation.drop_stragglers=true"],
            "drops every sampled client",
        ),
        (["federation.straggler_fraction=0.5", "trainer.epochs=1"], "set trainer.epochs >= 2"),
        (
            [
                "federation.straggler_fraction=0.9",
                "federation.drop_stragglers=true",
                "federation.min_replies=3",
            ],
            r"leaves 1: set min_replies <= 1",
        ),
        (
            ["federation.straggler_fraction=0.5", "strategy.name=fedbuff"],
            "asynchronous training has no rounds",
        ),
        (
            ["federation.straggler_fraction=0.5", "privacy.secure_aggregation=true"],
            "not emulated with privacy.secure_aggregation",
        ),
    ],
)
def test_configurations_that_cannot_straggle_are_refused(
    overrides: list[str], message: str
) -> None:
    config = load_config(None, ["federation.num_clients=10", "federation.num_rounds=1", *overrides])
    with pytest.raises(ConfigError, match=message):
        build_federation(config)


def test_a_configured_run_with_stragglers_repeats_exactly() -> None:
    overrides = [
        "data.dataset=synthetic",
        "federation.num_clients=20",
        "federation.num_rounds=3",
        "federation.straggler_fraction=0.5",
        "trainer.epochs=4",
    ]
    finals = []
    for _ in range(2):
        federation = build_federation(load_config(None, overrides))
        federation.simulation.run()
        finals.append(federation.server.arrays.to_numpy_dict())
    for key, value in finals[0].items():
        np.testing.assert_array_equal(value, finals[1][key])
