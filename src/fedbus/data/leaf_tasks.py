"""What each LEAF task's samples look like, and how they become features.

A LEAF JSON file gives every user ``x`` and ``y`` lists whose form depends on the task: FEMNIST's
784 pixel values, Shakespeare's 80-character strings, Sent140's tweet records, CelebA's image
file names. A ``LeafTask`` checks a user's raw lists (``samples``, ``labels``), keeps them in a
compact form, and turns them into float32 feature rows (``features``) when a client's data is
asked for. ``fedbus.data.leaf`` reads the files and makes the clients; a new LEAF task is one
``LeafTask`` subclass here and its name in ``LEAF_TASKS`` and ``make_task``.

Examples
--------
>>> task = make_task("shakespeare", Path("."), image_size=28, grayscale=True)
>>> compact = task.samples(["to be or not to be" + " " * 62], "example")
>>> task.features(compact)[0, :5].tolist(), task.labels(["t"], "example").tolist()
([72.0, 67.0, 1.0, 54.0, 57.0], [72])
"""

from __future__ import annotations

import re
import warnings
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from fedbus.data.images import image_row
from fedbus.errors import InvalidArgumentError

__all__ = [
    "IMAGE_DIRECTORY",
    "LEAF_TASKS",
    "SENT140_BUCKETS",
    "SHAKESPEARE_LETTERS",
    "CelebATask",
    "LeafTask",
    "describe",
    "make_task",
]

#: Values of ``data.leaf_task``.
LEAF_TASKS = ("femnist", "shakespeare", "sent140", "celeba")

#: LEAF's fixed Shakespeare alphabet: character ``SHAKESPEARE_LETTERS[i]`` has id ``i``.
SHAKESPEARE_LETTERS = (
    "\n !\"&'(),-.0123456789:;>?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]abcdefghijklmnopqrstuvwxyz}"
)

#: Buckets of Sent140's hashed bag of words: the number of features.
SENT140_BUCKETS = 1024

#: Where CelebA's images are, below ``data.path`` (LEAF's ``data/celeba/data/raw/...``).
IMAGE_DIRECTORY = Path("raw") / "img_align_celeba"

# CelebA's aligned faces are 178 x 218 pixels; 2**24 pixels is far above any real one, and far
# below what would exhaust memory once decoded.
_MAX_IMAGE_PIXELS = 2**24
_FEMNIST_PIXELS = 784
_SEQUENCE_LENGTH = 80
_WORDS = re.compile(r"[\w']+")
_LETTER_IDS = np.zeros(128, dtype=np.uint8)
_LETTER_IDS[np.frombuffer(SHAKESPEARE_LETTERS.encode("ascii"), dtype=np.uint8)] = np.arange(
    len(SHAKESPEARE_LETTERS), dtype=np.uint8
)
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class LeafTask(ABC):
    """What one LEAF task's x and y look like, and how a user's samples become features."""

    name = ""
    num_classes = 2
    expected_x = ""
    expected_y = ""

    def __init__(self, num_features: int) -> None:
        self.num_features = num_features

    @abstractmethod
    def samples(self, raw: list[Any], where: str) -> Any:
        """The compact form of a user's ``x``; refuses a sample of the wrong form."""

    def labels(self, raw: list[Any], where: str) -> NDArray[np.int64]:
        """A user's ``y`` as ids in ``0 .. num_classes - 1``."""
        return _integer_labels(raw, range(self.num_classes), where, self.expected_y)

    @abstractmethod
    def features(self, compact: Any) -> NDArray[np.float32]:
        """Fresh ``(n, num_features)`` float32 rows of compact samples."""

    def bad_sample(
        self, raw: list[Any], where: str, fits: Callable[[Any], bool]
    ) -> InvalidArgumentError:
        """The refusal of the first sample ``fits`` rejects (or of ``x`` as a whole)."""
        for index, sample in enumerate(raw):
            if not fits(sample):
                guess = _guess_task(sample)
                hint = (
                    f'; it looks like LEAF {guess} data: set data.leaf_task = "{guess}"'
                    if guess not in (None, self.name)
                    else ""
                )
                return InvalidArgumentError(
                    f'{where}, x[{index}]: data.leaf_task = "{self.name}" expects '
                    f"{self.expected_x}, got {describe(sample)}{hint}"
                )
        return InvalidArgumentError(f"{where}: x is not a list of {self.expected_x}")


class _Femnist(LeafTask):
    name = "femnist"
    num_classes = 62
    expected_x = "784 numbers (a 28 x 28 image)"
    expected_y = "a class in 0..61"

    def samples(self, raw: list[Any], where: str) -> NDArray[np.float32]:
        try:
            pixels = np.asarray(raw) if raw else np.empty((0, _FEMNIST_PIXELS))
        except ValueError:  # ragged rows
            pixels = np.empty(0)
        if pixels.dtype.kind not in "iuf" or pixels.shape[1:] != (_FEMNIST_PIXELS,):
            raise self.bad_sample(raw, where, _is_pixel_row)
        with np.errstate(over="ignore"):  # checked just below
            rows = pixels.astype(np.float32)
        if not np.isfinite(rows).all():
            raise InvalidArgumentError(f"{where}: x holds a number too large for a float32 pixel")
        return rows

    def features(self, compact: NDArray[np.float32]) -> NDArray[np.float32]:
        return compact.copy()


class _Shakespeare(LeafTask):
    name = "shakespeare"
    num_classes = len(SHAKESPEARE_LETTERS)
    expected_x = "a string of 80 characters"
    expected_y = "one character"

    def samples(self, raw: list[Any], where: str) -> NDArray[np.uint8]:
        def fits(text: Any) -> bool:
            return isinstance(text, str) and len(text) == _SEQUENCE_LENGTH

        if not all(fits(text) for text in raw):
            raise self.bad_sample(raw, where, fits)
        return _letter_ids("".join(raw), raw, where, "x").reshape(len(raw), _SEQUENCE_LENGTH)

    def labels(self, raw: list[Any], where: str) -> NDArray[np.int64]:
        for index, letter in enumerate(raw):
            if not isinstance(letter, str) or len(letter) != 1:
                raise InvalidArgumentError(
                    f"{where}, y[{index}]: expected one character (the next letter), "
                    f"got {describe(letter)}"
                )
        return _letter_ids("".join(raw), raw, where, "y").astype(np.int64)

    def features(self, compact: NDArray[np.uint8]) -> NDArray[np.float32]:
        return compact.astype(np.float32)


class _Sent140(LeafTask):
    name = "sent140"
    expected_x = "a tweet record [id, date, query, user, text]"
    expected_y = "0 (negative) or 1 (positive; Sentiment140's 4 is read as 1)"

    def samples(self, raw: list[Any], where: str) -> tuple[int, NDArray[np.int64]]:
        def fits(record: Any) -> bool:
            return isinstance(record, list) and len(record) == 5 and isinstance(record[4], str)

        if not all(fits(record) for record in raw):
            raise self.bad_sample(raw, where, fits)
        # One count per (row, bucket): row * SENT140_BUCKETS + bucket, kept flat and small.
        flat = [
            row * SENT140_BUCKETS + zlib.crc32(word.encode("utf-8")) % SENT140_BUCKETS
            for row, record in enumerate(raw)
            for word in _WORDS.findall(record[4].lower())
        ]
        return len(raw), np.asarray(flat, dtype=np.int64)

    def labels(self, raw: list[Any], where: str) -> NDArray[np.int64]:
        labels = _integer_labels(raw, (0, 1, 4), where, self.expected_y)
        return np.where(labels == 4, 1, labels)

    def features(self, compact: tuple[int, NDArray[np.int64]]) -> NDArray[np.float32]:
        rows, flat = compact
        counts = np.bincount(flat, minlength=rows * SENT140_BUCKETS)
        return counts.reshape(rows, SENT140_BUCKETS).astype(np.float32)


class CelebATask(LeafTask):
    name = "celeba"
    expected_x = "an image file name without a folder (such as 000001.jpg)"
    expected_y = "0 or 1 (1 = smiling)"

    def __init__(self, directory: Path, image_size: int, grayscale: bool) -> None:
        super().__init__(image_size * image_size * (1 if grayscale else 3))
        self.directory = directory / IMAGE_DIRECTORY
        self.image_size = image_size
        self.grayscale = grayscale

    def samples(self, raw: list[Any], where: str) -> tuple[str, ...]:
        if not all(_is_image_name(name) for name in raw):
            raise self.bad_sample(raw, where, _is_image_name)
        return tuple(raw)

    def features(self, compact: tuple[str, ...]) -> NDArray[np.float32]:
        rows = np.empty((len(compact), self.num_features), dtype=np.float32)
        for row, name in enumerate(compact):
            with self.open(name) as image:
                rows[row] = image_row(image, self.image_size, self.grayscale)
        return rows

    def check(self, name: str) -> None:
        """Refuse a missing file or one that is not an image (reading its header only)."""
        with self.open(name):
            pass

    @contextmanager
    def open(self, name: str) -> Iterator[Any]:
        """The image ``name``, with every failure to read it refused naming the file."""
        path = self.directory / name
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(path) as image:
                    width, height = image.size
                    if width * height > _MAX_IMAGE_PIXELS:
                        raise InvalidArgumentError(
                            f"{path}: {width} x {height} pixels, more than the "
                            f"{_MAX_IMAGE_PIXELS} fedbus reads; CelebA's images are 178 x 218"
                        )
                    yield image
        except FileNotFoundError as exc:
            raise InvalidArgumentError(
                f"{path}: image not found; LEAF's CelebA images belong in {self.directory}"
            ) from exc
        except InvalidArgumentError:
            raise
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombWarning) as exc:
            raise InvalidArgumentError(f"{path}: not a readable image ({exc})") from exc


def make_task(name: str, directory: Path, image_size: int, grayscale: bool) -> LeafTask:
    if name == "femnist":
        return _Femnist(_FEMNIST_PIXELS)
    if name == "shakespeare":
        return _Shakespeare(_SEQUENCE_LENGTH)
    if name == "sent140":
        return _Sent140(SENT140_BUCKETS)
    if name == "celeba":
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
            raise InvalidArgumentError(f"image_size: expected an int >= 1, got {image_size!r}")
        return CelebATask(directory, image_size, bool(grayscale))
    raise InvalidArgumentError(f"task: expected one of {', '.join(LEAF_TASKS)}, got {name!r}")


def _integer_labels(
    raw: list[Any], allowed: Collection[int], where: str, expected: str
) -> NDArray[np.int64]:
    """``raw`` as int64: integers in ``allowed`` (``1.0`` counts: LEAF's CelebA writes those)."""

    def fits(label: Any) -> bool:
        return (
            isinstance(label, int | float)
            and not isinstance(label, bool)
            and float(label).is_integer()
            and int(label) in allowed
        )

    for index, label in enumerate(raw):
        if not fits(label):
            raise InvalidArgumentError(f"{where}, y[{index}]: expected {expected}, got {label!r}")
    return np.asarray(raw, dtype=np.float64).astype(np.int64).reshape(-1)


def _letter_ids(text: str, raw: list[Any], where: str, name: str) -> NDArray[np.uint8]:
    """Ids in ``SHAKESPEARE_LETTERS`` of every character of ``text`` (``raw`` joined)."""
    strangers = set(text) - set(SHAKESPEARE_LETTERS)
    if strangers:
        # LEAF's own code gives such a character id -1, which no model can use: refuse it.
        index = next(i for i, item in enumerate(raw) if set(item) & strangers)
        letter = next(letter for letter in raw[index] if letter in strangers)
        raise InvalidArgumentError(
            f"{where}, {name}[{index}]: character {letter!r} is not in LEAF's 80-letter "
            "Shakespeare alphabet (fedbus.data.leaf.SHAKESPEARE_LETTERS)"
        )
    return _LETTER_IDS[np.frombuffer(text.encode("ascii"), dtype=np.uint8)]


def _is_pixel_row(sample: Any) -> bool:
    return (
        isinstance(sample, list)
        and len(sample) == _FEMNIST_PIXELS
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in sample)
    )


def _is_image_name(name: Any) -> bool:
    """An image's file name without a folder: a JSON file may not point outside the folder."""
    return (
        isinstance(name, str)
        and name.lower().endswith(_IMAGE_SUFFIXES)
        and not any(mark in name for mark in ("/", "\\", "\0"))
    )


def _guess_task(sample: Any) -> str | None:
    """The LEAF task whose x samples look like ``sample``, if any."""
    if isinstance(sample, str):
        if _is_image_name(sample):
            return "celeba"
        return "shakespeare" if len(sample) == _SEQUENCE_LENGTH else None
    if isinstance(sample, list):
        if len(sample) == 5 and isinstance(sample[4], str):
            return "sent140"
        return "femnist" if _is_pixel_row(sample) else None
    return None


def describe(value: Any) -> str:
    """A short description of a JSON value, for error messages."""
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"a string of {len(value)} characters ({shown!r})"
    if isinstance(value, list):
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
            return f"a list of {len(value)} numbers"
        return f"a list of {len(value)} items"
    if isinstance(value, dict):
        return f"an object with keys {sorted(value)[:5]}"
    return "null" if value is None else f"{type(value).__name__} {value!r}"
