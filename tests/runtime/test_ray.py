"""The Ray backend: a real local Ray runs the clients' work, with the local backend's result."""

from __future__ import annotations

import pytest
import ray

from fedbus.run import load_config
from fedbus.run.federation import build_federation
from tests.runtime.test_parallel import BASE, fingerprint, run_configured


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["strategy.name=scaffold", "simulation.dropout=0.1", "federation.round_timeout=60"],
        ["strategy.name=fedprox", "privacy.mode=local", "privacy.noise_multiplier=0.1"],
    ],
    ids=["fedavg", "scaffold with dropouts", "fedprox with local privacy (client mods)"],
)
def test_ray_gives_the_run_of_the_local_backend(local_ray: None, overrides: list[str]) -> None:
    local = run_configured(overrides, workers=1)
    config = load_config(None, [*BASE, *overrides, "simulation.backend=ray"])
    federation = build_federation(config)
    result = federation.simulation.run()
    assert result.stats.offloaded > 0
    assert fingerprint(federation, result) == fingerprint(*local)
    assert ray.is_initialized()  # a Ray the user started is left running


def test_without_ray_the_backend_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    from fedbus.errors import ConfigError
    from fedbus.runtime.ray.executor import RayExecutor

    real_import = builtins.__import__

    def no_ray(name: str, *args: object, **kwargs: object) -> object:
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(ConfigError, match=r'pip install "fedbus\[ray\]"'):
        RayExecutor(lambda node_id: None)  # type: ignore[arg-type, return-value]
