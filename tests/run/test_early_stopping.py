"""Early stopping from a configuration: federation.early_stopping_* end a run cleanly, the
summary says why, and the rounds that ran are those of the run without it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedbus.errors import ConfigError
from fedbus.fl import EarlyStopping
from fedbus.run import load_config
from fedbus.run.experiment import run_experiment
from fedbus.run.federation import build_federation
from fedbus.run.outputs import read_metrics

SMALL = [
    "data.dataset=synthetic",
    "federation.num_clients=8",
    "federation.clients_per_round=4",
    "federation.clients_per_evaluation=4",
    "federation.num_rounds=8",
    "run.plot=false",
]


def test_a_configured_run_stops_early_and_says_why(tmp_path: Path) -> None:
    # no round can beat the first by more than 1.0: the run ends after 1 + patience rounds
    options = [
        *SMALL,
        f"run.output_dir={tmp_path}",
        "federation.early_stopping_patience=2",
        "federation.early_stopping_min_delta=1.0",
    ]
    result = run_experiment(load_config(None, options), quiet=True)
    lines = read_metrics(result.run_dir)
    assert [line["round"] for line in lines] == [1, 2, 3]
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["failure"] is None
    assert summary["num_rounds"] == 3
    assert summary["stopped_early"].startswith("early stopping: test_accuracy has not improved")
    # the rounds that ran are exactly those of the run without early stopping
    plain = build_federation(load_config(None, SMALL))
    plain.simulation.run()
    assert [line["test_accuracy"] for line in lines] == [
        record.test_accuracy for record in plain.server.history[:3]
    ]
    assert [line["train_loss"] for line in lines] == [
        record.train_loss for record in plain.server.history[:3]
    ]


def test_early_stopping_is_off_by_default_and_built_from_the_keys() -> None:
    default = build_federation(load_config(None, SMALL)).server
    assert not any(isinstance(c, EarlyStopping) for c in default.callbacks)
    options = [
        *SMALL,
        "federation.federated_evaluate_every=1",
        "federation.early_stopping_patience=3",
        "federation.early_stopping_metric=federated_loss",
        "federation.early_stopping_min_delta=0.01",
    ]
    (stopping,) = [
        c
        for c in build_federation(load_config(None, options)).server.callbacks
        if isinstance(c, EarlyStopping)
    ]
    assert (stopping.metric, stopping.patience, stopping.min_delta, stopping.mode) == (
        "federated_loss",
        3,
        0.01,
        "min",
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            ["federation.early_stopping_metric=federated_accuracy"],
            "needs a federated evaluation: set federation.federated_evaluate_every >= 1",
        ),
        (["federation.evaluate_every=0"], "set evaluate_every >= 1"),
    ],
)
def test_a_metric_the_run_never_measures_is_refused(options: list[str], message: str) -> None:
    config = load_config(None, [*SMALL, "federation.early_stopping_patience=2", *options])
    with pytest.raises(ConfigError, match=message):
        build_federation(config)


def test_the_keys_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"federation\.early_stopping_metric: expected one of"):
        load_config(None, ["federation.early_stopping_metric=accuracy"])
    with pytest.raises(ConfigError, match=r"federation\.early_stopping_patience"):
        load_config(None, ["federation.early_stopping_patience=-1"])
