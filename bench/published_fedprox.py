"""The FedProx paper's straggler experiment on Synthetic(1, 1), rerun with fedbus.

Li et al., "Federated Optimization in Heterogeneous Networks" (MLSys 2020), section 5.2 and
figure 1: 30 devices with power-law sizes, 10 sampled per round, multinomial logistic
regression trained by SGD (lr 0.01, batch 10, 20 local epochs), 200 rounds. With 0 %, 50 % and
90 % of each round's devices straggling, FedAvg drops the stragglers, FedProx takes their
partial work (1 .. 19 epochs), with mu = 0 and mu = 1. The paper reports that with many
stragglers FedAvg's training loss is unstable and ends higher, partial work helps, and the
proximal term (mu = 1) makes convergence stable.

fedbus emulates the same with ``federation.straggler_fraction`` and ``drop_stragglers``; the
global model is evaluated every round on every client's own test split (federated
evaluation), and its loss on the clients' data is the figure compared here.

    python bench/published_fedprox.py                 # the paper's 200 rounds, 3 seeds
    python bench/published_fedprox.py --rounds 40 --seeds 1 --out fedprox.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from typing import Any

from fedbus.run import load_config
from fedbus.run.experiment import run_experiment

#: (label, strategy overrides, drop stragglers)
METHODS = (
    ("FedAvg, stragglers dropped", ("strategy.name=fedavg",), True),
    ("FedProx mu=0, partial work", ("strategy.name=fedprox", "strategy.proximal_mu=0"), False),
    ("FedProx mu=1, partial work", ("strategy.name=fedprox", "strategy.proximal_mu=1"), False),
)
STRAGGLERS = (0.0, 0.5, 0.9)

# The paper's setting; sizes: lognormal around 55 samples (its lognormal(4, 2), plus 50).
SETTING = (
    "data.dataset=synthetic",
    "data.synthetic_alpha=1",
    "data.synthetic_beta=1",
    "data.samples_per_client=55",
    "data.size_sigma=2",
    "federation.num_clients=30",
    "federation.clients_per_round=10",
    "federation.min_replies=1",
    "federation.federated_evaluate_every=1",
    "federation.clients_per_evaluation=30",
    "model.name=softmax",
    "trainer.epochs=20",
    "trainer.batch_size=10",
    "trainer.lr=0.01",
    "run.plot=false",
    "run.save_model=false",
)


def run_one(
    fraction: float,
    method: tuple[str, tuple[str, ...], bool],
    seed: int,
    rounds: int,
    output_dir: str,
) -> dict[str, Any]:
    """One run; the federated loss and accuracy of every round."""
    label, strategy, drop = method
    overrides = [
        *SETTING,
        *strategy,
        f"federation.num_rounds={rounds}",
        f"federation.seed={seed}",
        f"federation.straggler_fraction={fraction}",
        f"federation.drop_stragglers={'true' if drop else 'false'}",
        f"run.output_dir={output_dir}",
    ]
    result = run_experiment(load_config(None, overrides), quiet=True)
    history = result.federation.server.history
    losses = [record.federated_loss for record in history]
    accuracies = [record.federated_accuracy for record in history]
    return {
        "method": label,
        "stragglers": fraction,
        "seed": seed,
        "loss": losses,
        "accuracy": accuracies,
    }


def summarise(runs: list[dict[str, Any]], rounds: int) -> list[dict[str, Any]]:
    """Per method and straggler share: final loss and accuracy, and the loss's instability."""
    tail = max(1, rounds // 10)
    rows = []
    for fraction in STRAGGLERS:
        for label, _, _ in METHODS:
            chosen = [r for r in runs if r["method"] == label and r["stragglers"] == fraction]
            final_loss = [statistics.fmean(r["loss"][-tail:]) for r in chosen]
            final_accuracy = [statistics.fmean(r["accuracy"][-tail:]) for r in chosen]
            # Instability: mean absolute change of the loss from one round to the next.
            jumps = [
                statistics.fmean(abs(b - a) for a, b in zip(r["loss"], r["loss"][1:], strict=False))
                for r in chosen
            ]
            rows.append(
                {
                    "stragglers": fraction,
                    "method": label,
                    "final_loss": statistics.fmean(final_loss),
                    "final_accuracy": statistics.fmean(final_accuracy),
                    "loss_jump": statistics.fmean(jumps),
                }
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", help="write the figures as JSON to this file")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    runs = []
    with tempfile.TemporaryDirectory() as output_dir:
        for fraction in STRAGGLERS:
            for method in METHODS:
                for seed in range(args.seeds):
                    runs.append(run_one(fraction, method, seed, args.rounds, output_dir))
    rows = summarise(runs, args.rounds)
    print(
        f"Synthetic(1,1), 30 clients, 10 per round, {args.rounds} rounds, "
        f"{args.seeds} seeds; last {max(1, args.rounds // 10)} rounds averaged"
    )
    print(f"{'stragglers':>10}  {'method':<28} {'loss':>7} {'accuracy':>9} {'loss jump':>10}")
    for row in rows:
        print(
            f"{row['stragglers']:>10.0%}  {row['method']:<28} {row['final_loss']:>7.3f} "
            f"{row['final_accuracy']:>9.3f} {row['loss_jump']:>10.3f}"
        )
    print(f"({time.perf_counter() - started:.0f} s)")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as file:
            json.dump({"rounds": args.rounds, "seeds": args.seeds, "rows": rows}, file, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
