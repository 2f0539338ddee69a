"""The message trace of a run directory: ``trace.csv``, one line per message, and its summary.

Every message a simulated run sends gets one line: its id, type, sender, receiver, group (the
round, for the standard server's messages), the message it replies to, its encoded size, when
it was created, when it left its sender, when its fate was settled, and that fate:

- ``delivered``: a handler received it;
- ``expired``: its TTL passed before it arrived;
- ``refused``: a client sent what the message flow does not declare (``PERMISSION_DENIED``);
- ``unavailable``: its receiver had stopped or did not exist;
- ``dropped`` / ``offline``: lost to the receiver's simulated dropout, or to a device that was
  offline with no window left;
- ``no_room``: the memory budget was spent and a spill file could not be written;
- ``pending``: still travelling when the run ended.

``error`` is the error code a message carries (an error reply: 0 for none), whatever its fate.
Times are the run's clock: simulated seconds. The file is plain CSV with a header, so any tool
reads it; ``read_trace`` and ``format_summary`` are what ``fedbus trace`` uses.

Examples
--------
>>> rows = [
...     TraceRow("a1", "train", 0, 1, "1", "", 900, 0.0, 0.0, 0.1, "delivered", 0),
...     TraceRow("b2", "train", 1, 0, "1", "a1", 880, 0.1, 2.1, 2.2, "delivered", 0),
... ]
>>> print(format_summary(rows).splitlines()[0])
2 messages, 1,780 bytes: 2 delivered
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import astuple, dataclass, fields
from pathlib import Path

from fedbus.errors import InvalidArgumentError
from fedbus.runtime.simulation import TraceEntry

__all__ = [
    "OUTCOMES",
    "TRACE_FILE",
    "TraceRow",
    "filter_rows",
    "format_summary",
    "read_trace",
    "trace_rows",
    "write_trace",
]

TRACE_FILE = "trace.csv"

#: What can become of a message (``held`` is a step on the way, not an outcome).
OUTCOMES = (
    "delivered",
    "expired",
    "refused",
    "unavailable",
    "dropped",
    "offline",
    "no_room",
    "pending",
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
# Rows listed under "not delivered and errors" before the rest are counted only.
_LISTED = 10
# Nodes listed as the slowest.
_SLOWEST = 5


@dataclass(frozen=True, slots=True)
class TraceRow:
    """One message of a run, as ``trace.csv`` holds it (times in the run's clock, seconds)."""

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


_COLUMNS = tuple(field.name for field in fields(TraceRow))
_INTS = frozenset({"src", "dst", "bytes", "error"})
_FLOATS = frozenset({"created", "sent", "settled"})


def trace_rows(entries: Iterable[TraceEntry]) -> Iterator[TraceRow]:
    """One row per message settled in ``entries`` (a simulation's trace, in order).

    ``held`` entries are skipped: the message gets its row when it is delivered or lost. A
    message without a recorded departure (refused as it was sent, or an error reply the runtime
    made) counts as sent when it was created, with size 0.
    """
    for entry in entries:
        outcome = _OUTCOME_OF_EVENT.get(entry.event)
        if outcome is None:
            continue
        metadata = entry.metadata
        yield TraceRow(
            metadata.message_id,
            metadata.message_type,
            metadata.src_node_id,
            metadata.dst_node_id,
            metadata.group_id,
            metadata.reply_to_message_id,
            0 if entry.size is None else entry.size,
            metadata.created_at,
            metadata.created_at if entry.sent is None else entry.sent,
            entry.time,
            outcome,
            entry.error,
        )


def write_trace(path: str | os.PathLike[str], rows: Iterable[TraceRow]) -> int:
    """Write ``rows`` to ``path`` as CSV with a header; return how many were written."""
    count = 0
    with open(path, "w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(_COLUMNS)
        for row in rows:
            writer.writerow(astuple(row))
            count += 1
    return count


def read_trace(path: str | os.PathLike[str]) -> list[TraceRow]:
    """The rows of a ``trace.csv`` (a run directory's, or the file itself).

    Raises
    ------
    InvalidArgumentError
        No such file, or a line that is not a trace row (the message gives its number).
    """
    target = Path(path)
    if target.is_dir():
        target = target / TRACE_FILE
    try:
        text = target.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidArgumentError(
            f"{target}: no trace; a run writes trace.csv into its run directory unless "
            "run.trace = false"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidArgumentError(f"{target}: cannot read the trace ({exc})") from exc
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None or tuple(header) != _COLUMNS:
        raise InvalidArgumentError(
            f"{target}: not a fedbus trace; expected the header {','.join(_COLUMNS)}"
        )
    return [_parse(values, target, number) for number, values in enumerate(reader, start=2)]


def _parse(values: list[str], path: Path, line: int) -> TraceRow:
    if len(values) != len(_COLUMNS):
        raise InvalidArgumentError(
            f"{path}, line {line}: {len(values)} values, expected {len(_COLUMNS)}"
        )
    parsed: list[object] = []
    for name, value in zip(_COLUMNS, values, strict=True):
        try:
            if name in _INTS:
                parsed.append(int(value))
            elif name in _FLOATS:
                number = float(value)
                if not math.isfinite(number):
                    raise ValueError(value)
                parsed.append(number)
            else:
                parsed.append(value)
        except ValueError:
            raise InvalidArgumentError(
                f"{path}, line {line}: {name} = {value!r} is not a number"
            ) from None
    return TraceRow(*parsed)  # type: ignore[arg-type]


def filter_rows(
    rows: Iterable[TraceRow],
    *,
    node: int | None = None,
    message_type: str | None = None,
    server_round: int | None = None,
) -> list[TraceRow]:
    """The rows sent or received by ``node``, of ``message_type``, in ``server_round``."""
    group = None if server_round is None else str(server_round)
    return [
        row
        for row in rows
        if (node is None or node in (row.src, row.dst))
        and (message_type is None or row.type == message_type)
        and (group is None or row.group == group)
    ]


def format_summary(rows: Sequence[TraceRow]) -> str:
    """What ``fedbus trace`` prints: totals, per type, per node, slowest nodes, failures."""
    if not rows:
        return "no messages"
    total = sum(row.bytes for row in rows)
    lines = [
        f"{len(rows):,} messages, {total:,} bytes: {_outcomes(Counter(r.outcome for r in rows))}"
    ]
    lines += ["", *_per_type(rows), "", *_per_node(rows)]
    slowest = _slowest(rows)
    if slowest:
        lines += ["", *slowest]
    failures = [row for row in rows if row.outcome != "delivered" or row.error]
    if failures:
        lines += ["", f"not delivered or errors ({len(failures):,}):"]
        for row in failures[:_LISTED]:
            error = f", error {row.error}" if row.error else ""
            lines.append(
                f"  {row.settled:10.3f} s  {row.type} {row.src} -> {row.dst} (group "
                f"{row.group or '-'}): {row.outcome}{error}  id {row.message_id}"
            )
        if len(failures) > _LISTED:
            lines.append(f"  ... and {len(failures) - _LISTED:,} more")
    return "\n".join(lines)


def _outcomes(counts: Counter[str]) -> str:
    return ", ".join(f"{counts[name]:,} {name}" for name in OUTCOMES if counts[name])


def _per_type(rows: Sequence[TraceRow]) -> list[str]:
    by_type: dict[str, list[TraceRow]] = defaultdict(list)
    for row in rows:
        by_type[row.type].append(row)
    lines = [f"{'type':<20} {'messages':>9} {'bytes':>14} {'errors':>7}  outcomes"]
    for name in sorted(by_type):
        group = by_type[name]
        errors = sum(1 for row in group if row.error)
        outcomes = _outcomes(Counter(row.outcome for row in group))
        total = sum(row.bytes for row in group)
        lines.append(f"{name:<20} {len(group):>9,} {total:>14,} {errors:>7,}  {outcomes}")
    return lines


def _per_node(rows: Sequence[TraceRow]) -> list[str]:
    sent: Counter[int] = Counter()
    received: Counter[int] = Counter()
    bytes_sent: Counter[int] = Counter()
    bytes_received: Counter[int] = Counter()
    failed: Counter[int] = Counter()
    for row in rows:
        sent[row.src] += 1
        bytes_sent[row.src] += row.bytes
        received[row.dst] += 1
        bytes_received[row.dst] += row.bytes
        if row.outcome != "delivered" or row.error:
            failed[row.src] += 1
    nodes = sorted(set(sent) | set(received))
    lines = [
        f"{'node':>6} {'sent':>7} {'received':>9} {'bytes sent':>14} {'bytes received':>15} "
        f"{'failed':>7}"
    ]
    shown = nodes if len(nodes) <= 2 * _LISTED else nodes[:_LISTED]
    for node in shown:
        lines.append(
            f"{node:>6} {sent[node]:>7,} {received[node]:>9,} {bytes_sent[node]:>14,} "
            f"{bytes_received[node]:>15,} {failed[node]:>7,}"
        )
    if len(shown) < len(nodes):
        lines.append(f"  ... and {len(nodes) - len(shown):,} more nodes (--node N shows one)")
    return lines


def _slowest(rows: Sequence[TraceRow]) -> list[str]:
    """Nodes by their mean answer time: a request's departure to its reply's arrival."""
    requests = {row.message_id: row for row in rows if not row.reply_to}
    waits: dict[int, list[float]] = defaultdict(list)
    for row in rows:
        request = requests.get(row.reply_to) if row.reply_to else None
        if request is not None and row.outcome == "delivered" and row.src == request.dst:
            waits[row.src].append(row.settled - request.sent)
    if not waits:
        return []
    ranked = sorted(waits, key=lambda node: -sum(waits[node]) / len(waits[node]))
    lines = ["slowest nodes (mean time from a request's departure to its answer's arrival):"]
    for node in ranked[:_SLOWEST]:
        times = waits[node]
        lines.append(
            f"  node {node}: {sum(times) / len(times):.3f} s over {len(times):,} answers, "
            f"longest {max(times):.3f} s"
        )
    return lines
