"""Partitioners that decide which labels each client holds.

- ``iid``: no skew, a random permutation cut into near-equal parts.
- ``dirichlet``: for every class, the clients' shares are drawn from ``Dirichlet(alpha)``.
- ``shards``: label-sorted samples cut into shards, ``shards_per_client`` to each client
  (McMahan et al., 2017).
- ``pathological``: every client holds exactly ``classes_per_client`` labels, and every label is
  held by as many clients as the others, give or take one.

Examples
--------
>>> import numpy as np
>>> labels = np.repeat(np.arange(4), 6)
>>> parts = pathological(labels, num_clients=4, classes_per_client=2, rng=0)
>>> [len(np.unique(labels[part])) for part in parts]
[2, 2, 2, 2]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fedbus.data.partition._checks import (
    check_int,
    check_labels,
    check_num_clients,
    check_positive,
)
from fedbus.data.partition.base import IndexArray, NamedPartitioner, group_by_owner
from fedbus.errors import InvalidArgumentError

__all__ = ["NAMED", "dirichlet", "iid", "pathological", "shards"]

# Fresh Dirichlet draws tried before the shortfall is filled by moving samples between clients.
_DIRICHLET_ATTEMPTS = 10


def iid(num_samples: int, num_clients: int, rng: np.random.Generator | int) -> list[IndexArray]:
    """Shuffle ``0 .. num_samples - 1`` and cut it into ``num_clients`` near-equal parts.

    Parts differ in size by at most one sample.

    Raises
    ------
    InvalidArgumentError
        If ``num_clients`` is not in ``1 .. num_samples``.

    Examples
    --------
    >>> [len(part) for part in iid(10, num_clients=3, rng=0)]
    [4, 3, 3]
    """
    check_int("num_samples", num_samples, 1)
    check_num_clients(num_clients, num_samples)
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
    label_array = check_labels(labels)
    num_samples = len(label_array)
    check_num_clients(num_clients, num_samples)
    concentration = check_positive("alpha", alpha)
    check_int("min_size", min_size, 0)
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
    return group_by_owner(owner, num_clients)


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
    label_array = check_labels(labels)
    num_samples = len(label_array)
    check_num_clients(num_clients, num_samples)
    check_int("shards_per_client", shards_per_client, 1)
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


def pathological(
    labels: ArrayLike,
    num_clients: int,
    classes_per_client: int,
    rng: np.random.Generator | int,
) -> list[IndexArray]:
    """Give every client exactly ``classes_per_client`` distinct labels.

    Every label is held by ``num_clients * classes_per_client // num_labels`` clients, or one
    more: the labels with the most samples get the extra holders (ties broken by the seed).
    Clients then pick their labels in turn, each the ``classes_per_client`` labels with the
    most holders still to find (ties broken by the seed), which always completes and makes
    random pairings of labels. A label's samples are shuffled and split evenly (sizes differ by
    at most one) among the clients holding it; last, the clients are shuffled.

    Parameters
    ----------
    labels
        Int label of every sample.
    num_clients
        Number of parts.
    classes_per_client
        Distinct labels of each client, ``>= 1``.
    rng
        Generator or int seed.

    Raises
    ------
    InvalidArgumentError
        For a bad argument; when ``classes_per_client`` exceeds the number of distinct labels;
        when the slots are too few for every label to be used; or when a label would be split
        among more clients than it has samples (the message gives the numbers).

    Examples
    --------
    >>> labels = np.repeat(np.arange(10), 5)
    >>> parts = pathological(labels, num_clients=5, classes_per_client=2, rng=0)
    >>> [len(part) for part in parts]
    [10, 10, 10, 10, 10]
    """
    label_array = check_labels(labels)
    check_num_clients(num_clients, len(label_array))
    check_int("classes_per_client", classes_per_client, 1)
    classes, counts = np.unique(label_array, return_counts=True)
    _check_pathological(classes, counts, num_clients, classes_per_client)
    generator = np.random.default_rng(rng)
    num_classes = len(classes)
    holders = np.full(num_classes, num_clients * classes_per_client // num_classes)
    by_size = np.lexsort((generator.random(num_classes), -counts))
    holders[by_size[: num_clients * classes_per_client % num_classes]] += 1
    chosen = _deal_classes(holders, num_clients, classes_per_client, generator)
    # (client, class) pairs grouped by class, in client order: the holders of each class.
    pair_client = np.repeat(np.arange(num_clients), classes_per_client)
    holder_client = pair_client[np.argsort(chosen.ravel(), kind="stable")]
    first_holder = np.cumsum(holders) - holders
    # Samples in label order, each class shuffled; rank within its class picks the holder.
    shuffled = generator.permutation(len(label_array))
    by_label = shuffled[np.argsort(label_array[shuffled], kind="stable")]
    class_of = np.repeat(np.arange(num_classes), counts)
    rank = np.arange(len(label_array)) - np.repeat(np.cumsum(counts) - counts, counts)
    part = rank * holders[class_of] // counts[class_of]
    owner = np.empty(len(label_array), dtype=np.int64)
    owner[by_label] = holder_client[first_holder[class_of] + part]
    return group_by_owner(generator.permutation(num_clients)[owner], num_clients)


def _deal_classes(
    holders: IndexArray, num_clients: int, classes_per_client: int, rng: np.random.Generator
) -> IndexArray:
    """The classes of every client, shape ``(num_clients, classes_per_client)``.

    Each client takes the classes with the most holders still missing. Those counts never
    differ by more than one and sum to ``classes_per_client`` times the clients left, so the
    last client finds exactly ``classes_per_client`` classes with one missing holder.
    """
    missing = holders.astype(np.float64)
    chosen = np.empty((num_clients, classes_per_client), dtype=np.int64)
    for client in range(num_clients):
        # A random fraction below 1 only orders classes missing the same number of holders.
        key = missing + 0.5 * rng.random(len(missing))
        chosen[client] = np.argpartition(-key, classes_per_client - 1)[:classes_per_client]
        missing[chosen[client]] -= 1
    return chosen


def _check_pathological(
    classes: IndexArray, counts: NDArray[Any], num_clients: int, classes_per_client: int
) -> None:
    """Refuse what ``pathological`` cannot do, with the numbers that do not fit."""
    num_classes, num_slots = len(classes), num_clients * classes_per_client
    setting = f"pathological: {num_clients} clients x {classes_per_client} classes"
    if classes_per_client > num_classes:
        raise InvalidArgumentError(
            f"{setting}: classes_per_client {classes_per_client} exceeds the {num_classes} "
            f"distinct labels; use classes_per_client <= {num_classes}"
        )
    if num_slots < num_classes:
        raise InvalidArgumentError(
            f"{setting} = {num_slots} label slots cannot hold all {num_classes} labels; "
            f"use classes_per_client >= {-(-num_classes // num_clients)} or more clients"
        )
    base, extra = divmod(num_slots, num_classes)
    holders = np.full(num_classes, base, dtype=np.int64)
    # The extra holders go to the largest classes, so the smallest need only `base` samples;
    # how ties are broken does not matter here: tied classes have the same count.
    holders[np.argsort(-counts, kind="stable")[:extra]] += 1
    too_small = np.flatnonzero(holders > counts)
    if len(too_small):
        worst = too_small[np.argmin(counts[too_small])]
        raise InvalidArgumentError(
            f"{setting} need {holders[worst]} clients holding label {classes[worst]}, but it "
            f"has only {counts[worst]} samples; use fewer clients or a smaller "
            f"classes_per_client"
        )


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


NAMED: Mapping[str, NamedPartitioner] = {
    "iid": NamedPartitioner(lambda samples, n, options, rng: iid(len(samples.labels), n, rng)),
    "dirichlet": NamedPartitioner(
        lambda samples, n, options, rng: dirichlet(
            samples.labels, n, options["alpha"], rng, min_size=options.get("min_size", 1)
        ),
        options=("alpha",),
    ),
    "shards": NamedPartitioner(
        lambda samples, n, options, rng: shards(
            samples.labels, n, options["shards_per_client"], rng
        ),
        options=("shards_per_client",),
    ),
    "pathological": NamedPartitioner(
        lambda samples, n, options, rng: pathological(
            samples.labels, n, options["classes_per_client"], rng
        ),
        options=("classes_per_client",),
    ),
}
