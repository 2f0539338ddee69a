"""Ctrl-C, --resume and fedbus verify: a stopped simulation goes on bit for bit."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedbus.cli import main
from fedbus.errors import ConfigError, InvalidArgumentError, RunInterruptedError
from fedbus.fl import RoundRecord
from fedbus.run import experiment
from fedbus.run.config import load_config
from fedbus.run.experiment import run_experiment
from fedbus.run.outputs import read_metrics
from fedbus.run.trace import read_trace, trace_digest
from fedbus.run.verify import verify_run

# A process that is truly stuck fails the test after this long; nothing is timed.
DEADLINE = 240.0
SMALL = ["federation.num_rounds=6", "run.plot=false"]


def _config(root: Path, *overrides: str) -> experiment.Config:
    return load_config(None, [*SMALL, f"run.output_dir={root}", *overrides])


def _interrupt_after(monkeypatch: pytest.MonkeyPatch, server_round: int) -> None:
    """Ctrl-C as round ``server_round`` has ended and been written (a callback raises it)."""
    finish = experiment._RoundLog.__call__

    def then_interrupt(self: experiment._RoundLog, record: RoundRecord) -> None:
        finish(self, record)
        if record.round == server_round:
            raise KeyboardInterrupt

    monkeypatch.setattr(experiment._RoundLog, "__call__", then_interrupt)


def _only_run(root: Path) -> Path:
    (run_dir,) = root.iterdir()
    return run_dir


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param((), id="fedavg"),
        pytest.param(("strategy.name=scaffold",), id="scaffold-client-state"),
        pytest.param(("strategy.name=fedadam",), id="server-optimiser"),
        pytest.param(
            ("privacy.mode=central", "privacy.noise_multiplier=0.5"), id="seeded-dp-noise"
        ),
        pytest.param(
            ("simulation.dropout=0.2", "federation.round_timeout=5"), id="dropouts-and-retries"
        ),
        pytest.param(
            (
                "simulation.speed_sigma=1.0",
                "federation.round_timeout=0.2",
                "federation.min_replies=1",
            ),
            id="late-replies-in-flight",
        ),
        pytest.param(
            ("federation.early_stopping_patience=50", "federation.evaluate_every=1"),
            id="early-stopping-state",
        ),
    ],
)
def test_a_resumed_run_ends_with_the_uninterrupted_model_and_trace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overrides: tuple[str, ...]
) -> None:
    whole = run_experiment(_config(tmp_path / "whole", *overrides), quiet=True)
    _interrupt_after(monkeypatch, 3)
    with pytest.raises(RunInterruptedError, match="interrupted after round 3 of 6"):
        run_experiment(_config(tmp_path / "stopped", *overrides), quiet=True)
    monkeypatch.undo()
    stopped = _only_run(tmp_path / "stopped")

    resumed = run_experiment(None, quiet=True, resume=stopped)

    assert resumed.run_dir == stopped
    assert resumed.summary["model_sha256"] == whole.summary["model_sha256"]
    assert trace_digest(stopped) == trace_digest(whole.run_dir)
    for key in ("num_rounds", "messages", "bytes_up", "bytes_down", "simulated_time"):
        assert resumed.summary[key] == whole.summary[key], key
    assert resumed.summary["participation"] == whole.summary["participation"]
    assert [line["round"] for line in read_metrics(stopped)] == [1, 2, 3, 4, 5, 6]


def test_an_interrupted_run_writes_its_completed_rounds_and_says_how_to_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _interrupt_after(monkeypatch, 2)

    status = main(["run", "-q", *[f"--set={item}" for item in _overrides(tmp_path)]])

    assert status == 130
    run_dir = _only_run(tmp_path)
    error = capsys.readouterr().err
    assert f"continue with: fedbus run --resume {run_dir}" in error
    assert "Traceback" not in error
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    assert summary["num_rounds"] == 2
    assert summary["interrupted"] is True
    assert summary["resumable"] is True
    assert (run_dir / "model.npz").exists()
    assert (run_dir / "curves.png").exists()
    assert {row.group for row in read_trace(run_dir)} == {"1", "2"}
    with pytest.raises(InvalidArgumentError, match="was interrupted"):
        verify_run(run_dir)

    monkeypatch.undo()
    assert main(["run", "-q", "--resume", str(run_dir)]) == 0
    assert "round 3" not in capsys.readouterr().err
    assert main(["run", "-q", "--resume", str(run_dir)]) == 2
    assert "the run has finished" in capsys.readouterr().err
    rounds = {row.group for row in read_trace(run_dir) if row.type != "finish"}
    assert rounds == {str(r) for r in range(1, 7)}
    assert verify_run(run_dir).identical


def _overrides(root: Path) -> list[str]:
    return [*SMALL, f"run.output_dir={root}", "run.plot=true"]


def test_resume_refuses_another_configuration_and_asynchronous_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _interrupt_after(monkeypatch, 1)
    with pytest.raises(RunInterruptedError):
        run_experiment(_config(tmp_path / "a"), quiet=True)
    monkeypatch.undo()
    run_dir = _only_run(tmp_path / "a")

    with pytest.raises(ConfigError, match="differs from the run's own"):
        run_experiment(_config(tmp_path / "a", "federation.seed=7"), resume=run_dir, quiet=True)
    with pytest.raises(ConfigError, match="no such run directory"):
        run_experiment(None, resume=tmp_path / "nowhere", quiet=True)

    _interrupt_after(monkeypatch, 1)
    with pytest.raises(RunInterruptedError, match="asynchronous run cannot be resumed"):
        run_experiment(_config(tmp_path / "b", "aggregation.trigger=goal"), quiet=True)
    monkeypatch.undo()
    with pytest.raises(ConfigError, match="asynchronous run cannot be resumed"):
        run_experiment(None, resume=_only_run(tmp_path / "b"), quiet=True)

    _interrupt_after(monkeypatch, 1)
    with pytest.raises(RunInterruptedError, match="wrote no checkpoint"):
        run_experiment(_config(tmp_path / "c", "run.checkpoint_every=0"), quiet=True)
    monkeypatch.undo()
    with pytest.raises(ConfigError, match="no checkpoint was written"):
        run_experiment(None, resume=_only_run(tmp_path / "c"), quiet=True)


def test_verify_says_identical_for_an_untouched_run_and_different_after_an_edit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = run_experiment(_config(tmp_path), quiet=True).run_dir
    versions = json.loads((run_dir / "versions.json").read_text(encoding="utf-8"))
    assert versions["fedbus"]
    assert "numpy" in versions["packages"]

    assert main(["verify", str(run_dir)]) == 0
    assert "identical" in capsys.readouterr().out

    config = run_dir / "config.toml"
    text = config.read_text(encoding="utf-8")
    edited = re.sub(r"(?m)^lr = .*$", "lr = 0.001", text)
    assert edited != text
    config.write_text(edited, encoding="utf-8")
    versions["packages"]["numpy"] = "0.0.1"
    (run_dir / "versions.json").write_text(json.dumps(versions), encoding="utf-8")

    assert main(["verify", str(run_dir)]) == 1
    printed = capsys.readouterr()
    assert "DIFFERENT" in printed.out
    assert "model: recorded sha256" in printed.out
    assert "numpy: 0.0.1 when the run was made" in printed.out
    assert "does not reproduce" in printed.err


# -- a real fedbus run process and a real Ctrl-C ---------------------------------------------


def _wait_for_rounds(run_root: Path, rounds: int, process: subprocess.Popen[bytes]) -> Path:
    deadline = time.monotonic() + DEADLINE
    while True:
        found = list(run_root.glob("*/metrics.jsonl"))
        if found and len(read_metrics(found[0].parent)) >= rounds:
            return found[0].parent
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the run did not get going"
        time.sleep(0.02)


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "worker-processes"])
def test_ctrl_c_on_fedbus_run_then_resume_gives_the_uninterrupted_model(
    tmp_path: Path, workers: int
) -> None:
    # Enough rounds (about 5 ms each here) that the run is far from done when interrupted.
    overrides = [
        "federation.num_rounds=300",
        f"simulation.workers={workers}",
        "run.plot=false",
    ]
    command = [sys.executable, "-m", "fedbus", "run", "-q"]
    options = [f"--set={item}" for item in overrides]
    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [*command, *options, f"--set=run.output_dir={tmp_path / 'stopped'}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environment,
        start_new_session=True,  # a process group of its own, as a terminal's job has
    )
    try:
        run_dir = _wait_for_rounds(tmp_path / "stopped", 2, process)
        # What Ctrl-C in a terminal does: SIGINT to the whole group, worker processes included.
        os.killpg(process.pid, signal.SIGINT)
        _, error = process.communicate(timeout=DEADLINE)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    text = error.decode()
    assert process.returncode == 130, text
    assert "Traceback" not in text
    assert f"fedbus run --resume {run_dir}" in text
    assert (run_dir / "model.npz").exists()
    assert (run_dir / "summary.json").exists()

    resumed = subprocess.run(
        [*command, "--resume", str(run_dir)], capture_output=True, env=environment, timeout=DEADLINE
    )
    assert resumed.returncode == 0, resumed.stderr.decode()
    whole = subprocess.run(
        [*command, *options, f"--set=run.output_dir={tmp_path / 'whole'}"],
        capture_output=True,
        env=environment,
        timeout=DEADLINE,
    )
    assert whole.returncode == 0, whole.stderr.decode()
    summaries = [
        json.loads((path / "summary.json").read_text(encoding="utf-8"))
        for path in (run_dir, _only_run(tmp_path / "whole"))
    ]
    assert summaries[0]["num_rounds"] == summaries[1]["num_rounds"] == 300
    assert summaries[0]["model_sha256"] == summaries[1]["model_sha256"]
