"""``RayExecutor``: answers a simulation's tasks as Ray tasks.

Per batch of tasks (a round's requests), the distinct arrays (the global model) go into Ray's
object store once (``ray.put``) and every Ray task reads them from there without a copy. Tasks
are grouped so that each Ray task holds at least ``MIN_TASK_SECONDS`` of client work (measured
on the batches before), because a Ray task has a fixed cost of its own; each group carries its
clients' requests and states as codec frames and returns their outcomes the same way. The
factory that builds the clients goes to the object store once per simulation; each Ray worker
builds its copies with it and keeps them for the next tasks of the same simulation.

Client state stays with the simulation's store in the driver: it travels with each task and
comes back with its outcome, so any Ray worker may answer any client.
"""

from __future__ import annotations

import math
import os
import uuid
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from fedbus.errors import ConfigError
from fedbus.runtime.simulation.offload import (
    ArrayTable,
    Arrivals,
    ClientFactory,
    ClientHost,
    Outcome,
    Task,
    decode_outcome,
    decode_task,
    encode_outcome,
    encode_task,
)

__all__ = ["MIN_TASK_SECONDS", "RayExecutor"]

#: The least client work a Ray task should hold: below it, Ray's own cost per task dominates.
MIN_TASK_SECONDS = 0.010

# In a Ray worker process: the client host of the simulation it last worked for.
_HOST: dict[str, ClientHost] = {}


def _answer_group(
    simulation: str,
    factory: ClientFactory,
    arrays: list[np.ndarray[Any, Any]],
    blobs: list[bytes],
) -> list[bytes]:
    """Answer a group of tasks in a Ray worker: the body of every Ray task this backend runs."""
    host = _HOST.get(simulation)
    if host is None:
        _HOST.clear()  # one simulation at a time per worker: drop the last one's clients
        host = _HOST[simulation] = ClientHost(factory)
    return [b"".join(encode_outcome(host.answer(decode_task(blob, arrays)))) for blob in blobs]


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ConfigError('simulation backend "ray" needs Ray: pip install "fedbus[ray]"') from exc
    return ray


def _connect(ray: Any, address: str | None) -> None:
    """``ray.init`` at ``address``; a ``ConfigError`` saying what to do when Ray cannot."""
    try:
        with warnings.catch_warnings():
            # Ray warns before it raises on a ray:// timeout; the error below says the same
            warnings.filterwarnings("ignore", message="Ray Client connection timed out")
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
    except (ConnectionError, TimeoutError, ValueError) as exc:
        raise ConfigError(_unreachable(address, exc)) from exc


def _unreachable(address: str | None, exc: Exception) -> str:
    """Why Ray could not start at ``address``, and what to do, in one line."""
    local = "or leave simulation.ray_address empty to run a local Ray for this run"
    if not address:
        from_environment = os.environ.get("RAY_ADDRESS", "")
        if not from_environment:
            return f"could not start a local Ray: {exc}"
        # Ray joins the cluster RAY_ADDRESS names when no address is given
        setting = f'the RAY_ADDRESS environment variable ("{from_environment}")'
        return f"{setting}: no Ray cluster answers there ({exc}); check it, or unset it"
    setting = f'simulation.ray_address = "{address}"'
    if address == "auto":
        return (
            f"{setting}: no Ray cluster is running on this machine; start one with "
            f"`ray start --head`, {local}"
        )
    if isinstance(exc, ValueError):
        return (
            f'{setting}: not an address Ray understands ({exc}); expected "auto", '
            f'"ray://HOST:PORT" (a head node\'s Ray Client port, 10001 by default), {local}'
        )
    return (
        f"{setting}: no Ray cluster answers at this address ({exc}); check the address and "
        f"that the head node can be reached from here, {local}"
    )


class RayExecutor:
    """Answers tasks on the Ray cluster at ``address`` (None: the local Ray, started if needed).

    A Ray this executor started is shut down by ``close``; one that was running already (a
    cluster, or ``ray.init`` called by the user) is left running.
    """

    def __init__(self, factory: ClientFactory, *, address: str | None = None) -> None:
        ray = _ray()
        self._ray = ray
        self._started_ray = False
        if not ray.is_initialized():
            _connect(ray, address)
            self._started_ray = True
        self._remote = ray.remote(num_cpus=1)(_answer_group)
        self._factory = ray.put(factory)
        self._simulation = uuid.uuid4().hex
        self._cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self._seconds_per_task: float | None = None
        self._groups: dict[int, Any] = {}  # task -> the Ray task answering it
        self._arrivals = Arrivals()

    def submit(self, tasks: Sequence[Task]) -> None:
        """Group ``tasks`` and start one Ray task per group; the arrays go out once."""
        table = ArrayTable()
        blobs = [b"".join(encode_task(task, table)) for task in tasks]
        arrays = self._ray.put(table.arrays)
        size = self._group_size(len(tasks))
        for start in range(0, len(tasks), size):
            group = self._remote.remote(
                self._simulation, self._factory, arrays, blobs[start : start + size]
            )
            for task in tasks[start : start + size]:
                self._groups[task.task_id] = group

    def result(self, task_id: int) -> Outcome:
        """The outcome of ``task_id``: waits for the Ray task holding it."""
        outcome = self._arrivals.take(task_id)
        if outcome is not None:
            return outcome
        group = self._groups[task_id]
        for blob in self._ray.get(group):
            outcome = decode_outcome(blob)
            del self._groups[outcome.task_id]
            self._learn(outcome.seconds)
            self._arrivals.arrived(outcome)
        taken = self._arrivals.take(task_id)
        assert taken is not None  # its group held it, and the loop never gives up a task it asks
        return taken

    def discard(self, task_id: int) -> None:
        """Drop ``task_id``'s outcome when its group comes back."""
        self._arrivals.discard(task_id, outstanding=task_id in self._groups)

    def close(self) -> None:
        """Forget pending work; shut Ray down if this executor started it."""
        self._groups.clear()
        self._arrivals.clear()
        if self._started_ray:
            self._ray.shutdown()

    def _group_size(self, count: int) -> int:
        """Tasks per Ray task: enough for MIN_TASK_SECONDS of work, few enough to use every CPU."""
        spread = math.ceil(count / self._cpus)  # one group per CPU
        if self._seconds_per_task is None:
            return max(1, spread)
        enough = math.ceil(MIN_TASK_SECONDS / max(self._seconds_per_task, 1e-9))
        return max(1, min(enough, count)) if enough > spread else max(1, spread)

    def _learn(self, seconds: float) -> None:
        if self._seconds_per_task is None:
            self._seconds_per_task = seconds
        else:
            self._seconds_per_task = 0.9 * self._seconds_per_task + 0.1 * seconds
