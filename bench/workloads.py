"""The FedAvg workloads the benchmarks share: one definition, run through fedbus, a bare loop or
another framework.

A workload is ``clients`` clients with ``SAMPLES`` examples each, ``per_round`` of them sampled
per round for ``rounds`` rounds, training a one-hidden-layer MLP of about ``params`` parameters
(``NUM_FEATURES`` inputs, ``NUM_CLASSES`` outputs) for ``epochs`` epochs of minibatch SGD. Each
client's data is generated from the seed and its node id when the client is built, so 100,000
registered clients cost nothing until they are sampled.

``idle=True`` replaces training with a trainer that returns the arrays it got: what remains is
the framework's own cost per client update.
"""

from __future__ import annotations

import functools
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedbus.fl import Client, FedAvg, RoundEndFunction, Server
from fedbus.run.trace import TraceWriter
from fedbus.runtime.simulation import DEFAULT_MEMORY_BUDGET_MB, Simulation
from fedbus.runtime.simulation.offload import CLIENT_CACHE
from fedbus.runtime.simulation.processes import WORKER_ENVIRONMENT
from fedbus.train import MLP, NumpyTrainer

Arrays = dict[str, np.ndarray[Any, Any]]

NUM_FEATURES = 64
NUM_CLASSES = 10
SAMPLES = 64
BATCH_SIZE = 32
LR = 0.05


# Every measured process runs as fedbus's worker processes do: one BLAS thread (these small
# matrix products gain nothing from more, and lose when threads contend for two cores) and
# glibc's allocator keeping freed arrays for reuse, so every column counts the same arithmetic
# the same way.
SAME_ENVIRONMENT = dict(WORKER_ENVIRONMENT)


@dataclass(frozen=True)
class Workload:
    """One FedAvg workload (see the module docstring)."""

    clients: int
    per_round: int
    rounds: int
    params: int
    seed: int = 0
    idle: bool = False
    epochs: int = 1

    @property
    def updates(self) -> int:
        return self.per_round * self.rounds

    def model(self) -> MLP:
        """The MLP whose parameter count is closest to ``params``."""
        per_hidden_unit = NUM_FEATURES + 1 + NUM_CLASSES
        hidden = max(1, round((self.params - NUM_CLASSES) / per_hidden_unit))
        return MLP(NUM_FEATURES, hidden, NUM_CLASSES)

    def initial(self) -> Arrays:
        return self.model().init(seed=self.seed)

    def data(self, node_id: int) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        """Client ``node_id``'s examples: Gaussian features, labels from a seeded linear teacher."""
        teacher = _teacher(self.seed)
        rng = np.random.default_rng([self.seed, node_id])
        x = rng.normal(size=(SAMPLES, NUM_FEATURES)).astype(np.float32)
        y = np.argmax(x @ teacher + rng.normal(scale=0.5, size=(SAMPLES, NUM_CLASSES)), axis=1)
        return x, y

    def trainer(self, node_id: int) -> Any:
        if self.idle:
            return IdleTrainer()
        x, y = self.data(node_id)
        return NumpyTrainer(
            self.model(), x, y, epochs=self.epochs, batch_size=BATCH_SIZE, lr=LR, seed=node_id
        )

    def train_config(self, server_round: int) -> dict[str, Any]:
        """The config a client's trainer gets in ``server_round``: what fedbus's server sends,
        with the request's seed a fedbus client derives from the round (``request_seed``)."""
        return {"server_round": server_round, "seed": zlib.crc32(str(server_round).encode())}


@functools.cache
def _teacher(seed: int) -> np.ndarray[Any, Any]:
    """The linear map that labels every client's examples (one per seed)."""
    return np.random.default_rng([seed, 0]).normal(size=(NUM_FEATURES, NUM_CLASSES))


class IdleTrainer:
    """Does no training: returns the arrays it got. What remains is the framework."""

    def fit(self, arrays: Arrays, config: dict[str, Any]) -> tuple[Arrays, int, dict[str, float]]:
        return arrays, SAMPLES, {"samples_processed": SAMPLES, "train_loss": 0.0}

    def evaluate(
        self, arrays: Arrays, config: dict[str, Any]
    ) -> tuple[float, int, dict[str, float]]:
        return 0.0, SAMPLES, {"accuracy": 0.0}


class WorkloadClients:
    """The client factory of a workload; a plain object, so worker processes can rebuild it."""

    def __init__(self, workload: Workload) -> None:
        self.workload = workload

    def __call__(self, node_id: int) -> Client:
        return Client(self.workload.trainer(node_id), node_id)


def run_fedbus(
    workload: Workload,
    *,
    workers: int = 1,
    backend: str = "local",
    memory_budget_mb: float | None = DEFAULT_MEMORY_BUDGET_MB,
    trace_dir: Path | None = None,
) -> Arrays:
    """Run ``workload`` through fedbus's simulation; the final global model.

    With ``trace_dir`` the run keeps its message trace and writes it into ``trace_dir/trace/``
    as ``fedbus run`` does, in chunks at round ends; without, it keeps none.
    """
    server = Server(
        FedAvg(),
        workload.initial(),
        num_rounds=workload.rounds,
        clients_per_round=workload.per_round,
        train_config={},
        evaluate_every=0,
        seed=workload.seed,
    )
    simulation = Simulation(
        server,
        WorkloadClients(workload),
        num_clients=workload.clients,
        seed=workload.seed,
        record_trace=trace_dir is not None,
        workers=workers,
        backend=backend,
        memory_budget_mb=memory_budget_mb,
    )
    if trace_dir is not None:
        writer = TraceWriter(trace_dir)
        server.callbacks.append(RoundEndFunction(lambda _: writer.drain(simulation.trace)))
    result = simulation.run()
    if trace_dir is not None:
        writer.drain(result.trace, at_least=1)
    return server.arrays.to_numpy_dict()


def run_bare(workload: Workload) -> Arrays:
    """The same arithmetic with no framework: sample, fit, weighted average, repeat.

    Samples with the same seeded generator fedbus's server uses, builds each client's trainer
    when it is first sampled and keeps up to ``CLIENT_CACHE`` of them, as fedbus's simulation
    does, so both do the same work and end with the same model.
    """
    rng = np.random.default_rng(workload.seed)
    trainers: OrderedDict[int, Any] = OrderedDict()
    arrays = workload.initial()
    dtypes = {key: value.dtype for key, value in arrays.items()}
    for server_round in range(1, workload.rounds + 1):
        picks = rng.choice(workload.clients, size=workload.per_round, replace=False)
        config = workload.train_config(server_round)
        sums: Arrays = {}
        total = 0
        for index in picks:
            node_id = int(index) + 1
            trainer = trainers.get(node_id)
            if trainer is None:
                trainer = trainers[node_id] = workload.trainer(node_id)
                if len(trainers) > CLIENT_CACHE:
                    trainers.popitem(last=False)
            trainers.move_to_end(node_id)
            local, weight, _ = trainer.fit(arrays, dict(config))
            for key, value in local.items():
                if key in sums:
                    sums[key] += value.astype(np.float64) * weight
                else:
                    sums[key] = value.astype(np.float64) * weight
            total += weight
        arrays = {key: (value / total).astype(dtypes[key]) for key, value in sums.items()}
    return arrays
