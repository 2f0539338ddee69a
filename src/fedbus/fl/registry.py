"""The strategies configuration files name, each registered by its own module.

An algorithm is a server strategy and the client class that answers it (the standard
``Client`` unless the algorithm exchanges something new or keeps state on the clients), built
from the run's ``Settings``. A module adds one with a call at its bottom::

    register_strategy("fedavgm", FedAvgM, lambda settings: FedAvgM(
        momentum=settings["strategy.momentum"]))

Plugin packages add theirs through the ``fedbus.strategies`` entry point group
(``docs/plugins.md``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from fedbus.fl.client import Client
from fedbus.fl.strategy.base import Strategy
from fedbus.plugins import Registry, Settings

__all__ = ["STRATEGIES", "Algorithm", "register_strategy", "server_lr_option"]

S = TypeVar("S", bound=Strategy)


@dataclass(frozen=True, slots=True)
class Algorithm:
    """How a configured run builds one algorithm.

    Attributes
    ----------
    strategy : type of Strategy
        The server strategy's class; its flags (``aggregates_by_sum``, ``asynchronous``) are
        read without building it.
    build : callable
        ``build(settings) -> Strategy``: the strategy the run's ``Settings`` describe.
    client : type of Client
        The class of every client of the run.
    """

    strategy: type[Strategy]
    build: Callable[[Settings], Strategy]
    client: type[Client] = Client


#: Every strategy a configuration may name in ``strategy.name``.
STRATEGIES: Registry[Algorithm] = Registry(
    "strategy",
    group="fedbus.strategies",
    builtins=("fedbus.fl.strategy", "fedbus.fl.algorithms"),
)


def register_strategy(
    name: str,
    strategy: type[S],
    build: Callable[[Settings], S] | None = None,
    *,
    client: type[Client] = Client,
) -> Algorithm:
    """Make ``strategy`` available to configuration files as ``strategy.name = name``.

    Parameters
    ----------
    name : str
        The name configuration files use.
    strategy : type of Strategy
        The strategy's class.
    build : callable, optional
        ``build(settings) -> strategy`` reading the keys it needs from ``settings``, e.g.
        ``settings["strategy.server_lr"]``; by default ``strategy()``.
    client : type of Client
        The client class of the algorithm (default: the standard ``Client``).

    Returns
    -------
    Algorithm
        What was registered.

    Raises
    ------
    PluginError
        ``name`` is already registered by another module.
    """
    builder: Callable[[Settings], Strategy] = (
        build if build is not None else lambda settings: strategy()
    )
    module = build.__module__ if build is not None else strategy.__module__
    return STRATEGIES.register(name, Algorithm(strategy, builder, client), module=module)


def server_lr_option(settings: Settings) -> dict[str, Any]:
    """``{"server_lr": ...}`` when ``strategy.server_lr`` is set; 0 keeps the default."""
    server_lr = settings["strategy.server_lr"]
    return {"server_lr": server_lr} if server_lr > 0 else {}
