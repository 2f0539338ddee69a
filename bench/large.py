"""Large models: what a round costs in memory when every client of it replies with a big model.

**Simulation** (``simulation``): 1,000 clients, all sampled, one round of FedAvg on a model of
about 1e6 parameters (``workloads.Workload``), each run in a fresh process so that its peak
memory (``ru_maxrss``) is its own:

- fedbus with no memory budget (every reply of the round waits in memory, as before budgets);
- fedbus with the default budget (``simulation.memory_budget_mb``: replies beyond it wait in
  spill files and the server reads them from there);
- the bare NumPy loop doing the same arithmetic, folding each update in as it is made.

All three must end with the same model, bit for bit (checked). Targets: peak memory under
600 MB with the budget, at no more than 1.15x the time without it.

Prints a table and adds the figures to ``bench/results.json`` under ``"large"``.

Usage::

    python bench/large.py [--clients 1000] [--params 1000000] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from simulation import measure
from workloads import Workload

from fedbus.runtime.simulation import DEFAULT_MEMORY_BUDGET_MB

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.json"
TARGET_PEAK_MB = 600
TARGET_SLOWDOWN = 1.15


def simulation_part(args: argparse.Namespace) -> dict[str, Any]:
    workload = Workload(clients=args.clients, per_round=args.clients, rounds=1, params=args.params)
    runs = {
        "fedbus, no budget": measure(workload, "fedbus", repeat=args.repeat, memory_budget_mb=None),
        f"fedbus, {DEFAULT_MEMORY_BUDGET_MB:.0f} MB budget": measure(
            workload, "fedbus", repeat=args.repeat
        ),
        "bare NumPy loop": measure(workload, "bare", repeat=args.repeat),
    }
    unlimited, budgeted, bare = runs.values()
    same = len({run["model_sha256"] for run in runs.values()}) == 1
    print(f"\nsimulation: {args.clients:,} clients x {args.params:.0e} parameters, one round")
    print(f"{'run':<28} {'seconds':>8} {'peak MB':>8}")
    for name, run in runs.items():
        print(f"{name:<28} {run['seconds']:8.2f} {run['peak_mb']:8.0f}")
    slowdown = budgeted["seconds"] / unlimited["seconds"]
    print(f"\nsame model, bit for bit: {'yes' if same else 'NO'}")
    print(_verdict(f"peak < {TARGET_PEAK_MB} MB", budgeted["peak_mb"] < TARGET_PEAK_MB,
                   f"{budgeted['peak_mb']:.0f} MB"))  # fmt: skip
    print(_verdict(f"time <= {TARGET_SLOWDOWN}x no budget", slowdown <= TARGET_SLOWDOWN,
                   f"{slowdown:.2f}x"))  # fmt: skip
    return {
        "clients": args.clients,
        "params": args.params,
        "budget_mb": DEFAULT_MEMORY_BUDGET_MB,
        "runs": runs,
        "same_model": same,
        "slowdown": slowdown,
        "bare_seconds": bare["seconds"],
    }


def _verdict(target: str, met: bool, measured: str) -> str:
    return f"  {'met   ' if met else 'MISSED'}  {target:<28} measured: {measured}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000, help="clients, all sampled")
    parser.add_argument("--params", type=int, default=1_000_000, help="model parameters")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each; the best counts")
    args = parser.parse_args()
    part = simulation_part(args)
    results: dict[str, Any] = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results["large"] = {
        "machine": {"cores": os.cpu_count(), "python": sys.version.split()[0]},
        "simulation": part,
    }
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f'\nwritten: {RESULTS.relative_to(HERE.parent)} ("large")')
    sys.exit(0 if part["same_model"] else 1)


if __name__ == "__main__":
    main()
