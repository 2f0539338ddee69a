"""A client's answer depends on the request alone, so any copy of it may answer."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from fedbus.errors import ConfigError
from fedbus.fl import Client, ClientStateStore
from fedbus.fl.client import request_seed
from fedbus.fl.mods import ClientPrivacy
from fedbus.message import ArrayRecord, ConfigRecord, Message, RecordDict, mark_sent
from fedbus.runtime.simulation.offload import RecordingComm
from fedbus.train import NumpyTrainer, SoftmaxRegression


def train_request(config: dict[str, object], group_id: str = "4") -> Message:
    model = SoftmaxRegression(5, 3)
    content = RecordDict(
        {"arrays": ArrayRecord(model.init(seed=0)), "config": ConfigRecord(config)}
    )
    request = Message(content, 1, "train", group_id=group_id)
    mark_sent(request, run_id=1, message_id=f"train-{group_id}", src_node_id=0)
    return request


def make_client(noise_seed: int | None = 11) -> Client:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 5)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    trainer = NumpyTrainer(SoftmaxRegression(5, 3), x, y, batch_size=8, seed=3)
    client = Client(trainer, 1).use(ClientPrivacy(noise_seed))
    client.attach(RecordingComm(start=0.0, speed=1e6), 1)  # what a runtime would do
    return client


def trained(client: Client, request: Message) -> dict[str, np.ndarray]:
    """The arrays of ``client``'s reply to ``request``, through its mods."""
    client.deliver(request)
    comm = client.comm_manager
    assert isinstance(comm, RecordingComm)
    reply = next(m for kind, m in reversed(comm.actions) if kind == "send")
    assert isinstance(reply, Message)
    assert not reply.has_error(), reply
    arrays = reply.content["arrays"]
    assert isinstance(arrays, ArrayRecord)
    return arrays.to_numpy_dict()


def test_the_seed_is_the_config_s_or_comes_from_the_group_id() -> None:
    assert request_seed(train_request({"seed": 99})) == 99
    assert request_seed(train_request({}, group_id="17")) == zlib.crc32(b"17")
    with pytest.raises(ConfigError, match="'seed': expected an int >= 0"):
        request_seed(train_request({"seed": -1}))


def test_a_client_that_answered_before_answers_as_a_fresh_copy() -> None:
    private = {"clipping_norm": 0.5, "noise_std": 0.1}
    used = make_client()
    for round_ in range(3):
        trained(used, train_request(private, group_id=str(round_)))
    request = train_request(private, group_id="9")
    again = trained(used, request)
    fresh = trained(make_client(), request)
    for name in fresh:
        np.testing.assert_array_equal(again[name], fresh[name])
    other_round = trained(make_client(), train_request(private, group_id="10"))
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
