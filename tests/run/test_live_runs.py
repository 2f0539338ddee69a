"""What a running federation shows: `fedbus run --dashboard` and `fedbus server --dashboard`,
and the trace, versions and model digest a deployment writes."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fedbus.cli import main
from fedbus.fl import RoundRecord
from fedbus.run import experiment
from fedbus.run.trace import read_trace

from .fleet import PROCESS_TIMEOUT, Fleet, free_port, run_dir_of, write_config

DEADLINE = 120.0


def _snapshot(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "api/runs", timeout=DEADLINE) as response:
        snapshots = json.loads(response.read())
    (snapshot,) = snapshots if isinstance(snapshots, list) else snapshots["runs"]
    return dict(snapshot)


def test_fedbus_run_dashboard_shows_the_rounds_as_they_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[dict[str, Any]] = []
    finish = experiment._RoundLog.__call__

    def and_look(self: experiment._RoundLog, record: RoundRecord) -> None:
        finish(self, record)
        if record.round == 2:  # the page is served while the run goes on
            url = re.search(r"dashboard: (\S+)", capsys.readouterr().out)
            assert url is not None
            seen.append(_snapshot(url[1]))

    monkeypatch.setattr(experiment._RoundLog, "__call__", and_look)
    overrides = ["federation.num_rounds=4", f"run.output_dir={tmp_path}", "run.plot=false"]

    command = ["run", "-q", "--dashboard", "127.0.0.1:0", *(f"--set={o}" for o in overrides)]
    assert main(command) == 0

    (during,) = seen
    assert during["state"] == "running"
    assert [line["round"] for line in during["metrics"]] == [1, 2]
    assert during["num_rounds"] == 4
    assert {node["id"] for node in during["nodes"]} >= {0}
    assert any(edge["type"] == "train" for edge in during["flow"])


def test_the_dashboard_of_a_run_refuses_a_bad_address(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "-q", "--dashboard", "127.0.0.1", f"--set=run.output_dir={tmp_path}"]) == 2
    assert "--dashboard" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_a_deployment_writes_its_trace_and_serves_its_dashboard(fleet: Fleet) -> None:
    config = write_config(fleet.root / "fed.toml", rounds=3, epochs=5)
    config.write_text(config.read_text() + "\n[tracking]\ntensorboard = true\n")
    port, page = free_port(), free_port()
    server = fleet.server(config, port, "--insecure", "--dashboard", f"127.0.0.1:{page}")
    clients = [fleet.client(config, port, k, "--insecure") for k in range(4)]
    url = f"http://127.0.0.1:{page}/"
    # Four of five clients: the server waits for the fifth, and the page says so.
    deadline = time.monotonic() + PROCESS_TIMEOUT
    while True:
        try:
            snapshot = _snapshot(url)
        except OSError:  # not serving yet
            snapshot = {}
        connected = {node["id"] for node in snapshot.get("nodes", []) if node["connected"]}
        if connected >= {1, 2, 3, 4}:
            break
        assert server.poll() is None, fleet.log(server)
        assert time.monotonic() < deadline, f"the page never showed the clients: {snapshot}"
        time.sleep(0.05)
    assert snapshot["state"] == "running"
    assert snapshot["round"] == 0
    clients.append(fleet.client(config, port, 4, "--insecure"))
    assert fleet.finish(server) == 0, fleet.log(server)
    assert [fleet.finish(c) for c in clients] == [0] * 5

    run_dir = run_dir_of(fleet.root)
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    assert len(summary["model_sha256"]) == 64
    assert (run_dir / "versions.json").exists()
    rows = read_trace(run_dir)
    assert {row.src for row in rows if row.dst == 0} == {1, 2, 3, 4, 5}
    assert {row.outcome for row in rows} == {"delivered"}
    assert sum(row.bytes for row in rows if row.dst == 0) == summary["bytes_up"]
    assert sum(row.bytes for row in rows if row.src == 0) == summary["bytes_down"]
    assert {row.group for row in rows if row.type == "train"} == {"1", "2", "3"}
    assert all(row.settled >= 0 for row in rows)
    # the server's trackers got every round
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()
    assert [event.step for event in events.Tensors("test_accuracy")] == [1, 2, 3]


@pytest.mark.slow
def test_a_server_whose_clients_never_join_says_so(fleet: Fleet) -> None:
    config = write_config(fleet.root / "fed.toml")
    server = fleet.server(config, free_port(), "--insecure", "--join-timeout", "1")

    assert fleet.finish(server) == 1
    log = fleet.log(server)
    assert "metrics.jsonl" not in log
    assert "only 0 of min_clients=5 clients joined within join_timeout=1.0 s" in log, log
    summary = json.loads((run_dir_of(fleet.root) / "summary.json").read_text(encoding="utf-8"))
    assert summary["num_rounds"] == 0
    assert summary["failure"]
