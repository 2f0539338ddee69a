"""Both ends of the large-message test: a client that sends one big array, a server that checks it.

Run as ``python -m tests.runtime.grpc.large_peer HOST:PORT GIB`` from the repository root: the
client connects, sends ``GIB`` GiB, and prints the server's digest next to its own.
"""

from __future__ import annotations

import sys
import threading
import zlib

import numpy as np

from fedbus.message import ArrayRecord, ConfigRecord, Message, RecordDict
from fedbus.runtime.grpc import ClientSettings, connect
from fedbus.worker import Worker

TOKEN = "large-message-token"
_PIECE = 64 << 20


def blob(size: int) -> dict[str, np.ndarray]:
    """Arrays of ``size`` bytes in all, each one different, that hold 64 MiB of memory only.

    Every array is a window of ``_PIECE`` bytes (the last one shorter) onto one run of 8-byte
    words that are all different, the k-th window starting k words later: a chunk that
    arrived twice, or in the wrong place, changes the checksum. A message of gigabytes then
    costs its sender no more memory than one window (a fresh gigabyte costs seconds on a
    virtual machine, which is no part of what the test checks).
    """
    windows = -(-size // _PIECE)
    words = np.arange(_PIECE // 8 + windows, dtype=np.uint64)
    arrays = {}
    for k in range(windows):
        length = min(_PIECE, size - k * _PIECE) // 8
        arrays[f"part-{k:05d}"] = words[k : k + length].view(np.uint8)
    return arrays


def digest(arrays: dict[str, np.ndarray]) -> str:
    """CRC-32 of the arrays' bytes in name order, with their length: enough to see corruption."""
    crc, total = 0, 0
    for name in sorted(arrays):
        crc = zlib.crc32(arrays[name].data.cast("B"), crc)
        total += arrays[name].nbytes
    return f"{total}:{crc:08x}"


class Hasher(Worker):
    """The server: answers a ``blob`` with the checksum of its array and how it was held."""

    def __init__(self) -> None:
        super().__init__(0)
        self.register_handlers("blob", self.on_blob)

    def on_blob(self, message: Message) -> Message:
        arrays = message.content["blob"].to_numpy_dict()
        answer = {"digest": digest(arrays), "arrays": len(arrays)}
        # False: views of the received bytes (a spill file's, when spilled)
        answer["copied"] = any(values.flags.owndata for values in arrays.values())
        return message.create_reply(RecordDict({"answer": ConfigRecord(answer)}))


class Sender(Worker):
    """The client: sends a ``blob`` of ``size`` bytes to the server on start."""

    start_sends = ("blob",)

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size
        self.expected = ""
        self.answer: dict[str, object] = {}
        self.done = threading.Event()

    def on_start(self) -> None:
        arrays = blob(self.size)
        self.expected = digest(arrays)
        content = RecordDict({"blob": ArrayRecord(arrays)})
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
