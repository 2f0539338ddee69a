"""Curves of one or more runs: accuracy and loss, against rounds and against simulated time.

The figure has four panels: test accuracy vs round, test accuracy vs simulated time, loss vs
round and loss vs simulated time (test loss solid, train loss dashed). Each run has one colour,
and the legend names it by what was run (its strategy and the settings in which the runs
differ, from each run's ``config.toml``) and by its directory. A differentially private run's
epsilon is drawn dotted beside its accuracy, against rounds, on a second axis at the right.
Rounds without a value (no evaluation that round) are skipped, not drawn as zero. The layout is
Matplotlib's constrained layout, so no label runs into the next panel.

The picture's format follows the suffix of the output: ``.png``, ``.pdf``, ``.svg``, ``.jpg``
and the others of ``picture_suffixes()``.

Drawing uses Matplotlib's Agg renderer through ``matplotlib.figure.Figure`` directly, without
``pyplot``: no display is needed, no global figure state is touched, and the backend of a
notebook that imports fedbus is left alone.

Examples
--------
>>> write_curves("runs/fedbus-20250101-120000")  # doctest: +SKIP
PosixPath('runs/fedbus-20250101-120000/curves.png')
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedbus.errors import InvalidArgumentError
from fedbus.run.outputs import CONFIG_FILE, read_metrics

if TYPE_CHECKING:  # Matplotlib is imported when a plot is drawn: a client process never pays it
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "CURVES_FILE",
    "FIGURE_SIZE",
    "check_picture_path",
    "curves_figure",
    "picture_suffixes",
    "plot_runs",
    "run_labels",
    "save_figure",
    "write_curves",
]

CURVES_FILE = "curves.png"
FIGURE_SIZE: tuple[int, int] = (1200, 900)
"""Width and height of the picture in pixels."""

_DPI = 100
# tab10 while it lasts: ten colours readable side by side; beyond ten, evenly spaced viridis
_QUALITATIVE = "tab10"
# settings that tell compared runs apart, shown in the legend; more would not fit a label
_MAX_DIFFERENCES = 3
_NOT_PICTURES = frozenset({"pgf", "raw", "rgba"})


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


def picture_suffixes() -> tuple[str, ...]:
    """The suffixes of the pictures ``plot_runs`` can write, sorted: ``('.avif', '.eps', ...)``.

    These are the formats Matplotlib writes without a display, less ``.pgf`` (it needs a TeX
    installation) and ``.raw``/``.rgba`` (bare pixel buffers, not pictures).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    formats = set(FigureCanvasAgg.get_supported_filetypes()) - _NOT_PICTURES
    return tuple(sorted(f".{name}" for name in formats))


def check_picture_path(
    output: str | Path, suffixes: Sequence[str] | None = None, *, name: str = "output"
) -> Path:
    """``output`` as a Path, if its suffix is one of ``suffixes`` (``picture_suffixes()``).

    Raises
    ------
    InvalidArgumentError
        The suffix is missing or not one that can be written; the message lists those that can,
        with ``name`` (e.g. ``--output``) naming the argument.
    """
    path = Path(output)
    allowed = tuple(suffixes) if suffixes is not None else picture_suffixes()
    if path.suffix.lower() not in allowed:
        found = f"the suffix {path.suffix!r}" if path.suffix else "no suffix"
        raise InvalidArgumentError(
            f"{name} {str(path)!r}: {found} is not a picture format that can be written; "
            f"end the file name with one of {', '.join(allowed)}"
        )
    return path


def run_labels(run_dirs: Sequence[str | Path]) -> list[str]:
    """The legend label of each run: what was run, then its directory's name.

    What was run is read from the run's ``config.toml``: its strategy, then the settings in
    which the runs differ (run bookkeeping such as ``run.output_dir`` left out), at most
    three. Two runs of one file, one of them with ``--set strategy.name=fedavg``, get
    ``"scaffold  (scaffold-20250101-120000)"`` and ``"fedavg  (scaffold-20250101-120005)"``.
    A run without a readable ``config.toml`` is labelled by its directory's name alone.
    """
    settings = [_recorded_settings(Path(run_dir)) for run_dir in run_dirs]
    keys = sorted({key for run in settings for key in run})
    differing = [
        key
        for key in keys
        if key != "strategy.name"
        and not key.startswith("run.")
        and len({repr(run[key]) for run in settings if key in run}) > 1
    ]
    labels = []
    for run_dir, run in zip(run_dirs, settings, strict=True):
        parts = [str(run["strategy.name"])] if "strategy.name" in run else []
        parts += [f"{key}={run[key]}" for key in differing[:_MAX_DIFFERENCES] if key in run]
        if len(differing) > _MAX_DIFFERENCES:
            parts.append("...")
        name = Path(run_dir).name
        labels.append(f"{', '.join(parts)}  ({name})" if parts else name)
    return labels


def _recorded_settings(run_dir: Path) -> dict[str, Any]:
    """The run's ``config.toml`` as ``{"section.key": value}``; empty when it cannot be read."""
    try:
        document = tomllib.loads((run_dir / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return {}
    return {
        f"{section}.{key}": value
        for section, table in document.items()
        if isinstance(table, dict)
        for key, value in table.items()
    }


def curves_figure(run_dirs: Sequence[str | Path]) -> Figure:
    """The figure ``plot_runs`` writes, drawn with the Agg renderer and not yet saved.

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
    # constrained layout makes room for every label, the epsilon axis at the right included
    figure = Figure(
        figsize=(FIGURE_SIZE[0] / _DPI, FIGURE_SIZE[1] / _DPI), dpi=_DPI, layout="constrained"
    )
    FigureCanvasAgg(figure)
    grid = figure.subplots(2, 2)
    panels = {"accuracy_round": grid[0, 0], "accuracy_time": grid[0, 1]}
    panels |= {"loss_round": grid[1, 0], "loss_time": grid[1, 1]}
    drawn = dict.fromkeys(panels, 0)
    handles: list[Line2D] = []
    colours = _colours(len(runs))
    for (_, records), colour, label in zip(runs, colours, run_labels(run_dirs), strict=True):
        _draw_run(panels, records, colour, drawn)
        handles.append(Line2D([], [], color=colour, linewidth=2, label=label))
    _decorate(panels, drawn)
    _draw_epsilon(panels["accuracy_round"], runs)
    columns = min(len(handles), 2)
    figure.legend(handles=handles, loc="outside lower center", ncols=columns, frameon=False)
    return figure


def plot_runs(run_dirs: Sequence[str | Path], output: str | Path) -> Path:
    """Draw the curves of one or more runs into one picture.

    Parameters
    ----------
    run_dirs : sequence of str or Path
        Run directories, each with a ``metrics.jsonl``.
    output : str or Path
        The picture to write (its directory is created when missing); its suffix sets the
        format, one of ``picture_suffixes()``: ``.png``, ``.pdf``, ``.svg``, ``.jpg``, ...

    Returns
    -------
    Path
        ``output``, a ``FIGURE_SIZE`` picture with four panels.

    Raises
    ------
    InvalidArgumentError
        The suffix of ``output`` is not a format that can be written (checked before anything
        is read), no run directory was given, one has no ``metrics.jsonl``, or ``output``
        cannot be written.
    """
    target = check_picture_path(output)
    return save_figure(curves_figure(run_dirs), target)


def save_figure(figure: Figure, target: Path, dpi: int = _DPI) -> Path:
    """Write ``figure`` to ``target`` (checked by ``check_picture_path``; its directory is made).

    Raises
    ------
    InvalidArgumentError
        ``target`` cannot be written; the message gives the operating system's reason.
    """
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(target, dpi=dpi, format=target.suffix.lower().removeprefix("."))
    except OSError as exc:
        raise InvalidArgumentError(f"cannot write {str(target)!r}: {exc.strerror}") from exc
    return target


def write_curves(run_dir: str | Path) -> Path:
    """Draw one run's curves into ``<run_dir>/curves.png`` and return that path."""
    return plot_runs([run_dir], Path(run_dir) / CURVES_FILE)
