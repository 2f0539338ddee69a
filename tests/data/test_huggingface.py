"""Hugging Face datasets, saved with save_to_disk by the tests, read into rows; no download."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

datasets = pytest.importorskip("datasets", reason="fedbus[data] is not installed (datasets)")

from PIL import Image  # noqa: E402

from fedbus.data.huggingface import load_huggingface  # noqa: E402
from fedbus.errors import ConfigError, InvalidArgumentError  # noqa: E402
from fedbus.run import load_config  # noqa: E402
from fedbus.run.federation import build_federation  # noqa: E402


def saved(tmp_path: Path, table: dict[str, list[Any]], features: Any = None) -> Path:
    """``table`` as a Dataset written by save_to_disk; its directory."""
    directory = tmp_path / "saved"
    datasets.Dataset.from_dict(table, features=features).save_to_disk(directory)
    return directory


def refusal(directory: Path, **options: Any) -> str:
    with pytest.raises(InvalidArgumentError) as caught:
        load_huggingface(directory, **options)
    return str(caught.value)


def test_numbers_and_fixed_length_sequences_sit_side_by_side_in_the_order_named(
    tmp_path: Path,
) -> None:
    features = datasets.Features(
        {
            "pixels": datasets.Sequence(datasets.Value("float32"), length=3),
            "age": datasets.Value("int32"),
            "grid": datasets.Array2D(shape=(2, 2), dtype="float32"),
            "label": datasets.Value("int64"),
        }
    )
    table: dict[str, list[Any]] = {
        "pixels": [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]],
        "age": [30, 40],
        "grid": [[[1, 2], [3, 4]], [[5, 6], [7, 8]]],
        "label": [2, 0],
    }
    directory = saved(tmp_path, table, features)

    data = load_huggingface(directory, feature_columns=["age", "pixels", "grid"])

    assert data.x.dtype == np.float32
    np.testing.assert_allclose(
        data.x, [[30, 0.1, 0.2, 0.3, 1, 2, 3, 4], [40, 0.4, 0.5, 0.6, 5, 6, 7, 8]], rtol=1e-6
    )
    assert data.y.tolist() == [2, 0]
    assert data.num_classes == 3  # int labels are the class ids: max + 1
    assert data.client_ids is None


def test_fixed_length_lists_and_lists_of_lists_are_flattened(tmp_path: Path) -> None:
    pair = datasets.List(datasets.Value("int32"), length=2)
    features = datasets.Features(
        {"pair": pair, "grid": datasets.List(pair, length=2), "label": datasets.Value("int64")}
    )
    table: dict[str, list[Any]] = {
        "pair": [[1, 2], [3, 4]],
        "grid": [[[5, 6], [7, 8]], [[9, 0], [1, 2]]],
        "label": [0, 1],
    }

    data = load_huggingface(saved(tmp_path, table, features))

    assert data.x.tolist() == [[1, 2, 5, 6, 7, 8], [3, 4, 9, 0, 1, 2]]


def test_every_other_column_is_a_feature_when_none_are_named(tmp_path: Path) -> None:
    directory = saved(tmp_path, {"b": [1.0, 2.0], "label": [0, 1], "a": [3.0, 4.0]})

    assert load_huggingface(directory).x.tolist() == [[1.0, 3.0], [2.0, 4.0]]


def test_sequences_whose_length_the_type_leaves_open_are_read_from_the_rows(
    tmp_path: Path,
) -> None:
    directory = saved(tmp_path, {"signal": [[1.0, 2.0], [3.0, 4.0]], "label": [0, 1]})

    assert load_huggingface(directory).x.tolist() == [[1.0, 2.0], [3.0, 4.0]]


def test_ragged_sequences_are_refused_naming_the_row(tmp_path: Path) -> None:
    directory = saved(tmp_path, {"signal": [[1.0, 2.0], [3.0]], "label": [0, 1]})

    message = refusal(directory)

    assert "column 'signal', row 1" in message
    assert "pad or truncate" in message


@pytest.mark.parametrize(
    ("labels", "ids", "classes"),
    [
        (["cat", "dog", "cat", "bird"], [1, 2, 1, 0], 3),  # strings: ids in sorted order
        ([0, 0, 0, 0], [0, 0, 0, 0], 2),  # at least two classes
        ([3, 1, 0, 1], [3, 1, 0, 1], 4),
    ],
)
def test_string_and_int_labels_become_class_ids(
    tmp_path: Path, labels: list[Any], ids: list[int], classes: int
) -> None:
    directory = saved(tmp_path, {"x": [1.0, 2.0, 3.0, 4.0], "label": labels})

    data = load_huggingface(directory)

    assert data.y.tolist() == ids
    assert data.num_classes == classes


def test_a_class_label_gives_its_ids_and_its_number_of_names(tmp_path: Path) -> None:
    features = datasets.Features(
        {"x": datasets.Value("float32"), "label": datasets.ClassLabel(names=["a", "b", "c", "d"])}
    )
    directory = saved(tmp_path, {"x": [1.0, 2.0], "label": [0, 2]}, features)

    data = load_huggingface(directory)

    assert data.y.tolist() == [0, 2]
    assert data.num_classes == 4


def test_unlabelled_rows_of_a_class_label_are_refused(tmp_path: Path) -> None:
    features = datasets.Features(
        {"x": datasets.Value("float32"), "label": datasets.ClassLabel(names=["a", "b"])}
    )
    directory = saved(tmp_path, {"x": [1.0, 2.0], "label": [0, -1]}, features)

    assert "1 rows without a label (-1)" in refusal(directory)


def test_class_label_ids_beyond_its_names_are_refused(tmp_path: Path) -> None:
    # cast_column does not check the ids against the names, so such a column can be saved.
    table = datasets.Dataset.from_dict({"x": [1.0, 2.0], "label": [0, 5]})
    directory = tmp_path / "saved"
    table.cast_column("label", datasets.ClassLabel(names=["a", "b"])).save_to_disk(directory)

    message = refusal(directory)

    assert "label column 'label' has label 5, but its ClassLabel has 2 names" in message


@pytest.mark.parametrize(
    ("labels", "words"),
    [
        ([0.5, 1.0], ["holds Value(float64) values", "cast_column"]),
        ([0, -2], ["class ids start at 0"]),
        ([0, None], ["1 missing values", "every row needs a label"]),
    ],
)
def test_labels_that_are_not_class_ids_are_refused(
    tmp_path: Path, labels: list[Any], words: list[str]
) -> None:
    message = refusal(saved(tmp_path, {"x": [1.0, 2.0], "label": labels}))

    assert "label column 'label'" in message
    for word in words:
        assert word in message


def test_a_text_feature_is_refused_with_what_to_do_instead(tmp_path: Path) -> None:
    directory = saved(tmp_path, {"review": ["good", "bad"], "label": [1, 0]})

    message = refusal(directory)

    assert "column 'review' holds text" in message
    assert 'data.dataset = "text"' in message


def test_a_missing_column_is_refused_listing_the_columns_there_are(tmp_path: Path) -> None:
    directory = saved(tmp_path, {"x": [1.0, 2.0], "target": [0, 1]})

    message = refusal(directory)
    assert "no label column 'label'" in message
    assert "['x', 'target']" in message

    message = refusal(directory, label_column="target", feature_columns=["x", "y"])
    assert "no feature column 'y'" in message

    assert "no client column 'user'" in refusal(
        directory, label_column="target", client_column="user"
    )


@pytest.mark.parametrize("columns", [["x", "x"], ["x", "label"]])
def test_a_feature_column_named_twice_or_as_the_label_is_refused(
    tmp_path: Path, columns: list[str]
) -> None:
    directory = saved(tmp_path, {"x": [1.0, 2.0], "label": [0, 1]})

    assert "named twice or is the label" in refusal(directory, feature_columns=columns)


def test_only_a_label_column_is_refused(tmp_path: Path) -> None:
    directory = saved(tmp_path, {"label": [0, 1]})

    assert "no feature column besides the label" in refusal(directory)


@pytest.mark.parametrize("bad", [None, float("nan"), float("inf")])
def test_missing_and_non_finite_features_are_refused_naming_the_row(
    tmp_path: Path, bad: float | None
) -> None:
    directory = saved(tmp_path, {"x": [1.0, 2.0, bad], "label": [0, 1, 0]})

    message = refusal(directory)

    assert "column 'x', row 2" in message
    assert "missing value, NaN or infinity" in message


def test_an_empty_dataset_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    features = datasets.Features({"x": datasets.Value("float32"), "label": datasets.Value("int64")})
    empty = datasets.Dataset.from_dict({"x": [], "label": []}, features=features)
    # Saved, the library cannot read it back; from the hub, it arrives with no rows.
    assert "cannot read it" in refusal(saved(tmp_path, {"x": [], "label": []}, features))
    monkeypatch.setattr(datasets, "load_dataset", lambda name, split: empty)

    with pytest.raises(InvalidArgumentError, match="has no rows"):
        load_huggingface(name="user/empty")


def test_a_split_of_a_saved_dataset_dict_is_chosen_by_name(tmp_path: Path) -> None:
    directory = tmp_path / "dict"
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"x": [1.0, 2.0], "label": [0, 1]}),
            "test": datasets.Dataset.from_dict({"x": [9.0], "label": [1]}),
        }
    ).save_to_disk(directory)

    assert load_huggingface(directory).x.tolist() == [[1.0], [2.0]]
    assert load_huggingface(directory, split="test").x.tolist() == [[9.0]]
    message = refusal(directory, split="validation")
    assert "no split 'validation' (data.hf_split)" in message
    assert "['test', 'train']" in message


def test_a_directory_that_is_not_a_saved_dataset_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a dataset", encoding="utf-8")

    assert "cannot read it as a dataset written by Dataset.save_to_disk" in refusal(tmp_path)
    assert "found a file" in refusal(tmp_path / "notes.txt")
    assert "found nothing there" in refusal(tmp_path / "missing")


def test_image_columns_become_grey_or_rgb_pixels_in_0_1_channel_first(tmp_path: Path) -> None:
    images = [Image.new("RGB", (10, 6), (255, 0, 51)), Image.new("L", (3, 3), 0)]
    features = datasets.Features({"picture": datasets.Image(), "label": datasets.Value("int64")})
    directory = saved(tmp_path, {"picture": images, "label": [1, 0]}, features)

    grey = load_huggingface(directory, image_size=4)
    rgb = load_huggingface(directory, image_size=4, grayscale=False)

    assert grey.x.shape == (2, 16)
    assert rgb.x.shape == (2, 48)
    assert 0 <= grey.x.min() <= grey.x.max() <= 1
    np.testing.assert_allclose(rgb.x[0, :16], 1.0)  # the red plane comes first
    np.testing.assert_allclose(rgb.x[0, 16:32], 0.0)
    np.testing.assert_allclose(rgb.x[0, 32:], 51 / 255, rtol=1e-6)
    np.testing.assert_allclose(rgb.x[1], 0.0)


def test_images_are_read_whatever_format_the_dataset_was_saved_with(tmp_path: Path) -> None:
    features = datasets.Features({"picture": datasets.Image(), "label": datasets.Value("int64")})
    table = {"picture": [Image.new("L", (4, 4), 255), Image.new("L", (4, 4), 0)], "label": [1, 0]}
    directory = tmp_path / "saved"
    datasets.Dataset.from_dict(table, features=features).with_format("arrow").save_to_disk(
        directory
    )

    assert load_huggingface(directory, image_size=2).x.tolist() == [[1.0] * 4, [0.0] * 4]


def test_labels_are_checked_before_any_image_is_decoded(tmp_path: Path) -> None:
    features = datasets.Features(
        {"picture": datasets.Image(decode=False), "label": datasets.Value("float64")}
    )
    pictures = [{"bytes": b"\x89PNG not really", "path": None}]
    directory = saved(tmp_path, {"picture": pictures, "label": [0.5]}, features)

    message = refusal(directory)

    assert "label column 'label' holds Value(float64) values" in message


def test_an_image_pillow_cannot_read_is_refused_naming_the_row(tmp_path: Path) -> None:
    features = datasets.Features(
        {"picture": datasets.Image(decode=False), "label": datasets.Value("int64")}
    )
    pictures = [{"bytes": b"\x89PNG not really", "path": None}]
    directory = saved(tmp_path, {"picture": pictures, "label": [0]}, features)

    message = refusal(directory)

    assert "column 'picture', row 0" in message
    assert "Pillow cannot read this image" in message


def test_a_client_column_gives_each_row_its_client(tmp_path: Path) -> None:
    table: dict[str, list[Any]] = {
        "x": [1.0, 2.0, 3.0, 4.0],
        "label": [0, 1, 0, 1],
        "user": ["zoe", "al", "zoe", "bo"],
    }
    directory = saved(tmp_path, table)

    data = load_huggingface(directory, client_column="user")

    assert data.client_ids is not None
    assert data.client_ids.tolist() == [2, 0, 2, 1]  # al, bo, zoe in sorted order
    assert data.x.tolist() == [[1.0], [2.0], [3.0], [4.0]]  # the client column is no feature


def test_a_client_column_of_floats_is_refused(tmp_path: Path) -> None:
    directory = saved(tmp_path, {"x": [1.0, 2.0], "label": [0, 1], "user": [0.5, 1.5]})

    assert "expected ints or strings" in refusal(directory, client_column="user")


def test_the_memory_bound_is_checked_before_anything_is_read(tmp_path: Path) -> None:
    directory = saved(tmp_path, {"x": [1.0, 2.0], "y": [3.0, 4.0], "label": [0, 1]})

    message = refusal(directory, max_bytes=8)

    assert "2 rows x 2 features of float32 take 16 bytes" in message


def test_exactly_one_of_path_and_name_is_read(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="exactly one of path"):
        load_huggingface(tmp_path, name="mnist")
    with pytest.raises(InvalidArgumentError, match="exactly one of path"):
        load_huggingface()


def test_an_unreachable_hub_says_how_to_work_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("Couldn't reach 'user/set' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)

    with pytest.raises(InvalidArgumentError) as caught:
        load_huggingface(name="user/set", split="train")

    message = str(caught.value)
    assert "cannot reach the Hugging Face hub for dataset 'user/set'" in message
    assert "save_to_disk(directory) and set data.path = directory" in message


def test_a_hub_dataset_is_read_through_load_dataset(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[str, str]] = []

    def from_the_hub(name: str, split: str) -> Any:
        asked.append((name, split))
        return datasets.Dataset.from_dict({"x": [1.0, 2.0], "label": ["no", "yes"]})

    monkeypatch.setattr(datasets, "load_dataset", from_the_hub)

    data = load_huggingface(name="user/set", split="test")

    assert asked == [("user/set", "test")]
    assert data.y.tolist() == [0, 1]


RUN = [
    "data.dataset=huggingface",
    "data.partition=natural",
    "data.client_column=user",
    "data.client_test_fraction=0",
    "federation.num_clients=4",
    "federation.clients_per_round=4",
    "federation.num_rounds=2",
    "trainer.lr=0.5",
    "run.plot=false",
]


def four_users(tmp_path: Path) -> Path:
    """Two well-separated classes, 20 rows per user, four users."""
    rng = np.random.default_rng(0)
    labels = np.tile([0, 1], 40)
    x = rng.normal(size=(80, 3)) + 4.0 * labels[:, None]
    users = [f"user{row // 20}" for row in range(80)]
    table = {"x": x.tolist(), "label": labels.tolist(), "user": users}
    return saved(tmp_path, table)


def test_a_configured_run_gives_one_client_per_user_and_learns(tmp_path: Path) -> None:
    directory = four_users(tmp_path)
    config = load_config(None, [*RUN, f"data.path={directory}"])

    federation = build_federation(config)
    federation.simulation.run()

    assert federation.server.finished, federation.server.failure
    assert federation.dataset.num_features == 3
    accuracy = federation.server.history[-1].test_accuracy
    assert accuracy is not None
    assert accuracy > 0.9


def test_configuration_mistakes_are_refused_before_the_run(tmp_path: Path) -> None:
    directory = four_users(tmp_path)

    with pytest.raises(ConfigError, match=re.escape("reads exactly one of data.path")):
        build_federation(load_config(None, [*RUN, f"data.path={directory}", "data.hf_name=a/b"]))
    with pytest.raises(ConfigError, match=re.escape("neither is set")):
        build_federation(load_config(None, RUN))
    with pytest.raises(ConfigError, match=re.escape("no label column 'target'")):
        build_federation(
            load_config(None, [*RUN, f"data.path={directory}", "data.label_column=target"])
        )
