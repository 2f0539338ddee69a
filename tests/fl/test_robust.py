"""Robust aggregation rules: exact answers on hand-made updates, checks, fallbacks, layouts."""

from __future__ import annotations

import doctest
import importlib
import itertools
import logging
from typing import Any

import numpy as np
import pytest

from fedbus.errors import InvalidArgumentError
from fedbus.fl import Client, FedAvg, Server
from fedbus.fl.strategy.robust import (
    Bulyan,
    Krum,
    Median,
    MultiKrum,
    NormBound,
    RobustStrategy,
    TrimmedMean,
)
from fedbus.fl.strategy.robust.bulyan import bulyan_select
from fedbus.fl.strategy.robust.collect import ModelLayout
from fedbus.fl.strategy.robust.krum import krum_scores, pairwise_squared_distances
from fedbus.message import ArrayRecord, MetricRecord, RecordDict
from fedbus.runtime.simulation import simulate

Arrays = dict[str, np.ndarray]


def reply(arrays: Arrays, num_examples: int = 10, **metrics: float) -> RecordDict:
    return RecordDict(
        {
            "arrays": ArrayRecord(arrays),
            "metrics": MetricRecord({**metrics, "num_examples": num_examples}),
        }
    )


def aggregate(
    strategy: RobustStrategy,
    start: Arrays,
    clients: list[Arrays],
    num_examples: list[int] | None = None,
) -> Arrays:
    collector = strategy.start_aggregation(1, ArrayRecord(start))
    weights = num_examples or [10] * len(clients)
    for node_id, (arrays, weight) in enumerate(zip(clients, weights, strict=True), start=1):
        collector.add(node_id, reply(arrays, weight))
    return collector.result()[0].to_numpy_dict()


def vectors(strategy: RobustStrategy, updates: list[list[float]]) -> np.ndarray:
    """Aggregate 1-D updates from a zero model of one array ``w``."""
    start = {"w": np.zeros(len(updates[0]))}
    return aggregate(strategy, start, [{"w": np.array(u, dtype=np.float64)} for u in updates])["w"]


# -- reference implementations, written with plain loops over clients ----------------------------
def naive_krum_scores(points: np.ndarray, f: int) -> np.ndarray:
    n = len(points)
    scores = []
    for i in range(n):
        others = sorted(float(np.sum((points[i] - points[j]) ** 2)) for j in range(n) if j != i)
        scores.append(sum(others[: max(n - f - 2, 1)]))
    return np.array(scores)


def naive_bulyan(points: np.ndarray, f: int) -> np.ndarray:
    pool = list(range(len(points)))
    chosen = []
    for _ in range(len(points) - 2 * f):
        scores = naive_krum_scores(points[pool], f) if len(pool) > 1 else np.zeros(1)
        chosen.append(pool.pop(int(np.argmin(scores))))
    selected = points[chosen]
    kept = len(selected) - 2 * f
    result = []
    for column in selected.T:
        median = np.median(column)
        closest = sorted(column, key=lambda value: abs(value - median))[:kept]
        result.append(np.mean(closest))
    return np.array(result)


# -- the rules ------------------------------------------------------------------------------------
def test_median_is_coordinate_wise_over_all_arrays() -> None:
    start = {"w": np.array([[1.0, 1.0]]), "b": np.array([10.0])}
    clients = [
        {"w": np.array([[2.0, 0.0]]), "b": np.array([10.0])},
        {"w": np.array([[5.0, -3.0]]), "b": np.array([13.0])},
        {"w": np.array([[1000.0, 2.0]]), "b": np.array([-999.0])},
    ]
    result = aggregate(Median(), start, clients)
    # updates: w rows (1, -1), (4, -4), (999, 1); b: 0, 3, -1009
    np.testing.assert_array_equal(result["w"], [[1.0 + 4.0, 1.0 - 1.0]])
    np.testing.assert_array_equal(result["b"], [10.0 + 0.0])


def test_median_of_an_even_count_averages_the_middle_two() -> None:
    np.testing.assert_array_equal(vectors(Median(), [[1.0], [2.0], [4.0], [100.0]]), [3.0])


def test_trimmed_mean_drops_the_extremes_of_each_coordinate() -> None:
    updates = [[1.0, 50.0], [2.0, 0.0], [3.0, 1.0], [4.0, -70.0], [90.0, 2.0]]
    # beta 0.2 of 5: one value dropped at each end, per coordinate independently
    np.testing.assert_allclose(vectors(TrimmedMean(0.2), updates), [3.0, 1.0])
    # beta 0.4 of 5: two dropped at each end, the median remains
    np.testing.assert_allclose(vectors(TrimmedMean(0.4), updates), [3.0, 1.0])
    updates = [[0.0], [1.0], [2.0], [3.0], [4.0], [5.0], [6.0], [100.0], [-100.0], [7.0]]
    # beta 0.2 of 10: two at each end
    np.testing.assert_allclose(vectors(TrimmedMean(0.2), updates), [3.5])


def test_trimmed_mean_of_zero_is_the_unweighted_mean() -> None:
    start = {"w": np.zeros(1)}
    clients = [{"w": np.array([1.0])}, {"w": np.array([4.0])}]
    result = aggregate(TrimmedMean(0.0), start, clients, num_examples=[1, 1000])
    np.testing.assert_allclose(result["w"], [2.5])  # one client, one vote


def test_krum_picks_the_centre_of_the_honest_cluster() -> None:
    honest = [[2.0, 1.0], [0.0, 1.0], [1.0, 1.0], [1.0, 2.0], [1.0, 0.0]]
    attackers = [[50.0, 50.0], [-40.0, 60.0]]
    # n = 7, f = 2: 3 neighbours. The centre (1, 1) is 1 from every arm: score 3; an arm scores
    # 1 + 2 + 2 = 5; the attackers are far from all.
    start = {"w": np.array([0.5, -0.5])}
    clients = [{"w": start["w"] + np.array(u)} for u in attackers[:1] + honest + attackers[1:]]
    result = aggregate(Krum(num_malicious=2), start, clients)
    np.testing.assert_array_equal(result["w"], start["w"] + np.array([1.0, 1.0]))


def test_multikrum_averages_the_best_scored_updates() -> None:
    updates = [[0.0], [1.5], [2.0], [2.5], [100.0], [-90.0], [3.0]]
    # n = 7, f = 2: each score sums the squared distances to the 3 nearest others
    scores = krum_scores(pairwise_squared_distances(np.array(updates)), 2)
    expected = [12.5, 3.5, 1.5, 1.5, 9409 + 9506.25 + 9604, 8100 + 8372.25 + 8464, 3.5]
    np.testing.assert_array_equal(scores, expected)
    # default m = n - f = 5: the five honest updates
    np.testing.assert_allclose(vectors(MultiKrum(2), updates), [(0 + 1.5 + 2 + 2.5 + 3) / 5])
    # m = 3: 2.0 and 2.5 (tied at 1.5), then 1.5 (tied with 3.0 at 3.5, and earlier)
    np.testing.assert_allclose(vectors(MultiKrum(2, num_selected=3), updates), [2.0])
    # m = 1 is Krum, which keeps the earliest of the tied best
    np.testing.assert_array_equal(vectors(Krum(2), updates), [2.0])


def test_krum_scores_match_a_loop_over_clients() -> None:
    points = np.random.default_rng(0).normal(size=(11, 6))
    for f in range(5):
        np.testing.assert_allclose(
            krum_scores(pairwise_squared_distances(points), f), naive_krum_scores(points, f)
        )


def test_bulyan_on_a_hand_made_case() -> None:
    updates = [[0.0], [1.0], [2.0], [3.0], [9.0], [40.0], [-50.0]]
    # n = 7, f = 1: Krum picks 3, 2, 1, 0, 9 in turn; the 3 of them nearest the median 2 are
    # 1, 2, 3
    assert bulyan_select(np.array(updates), 1).tolist() == [3, 2, 1, 0, 4]
    np.testing.assert_array_equal(vectors(Bulyan(1), updates), [2.0])


def test_bulyan_trims_per_coordinate_what_krum_let_through() -> None:
    # Four honest updates near 0 and one attacker close in distance but off in coordinate 0
    updates = [[0.0, 0.0], [0.2, 0.1], [-0.1, 0.2], [0.1, -0.2], [0.6, 0.0]]
    # f = 1 needs n >= 7: add two far-away attackers that Krum rejects
    updates += [[30.0, -30.0], [-25.0, 40.0]]
    result = vectors(Bulyan(1), updates)
    np.testing.assert_allclose(result, naive_bulyan(np.array(updates), 1))
    # Krum keeps the five near 0, 0.6 included. Coordinate 0: median 0.1, the 3 nearest are
    # 0.1, 0.0, 0.2 (0.6 is dropped). Coordinate 1: median 0, the 3 nearest are 0, 0, 0.1.
    np.testing.assert_allclose(result, [0.1, 0.1 / 3])


def test_bulyan_matches_a_loop_over_clients() -> None:
    points = np.random.default_rng(1).normal(size=(15, 5))
    points[:3] *= 20.0
    for f in range(4):
        np.testing.assert_allclose(vectors(Bulyan(f), points.tolist()), naive_bulyan(points, f))


def test_norm_bound_clips_then_weights_by_num_examples() -> None:
    start = {"w": np.array([1.0, 1.0])}
    clients = [{"w": np.array([4.0, 5.0])}, {"w": np.array([1.0, 2.0])}]
    # updates (3, 4) of norm 5, clipped to 2.5: (1.5, 2); and (0, 1), kept as is
    result = aggregate(NormBound(2.5), start, clients, num_examples=[1, 3])
    np.testing.assert_allclose(result["w"], [1.0 + 1.5 / 4, 1.0 + (2.0 + 3.0) / 4])


def test_norm_bound_spans_all_arrays_and_keeps_the_model_without_weight() -> None:
    start = {"a": np.zeros(1), "b": np.zeros(1)}
    clients = [{"a": np.array([6.0]), "b": np.array([8.0])}]
    result = aggregate(NormBound(1.0), start, clients)
    np.testing.assert_allclose([result["a"][0], result["b"][0]], [0.6, 0.8])
    result = aggregate(NormBound(1.0), start, clients, num_examples=[0])
    np.testing.assert_array_equal(result["a"], [0.0])


# -- layouts, values, dtypes, metrics -------------------------------------------------------------
STRATEGIES = [Median(), TrimmedMean(0.2), Krum(1), MultiKrum(1), Bulyan(1), NormBound(1.0)]


@pytest.mark.parametrize("strategy", STRATEGIES, ids=lambda s: s.name)
def test_replies_of_another_layout_are_refused(strategy: RobustStrategy) -> None:
    collector = strategy.start_aggregation(1, ArrayRecord({"w": np.zeros((2, 3))}))
    with pytest.raises(InvalidArgumentError, match=r"node 4 replied with arrays .*'v'"):
        collector.add(4, reply({"v": np.zeros((2, 3))}))
    with pytest.raises(InvalidArgumentError, match=r"\(3, 2\).*the model has \{'w': \(2, 3\)\}"):
        collector.add(4, reply({"w": np.zeros((3, 2))}))
    with pytest.raises(InvalidArgumentError, match="node 5 replied with NaN"):
        collector.add(5, reply({"w": np.full((2, 3), np.nan)}))
    with pytest.raises(InvalidArgumentError, match="num_examples must be an int >= 0"):
        collector.add(6, reply({"w": np.zeros((2, 3))}, num_examples=-1))
    with pytest.raises(InvalidArgumentError, match="expected a ArrayRecord named 'arrays'"):
        collector.add(7, RecordDict({"metrics": MetricRecord({"num_examples": 1})}))
    assert collector.num_replies == 0


@pytest.mark.parametrize("strategy", STRATEGIES, ids=lambda s: s.name)
def test_zero_replies_keep_the_global_model(strategy: RobustStrategy) -> None:
    start = ArrayRecord({"w": np.arange(3, dtype=np.float32)})
    arrays, metrics = strategy.start_aggregation(1, start).result()
    assert arrays == start
    assert metrics == {}


@pytest.mark.parametrize("strategy", STRATEGIES, ids=lambda s: s.name)
def test_the_model_keeps_its_dtypes(strategy: RobustStrategy) -> None:
    start = {"w": np.zeros((2, 2), np.float32), "steps": np.zeros(1, np.int64)}
    clients = [
        {"w": np.full((2, 2), 0.25 * k, np.float32), "steps": np.array([k], np.int64)}
        for k in range(7)
    ]
    # one client sends float16: the model stays float32
    clients[3]["w"] = clients[3]["w"].astype(np.float16)
    result = aggregate(strategy, start, clients)
    assert result["w"].dtype == np.float32
    assert result["steps"].dtype == np.int64


def test_zero_dimensional_arrays_stay_arrays() -> None:
    start = {"count": np.array(3, np.int64), "w": np.zeros(2, np.float32)}
    clients = [
        {"count": np.array(3 + k, np.int64), "w": np.full(2, k, np.float32)} for k in range(3)
    ]
    result = aggregate(Median(), start, clients)
    assert isinstance(result["count"], np.ndarray)
    assert result["count"].shape == ()
    assert int(result["count"]) == 4


def test_train_metrics_are_weighted_by_num_examples() -> None:
    collector = Median().start_aggregation(1, ArrayRecord({"w": np.zeros(1)}))
    collector.add(1, reply({"w": np.ones(1)}, 10, train_loss=1.0))
    collector.add(2, reply({"w": np.ones(1)}, 30, train_loss=3.0))
    assert collector.result()[1] == {"train_loss": 2.5}


def test_model_layout_flattens_and_restores() -> None:
    arrays = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([7.0])}
    layout = ModelLayout.of(arrays)
    vector = layout.flatten(arrays)
    np.testing.assert_array_equal(vector, [0, 1, 2, 3, 4, 5, 7])
    back = layout.unflatten(vector)
    assert list(back) == ["w", "b"]
    for name, value in arrays.items():
        np.testing.assert_array_equal(back[name], value)
        assert back[name].dtype == value.dtype


# -- parameters and round sizes -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Krum(-1), r"Krum: num_malicious must be an int >= 0, got -1"),
        (lambda: Krum(1.5), r"Krum: num_malicious must be an int >= 0, got 1\.5"),
        (lambda: Krum(True), r"got True"),
        (lambda: MultiKrum(1, num_selected=0), r"MultiKrum: num_selected must be an int >= 1"),
        (lambda: Bulyan(-2), r"Bulyan: num_malicious must be an int >= 0, got -2"),
        (lambda: TrimmedMean(0.5), r"trim_fraction must be a number in \[0, 0\.5\), got 0\.5"),
        (lambda: TrimmedMean(-0.1), r"trim_fraction must be a number in \[0, 0\.5\)"),
        (lambda: TrimmedMean(float("nan")), r"got nan"),
        (lambda: NormBound(0), r"NormBound: max_norm must be a finite number > 0, got 0"),
        (lambda: NormBound(float("inf")), r"got inf"),
    ],
)
def test_parameters_are_checked(build: Any, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        build()


def test_krum_and_multikrum_need_2f_plus_3_replies() -> None:
    Krum(2).check_round_size(7)
    with pytest.raises(InvalidArgumentError) as caught:
        Krum(2).check_round_size(6)
    text = str(caught.value)
    assert "2f + 3 = 7" in text
    assert "min_replies=6" in text
    assert "lower num_malicious to 1" in text
    with pytest.raises(InvalidArgumentError, match="MultiKrum needs n >= 2f \\+ 3 = 5"):
        MultiKrum(1).check_round_size(4)
    with pytest.raises(InvalidArgumentError, match="or use Median"):
        Krum(0).check_round_size(2)
    MultiKrum(1, num_selected=4).check_round_size(5)
    with pytest.raises(InvalidArgumentError, match=r"num_selected=5 is more than n - f = 4"):
        MultiKrum(1, num_selected=5).check_round_size(5)


def test_bulyan_needs_4f_plus_3_replies() -> None:
    Bulyan(2).check_round_size(11)
    with pytest.raises(InvalidArgumentError, match=r"4f \+ 3 = 11 .*min_replies=10.*to 1$"):
        Bulyan(2).check_round_size(10)


def test_trimmed_mean_must_trim_something() -> None:
    TrimmedMean(0.1).check_round_size(10)
    TrimmedMean(0.0).check_round_size(1)
    with pytest.raises(InvalidArgumentError) as caught:
        TrimmedMean(0.1).check_round_size(9)
    text = str(caught.value)
    assert "min_replies=9" in text
    assert "at least 10" in text
    assert "trim_fraction to at least 0.111" in text
    with pytest.raises(InvalidArgumentError, match="or use Median"):
        TrimmedMean(0.3).check_round_size(2)
    for size in (1, 2, 5):
        Median().check_round_size(size)
        NormBound(1.0).check_round_size(size)


def test_the_server_refuses_a_strategy_its_rounds_are_too_small_for() -> None:
    with pytest.raises(InvalidArgumentError, match="min_replies=4"):
        Server(Krum(1), {"w": np.zeros(1)}, num_rounds=1, clients_per_round=6, min_replies=4)
    Server(Krum(1), {"w": np.zeros(1)}, num_rounds=1, clients_per_round=6, min_replies=5)


@pytest.mark.parametrize(
    ("strategy", "count"),
    [(Krum(2), 6), (MultiKrum(1), 4), (Bulyan(1), 6), (TrimmedMean(0.2), 4)],
    ids=lambda value: getattr(value, "name", str(value)),
)
def test_too_few_replies_fall_back_to_the_median(
    strategy: RobustStrategy, count: int, caplog: pytest.LogCaptureFixture
) -> None:
    updates = [[float(k), float(-(k**2))] for k in range(count - 1)] + [[500.0, 500.0]]
    with caplog.at_level(logging.WARNING, logger="fedbus.strategy"):
        result = vectors(strategy, updates)
    np.testing.assert_array_equal(result, np.median(np.array(updates), axis=0))
    assert "uses the coordinate-wise median instead" in caplog.text


def test_multikrum_selects_fewer_when_the_round_is_smaller(
    caplog: pytest.LogCaptureFixture,
) -> None:
    updates = [[0.0], [1.0], [2.0], [3.0], [80.0]]
    with caplog.at_level(logging.WARNING, logger="fedbus.strategy"):
        result = vectors(MultiKrum(1, num_selected=5), updates)
    np.testing.assert_allclose(result, [1.5])  # n - f = 4 selected: the honest ones
    assert "fewer than num_selected=5" in caplog.text


def test_names() -> None:
    names = [strategy.name for strategy in STRATEGIES]
    assert names == ["median", "trimmed_mean", "krum", "multikrum", "bulyan", "norm_bound"]
    assert FedAvg.name not in names


class FixedTrainer:
    """Replies with the received model plus a fixed update."""

    def __init__(self, update: list[float]) -> None:
        self.update = np.array(update, dtype=np.float32)

    def fit(self, arrays: Arrays, config: dict[str, Any]) -> tuple[Arrays, int, dict[str, float]]:
        return {"w": arrays["w"] + self.update}, 10, {"train_loss": 0.5}

    def evaluate(
        self, arrays: Arrays, config: dict[str, Any]
    ) -> tuple[float, int, dict[str, float]]:
        return 0.0, 10, {"accuracy": 1.0}


def test_krum_through_server_and_messages() -> None:
    updates = [[2.0, 1.0], [0.0, 1.0], [1.0, 1.0], [1.0, 2.0], [1.0, 0.0], [90.0, -90.0]]
    clients = [Client(FixedTrainer(update)) for update in updates]
    server = Server(Krum(1), {"w": np.zeros(2, np.float32)}, num_rounds=3, clients_per_round=6)
    simulate(server, clients, check_serialization=True)
    assert server.finished
    result = server.arrays.to_numpy_dict()["w"]
    assert result.dtype == np.float32
    np.testing.assert_array_equal(result, [3.0, 3.0])  # the centre (1, 1), three rounds
    assert server.history[-1].train_metrics == {"train_loss": 0.5}


ROBUST_MODULES = [
    f"fedbus.fl.strategy.robust.{name}"
    for name in ("collect", "krum", "median", "trimmed_mean", "bulyan", "norm_bound")
]


@pytest.mark.parametrize("name", ROBUST_MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0
    assert result.failed == 0


def test_rules_do_not_depend_on_the_order_of_replies() -> None:
    points = np.random.default_rng(2).normal(size=(9, 4))
    for strategy in (Median(), TrimmedMean(0.25), MultiKrum(2), NormBound(0.5)):
        first = vectors(strategy, points.tolist())
        for order in itertools.islice(itertools.permutations(range(9)), 1, 200, 37):
            np.testing.assert_allclose(vectors(strategy, points[list(order)].tolist()), first)
