"""A client process that holds the federation's token attacks it over real gRPC.

``attacker.py`` (node 5) tries, every round, to answer the other clients' requests, to send
``finish`` and ``train`` to them, to speak as node 1 and to replay an old reply. Each attempt is
refused and counted, and the four honest client processes finish with the accuracy of the same
federation without the attacker, under FedAvg and under the median. That federation is run in
simulation: with every client sampled, a deployment gives the simulation's model (up to the
order replies are summed in, ``test_deployment``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fedbus.run import load_config, read_metrics
from fedbus.run.federation import build_federation
from fedbus.runtime.simulation import Simulation

from .fleet import PROCESS_TIMEOUT, TOKEN, Fleet, free_port, run_dir_of

pytestmark = pytest.mark.slow

ATTACKER = Path(__file__).with_name("attacker.py")
ROUNDS = 4
CONFIG = """\
[run]
name = "{name}"
output_dir = "{output}"
plot = false

[federation]
num_clients = 5
clients_per_round = {per_round}
clients_per_evaluation = 4
num_rounds = {rounds}
seed = 3

[strategy]
name = "{strategy}"

[trainer]
epochs = 5
"""


def write_config(root: Path, strategy: str, per_round: int) -> Path:
    config = root / "fed.toml"
    config.write_text(
        CONFIG.format(
            name=strategy, output=root / "runs", rounds=ROUNDS, strategy=strategy,
            per_round=per_round,
        )
    )  # fmt: skip
    return config


def attacked_federation(root: Path, strategy: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Four honest client processes (partitions 0-3) and the attacker as node 5, every client
    sampled; the server's metrics and what the attacker saw."""
    root.mkdir()
    fleet = Fleet(root)
    try:
        config = write_config(root, strategy, per_round=5)
        port = free_port()
        server = fleet.server(config, port, "--insecure", "--min-clients", "5")
        clients = [fleet.client(config, port, k, "--insecure") for k in range(4)]
        report = root / "attacker.json"
        with (root / "attacker.log").open("wb") as log:
            attacker = subprocess.Popen(
                [sys.executable, str(ATTACKER), f"127.0.0.1:{port}", "5", str(report), "1,2,3,4"],
                stdout=log, stderr=subprocess.STDOUT, cwd=root,
                env={**os.environ, "FEDBUS_TOKEN": TOKEN},
            )  # fmt: skip
        fleet.processes.append(attacker)
        assert fleet.finish(server) == 0, fleet.log(server)
        assert [fleet.finish(client) for client in clients] == [0] * 4
        assert attacker.wait(PROCESS_TIMEOUT) == 0, (root / "attacker.log").read_text()
        return read_metrics(run_dir_of(root)), json.loads(report.read_text())
    finally:
        fleet.kill_all()


def clean_accuracy(root: Path, strategy: str) -> float:
    """The same federation without the attacker: the four honest clients, all sampled."""
    root.mkdir()
    federation = build_federation(load_config(write_config(root, strategy, per_round=4)))
    Simulation(federation.server, federation.client_fn, num_clients=4).run()
    accuracy = federation.server.history[-1].test_accuracy
    assert accuracy is not None
    return accuracy


@pytest.mark.parametrize("strategy", ["fedavg", "median"])
def test_a_client_holding_the_token_cannot_take_over_or_stop_the_others(
    tmp_path: Path, strategy: str
) -> None:
    attacked, seen = attacked_federation(tmp_path / "attacked", strategy)
    clean = clean_accuracy(tmp_path / "clean", strategy)
    assert [m["round"] for m in attacked] == list(range(1, ROUNDS + 1))
    # every round, the four honest clients' updates and nothing else were aggregated
    assert [m["clients_replied"] for m in attacked] == [4] * ROUNDS
    assert abs(attacked[-1]["test_accuracy"] - clean) <= 0.01
    assert clean > 0.75  # four rounds: learning, whatever the rule
    rounds = seen["rounds"]
    assert rounds == ROUNDS
    # its forged and replayed replies were refused and counted by the server, round by round
    refused = sum(m["refused_replies"] for m in attacked)
    assert refused == rounds * 20 + (rounds - 1)  # 20 guessed ids a round, and each replay
    assert sum(m["late_replies"] for m in attacked) == 0
    # finish and train for the other clients, and the message claiming node 1, got errors
    errors = seen["errors"]
    assert errors["finish:PERMISSION_DENIED"] == rounds * 4
    assert errors["train:PERMISSION_DENIED"] == rounds * 4
    assert errors["join:UNAUTHENTICATED"] == rounds
