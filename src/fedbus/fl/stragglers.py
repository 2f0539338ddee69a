"""Emulated stragglers: the systems heterogeneity of the FedProx paper, for experiments.

Li et al. (MLSys 2020) compare FedAvg and FedProx on networks where some devices cannot finish
the requested local work in time. Each round, a share of the sampled clients is marked as
stragglers; a straggler either

- trains fewer local epochs, a number drawn uniformly from ``1 .. epochs - 1`` (FedProx
  aggregates such partial work), or
- is not asked to train at all (``drop=True``: FedAvg's answer in the paper, the round goes on
  with the others).

Who straggles and how much work it does come from ``(seed, round, attempt)`` alone, so a run
repeats exactly and a resumed run makes the same choices. This only changes the ``epochs`` of
the stragglers' train requests; the clients themselves need nothing.

Examples
--------
>>> plan = Stragglers(fraction=0.5, seed=0)
>>> plan.assign(server_round=1, attempt=0, node_ids=[11, 12, 13, 14], epochs=20)
{12: 16, 14: 13}
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedbus.errors import InvalidArgumentError

__all__ = ["Stragglers"]

# Separates this random stream from the others drawn from the federation's seed.
_STREAM = 0x5354


@dataclass(frozen=True, slots=True)
class Stragglers:
    """Which sampled clients straggle each round, and what they do.

    Parameters
    ----------
    fraction
        Share of each round's sampled clients that straggle, in ``[0, 1]``: with ``n`` sampled,
        ``n - round(n * (1 - fraction))`` of them.
    drop
        Stragglers get no train request (True) or train fewer epochs (False).
    seed
        Seed of the choice.
    """

    fraction: float
    drop: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        fraction = self.fraction
        if (
            isinstance(fraction, bool)
            or not isinstance(fraction, int | float)
            or not 0 <= fraction <= 1
        ):
            raise InvalidArgumentError(
                f"Stragglers: fraction: expected a number in [0, 1], got {fraction!r}"
            )
        if self.drop and fraction == 1:
            raise InvalidArgumentError(
                "Stragglers: dropping every sampled client (fraction 1 with drop) leaves no "
                "client to train; lower the fraction or let stragglers do partial work"
            )

    def count(self, num_sampled: int) -> int:
        """How many of ``num_sampled`` clients straggle."""
        return num_sampled - round(num_sampled * (1 - self.fraction))

    def active(self, num_sampled: int) -> int:
        """How many of ``num_sampled`` clients train in full (or at all, when dropping)."""
        return num_sampled - self.count(num_sampled)

    def assign(
        self, server_round: int, attempt: int, node_ids: Sequence[int], epochs: int
    ) -> dict[int, int]:
        """The stragglers among ``node_ids`` and the epochs each trains (0 when dropped).

        Parameters
        ----------
        server_round, attempt
            The round and its attempt (a retried round draws anew).
        node_ids
            The clients sampled for the round.
        epochs
            The local epochs of a full request; partial work needs at least 2.

        Raises
        ------
        InvalidArgumentError
            Partial work asked with ``epochs < 2`` (there is no partial epoch count).
        """
        count = self.count(len(node_ids))
        if count == 0:
            return {}
        if not self.drop and epochs < 2:
            raise InvalidArgumentError(
                f"Stragglers: partial work means 1 .. epochs - 1 local epochs, but epochs is "
                f"{epochs}; train at least 2 epochs or drop stragglers"
            )
        rng = np.random.default_rng([self.seed, _STREAM, server_round, attempt])
        chosen = sorted(int(i) for i in rng.choice(len(node_ids), size=count, replace=False))
        if self.drop:
            return {int(node_ids[i]): 0 for i in chosen}
        work = rng.integers(1, epochs, size=count)
        return {int(node_ids[i]): int(e) for i, e in zip(chosen, work, strict=True)}
