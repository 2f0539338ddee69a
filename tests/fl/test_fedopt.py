"""Server optimisers: each rule against a hand computation, FedAvg as a special case, dtypes,
the state that checkpoints carry, argument checks, refused replies and a whole federation."""

from __future__ import annotations

import doctest
import io
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import fedbus.fl.strategy.fedopt as fedopt_module
from fedbus.errors import InvalidArgumentError
from fedbus.fl import FedAvg, Strategy
from fedbus.fl.strategy.fedopt import FedAdagrad, FedAdam, FedAvgM, FedOpt, FedYogi
from fedbus.message import ArrayRecord, MetricRecord, RecordDict
from fedbus.run.config import load_config
from fedbus.run.federation import build_federation

Arrays = dict[str, np.ndarray]
SIZES = [10, 30, 60]  # num_examples of the three clients
LOSSES = [1.0, 2.0, 4.0]


def reply(arrays: Arrays, num_examples: int, loss: float = 1.0) -> RecordDict:
    metrics = MetricRecord({"num_examples": num_examples, "train_loss": loss})
    return RecordDict({"arrays": ArrayRecord(arrays), "metrics": metrics})


def aggregate(
    strategy: Strategy, server_round: int, model: Arrays, clients: list[Arrays]
) -> tuple[Arrays, dict[str, float]]:
    aggregator = strategy.start_aggregation(server_round, ArrayRecord(model))
    for node_id, (arrays, size, loss) in enumerate(
        zip(clients, SIZES, LOSSES, strict=True), start=1
    ):
        aggregator.add(node_id, reply(arrays, size, loss))
    arrays, metrics = aggregator.result()
    return arrays.to_numpy_dict(), metrics


def initial_model(dtype: Any = np.float64) -> Arrays:
    rng = np.random.default_rng(1)
    return {
        "layer.0/w": rng.normal(size=(2, 2)).astype(dtype),
        "b": rng.normal(size=3).astype(dtype),
    }


def client_models(model: Arrays, server_round: int) -> list[Arrays]:
    """Three clients' models near ``model``; they move less each round, so Yogi's ``v`` both
    grows (round 1) and shrinks (later rounds)."""
    rng = np.random.default_rng(100 + server_round)
    scale = 0.5 / 10 ** (server_round - 1)
    return [
        {key: (value + scale * rng.normal(size=value.shape)).astype(value.dtype)
         for key, value in model.items()}
        for _ in SIZES
    ]  # fmt: skip


# -- hand computations: one round of each rule, for one array, in plain NumPy ---------------------
def hand_fedavgm(x, delta, state):  # type: ignore[no-untyped-def]
    server_lr, momentum = 0.7, 0.6
    state["v"] = momentum * state.get("v", 0.0) + delta
    return x + server_lr * state["v"]


def hand_fedadagrad(x, delta, state):  # type: ignore[no-untyped-def]
    server_lr, beta1, tau = 0.2, 0.8, 0.01
    state["m"] = beta1 * state.get("m", 0.0) + (1 - beta1) * delta
    state["v"] = state.get("v", tau**2) + delta**2
    return x + server_lr * state["m"] / (np.sqrt(state["v"]) + tau)


def hand_fedadam(x, delta, state):  # type: ignore[no-untyped-def]
    server_lr, beta1, beta2, tau = 0.2, 0.8, 0.9, 0.01
    state["m"] = beta1 * state.get("m", 0.0) + (1 - beta1) * delta
    state["v"] = beta2 * state.get("v", tau**2) + (1 - beta2) * delta**2
    return x + server_lr * state["m"] / (np.sqrt(state["v"]) + tau)


def hand_fedyogi(x, delta, state):  # type: ignore[no-untyped-def]
    server_lr, beta1, beta2, tau = 0.2, 0.8, 0.9, 0.01
    state["m"] = beta1 * state.get("m", 0.0) + (1 - beta1) * delta
    v = state.get("v", tau**2)
    state["signs"] = state.get("signs", set()) | set(np.sign(v - delta**2).ravel().tolist())
    state["v"] = v - (1 - beta2) * delta**2 * np.sign(v - delta**2)
    return x + server_lr * state["m"] / (np.sqrt(state["v"]) + tau)


CASES = [
    (lambda: FedAvgM(server_lr=0.7, momentum=0.6), hand_fedavgm),
    (lambda: FedAdagrad(server_lr=0.2, beta1=0.8, tau=0.01), hand_fedadagrad),
    (lambda: FedAdam(server_lr=0.2, beta1=0.8, beta2=0.9, tau=0.01), hand_fedadam),
    (lambda: FedYogi(server_lr=0.2, beta1=0.8, beta2=0.9, tau=0.01), hand_fedyogi),
]
IDS = ["fedavgm", "fedadagrad", "fedadam", "fedyogi"]
DEFAULTS: list[Callable[[], FedOpt]] = [FedAvgM, FedAdagrad, FedAdam, FedYogi]


@pytest.mark.parametrize(("make", "hand"), CASES, ids=IDS)
def test_three_rounds_match_the_hand_computation(make, hand) -> None:  # type: ignore[no-untyped-def]
    strategy = make()
    model = initial_model()
    expected = {key: value.copy() for key, value in model.items()}
    hand_state: dict[str, dict[str, Any]] = {key: {} for key in model}
    for server_round in (1, 2, 3):
        clients = client_models(expected, server_round)
        model, metrics = aggregate(strategy, server_round, model, clients)
        for key, x in expected.items():
            average = (10 * clients[0][key] + 30 * clients[1][key] + 60 * clients[2][key]) / 100
            expected[key] = hand(x, average - x, hand_state[key])
        for key in model:
            np.testing.assert_allclose(model[key], expected[key], rtol=0, atol=1e-6)
        # metrics are FedAvg's: weighted by num_examples
        assert metrics == pytest.approx({"train_loss": (10 * 1 + 30 * 2 + 60 * 4) / 100})
    assert strategy.state().keys() == {
        f"{moment}:{key}" for moment in hand_state["b"] if moment != "signs" for key in model
    }
    if hand is hand_fedyogi:  # both branches of Yogi's sign were taken
        assert {-1.0, 1.0} <= hand_state["b"]["signs"] | hand_state["layer.0/w"]["signs"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fedavgm_without_momentum_is_exactly_fedavg(dtype: Any) -> None:
    fedavgm, fedavg = FedAvgM(server_lr=1.0, momentum=0.0), FedAvg()
    ours = theirs = initial_model(dtype)
    for server_round in (1, 2, 3):
        clients = client_models(theirs, server_round)
        ours, our_metrics = aggregate(fedavgm, server_round, ours, clients)
        theirs, their_metrics = aggregate(fedavg, server_round, theirs, clients)
        assert our_metrics == their_metrics
        for key in theirs:
            assert ours[key].dtype == dtype
            np.testing.assert_array_equal(ours[key], theirs[key])


@pytest.mark.parametrize("make", DEFAULTS, ids=IDS)
def test_float32_stays_float32(make: Callable[[], FedOpt]) -> None:
    narrow, wide = make(), make()
    model32, model64 = initial_model(np.float32), initial_model(np.float32)
    model64 = {key: value.astype(np.float64) for key, value in model64.items()}
    for server_round in (1, 2):
        clients = client_models(model32, server_round)
        model32, _ = aggregate(narrow, server_round, model32, clients)
        model64, _ = aggregate(wide, server_round, model64, clients)
        for key in model32:
            assert model32[key].dtype == np.float32
            np.testing.assert_allclose(model32[key], model64[key], rtol=0, atol=1e-5)
    assert all(value.dtype == np.float64 for value in narrow.state().values())


def run_rounds(strategy: FedOpt, model: Arrays, rounds: range) -> Arrays:
    for server_round in rounds:
        model, _ = aggregate(strategy, server_round, model, client_models(model, server_round))
    return model


def through_npz(state: Arrays) -> Arrays:
    """What a checkpoint file gives back."""
    buffer = io.BytesIO()
    np.savez(buffer, **state)
    buffer.seek(0)
    with np.load(buffer, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


@pytest.mark.parametrize("make", DEFAULTS, ids=IDS)
def test_a_restored_strategy_continues_bit_for_bit(make: Callable[[], FedOpt]) -> None:
    # array names with '/', '.' and even a moment-like prefix stay distinct in state()
    model = {"m:w": np.ones((2, 2)), "v/b.0": np.zeros(3), "w": np.full(3, 0.5)}
    whole = run_rounds(make(), model, range(1, 5))
    first = make()
    halfway = run_rounds(first, model, range(1, 3))
    saved = through_npz(first.state())
    assert len(saved) == len(first.moment_names) * len(model)
    assert {key.partition(":")[2] for key in saved} == set(model)
    resumed = make()
    resumed.load_state(saved)
    rest = run_rounds(resumed, halfway, range(3, 5))
    for key in whole:
        np.testing.assert_array_equal(rest[key], whole[key])
    for key, value in first.state().items():
        np.testing.assert_array_equal(value, saved[key])  # state() handed out copies


def test_state_is_empty_until_the_first_aggregation_and_load_state_empty_resets() -> None:
    strategy = FedAdam()
    assert strategy.state() == {}
    run_rounds(strategy, initial_model(), range(1, 2))
    assert sorted(strategy.state()) == ["m:b", "m:layer.0/w", "v:b", "v:layer.0/w"]
    strategy.load_state({})
    assert strategy.state() == {}


@pytest.mark.parametrize(
    ("state", "match"),
    [
        ({"x:b": np.zeros(3)}, r"unknown state key 'x:b'; expected keys 'm:<array name>' or"),
        ({"b": np.zeros(3)}, "unknown state key 'b'"),
        ({"m:": np.zeros(3), "v:": np.zeros(3)}, "unknown state key 'm:'"),
        ({"m:b": np.zeros(3, dtype=np.int64), "v:b": np.zeros(3)}, "must be a float numpy array"),
        ({"m:b": [0.0, 0.0, 0.0], "v:b": np.zeros(3)}, "must be a float numpy array, got list"),
        ({"m:b": np.zeros(3)}, r"array 'b' needs the moments \['m', 'v'\] with one shape"),
        ({"m:b": np.zeros(3), "v:b": np.zeros(2)}, r"with one shape, got \{'m': \(3,\)"),
    ],
)
def test_load_state_refuses_what_state_cannot_have_returned(state: Any, match: str) -> None:
    strategy = FedAdam()
    with pytest.raises(InvalidArgumentError, match=match):
        strategy.load_state(state)
    assert strategy.state() == {}  # nothing half-loaded


def test_a_state_for_another_model_is_refused() -> None:
    other = {"m:b": np.zeros(4), "v:b": np.ones(4)}
    trained = FedAdam()
    run_rounds(trained, initial_model(), range(1, 2))
    before = trained.state()
    with pytest.raises(InvalidArgumentError, match=r"state holds arrays \{'b': \(4,\)\} but"):
        trained.load_state(other)
    assert trained.state().keys() == before.keys()
    fresh = FedAdam()
    fresh.load_state(other)  # the model is not known yet: checked when aggregation starts
    with pytest.raises(InvalidArgumentError, match=r"load_state\(\{\}\) to start afresh"):
        fresh.start_aggregation(1, ArrayRecord(initial_model()))


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: FedAvgM(server_lr=0), r"FedAvgM: server_lr must be a finite number > 0, got 0"),
        (lambda: FedAvgM(momentum=1.0), r"momentum must be a finite number in \[0, 1\), got 1.0"),
        (lambda: FedAvgM(momentum=-0.1), r"momentum must be .* got -0.1"),
        (lambda: FedAdagrad(server_lr=float("nan")), "server_lr must be a finite number"),
        (lambda: FedAdagrad(tau=0.0), r"FedAdagrad: tau must be a finite number > 0, got 0.0"),
        (lambda: FedAdam(beta1=1), r"FedAdam: beta1 must be .* in \[0, 1\), got 1"),
        (lambda: FedAdam(beta2=-0.5), r"beta2 must be .* got -0.5"),
        (lambda: FedAdam(server_lr=True), "server_lr must be a finite number > 0, got True"),
        (lambda: FedYogi(beta2=1.5), r"FedYogi: beta2 must be"),
        (lambda: FedYogi(tau=float("inf")), "tau must be a finite number > 0, got inf"),
        (lambda: FedYogi(server_lr="0.1"), "server_lr must be a finite number > 0, got '0.1'"),
    ],
)
def test_arguments_are_checked(make: Callable[[], FedOpt], match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        make()


@pytest.mark.parametrize("make", DEFAULTS, ids=IDS)
def test_a_reply_with_another_layout_is_refused_and_leaves_no_trace(
    make: Callable[[], FedOpt],
) -> None:
    model = initial_model()
    clients = client_models(model, 1)
    expected, _ = aggregate(make(), 1, model, clients)
    strategy = make()
    aggregator = strategy.start_aggregation(1, ArrayRecord(model))
    wrong_shape = {**clients[0], "b": np.zeros(4)}
    extra = {**clients[0], "extra": np.zeros(1)}
    for bad in (wrong_shape, extra):
        with pytest.raises(InvalidArgumentError, match="node 9 replied with arrays"):
            aggregator.add(9, reply(bad, 50))
    for node_id, (arrays, size, loss) in enumerate(
        zip(clients, SIZES, LOSSES, strict=True), start=1
    ):
        aggregator.add(node_id, reply(arrays, size, loss))
    result = aggregator.result()[0].to_numpy_dict()
    for key in expected:
        np.testing.assert_array_equal(result[key], expected[key])


@pytest.mark.parametrize("make", DEFAULTS, ids=IDS)
def test_a_round_without_weight_changes_neither_model_nor_state(
    make: Callable[[], FedOpt],
) -> None:
    strategy = make()
    model = initial_model()
    aggregator = strategy.start_aggregation(1, ArrayRecord(model))
    aggregator.add(1, reply(client_models(model, 1)[0], 0))
    assert aggregator.result()[0] == ArrayRecord(model)
    assert strategy.state() == {}  # the moments are created by the first real step
    model = run_rounds(strategy, model, range(1, 3))
    before = strategy.state()
    for replies in ([], [reply(client_models(model, 3)[0], 0)]):
        aggregator = strategy.start_aggregation(3, ArrayRecord(model))
        for content in replies:
            aggregator.add(1, content)
        arrays, _ = aggregator.result()
        assert arrays == ArrayRecord(model)
        after = strategy.state()
        assert after.keys() == before.keys()
        for key in before:
            np.testing.assert_array_equal(after[key], before[key])


def test_reading_the_result_twice_steps_once() -> None:
    strategy = FedAdam()
    model = initial_model()
    aggregator = strategy.start_aggregation(1, ArrayRecord(model))
    for node_id, arrays in enumerate(client_models(model, 1), start=1):
        aggregator.add(node_id, reply(arrays, 10))
    first = aggregator.result()
    state = strategy.state()
    assert aggregator.result() is first
    for key, value in strategy.state().items():
        np.testing.assert_array_equal(value, state[key])


@pytest.mark.parametrize(
    "strategy",
    [FedAvgM(), FedAdagrad(server_lr=0.3), FedAdam(), FedYogi()],
    ids=IDS,
)
def test_a_federation_learns_digits_with_each_optimiser(strategy: FedOpt) -> None:
    config = load_config(
        None,
        [
            "data.dataset=digits",
            "federation.num_clients=10",
            "federation.clients_per_round=5",
            "federation.num_rounds=8",
            "trainer.epochs=1",
        ],
    )
    federation = build_federation(config)
    federation.server.strategy = strategy
    federation.simulation.run()
    accuracies = [record.test_accuracy for record in federation.server.history]
    assert len(accuracies) == 8
    assert None not in accuracies
    first, last = accuracies[0], accuracies[-1]
    assert first is not None
    assert last is not None
    assert last > 0.7
    assert last > first + 0.2
    assert len(strategy.state()) == len(strategy.moment_names) * 2  # softmax: weight, bias


def test_docstring_examples_run() -> None:
    result = doctest.testmod(fedopt_module)
    assert result.attempted > 0
    assert result.failed == 0


def test_fedavg_folds_large_arrays_in_blocks_to_the_same_bits() -> None:
    """Arrays larger than the fold block give, bit for bit, the plain float64 sum."""
    rng = np.random.default_rng(5)
    shapes = {"matrix": (1500, 1000), "vector": (3_000_001,), "scalar": ()}
    clients = [
        {name: rng.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}
        for _ in SIZES
    ]
    model = {name: np.zeros(shape, np.float32) for name, shape in shapes.items()}
    averaged, _ = aggregate(FedAvg(), 1, model, clients)
    for name in shapes:
        total = sum(
            c[name].astype(np.float64) * size for c, size in zip(clients, SIZES, strict=True)
        )
        expected = np.asarray(total / sum(SIZES)).astype(np.float32)
        assert averaged[name].tobytes() == expected.tobytes()
        assert averaged[name].shape == shapes[name]
    aggregator = FedAvg().start_aggregation(1, ArrayRecord(model))
    aggregator.add(1, reply(clients[0], 10))
    first, _ = aggregator.result()
    again, _ = aggregator.result()  # asked twice: the same model, not divided twice
    assert first.to_numpy_dict()["vector"].tobytes() == again.to_numpy_dict()["vector"].tobytes()
    assert np.array_equal(first.to_numpy_dict()["vector"], clients[0]["vector"])
