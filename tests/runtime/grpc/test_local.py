"""Whole federations over gRPC in one process: FL, the example, big arrays, TTL and routing."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np
import pytest

from fedbus import ArrayRecord, ConfigRecord, ErrorCode, Message, RecordDict
from fedbus.fl import Client, FedAvg, Server
from fedbus.runtime.grpc import run_local
from fedbus.runtime.simulation import simulate
from fedbus.train import NumpyTrainer, SoftmaxRegression
from fedbus.worker import Worker

from ...conftest import load_module

EXAMPLE = Path(__file__).parents[3] / "examples" / "new_message_type.py"


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    return (data.data / 16.0).astype(np.float64), data.target.astype(np.int64)


def fedavg(digits: tuple[np.ndarray, np.ndarray], join: bool) -> tuple[Server, list[Client]]:
    x, y = digits
    model = SoftmaxRegression(64, 10)
    parts = np.array_split(np.arange(len(y)), 5)
    clients = [
        Client(NumpyTrainer(model, x[p], y[p], lr=0.3, seed=i), join_on_start=join)
        for i, p in enumerate(parts)
    ]

    def evaluate(arrays: dict[str, np.ndarray]) -> tuple[float, dict[str, float]]:
        accuracy = float(np.mean(model.predict(arrays, x) == y))
        return model.loss(arrays, x, y), {"accuracy": accuracy}

    server = Server(
        FedAvg(),
        model.init(seed=0, dtype=np.float64),
        num_rounds=4,
        clients_per_round=3,
        evaluate_fn=evaluate,
        seed=7,
    )
    return server, clients


@pytest.mark.parametrize("join", [False, True])
def test_fedavg_over_grpc_equals_the_simulation(digits: Any, join: bool) -> None:
    simulated, clients = fedavg(digits, join)
    simulate(simulated, clients)
    deployed, clients = fedavg(digits, join)
    run_local(deployed, clients, timeout=60)
    assert deployed.finished
    assert deployed.failure is None
    accuracy = [r.test_accuracy for r in deployed.history]
    assert accuracy == [r.test_accuracy for r in simulated.history]
    assert accuracy[-1] is not None
    assert accuracy[-1] > 0.8
    for key, value in deployed.arrays.to_numpy_dict().items():
        # replies are summed in arrival order: equal up to float64 rounding
        np.testing.assert_allclose(value, simulated.arrays.to_numpy_dict()[key], atol=1e-12)
    # every client took part and was told to finish
    assert all(client.comm_manager is not None for client in clients)


@pytest.fixture(scope="module")
def example() -> ModuleType:
    return load_module(EXAMPLE, "new_message_type_grpc")


def test_new_message_type_example_runs_over_grpc_unchanged(
    example: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    def over_grpc(server: Worker, clients: list[Worker], **options: Any) -> SimpleNamespace:
        started = time.monotonic()
        run_local(server, clients, timeout=60)
        return SimpleNamespace(time=time.monotonic() - started)

    expected = example.run(num_clients=6, num_rounds=8)
    monkeypatch.setattr(example, "simulate", over_grpc)
    outcome = example.run(num_clients=6, num_rounds=8)
    assert outcome.accuracy == pytest.approx(expected.accuracy, abs=1e-9)
    assert outcome.updates_received == expected.updates_received
    assert outcome.updates_skipped == expected.updates_skipped


class Bouncer(Worker):
    """Sends ``content`` to client 1 on start and keeps what comes back."""

    start_sends = ("bounce",)

    def __init__(self, content: RecordDict, ttl: float | None = None) -> None:
        super().__init__(0)
        self.content, self.ttl = content, ttl
        self.received: list[Message] = []
        self.register_handlers("bounce", self.received.append)

    def on_start(self) -> None:
        self.send(Message(self.content, 1, "bounce", ttl=self.ttl))


class Echo(Worker):
    def __init__(self) -> None:
        super().__init__()
        self.register_handlers("bounce", lambda m: m.create_reply(m.content))


@pytest.mark.slow
def test_a_200_mb_array_record_goes_there_and_back_intact() -> None:
    rng = np.random.default_rng(0)
    weights = rng.standard_normal(200 * 2**20 // 8)  # 200 MiB of float64
    bias = np.arange(10, dtype=np.int32)
    server = Bouncer(RecordDict({"model": ArrayRecord({"w": weights, "b": bias})}))
    run_local(server, [Echo()], timeout=120)
    (reply,) = server.received
    arrays = reply.content["model"].to_numpy_dict()  # type: ignore[union-attr]
    assert arrays["w"].nbytes == 200 * 2**20
    assert np.array_equal(arrays["w"], weights)
    assert np.array_equal(arrays["b"], bias)


def wait_past(deadline: float) -> None:
    """Return once the wall clock, which TTLs are checked against, is past ``deadline``."""
    while (left := deadline - time.time()) >= 0:
        time.sleep(left + 0.001)


class QuickSent:
    """Set by the server once it sent ``quick``: when that message expires."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.expires_at = 0.0


class Sleeper(Worker):
    """Busy over ``slow`` until ``quick`` has expired; answers ``quick``."""

    def __init__(self, quick: QuickSent) -> None:
        super().__init__()
        self.quick = quick
        self.quick_handled = 0
        self.register_handlers("slow", self.on_slow)
        self.register_handlers("quick", self.on_quick)

    def on_slow(self, message: Message) -> Message:
        # The handler is busy until ``quick``'s TTL has passed: it waits on the client.
        assert self.quick.event.wait(60), "the server never sent quick"
        wait_past(self.quick.expires_at)
        return message.create_reply(RecordDict())

    def on_quick(self, message: Message) -> Message:
        self.quick_handled += 1
        return message.create_reply(RecordDict())


class Timed(Worker):
    start_sends = ("slow", "quick")

    def __init__(self, quick: QuickSent) -> None:
        super().__init__(0)
        self.quick = quick
        self.received: list[Message] = []
        for kind in ("slow", "quick", "elsewhere"):
            self.register_handlers(kind, self.received.append)

    def on_start(self) -> None:
        self.send(Message(RecordDict(), 1, "slow"))
        quick = Message(RecordDict(), 1, "quick", ttl=0.1)
        self.send(quick)  # expires in transit, or (on a very busy machine) before it is sent
        self.quick.expires_at = quick.metadata.expires_at
        self.quick.event.set()
        stale = Message(RecordDict(), 1, "quick", ttl=0.001)
        wait_past(stale.metadata.expires_at)
        self.send(stale)  # expired before it is sent
        self.send(Message(RecordDict(), 9, "elsewhere"))  # no such node


def test_wall_clock_ttl_and_unknown_nodes_get_error_replies() -> None:
    quick = QuickSent()
    server, client = Timed(quick), Sleeper(quick)
    run_local(server, [client], timeout=60)
    errors = {(m.msg_type, m.error.code) for m in server.received if m.has_error()}
    assert errors == {
        ("quick", ErrorCode.MESSAGE_EXPIRED),  # twice: in transit, and when sent
        ("elsewhere", ErrorCode.NODE_UNAVAILABLE),
    }
    assert sum(m.has_error() for m in server.received) == 3
    assert [m.msg_type for m in server.received if m.has_content()] == ["slow"]
    assert client.quick_handled == 0
    unavailable = next(m for m in server.received if m.msg_type == "elsewhere")
    assert unavailable.sender == 9
    assert "node 9 is not connected" in str(unavailable.error.reason)


class Relay(Worker):
    """Client 1 greets client 2 through the server; client 2 answers."""

    start_sends = ("hello",)

    def __init__(self) -> None:
        super().__init__()
        self.heard: list[tuple[int, int, str]] = []
        self.register_handlers("hello", self.on_hello, sends=["hello"])

    def on_start(self) -> None:
        if self.node_id == 1:
            self.send(Message(RecordDict({"c": ConfigRecord({"n": "hi"})}), 2, "hello"))

    def on_hello(self, message: Message) -> Message | None:
        text = message.content["c"]["n"]
        self.heard.append((message.sender, message.receiver, str(text)))
        if message.metadata.reply_to_message_id:
            return None
        return message.create_reply(RecordDict({"c": ConfigRecord({"n": "hello back"})}))


class Quiet(Worker):
    """Handles nothing: ``hello`` is a client-to-client type, relayed by the server."""

    def __init__(self) -> None:
        super().__init__(0)


def test_client_to_client_messages_are_relayed_with_true_senders() -> None:
    first, second = Relay(), Relay()
    run_local(Quiet(), [first, second], timeout=30)
    assert second.heard == [(1, 2, "hi")]
    assert first.heard == [(2, 1, "hello back")]
