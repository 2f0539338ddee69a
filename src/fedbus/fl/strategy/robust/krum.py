"""Krum and Multi-Krum (Blanchard et al., 2017, "Machine learning with adversaries: Byzantine
tolerant gradient descent").

With ``n`` updates of which at most ``f`` are malicious, each update is scored by the sum of its
squared distances to its ``n - f - 2`` nearest other updates. An honest update sits among the
other honest ones and scores low; an outlier scores high. Krum keeps the single lowest-scoring
update, Multi-Krum averages the ``m`` lowest. The guarantee needs ``n >= 2f + 3``.
"""

from __future__ import annotations

import logging

import numpy as np
from numpy.typing import NDArray

from fedbus.errors import InvalidArgumentError
from fedbus.fl.registry import register_strategy
from fedbus.fl.strategy.robust.collect import RobustStrategy, check_count
from fedbus.fl.strategy.robust.median import coordinate_median

__all__ = ["Krum", "MultiKrum", "krum_scores", "pairwise_squared_distances"]

logger = logging.getLogger("fedbus.strategy")


def pairwise_squared_distances(updates: NDArray[np.float64]) -> NDArray[np.float64]:
    """``(n, n)`` squared Euclidean distances between the rows of ``updates``, via the Gram matrix.

    Rounding may leave tiny negative values, which are clipped to 0. Updates are differences
    from the global model, near the origin, so ``|a|^2 + |b|^2 - 2 a.b`` loses little precision;
    for updates of small integers it is exact, and so are ties between scores.

    >>> import numpy as np
    >>> pairwise_squared_distances(np.array([[0.0, 0.0], [3.0, 4.0]]))
    array([[ 0., 25.],
           [25.,  0.]])
    """
    gram = updates @ updates.T
    norms = np.diag(gram)
    distances: NDArray[np.float64] = norms[:, None] + norms[None, :] - 2.0 * gram
    np.maximum(distances, 0.0, out=distances)
    np.fill_diagonal(distances, 0.0)
    return distances


def krum_scores(distances: NDArray[np.float64], num_malicious: int) -> NDArray[np.float64]:
    """Each update's Krum score: the sum of squared distances to its ``n - f - 2`` nearest others.

    ``distances`` is the ``(n, n)`` matrix of ``pairwise_squared_distances``. Below
    ``n = f + 3`` (Bulyan's last selections) the score uses the one nearest other update; a
    single update scores 0.

    >>> import numpy as np
    >>> points = np.array([[0.0], [1.0], [2.0], [10.0]])
    >>> krum_scores(pairwise_squared_distances(points), num_malicious=1)
    array([ 1.,  1.,  1., 64.])
    """
    count = len(distances)
    neighbours = min(max(count - num_malicious - 2, 1), count - 1)
    if neighbours < 1:
        return np.zeros(count)
    others = distances + np.diag(np.full(count, np.inf))  # never one's own neighbour
    nearest = np.partition(others, neighbours - 1, axis=1)[:, :neighbours]
    return np.asarray(nearest.sum(axis=1), dtype=np.float64)


def check_krum_round_size(owner: str, num_malicious: int, min_replies: int) -> None:
    """Raise unless rounds of ``min_replies`` replies satisfy ``n >= 2f + 3``."""
    needed = 2 * num_malicious + 3
    if min_replies >= needed:
        return
    largest = (min_replies - 3) // 2
    lower = (
        f"or lower num_malicious to {largest}"
        if largest >= 0
        else "or use Median, which works with any number of replies"
    )
    raise InvalidArgumentError(
        f"{owner} needs n >= 2f + 3 = {needed} replies per round for "
        f"num_malicious={num_malicious}, but a round may aggregate only "
        f"min_replies={min_replies}; raise min_replies (and clients_per_round) to {needed} "
        f"or more, {lower}"
    )


class MultiKrum(RobustStrategy):
    """Multi-Krum: the mean of the ``num_selected`` updates with the lowest Krum scores.

    Each client counts once whatever its ``num_examples``.

    Parameters
    ----------
    num_malicious
        ``f``, the most replies per round that may be malicious (an int >= 0).
    num_selected
        ``m``, how many updates to average (an int >= 1); default ``n - f``, every update the
        scores cannot rule out. It must be at most ``n - f``, so that all selected updates can be
        honest.

    Notes
    -----
    Rounds need ``n >= 2f + 3`` replies; ``check_round_size`` refuses a server whose
    ``min_replies`` is lower. A round aggregated with fewer anyway (the aggregator driven
    without a ``Server``, or a round that closed by timeout under a server that skipped the
    check) logs a warning and uses the coordinate-wise median instead. With fewer than
    ``num_selected + f`` replies, ``m`` is lowered to ``n - f`` with a warning.

    Examples
    --------
    >>> import numpy as np
    >>> updates = np.array([[0.0], [1.5], [2.0], [2.5], [100.0]])
    >>> MultiKrum(num_malicious=1, num_selected=3).combine(updates, np.ones(5, np.int64))
    array([2.])
    """

    name = "multikrum"

    def __init__(self, num_malicious: int, num_selected: int | None = None) -> None:
        owner = type(self).__name__
        self.num_malicious = check_count(owner, "num_malicious", num_malicious, 0)
        self.num_selected = (
            None if num_selected is None else check_count(owner, "num_selected", num_selected, 1)
        )

    def check_round_size(self, min_replies: int) -> None:
        """Refuse rounds smaller than ``2f + 3``, or too small to select ``num_selected``."""
        owner = type(self).__name__
        check_krum_round_size(owner, self.num_malicious, min_replies)
        most = min_replies - self.num_malicious
        if self.num_selected is not None and self.num_selected > most:
            raise InvalidArgumentError(
                f"{owner}: num_selected={self.num_selected} is more than n - f = {most} for "
                f"min_replies={min_replies} and num_malicious={self.num_malicious}, so a "
                f"malicious update would always be averaged; lower num_selected to {most} or "
                f"raise min_replies to {self.num_selected + self.num_malicious}"
            )

    def select(self, updates: NDArray[np.float64]) -> NDArray[np.intp]:
        """Indices of the selected rows of ``updates``, lowest Krum score first.

        Ties keep the earlier row. Needs ``len(updates) >= 2f + 3``.
        """
        count, malicious = len(updates), self.num_malicious
        wanted = count - malicious if self.num_selected is None else self.num_selected
        if wanted > count - malicious:
            logger.warning(
                "%s: %d replies leave n - f = %d updates to select, fewer than num_selected=%d; "
                "averaging %d",
                self.name,
                count,
                count - malicious,
                wanted,
                count - malicious,
            )
            wanted = count - malicious
        scores = krum_scores(pairwise_squared_distances(updates), malicious)
        return np.argsort(scores, kind="stable")[:wanted]

    def combine(
        self, updates: NDArray[np.float64], num_examples: NDArray[np.int64]
    ) -> NDArray[np.float64]:
        """The mean of the selected updates, or the median below ``2f + 3`` replies."""
        needed = 2 * self.num_malicious + 3
        if len(updates) < needed:
            logger.warning(
                "%s: %d replies, fewer than 2f + 3 = %d for num_malicious=%d; this round uses "
                "the coordinate-wise median instead",
                self.name,
                len(updates),
                needed,
                self.num_malicious,
            )
            return coordinate_median(updates)
        return np.asarray(updates[self.select(updates)].mean(axis=0), dtype=np.float64)


class Krum(MultiKrum):
    """Krum: the one update with the lowest Krum score becomes the round's update.

    Parameters
    ----------
    num_malicious
        ``f``, the most replies per round that may be malicious (an int >= 0).

    Notes
    -----
    Krum is Multi-Krum with ``num_selected=1``. Rounds need ``n >= 2f + 3`` replies;
    ``check_round_size`` refuses a server whose ``min_replies`` is lower, and a round
    aggregated with fewer anyway logs a warning and uses the coordinate-wise median instead.

    Examples
    --------
    >>> import numpy as np
    >>> updates = np.array([[0.0], [1.0], [1.5], [3.0], [100.0]])
    >>> Krum(num_malicious=1).combine(updates, np.ones(5, np.int64))
    array([1.])
    """

    name = "krum"

    def __init__(self, num_malicious: int) -> None:
        super().__init__(num_malicious, num_selected=1)


register_strategy("krum", Krum, lambda settings: Krum(settings["strategy.num_malicious"]))
register_strategy(
    "multikrum",
    MultiKrum,
    lambda settings: MultiKrum(
        settings["strategy.num_malicious"], settings["strategy.num_selected"] or None
    ),
)
