"""Image folders, one subfolder per class, written by the tests with Pillow."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from fedbus.data.images import load_image_folder
from fedbus.errors import ConfigError, InvalidArgumentError
from fedbus.run import load_config
from fedbus.run.federation import build_federation


def image_folder(root: Path, classes: dict[str, list[int]], suffix: str = ".png") -> Path:
    """``root`` with a subfolder per class holding one grey square of each shade given."""
    for name, shades in classes.items():
        (root / name).mkdir(parents=True)
        for index, shade in enumerate(shades):
            Image.new("L", (6, 6), shade).save(root / name / f"{index:03d}{suffix}")
    return root


def refusal(path: Path, **options: Any) -> str:
    with pytest.raises(InvalidArgumentError) as caught:
        load_image_folder(path, **options)
    return str(caught.value)


def test_sorted_class_names_give_the_labels_and_files_come_in_sorted_order(
    tmp_path: Path,
) -> None:
    root = image_folder(tmp_path / "data", {"dog": [10, 20], "cat": [30], "emu": [40]})

    data = load_image_folder(root, image_size=4)

    assert data.y.tolist() == [0, 1, 1, 2]  # cat, dog, dog, emu
    assert data.num_classes == 3
    assert data.x.shape == (4, 16)
    np.testing.assert_allclose(data.x[:, 0], np.array([30, 10, 20, 40]) / 255, rtol=1e-6)


def test_every_format_and_mode_is_read_and_others_are_skipped(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "a" / "nested").mkdir(parents=True)
    (root / "b").mkdir()
    Image.new("RGB", (9, 5), (255, 255, 255)).save(root / "a" / "white.JPG")
    Image.new("P", (4, 4), 0).save(root / "a" / "nested" / "palette.gif")
    Image.new("RGBA", (4, 4), (0, 0, 0, 0)).save(root / "b" / "clear.png")
    Image.new("1", (4, 4), 1).save(root / "b" / "bits.bmp")
    (root / "b" / "notes.txt").write_text("not an image", encoding="utf-8")
    Image.new("L", (4, 4), 0).save(root / "b" / ".hidden.png")
    (root / "README").write_text("a file beside the classes", encoding="utf-8")

    data = load_image_folder(root, image_size=2)

    assert data.y.tolist() == [0, 0, 1, 1]
    assert data.x.shape == (4, 4)
    assert data.x.min() >= 0.0
    assert data.x.max() <= 1.0
    assert data.x[0].min() > 0.95  # the white JPEG


def test_rgb_rows_are_channel_first(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for name, colour in (("red", (255, 0, 0)), ("blue", (0, 0, 255))):
        (root / name).mkdir(parents=True)
        Image.new("RGB", (3, 3), colour).save(root / name / "a.png")

    data = load_image_folder(root, image_size=3, grayscale=False)

    assert data.x.shape == (2, 27)
    blue, red = data.x  # blue sorts first
    assert red[:9].tolist() == [1.0] * 9
    assert red[9:].tolist() == [0.0] * 18
    assert blue[18:].tolist() == [1.0] * 9


def test_16_bit_grey_pngs_are_scaled_from_their_own_range(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for name, level in (("a", 0), ("b", 30000), ("c", 65535)):
        (root / name).mkdir(parents=True)
        picture = Image.fromarray(np.full((4, 4), level, dtype=np.uint16))
        assert picture.mode == "I;16"
        picture.save(root / name / "deep.png")

    grey = load_image_folder(root, image_size=2)
    rgb = load_image_folder(root, image_size=2, grayscale=False)

    np.testing.assert_allclose(grey.x[:, 0], [0.0, 30000 / 65535, 1.0], rtol=1e-6)
    np.testing.assert_allclose(rgb.x, np.tile(grey.x, 3), rtol=1e-6)


def test_the_same_folder_gives_the_same_rows(tmp_path: Path) -> None:
    root = image_folder(tmp_path / "data", {"a": [1, 2, 3], "b": [4, 5]})

    first, second = load_image_folder(root), load_image_folder(root)

    np.testing.assert_array_equal(first.x, second.x)
    np.testing.assert_array_equal(first.y, second.y)


def test_fewer_than_two_classes_are_refused(tmp_path: Path) -> None:
    root = image_folder(tmp_path / "data", {"only": [1, 2]})

    message = refusal(root)

    assert "at least 2, found 1 (['only'])" in message


def test_a_class_folder_without_images_is_refused(tmp_path: Path) -> None:
    root = image_folder(tmp_path / "data", {"a": [1], "b": []})
    (root / "b" / "list.csv").write_text("1,2", encoding="utf-8")

    message = refusal(root)

    assert "class folder 'b' holds no image" in message


def test_a_corrupt_image_is_refused_naming_the_file(tmp_path: Path) -> None:
    root = image_folder(tmp_path / "data", {"a": [1], "b": [2]})
    (root / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")

    message = refusal(root)

    assert str(root / "b" / "broken.png") in message
    assert "Pillow cannot read this image" in message


def test_a_file_or_a_missing_path_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file.png").write_bytes(b"")

    assert "got a file" in refusal(tmp_path / "file.png")
    assert "got missing" in refusal(tmp_path / "nothing")


def test_the_memory_bound_is_checked_before_any_image_is_decoded(tmp_path: Path) -> None:
    root = image_folder(tmp_path / "data", {"a": [1], "b": [2]})

    message = refusal(root, image_size=4, max_bytes=100)

    assert "2 rows x 16 features of float32 take 128 bytes" in message


def test_an_image_above_pillows_pixel_limit_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = image_folder(tmp_path / "data", {"a": [1], "b": [2]})
    # 36 pixels per image: between one and two times the limit Pillow only warns; refused too.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20)

    assert "Pillow cannot read this image" in refusal(root)


RUN = [
    "data.dataset=images",
    "data.image_size=4",
    "data.partition=iid",
    "data.client_test_fraction=0",
    "federation.num_clients=3",
    "federation.clients_per_round=3",
    "federation.num_rounds=2",
    "trainer.lr=0.5",
    "run.plot=false",
]


def test_a_configured_run_reads_the_folder_and_learns(tmp_path: Path) -> None:
    root = image_folder(tmp_path / "data", {"dark": [0, 10, 20] * 10, "light": [235, 245] * 15})

    federation = build_federation(load_config(None, [*RUN, f"data.path={root}"]))
    federation.simulation.run()

    assert federation.server.finished, federation.server.failure
    assert federation.dataset.num_features == 16
    accuracy = federation.server.history[-1].test_accuracy
    assert accuracy == 1.0


def test_a_configured_run_on_a_bad_folder_is_refused_before_it_starts(tmp_path: Path) -> None:
    root = image_folder(tmp_path / "data", {"only": [1, 2, 3]})
    (tmp_path / "a.png").write_bytes(b"")

    with pytest.raises(ConfigError, match=re.escape("data.path: ")):
        build_federation(load_config(None, [*RUN, f"data.path={root}"]))
    with pytest.raises(ConfigError, match="got a file"):
        build_federation(load_config(None, [*RUN, f"data.path={tmp_path / 'a.png'}"]))
