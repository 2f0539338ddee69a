"""FedBN (Li et al., 2021) and named local layers: parts of the model that never leave a client.

FedBN keeps batch-normalisation layers local: each client normalises with statistics and scales
of its own data, which helps when clients' feature distributions differ. The same mechanism keeps
any named layers local (a personal classifier head, for instance). Which arrays are local is
said by glob patterns on their names, sent with every request, so clients need no set-up::

    server                                       client i
      | -- train {arrays: w, config: ---------->  |  w with its own local arrays put in
      |      local_layers=["*bn*"]}               |  trained -> keeps the local arrays
      | <-- reply {arrays: shared part only} ---- |
    shared arrays averaged as FedAvg does; local arrays of the global model stay as they were

Evaluation on a client uses its own local arrays; the server's central evaluation uses the global
model's, which never change, so it measures the shared part only.
"""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase
from typing import Any, Final

from fedbus.errors import ConfigError, InvalidArgumentError
from fedbus.fl.client import Client, request_config, train_reply_content
from fedbus.fl.protocol import METRICS, read_arrays
from fedbus.fl.registry import register_strategy
from fedbus.fl.strategy.base import Strategy
from fedbus.fl.strategy.fedavg import WeightedAverage
from fedbus.message import ArrayRecord, Message, MetricRecord, PackedList, RecordDict
from fedbus.train.base import Arrays

__all__ = ["DEFAULT_LOCAL_LAYERS", "LOCAL_LAYERS", "FedBN", "FedBNClient", "is_local"]

#: The config key listing the glob patterns of local array names.
LOCAL_LAYERS: Final = "local_layers"
#: Batch-norm layers, as the built-in torch models name them (``bn1.weight``, ``bn1.running_mean``).
DEFAULT_LOCAL_LAYERS: Final = ("bn*", "*.bn*")
#: Name of a client's local arrays in its ``ClientStateStore``.
LOCAL_STATE: Final = "fedbn.local"


def is_local(name: str, patterns: Sequence[str]) -> bool:
    """Whether the array ``name`` matches one of the glob ``patterns`` (case-sensitive).

    >>> is_local("bn1.running_mean", DEFAULT_LOCAL_LAYERS), is_local("conv1.weight", ("bn*",))
    (True, False)
    """
    return any(fnmatchcase(name, pattern) for pattern in patterns)


class FedBN(Strategy):
    """FedAvg on the shared arrays; arrays matching ``local_layers`` stay on each client.

    Parameters
    ----------
    local_layers
        Glob patterns of the array names that stay local (default: batch-norm layers named
        ``bn*``). A pattern that matches nothing in the model is refused at the first round.

    Examples
    --------
    >>> FedBN(["head.*"]).local_layers
    ('head.*',)
    """

    name = "fedbn"

    def __init__(self, local_layers: Sequence[str] = DEFAULT_LOCAL_LAYERS) -> None:
        self.local_layers = _patterns(local_layers)

    def client_settings(self) -> dict[str, Any]:
        """``local_layers``, added to every request's config: clients need no set-up."""
        return {LOCAL_LAYERS: list(self.local_layers)}

    def start_aggregation(self, server_round: int, arrays: ArrayRecord) -> _SharedAverage:
        """FedAvg over the shared arrays; the global model's local arrays are kept."""
        if not any(is_local(name, self.local_layers) for name in arrays):
            raise InvalidArgumentError(
                f"FedBN: no array of the model matches local_layers {list(self.local_layers)}; "
                f"the model has {sorted(arrays)}"
            )
        return _SharedAverage(arrays, self.local_layers)


class _SharedAverage:
    """A ``WeightedAverage`` of the shared arrays, merged back with the untouched local ones."""

    def __init__(self, arrays: ArrayRecord, patterns: Sequence[str]) -> None:
        everything = arrays.to_numpy_dict()
        self._local = {
            name: value for name, value in everything.items() if is_local(name, patterns)
        }
        shared = {name: value for name, value in everything.items() if name not in self._local}
        self._average = WeightedAverage(ArrayRecord(shared))

    def add(self, node_id: int, content: RecordDict) -> None:
        self._average.add(node_id, content)

    def result(self) -> tuple[ArrayRecord, dict[str, float]]:
        shared, metrics = self._average.result()
        return ArrayRecord({**shared.to_numpy_dict(), **self._local}), metrics


class FedBNClient(Client):
    """A client that keeps the arrays named by the request's ``local_layers`` to itself.

    It replaces the standard ``train`` and ``evaluate`` handlers: before training or evaluating,
    its own local arrays (from its state store) replace those of the received model; after
    training it stores the new local arrays and replies with the shared ones only. Before its
    first round, a client starts from the global model's local arrays.
    """

    def on_train(self, message: Message) -> Message | None:
        """Train with this client's local arrays; reply with the shared arrays only."""
        config = request_config(message)
        patterns = _local_patterns(config)
        model = self._with_local_arrays(read_arrays(message.content).to_numpy_dict())
        arrays, num_examples, metrics = self.fit(model, config)
        local = {name: value for name, value in arrays.items() if is_local(name, patterns)}
        self.state.put(self.node_id, LOCAL_STATE, local)
        shared = {name: value for name, value in arrays.items() if name not in local}
        return message.create_reply(train_reply_content(shared, num_examples, metrics))

    def on_evaluate(self, message: Message) -> Message | None:
        """Evaluate the received model with this client's local arrays put in."""
        config = request_config(message)
        _local_patterns(config)
        model = self._with_local_arrays(read_arrays(message.content).to_numpy_dict())
        loss, num_examples, metrics = self.trainer.evaluate(model, config)
        self.report_work(num_examples)
        reply = MetricRecord({**metrics, "loss": loss, "num_examples": num_examples})
        return message.create_reply(RecordDict({METRICS: reply}))

    def _with_local_arrays(self, received: Arrays) -> Arrays:
        local = self.state.get(self.node_id, LOCAL_STATE) or {}
        return {**received, **{name: value for name, value in local.items() if name in received}}


def _patterns(patterns: object) -> tuple[str, ...]:
    if isinstance(patterns, str) or not isinstance(patterns, Sequence):
        raise InvalidArgumentError(
            f"FedBN: local_layers must be a list of glob patterns, got {patterns!r}"
        )
    result = tuple(patterns)
    if not result or not all(isinstance(pattern, str) and pattern for pattern in result):
        raise InvalidArgumentError(
            f"FedBN: local_layers must be a non-empty list of non-empty strings, got {patterns!r}"
        )
    return result


def _local_patterns(config: dict[str, object]) -> tuple[str, ...]:
    value = config.get(LOCAL_LAYERS)
    if (
        not isinstance(value, list | PackedList)
        or not value
        or not all(isinstance(p, str) for p in value)
    ):
        raise ConfigError(
            f"{LOCAL_LAYERS!r}: a FedBN request needs a non-empty list of glob patterns, "
            f"got {value!r}"
        )
    return tuple(value)


register_strategy(
    "fedbn",
    FedBN,
    lambda settings: FedBN(settings["strategy.local_layers"].split(",")),
    client=FedBNClient,
)
