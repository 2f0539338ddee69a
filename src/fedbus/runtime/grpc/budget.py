"""How many received bytes the server holds, in memory and on disk.

A message is reassembled whole before it is decoded (``framing.Reassembler``), in memory or,
beyond the memory budget, in a spill file (``fedbus.message.spill``) that the decoder then
reads without a copy. The budget places each message when its first chunk arrives:

- in memory, when it is at most ``per_peer`` bytes and the received messages in memory (in
  reassembly, or delivered and not yet let go of by the server's worker) stay within ``total``
  bytes;
- else in a spill file, when spill files may hold it: at most ``spill`` bytes of them in all
  (0: never spill);
- else in memory all the same when the messages *in reassembly* leave room: delivered ones
  belong to the worker, which may keep them for a whole round, so they send messages to disk
  but never keep a peer waiting;
- else, if it could fit once others are done, the peer waits before the server reads more of
  its stream (gRPC's flow control holds its sender back; nothing is dropped);
- and a message that can never fit is refused (``RESOURCE_EXHAUSTED``, naming the settings).

So the memory of what clients sent stays near ``total`` whatever the number of clients: the
server's peak is its own models plus this budget. A message's announced length is reserved
when its first chunk arrives; when it is complete, an in-memory message is ``held`` until its
buffer is freed (the worker let go of every array of it), a spilled one releases its reservation
(its file is the worker's until then); a peer that goes releases what it had in reassembly.
``used``, ``held`` and ``spilled`` are the server's own account, for tests and the dashboard.
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
        Largest message one peer may have in reassembly in memory. Default 512 MiB.
    total
        All received messages in memory together. Default 2 GiB; at least ``per_peer``.
    spill
        Bytes of messages in reassembly in spill files, all together; 0 never spills.
        Default 64 GiB.
    """

    per_peer: int = 512 * _MIB
    total: int = 2048 * _MIB
    spill: int = 65536 * _MIB

    def __post_init__(self) -> None:
        for name in ("per_peer", "total", "spill"):
            value = getattr(self, name)
            least = 0 if name == "spill" else 1
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise InvalidArgumentError(
                    f"ReceiveLimits.{name} must be bytes >= {least}, got {value!r}"
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
        self.held = 0
        self.spilled = 0
        self._freed = asyncio.Event()

    async def reserve(self, size: int) -> bool:
        """Reserve ``size`` bytes, waiting for room: True in memory, False in a spill file.

        Raises ``BudgetExceededError`` when the message can never fit.
        """
        limits = self.limits
        fits_memory, fits_disk = size <= limits.per_peer, size <= limits.spill
        if not (fits_memory or fits_disk):
            spill = f", and spill files {limits.spill} bytes in all" if limits.spill else ""
            raise BudgetExceededError(
                f"a message of {size} bytes is more than this server buffers for one peer "
                f"({limits.per_peer} bytes in memory: receive_budget_per_peer_mb{spill}: "
                "spill_budget_mb)"
            )
        while True:
            if fits_memory and self.used + self.held + size <= limits.total:
                self.used += size
                return True
            if fits_disk and self.spilled + size <= limits.spill:
                self.spilled += size
                return False
            if fits_memory and self.used + size <= limits.total:
                self.used += size  # only what arrives may make a peer wait (see above)
                return True
            self._freed.clear()
            await self._freed.wait()  # every release wakes the waiters; each checks again

    def hold(self, size: int) -> None:
        """A message of ``size`` bytes in memory is complete: it stays counted until ``let_go``."""
        self.used -= size
        self.held += size
        self._freed.set()

    def let_go(self, size: int) -> None:
        """The buffer of a held message is freed."""
        self.held -= size
        self._freed.set()

    def release(self, size: int, in_memory: bool = True) -> None:
        """Give back ``size`` reserved bytes and wake the peers waiting for room."""
        if in_memory:
            self.used -= size
        else:
            self.spilled -= size
        self._freed.set()
