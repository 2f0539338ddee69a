"""Partitioners: every index exactly once, seeded, and the label skew each scheme promises."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedbus.data import dirichlet, iid, load_digits, shards
from fedbus.errors import InvalidArgumentError

Parts = list[np.ndarray[Any, Any]]


@pytest.fixture(scope="module")
def digit_labels() -> np.ndarray[Any, Any]:
    return load_digits().y


def assert_exact_cover(parts: Parts, num_samples: int, num_clients: int) -> None:
    assert len(parts) == num_clients
    assert all(part.dtype == np.int64 for part in parts)
    assert all((np.diff(part) > 0).all() for part in parts)
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(num_samples))


def mean_label_entropy(parts: Parts, labels: np.ndarray[Any, Any]) -> float:
    entropies = []
    for part in parts:
        shares = np.bincount(labels[part]) / len(part)
        shares = shares[shares > 0]
        entropies.append(-(shares * np.log(shares)).sum())
    return float(np.mean(entropies))


label_arrays = st.integers(2, 120).flatmap(
    lambda n: st.lists(st.integers(0, 5), min_size=n, max_size=n).map(np.array)
)


@settings(max_examples=40, deadline=None)
@given(labels=label_arrays, clients=st.integers(1, 10), seed=st.integers(0, 2**32))
def test_every_partitioner_covers_each_index_once(
    labels: np.ndarray[Any, Any], clients: int, seed: int
) -> None:
    clients = min(clients, len(labels))

    assert_exact_cover(iid(len(labels), clients, seed), len(labels), clients)
    assert_exact_cover(dirichlet(labels, clients, 0.3, seed), len(labels), clients)
    assert_exact_cover(shards(labels, clients, 1, seed), len(labels), clients)


def test_iid_parts_differ_in_size_by_at_most_one() -> None:
    sizes = [len(part) for part in iid(1797, 7, np.random.default_rng(0))]

    assert max(sizes) - min(sizes) <= 1
    assert sum(sizes) == 1797


@pytest.mark.parametrize(
    "partition",
    [
        lambda labels, seed: iid(len(labels), 10, seed),
        lambda labels, seed: dirichlet(labels, 10, 0.5, seed),
        lambda labels, seed: shards(labels, 10, 2, seed),
    ],
    ids=["iid", "dirichlet", "shards"],
)
def test_same_seed_same_partition_other_seed_other_partition(
    partition: Any, digit_labels: np.ndarray[Any, Any]
) -> None:
    first = partition(digit_labels, 0)
    again = partition(digit_labels, np.random.default_rng(0))
    other = partition(digit_labels, 1)

    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_small_alpha_is_more_skewed_than_large_alpha(digit_labels: np.ndarray[Any, Any]) -> None:
    skewed = mean_label_entropy(dirichlet(digit_labels, 20, 0.1, 0), digit_labels)
    mild = mean_label_entropy(dirichlet(digit_labels, 20, 100.0, 0), digit_labels)
    balanced = mean_label_entropy(iid(len(digit_labels), 20, 0), digit_labels)

    # Measured: 0.79 nats for alpha 0.1, 2.29 for alpha 100, 2.27 for iid (log 10 = 2.30).
    assert skewed < 1.2
    assert mild > 2.2
    assert abs(mild - balanced) < 0.1


def test_dirichlet_respects_min_size_even_when_draws_fail() -> None:
    labels = np.random.default_rng(0).integers(0, 10, size=3000)

    parts = dirichlet(labels, 500, alpha=0.05, rng=0, min_size=5)

    assert_exact_cover(parts, 3000, 500)
    assert min(len(part) for part in parts) >= 5


def test_dirichlet_with_impossible_min_size_says_what_is_possible() -> None:
    with pytest.raises(InvalidArgumentError, match=r"min_size: .*use min_size <= 3"):
        dirichlet(np.zeros(30, dtype=np.int64), 10, 0.5, 0, min_size=4)


def test_shards_give_each_client_at_most_shards_per_client_labels(
    digit_labels: np.ndarray[Any, Any],
) -> None:
    parts = shards(digit_labels, 30, 2, 0)

    assert_exact_cover(parts, len(digit_labels), 30)
    assert max(len(np.unique(digit_labels[part])) for part in parts) <= 2
    # Sixty shards of about 30 samples each: sizes stay close.
    assert all(50 <= len(part) <= 70 for part in parts)


def test_shards_with_fewer_shards_than_labels_still_cover(
    digit_labels: np.ndarray[Any, Any],
) -> None:
    parts = shards(digit_labels, 3, 1, 0)

    assert_exact_cover(parts, len(digit_labels), 3)
    # Label-sorted thirds: each client sees about a third of the classes.
    assert max(len(np.unique(digit_labels[part])) for part in parts) <= 5


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: iid(5, 6, 0), "num_clients: expected 1..5"),
        (lambda: iid(5, 0, 0), "num_clients: expected an int >= 1, got 0"),
        (
            lambda: dirichlet(np.arange(5), 2, 0.0, 0),
            "alpha: expected a finite number > 0, got 0.0",
        ),
        (lambda: dirichlet(np.arange(5), 2, float("inf"), 0), "alpha: expected a finite"),
        (lambda: dirichlet(np.ones(5), 2, 1.0, 0), "labels: expected a 1-D array of int labels"),
        (lambda: shards(np.arange(5), 2, 0, 0), "shards_per_client: expected an int >= 1"),
        (lambda: shards(np.arange(5), 2, 3, 0), "use shards_per_client <= 2"),
    ],
)
def test_bad_arguments_name_the_argument_and_allowed_values(call: Any, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        call()
