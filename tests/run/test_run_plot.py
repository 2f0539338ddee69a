"""Curves: a readable PNG of the expected size, for one run and for several."""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from fedbus.errors import InvalidArgumentError
from fedbus.run import RunDirectory, plot_runs, write_curves
from fedbus.run.plot import FIGURE_SIZE


def _fake_run(root: Path, name: str, speed: float, evaluate_every: int = 1) -> Path:
    run = RunDirectory.create(root, name, "", now=datetime(2025, 1, 1))
    simulated_time = 0.0
    for round_number in range(1, 21):
        simulated_time += 2.0 / speed
        evaluated = round_number % evaluate_every == 0
        accuracy = 0.9 * (1 - math.exp(-speed * round_number / 5))
        run.append_metrics(
            {
                "round": round_number,
                "simulated_time": simulated_time,
                "train_loss": 2.0 * math.exp(-speed * round_number / 6),
                "test_accuracy": accuracy if evaluated else None,
                "test_loss": 2.2 * math.exp(-speed * round_number / 6) if evaluated else None,
            }
        )
    return run.path


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(matplotlib.image.imread(path))


def test_one_run_gives_curves_png_in_its_directory(tmp_path: Path) -> None:
    run_dir = _fake_run(tmp_path, "solo", 1.0)
    path = write_curves(run_dir)
    assert path == run_dir / "curves.png"
    assert path.stat().st_size > 20_000
    pixels = _pixels(path)
    assert pixels.shape[:2] == (FIGURE_SIZE[1], FIGURE_SIZE[0])
    # a drawing, not a blank canvas: many pixels are neither white nor transparent
    assert (pixels[..., :3] < 0.9).any(axis=-1).mean() > 0.02


def test_two_runs_share_one_figure_with_one_colour_each(tmp_path: Path) -> None:
    first = _fake_run(tmp_path, "fast", 1.0)
    second = _fake_run(tmp_path, "slow", 0.3, evaluate_every=3)
    output = plot_runs([first, second], tmp_path / "plots" / "compare.png")
    assert output.stat().st_size > 20_000
    pixels = _pixels(output)
    assert pixels.shape[:2] == (FIGURE_SIZE[1], FIGURE_SIZE[0])
    single = _pixels(write_curves(first))
    assert not np.array_equal(single, pixels)
    # tab10's first two colours, blue and orange, both appear
    blue = np.all(np.abs(pixels[..., :3] - [0.122, 0.467, 0.706]) < 0.02, axis=-1)
    orange = np.all(np.abs(pixels[..., :3] - [1.0, 0.498, 0.055]) < 0.02, axis=-1)
    assert blue.sum() > 500
    assert orange.sum() > 500


def test_a_run_without_any_evaluation_still_plots(tmp_path: Path) -> None:
    run = RunDirectory.create(tmp_path, "quiet", "", now=datetime(2025, 1, 1))
    for round_number in (1, 2, 3):
        run.append_metrics({"round": round_number, "train_loss": 1.0 / round_number})
    assert write_curves(run.path).stat().st_size > 10_000


def test_a_directory_without_metrics_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match=r"no metrics\.jsonl"):
        plot_runs([tmp_path], tmp_path / "out.png")
    with pytest.raises(InvalidArgumentError, match="at least one run directory"):
        plot_runs([], tmp_path / "out.png")
    assert not (tmp_path / "out.png").exists()
