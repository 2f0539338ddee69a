"""The standard FL flow: FedAvg's arithmetic, rounds closing, retries, late replies, determinism."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_digits

from fedbus.fl import Client, FedAvg, RoundRecord, Server
from fedbus.runtime.simulation import ClientProfile, ProfileTable, simulate
from fedbus.train import NumpyTrainer, SoftmaxRegression


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    data = load_digits()
    return (data.data / 16.0).astype(np.float64), data.target.astype(np.int64)


def make_server(model: SoftmaxRegression, **options: Any) -> Server:
    settings: dict[str, Any] = {"num_rounds": 5, "clients_per_round": 4, "seed": 0}
    settings.update(options)
    return Server(FedAvg(), model.init(seed=0, dtype=np.float64), **settings)


def test_fedavg_with_one_client_equals_centralised_training(digits) -> None:  # type: ignore[no-untyped-def]
    x, y = digits
    model = SoftmaxRegression(num_features=64, num_classes=10)
    rounds, lr = 10, 0.5
    config = {"epochs": 1, "batch_size": 0, "lr": lr}
    server = Server(
        FedAvg(),
        model.init(seed=0, dtype=np.float64),
        num_rounds=rounds,
        clients_per_round=1,
        train_config=config,
    )
    client = Client(NumpyTrainer(model, x, y, epochs=1, batch_size=0, lr=lr))
    simulate(server, [client], check_serialization=True)

    params = model.init(seed=0, dtype=np.float64)
    for _ in range(rounds):
        _, grads = model.loss_and_grad(params, x, y)
        params = {key: params[key] - lr * grads[key] for key in params}
    federated = server.arrays.to_numpy_dict()
    for key in params:
        np.testing.assert_allclose(federated[key], params[key], rtol=0, atol=1e-6)
    assert server.finished
    assert len(server.history) == rounds


def test_fedavg_weights_by_num_examples(digits) -> None:  # type: ignore[no-untyped-def]
    x, y = digits
    model = SoftmaxRegression(num_features=64, num_classes=10)
    sizes = [100, 300]
    trainers = [
        NumpyTrainer(model, x[:100], y[:100], batch_size=0, lr=0.1),
        NumpyTrainer(model, x[100:400], y[100:400], batch_size=0, lr=0.1),
    ]
    server = make_server(model, num_rounds=1, clients_per_round=2)
    simulate(server, [Client(t) for t in trainers], check_serialization=True)
    start = model.init(seed=0, dtype=np.float64)
    updates = [
        t.fit(start, {})[0]
        for t in [
            NumpyTrainer(model, x[:100], y[:100], batch_size=0, lr=0.1),
            NumpyTrainer(model, x[100:400], y[100:400], batch_size=0, lr=0.1),
        ]
    ]
    expected = {k: (sizes[0] * updates[0][k] + sizes[1] * updates[1][k]) / 400 for k in start}
    for key, value in server.arrays.to_numpy_dict().items():
        np.testing.assert_allclose(value, expected[key], atol=1e-12)


def clients_for(x: np.ndarray, y: np.ndarray, count: int, model: SoftmaxRegression) -> list[Client]:
    parts = np.array_split(np.arange(len(y)), count)
    return [
        Client(NumpyTrainer(model, x[p], y[p], batch_size=32, lr=0.3, seed=int(i)))
        for i, p in enumerate(parts)
    ]


def test_straggler_rounds_close_by_timeout_with_min_replies(digits) -> None:  # type: ignore[no-untyped-def]
    x, y = digits
    model = SoftmaxRegression(64, 10)
    # Clients 1 and 2 compute 100x slower: a round would wait ~100 s for them.
    slow = ClientProfile(speed=20.0)
    profiles = ProfileTable({1: slow, 2: slow})
    records: list[RoundRecord] = []
    server = make_server(
        model, clients_per_round=6, min_replies=4, round_timeout=5.0, on_round_end=records.append
    )
    simulate(server, clients_for(x, y, 6, model), profiles=profiles, check_serialization=True)
    assert server.finished
    assert [r.clients_replied for r in records] == [4] * 5
    assert [r.clients_sampled for r in records] == [6] * 5
    # each round ends at its timeout: 5 simulated seconds apiece
    durations = np.diff([0.0] + [r.time for r in records])
    assert durations == pytest.approx([5.0 + 0.001] * 5, abs=0.01)
    # the slow clients' replies arrive after their round closed: late, and dropped
    assert sum(r.late_replies for r in records) >= 4


def test_without_timeout_the_round_waits_for_the_slowest(digits) -> None:  # type: ignore[no-untyped-def]
    x, y = digits
    model = SoftmaxRegression(64, 10)
    profiles = ProfileTable({1: ClientProfile(speed=20.0)})
    server = make_server(model, num_rounds=1, clients_per_round=6)
    clients = clients_for(x, y, 6, model)
    result = simulate(server, clients, profiles=profiles, check_serialization=True)
    samples = clients[0].trainer.num_train_examples  # type: ignore[attr-defined]
    assert result.time > samples / 20.0  # the slow client's compute time dominates
    assert server.history[0].clients_replied == 6


def test_dropouts_are_retried_then_the_run_stops_with_a_reason(digits) -> None:  # type: ignore[no-untyped-def]
    x, y = digits
    model = SoftmaxRegression(64, 10)
    dead = ProfileTable({}, default=ClientProfile(dropout=1.0))
    server = make_server(model, clients_per_round=3, round_timeout=2.0, max_round_retries=2)
    result = simulate(server, clients_for(x, y, 6, model), profiles=dead, check_serialization=True)
    assert not server.finished
    assert server.history == []
    assert server.failure is not None
    assert "after 3 attempts" in server.failure
    # three 2 s timeouts, then the finish messages travel (0.05 s latency) and are lost too
    assert 6.0 + 0.05 < result.time < 6.0 + 0.06
    trained = {e.metadata.dst_node_id for e in result.trace if e.metadata.message_type == "train"}
    # 3 attempts x 3 clients, then a finish to each client that was contacted
    assert result.stats.events["dropped"] == 9 + len(trained)


def test_error_replies_count_as_failures(digits) -> None:  # type: ignore[no-untyped-def]
    x, y = digits
    model = SoftmaxRegression(64, 10)

    class Broken(Client):
        def on_train(self, message):  # type: ignore[no-untyped-def]
            raise RuntimeError("disk full")

    clients = clients_for(x, y, 4, model)
    clients[0] = Broken(clients[0].trainer)
    server = make_server(model, num_rounds=2, clients_per_round=4, min_replies=3)
    simulate(server, clients, check_serialization=True)
    assert [(r.clients_replied, r.clients_failed) for r in server.history] == [(3, 1), (3, 1)]


def test_same_seed_same_run_different_seed_different_run(digits) -> None:  # type: ignore[no-untyped-def]
    x, y = digits
    model = SoftmaxRegression(64, 10)

    def run(seed: int) -> tuple[list[Any], list[Any], dict[str, np.ndarray]]:
        server = make_server(model, clients_per_round=3, seed=seed)
        result = simulate(server, clients_for(x, y, 10, model), seed=seed, check_serialization=True)
        trace = [(e.time, e.event, e.metadata) for e in result.trace]
        return trace, server.history, server.arrays.to_numpy_dict()

    first, again, other = run(1), run(1), run(2)
    assert first[0] == again[0]
    assert first[1] == again[1]
    for key in first[2]:
        np.testing.assert_array_equal(first[2][key], again[2][key])
    assert first[0] != other[0]


def test_central_and_federated_evaluation(digits) -> None:  # type: ignore[no-untyped-def]
    x, y = digits
    model = SoftmaxRegression(64, 10)

    def evaluate(arrays: dict[str, np.ndarray]) -> tuple[float, dict[str, float]]:
        accuracy = float(np.mean(model.predict(arrays, x) == y))
        return model.loss(arrays, x, y), {"accuracy": accuracy}

    server = make_server(
        model,
        num_rounds=4,
        evaluate_fn=evaluate,
        evaluate_every=2,
        train_config={"epochs": 5},
        federated_evaluate_every=2,
        clients_per_evaluation=3,
    )
    simulate(server, clients_for(x, y, 8, model), check_serialization=True)
    evaluated = [r.round for r in server.history if r.test_accuracy is not None]
    federated = [r.round for r in server.history if r.federated_accuracy is not None]
    assert evaluated == federated == [2, 4]
    final = server.history[-1]
    assert final.test_accuracy is not None
    assert final.test_accuracy > 0.85
    assert final.federated_accuracy is not None
    assert final.federated_accuracy > 0.85
    assert final.train_loss is not None
    assert final.train_loss < 1.0


def test_server_arguments_are_checked() -> None:
    model = SoftmaxRegression(4, 2)
    with pytest.raises(ValueError, match=r"min_replies must be in 1\.\.clients_per_round, got 5"):
        make_server(model, clients_per_round=4, min_replies=5)
    with pytest.raises(ValueError, match="round_timeout must be > 0"):
        make_server(model, round_timeout=0)


def test_a_run_continued_from_a_round_equals_the_uninterrupted_run(digits) -> None:  # type: ignore[no-untyped-def]
    x, y = digits
    model = SoftmaxRegression(64, 10)

    def clients() -> list[Client]:
        parts = np.array_split(np.arange(len(y)), 8)
        return [Client(NumpyTrainer(model, x[p], y[p], batch_size=0, lr=0.5)) for p in parts]

    whole = make_server(model, num_rounds=5, clients_per_round=3, evaluate_every=2)
    simulate(whole, clients(), check_serialization=True)

    first = make_server(model, num_rounds=2, clients_per_round=3, evaluate_every=2)
    simulate(first, clients())
    state = json.loads(json.dumps(first.sampler_state()))  # survives a JSON file
    rest = Server(
        FedAvg(),
        first.arrays,
        num_rounds=5,
        clients_per_round=3,
        evaluate_every=2,
        seed=0,
        first_round=3,
        sampler_state=state,
    )
    simulate(rest, clients())
    assert [r.round for r in rest.history] == [3, 4, 5]
    for key, value in whole.arrays.to_numpy_dict().items():
        np.testing.assert_array_equal(rest.arrays.to_numpy_dict()[key], value)
    assert [r.train_loss for r in whole.history[2:]] == [r.train_loss for r in rest.history]


def test_first_round_and_sampler_state_are_checked() -> None:
    model = SoftmaxRegression(4, 2)
    with pytest.raises(ValueError, match=r"first_round must be in 1\.\.num_rounds, got 6"):
        make_server(model, first_round=6)
    with pytest.raises(ValueError, match="unusable sampler_state"):
        make_server(model, sampler_state={"bit_generator": "PCG64", "state": "nonsense"})
