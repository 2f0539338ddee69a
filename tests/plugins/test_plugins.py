"""A plugin package, installed for real, runs from a configuration that names its parts.

The package ``fedbus_example_plugin`` (beside this file) is built into a wheel with the standard
library alone, installed offline with ``pip install --no-index --target``, and found through its
entry points: fedbus is not told about it in any other way.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedbus.data.registry import DATASETS
from fedbus.errors import ConfigError, PluginError
from fedbus.fl.registry import STRATEGIES
from fedbus.run.config import load_config
from fedbus.run.experiment import run_experiment
from fedbus.run.federation import build_federation
from fedbus.train.registry import MODELS

PACKAGE = "fedbus_example_plugin"
SOURCE = Path(__file__).with_name(PACKAGE)
ENTRY_POINTS = """\
[fedbus.strategies]
recording_fedavg = fedbus_example_plugin.strategy

[fedbus.datasets]
blobs = fedbus_example_plugin.dataset

[fedbus.models]
broken = fedbus_example_plugin.not_there
"""
REGISTRIES = (STRATEGIES, DATASETS, MODELS)


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def build_wheel(directory: Path) -> Path:
    """The example package as a wheel: a zip with its modules and a ``.dist-info``."""
    dist_info = f"{PACKAGE}-0.1.0.dist-info"
    files = {f"{PACKAGE}/{path.name}": path.read_bytes() for path in sorted(SOURCE.glob("*.py"))}
    files[f"{dist_info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {PACKAGE}\nVersion: 0.1.0\n".encode()
    )
    files[f"{dist_info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: fedbus-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    files[f"{dist_info}/entry_points.txt"] = ENTRY_POINTS.encode()
    record = [_record_line(name, data) for name, data in files.items()]
    files[f"{dist_info}/RECORD"] = "\n".join([*record, f"{dist_info}/RECORD,,", ""]).encode()
    wheel = directory / f"{PACKAGE}-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return wheel


def _forget_plugin() -> None:
    for module in [name for name in sys.modules if name.split(".")[0] == PACKAGE]:
        del sys.modules[module]
    for registry in REGISTRIES:
        for name in ("recording_fedavg", "blobs", "broken"):
            registry.unregister(name)
        registry.refresh()


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The example plugin installed into a directory on ``sys.path``, offline."""
    root = tmp_path_factory.mktemp("plugin")
    wheel = build_wheel(root)
    target = root / "site"
    command = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index"]
    command += ["--disable-pip-version-check", "--quiet", "--target", str(target), str(wheel)]
    subprocess.run(command, check=True, capture_output=True, text=True)
    sys.path.insert(0, str(target))
    for registry in REGISTRIES:
        registry.refresh()
    try:
        yield target
    finally:
        sys.path.remove(str(target))
        _forget_plugin()


def _plugin_config(tmp_path: Path, *extra: str) -> list[str]:
    return [
        "strategy.name=recording_fedavg",
        "data.dataset=blobs",
        "data.partition=iid",
        "federation.num_clients=10",
        "federation.clients_per_round=5",
        "federation.num_rounds=4",
        "trainer.epochs=2",
        "trainer.lr=0.1",
        "simulation.workers=1",
        "run.name=from-a-plugin",
        "run.plot=false",
        f"run.output_dir={tmp_path}",
        *extra,
    ]


def test_the_plugin_is_installed_as_a_distribution_with_entry_points(installed: Path) -> None:
    assert (installed / f"{PACKAGE}-0.1.0.dist-info" / "entry_points.txt").is_file()
    assert "recording_fedavg" in STRATEGIES.names()
    assert "blobs" in DATASETS.names()
    assert "recording_fedavg" not in STRATEGIES.builtin_names()
    assert PACKAGE not in sys.modules, "entry points are imported only when their name is used"


def test_a_run_names_the_plugins_strategy_and_dataset(installed: Path, tmp_path: Path) -> None:
    config = load_config(None, _plugin_config(tmp_path))
    result = run_experiment(config, quiet=True)
    strategy_module = importlib.import_module(f"{PACKAGE}.strategy")
    server = result.federation.server
    assert type(server.strategy).__module__ == f"{PACKAGE}.strategy"
    assert server.strategy.label == "from-a-plugin"  # type: ignore[attr-defined]
    assert strategy_module.AGGREGATED_ROUNDS == [1, 2, 3, 4]
    assert result.federation.dataset.num_features == 8
    assert result.federation.dataset.num_classes == 4
    assert result.summary["final_test_accuracy"] > 0.9


def test_a_misspelt_plugin_name_suggests_the_plugins_name(installed: Path) -> None:
    with pytest.raises(
        ConfigError,
        match=r"strategy 'recording_fedav' is not known; did you mean 'recording_fedavg'\?",
    ):
        load_config(None, ["strategy.name=recording_fedav"])


def test_a_broken_plugin_names_its_entry_point_and_what_to_do(
    installed: Path, tmp_path: Path
) -> None:
    config = load_config(None, _plugin_config(tmp_path, "model.name=broken"))
    with pytest.raises(PluginError) as caught:
        build_federation(config)
    message = str(caught.value)
    assert "entry point 'broken = fedbus_example_plugin.not_there'" in message
    assert "group fedbus.models, package fedbus_example_plugin 0.1.0" in message
    assert "ModuleNotFoundError" in message
    assert "pip uninstall fedbus_example_plugin" in message


def test_a_plugin_may_not_take_a_builtin_name() -> None:
    with pytest.raises(PluginError, match=r"'fedavg' is registered twice"):
        STRATEGIES.register("fedavg", STRATEGIES.get("fedavg"), module="someone_else")
