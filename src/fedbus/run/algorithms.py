"""Strategy names in configuration files, and what each one builds.

An algorithm is a strategy for the server and, for the algorithms that exchange something new
or keep state on the clients, a client class with the handlers that answer it. Adding an
algorithm to the command line is one entry here and one name in ``config.STRATEGIES``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fedbus.fl import Client, FedAvg, Strategy
from fedbus.fl.algorithms import (
    Ditto,
    DittoClient,
    FedBN,
    FedBNClient,
    FedProx,
    Scaffold,
    ScaffoldClient,
)
from fedbus.fl.strategy.fedasync import FedAsync
from fedbus.fl.strategy.fedbuff import FedBuff
from fedbus.fl.strategy.fedopt import FedAdagrad, FedAdam, FedAvgM, FedYogi
from fedbus.fl.strategy.robust import Bulyan, Krum, Median, MultiKrum, NormBound, TrimmedMean
from fedbus.run.config import Config

__all__ = ["ALGORITHMS", "Algorithm", "build_strategy"]


@dataclass(frozen=True, slots=True)
class Algorithm:
    """How a configured run builds one algorithm: its server strategy and its client class."""

    strategy: Callable[[Config], Strategy]
    client: type[Client] = Client


def _server_lr(config: Config) -> dict[str, Any]:
    """``server_lr`` when the configuration sets one; 0 leaves the algorithm's default."""
    server_lr = config.strategy.server_lr
    return {"server_lr": server_lr} if server_lr > 0 else {}


def _adaptive(config: Config) -> dict[str, Any]:
    strategy = config.strategy
    return {
        **_server_lr(config),
        "beta1": strategy.beta1,
        "beta2": strategy.beta2,
        "tau": strategy.tau,
    }


ALGORITHMS: dict[str, Algorithm] = {
    "fedavg": Algorithm(lambda config: FedAvg()),
    "fedavgm": Algorithm(
        lambda config: FedAvgM(**_server_lr(config), momentum=config.strategy.momentum)
    ),
    "fedadagrad": Algorithm(
        lambda config: FedAdagrad(
            **_server_lr(config), beta1=config.strategy.beta1, tau=config.strategy.tau
        )
    ),
    "fedadam": Algorithm(lambda config: FedAdam(**_adaptive(config))),
    "fedyogi": Algorithm(lambda config: FedYogi(**_adaptive(config))),
    "fedprox": Algorithm(lambda config: FedProx(config.strategy.proximal_mu)),
    "scaffold": Algorithm(
        lambda config: Scaffold(config.federation.num_clients, **_server_lr(config)),
        ScaffoldClient,
    ),
    "krum": Algorithm(lambda config: Krum(config.strategy.num_malicious)),
    "multikrum": Algorithm(
        lambda config: MultiKrum(
            config.strategy.num_malicious, config.strategy.num_selected or None
        )
    ),
    "median": Algorithm(lambda config: Median()),
    "trimmed_mean": Algorithm(lambda config: TrimmedMean(config.strategy.trim_fraction)),
    "bulyan": Algorithm(lambda config: Bulyan(config.strategy.num_malicious)),
    "norm_bound": Algorithm(lambda config: NormBound(config.strategy.max_norm)),
    "fedbn": Algorithm(lambda config: FedBN(config.strategy.local_layers.split(",")), FedBNClient),
    "ditto": Algorithm(lambda config: Ditto(config.strategy.ditto_lambda), DittoClient),
    "fedasync": Algorithm(lambda config: FedAsync(config.strategy.fedasync_alpha)),
    "fedbuff": Algorithm(lambda config: FedBuff(**_server_lr(config))),
}


def build_strategy(config: Config) -> Strategy:
    """The server strategy ``config.strategy`` describes."""
    return ALGORITHMS[config.strategy.name].strategy(config)
