"""Callbacks: what runs after each aggregation, whatever the server's schedule.

Central evaluation, early stopping and checkpointing are not constructor arguments threaded
through every server: each is a ``Callback`` in the server's ``callbacks``, and every server
(``Server``, ``AsyncServer``, ``SecAggServer``, a schedule of your own on ``ServerBase``) runs
them the same way, in order, when a round ends (``ServerBase.end_round``), before the run
goes on to the next round.

- ``CentralEvaluation``: the global model on held-out data, into ``test_loss`` and
  ``test_accuracy``;
- ``EarlyStopping``: ends the run cleanly once a metric stops improving;
- ``RoundEndFunction``: a plain function of the record (``on_round_end=`` of the servers);
- ``fedbus.run.checkpoint.Checkpointing``: ``checkpoint.npz`` after each round (deployments).

Example
-------
A callback that logs the best accuracy so far::

    class BestAccuracy(Callback):
        def __init__(self) -> None:
            self.best = 0.0

        def on_round_end(self, server: ServerBase, record: RoundRecord) -> None:
            if record.test_accuracy is not None:
                self.best = max(self.best, record.test_accuracy)

    server = Server(FedAvg(), arrays, num_rounds=20, clients_per_round=10,
                    callbacks=[CentralEvaluation(evaluate), BestAccuracy()])
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from fedbus.errors import InvalidArgumentError
from fedbus.fl.record import RECORD_METRICS, RoundRecord

if TYPE_CHECKING:  # callbacks receive the server; the server module imports this one
    from fedbus.fl.server_base import ServerBase

__all__ = [
    "MODES",
    "Callback",
    "CentralEvaluation",
    "EarlyStopping",
    "EvaluateFn",
    "RoundEndFunction",
]

logger = logging.getLogger("fedbus.server")

#: Central evaluation: the global arrays -> (loss, metrics such as {"accuracy": ...}).
EvaluateFn = Callable[[dict[str, np.ndarray[Any, Any]]], tuple[float, dict[str, float]]]
#: Whether a larger (``"max"``) or a smaller (``"min"``) value of a metric is better.
MODES: tuple[str, ...] = ("max", "min")


class Callback:
    """Something to do after each aggregation; subclass it and override the hooks you need.

    A server runs its callbacks in order: each sees the record the previous ones filled.
    A callback that raises stops the run, with ``server.failure`` naming it and its round.
    """

    def on_round_end(self, server: ServerBase, record: RoundRecord) -> None:
        """A round ended: ``server.arrays`` is the new global model, ``record`` its record
        (already in ``server.history``). Fill the record, save something, or call
        ``server.request_stop(reason)`` to end the run after this round."""

    def on_run_end(self, server: ServerBase) -> None:
        """The run ended: ``server.finished`` is True, or ``server.failure`` says why not."""

    def state(self) -> dict[str, Any]:
        """What this callback has learnt from the rounds so far, as JSON data (a resumed run
        restores it with ``load_state``); ``{}`` for one that keeps nothing."""
        return {}

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore what ``state()`` returned."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class CentralEvaluation(Callback):
    """Evaluate the global model on held-out data, into ``test_loss`` and ``test_accuracy``.

    Parameters
    ----------
    evaluate_fn
        The global arrays -> ``(loss, {"accuracy": ...})``.
    every
        Evaluate every ``every`` rounds and after the last one (0: after the last one only).
    """

    def __init__(self, evaluate_fn: EvaluateFn, every: int = 1) -> None:
        if not callable(evaluate_fn):
            raise InvalidArgumentError(
                f"CentralEvaluation: evaluate_fn must be a function of the global arrays, "
                f"got {type(evaluate_fn).__name__}"
            )
        _check_count("CentralEvaluation", "every", every)
        self.evaluate_fn, self.every = evaluate_fn, every

    def on_round_end(self, server: ServerBase, record: RoundRecord) -> None:
        """Evaluate if this round is due."""
        if server.is_due(record.round, self.every):
            loss, metrics = self.evaluate_fn(server.arrays.to_numpy_dict())
            record.test_loss, record.test_accuracy = float(loss), metrics.get("accuracy")

    def __repr__(self) -> str:
        return f"CentralEvaluation(every={self.every})"


class EarlyStopping(Callback):
    """End the run once ``metric`` has not improved for ``patience`` measured rounds.

    The run ends cleanly, as when a strategy's privacy budget is spent: the clients are told
    to finish, ``server.finished`` is True and ``server.stopped_early`` says why. Rounds in
    which the metric was not measured (``CentralEvaluation(every=5)`` between evaluations) are
    skipped: they neither improve nor count.

    Parameters
    ----------
    metric
        A field of ``RoundRecord``: test_accuracy, test_loss, federated_accuracy,
        federated_loss or train_loss.
    patience
        Measured rounds in a row without improvement after which the run ends (0: never).
    min_delta
        How much better than the best so far a value must be to count as an improvement.
    mode
        ``"max"`` (larger is better) or ``"min"``; default: ``"min"`` for a loss, else ``"max"``.

    The callback keeps the best value it saw: give each run an ``EarlyStopping`` of its own.
    """

    def __init__(
        self,
        metric: str = "test_accuracy",
        *,
        patience: int,
        min_delta: float = 0.0,
        mode: str | None = None,
    ) -> None:
        if metric not in RECORD_METRICS:
            raise InvalidArgumentError(
                f"EarlyStopping: metric must be one of {', '.join(RECORD_METRICS)}, got {metric!r}"
            )
        _check_count("EarlyStopping", "patience", patience)
        if isinstance(min_delta, bool) or not (
            isinstance(min_delta, int | float) and math.isfinite(min_delta) and min_delta >= 0
        ):
            raise InvalidArgumentError(
                f"EarlyStopping: min_delta must be a finite number >= 0, got {min_delta!r}"
            )
        mode = ("min" if metric.endswith("loss") else "max") if mode is None else mode
        if mode not in MODES:
            raise InvalidArgumentError(
                f"EarlyStopping: mode must be 'max' (larger is better) or 'min', got {mode!r}"
            )
        self.metric, self.patience, self.min_delta, self.mode = metric, patience, min_delta, mode
        #: The best value so far and the round it was measured in (None before the first).
        self.best: float | None = None
        self.best_round = 0
        #: Measured rounds in a row without improvement.
        self.waited = 0

    def on_round_end(self, server: ServerBase, record: RoundRecord) -> None:
        """Compare this round's metric with the best so far; stop after ``patience`` misses."""
        value = getattr(record, self.metric)
        if value is None or self.patience == 0:
            return
        if self._improves(float(value)):
            self.best, self.best_round, self.waited = float(value), record.round, 0
            return
        self.waited += 1
        if self.waited >= self.patience:
            server.request_stop(
                f"early stopping: {self.metric} has not improved by more than {self.min_delta} "
                f"for {self.waited} rounds (best {self.best:.6g} in round {self.best_round})"
            )

    def state(self) -> dict[str, Any]:
        """The best value so far, its round, and the misses since."""
        return {"best": self.best, "best_round": self.best_round, "waited": self.waited}

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore what ``state()`` returned."""
        try:
            best = state["best"]
            self.best = None if best is None else float(best)
            self.best_round, self.waited = int(state["best_round"]), int(state["waited"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidArgumentError(f"EarlyStopping: unusable state: {exc!r}") from exc

    def _improves(self, value: float) -> bool:
        if self.best is None:
            return True
        if self.mode == "max":
            return value > self.best + self.min_delta
        return value < self.best - self.min_delta

    def __repr__(self) -> str:
        return (
            f"EarlyStopping({self.metric!r}, patience={self.patience}, "
            f"min_delta={self.min_delta}, mode={self.mode!r})"
        )


class RoundEndFunction(Callback):
    """A plain function called with each ``RoundRecord`` (the servers' ``on_round_end=``)."""

    def __init__(self, function: Callable[[RoundRecord], object]) -> None:
        if not callable(function):
            raise InvalidArgumentError(
                f"on_round_end must be a function of the RoundRecord, got {type(function).__name__}"
            )
        self.function = function

    def on_round_end(self, server: ServerBase, record: RoundRecord) -> None:
        """Call the function with ``record``."""
        self.function(record)

    def __repr__(self) -> str:
        name = getattr(self.function, "__qualname__", type(self.function).__name__)
        return f"RoundEndFunction({name})"


def _check_count(owner: str, name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgumentError(f"{owner}: {name} must be an integer >= 0, got {value!r}")
