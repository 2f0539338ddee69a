"""Compare fedbus against Flower on the same FedAvg workloads: ``make bench-peers``.

For each workload of a small matrix this runs three things, each in a fresh process measured
from outside by ``measure.py`` (wall time, and peak memory of the whole process tree, so Ray's
and fedbus's worker processes count):

- fedbus: ``workloads.run_fedbus`` with fedbus's default ``workers=0`` (worker processes, one
  per core, once client work is heavy enough to gain from them), in fedbus's ``.venv``;
- bare: ``workloads.run_bare``, the same arithmetic with no framework, in ``.venv``;
- Flower: ``flower_app.py`` (Flower's simulation engine, Ray backend, one CPU per client) in
  its own venv ``bench/.venv-peers``, created and filled here on first use.

All three train the same model on the same data with the same trainer, so the final models
must agree: fedbus and bare exactly, Flower up to float32 summation order (its FedAvg averages
in float32, in reply order). The idle variant (no training) leaves only the frameworks'
own cost: (framework wall - bare wall) / client updates.

Usage::

    .venv/bin/python bench/peers.py            # the full matrix (several minutes)
    .venv/bin/python bench/peers.py --quick    # 10 clients, and idle at 100

This file is also the child process of the fedbus and bare runs (``--child``), and
``flower_app.py`` imports its workload helpers, so it imports nothing beyond the standard
library, ``measure`` and ``workloads`` at module level.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from measure import Measurement, measure
from workloads import SAME_ENVIRONMENT, Arrays, Workload, run_bare, run_fedbus

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PEERS_VENV = BENCH / ".venv-peers"
STAMP = PEERS_VENV / ".peers-installed"
RESULTS = BENCH / "peers.json"
# 1.42.0 is on PyPI but requires certifi>=2026.10.19, which no certifi release satisfies yet,
# so it cannot be installed; 1.41.0 is the newest that resolves. Override with --flwr.
FLWR_REQUIREMENT = "flwr[simulation]==1.41.0"
FRAMEWORKS = ("bare", "fedbus", "flower")
# No telemetry from a benchmark run (this machine cannot reach those servers anyway).
QUIET_ENV = {"FLWR_TELEMETRY_ENABLED": "0", "RAY_USAGE_STATS_ENABLED": "0"}


# -- workloads on the command line (shared with flower_app.py) ------------------------------
def add_workload_args(parser: argparse.ArgumentParser) -> None:
    """The flags naming one ``Workload``; every field, so a child rebuilds it exactly."""
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--per-round", type=int, required=True)
    parser.add_argument("--rounds", type=int, required=True)
    parser.add_argument("--params", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--idle", action="store_true")


def workload_from_args(args: argparse.Namespace) -> Workload:
    return Workload(
        clients=args.clients,
        per_round=args.per_round,
        rounds=args.rounds,
        params=args.params,
        seed=args.seed,
        idle=args.idle,
    )


def workload_argv(workload: Workload) -> list[str]:
    """The inverse of ``workload_from_args``."""
    argv = [
        f"--clients={workload.clients}",
        f"--per-round={workload.per_round}",
        f"--rounds={workload.rounds}",
        f"--params={workload.params}",
        f"--seed={workload.seed}",
    ]
    return [*argv, "--idle"] if workload.idle else argv


def checksum(arrays: Arrays) -> dict[str, list[float]]:
    """``name -> [sum, sum of |x|]`` of a model, in float64: small enough to print as JSON,
    and two models that differ anywhere beyond rounding differ here too (the absolute sum
    keeps opposite-signed differences from cancelling)."""
    return {
        name: [float(np.sum(value, dtype=np.float64)), float(np.abs(value).sum(dtype=np.float64))]
        for name, value in arrays.items()
    }


def checksum_diff(
    first: dict[str, list[float]], second: dict[str, list[float]], relative: bool = False
) -> float:
    """Largest difference between two checksums; inf if the array names differ.

    ``relative`` divides each array's differences by that array's sum of |x| in ``second``
    (its magnitude): a signed sum can be ~0 (a bias that averages out), and a relative
    difference of that is noise, not disagreement.
    """
    if first.keys() != second.keys():
        return float("inf")
    worst = 0.0
    for name in first:
        scale = max(second[name][1], 1e-30) if relative else 1.0
        for a, b in zip(first[name], second[name], strict=True):
            worst = max(worst, abs(a - b) / scale)
    return worst


def describe(workload: Workload) -> str:
    """A short row label: ``1000c/1000 x3`` plus ``idle`` for the idle variant."""
    label = f"{workload.clients}c/{workload.per_round} x{workload.rounds}"
    return f"{label} idle" if workload.idle else label


# -- child mode: one fedbus or bare run in this process ---------------------------------------
def run_child(framework: str, workload: Workload, workers: int) -> dict[str, Any]:
    """Run ``workload`` once here; the JSON line the parent reads back from stdout."""
    start = time.perf_counter()
    fedbus = framework == "fedbus"
    arrays = run_fedbus(workload, workers=workers) if fedbus else run_bare(workload)
    run_s = time.perf_counter() - start
    return {"framework": framework, "run_s": run_s, "checksum": checksum(arrays)}


# -- the Flower venv ------------------------------------------------------------------------
def peers_python() -> Path:
    return PEERS_VENV / "bin" / "python"


def install_spec(flwr_requirement: str) -> dict[str, str]:
    """What the Flower venv must hold; a change (new flwr pin, new numpy in .venv, new fedbus
    dependencies) reinstalls it.

    numpy is pinned to the version fedbus's venv runs, so all three runs use the same numpy
    (and BLAS): a different one would change the training arithmetic's speed, not Flower's.
    """
    pyproject = (ROOT / "pyproject.toml").read_bytes()
    return {
        "flwr": flwr_requirement,
        "numpy": np.__version__,
        "fedbus_pyproject_sha256": hashlib.sha256(pyproject).hexdigest(),
    }


def ensure_peers_venv(flwr_requirement: str) -> None:
    """Create ``bench/.venv-peers`` and install Flower and fedbus there, once.

    One pip call resolves flwr, fedbus (editable, for ``workloads.py``; its own dependencies
    without extras, so never torch) and the numpy pin together, so pip reports a conflict
    instead of silently breaking either; ``pip check`` confirms the result.
    """
    spec = install_spec(flwr_requirement)
    if STAMP.exists() and json.loads(STAMP.read_text()) == spec:
        return
    if not peers_python().exists():
        print(f"creating {PEERS_VENV.relative_to(ROOT)} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(PEERS_VENV)], check=True)
    print(f"installing {flwr_requirement} into {PEERS_VENV.relative_to(ROOT)} ...", flush=True)
    pip = [str(peers_python()), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run(
        [*pip, flwr_requirement, f"numpy=={spec['numpy']}", "--editable", str(ROOT)], check=True
    )
    subprocess.run([str(peers_python()), "-m", "pip", "check"], check=True)
    STAMP.write_text(json.dumps(spec, indent=2) + "\n")


# -- measured runs --------------------------------------------------------------------------
def command_for(framework: str, workload: Workload, workers: int) -> list[str]:
    """The command line of one measured run."""
    if framework == "flower":
        return [str(peers_python()), str(BENCH / "flower_app.py"), *workload_argv(workload)]
    child = ["--child", framework, f"--workers={workers}"]
    return [sys.executable, str(Path(__file__).resolve()), *child, *workload_argv(workload)]


def measure_run(
    framework: str, workload: Workload, workers: int, timeout_s: float
) -> dict[str, Any]:
    """One measured run: the outside measurement merged with the child's own JSON line."""
    env = {**os.environ, **QUIET_ENV, **SAME_ENVIRONMENT}
    load_before = os.getloadavg()[0]
    result = measure(command_for(framework, workload, workers), env=env, timeout_s=timeout_s)
    record = outside_numbers(result)
    # Other work on the machine inflates wall times: keep the 1-minute load with each run.
    record["loadavg_1m_before"] = load_before
    record["loadavg_1m_after"] = os.getloadavg()[0]
    if result.returncode != 0 or result.timed_out:
        record["error"] = result.stderr_tail
        return record
    lines = result.stdout.strip().splitlines()
    if not lines:
        record["error"] = "no JSON line on stdout\n" + result.stderr_tail
        return record
    record["inside"] = json.loads(lines[-1])
    return record


def outside_numbers(result: Measurement) -> dict[str, Any]:
    return {
        "returncode": result.returncode,
        "timed_out": result.timed_out,
        "wall_s": result.wall_s,
        "cpu_s": result.cpu_s,
        "peak_rss_bytes": result.peak_rss_bytes,
        "peak_pss_bytes": result.peak_pss_bytes,
        "peak_processes": result.peak_processes,
        "samples": result.samples,
    }


def run_workload(
    workload: Workload, frameworks: Sequence[str], workers: int, repeat: int, timeout_s: float
) -> dict[str, Any]:
    """Every framework on one workload, ``repeat`` times each (interleaved, so a slow spell
    of the machine hits all of them), then the summary row."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in frameworks}
    for attempt in range(repeat):
        for name in frameworks:
            print(f"  {describe(workload)}: {name} (run {attempt + 1}/{repeat}) ...", flush=True)
            record = measure_run(name, workload, workers, timeout_s)
            if "error" in record:
                print(f"    FAILED:\n{record['error']}", flush=True)
            else:
                print(f"    {record['wall_s']:.2f} s", flush=True)
            runs[name].append(record)
    return {
        "workload": dataclasses.asdict(workload),
        "updates": workload.updates,
        "runs": runs,
        "summary": summarise(workload, runs),
    }


def median_of(records: list[dict[str, Any]], key: str) -> float | None:
    """Median of ``key`` over the successful runs; None if none succeeded."""
    values = [float(record[key]) for record in records if "error" not in record]
    return statistics.median(values) if values else None


def first_checksum(records: list[dict[str, Any]]) -> dict[str, list[float]] | None:
    for record in records:
        if "inside" in record:
            checksum_: dict[str, list[float]] = record["inside"]["checksum"]
            return checksum_
    return None


def summarise(workload: Workload, runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Medians per framework, the fedbus/Flower ratios, overheads and model agreement."""
    summary: dict[str, Any] = {}
    for name, records in runs.items():
        summary[name] = {
            "wall_s": median_of(records, "wall_s"),
            "cpu_s": median_of(records, "cpu_s"),
            "peak_rss_bytes": median_of(records, "peak_rss_bytes"),
            "peak_pss_bytes": median_of(records, "peak_pss_bytes"),
            "run_s": _median_inside(records, "run_s"),
        }
    summary["ratio_wall"] = _ratio(summary, "wall_s")
    summary["ratio_cpu"] = _ratio(summary, "cpu_s")
    summary["ratio_peak_rss"] = _ratio(summary, "peak_rss_bytes")
    summary["ratio_peak_pss"] = _ratio(summary, "peak_pss_bytes")
    for name in ("fedbus", "flower"):
        if name in summary:
            summary[name]["overhead_ms_per_update"] = _overhead(summary, name, "wall_s", workload)
            summary[name]["overhead_ms_per_update_inside"] = _overhead(
                summary, name, "run_s", workload
            )
    if "flower" in summary:
        summary["flower"]["steady_overhead_ms_per_update"] = _flower_steady_overhead(
            summary, runs["flower"], workload
        )
    summary["max_abs_diff_vs_bare"] = _agreement(workload, runs)
    summary["max_rel_diff_vs_bare"] = _agreement(workload, runs, relative=True)
    return summary


def _flower_steady_overhead(
    summary: dict[str, Any], records: list[dict[str, Any]], workload: Workload
) -> float | None:
    """Flower's overhead per update over rounds 2 and later, in ms: round 1 also pays for
    Ray's start, so this is its per-update cost once running (bare's share of the same rounds
    is its in-process time pro rata)."""
    later = [float(sum(r["inside"]["round_s"][1:])) for r in records if "inside" in r]
    bare_run_s: float | None = summary.get("bare", {}).get("run_s")
    if workload.rounds < 2 or not later or bare_run_s is None:
        return None
    bare_later = bare_run_s * (workload.rounds - 1) / workload.rounds
    updates = workload.per_round * (workload.rounds - 1)
    return (statistics.median(later) - bare_later) / updates * 1000


def _median_inside(records: list[dict[str, Any]], key: str) -> float | None:
    values = [float(record["inside"][key]) for record in records if "inside" in record]
    return statistics.median(values) if values else None


def _ratio(summary: dict[str, Any], key: str) -> float | None:
    """fedbus / Flower for ``key`` (below 1: fedbus is faster or smaller)."""
    fedbus: float | None = summary.get("fedbus", {}).get(key)
    flower: float | None = summary.get("flower", {}).get(key)
    return fedbus / flower if fedbus is not None and flower else None


def _overhead(summary: dict[str, Any], name: str, key: str, workload: Workload) -> float | None:
    """(framework - bare) / client updates, in ms: what the framework adds to each update."""
    framework: float | None = summary[name].get(key)
    bare: float | None = summary.get("bare", {}).get(key)
    if framework is None or bare is None:
        return None
    return (framework - bare) / workload.updates * 1000


def _agreement(
    workload: Workload, runs: dict[str, list[dict[str, Any]]], relative: bool = False
) -> dict[str, float | None]:
    """Max checksum difference of each framework's final model from the bare loop's.

    None for Flower when it samples a subset: it picks its clients with its own generator, so
    it trains a different model (fedbus samples with the bare loop's, so it must still agree).
    """
    bare = first_checksum(runs.get("bare", []))
    agreement: dict[str, float | None] = {}
    for name in ("fedbus", "flower"):
        if name == "flower" and workload.per_round < workload.clients:
            agreement[name] = None
            continue
        other = first_checksum(runs.get(name, []))
        agreement[name] = checksum_diff(other, bare, relative) if other and bare else None
    return agreement


# -- the table ------------------------------------------------------------------------------
COLUMNS = (
    ("workload", 20),
    ("fedbus s", 9),
    ("Flower s", 9),
    ("bare s", 8),
    ("fedbus MB", 10),
    ("Flower MB", 10),
    ("bare MB", 8),
    ("wall f/F", 9),
    ("cpu f/F", 8),
    ("mem f/F", 8),
    ("fedbus ms/upd", 14),
    ("Flower ms/upd", 14),
    ("Flower r2+", 11),
    ("Δ fedbus", 9),
    ("Δ Flower", 9),
)


def table(rows: list[dict[str, Any]]) -> str:
    """The comparison as a plain-text table (memory: peak RSS of the whole process tree)."""
    lines = [" ".join(title.rjust(width) for title, width in COLUMNS)]
    for row in rows:
        s = row["summary"]
        cells = [
            describe(Workload(**row["workload"])),
            _num(s.get("fedbus", {}).get("wall_s"), ".2f"),
            _num(s.get("flower", {}).get("wall_s"), ".2f"),
            _num(s.get("bare", {}).get("wall_s"), ".2f"),
            _mb(s.get("fedbus", {}).get("peak_rss_bytes")),
            _mb(s.get("flower", {}).get("peak_rss_bytes")),
            _mb(s.get("bare", {}).get("peak_rss_bytes")),
            _num(s.get("ratio_wall"), ".2f"),
            _num(s.get("ratio_cpu"), ".2f"),
            _num(s.get("ratio_peak_rss"), ".2f"),
            _num(s.get("fedbus", {}).get("overhead_ms_per_update"), ".3f"),
            _num(s.get("flower", {}).get("overhead_ms_per_update"), ".3f"),
            _num(s.get("flower", {}).get("steady_overhead_ms_per_update"), ".3f"),
            _num(s["max_abs_diff_vs_bare"].get("fedbus"), ".1e"),
            _num(s["max_abs_diff_vs_bare"].get("flower"), ".1e"),
        ]
        lines.append(
            " ".join(cell.rjust(width) for cell, (_, width) in zip(cells, COLUMNS, strict=True))
        )
    return "\n".join(lines)


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value / 2**20:.0f}"


# -- the matrix and the command line ----------------------------------------------------------
def build_matrix(args: argparse.Namespace) -> list[Workload]:
    """Clients as given (all sampled unless --per-round), plus the idle variant."""

    def per_round(clients: int) -> int:
        return min(args.per_round, clients) if args.per_round else clients

    matrix = [
        Workload(clients, per_round(clients), args.rounds, args.params, args.seed)
        for clients in args.clients
    ]
    if args.idle_clients:
        idle = args.idle_clients
        matrix.append(Workload(idle, per_round(idle), args.rounds, args.params, args.seed, True))
    return matrix


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 clients, and idle at 100")
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--per-round", type=int, default=0, help="0: all clients")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--params", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--idle-clients", type=int, default=1000, help="0: no idle variant")
    parser.add_argument("--frameworks", nargs="+", choices=FRAMEWORKS, default=list(FRAMEWORKS))
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="fedbus's simulation.workers (0, its default: one per core when client work is "
        "heavy enough to gain from it)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per cell; medians reported")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per run")
    parser.add_argument("--flwr", default=FLWR_REQUIREMENT, help="pip requirement for Flower")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.clients, args.idle_clients = [10], 100
    return args


def child_main(argv: Sequence[str]) -> None:
    """``peers.py --child fedbus|bare --workers N <workload flags>``: one run, one JSON line."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", choices=("fedbus", "bare"), required=True)
    parser.add_argument("--workers", type=int, default=1)
    add_workload_args(parser)
    args = parser.parse_args(argv)
    outcome = run_child(args.child, workload_from_args(args), args.workers)
    sys.stdout.write(json.dumps(outcome) + "\n")


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if "flower" in args.frameworks:
        ensure_peers_venv(args.flwr)
    rows = []
    for workload in build_matrix(args):
        rows.append(
            run_workload(workload, args.frameworks, args.workers, args.repeat, args.timeout)
        )
        write_results(args, rows)  # after every workload: a long run keeps what it measured
    print()
    print(table(rows))
    print("\ns: wall seconds (median); MB: peak RSS of the whole process tree; cpu: user+sys")
    print("seconds of the tree; f/F: fedbus / Flower ratios (<1: fedbus less);")
    print("ms/upd: (framework wall - bare wall) / client updates, end to end;")
    print("Flower r2+: the same from Flower's own round times, rounds 2+ (no Ray start);")
    print("Δ: max |checksum - bare| (checksum: sum and sum of |x| of each array)")
    print(f"wrote {args.output}")


def write_results(args: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    """Every number, with what they were measured on."""
    document = {
        "machine": machine_info(args.workers),
        "flwr_requirement": args.flwr,
        "rows": rows,
    }
    args.output.write_text(json.dumps(document, indent=2) + "\n")


def machine_info(workers: int) -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "fedbus_workers": workers,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "flwr": _peers_flwr_version(),
        "platform": sys.platform,
    }


def _peers_flwr_version() -> str | None:
    """The flwr version in the Flower venv, asked of that venv's pip metadata."""
    if not peers_python().exists():
        return None
    probe = "import importlib.metadata as m; print(m.version('flwr'))"
    done = subprocess.run([str(peers_python()), "-c", probe], capture_output=True, text=True)
    return done.stdout.strip() or None


if __name__ == "__main__":
    if "--child" in sys.argv[1:]:
        child_main(sys.argv[1:])
    else:
        main()
