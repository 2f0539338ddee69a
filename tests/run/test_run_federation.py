"""From a configuration to a federation: profiles, dataset, model and server as configured."""

from __future__ import annotations

from pathlib import Path

from fedbus.run import load_config
from fedbus.run.federation import build_federation
from fedbus.runtime.simulation import ClientProfile, ProfileDistribution


def test_a_device_trace_sets_listed_clients_and_the_rest_get_the_typical_device(
    tmp_path: Path,
) -> None:
    trace = tmp_path / "devices.csv"
    trace.write_text("node_id,speed,latency\n3,10,2.5\n")
    config = load_config(
        None,
        [f"simulation.profiles_csv={trace}", "simulation.speed=500", "simulation.latency=0.2"],
    )
    profile = build_federation(config).simulation._profile
    assert profile(3) == ClientProfile(speed=10.0, latency=2.5)
    assert profile(4) == ClientProfile(speed=500.0, latency=0.2)


def test_distribution_typical_is_its_median_device() -> None:
    distribution = ProfileDistribution(speed=300.0, speed_sigma=1.0, latency=0.3, dropout=0.1)
    assert distribution.typical() == ClientProfile(speed=300.0, latency=0.3, dropout=0.1)


def test_the_server_and_clients_are_built_as_configured() -> None:
    config = load_config(
        None,
        [
            "federation.num_clients=20",
            "federation.clients_per_round=5",
            "federation.min_replies=4",
            "federation.round_timeout=30",
            "model.name=mlp",
            "model.hidden=16",
            "trainer.lr=0.25",
        ],
    )
    federation = build_federation(config)
    server = federation.server
    assert (server.clients_per_round, server.min_replies, server.round_timeout) == (5, 4, 30.0)
    assert server.train_config == {"epochs": 5, "batch_size": 32, "lr": 0.25}
    assert set(server.arrays) == {"hidden.weight", "hidden.bias", "output.weight", "output.bias"}
    assert server.arrays["hidden.weight"].shape == (64, 16)
    client = federation.client_fn(7)
    assert client.node_id == 7
