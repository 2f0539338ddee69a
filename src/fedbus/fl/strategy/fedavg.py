"""FedAvg (McMahan et al., 2017): the global model is the average of the clients' models,
weighted by how many examples each trained on.

Aggregation streams: each reply is folded into running sums as it arrives, so a round holds one
accumulator the size of the model, whatever the number of clients. The sums are float64 while
they take at most ``WIDE_SUMS_BYTES`` (256 MiB: models up to 32M parameters); a larger model's
float32 (and narrower) arrays are summed in float32, as other FL frameworks sum every model,
so that the server holds two models' worth of memory rather than three.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedbus.fl.protocol import read_arrays, read_metrics, read_num_examples
from fedbus.fl.registry import register_strategy
from fedbus.fl.strategy.base import Strategy, WeightedMetrics
from fedbus.fl.updates import check_layout
from fedbus.message import ArrayRecord, RecordDict
from fedbus.message.spill import drop_resident

#: values folded at a time: the scratch stays 8 MB however large the model.
_FOLD_BLOCK = 1 << 20

#: The most memory float64 sums of a model may take; beyond it they follow the model's floats.
WIDE_SUMS_BYTES = 256 << 20

__all__ = ["WIDE_SUMS_BYTES", "FedAvg", "WeightedAverage"]


def sum_dtypes(arrays: dict[str, np.ndarray[Any, Any]]) -> dict[str, np.dtype[Any]]:
    """The dtype each array is summed in: float64, unless float64 sums of all the arrays would
    take more than ``WIDE_SUMS_BYTES``; then float32 for floats of 32 bits and less."""
    wide = np.dtype(np.float64)
    if sum(value.size for value in arrays.values()) * wide.itemsize <= WIDE_SUMS_BYTES:
        return {key: wide for key in arrays}
    return {
        key: np.dtype(np.float32) if value.dtype.kind == "f" and value.dtype.itemsize <= 4 else wide
        for key, value in arrays.items()
    }


class WeightedAverage:
    """Running ``sum(n_k * x_k) / sum(n_k)`` over named arrays, accumulated in float64 (in
    float32 for the float32 arrays of models over ``WIDE_SUMS_BYTES`` of float64 sums).

    The result keeps each array's dtype. Replies whose arrays differ in names or shapes from the
    first are refused with ``InvalidArgumentError``; replies with ``num_examples == 0`` count
    but weigh nothing. With no weight at all the result is ``fallback``.
    """

    __slots__ = ("_averaged", "_dtypes", "_fallback", "_metrics", "_scratch", "_sums", "_total")

    def __init__(self, fallback: ArrayRecord) -> None:
        self._fallback = fallback
        self._sums: dict[str, np.ndarray[Any, Any]] | None = None
        # n_k * x_k is computed into these, a block of rows at a time, not into fresh arrays:
        # no allocation per reply, at most _FOLD_BLOCK values whatever the model, and the same
        # arithmetic bit for bit (each element is folded alone)
        self._scratch: dict[str, np.ndarray[Any, Any]] = {}
        self._dtypes: dict[str, np.dtype[Any]] = {}
        self._total = 0
        self._metrics = WeightedMetrics()
        self._averaged: dict[str, np.ndarray[Any, Any]] | None = None

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
            self._sums = {}
            for key, wide in sum_dtypes(arrays).items():
                self._sums[key] = np.empty(arrays[key].shape, wide)
            for key, value in arrays.items():
                self._fold(key, self._sums[key], value, weight, first=True)
        else:
            for key, value in arrays.items():
                self._fold(key, self._sums[key], value, weight)
        self._total += weight

    def _fold(
        self,
        key: str,
        total: np.ndarray[Any, Any],
        value: np.ndarray[Any, Any],
        weight: int,
        *,
        first: bool = False,
    ) -> None:
        """``total += weight * value`` (``total = weight * value`` for the ``first`` reply) in
        ``total``'s dtype, through a scratch block of rows.

        A block read from a spilled reply is let go at once (``drop_resident``): folding a
        reply keeps one block of it in memory, not the reply.
        """
        if value.ndim == 0:
            product = np.multiply(value, weight, dtype=total.dtype)
            if first:
                total[...] = product
            else:
                total += product
            return
        rows = max(len(value), 1)
        if value.size > _FOLD_BLOCK:
            rows = max(1, _FOLD_BLOCK // (value.size // len(value)))
        product = self._scratch.get(key)
        shape = (rows, *value.shape[1:])
        if not first and (product is None or product.shape != shape):
            product = self._scratch[key] = np.empty(shape, total.dtype)
        for start in range(0, len(value), rows):
            stop = min(start + rows, len(value))
            part = value[start:stop]
            if first:
                np.multiply(part, weight, out=total[start:stop], dtype=total.dtype)
            else:
                assert product is not None
                block = product[: stop - start]
                np.multiply(part, weight, out=block, dtype=total.dtype)
                total[start:stop] += block
            drop_resident(part)

    def result(self) -> tuple[ArrayRecord, dict[str, float]]:
        """The weighted average and the weighted train metrics."""
        if self._sums is None:
            return self._fallback, self._metrics.result()
        if self._averaged is None:  # the sums are divided in place (no float64 copy), once
            self._averaged = {
                key: np.divide(total, self._total, out=total).astype(self._dtypes[key], copy=False)
                for key, total in self._sums.items()
            }
            self._scratch.clear()
        return ArrayRecord(self._averaged), self._metrics.result()


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
