"""Argument checks shared by the partitioners; each error names the argument and what it takes."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fedbus.errors import InvalidArgumentError

IndexArray = NDArray[np.int64]


def check_labels(values: ArrayLike, name: str = "labels", what: str = "int labels") -> IndexArray:
    """``values`` as a non-empty 1-D ``int64`` array (labels, or client ids with ``what``)."""
    array = np.asarray(values)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise InvalidArgumentError(
            f"{name}: expected a 1-D array of {what}, got shape {array.shape} "
            f"and dtype {array.dtype}"
        )
    if len(array) == 0:
        raise InvalidArgumentError(f"{name}: expected at least one sample, got none")
    result: IndexArray = array.astype(np.int64, copy=False)
    return result


def check_positive(name: str, value: object) -> float:
    """``value`` as a finite float ``> 0`` (a concentration or an exponent)."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise InvalidArgumentError(f"{name}: expected a number > 0, got {value!r}")
    if not value > 0 or not math.isfinite(value):
        raise InvalidArgumentError(f"{name}: expected a finite number > 0, got {value!r}")
    return float(value)


def check_ratio(name: str, value: object) -> float:
    """``value`` as a finite float ``>= 1`` (largest size over smallest)."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise InvalidArgumentError(f"{name}: expected a number >= 1, got {value!r}")
    if not value >= 1 or not math.isfinite(value):
        raise InvalidArgumentError(f"{name}: expected a finite number >= 1, got {value!r}")
    return float(value)


def check_num_clients(num_clients: int, num_samples: int) -> None:
    """``num_clients`` is an int in ``1 .. num_samples``: every client gets a sample."""
    check_int("num_clients", num_clients, 1)
    if num_clients > num_samples:
        raise InvalidArgumentError(
            f"num_clients: expected 1..{num_samples} (one sample per client at least), "
            f"got {num_clients}"
        )


def check_int(name: str, value: object, minimum: int) -> None:
    """``value`` is an int (not a bool) ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise InvalidArgumentError(f"{name}: expected an int >= {minimum}, got {value!r}")
    if value < minimum:
        raise InvalidArgumentError(f"{name}: expected an int >= {minimum}, got {value}")
