"""`fedbus partition`, and runs whose clients hold pathological or natural partitions."""

from __future__ import annotations

import doctest
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fedbus.cli import main
from fedbus.data import load_csv
from fedbus.run import load_config, partition_report
from fedbus.run.experiment import run_experiment
from fedbus.run.federation import configured_dataset

ROW = re.compile(r"^\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+([01]\.\d\d)$")


def table_rows(out: str) -> list[tuple[int, int, int, int, float]]:
    """(client, train, test, labels, top share) of every row of the printed table."""
    rows = []
    for line in out.splitlines():
        match = ROW.match(line)
        if match:
            client, train, test, labels, share = match.groups()
            rows.append((int(client), int(train), int(test), int(labels), float(share)))
    return rows


def assert_picture_has_content(path: Path) -> None:
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"))
    assert min(pixels.shape[:2]) > 100
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 10  # not one flat colour


def writers_csv(path: Path, seed: int = 0) -> tuple[Path, np.ndarray]:
    """A csv of 240 samples, 4 features, 3 labels and 6 writers of unequal sizes."""
    rng = np.random.default_rng(seed)
    writers = np.repeat(["ann", "bo", "cy", "dee", "eve", "flo"], [10, 20, 30, 40, 60, 80])
    labels = rng.integers(0, 3, size=len(writers))
    features = rng.normal(size=(len(writers), 4)) + labels[:, None]
    lines = ["a,b,writer,c,d,label"]
    for row, writer, label in zip(features, writers, labels, strict=True):
        lines.append(f"{row[0]:.4f},{row[1]:.4f},{writer},{row[2]:.4f},{row[3]:.4f},{label}")
    path.write_text("\n".join(lines) + "\n")
    return path, writers


def test_partition_prints_and_draws_a_pathological_split_of_digits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    picture = tmp_path / "digits.png"
    args = [
        "partition",
        "--set", "data.partition=pathological",
        "--set", "data.classes_per_client=3",
        "--set", "federation.num_clients=20",
        "--plot", str(picture),
    ]  # fmt: skip

    assert main(args) == 0

    out = capsys.readouterr().out
    rows = table_rows(out)
    assert [row[0] for row in rows] == list(range(20))
    assert all(row[3] == 3 for row in rows)  # exactly three labels each
    assert all(0.3 <= row[4] <= 0.4 for row in rows)  # about a third each
    train, test = sum(row[1] for row in rows), sum(row[2] for row in rows)
    assert train + test == 1797 - 359
    assert f"samples: {train} train + {test} test = 1438 on clients; central test set: 359" in out
    sizes = sorted(row[1] + row[2] for row in rows)
    assert f"client size (train + test): min {sizes[0]}, median" in out
    assert f"max {sizes[-1]}" in out
    assert "clients: 20, labels held: 10 of 10" in out
    assert f"wrote {picture}" in out
    assert_picture_has_content(picture)


def test_partition_of_a_csv_with_a_client_column_shows_each_writer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, writers = writers_csv(tmp_path / "writers.csv")
    picture = tmp_path / "writers.png"
    overrides = [
        "data.dataset=csv",
        f"data.path={path}",
        "data.client_column=writer",
        "data.partition=natural",
        "federation.num_clients=6",
        "federation.clients_per_round=3",
    ]

    args = ["partition", *[f"--set={item}" for item in overrides], "--plot", str(picture)]
    assert main(args) == 0

    rows = table_rows(capsys.readouterr().out)
    data = configured_dataset(load_config(None, overrides))
    test = set(data._test_indices.tolist())  # type: ignore[attr-defined]
    for client, name in enumerate(sorted(set(writers))):
        own = [i for i in np.flatnonzero(writers == name) if i not in test]
        assert rows[client][1] + rows[client][2] == len(own), name
        assert data.client_indices(client).tolist() == own  # type: ignore[attr-defined]
    assert_picture_has_content(picture)


def test_partition_of_many_clients_summarises_and_draws_the_first_hundred(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    picture = tmp_path / "many.png"
    args = ["partition", "--set", "federation.num_clients=150", "--set", "data.partition=iid"]

    assert main([*args, "--plot", str(picture)]) == 0

    out = capsys.readouterr().out
    assert "150 clients: more than 100, so their distribution instead of one row each" in out
    assert table_rows(out) == []
    for quantile in ("min", "25%", "median", "75%", "max"):
        assert re.search(rf"^\s+{quantile}(\s+\d+){{3}}\s+0\.\d\d$", out, re.MULTILINE), quantile
    # iid: 1438 samples in 150 near-equal parts of 9 or 10
    assert "client size (train + test): min 9, median 10, max 10" in out
    assert_picture_has_content(picture)


def test_partition_refuses_an_unknown_picture_format_before_building_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    picture = tmp_path / "partition.docx"
    # The csv does not exist either: the suffix is checked first.
    args = ["partition", "--set", "data.dataset=csv", "--set", f"data.path={tmp_path}/no.csv"]

    assert main([*args, "--plot", str(picture)]) == 1

    captured = capsys.readouterr()
    assert "--plot" in captured.err
    assert "'.docx' is not a picture format" in captured.err
    assert captured.out == ""
    assert list(tmp_path.iterdir()) == []


def test_partition_natural_without_client_column_says_what_to_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["partition", "--set", "data.partition=natural", "--plot", str(tmp_path / "p.png")]

    assert main(args) == 2

    assert "partition natural needs a client column: set data.client_column" in (
        capsys.readouterr().err
    )


def run_overrides(tmp_path: Path) -> list[str]:
    return [
        "federation.num_rounds=3",
        "federation.clients_per_round=4",
        "run.plot=false",
        f"run.output_dir={tmp_path}",
    ]


def test_a_federation_trains_on_pathological_clients(tmp_path: Path) -> None:
    overrides = [
        "data.partition=pathological",
        "data.classes_per_client=2",
        "federation.num_clients=10",
        *run_overrides(tmp_path),
    ]

    result = run_experiment(load_config(None, overrides), quiet=True)

    dataset = result.federation.dataset
    for client in range(10):
        data = dataset.client(client)
        assert len(np.unique(np.concatenate([data.y_train, data.y_test]))) == 2
    assert result.summary["failure"] is None
    assert result.summary["num_rounds"] == 3
    assert result.summary["final_test_accuracy"] > 0.1  # some learning across labels


def test_a_federation_trains_on_the_writers_of_a_csv(tmp_path: Path) -> None:
    path, _ = writers_csv(tmp_path / "writers.csv")
    overrides = [
        "data.dataset=csv",
        f"data.path={path}",
        "data.client_column=writer",
        "data.partition=natural",
        "federation.num_clients=4",  # of six writers: four chosen with the seed
        *run_overrides(tmp_path / "runs"),
    ]

    result = run_experiment(load_config(None, overrides), quiet=True)

    dataset = result.federation.dataset
    ids = load_csv(path, client_column="writer").client_ids
    assert ids is not None
    held = [np.unique(ids[dataset.client_indices(i)]) for i in range(4)]  # type: ignore[attr-defined]
    assert all(len(client_ids) == 1 for client_ids in held)  # one writer per client
    assert len({int(client_ids[0]) for client_ids in held}) == 4
    assert result.summary["failure"] is None
    assert result.summary["final_test_accuracy"] > 0.5  # labels shift the features by 1


def test_docstring_example_of_the_report_module() -> None:
    result = doctest.testmod(partition_report)

    assert result.attempted > 0
    assert result.failed == 0
