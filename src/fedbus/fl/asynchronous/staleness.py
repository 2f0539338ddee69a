"""Staleness: how much an update computed on an older model still counts.

An update trained on model version ``v`` that reaches the server when the global model is at
version ``v + s`` is ``s`` versions stale. Up to ``tolerance`` versions it is aggregated with a
weight ``discount(s)`` in (0, 1]; an older one is dropped (and counted). The discount functions
are those of FedAsync (Xie et al., 2019, "Asynchronous Federated Optimization"):

==============  ==============================================  ====================
``discount``    weight of an update ``s`` versions stale         parameters
==============  ==============================================  ====================
``constant``    ``1``                                           (none)
``polynomial``  ``(1 + s) ** -a``                               ``exponent`` = a
``hinge``       ``1`` if ``s <= b`` else ``1 / (a (s - b) + 1)``  ``exponent`` = a, ``hinge`` = b
==============  ==============================================  ====================

Examples
--------
>>> policy = Staleness(tolerance=4, discount="polynomial", exponent=0.5)
>>> policy.weight(0), policy.weight(3), policy.weight(5)
(1.0, 0.5, None)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from fedbus.errors import InvalidArgumentError

__all__ = ["DISCOUNTS", "Staleness"]

DISCOUNTS: Final = ("constant", "polynomial", "hinge")


@dataclass(frozen=True, slots=True)
class Staleness:
    """Which stale updates count, and how much.

    Attributes
    ----------
    tolerance
        The oldest update aggregated, in model versions (0: only fresh updates).
    discount
        ``constant``, ``polynomial`` or ``hinge`` (see the module's table).
    exponent
        ``a`` of the polynomial and hinge discounts (> 0).
    hinge
        ``b`` of the hinge discount: updates up to ``b`` versions old count fully (>= 0).
    """

    tolerance: int = 4
    discount: str = "polynomial"
    exponent: float = 0.5
    hinge: float = 4.0

    def __post_init__(self) -> None:
        if isinstance(self.tolerance, bool) or not isinstance(self.tolerance, int):
            raise InvalidArgumentError(
                f"Staleness: tolerance must be an int >= 0, got {self.tolerance!r}"
            )
        if self.tolerance < 0:
            raise InvalidArgumentError(f"Staleness: tolerance must be >= 0, got {self.tolerance}")
        if self.discount not in DISCOUNTS:
            raise InvalidArgumentError(
                f"Staleness: discount must be one of {', '.join(DISCOUNTS)}, got {self.discount!r}"
            )
        if not (math.isfinite(self.exponent) and self.exponent > 0):
            raise InvalidArgumentError(
                f"Staleness: exponent must be a finite number > 0, got {self.exponent!r}"
            )
        if not (math.isfinite(self.hinge) and self.hinge >= 0):
            raise InvalidArgumentError(
                f"Staleness: hinge must be a finite number >= 0, got {self.hinge!r}"
            )

    def weight(self, staleness: int) -> float | None:
        """The weight of an update ``staleness`` versions old, or None if it is dropped."""
        if staleness < 0:
            raise InvalidArgumentError(f"staleness must be >= 0, got {staleness}")
        if staleness > self.tolerance:
            return None
        if self.discount == "constant":
            return 1.0
        if self.discount == "polynomial":
            return float((1.0 + staleness) ** -self.exponent)
        if staleness <= self.hinge:
            return 1.0
        return 1.0 / (self.exponent * (staleness - self.hinge) + 1.0)
