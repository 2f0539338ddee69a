"""Federated learning as message flows: the standard Server/Client flow and strategies.

``fl`` knows nothing of how messages travel: the same ``Server`` and ``Client`` run in the
simulation and in deployments.
"""

from fedbus.fl.client import Client
from fedbus.fl.server import EvaluateFn, RoundRecord, Server
from fedbus.fl.strategy import Aggregator, FedAvg, Strategy, WeightedAverage, WeightedMetrics

__all__ = [
    "Aggregator",
    "Client",
    "EvaluateFn",
    "FedAvg",
    "RoundRecord",
    "Server",
    "Strategy",
    "WeightedAverage",
    "WeightedMetrics",
]
