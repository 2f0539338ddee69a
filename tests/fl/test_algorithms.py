"""FedProx, SCAFFOLD, Ditto and FedBN: their message flows and the numbers they must reach."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
import pytest

from fedbus.data import ArrayDataset, PartitionedDataset
from fedbus.errors import ConfigError, InvalidArgumentError
from fedbus.fl import Client, FedAvg, Server, Strategy
from fedbus.fl.algorithms import (
    Ditto,
    DittoClient,
    FedBN,
    FedBNClient,
    FedProx,
    Scaffold,
    ScaffoldClient,
)
from fedbus.fl.algorithms.scaffold import CLIENT_CONTROL, CONTROL, CONTROL_DELTA, SCAFFOLD_TRAIN
from fedbus.fl.mods import FedProxMod
from fedbus.fl.protocol import ARRAYS, CONFIG
from fedbus.fl.state import ClientStateStore
from fedbus.message import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict, mark_sent
from fedbus.runtime.simulation import Simulation
from fedbus.runtime.simulation.offload import RecordingComm as SendsRecorded
from fedbus.train import MLP, LocalTerms, NumpyTrainer, SoftmaxRegression
from fedbus.worker import MessageFlow, Worker

Arrays = dict[str, np.ndarray[Any, Any]]
RunFederation = Callable[[Worker, Sequence[Worker]], None]


def blobs(separation: float = 0.6, seed: int = 0) -> ArrayDataset:
    """Ten overlapping Gaussian classes in 20 dimensions: learnable, but not at once."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=separation, size=(10, 20))
    y = rng.integers(0, 10, 4000)
    return ArrayDataset(centers[y] + rng.normal(size=(4000, 20)), y, 10)


def run_blobs(
    strategy: Strategy,
    client_class: type[Client],
    *,
    alpha: float = 0.1,
    num_clients: int = 30,
    rounds: int = 20,
    model_name: str = "softmax",
    federated_evaluate_every: int = 0,
    lr: float = 0.1,
    mods: Sequence[object] = (),
) -> Server:
    """A simulated federation on a Dirichlet(alpha) split of ``blobs``; returns its server."""
    dataset = PartitionedDataset.from_arrays(blobs(), num_clients, "dirichlet", alpha=alpha, seed=0)
    model = (
        SoftmaxRegression(20, 10) if model_name == "softmax" else MLP(20, hidden=16, num_classes=10)
    )
    x_test, y_test = dataset.test_set()

    def evaluate(arrays: Arrays) -> tuple[float, dict[str, float]]:
        accuracy = float(np.mean(model.predict(arrays, x_test) == y_test))
        return model.loss(arrays, x_test, y_test), {"accuracy": accuracy}

    server = Server(
        strategy,
        model.init(seed=0),
        num_rounds=rounds,
        clients_per_round=10,
        train_config={"lr": lr, "epochs": 5, "batch_size": 16},
        evaluate_fn=evaluate,
        federated_evaluate_every=federated_evaluate_every,
        clients_per_evaluation=num_clients,
    )
    store = ClientStateStore()

    def client_fn(node_id: int) -> Client:
        data = dataset.client(node_id - 1)
        trainer = NumpyTrainer(
            model, data.x_train, data.y_train, data.x_test, data.y_test, seed=node_id
        )
        return client_class(trainer, node_id, state=store).use(*mods)

    Simulation(server, client_fn, num_clients=num_clients, seed=0).run()
    assert server.finished, server.failure
    return server


class RecordingComm:
    """A stand-in runtime for calling one client's handlers directly."""

    def __init__(self) -> None:
        self.work = 0

    def send(self, message: Message) -> None:
        raise AssertionError(f"unexpected send of {message.metadata.message_type}")

    def call_later(self, delay: float, callback: Callable[[], None]) -> Any:
        raise AssertionError("unexpected timer")

    def report_work(self, num_samples: int) -> None:
        self.work += num_samples

    def stop(self) -> None:
        raise AssertionError("unexpected stop")


ClientT = TypeVar("ClientT", bound=Client)


def attached(client: ClientT) -> ClientT:
    client.attach(RecordingComm(), client.node_id)
    return client


def rounds_to(server: Server, accuracy: float) -> int | None:
    return next((r.round for r in server.history if (r.test_accuracy or 0.0) >= accuracy), None)


# -- FedProx ------------------------------------------------------------------------------------
def test_fedprox_with_mu_zero_is_fedavg_bit_for_bit() -> None:
    fedavg = run_blobs(FedAvg(), Client, rounds=4)
    fedprox = run_blobs(FedProx(proximal_mu=0.0), Client, rounds=4, mods=[FedProxMod()])
    for name, value in fedavg.arrays.to_numpy_dict().items():
        np.testing.assert_array_equal(fedprox.arrays.to_numpy_dict()[name], value)


def test_fedprox_pulls_local_models_toward_the_global_one() -> None:
    data = blobs()
    model = SoftmaxRegression(20, 10)
    start = {"weight": np.full((20, 10), 0.05, np.float32), "bias": np.zeros(10, np.float32)}
    config: dict[str, object] = {"lr": 0.1, "epochs": 3, "batch_size": 32}

    def drift(mu: float) -> float:
        client = Client(NumpyTrainer(model, data.x[:200], data.y[:200], seed=1), 1)
        comm = SendsRecorded(start=0.0, speed=1e6)
        client.use(FedProxMod()).attach(comm, 1)
        request = Message(
            RecordDict(
                {ARRAYS: ArrayRecord(start), CONFIG: ConfigRecord({**config, "proximal_mu": mu})}
            ),
            1,
            "train",
        )
        mark_sent(request, run_id=1, message_id="t", src_node_id=0)
        client.deliver(request)  # through the client's mods
        (_, reply), *_ = [action for action in comm.actions if action[0] == "send"]
        assert isinstance(reply, Message)
        assert not reply.has_error(), reply
        trained = reply.content[ARRAYS]
        assert isinstance(trained, ArrayRecord)
        return float(np.linalg.norm(trained.to_numpy_dict()["weight"] - start["weight"]))

    assert drift(10.0) < 0.5 * drift(0.0)
    assert drift(0.01) < drift(0.0)


def test_fedprox_sends_mu_and_refuses_a_negative_one() -> None:
    content = FedProx(0.25).configure_train(1, ArrayRecord({"w": np.zeros(2)}), ConfigRecord(), [1])
    config = content[CONFIG]
    assert isinstance(config, ConfigRecord)
    assert config["proximal_mu"] == 0.25
    with pytest.raises(InvalidArgumentError, match="proximal_mu"):
        FedProx(-1.0)


# -- SCAFFOLD -----------------------------------------------------------------------------------
def test_scaffold_reaches_accuracy_in_fewer_rounds_than_fedavg_on_a_dirichlet_01_split() -> None:
    fedavg = run_blobs(FedAvg(), Client, rounds=12)
    scaffold = run_blobs(Scaffold(num_clients=30), ScaffoldClient, rounds=12)
    # same seed, same first round (every client starts with c_i = c = 0)
    assert scaffold.history[0].test_accuracy == fedavg.history[0].test_accuracy
    fedavg_rounds, scaffold_rounds = rounds_to(fedavg, 0.75), rounds_to(scaffold, 0.75)
    assert scaffold_rounds is not None
    assert fedavg_rounds is None or scaffold_rounds < fedavg_rounds
    assert scaffold_rounds <= 5


def test_scaffold_client_applies_the_correction_and_updates_its_control_variate() -> None:
    data = blobs()
    model = SoftmaxRegression(20, 10)
    trainer = NumpyTrainer(model, data.x[:64], data.y[:64], batch_size=16, seed=3)
    store = ClientStateStore()
    client = attached(ScaffoldClient(trainer, 4, state=store))
    rng = np.random.default_rng(1)
    x = {"weight": rng.normal(size=(20, 10)), "bias": rng.normal(size=10)}  # float64: exact
    c = {name: rng.normal(scale=0.01, size=value.shape) for name, value in x.items()}
    c_i = {name: rng.normal(scale=0.01, size=value.shape) for name, value in x.items()}
    store.put(4, CLIENT_CONTROL, c_i)
    config = {"lr": 0.05, "epochs": 2, "batch_size": 16}
    request = Message(
        RecordDict({ARRAYS: ArrayRecord(x), CONTROL: ArrayRecord(c), CONFIG: ConfigRecord(config)}),
        4,
        SCAFFOLD_TRAIN,
    )
    reply = client.on_scaffold_train(request)
    assert reply is not None
    y_record, delta_record = reply.content[ARRAYS], reply.content[CONTROL_DELTA]
    assert isinstance(y_record, ArrayRecord)
    assert isinstance(delta_record, ArrayRecord)
    y = y_record.to_numpy_dict()
    # the same training by hand: the trainer with the correction c - c_i
    twin = NumpyTrainer(model, data.x[:64], data.y[:64], batch_size=16, seed=3)
    correction = {name: c[name] - c_i[name] for name in x}
    expected_y, _, metrics = twin.fit(x, dict(config), LocalTerms(correction=correction))
    steps = metrics["steps"]
    assert steps == 2 * 4
    for name in x:
        np.testing.assert_allclose(y[name], expected_y[name], rtol=0, atol=1e-12)
        new_c_i = c_i[name] - c[name] + (x[name] - expected_y[name]) / (steps * 0.05)
        np.testing.assert_allclose(
            delta_record.to_numpy_dict()[name], new_c_i - c_i[name], atol=1e-12
        )
        stored = store.get(4, CLIENT_CONTROL)
        assert stored is not None
        np.testing.assert_allclose(stored[name], new_c_i, atol=1e-12)


def test_scaffold_server_moves_its_variate_by_the_share_of_clients_that_replied() -> None:
    strategy = Scaffold(num_clients=10)
    global_model = ArrayRecord({"w": np.zeros(3)})
    strategy.configure_train(1, global_model, ConfigRecord(), [1, 2])
    aggregator = strategy.start_aggregation(1, global_model)
    for node_id, (model, delta, n) in enumerate(
        [([1.0, 2.0, 3.0], [0.2, 0.0, -0.2], 1), ([3.0, 2.0, 1.0], [0.4, 0.2, 0.0], 3)], 1
    ):
        aggregator.add(
            node_id,
            RecordDict(
                {
                    ARRAYS: ArrayRecord({"w": np.array(model)}),
                    CONTROL_DELTA: ArrayRecord({"w": np.array(delta)}),
                    "metrics": MetricRecord({"num_examples": n}),
                }
            ),
        )
    arrays, _ = aggregator.result()
    np.testing.assert_allclose(arrays.to_numpy_dict()["w"], [2.5, 2.0, 1.5])
    # c = 0 + 2/10 * mean(deltas)
    assert strategy.control is not None
    np.testing.assert_allclose(strategy.control["w"], [0.06, 0.02, -0.02])
    restored = Scaffold(num_clients=10)
    restored.load_state(strategy.state())
    assert restored.control is not None
    np.testing.assert_array_equal(restored.control["w"], strategy.control["w"])


def test_scaffold_refuses_a_reply_without_control_delta_and_bad_parameters() -> None:
    strategy = Scaffold(num_clients=3)
    model = ArrayRecord({"w": np.zeros(2)})
    strategy.configure_train(1, model, ConfigRecord(), [1])
    aggregator = strategy.start_aggregation(1, model)
    with pytest.raises(InvalidArgumentError, match="control_delta"):
        aggregator.add(1, RecordDict({ARRAYS: model}))
    with pytest.raises(InvalidArgumentError, match="num_clients"):
        Scaffold(num_clients=0)
    with pytest.raises(InvalidArgumentError, match="server_lr"):
        Scaffold(num_clients=3, server_lr=0.0)


def test_scaffold_flow_uses_its_own_message_type() -> None:
    server = Server(Scaffold(num_clients=2), {"w": np.zeros(2)}, num_rounds=1, clients_per_round=1)
    client = ScaffoldClient(NumpyTrainer(SoftmaxRegression(2, 2), np.zeros((2, 2)), [0, 1]), 1)
    flow = MessageFlow.from_roles([("server", server), ("client", client)])
    edges = {(edge.sender_role, edge.message_type, edge.receiver_roles) for edge in flow.edges}
    assert ("server", SCAFFOLD_TRAIN, ("client",)) in edges
    assert ("server", "train", ("client",)) not in edges
    assert flow.missing == []
    flow.check()


# -- Ditto --------------------------------------------------------------------------------------
def test_ditto_personal_models_beat_the_global_model_on_a_non_iid_split() -> None:
    server = run_blobs(Ditto(lam=0.1), DittoClient, rounds=10, federated_evaluate_every=5)
    evaluated = [record.federated_metrics for record in server.history if record.federated_metrics]
    assert len(evaluated) == 2
    final = evaluated[-1]
    assert final["personal_accuracy"] > final["accuracy"] + 0.05
    assert final["personal_loss"] < final["loss"]


def test_ditto_keeps_the_personal_model_in_the_state_store() -> None:
    data = blobs()
    store = ClientStateStore()
    model = SoftmaxRegression(20, 10)
    client = attached(
        DittoClient(NumpyTrainer(model, data.x[:80], data.y[:80], seed=0), 2, state=store)
    )
    start = model.init(seed=0)
    content = Ditto(lam=1.0).configure_train(1, ArrayRecord(start), ConfigRecord({"lr": 0.1}), [2])
    reply = client.on_ditto_train(Message(content, 2, "ditto_train"))
    assert reply is not None
    personal = store.get(2, "ditto.personal")
    assert personal is not None
    shared = reply.content[ARRAYS]
    assert isinstance(shared, ArrayRecord)
    # the personal model trained from the same start with a pull: close to, not equal to, it
    difference = np.abs(personal["weight"] - shared.to_numpy_dict()["weight"]).max()
    assert 0 < difference < 0.5
    with pytest.raises(ConfigError, match="ditto_lambda"):
        client.on_ditto_train(Message(RecordDict({ARRAYS: ArrayRecord(start)}), 2, "ditto_train"))


# -- FedBN --------------------------------------------------------------------------------------
def test_fedbn_keeps_local_layers_on_the_clients() -> None:
    server = run_blobs(FedBN(["output.*"]), FedBNClient, rounds=3, model_name="mlp", lr=0.05)
    start = MLP(20, hidden=16, num_classes=10).init(seed=0)
    final = server.arrays.to_numpy_dict()
    # the global model's local arrays never change; the shared ones do
    np.testing.assert_array_equal(final["output.weight"], start["output.weight"])
    assert not np.array_equal(final["hidden.weight"], start["hidden.weight"])
    assert server.history[-1].test_accuracy is not None


def test_fedbn_client_replies_with_shared_arrays_and_reuses_its_local_ones() -> None:
    data = blobs()
    model = MLP(20, hidden=8, num_classes=10)
    store = ClientStateStore()
    client = attached(
        FedBNClient(NumpyTrainer(model, data.x[:50], data.y[:50], seed=0), 5, state=store)
    )
    strategy = FedBN(["output.*"])
    start = model.init(seed=0)
    content = strategy.configure_train(1, ArrayRecord(start), ConfigRecord({"lr": 0.1}), [5])
    reply = client.on_train(Message(content, 5, "train"))
    assert reply is not None
    sent = reply.content[ARRAYS]
    assert isinstance(sent, ArrayRecord)
    assert sorted(sent) == ["hidden.bias", "hidden.weight"]
    local = store.get(5, "fedbn.local")
    assert local is not None
    assert sorted(local) == ["output.bias", "output.weight"]
    assert not np.array_equal(local["output.weight"], start["output.weight"])
    evaluated: list[Arrays] = []
    original = client.trainer.evaluate

    def spy(arrays: Arrays, config: dict[str, Any]) -> tuple[float, int, dict[str, float]]:
        evaluated.append(arrays)
        return original(arrays, config)

    client.trainer.evaluate = spy  # type: ignore[method-assign]
    client.on_evaluate(Message(content, 5, "evaluate"))
    np.testing.assert_array_equal(evaluated[0]["output.weight"], local["output.weight"])


def test_fedbn_refuses_patterns_that_match_nothing_and_bad_patterns() -> None:
    with pytest.raises(InvalidArgumentError, match="no array"):
        FedBN(["bn*"]).start_aggregation(1, ArrayRecord({"w": np.zeros(1)}))
    for bad in ("bn*", [], [""]):
        with pytest.raises(InvalidArgumentError, match="local_layers"):
            FedBN(bad)  # type: ignore[arg-type]


def small_federation(
    make_strategy: Callable[[], Strategy], client_class: type[Client]
) -> tuple[Server, list[Client]]:
    """Three clients of 100 samples each and a server for two rounds of ``make_strategy()``."""
    data, model = blobs(), SoftmaxRegression(20, 10)
    server = Server(
        make_strategy(),
        model.init(seed=0),
        num_rounds=2,
        clients_per_round=3,
        train_config={"lr": 0.1, "epochs": 1, "batch_size": 16},
    )
    clients = [
        client_class(
            NumpyTrainer(model, data.x[i * 100 :][:100], data.y[i * 100 :][:100], seed=i), i
        )
        for i in (1, 2, 3)
    ]
    return server, clients


@pytest.mark.parametrize(
    ("make_strategy", "client_class"),
    [(lambda: Scaffold(num_clients=3), ScaffoldClient), (lambda: Ditto(lam=0.1), DittoClient)],
    ids=["scaffold", "ditto"],
)
def test_scaffold_and_ditto_give_the_same_model_on_every_runtime(
    federation: RunFederation,
    make_strategy: Callable[[], Strategy],
    client_class: type[Client],
) -> None:
    """Their own message types travel over gRPC as in simulation (encoded, decoded)."""
    server, clients = small_federation(make_strategy, client_class)
    federation(server, clients)
    assert server.finished, server.failure
    assert len(server.history) == 2
    # against a fresh run of the same federation in simulation
    twin, twins = small_federation(make_strategy, client_class)
    Simulation(twin, twins).run()
    for name, value in twin.arrays.to_numpy_dict().items():
        np.testing.assert_allclose(server.arrays.to_numpy_dict()[name], value, atol=1e-6)
