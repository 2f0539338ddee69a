"""Processes on 127.0.0.1 for the deployment tests: ``fedbus server`` and ``fedbus client``.

``Fleet`` starts them, keeps their logs and kills whatever is still running at the end (the
``fleet`` fixture in this folder's conftest); every wait is bounded.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from fedbus.run import read_metrics

CONFIG = """\
[run]
name = "deployed"
output_dir = "{output}"

[federation]
num_clients = 5
clients_per_round = {per_round}
clients_per_evaluation = 3
num_rounds = {rounds}
min_replies = {min_replies}
round_timeout = {round_timeout}
seed = 3

[trainer]
epochs = {epochs}
"""

TOKEN = "process-test-token"
PROCESS_TIMEOUT = 90.0


def write_config(path: Path, **values: object) -> Path:
    settings: dict[str, object] = {
        "output": path.parent / "runs",
        "per_round": 3,
        "rounds": 6,
        "min_replies": 0,
        "round_timeout": 0.0,
        "epochs": 5,
    }
    settings.update(values)
    path.write_text(CONFIG.format(**settings))
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Fleet:
    """Processes started by a test; whatever is still running at the end is killed."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.processes: list[subprocess.Popen[bytes]] = []
        self.logs: dict[int, Path] = {}

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = self.root / f"{name}-{len(self.processes)}.log"
        env = {**os.environ, "FEDBUS_TOKEN": TOKEN}
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "fedbus", *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.root,
            )
        self.processes.append(process)
        self.logs[process.pid] = log
        return process

    def server(self, config: Path, port: int, *extra: str) -> subprocess.Popen[bytes]:
        return self.start(
            "server", "server", str(config), "--listen", f"127.0.0.1:{port}",
            "--join-timeout", "60", "--heartbeat", "0.5", *extra,
        )  # fmt: skip

    def client(self, config: Path, port: int, k: int, *extra: str) -> subprocess.Popen[bytes]:
        return self.start(
            f"client{k}", "client", str(config), "--server", f"127.0.0.1:{port}",
            "--partition", str(k), "--heartbeat", "0.5", "--connect-timeout", "60", *extra,
        )  # fmt: skip

    def log(self, process: subprocess.Popen[bytes]) -> str:
        return self.logs[process.pid].read_text(errors="replace")

    def finish(self, process: subprocess.Popen[bytes]) -> int:
        try:
            return process.wait(PROCESS_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            raise AssertionError(f"process did not end:\n{self.log(process)}") from None

    def wait_for_log(self, process: subprocess.Popen[bytes], text: str) -> None:
        """Until ``text`` appears in ``process``'s log (it must keep running meanwhile)."""
        deadline = time.monotonic() + PROCESS_TIMEOUT
        while text not in self.log(process):
            assert process.poll() is None, f"ended before {text!r}:\n{self.log(process)}"
            assert time.monotonic() < deadline, f"{text!r} did not come:\n{self.log(process)}"
            time.sleep(0.02)

    def kill_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait(10)


def run_dir_of(root: Path) -> Path:
    (run_dir,) = (root / "runs").iterdir()
    return run_dir


def wait_for_round(root: Path, at_least: int, server: subprocess.Popen[bytes]) -> int:
    deadline = time.monotonic() + PROCESS_TIMEOUT
    while time.monotonic() < deadline:
        runs = root / "runs"
        if runs.exists() and any(runs.glob("*/metrics.jsonl")):
            rounds = [line["round"] for line in read_metrics(run_dir_of(root))]
            if rounds and rounds[-1] >= at_least:
                return int(rounds[-1])
        assert server.poll() is None, "the server ended early"
        time.sleep(0.02)
    raise AssertionError(f"round {at_least} did not come")
