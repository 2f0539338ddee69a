"""A client process that holds the federation's token attacks it over real gRPC.

``attacker.py`` (node 5) tries, every round, to answer the other clients' requests, to send
``finish`` and ``train`` to them, to speak as node 1 and to replay an old reply. Each attempt is
refused and counted, and the four honest client processes finish with the accuracy of the same
federation without the attacker, under FedAvg and under the median.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fedbus.run import read_metrics

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


def federation(root: Path, strategy: str, *, attacked: bool) -> tuple[list[dict], dict | None]:
    """Run four honest client processes (partitions 0-3), and the attacker as node 5 when
    ``attacked``; return the server's metrics and what the attacker saw."""
    root.mkdir()
    fleet = Fleet(root)
    try:
        config = root / "fed.toml"
        config.write_text(
            CONFIG.format(
                name=strategy, output=root / "runs", rounds=ROUNDS, strategy=strategy,
                per_round=5 if attacked else 4,
            )
        )  # fmt: skip
        port = free_port()
        members = 5 if attacked else 4
        server = fleet.server(config, port, "--insecure", "--min-clients", str(members))
        clients = [fleet.client(config, port, k, "--insecure") for k in range(4)]
        report = root / "attacker.json"
        attacker = None
        if attacked:
            with (root / "attacker.log").open("wb") as log:
                attacker = subprocess.Popen(
                    [sys.executable, str(ATTACKER), f"127.0.0.1:{port}", "5", str(report),
                     "1,2,3,4"],
                    stdout=log, stderr=subprocess.STDOUT, cwd=root,
                    env={**os.environ, "FEDBUS_TOKEN": TOKEN},
                )  # fmt: skip
            fleet.processes.append(attacker)
        assert fleet.finish(server) == 0, fleet.log(server)
        assert [fleet.finish(client) for client in clients] == [0] * 4
        seen = None
        if attacker is not None:
            assert attacker.wait(PROCESS_TIMEOUT) == 0, (root / "attacker.log").read_text()
            seen = json.loads(report.read_text())
        return read_metrics(run_dir_of(root)), seen
    finally:
        fleet.kill_all()


@pytest.mark.parametrize("strategy", ["fedavg", "median"])
def test_a_client_holding_the_token_cannot_take_over_or_stop_the_others(
    tmp_path: Path, strategy: str
) -> None:
    clean, _ = federation(tmp_path / "clean", strategy, attacked=False)
    attacked, seen = federation(tmp_path / "attacked", strategy, attacked=True)
    assert seen is not None
    assert [m["round"] for m in attacked] == list(range(1, ROUNDS + 1))
    # every round, the four honest clients' updates and nothing else were aggregated
    assert [m["clients_replied"] for m in attacked] == [4] * ROUNDS
    assert abs(attacked[-1]["test_accuracy"] - clean[-1]["test_accuracy"]) <= 0.01
    assert clean[-1]["test_accuracy"] > 0.75  # four rounds: learning, whatever the rule
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
