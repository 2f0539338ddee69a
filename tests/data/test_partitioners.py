"""Pathological, natural and size-skewed partitioners: their statistics, seeds and refusals."""

from __future__ import annotations

import doctest
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedbus.data import PARTITION_NAMES, ArrayDataset, PartitionedDataset, load_csv, load_digits
from fedbus.data.partition import (
    PARTITIONERS,
    dirichlet_sizes,
    exponential,
    exponential_sizes,
    linear,
    linear_sizes,
    natural,
    pathological,
    power_law,
)
from fedbus.data.partition.size import sizes_from_weights
from fedbus.data.registry import partition_options
from fedbus.errors import InvalidArgumentError
from fedbus.plugins import Settings

Parts = list[np.ndarray[Any, Any]]
SEEDS = range(5)


@pytest.fixture(scope="module")
def digit_labels() -> np.ndarray[Any, Any]:
    return load_digits().y


def assert_exact_cover(parts: Parts, num_samples: int, num_clients: int) -> None:
    assert len(parts) == num_clients
    assert all(part.dtype == np.int64 and len(part) >= 1 for part in parts)
    assert all((np.diff(part) > 0).all() for part in parts)
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(num_samples))


def same(first: Parts, second: Parts) -> bool:
    return len(first) == len(second) and all(map(np.array_equal, first, second))


def gini(sizes: np.ndarray[Any, Any]) -> float:
    """0 for equal sizes, towards 1 when one client holds everything."""
    ordered = np.sort(sizes).astype(np.float64)
    ranks = np.arange(1, len(ordered) + 1)
    return float((2 * ranks - len(ordered) - 1) @ ordered / (len(ordered) * ordered.sum()))


# --- pathological -----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("clients", "classes"), [(50, 3), (20, 2), (7, 4), (10, 10), (100, 1)])
def test_pathological_gives_each_client_exactly_its_classes_evenly(
    digit_labels: np.ndarray[Any, Any], seed: int, clients: int, classes: int
) -> None:
    parts = pathological(digit_labels, clients, classes, seed)

    assert_exact_cover(parts, len(digit_labels), clients)
    held = [np.unique(digit_labels[part]) for part in parts]
    assert [len(labels) for labels in held] == [classes] * clients
    holders = np.bincount(np.concatenate(held), minlength=10)
    # Every class used, by as many clients as the others give or take one.
    assert holders.min() >= 1
    assert holders.max() - holders.min() <= 1
    assert holders.sum() == clients * classes
    # A class's samples are split evenly among its holders.
    for label in range(10):
        shares = [np.sum(digit_labels[part] == label) for part in parts]
        shares = [share for share in shares if share]
        assert max(shares) - min(shares) <= 1, label


def test_pathological_gives_the_extra_holders_to_the_largest_classes() -> None:
    labels = np.repeat(np.arange(4), [40, 10, 30, 20])

    parts = pathological(labels, 5, 1, 0)

    holders = np.bincount([labels[part][0] for part in parts], minlength=4)
    assert holders.tolist() == [2, 1, 1, 1]


def test_pathological_pairs_classes_at_random() -> None:
    """The pairs of labels vary between clients, not one pairing repeated."""
    labels = np.repeat(np.arange(10), 100)
    pairs = {tuple(np.unique(labels[part])) for part in pathological(labels, 50, 2, 0)}

    # 50 clients over 45 possible pairs: a fixed cyclic pairing would give only 5.
    assert len(pairs) >= 20


@pytest.mark.parametrize(
    ("clients", "classes", "message"),
    [
        (
            5,
            4,
            r"pathological: 5 clients x 4 classes: classes_per_client 4 exceeds the 3 distinct "
            r"labels; use classes_per_client <= 3",
        ),
        (
            1,
            2,
            r"pathological: 1 clients x 2 classes = 2 label slots cannot hold all 3 labels; "
            r"use classes_per_client >= 3 or more clients",
        ),
        (
            6,
            2,
            r"pathological: 6 clients x 2 classes need 4 clients holding label 0, but it has "
            r"only 2 samples",
        ),
        (3, 0, r"classes_per_client: expected an int >= 1, got 0"),
    ],
)
def test_pathological_refuses_what_cannot_be_done_with_the_numbers(
    clients: int, classes: int, message: str
) -> None:
    labels = np.repeat(np.arange(3), [2, 50, 50])

    with pytest.raises(InvalidArgumentError, match=message):
        pathological(labels, clients, classes, 0)


# --- natural ----------------------------------------------------------------------------------


def test_natural_gives_one_client_per_id_with_exactly_its_samples() -> None:
    ids = np.random.default_rng(0).integers(0, 8, size=200) * 3  # ids 0, 3, ..., 21

    parts, chosen = natural(ids, 8, 0, return_ids=True)

    assert chosen.tolist() == list(range(0, 24, 3))
    assert_exact_cover(parts, 200, 8)
    for part, client_id in zip(parts, chosen, strict=True):
        np.testing.assert_array_equal(part, np.flatnonzero(ids == client_id))


@pytest.mark.parametrize("seed", SEEDS)
def test_natural_with_more_ids_takes_a_seeded_choice_of_them(seed: int) -> None:
    ids = np.repeat(np.arange(30), 3)

    parts, chosen = natural(ids, 10, seed, return_ids=True)

    assert len(parts) == 10
    assert len(set(chosen.tolist())) == 10
    assert (np.diff(chosen) > 0).all()
    for part, client_id in zip(parts, chosen, strict=True):
        np.testing.assert_array_equal(part, np.flatnonzero(ids == client_id))
    again, chosen_again = natural(ids, 10, np.random.default_rng(seed), return_ids=True)
    assert same(parts, again)
    assert np.array_equal(chosen, chosen_again)
    assert not np.array_equal(chosen, natural(ids, 10, seed + 100, return_ids=True)[1])


def test_natural_refuses_more_clients_than_ids() -> None:
    with pytest.raises(
        InvalidArgumentError,
        match=r"natural: 5 clients asked for, but the client column names only 3 distinct "
        r"clients; use num_clients <= 3",
    ):
        natural(np.array([0, 1, 2, 2]), 5, 0)


def test_natural_refuses_fractional_client_ids() -> None:
    with pytest.raises(InvalidArgumentError, match="client_ids: expected a 1-D array of int"):
        natural(np.array([0.5, 1.0]), 1, 0)


# --- size skew --------------------------------------------------------------------------------

SizeSplit = Callable[[int, int, int | np.random.Generator], Parts]
SIZE_PARTITIONERS: dict[str, SizeSplit] = {
    "power_law": lambda n, clients, seed: power_law(n, clients, 1.0, seed),
    "dirichlet_sizes": lambda n, clients, seed: dirichlet_sizes(n, clients, 0.3, seed),
    "linear": lambda n, clients, seed: linear(n, clients, 10.0, seed),
    "exponential": lambda n, clients, seed: exponential(n, clients, 10.0, seed),
}


@pytest.mark.parametrize("name", SIZE_PARTITIONERS)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("num_samples", "clients"), [(1797, 50), (120, 100), (7, 7), (5, 1)])
def test_size_partitioners_cover_every_sample_with_clients_of_one_or_more(
    name: str, seed: int, num_samples: int, clients: int
) -> None:
    split = SIZE_PARTITIONERS[name]

    parts = split(num_samples, clients, seed)

    assert_exact_cover(parts, num_samples, clients)
    assert same(parts, split(num_samples, clients, np.random.default_rng(seed)))


@pytest.mark.parametrize("name", SIZE_PARTITIONERS)
def test_size_partitioners_differ_between_seeds(name: str) -> None:
    split = SIZE_PARTITIONERS[name]

    assert not same(split(1000, 20, 0), split(1000, 20, 1))


@pytest.mark.parametrize(
    ("schedule", "num_samples", "clients", "ratio"),
    [
        (linear_sizes, 1797, 50, 10.0),
        (linear_sizes, 10_000, 7, 3.5),
        (exponential_sizes, 1797, 50, 10.0),
        (exponential_sizes, 10_000, 7, 100.0),
        (linear_sizes, 1000, 10, 1.0),
    ],
)
def test_schedules_sum_exactly_are_monotone_and_span_the_ratio(
    schedule: Any, num_samples: int, clients: int, ratio: float
) -> None:
    sizes = schedule(num_samples, clients, ratio)

    assert sizes.sum() == num_samples
    assert sizes.min() >= 1
    assert (np.diff(sizes) >= 0).all()
    # The exact sizes are rounded to within one sample.
    steps = np.linspace(0, 1, clients)
    weights = 1 + (ratio - 1) * steps if schedule is linear_sizes else ratio**steps
    exact = num_samples * weights / weights.sum()
    assert np.abs(sizes - exact).max() < 1
    assert (
        (exact[-1] - 1) / (exact[0] + 1) <= sizes[-1] / sizes[0] <= (exact[-1] + 1) / (exact[0] - 1)
    )


def test_schedules_step_linearly_and_geometrically() -> None:
    assert linear_sizes(100, 4, 4.0).tolist() == [10, 20, 30, 40]
    assert exponential_sizes(150, 4, 8.0).tolist() == [10, 20, 40, 80]
    assert linear_sizes(9, 1, 5.0).tolist() == [9]


def test_linear_deals_its_schedule_to_shuffled_clients() -> None:
    sizes = [len(part) for part in linear(100, 4, 4.0, 3)]

    assert sorted(sizes) == [10, 20, 30, 40]


@pytest.mark.parametrize(
    ("split", "values"),
    [(power_law, (0.5, 1.5, 5.0)), (dirichlet_sizes, (0.1, 1.0, 10.0))],
    ids=["power_law", "dirichlet_sizes"],
)
def test_smaller_exponent_or_alpha_skews_sizes_more(split: Any, values: tuple[float, ...]) -> None:
    # Mean Gini coefficient over 20 fixed seeds: each step moves it by far more than its spread.
    means = [
        np.mean(
            [gini(np.array([len(p) for p in split(5000, 50, value, seed)])) for seed in range(20)]
        )
        for value in values
    ]

    assert means[0] > means[1] + 0.1
    assert means[1] > means[2] + 0.1


def test_rounding_gives_small_shares_one_sample_taken_from_the_largest() -> None:
    sizes = sizes_from_weights(100, np.array([1e-6, 1e-6, 1.0, 3.0]))

    assert sizes.tolist() == [1, 1, 25, 73]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: power_law(10, 2, 0.0, 0), "exponent: expected a finite number > 0, got 0.0"),
        (lambda: power_law(10, 2, True, 0), "exponent: expected a number > 0, got True"),
        (lambda: dirichlet_sizes(10, 2, float("nan"), 0), "alpha: expected a finite number"),
        (lambda: linear(10, 2, 0.5, 0), "ratio: expected a finite number >= 1, got 0.5"),
        (lambda: exponential(10, 2, float("inf"), 0), "ratio: expected a finite number >= 1"),
        (lambda: exponential(3, 4, 2.0, 0), r"num_clients: expected 1..3 \(one sample per"),
        (lambda: power_law(0, 1, 1.0, 0), "num_samples: expected an int >= 1, got 0"),
    ],
)
def test_size_partitioners_refuse_bad_arguments(call: Any, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        call()


# --- by name, through PartitionedDataset --------------------------------------------------------


def test_partition_names_are_the_table_of_partitioners() -> None:
    assert tuple(PARTITIONERS) == PARTITION_NAMES
    assert set(PARTITION_NAMES) == {
        "iid",
        "dirichlet",
        "shards",
        "pathological",
        "natural",
        "power_law",
        "dirichlet_sizes",
        "linear",
        "exponential",
    }


@pytest.mark.parametrize("name", [name for name in PARTITION_NAMES if name != "natural"])
def test_every_name_partitions_digits_the_same_for_the_same_seed(name: str) -> None:
    digits = load_digits()

    def sizes(seed: int) -> list[int]:
        data = PartitionedDataset.from_arrays(digits, 12, name, classes_per_client=3, seed=seed)
        return [data.client_size(i) for i in range(12)]

    assert sum(sizes(0)) == 1797 - 359  # all but the central test set
    assert min(sizes(0)) >= 1
    assert sizes(0) == sizes(0)


def test_natural_by_name_reads_the_client_ids_of_the_dataset() -> None:
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 6, size=300)
    x = rng.random((300, 4)).astype(np.float32)
    dataset = ArrayDataset(x, rng.integers(0, 3, size=300), 3, ids)

    data = PartitionedDataset.from_arrays(dataset, 6, "natural", seed=0)

    test = set(data._test_indices.tolist())
    for client in range(6):
        expected = [i for i in np.flatnonzero(ids == client) if i not in test]
        assert data.client_indices(client).tolist() == expected


def test_natural_without_a_client_column_says_which_key_to_set() -> None:
    with pytest.raises(
        InvalidArgumentError,
        match=r"partition natural needs a client column: set data\.client_column",
    ):
        PartitionedDataset.from_arrays(load_digits(), 5, "natural")


def test_partition_options_give_the_keys_of_the_chosen_partition_only() -> None:
    data = {
        "alpha": 0.5,
        "shards_per_client": 2,
        "classes_per_client": 3,
        "size_exponent": 0.8,
        "size_alpha": 1.0,
        "size_ratio": 4.0,
        "central_test_fraction": 0.2,
        "client_test_fraction": 0.2,
    }
    base = {"partition", "alpha", "shards_per_client", "central_test_fraction"}
    base |= {"client_test_fraction", "seed"}

    def keys(partition: str) -> set[str]:
        sections: dict[str, dict[str, Any]] = {
            "data": {**data, "partition": partition},
            "federation": {"seed": 1},
        }
        return set(partition_options(Settings(sections)))

    assert keys("iid") == keys("natural") == base
    assert keys("pathological") == base | {"classes_per_client"}
    assert keys("power_law") == base | {"size_exponent"}
    assert keys("dirichlet_sizes") == base | {"size_alpha"}
    assert keys("linear") == keys("exponential") == base | {"size_ratio"}


# --- the csv client column ----------------------------------------------------------------------


def write_csv(path: Path, clients: list[str]) -> Path:
    lines = ["f0,writer,f1,label"]
    lines += [f"{i / 10},{client},{i % 3},{i % 2}" for i, client in enumerate(clients)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_csv_client_column_names_clients_in_sorted_order(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "text.csv", ["bob", "alice", "carol", "bob"])

    dataset = load_csv(path, client_column="writer")

    assert dataset.num_features == 2
    assert dataset.client_ids is not None
    assert dataset.client_ids.tolist() == [1, 0, 2, 1]
    np.testing.assert_allclose(dataset.x[:, 1], [0, 1, 2, 0])


def test_csv_numeric_client_names_sort_as_numbers(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "numbers.csv", ["10", "9", "10", "100"])

    dataset = load_csv(path, client_column="writer")

    assert dataset.client_ids is not None
    assert dataset.client_ids.tolist() == [1, 0, 1, 2]


@pytest.mark.parametrize(
    ("clients", "column", "message"),
    [
        (["a", "b"], "user", r"no client column 'user'; the columns are \['f0', 'writer',"),
        (["a", ""], "writer", r"line 3, column 'writer': expected a client name, got an empty"),
        (["a", "b"], "label", r"client column 'label' leaves no label column"),
    ],
)
def test_csv_client_column_refusals_name_the_file_and_column(
    tmp_path: Path, clients: list[str], column: str, message: str
) -> None:
    path = write_csv(tmp_path / "bad.csv", clients)

    with pytest.raises(InvalidArgumentError, match=message) as caught:
        load_csv(path, client_column=column)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize(
    "module",
    [
        "fedbus.data.partition.label",
        "fedbus.data.partition.column",
        "fedbus.data.partition.size",
    ],
)
def test_docstring_examples_of_the_partitioner_modules(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module))

    assert result.attempted > 0
    assert result.failed == 0
