"""Strategies: how a round is configured and how replies are aggregated. One module each.

- ``fedavg``: FedAvg and the streaming ``WeightedAverage`` the others build on.
- ``fedopt``: server optimisers (FedAvgM, FedAdagrad, FedAdam, FedYogi).
- ``fedasync``, ``fedbuff``: asynchronous training (run by ``AsyncServer``).
- ``robust``: Byzantine-robust rules (Krum, Multi-Krum, median, trimmed mean, Bulyan, norm bound).

Algorithms that also change what clients do (FedProx, SCAFFOLD, Ditto, FedBN) are in
``fedbus.fl.algorithms``. Each module registers the names configuration files use for its
strategies (``fedbus.fl.registry.register_strategy``, at the module's bottom).
"""

from fedbus.fl.strategy.base import Aggregator, Strategy, WeightedMetrics
from fedbus.fl.strategy.fedasync import FedAsync
from fedbus.fl.strategy.fedavg import FedAvg, WeightedAverage
from fedbus.fl.strategy.fedbuff import FedBuff
from fedbus.fl.strategy.fedopt import FedAdagrad, FedAdam, FedAvgM, FedOpt, FedYogi
from fedbus.fl.strategy.robust import Bulyan, Krum, Median, MultiKrum, NormBound, TrimmedMean

__all__ = [
    "Aggregator",
    "Bulyan",
    "FedAdagrad",
    "FedAdam",
    "FedAsync",
    "FedAvg",
    "FedAvgM",
    "FedBuff",
    "FedOpt",
    "FedYogi",
    "Krum",
    "Median",
    "MultiKrum",
    "NormBound",
    "Strategy",
    "TrimmedMean",
    "WeightedAverage",
    "WeightedMetrics",
]
