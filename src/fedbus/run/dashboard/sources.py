"""What the dashboard shows: sources of run snapshots.

A source is anything with ``snapshot() -> dict``: a JSON-able picture of one run, the same
shape for every source. Two are built in:

- ``RunDirSource``: a run directory on disk, read again when its files change (a finished run,
  or a run another process writes);
- ``LiveRun``: fed by the running federation itself, round by round and message by message.

The snapshot::

    {"name", "run_dir", "state": "running" | "finished" | "failed" | "interrupted",
     "num_rounds", "round" (the last completed), "metrics": [metrics.jsonl lines],
     "waiting": {"round", "nodes", "replies", "expected", "deadline", "since"} | None,
     "nodes": [{"id", "connected", "last_heartbeat", "bytes_up", "bytes_down", "messages",
                "failures", "staleness"}],             # the worst first, at most MAX_NODES
     "node_totals": {"count", "connected", "bytes_up", "bytes_down", "messages", "failures"},
     "flow": [{"src", "dst", "type", "count", "bytes", "failures"}],
     "trace": [the last TRACE_ROWS messages], "time", "error", "version"}

Node 0 is the server. ``bytes_up`` and ``messages`` count what a node sent, ``bytes_down``
what it received; ``failures`` the messages it sent that were not delivered or carried an
error; ``staleness`` the rounds completed since the node last sent anything (None: never).
``flow`` edges join node ids; beyond ``FLOW_CLIENTS`` clients, they are summed as the one end
``"clients"``. ``version`` grows with every change, so a reader asks only for what changed.

Examples
--------
>>> run = LiveRun("demo", Path("runs/demo"), num_rounds=2)
>>> run.message(0, 1, "train", 900, "delivered", 0.1)
>>> run.round_ended({"round": 1, "test_accuracy": 0.5})
>>> snapshot = run.snapshot()
>>> snapshot["round"], snapshot["flow"][0]["type"], snapshot["version"]
(1, 'train', 2)
"""

from __future__ import annotations

import copy
import heapq
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from fedbus.errors import FedbusError, InvalidArgumentError
from fedbus.run.config import load_config
from fedbus.run.outputs import RunDirectory, read_metrics
from fedbus.run.trace import TraceRow, read_trace

__all__ = [
    "FLOW_CLIENTS",
    "MAX_NODES",
    "STATES",
    "TRACE_ROWS",
    "LiveRun",
    "RunDirSource",
    "Source",
]

#: What a run can be doing.
STATES = ("running", "finished", "failed", "interrupted")
#: Messages of the trace a snapshot carries: the last ones.
TRACE_ROWS = 200
#: Nodes a snapshot lists, the worst first (a 10,000-node fleet would make every update 1 MB).
MAX_NODES = 200
#: Beyond this many clients in the flow, their edges are summed as one end, ``"clients"``.
FLOW_CLIENTS = 8
_DELIVERED = "delivered"
_TRACE_KEYS = ("type", "src", "dst", "group", "bytes", "settled", "outcome", "error")


@runtime_checkable
class Source(Protocol):
    """Anything the dashboard can show: it returns a JSON-able snapshot of one run."""

    def snapshot(self) -> dict[str, Any]:
        """The run as it is now (see the module docstring for the keys)."""
        ...


@dataclass(slots=True)
class _NodeStats:
    """What is known of one node; mutable: a message updates it in place."""

    connected: bool | None = None
    last_heartbeat: float | None = None
    bytes_up: int = 0
    bytes_down: int = 0
    messages: int = 0
    failures: int = 0
    last_round: int | None = None


class _Tally:
    """Per-node and per-edge counts, filled one message at a time (O(1) each)."""

    def __init__(self) -> None:
        self.nodes: dict[int, _NodeStats] = {}
        self.edges: dict[tuple[int, int, str], list[int]] = {}  # [count, bytes, failures]

    def node(self, node_id: int) -> _NodeStats:
        stats = self.nodes.get(node_id)
        if stats is None:
            stats = self.nodes[node_id] = _NodeStats()
        return stats

    def add(
        self, src: int, dst: int, kind: str, size: int, failed: bool, server_round: int | None
    ) -> None:
        sender = self.node(src)
        sender.bytes_up += size
        sender.messages += 1
        sender.failures += failed
        if server_round is not None and (sender.last_round or 0) < server_round:
            sender.last_round = server_round
        self.node(dst).bytes_down += size
        edge = self.edges.get((src, dst, kind))
        if edge is None:
            self.edges[src, dst, kind] = [1, size, int(failed)]
        else:
            edge[0] += 1
            edge[1] += size
            edge[2] += failed


def _nodes(nodes: Mapping[int, _NodeStats], last_round: int) -> tuple[list[Any], dict[str, Any]]:
    """The worst ``MAX_NODES`` nodes as dicts, and the totals over all of them.

    Worst first: disconnected, then by failures, staleness, and the oldest heartbeat.
    """

    def staleness(stats: _NodeStats) -> int | None:
        return None if stats.last_round is None else max(0, last_round - stats.last_round)

    def badness(item: tuple[int, _NodeStats]) -> tuple[bool, int, int, float, int]:
        node_id, stats = item
        heartbeat = stats.last_heartbeat
        return (
            stats.connected is not False,
            -stats.failures,
            -(staleness(stats) or 0),
            math.inf if heartbeat is None else heartbeat,
            node_id,
        )

    worst = heapq.nsmallest(MAX_NODES, nodes.items(), key=badness)
    rows = [
        {
            "id": node_id,
            "connected": stats.connected,
            "last_heartbeat": stats.last_heartbeat,
            "bytes_up": stats.bytes_up,
            "bytes_down": stats.bytes_down,
            "messages": stats.messages,
            "failures": stats.failures,
            "staleness": staleness(stats),
        }
        for node_id, stats in worst
    ]
    every = nodes.values()
    totals = {
        "count": len(nodes),
        "connected": sum(1 for stats in every if stats.connected),
        "bytes_up": sum(stats.bytes_up for stats in every),
        "bytes_down": sum(stats.bytes_down for stats in every),
        "messages": sum(stats.messages for stats in every),
        "failures": sum(stats.failures for stats in every),
    }
    return rows, totals


def _flow(edges: Mapping[tuple[int, int, str], Sequence[int]]) -> list[dict[str, Any]]:
    """The edges, with clients summed as ``"clients"`` when there are more than FLOW_CLIENTS."""
    clients = {node for src, dst, _ in edges for node in (src, dst) if node != 0}
    many = len(clients) > FLOW_CLIENTS
    merged: dict[tuple[int | str, int | str, str], list[int]] = {}
    for (src, dst, kind), (count, size, failures) in edges.items():
        key = (
            "clients" if many and src != 0 else src,
            "clients" if many and dst != 0 else dst,
            kind,
        )
        total = merged.setdefault(key, [0, 0, 0])
        total[0] += count
        total[1] += size
        total[2] += failures
    return [
        {"src": src, "dst": dst, "type": kind, "count": c, "bytes": b, "failures": f}
        for (src, dst, kind), (c, b, f) in sorted(merged.items(), key=lambda item: str(item[0]))
    ]


def _plain(value: Any) -> Any:
    """``value`` as strict JSON can hold it: non-finite floats as None, NumPy as Python."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    tolist = getattr(value, "tolist", None)  # NumPy scalars and arrays
    if callable(tolist):
        return _plain(tolist())
    return str(value)


class LiveRun:
    """A run as the federation running in this process reports it; thread-safe.

    The federation calls the methods below as things happen (from any thread); the dashboard
    calls ``snapshot``. ``message`` is O(1): it is called for every message.

    Parameters
    ----------
    name : str
        The run's name, as the page titles it.
    run_dir : Path
        Its run directory (shown, not read).
    num_rounds : int
        The rounds it is configured for.

    Examples
    --------
    >>> run = LiveRun("demo", Path("runs/demo"), num_rounds=3)
    >>> run.round_waiting(1, [1, 2], replies=0, expected=2, deadline=None, since=0.0)
    >>> run.snapshot()["waiting"]["nodes"]
    [1, 2]
    """

    def __init__(self, name: str, run_dir: Path, num_rounds: int) -> None:
        self.name = name
        self.run_dir = Path(run_dir)
        self.num_rounds = num_rounds
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []
        self._state = "running"
        self._metrics: list[dict[str, Any]] = []
        self._waiting: dict[str, Any] | None = None
        self._tally = _Tally()
        self._trace: deque[tuple[Any, ...]] = deque(maxlen=TRACE_ROWS)
        self._round = 0
        self._summary: dict[str, Any] | None = None
        self._version = 0
        self._cached: dict[str, Any] | None = None

    @property
    def version(self) -> int:
        """Grows by one with every change."""
        return self._version

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` (from the feeding thread) after each change worth showing at once.

        Rounds, waits, connections and the end are; a message or a heartbeat alone is not:
        readers see those at their next refresh.
        """
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[], None]) -> None:
        """Stop calling ``listener`` (added by ``add_listener``)."""
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def round_waiting(
        self,
        server_round: int,
        nodes: Sequence[int],
        replies: int,
        expected: int,
        deadline: float | None,
        since: float,
    ) -> None:
        """The server waits for round ``server_round``'s replies: from ``nodes``, got so far
        ``replies`` of ``expected``, until ``deadline`` (None: no deadline), since ``since``."""
        waiting = {
            "round": server_round,
            "nodes": [int(node) for node in nodes],
            "replies": replies,
            "expected": expected,
            "deadline": _plain(deadline),
            "since": _plain(since),
        }
        with self._lock:
            self._waiting = waiting
            self._changed()
        self._notify()

    def round_ended(self, line: Mapping[str, Any]) -> None:
        """A round completed; ``line`` is its ``metrics.jsonl`` line (with ``round``)."""
        record = _plain(line)
        with self._lock:
            self._metrics.append(record)
            server_round = record.get("round")
            if isinstance(server_round, int):
                self._round = max(self._round, server_round)
            if self._waiting is not None and self._waiting["round"] <= self._round:
                self._waiting = None
            self._changed()
        self._notify()

    def node_seen(
        self, node_id: int, *, connected: bool = True, heartbeat: float | None = None
    ) -> None:
        """Node ``node_id`` is (dis)connected; ``heartbeat``: when it was last heard of (Unix
        time; None: now, when ``connected``)."""
        if heartbeat is None and connected:
            heartbeat = time.time()
        with self._lock:
            stats = self._tally.node(node_id)
            news = stats.connected is not connected
            stats.connected = connected
            if heartbeat is not None:
                stats.last_heartbeat = heartbeat
            self._changed()
        if news:
            self._notify()

    def message(
        self,
        src: int,
        dst: int,
        message_type: str,
        size: int,
        outcome: str,
        time: float,
        error: int = 0,
    ) -> None:
        """One message settled: ``outcome`` as the trace says it (``delivered``, ...) at
        ``time`` in the run's clock; ``error`` is the error code it carries (0: none)."""
        with self._lock:
            current = self._round + 1
            failed = outcome != _DELIVERED or error != 0
            self._tally.add(src, dst, message_type, size, failed, current)
            # a tuple: a dict per message would cost a third more; snapshot() makes the dicts
            self._trace.append((message_type, src, dst, current, size, time, outcome, error))
            self._version += 1  # not _changed(): no cache to drop until a snapshot is asked

    def finished(self, state: str, summary: Mapping[str, Any] | None) -> None:
        """The run is over: ``state`` is ``finished``, ``failed`` or ``interrupted``."""
        if state not in STATES[1:]:
            raise InvalidArgumentError(
                f"LiveRun.finished: state {state!r}: expected one of {', '.join(STATES[1:])}"
            )
        with self._lock:
            self._state = state
            self._summary = None if summary is None else _plain(summary)
            self._waiting = None
            self._changed()
        self._notify()

    def snapshot(self) -> dict[str, Any]:
        """The run as it is now; the same dict until the next change (do not modify it)."""
        with self._lock:
            cached = self._cached
            if cached is not None and cached["version"] == self._version:
                return cached
            version = self._version
            nodes = {node_id: copy.copy(stats) for node_id, stats in self._tally.nodes.items()}
            edges = {key: tuple(value) for key, value in self._tally.edges.items()}
            metrics = list(self._metrics)
            trace = [
                dict(zip(_TRACE_KEYS, (*row[:3], str(row[3]), *row[4:]), strict=True))
                for row in self._trace
            ]
            waiting = None if self._waiting is None else dict(self._waiting)
            state, completed, summary = self._state, self._round, self._summary
        # built outside the lock: the federation is not held up by a reader
        listed, totals = _nodes(nodes, completed)
        snapshot = {
            "name": self.name,
            "run_dir": str(self.run_dir),
            "state": state,
            "num_rounds": self.num_rounds,
            "round": completed,
            "metrics": metrics,
            "waiting": waiting,
            "nodes": listed,
            "node_totals": totals,
            "flow": _flow(edges),
            "trace": trace,
            "summary": summary,
            "time": time.time(),
            "error": None,
            "version": version,
        }
        with self._lock:
            if self._version == version:
                self._cached = snapshot
        return snapshot

    def _changed(self) -> None:
        self._version += 1
        self._cached = None

    def _notify(self) -> None:
        for listener in tuple(self._listeners):
            listener()


class RunDirSource:
    """A run directory on disk: its files are read again only when they change.

    ``config.toml`` gives the rounds, ``metrics.jsonl`` the rounds done, ``summary.json`` (once
    written) whether it finished or failed, and the trace (``fedbus.run.trace.read_trace``)
    the nodes, the flow and the last messages. A file that cannot be read is reported in
    the snapshot's ``error``, not raised: the directory may be half written.

    Examples
    --------
    >>> source = RunDirSource("runs/fedbus-20250101-120000")  # doctest: +SKIP
    >>> source.snapshot()["state"]  # doctest: +SKIP
    'finished'
    """

    # "trace": RUN_DIR/trace/, its chunks
    _FILES = ("config.toml", "metrics.jsonl", "summary.json", "trace")

    def __init__(self, path: str | os.PathLike[str], name: str | None = None) -> None:
        self.path = Path(path)
        self.name = name or self.path.name
        self._lock = threading.Lock()
        self._signature: tuple[Any, ...] | None = None
        self._parts: dict[str, tuple[Any, str | None]] = {}
        self._version = 0
        self._cached: dict[str, Any] | None = None

    @property
    def version(self) -> int:
        """Grows by one whenever one of the run's files changed since the last snapshot."""
        self.snapshot()
        return self._version

    def snapshot(self) -> dict[str, Any]:
        """The run as its files say now (a few ``stat`` calls when nothing changed)."""
        with self._lock:
            signature = tuple(_signature(self.path / name) for name in self._FILES)
            if self._cached is not None and signature == self._signature:
                return self._cached
            before = self._signature or (None,) * len(self._FILES)
            for name, old, new in zip(self._FILES, before, signature, strict=True):
                if old != new or name not in self._parts:
                    self._parts[name] = _read_part(self.path, name, new is not None)
            self._signature = signature
            self._version += 1
            self._cached = self._build()
            return self._cached

    def _build(self) -> dict[str, Any]:
        part = {name: value for name, (value, _) in self._parts.items()}
        errors = [error for _, error in self._parts.values() if error]
        metrics = part["metrics.jsonl"] or []
        summary = part["summary.json"]
        completed = max(
            (line["round"] for line in metrics if _is_int(line.get("round"))), default=0
        )
        state = "running"
        if summary is not None:
            state = "failed" if summary.get("failure") else "finished"
        trace = part["trace"]
        nodes, totals = _nodes(trace.nodes if trace else {}, completed)
        return {
            "name": self.name,
            "run_dir": str(self.path),
            "state": state,
            "num_rounds": part["config.toml"],
            "round": completed,
            "metrics": metrics,
            "waiting": None,
            "nodes": nodes,
            "node_totals": totals,
            "flow": _flow(trace.edges) if trace else [],
            "trace": list(trace.rows) if trace else [],
            "summary": summary,
            "time": time.time(),
            "error": "; ".join(errors) or None,
            "version": self._version,
        }


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _signature(path: Path) -> tuple[Any, ...] | None:
    """What changes when the file changes (None: absent); the trace's files, for the trace."""
    if path.name == "trace":
        chunks: tuple[Any, ...] = ()
        try:
            with os.scandir(path) as entries:
                chunks = tuple(sorted((e.name, _stat(Path(e.path))) for e in entries))
        except OSError:
            pass
        return chunks or None
    return _stat(path)


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        status = path.stat()
    except OSError:
        return None
    return status.st_mtime_ns, status.st_size


class _TraceTally(_Tally):
    """A trace file's tally, with its last rows."""

    def __init__(self, rows: Iterable[TraceRow]) -> None:
        super().__init__()
        self.rows: deque[dict[str, Any]] = deque(maxlen=TRACE_ROWS)
        for row in rows:
            failed = row.outcome != _DELIVERED or row.error != 0
            group = int(row.group) if row.group.isdigit() else None
            self.add(row.src, row.dst, row.type, row.bytes, failed, group)
            self.rows.append({key: getattr(row, key) for key in _TRACE_KEYS})


def _read_part(run_dir: Path, name: str, present: bool) -> tuple[Any, str | None]:
    """One file's contribution to the snapshot (None when absent), and why it is unreadable."""
    if not present:
        return None, None
    try:
        if name == "config.toml":
            return load_config(run_dir / name).federation.num_rounds, None
        if name == "metrics.jsonl":
            return [_plain(line) for line in read_metrics(run_dir)], None
        if name == "summary.json":
            return _plain(RunDirectory(run_dir).read_summary()), None
        return _TraceTally(read_trace(run_dir)), None
    except FedbusError as exc:
        return None, f"{name}: {exc}"
