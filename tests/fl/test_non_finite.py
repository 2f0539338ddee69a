"""A client that sends NaN or infinite values never poisons the global model.

Twenty clients on digits, all sampled every round; two of them send every value NaN (or +inf).
Every server refuses such an update as that client's failure, logs it with the node id, and
aggregates the others: the model stays finite and learns as the clean run does, under plain
averaging (FedAvg, FedProx) and adaptive server optimisers (FedAdam) alike.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from fedbus.fl.attacks import choose_attackers
from fedbus.run.config import load_config
from fedbus.run.federation import build_federation

NUM_CLIENTS = 20
NUM_ROUNDS = 15
BASE = [
    "data.dataset=digits",
    "data.partition=iid",
    f"federation.num_clients={NUM_CLIENTS}",
    f"federation.clients_per_round={NUM_CLIENTS}",
    f"federation.num_rounds={NUM_ROUNDS}",
    "federation.evaluate_every=0",
    "trainer.epochs=1",
    "trainer.batch_size=32",
    "trainer.lr=0.5",
]


def final_accuracy(strategy: str, attack: str) -> tuple[float, list[int], object]:
    options = [*BASE, f"strategy.name={strategy}"]
    if strategy == "fedadam":
        options += ["strategy.server_lr=0.05"]
    if attack != "none":
        options += [f"attack.kind={attack}", "attack.fraction=0.1"]
    federation = build_federation(load_config(None, options))
    federation.simulation.run()
    server = federation.server
    assert server.finished, server.failure
    accuracy = server.history[-1].test_accuracy
    assert accuracy is not None
    failed = [record.clients_failed for record in server.history]
    return accuracy, failed, server.arrays


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["fedavg", "fedadam", "fedprox"])
@pytest.mark.parametrize("attack", ["nan", "inf"])
def test_non_finite_updates_are_refused_and_the_run_learns(
    strategy: str, attack: str, caplog: pytest.LogCaptureFixture
) -> None:
    clean, clean_failed, _ = final_accuracy(strategy, "none")
    with caplog.at_level(logging.WARNING, logger="fedbus.requests"):
        attacked, failed, arrays = final_accuracy(strategy, attack)
    attackers = choose_attackers(NUM_CLIENTS, 0.1, seed=0)
    assert len(attackers) == 2
    assert clean_failed == [0] * NUM_ROUNDS
    assert failed == [2] * NUM_ROUNDS  # both attackers refused, every round
    assert all(np.isfinite(a).all() for a in arrays.to_numpy_dict().values())  # type: ignore[attr-defined]
    assert abs(attacked - clean) <= 0.02, (attacked, clean)
    refusals = [r.getMessage() for r in caplog.records if "non-finite" in r.getMessage()]
    assert {f"node {node_id} failed" in " ".join(refusals) for node_id in attackers} == {True}


def test_check_finite_reads_every_float_kind() -> None:
    from fedbus.errors import InvalidArgumentError
    from fedbus.fl.updates import check_finite
    from fedbus.message import ArrayRecord

    check_finite(1, ArrayRecord({"w": np.ones(3, np.float32), "n": np.array([2**62])}))
    for bad in (np.inf, -np.inf, np.nan):
        with pytest.raises(InvalidArgumentError, match="node 4 has non-finite values in 'b'"):
            check_finite(4, ArrayRecord({"w": np.ones(2), "b": np.array([0.5, bad], np.float16)}))
    torch = pytest.importorskip("torch")
    fine = torch.tensor([1.0, -2.5], dtype=torch.bfloat16)
    check_finite(2, ArrayRecord({"t": fine}))
    for bad in (float("inf"), float("-inf"), float("nan")):
        tensor = torch.tensor([1.0, bad], dtype=torch.bfloat16)
        with pytest.raises(InvalidArgumentError, match="non-finite values in 't'"):
            check_finite(2, ArrayRecord({"t": tensor}))
