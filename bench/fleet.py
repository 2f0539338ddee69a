"""One ``fedbus server`` with thousands of connected client nodes: what does the fleet cost it?

For each fleet size N (1,000 / 5,000 / 10,000 by default), all N nodes are hosted by a few
``fedbus client --nodes`` processes (4 by default, N/4 nodes each, every node its own TCP
connection to 127.0.0.1), and the server is measured through ``/proc`` in two phases:

1. **idle**: the server waits for N + 1 clients, so it never starts a round. Measured: the time
   from starting the client processes to the last of the N ``join`` events of its audit log;
   then, after a short settle, its CPU use (utime + stime) over a window of heartbeats only, its
   resident memory (VmRSS) and its thread count.
2. **rounds**: ``num_clients = N``, 1,000 clients sampled per round, 3 rounds. Measured: the
   time of each round (round 1 from the server's "starting the server worker" log line to its
   "round 1/3" line; later rounds from the ``wall_time`` differences of ``metrics.jsonl``), the
   server's peak memory (VmHWM and VmRSS, polled every 0.2 s) and its most threads.

Targets: 10,000 nodes connected on this machine; server threads a fixed few (at most 32),
not one or more per node; server memory under 1 GB; a 1,000-client round under 2 s. Every
wait is bounded: a stuck phase fails with the tail of each process's log, and the next fleet
size still runs.

Prints a table and adds the figures to ``bench/results.json`` under ``"fleet"``.

Usage::

    python bench/fleet.py [--nodes 1000,5000,10000] [--processes 4] [--window 10] [--heartbeat 5]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from measure import kib_field

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.json"
TOKEN = "bench-fleet-token"
PER_ROUND = 1000
ROUNDS = 3
SETTLE_S = 2.0  # after the last join: the client processes finish their own start-up
POLL_S = 0.2
LOG_TAIL_CHARS = 2500
TARGET_RSS_MB = 1024
TARGET_ROUND_S = 2.0
TARGET_NODES = 10_000
TARGET_THREADS = 32

CONFIG = """\
[run]
name = "fleet"
output_dir = "{output}"

[federation]
num_clients = {clients}
clients_per_round = {per_round}
num_rounds = {rounds}
seed = 3

[data]
dataset = "synthetic"
samples_per_client = 8
num_features = 10

[trainer]
epochs = 1
"""

# "2025-01-31 12:00:00,123 INFO fedbus.grpc: message": the CLI's format for server and client
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \S+ \S+: (.*)$", re.MULTILINE)


class BenchError(Exception):
    """A phase could not be measured; the message holds the reason and the logs' tails."""


# -- processes -----------------------------------------------------------------------------------
class Fleet:
    """The server and client processes of one phase, their logs, and their cleanup.

    Used as a context manager: on exit every process still running gets SIGTERM, then SIGKILL,
    and the temporary directory (config, logs, run directory) is removed.
    """

    def __init__(self, timeout_s: float) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="fedbus-fleet-"))
        self.timeout_s = timeout_s
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, "FEDBUS_TOKEN": TOKEN}
        with self.log_path(name).open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "fedbus", *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.root,
            )
        self.processes[name] = process
        return process

    def log_path(self, name: str) -> Path:
        return self.root / f"{name}.log"

    def log(self, name: str) -> str:
        return self.log_path(name).read_text(errors="replace")

    def tails(self) -> str:
        parts = []
        for name, process in self.processes.items():
            state = "running" if process.poll() is None else f"exit status {process.returncode}"
            parts.append(f"--- {name} ({state}), last lines:\n{self.log(name)[-LOG_TAIL_CHARS:]}")
        return "\n".join(parts)

    def fail(self, reason: str) -> BenchError:
        return BenchError(f"{reason}\n{self.tails()}")

    def check_running(self) -> None:
        """Raise when any process has ended before its phase did."""
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise self.fail(f"{name} ended early with exit status {process.returncode}")

    def wait_until(self, done: Callable[[], bool], what: str, *, alive: bool = True) -> None:
        """Poll ``done`` until true; fail after ``timeout_s`` or, with ``alive``, when any
        process ends."""
        deadline = time.monotonic() + self.timeout_s
        while not done():
            if alive:
                self.check_running()
            if time.monotonic() > deadline:
                raise self.fail(f"timed out after {self.timeout_s:.0f} s waiting for {what}")
            time.sleep(POLL_S)

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM every process still running, then SIGKILL what is left after ``grace_s``."""
        running = [process for process in self.processes.values() if process.poll() is None]
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for process in running:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(sig)
            deadline = time.monotonic() + grace_s
            while running and time.monotonic() < deadline:
                running = [process for process in running if process.poll() is None]
                time.sleep(0.05)
            if not running:
                return
        for process in running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(grace_s)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def raise_file_limit(nodes: int) -> None:
    """Lift the soft limit on open files to the hard one (the children inherit it): the
    server holds one socket per node."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    needed = nodes + 1024  # + files, pipes and the listening socket
    if soft != resource.RLIM_INFINITY and soft < needed:
        raise SystemExit(
            f"{nodes} nodes need about {needed} open files in the server, but the limit is "
            f"{soft} (ulimit -Hn): raise it, or measure fewer --nodes"
        )


def start_fleet(
    fleet: Fleet, config: Path, nodes: int, processes: int, heartbeat: float, *server_args: str
) -> float:
    """Start the server, wait until it listens, then start the client processes; returns the
    moment (``time.time()``) the clients were started."""
    port = free_port()
    timeout = str(int(fleet.timeout_s))
    liveness = ("--heartbeat", str(heartbeat))
    fleet.start(
        "server", "server", str(config), "--listen", f"127.0.0.1:{port}", "--insecure",
        "--join-timeout", timeout, *liveness, *server_args,
    )  # fmt: skip
    fleet.wait_until(lambda: "serving on port" in fleet.log("server"), "the server to listen")
    started = time.time()
    first = 0
    for index in range(processes):
        count = nodes // processes + (index < nodes % processes)
        fleet.start(
            f"client{index}", "client", str(config), "--server", f"127.0.0.1:{port}",
            "--insecure", "--partition", str(first), "--nodes", str(count),
            "--connect-timeout", timeout, *liveness,
        )  # fmt: skip
        first += count
    return started


def write_config(fleet: Fleet, nodes: int) -> Path:
    config = fleet.root / "fleet.toml"
    output = fleet.root / "runs"
    per_round = min(PER_ROUND, nodes)
    config.write_text(
        CONFIG.format(output=output, clients=nodes, per_round=per_round, rounds=ROUNDS)
    )
    return config


def run_dir(fleet: Fleet) -> Path | None:
    found = sorted((fleet.root / "runs").glob("*/audit.jsonl"))
    return found[0].parent if found else None


# -- /proc ---------------------------------------------------------------------------------------
def stat_fields(pid: int) -> list[bytes]:
    """Fields 3 onwards of ``/proc/<pid>/stat`` (after the command name, which may hold
    spaces): index ``n - 3`` is field ``n`` of proc(5)."""
    text = Path(f"/proc/{pid}/stat").read_bytes()
    return text[text.rindex(b")") + 2 :].split()


def cpu_seconds(pid: int) -> float:
    fields = stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def threads(pid: int) -> int:
    return int(stat_fields(pid)[17])


def mib(pid: int, field: bytes) -> float:
    return kib_field(pid, "status", field) / 1024


# -- the two phases ------------------------------------------------------------------------------
class AuditCounter:
    """Counts the events of the server's audit log, reading only what was appended."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.offset = 0
        self.counts: dict[str, int] = {}
        self.last_join = ""
        self._partial = b""

    def update(self) -> None:
        directory = run_dir(self.fleet)
        if directory is None:
            return
        with (directory / "audit.jsonl").open("rb") as file:
            file.seek(self.offset)
            chunk = self._partial + file.read()
        self.offset += len(chunk) - len(self._partial)
        *lines, self._partial = chunk.split(b"\n")
        for line in lines:
            event = json.loads(line)
            self.counts[event["event"]] = self.counts.get(event["event"], 0) + 1
            if event["event"] == "join":
                self.last_join = event["time"]

    def joins(self) -> int:
        self.update()
        return self.counts.get("join", 0)


def idle_phase(nodes: int, args: argparse.Namespace) -> dict[str, Any]:
    """N nodes connected to a server that never starts a round: admission time, idle cost."""
    window_s = args.window
    with Fleet(args.timeout) as fleet:
        config = write_config(fleet, nodes)
        started = start_fleet(
            fleet, config, nodes, args.processes, args.heartbeat, "--min-clients", str(nodes + 1)
        )
        audit = AuditCounter(fleet)
        fleet.wait_until(lambda: audit.joins() >= nodes, f"{nodes} nodes to join")
        admitted = datetime.fromisoformat(audit.last_join).timestamp() - started
        time.sleep(SETTLE_S)
        server = fleet.processes["server"].pid
        cpu_before, wall_before = cpu_seconds(server), time.monotonic()
        time.sleep(window_s)
        fleet.check_running()
        cpu = (cpu_seconds(server) - cpu_before) / (time.monotonic() - wall_before)
        audit.update()
        clients = [p.pid for name, p in fleet.processes.items() if name != "server"]
        return {
            "admit_s": admitted,
            "cpu_percent": 100 * cpu,
            "rss_mb": mib(server, b"VmRSS"),
            "threads": threads(server),
            "window_s": window_s,
            "events": dict(audit.counts),
            "client_rss_mb": sum(mib(pid, b"VmRSS") for pid in clients),
            "client_threads": [threads(pid) for pid in clients],
        }


def rounds_phase(nodes: int, args: argparse.Namespace) -> dict[str, Any]:
    """N nodes, 1,000 sampled per round, 3 rounds: round times and the server's peak."""
    with Fleet(args.timeout) as fleet:
        config = write_config(fleet, nodes)
        start_fleet(fleet, config, nodes, args.processes, args.heartbeat)
        server = fleet.processes["server"]
        peak = {"rss_mb": 0.0, "threads": 0}

        def sample() -> bool:
            with contextlib.suppress(FileNotFoundError, ProcessLookupError, IndexError):
                memory = max(mib(server.pid, b"VmHWM"), mib(server.pid, b"VmRSS"))
                peak["rss_mb"] = max(peak["rss_mb"], memory)
                peak["threads"] = max(peak["threads"], threads(server.pid))
            return server.poll() is not None

        fleet.wait_until(sample, f"the server to finish {ROUNDS} rounds", alive=False)
        if server.returncode != 0:
            raise fleet.fail(f"the server ended with exit status {server.returncode}")
        clients = [p for name, p in fleet.processes.items() if name != "server"]
        fleet.wait_until(lambda: all(p.poll() is not None for p in clients), "clients to end")
        directory = run_dir(fleet)
        assert directory is not None  # the server ended well: it wrote its run directory
        metrics = [json.loads(line) for line in (directory / "metrics.jsonl").open()]
        seconds = round_seconds(metrics, fleet.log("server"))
        return {
            "round_s": seconds,
            "median_round_s": statistics.median(seconds),
            "peak_rss_mb": peak["rss_mb"],
            "peak_threads": peak["threads"],
            "clients_sampled": [m["clients_sampled"] for m in metrics],
            "clients_replied": [m["clients_replied"] for m in metrics],
            "client_exit_status": [p.returncode for p in clients],
        }


def round_seconds(metrics: list[dict[str, Any]], server_log: str) -> list[float]:
    """Round 1 from the server's log lines (``wall_time`` counts from before the joins), the
    others from ``wall_time`` differences."""
    walls = [float(m["wall_time"]) for m in metrics]
    later = [after - before for before, after in itertools.pairwise(walls)]
    stamps = {}
    for stamp, message in LOG_LINE.findall(server_log):
        if message.endswith("starting the server worker"):
            stamps["start"] = stamp
        elif message.startswith(f"round 1/{ROUNDS}:"):
            stamps["round 1"] = stamp
    if len(stamps) < 2:
        return later  # round 1 unknown: skipped
    start, end = (
        datetime.strptime(stamps[k], "%Y-%m-%d %H:%M:%S,%f") for k in ("start", "round 1")
    )
    return [(end - start).total_seconds(), *later]


# -- report --------------------------------------------------------------------------------------
def measure_size(args: argparse.Namespace, nodes: int) -> dict[str, Any]:
    row: dict[str, Any] = {"nodes": nodes, "processes": args.processes}
    phases: dict[str, Callable[[], dict[str, Any]]] = {
        "idle": lambda: idle_phase(nodes, args),
        "rounds": lambda: rounds_phase(nodes, args),
    }
    for name, phase in phases.items():
        print(f"{nodes} nodes: {name} phase ...", flush=True)
        try:
            row[name] = phase()
        except BenchError as exc:
            print(f"{nodes} nodes: the {name} phase FAILED: {exc}", flush=True)
            row[name] = {"error": str(exc).splitlines()[0]}
    return row


def table(rows: list[dict[str, Any]]) -> Iterator[str]:
    yield "        -------------- idle --------------  ------------------ rounds ------------------"
    yield "  nodes  admit s  CPU %   RSS MB  threads  median s  each round s      peak MB  threads"
    for row in rows:
        idle, rounds = row["idle"], row["rounds"]
        left = f"{'FAILED':>34}"
        if "error" not in idle:
            left = (
                f"{idle['admit_s']:7.1f} {idle['cpu_percent']:6.1f} {idle['rss_mb']:8.0f} "
                f"{idle['threads']:8d}"
            )
        right = f"{'FAILED':>9}"
        if "error" not in rounds:
            each = ", ".join(f"{s:.2f}" for s in rounds["round_s"])
            right = (
                f"{rounds['median_round_s']:8.2f}  {each:<17}"
                f"{rounds['peak_rss_mb']:7.0f} {rounds['peak_threads']:8d}"
            )
        yield f"{row['nodes']:7d}  {left}  {right}"


def verdicts(rows: list[dict[str, Any]]) -> Iterator[str]:
    idle = [row["idle"] for row in rows if "error" not in row["idle"]]
    rounds = [row["rounds"] for row in rows if "error" not in row["rounds"]]
    connected = max((row["nodes"] for row in rows if "error" not in row["idle"]), default=0)
    counts = sorted({i["threads"] for i in idle} | {r["peak_threads"] for r in rounds})
    # gRPC's and the executor's pools vary by a few threads with load; none is per node.
    memory = max([i["rss_mb"] for i in idle] + [r["peak_rss_mb"] for r in rounds], default=0.0)
    slowest = max((r["median_round_s"] for r in rounds), default=float("nan"))
    yield _verdict(f"{TARGET_NODES:,} nodes connected", connected >= TARGET_NODES, f"{connected:,}")
    yield _verdict(
        f"server threads <= {TARGET_THREADS}, not per node",
        max(counts, default=0) <= TARGET_THREADS,
        f"{counts}",
    )
    yield _verdict(f"server RSS < {TARGET_RSS_MB} MB", memory < TARGET_RSS_MB, f"{memory:.0f} MB")
    yield _verdict(
        f"{PER_ROUND:,}-client round < {TARGET_ROUND_S} s",
        slowest < TARGET_ROUND_S,
        f"slowest median {slowest:.2f} s",
    )


def _verdict(target: str, met: bool, measured: str) -> str:
    return f"  {'met   ' if met else 'MISSED'}  {target:<36} measured: {measured}"


def write_results(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """Add the rows under ``"fleet"`` of ``bench/results.json``, keeping its other parts."""
    results: dict[str, Any] = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results["fleet"] = {
        "machine": {"cores": os.cpu_count(), "python": sys.version.split()[0]},
        "settings": {
            "window_s": args.window,
            "settle_s": SETTLE_S,
            "per_round": PER_ROUND,
            "heartbeat_s": args.heartbeat,
        },
        "rows": rows,
    }
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", default="1000,5000,10000", help="fleet sizes, comma-separated")
    parser.add_argument("--processes", type=int, default=4, help="client processes hosting them")
    parser.add_argument("--window", type=float, default=10.0, help="idle seconds measured")
    parser.add_argument("--timeout", type=float, default=900.0, help="bound on each wait, s")
    parser.add_argument(
        "--heartbeat", type=float, default=5.0, help="heartbeat interval of every node, s"
    )
    args = parser.parse_args()
    sizes = [int(size) for size in args.nodes.split(",")]
    raise_file_limit(max(sizes))
    rows = []
    for nodes in sizes:
        rows.append(measure_size(args, nodes))
        write_results(rows, args)  # after every size: a long run keeps what it measured
    print()
    print("\n".join(table(rows)))
    print("\nadmit: client processes started -> last join; idle CPU: % of one core over")
    print(f"{args.window:.0f} s of heartbeats; RSS: VmRSS (idle), max VmHWM/VmRSS (rounds);")
    print(f"rounds: {PER_ROUND} clients sampled, round 1 from the server's log.\n")
    print("\n".join(verdicts(rows)))
    print(f'\nwritten: {RESULTS.relative_to(HERE.parent)} ("fleet")')
    failed = any("error" in row[phase] for row in rows for phase in ("idle", "rounds"))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
