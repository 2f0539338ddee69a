"""Run a configured federation in simulation and write its run directory.

``run_experiment(config)`` is what ``fedbus run`` does: build the federation, run it with a
progress display, append one ``metrics.jsonl`` line per round as it ends (a crash loses nothing
already written), then write ``summary.json``, ``model.npz`` and ``curves.png``.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedbus.errors import ConfigError, RunError
from fedbus.fl import RoundRecord, ServerBase
from fedbus.run.config import Config, config_to_toml
from fedbus.run.federation import Federation, build_federation
from fedbus.run.outputs import RunDirectory
from fedbus.run.plot import write_curves
from fedbus.run.progress import RoundProgress
from fedbus.run.trace import TRACE_FILE, trace_rows, write_trace

__all__ = [
    "ExperimentResult",
    "metrics_line",
    "run_experiment",
    "run_statistics",
    "write_outputs",
]


@dataclass(frozen=True, slots=True)
class ExperimentResult:
    """Where a run wrote its outputs, and its summary."""

    run_dir: Path
    summary: dict[str, Any]
    federation: Federation


def metrics_line(
    record: RoundRecord,
    *,
    server_round: int,
    simulated_time: float,
    wall_time: float,
    bytes_up: int,
    bytes_down: int,
) -> dict[str, Any]:
    """One ``metrics.jsonl`` line: a round's record with the runtime's clock and bytes added.

    What the strategy reported for the round (differential privacy's ``epsilon``,
    ``clipping_norm`` and ``noise_std``) is added as it is. Federated-evaluation metrics beyond
    loss and accuracy (Ditto's ``personal_accuracy``) are added as ``federated_<name>``.
    ``staleness`` maps each staleness (in model versions, as text: JSON keys are strings) to
    the number of updates aggregated that stale.
    """
    extra = {
        f"federated_{name}": value
        for name, value in record.federated_metrics.items()
        if name not in ("loss", "accuracy", "num_examples")
    }
    return {
        "round": server_round,
        "simulated_time": simulated_time,
        "wall_time": wall_time,
        "train_loss": record.train_loss,
        "test_accuracy": record.test_accuracy,
        "test_loss": record.test_loss,
        "federated_accuracy": record.federated_accuracy,
        "federated_loss": record.federated_loss,
        "clients_sampled": record.clients_sampled,
        "clients_replied": record.clients_replied,
        "clients_failed": record.clients_failed,
        "late_replies": record.late_replies,
        "refused_replies": record.refused_replies,
        "retries": record.retries,
        "straggler_wait": record.straggler_wait,
        "stale_dropped": record.stale_dropped,
        "staleness": {str(age): count for age, count in sorted(record.staleness.items())},
        "bytes_up": bytes_up,
        "bytes_down": bytes_down,
        **record.strategy_metrics,
        **extra,
    }


class _RoundLog:
    """Turns each ``RoundRecord`` into a metrics line, with wall time and bytes added."""

    def __init__(self) -> None:
        self.federation: Federation | None = None
        self.run_dir: RunDirectory | None = None
        self.progress: RoundProgress | None = None
        self.started = time.perf_counter()
        self._bytes = (0, 0)

    def __call__(self, record: RoundRecord) -> None:
        # All three are set by run_experiment before the simulation starts.
        assert self.federation is not None
        assert self.run_dir is not None
        assert self.progress is not None
        stats = self.federation.simulation.stats
        up, down = stats.bytes_up - self._bytes[0], stats.bytes_down - self._bytes[1]
        self._bytes = (stats.bytes_up, stats.bytes_down)
        line = metrics_line(
            record,
            server_round=record.round,
            simulated_time=record.time,
            wall_time=time.perf_counter() - self.started,
            bytes_up=up,
            bytes_down=down,
        )
        self.run_dir.append_metrics(line)
        self.progress.update(record.round, line)


def run_experiment(config: Config, *, quiet: bool = False) -> ExperimentResult:
    """Run ``config`` in simulation; write and return its outputs.

    Raises ``RunError`` if the run stopped early (e.g. too few replies); the metrics of the
    rounds that completed and a summary with ``failure`` are written first.
    """
    log = _RoundLog()
    # Built before anything is written: a configuration it refuses leaves no run directory.
    federation = log.federation = build_federation(config, on_round_end=log)
    run_dir = log.run_dir = RunDirectory.create(
        config.run.output_dir, config.run.name, config_to_toml(config)
    )
    try:
        with RoundProgress(config.federation.num_rounds, quiet=quiet) as progress:
            log.progress = progress
            log.started = time.perf_counter()
            outcome = federation.simulation.run()
    except ConfigError:
        # Refused as the simulation started (a Ray cluster that does not answer at
        # simulation.ray_address), before any round: like any refused configuration, it leaves
        # no run directory behind.
        if not federation.server.history:
            shutil.rmtree(run_dir.path, ignore_errors=True)
        raise
    server = federation.server
    history = server.history
    failure = server.failure
    if failure is None and not server.finished:
        failure = (
            f"the simulation ran out of events after {len(history)} of "
            f"{config.federation.num_rounds} rounds"
        )
        if server.last_failure:
            failure += f"; last handler failure: {server.last_failure}"
    final_accuracy = next(
        (r.test_accuracy for r in reversed(history) if r.test_accuracy is not None), None
    )
    summary: dict[str, Any] = {
        "final_test_accuracy": final_accuracy,
        "num_rounds": len(history),
        "simulated_time": outcome.time,
        "wall_time": time.perf_counter() - log.started,
        "bytes_up": outcome.stats.bytes_up,
        "bytes_down": outcome.stats.bytes_down,
        "messages": outcome.stats.messages_sent,
        **run_statistics(server),
        "failure": failure,
    }
    if config.run.trace:
        write_trace(run_dir.path / TRACE_FILE, trace_rows(outcome.trace))
    write_outputs(config, run_dir, summary, server.arrays.to_numpy_dict())
    return ExperimentResult(run_dir.path, summary, federation)


def run_statistics(server: ServerBase) -> dict[str, Any]:
    """A run's totals for ``summary.json``: straggler wait, staleness and participation.

    ``straggler_wait`` sums the rounds' waits (seconds); ``staleness`` merges the rounds'
    histograms; ``participation`` maps each client that contributed to how many of its updates
    were aggregated, and ``clients_participated`` counts those clients. A private run adds
    its final ``epsilon``; ``stopped_early`` says why the strategy ended the run before its
    last round (a privacy budget), or is None.
    """
    staleness: dict[int, int] = {}
    last = server.history[-1].strategy_metrics if server.history else {}
    for record in server.history:
        for age, count in record.staleness.items():
            staleness[age] = staleness.get(age, 0) + count
    return {
        "straggler_wait": sum(record.straggler_wait for record in server.history),
        "stale_dropped": sum(record.stale_dropped for record in server.history),
        "staleness": {str(age): count for age, count in sorted(staleness.items())},
        "clients_participated": len(server.participation),
        "participation": {str(node): n for node, n in sorted(server.participation.items())},
        **({"epsilon": last["epsilon"]} if "epsilon" in last else {}),
        "stopped_early": server.stopped_early,
    }


def write_outputs(
    config: Config,
    run_dir: RunDirectory,
    summary: dict[str, Any],
    arrays: dict[str, np.ndarray[Any, Any]],
) -> None:
    """Finish a run directory: summary, model and curves as configured.

    Raises ``RunError`` when ``summary["failure"]`` is set, after writing what there is.
    """
    run_dir.write_summary(summary)
    if config.run.save_model:
        run_dir.save_model(arrays)
    if config.run.plot and summary["num_rounds"] > 0:
        write_curves(run_dir.path)
    failure = summary["failure"]
    if failure is not None:
        raise RunError(f"{failure} (outputs so far in {run_dir.path})")
