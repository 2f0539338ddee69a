"""Experiment tracking: a run's metrics in TensorBoard and MLflow too (``fedbus[tracking]``).

The run directory stays the record of a run; a tracker copies what it holds to a tool built to
compare runs. ``open_trackers`` opens those the ``[tracking]`` section turns on; the run then
hands each ``metrics.jsonl`` line to ``log_round`` and its summary to ``close``::

    RUN_DIR/
    ├── tensorboard/     tracking.tensorboard: event files (tensorboard --logdir RUN_DIR)
    └── mlflow.db        tracking.mlflow with an empty mlflow_tracking_uri: a SQLite store

Every numeric value of a line is logged at step = its ``round``: nested tables as
``name/key`` (``staleness/0``, the updates aggregated 0 versions old), with the mean staleness
as ``staleness/mean``; None, text and booleans are skipped. MLflow also gets the configuration
as parameters (``federation.num_rounds``), the run directory's name as the run's name, and a
status: FINISHED, FAILED (the summary has a ``failure``) or KILLED (no summary: interrupted).

Examples
--------
>>> import tempfile
>>> from pathlib import Path
>>> from fedbus.run.config import Config
>>> with open_trackers(Config(), Path(tempfile.mkdtemp())) as trackers:
...     trackers.log_round({"round": 1, "test_accuracy": 0.5})
...     trackers.close({"failure": None})
>>> len(trackers)
0
>>> scalar_metrics({"round": 2, "test_loss": 0.25, "train_loss": None, "staleness": {"1": 4}})
{'test_loss': 0.25, 'staleness/1': 4.0, 'staleness/mean': 1.0}
"""

from __future__ import annotations

import importlib
import numbers
import re
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from fedbus.errors import ConfigError, RunError
from fedbus.run.config import Config, config_to_dict
from fedbus.run.schema import show

__all__ = [
    "MLFLOW_STORE",
    "TENSORBOARD_DIR",
    "MlflowTracker",
    "TensorBoardTracker",
    "Tracker",
    "Trackers",
    "config_params",
    "open_trackers",
    "scalar_metrics",
]

#: Folder of the run directory that holds the TensorBoard event files.
TENSORBOARD_DIR = "tensorboard"
#: The SQLite file of the run directory where MLflow stores runs when no URI is configured.
#: Not a ``file:`` store: MLflow 3 refuses those unless MLFLOW_ALLOW_FILE_STORE is set.
MLFLOW_STORE = "mlflow.db"
_MLFLOW_ARTIFACTS = "mlartifacts"
_INSTALL = "pip install 'fedbus[tracking]'"
# 500 characters: the limit of MLflow servers before 2.x (6000 since), so any server takes it
_PARAM_LENGTH = 500
# MLflow's log_batch takes at most 100 parameters and 1000 metrics per call
_PARAMS_PER_BATCH = 100
_METRICS_PER_BATCH = 1000
# MLflow metric names: letters, digits and _ - . space : /
_METRIC_NAME_DROPS = re.compile(r"[^\w\-. :/]")


class Tracker:
    """Something a run reports to: one metrics line per round, then its end.

    Subclasses override both methods; the base class ignores everything.
    """

    def log_round(self, line: Mapping[str, Any]) -> None:
        """Record one ``metrics.jsonl`` line (``fedbus.run.experiment.metrics_line``)."""

    def close(self, summary: Mapping[str, Any] | None) -> None:
        """End the run: ``summary`` is ``summary.json``'s content, or None when interrupted."""


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def scalar_metrics(line: Mapping[str, Any]) -> dict[str, float]:
    """The numeric values of a metrics line, by metric name; ``round`` is the step, not one.

    Nested tables give ``name/key``; a ``staleness`` histogram (``{"age": count}``) also gives
    ``staleness/mean``, the mean age of the updates aggregated, when it counts any.
    """
    metrics: dict[str, float] = {}
    for name, value in line.items():
        if name == "round":
            continue
        if _is_number(value):
            metrics[name] = float(value)
        elif isinstance(value, Mapping):
            nested = {f"{name}/{key}": float(v) for key, v in value.items() if _is_number(v)}
            metrics.update(nested)
            if name == "staleness":
                metrics.update(_mean_staleness(value))
    return metrics


def _mean_staleness(histogram: Mapping[str, Any]) -> dict[str, float]:
    counts = {int(age): count for age, count in histogram.items() if str(age).isdigit()}
    total = sum(counts.values())
    if total <= 0:
        return {}
    return {"staleness/mean": sum(age * count for age, count in counts.items()) / total}


def _summary_metrics(summary: Mapping[str, Any]) -> dict[str, float]:
    """The summary's top-level numbers, as ``summary/<key>`` (per-client tables left out)."""
    return {f"summary/{key}": float(value) for key, value in summary.items() if _is_number(value)}


def config_params(config: Config) -> dict[str, str]:
    """Every key of ``config`` as ``{"section.key": text}``, text as in TOML but unquoted.

    A text longer than 500 characters (a long path) is cut, ending in ``...``.
    """
    params: dict[str, str] = {}
    for section, keys in config_to_dict(config).items():
        for key, value in keys.items():
            text = value if isinstance(value, str) else show(value)
            if len(text) > _PARAM_LENGTH:
                text = text[: _PARAM_LENGTH - 3] + "..."
            params[f"{section}.{key}"] = text
    return params


def _import(module: str, key: str) -> Any:
    """Import an optional library lazily, with the extra to install when it is missing."""
    try:
        # import_module types the library as Any: mlflow alone would double mypy's time
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(
            f"tracking.{key} = true needs {module.partition('.')[0]}, which is not "
            f"installed: {_INSTALL}, or set tracking.{key} = false"
        ) from exc


class TensorBoardTracker(Tracker):
    """Writes each metric as a TensorBoard scalar into ``RUN_DIR/tensorboard/``.

    Uses TensorBoard's own writer (``tensorboard.summary.Writer``): neither TensorFlow nor
    PyTorch is needed. Event files are flushed after every round, so a running TensorBoard
    shows a run as it goes and a crash loses no finished round.
    """

    def __init__(self, log_dir: Path) -> None:
        summary = _import("tensorboard.summary", "tensorboard")
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir = log_dir
        self._writer = summary.Writer(str(log_dir))
        self._step = 0

    def log_round(self, line: Mapping[str, Any]) -> None:
        self._step = int(line.get("round") or self._step)
        for name, value in scalar_metrics(line).items():
            self._writer.add_scalar(name, value, self._step)
        self._writer.flush()

    def close(self, summary: Mapping[str, Any] | None) -> None:
        for name, value in _summary_metrics(summary or {}).items():
            self._writer.add_scalar(name, value, self._step)
        self._writer.close()


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _metric_name(name: str) -> str:
    return _METRIC_NAME_DROPS.sub("_", name)[:250]


class MlflowTracker(Tracker):
    """Logs a run to MLflow through ``MlflowClient`` and the run's own id.

    No fluent ``mlflow.start_run`` state is used, so several runs in one process never mix.
    An error from MLflow (a server that does not answer, a refused store) is raised as
    ``ConfigError`` while opening and as ``RunError`` during the run, with MLflow's error
    chained; ``metrics.jsonl`` in the run directory holds every round either way.
    """

    def __init__(self, tracking_uri: str, experiment: str, run_dir: Path, config: Config) -> None:
        mlflow = _import("mlflow", "mlflow")
        self._entities = _import("mlflow.entities", "mlflow")
        self.tracking_uri = tracking_uri or f"sqlite:///{(run_dir / MLFLOW_STORE).resolve()}"
        self._step = 0
        self.run_id = ""
        try:
            with warnings.catch_warnings():
                # SQLAlchemy 2.1 deprecates a loader option MLflow's SQL store uses, once per
                # process: nothing a fedbus user can act on
                warnings.simplefilter("ignore", DeprecationWarning)
                self._client = mlflow.MlflowClient(tracking_uri=self.tracking_uri)
                artifacts = None if tracking_uri else (run_dir / _MLFLOW_ARTIFACTS).resolve()
                experiment_id = self._experiment_id(mlflow, experiment, artifacts)
                run = self._client.create_run(
                    experiment_id,
                    run_name=run_dir.name,
                    tags={"fedbus.run_dir": str(run_dir.resolve())},
                )
                self.run_id = str(run.info.run_id)
                self._log_params(config_params(config))
        except ConfigError:
            raise
        except Exception as exc:  # MLflow's errors, and OSError from a SQLite path it cannot use
            if self.run_id:
                self._client.set_terminated(self.run_id, "FAILED")
            reason = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            raise ConfigError(
                f"tracking.mlflow_tracking_uri {self.tracking_uri!r}: MLflow could not open a "
                f"run there: {reason}"
            ) from exc

    def _experiment_id(self, mlflow: Any, name: str, artifacts: Path | None) -> str:
        found = self._client.get_experiment_by_name(name)
        if found is None:
            location = None if artifacts is None else artifacts.as_uri()
            try:
                return str(self._client.create_experiment(name, artifact_location=location))
            except mlflow.exceptions.MlflowException as exc:
                # another run created it since: use that one
                found = self._client.get_experiment_by_name(name)
                if found is None:
                    raise exc from None
        if found.lifecycle_stage != "active":
            raise ConfigError(
                f"tracking.mlflow_experiment {name!r}: the experiment is deleted in MLflow; "
                "restore it (mlflow experiments restore) or choose another name"
            )
        return str(found.experiment_id)

    def _log_params(self, params: Mapping[str, str]) -> None:
        entries = [self._entities.Param(key, value) for key, value in params.items()]
        for chunk in _chunks(entries, _PARAMS_PER_BATCH):
            self._client.log_batch(self.run_id, params=list(chunk))

    def _log_metrics(self, metrics: Mapping[str, float]) -> None:
        now = int(time.time() * 1000)
        entries = [
            self._entities.Metric(_metric_name(name), value, now, self._step)
            for name, value in metrics.items()
        ]
        for chunk in _chunks(entries, _METRICS_PER_BATCH):
            self._client.log_batch(self.run_id, metrics=list(chunk))

    def _translated(self, action: str) -> RunError:
        return RunError(f"MLflow at {self.tracking_uri!r}: could not {action} run {self.run_id}")

    def log_round(self, line: Mapping[str, Any]) -> None:
        self._step = int(line.get("round") or self._step)
        try:
            self._log_metrics(scalar_metrics(line))
        except Exception as exc:
            raise self._translated(f"log round {self._step} to") from exc

    def close(self, summary: Mapping[str, Any] | None) -> None:
        failure = None if summary is None else summary.get("failure")
        status = "KILLED" if summary is None else "FAILED" if failure is not None else "FINISHED"
        try:
            if summary is not None:
                self._log_metrics(_summary_metrics(summary))
            if failure is not None:
                self._client.set_tag(self.run_id, "fedbus.failure", str(failure)[:5000])
            self._client.set_terminated(self.run_id, status)
        except Exception as exc:
            raise self._translated(f"end ({status})") from exc


class Trackers(Tracker):
    """The trackers a configuration turns on, used as one; possibly none.

    ``close`` closes each once, even when one fails (the first error is raised after); used
    as a context manager, leaving the block without ``close`` closes them as interrupted.
    """

    def __init__(self, trackers: Sequence[Tracker] = ()) -> None:
        self.trackers: tuple[Tracker, ...] = tuple(trackers)
        self.closed = False

    def __len__(self) -> int:
        return len(self.trackers)

    def log_round(self, line: Mapping[str, Any]) -> None:
        for tracker in self.trackers:
            tracker.log_round(line)

    def close(self, summary: Mapping[str, Any] | None) -> None:
        if self.closed:
            return
        self.closed = True
        errors: list[Exception] = []
        for tracker in self.trackers:
            try:
                tracker.close(summary)
            except Exception as exc:  # the others still close; the first is raised after
                errors.append(exc)
        if errors:
            raise errors[0]

    def __enter__(self) -> Trackers:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close(None)


def open_trackers(config: Config, run_dir: Path) -> Trackers:
    """Open the trackers ``config.tracking`` turns on for the run writing ``run_dir``.

    With both off this imports nothing and returns an empty ``Trackers``.

    Raises
    ------
    ConfigError
        A tracker's library is not installed (``pip install 'fedbus[tracking]'``), or MLflow
        cannot open a run at ``tracking.mlflow_tracking_uri``.
    """
    settings = config.tracking
    # both libraries first: a missing one leaves nothing half-opened in the run directory
    if settings.tensorboard:
        _import("tensorboard.summary", "tensorboard")
    if settings.mlflow:
        _import("mlflow", "mlflow")
    opened: list[Tracker] = []
    try:
        if settings.tensorboard:
            opened.append(TensorBoardTracker(run_dir / TENSORBOARD_DIR))
        if settings.mlflow:
            uri, experiment = settings.mlflow_tracking_uri, settings.mlflow_experiment
            opened.append(MlflowTracker(uri, experiment, run_dir, config))
    except BaseException:
        Trackers(opened).close(None)
        raise
    return Trackers(opened)
