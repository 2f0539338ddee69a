"""FedAvg's running sums: float64 for most models; float32 ones of a very large model in float32."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from fedbus.fl.strategy import fedavg
from fedbus.fl.strategy.fedavg import WeightedAverage, sum_dtypes
from fedbus.message import ArrayRecord, MetricRecord, RecordDict

WEIGHTS = [3, 1, 7]


def replies(seed: int = 0) -> list[dict[str, np.ndarray[Any, Any]]]:
    rng = np.random.default_rng(seed)
    return [
        {
            "w": rng.standard_normal((300, 7)).astype(np.float32),
            "b": rng.standard_normal(7).astype(np.float64),
            "count": rng.integers(0, 100, 5).astype(np.int64),
            "scale": np.array(rng.standard_normal(), np.float32),  # 0-d
        }
        for _ in WEIGHTS
    ]


def average(arrays: list[dict[str, np.ndarray[Any, Any]]]) -> dict[str, np.ndarray[Any, Any]]:
    aggregate = WeightedAverage(ArrayRecord(arrays[0]))
    for node, (each, weight) in enumerate(zip(arrays, WEIGHTS, strict=True)):
        reply = RecordDict(
            {"arrays": ArrayRecord(each), "metrics": MetricRecord({"num_examples": weight})}
        )
        aggregate.add(node + 1, reply)
    return aggregate.result()[0].to_numpy_dict()


def expected(
    arrays: list[dict[str, np.ndarray[Any, Any]]], sums: dict[str, Any]
) -> dict[str, np.ndarray[Any, Any]]:
    """The same fold, written out: ``sum(n_k * x_k) / sum(n_k)`` in each array's sum dtype."""
    result = {}
    for key, first in arrays[0].items():
        total = np.multiply(first, WEIGHTS[0], dtype=sums[key])
        for each, weight in zip(arrays[1:], WEIGHTS[1:], strict=True):
            total = total + np.multiply(each[key], weight, dtype=sums[key])
        result[key] = np.asarray(total / sum(WEIGHTS)).astype(first.dtype)
    return result


def test_sums_are_float64_for_models_up_to_the_limit() -> None:
    arrays = replies()
    assert set(sum_dtypes(arrays[0]).values()) == {np.dtype(np.float64)}
    got, want = average(arrays), expected(arrays, dict.fromkeys(arrays[0], np.float64))
    for key, value in want.items():
        assert got[key].dtype == value.dtype
        assert got[key].tobytes() == value.tobytes(), key


def test_float32_arrays_of_a_larger_model_are_summed_in_float32(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(fedavg, "WIDE_SUMS_BYTES", 1024)  # this model is "larger"
    arrays = replies(1)
    sums = sum_dtypes(arrays[0])
    assert sums == {"w": np.float32, "b": np.float64, "count": np.float64, "scale": np.float32}
    got, want = average(arrays), expected(arrays, sums)
    for key, value in want.items():
        assert got[key].dtype == value.dtype
        assert got[key].tobytes() == value.tobytes(), key
    # and it stays close to the float64 average
    exact = expected(arrays, dict.fromkeys(arrays[0], np.float64))
    np.testing.assert_allclose(got["w"], exact["w"], rtol=1e-5, atol=1e-6)


def test_folding_in_blocks_gives_the_same_sums(monkeypatch: pytest.MonkeyPatch) -> None:
    whole = average(replies(2))
    monkeypatch.setattr(fedavg, "_FOLD_BLOCK", 64)  # 9 rows of 7 at a time
    blocked = average(replies(2))
    for key, value in whole.items():
        assert blocked[key].tobytes() == value.tobytes(), key
