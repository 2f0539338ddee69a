"""The example configurations run, and docs/algorithms.md names every algorithm."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from fedbus.run.config import STRATEGIES, load_config
from fedbus.run.federation import build_federation

from ..data.test_leaf import write_femnist

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "examples" / "configs").glob("*.toml"))


def stand_ins(path: Path, tmp_path: Path) -> list[str]:
    """Overrides an example needs to run here: a LEAF example reads the user's own LEAF
    directory, so a tiny FEMNIST one with as many writers as it has clients stands in for it."""
    table = tomllib.loads(path.read_text(encoding="utf-8"))
    if table.get("data", {}).get("dataset") != "leaf":
        return []
    writers = table["federation"]["num_clients"]
    return [f"data.path={write_femnist(tmp_path / 'leaf', writers)}"]


def test_there_is_an_example_for_each_family(tmp_path: Path) -> None:
    names = {
        load_config(path, stand_ins(path, tmp_path / path.stem)).strategy.name for path in CONFIGS
    }
    assert {"fedadam", "fedprox", "scaffold", "median", "ditto", "fedbn"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=[path.stem for path in CONFIGS])
def test_each_example_config_runs(path: Path, tmp_path: Path) -> None:
    config = load_config(path, ["federation.num_rounds=2", *stand_ins(path, tmp_path)])
    if config.model.framework == "hf":
        pytest.importorskip("peft", reason="fedbus[llm] is not installed")
        if not Path(config.model.hf_model).is_dir():
            pytest.skip(
                f"{config.model.hf_model} comes from the Hugging Face hub, which tests never "
                "download from; examples/configs/lora_local.toml runs the same flow offline"
            )
    federation = build_federation(config)
    federation.simulation.run()
    assert federation.server.finished, federation.server.failure
    assert federation.server.history[-1].test_accuracy is not None


def test_the_algorithms_page_names_every_strategy() -> None:
    text = (ROOT / "docs" / "algorithms.md").read_text(encoding="utf-8")
    table = [line for line in text.splitlines() if line.startswith("| ")]
    for name in STRATEGIES.builtin_names():
        assert any(f"`{name}`" in line for line in table), name
    assert (ROOT / "docs" / "images" / "scaffold-flow.png").is_file()
