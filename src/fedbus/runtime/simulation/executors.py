"""Where a simulation answers client work away from its loop: executors, by backend name.

An executor answers tasks (see ``offload``): worker processes on this machine, or a cluster. The
simulation knows backends only by name, through this registry. ``"local"`` (``ProcessPool``)
is registered here; any other backend registers itself when its module is imported, which is
how ``fedbus.runtime.ray`` adds ``"ray"``. Imports run one way: a backend imports the
simulation, never the reverse. ``fedbus run`` imports the backend its configuration names; a
script that builds a ``Simulation`` itself imports it first::

    import fedbus.runtime.ray  # registers the "ray" backend (pip install "fedbus[ray]")

    Simulation(server, client_fn, num_clients=1000, backend="ray").run()

A new backend is a class with the four methods of ``ClientExecutor`` and one call to
``register_executor`` in its module.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from fedbus.errors import InvalidArgumentError
from fedbus.runtime.simulation.offload import ClientFactory, Outcome, Task
from fedbus.runtime.simulation.processes import ProcessPool

__all__ = [
    "LOCAL",
    "ClientExecutor",
    "ExecutorFactory",
    "ExecutorSettings",
    "StartsAhead",
    "build_executor",
    "check_backend",
    "register_executor",
    "registered_backends",
]

#: The backend that runs client work on this machine: ``workers`` processes.
LOCAL = "local"


class ClientExecutor(Protocol):
    """Where tasks are answered when client work runs outside the loop (see ``offload``)."""

    def submit(self, tasks: Sequence[Task]) -> None:
        """Start answering ``tasks``."""

    def result(self, task_id: int) -> Outcome:
        """The outcome of a submitted task, waiting for it if needed."""

    def discard(self, task_id: int) -> None:
        """Forget a submitted task whose outcome will not be used."""

    def close(self) -> None:
        """Release processes, files and connections."""


@dataclass(frozen=True, slots=True)
class ExecutorSettings:
    """What a simulation tells the executor it builds.

    Attributes
    ----------
    workers
        Processes to start on this machine (the ``"local"`` backend).
    address
        The cluster to join; None: one on this machine.
    warm_up
        A client the executor's processes may build as soon as they start, before any task
        (so that importing its libraries and building it is not on the run's path); None: none.
        Given, the executor starts in the background, at low priority (``StartsAhead``).
    """

    workers: int
    address: str | None = None
    warm_up: int | None = None


@runtime_checkable
class StartsAhead(Protocol):
    """An executor that can start in the background while the loop goes on answering here."""

    def start(self) -> None:
        """Start, without waiting for what starts to be ready."""

    def ready(self) -> bool:
        """True once submitted work would be taken up at once; never waits."""


#: Builds a backend's executor from the simulation's client factory and its settings.
ExecutorFactory = Callable[[ClientFactory, ExecutorSettings], ClientExecutor]

_EXECUTORS: dict[str, ExecutorFactory] = {}


def register_executor(backend: str, factory: ExecutorFactory) -> None:
    """Make ``backend`` a name ``Simulation(backend=...)`` accepts; a second call replaces it."""
    if not isinstance(backend, str) or not backend:
        raise InvalidArgumentError(f"an executor backend needs a name, got {backend!r}")
    _EXECUTORS[backend] = factory


def registered_backends() -> tuple[str, ...]:
    """The backend names registered so far, in the order they were registered."""
    return tuple(_EXECUTORS)


def check_backend(backend: str) -> None:
    """Raise ``InvalidArgumentError`` unless ``backend`` is registered, saying how to get it."""
    if backend in _EXECUTORS:
        return
    known = ", ".join(f'"{name}"' for name in _EXECUTORS)
    raise InvalidArgumentError(
        f"simulate: no backend {backend!r} is registered (registered: {known}). A backend "
        'registers itself when its module is imported: for "ray", import fedbus.runtime.ray '
        'before building the Simulation (Ray itself: pip install "fedbus[ray]")'
    )


def build_executor(
    backend: str, factory: ClientFactory, settings: ExecutorSettings
) -> ClientExecutor:
    """The executor of ``backend``, answering tasks with clients that ``factory`` builds."""
    check_backend(backend)
    return _EXECUTORS[backend](factory, settings)


def _process_pool(factory: ClientFactory, settings: ExecutorSettings) -> ProcessPool:
    return ProcessPool(settings.workers, factory, warm_up=settings.warm_up)


register_executor(LOCAL, _process_pool)
