"""The communication graph of SecAgg+: each client shares its secrets with ``degree`` neighbours.

SecAgg+ replaces SecAgg's complete graph by a random ``k``-regular one with ``k = O(log n)``:
a client's costs grow with ``log n`` instead of ``n``. The graph here is a seeded random
circulant: the clients in a shuffled order, each joined to the ``k / 2`` clients on either side
around the ring (and, for odd ``k``, to the one opposite). It is regular, symmetric and the same
for the same seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from fedbus.errors import InvalidArgumentError

__all__ = ["default_degree", "default_threshold", "neighbour_graph"]


def default_degree(num_clients: int) -> int:
    """``2 ceil(log2 n)`` neighbours, at least 4 and at most ``n - 1`` (all others)."""
    if num_clients < 2:
        raise InvalidArgumentError(f"a graph needs at least 2 clients, got {num_clients}")
    return min(num_clients - 1, max(4, 2 * math.ceil(math.log2(num_clients))))


def default_threshold(degree: int) -> int:
    """A majority of the neighbourhood: ``degree // 2 + 1`` shares rebuild a secret."""
    if degree < 1:
        raise InvalidArgumentError(f"degree must be >= 1, got {degree}")
    return degree // 2 + 1


def neighbour_graph(node_ids: Sequence[int], degree: int, seed: int) -> dict[int, frozenset[int]]:
    """A random ``degree``-regular undirected graph on ``node_ids``, reproducible from ``seed``.

    ``degree >= n - 1`` gives the complete graph. An odd degree on an odd number of clients has
    no regular graph: it is raised by one.
    """
    nodes = list(node_ids)
    count = len(nodes)
    if len(set(nodes)) != count:
        raise InvalidArgumentError("neighbour_graph: node ids must be distinct")
    if degree < 1:
        raise InvalidArgumentError(f"neighbour_graph: degree must be >= 1, got {degree}")
    if count - 1 <= degree:
        return {node: frozenset(n for n in nodes if n != node) for node in nodes}
    if degree % 2 and count % 2:
        degree += 1
    order = [nodes[int(i)] for i in np.random.default_rng(seed).permutation(count)]
    graph: dict[int, set[int]] = {node: set() for node in nodes}
    offsets = list(range(1, degree // 2 + 1)) + ([count // 2] if degree % 2 else [])
    for position, node in enumerate(order):
        for offset in offsets:
            peer = order[(position + offset) % count]
            graph[node].add(peer)
            graph[peer].add(node)
    return {node: frozenset(peers) for node, peers in graph.items()}
