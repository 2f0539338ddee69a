"""Federated learning as message flows: the standard Server/Client flow and strategies.

``Server`` runs synchronous rounds; ``AsyncServer`` (``fl.asynchronous``) aggregates after K
updates or every T seconds, discounting stale updates. ``fl`` knows nothing of how messages
travel: the same servers and ``Client`` run in the simulation and in deployments. Aggregation
rules are in ``fl.strategy``; algorithms with a client side of their own (FedProx, SCAFFOLD,
Ditto, FedBN) in ``fl.algorithms``.
"""

from fedbus.fl.asynchronous import AsyncServer, Staleness
from fedbus.fl.client import Client
from fedbus.fl.requests import RequestGroup
from fedbus.fl.server import EvaluateFn, RoundRecord, Server
from fedbus.fl.server_base import ServerBase
from fedbus.fl.state import ClientStateStore
from fedbus.fl.strategy import Aggregator, FedAvg, Strategy, WeightedAverage, WeightedMetrics

__all__ = [
    "Aggregator",
    "AsyncServer",
    "Client",
    "ClientStateStore",
    "EvaluateFn",
    "FedAvg",
    "RequestGroup",
    "RoundRecord",
    "Server",
    "ServerBase",
    "Staleness",
    "Strategy",
    "WeightedAverage",
    "WeightedMetrics",
]
