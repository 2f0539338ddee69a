"""How fast does the gRPC runtime move a model, compared with a bare TCP socket?

In one run, over loopback (127.0.0.1), with the client in a separate process:

- fedbus: the server worker sends a 100 MB ``ArrayRecord`` to a client, whose handler replies
  with the same content; the time from send to the reply's delivery covers 200 MB on the wire,
  plus encoding, framing, reassembly and decoding on both ends;
- raw TCP: the same 100 MB sent to a process that sends them back, with ``sendall`` and
  ``recv_into`` a preallocated buffer: the ceiling for any transport on this machine;
- the round trip of a small message (a reply to a request with one config value);
- the server process's CPU use while idle, with a client connected (heartbeats included).

Usage::

    python bench/transport.py [--megabytes 100] [--repeat 5] [--chunk-mib 1] [--idle 5]
"""

from __future__ import annotations

import argparse
import multiprocessing
import socket
import statistics
import threading
import time
from typing import Any

import numpy as np

from fedbus import ArrayRecord, ConfigRecord, Message, RecordDict
from fedbus.runtime.grpc import ClientSettings, TransportLimits, connect, serve
from fedbus.worker import Worker

TOKEN = "bench-token"


class Echo(Worker):
    def __init__(self) -> None:
        super().__init__()
        self.register_handlers("echo", lambda m: m.create_reply(m.content))


def echo_client(port: int, chunk_mib: int) -> None:
    """The client process: answers every ``echo`` with its own content."""
    limits = TransportLimits(chunk_size=chunk_mib << 20)
    settings = ClientSettings(limits=limits, connect_timeout=30)
    handle = connect(Echo(), f"127.0.0.1:{port}", token=TOKEN, insecure=True, settings=settings)
    handle.wait()


class Timer(Worker):
    """Node 0: sends ``echo`` messages and times their replies."""

    def __init__(self) -> None:
        super().__init__(0)
        self.register_handlers("echo", self.on_reply)
        self.sent_at = 0.0
        self.durations: list[float] = []
        self.arrived = threading.Event()
        self.ready = threading.Event()
        self.error: Message | None = None

    def on_start(self) -> None:
        self.ready.set()  # the client is connected

    def send_echo(self, content: RecordDict) -> None:
        self.sent_at = time.perf_counter()
        self.send(Message(content, 1, "echo"))

    def on_reply(self, message: Message) -> None:
        self.durations.append(time.perf_counter() - self.sent_at)
        if message.has_error():
            self.error = message
        self.arrived.set()


def fedbus_round_trips(size: int, repeat: int, chunk_mib: int, idle: float) -> dict[str, Any]:
    limits = TransportLimits(chunk_size=chunk_mib << 20)
    timer = Timer()
    server = serve(timer, "127.0.0.1:0", token=TOKEN, insecure=True, limits=limits)
    spawn = multiprocessing.get_context("spawn")
    client = spawn.Process(target=echo_client, args=(server.port, chunk_mib))
    client.start()
    try:
        if not timer.ready.wait(60):
            raise RuntimeError("the client process did not connect within 60 s")
        model = RecordDict({"model": ArrayRecord({"w": np.ones(size // 4, dtype=np.float32)})})
        big = _time(timer, server, model, repeat)
        small = RecordDict({"c": ConfigRecord({"value": 1})})
        _time(timer, server, small, 50)  # warm-up
        latency = _time(timer, server, small, 1000)
        cpu = _idle_cpu(idle)
    finally:
        server.stop()
        server.wait(30)
        client.join(30)
    return {"big": big, "latency": latency, "idle_cpu": cpu}


def _time(timer: Timer, server: Any, content: RecordDict, count: int) -> list[float]:
    timer.durations.clear()
    for _ in range(count):
        timer.arrived.clear()
        server.submit(lambda: timer.send_echo(content))
        if not timer.arrived.wait(120):
            raise RuntimeError("no reply within 120 s")
        if timer.error is not None:
            raise RuntimeError(f"the echo failed: {timer.error!r}")
    return list(timer.durations)


def _idle_cpu(seconds: float) -> float:
    """CPU seconds per wall second this process used while nothing was sent."""
    start_cpu, start = time.process_time(), time.perf_counter()
    time.sleep(seconds)
    return (time.process_time() - start_cpu) / (time.perf_counter() - start)


def raw_round_trips(size: int, repeat: int) -> list[float]:
    listener = socket.create_server(("127.0.0.1", 0))
    spawn = multiprocessing.get_context("spawn")
    peer = spawn.Process(target=_raw_peer, args=(listener.getsockname()[1], size, repeat))
    peer.start()
    connection, _ = listener.accept()
    payload = np.ones(size // 4, dtype=np.float32).tobytes()
    back = memoryview(bytearray(size))
    durations = []
    for _ in range(repeat):
        start = time.perf_counter()
        connection.sendall(payload)
        received = 0
        while received < size:
            received += connection.recv_into(back[received:])
        durations.append(time.perf_counter() - start)
    connection.close()
    peer.join(30)
    listener.close()
    return durations


def _raw_peer(port: int, size: int, repeat: int) -> None:
    connection = socket.create_connection(("127.0.0.1", port))
    buffer = memoryview(bytearray(size))
    for _ in range(repeat):
        received = 0
        while received < size:
            received += connection.recv_into(buffer[received:])
        connection.sendall(buffer)
    connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--chunk-mib", type=int, default=1, choices=[1, 2, 3, 4])
    parser.add_argument("--idle", type=float, default=5.0, help="seconds of idle measured")
    args = parser.parse_args()
    size = args.megabytes * 1_000_000
    fedbus = fedbus_round_trips(size, args.repeat, args.chunk_mib, args.idle)
    raw = raw_round_trips(size, args.repeat)
    moved = 2 * size / 1e9  # there and back
    fedbus_rate = moved / min(fedbus["big"])
    raw_rate = moved / min(raw)
    latency = statistics.median(fedbus["latency"]) * 1e3
    print(f"{args.megabytes} MB ArrayRecord, server -> client -> server, best of {args.repeat}:")
    print(f"  fedbus over gRPC   {fedbus_rate:6.2f} GB/s   (target >= 1 GB/s)")
    print(f"  raw TCP socket     {raw_rate:6.2f} GB/s")
    print(f"  ratio              {fedbus_rate / raw_rate:6.2f}        (target >= 0.5)")
    print(f"small message round trip: median {latency:.3f} ms over 1000 (target <= 1 ms)")
    print(f"server CPU while idle: {100 * fedbus['idle_cpu']:.2f} % of one core")


if __name__ == "__main__":
    main()
