"""Resuming a simulated run from its last completed round, bit for bit.

After each completed round (``run.checkpoint_every``), ``fedbus run`` writes ``checkpoint.npz``
(``fedbus.run.checkpoint``) with everything the rest of the run depends on, taken at the moment
the round ended, inside the server's handler:

- the global model, the round, the client sampler and the strategy's state (a server
  optimiser's moments, SCAFFOLD's control variate, differential privacy's noise generator);
- the server's progress: who contributed how often, who was sent work, its callbacks' state
  (early stopping's best value and patience);
- the simulation: the clock, the dropout and message-id streams, the messages in flight
  (encoded, as they would cross a network), the counters;
- every client's state (``ClientStateStore``: SCAFFOLD's client controls, Ditto's personal
  models, error feedback), and how many trace chunks were on disk.

``fedbus run --resume RUN_DIR`` builds the same federation from the run directory's own
``config.toml``, restores all of that and goes on: the rounds that follow are the ones the
uninterrupted run would have had, so its model is the same, bit for bit (``fedbus verify``
checks it). Timers are not saved (they are code): the only ones alive at a round's end are the
ended round's deadline and the watchdog's, which do nothing once their round is over.

Asynchronous aggregation is not resumable this way: at an aggregation, other clients' work is
still under way inside the server's schedule, which the checkpoint does not hold. Such a run
is refused with that reason (``check_resumable``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedbus.errors import ConfigError, InvalidArgumentError
from fedbus.fl import ClientStateStore, ServerBase
from fedbus.run.checkpoint import (
    CHECKPOINT_FILE,
    RESERVED_PREFIX,
    load_checkpoint,
    load_sampler_state,
    load_strategy_state,
    save_checkpoint,
)
from fedbus.run.config import Config, config_to_toml, load_config
from fedbus.run.outputs import CONFIG_FILE, METRICS_FILE, RunDirectory, atomic_file, load_model
from fedbus.run.trace import chunk_paths
from fedbus.runtime.simulation import Simulation, SimulationState

__all__ = [
    "ResumePoint",
    "check_resumable",
    "keep_metrics_up_to",
    "load_resume_point",
    "reopen",
    "resumed_config",
    "save_simulation_checkpoint",
]

_STATE_KEY = RESERVED_PREFIX + "simulation__"
_FRAME_PREFIX = RESERVED_PREFIX + "in_flight__:"
_CLIENT_PREFIX = RESERVED_PREFIX + "client__:"


@dataclass(frozen=True, slots=True)
class ResumePoint:
    """What ``checkpoint.npz`` holds for a simulated run to go on after ``completed`` rounds."""

    completed: int
    arrays: dict[str, np.ndarray[Any, Any]]
    sampler: dict[str, Any] | None
    strategy: dict[str, np.ndarray[Any, Any]]
    server: dict[str, Any]
    simulation: SimulationState
    clients: dict[int, dict[str, dict[str, np.ndarray[Any, Any]]]]
    trace_chunks: int

    def apply(self, server: ServerBase, simulation: Simulation, store: ClientStateStore) -> None:
        """Put the saved state into a federation built from the same configuration with this
        point's model, round and sampler (``build_federation(config, resume=point)``)."""
        server.strategy.load_state(self.strategy)
        server.load_progress_state(self.server)
        for node_id, entries in self.clients.items():
            store.replace_entries(node_id, entries)
        simulation.restore(self.simulation)


def check_resumable(config: Config) -> None:
    """Raise ``ConfigError`` when runs of ``config`` cannot be resumed bit for bit."""
    if config.aggregation.trigger != "all":
        raise ConfigError(
            f'aggregation.trigger = "{config.aggregation.trigger}": an asynchronous run cannot '
            "be resumed, since clients' work is still under way at every aggregation; run it "
            "again from the start (or set run.checkpoint_every = 0 to write no checkpoints)"
        )


def save_simulation_checkpoint(
    run_dir: Path,
    server: ServerBase,
    simulation: Simulation,
    store: ClientStateStore,
    completed_round: int,
    trace_chunks: int,
) -> Path:
    """Write ``checkpoint.npz``: call it from the server's round-end callback."""
    state = simulation.snapshot()
    more: dict[str, np.ndarray[Any, Any]] = {}
    for index, (_, _, frame) in enumerate(state.pending):
        more[f"{_FRAME_PREFIX}{index}"] = np.frombuffer(frame, dtype=np.uint8)
    clients: dict[str, list[str]] = {}
    for node_id in store.node_ids():
        for name, arrays in store.entries(node_id).items():
            clients.setdefault(str(node_id), []).append(name)
            for key, value in arrays.items():
                more[f"{_CLIENT_PREFIX}{node_id}:{name}:{key}"] = value
    document = {
        "simulation": state.to_json(),
        "server": server.progress_state(),
        "clients": clients,
        "trace_chunks": trace_chunks,
    }
    more[_STATE_KEY] = np.frombuffer(json.dumps(document).encode("utf-8"), dtype=np.uint8)
    return save_checkpoint(
        run_dir,
        completed_round,
        server.arrays.to_numpy_dict(),
        server.sampler_state(),
        server.strategy.state(),
        more,
    )


def load_resume_point(run_dir: Path) -> ResumePoint | None:
    """The resume point of a simulated run directory; None when no round has completed.

    Raises ``InvalidArgumentError`` naming the file when the checkpoint is not a simulation's
    (a deployment's ``fedbus server`` writes its own: resume it with ``fedbus server --resume``).
    """
    path = run_dir / CHECKPOINT_FILE
    if not path.exists():
        return None
    completed, arrays = load_checkpoint(run_dir)
    everything = load_model(path)
    raw = everything.get(_STATE_KEY)
    if raw is None:
        raise InvalidArgumentError(
            f"{path}: a checkpoint without the simulation's state (a deployment's, or from an "
            "older fedbus); resume a deployment with fedbus server --resume"
        )
    try:
        document = json.loads(np.asarray(raw, dtype=np.uint8).tobytes().decode("utf-8"))
        frames = []
        for index in range(len(document["simulation"]["pending"])):
            frames.append(everything[f"{_FRAME_PREFIX}{index}"].tobytes())
        clients: dict[int, dict[str, dict[str, np.ndarray[Any, Any]]]] = {}
        for node, names in document["clients"].items():
            for name in names:
                prefix = f"{_CLIENT_PREFIX}{int(node)}:{name}:"
                clients.setdefault(int(node), {})[name] = {
                    key.removeprefix(prefix): value
                    for key, value in everything.items()
                    if key.startswith(prefix)
                }
        simulation = SimulationState.from_json(document["simulation"], frames)
        server = dict(document["server"])
        trace_chunks = int(document["trace_chunks"])
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InvalidArgumentError(f"{path}: the simulation's state is unusable ({exc!r})") from exc
    return ResumePoint(
        completed=completed,
        arrays=arrays,
        sampler=load_sampler_state(run_dir),
        strategy=load_strategy_state(run_dir),
        server=server,
        simulation=simulation,
        clients=clients,
        trace_chunks=trace_chunks,
    )


def resumed_config(run_dir: Path, given: Config | None) -> Config:
    """The configuration of the run in ``run_dir``: its own ``config.toml``.

    Raises ``ConfigError`` when ``given`` is not None and differs from it: a run goes on with
    the configuration it started with.
    """
    if not run_dir.is_dir():
        raise ConfigError(f"--resume {run_dir}: no such run directory")
    stored = load_config(run_dir / CONFIG_FILE)
    if given is not None and config_to_toml(given) != config_to_toml(stored):
        raise ConfigError(
            f"--resume {run_dir}: the configuration given differs from the run's own "
            f"{run_dir / CONFIG_FILE}; resume with that one (or give no configuration)"
        )
    return stored


def reopen(run_dir: Path, completed: int, trace_chunks: int) -> float:
    """Make ``run_dir`` what it was after round ``completed``: the metrics of later rounds and
    trace chunks written after the checkpoint go (those rounds run again). Returns the wall
    seconds the run had taken by then."""
    keep_metrics_up_to(run_dir, completed)
    for path in chunk_paths(run_dir)[trace_chunks:]:
        path.unlink()
    return RunDirectory(run_dir).wall_time_so_far()


def keep_metrics_up_to(run_dir: Path, completed: int) -> None:
    """Drop the metric lines of rounds after ``completed``: those rounds run again."""
    if not (run_dir / METRICS_FILE).exists():
        return
    done = RunDirectory(run_dir).rounds_so_far()
    lines = [line for line in done if int(line.get("round", 0)) <= completed]
    text = "".join(json.dumps(line) + "\n" for line in lines)
    with atomic_file(run_dir / METRICS_FILE) as file:
        file.write(text.encode("utf-8"))
