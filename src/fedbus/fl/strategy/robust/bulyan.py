"""Bulyan (El Mhamdi et al., 2018, "The hidden vulnerability of distributed learning in
Byzantium").

Krum alone may pick an update that is close to the honest ones in distance yet far off in a
single coordinate. Bulyan first selects ``theta = n - 2f`` updates by applying Krum repeatedly
(each pick leaves the pool), then, on every coordinate, averages the ``beta = theta - 2f``
selected values closest to that coordinate's median. The guarantee needs ``n >= 4f + 3``.
"""

from __future__ import annotations

import logging

import numpy as np
from numpy.typing import NDArray

from fedbus.errors import InvalidArgumentError
from fedbus.fl.registry import register_strategy
from fedbus.fl.strategy.robust.collect import RobustStrategy, check_count
from fedbus.fl.strategy.robust.krum import krum_scores, pairwise_squared_distances
from fedbus.fl.strategy.robust.median import coordinate_median

__all__ = ["Bulyan", "bulyan_select", "closest_to_median_mean"]

logger = logging.getLogger("fedbus.strategy")


def bulyan_select(updates: NDArray[np.float64], num_malicious: int) -> NDArray[np.intp]:
    """Rows chosen by repeated Krum, in the order chosen: ``n - 2f`` of the ``n`` rows.

    Distances are computed once; each round of Krum scores the rows still in the pool.

    >>> import numpy as np
    >>> bulyan_select(np.array([[0.0], [1.0], [2.0], [3.0], [9.0], [40.0], [-50.0]]), 1)
    array([3, 2, 1, 0, 4])
    """
    distances = pairwise_squared_distances(updates)
    pool = np.arange(len(updates))
    chosen: list[int] = []
    for _ in range(len(updates) - 2 * num_malicious):
        scores = krum_scores(distances[np.ix_(pool, pool)], num_malicious)
        best = int(np.argmin(scores))  # ties: the earliest row
        chosen.append(int(pool[best]))
        pool = np.delete(pool, best)
    return np.asarray(chosen, dtype=np.intp)


def closest_to_median_mean(selected: NDArray[np.float64], kept: int) -> NDArray[np.float64]:
    """Per column of ``selected``, the mean of the ``kept`` values closest to the column median.

    Equal distances keep the earlier row.

    >>> import numpy as np
    >>> closest_to_median_mean(np.array([[0.0, 5.0], [1.0, 6.0], [2.0, 7.0], [30.0, -9.0]]), 2)
    array([1.5, 5.5])
    """
    deviation = np.abs(selected - coordinate_median(selected))
    nearest = np.argsort(deviation, axis=0, kind="stable")[:kept]
    values = np.take_along_axis(selected, nearest, axis=0)
    return np.asarray(values.mean(axis=0), dtype=np.float64)


class Bulyan(RobustStrategy):
    """Bulyan: repeated Krum, then a coordinate-wise mean around the median; one vote per client.

    Parameters
    ----------
    num_malicious
        ``f``, the most replies per round that may be malicious (an int >= 0).

    Notes
    -----
    Rounds need ``n >= 4f + 3`` replies; ``check_round_size`` refuses a server whose
    ``min_replies`` is lower. A round aggregated with fewer anyway (the aggregator driven
    without a ``Server``, or a server that skipped the check) logs a warning and uses the
    coordinate-wise median instead. With ``f = 0`` Bulyan is the plain unweighted mean.

    Examples
    --------
    >>> import numpy as np
    >>> updates = np.array([[0.0], [1.0], [2.0], [3.0], [9.0], [40.0], [-50.0]])
    >>> Bulyan(num_malicious=1).combine(updates, np.ones(7, np.int64))
    array([2.])
    """

    name = "bulyan"

    def __init__(self, num_malicious: int) -> None:
        self.num_malicious = check_count("Bulyan", "num_malicious", num_malicious, 0)

    def check_round_size(self, min_replies: int) -> None:
        """Refuse rounds smaller than ``4f + 3``."""
        needed = 4 * self.num_malicious + 3
        if min_replies >= needed:
            return
        largest = (min_replies - 3) // 4
        lower = (
            f"or lower num_malicious to {largest}"
            if largest >= 0
            else "or use Median, which works with any number of replies"
        )
        raise InvalidArgumentError(
            f"Bulyan needs n >= 4f + 3 = {needed} replies per round for "
            f"num_malicious={self.num_malicious}, but a round may aggregate only "
            f"min_replies={min_replies}; raise min_replies (and clients_per_round) to {needed} "
            f"or more, {lower}"
        )

    def combine(
        self, updates: NDArray[np.float64], num_examples: NDArray[np.int64]
    ) -> NDArray[np.float64]:
        """Bulyan's update, or the coordinate-wise median below ``4f + 3`` replies."""
        malicious, count = self.num_malicious, len(updates)
        if count < 4 * malicious + 3:
            logger.warning(
                "bulyan: %d replies, fewer than 4f + 3 = %d for num_malicious=%d; this round "
                "uses the coordinate-wise median instead",
                count,
                4 * malicious + 3,
                malicious,
            )
            return coordinate_median(updates)
        selected = updates[bulyan_select(updates, malicious)]
        return closest_to_median_mean(selected, len(selected) - 2 * malicious)


register_strategy("bulyan", Bulyan, lambda settings: Bulyan(settings["strategy.num_malicious"]))
