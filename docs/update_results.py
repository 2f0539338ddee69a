"""Rerun the example configurations and rewrite their results table in docs/algorithms.md.

Run: ``make docs-results`` (or ``.venv/bin/python docs/update_results.py``). Each config of
``EXAMPLES`` runs twice, as written and as its baseline (the same file with FedAvg, or another
config), seed 0, in a temporary directory; the figures go to ``docs/results.json`` and the
table between the markers in ``docs/algorithms.md`` is rendered from that file, so the page
says what the code gives. Simulations are deterministic: the same code gives the same figures
on any machine, which ``tests/test_docs_results.py`` checks for some of them.

``--only NAME`` reruns one example (keeping the others' recorded figures).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedbus.run import load_config
from fedbus.run.experiment import run_experiment

HERE = Path(__file__).resolve().parent
CONFIGS = HERE.parent / "examples" / "configs"
RESULTS = HERE / "results.json"
PAGE = HERE / "algorithms.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"
FEDAVG = ("strategy.name=fedavg",)


@dataclass(frozen=True)
class Example:
    """One row: a config, what it shows, how its figure reads and what it is compared with."""

    config: str
    algorithm: str
    #: ``accuracy`` (central test set), ``clients`` (federated evaluation, with the central one
    #: in brackets), ``personal`` (Ditto's personal and global models on the clients' data) or
    #: ``time`` (accuracy and simulated seconds).
    figure: str = "accuracy"
    baseline_overrides: tuple[str, ...] = FEDAVG
    #: Another config as the baseline (``baseline_overrides`` then apply to it).
    baseline_config: str | None = None
    #: Text in place of a baseline run.
    baseline_text: str | None = None


EXAMPLES = [
    Example("fedadam.toml", "FedAdam, server_lr 0.03"),
    Example("fedprox.toml", "FedProx, mu 0.1, Dirichlet 0.1"),
    Example("scaffold.toml", "SCAFFOLD, Dirichlet 0.1"),
    Example("robust.toml", "median, 20% sign-flip attackers (x10)"),
    Example("ditto.toml", "Ditto, lambda 0.1, Dirichlet 0.1", figure="personal"),
    Example("fedbn_cnn.toml", "FedBN, torch CNN, Dirichlet 0.5", figure="clients"),
    Example(
        "stragglers_fedbuff.toml",
        "FedBuff, goal 10, 20% of devices 10x slower",
        figure="time",
        baseline_overrides=(),
        baseline_config="stragglers_sync.toml",
    ),
    Example(
        "fedasync.toml",
        "FedAsync, alpha 0.6, same devices",
        figure="time",
        baseline_text="as above",
    ),
]


def measure(config: str, overrides: tuple[str, ...]) -> dict[str, Any]:
    """Run one config in a temporary directory; the figures the table needs."""
    with tempfile.TemporaryDirectory() as directory:
        settings = [*overrides, f"run.output_dir={directory}", "run.plot=false"]
        result = run_experiment(load_config(CONFIGS / config, settings), quiet=True)
        rounds = [
            json.loads(line)
            for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()
            if line.strip()
        ]
    last_federated = next(
        (r for r in reversed(rounds) if r.get("federated_accuracy") is not None), {}
    )
    return {
        "accuracy": result.summary["final_test_accuracy"],
        "simulated_time": result.summary["simulated_time"],
        "federated_accuracy": last_federated.get("federated_accuracy"),
        "personal_accuracy": last_federated.get("federated_personal_accuracy"),
    }


def cell(figure: str, figures: dict[str, Any], baseline: bool = False) -> str:
    """One example's figure as the table shows it."""
    accuracy = f"{figures['accuracy']:.3f}"
    if figure == "clients":
        where = "" if baseline else " on clients' test data"
        return f"{figures['federated_accuracy']:.3f}{where} ({accuracy} central)"
    if figure == "personal":
        clients = f"{figures['federated_accuracy']:.3f}"
        if baseline or figures.get("personal_accuracy") is None:
            return f"global {clients}"
        return f"personal {figures['personal_accuracy']:.3f}, global {clients} (on clients' data)"
    if figure == "time":
        unit = "s" if baseline else "simulated s"
        return f"{accuracy} in {figures['simulated_time']:.1f} {unit}"
    return accuracy


def table(results: dict[str, Any]) -> str:
    """The markdown table of ``results`` (as ``docs/results.json`` holds them)."""
    lines = [
        "| config | algorithm | final test accuracy | baseline: FedAvg, same file |",
        "|---|---|---|---|",
    ]
    for example in EXAMPLES:
        row = results[example.config]
        if example.baseline_text is not None:
            baseline = example.baseline_text
        else:
            baseline = cell(example.figure, row["baseline"], baseline=True)
            if example.baseline_config is not None:
                baseline += f" (`{example.baseline_config}`)"
        figure = cell(example.figure, row["figures"])
        lines.append(f"| `{example.config}` | {example.algorithm} | {figure} | {baseline} |")
    return "\n".join(lines)


def rewrite_page(results: dict[str, Any]) -> None:
    text = PAGE.read_text(encoding="utf-8")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    PAGE.write_text(f"{head}{START}\n{table(results)}\n{END}{tail}", encoding="utf-8")


def run_example(example: Example) -> dict[str, Any]:
    print(f"{example.config} ...", flush=True)
    row: dict[str, Any] = {"figures": measure(example.config, ())}
    if example.baseline_text is None:
        config = example.baseline_config or example.config
        row["baseline"] = measure(config, example.baseline_overrides)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=[example.config for example in EXAMPLES])
    args = parser.parse_args()
    results: dict[str, Any] = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for example in EXAMPLES:
        if args.only in (None, example.config):
            results[example.config] = run_example(example)
    RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    rewrite_page(results)
    print(f"written: {RESULTS.name} and the table in {PAGE.name}")


if __name__ == "__main__":
    sys.exit(main())
