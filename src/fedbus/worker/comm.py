"""The seam between a worker and the runtime that runs it.

A worker sees its runtime only through a ``CommManager``: send a message, run a callback later,
report work done (the simulation turns it into compute time), and stop. A runtime sees a worker
only as something to ``attach``, ``start`` and ``deliver`` messages to. Everything built on these
primitives (request/reply, round timeouts, sampling) is written once, above the seam.

A runtime whose clock is the wall clock may also offer ``call_later_background``
(``BackgroundTimers``): a timer for watching, which never keeps a run going. A runtime whose
clock moves only from one event to the next (the simulation) offers none: there, a timer that
only watches would be one more event, and one that repeats would keep the run from ending.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from fedbus.message import Message

__all__ = ["BackgroundTimers", "CommManager", "TimerHandle"]


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


@runtime_checkable
class BackgroundTimers(Protocol):
    """What a runtime with a wall clock may offer besides ``CommManager``."""

    def call_later_background(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        """Like ``call_later``, but the timer does not count as work left: a run whose only
        pending timers are background ones is over."""
