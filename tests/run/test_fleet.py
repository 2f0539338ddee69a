"""A fleet on one server: 2,000 client nodes hosted by 2 processes over real gRPC.

Each ``fedbus client --nodes 1000`` process hosts a thousand nodes, each with its own
connection, node id and resume secret. Liveness runs on the default heartbeat (a busy machine
never misses 15 s), and every wait is bounded.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fedbus.cli import main
from fedbus.run import read_metrics
from fedbus.run.deployment import AUDIT_FILE
from fedbus.runtime.grpc import read_audit

from .fleet import Fleet, free_port, run_dir_of

pytestmark = pytest.mark.slow

NODES_PER_PROCESS = 1000

CONFIG = """\
[run]
name = "fleet"
output_dir = "{output}"

[federation]
num_clients = {clients}
clients_per_round = {clients}
clients_per_evaluation = 100
num_rounds = 3
seed = 3

[data]
dataset = "synthetic"
samples_per_client = 8
num_features = 10

[trainer]
epochs = 1
"""


def test_two_thousand_nodes_from_two_processes_finish_three_rounds(fleet: Fleet) -> None:
    clients = 2 * NODES_PER_PROCESS
    config = fleet.root / "fleet.toml"
    config.write_text(CONFIG.format(output=fleet.root / "runs", clients=clients))
    port = free_port()
    server = fleet.start(
        "server", "server", str(config), "--listen", f"127.0.0.1:{port}", "--insecure",
        "--join-timeout", "240",
    )  # fmt: skip
    hosts = []
    for first in range(0, clients, NODES_PER_PROCESS):
        host = fleet.start(
            f"host{first}", "client", str(config), "--server", f"127.0.0.1:{port}",
            "--insecure", "--partition", str(first), "--nodes", str(NODES_PER_PROCESS),
            "--connect-timeout", "240",
        )  # fmt: skip
        hosts.append(host)
    assert fleet.finish(server) == 0, fleet.log(server)[-3000:]
    for host in hosts:
        assert fleet.finish(host) == 0, fleet.log(host)[-3000:]
    run_dir = run_dir_of(fleet.root)
    metrics = read_metrics(run_dir)
    assert [m["round"] for m in metrics] == [1, 2, 3]
    # every node was there when round 1 sampled; a node that a busy machine made miss a
    # heartbeat reconnects under its id and may fail that round's request, nothing more
    assert metrics[0]["clients_sampled"] == clients
    assert all(m["clients_replied"] > clients // 2 for m in metrics)
    joins = {e["node_id"] for e in read_audit(run_dir / AUDIT_FILE) if e["event"] == "join"}
    assert joins == set(range(1, clients + 1))
    assert "nodes 1001 to 2000: the federation is over" in fleet.log(hosts[1])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--partition", "0", "--nodes", "0"], "--nodes 0: expected 1 or more"),
        (["--data", "x.npz", "--nodes", "2"], "give --partition K with it"),
        (["--partition", "3", "--nodes", "3"], "--partition 3 to 5: expected partitions 0 to 4"),
        (["--partition", "0", "--name", "alice"], "--name names the node of --key"),
        (["--partition", "0", "--cert", "c.pem"], "--cert and --cert-key go together"),
        (["--partition", "0", "--key", "missing.key"], "missing.key"),
    ],
)
def test_the_client_command_refuses_bad_hosting_before_it_connects(
    tmp_path: Path,
    args: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FEDBUS_TOKEN", "t")
    config = tmp_path / "five.toml"
    config.write_text(
        "[federation]\nnum_clients = 5\nclients_per_round = 3\nclients_per_evaluation = 3\n"
    )
    common = ["client", str(config), "--server", "127.0.0.1:1", "--insecure"]
    assert main([*common, *args]) in (1, 2)
    assert message in capsys.readouterr().err


def test_many_keyed_nodes_are_hosted_from_python_not_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["keys", "new", "alice", "--dir", str(tmp_path)]) == 0
    config = tmp_path / "five.toml"
    config.write_text(
        "[federation]\nnum_clients = 5\nclients_per_round = 3\nclients_per_evaluation = 3\n"
    )
    key = str(tmp_path / "alice.key")
    args = ["client", str(config), "--server", "127.0.0.1:1", "--insecure", "--partition", "0"]
    assert main([*args, "--nodes", "2", "--key", key]) == 2
    assert "connect_many(..., identities=...)" in capsys.readouterr().err
