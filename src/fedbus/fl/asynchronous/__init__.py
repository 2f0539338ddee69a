"""Asynchronous training: ``AsyncServer`` and the staleness rules it applies.

The strategies written for it (``FedAsync``, ``FedBuff``) are in ``fedbus.fl.strategy``; any
other strategy runs under it too, its updates discounted by staleness first.
"""

from fedbus.fl.asynchronous.server import BROADCASTS, MODEL_VERSION, TRIGGERS, AsyncServer
from fedbus.fl.asynchronous.staleness import DISCOUNTS, Staleness

__all__ = ["BROADCASTS", "DISCOUNTS", "MODEL_VERSION", "TRIGGERS", "AsyncServer", "Staleness"]
