"""Coordinate-wise trimmed mean (Yin et al., 2018, "Byzantine-robust distributed learning:
towards optimal statistical rates").

For every coordinate, the ``k = floor(beta * n)`` largest and ``k`` smallest of the ``n`` client
values are dropped and the rest averaged. As long as at most ``k`` clients are malicious, every
extreme value they send on a coordinate is either dropped or lies between honest values.
"""

from __future__ import annotations

import logging
import math

import numpy as np
from numpy.typing import NDArray

from fedbus.errors import InvalidArgumentError
from fedbus.fl.registry import register_strategy
from fedbus.fl.strategy.robust.collect import RobustStrategy
from fedbus.fl.strategy.robust.median import coordinate_median

__all__ = ["TrimmedMean", "trim_count", "trimmed_mean"]

logger = logging.getLogger("fedbus.strategy")

# beta * n computed in floating point may land just below an integer (0.29 * 100 = 28.99...).
_ROUNDING_SLACK = 1e-9


def trim_count(trim_fraction: float, count: int) -> int:
    """Values dropped at each end of a coordinate: ``floor(trim_fraction * count)``.

    >>> trim_count(0.2, 30), trim_count(0.29, 100), trim_count(0.1, 9)
    (6, 29, 0)
    """
    return math.floor(trim_fraction * count + _ROUNDING_SLACK)


def trimmed_mean(updates: NDArray[np.float64], trimmed: int) -> NDArray[np.float64]:
    """Mean of each column of ``updates`` ``(n, d)`` without its ``trimmed`` largest and smallest.

    >>> import numpy as np
    >>> trimmed_mean(np.array([[1.0, -9.0], [2.0, 0.0], [4.0, 1.0], [50.0, 2.0]]), 1)
    array([3. , 0.5])
    """
    count = len(updates)
    if not 0 <= 2 * trimmed < count:
        raise InvalidArgumentError(
            f"trimmed_mean: trimming {trimmed} values at each end of {count} leaves none; "
            f"trim at most {(count - 1) // 2}"
        )
    ordered = np.sort(updates, axis=0)
    return np.asarray(ordered[trimmed : count - trimmed].mean(axis=0), dtype=np.float64)


class TrimmedMean(RobustStrategy):
    """Coordinate-wise trimmed mean of the clients' updates, each client one vote.

    Parameters
    ----------
    trim_fraction
        ``beta`` in ``[0, 0.5)``: the fraction of values dropped at *each* end of every
        coordinate, ``floor(beta * n)`` of ``n``. At least one value always remains. Choose it
        at least as large as the fraction of clients that may be malicious; ``0`` is the plain
        unweighted mean.

    Notes
    -----
    ``check_round_size`` refuses rounds of ``min_replies`` replies in which a positive
    ``trim_fraction`` would trim nothing (``beta * n < 1``). A round aggregated with so few
    replies anyway logs a warning and uses the coordinate-wise median instead, the limit of the
    trimmed mean as the trimming grows.

    Examples
    --------
    >>> import numpy as np
    >>> updates = np.array([[0.0], [1.0], [2.0], [3.0], [-80.0]])
    >>> TrimmedMean(trim_fraction=0.2).combine(updates, np.ones(5, np.int64))
    array([1.])
    """

    name = "trimmed_mean"

    def __init__(self, trim_fraction: float) -> None:
        beta = trim_fraction
        if (
            isinstance(beta, bool)
            or not isinstance(beta, int | float)
            or not math.isfinite(beta)
            or not 0 <= beta < 0.5
        ):
            raise InvalidArgumentError(
                f"TrimmedMean: trim_fraction must be a number in [0, 0.5), got {beta!r}; "
                "it is the share dropped at each end, so 0.5 would drop everything"
            )
        self.trim_fraction = float(beta)

    def check_round_size(self, min_replies: int) -> None:
        """Refuse rounds so small that a positive ``trim_fraction`` trims nothing."""
        beta = self.trim_fraction
        if beta == 0 or trim_count(beta, min_replies) >= 1:
            return
        needed = math.ceil(1 / beta - _ROUNDING_SLACK)
        smallest = 1 / min_replies
        lower = (
            f"or raise trim_fraction to at least {smallest:.3g}"
            if smallest < 0.5
            else "or use Median"
        )
        raise InvalidArgumentError(
            f"TrimmedMean(trim_fraction={beta}) trims floor({beta} * {min_replies}) = 0 values "
            f"per end in rounds of min_replies={min_replies}, so one malicious client moves "
            f"the mean; raise min_replies (and clients_per_round) to at least {needed}, {lower}"
        )

    def combine(
        self, updates: NDArray[np.float64], num_examples: NDArray[np.int64]
    ) -> NDArray[np.float64]:
        """The trimmed mean of ``updates``, or their median when the fraction trims nothing."""
        trimmed = trim_count(self.trim_fraction, len(updates))
        if trimmed == 0 and self.trim_fraction > 0:
            logger.warning(
                "trimmed_mean: %d replies are too few to trim a fraction %g at each end; this "
                "round uses the coordinate-wise median instead",
                len(updates),
                self.trim_fraction,
            )
            return coordinate_median(updates)
        return trimmed_mean(updates, trimmed)


register_strategy(
    "trimmed_mean", TrimmedMean, lambda settings: TrimmedMean(settings["strategy.trim_fraction"])
)
