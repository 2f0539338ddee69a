"""One asyncio event loop per process, on one thread: every stream of this process runs there.

The server's connections and the streams of every client node this process hosts are
coroutines on this loop, so the transport's thread count stays the same whatever the number
of connections: one loop thread, gRPC's own few threads, and the worker dispatchers. Worker
code never runs on the loop; the loop posts to the dispatchers, the dispatchers call
``call_soon``/``submit`` to reach the loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["IoLoop"]

_T = TypeVar("_T")
_CONCURRENT_CONNECTS = 64


class IoLoop:
    """An asyncio loop running for ever on a daemon thread (see ``shared``)."""

    _shared: IoLoop | None = None
    _shared_lock = threading.Lock()

    def __init__(self, name: str = "fedbus-io") -> None:
        self.loop = asyncio.new_event_loop()
        #: Connection attempts in progress at once from this process: a process that hosts
        #: thousands of nodes opens their connections in waves, not in one burst that
        #: overflows the server's accept queue.
        self.connecting = asyncio.Semaphore(_CONCURRENT_CONNECTS)
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.call_soon(started.set)
            self.loop.run_forever()

        self._thread = threading.Thread(target=run, name=name, daemon=True)
        self._thread.start()
        started.wait()

    @classmethod
    def shared(cls) -> IoLoop:
        """The process's loop, started on first use."""
        with cls._shared_lock:
            if cls._shared is None or not cls._shared._thread.is_alive():
                cls._shared = cls()
            return cls._shared

    def submit(self, coroutine: Coroutine[Any, Any, _T]) -> concurrent.futures.Future[_T]:
        """Run ``coroutine`` on the loop; its result or exception arrives in the future."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def run(self, coroutine: Coroutine[Any, Any, _T], timeout: float | None = None) -> _T:
        """Run ``coroutine`` on the loop and wait for its result (never from the loop)."""
        if self.on_loop():
            coroutine.close()
            raise RuntimeError("IoLoop.run would wait for itself: it was called on the loop")
        return self.submit(coroutine).result(timeout)

    def call_soon(self, callback: Callable[..., object], *args: object) -> None:
        """Run ``callback(*args)`` on the loop soon (from any thread)."""
        self.loop.call_soon_threadsafe(callback, *args)

    def on_loop(self) -> bool:
        """True when called from the loop's own thread."""
        return threading.current_thread() is self._thread
