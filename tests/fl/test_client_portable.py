"""A client's answer depends on the request alone, so any copy of it may answer."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from fedbus.errors import ConfigError
from fedbus.fl import Client, ClientStateStore
from fedbus.fl.client import request_seed
from fedbus.message import ArrayRecord, ConfigRecord, Message, RecordDict
from fedbus.runtime.simulation.offload import RecordingComm
from fedbus.train import NumpyTrainer, SoftmaxRegression


def train_request(config: dict[str, object], group_id: str = "4") -> Message:
    model = SoftmaxRegression(5, 3)
    content = RecordDict(
        {"arrays": ArrayRecord(model.init(seed=0)), "config": ConfigRecord(config)}
    )
    return Message(content, 1, "train", group_id=group_id)


def make_client(noise_seed: int | None = 11) -> Client:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 5)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    trainer = NumpyTrainer(SoftmaxRegression(5, 3), x, y, batch_size=8, seed=3)
    client = Client(trainer, 1, noise_seed=noise_seed)
    client.attach(RecordingComm(start=0.0, speed=1e6), 1)  # what a runtime would do
    return client


def test_the_seed_is_the_config_s_or_comes_from_the_group_id() -> None:
    assert request_seed(train_request({"seed": 99})) == 99
    assert request_seed(train_request({}, group_id="17")) == zlib.crc32(b"17")
    with pytest.raises(ConfigError, match="'seed': expected an int >= 0"):
        request_seed(train_request({"seed": -1}))


def test_a_client_that_answered_before_answers_as_a_fresh_copy() -> None:
    private = {"clipping_norm": 0.5, "noise_std": 0.1}
    used = make_client()
    for round_ in range(3):
        used.on_train(train_request(private, group_id=str(round_)))
    request = train_request(private, group_id="9")
    again = used.train_on(request)[1]
    fresh = make_client().train_on(request)[1]
    for name in fresh:
        np.testing.assert_array_equal(again[name], fresh[name])
    other_round = make_client().train_on(train_request(private, group_id="10"))[1]
    assert not np.array_equal(other_round["weight"], fresh["weight"])


def test_state_moves_between_copies_through_save_and_load() -> None:
    first = Client(make_client().trainer, 5, state=ClientStateStore())
    first.state.put(5, "control", {"c": np.arange(3.0)})
    second = Client(make_client().trainer, 5, state=ClientStateStore())
    second.state.put(5, "old", {"o": np.ones(1)})
    second.load_state(first.save_state())
    assert list(second.state.entries(5)) == ["control"]
    np.testing.assert_array_equal(second.state.get(5, "control")["c"], np.arange(3.0))
    assert Client.portable
