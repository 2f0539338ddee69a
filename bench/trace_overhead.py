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

from fedbus.run.trace import read_trace


def timed(workload: Workload, trace_dir: Path | None) -> float:
    """CPU seconds of this process: on a shared machine, wall time also counts the others."""
    start = time.process_time()
    run_fedbus(workload, trace_dir=trace_dir)
    return time.process_time() - start


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
