"""Messages larger than memory budgets (and than 4 GiB) over real gRPC between two processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fedbus.runtime.grpc import ReceiveLimits, serve
from fedbus.runtime.grpc.server import TransportStats

from .large_peer import TOKEN, Hasher, Sender

ROOT = Path(__file__).parents[3]
MIB = 1 << 20
GIB = 1 << 30


def send_from_another_process(
    gib: float, receive: ReceiveLimits, spill_dir: Path
) -> tuple[str, TransportStats]:
    """Serve a ``Hasher`` here, run a ``Sender`` of ``gib`` GiB in a process of its own."""
    server = serve(
        Hasher(), "127.0.0.1:0", token=TOKEN, insecure=True, check_with=[Sender(8)],
        receive=receive, spill_dir=str(spill_dir),
    )  # fmt: skip
    try:
        done = subprocess.run(
            [sys.executable, "-m", "tests.runtime.grpc.large_peer", f"127.0.0.1:{server.port}",
             str(gib)],
            cwd=ROOT, capture_output=True, text=True, timeout=900, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done.stdout, server.stats
    finally:
        server.stop()
        assert server.wait(60)


@pytest.mark.slow
def test_a_5_gib_message_streams_into_a_spill_file_and_arrives_intact(tmp_path: Path) -> None:
    receive = ReceiveLimits(per_peer=512 * MIB, total=512 * MIB, spill=8 * GIB)
    output, stats = send_from_another_process(5, receive, tmp_path)
    assert "same True" in output
    assert "'copied': False" in output  # the server hashed a view of the spill file
    assert stats.messages_spilled == 1
    assert stats.bytes_spilled > 5 * GIB
    assert stats.bytes_buffered == stats.bytes_spilling == 0
    assert list(tmp_path.iterdir()) == []  # the server's spill folder went with it


def test_a_message_over_the_memory_budget_arrives_intact_from_its_file(tmp_path: Path) -> None:
    receive = ReceiveLimits(per_peer=1 * MIB, total=1 * MIB, spill=64 * MIB)
    output, stats = send_from_another_process(3 / 1024, receive, tmp_path)  # 3 MiB
    assert "same True" in output
    assert stats.messages_spilled == 1
