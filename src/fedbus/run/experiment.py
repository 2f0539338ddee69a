"""Run a configured federation in simulation and write its run directory.

``run_experiment(config)`` is what ``fedbus run`` does: build the federation, run it with a
progress display, append one ``metrics.jsonl`` line per round as it ends (a crash loses nothing
already written), then write ``summary.json``, ``model.npz`` and ``curves.png``.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from fedbus.errors import ConfigError, RunError, RunInterruptedError
from fedbus.fl import RoundRecord, ServerBase
from fedbus.run.config import Config, config_to_toml
from fedbus.run.dashboard import LiveRun, serve_dashboard
from fedbus.run.federation import Federation, build_federation
from fedbus.run.outputs import RunDirectory, model_digest
from fedbus.run.plot import write_curves
from fedbus.run.progress import RoundProgress
from fedbus.run.resume import (
    check_resumable,
    load_resume_point,
    reopen,
    resumed_config,
    save_simulation_checkpoint,
)
from fedbus.run.trace import TraceWriter, trace_rows
from fedbus.run.tracking import Trackers, open_trackers
from fedbus.run.versions import write_versions

__all__ = [
    "DashboardOptions",
    "ExperimentResult",
    "metrics_line",
    "run_experiment",
    "run_statistics",
    "run_summary",
    "write_outputs",
]


@dataclass(frozen=True, slots=True)
class DashboardOptions:
    """Where ``fedbus run --dashboard`` serves its page, and the token it asks for (required
    off loopback)."""

    host: str = "127.0.0.1"
    port: int = 8050
    token: str | None = None


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
    """What happens at each round's end: the metrics line (with wall time and bytes), the
    trackers, the trace written so far, the checkpoint, the progress display, the dashboard."""

    def __init__(self, federation: Federation, run_dir: RunDirectory, earlier: float) -> None:
        self.federation, self.run_dir = federation, run_dir
        self.progress: RoundProgress | None = None
        self.trace: TraceWriter | None = None
        self.trackers = Trackers()
        self.live: LiveRun | None = None
        self.earlier = earlier  # seconds the run took before it was resumed
        self.started = time.perf_counter()
        stats = federation.simulation.stats  # a resumed run's counters go on from its checkpoint
        self._bytes = (stats.bytes_up, stats.bytes_down)
        self._fed = 0  # trace entries the dashboard has seen

    def wall_time(self) -> float:
        return self.earlier + time.perf_counter() - self.started

    def __call__(self, record: RoundRecord) -> None:
        assert self.progress is not None  # set by run_experiment before the simulation starts
        federation = self.federation
        simulation = federation.simulation
        stats = simulation.stats
        up, down = stats.bytes_up - self._bytes[0], stats.bytes_down - self._bytes[1]
        self._bytes = (stats.bytes_up, stats.bytes_down)
        line = metrics_line(
            record,
            server_round=record.round,
            simulated_time=record.time,
            wall_time=self.wall_time(),
            bytes_up=up,
            bytes_down=down,
        )
        self.run_dir.append_metrics(line)
        self.trackers.log_round(line)
        self.feed_dashboard(line)
        config = federation.config
        every = config.run.checkpoint_every
        due = every > 0 and config.aggregation.trigger == "all"
        if due and federation.server.is_due(record.round, every):
            # everything up to this moment on disk first: the checkpoint names the chunks
            if self.trace is not None:
                self.trace.drain(simulation.trace, at_least=1)
            save_simulation_checkpoint(
                self.run_dir.path,
                federation.server,
                simulation,
                federation.client_fn.state,
                record.round,
                0 if self.trace is None else self.trace.chunks,
            )
        elif self.trace is not None:
            self.trace.drain(simulation.trace)
        self._fed = min(self._fed, len(simulation.trace))  # the list empties when drained
        self.progress.update(record.round, line)

    def feed_dashboard(self, line: dict[str, Any] | None) -> None:
        """Show the messages settled since the last call, then the round (if ``line``)."""
        live = self.live
        if live is None:
            return
        entries = self.federation.simulation.trace
        for entry in trace_rows(entries[self._fed :]):
            live.message(
                entry.src,
                entry.dst,
                entry.type,
                entry.bytes,
                entry.outcome,
                entry.settled,
                entry.error,
            )
        self._fed = len(entries)
        if line is not None:
            live.round_ended(line)


def run_experiment(
    config: Config | None = None,
    *,
    quiet: bool = False,
    resume: str | Path | None = None,
    dashboard: DashboardOptions | None = None,
) -> ExperimentResult:
    """Run ``config`` in simulation; write and return its outputs.

    ``resume`` goes on with a stopped run from its last checkpoint instead (``config`` may then
    be None; given, it must be the run's own). ``dashboard`` serves a live dashboard while the
    run goes on.

    Raises ``RunError`` if the run stopped early (e.g. too few replies), and ``RunInterruptedError``
    on Ctrl-C; the metrics, summary, model and curves of the rounds that completed are written
    first.
    """
    if resume is not None:
        config = resumed_config(Path(resume), config)
        check_resumable(config)
        _check_unfinished(Path(resume), config)
        point = load_resume_point(Path(resume))
        if point is None and RunDirectory(Path(resume)).rounds_so_far():
            raise ConfigError(
                f"--resume {resume}: rounds completed but no checkpoint was written "
                "(run.checkpoint_every = 0); run it again from the start"
            )
    elif config is None:
        raise ConfigError("run_experiment: give a configuration, or resume=RUN_DIR")
    else:
        point = None
    log: _RoundLog | None = None

    def on_round_end(record: RoundRecord) -> None:
        assert log is not None
        log(record)

    # Built before anything is written: a configuration it refuses leaves no run directory.
    federation = build_federation(config, on_round_end=on_round_end, resume=point)
    completed = 0 if point is None else point.completed
    if resume is None:
        run_dir = RunDirectory.create(
            config.run.output_dir, config.run.name, config_to_toml(config)
        )
        write_versions(run_dir.path)
        earlier = 0.0
    else:
        run_dir = RunDirectory(Path(resume))
        earlier = reopen(run_dir.path, completed, 0 if point is None else point.trace_chunks)
    log = _RoundLog(federation, run_dir, earlier)
    try:
        log.trackers = open_trackers(config, run_dir.path)
    except ConfigError:
        if resume is None:  # refused before any round: no run directory left behind
            shutil.rmtree(run_dir.path, ignore_errors=True)
        raise
    if config.run.trace:
        log.trace = TraceWriter(run_dir.path, start=0 if point is None else point.trace_chunks)
    handle = None
    if dashboard is not None:
        log.live = LiveRun(run_dir.path.name, run_dir.path, config.federation.num_rounds)
        if resume is not None:
            for line in run_dir.rounds_so_far():
                log.live.round_ended(line)
        handle = serve_dashboard([log.live], dashboard.host, dashboard.port, dashboard.token)
        print(f"dashboard: {handle.url}", flush=True)
    try:
        return _run(config, federation, run_dir, log, quiet=quiet, resumed=resume is not None)
    finally:
        if handle is not None:
            handle.close()


def _run(
    config: Config,
    federation: Federation,
    run_dir: RunDirectory,
    log: _RoundLog,
    *,
    quiet: bool,
    resumed: bool,
) -> ExperimentResult:
    server = federation.server
    try:
        with RoundProgress(config.federation.num_rounds, quiet=quiet) as progress:
            log.progress = progress
            log.started = time.perf_counter()
            outcome = federation.simulation.run()
    except ConfigError:
        log.trackers.close(None)
        # Refused as the simulation started (a Ray cluster that does not answer at
        # simulation.ray_address), before any round: like any refused configuration, it leaves
        # no run directory behind.
        if not server.history and not resumed:
            shutil.rmtree(run_dir.path, ignore_errors=True)
        raise
    except KeyboardInterrupt:
        _interrupted(config, federation, run_dir, log)
    if log.trace is not None:
        log.trace.drain(outcome.trace, at_least=1)
    log.feed_dashboard(None)
    failure = server.failure
    lines = run_dir.rounds_so_far()
    if failure is None and not server.finished:
        failure = (
            f"the simulation ran out of events after {len(lines)} of "
            f"{config.federation.num_rounds} rounds"
        )
        if server.last_failure:
            failure += f"; last handler failure: {server.last_failure}"
        wait = server.watchdog.current()
        if wait is not None:  # a wait no event will ever end: clients that never answer
            what, nodes, *_ = wait.waiting
            shown = ", ".join(map(str, nodes[:20])) + (" ..." if len(nodes) > 20 else "")
            failure += f"; {wait.label} was waiting {what}" + (f" (nodes {shown})" if nodes else "")
    arrays = server.arrays.to_numpy_dict()
    summary = run_summary(lines, server, arrays, wall_time=log.wall_time(), failure=failure)
    summary.update(
        simulated_time=outcome.time,
        bytes_up=outcome.stats.bytes_up,
        bytes_down=outcome.stats.bytes_down,
        messages=outcome.stats.messages_sent,
    )
    if log.live is not None:
        log.live.finished("failed" if failure else "finished", summary)
    try:
        write_outputs(config, run_dir, summary, arrays)
    finally:
        log.trackers.close(summary)
    return ExperimentResult(run_dir.path, summary, federation)


def _interrupted(
    config: Config, federation: Federation, run_dir: RunDirectory, log: _RoundLog
) -> NoReturn:
    """Ctrl-C: write what the completed rounds made, say how to go on, raise RunInterruptedError."""
    if log.trace is not None:  # the interrupted round's messages too; a resume replaces them
        log.trace.drain(federation.simulation.trace, at_least=1)
    lines = run_dir.rounds_so_far()
    point = load_resume_point(run_dir.path) if lines else None
    completed = len(lines)
    # the model of the last completed round: the checkpoint's when it is from that round (the
    # server may have been interrupted half way through the next aggregation), else the
    # server's own
    if point is not None and point.completed == completed:
        arrays = point.arrays
    else:
        arrays = federation.server.arrays.to_numpy_dict()
    total = config.federation.num_rounds
    failure = f"interrupted after round {completed} of {total}"
    summary = run_summary(
        lines, federation.server, arrays, wall_time=log.wall_time(), failure=failure
    )
    summary.update(
        simulated_time=float(lines[-1]["simulated_time"]) if lines else 0.0,
        bytes_up=sum(int(line["bytes_up"]) for line in lines),
        bytes_down=sum(int(line["bytes_down"]) for line in lines),
        messages=None,
        interrupted=True,
        resumable=point is not None,
    )
    if log.live is not None:
        log.live.finished("interrupted", summary)
    try:
        with contextlib.suppress(RunError):
            write_outputs(config, run_dir, summary, arrays)
    finally:
        log.trackers.close(None)
    where = run_dir.path
    if point is not None:
        advice = f"continue with: fedbus run --resume {where}"
    elif config.aggregation.trigger != "all":
        advice = "an asynchronous run cannot be resumed; run it again to go on"
    elif config.run.checkpoint_every == 0:
        advice = "run.checkpoint_every = 0 wrote no checkpoint to resume from"
    else:
        advice = "no round had completed: run it again"
    raise RunInterruptedError(
        f"interrupted after round {completed} of {total}; the summary, model and curves of "
        f"the completed rounds are in {where}\n{advice}"
    )


def _check_unfinished(path: Path, config: Config) -> None:
    """Raise ``ConfigError`` when the run in ``path`` has nothing left to do."""
    run_dir = RunDirectory(path)
    if run_dir.summary_path.exists() and not run_dir.read_summary().get("interrupted"):
        raise ConfigError(
            f"--resume {path}: the run has finished (summary.json); nothing to resume"
        )
    total = config.federation.num_rounds
    if len(run_dir.rounds_so_far()) >= total:
        raise ConfigError(
            f"--resume {path}: all {total} rounds had completed when it stopped; the last "
            "model is in its checkpoint.npz"
        )


def run_summary(
    lines: Sequence[Mapping[str, Any]],
    server: ServerBase,
    arrays: Mapping[str, np.ndarray[Any, Any]],
    *,
    wall_time: float,
    failure: str | None,
) -> dict[str, Any]:
    """``summary.json`` of a run whose rounds' lines are ``lines`` (a resumed run's included)
    and whose final model is ``arrays``; the runtime adds its clock, bytes and messages."""
    final_accuracy = next(
        (
            line["test_accuracy"]
            for line in reversed(lines)
            if line.get("test_accuracy") is not None
        ),
        None,
    )
    return {
        "final_test_accuracy": final_accuracy,
        "num_rounds": len(lines),
        "simulated_time": float(lines[-1]["simulated_time"]) if lines else 0.0,
        "wall_time": wall_time,
        **run_statistics(lines, server),
        "model_sha256": model_digest(arrays),
        "failure": failure,
    }


def run_statistics(lines: Sequence[Mapping[str, Any]], server: ServerBase) -> dict[str, Any]:
    """A run's totals for ``summary.json``: straggler wait, staleness and participation.

    ``lines`` are the run's ``metrics.jsonl`` lines (every round, a resumed run's earlier lives
    included). ``straggler_wait`` sums the rounds' waits (seconds); ``staleness`` merges the
    rounds' histograms; ``participation`` maps each client that contributed to how many of its
    updates were aggregated, and ``clients_participated`` counts those clients. A private run
    adds its final ``epsilon``; ``stopped_early`` says why the strategy ended the run before its
    last round (a privacy budget), or is None.
    """
    staleness: dict[int, int] = {}
    for line in lines:
        for age, count in dict(line.get("staleness") or {}).items():
            staleness[int(age)] = staleness.get(int(age), 0) + int(count)
    last = lines[-1] if lines else {}
    return {
        "straggler_wait": sum(float(line.get("straggler_wait") or 0.0) for line in lines),
        "stale_dropped": sum(int(line.get("stale_dropped") or 0) for line in lines),
        "staleness": {str(age): count for age, count in sorted(staleness.items())},
        "clients_participated": len(server.participation),
        "participation": {str(node): n for node, n in sorted(server.participation.items())},
        **({"epsilon": last["epsilon"]} if last.get("epsilon") is not None else {}),
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
