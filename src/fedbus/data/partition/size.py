"""Size-skewed partitioners: clients differ in how many samples they hold, not in labels.

Each client receives a uniformly random sample (without replacement) of its size, so every
client's labels follow the whole dataset's. The sizes come from

- ``power_law``: Pareto draws with tail exponent ``exponent`` (smaller: a heavier tail, a few
  very large clients);
- ``dirichlet_sizes``: shares ``~ Dirichlet(alpha)`` (smaller: more unequal);
- ``linear`` and ``exponential``: a fixed schedule from the smallest client to the largest,
  ``ratio`` times larger, in equal steps or equal factors (``linear_sizes``,
  ``exponential_sizes``); the seed shuffles which client gets which size.

Rounding: sizes are ``num_samples`` split in proportion to the clients' weights by the
largest-remainder method (each gets the floor of its exact share, and the samples left over go,
one each, to the largest fractional parts, ties to the earlier client). A client rounded to zero
gets one sample, taken from the largest clients (lowered to a common level). Sizes therefore
sum to ``num_samples`` exactly and are at least 1.

Examples
--------
>>> linear_sizes(100, num_clients=4, ratio=4.0).tolist()
[10, 20, 30, 40]
>>> exponential_sizes(150, num_clients=4, ratio=8.0).tolist()
[10, 20, 40, 80]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedbus.data.partition._checks import (
    check_int,
    check_num_clients,
    check_positive,
    check_ratio,
)
from fedbus.data.partition.base import IndexArray, NamedPartitioner

__all__ = [
    "NAMED",
    "dirichlet_sizes",
    "exponential",
    "exponential_sizes",
    "linear",
    "linear_sizes",
    "power_law",
    "sizes_from_weights",
    "split_by_sizes",
]


def power_law(
    num_samples: int, num_clients: int, exponent: float, rng: np.random.Generator | int
) -> list[IndexArray]:
    """Client sizes proportional to Pareto draws: ``P(size > s) ~ s ** -exponent``.

    A small ``exponent`` (0.5) gives a heavy tail, where one client may hold most samples; a
    large one (5) gives sizes within a few times of each other.

    Raises
    ------
    InvalidArgumentError
        For a bad argument, or more clients than samples.

    Examples
    --------
    >>> parts = power_law(1000, num_clients=10, exponent=1.0, rng=0)
    >>> sum(len(part) for part in parts), min(len(part) for part in parts) >= 1
    (1000, True)
    """
    check_int("num_samples", num_samples, 1)
    check_num_clients(num_clients, num_samples)
    shape = check_positive("exponent", exponent)
    generator = np.random.default_rng(rng)
    # A Pareto draw is exp(E / exponent) with E ~ Exp(1); kept in logs, as a small exponent
    # would overflow float64 (exp(710) is infinite), and scaled by the largest.
    logs = generator.standard_exponential(num_clients) / shape
    sizes = sizes_from_weights(num_samples, np.exp(logs - logs.max()))
    return split_by_sizes(sizes, generator)


def dirichlet_sizes(
    num_samples: int, num_clients: int, alpha: float, rng: np.random.Generator | int
) -> list[IndexArray]:
    """Client shares drawn from ``Dirichlet(alpha, ..., alpha)``.

    ``alpha = 1`` draws the shares uniformly from all possible ones; a smaller ``alpha`` gives
    a few large clients and many of one or a few samples, a larger one approaches equal sizes.

    Raises
    ------
    InvalidArgumentError
        For a bad argument, or more clients than samples.
    """
    check_int("num_samples", num_samples, 1)
    check_num_clients(num_clients, num_samples)
    concentration = check_positive("alpha", alpha)
    generator = np.random.default_rng(rng)
    shares = generator.dirichlet(np.full(num_clients, concentration))
    return split_by_sizes(sizes_from_weights(num_samples, shares), generator)


def linear(
    num_samples: int, num_clients: int, ratio: float, rng: np.random.Generator | int
) -> list[IndexArray]:
    """Sizes in equal steps from the smallest to ``ratio`` times it, dealt to shuffled clients.

    See ``linear_sizes`` for the schedule.
    """
    sizes = linear_sizes(num_samples, num_clients, ratio)
    generator = np.random.default_rng(rng)
    return split_by_sizes(sizes[generator.permutation(num_clients)], generator)


def exponential(
    num_samples: int, num_clients: int, ratio: float, rng: np.random.Generator | int
) -> list[IndexArray]:
    """Sizes in equal factors from the smallest to ``ratio`` times it, dealt to shuffled clients.

    See ``exponential_sizes`` for the schedule.
    """
    sizes = exponential_sizes(num_samples, num_clients, ratio)
    generator = np.random.default_rng(rng)
    return split_by_sizes(sizes[generator.permutation(num_clients)], generator)


def linear_sizes(num_samples: int, num_clients: int, ratio: float) -> IndexArray:
    """The schedule of ``linear``: sizes proportional to ``1, ..., ratio`` in equal steps.

    Client ``i`` of ``n`` weighs ``1 + (ratio - 1) * i / (n - 1)``; the sizes, in increasing
    order, sum to ``num_samples`` and the largest over the smallest is ``ratio`` up to rounding.
    """
    check_int("num_samples", num_samples, 1)
    check_num_clients(num_clients, num_samples)
    factor = check_ratio("ratio", ratio)
    steps = np.linspace(0.0, 1.0, num_clients) if num_clients > 1 else np.zeros(1)
    return sizes_from_weights(num_samples, 1.0 + (factor - 1.0) * steps)


def exponential_sizes(num_samples: int, num_clients: int, ratio: float) -> IndexArray:
    """The schedule of ``exponential``: sizes proportional to ``ratio ** (i / (n - 1))``.

    Each client is the same factor larger than the one before; the sizes, in increasing order,
    sum to ``num_samples`` and the largest over the smallest is ``ratio`` up to rounding.
    """
    check_int("num_samples", num_samples, 1)
    check_num_clients(num_clients, num_samples)
    factor = check_ratio("ratio", ratio)
    steps = np.linspace(0.0, 1.0, num_clients) if num_clients > 1 else np.zeros(1)
    return sizes_from_weights(num_samples, factor**steps)


def sizes_from_weights(num_samples: int, weights: NDArray[Any]) -> IndexArray:
    """Split ``num_samples`` in proportion to ``weights``: sizes ``>= 1`` summing to it.

    Largest remainders first (ties to the earlier client); then each client rounded to zero
    gets one sample from the largest clients, which are lowered to a common level. Weights
    must be finite and ``>= 0``, not all zero, and ``num_samples >= len(weights)``.

    Examples
    --------
    >>> sizes_from_weights(10, np.array([1.0, 1.0, 1.0])).tolist()
    [4, 3, 3]
    >>> sizes_from_weights(10, np.array([0.0, 1e-9, 1.0])).tolist()
    [1, 1, 8]
    """
    exact = num_samples * (weights / weights.sum())
    sizes: IndexArray = np.floor(exact).astype(np.int64)
    left_over = num_samples - int(sizes.sum())
    sizes[np.argsort(sizes - exact, kind="stable")[:left_over]] += 1
    deficit = int(np.sum(sizes == 0))
    if deficit:
        sizes[sizes == 0] = 1
        _lower_largest(sizes, deficit)
    return sizes


def _lower_largest(sizes: IndexArray, amount: int) -> None:
    """Take ``amount`` samples from the largest sizes, keeping every size ``>= 1``."""
    # The highest level whose excess covers `amount`: freed(level) falls as level rises.
    low, high = 1, int(sizes.max())
    while low < high:
        level = (low + high + 1) // 2
        if int(np.maximum(sizes - level, 0).sum()) >= amount:
            low = level
        else:
            high = level - 1
    above = sizes > low
    surplus = int((sizes[above] - low).sum()) - amount
    sizes[above] = low
    # Give back what was freed beyond `amount`, one each, to the last clients that were lowered
    # (the largest weights of a schedule), so an increasing schedule stays increasing.
    sizes[np.flatnonzero(above)[len(np.flatnonzero(above)) - surplus :]] += 1


def split_by_sizes(sizes: IndexArray, rng: np.random.Generator) -> list[IndexArray]:
    """Shuffle ``0 .. sum(sizes) - 1`` and cut it into sorted parts of ``sizes``."""
    permutation = rng.permutation(int(sizes.sum()))
    return [np.sort(part) for part in np.split(permutation, np.cumsum(sizes)[:-1])]


NAMED: Mapping[str, NamedPartitioner] = {
    "power_law": NamedPartitioner(
        lambda samples, n, options, rng: power_law(
            len(samples.labels), n, options["size_exponent"], rng
        ),
        options=("size_exponent",),
    ),
    "dirichlet_sizes": NamedPartitioner(
        lambda samples, n, options, rng: dirichlet_sizes(
            len(samples.labels), n, options["size_alpha"], rng
        ),
        options=("size_alpha",),
    ),
    "linear": NamedPartitioner(
        lambda samples, n, options, rng: linear(len(samples.labels), n, options["size_ratio"], rng),
        options=("size_ratio",),
    ),
    "exponential": NamedPartitioner(
        lambda samples, n, options, rng: exponential(
            len(samples.labels), n, options["size_ratio"], rng
        ),
        options=("size_ratio",),
    ),
}
