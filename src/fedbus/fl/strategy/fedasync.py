"""FedAsync (Xie et al., 2019, "Asynchronous Federated Optimization").

Every update is mixed into the global model as it arrives:
``x <- (1 - alpha_t) x + alpha_t x_new`` with ``alpha_t = alpha * s(t - tau)``, where ``x_new``
is the client's model trained from version ``tau`` and ``s`` the staleness discount.

In fedbus the discount belongs to ``AsyncServer``; this strategy's ``stale_update`` mixes the
client's model itself (not its change) by the discount, ``(1 - s) x + s x_new``, and its
aggregator moves the model ``alpha`` of the way to the (example-weighted) mean of what it got.
With the goal trigger at 1 that is exactly the rule above; a larger goal mixes the mean of
several updates at once.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedbus.errors import InvalidArgumentError
from fedbus.fl.registry import register_strategy
from fedbus.fl.strategy.base import Strategy, check_parameter
from fedbus.fl.strategy.fedavg import WeightedAverage
from fedbus.message import ArrayRecord, RecordDict

__all__ = ["FedAsync", "Mixing"]


class Mixing:
    """FedAsync's aggregator: ``(1 - alpha) x + alpha * mean``, the mean weighted by examples."""

    __slots__ = ("_alpha", "_average", "_current")

    def __init__(self, current: ArrayRecord, alpha: float) -> None:
        self._current, self._alpha = current, alpha
        self._average = WeightedAverage(current)

    def add(self, node_id: int, content: RecordDict) -> None:
        """Fold one (already discounted) client model into the mean."""
        self._average.add(node_id, content)

    def result(self) -> tuple[ArrayRecord, dict[str, float]]:
        """The mixed model and the weighted train metrics."""
        average, metrics = self._average.result()
        return _mix(self._current, average, self._alpha), metrics


def _mix(current: ArrayRecord, target: ArrayRecord, share: float) -> ArrayRecord:
    """``(1 - share) current + share target`` per array, in float64, keeping dtypes."""
    targets = target.to_numpy_dict()
    model = current.to_numpy_dict()
    if targets.keys() != model.keys() or any(targets[k].shape != v.shape for k, v in model.items()):
        got = {key: value.shape for key, value in targets.items()}
        want = {key: value.shape for key, value in model.items()}
        raise InvalidArgumentError(f"an update with arrays {got} cannot mix into the model {want}")
    mixed: dict[str, np.ndarray[Any, Any]] = {}
    for key, value in model.items():
        blend = (1.0 - share) * value.astype(np.float64) + share * targets[key]
        mixed[key] = np.asarray(blend).astype(value.dtype)
    return ArrayRecord(mixed)


class FedAsync(Strategy):
    """Asynchronous mixing; run it with ``AsyncServer`` (goal trigger 1 for the paper's rule).

    Parameters
    ----------
    alpha : float
        The mixing weight of a fresh update, in (0, 1].

    Examples
    --------
    >>> FedAsync(alpha=0.6).alpha
    0.6
    """

    name = "fedasync"
    asynchronous = True

    def __init__(self, alpha: float = 0.5) -> None:
        self.alpha = check_parameter(self, "alpha", alpha, "in (0, 1]", lambda x: 0 < x <= 1)

    def stale_update(
        self, current: ArrayRecord, base: ArrayRecord, update: ArrayRecord, weight: float
    ) -> ArrayRecord:
        """The client's model mixed into the current one by the staleness weight."""
        if weight == 1.0:
            return update
        return _mix(current, update, weight)

    def start_aggregation(self, server_round: int, arrays: ArrayRecord) -> Mixing:
        """A mixing step from the current model."""
        return Mixing(arrays, self.alpha)


register_strategy(
    "fedasync", FedAsync, lambda settings: FedAsync(settings["strategy.fedasync_alpha"])
)
