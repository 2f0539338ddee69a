"""Strategies: how a round is configured and how replies are aggregated. One module each."""

from fedbus.fl.strategy.base import Aggregator, Strategy, WeightedMetrics
from fedbus.fl.strategy.fedavg import FedAvg, WeightedAverage

__all__ = ["Aggregator", "FedAvg", "Strategy", "WeightedAverage", "WeightedMetrics"]
