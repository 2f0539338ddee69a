"""The clock that stamps ``Message.metadata.created_at``.

Messages are stamped when they are built, from the clock of the runtime they are built in:
wall-clock seconds (``time.time``) by default, simulated seconds inside a simulation. A runtime
installs its clock for the code it runs with ``use_clock``; the setting is per thread and per
asyncio task (a ``ContextVar``), so runtimes in different threads never see each other's time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from fedbus.errors import InvalidTypeError

__all__ = ["now", "use_clock"]

Clock = Callable[[], float]

_current_clock: ContextVar[Clock] = ContextVar("fedbus_clock", default=time.time)


def now() -> float:
    """Seconds on the current runtime's clock."""
    return _current_clock.get()()


@contextmanager
def use_clock(clock: Clock) -> Iterator[None]:
    """Make ``clock`` the source of ``now()`` inside the ``with`` block.

    ``clock`` is called with no arguments and returns seconds as a float; a simulation passes
    the function that reads its simulated time.

    >>> with use_clock(lambda: 12.5):
    ...     now()
    12.5
    """
    if not callable(clock):
        raise InvalidTypeError(
            f"use_clock: expected a function returning seconds, got {type(clock).__name__}"
        )
    token = _current_clock.set(clock)
    try:
        yield
    finally:
        _current_clock.reset(token)
