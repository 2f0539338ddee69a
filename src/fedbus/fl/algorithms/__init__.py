"""Algorithms with a client side: each brings a strategy and, where it exchanges something
new, its own message types and the client handlers that answer them.

- ``fedprox``: a proximal pull toward the global model (a config key every client honours).
- ``scaffold``: control variates, on the ``scaffold_train`` message type.
- ``ditto``: a personal model per client, on ``ditto_train`` and ``ditto_evaluate``.
- ``fedbn``: arrays that stay on the clients (batch-norm layers, named local layers).

Aggregation rules that need nothing from clients live in ``fedbus.fl.strategy``.
"""

from fedbus.fl.algorithms.ditto import Ditto, DittoClient
from fedbus.fl.algorithms.fedbn import FedBN, FedBNClient
from fedbus.fl.algorithms.fedprox import FedProx
from fedbus.fl.algorithms.scaffold import Scaffold, ScaffoldClient

__all__ = [
    "Ditto",
    "DittoClient",
    "FedBN",
    "FedBNClient",
    "FedProx",
    "Scaffold",
    "ScaffoldClient",
]
