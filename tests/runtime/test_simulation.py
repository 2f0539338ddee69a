"""The simulation runtime: simulated time, TTL, profiles, laziness, determinism, the trace."""

from __future__ import annotations

import numpy as np
import pytest

from fedbus import ArrayRecord, ErrorCode, Message, RecordDict
from fedbus.errors import InvalidArgumentError
from fedbus.runtime.simulation import (
    HANDLER_TIME,
    ClientProfile,
    ProfileDistribution,
    ProfileTable,
    Simulation,
    load_profiles_csv,
    simulate,
)
from fedbus.worker import Worker


class Asker(Worker):
    """Sends ``count`` messages of type ``ask`` to each client at start, records answers."""

    start_sends = ("ask",)

    def __init__(
        self, clients: list[int], ttl: float | None = None, content: RecordDict | None = None
    ):
        super().__init__(0)
        self.clients, self.ttl, self.content = clients, ttl, content or RecordDict()
        self.answers: list[tuple[float, Message]] = []
        self.register_handlers("ask", self.on_answer)

    def on_start(self) -> None:
        for node_id in self.clients:
            self.send(Message(self.content, node_id, "ask", ttl=self.ttl))

    def on_answer(self, message: Message) -> None:
        from fedbus.message import now

        self.answers.append((now(), message))


class Answerer(Worker):
    """Answers ``ask`` after training on ``samples`` samples."""

    def __init__(self, samples: int = 0, node_id: int | None = None) -> None:
        super().__init__(node_id)
        self.samples = samples
        self.started_at: list[int] = []
        self.seen: list[Message] = []
        self.register_handlers("ask", self.on_ask)

    def on_start(self) -> None:
        self.started_at.append(len(self.seen))

    def on_ask(self, message: Message) -> Message | None:
        self.seen.append(message)
        if message.has_error():
            return None
        self.report_work(self.samples)
        return message.create_reply(RecordDict())


def test_delivery_time_is_compute_plus_transfer_plus_latency() -> None:
    weights = np.zeros(250_000, dtype=np.float32)  # 1 MB: 0.08 s at 100 Mbit/s
    content = RecordDict({"w": ArrayRecord([weights])})
    profile = ClientProfile(speed=100.0, uplink_mbps=10.0, downlink_mbps=100.0, latency=0.5)
    server = Asker([1], content=content)
    result = simulate(server, [Answerer(samples=300)], profiles=ProfileTable({1: profile}))
    from fedbus.message import mark_sent
    from fedbus.message.codec import encoded_size

    (delivered_request, delivered_reply) = result.trace
    request = Message(content, 1, "ask")  # as sent: its message id counts in its size
    mark_sent(request, run_id=1, message_id=delivered_request.metadata.message_id, src_node_id=0)
    down = encoded_size(request) * 8 / 100e6
    arrival = HANDLER_TIME + down + 0.5  # the server's handler time, transfer, latency
    assert delivered_request.time == pytest.approx(arrival)
    reply_size = delivered_reply.metadata  # an empty reply: a few dozen bytes
    assert reply_size.src_node_id == 1
    departure = arrival + HANDLER_TIME + 300 / 100.0
    up = result.stats.bytes_up * 8 / 10e6
    assert delivered_reply.time == pytest.approx(departure + up + 0.5)
    assert server.answers[0][0] == pytest.approx(delivered_reply.time + HANDLER_TIME)
    assert result.time == delivered_reply.time
    assert result.stats.bytes_down == encoded_size(request)


def test_message_expiring_in_transit_returns_expired_error() -> None:
    slow = ProfileTable({1: ClientProfile(latency=10.0)})
    server = Asker([1], ttl=5.0)
    client = Answerer()
    result = simulate(server, [client], profiles=slow)
    assert client.seen == []
    ((_, error),) = server.answers
    assert error.error.code == ErrorCode.MESSAGE_EXPIRED
    assert [entry.event for entry in result.trace] == ["expired", "delivered"]
    assert result.trace[0].time == pytest.approx(10.0 + HANDLER_TIME)
    assert error.metadata.ttl == 43200.0  # runtime errors always get the default TTL


def test_reply_to_an_expired_message_is_refused_when_sent() -> None:
    # 10 s of training on a message that lives 5 s: the reply's formula TTL is negative.
    server = Asker([1], ttl=5.0)
    client = Answerer(samples=20_000)  # 10 s at the default 2000 samples/s
    result = simulate(server, [client])
    assert server.answers == []
    request, expired = client.seen
    assert expired.has_error()
    assert expired.error.code == ErrorCode.MESSAGE_EXPIRED
    assert expired.metadata.reply_to_message_id != request.metadata.message_id
    assert [entry.event for entry in result.trace] == ["delivered", "expired", "delivered"]


def test_stopped_node_answers_unavailable() -> None:
    class Quitter(Answerer):
        def on_start(self) -> None:
            self.stop()

    server = Asker([1])
    result = simulate(server, [Quitter()])
    ((_, error),) = server.answers
    assert error.error.code == ErrorCode.NODE_UNAVAILABLE
    assert result.trace[0].event == "unavailable"


def test_unknown_node_is_undeliverable() -> None:
    server = Asker([5])
    result = simulate(server, [Answerer()])
    ((_, error),) = server.answers
    assert error.error.code == ErrorCode.NODE_UNAVAILABLE
    assert result.trace[0].event == "undeliverable"


def test_factory_creates_only_clients_that_receive_messages() -> None:
    built: list[int] = []

    def client_fn(node_id: int) -> Worker:
        built.append(node_id)
        return Answerer()

    server = Asker([7, 99_999])
    result = simulate(server, client_fn, num_clients=100_000)
    # client 1 is built for the message-flow check, without being started
    assert sorted(built) == [1, 7, 99_999]
    assert sorted(result.workers) == [0, 1, 7, 99_999]
    started = result.workers[7]
    assert isinstance(started, Answerer)
    assert started.started_at == [0]
    unstarted = result.workers[1]
    assert isinstance(unstarted, Answerer)
    assert unstarted.started_at == []


def test_server_learns_registered_clients_without_messages() -> None:
    class Listener(Worker):
        def __init__(self) -> None:
            super().__init__(0)
            self.registered: list[int] = []

        def on_nodes_registered(self, node_ids):  # type: ignore[no-untyped-def]
            self.registered = list(node_ids)

    server = Listener()
    result = simulate(server, lambda node_id: Answerer(), num_clients=5)
    assert server.registered == [1, 2, 3, 4, 5]
    assert result.stats.messages_sent == 0


def test_timers_fire_in_simulated_time_and_can_be_cancelled() -> None:
    fired: list[tuple[str, float]] = []

    class Timed(Worker):
        def __init__(self) -> None:
            super().__init__(0)

        def on_start(self) -> None:
            from fedbus.message import now

            self.call_later(30.0, lambda: fired.append(("a", now())))
            self.call_later(10.0, lambda: fired.append(("b", now())))
            self.call_later(20.0, lambda: fired.append(("c", now()))).cancel()

    result = simulate(Timed(), [Answerer()])
    assert fired == [
        ("b", pytest.approx(10.0 + 2 * HANDLER_TIME)),
        ("a", pytest.approx(30.0 + 2 * HANDLER_TIME)),
    ]
    assert result.time == pytest.approx(30.0 + HANDLER_TIME)


def test_dropout_loses_messages_silently_and_reproducibly() -> None:
    profiles = ProfileDistribution(dropout=0.5, seed=1)
    runs = []
    for _ in range(2):
        server = Asker(list(range(1, 41)))
        result = simulate(
            server, lambda node_id: Answerer(), num_clients=40, profiles=profiles, seed=3
        )
        runs.append([(e.time, e.event, e.metadata) for e in result.trace])
    dropped = sum(1 for _, event, _ in runs[0] if event == "dropped")
    assert 8 <= dropped <= 32
    assert runs[0] == runs[1]


def test_profile_distribution_is_lazy_reproducible_and_correlated_slowness() -> None:
    profiles = ProfileDistribution(speed=1000.0, slow_fraction=0.2, slow_factor=10.0, seed=4)
    speeds = np.array([profiles(node_id).speed for node_id in range(1, 5001)])
    assert set(np.round(speeds, 6)) == {100.0, 1000.0}
    assert np.mean(speeds == 100.0) == pytest.approx(0.2, abs=0.02)
    assert profiles(17) == ProfileDistribution(speed=1000.0, slow_fraction=0.2, seed=4)(17)
    spread = ProfileDistribution(speed=1000.0, speed_sigma=0.5, seed=4)
    log_speeds = np.log([spread(i).speed for i in range(1, 5001)])
    assert np.std(log_speeds) == pytest.approx(0.5, rel=0.1)


def test_profiles_csv(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "devices.csv"
    path.write_text("node_id,speed,latency\n1,50,0.2\n2,5000,0.01\n")
    profiles = load_profiles_csv(path)
    assert profiles[1] == ClientProfile(speed=50.0, latency=0.2)
    assert profiles[2].speed == 5000.0
    path.write_text("node_id,speeed\n1,50\n")
    with pytest.raises(InvalidArgumentError, match="speeed"):
        load_profiles_csv(path)
    path.write_text("node_id,speed\n1,-5\n")
    with pytest.raises(InvalidArgumentError, match="line 2"):
        load_profiles_csv(path)


def test_check_serialization_delivers_decoded_copies() -> None:
    weights = np.arange(6, dtype=np.float64)
    received: list[np.ndarray] = []

    class Keeper(Answerer):
        def on_ask(self, message: Message) -> Message | None:
            received.append(message.content["w"]["0"].numpy())
            return None

    content = RecordDict({"w": ArrayRecord([weights])})
    simulate(Asker([1], content=content), [Keeper()], check_serialization=True)
    np.testing.assert_array_equal(received[0], weights)
    assert not np.shares_memory(received[0], weights)
    assert not received[0].flags.writeable

    received.clear()
    simulate(Asker([1], content=content), [Keeper()])
    assert np.shares_memory(received[0], weights)  # by reference: no copy


def test_message_ids_are_unique_and_reproducible() -> None:
    def run() -> list[str]:
        result = simulate(Asker([1, 2, 3]), [Answerer(), Answerer(), Answerer()])
        return [entry.metadata.message_id for entry in result.trace]

    first = run()
    assert len(set(first)) == len(first) == 6
    assert first == run()


def test_client_ids_must_be_unique() -> None:
    with pytest.raises(InvalidArgumentError, match="two clients have node id 2"):
        Simulation(Asker([1]), [Answerer(node_id=2), Answerer(node_id=2)])
    with pytest.raises(InvalidArgumentError, match="node 0 is the server"):
        Simulation(Asker([1]), [Answerer(node_id=0)])
    with pytest.raises(InvalidArgumentError, match="num_clients"):
        Simulation(Asker([1]), lambda node_id: Answerer())


def test_a_simulation_runs_once() -> None:
    simulation = Simulation(Asker([1]), [Answerer()])
    simulation.run()
    with pytest.raises(InvalidArgumentError, match="runs once"):
        simulation.run()


def test_until_stops_early() -> None:
    slow = ProfileTable({1: ClientProfile(latency=100.0)})
    result = simulate(Asker([1]), [Answerer()], profiles=slow, until=50.0)
    assert result.time == 50.0
    assert result.trace == []


def test_check_serialization_accepts_nan_metrics() -> None:
    from fedbus import MetricRecord

    got: list[float] = []

    class Keeper(Answerer):
        def on_ask(self, message: Message) -> Message | None:
            value = message.content["m"]["loss"]
            assert isinstance(value, float)
            got.append(value)
            return None

    content = RecordDict({"m": MetricRecord({"loss": float("nan")})})
    simulate(Asker([1], content=content), [Keeper()], check_serialization=True)
    assert len(got) == 1
    assert np.isnan(got[0])
