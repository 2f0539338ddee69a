"""Spill files: messages kept on disk instead of in memory, read back without a copy.

A ``SpillDirectory`` writes a message's frame to a fresh file and maps the file back in,
read-only; decoding that mapping gives a message whose arrays are views of the file (the codec
copies nothing). The file is removed from the directory at once: the mapping keeps its bytes
until the last array that views it is gone, and then the operating system frees the disk space
by itself, also when the process is killed.

Memory: pages of a spilled message count in the process's resident memory once they are read,
until the message is gone or its reader lets them go with ``drop_resident`` (an aggregation
that reads a reply once, block by block, keeps one block resident, not the reply). Writing goes
through the page cache, so spilling runs at the speed of the disk once the kernel's dirty-page
limits are reached.

>>> import numpy as np
>>> from fedbus.message import ArrayRecord, Message, RecordDict
>>> spill = SpillDirectory()
>>> message = Message(RecordDict({"m": ArrayRecord({"w": np.arange(4.0)})}), 0, "train")
>>> copy = spill.spill(message)
>>> copy.content["m"]["w"].numpy().tolist(), spill.bytes_spilled > 0
([0.0, 1.0, 2.0, 3.0], True)
>>> spill.close()
"""

from __future__ import annotations

import bisect
import errno
import itertools
import mmap
import os
import shutil
import tempfile
import threading
import weakref
from pathlib import Path
from typing import Any

import numpy as np

from fedbus.errors import FedbusError
from fedbus.message.codec import decode_message, encode_message
from fedbus.message.message import Message

__all__ = ["SpillDirectory", "SpillError", "SpillFile", "drop_resident"]


class SpillError(FedbusError):
    """A message could not be written to its spill directory (a full disk, no permission)."""


class SpillDirectory:
    """A private temporary directory of spill files, made when the first message is spilled.

    Parameters
    ----------
    parent
        Where the directory is made; None: the system's temporary directory (``TMPDIR``).
    settings
        The settings a user changes when spilling fails, named in the error: the directory's
        and the memory budget's (say ``("simulation.spill_dir",
        "simulation.memory_budget_mb")``).
    """

    def __init__(
        self,
        parent: str | os.PathLike[str] | None = None,
        settings: tuple[str, str] = ("spill_dir", "the memory budget"),
    ) -> None:
        self._parent = None if parent is None or str(parent) == "" else Path(parent)
        self._settings = settings
        self._path: Path | None = None
        self._names = itertools.count()
        self.messages_spilled = 0
        self.bytes_spilled = 0

    @property
    def path(self) -> Path | None:
        """The directory, once a message was spilled."""
        return self._path

    def spill(
        self, message: Message, frame: bytes | bytearray | memoryview | None = None
    ) -> Message:
        """An equal message whose content lives in a spill file.

        ``frame`` is the message's encoding when the caller has it already (it is written as it
        is); otherwise the message is encoded straight into the file.

        Raises
        ------
        SpillError
            The file could not be written; the message is as it was, and nothing is left behind.
        """
        try:
            mapped = self._write(message, frame)
        except OSError as exc:
            what = "a message" if frame is None else f"a message of {len(frame)} bytes"
            whose = f"{message.metadata.message_type!r} from node {message.metadata.src_node_id}"
            raise self._error(exc, what, whose) from exc
        self.messages_spilled += 1
        self.bytes_spilled += len(mapped)
        return decode_message(mapped)

    def open(self, size: int) -> SpillFile:
        """A new, nameless spill file with room for ``size`` bytes, to fill in order.

        Raises
        ------
        SpillError
            The directory cannot be made or the disk has no room for ``size`` bytes.
        """
        try:
            fd = self._create()
            try:
                os.posix_fallocate(fd, 0, size)  # a full disk fails now, not midway
            except BaseException:
                os.close(fd)
                raise
        except OSError as exc:
            raise self._error(exc, f"{size} bytes", "a message in transit") from exc
        return SpillFile(fd, size, self)

    def _create(self) -> int:
        """A new file in the directory, already without a name: its descriptor."""
        path = self._directory() / f"{next(self._names)}.frame"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.unlink(path)  # the descriptor, then the mapping, keep the bytes alive
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _error(self, exc: OSError, what: str, whose: str) -> SpillError:
        where = self._path or self._parent or Path(tempfile.gettempdir())
        directory, budget = self._settings
        hint = (
            f"free space there, or choose another directory ({directory}) or a larger "
            f"memory budget ({budget})"
            if exc.errno in (errno.ENOSPC, errno.EDQUOT)
            else f"check that the directory exists and is writable ({directory})"
        )
        return SpillError(
            f"could not spill {what} ({whose}) to {where}: {exc.strerror or exc}; {hint}"
        )

    def _write(self, message: Message, frame: bytes | bytearray | memoryview | None) -> memoryview:
        """Write the frame to a new file and map it back read-only; the file's name is gone."""
        fd = self._create()
        try:
            return _map(fd, self._fill(fd, message, frame))
        finally:
            os.close(fd)

    @staticmethod
    def _fill(fd: int, message: Message, frame: bytes | bytearray | memoryview | None) -> int:
        """Write the frame into ``fd``; returns its size."""
        if frame is not None:
            view, written = memoryview(frame).cast("B"), 0
            while written < len(view):
                written += os.write(fd, view[written:])
            return len(view)
        # Encode into a writable mapping of the file: one copy of each array, into the page
        # cache. Unmapped at once, so the pages are no longer this process's resident memory.
        mapping: list[mmap.mmap] = []

        def allocate(size: int) -> mmap.mmap:  # a frame is never empty: it has a header
            os.posix_fallocate(fd, 0, size)  # a full disk fails here, not as SIGBUS mid-copy
            mapping.append(mmap.mmap(fd, size))
            return mapping[0]

        encoded = encode_message(message, allocate=allocate)
        size = len(encoded)
        del encoded
        for each in mapping:
            each.close()
        return size

    def _directory(self) -> Path:
        if self._path is None:
            parent = self._parent
            if parent is not None:
                parent.mkdir(parents=True, exist_ok=True)
            self._path = Path(tempfile.mkdtemp(prefix="fedbus-spill-", dir=parent))
        return self._path

    def close(self) -> None:
        """Remove the directory (spilled messages still in use keep their bytes)."""
        if self._path is not None:
            shutil.rmtree(self._path, ignore_errors=True)
            self._path = None

    def __repr__(self) -> str:
        where = self._path or self._parent or "the temporary directory"
        return f"SpillDirectory({where}: {self.messages_spilled} messages spilled)"


class SpillFile:
    """One message arriving into a nameless spill file: ``write`` its bytes in order, then
    ``finish`` maps them read-only (or ``discard`` gives the room back at once).

    Made by ``SpillDirectory.open``; the directory counts it when it is finished.
    """

    __slots__ = ("_directory", "_fd", "size", "written")

    def __init__(self, fd: int, size: int, directory: SpillDirectory) -> None:
        self._fd: int | None = fd
        self._directory = directory
        self.size = size
        self.written = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append ``data``; more than ``size`` bytes in all is a ValueError.

        Raises
        ------
        SpillError
            The disk refused the bytes; the file is discarded.
        """
        view = memoryview(data).cast("B")
        if self._fd is None or self.written + len(view) > self.size:
            raise ValueError(f"a spill file of {self.size} bytes: no room for {len(view)} more")
        try:
            done = 0
            while done < len(view):
                done += os.write(self._fd, view[done:])
        except OSError as exc:
            self.discard()
            raise self._directory._error(exc, f"{self.size} bytes", "a message in transit") from exc
        self.written += len(view)

    def finish(self) -> memoryview:
        """The whole file, mapped read-only; it lives as long as views of it do."""
        if self._fd is None or self.written != self.size:
            raise ValueError(f"a spill file of {self.size} bytes holds {self.written}")
        try:
            mapped = _map(self._fd, self.size)
        finally:
            self.discard()
        self._directory.messages_spilled += 1
        self._directory.bytes_spilled += self.size
        return mapped

    def discard(self) -> None:
        """Close the file: its room goes back to the disk once no mapping holds it."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


# -- resident pages ---------------------------------------------------------------------------
# The live read-only mappings of spill files, by start address (sorted, for bisect), so that
# ``drop_resident`` can tell a view of a spill file from any other memory: letting pages go is
# harmless for a file mapping (they are read back from the file) and would destroy anything else.
_PAGE = mmap.PAGESIZE
_lock = threading.Lock()
_starts: list[int] = []
_mappings: dict[int, tuple[int, weakref.ref[mmap.mmap]]] = {}


def _map(fd: int, size: int) -> memoryview:
    """Map ``size`` bytes of ``fd`` read-only, registered for ``drop_resident``."""
    mapping = mmap.mmap(fd, size, prot=mmap.PROT_READ)
    start = int(np.frombuffer(mapping, np.uint8).ctypes.data)

    def forget(_: object) -> None:
        with _lock:
            if _mappings.pop(start, None) is not None:
                del _starts[bisect.bisect_left(_starts, start)]

    with _lock:
        bisect.insort(_starts, start)
        _mappings[start] = (size, weakref.ref(mapping, forget))
    return memoryview(mapping).toreadonly()


def drop_resident(view: np.ndarray[Any, Any]) -> None:
    """Let the kernel take the whole pages under ``view`` out of this process's resident memory,
    if ``view`` lies in a spilled message; any other array is left as it is.

    The bytes stay what they are: a page touched again is read back from the page cache or the
    disk. For a reader that goes through a spilled message once, in order (an aggregation
    folding a reply block by block), so that its resident memory stays one block.

    >>> drop_resident(np.zeros(4))  # not a spill file's: nothing happens
    """
    if not _starts or not view.flags.c_contiguous or view.nbytes < _PAGE:
        return
    begin = int(view.ctypes.data)
    with _lock:
        index = bisect.bisect_right(_starts, begin) - 1
        if index < 0:
            return
        start = _starts[index]
        size, reference = _mappings.get(start, (0, None))
    mapping = reference() if reference is not None else None
    end = begin + view.nbytes
    if mapping is None or end > start + size:
        return
    first = -(-(begin - start) // _PAGE) * _PAGE  # only pages wholly inside the view
    last = (end - start) // _PAGE * _PAGE
    if last > first:
        mapping.madvise(mmap.MADV_DONTNEED, first, last - first)
