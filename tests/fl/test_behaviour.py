"""The FL behaviour suite: every flow, on every runtime, with the same numbers.

Each test runs through ``fl_runtime``, parametrized over the embedded simulation, gRPC (every
node in this process, over real streams on 127.0.0.1) and Ray (client work in Ray workers; each
Ray run is also compared, bit for bit, with the local simulation of the same federation). The
federations are in ``behaviour``: a model of four values, clients that add their node id to it,
so every aggregate is known exactly. Nothing waits on a clock: who is late is decided by holds
(simulated work, or a signal over gRPC), and a round timeout only ever fires for a client that
never answers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from fedbus.fl import FedAvg, Staleness
from fedbus.fl.privacy import DifferentialPrivacy
from fedbus.fl.secagg import protocol as p
from fedbus.fl.secagg.quantize import Quantizer
from tests.fl.behaviour import (
    LONGER,
    SIZE,
    Clients,
    Hold,
    Leak,
    Runtime,
    WatchedAsyncServer,
    WatchedSecAggServer,
    WatchedServer,
    initial_model,
    simulate_locally,
    step,
)

#: Seconds a round waits for a client that never answers: long enough that no honest reply on a
#: loaded machine comes later, so only the silent client is cut off.
ROUND_TIMEOUT = 5.0


@pytest.fixture(params=["simulation", "grpc", "ray"])
def fl_runtime(request: pytest.FixtureRequest) -> Runtime[Any]:
    """Runs a server and a client factory to completion on one runtime; returns the server."""
    if request.param == "ray":
        import fedbus.runtime.ray  # noqa: F401  # registers the "ray" backend

        request.getfixturevalue("local_ray")  # started once per session
    return Runtime(request.param)


def only_where(runtime: Runtime[Any], *names: str, reason: str) -> None:
    if runtime.name not in names:
        pytest.skip(f"not on {runtime.name}: {reason}")


def model_after(steps: list[float], rounds: int = 1) -> np.ndarray:
    """The model after ``rounds`` FedAvg rounds of clients adding ``steps`` (equal weights)."""
    return np.full(SIZE, rounds * float(np.mean(steps)))


def counts(record: Any) -> tuple[int, int, int, int, int]:
    return (
        record.clients_sampled,
        record.clients_replied,
        record.clients_failed,
        record.late_replies,
        record.refused_replies,
    )


# -- rounds: timeouts, declines, retries ----------------------------------------------------------
@pytest.mark.slow  # over gRPC the round waits ROUND_TIMEOUT wall seconds for the silent client
def test_a_round_timeout_closes_the_round_with_the_clients_that_answered(
    fl_runtime: Runtime[Any],
) -> None:
    clients = Clients(kinds={4: "silent"})

    def build() -> WatchedServer:
        return WatchedServer(
            FedAvg(),
            initial_model(),
            num_rounds=1,
            clients_per_round=4,
            min_replies=3,
            round_timeout=ROUND_TIMEOUT,
        )

    server = fl_runtime.run(build, clients, 4)
    assert server.finished, server.failure
    (record,) = server.snapshots
    assert counts(record) == (4, 3, 0, 0, 0)  # the silent client is neither failed nor late
    np.testing.assert_array_equal(server.models[0], model_after([1, 2, 3]))


def test_declining_clients_count_as_failed_and_the_round_aggregates_the_others(
    fl_runtime: Runtime[Any],
) -> None:
    clients = Clients(kinds={4: "decline", 5: "decline"})

    def build() -> WatchedServer:
        return WatchedServer(
            FedAvg(), initial_model(), num_rounds=2, clients_per_round=5, min_replies=3
        )

    server = fl_runtime.run(build, clients, 5)
    assert server.finished, server.failure
    assert [counts(r) for r in server.snapshots] == [(5, 3, 2, 0, 0)] * 2
    np.testing.assert_array_equal(server.models[-1], model_after([1, 2, 3], rounds=2))


def test_a_round_short_of_min_replies_is_retried_then_the_run_fails_with_a_reason(
    fl_runtime: Runtime[Any],
) -> None:
    clients = Clients(kinds={4: "decline", 5: "decline"})

    def build() -> WatchedServer:
        return WatchedServer(
            FedAvg(),
            initial_model(),
            num_rounds=2,
            clients_per_round=5,
            min_replies=4,
            max_round_retries=2,
        )

    server = fl_runtime.run(build, clients, 5)
    assert not server.finished
    assert server.failure is not None
    assert server.failure.startswith(
        "round 1: 3 of 5 sampled clients replied, fewer than min_replies=4, after 3 attempts"
    )
    assert server.snapshots == []  # no round ended
    np.testing.assert_array_equal(server.arrays.to_numpy_dict()["w"], np.zeros(SIZE))
    assert server.participation == {}


# -- late and refused replies ---------------------------------------------------------------------
def test_a_straggler_over_selected_out_of_its_round_is_late_and_not_aggregated(
    fl_runtime: Runtime[Any],
) -> None:
    """Five sampled for four: node 5 is held in round 1 until the round closed without it; in
    round 2 the others are held until its late round-1 reply was counted and its round-2
    update accepted."""
    round_1_closed, late, straggler_in = (fl_runtime.signal() for _ in range(3))
    fast = (Hold(2, 2, late, work=LONGER), Hold(2, 2, straggler_in, work=LONGER))
    clients = Clients(holds={1: fast, 2: fast, 3: fast, 4: fast, 5: (Hold(1, 1, round_1_closed),)})

    def build() -> WatchedServer:
        server = WatchedServer(
            FedAvg(),
            initial_model(),
            num_rounds=2,
            clients_per_round=4,
            over_selection=0.25,
            on_round_end=lambda record: record.round == 1 and round_1_closed.set(),
        )
        server.late, server.accepted[5] = late, straggler_in
        return server

    server = fl_runtime.run(build, clients, 5)
    assert server.finished, server.failure
    first, second = server.snapshots
    assert counts(first) == (5, 4, 0, 0, 0)
    assert counts(second) == (5, 4, 0, 1, 0)  # node 5's round-1 reply, counted in round 2
    # round 1 is the mean of nodes 1-4: the straggler's step of 5 is not in it
    np.testing.assert_array_equal(server.models[0], model_after([1, 2, 3, 4]))
    # round 2 has node 5 (the others waited for it) and three of nodes 1-4
    change = float(server.models[1][0] - server.models[0][0])
    assert (5 + 1 + 2 + 3) / 4 <= change <= (5 + 2 + 3 + 4) / 4
    assert server.participation[5] == 1


def test_a_reply_forged_by_another_node_is_refused_and_the_result_is_unchanged(
    fl_runtime: Runtime[Any],
) -> None:
    only_where(
        fl_runtime,
        "simulation",
        "grpc",
        reason="the impostor is handed another node's request through an object in this "
        "process, which a copy of it in a Ray worker cannot share",
    )
    refused = fl_runtime.signal()
    leak = Leak(ready=fl_runtime.signal(), target=1)
    # node 1 answers only once the forgery of its reply was refused
    clients = Clients(kinds={2: "impostor"}, holds={1: (Hold(1, 1, refused),)}, leak=leak)

    def build() -> WatchedServer:
        server = WatchedServer(FedAvg(), initial_model(), num_rounds=1, clients_per_round=4)
        server.leak, server.refused = leak, refused
        return server

    server = fl_runtime.run(build, clients, 4)
    assert server.finished, server.failure
    (record,) = server.snapshots
    assert counts(record) == (4, 4, 0, 0, 1)
    assert server.refused_replies == 1
    # the honest mean: the forged step (behaviour.FORGED_STEP) is not in it
    np.testing.assert_array_equal(server.models[0], model_after([1, 2, 3, 4]))
    assert sorted(node for node, _ in server.received) == [1, 2, 3, 4]


# -- refused updates ------------------------------------------------------------------------------
def test_non_finite_updates_are_refused_and_the_model_stays_finite(
    fl_runtime: Runtime[Any],
) -> None:
    clients = Clients(kinds={4: "nan", 5: "inf"})

    def build() -> WatchedServer:
        return WatchedServer(FedAvg(), initial_model(), num_rounds=2, clients_per_round=5)

    server = fl_runtime.run(build, clients, 5)
    assert server.finished, server.failure
    assert [counts(r) for r in server.snapshots] == [(5, 3, 2, 0, 0)] * 2
    final = server.arrays.to_numpy_dict()["w"]
    assert np.isfinite(final).all()
    np.testing.assert_array_equal(final, model_after([1, 2, 3], rounds=2))
    assert set(server.participation) == {1, 2, 3}


# -- asynchronous triggers ------------------------------------------------------------------------
def test_the_goal_trigger_aggregates_goal_updates_per_version_and_counts_staleness(
    fl_runtime: Runtime[Any],
) -> None:
    """Three clients train, two updates make a version, and work is sent only when a version
    is made. Node 3 is held on version 0 until version 2 exists; nodes 1 and 2, sent version 2,
    are held until node 3's update was accepted: it is exactly 2 versions old."""
    two_versions, straggler_in = fl_runtime.signal(), fl_runtime.signal()
    # the async server sends version v as server_round v + 1
    fast = (Hold(3, 10**6, straggler_in, work=LONGER),)
    clients = Clients(holds={1: fast, 2: fast, 3: (Hold(1, 1, two_versions),)})

    def build() -> WatchedAsyncServer:
        server = WatchedAsyncServer(
            FedAvg(),
            initial_model(),
            num_rounds=4,
            concurrency=3,
            trigger="goal",
            goal=2,
            broadcast="after_aggregating",
            staleness=Staleness(tolerance=10, discount="constant"),
            on_round_end=lambda record: record.round == 2 and two_versions.set(),
        )
        server.accepted[3] = straggler_in
        return server

    server = fl_runtime.run(build, clients, 3)
    assert server.finished, server.failure
    records = server.snapshots
    assert [r.round for r in records] == [1, 2, 3, 4]
    assert [r.clients_replied for r in records] == [2, 2, 2, 2]
    assert sum(server.participation.values()) == 8
    # versions 1 and 2: nodes 1 and 2 on the current model; version 3: node 3's update of
    # version 0 and a fresh one; version 4: two updates, at most one version old
    assert [node for node, _ in server.received[:4]].count(3) == 0
    assert records[0].staleness == records[1].staleness == {0: 2}
    assert records[2].staleness == {0: 1, 2: 1}
    assert sum(records[3].staleness.values()) == 2
    assert set(records[3].staleness) <= {0, 1}
    assert all(r.stale_dropped == 0 for r in records)


def test_the_time_trigger_aggregates_what_arrived_in_each_window(
    fl_runtime: Runtime[Any],
) -> None:
    """One client at a time and a window shorter than a round trip: each window is extended
    until the one update in flight arrives, and that update alone makes the next version."""

    def build() -> WatchedAsyncServer:
        return WatchedAsyncServer(
            FedAvg(),
            initial_model(),
            num_rounds=4,
            concurrency=1,
            trigger="time",
            period=0.01,
            broadcast="after_aggregating",
        )

    server = fl_runtime.run(build, Clients(), 3)
    assert server.finished, server.failure
    records = server.snapshots
    assert [r.clients_replied for r in records] == [1, 1, 1, 1]
    assert [r.staleness for r in records] == [{0: 1}] * 4
    assert sum(server.participation.values()) == 4
    # each version is the previous one plus the step of the one client that trained on it
    expected = sum(count * step(node) for node, count in server.participation.items())
    np.testing.assert_array_equal(server.arrays.to_numpy_dict()["w"], np.full(SIZE, expected))


# -- secure aggregation ---------------------------------------------------------------------------
@pytest.mark.parametrize("stage", [p.SECAGG_SHARE, p.SECAGG_UNMASK])
def test_secagg_recovers_the_sum_when_a_client_drops_out(
    fl_runtime: Runtime[Any], stage: str
) -> None:
    only_where(
        fl_runtime,
        "simulation",
        "grpc",
        reason="SecAggClient keeps its round's secrets on the object (portable=False), so the "
        "Ray backend answers it in the driver: the simulation test again",
    )
    # node 2 drops out at `stage`; node 5 sends its masked input, then drops before unmasking
    clients = Clients(secagg=True, drops={2: stage, 5: p.SECAGG_UNMASK}, scale=0.1)

    def build() -> WatchedSecAggServer:
        return WatchedSecAggServer(
            FedAvg(),
            initial_model(),
            num_rounds=1,
            clients_per_round=6,
            degree=5,
            threshold=3,
            clip_range=1.0,
            bits=40,
            evaluate_every=0,
        )

    server = fl_runtime.run(build, clients, 6)
    assert server.finished, server.failure
    assert not server.secagg_failures, server.secagg_failures
    # a client that sent its masked input is in the sum, even if it left before unmasking
    summed = [1, 3, 4, 5, 6] if stage != p.SECAGG_UNMASK else [1, 2, 3, 4, 5, 6]
    (record,) = server.snapshots
    assert record.clients_sampled == 6
    assert record.clients_replied == len(summed)
    quantisation = Quantizer(1.0, 40, 6).step
    np.testing.assert_allclose(
        server.models[0], model_after([0.1 * n for n in summed]), rtol=0, atol=2 * quantisation
    )


# -- differential privacy -------------------------------------------------------------------------
CLIPPING_NORM = 1.0


@pytest.mark.parametrize(("mode", "noise_multiplier"), [("client_clip", 0.5), ("local", 0.01)])
def test_client_side_privacy_clips_every_update_and_repeats_with_the_same_seed(
    fl_runtime: Runtime[Any], mode: str, noise_multiplier: float
) -> None:
    # every client's step moves the model by an update of norm 2 * node id > CLIPPING_NORM
    clients = Clients(privacy_seed=100)

    def build() -> WatchedServer:
        strategy = DifferentialPrivacy(
            FedAvg(),
            mode=mode,
            clipping_norm=CLIPPING_NORM,
            noise_multiplier=noise_multiplier,
            num_clients=4,
            clients_per_round=4,
            rng=np.random.default_rng(7),
        )
        return WatchedServer(strategy, initial_model(), num_rounds=2, clients_per_round=4)

    server = fl_runtime.run(build, clients, 4)
    assert server.finished, server.failure
    assert len(server.received) == 8
    norms = np.array([norm for _, norm in server.received])
    if mode == "client_clip":  # what the server received is clipped exactly
        np.testing.assert_allclose(norms, CLIPPING_NORM, rtol=1e-12)
    else:  # clipped, plus the clients' own noise of 0.01 per value
        assert np.all(np.abs(norms - CLIPPING_NORM) < 10 * noise_multiplier * np.sqrt(SIZE))
    for record in server.snapshots:
        assert record.train_metrics["unclipped"] == 0.0  # every client had to clip
        assert record.strategy_metrics["epsilon"] > 0
    # the same seeds give the same model: bit for bit in simulated time, to rounding over gRPC
    # (replies are summed in the order they arrive)
    reference = build()
    simulate_locally(reference, clients, 4)
    final, expected = server.arrays.to_numpy_dict()["w"], reference.arrays.to_numpy_dict()["w"]
    if fl_runtime.deterministic:
        np.testing.assert_array_equal(final, expected)
    else:
        np.testing.assert_allclose(final, expected, rtol=0, atol=1e-12)
    # clipped updates move the model by far less than the clients' raw mean step of 2.5
    assert np.all(np.abs(final) < 2 * 2 * CLIPPING_NORM)
