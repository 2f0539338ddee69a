"""FedAvg (McMahan et al., 2017): the global model is the average of the clients' models,
weighted by how many examples each trained on.

Aggregation streams: each reply is folded into float64 running sums as it arrives, so a round
holds one accumulator the size of the model, whatever the number of clients.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedbus.fl.protocol import read_arrays, read_metrics, read_num_examples
from fedbus.fl.registry import register_strategy
from fedbus.fl.strategy.base import Strategy, WeightedMetrics
from fedbus.fl.updates import check_layout
from fedbus.message import ArrayRecord, RecordDict

__all__ = ["FedAvg", "WeightedAverage"]


class WeightedAverage:
    """Running ``sum(n_k * x_k) / sum(n_k)`` over named arrays, accumulated in float64.

    The result keeps each array's dtype. Replies whose arrays differ in names or shapes from the
    first are refused with ``InvalidArgumentError``; replies with ``num_examples == 0`` count
    but weigh nothing. With no weight at all the result is ``fallback``.
    """

    __slots__ = ("_dtypes", "_fallback", "_metrics", "_scratch", "_sums", "_total")

    def __init__(self, fallback: ArrayRecord) -> None:
        self._fallback = fallback
        self._sums: dict[str, np.ndarray[Any, Any]] | None = None
        # n_k * x_k is computed into these, not into fresh arrays: two allocations fewer per
        # array per reply, and the same float64 arithmetic bit for bit
        self._scratch: dict[str, np.ndarray[Any, Any]] = {}
        self._dtypes: dict[str, np.dtype[Any]] = {}
        self._total = 0
        self._metrics = WeightedMetrics()

    def add(self, node_id: int, content: RecordDict) -> None:
        """Fold one client's reply into the running sums."""
        arrays = read_arrays(content).to_numpy_dict()
        weight = read_num_examples(content)
        reference = self._sums if self._sums is not None else self._fallback.to_numpy_dict()
        check_layout(node_id, arrays, reference)
        self._metrics.add(read_metrics(content), weight)
        if weight == 0:
            return
        if self._sums is None:
            self._dtypes = {key: value.dtype for key, value in arrays.items()}
            self._sums = {key: value.astype(np.float64) * weight for key, value in arrays.items()}
        else:
            scratch = self._scratch
            for key, value in arrays.items():
                product = scratch.get(key)
                if product is None:
                    product = scratch[key] = np.empty(value.shape, np.float64)
                np.multiply(value, weight, out=product, dtype=np.float64)
                self._sums[key] += product
        self._total += weight

    def result(self) -> tuple[ArrayRecord, dict[str, float]]:
        """The weighted average and the weighted train metrics."""
        if self._sums is None:
            return self._fallback, self._metrics.result()
        # np.asarray: a 0-d sum divided gives a NumPy scalar, not an array
        averaged = {
            key: np.asarray(total / self._total).astype(self._dtypes[key])
            for key, total in self._sums.items()
        }
        return ArrayRecord(averaged), self._metrics.result()


class FedAvg(Strategy):
    """Federated averaging, weighted by ``num_examples``.

    >>> strategy = FedAvg()
    >>> strategy.name
    'fedavg'
    """

    name = "fedavg"
    aggregates_by_sum = True

    def start_aggregation(self, server_round: int, arrays: ArrayRecord) -> WeightedAverage:
        """A streaming weighted average; the current model is kept if nobody trained."""
        return WeightedAverage(arrays)


register_strategy("fedavg", FedAvg)
