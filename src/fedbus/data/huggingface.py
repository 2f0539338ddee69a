"""Hugging Face datasets as numeric rows: a dataset saved to disk, or one on the hub.

``data.dataset = "huggingface"`` reads, with the ``datasets`` library (``pip install
'fedbus[data]'``), either

- ``data.path``: a directory written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``
  (of a ``DatasetDict``, ``data.hf_split`` picks the split), or
- ``data.hf_name``: a hub dataset, ``datasets.load_dataset(hf_name, split=hf_split)``, which needs
  the hub (and access to the dataset, for a gated one). Where a run cannot reach it, save the
  dataset once with ``save_to_disk`` and give its directory as ``data.path``.

One column is the label (``data.label_column``): a ``ClassLabel`` gives its ids and its number of
names; int labels are the class ids as they are (``max + 1`` classes); strings become ids in
their sorted order. The feature columns (``data.feature_columns``, or every other column) are
laid side by side in the order given, each one a number, a fixed-length numeric sequence or
array (flattened), or an image (resized to ``data.image_size``, grey or RGB per
``data.grayscale``, in 0..1, channel-first; see ``fedbus.data.images``). An optional client
column (``data.client_column``) assigns each row to a client for ``data.partition = "natural"``.

Everything a run would trip on later is refused first, naming the dataset and the column: a
missing column (with the columns there are), text, ragged sequences, NaN or missing values,
labels that are neither ints, strings nor a ``ClassLabel``, no rows, a split that is not there,
and a feature matrix above ``MAX_FEATURE_BYTES`` (8 GiB of float32).

Examples
--------
>>> import tempfile, datasets
>>> directory = tempfile.mkdtemp()
>>> table = {"height": [1.0, 2.0, 3.0], "width": [4, 5, 6], "label": ["b", "a", "b"]}
>>> datasets.Dataset.from_dict(table).save_to_disk(directory)
>>> data = load_huggingface(directory)
>>> data.x.tolist(), data.y.tolist(), data.num_classes
([[1.0, 4.0], [2.0, 5.0], [3.0, 6.0]], [1, 0, 1], 2)
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from fedbus.data.base import FederatedDataset
from fedbus.data.datasets import ArrayDataset, as_labels
from fedbus.data.federated import PartitionedDataset
from fedbus.data.images import MAX_FEATURE_BYTES, check_matrix_size, open_image
from fedbus.data.registry import partition_options, register_dataset
from fedbus.errors import ConfigError, InvalidArgumentError
from fedbus.plugins import Settings

__all__ = ["MAX_FEATURE_BYTES", "load_huggingface"]

# Rows converted at a time: bounds the Python objects (image bytes, ragged rows) alive at once.
_BATCH_ROWS = 1024
# One output unit per class: an int label column beyond this holds ids of something else.
_MAX_CLASSES = 1_000_000

_NUMERIC_DTYPES = frozenset(
    {"bool", "float16", "float32", "float64"}
    | {f"{sign}int{bits}" for sign in ("", "u") for bits in (8, 16, 32, 64)}
)
_INT_DTYPES = frozenset(dtype for dtype in _NUMERIC_DTYPES if "int" in dtype)
_TEXT_DTYPES = frozenset({"string", "large_string"})
# Feature classes by name: ``List`` replaced ``Sequence`` in datasets 4, and both are accepted.
_SEQUENCES = frozenset({"List", "LargeList", "Sequence"})
_ARRAYS = frozenset({"Array2D", "Array3D", "Array4D", "Array5D"})


@dataclass(frozen=True, slots=True)
class _FeatureColumn:
    """A column that becomes ``width`` features of every row."""

    name: str
    kind: Literal["number", "sequence", "image"]
    width: int


def load_huggingface(
    path: str | os.PathLike[str] | None = None,
    *,
    name: str | None = None,
    split: str = "train",
    label_column: str = "label",
    feature_columns: Sequence[str] = (),
    client_column: str = "",
    image_size: int = 28,
    grayscale: bool = True,
    max_bytes: int | None = None,
) -> ArrayDataset:
    """Read a Hugging Face dataset into an ``ArrayDataset``.

    Parameters
    ----------
    path
        A directory written by ``save_to_disk``; give this or ``name``.
    name
        A dataset on the Hugging Face hub, read with ``datasets.load_dataset``.
    split
        The split to read: of a hub dataset, or of a saved ``DatasetDict`` (a saved
        ``Dataset`` has one and ignores it).
    label_column
        The column of labels: ints, strings or a ``ClassLabel``.
    feature_columns
        The feature columns in order; empty: every column but the label and client columns.
    client_column
        Optional: the column naming each row's client; fills ``client_ids``.
    image_size, grayscale
        How image columns are read (``fedbus.data.images.image_row``).
    max_bytes
        Bound of the feature matrix; ``MAX_FEATURE_BYTES`` when not given.

    Raises
    ------
    ConfigError
        The ``datasets`` library is not installed.
    InvalidArgumentError
        The dataset cannot be read, or is not one the message says it should be.
    """
    if (path is None) == (name is None):
        raise InvalidArgumentError("give exactly one of path (a saved dataset) and name (hub)")
    dataset, where = _open(_import_datasets(), path, name, split)
    if len(dataset) == 0:
        raise InvalidArgumentError(f"{where}: has no rows; expected at least one labelled row")
    names = _feature_names(dataset, where, label_column, feature_columns, client_column)
    columns = [_feature_column(dataset, column, where, image_size, grayscale) for column in names]
    width = sum(column.width for column in columns)
    check_matrix_size(len(dataset), width, where, limit=max_bytes)
    # Labels and clients first: they are cheap to check, the features (images) may not be.
    y, num_classes = _labels(dataset, label_column, where)
    client_ids = _client_ids(dataset, client_column, where) if client_column else None
    x = np.empty((len(dataset), width), dtype=np.float32)
    start = 0
    for column in columns:
        block = x[:, start : start + column.width]
        _fill(block, dataset, column, where, image_size, grayscale)
        start += column.width
    return ArrayDataset(x, y, num_classes, client_ids)


def _import_datasets() -> Any:
    try:
        import datasets
    except ImportError as exc:
        raise ConfigError(
            'data.dataset = "huggingface" needs the Hugging Face datasets library: '
            "pip install 'fedbus[data]'"
        ) from exc
    return datasets


def _open(
    datasets: Any, path: str | os.PathLike[str] | None, name: str | None, split: str
) -> tuple[Any, str]:
    """The ``datasets.Dataset`` to read, and how messages name it."""
    if path is None:
        return _load_from_hub(datasets, str(name), split), f"hub dataset {name!r} (split {split!r})"
    where = f"saved dataset {os.fspath(path)!r}"
    if not os.path.isdir(path):
        found = "a file" if os.path.exists(path) else "nothing there"
        raise InvalidArgumentError(
            f"{where}: expected a directory written by Dataset.save_to_disk or "
            f"DatasetDict.save_to_disk, found {found}"
        )
    try:
        loaded = datasets.load_from_disk(os.fspath(path))
    # The library's own failures on a foreign or damaged directory (an empty saved dataset too,
    # which it cannot read back: IndexError).
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise InvalidArgumentError(
            f"{where}: the datasets library cannot read it as a dataset written by "
            f"Dataset.save_to_disk or DatasetDict.save_to_disk ({_first_line(exc)})"
        ) from exc
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise InvalidArgumentError(
                f"{where}: no split {split!r} (data.hf_split); it has the splits {sorted(loaded)}"
            )
        return loaded[split], f"{where} (split {split!r})"
    return loaded, where


def _load_from_hub(datasets: Any, name: str, split: str) -> Any:
    offline = (
        f"save it where the hub is reachable with datasets.load_dataset({name!r}, "
        f"split={split!r}).save_to_disk(directory) and set data.path = directory instead of "
        "data.hf_name"
    )
    try:
        # Datasets with loading scripts are not run: datasets >= 3 refuses them by itself.
        loaded = datasets.load_dataset(name, split=split)
    except ConnectionError as exc:
        raise InvalidArgumentError(
            f"cannot reach the Hugging Face hub for dataset {name!r} ({_first_line(exc)}); "
            f"{offline}"
        ) from exc
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InvalidArgumentError(
            f"cannot load hub dataset {name!r} (split {split!r}): {_first_line(exc)}; check the "
            f"name, the split and your access to it, or {offline}"
        ) from exc
    if not isinstance(loaded, datasets.Dataset):
        raise InvalidArgumentError(
            f"hub dataset {name!r} (split {split!r}): expected one split, got "
            f"{type(loaded).__name__}; name a single split in data.hf_split"
        )
    return loaded


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _feature_names(
    dataset: Any, where: str, label: str, features: Sequence[str], client: str
) -> list[str]:
    """The feature columns, after checking that every named column is there."""
    have = list(dataset.column_names)
    named = [("label", label)] + ([("client", client)] if client else [])
    named += [("feature", column) for column in features]
    for role, column in named:
        if column not in have:
            raise InvalidArgumentError(
                f"{where}: no {role} column {column!r}; its columns are {have}"
            )
    for column in features:
        if column in (label, client) or list(features).count(column) > 1:
            raise InvalidArgumentError(
                f"{where}: feature column {column!r} is named twice or is the label or client "
                "column; name each feature column once"
            )
    names = list(features) or [column for column in have if column not in (label, client)]
    if not names:
        raise InvalidArgumentError(
            f"{where}: no feature column besides the label {label!r}; its columns are {have}"
        )
    return names


def _text_refusal(where: str, column: str) -> InvalidArgumentError:
    return InvalidArgumentError(
        f"{where}: column {column!r} holds text, which the huggingface dataset does not read; "
        'use data.dataset = "text" for language modelling, or encode the column as numbers (a '
        "fixed-length sequence of token ids) and name the numeric columns in "
        "data.feature_columns"
    )


def _feature_column(
    dataset: Any, name: str, where: str, image_size: int, grayscale: bool
) -> _FeatureColumn:
    """How column ``name`` becomes features, from its declared type."""
    feature = dataset.features[name]
    kind = type(feature).__name__
    if kind == "Image":
        return _FeatureColumn(name, "image", image_size * image_size * (1 if grayscale else 3))
    if kind in ("Value", "ClassLabel"):
        _check_numeric(feature, name, where)
        return _FeatureColumn(name, "number", 1)
    if kind in _ARRAYS:
        _check_numeric(feature, name, where)
        shape = tuple(feature.shape)
        if None not in shape:
            return _FeatureColumn(name, "sequence", math.prod(shape))
    elif kind in _SEQUENCES:
        lengths = []
        while type(feature).__name__ in _SEQUENCES:
            lengths.append(getattr(feature, "length", -1))
            feature = feature.feature
        _check_numeric(feature, name, where)
        if all(length is not None and length >= 0 for length in lengths):
            return _FeatureColumn(name, "sequence", math.prod(lengths))
    else:
        raise _unsupported(where, name, kind)
    return _FeatureColumn(name, "sequence", _first_row_width(dataset, name, where))


def _check_numeric(feature: Any, name: str, where: str) -> None:
    kind = type(feature).__name__
    dtype = getattr(feature, "dtype", None)
    if kind == "ClassLabel" or dtype in _NUMERIC_DTYPES:
        return
    if dtype in _TEXT_DTYPES:
        raise _text_refusal(where, name)
    raise _unsupported(where, name, f"{kind}({dtype})" if dtype else kind)


def _unsupported(where: str, name: str, kind: str) -> InvalidArgumentError:
    return InvalidArgumentError(
        f"{where}: column {name!r} holds {kind} values; a feature column must hold numbers, "
        "fixed-length numeric sequences or arrays, or images: leave it out of "
        "data.feature_columns"
    )


def _first_row_width(dataset: Any, name: str, where: str) -> int:
    """Features of a column whose length its type does not fix: those of row 0."""
    value = dataset.select_columns([name]).with_format("numpy")[0][name]
    if value is None:
        raise _missing(where, name, 0)
    try:
        return int(np.asarray(value, dtype=np.float32).size)
    except (TypeError, ValueError) as exc:  # nested sequences of unequal lengths
        raise _ragged(where, name, 0, "nested sequences of unequal lengths") from exc


def _missing(where: str, name: str, row: int) -> InvalidArgumentError:
    return InvalidArgumentError(
        f"{where}: column {name!r}, row {row}: a missing value, NaN or infinity; features must "
        "be finite numbers: fill or drop those rows first"
    )


def _ragged(where: str, name: str, row: int, found: str) -> InvalidArgumentError:
    return InvalidArgumentError(
        f"{where}: column {name!r}, row {row}: {found}; every row needs the same number of "
        "values: pad or truncate the sequences first"
    )


def _fill(
    block: NDArray[np.float32],
    dataset: Any,
    column: _FeatureColumn,
    where: str,
    image_size: int,
    grayscale: bool,
) -> None:
    """Write column ``column`` of every row into ``block`` (rows x ``column.width``)."""
    source = dataset.select_columns([column.name])
    if column.kind == "image":
        # Undecoded, the column gives each image's file bytes, which open_image checks itself.
        # Python objects whatever format the dataset was saved with (arrow gives no dicts).
        undecoded = source.cast_column(column.name, _import_datasets().Image(decode=False))
        batches = undecoded.with_format(None).iter(batch_size=_BATCH_ROWS)
    else:
        batches = source.with_format("numpy").iter(batch_size=_BATCH_ROWS)
    start = 0
    for batch in batches:
        values = batch[column.name]
        stop = start + len(values)
        if column.kind == "image":
            for row, value in enumerate(values, start):
                block[row] = _image(value, column.name, where, row, image_size, grayscale)
        else:
            block[start:stop] = _numbers(values, column, where, start)
        start = stop
    bad = np.flatnonzero(~np.isfinite(block).all(axis=1))
    if len(bad):
        raise _missing(where, column.name, int(bad[0]))


def _image(
    value: Any, name: str, where: str, row: int, image_size: int, grayscale: bool
) -> NDArray[np.float32]:
    label = f"{where}: column {name!r}, row {row}"
    if value is None or not (value.get("bytes") or value.get("path")):
        raise InvalidArgumentError(f"{label}: no image; every row needs one")
    source = value["bytes"] if value.get("bytes") else value["path"]
    return open_image(source, image_size, grayscale, label)


def _numbers(values: Any, column: _FeatureColumn, where: str, start: int) -> NDArray[np.float32]:
    """One batch of a numeric column as ``(rows, column.width)`` floats."""
    batch: NDArray[Any] = np.asarray(values)
    if batch.dtype != object:
        rows = batch.reshape(len(batch), -1)
        if rows.shape[1] != column.width:
            raise _ragged(where, column.name, start, f"{rows.shape[1]} values, not {column.width}")
        return rows.astype(np.float32)
    # An object batch: sequences of unequal lengths, or missing values.
    result = np.empty((len(batch), column.width), dtype=np.float32)
    for offset, value in enumerate(batch):
        if value is None:
            raise _missing(where, column.name, start + offset)
        try:
            flat = np.asarray(value, dtype=np.float32).reshape(-1)
        except (TypeError, ValueError) as exc:
            raise _ragged(
                where, column.name, start + offset, "nested sequences of unequal lengths"
            ) from exc
        if flat.size != column.width:
            raise _ragged(
                where,
                column.name,
                start + offset,
                f"{flat.size} values where row 0 has {column.width}",
            )
        result[offset] = flat
    return result


def _column_values(dataset: Any, name: str, where: str, role: str) -> NDArray[Any]:
    """Column ``name`` as a NumPy array, refusing missing values."""
    column = dataset.select_columns([name]).with_format("arrow")[:].column(name)
    if column.null_count:
        raise InvalidArgumentError(
            f"{where}: {role} column {name!r} has {column.null_count} missing values; every "
            f"row needs a {role}"
        )
    values: NDArray[Any] = column.to_numpy(zero_copy_only=False)
    return values


def _labels(dataset: Any, name: str, where: str) -> tuple[NDArray[np.int64], int]:
    """Label ids and the number of classes."""
    feature = dataset.features[name]
    kind = type(feature).__name__
    dtype = getattr(feature, "dtype", None)
    values = _column_values(dataset, name, where, "label")
    if kind == "ClassLabel":
        if len(values) and values.min() < 0:
            raise InvalidArgumentError(
                f"{where}: label column {name!r} has {int((values < 0).sum())} rows without a "
                "label (-1); drop them, or read a split that is labelled"
            )
        if len(values) and values.max() >= feature.num_classes:
            raise InvalidArgumentError(
                f"{where}: label column {name!r} has label {int(values.max())}, but its "
                f"ClassLabel has {feature.num_classes} names (ids 0..{feature.num_classes - 1}); "
                "give the ClassLabel every class name"
            )
        return values.astype(np.int64), max(2, int(feature.num_classes))
    if kind == "Value" and dtype in _TEXT_DTYPES:
        classes, ids = np.unique(values.astype(str), return_inverse=True)
        return ids.astype(np.int64), max(2, len(classes))
    if kind == "Value" and dtype in _INT_DTYPES:
        try:
            labels = as_labels(values, f"{where}: label column {name!r}")
        except InvalidArgumentError as exc:
            raise InvalidArgumentError(f"{exc}; class ids start at 0") from exc
        largest = int(labels.max())
        if largest >= _MAX_CLASSES:
            raise InvalidArgumentError(
                f"{where}: label column {name!r} has label {largest}, so {largest + 1:,} "
                f"classes (at most {_MAX_CLASSES:,}); number the classes 0, 1, 2, ..."
            )
        return labels, max(2, largest + 1)
    found = f"{kind}({dtype})" if dtype else kind
    raise InvalidArgumentError(
        f"{where}: label column {name!r} holds {found} values; expected int class ids, strings "
        f"or a ClassLabel: cast it first, e.g. dataset.cast_column({name!r}, "
        "datasets.ClassLabel(names=[...]))"
    )


def _client_ids(dataset: Any, name: str, where: str) -> NDArray[np.int64]:
    """Client ids 0, 1, ... in the sorted order of the column's distinct values."""
    feature = dataset.features[name]
    dtype = getattr(feature, "dtype", None)
    if type(feature).__name__ != "ClassLabel" and dtype not in _INT_DTYPES | _TEXT_DTYPES:
        raise InvalidArgumentError(
            f"{where}: client column {name!r} holds {dtype or type(feature).__name__} values; "
            "expected ints or strings naming each row's client"
        )
    values = _column_values(dataset, name, where, "client")
    if dtype in _TEXT_DTYPES:
        values = values.astype(str)
    _, ids = np.unique(values, return_inverse=True)
    return ids.astype(np.int64)


def _build(settings: Settings) -> FederatedDataset:
    """``data.dataset = "huggingface"``: split by ``data.partition`` among the clients."""
    path, name = settings["data.path"], settings["data.hf_name"]
    if bool(path) == bool(name):
        given = "both are set" if path else "neither is set"
        raise ConfigError(
            'data.dataset = "huggingface" reads exactly one of data.path (a directory written by '
            f"save_to_disk) and data.hf_name (a hub dataset); {given}"
        )
    features = [column for column in settings["data.feature_columns"].split(",") if column]
    try:
        dataset = load_huggingface(
            path or None,
            name=name or None,
            split=settings["data.hf_split"],
            label_column=settings["data.label_column"],
            feature_columns=features,
            client_column=settings["data.client_column"],
            image_size=settings["data.image_size"],
            grayscale=settings["data.grayscale"],
        )
    except ConfigError:
        raise
    except InvalidArgumentError as exc:
        raise ConfigError(f'data.dataset = "huggingface": {exc}') from exc
    return PartitionedDataset.from_arrays(
        dataset, settings["federation.num_clients"], **partition_options(settings)
    )


register_dataset("huggingface", _build)
