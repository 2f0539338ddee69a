"""A client's update next to the model: does it fit, and what did it change?

Every rule that works on updates needs one of two checks: a reply must carry exactly the
model's arrays (``check_layout``), or the arrays a client sends must exist in the model with the
same shapes (``model_delta``, which then returns the change in float64). They live here once,
with the check every server makes before any rule sees an update: no NaN, no infinity
(``check_finite``).

>>> import numpy as np
>>> model_delta({"w": np.array([1.5, 2.0])}, {"w": np.array([1.0, 1.0])})
{'w': array([0.5, 1. ])}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from fedbus.errors import InvalidArgumentError
from fedbus.message import ArrayRecord

__all__ = ["check_finite", "check_layout", "model_delta"]

Arrays = Mapping[str, np.ndarray[Any, Any]]


# bfloat16 travels as its 16-bit patterns: all exponent bits set is an infinity or a NaN
_BFLOAT16_EXPONENT = np.uint16(0x7F80)


def check_finite(node_id: int, update: ArrayRecord) -> None:
    """Raise ``InvalidArgumentError`` unless every value of ``update`` is finite.

    Integer arrays always are. One pass over each float array, without copies: the server
    runs it on every update.

    >>> check_finite(3, ArrayRecord({"w": np.array([1.0, np.nan])}))
    Traceback (most recent call last):
    ...
    fedbus.errors.InvalidArgumentError: the update of node 3 has non-finite values in 'w'
    """
    for name, array in update.items():
        values = array.stored
        kind = values.dtype.kind
        if kind in "fc":
            finite = bool(np.isfinite(values).all())
        elif array.dtype == "bfloat16":
            finite = not bool(np.any((values & _BFLOAT16_EXPONENT) == _BFLOAT16_EXPONENT))
        else:
            continue
        if not finite:
            raise InvalidArgumentError(
                f"the update of node {node_id} has non-finite values in {name!r}"
            )


def check_layout(node_id: int, arrays: Arrays, model: Arrays) -> None:
    """Raise ``InvalidArgumentError`` unless ``arrays`` has exactly ``model``'s names and shapes."""
    if arrays.keys() != model.keys() or any(
        arrays[name].shape != model[name].shape for name in arrays
    ):
        got = {name: value.shape for name, value in arrays.items()}
        want = {name: value.shape for name, value in model.items()}
        raise InvalidArgumentError(
            f"node {node_id} replied with arrays {got}; the model has {want}"
        )


def model_delta(update: Arrays, base: Arrays) -> dict[str, np.ndarray[Any, np.dtype[np.float64]]]:
    """``update - base`` in float64 for each array of ``update`` (a subset of the model's, as
    FedBN's clients send); ``InvalidArgumentError`` for an array the model lacks or has in
    another shape."""
    delta = {}
    for name, value in update.items():
        if name not in base:
            raise InvalidArgumentError(f"the update has an array {name!r} the model lacks")
        if value.shape != base[name].shape:
            raise InvalidArgumentError(
                f"the update's {name!r} has shape {value.shape}; the model's has {base[name].shape}"
            )
        delta[name] = value.astype(np.float64) - base[name]
    return delta
