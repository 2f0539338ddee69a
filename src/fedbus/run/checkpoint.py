"""Round checkpoints of a deployment, so that a restarted server continues where it stopped.

After each completed round the server writes ``checkpoint.npz`` in its run directory: the
global model's arrays plus the number of the round they come from, in one file replaced
atomically (written beside it, then ``os.replace``). A crash at any moment leaves either the
previous checkpoint or the new one, never a model of one round labelled with another.

No pickle: the file is read with ``allow_pickle=False``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fedbus.errors import InvalidArgumentError
from fedbus.run.outputs import _atomic_file, _save_arrays, load_model

__all__ = ["CHECKPOINT_FILE", "load_checkpoint", "save_checkpoint"]

CHECKPOINT_FILE = "checkpoint.npz"
# Reserved name of the round number inside the archive; model arrays keep their own names.
_ROUND_KEY = "__fedbus_completed_round__"


def save_checkpoint(
    run_dir: str | Path, completed_round: int, arrays: Mapping[str, np.ndarray[Any, Any]]
) -> Path:
    """Write the model after ``completed_round`` atomically; return the file's path."""
    if _ROUND_KEY in arrays:
        raise InvalidArgumentError(f"a model array may not be named {_ROUND_KEY!r}")
    path = Path(run_dir) / CHECKPOINT_FILE
    with _atomic_file(path) as file:
        _save_arrays(file, {_ROUND_KEY: np.array(completed_round, dtype=np.int64), **arrays})
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
    arrays = load_model(path)
    completed = arrays.pop(_ROUND_KEY, None)
    if completed is None or completed.shape != () or completed.dtype.kind != "i":
        raise InvalidArgumentError(f"{path}: not a fedbus checkpoint (no round number)")
    return int(completed), arrays
