"""``Watchdog``: a server that waits too long says in the log what it waits for.

A federation that stops moving (clients that never answer, a network that drops packets, too
few clients to start) would otherwise hang silently. A server's watchdog follows the one thing
the server waits for at a time (a round's replies, an asynchronous model version's updates, the
clients needed to start) and, once that wait has lasted ``period`` seconds of the runtime's
clock, logs one WARNING line on ``fedbus.server`` naming the nodes awaited::

    round 7 train has waited 60 s (since t=123.4) for 3 of 10 replies; waiting on nodes 4, 9,
    12 (last heard from: node 4 2.1 s ago, node 9 never, node 12 61.0 s ago)

and again every ``period`` seconds while the wait goes on, never more often; nothing once the
wait ends.

When does it look? In a deployment (wall clock), on a background timer of the runtime
(``Worker.call_later_background``), which never keeps a run going. The simulation offers no
such timer, on purpose: its clock moves only from one event to the next, so a timer would be an
event of its own (a stuck run with a repeating timer would never end). There the watchdog looks
whenever the server handles an event (a message, one of its timers), before handling it. Simulated
time between two events costs no wall time, so the warning comes out as soon as it would have with
a timer, and the run is the same, event for event and bit for bit, with the watchdog on or off:
it only reads the clock and the server's state.

Example
-------
>>> watchdog = Watchdog(server, period=60.0)  # doctest: +SKIP
>>> waiting = lambda: WaitingFor("for 2 of 5 replies", [4, 9])
>>> wait = watchdog.watch("round 3 train", waiting)  # doctest: +SKIP
>>> watchdog.release(wait)  # the round ended  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

from fedbus.errors import InvalidArgumentError
from fedbus.message import now
from fedbus.worker import TimerHandle, Worker

__all__ = ["MAX_NAMED_NODES", "Wait", "Waiting", "WaitingFor", "Watchdog"]

logger = logging.getLogger("fedbus.server")

#: Nodes named in one warning; the others are counted ("and 180 more").
MAX_NAMED_NODES = 20


class WaitingFor(NamedTuple):
    """What a wait is for, in words and in numbers: ``("for 3 of 10 replies", [4, 9, 12])``,
    and, when the wait counts answers, how many came (``done``) of how many it needs or was
    sent (``of``), and the runtime-clock time it gives up at (``deadline``)."""

    what: str
    nodes: Sequence[int]
    done: int | None = None
    of: int | None = None
    deadline: float | None = None


#: Says what a wait is for now (called only when someone asks: a warning, a dashboard).
Waiting = Callable[[], WaitingFor]


class Wait(NamedTuple):
    """The wait a watchdog follows, as ``Watchdog.current`` reports it."""

    label: str
    since: float
    waiting: WaitingFor


# A clock reading above this is a wall clock (seconds since 1970, past 1973): it is shown as a
# time of day. No simulation runs three years of simulated time.
_WALL_CLOCK = 1e8


@dataclass(slots=True, eq=False)
class _Wait:
    label: str
    since: float
    waiting: Waiting
    due: float
    timer: TimerHandle | None = None


class Watchdog:
    """Logs what ``worker`` still waits for, every ``period`` seconds while it waits.

    Parameters
    ----------
    worker
        The server that waits (its runtime provides the clock and the timers).
    period
        Seconds of the runtime's clock before the first warning and between two; None turns
        the watchdog off (it then costs nothing).
    """

    def __init__(self, worker: Worker, period: float | None) -> None:
        if period is not None and not (math.isfinite(period) and period > 0):
            raise InvalidArgumentError(
                f"Watchdog: period must be a finite number of seconds > 0 or None, got {period!r}"
            )
        self.worker, self.period = worker, period
        self._current: _Wait | None = None
        #: When each node was last heard from (a message with content), in the runtime's clock.
        self._heard: dict[int, float] = {}

    @property
    def enabled(self) -> bool:
        """Whether the watchdog warns at all."""
        return self.period is not None

    def heard(self, node_id: int) -> None:
        """``node_id`` just sent something: remembered for "last heard from"."""
        if self.period is not None:
            self._heard[node_id] = now()

    def watch(self, label: str, waiting: Waiting) -> object:
        """Start following a wait named ``label`` (it replaces the one followed so far).

        ``waiting`` is called only when a warning is due. Returns a token for ``release``.
        """
        self.stop()
        if self.period is None:
            return None
        since = now()
        wait = self._current = _Wait(label, since, waiting, since + self.period)
        wait.timer = self.worker.call_later_background(self.period, partial(self._ring, wait))
        return wait

    def release(self, token: object) -> None:
        """The wait ``token`` stands for has ended (a wait that is no longer followed: nothing)."""
        if token is not None and token is self._current:
            self.stop()

    def stop(self) -> None:
        """Follow nothing any more."""
        wait, self._current = self._current, None
        if wait is not None and wait.timer is not None:
            wait.timer.cancel()

    def current(self) -> Wait | None:
        """The wait followed now, or None (nothing followed, or the watchdog is off): what a
        live dashboard shows."""
        wait = self._current
        if wait is None:
            return None
        return Wait(wait.label, wait.since, wait.waiting())

    def check(self) -> None:
        """Warn if the wait followed is due for a warning (the server calls this before it
        handles each event)."""
        wait = self._current
        if wait is not None:
            self._warn_if_due(wait, now())

    def _ring(self, wait: _Wait) -> None:
        """The background timer: warn if due, and set the timer for the next warning."""
        if wait is not self._current:
            return
        at = now()
        self._warn_if_due(wait, at)
        # a wall clock read a hair before the timer's clock: the timer comes back at once
        wait.timer = self.worker.call_later_background(
            max(wait.due - at, 0.0), partial(self._ring, wait)
        )

    def _warn_if_due(self, wait: _Wait, at: float) -> None:
        if at < wait.due:
            return
        assert self.period is not None
        wait.due = at + self.period  # never more often than every period
        logger.warning("%s", self._describe(wait, at))

    def _describe(self, wait: _Wait, at: float) -> str:
        what, nodes, *_ = wait.waiting()
        text = f"{wait.label} has waited {_seconds(at - wait.since)} (since {_moment(wait.since)}) "
        text += what
        if not nodes:
            return text
        named = sorted(nodes)[:MAX_NAMED_NODES]
        more = len(nodes) - len(named)
        listed = ", ".join(map(str, named)) + (f" and {more} more" if more else "")
        heard = ", ".join(f"node {node} {self._heard_text(node, at)}" for node in named)
        return f"{text}; waiting on node{'s' if len(nodes) > 1 else ''} {listed} " + (
            f"(last heard from: {heard})"
        )

    def _heard_text(self, node_id: int, at: float) -> str:
        heard = self._heard.get(node_id)
        return "never" if heard is None else f"{_seconds(at - heard)} ago"


def _seconds(seconds: float) -> str:
    return f"{seconds:.0f} s" if abs(seconds) >= 10 else f"{seconds:.1f} s"


def _moment(clock: float) -> str:
    if clock > _WALL_CLOCK:
        return time.strftime("%H:%M:%S", time.localtime(clock))
    return f"t={clock:.1f}"
