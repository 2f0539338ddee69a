"""From a ``Config`` to a runnable federation: data, model, server, clients and runtime.

This is the one place where configuration keys meet the objects they configure; everything
below ``run`` takes plain arguments.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedbus.data import ClientData, FederatedDataset, build_dataset
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

__all__ = [
    "STRATEGY_FACTORIES",
    "Federation",
    "build_client",
    "build_config_model",
    "build_federation",
    "build_model_and_data",
    "build_server",
]

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


def build_model_and_data(config: Config) -> tuple[FederatedDataset, NumpyModel]:
    """The dataset split among ``federation.num_clients`` clients, and the model to train."""
    dataset = _dataset(config)
    return dataset, build_config_model(config, dataset.num_features, dataset.num_classes)


def build_config_model(config: Config, num_features: int, num_classes: int) -> NumpyModel:
    """The model ``config.model`` names, for data of this shape."""
    options = {"hidden": config.model.hidden} if config.model.name == "mlp" else {}
    return build_model(config.model.name, num_features, num_classes, **options)


def build_server(
    config: Config,
    dataset: FederatedDataset,
    model: NumpyModel,
    on_round_end: Callable[[RoundRecord], None] | None = None,
    *,
    initial_arrays: Mapping[str, np.ndarray[Any, Any]] | None = None,
    first_round: int = 1,
    sampler_state: Mapping[str, Any] | None = None,
) -> Server:
    """The FL server ``config`` describes, evaluating on ``dataset``'s central test set.

    ``initial_arrays``, ``first_round`` and ``sampler_state`` continue a run (a resumed
    deployment): the model, the round and the client sampler where it stopped.
    """
    federation, trainer = config.federation, config.trainer
    return Server(
        STRATEGY_FACTORIES[config.strategy.name](config),
        model.init(seed=federation.seed) if initial_arrays is None else dict(initial_arrays),
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
        first_round=first_round,
        sampler_state=sampler_state,
        on_round_end=on_round_end,
    )


def build_client(
    config: Config, model: NumpyModel, data: ClientData, node_id: int | None
) -> Client:
    """The FL client of node ``node_id``, training ``model`` on ``data`` as configured.

    ``node_id=None`` leaves the id to the runtime (a deployed client with its own data); its
    trainer is then seeded as node 0's.
    """
    federation, trainer = config.federation, config.trainer
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
        seed=federation.seed * 1_000_003 + (node_id or 0),
    )
    return Client(local, node_id)


def build_federation(
    config: Config, on_round_end: Callable[[RoundRecord], None] | None = None
) -> Federation:
    """Build the dataset, model, server, client factory and simulation that ``config`` describes."""
    federation = config.federation
    if federation.round_timeout == 0 and config.simulation.dropout > 0:
        raise ConfigError(
            "simulation.dropout > 0 needs federation.round_timeout > 0: a lost reply is only "
            "noticed when the round times out"
        )
    dataset, model = build_model_and_data(config)
    server = build_server(config, dataset, model, on_round_end)

    def client_fn(node_id: int) -> Client:
        return build_client(config, model, dataset.client(node_id - 1), node_id)

    simulation = Simulation(
        server,
        client_fn,
        num_clients=federation.num_clients,
        seed=federation.seed,
        profiles=_profiles(config),
        check_serialization=config.simulation.check_serialization,
    )
    return Federation(config, dataset, model, server, client_fn, simulation)
