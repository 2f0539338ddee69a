"""The standard FL flow's message types and the record names their content uses.

========  ==========================================  ==========================================
type      server -> client                            client -> server (reply)
========  ==========================================  ==========================================
join      (client -> server) ``{}``                   ``{}`` acknowledgement
train     ``arrays`` (global model), ``config``        ``arrays`` (local model), ``metrics``
evaluate  ``arrays``, ``config``                       ``metrics`` (loss, num_examples, accuracy)
finish    ``{}``: the client stops                    (none)
========  ==========================================  ==========================================

``metrics`` always carries ``num_examples`` (int), the weight of the client in aggregation.
"""

from __future__ import annotations

from typing import Final, TypeVar

from fedbus.errors import InvalidArgumentError
from fedbus.message import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

__all__ = [
    "ARRAYS",
    "CONFIG",
    "EVALUATE",
    "FINISH",
    "JOIN",
    "METRICS",
    "TRAIN",
    "model_content",
    "read_arrays",
    "read_metrics",
    "read_num_examples",
]

JOIN: Final = "join"
TRAIN: Final = "train"
EVALUATE: Final = "evaluate"
FINISH: Final = "finish"

ARRAYS: Final = "arrays"
CONFIG: Final = "config"
METRICS: Final = "metrics"


def model_content(arrays: ArrayRecord, config: ConfigRecord) -> RecordDict:
    """The content of a ``train`` or ``evaluate`` request: the model and its settings."""
    return RecordDict({ARRAYS: arrays, CONFIG: config})


_R = TypeVar("_R", ArrayRecord, MetricRecord)


def _read(content: RecordDict, name: str, kind: type[_R]) -> _R:
    record = content.get(name)
    if not isinstance(record, kind):
        raise InvalidArgumentError(
            f"expected a {kind.__name__} named {name!r} in the content, found {list(content)}"
        )
    return record


def read_arrays(content: RecordDict) -> ArrayRecord:
    """The ``arrays`` record of a content, or a clear error naming what is there instead."""
    return _read(content, ARRAYS, ArrayRecord)


def read_metrics(content: RecordDict) -> MetricRecord:
    """The ``metrics`` record of a content, or a clear error."""
    return _read(content, METRICS, MetricRecord)


def read_num_examples(content: RecordDict) -> int:
    """``metrics.num_examples`` of a reply: an int >= 0, the client's aggregation weight."""
    value = read_metrics(content).get("num_examples")
    if not isinstance(value, int) or value < 0:
        raise InvalidArgumentError(f"metrics.num_examples must be an int >= 0, got {value!r}")
    return value
