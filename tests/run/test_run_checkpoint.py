"""Round checkpoints: model, round number and sampler state survive a restart, no pickle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedbus.errors import InvalidArgumentError
from fedbus.fl import Client, FedAvg, RoundRecord, Server
from fedbus.run.checkpoint import (
    CHECKPOINT_FILE,
    Checkpointing,
    load_checkpoint,
    load_sampler_state,
    save_checkpoint,
)
from fedbus.runtime.simulation import simulate
from fedbus.train import NumpyTrainer, SoftmaxRegression


def test_model_round_and_sampler_state_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    rng.random(5)  # a state part-way through the stream
    arrays = {"weight": np.arange(6, dtype=np.float32).reshape(2, 3)}
    save_checkpoint(tmp_path, 4, arrays, rng.bit_generator.state)
    completed, loaded = load_checkpoint(tmp_path)
    assert completed == 4
    assert loaded.keys() == arrays.keys()
    np.testing.assert_array_equal(loaded["weight"], arrays["weight"])
    restored = np.random.default_rng()
    state = load_sampler_state(tmp_path)
    assert state is not None
    restored.bit_generator.state = state
    assert restored.random(3).tolist() == rng.random(3).tolist()


def test_a_checkpoint_without_sampler_state(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, 1, {"w": np.zeros(2)})
    assert load_sampler_state(tmp_path) is None
    assert load_checkpoint(tmp_path)[0] == 1


def test_reserved_names_and_bad_state_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="may not be named"):
        save_checkpoint(tmp_path, 1, {"__fedbus_sampler_state__": np.zeros(1)})
    np.savez(
        tmp_path / CHECKPOINT_FILE,
        __fedbus_completed_round__=np.array(1),
        __fedbus_sampler_state__=np.frombuffer(b"[1, 2]", dtype=np.uint8),
    )
    with pytest.raises(InvalidArgumentError, match="not a JSON object"):
        load_sampler_state(tmp_path)
    np.savez(
        tmp_path / CHECKPOINT_FILE,
        __fedbus_completed_round__=np.array(1),
        __fedbus_sampler_state__=np.frombuffer(b"{nope", dtype=np.uint8),
    )
    with pytest.raises(InvalidArgumentError, match="not valid JSON"):
        load_sampler_state(tmp_path)


def small_federation(
    num_rounds: int, initial: dict[str, np.ndarray] | None = None, **options: object
) -> tuple[Server, list[Client]]:
    rng = np.random.default_rng(3)
    model = SoftmaxRegression(num_features=4, num_classes=3)
    x, y = rng.normal(size=(120, 4)), rng.integers(0, 3, size=120)
    clients = [
        Client(NumpyTrainer(model, x[i::4], y[i::4], epochs=1, lr=0.1, seed=i)) for i in range(4)
    ]
    server = Server(
        FedAvg(),
        model.init(seed=0, dtype=np.float64) if initial is None else initial,
        num_rounds=num_rounds,
        clients_per_round=2,
        seed=5,
        **options,  # type: ignore[arg-type]
    )
    return server, clients


@pytest.mark.parametrize(("every", "saved"), [(1, [1, 2, 3, 4, 5]), (2, [0, 2, 2, 4, 5])])
def test_the_checkpointing_callback_saves_after_the_rounds_due(
    tmp_path: Path, every: int, saved: list[int]
) -> None:
    found: list[int] = []

    def after_round(record: RoundRecord) -> None:  # runs after Checkpointing
        exists = (tmp_path / CHECKPOINT_FILE).exists()
        found.append(load_checkpoint(tmp_path)[0] if exists else 0)

    server, clients = small_federation(
        5, callbacks=[Checkpointing(tmp_path, every=every)], on_round_end=after_round
    )
    simulate(server, clients)
    assert found == saved
    completed, arrays = load_checkpoint(tmp_path)
    assert completed == 5
    for name, value in server.arrays.to_numpy_dict().items():
        np.testing.assert_array_equal(arrays[name], value)
    assert load_sampler_state(tmp_path) == server.sampler_state()


def test_a_run_resumed_from_the_callbacks_checkpoint_ends_as_the_whole_run(
    tmp_path: Path,
) -> None:
    whole, clients = small_federation(5)
    simulate(whole, clients)
    first, clients = small_federation(3, callbacks=[Checkpointing(tmp_path)])
    simulate(first, clients)
    completed, arrays = load_checkpoint(tmp_path)
    rest, clients = small_federation(
        5, arrays, first_round=completed + 1, sampler_state=load_sampler_state(tmp_path)
    )
    simulate(rest, clients)
    for name, value in whole.arrays.to_numpy_dict().items():
        np.testing.assert_array_equal(rest.arrays.to_numpy_dict()[name], value)


def test_checkpointing_checks_its_interval(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="every must be an integer >= 0, got -1"):
        Checkpointing(tmp_path, every=-1)
