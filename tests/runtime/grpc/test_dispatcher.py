"""The dispatcher: one thread per worker, FIFO actions, timers, and counted activity."""

from __future__ import annotations

import threading

import pytest

from fedbus.errors import InvalidArgumentError
from fedbus.runtime.grpc import Heartbeat
from fedbus.runtime.grpc.dispatcher import Activity, Dispatcher


def test_actions_and_timers_run_in_order_on_one_thread() -> None:
    activity = Activity()
    dispatcher = Dispatcher("test", activity)
    threads: set[str] = set()
    events: list[str] = []
    done = threading.Event()

    def record(name: str) -> None:
        threads.add(threading.current_thread().name)
        events.append(name)

    dispatcher.call_later(0.05, lambda: record("late timer"))
    dispatcher.call_later(0.01, lambda: record("early timer"))
    cancelled = dispatcher.call_later(0.02, lambda: record("cancelled"))
    cancelled.cancel()
    cancelled.cancel()
    for index in range(3):
        activity.add()
        dispatcher.post(lambda index=index: record(f"action {index}"), counted=True)
    dispatcher.call_later(0.06, done.set)
    dispatcher.start()
    assert done.wait(5)
    assert activity.wait_idle(5)
    assert events == ["action 0", "action 1", "action 2", "early timer", "late timer"]
    assert threads == {"test"}
    dispatcher.stop()
    assert dispatcher.join(5)
    assert dispatcher.stopped


def test_a_failing_action_or_timer_does_not_stop_the_dispatcher() -> None:
    dispatcher = Dispatcher("failing")
    ran = threading.Event()
    dispatcher.post(lambda: 1 / 0)  # type: ignore[func-returns-value]
    dispatcher.call_later(0, lambda: 1 / 0)  # type: ignore[func-returns-value]
    dispatcher.call_later(0.01, ran.set)
    dispatcher.start()
    assert ran.wait(5)
    assert dispatcher.timer_failures == 1
    dispatcher.stop()
    assert dispatcher.join(5)


def test_after_stop_nothing_runs_and_nothing_stays_counted() -> None:
    activity = Activity()
    dispatcher = Dispatcher("stopping", activity)
    dispatcher.call_later(60, lambda: None)
    dispatcher.start()
    dispatcher.stop()
    assert dispatcher.join(5)
    activity.add()
    dispatcher.post(lambda: None, counted=True)
    timer = dispatcher.call_later(0, lambda: None)
    assert timer.cancelled
    assert activity.pending == 0


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="delay must be >= 0"):
        Dispatcher("x").call_later(-1, lambda: None)
    with pytest.raises(InvalidArgumentError, match="must exceed interval"):
        Heartbeat(interval=5, timeout=5)
    with pytest.raises(InvalidArgumentError, match="seconds > 0"):
        Heartbeat(interval=0)
