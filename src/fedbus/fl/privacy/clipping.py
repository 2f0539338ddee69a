"""Clipping and noising a model update: the arithmetic every privacy mode shares.

An *update* is the change a client made, ``trained - received``, over all the arrays it sends.
Clipping scales the whole update (all arrays together) so that its L2 norm is at most the
clipping norm; it never changes the update's direction. Arithmetic is float64.

>>> import numpy as np
>>> base = {"w": np.zeros(2)}
>>> clipped, unclipped = clip_update({"w": np.array([3.0, 4.0])}, base, 1.0)
>>> clipped["w"], unclipped
(array([0.6, 0.8]), False)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from fedbus.errors import InvalidArgumentError
from fedbus.fl.updates import model_delta

__all__ = ["add_noise", "clip_update", "update_norm"]

Arrays = Mapping[str, np.ndarray[Any, Any]]


def update_norm(arrays: Arrays, base: Arrays) -> float:
    """The L2 norm of ``arrays - base`` over all the arrays ``arrays`` has."""
    return math.sqrt(sum(float(np.sum(d * d)) for d in model_delta(arrays, base).values()))


def clip_update(
    arrays: Arrays, base: Arrays, clipping_norm: float
) -> tuple[dict[str, np.ndarray[Any, Any]], bool]:
    """``base + (arrays - base) * min(1, clipping_norm / norm)`` in float64, and whether the
    update was within the norm already (the bit adaptive clipping counts)."""
    if not (math.isfinite(clipping_norm) and clipping_norm > 0):
        raise InvalidArgumentError(
            f"clipping_norm must be a finite number > 0, got {clipping_norm}"
        )
    delta = model_delta(arrays, base)
    norm = math.sqrt(sum(float(np.sum(d * d)) for d in delta.values()))
    scale = 1.0 if norm <= clipping_norm else clipping_norm / norm
    clipped = {name: base[name] + scale * d for name, d in delta.items()}
    return clipped, norm <= clipping_norm


def add_noise(
    arrays: Arrays, std: float, rng: np.random.Generator
) -> dict[str, np.ndarray[Any, Any]]:
    """Each value plus independent Gaussian noise of standard deviation ``std`` (float64)."""
    if not (math.isfinite(std) and std >= 0):
        raise InvalidArgumentError(f"noise std must be a finite number >= 0, got {std}")
    return {
        name: value.astype(np.float64) + rng.normal(0.0, std, size=value.shape)
        for name, value in arrays.items()
    }
