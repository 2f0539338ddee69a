"""The message trace of a run directory: one row per message, stored in columns.

Every message a run sends gets one row: its id, type, sender, receiver, group (the round, for
the standard server's messages), the message it replies to, its encoded size, when it was
created, when it left its sender, when its fate was settled, and that fate:

- ``delivered``: a handler received it;
- ``expired``: its TTL passed before it arrived;
- ``refused``: a client sent what the message flow does not declare (``PERMISSION_DENIED``);
- ``unavailable``: its receiver had stopped or did not exist;
- ``dropped`` / ``offline``: lost to the receiver's simulated dropout, or to a device that was
  offline with no window left;
- ``no_room``: the memory budget was spent and a spill file could not be written.

``error`` is the error code a message carries (an error reply: 0 for none), whatever its fate.
Times are the run's clock: simulated seconds in a simulation, wall-clock seconds since the
server started in a deployment.

The rows live in ``RUN_DIR/trace/``, in numbered chunks (``000000.npz``, ...): NumPy arrays, one
per column, the repeated texts (type, group, outcome) stored once with a code per row. Columns
cost a fraction of a text line per message to write, so the trace can be on by default; chunks
are written as a run goes (each complete and put in place atomically), so a run that is stopped
keeps the trace of what it did. ``read_trace`` gives the rows back, ``write_csv`` turns them into
CSV for any other tool (``fedbus trace RUN_DIR --csv FILE``).

Examples
--------
>>> import tempfile
>>> rows = [
...     TraceRow("a1", "train", 0, 1, "1", "", 900, 0.0, 0.0, 0.1, "delivered", 0),
...     TraceRow("b2", "train", 1, 0, "1", "a1", 880, 0.1, 2.1, 2.2, "delivered", 0),
... ]
>>> run_dir = Path(tempfile.mkdtemp())
>>> TraceWriter(run_dir).write_rows(rows)
>>> read_trace(run_dir) == rows
True
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from fedbus.data.datasets import read_npz
from fedbus.errors import InvalidArgumentError
from fedbus.message import Metadata
from fedbus.run.outputs import atomic_file, save_arrays
from fedbus.runtime.simulation import TraceEntry

__all__ = [
    "CHUNK_ROWS",
    "OUTCOMES",
    "TRACE_DIR",
    "TraceRow",
    "TraceWriter",
    "chunk_paths",
    "csv_lines",
    "read_trace",
    "row_of",
    "trace_digest",
    "trace_rows",
    "write_csv",
]

TRACE_DIR = "trace"

#: What can become of a message (``held`` is a step on the way, not an outcome).
OUTCOMES = (
    "delivered",
    "expired",
    "refused",
    "unavailable",
    "dropped",
    "offline",
    "no_room",
)
# The simulation's events that settle a message, and the outcome each one is.
_OUTCOME_OF_EVENT = {
    "delivered": "delivered",
    "expired": "expired",
    "refused": "refused",
    "unavailable": "unavailable",
    "undeliverable": "unavailable",
    "dropped": "dropped",
    "offline": "offline",
    "no_room": "no_room",
}


class TraceRow(NamedTuple):
    """One message of a run (times in the run's clock, seconds).

    A named tuple rather than a dataclass: a run makes one per message, and a tuple is both
    the cheapest object to build and what the writers take apart.
    """

    message_id: str
    type: str
    src: int
    dst: int
    group: str
    reply_to: str
    bytes: int
    created: float
    sent: float
    settled: float
    outcome: str
    error: int


_COLUMNS = TraceRow._fields
# How each column is stored: texts repeated across rows as codes into a list of names.
_CODED = ("type", "group", "outcome")
_TEXTS = ("message_id", "reply_to")
_INTEGERS = {"src": np.int64, "dst": np.int64, "bytes": np.int64, "error": np.int32}
_FLOATS = ("created", "sent", "settled")
_NAMES = ".names"
_CHUNK_SUFFIX = ".npz"
_VALID = "a trace chunk is an .npz archive a fedbus run wrote into RUN_DIR/trace/"
#: Rows a chunk holds before a run writes it (simulations write at round ends).
CHUNK_ROWS = 65_536

# One row as a CSV line; times are written by ``repr``, a float's shortest exact form, so a
# trace read back compares equal and two runs' traces compare byte for byte (``fedbus verify``).
_LINE = "%s,%s,%d,%d,%s,%s,%d,%s,%s,%s,%s,%d\n"
_SEPARATORS = len(_COLUMNS) - 1
_LINES_PER_WRITE = 8192
_TIMES_KEPT = 65_536


def trace_rows(entries: Iterable[TraceEntry]) -> Iterator[TraceRow]:
    """One row per message settled in ``entries`` (a simulation's trace, in order).

    ``held`` entries are skipped: the message gets its row when it is delivered or lost. A
    message without a recorded departure (refused as it was sent, or an error reply the runtime
    made) counts as sent when it was created, with size 0.
    """
    outcome_of = _OUTCOME_OF_EVENT.get
    for time, event, metadata, sent, size, error in entries:
        outcome = outcome_of(event)
        if outcome is not None:
            yield row_of(metadata, 0 if size is None else size, sent, time, outcome, error)


def row_of(
    metadata: Metadata,
    size: int,
    sent: float | None,
    settled: float,
    outcome: str,
    error: int,
    *,
    epoch: float = 0.0,
) -> TraceRow:
    """The row of a message: ``sent`` None means when it was created; times are taken from
    ``epoch`` (a deployment's start, on the wall clock; 0 in a simulation)."""
    created = metadata.created_at - epoch
    return TraceRow(
        metadata.message_id,
        metadata.message_type,
        metadata.src_node_id,
        metadata.dst_node_id,
        metadata.group_id,
        metadata.reply_to_message_id,
        size,
        created,
        created if sent is None else sent - epoch,
        settled - epoch,
        outcome,
        error,
    )


class TraceWriter:
    """Appends rows to ``RUN_DIR/trace/`` as numbered chunks, each written atomically.

    ``start`` is the number of the first chunk to write: a resumed run passes the number of
    chunks its checkpoint kept, so that chunks written after it (rounds that run again) are
    replaced.
    """

    def __init__(self, run_dir: str | os.PathLike[str], *, start: int = 0) -> None:
        self.directory = Path(run_dir) / TRACE_DIR
        self.chunks = start
        self.rows = 0

    def write_entries(self, entries: Sequence[TraceEntry]) -> None:
        """Write the rows of a simulation's trace entries as one chunk (none if no rows)."""
        outcome_of = _OUTCOME_OF_EVENT.get
        settled = [entry for entry in entries if entry[1] in _OUTCOME_OF_EVENT]
        if not settled:
            return
        times, events, metadata, sents, sizes, errors = zip(*settled, strict=True)
        created = [item.created_at for item in metadata]
        columns: dict[str, Sequence[Any]] = {
            "message_id": [item.message_id for item in metadata],
            "type": [item.message_type for item in metadata],
            "src": [item.src_node_id for item in metadata],
            "dst": [item.dst_node_id for item in metadata],
            "group": [item.group_id for item in metadata],
            "reply_to": [item.reply_to_message_id for item in metadata],
            "bytes": [0 if size is None else size for size in sizes],
            "created": created,
            "sent": [
                made if sent is None else sent for made, sent in zip(created, sents, strict=True)
            ],
            "settled": times,
            "outcome": [outcome_of(event) for event in events],
            "error": errors,
        }
        self._write(columns)

    def drain(self, entries: list[TraceEntry], *, at_least: int = CHUNK_ROWS) -> None:
        """Write ``entries`` as one chunk and empty the list, once it holds ``at_least``.

        A run calls this at each round's end with the simulation's own list, so the trace is
        on disk as the run goes and its memory stays bounded, and once more at the end with
        ``at_least=1``.
        """
        if entries and len(entries) >= at_least:
            self.write_entries(entries)
            entries.clear()

    def write_rows(self, rows: Sequence[TraceRow]) -> None:
        """Write ``rows`` as one chunk (none if there are no rows)."""
        if rows:
            self._write(dict(zip(_COLUMNS, zip(*rows, strict=True), strict=True)))

    def _write(self, columns: dict[str, Sequence[Any]]) -> None:
        arrays: dict[str, np.ndarray[Any, Any]] = {}
        for name in _CODED:
            names: dict[str, int] = {}
            codes = [names.setdefault(text, len(names)) for text in columns[name]]
            arrays[name] = np.array(codes, dtype=np.int32)
            arrays[name + _NAMES] = _texts(list(names))
        for name in _TEXTS:
            arrays[name] = _texts(columns[name])
        for name, dtype in _INTEGERS.items():
            arrays[name] = np.array(columns[name], dtype=dtype)
        for name in _FLOATS:
            arrays[name] = np.array(columns[name], dtype=np.float64)
        self.directory.mkdir(parents=True, exist_ok=True)
        # Put in place atomically, not forced to disk: a trace is worth no fsync per chunk.
        path = self.directory / f"{self.chunks:06d}{_CHUNK_SUFFIX}"
        with atomic_file(path, durable=False) as file:
            save_arrays(file, arrays)
        self.chunks += 1
        self.rows += len(arrays["src"])


def _texts(values: Sequence[str]) -> np.ndarray[Any, Any]:
    """Texts as a fixed-width array: bytes when they are ASCII (ids are), else unicode."""
    lengths = list(map(len, values))
    width = lengths[0] if lengths else 0
    if width and min(lengths) == max(lengths):
        joined = "".join(values)
        if joined.isascii():  # message ids: one copy of them all, not one per id
            return np.frombuffer(joined.encode("ascii"), dtype=f"S{width}")
    try:
        return np.array(values, dtype=np.bytes_)
    except UnicodeEncodeError:
        return np.array(values, dtype=np.str_)


def chunk_paths(run_dir: str | os.PathLike[str]) -> list[Path]:
    """The trace chunks of a run directory, in order."""
    directory = Path(run_dir) / TRACE_DIR
    if not directory.is_dir():
        return []
    return sorted(
        path for path in directory.iterdir() if path.suffix == _CHUNK_SUFFIX and path.stem.isdigit()
    )


def read_trace(run_dir: str | os.PathLike[str]) -> list[TraceRow]:
    """The rows of a run directory's trace, in the order they were written.

    Raises
    ------
    InvalidArgumentError
        No trace, or a chunk that is not one (the message names the file and what is wrong).
    """
    paths = chunk_paths(run_dir)
    if not paths:
        raise InvalidArgumentError(
            f"{Path(run_dir) / TRACE_DIR}: no trace; a run writes its trace there unless "
            "run.trace = false"
        )
    rows: list[TraceRow] = []
    for path in paths:
        rows.extend(_read_chunk(path))
    return rows


def _read_chunk(path: Path) -> list[TraceRow]:
    with read_npz(path, _VALID) as archive:
        arrays = {name: archive[name] for name in archive}
    expected = {*_COLUMNS, *(name + _NAMES for name in _CODED)}
    if set(arrays) != expected:
        missing = sorted(expected - set(arrays)) or sorted(set(arrays) - expected)
        raise InvalidArgumentError(f"{path}: not a fedbus trace chunk ({missing[0]!r}); {_VALID}")
    length = len(arrays["message_id"])
    columns: dict[str, list[Any]] = {}
    for name in _COLUMNS:
        array = arrays[name]
        if array.ndim != 1 or len(array) != length:
            raise InvalidArgumentError(
                f"{path}: column {name!r} is not one value per message ({length})"
            )
    for name in _CODED:
        names = _text_list(arrays[name + _NAMES], path, name + _NAMES)
        codes = arrays[name]
        if codes.dtype.kind != "i" or (length and (codes.min() < 0 or codes.max() >= len(names))):
            raise InvalidArgumentError(f"{path}: column {name!r} holds codes without a name")
        columns[name] = [names[code] for code in codes.tolist()]
    for name in _TEXTS:
        columns[name] = _text_list(arrays[name], path, name)
    for name in _INTEGERS:
        if arrays[name].dtype.kind not in "iu":
            raise InvalidArgumentError(f"{path}: column {name!r} is not integers")
        columns[name] = arrays[name].tolist()
    for name in _FLOATS:
        array = arrays[name]
        if array.dtype.kind != "f" or not np.isfinite(array).all():
            raise InvalidArgumentError(f"{path}: column {name!r} is not finite numbers")
        columns[name] = array.tolist()
    return [
        TraceRow._make(values) for values in zip(*(columns[name] for name in _COLUMNS), strict=True)
    ]


def _text_list(array: np.ndarray[Any, Any], path: Path, name: str) -> list[str]:
    if array.dtype.kind == "U":
        return [str(text) for text in array.tolist()]
    if array.dtype.kind == "S":
        try:
            return [text.decode("ascii") for text in array.tolist()]
        except UnicodeDecodeError:
            pass
    raise InvalidArgumentError(f"{path}: column {name!r} is not text")


def write_csv(path: str | os.PathLike[str], rows: Iterable[TraceRow]) -> int:
    """Write ``rows`` to ``path`` as CSV with a header; return how many were written."""
    count = 0
    with open(path, "w", encoding="utf-8", newline="") as file:
        lines: list[str] = []
        for line in csv_lines(rows):
            lines.append(line)
            count += 1
            if len(lines) == _LINES_PER_WRITE:
                file.writelines(lines)
                lines.clear()
        file.writelines(lines)
    return count - 1  # the header


def csv_lines(rows: Iterable[TraceRow]) -> Iterator[str]:
    """The header, then one CSV line per row (each ending in a line feed)."""
    yield ",".join(_COLUMNS) + "\n"
    # Writing a float is most of a line's cost, and a round's messages share their times
    # (a request goes to every sampled client at once): each time is formatted once.
    times: dict[float, str] = {}
    for row in rows:
        if len(times) > _TIMES_KEPT:
            times.clear()
        created, sent, settled = row[7:10]
        # Formatting the line directly is several times cheaper than the csv module; a type
        # or group holding a comma, quote or line break (rare: they are chosen by whoever
        # wrote the handlers) goes through the csv module to be quoted.
        line = _LINE % (
            *row[:7],
            times.get(created) or times.setdefault(created, repr(created)),
            times.get(sent) or times.setdefault(sent, repr(sent)),
            times.get(settled) or times.setdefault(settled, repr(settled)),
            row[10],
            row[11],
        )
        if line.count(",") != _SEPARATORS or '"' in line or "\r" in line or line.count("\n") > 1:
            line = _quoted(row)
        yield line


def _quoted(row: TraceRow) -> str:
    buffer = io.StringIO()
    # With "\r\n" as the terminator, the csv module quotes a field holding either character.
    csv.writer(buffer, lineterminator="\r\n").writerow(row)
    return buffer.getvalue()[:-2] + "\n"


def trace_digest(run_dir: str | os.PathLike[str]) -> str:
    """SHA-256 of a run's trace as CSV text: equal for equal rows, however they were chunked."""
    digest = hashlib.sha256()
    for line in csv_lines(read_trace(run_dir)):
        digest.update(line.encode("utf-8"))
    return digest.hexdigest()
