"""What ``fedbus trace`` prints: a run's messages summarised per type and node, and filters.

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

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

from fedbus.run.trace import OUTCOMES, TraceRow

__all__ = ["filter_rows", "format_summary"]

# Rows listed under "not delivered and errors" before the rest are counted only.
_LISTED = 10
# Nodes listed as the slowest.
_SLOWEST = 5


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
