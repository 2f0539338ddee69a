"""Nodes that leave a deployed federation: no round waits for them, and none samples them.

Real processes on 127.0.0.1, as in ``test_deployment``. A client killed in the middle of a
round, with ``round_timeout = 0`` (wait for every reply), does not hang the round: its
connection closes, the request in flight to it fails with ``NODE_UNAVAILABLE`` at once and the
round closes with the others. Streams that connect and close again during a run leave the
sampling pool as they go, so every round still completes.
"""

from __future__ import annotations

import signal

import pytest

from fedbus.run import read_metrics

from ..runtime.grpc.conftest import RawStream
from .fleet import TOKEN, Fleet, free_port, run_dir_of, wait_for_round, write_config

pytestmark = pytest.mark.slow


def test_a_client_killed_mid_round_with_no_round_timeout(fleet: Fleet) -> None:
    config = write_config(
        fleet.root / "fed.toml", per_round=5, rounds=5, round_timeout=0.0, epochs=600
    )
    port = free_port()
    server = fleet.server(config, port, "--insecure")
    clients = [fleet.client(config, port, k, "--insecure") for k in range(5)]
    wait_for_round(fleet.root, 2, server)
    clients[4].send_signal(signal.SIGKILL)  # while it trains for the next round
    assert clients[4].wait(10) == -signal.SIGKILL
    # no round timeout: only the departure can close the round it was killed in
    assert fleet.finish(server) == 0, fleet.log(server)
    assert [fleet.finish(c) for c in clients[:4]] == [0] * 4
    metrics = read_metrics(run_dir_of(fleet.root))
    assert [m["round"] for m in metrics] == list(range(1, 6))
    assert sum(m["clients_failed"] for m in metrics) <= 1  # the request it never answered
    assert metrics[-1]["clients_replied"] == 4  # node 5 is no longer sampled
    log = fleet.log(server)
    assert "node 5 disconnected" in log
    assert "clients [5] departed" in log
    assert metrics[-1]["test_accuracy"] > 0.85


def test_streams_that_connect_and_close_during_a_run_do_not_break_it(fleet: Fleet) -> None:
    config = write_config(fleet.root / "fed.toml", per_round=4, rounds=10, epochs=100)
    port = free_port()
    server = fleet.server(config, port, "--insecure", "--min-clients", "4")
    clients = [fleet.client(config, port, k, "--insecure") for k in range(4)]
    wait_for_round(fleet.root, 1, server)
    ghosts = []
    for _ in range(6):
        ghost = RawStream(port, token=TOKEN)
        ghosts.append(ghost.node_id)  # admitted: it has a node id, and the server knows it
        ghost.close()
    assert fleet.finish(server) == 0, fleet.log(server)
    assert [fleet.finish(c) for c in clients] == [0] * 4
    metrics = read_metrics(run_dir_of(fleet.root))
    assert [m["round"] for m in metrics] == list(range(1, 11))
    assert all(m["clients_replied"] >= 2 for m in metrics)
    assert len(set(ghosts)) == 6
    log = fleet.log(server)
    assert all(f"node {node} disconnected" in log for node in ghosts)
    assert metrics[-1]["test_accuracy"] > 0.85
