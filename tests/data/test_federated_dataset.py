"""PartitionedDataset and build_dataset: central test split, client splits, the registry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedbus.data import (
    ArrayDataset,
    FederatedDataset,
    PartitionedDataset,
    SyntheticDataset,
    build_dataset,
    load_digits,
)
from fedbus.errors import ConfigError, InvalidArgumentError


@pytest.fixture(scope="module")
def digits() -> ArrayDataset:
    return load_digits()


def test_central_test_set_is_stratified_and_disjoint(digits: ArrayDataset) -> None:
    data = PartitionedDataset.from_arrays(digits, num_clients=10, seed=0)
    _, y_test = data.test_set()

    # 20% of every class: 178 zeros -> 36, 182 ones -> 36, ...
    expected = [round(0.2 * count) for count in np.bincount(digits.y)]
    assert np.bincount(y_test).tolist() == expected
    used = [data.client_indices(i) for i in range(10)] + [data._test_indices]
    np.testing.assert_array_equal(np.sort(np.concatenate(used)), np.arange(len(digits)))


def test_clients_get_their_own_train_and_test_split(digits: ArrayDataset) -> None:
    data = PartitionedDataset.from_arrays(digits, num_clients=10, client_test_fraction=0.25)
    local = data.client(4)
    indices = data.client_indices(4)

    assert local.num_train + local.num_test == len(indices) == data.client_size(4)
    assert local.num_test == round(0.25 * len(indices))
    assert local.x_train.dtype == np.float32
    assert local.y_test.dtype == np.int64
    # Train and test rows are disjoint pieces of the client's samples.
    rows = {tuple(row) for row in digits.x[indices]}
    assert {tuple(row) for row in local.x_train} | {tuple(row) for row in local.x_test} <= rows


def test_partitioned_dataset_is_deterministic_per_seed(digits: ArrayDataset) -> None:
    def build(seed: int) -> PartitionedDataset:
        return PartitionedDataset.from_arrays(digits, 8, "dirichlet", alpha=0.3, seed=seed)

    first, again, other = build(5), build(5), build(6)

    np.testing.assert_array_equal(first.client(3).x_train, again.client(3).x_train)
    np.testing.assert_array_equal(first.client(3).y_test, again.client(3).y_test)
    np.testing.assert_array_equal(first.test_set()[1], again.test_set()[1])
    assert not np.array_equal(first.client_indices(3), other.client_indices(3))


def test_shards_partition_through_from_arrays(digits: ArrayDataset) -> None:
    data = PartitionedDataset.from_arrays(digits, 20, "shards", shards_per_client=2, seed=0)

    for index in range(20):
        local = data.client(index)
        labels = np.concatenate([local.y_train, local.y_test])
        assert len(np.unique(labels)) <= 2


def test_client_index_out_of_range_is_refused(digits: ArrayDataset) -> None:
    data = PartitionedDataset.from_arrays(digits, num_clients=3)

    with pytest.raises(InvalidArgumentError, match=r"client_index: expected 0..2, got 3"):
        data.client(3)
    with pytest.raises(
        InvalidArgumentError,
        match=r"partition: expected one of iid, dirichlet, shards, pathological",
    ):
        PartitionedDataset.from_arrays(digits, 3, "random")
    with pytest.raises(InvalidArgumentError, match=r"central_test_fraction: expected a number"):
        PartitionedDataset.from_arrays(digits, 3, central_test_fraction=1.0)


def test_build_dataset_digits(digits: ArrayDataset) -> None:
    data = build_dataset("digits", 10, partition="dirichlet", alpha=0.5, seed=2)

    assert isinstance(data, FederatedDataset)
    assert (data.num_clients, data.num_features, data.num_classes) == (10, 64, 10)
    assert len(data.test_set()[1]) == 359


def test_build_dataset_from_npz_and_csv(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 3)), rng.integers(0, 2, size=60)
    np.savez(tmp_path / "data.npz", x=x, y=y)
    rows = "\n".join(f"{a},{b},{c},{label}" for (a, b, c), label in zip(x, y, strict=True))
    (tmp_path / "data.csv").write_text("a,b,c,label\n" + rows + "\n")

    from_npz = build_dataset("npz", 4, path=str(tmp_path / "data.npz"), seed=1)
    from_csv = build_dataset("csv", 4, path=tmp_path / "data.csv", seed=1)

    assert (from_npz.num_features, from_npz.num_classes) == (3, 2)
    np.testing.assert_allclose(from_npz.client(2).x_train, from_csv.client(2).x_train)
    np.testing.assert_array_equal(from_npz.test_set()[1], from_csv.test_set()[1])


def test_build_dataset_synthetic() -> None:
    data = build_dataset("synthetic", 50, alpha=0.5, beta=0.5, num_features=20, seed=4)

    assert isinstance(data, SyntheticDataset)
    assert (data.alpha, data.beta, data.num_features) == (0.5, 0.5, 20)


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("imagenet", {}, "unknown dataset 'imagenet': expected one of csv, digits, npz, synthetic"),
        ("digits", {"beta": 1.0}, "unknown options \\['beta'\\]; allowed options: alpha, "),
        ("npz", {}, "option 'path' is required"),
        ("digits", {"partition": "x"}, "dataset 'digits': partition: expected one of"),
        ("synthetic", {"alpha": -1.0}, "dataset 'synthetic': alpha: expected a finite number"),
    ],
)
def test_build_dataset_errors_are_config_errors(
    name: str, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        build_dataset(name, 10, **options)
