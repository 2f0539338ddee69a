"""Seeded partitioners: split sample indices among clients.

Every partitioner returns a list with one sorted ``int64`` index array per client; each index
``0 .. num_samples - 1`` appears in exactly one of them, and the same generator state (or the
same int seed) gives the same partition.

- ``iid``: a random permutation cut into near-equal parts.
- ``dirichlet``: label skew. For every class, the shares of the clients are drawn from
  ``Dirichlet(alpha)``; a small ``alpha`` (0.1) gives most clients a few classes, a large one
  (100) approaches iid.
- ``shards``: pathological label skew (McMahan et al., 2017). Samples sorted by label are cut into
  ``num_clients * shards_per_client`` shards and every client receives ``shards_per_client``.

Examples
--------
>>> import numpy as np
>>> parts = iid(10, num_clients=3, rng=0)
>>> [len(part) for part in parts]
[4, 3, 3]
>>> sorted(np.concatenate(parts).tolist()) == list(range(10))
True
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fedbus.errors import InvalidArgumentError

__all__ = ["dirichlet", "iid", "shards"]

IndexArray = NDArray[np.int64]

# Fresh Dirichlet draws tried before the shortfall is filled by moving samples between clients.
_DIRICHLET_ATTEMPTS = 10


def iid(num_samples: int, num_clients: int, rng: np.random.Generator | int) -> list[IndexArray]:
    """Shuffle ``0 .. num_samples - 1`` and cut it into ``num_clients`` near-equal parts.

    Parts differ in size by at most one sample.

    Raises
    ------
    InvalidArgumentError
        If ``num_clients`` is not in ``1 .. num_samples``.
    """
    _check_int("num_samples", num_samples, 1)
    _check_num_clients(num_clients, num_samples)
    permutation = np.random.default_rng(rng).permutation(num_samples)
    return [np.sort(part) for part in np.array_split(permutation, num_clients)]


def dirichlet(
    labels: ArrayLike,
    num_clients: int,
    alpha: float,
    rng: np.random.Generator | int,
    min_size: int = 1,
) -> list[IndexArray]:
    """Label-skewed partition: each class is shared among clients in Dirichlet proportions.

    This is the common scheme of Hsu et al. (2019) and Li et al. (NIID-Bench, 2021): for every
    class ``k``, proportions ``p_k ~ Dirichlet(alpha, ..., alpha)`` split the class's shuffled
    samples among the clients; a client that already holds more than ``num_samples /
    num_clients`` samples gets no further share, which keeps sizes from diverging.

    Up to 10 draws are tried until every client has at least ``min_size`` samples; if none
    succeeds (likely with many clients and a small ``alpha``), the clients short of
    ``min_size`` receive samples taken at random from the surplus of the others.

    Parameters
    ----------
    labels
        Int label of every sample.
    num_clients
        Number of parts.
    alpha
        Concentration, ``> 0``: smaller means more skew.
    rng
        Generator or int seed.
    min_size
        Fewest samples a client may get, ``>= 0``.

    Raises
    ------
    InvalidArgumentError
        For a bad argument, or when ``num_clients * min_size`` exceeds the number of samples.
    """
    label_array = _check_labels(labels)
    num_samples = len(label_array)
    _check_num_clients(num_clients, num_samples)
    concentration = _check_alpha(alpha)
    _check_int("min_size", min_size, 0)
    if num_clients * min_size > num_samples:
        raise InvalidArgumentError(
            f"min_size: {num_clients} clients of at least {min_size} samples need "
            f"{num_clients * min_size} samples, but there are only {num_samples}; "
            f"use min_size <= {num_samples // num_clients}"
        )
    generator = np.random.default_rng(rng)
    for _ in range(_DIRICHLET_ATTEMPTS):
        owner = _dirichlet_owners(label_array, num_clients, concentration, generator)
        if np.bincount(owner, minlength=num_clients).min() >= min_size:
            break
    else:
        _fill_small_clients(owner, num_clients, min_size, generator)
    return _group_by_owner(owner, num_clients)


def shards(
    labels: ArrayLike,
    num_clients: int,
    shards_per_client: int,
    rng: np.random.Generator | int,
) -> list[IndexArray]:
    """Sort samples by label, cut them into shards and deal ``shards_per_client`` to each client.

    There are ``num_clients * shards_per_client`` shards. When there are at least as many shards
    as distinct labels, no shard crosses a label boundary: each class is cut into a number of
    shards proportional to its size, so a client holds at most ``shards_per_client`` labels.
    With fewer shards than labels, the label-sorted samples are cut into near-equal shards.

    Raises
    ------
    InvalidArgumentError
        For a bad argument, or more shards than samples.
    """
    label_array = _check_labels(labels)
    num_samples = len(label_array)
    _check_num_clients(num_clients, num_samples)
    _check_int("shards_per_client", shards_per_client, 1)
    num_shards = num_clients * shards_per_client
    if num_shards > num_samples:
        raise InvalidArgumentError(
            f"shards_per_client: {num_clients} clients x {shards_per_client} shards need at "
            f"least {num_shards} samples, but there are only {num_samples}; "
            f"use shards_per_client <= {num_samples // num_clients}"
        )
    generator = np.random.default_rng(rng)
    # Shuffle first so that the stable sort leaves samples of one class in random order.
    shuffled = generator.permutation(num_samples)
    by_label = shuffled[np.argsort(label_array[shuffled], kind="stable")]
    classes, class_counts = np.unique(label_array, return_counts=True)
    if num_shards >= len(classes):
        cuts = np.cumsum(class_counts)[:-1]
        per_class = _shards_per_class(class_counts, num_shards)
        shard_list = [
            shard
            for members, count in zip(np.split(by_label, cuts), per_class, strict=True)
            for shard in np.array_split(members, count)
        ]
    else:
        shard_list = np.array_split(by_label, num_shards)
    dealt = generator.permutation(num_shards).reshape(num_clients, shards_per_client)
    return [np.sort(np.concatenate([shard_list[s] for s in row])) for row in dealt]


def _dirichlet_owners(
    labels: IndexArray, num_clients: int, alpha: float, rng: np.random.Generator
) -> IndexArray:
    """One draw of the scheme: the client that owns each sample."""
    owner = np.empty(len(labels), dtype=np.int64)
    sizes = np.zeros(num_clients, dtype=np.int64)
    target = len(labels) / num_clients
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        shares = rng.dirichlet(np.full(num_clients, alpha))
        shares[sizes >= target] = 0.0
        total = shares.sum()
        # A draw can underflow to all zeros for tiny alpha: fall back to the open clients.
        shares = shares / total if total > 0 else (sizes < target) / np.sum(sizes < target)
        bounds = np.round(np.cumsum(shares) * len(members)).astype(np.int64)
        counts: IndexArray = np.diff(np.concatenate(([0], bounds)))
        counts[-1] += len(members) - counts.sum()
        owner[members] = np.repeat(np.arange(num_clients), counts)
        sizes += counts
    return owner


def _fill_small_clients(
    owner: IndexArray, num_clients: int, min_size: int, rng: np.random.Generator
) -> None:
    """Move random surplus samples (beyond ``min_size`` of their owner) to clients short of it."""
    sizes = np.bincount(owner, minlength=num_clients)
    shortfall = np.maximum(min_size - sizes, 0)
    # Rank every sample within its owner in random order; those ranked >= min_size can move.
    order = rng.permutation(len(owner))
    order = order[np.argsort(owner[order], kind="stable")]
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    rank = np.arange(len(owner)) - starts[owner[order]]
    movable = order[rank >= min_size]
    moved = rng.choice(movable, size=int(shortfall.sum()), replace=False)
    owner[moved] = np.repeat(np.arange(num_clients), shortfall)


def _group_by_owner(owner: IndexArray, num_clients: int) -> list[IndexArray]:
    order = np.argsort(owner, kind="stable")
    cuts = np.cumsum(np.bincount(owner, minlength=num_clients))[:-1]
    return [part.astype(np.int64) for part in np.split(order, cuts)]


def _shards_per_class(class_counts: NDArray[Any], num_shards: int) -> NDArray[np.int64]:
    """Shards per class, about proportional to class size, each in ``1 .. class size``."""
    counts = class_counts.astype(np.float64)
    proportional = np.floor(counts * num_shards / counts.sum())
    per_class: IndexArray = np.clip(proportional, 1, counts).astype(np.int64)
    # Floors and the lower clip leave the total off by at most the number of classes.
    while per_class.sum() < num_shards:
        # Give a shard to the class with the most samples per shard that can still be cut.
        samples_per_shard = np.where(per_class < counts, counts / per_class, -np.inf)
        per_class[np.argmax(samples_per_shard)] += 1
    while per_class.sum() > num_shards:
        # Take a shard from the class whose shards stay smallest without it.
        after_removal = np.where(per_class > 1, counts / np.maximum(per_class - 1, 1), np.inf)
        per_class[np.argmin(after_removal)] -= 1
    return per_class


def _check_labels(labels: ArrayLike) -> IndexArray:
    array = np.asarray(labels)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise InvalidArgumentError(
            f"labels: expected a 1-D array of int labels, got shape {array.shape} "
            f"and dtype {array.dtype}"
        )
    if len(array) == 0:
        raise InvalidArgumentError("labels: expected at least one sample, got none")
    result: IndexArray = array.astype(np.int64, copy=False)
    return result


def _check_alpha(alpha: object) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, int | float | np.integer | np.floating):
        raise InvalidArgumentError(f"alpha: expected a number > 0, got {alpha!r}")
    if not alpha > 0 or not math.isfinite(alpha):
        raise InvalidArgumentError(f"alpha: expected a finite number > 0, got {alpha!r}")
    return float(alpha)


def _check_num_clients(num_clients: int, num_samples: int) -> None:
    _check_int("num_clients", num_clients, 1)
    if num_clients > num_samples:
        raise InvalidArgumentError(
            f"num_clients: expected 1..{num_samples} (one sample per client at least), "
            f"got {num_clients}"
        )


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise InvalidArgumentError(f"{name}: expected an int >= {minimum}, got {value!r}")
    if value < minimum:
        raise InvalidArgumentError(f"{name}: expected an int >= {minimum}, got {value}")
