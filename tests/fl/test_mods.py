"""The FL layer's mods: FedProx's pull and differential privacy's clipping and noise, moved out
of ``Client``, give what the client computed before; a configuration installs mods by name."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from fedbus.errors import ConfigError, InvalidArgumentError
from fedbus.fl import Client, FedAvg
from fedbus.fl.client import request_seed
from fedbus.fl.mods import MODS, ClientPrivacy, FedProxMod, register_mod
from fedbus.fl.privacy import DifferentialPrivacy, clip_update, update_norm
from fedbus.fl.privacy.clipping import add_noise
from fedbus.fl.protocol import ARRAYS, CONFIG, METRICS
from fedbus.message import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict, mark_sent
from fedbus.run import load_config
from fedbus.run.federation import build_federation, mod_names
from fedbus.runtime.simulation.offload import RecordingComm
from fedbus.train import LocalTerms, NumpyTrainer, SoftmaxRegression
from fedbus.worker.mods import CallNext, MessageContext, Mod

Arrays = dict[str, np.ndarray[Any, Any]]
MODEL = SoftmaxRegression(6, 3)
START = {"weight": np.full((6, 3), 0.05, np.float32), "bias": np.zeros(3, np.float32)}
CONFIG_BASE: dict[str, object] = {"lr": 0.5, "epochs": 3, "batch_size": 8}


def trainer() -> NumpyTrainer:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 6)).astype(np.float32)
    y = rng.integers(0, 3, 60)
    return NumpyTrainer(MODEL, x, y, batch_size=8, seed=3)


def train_request(config: dict[str, object], group_id: str = "7") -> Message:
    content = RecordDict({ARRAYS: ArrayRecord(START), CONFIG: ConfigRecord(config)})
    request = Message(content, 1, "train", group_id=group_id)
    mark_sent(request, run_id=1, message_id=f"train-{group_id}", src_node_id=0)
    return request


def answer(client: Client, request: Message) -> tuple[Arrays, MetricRecord]:
    """``client``'s reply to ``request``, delivered as a runtime delivers it (through mods)."""
    comm = RecordingComm(start=0.0, speed=1e6)
    client.attach(comm, 1)
    client.deliver(request)
    (reply,) = [message for kind, message in comm.actions if kind == "send"]
    assert isinstance(reply, Message)
    assert not reply.has_error(), reply.error
    arrays, metrics = reply.content[ARRAYS], reply.content[METRICS]
    assert isinstance(arrays, ArrayRecord)
    assert isinstance(metrics, MetricRecord)
    return arrays.to_numpy_dict(), metrics


def fit_directly(config: dict[str, object], terms: LocalTerms | None, request: Message) -> Arrays:
    """What ``Client.train_on`` computed before mods: the trainer, with the request's seed."""
    arrays, _, _ = trainer().fit(dict(START), {**config, "seed": request_seed(request)}, terms)
    return arrays


# -- FedProx ----------------------------------------------------------------------------------
def test_the_fedprox_mod_trains_as_the_client_did_with_its_proximal_term() -> None:
    config = {**CONFIG_BASE, "proximal_mu": 0.5}
    request = train_request(config)
    pulled, _ = answer(Client(trainer(), 1).use(FedProxMod()), request)
    expected = fit_directly(config, LocalTerms(proximal_mu=0.5, anchor=dict(START)), request)
    for name, value in expected.items():
        np.testing.assert_array_equal(pulled[name], value)
    # without the mod the client knows nothing of proximal_mu: plain local training
    plain, _ = answer(Client(trainer(), 1), request)
    for name, value in fit_directly(config, None, request).items():
        np.testing.assert_array_equal(plain[name], value)
    assert update_norm(pulled, START) < 0.5 * update_norm(plain, START)


def test_the_fedprox_mod_with_mu_zero_changes_nothing_bit_for_bit() -> None:
    request = train_request({**CONFIG_BASE, "proximal_mu": 0.0})
    with_mod, metrics = answer(Client(trainer(), 1).use(FedProxMod()), request)
    without, plain_metrics = answer(Client(trainer(), 1), request)
    for name, value in without.items():
        np.testing.assert_array_equal(with_mod[name], value)
    assert dict(metrics) == dict(plain_metrics)


def test_the_fedprox_mod_refuses_a_negative_mu_as_an_error_reply() -> None:
    comm = RecordingComm(start=0.0, speed=1e6)
    client = Client(trainer(), 1).use(FedProxMod())
    client.attach(comm, 1)
    client.deliver(train_request({**CONFIG_BASE, "proximal_mu": -1.0}))
    ((_, reply),) = comm.actions
    assert isinstance(reply, Message)
    assert reply.has_error()
    assert "'proximal_mu': expected a number >= 0, got -1.0" in (reply.error.reason or "")


# -- differential privacy ---------------------------------------------------------------------
def private_config(norm: float, std: float) -> dict[str, object]:
    return {**CONFIG_BASE, "clipping_norm": norm, "noise_std": std}


def test_the_privacy_mod_clips_to_the_norm() -> None:
    request = train_request(private_config(0.05, 0.0))
    clipped, metrics = answer(Client(trainer(), 1).use(ClientPrivacy()), request)
    plain, _ = answer(Client(trainer(), 1), request)
    assert update_norm(plain, START) > 0.05  # so the bound below is the mod's doing
    assert update_norm(clipped, START) <= 0.05 * (1 + 1e-5)
    assert metrics["unclipped"] == 0.0
    assert all(clipped[name].dtype == START[name].dtype for name in START)


def test_the_privacy_mod_adds_the_noise_the_client_added_before() -> None:
    config = private_config(0.05, 0.01)
    request = train_request(config)
    noised, _ = answer(Client(trainer(), 1).use(ClientPrivacy(noise_seed=42)), request)
    # what Client.train_on computed before the mod, step by step
    trained = fit_directly(config, None, request)
    clipped, _ = clip_update(trained, START, 0.05)
    rng = np.random.default_rng([42, request_seed(request), 0xD1])
    expected = add_noise(clipped, 0.01, rng)
    for name, value in trained.items():
        np.testing.assert_array_equal(noised[name], expected[name].astype(value.dtype))
    again, _ = answer(Client(trainer(), 1).use(ClientPrivacy(noise_seed=42)), request)
    other, _ = answer(Client(trainer(), 1).use(ClientPrivacy(noise_seed=43)), request)
    np.testing.assert_array_equal(again["weight"], noised["weight"])
    assert not np.array_equal(other["weight"], noised["weight"])


def test_a_client_without_the_privacy_mod_is_refused_in_the_client_modes() -> None:
    strategy = DifferentialPrivacy(
        FedAvg(), mode="local", clipping_norm=1.0, noise_multiplier=0.1,
        num_clients=10, clients_per_round=2,
    )  # fmt: skip
    assert strategy.client_mods == ("privacy",)
    aggregator = strategy.start_aggregation(1, ArrayRecord({"w": np.zeros(2)}))
    content = RecordDict(
        {ARRAYS: ArrayRecord({"w": np.full(2, 0.1)}), METRICS: MetricRecord({"num_examples": 3})}
    )
    with pytest.raises(InvalidArgumentError, match="install the privacy mod"):
        aggregator.add(1, content)


# -- configured runs ------------------------------------------------------------------------
SMALL = [
    "data.dataset=synthetic",
    "federation.num_clients=8",
    "federation.clients_per_evaluation=4",
    "federation.clients_per_round=4",
    "federation.num_rounds=2",
    "federation.evaluate_every=0",
]


def test_a_configuration_installs_the_mods_its_algorithm_and_privacy_need() -> None:
    fedprox = load_config(None, [*SMALL, "strategy.name=fedprox", "privacy.mode=local"])
    assert mod_names(fedprox, "client") == ("fedprox", "privacy")
    assert mod_names(load_config(None, SMALL), "client") == ()
    client = build_federation(fedprox).client_fn(3)
    assert [type(mod) for mod in client.mods] == [FedProxMod, ClientPrivacy]
    privacy = client.mods[1]
    assert isinstance(privacy, ClientPrivacy)
    assert privacy.noise_seed is not None


class Counter(Mod):
    """Counts the train requests of the clients it is on, and the server's sends."""

    def __init__(self) -> None:
        self.trained: list[int] = []
        self.sent = 0

    def __call__(
        self, message: Message, context: MessageContext, call_next: CallNext
    ) -> Message | None:
        if message.metadata.message_type == "train":
            self.trained.append(context.node_id)
        return call_next(message, context)

    def on_send(self, message: Message, context: MessageContext) -> Message:
        self.sent += 1
        return message


@pytest.fixture
def counter() -> Any:
    shared = Counter()
    register_mod("test_counter", lambda settings, seed: shared, roles=("client", "server"))
    yield shared
    MODS.unregister("test_counter")


def test_a_configured_run_installs_mods_by_name(counter: Counter) -> None:
    options = [
        *SMALL,
        "federation.client_mods=test_counter,log",
        "federation.server_mods=test_counter",
    ]
    federation = build_federation(load_config(None, options))
    federation.simulation.run()
    assert federation.server.finished
    assert len(counter.trained) == 2 * 4  # two rounds of four clients
    assert counter.sent >= 2 * 4  # the server's train requests passed its outgoing hook


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (
            "federation.client_mods=fedprx",
            r"federation.client_mods: mod 'fedprx' is not known; did you mean 'fedprox'\? "
            r"Known: .*fedprox, log, privacy",
        ),
        (
            "federation.server_mods=privacy",
            "federation.server_mods: mod 'privacy' runs on client nodes only, not on the server",
        ),
    ],
)
def test_unknown_or_misplaced_mods_are_refused_before_the_run(option: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_federation(load_config(None, [*SMALL, option]))


def test_mod_names_in_the_config_are_a_comma_separated_list() -> None:
    with pytest.raises(ConfigError, match="mod names separated by commas"):
        load_config(None, [*SMALL, "federation.client_mods=log, fedprox"])
