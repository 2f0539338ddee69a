"""Fixed-point quantisation modulo ``2**bits``, so that masked sums add up exactly.

Each value is clipped to ``[-clip_range, clip_range]`` and mapped to an integer in
``[0, levels]``. ``levels`` is the largest number for which the sum of ``num_clients`` such
integers stays below ``2**bits``: the sum of the quantised inputs never wraps, and the server,
who only learns the sum modulo ``2**bits``, learns it exactly. With deterministic rounding the
float sum recovered is off by at most ``count * step / 2`` in each coordinate.

>>> import numpy as np
>>> quantizer = Quantizer(clip_range=1.0, bits=32, num_clients=10)
>>> total = quantizer.quantize(np.array([0.25])) + quantizer.quantize(np.array([-0.5]))
>>> float(abs(quantizer.dequantize_sum(total, 2)[0] + 0.25)) <= quantizer.step
True
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fedbus.errors import InvalidArgumentError

__all__ = ["Quantizer"]


class Quantizer:
    """Quantise updates for secure aggregation of up to ``num_clients`` inputs.

    Parameters
    ----------
    clip_range
        Values are clipped to ``[-clip_range, clip_range]`` first.
    bits
        Arithmetic is modulo ``2**bits`` (1 to 62).
    num_clients
        The most inputs that will be summed.
    """

    def __init__(self, clip_range: float, bits: int, num_clients: int) -> None:
        if not (math.isfinite(clip_range) and clip_range > 0):
            raise InvalidArgumentError(f"Quantizer: clip_range must be > 0, got {clip_range}")
        if not 1 <= bits <= 62:
            raise InvalidArgumentError(f"Quantizer: bits must be in 1..62, got {bits}")
        if num_clients < 1:
            raise InvalidArgumentError(f"Quantizer: num_clients must be >= 1, got {num_clients}")
        self.clip_range, self.bits, self.num_clients = clip_range, bits, num_clients
        self.levels = ((1 << bits) - 1) // num_clients
        if self.levels < 2:
            raise InvalidArgumentError(
                f"Quantizer: {bits} bits leave no room to sum {num_clients} inputs; use at least "
                f"{(2 * num_clients).bit_length() + 1} bits"
            )

    @property
    def step(self) -> float:
        """The distance between two neighbouring quantised values."""
        return 2 * self.clip_range / self.levels

    def quantize(
        self, values: np.ndarray[Any, Any], rng: np.random.Generator | None = None
    ) -> np.ndarray[Any, np.dtype[np.uint64]]:
        """``values`` clipped and mapped to ``[0, levels]``; rounded to nearest, or stochastically
        (unbiased) when ``rng`` is given."""
        clipped = np.clip(np.asarray(values, dtype=np.float64), -self.clip_range, self.clip_range)
        scaled = (clipped + self.clip_range) / self.step
        if rng is None:
            rounded = np.rint(scaled)
        else:
            floor = np.floor(scaled)
            rounded = floor + (rng.random(scaled.shape) < scaled - floor)
        # clipped in integers: above 2**53 levels, a float clip to `levels` could round up past
        # it, and a sum of such values could wrap modulo 2**bits
        return np.minimum(np.maximum(rounded, 0).astype(np.uint64), np.uint64(self.levels))

    def dequantize_sum(
        self, total: np.ndarray[Any, Any], count: int
    ) -> np.ndarray[Any, np.dtype[np.float64]]:
        """The float sum of ``count`` inputs whose quantised values sum (mod ``2**bits``) to
        ``total``."""
        if not 1 <= count <= self.num_clients:
            raise InvalidArgumentError(
                f"dequantize_sum: count must be in 1..{self.num_clients}, got {count}"
            )
        modular = np.asarray(total, dtype=np.uint64) & np.uint64((1 << self.bits) - 1)
        return modular.astype(np.float64) * self.step - count * self.clip_range
