"""Client availability: windows, their draws and device traces, and what a simulation does."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Literal

import numpy as np
import pytest

from fedbus import ErrorCode, Message, RecordDict
from fedbus.errors import ConfigError, InvalidArgumentError
from fedbus.run import load_config
from fedbus.run.federation import build_federation
from fedbus.runtime.simulation import (
    ClientProfile,
    ProfileDistribution,
    ProfileTable,
    Simulation,
    SimulationResult,
    load_profiles_csv,
    simulate,
)
from fedbus.worker import Worker


class Asker(Worker):
    """Sends one ``ask`` to each client at start and keeps what comes back."""

    start_sends = ("ask",)

    def __init__(self, clients: list[int], ttl: float | None = None) -> None:
        super().__init__(0)
        self.clients, self.ttl = clients, ttl
        self.answers: list[Message] = []
        self.register_handlers("ask", self.answers.append)

    def on_start(self) -> None:
        for node_id in self.clients:
            self.send(Message(RecordDict(), node_id, "ask", ttl=self.ttl))


class Answerer(Worker):
    """Answers ``ask`` after training on ``samples`` samples."""

    def __init__(self, samples: int = 0) -> None:
        super().__init__()
        self.samples = samples
        self.seen: list[Message] = []
        self.register_handlers("ask", self.on_ask)

    def on_ask(self, message: Message) -> Message | None:
        self.seen.append(message)
        if message.has_error():
            return None
        self.report_work(self.samples)
        return message.create_reply(RecordDict())


def events(result: SimulationResult) -> list[str]:
    return [entry.event for entry in result.trace]


# -- ClientProfile windows ----------------------------------------------------------------------
def test_windows_that_happen_once() -> None:
    profile = ClientProfile(windows=((10.0, 20.0), (30.0, 40.0)))
    assert [profile.is_online(t) for t in (0.0, 9.999, 10.0, 19.999, 20.0, 30.0, 40.0, 1e9)] == [
        False,
        False,
        True,
        True,
        False,
        True,
        False,
        False,
    ]
    assert profile.next_online(5.0) == 10.0
    assert profile.next_online(10.0) == 10.0  # a window includes its start...
    assert profile.next_online(15.0) == 15.0
    assert profile.next_online(20.0) == 30.0  # ...and not its end
    assert profile.next_online(40.0) == math.inf


def test_repeating_windows() -> None:
    profile = ClientProfile(windows=((10.0, 20.0),), window_period=100.0)
    assert [profile.is_online(t) for t in (110.0, 1010.5, 100.0, 120.0)] == [
        True,
        True,
        False,
        False,
    ]
    assert profile.next_online(20.0) == 110.0
    assert profile.next_online(95.0) == 110.0
    assert profile.next_online(250.0) == 310.0
    assert profile.next_online(310.0) == 310.0
    # A window that wraps around the period's end is two windows.
    wrapped = ClientProfile(windows=((0.0, 5.0), (90.0, 100.0)), window_period=100.0)
    assert [wrapped.is_online(t) for t in (99.9, 100.0, 204.9, 105.0)] == [
        True,
        True,
        True,
        False,
    ]
    assert wrapped.next_online(50.0) == 90.0
    assert wrapped.next_online(105.0) == 190.0


def test_no_windows_is_always_online() -> None:
    profile = ClientProfile()
    assert profile.is_online(0.0)
    assert profile.is_online(1e12)
    assert profile.next_online(123.4) == 123.4


def test_next_online_lands_inside_a_window_despite_rounding() -> None:
    # Window starts that are not round numbers: cycle + start rounds, half the time below it.
    profiles = ProfileDistribution(availability=0.3, availability_period=3600.7, seed=2)
    rng = np.random.default_rng(0)
    for node_id in range(1, 200):
        profile = profiles(node_id)
        for t in rng.uniform(0.0, 1e6, 20):
            online = profile.next_online(float(t))
            assert online >= t
            assert profile.is_online(online)
            assert online - t < profile.window_period


def test_windows_given_as_lists_become_tuples() -> None:
    profile = ClientProfile(windows=[[0, 1], [2, 3]])  # type: ignore[arg-type]
    assert profile.windows == ((0.0, 1.0), (2.0, 3.0))
    assert profile == ClientProfile(windows=((0.0, 1.0), (2.0, 3.0)))
    hash(profile)


@pytest.mark.parametrize(
    ("windows", "period", "words"),
    [
        (((5.0, 5.0),), 0.0, "0 <= start < end"),
        (((-1.0, 2.0),), 0.0, "0 <= start < end"),
        (((math.nan, 2.0),), 0.0, "0 <= start < end"),
        (((10.0, 20.0), (15.0, 30.0)), 0.0, "not overlap"),
        (((10.0, 20.0), (0.0, 5.0)), 0.0, "sorted"),
        (((0.0, 150.0),), 100.0, "within \\[0, window_period\\]"),
        (((0.0, math.inf),), 100.0, "window_period"),
        ((), -1.0, "window_period must be a finite number >= 0"),
        ((), math.inf, "window_period must be a finite number >= 0"),
        (((1.0, 2.0, 3.0),), 0.0, "\\(start, end\\) pairs"),
    ],
)
def test_bad_windows_are_refused(
    windows: tuple[tuple[float, float], ...], period: float, words: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=words):
        ClientProfile(windows=windows, window_period=period)


def test_a_last_window_may_never_end() -> None:
    profile = ClientProfile(windows=((100.0, math.inf),))
    assert profile.next_online(0.0) == 100.0
    assert profile.is_online(1e15)


# -- ProfileDistribution availability ------------------------------------------------------------
def test_distribution_availability_is_the_share_of_time_online() -> None:
    period = 3600.0
    profiles = ProfileDistribution(availability=0.3, availability_period=period, seed=7)
    drawn = [profiles(node_id) for node_id in range(1, 4001)]
    for profile in drawn:
        assert profile.window_period == period
        online = sum(end - start for start, end in profile.windows)
        assert online == pytest.approx(0.3 * period)
    assert {len(profile.windows) for profile in drawn} == {1, 2}  # some wrap around
    # Uniform phases: at any time about 30% of the clients are online.
    for t in (0.0, 1234.5, 10 * period + 17.0):
        share = np.mean([profile.is_online(t) for profile in drawn])
        assert share == pytest.approx(0.3, abs=0.03)


def test_availability_leaves_the_other_draws_as_they_were() -> None:
    always = ProfileDistribution(speed=1000.0, speed_sigma=0.5, slow_fraction=0.2, seed=4)
    sometimes = dataclasses.replace(always, availability=0.5, availability_period=60.0)
    for node_id in range(1, 200):
        before, after = always(node_id), sometimes(node_id)
        assert (before.windows, before.window_period) == ((), 0.0)
        assert after.windows
        assert dataclasses.replace(after, windows=(), window_period=0.0) == before
    assert sometimes.typical().windows == ()  # the median device stays always online


@pytest.mark.parametrize(
    ("availability", "period", "words"),
    [
        (0.0, 10.0, "availability must be in \\(0, 1\\]"),
        (1.5, 10.0, "availability must be in \\(0, 1\\]"),
        (0.5, 0.0, "needs availability_period > 0"),
        (0.5, -1.0, "availability_period must be a finite number >= 0"),
        (0.5, math.inf, "availability_period must be a finite number >= 0"),
    ],
)
def test_bad_availability_is_refused(availability: float, period: float, words: str) -> None:
    with pytest.raises(InvalidArgumentError, match=words):
        ProfileDistribution(availability=availability, availability_period=period)


# -- device traces ----------------------------------------------------------------------------
def test_profiles_csv_reads_windows(tmp_path: Path) -> None:
    path = tmp_path / "devices.csv"
    path.write_text(
        "node_id,speed,windows,window_period\n"
        "1,50,0-100;200-350.5,\n"
        "2,60,,\n"
        "3,70, 10 - 20 ,100\n"
        "4,80,1e-3-5;6-inf,\n"
    )
    profiles = load_profiles_csv(path)
    assert profiles[1] == ClientProfile(speed=50.0, windows=((0.0, 100.0), (200.0, 350.5)))
    assert profiles[2] == ClientProfile(speed=60.0)
    assert profiles[3] == ClientProfile(speed=70.0, windows=((10.0, 20.0),), window_period=100.0)
    assert profiles[4].windows == ((0.001, 5.0), (6.0, math.inf))


@pytest.mark.parametrize(
    ("row", "words"),
    [
        ("1,0-100;soon", "line 2: windows: expected start-end pairs .*'soon'"),
        ("1,0-100;50-60", "line 2: .*not overlap"),
        ("1,-5-10", "line 2: windows"),
    ],
)
def test_profiles_csv_refuses_bad_windows(tmp_path: Path, row: str, words: str) -> None:
    path = tmp_path / "devices.csv"
    path.write_text(f"node_id,windows\n{row}\n")
    with pytest.raises(InvalidArgumentError, match=words):
        load_profiles_csv(path)


# -- the simulation ---------------------------------------------------------------------------
def _one_client(
    profile: ClientProfile,
    *,
    samples: int = 0,
    ttl: float | None = None,
    offline: Literal["wait", "fail"] = "wait",
) -> tuple[Asker, Answerer, SimulationResult]:
    """The server asks client 1, which has ``profile``, once."""
    server, client = Asker([1], ttl=ttl), Answerer(samples)
    profiles = ProfileTable({1: profile})
    return server, client, simulate(server, [client], profiles=profiles, offline=offline)


def test_a_message_to_an_offline_client_waits_for_its_window() -> None:
    _, client, result = _one_client(ClientProfile(windows=((100.0, 200.0),)))
    assert events(result) == ["held", "delivered", "delivered"]
    held, delivered, _ = result.trace
    assert held.time < 1.0  # it arrived early...
    assert delivered.time == 100.0  # ...and was delivered when the window opened, not later
    assert held.metadata is delivered.metadata
    assert len(client.seen) == 1


def test_with_fail_a_message_to_an_offline_client_fails_at_once() -> None:
    server, client, result = _one_client(ClientProfile(windows=((100.0, 200.0),)), offline="fail")
    assert client.seen == []
    (error,) = server.answers
    assert error.error.code == ErrorCode.NODE_UNAVAILABLE
    assert "node 1 is offline" in str(error.error.reason)
    assert events(result) == ["offline", "delivered"]
    assert result.time < 1.0


def test_a_held_message_still_expires() -> None:
    server, client, result = _one_client(ClientProfile(windows=((100.0, 200.0),)), ttl=50.0)
    assert client.seen == []
    (error,) = server.answers
    assert error.error.code == ErrorCode.MESSAGE_EXPIRED
    assert events(result) == ["held", "expired", "delivered"]
    assert result.trace[1].time == 100.0


def test_a_reply_sent_while_offline_leaves_at_the_next_window() -> None:
    # 15 s of training in a window that closes at 10 s: the reply waits for the one at 50 s.
    profile = ClientProfile(latency=0.0, windows=((0.0, 10.0), (50.0, 60.0)))
    server, _, result = _one_client(profile, samples=30_000)
    assert events(result) == ["delivered", "delivered"]
    (answer,) = server.answers
    assert not answer.has_error()
    transfer = result.stats.bytes_up * 8 / (profile.uplink_mbps * 1e6)
    assert result.trace[1].time == pytest.approx(50.0 + transfer)


def test_a_reply_from_a_client_with_no_window_left_is_lost() -> None:
    server, _, result = _one_client(ClientProfile(windows=((0.0, 5.0),)), samples=20_000)
    assert events(result) == ["delivered", "offline"]
    assert server.answers == []
    assert result.stats.bytes_up == 0  # it never left


def test_a_message_to_a_client_with_no_window_left_fails() -> None:
    server, client, result = _one_client(ClientProfile(latency=2.0, windows=((0.0, 1.0),)))
    assert client.seen == []
    (error,) = server.answers
    assert error.error.code == ErrorCode.NODE_UNAVAILABLE
    assert "no window left" in str(error.error.reason)
    assert events(result) == ["offline", "delivered"]


def test_availability_runs_are_reproducible() -> None:
    profiles = ProfileDistribution(
        availability=0.4, availability_period=30.0, dropout=0.2, speed_sigma=0.5, seed=1
    )

    def run() -> list[tuple[float, str, str]]:
        result = simulate(
            Asker(list(range(1, 41))),
            lambda node_id: Answerer(samples=5000),
            num_clients=40,
            profiles=profiles,
            seed=3,
        )
        return [(e.time, e.event, e.metadata.message_id) for e in result.trace]

    first = run()
    assert {"held", "delivered", "dropped"} <= {event for _, event, _ in first}
    assert first == run()


def test_clients_without_windows_run_as_before() -> None:
    plain = simulate(Asker([1, 2]), [Answerer(100), Answerer(100)])
    timed = simulate(Asker([1, 2]), [Answerer(100), Answerer(100)], offline="fail")
    assert [(e.time, e.event) for e in plain.trace] == [(e.time, e.event) for e in timed.trace]
    assert events(plain) == ["delivered"] * 4


def test_offline_must_be_wait_or_fail() -> None:
    with pytest.raises(InvalidArgumentError, match='offline must be "wait" or "fail"'):
        Simulation(Asker([1]), [Answerer()], offline="later")  # type: ignore[arg-type]


# -- configuration ------------------------------------------------------------------------------
SMALL = [
    "data.dataset=synthetic",
    "data.num_features=10",
    "federation.num_clients=12",
    "federation.clients_per_round=4",
    "federation.num_rounds=2",
    "trainer.epochs=1",
]


def test_availability_below_one_needs_a_period() -> None:
    config = load_config(None, [*SMALL, "simulation.availability=0.5"])
    with pytest.raises(ConfigError, match=r"simulation\.availability_period > 0"):
        build_federation(config)


def test_configured_availability_reaches_the_simulation() -> None:
    config = load_config(
        None,
        [
            *SMALL,
            "simulation.availability=0.5",
            "simulation.availability_period=60",
            "simulation.offline=fail",
        ],
    )
    federation = build_federation(config)
    profile = federation.simulation._profile(1)
    assert profile.window_period == 60.0
    assert sum(end - start for start, end in profile.windows) == pytest.approx(30.0)
    assert federation.simulation._offline == "fail"


def test_a_federation_trains_through_offline_clients() -> None:
    config = load_config(
        None, [*SMALL, "simulation.availability=0.5", "simulation.availability_period=60"]
    )
    federation = build_federation(config)
    result = federation.simulation.run()
    assert federation.server.finished, federation.server.failure
    assert len(federation.server.history) == 2
    assert result.stats.events.get("held", 0) > 0
