"""What the message trace costs: ``make bench``'s idle workload with and without its trace.

The idle workload (1,000 clients, all sampled, 1e4 parameters, trainers that return what they
get) leaves only the framework's own work per client update, so it shows the trace's cost at
its largest share. Each repeat runs both variants back to back in this process, alternating
which goes first; the figure is the median over repeats of (traced - untraced) / untraced,
where "traced" keeps every message's trace entry and writes the trace's chunks, as
``fedbus run`` does by default. The fastest repeat of each variant is compared too: on a busy
machine the minimum is the steadiest estimate of what the code itself costs. Times are this
process's CPU seconds (the run is one process), so that other work on the machine does not
count.

Seconds move with whatever else the machine does. ``--instructions`` counts instructions
instead, under valgrind's callgrind (the same count for the same run, whatever the load; about
a minute per run): one process imports and warms up and stops (A), one does that and then the
untraced run (B), one the traced run (C); the overhead is (C - B) / (B - A).

    python bench/trace_overhead.py [--repeat 7] [--rounds 3]
    python bench/trace_overhead.py --instructions
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from workloads import Workload, run_fedbus

from fedbus.run.trace import TraceRow, TraceWriter, read_trace


def timed(workload: Workload, trace_dir: Path | None) -> float:
    """CPU seconds of this process: on a shared machine, wall time also counts the others."""
    start = time.process_time()
    run_fedbus(workload, trace_dir=trace_dir)
    return time.process_time() - start


def instructions(args: argparse.Namespace) -> int:
    """Instructions of the untraced and the traced run, counted by callgrind."""
    if shutil.which("valgrind") is None:
        raise SystemExit("--instructions needs valgrind (Debian: apt-get install valgrind)")
    counts = {}
    # One hash seed for the three: Python's randomised hashing changes how many instructions
    # a dictionary takes, run to run.
    environment = {**os.environ, "PYTHONHASHSEED": "0"}
    for mode in ("none", "plain", "traced"):
        with tempfile.TemporaryDirectory() as directory:
            done = subprocess.run(
                [
                    "valgrind",
                    "--tool=callgrind",
                    f"--callgrind-out-file={directory}/callgrind.out",
                    sys.executable,
                    __file__,
                    "--one",
                    mode,
                    "--rounds",
                    str(args.rounds),
                    "--clients",
                    str(args.clients),
                    "--into",
                    directory,
                ],
                capture_output=True,
                text=True,
                check=True,
                env=environment,
            )
        found = re.search(r"Collected : (\d+)", done.stderr)
        assert found is not None, done.stderr
        counts[mode] = int(found[1])
    plain = counts["plain"] - counts["none"]
    traced = counts["traced"] - counts["none"]
    print(
        f"instructions: untraced {plain:,}, traced {traced:,}: overhead {traced / plain - 1:+.2%}"
    )
    return 0


def one(mode: str, workload: Workload, into: Path) -> None:
    """What each callgrind process runs: warm up, then nothing, the untraced or the traced run
    (its trace written into ``into``, which the parent removes: not counted).

    The warm-up writes a one-row trace too: the first archive a process writes imports NumPy's
    file format module, which ``fedbus run`` imports anyway (for model.npz); counted in the
    traced run alone, it would be charged to the trace.
    """
    run_fedbus(workload)
    row = TraceRow("a", "train", 0, 1, "1", "", 1, 0.0, 0.0, 0.0, "delivered", 0)
    TraceWriter(into / "warm-up").write_rows([row])
    if mode == "plain":
        run_fedbus(workload)
    elif mode == "traced":
        run_fedbus(workload, trace_dir=into)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--instructions", action="store_true", help="count with callgrind")
    parser.add_argument("--one", choices=("none", "plain", "traced"), help=argparse.SUPPRESS)
    parser.add_argument("--into", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    workload = Workload(args.clients, args.clients, args.rounds, 10_000, idle=True)
    if args.one is not None:
        one(args.one, workload, args.into)
        return 0
    if args.instructions:
        return instructions(args)
    timed(workload, None)  # warm up: imports, caches
    overheads, plain, traced = [], [], []
    with tempfile.TemporaryDirectory() as directory:
        trace_dir = Path(directory)
        for repeat in range(args.repeat):
            order = (None, trace_dir) if repeat % 2 == 0 else (trace_dir, None)
            seconds = {str(target): timed(workload, target) for target in order}
            without, with_trace = seconds["None"], seconds[str(trace_dir)]
            plain.append(without)
            traced.append(with_trace)
            overheads.append((with_trace - without) / without)
        rows = len(read_trace(trace_dir))
    updates = workload.updates
    print(
        f"idle workload: {args.clients} clients, all sampled, 1e4 parameters, {args.rounds} rounds"
    )
    print(f"trace: {rows:,} messages")
    print(
        f"CPU: untraced {statistics.median(plain) / updates * 1e6:.1f} us/update, traced "
        f"{statistics.median(traced) / updates * 1e6:.1f} us/update (medians of {args.repeat})"
    )
    print(
        f"overhead: median {statistics.median(overheads):+.1%} "
        f"(range {min(overheads):+.1%} .. {max(overheads):+.1%}); "
        f"fastest against fastest {min(traced) / min(plain) - 1:+.1%}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
