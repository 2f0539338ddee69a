"""SecAgg+ as a message flow: the unmasked sum equals the plain sum with and without dropouts at
every stage, rounds below the threshold fail cleanly, and what the server sees of one client
does not depend on that client's input."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from fedbus.errors import InvalidArgumentError
from fedbus.fl import FedAvg, RoundRecord
from fedbus.fl.secagg import protocol as p
from fedbus.fl.secagg.client import SecAggClient
from fedbus.fl.secagg.server import SecAggServer
from fedbus.fl.strategy import Median
from fedbus.message import Message
from fedbus.runtime.simulation import simulate

Arrays = dict[str, np.ndarray]


class FixedUpdate:
    """Moves every array by a fixed, client-specific step: the plain mean is known exactly."""

    def __init__(self, step: np.ndarray) -> None:
        self.step = step

    def fit(self, arrays: Arrays, config: dict[str, Any]) -> tuple[Arrays, int, dict[str, float]]:
        return {"w": arrays["w"] + self.step}, 10, {"samples_processed": 10, "train_loss": 0.0}

    def evaluate(
        self, arrays: Arrays, config: dict[str, Any]
    ) -> tuple[float, int, dict[str, float]]:
        return 0.0, 10, {"accuracy": 0.0}


class DropsAt(SecAggClient):
    """A client that stops answering at one stage: its handler fails there."""

    def __init__(self, trainer: FixedUpdate, stage: str) -> None:
        super().__init__(trainer)
        self.stage = stage
        self.register_handlers(stage, self._drop, replace=True)

    def _drop(self, message: Message) -> None:
        raise RuntimeError(f"dropped out at {self.stage}")


def steps(count: int, size: int = 50, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.uniform(-0.5, 0.5, size) for _ in range(count)]


def federation(
    updates: list[np.ndarray], drops: dict[int, str] | None = None, **options: Any
) -> tuple[SecAggServer, list[SecAggClient]]:
    drops = drops or {}
    clients: list[SecAggClient] = [
        DropsAt(FixedUpdate(step), drops[i]) if i in drops else SecAggClient(FixedUpdate(step))
        for i, step in enumerate(updates)
    ]
    settings: dict[str, Any] = {
        "num_rounds": 1,
        "clients_per_round": len(updates),
        "evaluate_every": 0,
        "clip_range": 1.0,
        "bits": 40,
    }
    settings.update(options)
    server = SecAggServer(FedAvg(), {"w": np.zeros(updates[0].size)}, **settings)
    return server, clients


def step_of_quantisation(count: int, bits: int = 40) -> float:
    from fedbus.fl.secagg.quantize import Quantizer

    return Quantizer(1.0, bits, count).step


def test_the_unmasked_sum_equals_the_plain_sum() -> None:
    updates = steps(12)
    server, clients = federation(updates)
    simulate(server, clients, check_serialization=True)
    assert server.finished
    assert not server.secagg_failures
    expected = np.mean(updates, axis=0)
    np.testing.assert_allclose(
        server.arrays.to_numpy_dict()["w"], expected, rtol=0, atol=step_of_quantisation(12)
    )
    (record,) = server.history
    assert (record.clients_sampled, record.clients_replied, record.clients_failed) == (12, 12, 0)


@pytest.mark.parametrize("stage", p.STAGES)
def test_dropouts_at_every_stage_leave_the_sum_of_the_others(stage: str) -> None:
    updates = steps(12, seed=1)
    gone = {3: stage, 8: stage}
    server, clients = federation(updates, gone, degree=6, threshold=4)
    simulate(server, clients)
    assert server.finished
    assert not server.secagg_failures, server.secagg_failures
    (record,) = server.history
    if stage == p.SECAGG_UNMASK:
        # they sent masked inputs, so their updates are in the sum; the others unmask them
        survivors = list(range(12))
    else:
        survivors = [i for i in range(12) if i not in gone]
    assert record.clients_replied == len(survivors)
    expected = np.mean([updates[i] for i in survivors], axis=0)
    np.testing.assert_allclose(
        server.arrays.to_numpy_dict()["w"], expected, rtol=0, atol=step_of_quantisation(12)
    )


def test_below_the_threshold_the_round_fails_cleanly_and_the_next_one_runs() -> None:
    updates = steps(8, seed=2)
    # five of eight drop after sending their masked input: too few shares come back
    gone = dict.fromkeys(range(5), p.SECAGG_UNMASK)
    server, clients = federation(updates, gone, num_rounds=2, degree=7, threshold=5)
    records: list[RoundRecord] = []
    server.on_round_end = records.append
    simulate(server, clients)
    assert server.finished  # the federation went on
    assert [r.round for r in records] == [1, 2]
    assert len(server.secagg_failures) == 2
    assert "fewer than the threshold 5" in server.secagg_failures[0][1]
    np.testing.assert_array_equal(server.arrays.to_numpy_dict()["w"], np.zeros(50))


def test_a_masked_input_does_not_depend_on_the_clients_update() -> None:
    """Two runs, different inputs for client 1, the same other randomness: the server's view of
    client 1's masked vector is uniform either way (its masks hide the input)."""
    bits = 40
    seen: list[np.ndarray] = []
    for value in (0.0, 0.9):
        updates = steps(6, size=4000, seed=3)
        updates[0] = np.full(4000, value)
        server, clients = federation(updates, bits=bits)
        original = server._add_masked

        def spy(
            state: Any, node: int, content: Any, original: Any = original, first: Any = clients[0]
        ) -> None:
            if node == first.node_id:
                seen.append(content.get("masked").to_numpy_dict()["y"].copy())
            original(state, node, content)

        server._add_masked = spy  # type: ignore[method-assign]
        simulate(server, clients)
        assert server.finished
    for masked in seen:
        # uniform in [0, 2**bits): mean and spread of a uniform variable, within 5 standard errors
        scaled = masked / 2**bits
        assert abs(scaled.mean() - 0.5) < 5 * (1 / 12) ** 0.5 / len(scaled) ** 0.5
        assert abs(scaled.std() - (1 / 12) ** 0.5) < 0.02
    # and the two views differ everywhere, though the inputs differ by a constant
    assert np.mean(seen[0] != seen[1]) > 0.99


def test_the_server_refuses_rules_that_need_every_update() -> None:
    with pytest.raises(InvalidArgumentError, match="secure aggregation hides"):
        SecAggServer(Median(), {"w": np.zeros(2)}, num_rounds=1, clients_per_round=4)
    with pytest.raises(InvalidArgumentError, match=r"threshold must be in 1\.\.degree"):
        SecAggServer(
            FedAvg(), {"w": np.zeros(2)}, num_rounds=1, clients_per_round=4, degree=2, threshold=3
        )


def test_the_flow_passes_the_message_flow_check() -> None:
    from fedbus.runtime.simulation import Simulation

    server, clients = federation(steps(4))
    flow = Simulation(server, clients).message_flow()
    flow.check()
    assert set(p.STAGES) <= set(flow.handled["client"])


# -- from a configuration, in simulation and over gRPC ------------------------------------------
SECURE = [
    "privacy.secure_aggregation=true",
    "federation.num_rounds=20",
    "federation.clients_per_round=20",
    "privacy.secagg_clip_range=0.5",
]


def test_secure_aggregation_from_a_config_learns_like_plain_fedavg() -> None:
    from fedbus.run import load_config
    from fedbus.run.federation import build_federation

    secure = build_federation(load_config(None, SECURE))
    secure.simulation.run()
    assert isinstance(secure.server, SecAggServer)
    assert secure.server.finished
    plain = build_federation(load_config(None, SECURE[1:]))
    plain.simulation.run()
    # uniform weights and quantisation: close to FedAvg, not equal
    secure_accuracy = secure.server.history[-1].test_accuracy
    plain_accuracy = plain.server.history[-1].test_accuracy
    assert secure_accuracy is not None
    assert plain_accuracy is not None
    assert secure_accuracy > 0.85
    assert abs(secure_accuracy - plain_accuracy) < 0.05


def test_secure_aggregation_with_client_clipped_differential_privacy() -> None:
    from fedbus.run import load_config
    from fedbus.run.federation import build_federation

    options = [*SECURE, "privacy.mode=client_clip", "privacy.noise_multiplier=0.5"]
    federation = build_federation(load_config(None, options))
    federation.simulation.run()
    history = federation.server.history
    assert federation.server.finished
    assert history[-1].strategy_metrics["epsilon"] > 0
    assert history[-1].test_accuracy is not None
    assert history[-1].test_accuracy > 0.8


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["strategy.name=median"], "secure aggregation hides"),
        (["privacy.mode=central"], "cannot clip"),
        (["aggregation.trigger=goal", "strategy.name=fedbuff"], "synchronous rounds"),
        (["strategy.name=scaffold"], "clients of its own"),
    ],
)
def test_configurations_secure_aggregation_cannot_run_are_refused(
    options: list[str], message: str
) -> None:
    from fedbus.errors import ConfigError
    from fedbus.run import load_config
    from fedbus.run.federation import build_federation

    with pytest.raises(ConfigError, match=message):
        build_federation(load_config(None, ["data.dataset=synthetic", *SECURE, *options]))


def test_secagg_over_grpc_gives_the_simulations_model() -> None:
    from fedbus.runtime.grpc import run_local

    updates = steps(6, seed=7)
    simulated, clients = federation(updates, num_rounds=2)
    simulate(simulated, clients)
    deployed, clients = federation(updates, num_rounds=2)
    run_local(deployed, clients, timeout=60)
    assert deployed.finished
    np.testing.assert_allclose(
        deployed.arrays.to_numpy_dict()["w"],
        simulated.arrays.to_numpy_dict()["w"],
        rtol=0,
        atol=2 * step_of_quantisation(6),
    )


def test_a_silent_client_is_dropped_when_the_stage_times_out() -> None:
    from fedbus.runtime.simulation import ClientProfile, ProfileTable

    updates = steps(8, seed=9)
    server, clients = federation(updates, stage_timeout=5.0, degree=6, threshold=4)
    # node 3 silently loses every message it receives: only the timeout moves the stage on
    silent = ProfileTable({3: ClientProfile(dropout=1.0)})
    simulate(server, clients, profiles=silent)
    assert server.finished
    assert not server.secagg_failures
    (record,) = server.history
    assert record.clients_replied == 7
    assert record.time >= 5.0  # the first stage waited out its timeout
    expected = np.mean([u for i, u in enumerate(updates) if i != 2], axis=0)
    np.testing.assert_allclose(
        server.arrays.to_numpy_dict()["w"], expected, rtol=0, atol=step_of_quantisation(8)
    )


def test_clients_clip_to_the_privacy_norm_before_masking() -> None:
    """DP's client_clip under secure aggregation: the request carries the clipping norm, the
    clients clip, and the server's recovered mean is the mean of the clipped updates."""
    from fedbus.fl.mods import ClientPrivacy
    from fedbus.fl.privacy import DifferentialPrivacy

    updates = [np.full(4, 0.4), np.full(4, -0.1), np.full(4, 0.05), np.full(4, 0.3)]
    strategy = DifferentialPrivacy(
        FedAvg(), mode="client_clip", clipping_norm=0.2, noise_multiplier=0.0,
        num_clients=4, clients_per_round=4,
    )  # fmt: skip
    # the privacy mod clips in train_on, before the client masks its update
    clients = [SecAggClient(FixedUpdate(step)).use(ClientPrivacy()) for step in updates]
    server = SecAggServer(
        strategy, {"w": np.zeros(4)}, num_rounds=1, clients_per_round=4, evaluate_every=0,
        clip_range=1.0, bits=40,
    )  # fmt: skip
    simulate(server, clients)
    assert server.finished
    clipped = [u * min(1.0, 0.2 / np.linalg.norm(u)) for u in updates]
    np.testing.assert_allclose(
        server.arrays.to_numpy_dict()["w"], np.mean(clipped, axis=0), rtol=0, atol=1e-9
    )
