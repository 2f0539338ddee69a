"""How fast the dashboard shows a round, and what feeding it costs the federation.

A ``LiveRun`` is fed as a 1,000-client federation would feed it: each round, a wait for the
1,000 clients, 1,000 messages (500 requests, 500 replies), then the round's end. The
dashboard is served and open in headless Chromium. The latency of a round is from just
before ``round_ended`` (``time.time()`` here) to the moment the page has drawn that round
(``Date.now()``, which the page stores in ``window.__fedbusRendered``): the same machine's
clock on both sides. Before each round the bench waits a random 0-300 ms, so a round ends at
any point of the page's polling period. Both transports are measured: the event stream
(the default) and polling every 200 ms (``?transport=poll``).

It then measures the same latency for a real simulated federation of 1,000 clients (MNIST-1D),
all sampled every round, run by ``run_experiment(..., dashboard=...)`` as ``fedbus run --dashboard``
runs it: the simulation and the page's server then share this process (and its interpreter
lock), and the rounds end as fast as the simulation makes them, not at a pace of the bench's.

It also times ``LiveRun.message`` alone (microseconds per call, 1,000 clients) and a
snapshot of 1,000 nodes.

    python bench/dashboard_latency.py [--rounds 30] [--clients 1000]
"""

from __future__ import annotations

import argparse
import random
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

from fedbus.run.config import load_config
from fedbus.run.dashboard import LiveRun, serve_dashboard
from fedbus.run.experiment import DashboardOptions, run_experiment

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def browser(profile: str) -> Any:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def feed_round(run: LiveRun, server_round: int, clients: int) -> None:
    """Everything but the round's end: the wait, then one request and one reply per client."""
    nodes = range(1, clients + 1)
    run.round_waiting(server_round, list(nodes), 0, clients, deadline=None, since=0.0)
    for node in range(1, clients // 2 + 1):
        run.message(0, node, "train", 40_000, "delivered", float(server_round))
        run.message(node, 0, "train", 40_100, "delivered", server_round + 0.5)


def latencies(driver: Any, transport: str, rounds: int, clients: int) -> list[float]:
    """Milliseconds from round_ended to the page showing the round, one per round."""
    run = LiveRun("bench", Path("runs/bench"), num_rounds=rounds)
    pause = random.Random(0)
    found: list[float] = []
    with serve_dashboard([run]) as dashboard:
        driver.get(f"{dashboard.url}?transport={transport}")
        shown = "const r = (window.__fedbusRendered || {})[0]; return r ? r[arguments[0]] : null;"
        WebDriverWait(driver, 60).until(lambda d: d.execute_script(shown, 0))
        for server_round in range(1, rounds + 1):
            time.sleep(pause.uniform(0.0, 0.3))
            feed_round(run, server_round, clients)
            ended = time.time() * 1000.0
            run.round_ended({"round": server_round, "test_accuracy": 0.5, "train_loss": 1.0})
            drawn = WebDriverWait(driver, 60, poll_frequency=0.01).until(
                lambda d, r=server_round: d.execute_script(shown, r)
            )
            found.append(float(drawn) - ended)
    return found


def simulated(driver: Any, rounds: int, clients: int, output: str) -> list[float]:
    """Milliseconds from each round's end to the page showing it, for a simulated federation
    of ``clients`` clients (all sampled) served by ``run_experiment``'s own dashboard."""
    ended: dict[int, float] = {}
    page_open, page_done = threading.Event(), threading.Event()
    original_end, original_finish = LiveRun.round_ended, LiveRun.finished

    def round_ended(run: LiveRun, line: Mapping[str, Any]) -> None:
        ended[int(line["round"])] = time.time() * 1000.0
        original_end(run, line)
        if int(line["round"]) == 1:
            page_open.wait(120)  # the page is open before the rounds race on

    def finished(run: LiveRun, state: str, summary: Mapping[str, Any] | None) -> None:
        original_finish(run, state, summary)
        page_done.wait(120)  # keep serving until the page has shown every round

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    config = load_config(
        None,
        [
            "data.dataset=mnist1d",  # enough samples for 1,000 clients
            f"federation.num_clients={clients}",
            f"federation.clients_per_round={clients}",
            f"federation.num_rounds={rounds}",
            f"run.output_dir={output}",
            "run.plot=false",
        ],
    )
    LiveRun.round_ended = round_ended  # type: ignore[method-assign]
    LiveRun.finished = finished  # type: ignore[method-assign]
    try:
        failed: list[BaseException] = []

        def run() -> None:
            try:
                run_experiment(config, quiet=True, dashboard=DashboardOptions("127.0.0.1", port))
            except BaseException as exc:
                failed.append(exc)
                raise

        runner = threading.Thread(target=run)
        runner.start()
        while 1 not in ended:
            if failed or not runner.is_alive():
                raise SystemExit(f"the simulated run failed: {failed}")
            time.sleep(0.01)
        driver.get(f"http://127.0.0.1:{port}/")
        shown = "const r = (window.__fedbusRendered || {})[0]; return r ? r[arguments[0]] : null;"
        WebDriverWait(driver, 60).until(lambda d: d.execute_script(shown, 1))
        page_open.set()
        WebDriverWait(driver, 600, poll_frequency=0.05).until(
            lambda d: d.execute_script(shown, rounds)
        )
        drawn = driver.execute_script("return (window.__fedbusRendered || {})[0];")
        page_done.set()
        runner.join()
    finally:
        LiveRun.round_ended, LiveRun.finished = original_end, original_finish  # type: ignore[method-assign]
    # round 1 waited for the page to open; the others ended while it was open
    return [float(drawn[str(r)]) - ended[r] for r in range(2, rounds + 1) if str(r) in drawn]


def message_cost(clients: int, calls: int) -> float:
    """Microseconds per LiveRun.message call, best of 5."""
    best = float("inf")
    for _ in range(5):
        run = LiveRun("cost", Path("runs/cost"), num_rounds=1)
        start = time.perf_counter()
        for index in range(calls):
            node = index % clients + 1
            run.message(node, 0, "train", 40_000, "delivered", 1.0)
        best = min(best, (time.perf_counter() - start) / calls * 1e6)
    return best


def snapshot_cost(clients: int) -> float:
    """Milliseconds for a snapshot of ``clients`` nodes after one round, best of 5."""
    best = float("inf")
    for _ in range(5):
        run = LiveRun("cost", Path("runs/cost"), num_rounds=1)
        feed_round(run, 1, clients * 2)
        start = time.perf_counter()
        run.snapshot()
        best = min(best, (time.perf_counter() - start) * 1e3)
    return best


def describe(name: str, values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return (
        f"{name:<22} median {statistics.median(values):7.1f} ms   p95 {p95:7.1f} ms   "
        f"max {ordered[-1]:7.1f} ms   ({len(values)} rounds)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--clients", type=int, default=1000)
    args = parser.parse_args(argv)
    print(f"LiveRun.message: {message_cost(args.clients, 200_000):.2f} us per call")
    print(f"snapshot of {args.clients:,} nodes: {snapshot_cost(args.clients):.2f} ms")
    with tempfile.TemporaryDirectory() as profile:
        driver = browser(profile)
        try:
            for transport in ("events", "poll"):
                found = latencies(driver, transport, args.rounds, args.clients)
                label = "event stream" if transport == "events" else "polling every 200 ms"
                print(describe(label, found))
            with tempfile.TemporaryDirectory() as output:
                found = simulated(driver, args.rounds, args.clients, output)
            print(describe(f"simulated, {args.clients:,} clients", found))
        finally:
            driver.quit()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
