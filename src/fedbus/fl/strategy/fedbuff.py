"""FedBuff (Nguyen et al., 2022, "Federated Learning with Buffered Asynchronous Aggregation").

Clients train asynchronously; the server buffers K updates and then steps
``x <- x + server_lr * mean_i(s(tau_i) * (x_i - x_base_i))``: each update is the change a
client made to the model version it was sent, discounted by its staleness ``tau_i``, and the
buffer's changes are averaged uniformly (every update counts the same, as in the paper).

In fedbus the buffer and the discount belong to ``AsyncServer``: with the goal trigger it
aggregates every K updates, and the default ``Strategy.stale_update`` turns each update into
``x + s(tau) * (x_i - x_base)`` before this strategy's aggregator sees it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedbus.fl.protocol import read_arrays, read_metrics, read_num_examples
from fedbus.fl.registry import register_strategy, server_lr_option
from fedbus.fl.strategy.base import Strategy, WeightedMetrics, check_parameter
from fedbus.fl.updates import check_layout, model_delta
from fedbus.message import ArrayRecord, RecordDict

__all__ = ["BufferedStep", "FedBuff"]


class BufferedStep:
    """FedBuff's aggregator: the uniform mean of the buffered changes, times ``server_lr``.

    Train metrics are averaged weighted by ``num_examples``. With no update at all the result
    is the current model.
    """

    __slots__ = ("_count", "_current", "_metrics", "_server_lr", "_sums")

    def __init__(self, current: ArrayRecord, server_lr: float) -> None:
        self._current = current.to_numpy_dict()
        self._server_lr = server_lr
        self._sums = {key: np.zeros(value.shape) for key, value in self._current.items()}
        self._count = 0
        self._metrics = WeightedMetrics()

    def add(self, node_id: int, content: RecordDict) -> None:
        """Fold one (staleness-discounted) update into the buffer."""
        arrays = read_arrays(content).to_numpy_dict()
        check_layout(node_id, arrays, self._current)
        self._metrics.add(read_metrics(content), read_num_examples(content))
        for key, change in model_delta(arrays, self._current).items():
            self._sums[key] += change
        self._count += 1

    def result(self) -> tuple[ArrayRecord, dict[str, float]]:
        """``current + server_lr * mean change`` and the weighted train metrics."""
        if self._count == 0:
            return ArrayRecord(self._current), self._metrics.result()
        scale = self._server_lr / self._count
        stepped: dict[str, np.ndarray[Any, Any]] = {
            key: np.asarray(value + scale * self._sums[key]).astype(value.dtype)
            for key, value in self._current.items()
        }
        return ArrayRecord(stepped), self._metrics.result()


class FedBuff(Strategy):
    """Buffered asynchronous aggregation; run it with ``AsyncServer`` (goal trigger = K).

    Parameters
    ----------
    server_lr : float
        The server's learning rate (> 0); 1 applies the mean change as it is.

    Examples
    --------
    >>> FedBuff().name, FedBuff().asynchronous
    ('fedbuff', True)
    """

    name = "fedbuff"
    asynchronous = True

    def __init__(self, server_lr: float = 1.0) -> None:
        self.server_lr = check_parameter(self, "server_lr", server_lr, "> 0", lambda x: x > 0)

    def start_aggregation(self, server_round: int, arrays: ArrayRecord) -> BufferedStep:
        """An empty buffer over the current model."""
        return BufferedStep(arrays, self.server_lr)


register_strategy("fedbuff", FedBuff, lambda settings: FedBuff(**server_lr_option(settings)))
