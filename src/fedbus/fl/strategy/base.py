"""The ``Strategy`` hooks that the one round logic of ``Server`` calls.

A strategy decides what each sampled client is sent and how replies are combined. Aggregation
streams: the server hands each reply to an ``Aggregator`` as it arrives and asks for the result
when the round closes, so a rule that needs only running sums (FedAvg) never holds all client
models at once, while a rule that needs them all (median, Krum) may keep them.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from fedbus.errors import InvalidArgumentError
from fedbus.fl.protocol import (
    ARRAYS,
    EVALUATE,
    METRICS,
    TRAIN,
    model_content,
    read_metrics,
    read_num_examples,
)
from fedbus.fl.updates import model_delta
from fedbus.message import ArrayRecord, ConfigRecord, MetricRecord, PackedList, RecordDict

__all__ = ["Aggregator", "Strategy", "WeightedMetrics", "apply_mean_update", "check_parameter"]


class Aggregator(Protocol):
    """Combines one round's train replies, one at a time."""

    def add(self, node_id: int, content: RecordDict) -> None:
        """Take one client's reply; raise ``InvalidArgumentError`` if it cannot be used."""

    def result(self) -> tuple[ArrayRecord, dict[str, float]]:
        """The new global arrays and aggregated train metrics."""


class WeightedMetrics:
    """Running averages of numeric metrics, weighted by each reply's ``num_examples``."""

    __slots__ = ("_sums", "_weights")

    def __init__(self) -> None:
        self._sums: dict[str, float] = {}
        self._weights: dict[str, int] = {}

    def add(self, metrics: MetricRecord, weight: int) -> None:
        """Add one reply's scalar metrics (lists and ``num_examples`` are skipped)."""
        for key, value in metrics.items():
            if key == "num_examples" or isinstance(value, list | PackedList):
                continue
            self._sums[key] = self._sums.get(key, 0.0) + float(value) * weight
            self._weights[key] = self._weights.get(key, 0) + weight

    def result(self) -> dict[str, float]:
        """The weighted mean of each metric seen with a positive total weight."""
        return {
            key: total / self._weights[key]
            for key, total in self._sums.items()
            if self._weights[key]
        }


class Strategy(ABC):
    """How a round is configured and how replies are aggregated.

    Subclasses implement ``start_aggregation``; the other hooks have working defaults.
    """

    #: Name used in configuration files and outputs.
    name = "strategy"
    #: The message types that carry train and evaluate requests to clients. An algorithm that
    #: exchanges something new (SCAFFOLD's control variates) names its own types, and its
    #: clients register handlers for them.
    train_message_type: str = TRAIN
    evaluate_message_type: str = EVALUATE
    #: True for a strategy written for asynchronous training (FedAsync, FedBuff): only
    #: ``AsyncServer`` runs it. Other strategies run in both servers unless they set
    #: ``synchronous_only``.
    asynchronous: bool = False
    #: True for a strategy whose state assumes every update was computed on the current model
    #: (SCAFFOLD's control variates): ``AsyncServer`` refuses it.
    synchronous_only: bool = False
    #: True for a rule that needs only the (weighted) sum of the updates, never one update on
    #: its own: differential privacy may then noise the sum, and secure aggregation hide the
    #: updates. Median, Krum and the other robust rules need every update.
    aggregates_by_sum: bool = False
    #: Mods every client of this strategy needs, by their names in ``fedbus.fl.mods.MODS``
    #: (FedProx's ``"fedprox"``): a configured run installs them on each client it builds.
    client_mods: tuple[str, ...] = ()

    def client_settings(self) -> dict[str, Any]:
        """Settings this strategy adds to the config of every request it sends (FedProx's
        ``proximal_mu``); none by default."""
        return {}

    def configure_train(
        self,
        server_round: int,
        arrays: ArrayRecord,
        config: ConfigRecord,
        node_ids: Sequence[int],
    ) -> RecordDict | Mapping[int, RecordDict]:
        """What to send to the sampled clients: one content for all (default) or one each.

        The default shares one ``RecordDict`` by reference (no model is copied per client):
        the model, and the config with ``client_settings()`` added.
        """
        return model_content(arrays, self._with_settings(config))

    def _with_settings(self, config: ConfigRecord) -> ConfigRecord:
        settings = self.client_settings()
        return ConfigRecord({**config, **settings}) if settings else config

    @abstractmethod
    def start_aggregation(self, server_round: int, arrays: ArrayRecord) -> Aggregator:
        """A fresh aggregator for this round's train replies (``arrays`` is the global model)."""

    def stale_update(
        self, current: ArrayRecord, base: ArrayRecord, update: ArrayRecord, weight: float
    ) -> ArrayRecord:
        """The model that ``update``, trained from the older ``base``, stands for now that the
        global model is ``current``, discounted by ``weight`` in (0, 1] (asynchronous training).

        The default moves ``current`` by the client's discounted change,
        ``current + weight * (update - base)`` (FedBuff); a fresh update at full weight is
        ``update`` itself, bit for bit. Arrays a client does not send (FedBN's local layers)
        stay out; arithmetic is float64 and each array keeps its dtype.
        """
        if weight == 1.0 and base is current:
            return update
        now_arrays, sent = current.to_numpy_dict(), update.to_numpy_dict()
        moved: dict[str, np.ndarray[Any, Any]] = {}
        for name, change in model_delta(sent, base.to_numpy_dict()).items():
            start = now_arrays[name].astype(np.float64)
            moved[name] = np.asarray(start + weight * change).astype(sent[name].dtype)
        return ArrayRecord(moved)

    def aggregate_sum(
        self,
        server_round: int,
        arrays: ArrayRecord,
        update_sum: Mapping[str, np.ndarray[Any, Any]],
        count: int,
    ) -> ArrayRecord:
        """The new global model from the sum of ``count`` clients' updates (``trained -
        arrays``, by array name): all that secure aggregation lets the server see.

        Only for strategies that ``aggregates_by_sum``. The default hands the mean update to
        this strategy's own aggregator as a single reply: FedAvg applies it, FedAvgM and the
        adaptive optimisers take it as their pseudo-gradient.
        """
        mean = {name: np.asarray(total) / count for name, total in update_sum.items()}
        return apply_mean_update(self, server_round, arrays, mean)

    def report(self, server_round: int) -> dict[str, float]:
        """Numbers this strategy reports for a round that ended (differential privacy's
        epsilon), written into that round's metrics; none by default."""
        return {}

    def stop_reason(self, server_round: int) -> str | None:
        """A reason to end the run cleanly before ``server_round`` starts (a privacy budget
        spent), or None to run it; the default never stops a run."""
        return None

    def check_round_size(self, min_replies: int) -> None:
        """Raise ``InvalidArgumentError`` if rounds aggregating as few as ``min_replies``
        replies cannot work with this strategy (Krum needs ``2f + 3``).

        The server calls it once, when it is built; the default accepts any size.
        """
        return None

    def state(self) -> dict[str, np.ndarray[Any, Any]]:
        """What the strategy carries from one round to the next (a server optimiser's moments).

        A checkpoint saves it with the model, so a resumed run continues exactly; a stateless
        strategy returns ``{}``.
        """
        return {}

    def load_state(self, state: Mapping[str, np.ndarray[Any, Any]]) -> None:
        """Take back what ``state()`` returned (resuming a run)."""
        if state:
            raise InvalidArgumentError(
                f"strategy {self.name!r} keeps no state between rounds, got {sorted(state)}"
            )

    def configure_evaluate(
        self,
        server_round: int,
        arrays: ArrayRecord,
        config: ConfigRecord,
        node_ids: Sequence[int],
    ) -> RecordDict | Mapping[int, RecordDict]:
        """What to send to the clients sampled for federated evaluation (as for training)."""
        return model_content(arrays, self._with_settings(config))

    def aggregate_evaluate(
        self, server_round: int, replies: Sequence[tuple[int, RecordDict]]
    ) -> dict[str, float]:
        """Combine evaluation replies: metrics averaged weighted by ``num_examples``."""
        totals = WeightedMetrics()
        for _, content in replies:
            try:
                totals.add(read_metrics(content), read_num_examples(content))
            except InvalidArgumentError:
                continue
        return totals.result()


def apply_mean_update(
    strategy: Strategy,
    server_round: int,
    arrays: ArrayRecord,
    mean: Mapping[str, np.ndarray[Any, Any]],
) -> ArrayRecord:
    """``arrays`` moved by ``mean`` as ``strategy``'s aggregator would move it for one reply
    ``arrays + mean`` (float64 arithmetic, each array keeping its dtype)."""
    current = arrays.to_numpy_dict()
    if mean.keys() != current.keys():
        raise InvalidArgumentError(
            f"the mean update has arrays {sorted(mean)}; the model has {sorted(current)}"
        )
    moved = {
        name: np.asarray(value.astype(np.float64) + mean[name]).astype(value.dtype)
        for name, value in current.items()
    }
    aggregator = strategy.start_aggregation(server_round, arrays)
    single = RecordDict({ARRAYS: ArrayRecord(moved), METRICS: MetricRecord({"num_examples": 1})})
    aggregator.add(-1, single)
    return aggregator.result()[0]


def check_parameter(
    owner: object, name: str, value: object, expected: str, valid: Callable[[float], bool]
) -> float:
    """``value`` as a float if it is a finite real number that passes ``valid``; else an
    ``InvalidArgumentError`` naming ``owner``'s class, the parameter and what it must be.

    >>> check_parameter(Strategy, "mu", 0.5, ">= 0", lambda x: x >= 0)
    0.5
    """
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not (number and math.isfinite(value) and valid(value)):  # type: ignore[arg-type]
        owner_name = owner.__name__ if isinstance(owner, type) else type(owner).__name__
        raise InvalidArgumentError(
            f"{owner_name}: {name} must be a finite number {expected}, got {value!r}"
        )
    return float(value)  # type: ignore[arg-type]
