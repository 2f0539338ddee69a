"""LEAF's benchmarks, read from the JSON files LEAF's own scripts write: one client per user.

LEAF (Caldas et al., 2018) gives each federated task natural clients: a FEMNIST writer, a
Shakespeare speaking role, a Sent140 Twitter user, a CelebA celebrity. Its ``preprocess.sh``
writes a task's data directory (``data/<task>/data``) with ``train/`` and ``test/`` folders of
JSON files ``{"users": [...], "num_samples": [...], "user_data": {user: {"x": [...], "y":
[...]}}}``, each user's samples split between the two (``-t sample``). ``LeafDataset`` reads such
a directory and makes one client of each of ``num_clients`` users chosen with a seed; a client's
train and test splits are its LEAF train and test samples, and the central test set is the union
of the chosen users' test samples.

What a sample becomes, per task:

- ``femnist``: the 784 pixel values (28 x 28, 0..1) as they are; 62 classes (digits, then upper
  and lower case letters).
- ``shakespeare``: the 80 characters as ids in ``SHAKESPEARE_LETTERS`` (stored as ``float32``),
  the label the id of the next character; 80 classes.
- ``sent140``: the tweet's lower-cased words counted in ``SENT140_BUCKETS`` buckets by a CRC-32
  hash, so clients need no shared vocabulary; 2 classes (1 = positive).
- ``celeba``: the image, read from ``raw/img_align_celeba/`` when a client's data is first asked
  for, resized to a square, grayscale or RGB (channel first), scaled to 0..1; 2 classes
  (1 = smiling).

Every file is checked before a run starts (structure, counts, every sample's shape and label);
a problem is reported with the file and user. Only the chosen users' samples are kept: a file
holding one is read a second time when its data is first needed.

Examples
--------
>>> import json, pathlib, tempfile
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> for split, pixel in (("train", 0.5), ("test", 1.0)):
...     (root / split).mkdir()
...     users = {"w1": {"x": [[pixel] * 784], "y": [7]}, "w2": {"x": [[0.0] * 784], "y": [61]}}
...     document = {"users": ["w1", "w2"], "num_samples": [1, 1], "user_data": users}
...     _ = (root / split / "part.json").write_text(json.dumps(document))
>>> data = LeafDataset(root, "femnist", num_clients=2)
>>> data.users, data.num_features, data.num_classes
(('w1', 'w2'), 784, 62)
>>> local = data.client(0)
>>> float(local.x_train[0, 0]), local.y_train.tolist(), local.y_test.tolist()
(0.5, [7], [7])
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedbus.data.base import ClientData, FederatedDataset, check_seed
from fedbus.data.leaf_tasks import (
    IMAGE_DIRECTORY,
    LEAF_TASKS,
    SENT140_BUCKETS,
    SHAKESPEARE_LETTERS,
    CelebATask,
    LeafTask,
    describe,
    make_task,
)
from fedbus.data.registry import register_dataset
from fedbus.errors import ConfigError, InvalidArgumentError
from fedbus.plugins import Settings

__all__ = [
    "IMAGE_DIRECTORY",
    "LEAF_TASKS",
    "MAX_JSON_BYTES",
    "SENT140_BUCKETS",
    "SHAKESPEARE_LETTERS",
    "LeafDataset",
]

#: Largest JSON file read. LEAF's largest files (full Shakespeare, Sent140) are a few hundred
#: MB, and parsing takes several times a file's size in memory.
MAX_JSON_BYTES = 2**30

# Decoded CelebA clients kept, so a client sampled again is not read from disk again.
_IMAGE_CACHE_CLIENTS = 16


@dataclass(frozen=True, slots=True)
class _Samples:
    """One user's samples in one split: ``x`` in the task's compact form, ``y`` as int64."""

    x: Any
    y: NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class _FileStamp:
    """A JSON file as it was checked, to notice if it changes before it is read again."""

    path: Path
    size: int
    modified_ns: int


class LeafDataset(FederatedDataset):
    """A LEAF task's data directory, one client per chosen user.

    Client ``i`` is user ``users[i]``: ``num_clients`` users chosen with ``seed`` from every
    user in ``train/``, in sorted order of their names (so the choice does not depend on how
    the users are spread over files). Its train and test splits are that user's LEAF train and
    test samples, in file order; ``client(i)`` gives equal arrays on every call.

    Parameters
    ----------
    directory
        LEAF's ``data/<task>/data``: ``train/`` and ``test/`` with ``*.json`` files (and
        ``raw/img_align_celeba/`` for CelebA).
    task
        One of ``LEAF_TASKS``.
    num_clients
        Users to choose, at most as many as there are.
    seed
        Seed of the choice.
    image_size, grayscale
        CelebA only: images are resized to ``image_size`` square, one grey or three colour
        channels.

    Raises
    ------
    InvalidArgumentError
        A folder or file is missing or is not LEAF's format, a sample does not fit the task, a
        user is not in both ``train/`` and ``test/``, or there are fewer users than
        ``num_clients``; the message names the file and user.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        task: str,
        num_clients: int,
        seed: int = 0,
        *,
        image_size: int = 28,
        grayscale: bool = True,
    ) -> None:
        self.directory = Path(directory)
        self._task = make_task(task, self.directory, image_size, grayscale)
        super().__init__(num_clients, self._task.num_features, self._task.num_classes)
        self.task = task
        self._files: list[_FileStamp] = []
        train = self._index_split("train")
        test = self._index_split("test")
        _check_same_users(train, test, self.directory)
        self.users = _choose_users(
            sorted(train), self.num_clients, check_seed(seed), self.directory
        )
        self._train_file = {user: train[user] for user in self.users}
        self._test_file = {user: test[user] for user in self.users}
        self._train: dict[str, _Samples] = {}
        self._test: dict[str, _Samples] = {}
        self._recent: OrderedDict[int, ClientData] = OrderedDict()
        self._cache_clients = 0
        if isinstance(self._task, CelebATask):
            self._check_images(self._task)
            self._cache_clients = _IMAGE_CACHE_CLIENTS

    def client(self, client_index: int) -> ClientData:
        """The LEAF train and test samples of user ``users[client_index]`` (fresh copies)."""
        index = self.check_client_index(client_index)
        local = self._recent.pop(index, None)
        if local is None:
            train, test = self._samples(self.users[index])
            features = self._task.features
            local = ClientData(features(train.x), train.y, features(test.x), test.y)
        if self._cache_clients:  # most recently used last
            self._recent[index] = local
            if len(self._recent) > self._cache_clients:
                self._recent.popitem(last=False)
        return ClientData(
            local.x_train.copy(), local.y_train.copy(), local.x_test.copy(), local.y_test.copy()
        )

    def test_set(self) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """Every chosen user's test samples, client by client."""
        parts = [self._split(user, self._test, self._test_file) for user in self.users]
        x = [self._task.features(part.x) for part in parts]
        return np.concatenate(x), np.concatenate([part.y for part in parts])

    def _index_split(self, split: str) -> dict[str, int]:
        """``{user: file number}`` of one split, every file checked in full."""
        folder = self.directory / split
        if not folder.is_dir():
            raise InvalidArgumentError(
                f"{folder}: no such directory; expected LEAF's data directory of a task "
                "(data/<task>/data), holding train/ and test/ as LEAF's preprocess.sh writes "
                "them with -t sample"
            )
        paths = sorted(path for path in folder.glob("*.json") if path.is_file())
        if not paths:
            raise InvalidArgumentError(
                f"{folder}: no .json file; run LEAF's preprocess.sh with -t sample to write them"
            )
        owners: dict[str, int] = {}
        for path in paths:
            stat = path.stat()
            self._files.append(_FileStamp(path, stat.st_size, stat.st_mtime_ns))
            names, _ = _read_users(path, self._task, keep=None)
            for name in names:
                if name in owners:
                    raise InvalidArgumentError(
                        f"user {name!r} is listed twice in {folder}: in "
                        f"{self._files[owners[name]].path.name} and {path.name}"
                    )
                owners[name] = len(self._files) - 1
        return owners

    def _samples(self, user: str) -> tuple[_Samples, _Samples]:
        """``(train, test)`` of a chosen user, reading its files the first time."""
        train = self._split(user, self._train, self._train_file)
        return train, self._split(user, self._test, self._test_file)

    def _split(self, user: str, loaded: dict[str, _Samples], files: dict[str, int]) -> _Samples:
        """A chosen user's samples in one split, with every chosen user of the same file."""
        if user not in loaded:
            stamp = self._files[files[user]]
            _check_unchanged(stamp)
            wanted = {name for name, number in files.items() if number == files[user]}
            loaded.update(_read_users(stamp.path, self._task, keep=wanted)[1])
        return loaded[user]

    def _check_images(self, task: CelebATask) -> None:
        """Every chosen user's images exist and are images (headers only, before a run)."""
        if not task.directory.is_dir():
            raise InvalidArgumentError(
                f"{task.directory}: no such directory; LEAF's CelebA images belong in "
                f"{IMAGE_DIRECTORY} below data.path (data/celeba/data)"
            )
        for user in self.users:
            for part in self._samples(user):
                for name in part.x:
                    task.check(name)


def _read_users(
    path: Path, task: LeafTask, keep: Collection[str] | None
) -> tuple[list[str], dict[str, _Samples]]:
    """A LEAF JSON file's user names, and the samples of the users in ``keep``.

    With ``keep=None`` every user's samples are checked (and none kept).
    """
    document = _read_json(path)
    if not isinstance(document, dict):
        raise InvalidArgumentError(f"{path}: expected a JSON object, got {describe(document)}")
    missing = [key for key in ("users", "num_samples", "user_data") if key not in document]
    if missing:
        raise InvalidArgumentError(
            f"{path}: no {', '.join(missing)}; a LEAF file holds users, num_samples and user_data"
        )
    users, counts, table = document["users"], document["num_samples"], document["user_data"]
    if not isinstance(users, list) or not all(isinstance(user, str) for user in users):
        raise InvalidArgumentError(f"{path}: users must be a list of user names (strings)")
    if not isinstance(counts, list) or len(counts) != len(users):
        raise InvalidArgumentError(
            f"{path}: num_samples must be a list of one count per user ({len(users)})"
        )
    if not isinstance(table, dict):
        raise InvalidArgumentError(f"{path}: user_data must map user names to their samples")
    seen: set[str] = set()
    kept: dict[str, _Samples] = {}
    for user, count in zip(users, counts, strict=True):
        if user in seen:
            raise InvalidArgumentError(f"{path}: user {user!r} is listed twice in users")
        seen.add(user)
        x, y = _user_entry(table, user, count, path)
        if keep is None or user in keep:
            where = f"{path}: user {user!r}"
            samples = _Samples(task.samples(x, where), task.labels(y, where))
            if keep is not None:
                kept[user] = samples
    for user, entry in table.items():
        # LEAF's split_data.py leaves an empty entry for each user it dropped: ignore those.
        if user not in seen and isinstance(entry, dict) and (entry.get("x") or entry.get("y")):
            raise InvalidArgumentError(
                f"{path}: user_data holds samples of {user!r}, who is not listed in users"
            )
    return users, kept


def _user_entry(table: dict[str, Any], user: str, count: Any, path: Path) -> tuple[list[Any], ...]:
    """``(x, y)`` of one listed user, checked against each other and ``num_samples``."""
    entry = table.get(user)
    if not isinstance(entry, dict) or not isinstance(entry.get("x"), list):
        raise InvalidArgumentError(
            f"{path}: user {user!r}: user_data must give it lists x and y, got {describe(entry)}"
        )
    x, y = entry["x"], entry.get("y")
    if not isinstance(y, list):
        raise InvalidArgumentError(f"{path}: user {user!r}: y must be a list of labels")
    if len(x) != len(y):
        raise InvalidArgumentError(
            f"{path}: user {user!r}: x has {len(x)} samples but y has {len(y)} labels"
        )
    if isinstance(count, bool) or count != len(y):
        raise InvalidArgumentError(
            f"{path}: user {user!r}: num_samples says {count!r} but it has {len(y)} samples"
        )
    return x, y


class _DuplicateKeyError(Exception):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object as a dict, refusing a key given twice (json would keep the last)."""
    table = dict(pairs)
    if len(table) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKeyError(key)
            seen.add(key)
    return table


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number LEAF writes")


def _read_json(path: Path) -> Any:
    """The parsed file, refusing one over ``MAX_JSON_BYTES``, not JSON, or with a key twice."""
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise InvalidArgumentError(
                f"{path}: {size} bytes, more than the {MAX_JSON_BYTES} (1 GiB) fedbus reads from "
                "one LEAF file; LEAF's largest are a few hundred MB, so this is not one of them"
            )
        raw = path.read_bytes()
    except OSError as exc:
        raise InvalidArgumentError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        return json.loads(raw, parse_constant=_refuse_constant, object_pairs_hook=_unique_keys)
    except _DuplicateKeyError as exc:
        raise InvalidArgumentError(
            f"{path}: key {exc.args[0]!r} appears twice in one object"
        ) from exc
    except json.JSONDecodeError as exc:
        raise InvalidArgumentError(
            f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
        ) from exc
    except (ValueError, RecursionError) as exc:  # bad UTF-8, NaN, a 5,000-digit number, nesting
        raise InvalidArgumentError(f"{path}: not valid LEAF JSON ({exc})") from exc


def _check_unchanged(stamp: _FileStamp) -> None:
    try:
        stat = stamp.path.stat()
    except OSError as exc:
        raise InvalidArgumentError(f"cannot read {stamp.path}: {exc.strerror}") from exc
    if (stat.st_size, stat.st_mtime_ns) != (stamp.size, stamp.modified_ns):
        raise InvalidArgumentError(
            f"{stamp.path} changed since the run checked it; leave LEAF's files alone while a "
            "run reads them, and start it again"
        )


def _check_same_users(train: dict[str, int], test: dict[str, int], directory: Path) -> None:
    """Refuse a user found in only one of ``train/`` and ``test/``."""
    for split, other, here, there in (
        ("train", "test", train, test),
        ("test", "train", test, train),
    ):
        strays = sorted(set(here) - set(there))
        if strays:
            raise InvalidArgumentError(
                f"{directory}: user {strays[0]!r} (and {len(strays) - 1} more) is in {split}/ "
                f"but not in {other}/; fedbus needs every user in both, as LEAF's preprocess.sh "
                "writes them with -t sample (-t user puts each user in one split only)"
            )


def _choose_users(
    users: Sequence[str], num_clients: int, seed: int, directory: Path
) -> tuple[str, ...]:
    if len(users) < num_clients:
        raise InvalidArgumentError(
            f"{directory}: {len(users)} LEAF users, fewer than the {num_clients} clients asked "
            f"for; set federation.num_clients to at most {len(users)}"
        )
    picks = np.random.default_rng(seed).choice(len(users), size=num_clients, replace=False)
    return tuple(users[int(pick)] for pick in np.sort(picks))


def _leaf(settings: Settings) -> FederatedDataset:
    """``data.dataset = "leaf"``: the LEAF directory ``data.path`` of ``data.leaf_task``."""
    path, task = settings["data.path"], settings["data.leaf_task"]
    try:
        return LeafDataset(
            path,
            task,
            settings["federation.num_clients"],
            settings["federation.seed"],
            image_size=settings["data.image_size"],
            grayscale=settings["data.grayscale"],
        )
    except InvalidArgumentError as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(
            f'data.dataset = "leaf" (data.path {path!r}, data.leaf_task = "{task}"): {exc}'
        ) from exc


register_dataset("leaf", _leaf, reads_file=True)
