"""Configuration: defaults, files, overrides, every refusal, and the TOML round trip."""

from __future__ import annotations

import tomllib
from dataclasses import fields
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedbus.errors import ConfigError
from fedbus.run import (
    SECTIONS,
    Config,
    FederationConfig,
    SimulationConfig,
    config_from_dict,
    config_to_dict,
    config_to_toml,
    load_config,
)


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_load_with_the_documented_values() -> None:
    config = load_config(None)
    assert config == Config()
    assert config.run.name == "fedbus"
    assert config.run.save_model is True
    assert config.federation.num_clients == 100
    assert config.federation.clients_per_round == 10
    assert config.federation.num_rounds == 80
    assert config.federation.round_timeout == 0.0
    assert config.data.dataset == "digits"
    assert config.data.alpha == 0.5
    assert config.trainer.lr == 0.5
    assert config.trainer.epochs == 5
    assert config.strategy.name == "fedavg"
    assert config.simulation.speed == 2000.0
    assert config.simulation.downlink_mbps == 100.0


def test_every_section_is_an_attribute_of_config() -> None:
    assert [section.name for section in fields(Config)] == list(SECTIONS)
    assert list(config_to_dict(Config())) == list(SECTIONS)


def test_a_toml_file_sets_its_keys_and_leaves_the_rest_at_defaults(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "experiment.toml",
        '[federation]\nnum_clients = 20\nseed = 7\n[data]\ndataset = "synthetic"\n'
        "[trainer]\nlr = 1\n[run]\nplot = false\n",
    )
    config = load_config(path)
    assert config.federation.num_clients == 20
    assert config.federation.seed == 7
    assert config.data.dataset == "synthetic"
    assert config.run.plot is False
    assert config.trainer.lr == 1.0
    assert isinstance(config.trainer.lr, float)
    assert config.federation.num_rounds == 80
    assert config.model == Config().model


@pytest.mark.parametrize(
    ("override", "section", "key", "expected"),
    [
        ("federation.seed=3", "federation", "seed", 3),
        ("trainer.lr=0.05", "trainer", "lr", 0.05),
        ("trainer.lr=1", "trainer", "lr", 1.0),
        ("simulation.latency=1e-3", "simulation", "latency", 0.001),
        ("run.plot=false", "run", "plot", False),
        ("simulation.check_serialization=true", "simulation", "check_serialization", True),
        ("data.dataset=synthetic", "data", "dataset", "synthetic"),
        ('data.partition="iid"', "data", "partition", "iid"),
        ("run.name=2024", "run", "name", "2024"),
        ("run.output_dir=out/runs", "run", "output_dir", "out/runs"),
        (" federation.num_rounds = 5 ", "federation", "num_rounds", 5),
    ],
)
def test_overrides_of_every_type(override: str, section: str, key: str, expected: object) -> None:
    value = getattr(getattr(load_config(None, [override]), section), key)
    assert value == expected
    assert type(value) is type(expected)


def test_overrides_apply_after_the_file_and_in_order(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.toml", "[federation]\nseed = 1\nnum_rounds = 4\n")
    config = load_config(path, ["federation.seed=2", "federation.seed=3"])
    assert config.federation.seed == 3
    assert config.federation.num_rounds == 4


def test_an_override_cannot_smuggle_in_other_keys() -> None:
    with pytest.raises(ConfigError, match=r"federation\.seed: expected an integer"):
        load_config(None, ["federation.seed=3\n[run]\nplot = false"])


REFUSALS = [
    # (overrides, words the message must contain)
    (["fed.seed=1"], ["[fed]", "unknown section", "did you mean [federation]"]),
    (["federation.num_client=3"], ["federation.num_client", "did you mean federation.num_clients"]),
    (["federation.lr=0.1"], ["federation.lr", "did you mean trainer.lr"]),
    (["federation.num_clients=true"], ["federation.num_clients", "an integer", "got true"]),
    (["federation.num_clients=2.5"], ["federation.num_clients", "an integer", "got 2.5"]),
    (["trainer.lr=true"], ["trainer.lr", "expected a number", "got true"]),
    (["trainer.lr=fast"], ["trainer.lr", "expected a number", 'got "fast"']),
    (["run.plot=1"], ["run.plot", "true or false", "got 1"]),
    (["run.plot=yes"], ["run.plot", "true or false", 'got "yes"']),
    (["simulation.speed=nan"], ["simulation.speed", "finite", "nan"]),
    (["federation.num_rounds=0"], ["federation.num_rounds", ">= 1", "got 0"]),
    (["federation.seed=-1"], ["federation.seed", ">= 0", "got -1"]),
    (["trainer.lr=0"], ["trainer.lr", "> 0", "got 0.0"]),
    (["data.alpha=-0.5"], ["data.alpha", "> 0", "got -0.5"]),
    (["data.central_test_fraction=1"], ["data.central_test_fraction", "0 < x < 1", "got 1.0"]),
    (["data.client_test_fraction=1.0"], ["data.client_test_fraction", "0 <= x < 1", "got 1.0"]),
    (["data.samples_per_client=1"], ["data.samples_per_client", ">= 2", "got 1"]),
    (["simulation.dropout=1.5"], ["simulation.dropout", "0 <= x <= 1", "got 1.5"]),
    (["simulation.slow_factor=0.5"], ["simulation.slow_factor", ">= 1", "got 0.5"]),
    (["data.dataset=cifar10"], ["data.dataset", "'cifar10' is not known", "digits, ", "mnist1d"]),
    (["data.partition=zipf"], ["data.partition", '"iid", "dirichlet", "shards"', '"natural"']),
    (["model.name=resnet"], ["model.name", "model 'resnet' is not known", "cnn, mlp, softmax"]),
    (
        ["strategy.name=fedavgg"],
        ["strategy.name: strategy 'fedavgg' is not known; did you mean 'fedavg'?", "Known: bulyan"],
    ),
    (["run.name=a/b"], ["run.name", "letters, digits", 'got "a/b"']),
    (["run.output_dir="], ["run.output_dir", "non-empty", 'got ""']),
    (
        ["federation.clients_per_round=101"],
        ["federation.clients_per_round", "at most federation.num_clients (100)", "got 101"],
    ),
    (
        ["federation.num_clients=5", "federation.clients_per_round=10"],
        ["federation.clients_per_round", "at most federation.num_clients (5)", "got 10"],
    ),
    (
        ["federation.min_replies=11"],
        ["federation.min_replies", "at most federation.clients_per_round (10)", "got 11"],
    ),
    (
        ["federation.clients_per_evaluation=200"],
        ["federation.clients_per_evaluation", "at most federation.num_clients", "got 200"],
    ),
    (["data.dataset=npz"], ["data.path", 'required when data.dataset is "npz"', 'got ""']),
    (["data.dataset=csv"], ["data.path", 'required when data.dataset is "csv"']),
    (
        ["data.dataset=npz", "data.path=missing/train.npz"],
        ["data.path", "existing file", '"missing/train.npz"'],
    ),
    (["simulation.profiles_csv=nowhere.csv"], ["simulation.profiles_csv", '"nowhere.csv"']),
    (["seed=3"], ["--set 'seed=3'", "section.key=value"]),
    (["federation.seed"], ["--set 'federation.seed'", "section.key=value"]),
]


@pytest.mark.parametrize(("overrides", "words"), REFUSALS)
def test_refusals_name_the_key_what_is_allowed_and_what_was_given(
    overrides: list[str], words: list[str]
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, overrides)
    for word in words:
        assert word in str(caught.value)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, ["trainer.epochs=0", "model.name=resnet", "federation.bogus=1", "x.y=1"])
    message = str(caught.value)
    assert message.startswith("4 problems in the configuration:")
    for key in ("trainer.epochs", "model.name", "federation.bogus", "[x]"):
        assert key in message


def test_an_existing_data_file_is_accepted(tmp_path: Path) -> None:
    data = _write(tmp_path / "train.csv", "label,x\n0,1\n")
    config = load_config(None, ["data.dataset=csv", f"data.path={data}"])
    assert config.data.path == str(data)


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "absent.toml")
    broken = _write(tmp_path / "broken.toml", "[federation\nseed = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(broken)
    wrong = _write(tmp_path / "wrong.toml", "run = 3\n[trainer]\nepochs = 0\n")
    with pytest.raises(ConfigError) as caught:
        load_config(wrong)
    assert "wrong.toml" in str(caught.value)
    assert "[run]: expected a table" in str(caught.value)
    assert "trainer.epochs" in str(caught.value)


def test_sections_check_their_keys_when_built_directly() -> None:
    with pytest.raises(ConfigError, match=r"federation\.num_clients"):
        FederationConfig(num_clients=0)
    with pytest.raises(ConfigError, match=r"federation\.clients_per_round"):
        FederationConfig(num_clients=5)
    speed = SimulationConfig(speed=1000).speed
    assert speed == 1000.0
    assert isinstance(speed, float)


def test_config_from_dict_matches_load_config() -> None:
    data = {"federation": {"seed": 5}, "data": {"dataset": "synthetic"}}
    assert config_from_dict(data) == load_config(
        None, ["federation.seed=5", "data.dataset=synthetic"]
    )
    with pytest.raises(ConfigError, match=r"federation\.seed"):
        config_from_dict({"federation": {"seed": "five"}})


def test_round_trip_of_the_defaults_and_of_a_changed_config(tmp_path: Path) -> None:
    changed = load_config(
        None,
        [
            "run.name=round-trip",
            'run.output_dir="dir with spaces/ü"',
            "federation.round_timeout=12.25",
            "data.dataset=synthetic",
            "trainer.lr=0.0003",
            "simulation.check_serialization=true",
        ],
    )
    for config in (Config(), changed):
        text = config_to_toml(config)
        path = _write(tmp_path / "config.toml", text)
        assert load_config(path) == config
        assert tomllib.loads(text) == config_to_dict(config)


def test_the_resolved_toml_holds_every_key() -> None:
    parsed = tomllib.loads(config_to_toml(Config()))
    for name, section in SECTIONS.items():
        assert set(parsed[name]) == {key.name for key in fields(section)}  # type: ignore[arg-type]


@given(
    lr=st.floats(min_value=1e-9, max_value=1e3, allow_nan=False),
    alpha=st.floats(min_value=1e-6, max_value=1e6),
    seed=st.integers(min_value=0, max_value=2**63 - 1),
    name=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True),
    num_clients=st.integers(min_value=10, max_value=10**6),
)
def test_round_trip_keeps_every_value_exactly(
    lr: float, alpha: float, seed: int, name: str, num_clients: int
) -> None:
    config = config_from_dict(
        {
            "run": {"name": name},
            "federation": {"seed": seed, "num_clients": num_clients},
            "data": {"alpha": alpha},
            "trainer": {"lr": lr},
        }
    )
    assert config_from_dict(tomllib.loads(config_to_toml(config))) == config
