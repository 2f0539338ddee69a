"""Seeded partitioners: split sample indices among clients.

Every partitioner returns a list with one sorted ``int64`` index array per client; each index
``0 .. num_samples - 1`` appears in exactly one of them (``natural`` with fewer clients than ids
leaves some out), every client gets at least one (``dirichlet`` with ``min_size=0`` excepted),
and the same generator state (or the same int seed) gives the same partition. A partition that
cannot be made is refused with an ``InvalidArgumentError`` that gives the numbers that do not fit.

By labels (``fedbus.data.partition.label``):

- ``iid``: a random permutation cut into near-equal parts.
- ``dirichlet``: label skew. For every class, the shares of the clients are drawn from
  ``Dirichlet(alpha)``; a small ``alpha`` (0.1) gives most clients a few classes, a large one
  (100) approaches iid.
- ``shards``: pathological label skew (McMahan et al., 2017). Samples sorted by label are cut into
  ``num_clients * shards_per_client`` shards and every client receives ``shards_per_client``.
- ``pathological``: every client holds exactly ``classes_per_client`` labels, every label held
  by about as many clients.

By a client column (``fedbus.data.partition.column``): ``natural``, one client per id of a client
column.

By size, labels iid (``fedbus.data.partition.size``): ``power_law``, ``dirichlet_sizes``,
``linear`` and ``exponential``.

``PARTITIONERS`` maps the names ``data.partition`` accepts to ``NamedPartitioner`` entries; each
family module contributes its own (its ``NAMED`` table), so a new partitioner is one function
and one entry in one file.

Examples
--------
>>> import numpy as np
>>> parts = iid(10, num_clients=3, rng=0)
>>> [len(part) for part in parts]
[4, 3, 3]
>>> sorted(np.concatenate(parts).tolist()) == list(range(10))
True
>>> list(PARTITIONERS)[:3]
['iid', 'dirichlet', 'shards']
"""

from __future__ import annotations

from collections.abc import Mapping

from fedbus.data.partition import column, label, size
from fedbus.data.partition.base import IndexArray, NamedPartitioner, Samples
from fedbus.data.partition.column import natural
from fedbus.data.partition.label import dirichlet, iid, pathological, shards
from fedbus.data.partition.size import (
    dirichlet_sizes,
    exponential,
    exponential_sizes,
    linear,
    linear_sizes,
    power_law,
)

__all__ = [
    "PARTITIONERS",
    "IndexArray",
    "NamedPartitioner",
    "Samples",
    "dirichlet",
    "dirichlet_sizes",
    "exponential",
    "exponential_sizes",
    "iid",
    "linear",
    "linear_sizes",
    "natural",
    "pathological",
    "power_law",
    "shards",
]

#: Every partition ``data.partition`` may name, in the order documentation lists them.
PARTITIONERS: Mapping[str, NamedPartitioner] = {**label.NAMED, **column.NAMED, **size.NAMED}
