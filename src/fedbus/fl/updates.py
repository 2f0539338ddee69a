"""A client's update next to the model: does it fit, and what did it change?

Every rule that works on updates needs one of two checks: a reply must carry exactly the
model's arrays (``check_layout``), or the arrays a client sends must exist in the model with the
same shapes (``model_delta``, which then returns the change in float64). They live here once.

>>> import numpy as np
>>> model_delta({"w": np.array([1.5, 2.0])}, {"w": np.array([1.0, 1.0])})
{'w': array([0.5, 1. ])}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from fedbus.errors import InvalidArgumentError

__all__ = ["check_layout", "model_delta"]

Arrays = Mapping[str, np.ndarray[Any, Any]]


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
