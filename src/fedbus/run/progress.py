"""A progress display for the rounds of a run.

On a terminal (or in a notebook), ``RoundProgress`` shows a live bar: round i/N, the latest test
accuracy and losses, simulated time, wall time elapsed and the estimated time left. When output
goes to a file or a pipe it writes one plain line per round instead (a log stays readable, with
no control characters); with ``quiet=True`` it shows nothing at all.

Examples
--------
>>> with RoundProgress(2, quiet=True) as progress:
...     progress.update(1, {"test_accuracy": 0.5, "train_loss": 1.2, "simulated_time": 3.0})
...     progress.update(2, {"test_accuracy": 0.7, "train_loss": 0.9, "simulated_time": 6.0})
"""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from fedbus.errors import InvalidArgumentError

__all__ = ["RoundProgress"]

# what the display shows, in order: (metrics key, label, format)
_SHOWN: tuple[tuple[str, str, str], ...] = (
    ("test_accuracy", "acc", "{:.4f}"),
    ("test_loss", "test loss", "{:.4f}"),
    ("train_loss", "train loss", "{:.4f}"),
)


def _format_seconds(seconds: float) -> str:
    """Seconds for people: ``"12.3 s"`` below 100 s, ``"1:02:03"`` (h:mm:ss) from there on."""
    if seconds < 100:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def _status(values: Mapping[str, Any]) -> str:
    """The numbers of one round as one line; keys without a number are left out."""
    parts = []
    for key, label, number_format in _SHOWN:
        value = values.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            parts.append(f"{label} {number_format.format(value)}")
    simulated = values.get("simulated_time")
    if isinstance(simulated, int | float) and not isinstance(simulated, bool):
        parts.append(f"sim {_format_seconds(simulated)}")
    return "  ".join(parts)


class RoundProgress:
    """Show the progress of a run's rounds; use it as a context manager.

    Parameters
    ----------
    num_rounds : int
        Rounds the run will have (the N of "round i/N").
    quiet : bool
        Show nothing.
    console : rich.console.Console, optional
        Where to draw; a console on standard output by default. Whether it is a terminal
        decides between the live bar and plain lines.

    Examples
    --------
    >>> with RoundProgress(30) as progress:  # doctest: +SKIP
    ...     for round_number in range(1, 31):
    ...         progress.update(round_number, {"test_accuracy": 0.9, "simulated_time": 12.0})
    """

    def __init__(
        self, num_rounds: int, *, quiet: bool = False, console: Console | None = None
    ) -> None:
        if isinstance(num_rounds, bool) or not isinstance(num_rounds, int) or num_rounds < 1:
            raise InvalidArgumentError(f"num_rounds: expected an integer >= 1, got {num_rounds!r}")
        self.num_rounds = num_rounds
        self.quiet = quiet
        self._console = console if console is not None else Console()
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        # the latest known value of each metric: evaluation may happen only every K rounds
        self._latest: dict[str, Any] = {}

    @property
    def live(self) -> bool:
        """Whether a live bar is drawn (a terminal or a notebook, and not quiet)."""
        return not self.quiet and (self._console.is_terminal or self._console.is_jupyter)

    def __enter__(self) -> RoundProgress:
        if self.live:
            self._progress = Progress(
                TextColumn("[bold]round"),
                MofNCompleteColumn(),
                BarColumn(),
                TextColumn("{task.fields[status]}"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=self._console,
            )
            self._progress.start()
            self._task = self._progress.add_task("rounds", total=self.num_rounds, status="")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def update(self, round: int, metrics: Mapping[str, Any]) -> None:
        """Record that ``round`` (1-based) finished with ``metrics``.

        ``metrics`` is a round's record as ``RunDirectory.append_metrics`` takes it: the keys
        used are ``test_accuracy``, ``test_loss``, ``train_loss`` and ``simulated_time``; a
        missing or None value keeps the last one shown.
        """
        if self.quiet:
            return
        self._latest.update({key: value for key, value in metrics.items() if value is not None})
        if self._progress is not None and self._task is not None:
            status = _status(self._latest)
            self._progress.update(self._task, completed=round, status=status)
            return
        line = f"round {round}/{self.num_rounds}  {_status(metrics)}".rstrip()
        self._console.print(line, markup=False, highlight=False, soft_wrap=True)
