"""Both ends of the large-message test: a client that sends one big array, a server that checks it.

Run as ``python -m tests.runtime.grpc.large_peer HOST:PORT GIB`` from the repository root: the
client connects, sends ``GIB`` GiB, and prints the server's digest next to its own.
"""

from __future__ import annotations

import mmap
import sys
import threading
import zlib

import numpy as np

from fedbus.message import ArrayRecord, ConfigRecord, Message, RecordDict
from fedbus.runtime.grpc import ClientSettings, connect
from fedbus.worker import Worker

TOKEN = "large-message-token"
_PIECE = 64 << 20


def pattern(size: int) -> np.ndarray:
    """``size`` bytes (a multiple of 8) where every 8-byte word is different: a chunk that
    arrived twice, or in the wrong place, changes the checksum.

    The memory is mapped with its pages made at once (``MAP_POPULATE``): gigabytes touched
    page by page cost several times more on a virtual machine, which is no part of the test.
    """
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_POPULATE", 0)
    words = np.frombuffer(mmap.mmap(-1, size // 8 * 8, flags=flags), np.uint64)
    step = _PIECE // 8
    for start in range(0, len(words), step):  # in pieces: no second array of the whole size
        stop = min(start + step, len(words))
        words[start:stop] = np.arange(start, stop, dtype=np.uint64)
    return words.view(np.uint8)


def digest(values: np.ndarray) -> str:
    """CRC-32 of the bytes, with their length: enough to see corruption, 2.5 GB/s here."""
    crc, view = 0, values.data.cast("B")
    for start in range(0, len(view), _PIECE):
        crc = zlib.crc32(view[start : start + _PIECE], crc)
    return f"{len(view)}:{crc:08x}"


class Hasher(Worker):
    """The server: answers a ``blob`` with the checksum of its array and how it was held."""

    def __init__(self) -> None:
        super().__init__(0)
        self.register_handlers("blob", self.on_blob)

    def on_blob(self, message: Message) -> Message:
        values = message.content["blob"]["bytes"].numpy()
        answer = {"digest": digest(values), "nbytes": int(values.nbytes)}
        answer["copied"] = bool(values.flags.owndata)  # False: a view of the received bytes
        return message.create_reply(RecordDict({"answer": ConfigRecord(answer)}))


class Sender(Worker):
    """The client: sends ``size`` bytes of ``pattern`` to the server on start."""

    start_sends = ("blob",)

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size
        self.expected = ""
        self.answer: dict[str, object] = {}
        self.done = threading.Event()

    def on_start(self) -> None:
        values = pattern(self.size)
        self.expected = digest(values)
        content = RecordDict({"blob": ArrayRecord({"bytes": values})})
        self.request(Message(content, 0, "blob"), self.on_answer)

    def on_answer(self, reply: Message) -> None:
        if reply.has_content():
            self.answer = dict(reply.content["answer"])
        else:
            self.answer = {"error": str(reply.error)}
        self.done.set()
        self.stop()


def main() -> int:
    address, gib = sys.argv[1], float(sys.argv[2])
    sender = Sender(int(gib * (1 << 30)) // 8 * 8)
    client = connect(
        sender, address, token=TOKEN, insecure=True, settings=ClientSettings(connect_timeout=60)
    )
    if not sender.done.wait(600):
        print("no answer within 600 s", flush=True)
        return 1
    client.wait(60)
    same = sender.answer.get("digest") == sender.expected
    print(f"answer {sender.answer} expected {sender.expected} same {same}", flush=True)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
