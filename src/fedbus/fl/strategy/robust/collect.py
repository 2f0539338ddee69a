"""What every robust rule shares: keep each reply's update, then combine them all at once.

Robust rules compare clients with one another (distances, per-coordinate ranks), so unlike
FedAvg they cannot stream: ``UpdateCollector`` keeps one float64 vector per reply, the client's
arrays minus the round's global arrays flattened in the global model's key order. When the
round closes, the strategy's ``combine`` turns the ``(n, d)`` matrix of updates into one update
vector, which is added to the global model and cast back to each array's dtype.

A new rule is a ``RobustStrategy`` subclass that fills in ``combine`` (and, where its guarantee
needs enough replies, ``check_round_size``).
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedbus.errors import InvalidArgumentError
from fedbus.fl.protocol import read_arrays, read_metrics, read_num_examples
from fedbus.fl.strategy.base import Strategy, WeightedMetrics
from fedbus.message import ArrayRecord, RecordDict

__all__ = ["ModelLayout", "RobustStrategy", "UpdateCollector", "UpdateRule", "check_count"]

#: ``(updates (n, d), num_examples (n,)) -> update (d,)``: how a rule combines a round.
UpdateRule = Callable[[NDArray[np.float64], NDArray[np.int64]], NDArray[np.float64]]

logger = logging.getLogger("fedbus.strategy")


@dataclass(frozen=True, slots=True)
class ModelLayout:
    """Names, shapes and dtypes of a model's arrays, to flatten them to one vector and back.

    Examples
    --------
    >>> import numpy as np
    >>> layout = ModelLayout.of({"w": np.ones((2, 2), np.float32), "b": np.zeros(3)})
    >>> layout.size
    7
    >>> layout.unflatten(np.arange(7.0))["w"]
    array([[0., 1.],
           [2., 3.]], dtype=float32)
    """

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[np.dtype[Any], ...]

    @classmethod
    def of(cls, arrays: dict[str, np.ndarray[Any, Any]]) -> ModelLayout:
        """The layout of ``arrays``, in their key order."""
        return cls(
            tuple(arrays),
            tuple(value.shape for value in arrays.values()),
            tuple(value.dtype for value in arrays.values()),
        )

    @property
    def size(self) -> int:
        """Number of scalars in the model: the length of a flattened vector."""
        return sum(int(np.prod(shape)) for shape in self.shapes)

    def describe(self) -> dict[str, tuple[int, ...]]:
        """``{name: shape}``, for error messages."""
        return dict(zip(self.names, self.shapes, strict=True))

    def flatten(self, arrays: dict[str, np.ndarray[Any, Any]]) -> NDArray[np.float64]:
        """One float64 vector holding ``arrays`` in this layout's order."""
        if not self.names:
            return np.zeros(0)
        return np.concatenate([np.asarray(arrays[name], np.float64).ravel() for name in self.names])

    def unflatten(self, vector: NDArray[np.float64]) -> dict[str, np.ndarray[Any, Any]]:
        """Named arrays of this layout's shapes and dtypes cut from ``vector``."""
        arrays: dict[str, np.ndarray[Any, Any]] = {}
        start = 0
        for name, shape, dtype in zip(self.names, self.shapes, self.dtypes, strict=True):
            count = int(np.prod(shape))
            arrays[name] = vector[start : start + count].reshape(shape).astype(dtype)
            start += count
        return arrays


class UpdateCollector:
    """Keeps every reply's update and combines them with ``rule`` when the round closes.

    An update is the client's arrays minus ``global_arrays``, in float64, flattened in the
    global model's key order. Replies whose arrays differ in names or shapes from the global
    model, or hold NaN or infinity, are refused with ``InvalidArgumentError`` (the server then
    counts the client as failed). Train metrics are averaged weighted by ``num_examples``.

    The result is ``global + rule(updates, num_examples)`` cast back to each global array's
    dtype, so a client cannot change the model's dtype. With no reply it is ``global_arrays``.

    Examples
    --------
    >>> import numpy as np
    >>> from fedbus.message import MetricRecord
    >>> collector = UpdateCollector(
    ...     ArrayRecord({"w": np.zeros(2)}), lambda updates, weights: updates.max(axis=0)
    ... )
    >>> for node_id, w in [(1, [1.0, 5.0]), (2, [3.0, -1.0])]:
    ...     reply = RecordDict(
    ...         {"arrays": ArrayRecord({"w": np.array(w)}),
    ...          "metrics": MetricRecord({"num_examples": 10})}
    ...     )
    ...     collector.add(node_id, reply)
    >>> collector.result()[0].to_numpy_dict()["w"]
    array([3., 5.])
    """

    __slots__ = (
        "_global",
        "_global_vector",
        "_layout",
        "_metrics",
        "_rule",
        "_updates",
        "_weights",
    )

    def __init__(self, global_arrays: ArrayRecord, rule: UpdateRule) -> None:
        self._global = global_arrays
        arrays = global_arrays.to_numpy_dict()
        self._layout = ModelLayout.of(arrays)
        self._global_vector = self._layout.flatten(arrays)
        self._rule = rule
        self._updates: list[NDArray[np.float64]] = []
        self._weights: list[int] = []
        self._metrics = WeightedMetrics()

    @property
    def num_replies(self) -> int:
        """Replies kept so far."""
        return len(self._updates)

    def add(self, node_id: int, content: RecordDict) -> None:
        """Keep one client's update; refuse a reply of the wrong layout or with NaN/infinity."""
        arrays = read_arrays(content).to_numpy_dict()
        weight = read_num_examples(content)
        metrics = read_metrics(content)
        if arrays.keys() != set(self._layout.names) or any(
            arrays[name].shape != shape
            for name, shape in zip(self._layout.names, self._layout.shapes, strict=True)
        ):
            got = {key: value.shape for key, value in arrays.items()}
            raise InvalidArgumentError(
                f"node {node_id} replied with arrays {got}; the model has {self._layout.describe()}"
            )
        update = self._layout.flatten(arrays) - self._global_vector
        if not np.isfinite(update).all():
            raise InvalidArgumentError(
                f"node {node_id} replied with NaN or infinite values; every value must be finite"
            )
        self._metrics.add(metrics, weight)
        self._updates.append(update)
        self._weights.append(weight)

    def result(self) -> tuple[ArrayRecord, dict[str, float]]:
        """The global model moved by the combined update, and the weighted train metrics."""
        if not self._updates:
            return self._global, self._metrics.result()
        updates = np.stack(self._updates)
        weights = np.asarray(self._weights, dtype=np.int64)
        combined = self._rule(updates, weights)
        arrays = self._layout.unflatten(self._global_vector + combined)
        return ArrayRecord(arrays), self._metrics.result()


class RobustStrategy(Strategy):
    """A strategy whose round combines all updates at once with ``combine``.

    Subclasses set ``name``, validate their parameters in ``__init__``, and implement
    ``combine``; ``start_aggregation`` is written here once.
    """

    def start_aggregation(self, server_round: int, arrays: ArrayRecord) -> UpdateCollector:
        """Collect this round's updates; the global model is kept if nobody replied."""
        return UpdateCollector(arrays, self.combine)

    @abstractmethod
    def combine(
        self, updates: NDArray[np.float64], num_examples: NDArray[np.int64]
    ) -> NDArray[np.float64]:
        """One update vector ``(d,)`` from the round's updates ``(n, d)``, ``n >= 1``.

        ``num_examples[k]`` is reply ``k``'s claimed training set size; rules that give each
        client one vote ignore it, since an attacker may claim any number.
        """


def check_count(owner: str, name: str, value: object, minimum: int) -> int:
    """``value`` as an int >= ``minimum``, or an ``InvalidArgumentError`` naming ``owner``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise InvalidArgumentError(f"{owner}: {name} must be an int >= {minimum}, got {value!r}")
    return int(value)
