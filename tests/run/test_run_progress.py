"""The round display: silent when quiet, plain lines off a terminal, a live bar on one."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from fedbus.errors import InvalidArgumentError
from fedbus.run import RoundProgress

ROUNDS: list[dict[str, float | None]] = [
    {"test_accuracy": 0.5, "train_loss": 1.25, "simulated_time": 3.0},
    {"test_accuracy": None, "train_loss": 0.75, "simulated_time": 6.5},
    {"test_accuracy": 0.8, "test_loss": 0.4, "train_loss": 0.5, "simulated_time": 150.0},
]


def _run(progress: RoundProgress) -> None:
    with progress:
        for round_number, metrics in enumerate(ROUNDS, start=1):
            progress.update(round_number, metrics)


def test_quiet_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    _run(RoundProgress(3, quiet=True))
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == ""


def test_off_a_terminal_it_prints_one_plain_line_per_round(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _run(RoundProgress(3))
    assert capsys.readouterr().out.splitlines() == [
        "round 1/3  acc 0.5000  train loss 1.2500  sim 3.0 s",
        "round 2/3  train loss 0.7500  sim 6.5 s",
        "round 3/3  acc 0.8000  test loss 0.4000  train loss 0.5000  sim 0:02:30",
    ]


def test_on_a_terminal_it_draws_a_live_bar() -> None:
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, color_system=None, width=160)
    progress = RoundProgress(3, console=console)
    assert progress.live
    with progress:
        progress.update(1, ROUNDS[0])
        progress.update(2, ROUNDS[1])
    final = screen.getvalue().split("\r")[-1]
    assert "2/3" in final
    # round 2 had no evaluation: the bar keeps showing round 1's accuracy
    assert "acc 0.5000" in final
    assert "train loss 0.7500" in final
    assert "sim 6.5 s" in final


def test_num_rounds_must_be_positive() -> None:
    with pytest.raises(InvalidArgumentError, match="num_rounds"):
        RoundProgress(0)
