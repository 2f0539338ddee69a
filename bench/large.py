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

**Deployment** (``deployment``): one ``fedbus`` server process and 4 client processes on
127.0.0.1, one round of FedAvg on a model of ``--model-gib`` GiB (float32): the server sends
the model to each client and each sends back the model plus one. Measured: the server's peak
resident memory (``VmHWM``), the round's wall time (first request sent to aggregate done), the
bytes moved per second during it (4 models down and 4 up), and the rate of one transfer (the
server's ``large_*`` counters: bytes over the seconds from a message's first chunk to its last,
4 at a time unless ``--deployed`` says otherwise). Targets: server peak under 3 GiB for a
1 GiB model, at least 1 GB/s per transfer.

For scale, the machine's own ceiling: a bare TCP socket moving the same bytes from one process
to another into a buffer it already used, and the seconds it takes to write the same number of
bytes into memory the process never touched (what any receiver of a new model pays: on virtual
machines that hand freed memory back to their host, this first touch can cost more than the
copy, and it varies with how recently memory was freed).

Prints tables and adds the figures to ``bench/results.json`` under ``"large"``.

Usage::

    python bench/large.py [--only simulation|deployment] [--clients 1000] [--params 1000000]
                          [--model-gib 1] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from measure import kib_field
from simulation import measure
from workloads import Workload

from fedbus.fl import Client, FedAvg, Server
from fedbus.runtime.grpc import ClientSettings, connect, serve
from fedbus.runtime.simulation import DEFAULT_MEMORY_BUDGET_MB

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.json"
TARGET_PEAK_MB = 600
TARGET_SLOWDOWN = 1.15
TARGET_SERVER_GIB = 3.0
TARGET_GB_PER_S = 1.0
DEPLOYED_CLIENTS = 4
TOKEN = "bench-large-token"


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


# -- deployment ---------------------------------------------------------------------------------
class PlusOne:
    """A trainer that returns the model plus one: a full-size update, no arithmetic to speak of.

    It writes into memory it took before the round, as a trainer's own buffers are, so that the
    round measures fedbus and not the first touch of the trainer's result.
    """

    def __init__(self, size: int) -> None:
        self._result = np.ones(size, np.float32)

    def fit(
        self, arrays: dict[str, np.ndarray[Any, Any]], config: dict[str, Any]
    ) -> tuple[dict[str, np.ndarray[Any, Any]], int, dict[str, float]]:
        return {"w": np.add(arrays["w"], 1, out=self._result)}, 1, {}

    def evaluate(
        self, arrays: dict[str, np.ndarray[Any, Any]], config: dict[str, Any]
    ) -> tuple[float, int, dict[str, float]]:
        return 0.0, 1, {}


def _parameters(model_gib: float) -> int:
    return int(model_gib * (1 << 30)) // 4


def serve_one_round(model_gib: float, clients: int) -> dict[str, Any]:
    """The server process: serve one round to ``clients`` clients, report figures."""
    size = _parameters(model_gib)
    server = Server(
        FedAvg(), {"w": np.zeros(size, np.float32)}, num_rounds=1,
        clients_per_round=clients, evaluate_every=0, seed=0,
    )  # fmt: skip
    handle = serve(
        server, "127.0.0.1:0", token=TOKEN, insecure=True, min_clients=clients,
        check_with=[Client(PlusOne(0))],  # for its message flow only: never trained here
    )  # fmt: skip
    print(f"port {handle.port}", flush=True)
    deadline = time.monotonic() + 600
    while len(handle.connected) < clients and time.monotonic() < deadline:
        time.sleep(0.002)  # a benchmark's clock: the round starts when the last client joins
    started = time.time()
    assert handle.wait(1800), "the round did not end within 30 minutes"
    seconds = server.history[0].time - started if server.history else float("nan")
    stats = handle.stats
    return {
        "server_peak_mb": kib_field(os.getpid(), "status", b"VmHWM") / 1024,
        "round_s": seconds,
        "bytes": stats.bytes_in + stats.bytes_out,
        "upload_gb_per_s": stats.large_bytes_in / 1e9 / stats.large_seconds_in,
        "download_gb_per_s": stats.large_bytes_out / 1e9 / stats.large_seconds_out,
        "final_mean": float(server.arrays.to_numpy_dict()["w"][:1000].mean()),
    }


def join_one_round(address: str, model_gib: float) -> None:
    """A client process: connect, train when asked, leave when the server says so."""
    client = connect(
        Client(PlusOne(_parameters(model_gib))), address, token=TOKEN, insecure=True,
        settings=ClientSettings(connect_timeout=120),
    )  # fmt: skip
    client.wait(1800)


def deployment_part(args: argparse.Namespace) -> dict[str, Any]:
    here = str(Path(__file__).resolve())
    server = subprocess.Popen(
        [sys.executable, here, "--serve", str(args.model_gib), "--deployed", str(args.deployed)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert server.stdout is not None
    port = server.stdout.readline().split()[-1]
    clients = [
        subprocess.Popen(
            [
                sys.executable,
                here,
                "--join",
                f"127.0.0.1:{port}",
                "--model-gib",
                str(args.model_gib),
            ]
        )
        for _ in range(args.deployed)
    ]
    figures = json.loads(server.stdout.read().strip().splitlines()[-1])
    server.wait()
    for client in clients:
        client.wait(120)
    moved_gb = figures["bytes"] / 1e9
    rate = moved_gb / figures["round_s"]
    print(f"\ndeployment: {args.deployed} clients, a {args.model_gib} GiB model, one round")
    print(f"  round {figures['round_s']:.1f} s, {moved_gb:.1f} GB moved: {rate:.2f} GB/s")
    down, up = figures["download_gb_per_s"], figures["upload_gb_per_s"]
    print(f"  per transfer ({args.deployed} at a time): down {down:.2f} GB/s, up {up:.2f} GB/s")
    print(f"  server peak {figures['server_peak_mb']:.0f} MB")
    print(f"  model after the round: {figures['final_mean']} (expected 1.0)")
    peak_gib = figures["server_peak_mb"] / 1024
    print(_verdict(f"server peak < {TARGET_SERVER_GIB} GiB", peak_gib < TARGET_SERVER_GIB,
                   f"{peak_gib:.2f} GiB"))  # fmt: skip
    size = int(args.model_gib * (1 << 30))
    started = time.perf_counter()
    np.empty(size, np.uint8).fill(1)
    first_touch = time.perf_counter() - started
    raw = raw_tcp_gb_per_s(size)
    print(f"  bare TCP, one transfer: {raw:.2f} GB/s; first touch of as much new memory "
          f"{first_touch:.2f} s")  # fmt: skip
    figures["raw_tcp_gb_per_s"], figures["first_touch_s"] = raw, first_touch
    slowest = min(down, up)
    print(_verdict(f"transfers >= {TARGET_GB_PER_S} GB/s", slowest >= TARGET_GB_PER_S,
                   f"{slowest:.2f} GB/s per transfer, {args.deployed} at a time"))  # fmt: skip
    return {"clients": args.deployed, "model_gib": args.model_gib, **figures,
            "gb_per_s": rate}  # fmt: skip


def _send_raw(port: int, size: int) -> None:
    data = np.ones(size, np.uint8)  # the sender's memory is in use before the clock starts
    with socket.create_connection(("127.0.0.1", port)) as peer:
        peer.recv(1)
        peer.sendall(memoryview(data))


def raw_tcp_gb_per_s(size: int) -> float:
    """``size`` bytes through a bare socket into a buffer used before."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        sender = multiprocessing.Process(target=_send_raw, args=(listener.getsockname()[1], size))
        sender.start()
        peer, _ = listener.accept()
        buffer = np.zeros(size, np.uint8)
        buffer[:] = 1
        view, got = memoryview(buffer), 0
        started = time.perf_counter()
        with peer:
            peer.send(b"!")
            while got < size:
                got += peer.recv_into(view[got:], min(4 << 20, size - got))
        seconds = time.perf_counter() - started
        sender.join()
    return size / 1e9 / seconds


def _verdict(target: str, met: bool, measured: str) -> str:
    return f"  {'met   ' if met else 'MISSED'}  {target:<28} measured: {measured}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000, help="clients, all sampled")
    parser.add_argument("--params", type=int, default=1_000_000, help="model parameters")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each; the best counts")
    parser.add_argument("--model-gib", type=float, default=1.0, help="deployment: model size")
    parser.add_argument(
        "--deployed", type=int, default=DEPLOYED_CLIENTS, help="deployment: clients"
    )
    parser.add_argument("--only", choices=("simulation", "deployment"))
    parser.add_argument("--serve", type=float, help=argparse.SUPPRESS)  # the server process
    parser.add_argument("--join", help=argparse.SUPPRESS)  # a client process
    args = parser.parse_args()
    if args.serve is not None:
        print(json.dumps(serve_one_round(args.serve, args.deployed)), flush=True)
        return
    if args.join is not None:
        join_one_round(args.join, args.model_gib)
        return
    results: dict[str, Any] = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    large = results.setdefault("large", {})
    large["machine"] = {"cores": os.cpu_count(), "python": sys.version.split()[0]}
    same = True
    if args.only in (None, "simulation"):
        large["simulation"] = simulation_part(args)
        same = large["simulation"]["same_model"]
    if args.only in (None, "deployment"):
        large["deployment"] = deployment_part(args)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f'\nwritten: {RESULTS.relative_to(HERE.parent)} ("large")')
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
