"""Real processes on 127.0.0.1: ``fedbus server`` and ``fedbus client`` run a federation.

These start several Python processes each: they are marked slow, and every wait is bounded.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from fedbus.cli import main
from fedbus.run import load_config, read_metrics
from fedbus.run.deployment import AUDIT_FILE
from fedbus.run.experiment import run_experiment
from fedbus.runtime.grpc import read_audit

from ..conftest import TlsFiles
from .fleet import (
    PROCESS_TIMEOUT,
    TOKEN,
    Fleet,
    free_port,
    run_dir_of,
    wait_for_round,
    write_config,
)

pytestmark = pytest.mark.slow


def test_five_client_processes_over_tls_reach_the_simulations_accuracy(
    fleet: Fleet, tls_files: TlsFiles
) -> None:
    config = write_config(fleet.root / "fed.toml")
    port = free_port()
    server = fleet.server(
        config, port, "--tls-cert", str(tls_files.cert), "--tls-key", str(tls_files.key)
    )
    trusted = ("--root-cert", str(tls_files.ca))
    clients = [fleet.client(config, port, k, *trusted) for k in range(5)]
    # a client that does not speak TLS is refused, and the federation does not notice
    plain = fleet.client(config, port, 4, "--insecure", "--connect-timeout", "2")
    assert fleet.finish(plain) == 1
    assert "could not connect" in fleet.log(plain)
    assert fleet.finish(server) == 0, fleet.log(server)
    assert [fleet.finish(c) for c in clients] == [0] * 5
    run_dir = run_dir_of(fleet.root)
    for name in ("config.toml", "metrics.jsonl", "curves.png", "model.npz", "summary.json"):
        assert (run_dir / name).stat().st_size > 0, name
    deployed = read_metrics(run_dir)
    simulated = read_metrics(
        run_experiment(
            load_config(config, [f"run.output_dir={fleet.root / 'sim'}"]), quiet=True
        ).run_dir
    )
    assert [m["round"] for m in deployed] == list(range(1, 7))
    assert [m["test_accuracy"] for m in deployed] == [m["test_accuracy"] for m in simulated]
    assert [m["train_loss"] for m in deployed] == pytest.approx(
        [m["train_loss"] for m in simulated], rel=1e-9
    )
    assert deployed[-1]["test_accuracy"] > 0.85
    assert all(m["bytes_up"] > 0 and m["bytes_down"] > 0 for m in deployed)


def test_a_client_killed_mid_round_and_restarted(fleet: Fleet) -> None:
    # The killed client's request fails when the server sees its connection drop; the round
    # timeout only stops a round that a busy machine cannot finish at all.
    config = write_config(
        fleet.root / "fed.toml",
        per_round=5, rounds=12, min_replies=4, round_timeout=30.0, epochs=600,
    )  # fmt: skip
    # Node 5 proves a key: its restarted process takes its node id back with it. The others
    # join with the token (they could not rejoin under their ids after a restart).
    assert main(["keys", "new", "node-5", "--dir", str(fleet.root)]) == 0
    registry = str(fleet.root / "nodes.json")
    assert main(["keys", "register", registry, str(fleet.root / "node-5.pub")]) == 0
    key = ("--key", str(fleet.root / "node-5.key"))
    port = free_port()
    # Heartbeats every 10 s: a client paused below stays a member for 30 s.
    calm = ("--insecure", "--heartbeat", "10")
    server = fleet.server(config, port, *calm, "--keys", registry)
    clients = [fleet.client(config, port, k, *calm, *key[: 2 * (k == 4)]) for k in range(5)]
    killed_after = wait_for_round(fleet.root, 2, server)
    clients[4].send_signal(signal.SIGKILL)  # while it trains for the next round
    assert clients[4].wait(10) == -signal.SIGKILL
    # The others are paused while node 5 restarts, so the rounds wait for its return instead of
    # racing a process start.
    for client in clients[:4]:
        client.send_signal(signal.SIGSTOP)
    restarted = fleet.client(config, port, 4, *calm, *key)
    fleet.wait_for_log(server, "node 5 reconnected")
    for client in clients[:4]:
        client.send_signal(signal.SIGCONT)
    assert fleet.finish(server) == 0, fleet.log(server)
    finished = [*clients[:4], restarted]
    assert [fleet.finish(c) for c in finished] == [0] * 5, [fleet.log(c) for c in finished]
    metrics = read_metrics(run_dir_of(fleet.root))
    assert [m["round"] for m in metrics] == list(range(1, 13))
    # the round it was killed in closed with the four replies that arrived (it was sampled if
    # it died training, not if it died between two rounds), all aggregated
    cut_short = metrics[killed_after]
    assert cut_short["clients_replied"] == 4
    assert cut_short["clients_sampled"] in (4, 5)
    assert all(m["clients_replied"] + m["clients_failed"] <= 5 for m in metrics)
    # the restarted client rejoined as node 5 and was sampled, and answered, again (the paused
    # clients held the round open until it was back)
    assert any(m["clients_replied"] == 5 for m in metrics if m["round"] > killed_after)
    server_log = fleet.log(server)
    assert server_log.count("node 5 connected") == 1
    assert server_log.count("node 5 reconnected") == 1
    audit = [
        (e["event"], e.get("node_id")) for e in read_audit(run_dir_of(fleet.root) / AUDIT_FILE)
    ]
    assert audit.count(("join", 5)) == 1
    assert audit.count(("reconnect", 5)) == 1
    assert metrics[-1]["test_accuracy"] > 0.85


def test_a_killed_server_resumes_after_its_last_round(fleet: Fleet) -> None:
    config = write_config(fleet.root / "fed.toml", rounds=8, epochs=400)
    port = free_port()
    server = fleet.server(config, port, "--insecure")
    clients = [fleet.client(config, port, k, "--insecure") for k in range(5)]
    wait_for_round(fleet.root, 3, server)
    server.send_signal(signal.SIGKILL)
    assert server.wait(10) == -signal.SIGKILL
    run_dir = run_dir_of(fleet.root)
    completed = max(m["round"] for m in read_metrics(run_dir))
    resumed = fleet.server(Path("fed.toml"), port, "--insecure", "--resume", str(run_dir))
    assert fleet.finish(resumed) == 0, fleet.log(resumed)
    assert [fleet.finish(c) for c in clients] == [0] * 5  # they waited and rejoined
    metrics = read_metrics(run_dir)
    assert [m["round"] for m in metrics] == list(range(1, 9))
    assert f"after round {completed}" in fleet.log(resumed)
    summary = (run_dir / "summary.json").read_text()
    assert f'"resumed_after_round": {completed}' in summary
    assert metrics[-1]["test_accuracy"] > 0.85


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--insecure"], "no token"),
        (["--token-file", "missing.txt", "--insecure"], "cannot read --token-file"),
        ([], "--insecure to serve without TLS"),
    ],
)
def test_the_server_command_refuses_what_it_cannot_do_safely(
    tmp_path: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    from fedbus.cli import main

    monkeypatch.delenv("FEDBUS_TOKEN", raising=False)
    if args[:1] != ["--insecure"]:
        monkeypatch.setenv("FEDBUS_TOKEN", TOKEN)
    monkeypatch.chdir(tmp_path)
    assert main(["server", "--listen", "127.0.0.1:0", *args]) == 2
    assert message in capsys.readouterr().err


def test_a_client_with_its_own_data_file_joins_after_the_partitions(tmp_path: Path) -> None:
    """``run_server`` and ``run_client`` in threads of this process: partition 0 and a file."""
    import threading

    import numpy as np

    from fedbus.run.deployment import ClientOptions, ServerOptions, run_client, run_server
    from fedbus.run.federation import build_model_and_data

    config = load_config(
        write_config(tmp_path / "fed.toml", per_round=2, rounds=3),
        ["federation.num_clients=2", "federation.clients_per_evaluation=2", "run.plot=false"],
    )
    dataset, _ = build_model_and_data(config)
    part = dataset.client(1)
    data_file = tmp_path / "mine.npz"
    np.savez(data_file, x=np.concatenate([part.x_train, part.x_test]),
             y=np.concatenate([part.y_train, part.y_test]))  # fmt: skip
    port = free_port()
    server_options = ServerOptions(listen=f"127.0.0.1:{port}", token=TOKEN, insecure=True)
    results: dict[str, object] = {}

    def serve_it() -> None:
        results["server"] = run_server(config, server_options)

    def join(name: str, **choice: object) -> None:
        options = ClientOptions(
            server=f"127.0.0.1:{port}", token=TOKEN, insecure=True, connect_timeout=30, **choice
        )  # type: ignore[arg-type]
        results[name] = run_client(config, options)

    threads = [
        threading.Thread(target=serve_it),
        threading.Thread(target=join, args=("partition",), kwargs={"partition": 0}),
        threading.Thread(
            target=join, args=("file",), kwargs={"data_path": data_file, "num_classes": 10}
        ),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(PROCESS_TIMEOUT)
    assert (results["partition"], results["file"]) == (1, 3)
    summary = results["server"].summary  # type: ignore[attr-defined]
    assert summary["num_rounds"] == 3
    assert summary["failure"] is None


def test_an_asynchronous_federation_runs_across_processes(fleet: Fleet) -> None:
    """FedBuff from a configuration, three client processes: versions, not rounds."""
    config = write_config(fleet.root / "fed.toml", rounds=8)
    with config.open("a") as file:
        file.write(
            '\n[strategy]\nname = "fedbuff"\n\n'
            '[aggregation]\ntrigger = "goal"\ngoal = 2\nconcurrency = 3\n'
        )
    port = free_port()
    server = fleet.server(config, port, "--insecure", "--min-clients", "3")
    clients = [fleet.client(config, port, k, "--insecure") for k in range(3)]
    assert fleet.finish(server) == 0, fleet.log(server)
    assert [fleet.finish(c) for c in clients] == [0] * 3
    run_dir = run_dir_of(fleet.root)
    metrics = read_metrics(run_dir)
    assert [m["round"] for m in metrics] == list(range(1, 9))
    assert all(sum(m["staleness"].values()) == m["clients_replied"] == 2 for m in metrics)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert sum(summary["participation"].values()) == 16
    assert set(summary["participation"]) <= {"1", "2", "3"}
    # which updates meet in an aggregation depends on wall-clock timing: learned, not a figure
    assert metrics[-1]["test_accuracy"] > 0.7


def test_secure_aggregation_runs_across_processes(fleet: Fleet) -> None:
    """SecAgg+ from a configuration: four client processes, the server sees only sums."""
    config = write_config(fleet.root / "fed.toml", rounds=4, per_round=4)
    with config.open("a") as file:
        file.write("\n[privacy]\nsecure_aggregation = true\nsecagg_clip_range = 0.5\n")
    port = free_port()
    server = fleet.server(config, port, "--insecure", "--min-clients", "4")
    clients = [fleet.client(config, port, k, "--insecure") for k in range(4)]
    assert fleet.finish(server) == 0, fleet.log(server)
    assert [fleet.finish(c) for c in clients] == [0] * 4
    metrics = read_metrics(run_dir_of(fleet.root))
    assert [m["round"] for m in metrics] == [1, 2, 3, 4]
    assert all(m["clients_replied"] == 4 for m in metrics)
    assert metrics[-1]["test_accuracy"] > 0.7
