"""The run directory: everything one run writes, in one place.

::

    runs/fedbus-20250101-120000/
    ├── config.toml      the fully resolved configuration (every key, defaults included)
    ├── metrics.jsonl    one JSON object per round, appended and flushed as each round ends
    ├── summary.json     final numbers, written once at the end
    ├── model.npz        the final global model (NumPy arrays, no pickle)
    └── curves.png       accuracy and loss curves (``fedbus.run.plot``)

Files read by other tools are replaced atomically (written to a temporary file, then
``os.replace``), so a reader never sees half a summary or half a model.

Examples
--------
>>> import tempfile
>>> from datetime import datetime
>>> root = tempfile.mkdtemp()
>>> run = RunDirectory.create(root, "demo", "", now=datetime(2025, 1, 2, 3, 4, 5))
>>> run.path.name
'demo-20250102-030405'
>>> run.append_metrics({"round": 1, "test_accuracy": 0.5})
>>> read_metrics(run.path)
[{'round': 1, 'test_accuracy': 0.5}]
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import uuid
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import numpy as np

from fedbus.data.datasets import read_npz
from fedbus.errors import InvalidArgumentError
from fedbus.message import PackedList

__all__ = [
    "METRIC_KEYS",
    "SUMMARY_KEYS",
    "RunDirectory",
    "atomic_file",
    "save_arrays",
    "load_model",
    "model_digest",
    "read_metrics",
]

CONFIG_FILE = "config.toml"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
MODEL_FILE = "model.npz"

METRIC_KEYS: tuple[str, ...] = (
    "round",
    "simulated_time",
    "wall_time",
    "train_loss",
    "test_accuracy",
    "test_loss",
    "clients_replied",
    "clients_failed",
    "bytes_up",
    "bytes_down",
)
"""The per-round keys fedbus writes; a value is None when not measured that round."""

SUMMARY_KEYS: tuple[str, ...] = ("final_test_accuracy", "num_rounds", "simulated_time", "wall_time")
"""The keys every ``summary.json`` has."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _plain(value: Any) -> Any:
    """``value`` with NumPy scalars and arrays as Python numbers and lists, NaN and inf as None.

    Strict JSON has no NaN: a diverged loss is written as null so every JSON reader copes.
    """
    if isinstance(value, np.ndarray | np.generic):
        value = value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple | PackedList):
        return [_plain(item) for item in value]
    return value


def _to_json(record: Mapping[str, Any], *, indent: int | None = None) -> str:
    try:
        return json.dumps(_plain(record), indent=indent, allow_nan=False)
    except TypeError as exc:
        raise InvalidArgumentError(f"cannot write as JSON: {exc}") from exc


@contextmanager
def atomic_file(target: Path, *, durable: bool = True) -> Iterator[IO[bytes]]:
    """Write to a temporary file beside ``target``, then put it in place in one step.

    ``durable`` forces the bytes to disk first (``fsync``), so that even a power cut leaves
    the old file or the new one; without it, a crash of the process still does.
    """
    # a unique name opened with "x", not mkstemp: mkstemp's files are private (0600)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        with temporary.open("xb") as file:
            yield file
            file.flush()
            if durable:
                os.fsync(file.fileno())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def save_arrays(file: IO[bytes], arrays: Mapping[str, np.ndarray]) -> None:
    """Write the ``.npz`` format np.savez writes, without pickle and for any array name.

    ``np.savez(file, **arrays)`` would refuse arrays named ``file`` or ``allow_pickle``.
    """
    with zipfile.ZipFile(file, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, array in arrays.items():
            if not isinstance(name, str) or not name:
                raise InvalidArgumentError(f"model array names must be non-empty str, got {name!r}")
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                try:
                    np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)
                except ValueError as exc:
                    raise InvalidArgumentError(f"model array {name!r}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class RunDirectory:
    """The directory of one run; ``create`` makes a new one, ``RunDirectory(path)`` opens one.

    Attributes
    ----------
    path : Path
        The directory, e.g. ``runs/fedbus-20250101-120000``.
    """

    path: Path

    @classmethod
    def create(
        cls,
        output_dir: str | Path,
        name: str,
        config_toml: str,
        *,
        now: datetime | None = None,
    ) -> RunDirectory:
        """Make ``<output_dir>/<name>-<YYYYmmdd-HHMMSS>`` and write ``config.toml`` in it.

        Parameters
        ----------
        output_dir : str or Path
            Parent directory, created when missing.
        name : str
            Prefix of the directory name: letters, digits, '.', '_' and '-'.
        config_toml : str
            The resolved configuration, as ``fedbus.run.config_to_toml`` writes it.
        now : datetime, optional
            The time in the name; the current local time by default.

        Returns
        -------
        RunDirectory
            The new directory. When the name is taken (two runs in the same second), ``-2``,
            ``-3``, ... is appended, so a run never writes into another run's directory.
        """
        if _NAME.fullmatch(name) is None:
            raise InvalidArgumentError(
                f"run name {name!r}: expected letters, digits, '.', '_' and '-', "
                "starting with a letter or digit"
            )
        parent = Path(output_dir)
        stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
        try:
            parent.mkdir(parents=True, exist_ok=True)
            path = cls._make_unique(parent / f"{name}-{stamp}")
        except OSError as exc:
            raise InvalidArgumentError(f"cannot create a run directory in {parent}: {exc}") from exc
        run = cls(path)
        with atomic_file(path / CONFIG_FILE) as file:
            file.write(config_toml.encode("utf-8"))
        return run

    @staticmethod
    def _make_unique(base: Path) -> Path:
        # mkdir, not an exists() check: two runs starting at once cannot take the same name
        for attempt in range(1, 10_000):
            path = base if attempt == 1 else base.with_name(f"{base.name}-{attempt}")
            try:
                path.mkdir()
            except FileExistsError:
                continue
            return path
        raise InvalidArgumentError(f"{base}: too many run directories with this name")

    @property
    def metrics_path(self) -> Path:
        """``metrics.jsonl``: one JSON object per round."""
        return self.path / METRICS_FILE

    @property
    def summary_path(self) -> Path:
        """``summary.json``: the final numbers."""
        return self.path / SUMMARY_FILE

    @property
    def model_path(self) -> Path:
        """``model.npz``: the final global model."""
        return self.path / MODEL_FILE

    def append_metrics(self, record: Mapping[str, Any]) -> None:
        """Append one round's metrics to ``metrics.jsonl`` as one JSON line, flushed at once.

        The keys of ``METRIC_KEYS`` are the ones fedbus writes (None when not measured that
        round); any other key is written as given. NumPy numbers become JSON numbers; NaN and
        infinity become null.
        """
        line = _to_json(record) + "\n"
        # opened per round and closed at once: a crash later loses none of the rounds written
        with self.metrics_path.open("a", encoding="utf-8") as file:
            file.write(line)

    def rounds_so_far(self) -> list[dict[str, Any]]:
        """The ``metrics.jsonl`` lines written so far: none before the first round ends."""
        return read_metrics(self.path) if self.metrics_path.exists() else []

    def wall_time_so_far(self) -> float:
        """Seconds the run had taken when its last round ended (0 before the first): where a
        resumed run's clock of wall time goes on from."""
        lines = self.rounds_so_far()
        return float(lines[-1].get("wall_time") or 0.0) if lines else 0.0

    def write_summary(self, summary: Mapping[str, Any]) -> Path:
        """Write ``summary.json`` atomically; it must have every key of ``SUMMARY_KEYS``."""
        missing = [key for key in SUMMARY_KEYS if key not in summary]
        if missing:
            expected = ", ".join(SUMMARY_KEYS)
            raise InvalidArgumentError(
                f"summary: missing {', '.join(missing)}; expected at least {expected}"
            )
        text = _to_json(summary, indent=2) + "\n"
        with atomic_file(self.summary_path) as file:
            file.write(text.encode("utf-8"))
        return self.summary_path

    def save_model(self, arrays: Mapping[str, np.ndarray]) -> Path:
        """Write the model's named arrays to ``model.npz`` atomically (no pickle)."""
        with atomic_file(self.model_path) as file:
            save_arrays(file, arrays)
        return self.model_path

    def read_summary(self) -> dict[str, Any]:
        """The contents of ``summary.json``."""
        try:
            summary = json.loads(self.summary_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InvalidArgumentError(f"{self.summary_path}: cannot read the summary") from exc
        if not isinstance(summary, dict):
            raise InvalidArgumentError(f"{self.summary_path}: expected a JSON object")
        return summary


def model_digest(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 of a model's arrays: names, dtypes, shapes and bytes, in name order.

    Equal for equal models however they were stored; ``summary.json`` keeps it as
    ``model_sha256`` and ``fedbus verify`` compares it.
    """
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}\0{array.dtype.str}\0{array.shape}\0".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def load_model(path: str | Path) -> dict[str, np.ndarray]:
    """Read the arrays of a ``model.npz`` (or of the ``model.npz`` inside a run directory).

    Arrays are loaded with ``allow_pickle=False``: a file holding Python objects is refused.
    """
    file = Path(path)
    if file.is_dir():
        file = file / MODEL_FILE
    with read_npz(file, "a model is the model.npz a run wrote, one array per name") as archive:
        return {name: archive[name] for name in archive}


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The per-round records of a run's ``metrics.jsonl``, in order.

    A last line cut short (a run killed while writing it) is skipped; any other line that is
    not a JSON object raises ``InvalidArgumentError`` with its line number.
    """
    path = Path(run_dir) / METRICS_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidArgumentError(
            f"{run_dir}: no {METRICS_FILE} (is it a run directory?)"
        ) from exc
    lines = text.split("\n")
    records: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            if number == len(lines):
                break
            raise InvalidArgumentError(f"{path}, line {number}: not valid JSON") from None
        if not isinstance(record, dict):
            raise InvalidArgumentError(f"{path}, line {number}: expected a JSON object")
        records.append(record)
    return records
