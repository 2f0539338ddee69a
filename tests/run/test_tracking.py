"""Experiment tracking: what a run logs reaches TensorBoard and MLflow, and reads back equal."""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from fedbus.errors import ConfigError
from fedbus.run import experiment, load_config, read_metrics
from fedbus.run.config import Config
from fedbus.run.tracking import (
    MLFLOW_STORE,
    TENSORBOARD_DIR,
    Trackers,
    config_params,
    open_trackers,
    scalar_metrics,
)

mlflow = pytest.importorskip("mlflow", reason="needs fedbus[tracking]")
pytest.importorskip("tensorboard", reason="needs fedbus[tracking]")

LINES: list[dict[str, Any]] = [
    {
        "round": round_number,
        "simulated_time": 1.5 * round_number,
        "wall_time": 0.01 * round_number,
        "train_loss": 2.0 / round_number,
        "test_accuracy": None if round_number == 2 else 0.25 * round_number,
        "test_loss": 1.0 / round_number,
        "federated_accuracy": None,
        "clients_replied": 10,
        "bytes_up": 4096 * round_number,
        "bytes_down": 8192,
        "epsilon": 0.5 * round_number,
        "staleness": {"0": 6, "2": 4} if round_number == 3 else {"0": 10},
        "stopped_early": False,
        "note": "text is not a metric",
    }
    for round_number in (1, 2, 3)
]
SUMMARY: dict[str, Any] = {
    "final_test_accuracy": 0.75,
    "num_rounds": 3,
    "participation": {"0": 3, "1": 3},
    "failure": None,
}


def tracking_config(tmp_path: Path, *options: str) -> Config:
    return load_config(None, [f"run.output_dir={tmp_path}", "federation.num_rounds=3", *options])


def log_all(config: Config, run_dir: Path, summary: Mapping[str, Any] | None) -> Trackers:
    with open_trackers(config, run_dir) as trackers:
        for line in LINES:
            trackers.log_round(line)
        if summary is not None:
            trackers.close(summary)
    return trackers


def expected_series() -> dict[str, list[tuple[int, float]]]:
    """Every metric of LINES as ``(step, value)`` pairs, the way a tracker must log them."""
    series: dict[str, list[tuple[int, float]]] = {}
    for line in LINES:
        for name, value in scalar_metrics(line).items():
            series.setdefault(name, []).append((line["round"], value))
    return series


def test_scalar_metrics_flattens_tables_and_skips_what_is_not_a_number() -> None:
    metrics = scalar_metrics(LINES[2])
    assert metrics == {
        "simulated_time": 4.5,
        "wall_time": 0.03,
        "train_loss": pytest.approx(2 / 3),
        "test_accuracy": 0.75,
        "test_loss": pytest.approx(1 / 3),
        "clients_replied": 10.0,
        "bytes_up": 12288.0,
        "bytes_down": 8192.0,
        "epsilon": 1.5,
        "staleness/0": 6.0,
        "staleness/2": 4.0,
        "staleness/mean": pytest.approx(0.8),  # (0 * 6 + 2 * 4) / 10
    }
    assert "test_accuracy" not in scalar_metrics(LINES[1])  # None: not measured that round
    assert scalar_metrics({"round": 1, "staleness": {}}) == {}


def test_tensorboard_event_files_hold_every_metric_at_its_round(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util.tensor_util import make_ndarray

    run_dir = tmp_path / "run-1"
    run_dir.mkdir()
    log_all(tracking_config(tmp_path, "tracking.tensorboard=true"), run_dir, SUMMARY)

    log_dir = run_dir / TENSORBOARD_DIR
    assert list(log_dir.glob("events.out.tfevents.*"))
    events = EventAccumulator(str(log_dir), size_guidance={"tensors": 0})
    events.Reload()
    # tensorboard.summary.Writer writes scalars as tensors (TensorBoard's current format)
    found = {
        tag: [
            (event.step, float(make_ndarray(event.tensor_proto))) for event in events.Tensors(tag)
        ]
        for tag in events.Tags()["tensors"]
    }
    summary = found.pop("summary/final_test_accuracy"), found.pop("summary/num_rounds")
    assert summary == ([(3, 0.75)], [(3, 3.0)])
    expected = expected_series()
    assert found.keys() == expected.keys()
    for tag, points in expected.items():
        # event files hold float32
        assert found[tag] == [(step, pytest.approx(value, rel=1e-6)) for step, value in points]
    assert found["test_accuracy"] == [(1, 0.25), (3, 0.75)]
    assert found["staleness/2"] == [(3, 4.0)]


def mlflow_run(client: Any, experiment_name: str) -> Any:
    found = client.get_experiment_by_name(experiment_name)
    assert found is not None
    runs = client.search_runs([found.experiment_id])
    assert len(runs) == 1
    return runs[0]


def assert_logged(client: Any, run: Any, config: Config, run_dir: Path, status: str) -> None:
    assert run.info.run_name == run_dir.name
    assert run.info.status == status
    assert run.data.tags["fedbus.run_dir"] == str(run_dir.resolve())
    assert run.data.params == config_params(config)
    assert run.data.params["federation.num_rounds"] == "3"
    assert run.data.params["tracking.mlflow"] == "true"
    for name, points in expected_series().items():
        history = client.get_metric_history(run.info.run_id, name)
        logged = sorted((metric.step, metric.value) for metric in history)
        assert logged == [(step, pytest.approx(value)) for step, value in points], name


def test_mlflow_logs_to_a_store_in_the_run_directory(tmp_path: Path) -> None:
    run_dir = tmp_path / "run-2"
    run_dir.mkdir()
    config = tracking_config(tmp_path, "tracking.mlflow=true")
    trackers = log_all(config, run_dir, SUMMARY)
    assert len(trackers) == 1
    assert (run_dir / MLFLOW_STORE).is_file()

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{run_dir / MLFLOW_STORE}")
    run = mlflow_run(client, "fedbus")
    assert_logged(client, run, config, run_dir, "FINISHED")
    assert run.data.metrics["summary/final_test_accuracy"] == 0.75


def test_an_interrupted_run_is_killed_and_a_failed_one_failed(tmp_path: Path) -> None:
    config = tracking_config(tmp_path, "tracking.mlflow=true")
    interrupted, failed = tmp_path / "interrupted", tmp_path / "failed"
    interrupted.mkdir()
    failed.mkdir()
    log_all(config, interrupted, None)
    log_all(config, failed, {**SUMMARY, "failure": "round 3 got 1 of 5 replies"})

    killed_run = mlflow_run(
        mlflow.MlflowClient(tracking_uri=f"sqlite:///{interrupted / MLFLOW_STORE}"), "fedbus"
    )
    assert killed_run.info.status == "KILLED"
    failed_run = mlflow_run(
        mlflow.MlflowClient(tracking_uri=f"sqlite:///{failed / MLFLOW_STORE}"), "fedbus"
    )
    assert failed_run.info.status == "FAILED"
    assert failed_run.data.tags["fedbus.failure"] == "round 3 got 1 of 5 replies"


def test_long_config_values_are_cut_to_what_mlflow_accepts(tmp_path: Path) -> None:
    long_name = "x" * 700
    config = tracking_config(tmp_path, f"data.client_column={long_name}")
    params = config_params(config)
    assert len(params["data.client_column"]) == 500
    assert params["data.client_column"].endswith("...")
    assert params["run.plot"] == "true"
    assert params["run.name"] == "fedbus"  # text unquoted


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    """A real MLflow tracking server on 127.0.0.1, stopped after the test."""
    port = free_port()
    log = (tmp_path / "mlflow-server.log").open("wb")
    command = [
        str(Path(sys.executable).with_name("mlflow")),
        "server",
        "--host=127.0.0.1",
        f"--port={port}",
        "--workers=1",
        f"--backend-store-uri=sqlite:///{tmp_path / 'server.db'}",
        f"--artifacts-destination={tmp_path / 'artifacts'}",
    ]
    # a session of its own: the server's worker processes are stopped with it, as a group
    server = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True
    )
    address = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120  # a cold start on a busy machine takes seconds
        while not _answers(f"{address}/health"):
            try:
                # waits on the process itself: a server that dies ends the wait at once
                server.wait(timeout=0.25)
            except subprocess.TimeoutExpired:
                if time.monotonic() > deadline:
                    pytest.fail("the MLflow server did not answer within 120 s")
            else:
                log.flush()
                output = (tmp_path / "mlflow-server.log").read_text(errors="replace")
                pytest.fail(f"the MLflow server exited ({server.returncode}):\n{output[-3000:]}")
        yield address
    finally:
        _stop_group(server)
        log.close()


def _stop_group(server: subprocess.Popen[bytes]) -> None:
    """Stop the server and the workers it started (its process group), forcibly if stuck."""
    for signal_number, grace in ((signal.SIGTERM, 30), (signal.SIGKILL, 30)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal_number)
        try:
            server.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


@pytest.mark.slow
def test_mlflow_logs_to_a_tracking_server(tmp_path: Path, mlflow_server: str) -> None:
    run_dir = tmp_path / "fedbus-20250101-000000"
    run_dir.mkdir()
    options = (
        "tracking.mlflow=true",
        f"tracking.mlflow_tracking_uri={mlflow_server}",
        "tracking.mlflow_experiment=shared experiment",
    )
    config = tracking_config(tmp_path, *options)
    log_all(config, run_dir, SUMMARY)
    assert not (run_dir / MLFLOW_STORE).exists()  # nothing stored locally

    client = mlflow.MlflowClient(tracking_uri=mlflow_server)
    run = mlflow_run(client, "shared experiment")
    assert_logged(client, run, config, run_dir, "FINISHED")

    # a second run of the same experiment joins it, apart from the first
    second = tmp_path / "fedbus-20250101-000001"
    second.mkdir()
    log_all(config, second, None)
    found = client.get_experiment_by_name("shared experiment")
    runs = {run.info.run_name: run.info.status for run in client.search_runs([found.experiment_id])}
    assert runs == {run_dir.name: "FINISHED", second.name: "KILLED"}


def test_trackers_are_empty_and_write_nothing_when_off(tmp_path: Path) -> None:
    trackers = log_all(tracking_config(tmp_path), tmp_path, SUMMARY)
    assert len(trackers) == 0
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("tracking.mlflow_tracking_uri=ftp://host/runs", "tracking.mlflow_tracking_uri: expected"),
        ("tracking.mlflow_tracking_uri=mlruns", "an http:// or https:// address"),
        ("tracking.mlflow_experiment=", "tracking.mlflow_experiment: expected a name"),
        ("tracking.tensorboard=yes", "tracking.tensorboard: expected true or false"),
        ("tracking.wandb=true", "tracking.wandb: unknown key"),
    ],
)
def test_bad_tracking_keys_are_refused(tmp_path: Path, option: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        tracking_config(tmp_path, option)


@pytest.mark.parametrize(
    "uri", ["http://127.0.0.1:5000", "https://mlflow.example", "sqlite:///runs/mlflow.db", ""]
)
def test_tracking_uris_of_servers_and_databases_are_accepted(tmp_path: Path, uri: str) -> None:
    config = tracking_config(tmp_path, f'tracking.mlflow_tracking_uri="{uri}"')
    assert config.tracking.mlflow_tracking_uri == uri


@pytest.mark.parametrize(("key", "module"), [("mlflow", "mlflow"), ("tensorboard", "tensorboard")])
def test_a_missing_extra_names_the_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str, module: str
) -> None:
    # None in sys.modules makes the import fail, as when the package is not installed
    monkeypatch.setitem(sys.modules, module, None)
    monkeypatch.setitem(sys.modules, f"{module}.summary", None)
    config = tracking_config(tmp_path, f"tracking.{key}=true")
    with pytest.raises(ConfigError, match=r"pip install 'fedbus\[tracking\]'") as refused:
        open_trackers(config, tmp_path)
    assert f"tracking.{key} = true needs {module}" in str(refused.value)
    assert list(tmp_path.iterdir()) == []  # nothing half-opened


def test_an_unusable_store_is_a_config_error(tmp_path: Path) -> None:
    store = tmp_path / "not-a-directory"
    store.write_text("")
    config = tracking_config(
        tmp_path, "tracking.mlflow=true", f"tracking.mlflow_tracking_uri=sqlite:///{store}/x.db"
    )
    with pytest.raises(ConfigError, match="MLflow could not open a run there"):
        open_trackers(config, tmp_path)


ASYNC_RUN = [
    "strategy.name=fedbuff",
    "aggregation.trigger=goal",
    "aggregation.goal=10",
    "aggregation.concurrency=20",
    "simulation.slow_fraction=0.2",
    "simulation.slow_factor=10",
    "simulation.speed=200",
    "simulation.workers=1",
    "federation.num_rounds=4",
    "run.plot=false",
    "run.save_model=false",
    "run.trace=false",
]


def test_a_real_runs_metrics_replayed_read_back_equal(tmp_path: Path) -> None:
    """Every line a real (asynchronous, stale) run writes goes through both trackers intact."""
    config = load_config(None, [*ASYNC_RUN, f"run.output_dir={tmp_path}"])
    result = experiment.run_experiment(config, quiet=True)
    lines = read_metrics(result.run_dir)
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert any(len(line["staleness"]) > 1 for line in lines)  # stale updates were aggregated

    replay = tmp_path / "replay"
    replay.mkdir()
    tracked = load_config(None, [*ASYNC_RUN, "tracking.mlflow=true", "tracking.tensorboard=true"])
    with open_trackers(tracked, replay) as trackers:
        for line in lines:
            trackers.log_round(line)
        trackers.close(summary)
    _assert_run_tracked(replay, lines)


def _assert_run_tracked(run_dir: Path, lines: list[dict[str, Any]]) -> None:
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{run_dir / MLFLOW_STORE}")
    run = mlflow_run(client, "fedbus")
    assert run.info.status == "FINISHED"
    for line in lines:
        for name, value in scalar_metrics(line).items():
            history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, name)}
            assert history[line["round"]] == pytest.approx(value), name
    assert list((run_dir / TENSORBOARD_DIR).glob("events.out.tfevents.*"))


@pytest.mark.skipif(
    "open_trackers" not in inspect.getsource(experiment),
    reason="run_experiment does not open trackers yet",
)
def test_run_experiment_tracks_its_rounds(tmp_path: Path) -> None:
    options = [*ASYNC_RUN, f"run.output_dir={tmp_path}", "tracking.mlflow=true"]
    options.append("tracking.tensorboard=true")
    result = experiment.run_experiment(load_config(None, options), quiet=True)
    _assert_run_tracked(result.run_dir, read_metrics(result.run_dir))
