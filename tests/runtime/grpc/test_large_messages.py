"""Messages larger than memory budgets (and than 4 GiB) over real gRPC between two processes."""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from fedbus.message import ArrayRecord, ConfigRecord, ErrorCode, Message, RecordDict
from fedbus.message import spill as spill_module
from fedbus.runtime.grpc import ClientSettings, ReceiveLimits, connect, serve
from fedbus.runtime.grpc.server import TransportStats
from fedbus.worker import Worker

from .large_peer import TOKEN, Hasher, Sender, blob, digest

ROOT = Path(__file__).parents[3]
MIB = 1 << 20
GIB = 1 << 30
STUCK = 60.0  # seconds: only a federation that is truly stuck waits this long


def send_from_another_process(
    gib: float, receive: ReceiveLimits, spill_dir: Path
) -> tuple[str, TransportStats]:
    """Serve a ``Hasher`` here, run a ``Sender`` of ``gib`` GiB in a process of its own."""
    server = serve(
        Hasher(), "127.0.0.1:0", token=TOKEN, insecure=True, check_with=[Sender(8)],
        receive=receive, spill_dir=str(spill_dir),
    )  # fmt: skip
    try:
        done = subprocess.run(
            [sys.executable, "-m", "tests.runtime.grpc.large_peer", f"127.0.0.1:{server.port}",
             str(gib)],
            cwd=ROOT, capture_output=True, text=True, timeout=900, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done.stdout, server.stats
    finally:
        server.stop()
        assert server.wait(60)


@pytest.mark.slow
def test_a_5_gib_message_streams_into_a_spill_file_and_arrives_intact(tmp_path: Path) -> None:
    receive = ReceiveLimits(per_peer=512 * MIB, total=512 * MIB, spill=8 * GIB)
    output, stats = send_from_another_process(5, receive, tmp_path)
    assert "same True" in output
    assert "'copied': False" in output  # the server hashed a view of the spill file
    assert stats.messages_spilled == 1
    assert stats.bytes_spilled > 5 * GIB
    assert stats.bytes_buffered == stats.bytes_spilling == 0
    assert list(tmp_path.iterdir()) == []  # the server's spill folder went with it


def test_a_message_over_the_memory_budget_arrives_intact_from_its_file(tmp_path: Path) -> None:
    receive = ReceiveLimits(per_peer=1 * MIB, total=1 * MIB, spill=64 * MIB)
    output, stats = send_from_another_process(3 / 1024, receive, tmp_path)  # 3 MiB
    assert "same True" in output
    assert stats.messages_spilled == 1


# -- a message there is no room for: refused for its sender alone, the stream goes on ----------
class TwoTries(Sender):
    """Sends a blob too large for the server, then, when refused, one that fits."""

    def __init__(self, large: int, small: int) -> None:
        super().__init__(large)
        self.small = small
        self.answers: list[Message] = []

    def on_answer(self, reply: Message) -> None:
        self.answers.append(reply)
        if len(self.answers) == 1:
            self.size = self.small
            self.on_start()
        else:
            super().on_answer(reply)


class Asker(Worker):
    """A server that asks node 1 for a blob of ``size`` bytes and keeps the answer."""

    start_sends = ("give",)

    def __init__(self, size: int) -> None:
        super().__init__(0)
        self.size = size
        self.answer: Message | None = None
        self.done = threading.Event()

    def on_start(self) -> None:
        content = RecordDict({"size": ConfigRecord({"bytes": self.size})})
        self.request(Message(content, 1, "give"), self.on_answer)

    def on_answer(self, reply: Message) -> None:
        self.answer = reply
        self.done.set()
        self.stop()


class Giver(Worker):
    def __init__(self) -> None:
        super().__init__()
        self.register_handlers("give", self.on_give)

    def on_give(self, message: Message) -> Message:
        size = int(message.content["size"]["bytes"])
        blob = ArrayRecord({"bytes": np.ones(size, np.uint8)})
        return message.create_reply(RecordDict({"blob": blob}))


NO_SPILL = ReceiveLimits(per_peer=1 * MIB, total=1 * MIB, spill=0)


def test_a_request_with_no_room_gets_an_error_reply_and_the_stream_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sender = TwoTries(3 * MIB, MIB // 2)
    server = serve(Hasher(), "127.0.0.1:0", token=TOKEN, insecure=True, receive=NO_SPILL,
                   check_with=[Sender(8)])  # fmt: skip
    client = connect(sender, f"127.0.0.1:{server.port}", token=TOKEN, insecure=True)
    try:
        with caplog.at_level(logging.INFO, logger="fedbus"):
            assert sender.done.wait(STUCK)
        refused, accepted = sender.answers
        assert refused.has_error()
        assert refused.error.code == ErrorCode.RESOURCE_EXHAUSTED
        assert "no room for a message of" in str(refused.error.reason)
        assert "receive_budget_per_peer_mb" in str(refused.error.reason)
        assert accepted.has_content()
        assert accepted.content["answer"]["digest"] == sender.expected
        assert server.stats.messages_refused == 1
        assert server.stats.bytes_buffered == 0
        # one stream from start to end: never closed for bad input, never reopened
        assert "bad input" not in caplog.text
        assert "reconnected" not in caplog.text
    finally:
        server.stop()
        assert server.wait(30)
        assert client.wait(30)


def test_a_reply_with_no_room_fails_its_request_at_once() -> None:
    asker = Asker(3 * MIB)
    server = serve(asker, "127.0.0.1:0", token=TOKEN, insecure=True, receive=NO_SPILL,
                   check_with=[Giver()])  # fmt: skip
    client = connect(Giver(), f"127.0.0.1:{server.port}", token=TOKEN, insecure=True)
    try:
        assert asker.done.wait(STUCK)
        answer = asker.answer
        assert answer is not None
        assert answer.has_error()
        assert answer.error.code == ErrorCode.RESOURCE_EXHAUSTED
        assert answer.metadata.src_node_id == 1  # the node the request went to
        assert server.stats.bytes_buffered == 0
    finally:
        server.stop()
        assert server.wait(30)
        assert client.wait(30)


# -- the client side: a large message from the server arrives in a spill file -------------------
class Pusher(Worker):
    """A server that sends node 1 a blob of ``size`` bytes and keeps the answer."""

    start_sends = ("blob",)

    def __init__(self, size: int) -> None:
        super().__init__(0)
        self.arrays = blob(size)
        self.answer: Message | None = None
        self.done = threading.Event()

    def on_start(self) -> None:
        content = RecordDict({"blob": ArrayRecord(self.arrays)})
        self.request(Message(content, 1, "blob"), self.on_answer)

    def on_answer(self, reply: Message) -> None:
        self.answer = reply
        self.done.set()
        self.stop()


class ClientHasher(Hasher):
    """``Hasher``'s answer, from a client node."""

    def __init__(self) -> None:
        Worker.__init__(self)
        self.register_handlers("blob", self.on_blob)


def push(pusher: Pusher, spill_dir: Path) -> int:
    """Run ``pusher`` against one ``ClientHasher`` that spills above 1 MiB; its spill count."""
    server = serve(pusher, "127.0.0.1:0", token=TOKEN, insecure=True,
                   check_with=[ClientHasher()])  # fmt: skip
    settings = ClientSettings(spill_above=MIB, spill_dir=str(spill_dir))
    client = connect(ClientHasher(), f"127.0.0.1:{server.port}", token=TOKEN, insecure=True,
                     settings=settings)  # fmt: skip
    try:
        assert pusher.done.wait(STUCK)
    finally:
        server.stop()
        assert server.wait(30)
        assert client.wait(30)
    return client.messages_spilled


def test_a_client_takes_a_message_larger_than_its_memory_limit_in_a_spill_file(
    tmp_path: Path,
) -> None:
    pusher = Pusher(3 * MIB)
    assert push(pusher, tmp_path) == 1
    assert pusher.answer is not None
    assert pusher.answer.has_content()
    answer = pusher.answer.content["answer"]
    assert answer["digest"] == digest(pusher.arrays)
    assert answer["copied"] is False  # the client hashed views of its spill file
    assert list(tmp_path.iterdir()) == []


def test_a_client_without_room_refuses_that_message_and_its_request_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(spill_module.os, "posix_fallocate", disk_full)
    pusher = Pusher(3 * MIB)
    assert push(pusher, tmp_path) == 0
    assert pusher.answer is not None
    assert pusher.answer.has_error()
    assert pusher.answer.error.code == ErrorCode.RESOURCE_EXHAUSTED
    assert "No space left on device" in str(pusher.answer.error.reason)
