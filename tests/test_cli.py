"""The command line: run, flow and plot, their outputs and their errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fedbus.cli import main
from fedbus.run import read_metrics


def run_dirs(root: Path) -> list[Path]:
    return sorted(path for path in root.iterdir() if path.is_dir())


def test_default_run_reaches_its_stated_accuracy(tmp_path: Path) -> None:
    """`fedbus run` with no config: FedAvg on digits, 100 clients, >= 0.90 test accuracy."""
    assert main(["run", "-q", "--set", f"run.output_dir={tmp_path}"]) == 0
    (run_dir,) = run_dirs(tmp_path)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["final_test_accuracy"] >= 0.90
    assert summary["num_rounds"] == 80
    assert summary["failure"] is None
    for name in ("config.toml", "metrics.jsonl", "curves.png", "model.npz"):
        assert (run_dir / name).stat().st_size > 0, name
    metrics = read_metrics(run_dir)
    assert [line["round"] for line in metrics] == list(range(1, 81))
    first = metrics[0]
    assert first["clients_replied"] == 10
    assert first["clients_failed"] == 0
    assert first["bytes_down"] > 10 * 64 * 10 * 4  # ten copies of a 640-weight float32 model
    assert first["bytes_up"] > 0
    assert metrics[-1]["simulated_time"] == pytest.approx(summary["simulated_time"], rel=0.05)


def test_run_prints_where_it_wrote(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["run", "-q", "--set", "federation.num_rounds=2", "--set", f"run.output_dir={tmp_path}"]
    assert main(args) == 0
    out = capsys.readouterr().out
    (run_dir,) = run_dirs(tmp_path)
    assert f"run directory:       {run_dir}" in out
    assert "final test accuracy: 0." in out


def test_same_seed_same_metrics(tmp_path: Path) -> None:
    def run(seed: int) -> list[tuple[object, ...]]:
        out = tmp_path / f"seed{seed}-{len(list(tmp_path.iterdir()))}"
        args = ["run", "-q", "--set", "federation.num_rounds=5", "--set", f"run.output_dir={out}"]
        args += ["--set", "simulation.check_serialization=true"]
        assert main([*args, "--set", f"federation.seed={seed}"]) == 0
        (run_dir,) = run_dirs(out)
        keys = ("simulated_time", "test_accuracy", "test_loss", "train_loss", "bytes_up")
        return [tuple(line[k] for k in keys) for line in read_metrics(run_dir)]

    assert run(3) == run(3)
    assert run(3) != run(4)


def test_config_errors_exit_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["run", "--set", "federation.clients_per_round=500", "--set", "trainer.lrr=1"])
    assert code == 2
    err = capsys.readouterr().err
    assert "federation.clients_per_round" in err
    assert "trainer.lrr" in err
    assert "did you mean trainer.lr" in err
    assert not (tmp_path / "runs").exists()


def test_a_run_that_cannot_finish_exits_1_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "run", "-q",
        "--set", "simulation.dropout=1.0",
        "--set", "federation.round_timeout=5.0",
        "--set", f"run.output_dir={tmp_path}",
    ]  # fmt: skip
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "fewer than min_replies=5, after 3 attempts" in err
    (run_dir,) = run_dirs(tmp_path)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert "after 3 attempts" in summary["failure"]


def test_dropout_without_timeout_is_refused_before_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["run", "--set", "simulation.dropout=0.1", "--set", f"run.output_dir={tmp_path}"]
    assert main(args) == 2
    assert "federation.round_timeout" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_flow_prints_and_draws_the_standard_flow(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    picture = tmp_path / "flow.svg"
    assert main(["flow", "--output", str(picture)]) == 0
    out = capsys.readouterr().out
    assert "server handles: join, train, evaluate" in out
    assert "client handles: train, evaluate, finish, join" in out
    assert "server.on_start --train--> client" in out
    assert "client.on_start --join--> server" in out
    assert "NOBODY" not in out
    assert picture.read_text().startswith("<?xml")
    mermaid = (tmp_path / "flow.mmd").read_text()
    assert mermaid.startswith("flowchart LR\n")
    assert 'server -- "train (from on_start)" --> client' in mermaid


def test_plot_draws_several_runs(tmp_path: Path) -> None:
    for seed in (1, 2):
        args = ["run", "-q", "--set", "federation.num_rounds=3", "--set", f"federation.seed={seed}"]
        assert main([*args, "--set", f"run.output_dir={tmp_path / 'runs'}"]) == 0
    output = tmp_path / "both.png"
    assert main(["plot", *map(str, run_dirs(tmp_path / "runs")), "--output", str(output)]) == 0
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_of_a_directory_without_metrics_fails_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plot", str(tmp_path)]) != 0
    assert "metrics.jsonl" in capsys.readouterr().err


def test_the_console_entry_point_runs(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "fedbus", "run", "-q", "--set", "federation.num_rounds=1",
         "--set", f"run.output_dir={tmp_path}"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "final test accuracy" in done.stdout
