"""One thread per worker: its handlers and its timers run there, one at a time.

A ``Dispatcher`` owns a FIFO of actions and a heap of timers. Its thread blocks in
``queue.get`` with a timeout equal to the time left until the next timer, so an idle worker
costs no CPU at all: no polling, no sleep loop. Network threads never run worker code; they
``post`` actions (deliver this message, register this node) and return.

An ``Activity`` counter, shared by the runtimes of one process, counts what is still to happen
(messages sent and not yet handled, timers not yet fired, actions not yet run). ``run_local``
waits for it to reach zero, which is how a federation on one machine knows that nothing is
left in flight, like the simulation's empty event queue.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import cast

from fedbus.errors import InvalidArgumentError

__all__ = ["Activity", "Dispatcher", "Timer"]

logger = logging.getLogger("fedbus.grpc")

Action = Callable[[], None]


class Activity:
    """Counts work still to happen in this process; ``wait_idle`` blocks until it is none."""

    def __init__(self) -> None:
        self._count = 0
        self._closed = False
        self._idle = threading.Condition()

    def add(self, count: int = 1) -> None:
        """Record ``count`` more things to happen."""
        with self._idle:
            self._count += count

    def done(self, count: int = 1) -> None:
        """Record that ``count`` things happened (or will never happen)."""
        with self._idle:
            self._count -= count
            if self._count <= 0:
                self._idle.notify_all()

    def close(self) -> None:
        """Nothing more will happen (the server shut down): wake every ``wait_idle``."""
        with self._idle:
            self._closed = True
            self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Block until nothing is left to happen, or ``close``; False if ``timeout`` passed."""
        with self._idle:
            return self._idle.wait_for(lambda: self._count <= 0 or self._closed, timeout)

    @property
    def pending(self) -> int:
        """Things still to happen."""
        with self._idle:
            return self._count


class Timer:
    """What ``call_later`` returns: ``cancel()`` stops the callback if it has not run."""

    __slots__ = ("_dispatcher", "callback", "cancelled", "counted")

    def __init__(self, dispatcher: Dispatcher, callback: Action, counted: bool) -> None:
        self._dispatcher, self.callback = dispatcher, callback
        self.cancelled, self.counted = False, counted

    def cancel(self) -> None:
        """Cancel the callback; cancelling twice, or after it ran, does nothing."""
        if not self.cancelled:
            self.cancelled = True
            self._dispatcher._timer_cancelled(self)


_STOP = object()


class Dispatcher:
    """Runs posted actions and due timers on one thread, in order.

    Parameters
    ----------
    name
        Thread name, for logs and debuggers.
    activity
        Shared counter of pending work (see ``Activity``); None counts nothing.
    """

    def __init__(self, name: str, activity: Activity | None = None) -> None:
        self._activity = activity
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._timers: list[tuple[float, int, Timer]] = []
        self._timers_lock = threading.Lock()
        self._sequence = itertools.count()
        self._stopped = threading.Event()
        self._closed = False
        self._post_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.timer_failures = 0

    def start(self) -> None:
        """Start the thread; actions posted before are run first, in order."""
        self._thread.start()

    def post(self, action: Action, *, counted: bool = False) -> None:
        """Run ``action`` on the dispatcher thread; ``counted`` if it was added to activity.

        An action posted after the dispatcher stopped never runs (and is counted as done).
        """
        with self._post_lock:
            if not self._closed:
                self._queue.put((action, counted))
                return
        if counted and self._activity is not None:
            self._activity.done()

    def call_later(self, delay: float, callback: Action, *, counted: bool = True) -> Timer:
        """Run ``callback`` on the dispatcher thread after ``delay`` seconds."""
        if not delay >= 0:
            raise InvalidArgumentError(f"call_later: delay must be >= 0 seconds, got {delay}")
        timer = Timer(self, callback, counted and self._activity is not None)
        with self._post_lock:
            if self._closed:  # a stopped worker's timers never run
                timer.cancelled, timer.counted = True, False
                return timer
            if timer.counted:
                self._activity.add()  # type: ignore[union-attr]
            with self._timers_lock:
                deadline = time.monotonic() + delay
                heapq.heappush(self._timers, (deadline, next(self._sequence), timer))
            self._queue.put(None)  # wake the thread: the new timer may be the next one due
        return timer

    def stop(self) -> None:
        """Stop after the actions already posted; timers not yet due never run."""
        self._queue.put(_STOP)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread to end; False if it is still running after ``timeout``."""
        if self._thread.ident is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def stopped(self) -> bool:
        """True once the thread has ended (or was stopped before it started)."""
        return self._stopped.is_set()

    def on_thread(self) -> bool:
        """True when called from the dispatcher's own thread."""
        return threading.current_thread() is self._thread

    def _timer_cancelled(self, timer: Timer) -> None:
        # Cancelled from any thread, fired on this one: test-and-clear under the lock so that
        # a timer is counted done exactly once.
        with self._timers_lock:
            counted, timer.counted = timer.counted, False
        if counted:
            self._activity.done()  # type: ignore[union-attr]

    def _run(self) -> None:
        try:
            while True:
                item = self._next_item()
                if item is _STOP:
                    return
                if item is not None:
                    action, counted = cast("tuple[Action, bool]", item)
                    self._call(action, counted)
                    # what the action holds (a message and its arrays) is freed now, not when
                    # the next item comes: the receive budget counts it until then
                    del action, item
                self._fire_due_timers()
        finally:
            self._close()

    def _close(self) -> None:
        with self._post_lock:
            self._closed = True
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, tuple) and item[1] and self._activity is not None:
                self._activity.done()
        self._drop_timers()
        self._stopped.set()

    def _next_item(self) -> object:
        with self._timers_lock:
            due = self._timers[0][0] if self._timers else None
        timeout = None if due is None else max(0.0, due - time.monotonic())
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def _fire_due_timers(self) -> None:
        now = time.monotonic()
        while True:
            with self._timers_lock:
                if not self._timers or self._timers[0][0] > now:
                    return
                timer = heapq.heappop(self._timers)[2]
            if timer.cancelled:
                continue
            timer.cancelled = True  # it runs now: a later cancel() does nothing
            try:
                timer.callback()
            except Exception:
                self.timer_failures += 1
                logger.exception("a timer callback raised")
            finally:
                self._timer_cancelled(timer)

    def _call(self, action: Action, counted: bool) -> None:
        try:
            action()
        except Exception:
            logger.exception("an action on %s raised", self._thread.name)
        finally:
            if counted and self._activity is not None:
                self._activity.done()

    def _drop_timers(self) -> None:
        with self._timers_lock:
            timers, self._timers = self._timers, []
        for _, _, timer in timers:
            timer.cancelled = True
            self._timer_cancelled(timer)
