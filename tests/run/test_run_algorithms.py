"""Every algorithm and both frameworks, reached from a configuration file's names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedbus.errors import ConfigError
from fedbus.fl import Client
from fedbus.fl.algorithms import DittoClient, FedBNClient, ScaffoldClient
from fedbus.fl.attacks import AttackedTrainer, choose_attackers
from fedbus.fl.registry import STRATEGIES
from fedbus.run.algorithms import settings_of
from fedbus.run.checkpoint import load_checkpoint, load_strategy_state, save_checkpoint
from fedbus.run.config import load_config
from fedbus.run.federation import build_federation

SMALL = [
    "data.dataset=synthetic",
    "data.num_features=10",
    "federation.num_clients=12",
    "federation.clients_per_round=8",
    "federation.num_rounds=2",
    "trainer.epochs=1",
    "trainer.lr=0.1",
]


def test_every_strategy_name_builds_a_strategy_of_that_name() -> None:
    config = load_config(None, SMALL)
    for name in STRATEGIES.builtin_names():
        algorithm = STRATEGIES.get(name)
        strategy = algorithm.build(settings_of(config))
        assert isinstance(strategy, algorithm.strategy)
        assert strategy.name == name


@pytest.mark.parametrize("name", STRATEGIES.builtin_names())
def test_every_algorithm_runs_from_its_config_name(name: str) -> None:
    options = {
        "fedbn": ["model.name=mlp", "strategy.local_layers=output.*"],
        "trimmed_mean": ["strategy.trim_fraction=0.2"],
        "fedasync": ["aggregation.trigger=goal", "aggregation.goal=1"],
        "fedbuff": ["aggregation.trigger=goal", "aggregation.goal=4"],
    }.get(name, [])
    federation = build_federation(load_config(None, [*SMALL, f"strategy.name={name}", *options]))
    result = federation.simulation.run()
    server = federation.server
    assert server.finished, server.failure
    assert server.strategy.name == name
    assert len(server.history) == 2
    assert result.stats.messages_sent > 0
    assert all(np.isfinite(v).all() for v in server.arrays.to_numpy_dict().values())


def test_algorithms_with_a_client_side_build_their_clients() -> None:
    for name, client_class in (
        ("fedavg", Client),
        ("scaffold", ScaffoldClient),
        ("ditto", DittoClient),
        ("fedbn", FedBNClient),
    ):
        federation = build_federation(load_config(None, [*SMALL, f"strategy.name={name}"]))
        assert type(federation.client_fn(1)) is client_class


def test_strategy_keys_reach_the_strategies() -> None:
    config = load_config(
        None, [*SMALL, "strategy.name=fedadam", "strategy.server_lr=0.05", "strategy.tau=0.01"]
    )
    strategy = build_federation(config).server.strategy
    assert strategy.server_lr == 0.05  # type: ignore[attr-defined]
    assert strategy.tau == 0.01  # type: ignore[attr-defined]
    default = build_federation(load_config(None, [*SMALL, "strategy.name=fedavgm"])).server.strategy
    assert default.server_lr == 1.0  # type: ignore[attr-defined]


def test_attackers_are_chosen_by_the_attack_section() -> None:
    config = load_config(
        None, [*SMALL, "attack.kind=scale", "attack.fraction=0.25", "attack.scale=-5"]
    )
    federation = build_federation(config)
    attackers = choose_attackers(12, 0.25, 0)
    assert len(attackers) == 3
    for node_id in range(1, 13):
        trainer = federation.client_fn(node_id).trainer
        assert isinstance(trainer, AttackedTrainer) == (node_id in attackers)


def test_label_flipping_attackers_train_on_flipped_labels() -> None:
    config = load_config(None, [*SMALL, "attack.kind=label_flip", "attack.fraction=0.5"])
    federation = build_federation(config)
    attacker = min(choose_attackers(12, 0.5, 0))
    honest = min(set(range(1, 13)) - choose_attackers(12, 0.5, 0))
    for node_id, flipped in ((attacker, True), (honest, False)):
        data = federation.dataset.client(node_id - 1)
        trained_on = federation.client_fn(node_id).trainer._y_train  # type: ignore[attr-defined]
        expected = federation.dataset.num_classes - 1 - data.y_train if flipped else data.y_train
        np.testing.assert_array_equal(trained_on, expected)


def test_a_cnn_needs_torch() -> None:
    with pytest.raises(ConfigError, match='framework = "torch"'):
        build_federation(load_config(None, [*SMALL, "model.name=cnn"]))


@pytest.mark.slow
def test_torch_and_numpy_runs_of_the_same_config_agree() -> None:
    common = [*SMALL, "trainer.batch_size=0", "trainer.epochs=3"]
    numpy_run = build_federation(load_config(None, common))
    torch_run = build_federation(load_config(None, [*common, "model.framework=torch"]))
    numpy_run.simulation.run()
    torch_run.simulation.run()
    for name, value in numpy_run.server.arrays.to_numpy_dict().items():
        np.testing.assert_allclose(
            torch_run.server.arrays.to_numpy_dict()[name], value, rtol=0, atol=1e-4
        )
    numpy_accuracy = numpy_run.server.history[-1].test_accuracy
    torch_accuracy = torch_run.server.history[-1].test_accuracy
    assert numpy_accuracy is not None
    assert torch_accuracy == pytest.approx(numpy_accuracy, abs=0.01)


@pytest.mark.slow
def test_a_torch_cnn_trains_on_digits_from_the_config() -> None:
    config = load_config(
        None,
        [
            "model.framework=torch",
            "model.name=cnn",
            "federation.num_clients=10",
            "federation.clients_per_round=5",
            "federation.num_rounds=4",
            "data.partition=iid",
            "trainer.epochs=1",
            "trainer.lr=0.05",
        ],
    )
    federation = build_federation(config)
    federation.simulation.run()
    accuracies = [record.test_accuracy or 0.0 for record in federation.server.history]
    assert accuracies[-1] > 0.6
    assert accuracies[-1] > accuracies[0]


def test_the_strategy_state_travels_in_the_checkpoint(tmp_path: Path) -> None:
    federation = build_federation(load_config(None, [*SMALL, "strategy.name=fedadam"]))
    federation.simulation.run()
    server = federation.server
    state = server.strategy.state()
    assert state
    save_checkpoint(tmp_path, 2, server.arrays.to_numpy_dict(), None, state)
    completed, arrays = load_checkpoint(tmp_path)
    assert completed == 2
    assert set(arrays) == set(server.arrays.to_numpy_dict())
    restored = load_strategy_state(tmp_path)
    assert set(restored) == set(state)
    for key, value in state.items():
        np.testing.assert_array_equal(restored[key], value)


def test_client_state_spills_beyond_the_configured_budget() -> None:
    config = load_config(
        None, [*SMALL, "strategy.name=scaffold", "simulation.client_state_mb=0.001"]
    )
    federation = build_federation(config)
    federation.simulation.run()
    store = federation.client_fn(1).state
    assert store.max_memory_bytes == 1048
    assert len(store) >= 8
    assert store.spilled > 0
    assert store.memory_bytes <= 1048
