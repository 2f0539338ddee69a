"""The results table of docs/algorithms.md is what the example configs give.

``docs/update_results.py`` reruns every example and records its figures in docs/results.json;
the page's table must be that file's rendering, and rerunning an example must give the recorded
figures exactly (simulations are deterministic), so a change that moves a result shows here.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"


def update_results() -> ModuleType:
    spec = importlib.util.spec_from_file_location("update_results", DOCS / "update_results.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_table_is_the_recorded_figures() -> None:
    script = update_results()
    recorded = json.loads((DOCS / "results.json").read_text())
    assert set(recorded) == {example.config for example in script.EXAMPLES}
    page = (DOCS / "algorithms.md").read_text(encoding="utf-8")
    start, end = page.index(script.START) + len(script.START), page.index(script.END)
    assert page[start:end].strip() == script.table(recorded), "run: make docs-results"


@pytest.mark.slow
@pytest.mark.parametrize("config", ["fedadam.toml", "scaffold.toml"])
def test_an_example_gives_its_recorded_figures(config: str) -> None:
    script = update_results()
    [example] = [each for each in script.EXAMPLES if each.config == config]
    recorded = json.loads((DOCS / "results.json").read_text())[config]
    assert script.run_example(example) == recorded, "the code moved a result: make docs-results"
