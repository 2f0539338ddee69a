"""A bug in a strategy stops the run loudly: failure set, the traceback in the log."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest

from fedbus.fl import Client, Server
from fedbus.fl.strategy import FedAvg, Strategy
from fedbus.message import ArrayRecord, RecordDict
from fedbus.runtime.simulation import simulate


class Echo:
    def fit(self, arrays: dict[str, Any], config: dict[str, Any]) -> Any:
        return arrays, 1, {}

    def evaluate(self, arrays: dict[str, Any], config: dict[str, Any]) -> Any:
        return 0.0, 1, {}


class ForgetsTheMetrics(Strategy):
    """``result()`` must return (arrays, metrics); this one returns the arrays alone."""

    name = "forgets_the_metrics"

    def start_aggregation(self, server_round: int, arrays: ArrayRecord) -> Any:
        class Last:
            def add(self, node_id: int, content: RecordDict) -> None:
                self.arrays = content["arrays"]

            def result(self) -> Any:
                return self.arrays

        return Last()


class ExplodesInRoundTwo(FedAvg):
    def start_aggregation(self, server_round: int, arrays: ArrayRecord) -> Any:
        if server_round == 2:
            raise KeyError("no such layer")
        return super().start_aggregation(server_round, arrays)


def run(strategy: Strategy) -> Server:
    server = Server(strategy, {"w": np.zeros(3, np.float32)}, num_rounds=3, clients_per_round=2)
    simulate(server, [Client(Echo()) for _ in range(2)])
    return server


def test_a_strategy_that_raises_stops_the_run_and_says_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, logger="fedbus"):
        server = run(ForgetsTheMetrics())
    assert server.history == []
    assert not server.finished
    assert server.failure is not None
    assert server.failure.startswith("ValueError: not enough values to unpack")
    assert "while handling 'train' from node" in server.failure
    tracebacks = [record for record in caplog.records if record.exc_info]
    assert tracebacks, "the bug's traceback is in the log"


def test_the_rounds_before_the_bug_are_kept() -> None:
    server = run(ExplodesInRoundTwo())
    assert [record.round for record in server.history] == [1]
    assert server.failure is not None
    assert "KeyError" in server.failure
