"""Accuracy against bytes sent, for each compression method.

Two FedAvg workloads on scikit-learn's 8x8 digits, split among 50 clients (Dirichlet, alpha 0.5),
10 clients sampled per round, one local epoch at batch 32, the default simulated devices:

- ``softmax``: softmax regression, 650 parameters;
- ``mlp``: one hidden layer of 512 units, 38,410 parameters.

Each runs without compression, then with every method upstream (the clients' updates) and the
methods that may also compress the model both ways. Bytes are what the simulation counts: the
encoded size of every message, compressed payloads, headers and metadata included. The table
(Markdown, on stdout) gives the final test accuracy, the bytes per round each way and their
ratio to the uncompressed run, and the simulated time of the run (transfers take the
compressed sizes); the figure plots test accuracy after each round against the megabytes sent
so far, both ways together.

Usage::

    python bench/compression.py [--rounds 40] [--figure docs/images/compression.png]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.figure import Figure

from fedbus.fl import RoundRecord
from fedbus.run.config import load_config
from fedbus.run.federation import Federation, build_federation

WORKLOADS: dict[str, list[str]] = {
    "softmax": ["model.name=softmax"],
    "mlp": ["model.name=mlp", "model.hidden=512", "trainer.lr=0.1"],
}
COMMON = [
    "data.dataset=digits",
    "federation.num_clients=50",
    "federation.clients_per_round=10",
    "federation.evaluate_every=1",
    "trainer.epochs=1",
    "trainer.batch_size=32",
    "simulation.workers=1",
]
#: (label, method, direction, extra options)
SETTINGS: list[tuple[str, str, str, list[str]]] = [
    ("none", "none", "up", []),
    ("int8 up", "int8", "up", []),
    ("int4 up", "int4", "up", []),
    ("topk 1% up", "topk", "up", ["compression.topk_ratio=0.01"]),
    ("topk 10% up", "topk", "up", ["compression.topk_ratio=0.1"]),
    ("zstd up", "zstd", "up", []),
    ("int8 both", "int8", "both", []),
    ("int4 both", "int4", "both", []),
    ("zstd both", "zstd", "both", []),
]


@dataclass
class Run:
    workload: str
    label: str
    accuracy: float
    bytes_up: int
    bytes_down: int
    simulated: float
    wall: float
    curve: list[tuple[float, float]] = field(default_factory=list)  # (MB so far, accuracy)


def run(workload: str, label: str, options: list[str], rounds: int) -> Run:
    """One configured run; its accuracy after each round against the bytes sent so far."""
    config = load_config(
        None,
        [*COMMON, *WORKLOADS[workload], f"federation.num_rounds={rounds}", *options],
    )
    holder: list[Federation] = []
    curve: list[tuple[float, float]] = []

    def record(round_record: RoundRecord) -> None:
        stats = holder[0].simulation.stats
        if round_record.test_accuracy is not None:
            sent = (stats.bytes_up + stats.bytes_down) / 1e6
            curve.append((sent, round_record.test_accuracy))

    start = time.perf_counter()
    federation = build_federation(config, on_round_end=record)
    holder.append(federation)
    result = federation.simulation.run()
    wall = time.perf_counter() - start
    server = federation.server
    if not server.finished:
        raise SystemExit(f"{workload} {label}: the run failed: {server.failure}")
    accuracy = server.history[-1].test_accuracy
    assert accuracy is not None
    stats = result.stats
    return Run(
        workload, label, accuracy, stats.bytes_up, stats.bytes_down, result.time, wall, curve
    )


def table(runs: list[Run], rounds: int) -> str:
    lines = [
        "| model | method | accuracy | kB up / round | kB down / round | up ratio | down ratio "
        "| simulated s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    baseline = {r.workload: r for r in runs if r.label == "none"}
    for r in runs:
        base = baseline[r.workload]
        lines.append(
            f"| {r.workload} | {r.label} | {r.accuracy:.3f} | {r.bytes_up / rounds / 1e3:.1f} "
            f"| {r.bytes_down / rounds / 1e3:.1f} | {base.bytes_up / r.bytes_up:.2f}x "
            f"| {base.bytes_down / r.bytes_down:.2f}x | {r.simulated:.1f} |"
        )
    return "\n".join(lines)


def figure(runs: list[Run], path: Path) -> None:
    workloads = list(dict.fromkeys(r.workload for r in runs))
    fig = Figure(figsize=(6 * len(workloads), 4.2))
    axes = fig.subplots(1, len(workloads), squeeze=False)[0]
    for axis, workload in zip(axes, workloads, strict=True):
        for r in runs:
            if r.workload != workload:
                continue
            sent, accuracy = zip(*r.curve, strict=True)
            style = "--" if "both" in r.label else "-"
            axis.plot(sent, accuracy, style, label=r.label, linewidth=1.4)
        axis.set_xscale("log")
        axis.set_xlabel("megabytes sent so far (up + down)")
        axis.set_ylabel("test accuracy")
        axis.set_title(f"digits, {workload}")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--figure", type=Path, default=Path("docs/images/compression.png"))
    args = parser.parse_args()
    runs = []
    for workload in WORKLOADS:
        for label, method, direction, extra in SETTINGS:
            options = [f"compression.method={method}", f"compression.direction={direction}"]
            runs.append(run(workload, label, [*options, *extra], args.rounds))
            last = runs[-1]
            print(f"  {workload:8} {label:12} {last.accuracy:.3f} ({last.wall:.1f} s)", flush=True)
    print()
    print(table(runs, args.rounds))
    figure(runs, args.figure)
    print(f"\nfigure: {args.figure}")


if __name__ == "__main__":
    main()
