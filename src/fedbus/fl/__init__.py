"""Federated learning as message flows: the standard Server/Client flow and strategies.

``fl`` knows nothing of how messages travel: the same ``Server`` and ``Client`` run in the
simulation and in deployments. Aggregation rules are in ``fl.strategy``; algorithms with a
client side of their own (FedProx, SCAFFOLD, Ditto, FedBN) in ``fl.algorithms``.
"""

from fedbus.fl.client import Client
from fedbus.fl.server import EvaluateFn, RoundRecord, Server
from fedbus.fl.state import ClientStateStore
from fedbus.fl.strategy import Aggregator, FedAvg, Strategy, WeightedAverage, WeightedMetrics

__all__ = [
    "Aggregator",
    "Client",
    "ClientStateStore",
    "EvaluateFn",
    "FedAvg",
    "RoundRecord",
    "Server",
    "Strategy",
    "WeightedAverage",
    "WeightedMetrics",
]
