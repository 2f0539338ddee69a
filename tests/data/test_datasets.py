"""Datasets and loaders: digits, npz and csv round trips, and clear errors for bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedbus.data import ArrayDataset, load_csv, load_digits, load_npz
from fedbus.errors import InvalidArgumentError


def test_digits_shapes_types_and_range() -> None:
    dataset = load_digits()

    assert dataset.x.shape == (1797, 64)
    assert dataset.x.dtype == np.float32
    assert dataset.y.dtype == np.int64
    assert (dataset.num_classes, dataset.num_features, len(dataset)) == (10, 64, 1797)
    assert dataset.x.min() == 0.0
    assert dataset.x.max() == 1.0
    assert np.bincount(dataset.y).tolist()[:3] == [178, 182, 177]


def test_array_dataset_converts_and_checks() -> None:
    dataset = ArrayDataset(np.arange(6).reshape(3, 2), np.array([0.0, 2.0, 1.0]), num_classes=3)

    assert dataset.x.dtype == np.float32
    assert dataset.y.tolist() == [0, 2, 1]
    assert dataset.subset([2, 0]).y.tolist() == [1, 0]
    assert ArrayDataset.from_arrays(np.zeros((2, 1)), [0, 4]).num_classes == 5
    with pytest.raises(InvalidArgumentError, match=r"y: labels must lie in 0..1, found label 2"):
        ArrayDataset(np.zeros((2, 1)), np.array([0, 2]), num_classes=2)
    with pytest.raises(InvalidArgumentError, match=r"y: labels must be whole numbers"):
        ArrayDataset(np.zeros((2, 1)), np.array([0.5, 1.0]), num_classes=2)
    with pytest.raises(InvalidArgumentError, match=r"y: expected 2 labels"):
        ArrayDataset(np.zeros((2, 1)), np.array([0]), num_classes=2)
    with pytest.raises(InvalidArgumentError, match=r"x: expected a 2-D array"):
        ArrayDataset(np.zeros(2), np.array([0, 1]), num_classes=2)
    with pytest.raises(InvalidArgumentError, match=r"x: features must be finite"):
        ArrayDataset(np.array([[np.nan], [0.0]]), np.array([0, 1]), num_classes=2)


def test_npz_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 4)), rng.integers(0, 3, size=30)
    np.savez(tmp_path / "data.npz", features=x, labels=y)

    dataset = load_npz(tmp_path / "data.npz", x_key="features", y_key="labels", num_classes=4)

    np.testing.assert_array_equal(dataset.x, x.astype(np.float32))
    np.testing.assert_array_equal(dataset.y, y)
    assert dataset.num_classes == 4


def test_npz_errors_are_clear(tmp_path: Path) -> None:
    np.savez(tmp_path / "data.npz", x=np.zeros((2, 2)), labels=np.array([0, 1]))
    np.savez(tmp_path / "objects.npz", x=np.array([{"a": 1}, None], dtype=object), y=[0, 1])

    with pytest.raises(InvalidArgumentError, match=r"no array named 'y'; .*\['labels', 'x'\]"):
        load_npz(tmp_path / "data.npz")
    # Object arrays would need pickle: refused, never loaded.
    with pytest.raises(InvalidArgumentError, match=r"cannot read npz file"):
        load_npz(tmp_path / "objects.npz")
    with pytest.raises(InvalidArgumentError, match=r"cannot read npz file .*missing.npz"):
        load_npz(tmp_path / "missing.npz")


def test_csv_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("f0,target,f1\n0.5,1,2\n-1e-3, 0 ,4.25\n\n3,2,0\n")

    dataset = load_csv(path, label_column="target")

    np.testing.assert_allclose(dataset.x, [[0.5, 2.0], [-1e-3, 4.25], [3.0, 0.0]])
    assert dataset.y.tolist() == [1, 0, 2]
    assert dataset.num_classes == 3


def test_csv_errors_name_the_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"

    path.write_text("a,b\n1,2\n")
    with pytest.raises(InvalidArgumentError, match=r"no label column 'label'; .*\['a', 'b'\]"):
        load_csv(path)
    path.write_text("a,label\n1,0\n2,cat\n")
    with pytest.raises(InvalidArgumentError, match=r"line 3, column 'label': .*got 'cat'"):
        load_csv(path)
    path.write_text("a,label\n1,0\nnan,1\n")
    with pytest.raises(InvalidArgumentError, match=r"line 3, column 'a': expected a finite"):
        load_csv(path)
    path.write_text("a,label\n1,0,7\n")
    with pytest.raises(InvalidArgumentError, match=r"line 2: expected 2 fields, got 3"):
        load_csv(path)
    path.write_text("a,label\n1,0.5\n")
    with pytest.raises(InvalidArgumentError, match=r"labels must be whole numbers"):
        load_csv(path)
    path.write_text("")
    with pytest.raises(InvalidArgumentError, match=r"empty file"):
        load_csv(path)
