"""The README's examples run as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_has_the_message_example() -> None:
    blocks = python_blocks()
    assert len(blocks) == 2
    assert len(blocks[0].strip().splitlines()) <= 16


@pytest.mark.parametrize("index", [0, 1])
def test_readme_python_block_runs(index: int) -> None:
    source = python_blocks()[index].replace("...  #", "pass  #")
    done = subprocess.run(
        [sys.executable, "-"], input=source, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
