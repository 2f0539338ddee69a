"""The two-stage protocol of docs/protocols.md runs on RequestGroup, in under 150 lines."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from ..conftest import load_module

EXAMPLE = Path(__file__).parents[2] / "examples" / "power_of_choice.py"


@pytest.fixture(scope="module")
def example() -> ModuleType:
    return load_module(EXAMPLE, "power_of_choice")


def test_the_protocol_is_written_in_under_150_lines() -> None:
    assert len(EXAMPLE.read_text().splitlines()) < 150


def test_the_worst_candidates_train_and_the_model_learns(example: ModuleType) -> None:
    server = example.run(num_rounds=20, candidates=10, per_round=5)
    assert server.finished, server.failure
    assert len(server.history) == 20
    assert [len(chosen) for chosen in server.chosen] == [5] * 20
    assert all(record.clients_replied == 5 for record in server.history)
    assert max(record.test_accuracy for record in server.history) >= 0.8
    # every client's request went through the group: nothing late or refused
    assert server.refused_replies == server.late_replies == 0


def test_the_highest_losses_are_chosen(example: ModuleType) -> None:
    server = example.run(num_rounds=3, candidates=8, per_round=3)
    assert [len(losses) for losses in server.probed] == [8, 8, 8]
    for losses, chosen in zip(server.probed, server.chosen, strict=True):
        others = set(losses) - set(chosen)
        assert min(losses[node] for node in chosen) >= max(losses[node] for node in others)
