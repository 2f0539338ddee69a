"""MNIST-1D: the published split, generated offline and deterministically, divided among
clients with its 1,000 test signals kept whole as the central test set."""

from __future__ import annotations

import doctest
import random

import numpy as np
import pytest

import fedbus.data.mnist1d as mnist1d_module
from fedbus.data import ArrayDataset, PartitionedDataset, load_digits, load_mnist1d
from fedbus.data.mnist1d import generate_mnist1d
from fedbus.data.registry import DATASETS
from fedbus.errors import InvalidArgumentError
from fedbus.run import load_config
from fedbus.run.algorithms import settings_of


def _mnist1d(*overrides: str) -> PartitionedDataset:
    config = load_config(None, ["data.dataset=mnist1d", *overrides])
    data = DATASETS.get("mnist1d").build(settings_of(config))
    assert isinstance(data, PartitionedDataset)
    return data


def test_the_published_split_has_its_shapes_and_ten_classes() -> None:
    train, test = load_mnist1d()

    assert (train.x.shape, train.y.shape) == ((4000, 40), (4000,))
    assert (test.x.shape, test.y.shape) == ((1000, 40), (1000,))
    assert (train.x.dtype, train.y.dtype) == (np.float32, np.int64)
    assert train.num_classes == test.num_classes == 10
    assert set(np.unique(train.y)) == set(np.unique(test.y)) == set(range(10))
    # The package centres the whole set and scales it to unit variance.
    everything = np.concatenate([train.x, test.x])
    assert abs(float(everything.mean())) < 1e-3
    assert float(everything.std()) == pytest.approx(1.0, abs=1e-3)
    # The label counts of the published test split (seed 42 of the package's defaults).
    assert np.bincount(test.y).tolist() == [102, 104, 89, 106, 106, 98, 99, 96, 98, 102]


def test_generation_is_deterministic_and_cached_read_only() -> None:
    first, second = generate_mnist1d(), generate_mnist1d()
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    train, _ = load_mnist1d()
    np.testing.assert_array_equal(train.x, first[0])
    again, _ = load_mnist1d()
    assert again.x is train.x  # generated once per process
    with pytest.raises(ValueError, match="read-only"):
        train.x[0, 0] = 1.0


def test_generation_leaves_the_global_random_generators_untouched() -> None:
    np.random.seed(1234)
    random.seed(1234)
    numpy_state, python_state = np.random.get_state(), random.getstate()
    generate_mnist1d()

    after = np.random.get_state()
    np.testing.assert_array_equal(after[1], numpy_state[1])
    assert after[2:] == numpy_state[2:]
    assert random.getstate() == python_state
    assert np.random.random() == np.random.RandomState(1234).random()


def test_the_central_test_set_is_the_generated_test_split() -> None:
    data = _mnist1d("federation.num_clients=10", "data.central_test_fraction=0.5")
    _, test = load_mnist1d()
    x_test, y_test = data.test_set()

    np.testing.assert_array_equal(x_test, test.x)  # whole, in order, whatever the fraction
    np.testing.assert_array_equal(y_test, test.y)
    assert (data.num_features, data.num_classes) == (40, 10)


@pytest.mark.parametrize(
    ("partition", "skewed"), [("iid", False), ("dirichlet", True), ("shards", True)]
)
def test_partitions_divide_exactly_the_training_signals(partition: str, skewed: bool) -> None:
    data = _mnist1d("federation.num_clients=20", f"data.partition={partition}", "data.alpha=0.3")
    train, _ = load_mnist1d()
    indices = np.concatenate([data.client_indices(i) for i in range(20)])

    np.testing.assert_array_equal(np.sort(indices), np.arange(4000))
    local = data.client(3)
    assert local.num_train + local.num_test == data.client_size(3)
    rows = {tuple(row) for row in train.x[data.client_indices(3)]}
    assert {tuple(row) for row in local.x_train} <= rows
    classes = [len(np.unique(train.y[data.client_indices(i)])) for i in range(20)]
    assert (min(classes) < 10) == skewed


def test_the_same_seed_gives_the_same_clients() -> None:
    first = _mnist1d("federation.num_clients=8", "federation.seed=3")
    second = _mnist1d("federation.num_clients=8", "federation.seed=3")
    other = _mnist1d("federation.num_clients=8", "federation.seed=4")

    np.testing.assert_array_equal(first.client(5).x_train, second.client(5).x_train)
    assert not np.array_equal(first.client_indices(5), other.client_indices(5))


def test_from_splits_partitions_like_from_arrays_without_a_test_share() -> None:
    digits = load_digits()
    train, test = digits.subset(range(1500)), digits.subset(range(1500, 1797))
    joined = PartitionedDataset.from_splits(
        train, test, 6, partition="dirichlet", alpha=0.5, seed=2
    )
    alone = PartitionedDataset.from_arrays(
        train, 6, "dirichlet", alpha=0.5, central_test_fraction=0.0, seed=2
    )

    for client in range(6):
        np.testing.assert_array_equal(joined.client_indices(client), alone.client_indices(client))
        np.testing.assert_array_equal(joined.client(client).x_test, alone.client(client).x_test)
    np.testing.assert_array_equal(joined.test_set()[0], test.x)


def test_from_splits_refuses_a_test_fraction_and_mismatched_splits() -> None:
    digits = load_digits()
    train = digits.subset(range(100))
    with pytest.raises(InvalidArgumentError, match="central_test_fraction"):
        PartitionedDataset.from_splits(train, train, 2, central_test_fraction=0.2)
    narrow = ArrayDataset(np.zeros((5, 3)), np.zeros(5, dtype=np.int64), num_classes=10)
    with pytest.raises(InvalidArgumentError, match="expected 64 features and 10 classes"):
        PartitionedDataset.from_splits(train, narrow, 2)


def test_docstring_examples() -> None:
    result = doctest.testmod(mnist1d_module)

    assert result.attempted > 0
    assert result.failed == 0
