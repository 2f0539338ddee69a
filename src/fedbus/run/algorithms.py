"""From ``strategy.name`` to the algorithm it names: its server strategy and its client class.

Every strategy registers itself in its own module (``fedbus.fl.registry``), and plugin
packages add theirs through entry points; nothing here lists names.
"""

from __future__ import annotations

from fedbus.fl import Client, Strategy
from fedbus.fl.registry import STRATEGIES, Algorithm
from fedbus.plugins import Settings
from fedbus.run.config import Config, config_to_dict

__all__ = ["algorithm", "build_strategy", "client_class", "settings_of"]


def settings_of(config: Config) -> Settings:
    """``config`` as the ``Settings`` that registered builders read."""
    return Settings(config_to_dict(config))


def algorithm(config: Config) -> Algorithm:
    """The registered algorithm ``config.strategy.name`` names (its plugin loaded if needed)."""
    return STRATEGIES.get(config.strategy.name)


def build_strategy(config: Config) -> Strategy:
    """The server strategy ``config.strategy`` describes."""
    return algorithm(config).build(settings_of(config))


def client_class(config: Config) -> type[Client]:
    """The class of the clients of the algorithm ``config.strategy.name`` names."""
    return algorithm(config).client
