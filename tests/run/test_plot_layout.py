"""The curves figure: no label runs into another panel, a legend that tells runs apart, formats."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from fedbus.cli import main
from fedbus.errors import InvalidArgumentError
from fedbus.run import RunDirectory, plot_runs
from fedbus.run.plot import check_picture_path, curves_figure, picture_suffixes, run_labels

CONFIGS = Path(__file__).parents[2] / "examples" / "configs"
TINY = [
    "-q", "--set", "federation.num_rounds=2", "--set", "federation.num_clients=6",
    "--set", "federation.clients_per_round=3", "--set", "run.plot=false",
    "--set", "run.save_model=false",
]  # fmt: skip


def private_run(root: Path, name: str = "private", config: str = "") -> Path:
    """A differentially private run whose epsilon grows to 150: wide ticks on its own axis."""
    run = RunDirectory.create(root, name, config, now=datetime(2025, 1, 1))
    for round_number in range(1, 21):
        run.append_metrics(
            {
                "round": round_number,
                "simulated_time": 2.0 * round_number,
                "train_loss": 1.0 / round_number,
                "test_accuracy": 0.5 + round_number / 50,
                "test_loss": 1.1 / round_number,
                "epsilon": 7.5 * round_number,
            }
        )
    return run.path


def test_no_axis_label_overlaps_another_panel(tmp_path: Path) -> None:
    figure = curves_figure([private_run(tmp_path)])
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    every_axes = figure.get_axes()
    assert len(every_axes) == 5  # four panels and the epsilon axis beside the first
    epsilon = [axes for axes in every_axes if axes.get_ylabel() == "epsilon (dotted)"]
    assert len(epsilon) == 1
    for axes in every_axes:
        for label in (axes.xaxis.label, axes.yaxis.label):
            if not label.get_text():
                continue
            extent = label.get_window_extent(renderer).expanded(1.0, 1.0).padded(2)
            for other in every_axes:
                if other.get_position().bounds == axes.get_position().bounds:
                    continue  # the same panel, or its twin axis
                assert not extent.overlaps(other.get_tightbbox(renderer)), (
                    f"{label.get_text()!r} overlaps the panel {other.get_title()!r}"
                )
            assert figure.bbox.contains(extent.x0, extent.y0)
            assert figure.bbox.contains(extent.x1, extent.y1)


def test_the_legend_names_what_was_run(tmp_path: Path) -> None:
    """One file run twice, once with --set strategy.name=fedavg: two different labels."""
    config = str(CONFIGS / "scaffold.toml")
    assert main(["run", config, *TINY, "--set", f"run.output_dir={tmp_path / 'a'}"]) == 0
    override = ["--set", "strategy.name=fedavg"]
    assert main(["run", config, *TINY, *override, "--set", f"run.output_dir={tmp_path / 'b'}"]) == 0
    (first,) = (tmp_path / "a").iterdir()
    (second,) = (tmp_path / "b").iterdir()
    assert first.name.startswith("scaffold-")
    assert second.name.startswith("scaffold-")
    labels = run_labels([first, second])
    assert labels == [f"scaffold  ({first.name})", f"fedavg  ({second.name})"]
    figure = curves_figure([first, second])
    assert [text.get_text() for text in figure.legends[0].get_texts()] == labels


def test_the_legend_shows_the_settings_in_which_runs_differ(tmp_path: Path) -> None:
    def config(seed: int) -> str:
        return (
            f'[run]\nname = "same"\noutput_dir = "{tmp_path}"\n[federation]\nseed = {seed}\n'
            '[trainer]\nlr = 0.1\n[strategy]\nname = "fedavg"\n'
        )

    first = private_run(tmp_path, "same", config(1))
    second = private_run(tmp_path, "same", config(2))
    bare = private_run(tmp_path, "bare")
    assert run_labels([first, second, bare]) == [
        f"fedavg, federation.seed=1  ({first.name})",
        f"fedavg, federation.seed=2  ({second.name})",
        bare.name,  # no config.toml to read: its directory names it
    ]
    assert run_labels([first]) == [f"fedavg  ({first.name})"]


def test_a_format_that_cannot_be_written_is_refused_before_reading(tmp_path: Path) -> None:
    assert {".png", ".pdf", ".svg", ".jpg", ".jpeg"} <= set(picture_suffixes())
    assert ".pgf" not in picture_suffixes()  # it needs a TeX installation
    for bad in ("out.docx", "out", "out.pgf"):
        with pytest.raises(InvalidArgumentError, match=r"end the file name with one of \.avif"):
            plot_runs([tmp_path / "no-such-run"], tmp_path / bad)
    assert check_picture_path("a/b.PDF") == Path("a/b.PDF")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("suffix", "magic"), [(".pdf", b"%PDF"), (".jpeg", b"\xff\xd8")])
def test_the_suffix_sets_the_format(tmp_path: Path, suffix: str, magic: bytes) -> None:
    output = plot_runs([private_run(tmp_path)], tmp_path / "deep" / f"curves{suffix}")
    assert output.read_bytes().startswith(magic)
