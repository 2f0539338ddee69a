"""``ProcessPool``: answers a simulation's tasks in worker processes on this machine.

Each worker process builds its own copies of the clients with the simulation's factory (sent
once, when the pool starts) and answers the tasks it is given in order. Per batch of tasks (a
round's requests), the distinct arrays (the global model) are written once into a shared-memory
file that every worker maps read-only; each task then carries only its metadata, config and
state. Outcomes come back as codec frames, written to a socket part by part and read into one
buffer, so a reply's arrays are copied once on each side. Tasks are dealt to the workers in
turn, in the order the loop will need them, so the first results arrive first while the rest
are being computed.

Worker processes are started with ``spawn`` (a clean interpreter: no threads of torch or gRPC
inherited mid-flight), with one BLAS/OpenMP thread each, so N workers use N cores, and with
glibc's allocator keeping freed arrays for reuse (see ``WORKER_ENVIRONMENT``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import mmap
import multiprocessing
import os
import queue
import select
import signal
import socket
import struct
import tempfile
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from fedbus.errors import FedbusError
from fedbus.runtime.simulation.offload import (
    ArrayTable,
    Arrivals,
    Buffer,
    ClientFactory,
    ClientHost,
    Outcome,
    Task,
    decode_outcome,
    decode_task,
    encode_outcome,
    encode_task,
)

__all__ = ["WORKER_ENVIRONMENT", "ProcessPool", "cores"]

logger = logging.getLogger("fedbus.simulation")

_ALIGN = 64
# Each worker is one core's worth of compute: libraries must not start a thread per core each.
# And a worker allocates and frees model-sized arrays for every task: glibc would map fresh
# pages for each (zeroed by the kernel, a third of the time in system calls on some virtual
# machines); these settings keep them in the heap for the next task.
WORKER_ENVIRONMENT = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
    "MALLOC_MMAP_THRESHOLD_": str(64 << 20),
    "MALLOC_TRIM_THRESHOLD_": str(128 << 20),
    "MALLOC_TOP_PAD_": str(64 << 20),
}


def _shared_directory() -> str:
    """Where shared arrays go: RAM-backed ``/dev/shm`` where there is one."""
    return "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()


class _Block:
    """One batch's distinct arrays in a file every worker maps; removed when its tasks are done."""

    def __init__(self, arrays: Sequence[np.ndarray[Any, Any]]) -> None:
        self.layout: list[list[Any]] = []
        offset = 0
        for array in arrays:
            self.layout.append([offset, array.dtype.str, list(array.shape)])
            offset += -(-array.nbytes // _ALIGN) * _ALIGN
        size = max(offset, 1)
        try:
            self.path = self._write(arrays, size, _shared_directory())
        except OSError:  # /dev/shm too small (containers often give it 64 MB): use the disk
            self.path = self._write(arrays, size, tempfile.gettempdir())
        self.pending = 0

    def _write(self, arrays: Sequence[np.ndarray[Any, Any]], size: int, directory: str) -> str:
        handle, path = tempfile.mkstemp(prefix="fedbus-arrays-", dir=directory)
        try:
            with os.fdopen(handle, "wb") as file:
                file.truncate(size)
                for (start, _, _), array in zip(self.layout, arrays, strict=True):
                    file.seek(start)
                    file.write(np.ascontiguousarray(array).data)
        except OSError:
            os.unlink(path)
            raise
        return path

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


_SIZE = struct.Struct("<Q")
_SOCKET_BUFFER = 8 << 20
# Parts smaller than this are joined before writing: one system call instead of several.
_JOIN_BELOW = 1 << 16


def _write_blob(channel: socket.socket, parts: Sequence[Buffer]) -> None:
    """Write one blob made of ``parts``, after its length."""
    total = sum(len(part) for part in parts)
    small: list[Buffer] = [_SIZE.pack(total)]
    for part in parts:
        if len(part) < _JOIN_BELOW:
            small.append(part)
            continue
        channel.sendall(b"".join(small))
        small = []
        channel.sendall(part)
    if small:
        channel.sendall(b"".join(small))


def _receive_exactly(channel: socket.socket, count: int) -> bytearray:
    buffer = bytearray(count)
    view, pos = memoryview(buffer), 0
    while pos < count:
        received = channel.recv_into(view[pos:])
        if received == 0:
            raise EOFError("the other end closed the channel")
        pos += received
    return buffer


def _read_blob(channel: socket.socket) -> bytearray:
    """Read one blob ``_write_blob`` wrote."""
    (total,) = _SIZE.unpack(_receive_exactly(channel, _SIZE.size))
    return _receive_exactly(channel, total)


class _Worker:
    __slots__ = ("channel", "process", "ready")

    def __init__(self, channel: socket.socket, process: Any) -> None:
        self.channel, self.process = channel, process
        self.ready = False  # it said so: factory loaded, warm-up client built


class ProcessPool:
    """``workers`` processes answering tasks for one simulation (see the module docstring)."""

    def __init__(self, workers: int, factory: ClientFactory, warm_up: int | None = None) -> None:
        self.size = workers
        self._factory = factory
        self._warm_up = warm_up
        self._workers: list[_Worker] = []
        self._next = 0
        self._where: dict[int, tuple[int, _Block]] = {}  # task -> (worker, its arrays)
        self._arrivals = Arrivals()

    def start(self) -> None:
        """Start the worker processes (a no-op once started)."""
        if self._workers:
            return
        context = multiprocessing.get_context("spawn")
        saved = {name: os.environ.get(name) for name in WORKER_ENVIRONMENT}
        os.environ.update(WORKER_ENVIRONMENT)
        # Ctrl-C is for this process, which stops the run and the workers with it; workers
        # that got it too would each print a traceback. Started with SIGINT ignored, they keep
        # it ignored from their first instruction (only the main thread may change it; from
        # another, a worker ignores it once its own code runs).
        main_thread = threading.current_thread() is threading.main_thread()
        interrupt = signal.signal(signal.SIGINT, signal.SIG_IGN) if main_thread else None
        try:
            for _ in range(self.size):
                ours, theirs = socket.socketpair()
                for end in (ours, theirs):  # room for whole replies: a worker rarely waits
                    end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SOCKET_BUFFER)
                    end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _SOCKET_BUFFER)
                # The factory reaches the child through multiprocessing's own pickling: one
                # object, from this process to its own child, never from a file or a network.
                process = context.Process(
                    target=_serve,
                    args=(theirs, self._factory, self._warm_up),
                    daemon=True,
                    name="fedbus-worker",
                )
                process.start()
                theirs.close()
                if self._warm_up is not None and process.pid is not None:
                    # Starting in the background: at the lowest priority, so that importing
                    # and building take no CPU from the run, which goes on meanwhile.
                    with contextlib.suppress(OSError):
                        os.setpriority(os.PRIO_PROCESS, process.pid, 19)
                self._workers.append(_Worker(ours, process))
        finally:
            if interrupt is not None:
                signal.signal(signal.SIGINT, interrupt)
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

    def ready(self) -> bool:
        """True once every worker has started (see ``start``) and said it is ready; never waits."""
        if not self._workers:
            return False
        waiting = [index for index, worker in enumerate(self._workers) if not worker.ready]
        if waiting:
            channels = [self._workers[index].channel for index in waiting]
            readable, _, _ = select.select(channels, [], [], 0)
            for index in waiting:
                if self._workers[index].channel in readable:
                    self._read(index)  # its first blob: "ready"
        return all(worker.ready for worker in self._workers)

    def wait_ready(self) -> None:
        """Start the workers if needed and wait until each has said it is ready."""
        self.start()
        for index, worker in enumerate(self._workers):
            if not worker.ready:
                self._read(index)

    def submit(self, tasks: Sequence[Task]) -> None:
        """Send ``tasks`` to the workers, in turn; their arrays go to shared memory once."""
        self.start()
        table = ArrayTable()
        blobs = [encode_task(task, table) for task in tasks]
        block = _Block(table.arrays)
        block.pending = len(tasks)
        header = _block_header(block)
        for task, parts in zip(tasks, blobs, strict=True):
            index = self._next
            self._next = (self._next + 1) % self.size
            self._where[task.task_id] = (index, block)
            _write_blob(self._workers[index].channel, [header, *parts])

    def result(self, task_id: int) -> Outcome:
        """The outcome of ``task_id``, waiting for it if it is not back yet."""
        outcome = self._arrivals.take(task_id)
        if outcome is not None:
            return outcome
        index = self._where[task_id][0]
        while True:
            outcome = self._next_outcome(index)
            if outcome.task_id == task_id:
                return outcome
            self._arrivals.arrived(outcome)

    def discard(self, task_id: int) -> None:
        """The loop no longer needs ``task_id``: drop its outcome when it comes."""
        self._arrivals.discard(task_id, outstanding=task_id in self._where)

    def close(self) -> None:
        """Stop the workers and remove shared files still in use."""
        for worker in self._workers:
            with contextlib.suppress(OSError):
                worker.channel.close()
        for worker in self._workers:
            if not worker.ready:  # still starting: nothing of the run's is in it
                worker.process.terminate()
            worker.process.join(timeout=5)
            if worker.process.is_alive():
                worker.process.terminate()
                worker.process.join(timeout=5)
        self._workers.clear()
        for _, block in list(self._where.values()):
            block.remove()
        self._where.clear()

    def _next_outcome(self, index: int) -> Outcome:
        blob = self._read(index)
        if not blob:  # it was "ready": the outcome comes next
            blob = self._read(index)
        outcome = decode_outcome(blob)
        _, block = self._where.pop(outcome.task_id)
        block.pending -= 1
        if block.pending == 0:
            block.remove()
        return outcome

    def _read(self, index: int) -> bytearray:
        """The next blob from worker ``index``; an empty one, its first, says it is ready."""
        worker = self._workers[index]
        try:
            blob = _read_blob(worker.channel)
        except (EOFError, OSError) as exc:
            code = worker.process.exitcode
            raise FedbusError(
                f"simulation worker process {index} died (exit code {code}). Worker processes "
                "import your main module: a script that runs a simulation must do so under "
                '`if __name__ == "__main__":`. Otherwise run with workers=1 '
                "(simulation.workers = 1) to see the error in this process"
            ) from exc
        if not blob:
            worker.ready = True
        return blob


def _block_header(block: _Block) -> bytes:
    """The arrays' file and layout, in front of every task of the batch."""
    text = json.dumps({"path": block.path, "layout": block.layout}).encode()
    return len(text).to_bytes(4, "little") + text


# -- in the worker process ------------------------------------------------------------------------
class _MappedBlocks:
    """The shared arrays files this worker has mapped, the latest kept open for the next tasks."""

    def __init__(self) -> None:
        self._path = ""
        self._arrays: list[np.ndarray[Any, Any]] = []

    def arrays(self, path: str, layout: list[list[Any]]) -> list[np.ndarray[Any, Any]]:
        if path != self._path:
            with open(path, "rb") as file:
                mapped = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
            self._arrays = [
                np.frombuffer(
                    mapped, dtype=np.dtype(dtype), count=int(np.prod(shape)), offset=start
                ).reshape(shape)
                for start, dtype, shape in layout
            ]
            self._path = path
        return self._arrays


def _serve(channel: socket.socket, factory: ClientFactory, warm_up: int | None = None) -> None:
    """A worker process: say it is ready (an empty blob, once ``warm_up`` is built), then
    answer tasks until the pool closes the connection."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the pool's process handles Ctrl-C
    host = ClientHost(factory)
    if warm_up is not None:
        try:
            host.client(warm_up)  # its libraries imported and its data loaded now, not later
        except Exception:  # the task that needs it reports the error, in its outcome
            logger.debug("building client %d ahead failed", warm_up, exc_info=True)
    try:
        _write_blob(channel, [])
    except OSError:
        return
    blocks = _MappedBlocks()
    inbox: queue.SimpleQueue[bytearray | None] = queue.SimpleQueue()

    def read() -> None:
        # Reading in its own thread keeps the pipe drained, so the pool never blocks sending a
        # batch while this process blocks sending an outcome.
        try:
            while True:
                inbox.put(_read_blob(channel))
        except (EOFError, OSError):
            inbox.put(None)

    threading.Thread(target=read, daemon=True).start()
    while (blob := inbox.get()) is not None:
        size = int.from_bytes(blob[:4], "little")
        block = json.loads(blob[4 : 4 + size])
        table = blocks.arrays(block["path"], block["layout"])
        task = decode_task(memoryview(blob)[4 + size :], table)
        outcome = host.answer(task)
        del task
        try:
            _write_blob(channel, encode_outcome(outcome))
        except OSError:  # the pool closed: the run is over
            return


def cores() -> int:
    """Cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
