"""The seam between a worker and the runtime that runs it.

A worker sees its runtime only through a ``CommManager``: send a message, run a callback later,
report work done (the simulation turns it into compute time), and stop. A runtime sees a worker
only as something to ``attach``, ``start`` and ``deliver`` messages to. Everything built on these
primitives (request/reply, round timeouts, sampling) is written once, above the seam.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from fedbus.message import Message

__all__ = ["CommManager", "TimerHandle"]


class TimerHandle(Protocol):
    """What ``call_later`` returns: a way to cancel the callback before it runs."""

    def cancel(self) -> None:
        """Cancel the callback; cancelling twice, or after it ran, does nothing."""


class CommManager(Protocol):
    """What a runtime provides to each worker it runs."""

    def send(self, message: Message) -> None:
        """Send ``message``; the runtime fills run_id, message_id and src_node_id."""

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        """Run ``callback`` on this worker after ``delay`` seconds of the runtime's clock."""

    def report_work(self, num_samples: int) -> None:
        """Record that the running handler processed ``num_samples`` training samples."""

    def stop(self) -> None:
        """End this worker's part: it receives no further messages."""
