"""AsyncServer: triggers, broadcast manners, staleness bookkeeping, FedAsync and FedBuff, and
the synchronous server's over-selection."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from fedbus.errors import InvalidArgumentError
from fedbus.fl import AsyncServer, Client, FedAvg, RoundRecord, Server, Staleness
from fedbus.fl.algorithms import Scaffold
from fedbus.fl.strategy import FedAsync, FedBuff, Krum
from fedbus.message import ArrayRecord
from fedbus.runtime.simulation import ClientProfile, ProfileTable, simulate

Arrays = dict[str, np.ndarray]


class StepTrainer:
    """Adds a fixed step to whatever model it gets: updates an exact computation can follow.

    ``samples`` is the work it reports, so a profile's speed sets how long it takes.
    """

    def __init__(self, step: float, samples: int = 100, fail: bool = False) -> None:
        self.step, self.samples, self.fail = step, samples, fail
        self.received_versions: list[int] = []

    def fit(self, arrays: Arrays, config: dict[str, Any]) -> tuple[Arrays, int, dict[str, float]]:
        if self.fail:
            raise RuntimeError("this client always fails")
        self.received_versions.append(int(config.get("model_version", -1)))
        new = {key: value + self.step for key, value in arrays.items()}
        return new, 10, {"samples_processed": self.samples, "train_loss": self.step}

    def evaluate(
        self, arrays: Arrays, config: dict[str, Any]
    ) -> tuple[float, int, dict[str, float]]:
        return 0.0, 10, {"accuracy": 0.0}


def start() -> Arrays:
    return {"w": np.zeros(3)}


def profiles(speeds: dict[int, float]) -> ProfileTable:
    """Clients with these speeds and no network delay, so times are easy to follow."""
    return ProfileTable(
        {
            node: ClientProfile(speed=speed, latency=0.0, uplink_mbps=1e9, downlink_mbps=1e9)
            for node, speed in speeds.items()
        }
    )


# -- staleness rules ----------------------------------------------------------------------------
def test_discounts_match_their_formulas() -> None:
    constant = Staleness(tolerance=3, discount="constant")
    assert [constant.weight(s) for s in range(5)] == [1.0, 1.0, 1.0, 1.0, None]
    polynomial = Staleness(tolerance=10, discount="polynomial", exponent=0.5)
    for s in range(11):
        assert polynomial.weight(s) == pytest.approx((1 + s) ** -0.5, rel=1e-15)
    assert polynomial.weight(11) is None
    hinge = Staleness(tolerance=20, discount="hinge", exponent=2.0, hinge=3)
    assert [hinge.weight(s) for s in (0, 3)] == [1.0, 1.0]
    assert hinge.weight(4) == pytest.approx(1 / 3)
    assert hinge.weight(8) == pytest.approx(1 / 11)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"tolerance": -1}, "tolerance must be >= 0"),
        ({"tolerance": 1.5}, "tolerance must be an int"),
        ({"discount": "linear"}, "discount must be one of constant, polynomial, hinge"),
        ({"exponent": 0.0}, "exponent must be a finite number > 0"),
        ({"hinge": float("nan")}, "hinge must be a finite number >= 0"),
    ],
)
def test_staleness_refuses_bad_settings(options: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        Staleness(**options)


# -- staleness bookkeeping ------------------------------------------------------------------------
def run_fast_and_slow(staleness: Staleness, rounds: int) -> tuple[AsyncServer, StepTrainer]:
    """Client 1 is 10x faster than client 2; FedBuff aggregates every update (goal 1)."""
    fast, slow = StepTrainer(1.0), StepTrainer(100.0)
    server = AsyncServer(
        FedBuff(),
        start(),
        num_rounds=rounds,
        concurrency=2,
        goal=1,
        staleness=staleness,
        evaluate_every=0,
    )
    simulate(server, [Client(fast), Client(slow)], profiles=profiles({1: 1000.0, 2: 100.0}))
    return server, slow


def test_a_stale_update_is_discounted_exactly_as_configured() -> None:
    policy = Staleness(tolerance=20, discount="polynomial", exponent=0.5)
    server, slow = run_fast_and_slow(policy, rounds=12)
    assert server.finished
    # the slow client trained on version 0 and arrived after the fast one made versions 1..9
    records = server.history
    slow_round = next(r for r in records if r.train_loss == 100.0)
    assert slow.received_versions[0] == 0
    assert slow_round.staleness == {9: 1}
    assert slow_round.round == 10
    # each update moved the model by its step times (1 + s) ** -0.5, s its staleness
    expected = 0.0
    for record in records:
        ((staleness, count),) = record.staleness.items()
        expected += count * record.train_loss * (1 + staleness) ** -0.5  # type: ignore[operator]
    assert any(s not in (0, 9) for r in records for s in r.staleness)  # a stale fast update too
    np.testing.assert_allclose(server.arrays.to_numpy_dict()["w"], expected, rtol=0, atol=1e-12)


def test_an_update_beyond_the_tolerance_is_dropped_and_counted() -> None:
    server, slow = run_fast_and_slow(Staleness(tolerance=3), rounds=12)
    assert server.finished
    assert slow.received_versions  # it trained and answered ...
    dropped = sum(r.stale_dropped for r in server.history)
    assert dropped >= 1  # ... too late to count
    assert all(r.train_loss == 1.0 for r in server.history)
    assert max(s for r in server.history for s in r.staleness) <= 3
    # nothing of the slow client reached the model: 12 fast steps of 1
    np.testing.assert_allclose(server.arrays.to_numpy_dict()["w"], 12.0, atol=1e-12)
    assert server.participation.get(2, 0) == 0
    assert server.participation[1] == 12


def test_fedasync_mixes_each_update_by_alpha_times_the_discount() -> None:
    policy = Staleness(tolerance=20, discount="hinge", exponent=1.0, hinge=1)
    fast, slow = StepTrainer(1.0), StepTrainer(50.0)
    server = AsyncServer(
        FedAsync(alpha=0.5), start(), num_rounds=8, concurrency=2, staleness=policy
    )
    recorded: list[RoundRecord] = []
    server.on_round_end = recorded.append
    simulate(server, [Client(fast), Client(slow)], profiles=profiles({1: 1000.0, 2: 200.0}))
    # replay the paper's rule x <- (1 - a s) x + a s x_new over the recorded arrivals
    x, models = 0.0, {0: 0.0}
    fast_iter, slow_iter = iter(fast.received_versions), iter(slow.received_versions)
    for record in recorded:
        ((staleness, _),) = record.staleness.items()
        step = record.train_loss
        version = next(fast_iter if step == 1.0 else slow_iter)
        assert record.round - 1 - version == staleness
        x_new = models[version] + step
        share = 0.5 * policy.weight(staleness)  # type: ignore[operator]
        x = (1 - share) * x + share * x_new
        models[record.round] = x
    assert any(s > 1 for r in recorded for s in r.staleness)  # the hinge was exercised
    np.testing.assert_allclose(server.arrays.to_numpy_dict()["w"], x, rtol=1e-12)


# -- triggers and broadcast ---------------------------------------------------------------------
def test_time_trigger_extends_empty_windows_and_the_run_completes() -> None:
    # windows of 1 ms, while clients need 0.1, 0.2 and 0.3 s: every window closes empty
    trainers = [StepTrainer(1.0, samples=100 * i) for i in (1, 2, 3)]
    server = AsyncServer(
        FedBuff(), start(), num_rounds=5, concurrency=3, trigger="time", period=0.001
    )
    timers: list[float] = []
    set_timer = server.call_later
    server.call_later = lambda delay, callback: timers.append(delay) or set_timer(delay, callback)  # type: ignore[method-assign]
    result = simulate(
        server, [Client(t) for t in trainers], profiles=profiles(dict.fromkeys((1, 2, 3), 1000.0))
    )
    assert server.finished
    assert [r.round for r in server.history] == [1, 2, 3, 4, 5]
    # an extended window closes on the first update to arrive: nothing waits in the buffer
    assert all(r.straggler_wait == 0.0 and r.clients_replied == 1 for r in server.history)
    assert result.time < 1.0  # no timer kept the run alive after the last version
    assert timers == [0.001] * 5  # one window per version: an empty window set no new timer


def test_time_trigger_aggregates_what_arrived_in_the_window() -> None:
    trainers = [StepTrainer(1.0, samples=100 * (i + 1)) for i in range(4)]
    server = AsyncServer(
        FedBuff(), start(), num_rounds=3, concurrency=4, trigger="time", period=0.25
    )
    simulate(
        server,
        [Client(t) for t in trainers],
        profiles=profiles(dict.fromkeys((1, 2, 3, 4), 1000.0)),
    )
    first = server.history[0]
    # updates arrive at 0.1x s: the first window (0.25 s) closes with client 1's first update,
    # client 2's, and client 1's second (it was sent the model again as soon as it reported)
    assert first.clients_replied == 3
    assert first.time == pytest.approx(0.25, abs=0.01)
    assert first.straggler_wait > 0


def test_after_aggregating_sends_work_only_when_a_version_is_made() -> None:
    trainers = [StepTrainer(1.0, samples=100 * (i + 1)) for i in range(4)]
    server = AsyncServer(
        FedBuff(),
        start(),
        num_rounds=4,
        concurrency=4,
        goal=2,
        broadcast="after_aggregating",
        staleness=Staleness(tolerance=10),
    )
    result = simulate(
        server,
        [Client(t) for t in trainers],
        profiles=profiles(dict.fromkeys((1, 2, 3, 4), 1000.0)),
    )
    sent_at = sorted(
        {e.time for e in result.trace if e.event == "delivered" and e.metadata.dst_node_id != 0}
    )
    made_at = [0.0] + [r.time for r in server.history]
    assert all(any(abs(t - m) < 0.01 for m in made_at) for t in sent_at)
    assert server.finished


def test_after_receiving_keeps_concurrency_clients_busy() -> None:
    trainers = [StepTrainer(1.0) for _ in range(6)]
    server = AsyncServer(FedBuff(), start(), num_rounds=6, concurrency=2, goal=3)
    simulate(
        server, [Client(t) for t in trainers], profiles=profiles(dict.fromkeys(range(1, 7), 1000.0))
    )
    assert server.finished
    assert sum(r.clients_replied for r in server.history) == 18
    # the first two requests, then one per update but the last (which ends the run)
    assert sum(r.clients_sampled for r in server.history) == 2 + 18 - 1


def test_async_runs_repeat_exactly() -> None:
    def run() -> tuple[list[RoundRecord], np.ndarray]:
        trainers = [StepTrainer(float(i)) for i in range(1, 9)]
        speeds = {i: 100.0 * i for i in range(1, 9)}
        server = AsyncServer(FedBuff(), start(), num_rounds=10, concurrency=4, goal=2, seed=3)
        simulate(server, [Client(t) for t in trainers], profiles=profiles(speeds))
        return server.history, server.arrays.to_numpy_dict()["w"]

    (first, w1), (second, w2) = run(), run()
    assert first == second
    np.testing.assert_array_equal(w1, w2)


def test_fresh_updates_at_full_weight_give_the_synchronous_result_bit_for_bit() -> None:
    def clients() -> list[Client]:
        return [Client(StepTrainer(0.1 * i, samples=50 * i)) for i in range(1, 5)]

    speeds = profiles(dict.fromkeys(range(1, 5), 1000.0))
    sync = Server(FedAvg(), start(), num_rounds=3, clients_per_round=4)
    simulate(sync, clients(), profiles=speeds)
    asynchronous = AsyncServer(
        FedAvg(), start(), num_rounds=3, concurrency=4, goal=4, broadcast="after_aggregating"
    )
    simulate(asynchronous, clients(), profiles=speeds)
    assert all(r.staleness == {0: 4} for r in asynchronous.history)
    np.testing.assert_array_equal(
        sync.arrays.to_numpy_dict()["w"], asynchronous.arrays.to_numpy_dict()["w"]
    )


# -- failures -------------------------------------------------------------------------------------
def test_a_silent_client_times_out_and_its_slot_is_refilled() -> None:
    trainers = [StepTrainer(1.0) for _ in range(3)]
    table = profiles(dict.fromkeys((1, 2), 1000.0))
    lost = ClientProfile(dropout=1.0)
    source = ProfileTable({**table.profiles, 3: lost}, table.default)
    server = AsyncServer(FedBuff(), start(), num_rounds=30, concurrency=2, request_timeout=1.0)
    simulate(server, [Client(t) for t in trainers], profiles=source)
    assert server.finished
    assert sum(r.clients_failed for r in server.history) >= 1
    assert server.participation.get(3, 0) == 0


def test_clients_that_always_fail_stop_the_run_with_a_reason() -> None:
    trainers = [StepTrainer(1.0, fail=True) for _ in range(2)]
    server = AsyncServer(FedBuff(), start(), num_rounds=3, concurrency=2, max_failures=5)
    simulate(server, [Client(t) for t in trainers])
    assert not server.finished
    assert server.failure is not None
    assert "5 requests in a row failed" in server.failure


# -- what each server refuses -------------------------------------------------------------------
def test_the_servers_refuse_what_they_cannot_run() -> None:
    with pytest.raises(
        InvalidArgumentError, match="aggregates asynchronously; run it with AsyncServer"
    ):
        Server(FedBuff(), start(), num_rounds=1, clients_per_round=1)
    with pytest.raises(InvalidArgumentError, match="synchronous Server"):
        AsyncServer(Scaffold(num_clients=4), start(), num_rounds=1, concurrency=2)
    with pytest.raises(InvalidArgumentError, match="goal must be <= concurrency"):
        AsyncServer(
            FedBuff(), start(), num_rounds=1, concurrency=2, goal=3, broadcast="after_aggregating"
        )
    with pytest.raises(InvalidArgumentError, match="period must be a finite number"):
        AsyncServer(FedBuff(), start(), num_rounds=1, concurrency=2, trigger="time")
    with pytest.raises(InvalidArgumentError, match="trigger must be one of goal, time"):
        AsyncServer(FedBuff(), start(), num_rounds=1, concurrency=2, trigger="all")
    with pytest.raises(InvalidArgumentError, match="Krum"):
        AsyncServer(Krum(num_malicious=1), start(), num_rounds=1, concurrency=8, goal=2)
    with pytest.raises(InvalidArgumentError, match="alpha must be a finite number in"):
        FedAsync(alpha=1.5)


def test_stale_update_refuses_arrays_the_model_lacks() -> None:
    current = ArrayRecord({"w": np.zeros(2)})
    with pytest.raises(InvalidArgumentError, match="array 'v' the model lacks"):
        FedAvg().stale_update(
            current, ArrayRecord({"w": np.ones(2)}), ArrayRecord({"v": np.ones(2)}), 0.5
        )
    with pytest.raises(InvalidArgumentError, match="has shape"):
        FedAvg().stale_update(
            current, ArrayRecord({"w": np.ones(2)}), ArrayRecord({"w": np.ones(3)}), 0.5
        )


# -- over-selection in synchronous rounds -------------------------------------------------------
def test_over_selection_closes_the_round_on_the_first_replies() -> None:
    trainers = [StepTrainer(1.0, samples=100 * i) for i in range(1, 7)]
    server = Server(FedAvg(), start(), num_rounds=2, clients_per_round=4, over_selection=0.5)
    simulate(
        server, [Client(t) for t in trainers], profiles=profiles(dict.fromkeys(range(1, 7), 1000.0))
    )
    first, second = server.history
    assert first.clients_sampled == 6
    assert first.clients_replied == 4
    assert second.late_replies + first.late_replies >= 1  # the two stragglers arrived late
    assert first.staleness == {0: 4}
    with pytest.raises(InvalidArgumentError, match="over_selection must be a finite number >= 0"):
        Server(FedAvg(), start(), num_rounds=1, clients_per_round=1, over_selection=-0.1)


def test_a_resumed_async_server_continues_the_version_numbers() -> None:
    trainers = [StepTrainer(1.0) for _ in range(2)]
    first = AsyncServer(FedBuff(), start(), num_rounds=3, concurrency=2, seed=5)
    simulate(first, [Client(t) for t in trainers], profiles=profiles({1: 1000.0, 2: 500.0}))
    resumed = AsyncServer(
        FedBuff(),
        first.arrays,
        num_rounds=6,
        concurrency=2,
        first_round=4,
        sampler_state=first.sampler_state(),
    )
    later = [StepTrainer(1.0) for _ in range(2)]
    simulate(resumed, [Client(t) for t in later], profiles=profiles({1: 1000.0, 2: 500.0}))
    assert [r.round for r in resumed.history] == [4, 5, 6]
    assert min(v for t in later for v in t.received_versions) == 3
    # it went on from the first run's model: three more versions, each moving it forward
    assert (resumed.arrays.to_numpy_dict()["w"] > first.arrays.to_numpy_dict()["w"] + 1).all()
