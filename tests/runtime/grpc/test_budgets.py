"""Bounded memory and work per peer: the receive budget, partial messages, idle connections.

The server's own account (``stats.bytes_buffered``) is what is checked: sizes, not times.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from fedbus import ArrayRecord, Message, RecordDict
from fedbus.message import spill as spill_module
from fedbus.runtime.grpc import ReceiveLimits, serve
from fedbus.runtime.grpc.budget import BudgetExceededError, ReceiveBudget
from fedbus.runtime.grpc.framing import HEADER_SIZE, announced_size

from .conftest import RawStream, wait_until
from .test_security import Hub, Live, shut, start

STUCK = 60.0
MIB = 1 << 20


def first_chunk(total: int, sequence: int = 1, payload: int = 1 << 20) -> bytes:
    """The first DATA frame of a message announcing ``total`` bytes, not its last."""
    return struct.pack("<BBHIQQ", 1, 0, 0, sequence, total, 0) + bytes(payload)


@pytest.fixture
def budgeted() -> Iterator[Live]:
    """A server that keeps everything in memory (no spill files)."""
    federation = start(receive=ReceiveLimits(per_peer=64 * MIB, total=100 * MIB, spill=0))
    federation.still_answers()
    yield federation
    shut(federation)


@pytest.fixture
def spilling(tmp_path: Path) -> Iterator[Live]:
    """A server that holds 64 MiB per message and 100 MiB in all in memory, 200 MiB on disk."""
    limits = ReceiveLimits(per_peer=64 * MIB, total=100 * MIB, spill=200 * MIB)
    federation = start(receive=limits, spill_dir=str(tmp_path))
    federation.still_answers()
    yield federation
    shut(federation)


def test_partial_messages_are_freed_when_their_peers_go(budgeted: Live) -> None:
    server = budgeted.server
    peers = [RawStream(budgeted.port) for _ in range(3)]
    for peer in peers[:2]:
        peer.send(first_chunk(40 * MIB))  # half of a 40 MiB message, then nothing more
    wait_until(lambda: server.stats.bytes_buffered == 80 * MIB, STUCK)
    for peer in peers[:2]:
        peer.close()
    wait_until(lambda: server.stats.bytes_buffered == 0, STUCK)
    # the budget is whole again: a new large message still fits
    peers[2].send(first_chunk(60 * MIB))
    wait_until(lambda: server.stats.bytes_buffered == 60 * MIB, STUCK)
    peers[2].close()
    wait_until(lambda: server.stats.bytes_buffered == 0, STUCK)
    budgeted.still_answers()


def test_a_message_over_the_per_peer_budget_is_refused_for_that_peer(budgeted: Live) -> None:
    greedy = RawStream(budgeted.port)
    greedy.send(first_chunk(65 * MIB))
    code, details = greedy.status()
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "receive_budget_per_peer_mb" in details
    assert budgeted.server.stats.bytes_buffered == 0
    budgeted.still_answers()


def test_a_peer_waits_for_room_in_the_total_budget(budgeted: Live) -> None:
    server = budgeted.server
    first, second = RawStream(budgeted.port), RawStream(budgeted.port)
    first.send(first_chunk(60 * MIB))
    wait_until(lambda: server.stats.bytes_buffered == 60 * MIB, STUCK)
    second.send(first_chunk(50 * MIB))  # 110 MiB would pass the 100 MiB total: it waits
    budgeted.still_answers()  # the waiting peer holds up nobody else
    assert server.stats.bytes_buffered == 60 * MIB
    assert not second.ended.is_set()
    first.close()  # room again: the second message is read now
    wait_until(lambda: server.stats.bytes_buffered == 50 * MIB, STUCK)
    second.close()
    wait_until(lambda: server.stats.bytes_buffered == 0, STUCK)


def test_a_message_over_the_memory_budget_goes_to_a_spill_file(
    spilling: Live, tmp_path: Path
) -> None:
    server = spilling.server
    large, second, third = (RawStream(spilling.port) for _ in range(3))
    large.send(first_chunk(65 * MIB))  # more than one peer may hold in memory
    wait_until(lambda: server.stats.bytes_spilling == 65 * MIB, STUCK)
    assert server.stats.bytes_buffered == 0
    # The spill folder holds no named file: the open file has no name left.
    assert [list(folder.iterdir()) for folder in tmp_path.iterdir()] == [[]]
    second.send(first_chunk(60 * MIB))  # fits in memory
    wait_until(lambda: server.stats.bytes_buffered == 60 * MIB, STUCK)
    third.send(first_chunk(50 * MIB))  # not in memory (110 > 100): on disk (115 <= 200)
    wait_until(lambda: server.stats.bytes_spilling == 115 * MIB, STUCK)
    for peer in (large, second, third):
        peer.close()
    wait_until(lambda: server.stats.bytes_spilling == server.stats.bytes_buffered == 0, STUCK)
    spilling.still_answers()


def test_a_peer_waits_when_memory_and_spill_files_are_full(spilling: Live) -> None:
    server = spilling.server
    peers = [RawStream(spilling.port) for _ in range(4)]
    peers[0].send(first_chunk(64 * MIB))  # memory: 64 of 100
    wait_until(lambda: server.stats.bytes_buffered == 64 * MIB, STUCK)
    peers[1].send(first_chunk(150 * MIB))  # disk: 150 of 200
    wait_until(lambda: server.stats.bytes_spilling == 150 * MIB, STUCK)
    peers[2].send(first_chunk(60 * MIB))  # neither has room: waits
    spilling.still_answers()
    assert (server.stats.bytes_buffered, server.stats.bytes_spilling) == (64 * MIB, 150 * MIB)
    assert not peers[2].ended.is_set()
    peers[1].close()  # disk room again: the waiting message goes there
    wait_until(lambda: server.stats.bytes_spilling == 60 * MIB, STUCK)
    for peer in peers:
        peer.close()
    wait_until(lambda: server.stats.bytes_spilling == server.stats.bytes_buffered == 0, STUCK)


def test_a_message_larger_than_memory_and_spill_budgets_is_refused(spilling: Live) -> None:
    greedy = RawStream(spilling.port)
    greedy.send(first_chunk(201 * MIB))
    code, details = greedy.status()
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "receive_budget_per_peer_mb" in details
    assert "spill_budget_mb" in details
    spilling.still_answers()


def test_a_full_disk_refuses_that_peer_s_message_and_the_server_goes_on(
    spilling: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(spill_module.os, "posix_fallocate", disk_full)
    unlucky = RawStream(spilling.port)
    unlucky.send(first_chunk(65 * MIB))
    code, details = unlucky.status()
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "No space left on device" in details
    assert "deployment.spill_dir" in details
    wait_until(lambda: spilling.server.stats.bytes_spilling == 0, STUCK)
    spilling.still_answers()


def ping_with(live: Live, mib: int) -> None:
    """Send the hub a ping carrying ``mib`` MiB (which the hub keeps) and wait for its reply."""
    content = RecordDict({"m": ArrayRecord({"w": np.ones(mib * MIB, np.uint8)})})
    live.client.submit(lambda: live.pinger.send(Message(content, 0, "ping")))
    assert live.pinger.replies.get(timeout=STUCK).has_content()


def test_messages_the_worker_keeps_count_until_it_lets_go_of_them(spilling: Live) -> None:
    server, hub = spilling.server, spilling.hub
    ping_with(spilling, 60)  # in memory (60 of 100), and the hub keeps it
    assert 60 * MIB < server.stats.bytes_held < 61 * MIB
    assert server.stats.bytes_buffered == 0
    # a message of many chunks counts in the transfer figures; the small reply does not
    assert 60 * MIB < server.stats.large_bytes_in < 61 * MIB
    assert server.stats.large_seconds_in > 0
    assert (server.stats.large_bytes_out, server.stats.large_seconds_out) == (0, 0.0)
    ping_with(spilling, 60)  # 120 > 100 in memory: to a spill file, at once
    assert server.stats.messages_spilled == 1
    assert 60 * MIB < server.stats.bytes_held < 61 * MIB
    hub.pings.clear()  # the worker lets go: the memory is free again
    gc.collect()
    wait_until(lambda: server.stats.bytes_held == 0, STUCK)
    ping_with(spilling, 60)
    assert server.stats.messages_spilled == 1  # in memory again


def test_messages_the_worker_keeps_never_make_a_peer_wait(budgeted: Live) -> None:
    server = budgeted.server
    ping_with(budgeted, 60)
    ping_with(budgeted, 60)  # no spill files and 120 > 100 held: in memory all the same
    assert 120 * MIB < server.stats.bytes_held < 121 * MIB
    budgeted.hub.pings.clear()
    gc.collect()
    wait_until(lambda: server.stats.bytes_held == 0, STUCK)


def test_the_budget_account() -> None:
    async def account() -> int:
        budget = ReceiveBudget(ReceiveLimits(per_peer=10, total=15, spill=0))
        await budget.reserve(10)
        with pytest.raises(BudgetExceededError, match="receive_budget_per_peer_mb"):
            await budget.reserve(11)
        waiting = asyncio.ensure_future(budget.reserve(8))  # 18 > 15: waits for room
        await asyncio.sleep(0)
        assert not waiting.done()
        budget.release(10)
        assert await waiting  # in memory
        budget.hold(8)  # complete: the worker has it
        assert (budget.used, budget.held) == (0, 8)
        assert await budget.reserve(10)  # held bytes never make a peer wait (no spill files)
        budget.let_go(8)
        return budget.used + budget.held

    assert asyncio.run(account()) == 10


def test_the_budget_account_with_spill_files() -> None:
    async def account() -> tuple[int, int]:
        budget = ReceiveBudget(ReceiveLimits(per_peer=10, total=15, spill=30))
        assert await budget.reserve(10)  # memory
        assert not await budget.reserve(11)  # over per_peer: disk
        assert not await budget.reserve(8)  # memory is short (18 > 15): disk
        with pytest.raises(BudgetExceededError, match="spill_budget_mb"):
            await budget.reserve(31)
        waiting = asyncio.ensure_future(budget.reserve(12))  # neither has room
        await asyncio.sleep(0)
        assert not waiting.done()
        budget.release(11, in_memory=False)
        assert not await waiting  # disk again
        budget.hold(10)
        assert not await budget.reserve(6)  # 10 held + 6 > 15 in memory: disk, where it fits
        budget.let_go(10)
        assert await budget.reserve(6)  # memory again
        return budget.used, budget.spilled

    assert asyncio.run(account()) == (6, 26)


def test_limits_are_checked() -> None:
    with pytest.raises(Exception, match="at least per_peer"):
        ReceiveLimits(per_peer=10, total=5)
    with pytest.raises(Exception, match="bytes >= 1"):
        ReceiveLimits(per_peer=0)
    with pytest.raises(Exception, match="spill must be bytes >= 0"):
        ReceiveLimits(spill=-1)


def test_announced_size_reads_only_first_chunks() -> None:
    assert announced_size(first_chunk(123, payload=0)) == 123
    later = struct.pack("<BBHIQQ", 1, 0, 0, 1, 123, 64)
    assert announced_size(later) == 0
    assert announced_size(b"short") == 0
    assert len(later) == HEADER_SIZE


def test_connections_that_never_finish_their_handshake_are_closed() -> None:
    server = serve(Hub(), "127.0.0.1:0", token="t", insecure=True, handshake_timeout=0.5)
    try:
        silent = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(20)]
        # an HTTP/2 preface and settings, then no call at all: idle, closed as well
        idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(5)]
        for sock in idle:
            sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))
        for sock in silent + idle:
            sock.settimeout(STUCK)
            _read_until_closed(sock)  # a socket the server never closed fails the test here
            sock.close()
    finally:
        server.stop()
        assert server.wait(STUCK)


def _read_until_closed(sock: socket.socket) -> None:
    """gRPC may write its own settings (or a GOAWAY) first: read on until the end."""
    while sock.recv(4096):
        pass
