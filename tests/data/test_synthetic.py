"""SyntheticDataset: lazy, deterministic per client, and heterogeneous as alpha and beta say."""

from __future__ import annotations

import tracemalloc
from typing import Any

import numpy as np
import pytest

from fedbus.data import SyntheticDataset
from fedbus.data import synthetic as synthetic_module
from fedbus.errors import InvalidArgumentError


def test_a_hundred_thousand_clients_cost_nothing_until_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    generated: list[int] = []
    original = SyntheticDataset._distribution

    def counting(self: SyntheticDataset, index: int) -> Any:
        generated.append(index)
        return original(self, index)

    monkeypatch.setattr(synthetic_module.SyntheticDataset, "_distribution", counting)
    tracemalloc.start()
    data = SyntheticDataset(100_000, alpha=1.0, beta=1.0, seed=0)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    assert peak < 100_000  # bytes: nothing per client is allocated
    assert generated == []
    data.client(99_999)
    data.client(12)
    assert generated == [99_999, 12]


def test_client_data_is_deterministic_and_independent_of_other_clients() -> None:
    data = SyntheticDataset(1000, 1.0, 1.0, seed=3)
    first = data.client(7)
    data.client(8)

    again = data.client(7)
    elsewhere = SyntheticDataset(10, 1.0, 1.0, seed=3).client(7)
    other_seed = SyntheticDataset(1000, 1.0, 1.0, seed=4).client(7)

    for local in (again, elsewhere):
        np.testing.assert_array_equal(local.x_train, first.x_train)
        np.testing.assert_array_equal(local.y_test, first.y_test)
    assert not np.array_equal(other_seed.x_train, first.x_train)


@pytest.mark.parametrize(("alpha", "beta"), [(0.0, 0.0), (1.0, 1.0)])
def test_shapes_types_and_labels(alpha: float, beta: float) -> None:
    data = SyntheticDataset(20, alpha, beta, seed=0)

    local = data.client(5)

    assert local.x_train.shape == (51, 60)
    assert local.x_test.shape == (13, 60)
    assert local.x_train.dtype == np.float32
    assert local.y_train.dtype == np.int64
    assert local.y_train.min() >= 0
    assert local.y_train.max() < 10


def test_beta_shifts_each_clients_inputs() -> None:
    def spread_of_client_means(beta: float) -> float:
        data = SyntheticDataset(200, 0.0, beta, seed=1)
        return float(np.std([data.client(i).x_train.mean() for i in range(200)]))

    # beta = 1 shifts all 60 input means of a client by one N(0, 1) draw: spread about 1.
    # beta = 0 leaves only the per-feature N(0, 1) means: spread about 1 / sqrt(60) = 0.13.
    heterogeneous, homogeneous = spread_of_client_means(1.0), spread_of_client_means(0.0)
    assert heterogeneous > 0.8
    assert homogeneous < 0.25


def test_labels_follow_each_clients_model() -> None:
    data = SyntheticDataset(5, 1.0, 1.0, seed=0)
    local = data.client(2)
    distribution = data._distribution(2)

    logits = local.x_train.astype(np.float64) @ distribution.weight + distribution.bias

    np.testing.assert_array_equal(logits.argmax(axis=1), local.y_train)


def test_lognormal_sizes_vary_and_respect_bounds() -> None:
    data = SyntheticDataset(
        300, 1.0, 1.0, samples_per_client=50, size_sigma=1.0, max_samples_per_client=400
    )

    sizes = np.array([data.client_size(i) for i in range(300)])
    local = data.client(int(sizes.argmax()))

    assert sizes.min() >= 2
    assert sizes.max() == 400
    assert 40 <= np.median(sizes) <= 60
    assert local.num_train + local.num_test == 400


def test_central_test_set_comes_from_fixed_clients_and_is_fresh() -> None:
    data = SyntheticDataset(1000, 1.0, 1.0, seed=0, test_clients=4, test_samples_per_client=25)

    x, y = data.test_set()

    assert x.shape == (100, 60)
    assert y.shape == (100,)
    assert data.test_set()[0] is x
    first_client = data.client(0)
    assert not np.isin(x[:25, 0], first_client.x_train[:, 0]).any()
    distribution = data._distribution(0)
    np.testing.assert_array_equal(
        (x[:25] @ distribution.weight + distribution.bias).argmax(1), y[:25]
    )


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(InvalidArgumentError, match=r"beta: expected a finite number >= 0"):
        SyntheticDataset(10, 1.0, -0.5)
    with pytest.raises(InvalidArgumentError, match=r"num_clients: expected an int >= 1, got 0"):
        SyntheticDataset(0, 1.0, 1.0)
    with pytest.raises(InvalidArgumentError, match=r"client_index: expected 0..9, got -1"):
        SyntheticDataset(10, 1.0, 1.0).client(-1)
