"""``ClientStateStore``: what a client keeps from one round to the next.

Some algorithms give each client state that outlives a round: SCAFFOLD's control variate, Ditto's
personal model, FedBN's local layers. Clients are created lazily and may be many (100,000 in a
simulation), so that state does not live on the client objects: it lives here, keyed by
``(node_id, name)``, created when a client first writes it.

The store keeps entries in memory up to ``max_memory_bytes``; past that, the least recently used
entries spill to ``.npz`` files in ``spill_dir`` (a private temporary directory by default,
removed when the store is closed or collected) and are read back when asked for. Files are
written and read without pickle.

Examples
--------
>>> import numpy as np
>>> store = ClientStateStore(max_memory_bytes=64)
>>> store.put(7, "control", {"w": np.ones(10)})       # 80 bytes: over budget, spills
>>> store.get(7, "control")["w"].sum(), store.spilled
(np.float64(10.0), 1)
>>> store.get(8, "control") is None
True
>>> store.close()
"""

from __future__ import annotations

import re
import shutil
import tempfile
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fedbus.errors import InvalidArgumentError, InvalidTypeError

__all__ = ["ClientStateStore"]

Arrays = dict[str, np.ndarray[Any, Any]]

_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


class ClientStateStore:
    """Named arrays per client, in memory up to a budget, spilled to disk beyond it.

    Parameters
    ----------
    max_memory_bytes
        Bytes of arrays kept in memory; ``None`` (the default) keeps everything in memory.
    spill_dir
        Where spilled entries go; ``None`` makes a private temporary directory the first time
        an entry spills. A given directory is used as it is and never removed.

    An entry belongs to the store once ``put``: the caller must not modify its arrays
    afterwards, and ``get`` returns read-only arrays (a writer makes its own copy).
    """

    def __init__(
        self, max_memory_bytes: int | None = None, spill_dir: str | Path | None = None
    ) -> None:
        if max_memory_bytes is not None and (
            isinstance(max_memory_bytes, bool)
            or not isinstance(max_memory_bytes, int)
            or max_memory_bytes < 0
        ):
            raise InvalidArgumentError(
                f"ClientStateStore: max_memory_bytes must be an int >= 0 or None, "
                f"got {max_memory_bytes!r}"
            )
        self.max_memory_bytes = max_memory_bytes
        self._spill_dir = None if spill_dir is None else Path(spill_dir)
        self._own_dir: Path | None = None
        self._cleanup: weakref.finalize[Any, Any] | None = None
        self._memory: OrderedDict[tuple[int, str], Arrays] = OrderedDict()
        self._on_disk: set[tuple[int, str]] = set()
        self._names: dict[int, set[str]] = {}  # entry names per client
        self.memory_bytes = 0

    @property
    def spilled(self) -> int:
        """Entries currently on disk."""
        return len(self._on_disk)

    def __len__(self) -> int:
        return len(self._memory) + len(self._on_disk)

    def __contains__(self, key: object) -> bool:
        return key in self._memory or key in self._on_disk

    def get(self, node_id: int, name: str) -> Arrays | None:
        """The arrays stored for ``(node_id, name)``, or None if the client has none yet."""
        key = (node_id, name)
        arrays = self._memory.get(key)
        if arrays is not None:
            self._memory.move_to_end(key)
            return arrays
        if key not in self._on_disk:
            return None
        arrays = self._read(key)
        self._on_disk.discard(key)
        self._path(key).unlink(missing_ok=True)
        self._keep(key, arrays)
        return arrays

    def node_ids(self) -> list[int]:
        """The clients that have entries, in order."""
        return sorted(node for node, names in self._names.items() if names)

    def entries(self, node_id: int) -> dict[str, Arrays]:
        """Every entry of one client, by name (empty if it has none)."""
        names = self._names.get(_node_id(node_id), ())
        found = {name: self.get(node_id, name) for name in sorted(names)}
        return {name: arrays for name, arrays in found.items() if arrays is not None}

    def replace_entries(
        self, node_id: int, entries: Mapping[str, Mapping[str, np.ndarray[Any, Any]]]
    ) -> None:
        """Make ``entries`` all of one client's entries: others it had are removed."""
        node_id = _node_id(node_id)
        for name in set(self._names.get(node_id, ())) - set(entries):
            self._drop((node_id, name))
        for name, arrays in entries.items():
            self.put(node_id, name, arrays)

    def put(self, node_id: int, name: str, arrays: Mapping[str, np.ndarray[Any, Any]]) -> None:
        """Store ``arrays`` for ``(node_id, name)``, replacing what was there."""
        key = (_node_id(node_id), _entry_name(name))
        stored: Arrays = {}
        for array_name, value in arrays.items():
            if not isinstance(value, np.ndarray):
                raise InvalidTypeError(
                    f"ClientStateStore.put: {array_name!r} must be a numpy.ndarray, "
                    f"got {type(value).__name__}"
                )
            if value.dtype.hasobject:
                raise InvalidTypeError(f"ClientStateStore.put: {array_name!r} holds objects")
            view = value.view()
            view.flags.writeable = False
            stored[str(array_name)] = view
        self._drop(key)
        self._keep(key, stored)
        self._names.setdefault(key[0], set()).add(key[1])

    def close(self) -> None:
        """Forget every entry and remove the private spill directory, if one was made."""
        self._memory.clear()
        for key in list(self._on_disk):
            self._path(key).unlink(missing_ok=True)
        self._on_disk.clear()
        self._names.clear()
        self.memory_bytes = 0
        if self._cleanup is not None:
            self._cleanup()

    # -- internals ------------------------------------------------------------------------------
    def _keep(self, key: tuple[int, str], arrays: Arrays) -> None:
        self._memory[key] = arrays
        self.memory_bytes += _nbytes(arrays)
        if self.max_memory_bytes is None:
            return
        while self.memory_bytes > self.max_memory_bytes and self._memory:
            old_key, old = self._memory.popitem(last=False)
            self.memory_bytes -= _nbytes(old)
            self._write(old_key, old)

    def _drop(self, key: tuple[int, str]) -> None:
        names = self._names.get(key[0])
        if names is not None:
            names.discard(key[1])
            if not names:
                del self._names[key[0]]
        old = self._memory.pop(key, None)
        if old is not None:
            self.memory_bytes -= _nbytes(old)
        if key in self._on_disk:
            self._on_disk.discard(key)
            self._path(key).unlink(missing_ok=True)

    def _directory(self) -> Path:
        if self._spill_dir is not None:
            self._spill_dir.mkdir(parents=True, exist_ok=True)
            return self._spill_dir
        if self._own_dir is None:
            self._own_dir = Path(tempfile.mkdtemp(prefix="fedbus-state-"))
            self._cleanup = weakref.finalize(self, shutil.rmtree, self._own_dir, True)
        return self._own_dir

    def _path(self, key: tuple[int, str]) -> Path:
        return self._directory() / f"{key[0]}.{key[1]}.npz"

    def _write(self, key: tuple[int, str], arrays: Arrays) -> None:
        names = np.array(list(arrays), dtype=np.str_)
        with self._path(key).open("wb") as file:
            # positional: arr_0 holds the names, arr_1.. the arrays in the same order
            np.savez(file, names, *arrays.values())
        self._on_disk.add(key)

    def _read(self, key: tuple[int, str]) -> Arrays:
        with np.load(self._path(key), allow_pickle=False) as archive:
            names = [str(name) for name in archive["arr_0"]]
            arrays = {name: archive[f"arr_{index}"] for index, name in enumerate(names, 1)}
        for value in arrays.values():
            value.flags.writeable = False
        return arrays


def _nbytes(arrays: Arrays) -> int:
    return sum(value.nbytes for value in arrays.values())


def _node_id(node_id: object) -> int:
    if isinstance(node_id, bool) or not isinstance(node_id, int | np.integer):
        raise InvalidTypeError(f"ClientStateStore: node_id must be an int, got {node_id!r}")
    return int(node_id)


def _entry_name(name: object) -> str:
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise InvalidArgumentError(
            f"ClientStateStore: entry name must be 1 to 64 characters from A-Z a-z 0-9 _ . -, "
            f"got {name!r}"
        )
    return name
