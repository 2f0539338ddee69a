"""How many received bytes the server holds for messages still arriving, per peer and in all.

A message is reassembled whole before it is decoded (``framing.Reassembler``), so a peer that
announces a large message and sends part of it makes the server hold that part. The budget
bounds it twice:

- per peer: one message in reassembly may be at most ``per_peer`` bytes; a peer that
  announces more is refused (``RESOURCE_EXHAUSTED``, naming the setting to raise);
- in all: the messages in reassembly on every connection together hold at most ``total``
  bytes. A peer whose message does not fit now waits before the server reads more of its
  stream; gRPC's flow control then holds its sender back. Nothing is dropped, the peer is
  only slowed down.

A message's announced length is reserved when its first chunk arrives and released when it is
complete (it then belongs to the decoder and the worker) or when its peer goes. ``used`` is the
server's own account, for tests and the dashboard.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from fedbus.errors import InvalidArgumentError

__all__ = ["BudgetExceededError", "ReceiveBudget", "ReceiveLimits"]

_MIB = 1 << 20


class BudgetExceededError(Exception):
    """A peer announced a message that no wait can make fit."""


@dataclass(frozen=True, slots=True)
class ReceiveLimits:
    """The receive budget's two bounds, in bytes.

    Parameters
    ----------
    per_peer
        Largest message one peer may have in reassembly. Default 2 GiB.
    total
        All messages in reassembly on all connections together. Default 8 GiB; at least
        ``per_peer``.
    """

    per_peer: int = 2048 * _MIB
    total: int = 8192 * _MIB

    def __post_init__(self) -> None:
        for name in ("per_peer", "total"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidArgumentError(
                    f"ReceiveLimits.{name} must be bytes >= 1, got {value!r}"
                )
        if self.total < self.per_peer:
            raise InvalidArgumentError(
                f"ReceiveLimits.total ({self.total}) must be at least per_peer ({self.per_peer})"
            )


class ReceiveBudget:
    """The account of reserved bytes; used on the ``IoLoop`` only."""

    def __init__(self, limits: ReceiveLimits) -> None:
        self.limits = limits
        self.used = 0
        self._freed = asyncio.Event()

    async def reserve(self, size: int) -> None:
        """Reserve ``size`` bytes, waiting for room; ``BudgetExceededError`` if it never fits."""
        if size > self.limits.per_peer:
            raise BudgetExceededError(
                f"a message of {size} bytes is more than this server buffers for one peer "
                f"({self.limits.per_peer} bytes: receive_budget_per_peer_mb)"
            )
        while self.used + size > self.limits.total:
            self._freed.clear()
            await self._freed.wait()  # every release wakes the waiters; each checks again
        self.used += size

    def release(self, size: int) -> None:
        """Give back ``size`` reserved bytes and wake the peers waiting for room."""
        self.used -= size
        self._freed.set()
