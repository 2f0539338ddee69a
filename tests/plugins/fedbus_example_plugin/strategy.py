"""``recording_fedavg``: FedAvg that records every round it aggregates."""

from __future__ import annotations

from fedbus.fl.registry import register_strategy
from fedbus.fl.strategy.fedavg import FedAvg, WeightedAverage
from fedbus.message import ArrayRecord
from fedbus.plugins import Settings

#: The rounds every ``RecordingFedAvg`` of this process aggregated, in order.
AGGREGATED_ROUNDS: list[int] = []


class RecordingFedAvg(FedAvg):
    """FedAvg, recording each round in ``AGGREGATED_ROUNDS``."""

    name = "recording_fedavg"

    def __init__(self, label: str) -> None:
        self.label = label

    def start_aggregation(self, server_round: int, arrays: ArrayRecord) -> WeightedAverage:
        """Record the round, then average as FedAvg does."""
        AGGREGATED_ROUNDS.append(server_round)
        return super().start_aggregation(server_round, arrays)


def _build(settings: Settings) -> RecordingFedAvg:
    return RecordingFedAvg(label=settings["run.name"])


register_strategy("recording_fedavg", RecordingFedAvg, _build)
