"""Callbacks and TrainingSettings: order, central evaluation's schedule, early stopping on every
server, a failing callback, and the settings' checks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from fedbus.errors import InvalidArgumentError, InvalidTypeError
from fedbus.fl import (
    AsyncServer,
    Callback,
    CentralEvaluation,
    Client,
    EarlyStopping,
    FedAvg,
    RoundEndFunction,
    RoundRecord,
    Server,
    ServerBase,
    TrainingSettings,
)
from fedbus.fl.protocol import FINISH
from fedbus.fl.secagg import SecAggClient, SecAggServer
from fedbus.runtime.simulation import simulate

Arrays = dict[str, np.ndarray[Any, Any]]


class StepTrainer:
    """Adds 1 to every weight: each round's model is known exactly."""

    def fit(self, arrays: Arrays, config: dict[str, Any]) -> tuple[Arrays, int, dict[str, float]]:
        return {key: value + 1.0 for key, value in arrays.items()}, 10, {"train_loss": 1.0}

    def evaluate(
        self, arrays: Arrays, config: dict[str, Any]
    ) -> tuple[float, int, dict[str, float]]:
        return 0.0, 10, {"accuracy": 0.0}


def scripted(accuracies: list[float]) -> Any:
    """An evaluation that returns the next of ``accuracies`` each time it is called."""
    values: Iterator[float] = iter(accuracies)

    def evaluate(arrays: Arrays) -> tuple[float, dict[str, float]]:
        accuracy = next(values)
        return 1.0 - accuracy, {"accuracy": accuracy}

    return evaluate


class Log(Callback):
    """Notes what it saw, under its name, in a shared list."""

    def __init__(self, name: str, seen: list[tuple[str, int, float | None]]) -> None:
        self.name, self.seen = name, seen

    def on_round_end(self, server: ServerBase, record: RoundRecord) -> None:
        self.seen.append((self.name, record.round, record.test_accuracy))

    def on_run_end(self, server: ServerBase) -> None:
        self.seen.append((self.name, -1, None))


def sync_server(num_rounds: int = 6, **options: Any) -> Server:
    return Server(
        FedAvg(), {"w": np.zeros(2)}, num_rounds=num_rounds, clients_per_round=2, **options
    )


def clients(count: int = 3) -> list[Client]:
    return [Client(StepTrainer()) for _ in range(count)]


def test_callbacks_run_in_order_after_central_evaluation_and_before_on_round_end() -> None:
    seen: list[tuple[str, int, float | None]] = []
    server = sync_server(
        num_rounds=2,
        evaluate_fn=scripted([0.1, 0.2]),
        callbacks=[Log("first", seen), Log("second", seen)],
        on_round_end=lambda record: seen.append(("function", record.round, record.test_accuracy)),
    )
    simulate(server, clients())
    assert seen == [
        ("first", 1, 0.1),
        ("second", 1, 0.1),
        ("function", 1, 0.1),
        ("first", 2, 0.2),
        ("second", 2, 0.2),
        ("function", 2, 0.2),
        ("first", -1, None),
        ("second", -1, None),
    ]
    assert [type(c) for c in server.callbacks] == [CentralEvaluation, Log, Log, RoundEndFunction]


def test_keywords_and_settings_build_the_same_server() -> None:
    evaluate = scripted([0.5] * 10)
    by_keywords = sync_server(num_rounds=3, evaluate_fn=evaluate, evaluate_every=2, seed=4)
    central = by_keywords.callbacks[0]
    assert isinstance(central, CentralEvaluation)
    assert central.every == 2
    settings = TrainingSettings(num_rounds=3, seed=4, callbacks=(central,))
    by_settings = Server(FedAvg(), {"w": np.zeros(2)}, clients_per_round=2, settings=settings)
    assert by_settings.settings == by_keywords.settings
    assert by_settings.min_clients == by_keywords.min_clients == 2


@pytest.mark.parametrize(
    ("every", "evaluated"),
    [(1, [1, 2, 3, 4, 5, 6, 7]), (3, [3, 6, 7]), (0, [7])],
)
def test_central_evaluation_runs_every_k_rounds_and_after_the_last(
    every: int, evaluated: list[int]
) -> None:
    calls: list[float] = []

    def evaluate(arrays: Arrays) -> tuple[float, dict[str, float]]:
        calls.append(float(arrays["w"][0]))
        return 0.5, {"accuracy": 0.9}

    server = sync_server(num_rounds=7, callbacks=[CentralEvaluation(evaluate, every=every)])
    simulate(server, clients())
    assert [r.round for r in server.history if r.test_accuracy is not None] == evaluated
    assert all(r.test_loss is None for r in server.history if r.round not in evaluated)
    # the model evaluated is the one aggregated that round: one step per round
    assert calls == [float(r) for r in evaluated]


def finished_clients(result: Any) -> set[int]:
    return {
        entry.metadata.dst_node_id
        for entry in result.trace
        if entry.event == "delivered" and entry.metadata.message_type == FINISH
    }


def test_early_stopping_ends_the_run_after_patience_rounds_without_improvement() -> None:
    # best 0.6 in round 2; rounds 3 (equal), 4 (worse) and 5 (within min_delta) do not improve
    accuracies = [0.5, 0.6, 0.6, 0.55, 0.605, 0.9, 0.9, 0.9, 0.9, 0.9]
    stopping = EarlyStopping(patience=3, min_delta=0.01)
    server = sync_server(num_rounds=10, evaluate_fn=scripted(accuracies), callbacks=[stopping])
    result = simulate(server, clients())
    assert [r.round for r in server.history] == [1, 2, 3, 4, 5]
    assert server.finished
    assert server.failure is None
    assert server.stopped_early is not None
    assert "test_accuracy has not improved" in server.stopped_early
    assert "best 0.6 in round 2" in server.stopped_early
    assert finished_clients(result) == set(server.participation)
    assert (stopping.best, stopping.best_round, stopping.waited) == (0.6, 2, 3)


def test_an_improvement_resets_the_patience() -> None:
    accuracies = [0.5, 0.4, 0.6, 0.5, 0.4, 0.3]
    server = sync_server(
        num_rounds=6, evaluate_fn=scripted(accuracies), callbacks=[EarlyStopping(patience=2)]
    )
    simulate(server, clients())
    # misses in rounds 2, 4 and 5: the improvement of round 3 restarted the count
    assert [r.round for r in server.history] == [1, 2, 3, 4, 5]
    assert server.stopped_early is not None


def test_early_stopping_watches_a_loss_downwards() -> None:
    losses = iter([3.0, 2.0, 2.5, 2.1, 1.0])
    stopping = EarlyStopping("test_loss", patience=2)
    assert stopping.mode == "min"

    def evaluate(arrays: Arrays) -> tuple[float, dict[str, float]]:
        return next(losses), {"accuracy": 0.0}

    server = sync_server(num_rounds=5, evaluate_fn=evaluate, callbacks=[stopping])
    simulate(server, clients())
    assert [r.round for r in server.history] == [1, 2, 3, 4]
    assert server.stopped_early is not None


def test_patience_zero_never_stops_and_the_last_round_is_no_early_stop() -> None:
    flat = [0.5] * 6
    never = sync_server(
        num_rounds=6, evaluate_fn=scripted(flat), callbacks=[EarlyStopping(patience=0)]
    )
    simulate(never, clients())
    assert len(never.history) == 6
    assert never.stopped_early is None
    assert never.finished
    # patience runs out exactly in the last round: the run simply ends
    last = sync_server(
        num_rounds=3, evaluate_fn=scripted(flat), callbacks=[EarlyStopping(patience=2)]
    )
    simulate(last, clients())
    assert len(last.history) == 3
    assert last.stopped_early is None
    assert last.finished


def test_rounds_without_the_metric_neither_improve_nor_count() -> None:
    server = sync_server(
        num_rounds=9,
        evaluate_fn=scripted([0.5, 0.5, 0.5]),
        evaluate_every=3,
        callbacks=[EarlyStopping(patience=2)],
    )
    simulate(server, clients())
    assert [r.round for r in server.history] == list(range(1, 10))
    assert server.stopped_early is None  # rounds 6 and 9 missed, but 9 is the last


def test_early_stopping_stops_asynchronous_and_secure_servers_alike() -> None:
    flat = [0.5] * 20
    asynchronous = AsyncServer(
        FedAvg(),
        {"w": np.zeros(2)},
        num_rounds=20,
        concurrency=2,
        evaluate_fn=scripted(flat),
        callbacks=[EarlyStopping(patience=2)],
    )
    simulate(asynchronous, clients())
    assert [r.round for r in asynchronous.history] == [1, 2, 3]
    assert asynchronous.finished
    assert asynchronous.stopped_early is not None

    secure = SecAggServer(
        FedAvg(),
        {"w": np.zeros(2)},
        num_rounds=20,
        clients_per_round=3,
        evaluate_fn=scripted(flat),
        callbacks=[EarlyStopping(patience=1)],
    )
    simulate(secure, [SecAggClient(StepTrainer()) for _ in range(3)])
    assert [r.round for r in secure.history] == [1, 2]
    assert secure.finished
    assert secure.stopped_early is not None


class Broken(Callback):
    def on_round_end(self, server: ServerBase, record: RoundRecord) -> None:
        if record.round == 2:
            raise ZeroDivisionError("division by zero")


def test_a_raising_callback_stops_the_run_naming_it_and_the_round() -> None:
    seen: list[tuple[str, int, float | None]] = []
    server = sync_server(num_rounds=5, callbacks=[Broken(), Log("after", seen)])
    result = simulate(server, clients())
    assert not server.finished
    assert server.failure == "round 2: callback Broken() raised ZeroDivisionError: division by zero"
    assert [r.round for r in server.history] == [1, 2]
    assert seen == [("after", 1, None), ("after", -1, None)]  # round 2's stopped at Broken
    assert finished_clients(result) == set(server.participation)


def test_on_round_end_can_still_be_set_after_construction() -> None:
    records: list[RoundRecord] = []
    server = sync_server(num_rounds=2)
    assert server.on_round_end is None
    server.on_round_end = records.append
    simulate(server, clients())
    assert [r.round for r in records] == [1, 2]
    server.on_round_end = None
    assert not any(isinstance(c, RoundEndFunction) for c in server.callbacks)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"num_rounds": 0}, "TrainingSettings: num_rounds must be an integer >= 1, got 0"),
        ({"num_rounds": 3, "first_round": 4}, r"first_round must be in 1\.\.num_rounds, got 4"),
        ({"num_rounds": 3, "min_clients": 0}, "min_clients must be an integer >= 1 or None"),
        ({"num_rounds": 3, "seed": -1}, "seed must be an integer >= 0, got -1"),
        ({"num_rounds": 3, "train_config": [1]}, "train_config must be a mapping"),
    ],
)
def test_settings_say_what_was_wrong(options: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        TrainingSettings(**options)


def test_settings_refuse_what_is_not_a_callback() -> None:
    with pytest.raises(
        InvalidTypeError, match=r"callbacks\[0\] .*got builtin_function_or_method; wrap"
    ):
        TrainingSettings(num_rounds=1, callbacks=(print,))  # type: ignore[arg-type]
    with pytest.raises(InvalidTypeError, match="callbacks must be a list of Callback"):
        sync_server(callbacks=EarlyStopping(patience=1))  # type: ignore[arg-type]


def test_servers_refuse_mixed_missing_and_unknown_shared_options() -> None:
    settings = TrainingSettings(num_rounds=2)
    with pytest.raises(
        InvalidTypeError,
        match=r"settings=TrainingSettings\(\.\.\.\) or the keywords seed, not both",
    ):
        Server(FedAvg(), {"w": np.zeros(2)}, clients_per_round=2, settings=settings, seed=3)
    with pytest.raises(InvalidTypeError, match="missing keyword argument 'num_rounds'"):
        Server(FedAvg(), {"w": np.zeros(2)}, clients_per_round=2)
    with pytest.raises(InvalidTypeError, match="unexpected keyword argument 'num_round'"):
        Server(FedAvg(), {"w": np.zeros(2)}, clients_per_round=2, num_round=2)  # type: ignore[call-arg]
    with pytest.raises(InvalidArgumentError, match="evaluate_every must be an integer >= 0"):
        sync_server(evaluate_every=-1)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: EarlyStopping("accuracy", patience=1), "metric must be one of test_accuracy"),
        (lambda: EarlyStopping(patience=-1), "patience must be an integer >= 0, got -1"),
        (lambda: EarlyStopping(patience=1, min_delta=-0.1), "min_delta must be a finite"),
        (lambda: EarlyStopping(patience=1, mode="up"), "mode must be 'max'"),
        (lambda: CentralEvaluation(lambda arrays: (0.0, {}), every=-2), "every must be"),
    ],
)
def test_callbacks_check_their_parameters(build: Any, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        build()
