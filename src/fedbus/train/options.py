"""Checks of the options trainers and models take: learning rate, epochs, batch size, seeds,
sizes. Shared by the NumPy and PyTorch trainers and models, so both refuse the same values
with the same messages.

Examples
--------
>>> epochs({"epochs": 3}, default=1)
3
>>> batch_size({}, default=0) is None
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from fedbus.errors import ConfigError, InvalidArgumentError, InvalidTypeError

__all__ = ["batch_size", "epochs", "int_option", "learning_rate", "positive_int", "seed"]


def learning_rate(config: Mapping[str, Any], default: float) -> float:
    """``config["lr"]`` (or ``default``), checked to be a finite number > 0.

    Raises
    ------
    ConfigError
        For anything else.
    """
    value = config.get("lr", default)
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        raise ConfigError(f"'lr': expected a positive number, got {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"'lr': expected a positive number, got {value}")
    return float(value)


def epochs(config: Mapping[str, Any], default: int) -> int:
    """``config["epochs"]`` (or ``default``), checked to be an int >= 1.

    Raises
    ------
    ConfigError
        For anything else.
    """
    value = config.get("epochs", default)
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ConfigError(f"'epochs': expected an int >= 1, got {value!r}")
    return int(value)


def batch_size(config: Mapping[str, Any], default: int | None) -> int | None:
    """``config["batch_size"]`` (or ``default``): an int >= 1, or None for full batch (0 too).

    Raises
    ------
    ConfigError
        For anything else.
    """
    value = config.get("batch_size", default)
    if value is None or (not isinstance(value, bool) and value == 0):
        return None
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise ConfigError(
            f"'batch_size': expected an int >= 1, or 0 or None for full batch; got {value!r}"
        )
    return int(value)


def seed(name: str, value: object) -> int:
    """``value`` checked to be a non-negative int; ``name`` is how messages call it.

    Raises
    ------
    ConfigError
        For anything else.
    """
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise ConfigError(f"{name}: expected a non-negative int, got {value!r}")
    return int(value)


def int_option(options: Mapping[str, Any], key: str, default: int) -> int:
    """``options[key]`` (or ``default``), checked to be an int (not a bool).

    Raises
    ------
    ConfigError
        For anything else.
    """
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ConfigError(f"option {key!r}: expected int, got {type(value).__name__}")
    return int(value)


def positive_int(name: str, value: object, minimum: int = 1) -> int:
    """``value`` checked to be an int >= ``minimum``; ``name`` is how messages call it.

    Raises
    ------
    InvalidTypeError
        ``value`` is not an int (a bool is not one).
    InvalidArgumentError
        ``value`` is below ``minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise InvalidTypeError(f"{name}: expected int, got {type(value).__name__}")
    if value < minimum:
        raise InvalidArgumentError(f"{name}: expected an int >= {minimum}, got {value}")
    return int(value)
