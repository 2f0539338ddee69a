"""What fedbus's simulation costs on top of the training arithmetic, at every scale.

Three parts, each workload (``workloads.Workload``: FedAvg, an MLP, 64 samples per client) run
in a subprocess of its own so that its peak memory is its own:

1. **matrix**: 10 / 100 / 1,000 clients, all sampled, models of 1e4 / 1e5 / 1e6 parameters,
   through fedbus (one process) and as a bare NumPy loop doing the same arithmetic. Both end with
   the same model, bit for bit (checked). Per-update overhead is ``(fedbus - bare) / updates``;
   the same with a trainer that does nothing gives the framework's pure cost per update.
2. **parallel**: a compute-heavy workload with 1 and with N worker processes
   (``simulation.workers``): the speed-up, and the same model (checked).
3. **scale**: 1,000 / 10,000 / 100,000 registered clients, 100 sampled per round, a 1e5-parameter
   model: time per round and peak memory should follow the clients sampled, not registered.

Prints the tables and writes every figure to ``bench/results.json``.

Usage::

    python bench/simulation.py [--quick] [--only matrix|parallel|scale] [--repeat 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from workloads import SAME_ENVIRONMENT, Workload, run_bare, run_fedbus

from fedbus.runtime.simulation import cores

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.json"


# -- one measurement, in a subprocess ------------------------------------------------------------
def measure_here(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one workload ``repeat`` times in this process: best wall time, peak memory, checksum."""
    workload = Workload(**spec["workload"])
    # "memory_budget_mb" absent: the simulation's default; null: no limit.
    budget = {"memory_budget_mb": spec["memory_budget_mb"]} if "memory_budget_mb" in spec else {}
    run = (
        run_bare
        if spec["runner"] == "bare"
        else lambda w: run_fedbus(w, workers=spec["workers"], **budget)
    )
    best, arrays = float("inf"), {}
    for _ in range(spec["repeat"]):
        start = time.perf_counter()
        arrays = run(workload)
        best = min(best, time.perf_counter() - start)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    digest = hashlib.sha256(b"".join(arrays[key].tobytes() for key in sorted(arrays)))
    return {
        "seconds": best,
        "peak_mb": peak_kb / 1024,
        "largest_worker_mb": children_kb / 1024,
        "model_sha256": digest.hexdigest(),
    }


def measure(
    workload: Workload, runner: str, *, workers: int = 1, repeat: int = 1, **options: Any
) -> dict[str, Any]:
    """``measure_here`` in a fresh Python process; ``options`` go to ``run_fedbus``
    (``memory_budget_mb``)."""
    spec = {
        "workload": dataclasses.asdict(workload),
        "runner": runner,
        "workers": workers,
        "repeat": repeat,
        **options,
    }
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--measure", json.dumps(spec)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **SAME_ENVIRONMENT},
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def same_model(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return bool(a["model_sha256"] == b["model_sha256"])


# -- the three parts -----------------------------------------------------------------------------
def matrix(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    sizes = [10, 100] if args.quick else [10, 100, 1000]
    params = [10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000]
    print("\n1. fedbus (one process) against a bare NumPy loop, every client sampled")
    header = (
        f"{'clients':>7} {'params':>9} {'rounds':>6} {'fedbus s':>9} {'bare s':>8} {'ratio':>6} "
        f"{'fedbus MB':>9} {'bare MB':>8} {'us/update':>9} {'idle us/update':>14}"
    )
    print(header)
    for size in params:
        for clients in sizes:
            rounds = max(1, min(5, 2_000_000_000 // (clients * size * 400)))
            workload = Workload(clients, clients, rounds, size)
            fedbus = measure(workload, "fedbus", repeat=args.repeat)
            bare = measure(workload, "bare", repeat=args.repeat)
            if not same_model(fedbus, bare):
                raise SystemExit(f"fedbus and the bare loop disagree on {workload}")
            idle = dataclasses.replace(workload, idle=True)
            idle_fedbus = measure(idle, "fedbus", repeat=args.repeat)
            idle_bare = measure(idle, "bare", repeat=args.repeat)
            row = {
                "clients": clients,
                "params": size,
                "rounds": rounds,
                "updates": workload.updates,
                "fedbus_s": fedbus["seconds"],
                "bare_s": bare["seconds"],
                "ratio": fedbus["seconds"] / bare["seconds"],
                "fedbus_peak_mb": fedbus["peak_mb"],
                "bare_peak_mb": bare["peak_mb"],
                "overhead_us_per_update": (fedbus["seconds"] - bare["seconds"])
                / workload.updates
                * 1e6,
                "idle_overhead_us_per_update": (idle_fedbus["seconds"] - idle_bare["seconds"])
                / workload.updates
                * 1e6,
            }
            rows.append(row)
            print(
                f"{clients:>7} {size:>9.0e} {rounds:>6} {row['fedbus_s']:>9.3f} "
                f"{row['bare_s']:>8.3f} {row['ratio']:>6.2f} {row['fedbus_peak_mb']:>9.0f} "
                f"{row['bare_peak_mb']:>8.0f} {row['overhead_us_per_update']:>9.0f} "
                f"{row['idle_overhead_us_per_update']:>14.1f}"
            )
    return rows


def parallel(args: argparse.Namespace) -> list[dict[str, Any]]:
    count = max(2, cores())
    workload = Workload(200, 200, 3, 100_000, epochs=20)
    if args.quick:
        workload = dataclasses.replace(workload, clients=40, per_round=40)
    print(
        f"\n2. worker processes: {workload.clients} clients x {workload.epochs} epochs, "
        f"1e5 parameters, {workload.rounds} rounds ({count} cores here)"
    )
    one = measure(workload, "fedbus", workers=1, repeat=args.repeat)
    many = measure(workload, "fedbus", workers=count, repeat=args.repeat)
    if not same_model(one, many):
        raise SystemExit("workers=1 and workers=N disagree")
    speedup = one["seconds"] / many["seconds"]
    print(
        f"  workers=1 {one['seconds']:.2f} s, workers={count} {many['seconds']:.2f} s: "
        f"{speedup:.2f}x (target >= 1.7 on 2 cores); same model, checked"
    )
    return [
        {
            "workload": dataclasses.asdict(workload),
            "workers": count,
            "one_s": one["seconds"],
            "many_s": many["seconds"],
            "speedup": speedup,
            "many_driver_peak_mb": many["peak_mb"],
            "many_largest_worker_mb": many["largest_worker_mb"],
        }
    ]


def scale(args: argparse.Namespace) -> list[dict[str, Any]]:
    registered = [1_000, 10_000] if args.quick else [1_000, 10_000, 100_000]
    rounds = 5 if args.quick else 20
    print(f"\n3. registered clients: 100 sampled per round, 1e5 parameters, {rounds} rounds")
    rows = []
    for clients in registered:
        workload = Workload(clients, 100, rounds, 100_000)
        result = measure(workload, "fedbus", repeat=args.repeat)
        rows.append(
            {
                "registered": clients,
                "seconds_per_round": result["seconds"] / rounds,
                "peak_mb": result["peak_mb"],
            }
        )
    base = rows[0]["seconds_per_round"]
    for row in rows:
        row["vs_first"] = row["seconds_per_round"] / base
        print(
            f"  {row['registered']:>7} registered: {row['seconds_per_round'] * 1e3:7.1f} ms per "
            f"round ({row['vs_first']:.2f}x; target <= 1.2), peak {row['peak_mb']:.0f} MB "
            "(target < 2048)"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description="fedbus simulation benchmarks")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a first look")
    parser.add_argument("--only", choices=("matrix", "parallel", "scale"))
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # one measurement, as a subprocess
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure_here(json.loads(args.measure))))
        return
    parts = {"matrix": matrix, "parallel": parallel, "scale": scale}
    results: dict[str, Any] = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for name, part in parts.items():
        if args.only in (None, name):
            results[name] = part(args)
    results["machine"] = {"cores": cores(), "python": sys.version.split()[0]}
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten: {RESULTS.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
