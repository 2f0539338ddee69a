"""The handler-model example runs, passes the flow check and learns."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from ..conftest import load_module

EXAMPLE = Path(__file__).parents[2] / "examples" / "new_message_type.py"


@pytest.fixture(scope="module")
def example() -> ModuleType:
    return load_module(EXAMPLE, "new_message_type")


def test_example_reaches_its_stated_accuracy_while_skipping_updates(example: ModuleType) -> None:
    outcome = example.run()
    assert len(outcome.accuracy) == 20
    assert outcome.accuracy[-1] >= 0.90
    # drift-triggered training: some clients skip some rounds, so fewer updates travel
    assert outcome.updates_received + outcome.updates_skipped == 20 * 20
    assert 0 < outcome.updates_skipped < outcome.updates_received + outcome.updates_skipped


def test_zero_threshold_trains_every_client_every_round(example: ModuleType) -> None:
    outcome = example.run(num_rounds=5, threshold=0.0)
    assert outcome.updates_skipped == 0
    assert outcome.updates_received == 5 * 20


def test_example_flow_declares_its_types(example: ModuleType) -> None:
    from fedbus.data import PartitionedDataset, load_digits
    from fedbus.train import NumpyTrainer, SoftmaxRegression
    from fedbus.worker import MessageFlow

    dataset = PartitionedDataset.from_arrays(load_digits(), 2, partition="iid")
    model = SoftmaxRegression(dataset.num_features, dataset.num_classes)
    data = dataset.client(0)
    client = example.DriftClient(NumpyTrainer(model, data.x_train, data.y_train), model, 0.5, 2)
    server = example.GradientServer(model, 2, 1, dataset.test_set())
    flow = MessageFlow.from_roles([("server", server), ("client", client)])
    flow.check()
    edges = {(e.sender_role, e.message_type, e.receiver_roles) for e in flow.edges}
    assert ("client", "updated_model", ("server",)) in edges
    assert ("server", "gradients", ("client",)) in edges
    assert flow.unreachable == []
