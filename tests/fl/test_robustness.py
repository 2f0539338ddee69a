"""Robust rules keep a federation learning when a fifth of its clients poison their updates.

Digits, 30 clients holding IID shares, all of them in every round, softmax regression. Six
clients (20%) send ``received - 10 * u`` in place of their honest update ``u``: FedAvg's average
then steps backwards and the model collapses to chance, while the coordinate-wise median, the
trimmed mean, Krum, Multi-Krum and Bulyan stay within 5 points of the clean run's accuracy.
"""

from __future__ import annotations

import pytest

from fedbus.fl import Client, FedAvg, Server, Strategy
from fedbus.fl.attacks import AttackedTrainer, choose_attackers
from fedbus.fl.strategy.robust import Bulyan, Krum, Median, MultiKrum, TrimmedMean
from fedbus.run.config import load_config
from fedbus.run.federation import Federation, build_federation
from fedbus.runtime.simulation import Simulation

NUM_CLIENTS = 30
NUM_ROUNDS = 80
ATTACKERS = choose_attackers(NUM_CLIENTS, 0.2, seed=0)
NUM_MALICIOUS = len(ATTACKERS)
# A negative boost: each attacker pushes ten honest steps backwards, which outweighs the
# 24 honest clients' forward steps in an average (24 - 6 * 10 < 0).
ATTACK_SCALE = -10.0


@pytest.fixture(scope="module")
def federation() -> Federation:
    config = load_config(
        None,
        [
            "data.dataset=digits",
            "data.partition=iid",
            f"federation.num_clients={NUM_CLIENTS}",
            f"federation.clients_per_round={NUM_CLIENTS}",
            f"federation.num_rounds={NUM_ROUNDS}",
            "federation.evaluate_every=0",
            "federation.seed=0",
            "trainer.epochs=1",
            "trainer.batch_size=32",
            "trainer.lr=0.5",
        ],
    )
    return build_federation(config)


def final_accuracy(federation: Federation, strategy: Strategy, attackers: frozenset[int]) -> float:
    """Run the configured federation with ``strategy``; ``attackers`` send scaled updates."""

    def client_fn(node_id: int) -> Client:
        client = federation.client_fn(node_id)
        if node_id not in attackers:
            return client
        return Client(AttackedTrainer(client.trainer, "scale", scale=ATTACK_SCALE), node_id)

    configured = federation.server
    server = Server(
        strategy,
        federation.model.init(seed=0),
        num_rounds=NUM_ROUNDS,
        clients_per_round=NUM_CLIENTS,
        train_config=configured.train_config,
        evaluate_fn=configured.evaluate_fn,
        evaluate_every=0,
        seed=0,
    )
    Simulation(server, client_fn, num_clients=NUM_CLIENTS, seed=0).run()
    assert server.finished
    assert [record.clients_replied for record in server.history] == [NUM_CLIENTS] * NUM_ROUNDS
    accuracy = server.history[-1].test_accuracy
    assert accuracy is not None
    return accuracy


@pytest.fixture(scope="module")
def clean_accuracy(federation: Federation) -> float:
    return final_accuracy(federation, FedAvg(), frozenset())


def test_a_fifth_of_the_clients_attack() -> None:
    assert NUM_MALICIOUS == 6
    assert ATTACKERS.issubset(range(1, NUM_CLIENTS + 1))


def test_clean_fedavg_learns_digits(clean_accuracy: float) -> None:
    assert clean_accuracy > 0.88


def test_fedavg_collapses_under_scaled_updates(
    federation: Federation, clean_accuracy: float
) -> None:
    attacked = final_accuracy(federation, FedAvg(), ATTACKERS)
    assert attacked < clean_accuracy - 0.30
    assert attacked < 0.2  # about chance among 10 classes


@pytest.mark.parametrize(
    "strategy",
    [
        Median(),
        TrimmedMean(trim_fraction=0.25),
        Krum(num_malicious=NUM_MALICIOUS),
        MultiKrum(num_malicious=NUM_MALICIOUS),
        Bulyan(num_malicious=NUM_MALICIOUS),
    ],
    ids=lambda strategy: strategy.name,
)
def test_robust_rules_resist_scaled_updates(
    federation: Federation, clean_accuracy: float, strategy: Strategy
) -> None:
    attacked = final_accuracy(federation, strategy, ATTACKERS)
    assert attacked >= clean_accuracy - 0.05
