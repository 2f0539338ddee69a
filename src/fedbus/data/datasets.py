"""In-memory datasets and their loaders.

An ``ArrayDataset`` is a feature matrix, its int labels and the number of classes. The loaders
build one from scikit-learn's bundled digits (offline), from a ``.npz`` archive (read with
``allow_pickle=False``: an archive can never run code) or from a CSV file with a header row.

Examples
--------
>>> dataset = load_digits()
>>> dataset.x.shape, dataset.num_classes
((1797, 64), 10)
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fedbus.errors import InvalidArgumentError

__all__ = ["ArrayDataset", "load_csv", "load_digits", "load_npz"]


@dataclass(frozen=True, slots=True)
class ArrayDataset:
    """Features, labels and class count of one labelled dataset.

    The constructor converts and checks: ``x`` becomes a 2-D ``float32`` array, ``y`` a 1-D
    ``int64`` array of the same length with labels in ``0 .. num_classes - 1``.

    Parameters
    ----------
    x
        Features, shape ``(num_samples, num_features)``.
    y
        Labels, shape ``(num_samples,)``; integer-valued.
    num_classes
        Number of classes (at least 2).
    client_ids
        Optional: the client each sample belongs to (ints >= 0, one per sample), read by the
        ``natural`` partition; loaders fill it from a client column.

    Examples
    --------
    >>> import numpy as np
    >>> ds = ArrayDataset(np.zeros((3, 2)), np.array([0, 1, 1]), num_classes=2)
    >>> len(ds), ds.num_features, ds.x.dtype, ds.y.dtype
    (3, 2, dtype('float32'), dtype('int64'))
    """

    x: NDArray[np.float32]
    y: NDArray[np.int64]
    num_classes: int
    client_ids: NDArray[np.int64] | None = None

    def __post_init__(self) -> None:
        x = np.asarray(self.x)
        if x.ndim != 2:
            raise InvalidArgumentError(
                f"x: expected a 2-D array (samples, features), got shape {x.shape}"
            )
        if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
            raise InvalidArgumentError(f"x: expected numeric features, got dtype {x.dtype}")
        x = x.astype(np.float32, copy=False)
        if not np.isfinite(x).all():
            raise InvalidArgumentError("x: features must be finite (found NaN or infinity)")
        y = as_labels(self.y, "y")
        if len(y) != len(x):
            raise InvalidArgumentError(
                f"y: expected {len(x)} labels (one per row of x), got {len(y)}"
            )
        num_classes = self.num_classes
        if isinstance(num_classes, bool) or not isinstance(num_classes, int | np.integer):
            raise InvalidArgumentError(f"num_classes: expected int, got {num_classes!r}")
        if num_classes < 2:
            raise InvalidArgumentError(f"num_classes: expected an int >= 2, got {num_classes}")
        if len(y) and y.max() >= num_classes:
            raise InvalidArgumentError(
                f"y: labels must lie in 0..{num_classes - 1}, found label {y.max()}"
            )
        if self.client_ids is not None:
            client_ids = as_labels(self.client_ids, "client_ids")
            if len(client_ids) != len(y):
                raise InvalidArgumentError(
                    f"client_ids: expected {len(y)} client ids (one per sample), "
                    f"got {len(client_ids)}"
                )
            object.__setattr__(self, "client_ids", client_ids)
        # frozen dataclass: the converted values replace the given ones once, here.
        object.__setattr__(self, "x", x)
        object.__setattr__(self, "y", y)
        object.__setattr__(self, "num_classes", int(num_classes))

    @classmethod
    def from_arrays(
        cls, x: ArrayLike, y: ArrayLike, num_classes: int | None = None
    ) -> ArrayDataset:
        """Build a dataset; ``num_classes`` defaults to ``max(y) + 1`` (at least 2)."""
        labels = as_labels(y, "y")
        if num_classes is None:
            num_classes = max(2, int(labels.max()) + 1 if len(labels) else 2)
        return cls(np.asarray(x), labels, num_classes)

    def __len__(self) -> int:
        return len(self.y)

    @property
    def num_features(self) -> int:
        """Width of a feature row."""
        return int(self.x.shape[1])

    def subset(self, indices: ArrayLike) -> ArrayDataset:
        """The rows at ``indices`` (a copy), with the same ``num_classes``."""
        index = np.asarray(indices, dtype=np.int64)
        client_ids = None if self.client_ids is None else self.client_ids[index]
        return ArrayDataset(self.x[index], self.y[index], self.num_classes, client_ids)


def as_labels(values: ArrayLike, name: str) -> NDArray[np.int64]:
    """Convert ``values`` to a 1-D ``int64`` label array, refusing fractional or negative labels."""
    labels = np.asarray(values)
    if labels.ndim != 1:
        raise InvalidArgumentError(
            f"{name}: expected a 1-D array of labels, got shape {labels.shape}"
        )
    if np.issubdtype(labels.dtype, np.floating):
        if not np.isfinite(labels).all() or (labels != np.round(labels)).any():
            raise InvalidArgumentError(f"{name}: labels must be whole numbers")
    elif not np.issubdtype(labels.dtype, np.integer):
        raise InvalidArgumentError(f"{name}: expected int labels, got dtype {labels.dtype}")
    if len(labels) and labels.min() < 0:
        raise InvalidArgumentError(f"{name}: labels must be >= 0, found {labels.min()}")
    result: NDArray[np.int64] = labels.astype(np.int64)
    return result


def load_digits() -> ArrayDataset:
    """scikit-learn's 8x8 handwritten digits: 1,797 samples, 64 features in [0, 1], 10 classes.

    The data ships with scikit-learn, so no network access is needed. Pixel values (0..16) are
    divided by 16.
    """
    from sklearn.datasets import load_digits as sklearn_load_digits

    bunch: Any = sklearn_load_digits()
    return ArrayDataset.from_arrays(np.asarray(bunch.data) / 16.0, bunch.target, num_classes=10)


def load_npz(
    path: str | os.PathLike[str],
    x_key: str = "x",
    y_key: str = "y",
    num_classes: int | None = None,
) -> ArrayDataset:
    """Load features and labels from a NumPy ``.npz`` archive.

    The archive is read with ``allow_pickle=False``: object arrays are refused, never unpickled.

    Parameters
    ----------
    path
        The ``.npz`` file (as written by ``np.savez``).
    x_key, y_key
        Names of the feature and label arrays inside the archive.
    num_classes
        Number of classes; ``max(y) + 1`` when not given.

    Raises
    ------
    InvalidArgumentError
        If the file cannot be read, a key is missing, or the arrays are not a valid dataset.
    """
    name = os.fspath(path)
    valid = _VALID_NPZ.format(x=x_key, y=y_key)
    with read_npz(path, valid) as archive:
        missing = [key for key in (x_key, y_key) if key not in archive]
        if missing:
            raise InvalidArgumentError(
                f"{name}: no array named {missing[0]!r}; the archive holds {sorted(archive)}"
            )
        x, y = _numeric_array(archive, x_key, name), _numeric_array(archive, y_key, name)
    return ArrayDataset.from_arrays(x, y, num_classes)


# What an archive load_npz reads holds, told to whoever gave it something else.
_VALID_NPZ = (
    "a valid one is a zip of .npy arrays holding the features as {x!r} (samples x features) "
    "and the integer labels as {y!r}, as np.savez(file, {x}=features, {y}=labels) writes"
)
# An .npz archive is a zip file (with members, or empty); a lone .npy array starts with NUMPY.
_ZIP_MAGIC: tuple[bytes, ...] = (b"PK\x03\x04", b"PK\x05\x06")
_NPY_MAGIC = b"\x93NUMPY"


@contextlib.contextmanager
def read_npz(path: str | os.PathLike[str], valid: str) -> Iterator[Mapping[str, Any]]:
    """The arrays of the ``.npz`` archive at ``path``, by name, read as they are used.

    Anything that is not a zip archive is refused from its first bytes: given anything else,
    ``np.load`` would take it for a pickle, and its refusal suggests allowing that, never the
    advice for a file from elsewhere. Arrays are read with ``allow_pickle=False``. ``valid``
    says what a valid archive holds; every ``InvalidArgumentError`` ends with it.
    """
    name = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(_NPY_MAGIC))
            if not head.startswith(_ZIP_MAGIC):
                found = "not a zip archive"
                if head == _NPY_MAGIC:
                    found = "a single .npy array"
                elif not head:
                    found = "an empty file"
                raise InvalidArgumentError(
                    f"{name!r} is not a NumPy .npz archive ({found}); {valid}"
                )
            handle.seek(0)
            with np.load(handle, allow_pickle=False) as archive:
                yield archive
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        if isinstance(exc, InvalidArgumentError):
            raise
        if isinstance(exc, OSError) and exc.strerror:  # the file itself could not be read
            raise InvalidArgumentError(f"cannot read npz file {name!r}: {exc.strerror}") from exc
        raise InvalidArgumentError(f"cannot read npz file {name!r}: {exc}; {valid}") from exc


def _numeric_array(archive: Any, key: str, name: str) -> NDArray[Any]:
    """``archive[key]``; an array of Python objects is refused, never unpickled."""
    try:
        return np.asarray(archive[key])
    except ValueError as exc:
        if "pickle" not in str(exc):
            raise
        raise InvalidArgumentError(
            f"cannot read npz file {name!r}: array {key!r} holds Python objects, which fedbus "
            "never unpickles; save it as a numeric array (e.g. np.asarray(values, dtype=float))"
        ) from exc


def load_csv(
    path: str | os.PathLike[str],
    label_column: str = "label",
    num_classes: int | None = None,
    delimiter: str = ",",
    client_column: str | None = None,
) -> ArrayDataset:
    """Load a CSV file with a header row: one column of int labels, every other column a feature.

    Parameters
    ----------
    path
        The CSV file.
    label_column
        Header name of the label column.
    num_classes
        Number of classes; ``max(label) + 1`` when not given.
    delimiter
        Field separator.
    client_column
        Header name of a column naming each sample's client (numbers or any text), or None.
        It is not a feature: its distinct values become ``client_ids`` ``0, 1, ...`` in sorted
        order (numeric order when every value is a number, else text order), which the
        ``natural`` partition reads.

    Raises
    ------
    InvalidArgumentError
        If the file cannot be read, has no ``label_column`` or ``client_column``, a row has the
        wrong number of fields, a client name is empty, or a value is not a finite number (the
        message names the line and column).

    Examples
    --------
    A file such as::

        f0,f1,label,writer
        0.5,1.0,0,alice
        0.1,0.2,1,bob

    read with ``client_column="writer"`` gives two features and ``client_ids`` ``[0, 1]``.
    """
    name = os.fspath(path)
    header, rows = _read_csv(path, delimiter)
    for column, kind in ((label_column, "label"), (client_column, "client")):
        if column is not None and column not in header:
            raise InvalidArgumentError(
                f"{name}: no {kind} column {column!r}; the columns are {header}"
            )
    client_ids = None
    if client_column is not None:
        header, rows, client_ids = _split_client_column(path, header, rows, client_column)
        if client_column == label_column or len(header) < 2:
            raise InvalidArgumentError(
                f"{name}: client column {client_column!r} leaves no label column and feature "
                f"column apart from it; the columns are {[*header, client_column]}"
            )
    values = _parse_numbers(path, header, rows)
    label_index = header.index(label_column)
    features = np.delete(values, label_index, axis=1)
    try:
        dataset = ArrayDataset.from_arrays(features, values[:, label_index], num_classes)
        return ArrayDataset(dataset.x, dataset.y, dataset.num_classes, client_ids)
    except InvalidArgumentError as exc:
        raise InvalidArgumentError(f"{name}: {exc}") from exc


def _split_client_column(
    path: str | os.PathLike[str], header: list[str], rows: list[list[str]], column: str
) -> tuple[list[str], list[list[str]], NDArray[np.int64]]:
    """Header and rows without ``column``, and the client id of every row, named in sorted order."""
    _check_row_lengths(path, header, rows)
    index = header.index(column)
    names = [row[index].strip() for row in rows]
    for row_number, client in enumerate(names):
        if not client:
            raise InvalidArgumentError(
                f"{os.fspath(path)}, line {row_number + 2}, column {column!r}: "
                "expected a client name, got an empty field"
            )
    try:
        numbers = np.array(names, dtype=np.float64)
    except ValueError:
        numbers = None
    keys: NDArray[Any] = np.array(names, dtype=str)
    if numbers is not None and np.isfinite(numbers).all():
        keys = numbers  # numeric names sort as numbers: "9" before "10"
    ids: NDArray[np.int64] = np.unique(keys, return_inverse=True)[1].astype(np.int64)
    rest = [row[:index] + row[index + 1 :] for row in rows]
    return header[:index] + header[index + 1 :], rest, ids


def _read_csv(path: str | os.PathLike[str], delimiter: str) -> tuple[list[str], list[list[str]]]:
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            lines = list(csv.reader(handle, delimiter=delimiter))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InvalidArgumentError(f"cannot read csv file {os.fspath(path)!r}: {exc}") from exc
    lines = [line for line in lines if line]
    if not lines:
        raise InvalidArgumentError(f"{os.fspath(path)}: empty file, expected a header row")
    header = [name.strip() for name in lines[0]]
    if len(header) < 2:
        raise InvalidArgumentError(
            f"{os.fspath(path)}: expected a label column and at least one feature column, "
            f"got columns {header}"
        )
    return header, lines[1:]


def _parse_numbers(
    path: str | os.PathLike[str], header: list[str], rows: list[list[str]]
) -> NDArray[np.float64]:
    """Parse every cell as a finite float, naming the first bad cell's line and column."""
    _check_row_lengths(path, header, rows)
    try:
        # NumPy parses the whole table in C; only a failure pays for the cell-by-cell scan.
        values = np.array(rows, dtype=np.float64).reshape(len(rows), len(header))
    except ValueError:
        values = np.full((len(rows), len(header)), np.nan)
    if not np.isfinite(values).all():
        _raise_for_bad_cell(path, header, rows)
    return values


def _check_row_lengths(
    path: str | os.PathLike[str], header: list[str], rows: list[list[str]]
) -> None:
    for row_number, row in enumerate(rows):
        if len(row) != len(header):
            raise InvalidArgumentError(
                f"{os.fspath(path)}, line {row_number + 2}: expected {len(header)} fields, "
                f"got {len(row)}"
            )


def _raise_for_bad_cell(
    path: str | os.PathLike[str], header: list[str], rows: list[list[str]]
) -> None:
    for row_number, row in enumerate(rows):
        for column, cell in enumerate(row):
            try:
                number = float(cell)
            except ValueError:
                number = math.nan
            if not math.isfinite(number):
                # Line numbers count the header as line 1 (blank lines are skipped).
                raise InvalidArgumentError(
                    f"{os.fspath(path)}, line {row_number + 2}, column {header[column]!r}: "
                    f"expected a finite number, got {cell!r}"
                )
