"""Bounded memory and work per peer: the receive budget, partial messages, idle connections.

The server's own account (``stats.bytes_buffered``) is what is checked: sizes, not times.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Iterator

import grpc
import pytest

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
    federation = start(receive=ReceiveLimits(per_peer=64 * MIB, total=100 * MIB))
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


def test_the_budget_account() -> None:
    async def account() -> int:
        budget = ReceiveBudget(ReceiveLimits(per_peer=10, total=15))
        await budget.reserve(10)
        with pytest.raises(BudgetExceededError, match="receive_budget_per_peer_mb"):
            await budget.reserve(11)
        waiting = asyncio.ensure_future(budget.reserve(8))  # 18 > 15: waits for room
        await asyncio.sleep(0)
        assert not waiting.done()
        budget.release(10)
        await waiting
        return budget.used

    assert asyncio.run(account()) == 8


def test_limits_are_checked() -> None:
    with pytest.raises(Exception, match="at least per_peer"):
        ReceiveLimits(per_peer=10, total=5)
    with pytest.raises(Exception, match="bytes >= 1"):
        ReceiveLimits(per_peer=0)


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
