"""What a partitioner is called with when a configuration names it.

Each family module (``label``, ``column``, ``size``) ends with a ``NAMED`` table from the names
configurations use to a ``NamedPartitioner``; ``fedbus.data.partition.PARTITIONERS`` joins
them. A new partitioner is therefore a function and one entry, in one file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedbus.data.partition._checks import IndexArray

__all__ = ["IndexArray", "NamedPartitioner", "Samples", "group_by_owner"]


@dataclass(frozen=True, slots=True)
class Samples:
    """The columns of the samples to divide that a partitioner may read.

    Attributes
    ----------
    labels : numpy.ndarray
        Int label of every sample; its length is the number of samples.
    client_ids : numpy.ndarray or None
        The client each sample comes from (``natural``), when the data name one.
    """

    labels: IndexArray
    client_ids: IndexArray | None = None


#: ``split(samples, num_clients, options, rng)``: one sorted index array per client.
SplitFunction = Callable[[Samples, int, Mapping[str, Any], np.random.Generator], list[IndexArray]]


@dataclass(frozen=True, slots=True)
class NamedPartitioner:
    """A partitioner as ``data.partition`` names it.

    Attributes
    ----------
    split : callable
        ``split(samples, num_clients, options, rng)``; ``options`` maps the keyword options of
        ``PartitionedDataset.from_arrays`` (``alpha``, ``classes_per_client``, ...) to values.
    options : tuple of str
        The ``[data]`` keys it reads, named as in ``options``; a configured dataset passes
        them on (``fedbus.data.registry.partition_options``).
    """

    split: SplitFunction
    options: tuple[str, ...] = ()


def group_by_owner(owner: IndexArray, num_clients: int) -> list[IndexArray]:
    """The sorted indices of the samples each client owns (``owner[i]`` is sample i's client)."""
    order = np.argsort(owner, kind="stable")
    cuts = np.cumsum(np.bincount(owner, minlength=num_clients))[:-1]
    return [part.astype(np.int64) for part in np.split(order, cuts)]
