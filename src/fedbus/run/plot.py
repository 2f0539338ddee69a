"""Curves of one or more runs: accuracy and loss, against rounds and against simulated time.

The figure has four panels: test accuracy vs round, test accuracy vs simulated time, loss vs
round and loss vs simulated time (test loss solid, train loss dashed). Each run has one colour,
and the legend names it by its run directory. A differentially private run's epsilon is drawn
dotted beside its accuracy, against rounds, on a second axis at the right. Rounds without a
value (no evaluation that round) are skipped, not drawn as zero.

Drawing uses Matplotlib's Agg renderer through ``matplotlib.figure.Figure`` directly, without
``pyplot``: no display is needed, no global figure state is touched, and the backend of a
notebook that imports fedbus is left alone.

Examples
--------
>>> write_curves("runs/fedbus-20250101-120000")  # doctest: +SKIP
PosixPath('runs/fedbus-20250101-120000/curves.png')
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedbus.errors import InvalidArgumentError
from fedbus.run.outputs import read_metrics

if TYPE_CHECKING:  # Matplotlib is imported when a plot is drawn: a client process never pays it
    from matplotlib.axes import Axes

__all__ = ["CURVES_FILE", "FIGURE_SIZE", "plot_runs", "write_curves"]

CURVES_FILE = "curves.png"
FIGURE_SIZE: tuple[int, int] = (1200, 900)
"""Width and height of the picture in pixels."""

_DPI = 100
# tab10 while it lasts: ten colours readable side by side; beyond ten, evenly spaced viridis
_QUALITATIVE = "tab10"


def _series(
    records: Sequence[dict[str, Any]], x_key: str, y_key: str
) -> tuple[list[float], list[float]]:
    """The (x, y) points of records where both keys have a number."""
    xs: list[float] = []
    ys: list[float] = []
    for record in records:
        x, y = record.get(x_key), record.get(y_key)
        if isinstance(x, int | float) and isinstance(y, int | float):
            xs.append(float(x))
            ys.append(float(y))
    return xs, ys


def _colours(count: int) -> list[Any]:
    from matplotlib import colormaps

    if count <= 10:
        return [colormaps[_QUALITATIVE](index) for index in range(count)]
    return [colormaps["viridis"](index / (count - 1)) for index in range(count)]


def _draw(
    axes: Axes, records: Sequence[dict[str, Any]], x_key: str, y_key: str, **style: Any
) -> int:
    """Draw one curve; return how many points it has."""
    xs, ys = _series(records, x_key, y_key)
    if xs:
        # evaluations get a marker while they stay readable (60 points); train loss, every
        # round, is a plain dashed line
        marker = "o" if len(xs) <= 60 and y_key != "train_loss" else None
        axes.plot(xs, ys, marker=marker, markersize=3, linewidth=1.5, **style)
    return len(xs)


def _draw_run(
    panels: dict[str, Axes], records: Sequence[dict[str, Any]], colour: Any, drawn: dict[str, int]
) -> None:
    """Draw one run in every panel, counting the points each panel gets."""
    for name, axes in panels.items():
        x_key = "round" if name.endswith("_round") else "simulated_time"
        if name.startswith("accuracy"):
            drawn[name] += _draw(axes, records, x_key, "test_accuracy", color=colour)
            continue
        drawn[name] += _draw(axes, records, x_key, "test_loss", color=colour)
        dashed = {"color": colour, "linestyle": "--", "alpha": 0.8}
        drawn[name] += _draw(axes, records, x_key, "train_loss", **dashed)


def _draw_epsilon(axes: Axes, runs: Sequence[tuple[Path, list[dict[str, Any]]]]) -> None:
    """Epsilon per round, dotted, on a right-hand axis of ``axes`` (only if a run has it)."""
    private = [(index, records) for index, (_, records) in enumerate(runs)]
    private = [(i, r) for i, r in private if any("epsilon" in record for record in r)]
    if not private:
        return
    twin = axes.twinx()
    colours = _colours(len(runs))
    for index, records in private:
        _draw(twin, records, "round", "epsilon", color=colours[index], linestyle=":")
    twin.set_ylabel("epsilon (dotted)")


def _decorate(panels: dict[str, Axes], drawn: dict[str, int]) -> None:
    titles = {
        "accuracy_round": ("Test accuracy", "round", "accuracy"),
        "accuracy_time": ("Test accuracy", "simulated time (s)", "accuracy"),
        "loss_round": ("Loss (test solid, train dashed)", "round", "loss"),
        "loss_time": ("Loss (test solid, train dashed)", "simulated time (s)", "loss"),
    }
    for name, axes in panels.items():
        title, x_label, y_label = titles[name]
        axes.set_title(title)
        axes.set_xlabel(x_label)
        axes.set_ylabel(y_label)
        axes.grid(True, alpha=0.3)
        if not drawn[name]:
            axes.text(
                0.5,
                0.5,
                "no values recorded",
                ha="center",
                va="center",
                transform=axes.transAxes,
                color="grey",
            )


def plot_runs(run_dirs: Sequence[str | Path], output: str | Path) -> Path:
    """Draw the curves of one or more runs into one PNG.

    Parameters
    ----------
    run_dirs : sequence of str or Path
        Run directories, each with a ``metrics.jsonl``.
    output : str or Path
        The PNG to write (its directory is created when missing).

    Returns
    -------
    Path
        ``output``, a ``FIGURE_SIZE`` picture with four panels.

    Raises
    ------
    InvalidArgumentError
        No run directory was given, or one has no ``metrics.jsonl``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    if not run_dirs:
        raise InvalidArgumentError("plot_runs: expected at least one run directory, got none")
    runs = [(Path(run_dir), read_metrics(run_dir)) for run_dir in run_dirs]
    figure = Figure(figsize=(FIGURE_SIZE[0] / _DPI, FIGURE_SIZE[1] / _DPI), dpi=_DPI)
    FigureCanvasAgg(figure)
    grid = figure.subplots(2, 2)
    panels = {"accuracy_round": grid[0, 0], "accuracy_time": grid[0, 1]}
    panels |= {"loss_round": grid[1, 0], "loss_time": grid[1, 1]}
    drawn = dict.fromkeys(panels, 0)
    handles: list[Line2D] = []
    for (run_dir, records), colour in zip(runs, _colours(len(runs)), strict=True):
        _draw_run(panels, records, colour, drawn)
        handles.append(Line2D([], [], color=colour, linewidth=2, label=run_dir.name))
    _decorate(panels, drawn)
    _draw_epsilon(panels["accuracy_round"], runs)
    figure.legend(handles=handles, loc="lower center", ncols=min(len(handles), 3), frameon=False)
    # room under the panels for one legend row per three runs
    rows = (len(handles) + 2) // 3
    figure.subplots_adjust(
        left=0.07, right=0.98, top=0.95, bottom=0.08 + 0.03 * rows, hspace=0.35, wspace=0.2
    )
    target = Path(output)
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target, dpi=_DPI, format="png")
    return target


def write_curves(run_dir: str | Path) -> Path:
    """Draw one run's curves into ``<run_dir>/curves.png`` and return that path."""
    return plot_runs([run_dir], Path(run_dir) / CURVES_FILE)
