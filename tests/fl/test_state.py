"""ClientStateStore: per-client state in memory up to a budget, spilled to disk beyond it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedbus.errors import InvalidArgumentError, InvalidTypeError
from fedbus.fl.state import ClientStateStore


def test_entries_round_trip_in_memory() -> None:
    store = ClientStateStore()
    store.put(3, "control", {"w": np.arange(4.0), "b": np.ones(2, dtype=np.float32)})
    got = store.get(3, "control")
    assert got is not None
    np.testing.assert_array_equal(got["w"], np.arange(4.0))
    assert got["b"].dtype == np.float32
    assert store.get(3, "other") is None
    assert store.get(4, "control") is None
    assert (3, "control") in store
    assert len(store) == 1
    assert store.spilled == 0
    assert store.memory_bytes == 4 * 8 + 2 * 4


def test_stored_arrays_are_read_only_and_a_put_replaces() -> None:
    store = ClientStateStore()
    store.put(1, "personal", {"w": np.zeros(3)})
    got = store.get(1, "personal")
    assert got is not None
    with pytest.raises(ValueError, match="read-only"):
        got["w"][0] = 1.0
    store.put(1, "personal", {"w": np.ones(5)})
    replaced = store.get(1, "personal")
    assert replaced is not None
    assert replaced["w"].shape == (5,)
    assert store.memory_bytes == 40
    assert len(store) == 1


def test_least_recently_used_entries_spill_and_come_back_exactly(tmp_path: Path) -> None:
    store = ClientStateStore(max_memory_bytes=3 * 800, spill_dir=tmp_path)
    rng = np.random.default_rng(0)
    expected = {
        node: {"w": rng.normal(size=100), "v": rng.normal(size=(2, 3))} for node in range(10)
    }
    for node, arrays in expected.items():
        store.put(node, "control", arrays)
    assert len(store) == 10
    assert store.memory_bytes <= 3 * 800
    assert store.spilled >= 7
    assert len(list(tmp_path.glob("*.npz"))) == store.spilled
    for node, arrays in expected.items():
        got = store.get(node, "control")
        assert got is not None
        assert set(got) == {"w", "v"}
        for name, value in arrays.items():
            np.testing.assert_array_equal(got[name], value)
            assert got[name].dtype == value.dtype
    assert store.memory_bytes <= 3 * 800
    store.close()
    assert list(tmp_path.glob("*.npz")) == []
    assert len(store) == 0


def test_a_private_spill_directory_is_removed_on_close() -> None:
    store = ClientStateStore(max_memory_bytes=0)
    store.put(1, "x", {"a": np.ones(8)})
    assert store.spilled == 1
    assert store.memory_bytes == 0
    directory = store._directory()
    assert directory.is_dir()
    np.testing.assert_array_equal(store.get(1, "x")["a"], np.ones(8))  # type: ignore[index]
    store.close()
    assert not directory.exists()


def test_many_clients_with_state_fit_a_small_memory_budget(tmp_path: Path) -> None:
    # 5,000 clients x 650 float32 parameters = 13 MB of state, held with 256 KiB in memory
    store = ClientStateStore(max_memory_bytes=1 << 18, spill_dir=tmp_path)
    template = np.zeros(650, dtype=np.float32)
    for node in range(1, 5_001):
        store.put(node, "c", {"w": template + node})
    assert len(store) == 5_000
    assert store.memory_bytes <= 1 << 18
    got = store.get(4_321, "c")
    assert got is not None
    assert got["w"][0] == 4_321
    store.close()


def test_bad_input_is_refused_with_clear_errors() -> None:
    with pytest.raises(InvalidArgumentError, match="max_memory_bytes"):
        ClientStateStore(max_memory_bytes=-1)
    store = ClientStateStore()
    with pytest.raises(InvalidArgumentError, match="entry name"):
        store.put(1, "../etc", {"a": np.ones(1)})
    with pytest.raises(InvalidTypeError, match="node_id"):
        store.put("1", "x", {"a": np.ones(1)})  # type: ignore[arg-type]
    with pytest.raises(InvalidTypeError, match=r"numpy\.ndarray"):
        store.put(1, "x", {"a": [1, 2]})  # type: ignore[dict-item]
    with pytest.raises(InvalidTypeError, match="objects"):
        store.put(1, "x", {"a": np.array([object()])})


def test_entries_are_one_client_s_and_replace_entries_makes_them_all() -> None:
    store = ClientStateStore(max_memory_bytes=100)
    store.put(1, "a", {"x": np.ones(4)})
    store.put(1, "b", {"y": np.zeros(20)})  # spills
    store.put(2, "a", {"x": np.full(2, 7.0)})
    assert sorted(store.entries(1)) == ["a", "b"]
    np.testing.assert_array_equal(store.entries(1)["b"]["y"], np.zeros(20))
    store.replace_entries(1, {"c": {"z": np.arange(3.0)}})
    assert list(store.entries(1)) == ["c"]
    assert store.get(1, "b") is None
    assert list(store.entries(2)) == ["a"]
    assert store.entries(3) == {}
    store.close()
    assert store.entries(2) == {}
