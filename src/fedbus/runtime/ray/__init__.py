"""The Ray backend of the simulation: client work as Ray tasks, on one machine or a cluster.

Install it with ``pip install 'fedbus[ray]'``; ``Simulation(..., backend="ray")`` (config:
``simulation.backend = "ray"``) uses it.
"""

from fedbus.runtime.ray.executor import RayExecutor

__all__ = ["RayExecutor"]
