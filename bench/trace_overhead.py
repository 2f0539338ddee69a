"""What the message trace costs: ``make bench``'s idle workload with and without trace.csv.

The idle workload (1,000 clients, all sampled, 1e4 parameters, trainers that return what they
get) leaves only the framework's own work per client update, so it shows the trace's cost at
its largest share. Each repeat runs both variants back to back in this process, alternating
which goes first; the figure is the median over repeats of (traced - untraced) / untraced,
where "traced" keeps every message's trace entry and writes trace.csv at the end, as
``fedbus run`` does by default.

    python bench/trace_overhead.py [--repeat 7] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from workloads import Workload, run_fedbus


def timed(workload: Workload, trace_file: Path | None) -> float:
    start = time.perf_counter()
    run_fedbus(workload, trace_file=trace_file)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=1000)
    args = parser.parse_args(argv)
    workload = Workload(args.clients, args.clients, args.rounds, 10_000, idle=True)
    timed(workload, None)  # warm up: imports, caches
    overheads, plain, traced = [], [], []
    with tempfile.TemporaryDirectory() as directory:
        trace_file = Path(directory) / "trace.csv"
        for repeat in range(args.repeat):
            order = (None, trace_file) if repeat % 2 == 0 else (trace_file, None)
            seconds = {str(target): timed(workload, target) for target in order}
            without, with_trace = seconds["None"], seconds[str(trace_file)]
            plain.append(without)
            traced.append(with_trace)
            overheads.append((with_trace - without) / without)
        rows = sum(1 for _ in trace_file.open(encoding="utf-8")) - 1
    updates = workload.updates
    print(
        f"idle workload: {args.clients} clients, all sampled, 1e4 parameters, {args.rounds} rounds"
    )
    print(f"trace.csv: {rows:,} messages")
    print(
        f"untraced {statistics.median(plain) / updates * 1e6:.1f} us/update, traced "
        f"{statistics.median(traced) / updates * 1e6:.1f} us/update (medians of {args.repeat})"
    )
    print(
        f"overhead: median {statistics.median(overheads):+.1%} "
        f"(range {min(overheads):+.1%} .. {max(overheads):+.1%})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
