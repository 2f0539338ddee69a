"""Round checkpoints of a deployment, so that a restarted server continues where it stopped.

After each completed round the server writes ``checkpoint.npz`` in its run directory: the
global model's arrays, the number of the round they come from, the client sampler's state (as
JSON text, so the resumed run samples as the uninterrupted one would) and the strategy's state
(a server optimiser's moments, SCAFFOLD's control variate), in one file replaced
atomically (written beside it, then ``os.replace``). A crash at any moment leaves either the
previous checkpoint or the new one, never a model of one round labelled with another.

``Checkpointing`` is the callback (``fedbus.fl.callbacks``) that writes it after each round;
``fedbus server`` installs it. No pickle: the file is read with ``allow_pickle=False``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fedbus.errors import InvalidArgumentError
from fedbus.fl import Callback, RoundRecord, ServerBase
from fedbus.run.outputs import atomic_file, load_model, save_arrays

__all__ = [
    "CHECKPOINT_FILE",
    "RESERVED_PREFIX",
    "Checkpointing",
    "load_checkpoint",
    "load_sampler_state",
    "load_strategy_state",
    "save_checkpoint",
]

CHECKPOINT_FILE = "checkpoint.npz"
# Names the archive keeps for itself; model arrays keep their own names, and no model array's
# name may start with this.
RESERVED_PREFIX = "__fedbus_"
# Reserved name of the round number inside the archive.
_ROUND_KEY = "__fedbus_completed_round__"
_SAMPLER_KEY = "__fedbus_sampler_state__"
# Strategy state arrays are stored under this prefix followed by their own key.
_STRATEGY_PREFIX = "__fedbus_strategy__:"


class Checkpointing(Callback):
    """Write ``checkpoint.npz`` into ``run_dir`` after every ``every`` rounds and the last one.

    Parameters
    ----------
    run_dir
        The run directory; the file is replaced atomically each time.
    every
        Rounds between checkpoints (1: after every round; 0: after the last round only).

    Example
    -------
    >>> server = Server(FedAvg(), arrays, num_rounds=50, clients_per_round=10,
    ...                 callbacks=[Checkpointing("runs/mine")])  # doctest: +SKIP
    """

    def __init__(self, run_dir: str | Path, every: int = 1) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 0:
            raise InvalidArgumentError(
                f"Checkpointing: every must be an integer >= 0, got {every!r}"
            )
        self.run_dir, self.every = Path(run_dir), every

    def on_round_end(self, server: ServerBase, record: RoundRecord) -> None:
        """Save the model, sampler and strategy after ``record.round`` if it is due."""
        if server.is_due(record.round, self.every):
            save_checkpoint(
                self.run_dir,
                record.round,  # a resumed server keeps the run's numbering
                server.arrays.to_numpy_dict(),
                server.sampler_state(),
                server.strategy.state(),
            )

    def __repr__(self) -> str:
        return f"Checkpointing({str(self.run_dir)!r}, every={self.every})"


def save_checkpoint(
    run_dir: str | Path,
    completed_round: int,
    arrays: Mapping[str, np.ndarray[Any, Any]],
    sampler_state: Mapping[str, Any] | None = None,
    strategy_state: Mapping[str, np.ndarray[Any, Any]] | None = None,
    more: Mapping[str, np.ndarray[Any, Any]] | None = None,
) -> Path:
    """Write the model, sampler and strategy after ``completed_round`` atomically.

    ``more`` adds arrays under names starting with ``RESERVED_PREFIX`` (what a resumed
    simulation needs besides, ``fedbus.run.resume``), in the same file, so that all of it is
    from one moment.
    """
    reserved = [key for key in arrays if key.startswith(RESERVED_PREFIX)]
    if reserved:
        raise InvalidArgumentError(f"a model array may not be named {reserved[0]!r}")
    stray = [key for key in more or {} if not key.startswith(RESERVED_PREFIX)]
    if stray:
        raise InvalidArgumentError(f"checkpoint: {stray[0]!r} must start with {RESERVED_PREFIX}")
    extra = {_ROUND_KEY: np.array(completed_round, dtype=np.int64), **(more or {})}
    for key, value in (strategy_state or {}).items():
        extra[_STRATEGY_PREFIX + key] = value
    if sampler_state is not None:
        text = json.dumps(dict(sampler_state)).encode("utf-8")
        extra[_SAMPLER_KEY] = np.frombuffer(text, dtype=np.uint8)
    path = Path(run_dir) / CHECKPOINT_FILE
    with atomic_file(path) as file:
        save_arrays(file, {**extra, **arrays})
    return path


def load_checkpoint(run_dir: str | Path) -> tuple[int, dict[str, np.ndarray[Any, Any]]]:
    """The last completed round of a run directory and the model after it.

    Raises ``InvalidArgumentError`` naming the file when there is no valid checkpoint.
    """
    path = Path(run_dir) / CHECKPOINT_FILE
    if not path.is_file():
        raise InvalidArgumentError(
            f"{path}: no checkpoint; a run can be resumed once its first round has completed"
        )
    everything = load_model(path)
    completed = everything.get(_ROUND_KEY)
    arrays = {
        key: value for key, value in everything.items() if not key.startswith(RESERVED_PREFIX)
    }
    if completed is None or completed.shape != () or completed.dtype.kind != "i":
        raise InvalidArgumentError(f"{path}: not a fedbus checkpoint (no round number)")
    return int(completed), arrays


def load_sampler_state(run_dir: str | Path) -> dict[str, Any] | None:
    """The client sampler's state saved with the checkpoint, or None if there is none."""
    path = Path(run_dir) / CHECKPOINT_FILE
    text = load_model(path).get(_SAMPLER_KEY)
    if text is None:
        return None
    try:
        state = json.loads(text.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidArgumentError(f"{path}: the sampler state is not valid JSON") from exc
    if not isinstance(state, dict):
        raise InvalidArgumentError(f"{path}: the sampler state is not a JSON object")
    return state


def load_strategy_state(run_dir: str | Path) -> dict[str, np.ndarray[Any, Any]]:
    """The strategy's state saved with the checkpoint (``{}`` for a stateless strategy)."""
    path = Path(run_dir) / CHECKPOINT_FILE
    return {
        key.removeprefix(_STRATEGY_PREFIX): value
        for key, value in load_model(path).items()
        if key.startswith(_STRATEGY_PREFIX)
    }
