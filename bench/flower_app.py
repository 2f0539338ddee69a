"""Run one ``Workload`` through Flower's simulation engine (Ray backend); print one JSON line.

Runs inside the Flower venv (``bench/.venv-peers``, made by ``bench/peers.py``), never inside
fedbus's own venv: Flower pins its own grpcio/protobuf/cryptography, and its Ray brings a
runtime of its own, which we want measured, not mixed into fedbus's numbers.

The apps use Flower's Message API: a ``ServerApp`` whose ``main`` runs the built-in message
``FedAvg`` (all ``per_round`` clients each round, no evaluation) and a ``ClientApp`` whose
``train`` does exactly ``Workload.trainer(node_id).fit(arrays, config)`` with ``node_id`` =
partition id + 1 and ``config = workload.train_config(server_round)``: the same data, model and
arithmetic as fedbus and the bare loop, so the final models can be compared.

Usage (what peers.py runs)::

    bench/.venv-peers/bin/python bench/flower_app.py --clients 10 --per-round 10 \
        --rounds 3 --params 100000
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import sys
import time
from typing import TYPE_CHECKING, Any

import numpy as np
from peers import QUIET_ENV, add_workload_args, checksum, workload_from_args
from workloads import Arrays, Workload

if TYPE_CHECKING:
    from flwr.app import ArrayRecord, ConfigRecordValues, Context, Message, MetricRecordValues
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp


def to_record(arrays: Arrays) -> ArrayRecord:
    """Named NumPy arrays to a Flower ``ArrayRecord``, keeping the names (and so the order)."""
    from flwr.app import Array, ArrayRecord

    return ArrayRecord({name: Array(np.ascontiguousarray(value)) for name, value in arrays.items()})


def from_record(record: ArrayRecord) -> Arrays:
    """A Flower ``ArrayRecord`` back to named NumPy arrays."""
    return {name: array.numpy() for name, array in record.items()}


def make_client_app(workload: Workload) -> ClientApp:
    """The ``ClientApp``: one local fit of the workload's trainer per train message.

    The trainer is built per message, as fedbus builds a sampled client and the bare loop
    builds one per pick: the data is generated from (seed, node id), so this is the same work.
    """
    from flwr.app import Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        node_id = int(str(context.node_config["partition-id"])) + 1
        server_round = int(str(msg.content.config_records["config"]["server-round"]))
        arrays = from_record(msg.content.array_records["arrays"])
        trainer = workload.trainer(node_id)
        local, num_examples, metrics = trainer.fit(arrays, workload.train_config(server_round))
        # FedAvg weighs each reply by its "num-examples" metric.
        reply_metrics: dict[str, MetricRecordValues] = {"num-examples": num_examples}
        reply_metrics.update((key, float(value)) for key, value in metrics.items())
        content = RecordDict({"arrays": to_record(local), "metrics": MetricRecord(reply_metrics)})
        return Message(content=content, reply_to=msg)

    return app


def make_server_app(workload: Workload, result: dict[str, Any]) -> ServerApp:
    """The ``ServerApp``: Flower's message-API FedAvg for ``workload.rounds`` rounds.

    Fills ``result`` with the final arrays and each round's end time (``time.perf_counter``):
    the first round also pays for Ray's start, so later rounds show the steady state.
    """
    from flwr.app import ConfigRecord
    from flwr.serverapp import ServerApp
    from flwr.serverapp.strategy import FedAvg

    class TimedFedAvg(FedAvg):
        """FedAvg that notes when each round's aggregation finishes."""

        def aggregate_train(
            self, server_round: int, replies: Any
        ) -> tuple[ArrayRecord | None, Any]:
            aggregated = super().aggregate_train(server_round, replies)
            result["round_end"].append(time.perf_counter())
            return aggregated

    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        strategy = TimedFedAvg(
            fraction_train=workload.per_round / workload.clients,
            fraction_evaluate=0.0,
            min_train_nodes=workload.per_round,
            min_evaluate_nodes=0,
            min_available_nodes=workload.clients,
        )
        result["server_start"] = time.perf_counter()
        outcome = strategy.start(
            grid=grid,
            initial_arrays=to_record(workload.initial()),
            num_rounds=workload.rounds,
            train_config=ConfigRecord(),
        )
        result["arrays"] = from_record(outcome.arrays)

    return app


def run(workload: Workload, cpus_per_client: float, verbose: bool) -> dict[str, Any]:
    """Run the simulation; wall time of the ``run_simulation`` call and the final checksum."""
    import_start = time.perf_counter()
    from flwr.simulation import run_simulation

    import_s = time.perf_counter() - import_start
    result: dict[str, Any] = {"round_end": []}
    server_app = make_server_app(workload, result)
    client_app = make_client_app(workload)
    backend_config: dict[str, dict[str, ConfigRecordValues]] = {
        "client_resources": {"num_cpus": cpus_per_client, "num_gpus": 0.0}
    }
    start = time.perf_counter()
    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=workload.clients,
        backend_name="ray",
        backend_config=backend_config,
        verbose_logging=verbose,
    )
    run_s = time.perf_counter() - start
    if "arrays" not in result:
        raise RuntimeError("Flower's ServerApp finished without a final model")
    return summarise(workload, result, start, run_s, import_s)


def summarise(
    workload: Workload, result: dict[str, Any], start: float, run_s: float, import_s: float
) -> dict[str, Any]:
    """The JSON line: timings split where Flower lets us split them, and the final checksum."""
    ends: list[float] = result["round_end"]
    round_s = [
        later - earlier for earlier, later in itertools.pairwise([result["server_start"], *ends])
    ]
    return {
        "framework": "flower",
        "flwr_version": _flwr_version(),
        "workload": dataclasses.asdict(workload),
        "import_s": import_s,
        "run_s": run_s,
        # Until the ServerApp's main starts: engine set-up before any round.
        "setup_s": result["server_start"] - start,
        # Round 1 includes Ray's start and its actors' first import of the ClientApp.
        "round_s": round_s,
        # After the last round: shutting Ray down.
        "teardown_s": start + run_s - ends[-1] if ends else None,
        "checksum": checksum(result["arrays"]),
    }


def _flwr_version() -> str:
    from importlib.metadata import version

    return version("flwr")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_workload_args(parser)
    parser.add_argument("--cpus-per-client", type=float, default=1.0)
    parser.add_argument("--verbose", action="store_true", help="Flower's DEBUG logs")
    args = parser.parse_args(argv)
    # flwr and Ray read these when imported, and flwr is imported inside functions, after this.
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    outcome = run(workload_from_args(args), args.cpus_per_client, args.verbose)
    sys.stdout.write(json.dumps(outcome) + "\n")


if __name__ == "__main__":
    main()
