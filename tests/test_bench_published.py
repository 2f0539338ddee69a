"""The scripts behind docs/results.md run, with tiny settings, and write the figures it quotes.

The full runs take minutes (``make bench-published``); these runs check that every row the
page reports is produced and well formed, not the figures themselves.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
PAGE = Path(__file__).resolve().parent.parent / "docs" / "results.md"


def bench_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_fedprox_straggler_script_reports_every_method_and_fraction(tmp_path: Path) -> None:
    script = bench_script("published_fedprox")
    out = tmp_path / "fedprox.json"

    assert script.main(["--rounds", "2", "--seeds", "1", "--out", str(out)]) == 0

    rows = json.loads(out.read_text(encoding="utf-8"))["rows"]
    expected = {(fraction, label) for fraction in script.STRAGGLERS for label, *_ in script.METHODS}
    assert {(row["stragglers"], row["method"]) for row in rows} == expected
    for row in rows:
        assert row["final_loss"] > 0
        assert 0 <= row["final_accuracy"] <= 1


def test_the_mnist1d_script_reports_the_published_rows_and_fedavg(tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="fedbus[torch] is not installed")
    script = bench_script("published_mnist1d")
    out = tmp_path / "mnist1d.json"
    tiny = ["--rounds", "1", "--clients", "4", "--per-round", "2", "--epochs", "1"]
    tiny += ["--hidden", "8", "--central-epochs", "1", "--cnn-epochs", "1"]

    assert script.main([*tiny, "--out", str(out)]) == 0

    result = json.loads(out.read_text(encoding="utf-8"))
    rows = {(row["setting"], row["model"]): row for row in result["rows"]}
    for model, published in script.PUBLISHED.items():
        assert rows["centralised", model]["published"] == published
        assert ("fedavg iid 2/4", model) in rows
        assert ("fedavg dirichlet(0.5) 2/4", model) in rows
    assert all(0 <= row["accuracy"] <= 1 for row in rows.values())


def test_the_results_page_names_each_script_and_its_make_target() -> None:
    page = PAGE.read_text(encoding="utf-8")
    for script in ("bench/published_fedprox.py", "bench/published_mnist1d.py"):
        assert script in page
    assert "make bench-published" in page
