"""The run directory: naming, metrics lines, atomic summary and model files."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from fedbus.errors import InvalidArgumentError
from fedbus.run import Config, RunDirectory, config_to_toml, load_config, load_model, read_metrics

NOW = datetime(2025, 3, 4, 5, 6, 7)
SUMMARY = {"final_test_accuracy": 0.91, "num_rounds": 3, "simulated_time": 42.5, "wall_time": 1.5}


def _run(tmp_path: Path) -> RunDirectory:
    return RunDirectory.create(tmp_path / "runs", "exp", "a = 1\n", now=NOW)


def test_the_directory_is_named_after_the_run_and_the_time(tmp_path: Path) -> None:
    text = config_to_toml(Config())
    run = RunDirectory.create(tmp_path / "deep" / "runs", "fedavg-iid", text, now=NOW)
    assert run.path == tmp_path / "deep" / "runs" / "fedavg-iid-20250304-050607"
    assert run.path.is_dir()
    assert (run.path / "config.toml").read_text(encoding="utf-8") == text
    assert load_config(run.path / "config.toml") == Config()


def test_a_taken_name_gets_a_numbered_suffix(tmp_path: Path) -> None:
    names = [_run(tmp_path).path.name for _ in range(3)]
    assert names == ["exp-20250304-050607", "exp-20250304-050607-2", "exp-20250304-050607-3"]


def test_a_name_with_a_path_separator_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match=r"run name '\.\./x'"):
        RunDirectory.create(tmp_path, "../x", "", now=NOW)


def test_metrics_are_one_json_line_per_round_written_at_once(tmp_path: Path) -> None:
    run = _run(tmp_path)
    records: list[dict[str, object]] = [
        {"round": 1, "train_loss": 2.0, "test_accuracy": None, "bytes_up": 1024},
        {"round": 2, "train_loss": np.float32(1.5), "test_accuracy": np.float64(0.75)},
        {"round": 3, "clients_replied": np.int64(9), "custom": [1, 2], "lost": float("nan")},
    ]
    for count, record in enumerate(records, start=1):
        run.append_metrics(record)
        # readable right away, by another process, without closing anything
        assert len(run.metrics_path.read_text(encoding="utf-8").splitlines()) == count
    lines = run.metrics_path.read_text(encoding="utf-8").splitlines()
    assert json.loads(lines[0]) == records[0]
    assert read_metrics(run.path) == [
        records[0],
        {"round": 2, "train_loss": 1.5, "test_accuracy": 0.75},
        {"round": 3, "clients_replied": 9, "custom": [1, 2], "lost": None},
    ]


def test_a_last_line_cut_short_is_skipped_but_a_bad_line_is_refused(tmp_path: Path) -> None:
    run = _run(tmp_path)
    run.append_metrics({"round": 1})
    with run.metrics_path.open("a", encoding="utf-8") as file:
        file.write('{"round": 2, "train_lo')
    assert read_metrics(run.path) == [{"round": 1}]
    with run.metrics_path.open("a", encoding="utf-8") as file:
        file.write("\n")
    run.append_metrics({"round": 3})
    with pytest.raises(InvalidArgumentError, match="line 2"):
        read_metrics(run.path)


def test_reading_metrics_of_a_directory_without_them_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match=r"no metrics\.jsonl"):
        read_metrics(tmp_path)


def test_the_summary_is_written_whole(tmp_path: Path) -> None:
    run = _run(tmp_path)
    path = run.write_summary({**SUMMARY, "extra": np.float64(0.5)})
    assert path == run.path / "summary.json"
    assert json.loads(path.read_text(encoding="utf-8")) == {**SUMMARY, "extra": 0.5}
    assert run.read_summary()["final_test_accuracy"] == 0.91
    assert sorted(os.listdir(run.path)) == ["config.toml", "summary.json"]


def test_a_summary_needs_the_final_numbers(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="missing wall_time"):
        _run(tmp_path).write_summary({k: v for k, v in SUMMARY.items() if k != "wall_time"})


def test_a_failed_write_leaves_the_old_summary_and_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = _run(tmp_path)
    run.write_summary(SUMMARY)

    def disk_full(descriptor: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        run.write_summary({**SUMMARY, "final_test_accuracy": 0.1})
    assert run.read_summary() == SUMMARY
    assert sorted(os.listdir(run.path)) == ["config.toml", "summary.json"]


def test_the_model_round_trips_with_names_dtypes_and_shapes(tmp_path: Path) -> None:
    run = _run(tmp_path)
    arrays: dict[str, np.ndarray] = {
        "dense/weight": np.arange(12, dtype=np.float32).reshape(3, 4),
        "dense/bias": np.array([0.5, -1.0], dtype=np.float64),
        "file": np.array([1, 2, 3], dtype=np.int64),
        "allow_pickle": np.zeros((0,), dtype=np.float16),
    }
    assert run.save_model(arrays) == run.path / "model.npz"
    for source in (run.path, run.path / "model.npz"):
        loaded = load_model(source)
        assert list(loaded) == list(arrays)
        for name, array in arrays.items():
            assert loaded[name].dtype == array.dtype
            np.testing.assert_array_equal(loaded[name], array)


def test_objects_are_never_pickled_into_or_out_of_a_model(tmp_path: Path) -> None:
    run = _run(tmp_path)
    with pytest.raises(InvalidArgumentError, match="'bad'"):
        run.save_model({"bad": np.array([{"a": 1}], dtype=object)})
    assert not run.model_path.exists()
    hostile = tmp_path / "hostile.npz"
    np.savez(hostile, x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(InvalidArgumentError, match=r"cannot read npz file .*a model is"):
        load_model(hostile)
    with pytest.raises(InvalidArgumentError, match=r"cannot read npz file .*No such file"):
        load_model(tmp_path / "absent.npz")


def test_a_text_file_given_as_a_model_is_named_and_pickle_is_never_suggested(
    tmp_path: Path,
) -> None:
    text = tmp_path / "model.npz"
    text.write_text("not a model\n")
    with pytest.raises(InvalidArgumentError) as refused:
        load_model(text)
    assert "is not a NumPy .npz archive (not a zip archive)" in str(refused.value)
    assert "pickle" not in str(refused.value)
