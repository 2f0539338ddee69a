"""From a ``Config`` to a runnable federation: data, model, server, clients and runtime.

This is the one place where configuration keys meet the objects they configure; everything
below ``run`` takes plain arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedbus.data import FederatedDataset, build_dataset
from fedbus.errors import ConfigError
from fedbus.fl import Client, FedAvg, RoundRecord, Server, Strategy
from fedbus.run.config import Config
from fedbus.runtime.simulation import (
    ProfileDistribution,
    ProfileSource,
    ProfileTable,
    Simulation,
    load_profiles_csv,
)
from fedbus.train import NumpyModel, NumpyTrainer, build_model

__all__ = ["STRATEGY_FACTORIES", "Federation", "build_federation"]

#: Strategy names in configuration files, and how to build each.
STRATEGY_FACTORIES: dict[str, Callable[[Config], Strategy]] = {"fedavg": lambda config: FedAvg()}


@dataclass(frozen=True, slots=True)
class Federation:
    """Everything a configured run is made of, ready to ``simulation.run()``."""

    config: Config
    dataset: FederatedDataset
    model: NumpyModel
    server: Server
    client_fn: Callable[[int], Client]
    simulation: Simulation


def _dataset(config: Config) -> FederatedDataset:
    data, seed = config.data, config.federation.seed
    options: dict[str, Any] = {"seed": seed, "client_test_fraction": data.client_test_fraction}
    if data.dataset == "synthetic":
        options.update(
            alpha=data.synthetic_alpha,
            beta=data.synthetic_beta,
            num_features=data.num_features,
            samples_per_client=data.samples_per_client,
        )
    else:
        options.update(
            partition=data.partition,
            alpha=data.alpha,
            shards_per_client=data.shards_per_client,
            central_test_fraction=data.central_test_fraction,
        )
        if data.dataset in ("npz", "csv"):
            options["path"] = data.path
        if data.dataset == "csv":
            options["label_column"] = data.label_column
    return build_dataset(data.dataset, config.federation.num_clients, **options)


def _profiles(config: Config) -> ProfileSource:
    simulation = config.simulation
    distribution = ProfileDistribution(
        speed=simulation.speed,
        speed_sigma=simulation.speed_sigma,
        slow_fraction=simulation.slow_fraction,
        slow_factor=simulation.slow_factor,
        uplink_mbps=simulation.uplink_mbps,
        downlink_mbps=simulation.downlink_mbps,
        latency=simulation.latency,
        dropout=simulation.dropout,
        seed=config.federation.seed,
    )
    if not simulation.profiles_csv:
        return distribution
    table = load_profiles_csv(simulation.profiles_csv)
    # Clients missing from the trace get the configured distribution's median device.
    return ProfileTable(table, distribution.typical())


def _evaluate_fn(
    model: NumpyModel, dataset: FederatedDataset
) -> Callable[[dict[str, np.ndarray[Any, Any]]], tuple[float, dict[str, float]]]:
    x_test, y_test = dataset.test_set()

    def evaluate(arrays: dict[str, np.ndarray[Any, Any]]) -> tuple[float, dict[str, float]]:
        accuracy = float(np.mean(model.predict(arrays, x_test) == y_test))
        return model.loss(arrays, x_test, y_test), {"accuracy": accuracy}

    return evaluate


def build_federation(
    config: Config, on_round_end: Callable[[RoundRecord], None] | None = None
) -> Federation:
    """Build the dataset, model, server, client factory and simulation that ``config`` describes."""
    federation, trainer = config.federation, config.trainer
    if federation.round_timeout == 0 and config.simulation.dropout > 0:
        raise ConfigError(
            "simulation.dropout > 0 needs federation.round_timeout > 0: a lost reply is only "
            "noticed when the round times out"
        )
    dataset = _dataset(config)
    model_options = {"hidden": config.model.hidden} if config.model.name == "mlp" else {}
    model = build_model(
        config.model.name, dataset.num_features, dataset.num_classes, **model_options
    )
    server = Server(
        STRATEGY_FACTORIES[config.strategy.name](config),
        model.init(seed=federation.seed),
        num_rounds=federation.num_rounds,
        clients_per_round=federation.clients_per_round,
        min_replies=federation.min_replies or None,
        round_timeout=federation.round_timeout or None,
        max_round_retries=federation.max_round_retries,
        train_config={"epochs": trainer.epochs, "batch_size": trainer.batch_size, "lr": trainer.lr},
        evaluate_fn=_evaluate_fn(model, dataset),
        evaluate_every=federation.evaluate_every,
        federated_evaluate_every=federation.federated_evaluate_every,
        clients_per_evaluation=federation.clients_per_evaluation,
        seed=federation.seed,
        on_round_end=on_round_end,
    )

    def client_fn(node_id: int) -> Client:
        data = dataset.client(node_id - 1)
        local = NumpyTrainer(
            model,
            data.x_train,
            data.y_train,
            data.x_test,
            data.y_test,
            epochs=trainer.epochs,
            batch_size=trainer.batch_size,
            lr=trainer.lr,
            # One stream per client, the same in every run with this seed.
            seed=federation.seed * 1_000_003 + node_id,
        )
        return Client(local, node_id)

    simulation = Simulation(
        server,
        client_fn,
        num_clients=federation.num_clients,
        seed=federation.seed,
        profiles=_profiles(config),
        check_serialization=config.simulation.check_serialization,
    )
    return Federation(config, dataset, model, server, client_fn, simulation)
