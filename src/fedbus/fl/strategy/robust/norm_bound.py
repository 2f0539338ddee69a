"""Norm bounding (Sun et al., 2019, "Can you really backdoor federated learning?").

Each client's update is scaled down to an L2 norm of at most ``max_norm``, then the updates are
averaged weighted by ``num_examples`` as in FedAvg. A boosted update can then move the model no
further than an honest one of the same size. (The paper's optional Gaussian noise, "weak
differential privacy", is not added here.)
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from fedbus.errors import InvalidArgumentError
from fedbus.fl.registry import register_strategy
from fedbus.fl.strategy.robust.collect import RobustStrategy

__all__ = ["NormBound", "clip_norms"]


def clip_norms(updates: NDArray[np.float64], max_norm: float) -> NDArray[np.float64]:
    """``updates`` with every row of L2 norm above ``max_norm`` scaled down to ``max_norm``.

    >>> import numpy as np
    >>> clip_norms(np.array([[3.0, 4.0], [0.3, 0.4]]), 1.0)
    array([[0.6, 0.8],
           [0.3, 0.4]])
    """
    norms = np.linalg.norm(updates, axis=1)
    factors = np.minimum(1.0, max_norm / np.maximum(norms, np.finfo(np.float64).tiny))
    return np.asarray(updates * factors[:, None], dtype=np.float64)


class NormBound(RobustStrategy):
    """Clip each update's norm to ``max_norm``, then average weighted by ``num_examples``.

    Parameters
    ----------
    max_norm
        ``c``, the largest L2 norm an update may have (a positive number), measured over all
        of the model's arrays together. Pick it near the norm of a typical honest update.

    Notes
    -----
    Unlike the other robust rules it weighs clients by their claimed ``num_examples``, so it
    bounds how far each client moves the model, not how much weight it claims. It works with
    any number of replies; replies with ``num_examples == 0`` weigh nothing, and with no weight
    at all the global model is kept, as FedAvg does.

    Examples
    --------
    >>> import numpy as np
    >>> updates = np.array([[30.0, 40.0], [0.0, 1.0]])
    >>> NormBound(max_norm=5.0).combine(updates, np.array([1, 3]))
    array([0.75, 1.75])
    """

    name = "norm_bound"

    def __init__(self, max_norm: float) -> None:
        if (
            isinstance(max_norm, bool)
            or not isinstance(max_norm, int | float)
            or not math.isfinite(max_norm)
            or max_norm <= 0
        ):
            raise InvalidArgumentError(
                f"NormBound: max_norm must be a finite number > 0, got {max_norm!r}; "
                "pick about the norm of an honest client's update"
            )
        self.max_norm = float(max_norm)

    def combine(
        self, updates: NDArray[np.float64], num_examples: NDArray[np.int64]
    ) -> NDArray[np.float64]:
        """The ``num_examples``-weighted mean of the clipped updates (zero if nothing weighs)."""
        total = int(num_examples.sum())
        if total == 0:
            return np.zeros(updates.shape[1])
        weights = num_examples.astype(np.float64) / total
        return np.asarray(weights @ clip_norms(updates, self.max_norm), dtype=np.float64)


register_strategy(
    "norm_bound", NormBound, lambda settings: NormBound(settings["strategy.max_norm"])
)
