"""A newcomer's configuration mistakes: one line saying what to do, never a traceback.

The command-line tests start ``fedbus run`` as a real process and read what it prints; the
others check the choices made for a user who leaves a key out.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fedbus.errors import ConfigError
from fedbus.fl import Server
from fedbus.fl.registry import STRATEGIES, register_strategy
from fedbus.fl.strategy import FedAvg
from fedbus.run import load_config
from fedbus.run.federation import build_federation

# A run that finishes in a second or two once it gets going.
QUICK = ["federation.num_rounds=1", "run.plot=false", "run.save_model=false"]


def fedbus_run(
    cwd: Path, config: Path | None, *overrides: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``fedbus run -q [CONFIG] --set ...`` in ``cwd``, as a user would type it."""
    args = [sys.executable, "-m", "fedbus", "run", "-q"]
    args += [] if config is None else [str(config)]
    for override in [*QUICK, f"run.output_dir={cwd / 'runs'}", *overrides]:
        args += ["--set", override]
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def assert_one_clear_line(done: subprocess.CompletedProcess[str], *wanted: str) -> str:
    """The run was refused as a configuration error, in one line naming ``wanted``."""
    output = done.stdout + done.stderr
    assert "Traceback" not in output, output
    assert done.returncode == 2, output
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("fedbus:")]
    assert line.startswith("fedbus: configuration error: "), output
    for text in wanted:
        assert text in line, line
    return line


def assert_ran(done: subprocess.CompletedProcess[str]) -> Path:
    """The run finished; its run directory."""
    assert done.returncode == 0, done.stdout + done.stderr
    assert "final test accuracy" in done.stdout
    (run_dir,) = (Path(line.split(":", 1)[1].strip()) for line in done.stdout.splitlines()
                  if line.startswith("run directory:"))  # fmt: skip
    return run_dir


# -- 1. a Ray cluster that is not there -----------------------------------------------------


def _ray_running_here() -> bool:
    """Whether a Ray instance runs on this machine (this session's own, once a test started
    one): "auto" finds it by its raylet process, and rightly joins it."""
    psutil = pytest.importorskip("psutil")
    names = {"raylet", "gcs_server"}
    return any(process.info["name"] in names for process in psutil.process_iter(["name"]))


@pytest.fixture
def ray_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a process that finds no Ray: no RAY_ADDRESS, an empty Ray temp dir
    (where ``ray start`` notes the cluster it started)."""
    pytest.importorskip("ray")
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    env["RAY_TMPDIR"] = str(tmp_path / "ray")
    return env


def test_ray_address_auto_without_a_cluster_says_how_to_start_one(
    tmp_path: Path, ray_env: dict[str, str]
) -> None:
    joins = 'a Ray instance runs on this machine: "auto" joins it'
    if _ray_running_here():
        pytest.skip(joins)
    overrides = ["simulation.backend=ray", "simulation.ray_address=auto"]
    done = fedbus_run(tmp_path, None, *overrides, env=ray_env)
    if done.returncode == 0:
        pytest.skip(joins)  # one started while this test ran
    assert_one_clear_line(
        done,
        'simulation.ray_address = "auto"',
        "ray start --head",
        "leave simulation.ray_address empty",
    )
    # refused before its first round, it leaves no run directory behind
    assert not any((tmp_path / "runs").iterdir())


@pytest.mark.slow  # Ray gives a ray:// address three tries, one second each here (30 s by default)
def test_an_unreachable_ray_address_says_to_check_it(
    tmp_path: Path, ray_env: dict[str, str]
) -> None:
    ray_env |= {
        "RAY_CLIENT_INITIAL_CONNECTION_TIMEOUT_S": "1",
        "RAY_CLIENT_MAX_CONNECTION_TIMEOUT_S": "1",
    }
    address = "ray://127.0.0.1:1"  # port 1: nothing listens there
    overrides = ["simulation.backend=ray", f"simulation.ray_address={address}"]
    done = fedbus_run(tmp_path, None, *overrides, env=ray_env)
    line = assert_one_clear_line(
        done, f'simulation.ray_address = "{address}"', "check the address", "empty"
    )
    assert "Ray Client connection timed out" not in done.stderr  # Ray's warning says no more
    assert "ray start --head" not in line  # the cluster is elsewhere: starting one here won't do


def test_a_ray_address_ray_cannot_read_is_refused(tmp_path: Path, ray_env: dict[str, str]) -> None:
    overrides = ["simulation.backend=ray", "simulation.ray_address=head-node"]
    done = fedbus_run(tmp_path, None, *overrides, env=ray_env)
    assert_one_clear_line(done, '"head-node": not an address Ray understands', "ray://HOST:PORT")


# -- 2. a config file that is not a UTF-8 TOML file -------------------------------------------


def test_a_config_that_is_not_utf8_is_refused_naming_the_file_and_the_line(
    tmp_path: Path,
) -> None:
    config = tmp_path / "latin1.toml"
    config.write_bytes('[run]\nname = "café"\n'.encode("latin-1"))
    done = fedbus_run(tmp_path, config)
    assert_one_clear_line(
        done, str(config), "not UTF-8", "line 2", "a config must be a UTF-8 TOML file"
    )


@pytest.mark.parametrize("kind", ["npz", "csv"])
def test_a_dataset_given_as_the_config_points_to_data_path(tmp_path: Path, kind: str) -> None:
    data = tmp_path / f"samples.{kind}"
    if kind == "npz":
        np.savez(data, x=np.zeros((4, 2)), y=np.array([0, 1, 0, 1]))
    else:
        data.write_text("f0,f1,label\n0.5,1.0,0\n0.1,0.2,1\n", encoding="utf-8")
    done = fedbus_run(tmp_path, data)
    assert_one_clear_line(
        done,
        str(data),
        "a config must be a UTF-8 TOML file",
        f"--set data.dataset={kind} --set data.path={data}",
    )


# -- 3. data that is not a NumPy archive ------------------------------------------------------


def test_a_text_file_named_npz_is_not_an_archive_and_pickle_is_never_suggested(
    tmp_path: Path,
) -> None:
    data = tmp_path / "features.npz"
    data.write_text("f0,f1,label\n0.5,1.0,0\n", encoding="utf-8")
    done = fedbus_run(tmp_path, None, "data.dataset=npz", f"data.path={data}")
    line = assert_one_clear_line(done, str(data), "not a NumPy .npz archive", "np.savez(")
    assert "pickle" not in line


# -- 4. few clients ---------------------------------------------------------------------------


def test_a_federation_of_five_clients_needs_nothing_else_lowered(tmp_path: Path) -> None:
    """clients_per_round is at most num_clients unless set, and clients_per_evaluation follows
    it unless set: five clients just work, federated evaluation included."""
    config = load_config(None, ["federation.num_clients=5"])
    assert config.federation.clients_per_round == 5
    assert config.federation.clients_per_evaluation == 0
    assert load_config(None, ["federation.num_clients=50"]).federation.clients_per_round == 10
    evaluated = "federation.federated_evaluate_every=1"
    run_dir = assert_ran(fedbus_run(tmp_path, None, "federation.num_clients=5", evaluated))
    (line,) = (json.loads(text) for text in (run_dir / "metrics.jsonl").read_text().splitlines())
    assert line["clients_replied"] == 5
    assert line["federated_accuracy"] is not None


def test_federated_evaluation_samples_clients_per_round_unless_set() -> None:
    base = ["federation.num_clients=6", "federation.clients_per_round=4", "data.dataset=synthetic"]

    def evaluated(*overrides: str) -> int:
        server = build_federation(load_config(None, [*base, *overrides])).server
        assert isinstance(server, Server)
        return server.clients_per_evaluation

    assert evaluated() == 4
    assert evaluated("federation.clients_per_evaluation=6") == 6
    with pytest.raises(ConfigError, match=r"clients_per_evaluation: expected at most federation"):
        load_config(None, [*base, "federation.clients_per_evaluation=7"])


# -- 5. strategy names and the trigger of an asynchronous strategy ----------------------------


@pytest.mark.parametrize("written", ["FedAvg", "FEDAVG", "fedAvgM"])
def test_a_strategy_name_in_other_letter_case_is_the_strategy(written: str) -> None:
    config = load_config(None, [f"strategy.name={written}"])
    assert config.strategy.name == written.lower()


def test_a_choice_in_other_letter_case_is_the_choice() -> None:
    assert load_config(None, ["data.partition=IID"]).data.partition == "iid"


def test_a_name_that_differs_from_two_only_in_case_is_refused() -> None:
    register_strategy("FedAvg", FedAvg)  # a plugin's name, next to fedbus's "fedavg"
    try:
        assert load_config(None, ["strategy.name=FedAvg"]).strategy.name == "FedAvg"
        with pytest.raises(ConfigError, match=r"strategy\.name: strategy 'FEDAVG' is not known"):
            load_config(None, ["strategy.name=FEDAVG"])
    finally:
        STRATEGIES.unregister("FedAvg")


def test_a_misspelt_strategy_gets_a_suggestion(tmp_path: Path) -> None:
    done = fedbus_run(tmp_path, None, "strategy.name=fedavgg")
    assert_one_clear_line(done, "strategy.name", "did you mean 'fedavg'?")


def test_a_misspelt_strategy_in_capitals_gets_a_suggestion() -> None:
    with pytest.raises(ConfigError, match=r"did you mean 'fedavg'\?"):
        load_config(None, ["strategy.name=FEDAVGG"])


def test_a_misspelt_choice_gets_a_suggestion() -> None:
    with pytest.raises(ConfigError, match=r'got "gaol"; did you mean "goal"\?'):
        load_config(None, ["aggregation.trigger=gaol"])


@pytest.mark.parametrize("strategy", ["fedbuff", "fedasync"])
def test_an_asynchronous_strategy_chooses_its_trigger(tmp_path: Path, strategy: str) -> None:
    config = load_config(None, [f"strategy.name={strategy}"])
    assert config.aggregation.trigger == "goal"
    assert load_config(None, ["strategy.name=fedavg"]).aggregation.trigger == "all"
    kept = load_config(None, [f"strategy.name={strategy}", "aggregation.trigger=time"])
    assert kept.aggregation.trigger == "time"
    assert_ran(fedbus_run(tmp_path, None, f"strategy.name={strategy}"))


def test_an_asynchronous_strategy_with_synchronous_rounds_set_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "buffered.toml"
    config.write_text('[strategy]\nname = "fedbuff"\n[aggregation]\ntrigger = "all"\n')
    done = fedbus_run(tmp_path, config)
    assert_one_clear_line(
        done, 'strategy.name = "fedbuff" trains asynchronously', "remove aggregation.trigger"
    )
