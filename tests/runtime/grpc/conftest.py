"""Helpers for the gRPC runtime's tests: raw streams and a TCP proxy.

Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator

import grpc
import pytest

from fedbus.runtime.grpc.security import NODE_ID_KEY, PROTOCOL_KEY, PROTOCOL_VERSION, TOKEN_KEY
from fedbus.runtime.grpc.stream import METHOD

TOKEN = "test-federation-token"


def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Wait for ``condition`` (tests only: the runtime itself never polls)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.01)


# -- a raw stream: a peer that speaks frames directly, to send what no fedbus client would ---


class RawStream:
    """A hand-driven fedbus stream: send any frame, see every frame and the final status."""

    def __init__(
        self, port: int, token: str | None = TOKEN, node_id: int | None = None, **extra: str
    ) -> None:
        metadata = [(PROTOCOL_KEY, PROTOCOL_VERSION), *extra.items()]
        if token is not None:
            metadata.append((TOKEN_KEY, token))
        if node_id is not None:
            metadata.append((NODE_ID_KEY, str(node_id)))
        self._outgoing: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.call = self._channel.stream_stream(METHOD)(self._requests(), metadata=metadata)
        self.frames: list[bytes] = []
        self._incoming: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self.ended = threading.Event()
        self.code: grpc.StatusCode | None = None
        self.details = ""
        threading.Thread(target=self._read, daemon=True).start()

    def _requests(self) -> Iterator[bytes]:
        while True:
            frame = self._outgoing.get()
            if frame is None:
                return
            yield frame

    def _read(self) -> None:
        try:
            for frame in self.call:
                self.frames.append(frame)
                self._incoming.put(frame)
        except grpc.RpcError:
            pass
        self.code, self.details = self.call.code(), self.call.details() or ""
        self.ended.set()
        self._incoming.put(None)

    @property
    def node_id(self) -> int:
        return int(dict(self.call.initial_metadata())[NODE_ID_KEY])

    def next_frame(self, timeout: float = 30.0) -> bytes | None:
        """The next frame received, waiting for it; None once the stream has ended."""
        try:
            return self._incoming.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no frame within {timeout} s") from None

    def send(self, frame: bytes) -> None:
        self._outgoing.put(frame)

    def status(self, timeout: float = 10.0) -> tuple[grpc.StatusCode | None, str]:
        assert self.ended.wait(timeout), "the stream did not end"
        return self.code, self.details

    def close(self) -> None:
        self._outgoing.put(None)
        self.call.cancel()
        self._channel.close()


# -- a TCP proxy that can cut or freeze connections ---------------------------------------


class Proxy:
    """Forwards 127.0.0.1:port to a target port; ``cut`` closes, ``freeze`` silences."""

    def __init__(self, target: int) -> None:
        self._target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._links: list[tuple[socket.socket, socket.socket, threading.Event]] = []
        self._lock = threading.Lock()
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self._target))
            frozen = threading.Event()
            with self._lock:
                self._links.append((client, upstream, frozen))
                self.connections += 1
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(
                    target=self._pipe, args=(source, sink, frozen), daemon=True
                ).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket, frozen: threading.Event) -> None:
        try:
            while data := source.recv(1 << 16):
                if not frozen.is_set():  # frozen: swallowed, as behind a cut cable
                    sink.sendall(data)
        except OSError:
            pass

    def freeze(self) -> None:
        """Silence the connections open now; they stay open. New ones work."""
        with self._lock:
            for _, _, frozen in self._links:
                frozen.set()

    def cut(self) -> None:
        """Close every connection open now (both ends see it drop)."""
        with self._lock:
            links, self._links = self._links, []
        for link in links:
            for sock in link[:2]:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def close(self) -> None:
        self._listener.close()
        self.cut()


@pytest.fixture
def proxy_factory() -> Iterator[Callable[[int], Proxy]]:
    proxies: list[Proxy] = []

    def make(target: int) -> Proxy:
        proxies.append(Proxy(target))
        return proxies[-1]

    yield make
    for proxy in proxies:
        proxy.close()
