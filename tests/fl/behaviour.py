"""Clients, servers and runtimes of the FL behaviour suite (``test_behaviour.py``).

One federation runs on every runtime. What is slow or late is decided by *holds*, never by a
clock: a client held in a round reports ``work`` samples to the simulation (so its reply comes
that many simulated seconds later, on Ray too), and over gRPC waits until a ``Signal`` the test
or the server sets, so the order of events is the same on a busy machine.

Every client is built by ``Clients``, a factory of plain data: Ray can ship it to its workers
(a ``Signal`` there is inert). The model is one array ``w`` of four float64 values, and a client
adds ``step(node_id)`` to each of them, so the aggregate of any set of replies is known exactly.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

from fedbus.fl import AsyncServer, Client, RoundRecord, Server
from fedbus.fl.client import plain_config
from fedbus.fl.mods import ClientPrivacy
from fedbus.fl.privacy import update_norm
from fedbus.fl.protocol import read_arrays
from fedbus.fl.secagg.client import SecAggClient
from fedbus.fl.secagg.server import SecAggServer
from fedbus.fl.server_base import ServerBase
from fedbus.message import ArrayRecord, Message, MetricRecord, RecordDict
from fedbus.runtime.grpc import run_local
from fedbus.runtime.simulation import Simulation, SimulationResult
from fedbus.worker import Worker

Arrays = dict[str, np.ndarray]

#: Seconds after which a gRPC run or a held client counts as stuck: it only fails a test that
#: hangs, never one that is merely slow.
STUCK = 60.0
#: The model's size: a step ``s`` moves it by an update of norm ``2 |s|``.
SIZE = 4
#: Samples a held client reports in simulation (at the default 2000 samples per simulated
#: second: 5 s, and 50 s for ``LONGER``), against 10 for a client that is not held.
LONG = 10_000
LONGER = 100_000
#: What an impostor claims another client computed: far from any honest step.
FORGED_STEP = 1000.0


def initial_model() -> Arrays:
    return {"w": np.zeros(SIZE)}


def step(node_id: int) -> float:
    """Client ``node_id`` adds this to every value of the model."""
    return float(node_id)


# -- signals and holds ----------------------------------------------------------------------------
class Signal:
    """Something that happened, as an event over gRPC; inert where the runtime orders events
    itself (simulation, Ray), where ``wait`` returns at once."""

    def __init__(self, event: threading.Event | None = None) -> None:
        self._event = event

    def set(self) -> None:
        if self._event is not None:
            self._event.set()

    def wait(self) -> None:
        if self._event is not None:
            assert self._event.wait(STUCK), "a held client waited in vain: the run is stuck"

    def __reduce__(self) -> tuple[type[Signal], tuple[()]]:
        return Signal, ()  # what crosses to another process is inert


@dataclass(frozen=True)
class Hold:
    """Keep a client's train reply from round ``first`` to ``last`` until ``until`` is set
    (gRPC), or for ``work`` reported samples (simulation, Ray)."""

    first: int
    last: int
    until: Signal
    work: int = LONG

    def applies(self, server_round: int) -> bool:
        return self.first <= server_round <= self.last


# -- trainers and clients -------------------------------------------------------------------------
@dataclass
class StepTrainer:
    """Adds ``step`` to the model, after its holds; ``kind`` makes it send NaN or inf, or
    decline (raise, so its client answers with an error)."""

    step: float
    kind: str = "honest"
    holds: tuple[Hold, ...] = ()

    def fit(
        self, arrays: Arrays, config: Mapping[str, Any]
    ) -> tuple[Arrays, int, dict[str, float]]:
        if self.kind == "decline":
            raise RuntimeError("this client declines to train")
        server_round = int(config.get("server_round", 0))
        work = 10
        for hold in self.holds:
            if hold.applies(server_round):
                work += hold.work
                hold.until.wait()
        value = {"nan": np.nan, "inf": np.inf}.get(self.kind, self.step)
        trained = {name: array + value for name, array in arrays.items()}
        return trained, 10, {"samples_processed": work, "train_loss": self.step}

    def evaluate(
        self, arrays: Arrays, config: Mapping[str, Any]
    ) -> tuple[float, int, dict[str, float]]:
        return 0.0, 10, {"accuracy": 0.0}


class SilentClient(Client):
    """Trains, then never answers: its request can only time out."""

    def on_train(self, message: Message) -> Message | None:
        self.train_on(message)
        return None


@dataclass
class Leak:
    """The requests the server sent, by node id: what an impostor reads (in this process only)."""

    requests: dict[int, Message] = field(default_factory=dict)
    ready: Signal = field(default_factory=Signal)
    target: int = 1


class Impostor(Client):
    """In round 1, forges a reply to the request the server sent node ``leak.target`` (its
    content: a step of ``FORGED_STEP``), then answers its own request honestly. The runtime
    stamps the forgery with the impostor's node id, as every runtime does."""

    def __init__(self, trainer: StepTrainer, node_id: int, leak: Leak) -> None:
        super().__init__(trainer, node_id)
        self.leak = leak

    def on_train(self, message: Message) -> Message | None:
        if plain_config(message.content).get("server_round") == 1:
            self.leak.ready.wait()
            stolen = self.leak.requests[self.leak.target]
            forged_arrays = {
                name: value + FORGED_STEP
                for name, value in read_arrays(stolen.content).to_numpy_dict().items()
            }
            forged = stolen.create_reply(
                RecordDict(
                    {
                        "arrays": ArrayRecord(forged_arrays),
                        "metrics": MetricRecord({"num_examples": 10}),
                    }
                )
            )
            assert self.comm_manager is not None
            self.comm_manager.send(forged)  # past Worker.send's own check, as a raw peer would
        return super().on_train(message)


class DropsAt(SecAggClient):
    """A SecAgg+ client that answers ``stage`` with an error: it drops out of the round there."""

    def __init__(self, trainer: StepTrainer, node_id: int, stage: str) -> None:
        super().__init__(trainer, node_id)
        self.stage = stage
        self.register_handlers(stage, self._drop, replace=True)

    def _drop(self, message: Message) -> None:
        raise RuntimeError(f"dropped out at {self.stage}")


@dataclass(frozen=True)
class Clients:
    """Builds client ``node_id``: plain data, so Ray can ship it to its workers.

    ``kinds`` maps a node to ``"silent"``, ``"decline"``, ``"nan"``, ``"inf"`` or
    ``"impostor"`` (default: honest); ``holds`` to the holds of its trainer. ``privacy_seed``
    installs the privacy mod, its noise seeded with ``privacy_seed + node_id``. ``secagg``
    builds SecAgg+ clients, ``drops`` naming the stage a node drops out at.
    """

    kinds: Mapping[int, str] = field(default_factory=dict)
    holds: Mapping[int, tuple[Hold, ...]] = field(default_factory=dict)
    leak: Leak | None = None
    privacy_seed: int | None = None
    secagg: bool = False
    drops: Mapping[int, str] = field(default_factory=dict)
    scale: float = 1.0  # steps are ``scale * node_id``

    def __call__(self, node_id: int) -> Client:
        kind = self.kinds.get(node_id, "honest")
        trainer_kind = kind if kind in ("decline", "nan", "inf") else "honest"
        trainer = StepTrainer(self.scale * step(node_id), trainer_kind, self.holds.get(node_id, ()))
        client: Client
        if self.secagg:
            stage = self.drops.get(node_id)
            if stage is None:
                client = SecAggClient(trainer, node_id)
            else:
                client = DropsAt(trainer, node_id, stage)
        elif kind == "silent":
            client = SilentClient(trainer, node_id)
        elif kind == "impostor":
            assert self.leak is not None, "an impostor needs a leak"
            client = Impostor(trainer, node_id, self.leak)
        else:
            client = Client(trainer, node_id)
        if self.privacy_seed is not None:
            client.use(ClientPrivacy(self.privacy_seed + node_id))
        return client


# -- servers that the tests watch -----------------------------------------------------------------
class Watch(ServerBase):
    """Keeps what the tests check, and sets signals when what they wait for happened.

    ``snapshots``: a copy of each round's record when it ended (a late reply after the last
    round would otherwise still be added to it); ``models``: the model after each round;
    ``received``: (node, norm of its update) for each update the server accepted.
    """

    def watch(self) -> None:
        self.snapshots: list[RoundRecord] = []
        self.models: list[np.ndarray] = []
        self.received: list[tuple[int, float]] = []
        self.late = Signal()
        self.refused = Signal()
        self.accepted: dict[int, Signal] = {}
        self.leak: Leak | None = None

    def end_round(self, record: RoundRecord) -> bool:
        goes_on = super().end_round(record)
        self.snapshots.append(dataclasses.replace(record, staleness=dict(record.staleness)))
        self.models.append(self.arrays.to_numpy_dict()["w"].copy())
        return goes_on

    def on_late_reply(self, message: Message) -> None:
        super().on_late_reply(message)
        self.late.set()

    def on_refused_reply(self, message: Message, expected_node: int | None) -> None:
        super().on_refused_reply(message, expected_node)
        self.refused.set()

    def accept_update(self, aggregator: Any, node_id: int, content: RecordDict) -> None:
        norm = update_norm(read_arrays(content).to_numpy_dict(), self.arrays.to_numpy_dict())
        super().accept_update(aggregator, node_id, content)
        self.received.append((node_id, norm))
        if node_id in self.accepted:
            self.accepted[node_id].set()

    def request(self, message: Message, on_reply: Any) -> str:
        message_id = super().request(message, on_reply)
        leak = self.leak
        if leak is not None:
            leak.requests[message.metadata.dst_node_id] = message
            if message.metadata.dst_node_id == leak.target:
                leak.ready.set()
        return message_id


class WatchedServer(Watch, Server):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.watch()


class WatchedAsyncServer(Watch, AsyncServer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.watch()


class WatchedSecAggServer(Watch, SecAggServer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.watch()


# -- runtimes -------------------------------------------------------------------------------------
S = TypeVar("S", bound=Worker)


def simulate_locally(server: Worker, clients: Clients, num_clients: int) -> SimulationResult:
    """The reference: the embedded simulation, every message through the codec."""
    simulation = Simulation(server, clients, num_clients=num_clients, check_serialization=True)
    return simulation.run()


def fingerprint(server: Any, result: SimulationResult) -> dict[str, Any]:
    """What two simulations of one federation must agree on, bit for bit."""
    return {
        "arrays": {k: v.tobytes() for k, v in server.arrays.to_numpy_dict().items()},
        "history": [dataclasses.asdict(record) for record in server.history],
        "failure": server.failure,
        "time": result.time,
        "trace": [
            (entry.time, entry.event, entry.metadata.message_id, entry.metadata.message_type)
            for entry in result.trace
        ],
    }


@dataclass(frozen=True)
class Runtime(Generic[S]):
    """One runtime of the suite: ``run`` a federation to completion and return its server.

    ``build`` makes a fresh server (the Ray run is compared with a local simulation of a second
    one); ``clients`` builds client ``node_id`` for ``node_id`` in ``1..num_clients``.
    """

    name: str

    @property
    def deterministic(self) -> bool:
        """Whether a run repeats bit for bit (in simulated time)."""
        return self.name != "grpc"

    def signal(self) -> Signal:
        """A signal that holds clients over gRPC, inert elsewhere."""
        return Signal(threading.Event() if self.name == "grpc" else None)

    def run(self, build: Callable[[], S], clients: Clients, num_clients: int) -> S:
        server = build()
        if self.name == "simulation":
            simulate_locally(server, clients, num_clients)
        elif self.name == "grpc":
            # In this process, on threads, over real streams on 127.0.0.1.
            run_local(server, [clients(i) for i in range(1, num_clients + 1)], timeout=STUCK)
        else:
            simulation = Simulation(server, clients, num_clients=num_clients, backend="ray")
            result = simulation.run()
            assert result.stats.offloaded > 0  # copies of the clients answered in Ray workers
            reference = build()
            local = simulate_locally(reference, clients, num_clients)
            assert fingerprint(server, result) == fingerprint(reference, local)
        return server
