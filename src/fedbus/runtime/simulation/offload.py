"""Answering client messages away from the event loop, with the result the loop would get.

The event loop, the clock and the order of events stay in one place. What moves is the handler
of a ``portable`` client (see ``Worker.portable``): a *task* is one delivery the loop expects
to make (the message, the simulated time of the delivery, the client's speed and its lasting
state), and a copy of the client, built by the same factory wherever the task runs, answers it
through a ``RecordingComm``. What the handler sends, the work it reports and whether it stops are
kept in order as *actions*. When the loop reaches the delivery it replays them: message ids,
transfer times and the trace are made there, in event order, so a run gives the same result
whatever ran its handlers. The clock the copy sees is the one the loop would show it, so the
messages it builds carry the same ``created_at``.

A handler that sets a timer cannot be answered away from the loop: the task comes back marked
``inline`` and the loop runs the handler itself.

Tasks and outcomes travel between processes as bytes: a small JSON header, then frames of
fedbus's codec. Arrays of the messages sent to clients (the global model, shared by every
request of a round) are not in the frames: each distinct array goes once into a table that the
backend ships its own way (shared memory, Ray's object store), and the header says where each
array goes back. Nothing is pickled.
"""

from __future__ import annotations

import json
import struct
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from fedbus.errors import FedbusError
from fedbus.message import ArrayRecord, Message, RecordDict, use_clock
from fedbus.message.codec import decode_message, encode_message
from fedbus.runtime.simulation.profiles import HANDLER_TIME
from fedbus.worker import Worker

__all__ = [
    "Action",
    "ArrayTable",
    "Arrivals",
    "Buffer",
    "ClientHost",
    "Outcome",
    "RecordingComm",
    "Task",
    "decode_outcome",
    "decode_task",
    "encode_outcome",
    "encode_task",
]

ClientFactory = Callable[[int], Worker]

#: ``("work", samples)``, ``("send", message)`` or ``("stop", None)``, in the order they happened.
Action = tuple[Literal["work", "send", "stop"], Any]

#: How many built clients a host keeps for reuse: clients are cheap to rebuild, but a round
#: often samples the same ones again, and building one may cost more than answering.
CLIENT_CACHE = 1024


@dataclass(slots=True)
class Task:
    """One delivery to a portable client, to be answered away from the loop."""

    task_id: int
    node_id: int
    message: Message
    time: float  # the simulated time of the delivery
    speed: float  # the client's samples per simulated second
    state: RecordDict  # the client's ``save_state`` before the delivery


@dataclass(slots=True)
class Outcome:
    """What a copy of the client did with a task.

    ``inline`` means the loop must run the handler itself (it set a timer, or answering failed
    outside the handler, e.g. the factory raised: the loop then meets the same error). ``seconds``
    is the wall time the answer took, which backends use to size their batches.
    """

    task_id: int
    actions: list[Action]
    state: RecordDict
    inline: bool = False
    seconds: float = 0.0
    problem: str = ""


class Arrivals:
    """Outcomes back before the loop asked for them, less those of tasks it gave up on.

    Both backends read outcomes in batches (a worker's socket in order, a Ray task's group), so
    an outcome often arrives while the loop waits for another.
    """

    def __init__(self) -> None:
        self._ready: dict[int, Outcome] = {}
        self._discarded: set[int] = set()

    def take(self, task_id: int) -> Outcome | None:
        """The outcome of ``task_id`` if it came back already."""
        return self._ready.pop(task_id, None)

    def arrived(self, outcome: Outcome) -> None:
        """Keep ``outcome`` for the loop, unless its task was given up."""
        if outcome.task_id in self._discarded:
            self._discarded.discard(outcome.task_id)
        else:
            self._ready[outcome.task_id] = outcome

    def discard(self, task_id: int, *, outstanding: bool) -> None:
        """Give up ``task_id``: forget its outcome, or drop it when it comes (``outstanding``)."""
        if self._ready.pop(task_id, None) is None and outstanding:
            self._discarded.add(task_id)

    def clear(self) -> None:
        self._ready.clear()
        self._discarded.clear()


class _NoTimer:
    """What ``call_later`` returns to a handler answered away from the loop (never fires)."""

    def cancel(self) -> None:
        pass


class RecordingComm:
    """The CommManager of a client answering a task: keeps what the handler does, in order."""

    __slots__ = ("actions", "elapsed", "inline", "speed", "start")

    def __init__(self, start: float, speed: float) -> None:
        self.start, self.speed = start, speed
        self.elapsed = HANDLER_TIME  # as the loop's clock: HANDLER_TIME past the event
        self.actions: list[Action] = []
        self.inline = False

    def clock(self) -> float:
        return self.start + self.elapsed

    def send(self, message: Message) -> None:
        self.actions.append(("send", message))

    def report_work(self, num_samples: int) -> None:
        self.actions.append(("work", num_samples))
        self.elapsed += num_samples / self.speed  # the same arithmetic as the loop's

    def call_later(self, delay: float, callback: Callable[[], None]) -> _NoTimer:
        self.inline = True  # timers live in the loop: it will run this handler itself
        return _NoTimer()

    def stop(self) -> None:
        self.actions.append(("stop", None))


class ClientHost:
    """Builds copies of clients with a factory and answers tasks with them.

    Copies are kept for reuse (up to ``CLIENT_CACHE``, least recently used dropped first): a
    portable client keeps nothing between messages, so a cached copy answers as a fresh one.
    """

    def __init__(self, factory: ClientFactory) -> None:
        self._factory = factory
        self._clients: OrderedDict[int, Worker] = OrderedDict()

    def client(self, node_id: int) -> Worker:
        """The copy of client ``node_id``, built the first time."""
        worker = self._clients.get(node_id)
        if worker is not None:
            self._clients.move_to_end(node_id)
            return worker
        worker = self._factory(node_id)
        if not isinstance(worker, Worker):
            raise FedbusError(
                f"the client factory returned {type(worker).__name__} for node {node_id}, "
                "not a fedbus Worker"
            )
        self._clients[node_id] = worker
        if len(self._clients) > CLIENT_CACHE:
            self._clients.popitem(last=False)
        return worker

    def answer(self, task: Task) -> Outcome:
        """Run the task's delivery on a copy of its client and record what it did."""
        started = time.perf_counter()
        try:
            worker = self.client(task.node_id)
            if not worker.portable:
                return Outcome(task.task_id, [], RecordDict(), inline=True)
            comm = RecordingComm(task.time, task.speed)
            worker.attach(comm, task.node_id)
            worker.load_state(task.state)
            with use_clock(comm.clock):
                worker.deliver(task.message)
            state = worker.save_state()
            worker.comm_manager = None  # a kept copy must not keep what it sent
        except Exception as exc:  # the loop runs it itself and meets the error there
            problem = f"{type(exc).__name__}: {exc}"
            return Outcome(task.task_id, [], RecordDict(), inline=True, problem=problem)
        seconds = time.perf_counter() - started
        return Outcome(task.task_id, comm.actions, state, comm.inline, seconds)


# -- bytes ----------------------------------------------------------------------------------------
_LENGTH = struct.Struct("<Q")


Buffer = bytes | bytearray | memoryview


def _framed(parts: Sequence[Buffer]) -> list[Buffer]:
    """Each part after its length: one blob once concatenated, or written piece by piece."""
    out: list[Buffer] = []
    for part in parts:
        out += [_LENGTH.pack(len(part)), part]
    return out


def _split(blob: bytes | bytearray | memoryview) -> list[memoryview]:
    view, parts, pos = memoryview(blob), [], 0
    while pos < len(view):
        (length,) = _LENGTH.unpack_from(view, pos)
        pos += _LENGTH.size
        parts.append(view[pos : pos + length])
        pos += length
    return parts


class ArrayTable:
    """The distinct arrays of a batch of tasks, each once, in the order first met.

    Arrays are told apart by their memory (address, shape, strides, dtype), so the same model
    sent to a hundred clients is one entry even when each request holds its own view of it.
    """

    def __init__(self) -> None:
        self.arrays: list[np.ndarray[Any, Any]] = []
        self._index: dict[tuple[Any, ...], int] = {}

    def add(self, array: np.ndarray[Any, Any]) -> int:
        interface = array.__array_interface__
        key = (interface["data"][0], array.shape, array.strides, array.dtype.str)
        index = self._index.get(key)
        if index is None:
            index = self._index[key] = len(self.arrays)
            self.arrays.append(array)
        return index


def encode_task(task: Task, table: ArrayTable) -> list[Buffer]:
    """The task as buffers to write one after the other (``b"".join`` makes it one blob); its
    message's arrays go into ``table``."""
    message, refs = _without_arrays(task.message, table)
    header = {
        "task": task.task_id,
        "node": task.node_id,
        "time": task.time.hex(),  # exact: the handler's clock must match the loop's
        "speed": task.speed.hex(),
        "arrays": refs,
    }
    return _framed(
        [json.dumps(header).encode(), encode_message(message), _encode_state(task.state)]
    )


def decode_task(
    blob: bytes | bytearray | memoryview, table: Sequence[np.ndarray[Any, Any]]
) -> Task:
    """The task ``encode_task`` made, its arrays taken from ``table`` (read-only views)."""
    header_part, message_part, state_part = _split(blob)
    header = json.loads(bytes(header_part))
    message = decode_message(message_part)
    if message.has_content():
        content = message.content
        for record_name, entries in header["arrays"]:
            content[record_name] = ArrayRecord({key: table[index] for key, index in entries})
    return Task(
        header["task"],
        header["node"],
        message,
        float.fromhex(header["time"]),
        float.fromhex(header["speed"]),
        _decode_state(state_part),
    )


def encode_outcome(outcome: Outcome) -> list[Buffer]:
    """The outcome as buffers to write one after the other (``b"".join`` makes it one blob):
    the messages it sends travel as codec frames, arrays included, copied nowhere else."""
    kinds: list[list[Any]] = []
    frames: list[bytes | bytearray] = []
    for kind, value in outcome.actions:
        if kind == "send":
            kinds.append(["send"])
            frames.append(encode_message(value))
        else:
            kinds.append([kind, value])
    header = {
        "task": outcome.task_id,
        "actions": kinds,
        "inline": outcome.inline,
        "seconds": outcome.seconds,
        "problem": outcome.problem,
    }
    return _framed([json.dumps(header).encode(), _encode_state(outcome.state), *frames])


def decode_outcome(blob: bytes | bytearray | memoryview) -> Outcome:
    """The outcome ``encode_outcome`` made; arrays are read-only views into ``blob``."""
    header_part, state_part, *frames = _split(blob)
    header = json.loads(bytes(header_part))
    sent = iter(frames)
    actions: list[Action] = []
    for entry in header["actions"]:
        if entry[0] == "send":
            actions.append(("send", decode_message(next(sent))))
        else:
            actions.append((entry[0], entry[1]))
    return Outcome(
        header["task"],
        actions,
        _decode_state(state_part),
        header["inline"],
        header["seconds"],
        header["problem"],
    )


def _without_arrays(message: Message, table: ArrayTable) -> tuple[Message, list[Any]]:
    """A copy of ``message`` whose array records are empty, and where their arrays went."""
    if not message.has_content() or not message.content.array_records:
        return message, []
    content = RecordDict()
    refs: list[Any] = []
    for name, record in message.content.items():
        if isinstance(record, ArrayRecord):
            arrays = record.to_numpy_dict()
            refs.append([name, [[key, table.add(value)] for key, value in arrays.items()]])
            record = ArrayRecord()  # a placeholder keeps the records' order
        content[name] = record
    return Message.from_metadata(message.metadata, content=content), refs


_STATE = "state"  # the message type of a state frame, which is never sent


def _encode_state(state: RecordDict) -> bytes | bytearray:
    if not state:
        return b""
    return encode_message(Message(state, 0, _STATE))


def _decode_state(part: memoryview) -> RecordDict:
    return decode_message(part).content if len(part) else RecordDict()
