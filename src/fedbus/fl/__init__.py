"""Federated learning as message flows: the standard Server/Client flow and strategies.

``Server`` runs synchronous rounds; ``AsyncServer`` (``fl.asynchronous``) aggregates after K
updates or every T seconds, discounting stale updates. ``fl`` knows nothing of how messages
travel: the same servers and ``Client`` run in the simulation and in deployments. Aggregation
rules are in ``fl.strategy``; algorithms with a client side of their own (FedProx, SCAFFOLD,
Ditto, FedBN) in ``fl.algorithms``. What every server shares is one ``TrainingSettings``;
central evaluation, early stopping and checkpointing are callbacks (``fl.callbacks``).
"""

from fedbus.fl.asynchronous import AsyncServer, Staleness
from fedbus.fl.callbacks import (
    Callback,
    CentralEvaluation,
    EarlyStopping,
    EvaluateFn,
    RoundEndFunction,
)
from fedbus.fl.client import Client
from fedbus.fl.record import RoundRecord
from fedbus.fl.requests import RequestGroup
from fedbus.fl.server import Server
from fedbus.fl.server_base import ServerBase
from fedbus.fl.settings import SharedOptions, TrainingSettings
from fedbus.fl.state import ClientStateStore
from fedbus.fl.strategy import Aggregator, FedAvg, Strategy, WeightedAverage, WeightedMetrics

__all__ = [
    "Aggregator",
    "AsyncServer",
    "Callback",
    "CentralEvaluation",
    "Client",
    "ClientStateStore",
    "EarlyStopping",
    "EvaluateFn",
    "FedAvg",
    "RequestGroup",
    "RoundEndFunction",
    "RoundRecord",
    "Server",
    "ServerBase",
    "SharedOptions",
    "Staleness",
    "Strategy",
    "TrainingSettings",
    "WeightedAverage",
    "WeightedMetrics",
]
