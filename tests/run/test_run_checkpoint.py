"""Round checkpoints: model, round number and sampler state survive a restart, no pickle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedbus.errors import InvalidArgumentError
from fedbus.run.checkpoint import (
    CHECKPOINT_FILE,
    load_checkpoint,
    load_sampler_state,
    save_checkpoint,
)


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
