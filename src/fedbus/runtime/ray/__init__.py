"""The Ray backend of the simulation: client work as Ray tasks, on one machine or a cluster.

Install it with ``pip install 'fedbus[ray]'``. Importing this module registers the backend
``"ray"`` with the simulation (``fedbus.runtime.simulation.executors``), which then accepts
``Simulation(..., backend="ray")``; ``fedbus run`` imports it for ``simulation.backend = "ray"``.
A script that builds its own ``Simulation`` imports it first::

    import fedbus.runtime.ray  # registers "ray"

Ray itself is imported only when a simulation starts its executor.
"""

from fedbus.runtime.ray.executor import RayExecutor
from fedbus.runtime.simulation.executors import ExecutorSettings, register_executor
from fedbus.runtime.simulation.offload import ClientFactory

__all__ = ["RAY", "RayExecutor"]

#: The backend name this module registers.
RAY = "ray"


def _ray_executor(factory: ClientFactory, settings: ExecutorSettings) -> RayExecutor:
    return RayExecutor(factory, address=settings.address)


register_executor(RAY, _ray_executor)
