"""``load_npz`` refuses what is not a NumPy archive of numbers, and never suggests unpickling."""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from fedbus.data import load_npz
from fedbus.errors import InvalidArgumentError


def _text(path: Path) -> None:
    path.write_text("f0,f1,label\n0.5,1.0,0\n", encoding="utf-8")


def _npy(path: Path) -> None:
    with path.open("wb") as file:
        np.save(file, np.zeros((4, 2)))


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _pickle_bytes(path: Path) -> None:
    # what np.load would hand to pickle, were it allowed to
    path.write_bytes(b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00}\x94.")


@pytest.mark.parametrize(
    ("write", "found"),
    [
        (_text, "not a zip archive"),
        (_pickle_bytes, "not a zip archive"),
        (_npy, "a single .npy array"),
        (_empty, "an empty file"),
    ],
    ids=["text", "pickle", "npy", "empty"],
)
def test_a_file_that_is_not_an_npz_archive_is_named_with_what_a_valid_one_holds(
    tmp_path: Path, write: Callable[[Path], None], found: str
) -> None:
    path = tmp_path / "data.npz"
    write(path)
    with pytest.raises(InvalidArgumentError) as refused:
        load_npz(path)
    message = str(refused.value)
    assert message.startswith(f"{str(path)!r} is not a NumPy .npz archive ({found})")
    assert "'x' (samples x features)" in message
    assert "np.savez(file, x=features, y=labels)" in message
    assert "pickle" not in message


def test_an_archive_of_python_objects_is_refused_without_unpickling(tmp_path: Path) -> None:
    path = tmp_path / "objects.npz"
    np.savez(path, x=np.array([{"a": 1}, None], dtype=object), y=np.array([0, 1]))
    with pytest.raises(InvalidArgumentError) as refused:
        load_npz(path)
    message = str(refused.value)
    assert f"{str(path)!r}: array 'x' holds Python objects" in message
    assert "numeric array" in message
    assert "allow_pickle" not in message


def test_a_broken_zip_is_refused_with_what_a_valid_one_holds(tmp_path: Path) -> None:
    whole = tmp_path / "whole.npz"
    np.savez(whole, x=np.zeros((4, 2)), y=np.array([0, 1, 0, 1]))
    cut = tmp_path / "cut.npz"
    cut.write_bytes(whole.read_bytes()[:40])
    with pytest.raises(InvalidArgumentError, match=r"cannot read npz file .*cut\.npz.*np\.savez"):
        load_npz(cut)


def test_a_zip_without_the_arrays_names_what_it_holds(tmp_path: Path) -> None:
    path = tmp_path / "other.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "hello")
    with pytest.raises(InvalidArgumentError, match=r"no array named 'x'; .*'notes\.txt'"):
        load_npz(path)


def test_a_valid_archive_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "good.npz"
    np.savez(path, x=np.ones((4, 3)), y=np.array([0, 1, 2, 1]))
    dataset = load_npz(path)
    assert dataset.x.shape == (4, 3)
    assert dataset.num_classes == 3
