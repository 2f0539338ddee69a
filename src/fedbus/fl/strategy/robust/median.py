"""Coordinate-wise median (Yin et al., 2018, "Byzantine-robust distributed learning: towards
optimal statistical rates").

Every coordinate of the new update is the median of that coordinate over the clients' updates,
so fewer than half of the clients, however extreme their updates, cannot drag any coordinate
outside the range of the honest values.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from fedbus.fl.registry import register_strategy
from fedbus.fl.strategy.robust.collect import RobustStrategy

__all__ = ["Median", "coordinate_median"]


def coordinate_median(updates: NDArray[np.float64]) -> NDArray[np.float64]:
    """The median of each column of ``updates`` ``(n, d)``; the mean of the middle two for even n.

    >>> import numpy as np
    >>> coordinate_median(np.array([[1.0, 10.0], [2.0, -5.0], [100.0, 0.0]]))
    array([2., 0.])
    """
    return np.asarray(np.median(updates, axis=0), dtype=np.float64)


class Median(RobustStrategy):
    """Coordinate-wise median of the clients' updates, each client one vote.

    It works with any number of replies (one reply is taken as is, two are averaged) and
    tolerates fewer than half of them being arbitrary; it needs no estimate of how many are.

    Examples
    --------
    >>> import numpy as np
    >>> Median().combine(np.array([[0.0], [1.0], [50.0]]), np.array([10, 10, 10]))
    array([1.])
    """

    name = "median"

    def combine(
        self, updates: NDArray[np.float64], num_examples: NDArray[np.int64]
    ) -> NDArray[np.float64]:
        """The coordinate-wise median of ``updates`` (``num_examples`` is not used)."""
        return coordinate_median(updates)


register_strategy("median", Median)
