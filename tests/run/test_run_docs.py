"""docs/config.md lists every key, with the values the declarations give."""

from __future__ import annotations

import re
import tomllib
from dataclasses import fields
from pathlib import Path

from fedbus.run import SECTIONS, config_from_dict, reference_markdown

DOC = Path(__file__).resolve().parents[2] / "docs" / "config.md"


def _text() -> str:
    return DOC.read_text(encoding="utf-8")


def test_every_key_of_the_schema_is_in_the_docs() -> None:
    text = _text()
    for name, section in SECTIONS.items():
        assert f"### [{name}]" in text
        for key in fields(section):  # type: ignore[arg-type]
            assert f"`{name}.{key.name}`" in text, f"{name}.{key.name} is missing from {DOC}"


def test_the_key_reference_matches_the_declarations() -> None:
    text = _text()
    start = text.index("<!-- reference:start -->") + len("<!-- reference:start -->")
    end = text.index("<!-- reference:end -->")
    assert text[start:end].strip() == reference_markdown().strip(), (
        "docs/config.md is out of date: paste the output of "
        "`python -c 'from fedbus.run import reference_markdown; print(reference_markdown())'`"
    )


def test_the_example_file_in_the_docs_is_a_valid_config() -> None:
    example = re.search(r"```toml\n(.*?)```", _text(), re.DOTALL)
    assert example is not None
    config = config_from_dict(tomllib.loads(example.group(1)))
    assert config.run.name == "synthetic-fedavg"
    assert config.federation.min_replies == 8
