"""Faults: silent clients, cut and frozen connections, a client lost in the middle of a round.

What happens first is decided by events (a handler waits until the round it must miss has
closed), never by sleeps, so each test holds however busy the machine is.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import grpc
import numpy as np
import pytest

from fedbus import ErrorCode, Message, RecordDict
from fedbus.fl import Client, FedAvg, RoundRecord, Server
from fedbus.runtime.grpc import ClientSettings, GrpcServer, Heartbeat, connect, serve
from fedbus.train import NumpyTrainer, SoftmaxRegression

from .conftest import TOKEN, Proxy, RawStream, wait_until
from .test_security import Hub, Pinger

FAST = Heartbeat(interval=0.1, timeout=0.5)
#: Heartbeats for tests where only a frozen link may time out: a busy machine never misses 2 s.
STEADY = Heartbeat(interval=0.2, timeout=2.0)
#: Seconds after which a wait counts as stuck: it only fails a test that hangs.
STUCK = 60.0


class Registry(Hub):
    """A hub that records registrations and can probe a node."""

    def __init__(self) -> None:
        super().__init__()
        self.registered: list[list[int]] = []
        self.answers: list[Message] = []
        self.register_handlers("probe", self.answers.append)

    def on_nodes_registered(self, node_ids: Sequence[int]) -> None:
        self.registered.append(list(node_ids))

    def probe(self, node_id: int) -> None:
        self.send(Message(RecordDict(), node_id, "probe"))


def stop(server: GrpcServer) -> None:
    server.stop()
    assert server.wait(15)


def test_a_silent_client_is_marked_unavailable_and_messages_to_it_fail() -> None:
    registry = Registry()
    server = serve(registry, "127.0.0.1:0", token=TOKEN, insecure=True, heartbeat=FAST)
    try:
        silent = RawStream(server.port)  # connects, then sends nothing, not even heartbeats
        node_id = silent.node_id
        wait_until(lambda: registry.registered == [[node_id]])
        code, details = silent.status(timeout=STUCK)
        assert code == grpc.StatusCode.UNAVAILABLE
        assert details == "heartbeat timeout"
        assert server.connected == []
        server.submit(lambda: registry.probe(node_id))
        wait_until(lambda: len(registry.answers) == 1)
        (answer,) = registry.answers
        assert answer.error.code == ErrorCode.NODE_UNAVAILABLE
        silent.close()
    finally:
        stop(server)


@pytest.mark.parametrize("fault", ["cut", "freeze"])
def test_a_client_reconnects_under_its_node_id(
    fault: str, proxy_factory: Callable[[int], Proxy]
) -> None:
    registry = Registry()
    server = serve(registry, "127.0.0.1:0", token=TOKEN, insecure=True, heartbeat=STEADY)
    proxy = proxy_factory(server.port)
    pinger = Pinger()
    settings = ClientSettings(heartbeat=STEADY, max_backoff=0.2, reconnect_timeout=STUCK)
    client = connect(
        pinger, f"127.0.0.1:{proxy.port}", token=TOKEN, insecure=True, settings=settings
    )
    try:
        client.submit(pinger.ping)
        assert pinger.replies.get(timeout=STUCK).has_content()
        # cut: both ends see the connection drop; freeze: both hear nothing and time out
        getattr(proxy, fault)()
        wait_until(lambda: len(registry.registered) >= 2 and server.connected == [1], STUCK)
        wait_until(lambda: client.connected, STUCK)
        assert all(nodes == [1] for nodes in registry.registered)  # always under its own id
        assert proxy.connections >= 2
        client.submit(pinger.ping)
        reply = pinger.replies.get(timeout=STUCK)
        assert reply.has_content()
        assert client.node_id == 1
        assert reply.metadata.dst_node_id == 1
    finally:
        stop(server)
        assert client.wait(15)
    assert client.error is None


def waited(event: threading.Event) -> None:
    assert event.wait(STUCK), "an event never came: the federation is stuck"


class Vanisher(Client):
    """Loses its connection while it trains in round 1, then comes back.

    Its round-1 reply leaves only once round 1 has closed: it is late whatever the timing.
    """

    def __init__(self, trainer: NumpyTrainer, proxy: Proxy, round_one_closed: threading.Event):
        super().__init__(trainer)
        self.proxy, self.round_one_closed = proxy, round_one_closed
        self.vanished = False

    def on_train(self, message: Message) -> Message | None:
        if not self.vanished:
            self.vanished = True
            self.proxy.cut()
            waited(self.round_one_closed)
        return super().on_train(message)


class Holder(Client):
    """Answers round 1 only once the lost client has rejoined, so round 2 can sample it."""

    def __init__(self, trainer: NumpyTrainer, rejoined: threading.Event) -> None:
        super().__init__(trainer)
        self.rejoined = rejoined
        self.held = False

    def on_train(self, message: Message) -> Message | None:
        if not self.held:
            self.held = True
            waited(self.rejoined)
        return super().on_train(message)


class RejoinWatcher(Server):
    """A Server that sets ``rejoined`` when a node is registered a second time."""

    def __init__(self, *args: Any, rejoined: threading.Event, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rejoined = rejoined
        self.registrations: Counter[int] = Counter()

    def on_nodes_registered(self, node_ids: Sequence[int]) -> None:
        super().on_nodes_registered(node_ids)
        self.registrations.update(node_ids)
        if any(count >= 2 for count in self.registrations.values()):
            self.rejoined.set()


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    return (data.data / 16.0).astype(np.float64), data.target.astype(np.int64)


def test_a_client_lost_mid_round_closes_the_round_and_rejoins(
    digits: Any, proxy_factory: Callable[[int], Proxy]
) -> None:
    x, y = digits
    model = SoftmaxRegression(64, 10)
    parts = np.array_split(np.arange(len(y)), 3)
    trainers = [NumpyTrainer(model, x[p], y[p], lr=0.3, seed=i) for i, p in enumerate(parts)]
    records: list[RoundRecord] = []
    round_one_closed, rejoined = threading.Event(), threading.Event()

    def on_round_end(record: RoundRecord) -> None:
        records.append(record)
        round_one_closed.set()

    # The lost client's request fails when the server sees it go (or, failing that, at the
    # round timeout); the timeout is long enough for a busy machine to finish a round.
    server = RejoinWatcher(
        FedAvg(),
        model.init(seed=0, dtype=np.float64),
        num_rounds=3,
        clients_per_round=3,
        min_replies=2,
        round_timeout=10.0,
        min_clients=3,
        on_round_end=on_round_end,
        rejoined=rejoined,
    )
    handle = serve(server, "127.0.0.1:0", token=TOKEN, insecure=True, min_clients=3)
    proxy = proxy_factory(handle.port)
    settings = ClientSettings(heartbeat=STEADY, max_backoff=0.1, reconnect_timeout=STUCK)
    clients = [
        Holder(trainers[0], rejoined),
        Client(trainers[1]),
        Vanisher(trainers[2], proxy, round_one_closed),
    ]
    addresses = [f"127.0.0.1:{handle.port}"] * 2 + [f"127.0.0.1:{proxy.port}"]
    handles = [
        connect(c, a, token=TOKEN, insecure=True, settings=settings)
        for c, a in zip(clients, addresses, strict=True)
    ]
    try:
        assert handle.wait(STUCK)
    finally:
        stop(handle)
        for client in handles:
            assert client.wait(STUCK)
    assert server.finished
    assert [r.round for r in records] == [1, 2, 3]
    # round 1 closed without the lost client's reply: the two others, both aggregated
    assert (records[0].clients_replied, records[0].clients_sampled) == (2, 3)
    # the lost client rejoined before round 2 began, was sampled, and answered, again
    assert [(r.clients_replied, r.clients_sampled) for r in records[1:]] == [(3, 3), (3, 3)]
    assert all(h.error is None for h in handles)
