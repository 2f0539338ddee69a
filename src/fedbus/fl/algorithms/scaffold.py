"""SCAFFOLD (Karimireddy et al., 2020): local steps corrected by control variates.

Client drift on non-IID data comes from each client following its own gradient. SCAFFOLD keeps a
control variate per client (``c_i``, an estimate of its gradient) and one on the server (``c``,
their average) and adds ``c - c_i`` to every local gradient step. The variates are exchanged as
records of their own, on a message type of their own::

    server                                             client i
      | -- scaffold_train {arrays: x, control: c, config} --> |  c_i from its state (zeros at first)
      |                                                        |  K steps of SGD at lr on
      |                                                        |    grad + (c - c_i)  -> y_i
      |                                                        |  c_i+ = c_i - c + (x - y_i)/(K lr)
      | <-- reply {arrays: y_i, control_delta: c_i+ - c_i} --- |  keeps c_i+ in its state store
      |
    x <- x + server_lr * (weighted mean of y_i - x)
    c <- c + |S| / N * mean(control_delta)        (S: the clients that replied, N: all clients)

``c_i+`` is the paper's option II. A round that is retried or aborted leaves ``c`` untouched: the
server variate changes only when a round's aggregate is taken.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np

from fedbus.errors import ConfigError, InvalidArgumentError
from fedbus.fl.client import Client, request_config, train_reply_content
from fedbus.fl.protocol import model_content, read_arrays
from fedbus.fl.registry import register_strategy, server_lr_option
from fedbus.fl.strategy.base import Strategy, check_parameter
from fedbus.fl.strategy.fedavg import WeightedAverage
from fedbus.message import ArrayRecord, ConfigRecord, Message, RecordDict
from fedbus.train.base import Arrays, LocalTerms, Trainer
from fedbus.worker import SERVER_ROLE

__all__ = ["CONTROL", "CONTROL_DELTA", "SCAFFOLD_TRAIN", "Scaffold", "ScaffoldClient"]

#: The message type of a SCAFFOLD training request (and of its reply).
SCAFFOLD_TRAIN: Final = "scaffold_train"
#: Record names: the server's control variate (request), the client's change of its own (reply).
CONTROL: Final = "control"
CONTROL_DELTA: Final = "control_delta"
#: Name of the client's control variate in its ``ClientStateStore``.
CLIENT_CONTROL: Final = "scaffold.control"
_STATE_PREFIX: Final = "control:"


class Scaffold(Strategy):
    """The server side of SCAFFOLD: FedAvg on the models, plus the server control variate.

    Parameters
    ----------
    num_clients
        ``N``, the number of clients in the federation: the server variate moves by the
        fraction of them that took part in a round.
    server_lr
        Global step size on the averaged model change (1.0: the model becomes the average).

    Examples
    --------
    >>> strategy = Scaffold(num_clients=100)
    >>> strategy.name, strategy.train_message_type
    ('scaffold', 'scaffold_train')
    """

    name = "scaffold"
    train_message_type = SCAFFOLD_TRAIN
    # control variates are corrections of the current model: a stale one would misdirect
    synchronous_only = True

    def __init__(self, num_clients: int, server_lr: float = 1.0) -> None:
        if isinstance(num_clients, bool) or not isinstance(num_clients, int) or num_clients < 1:
            raise InvalidArgumentError(
                f"Scaffold: num_clients must be an int >= 1, got {num_clients!r}"
            )
        self.num_clients = num_clients
        self.server_lr = check_parameter(self, "server_lr", server_lr, "> 0", lambda x: x > 0)
        #: The server control variate ``c``, shaped like the model; None before round 1.
        self.control: Arrays | None = None

    def configure_train(
        self,
        server_round: int,
        arrays: ArrayRecord,
        config: ConfigRecord,
        node_ids: Sequence[int],
    ) -> RecordDict:
        """The model, the server control variate and the settings, shared by every client."""
        if self.control is None:
            self.control = {
                name: np.zeros_like(value) for name, value in arrays.to_numpy_dict().items()
            }
        content = model_content(arrays, config)
        content[CONTROL] = ArrayRecord(self.control)
        return content

    def start_aggregation(self, server_round: int, arrays: ArrayRecord) -> _ScaffoldAggregator:
        """Averages the models and the control variate changes of this round's replies."""
        return _ScaffoldAggregator(self, arrays)

    def state(self) -> dict[str, np.ndarray[Any, Any]]:
        """The server control variate, each array under ``"control:<name>"``."""
        return {_STATE_PREFIX + name: value for name, value in (self.control or {}).items()}

    def load_state(self, state: Mapping[str, np.ndarray[Any, Any]]) -> None:
        """Restore the server control variate that ``state()`` returned."""
        strange = sorted(key for key in state if not key.startswith(_STATE_PREFIX))
        if strange:
            raise InvalidArgumentError(f"Scaffold.load_state: unknown entries {strange}")
        control = {key.removeprefix(_STATE_PREFIX): np.array(value) for key, value in state.items()}
        self.control = control or None

    def _apply(self, deltas: Arrays, count: int) -> None:
        assert self.control is not None
        share = count / self.num_clients
        for name, total in deltas.items():
            updated = self.control[name] + share * total / count
            self.control[name] = updated.astype(self.control[name].dtype)


class _ScaffoldAggregator:
    """FedAvg's streaming average of the models, and a running sum of the variate changes."""

    def __init__(self, strategy: Scaffold, arrays: ArrayRecord) -> None:
        self._strategy = strategy
        self._global = arrays
        self._average = WeightedAverage(arrays)
        self._deltas: Arrays = {}
        self._count = 0

    def add(self, node_id: int, content: RecordDict) -> None:
        delta = content.get(CONTROL_DELTA)
        if not isinstance(delta, ArrayRecord):
            raise InvalidArgumentError(
                f"node {node_id}: a SCAFFOLD reply needs an ArrayRecord {CONTROL_DELTA!r}, "
                f"found {list(content)}"
            )
        changes = delta.to_numpy_dict()
        control = self._strategy.control or {}
        if changes.keys() != control.keys() or any(
            changes[name].shape != control[name].shape for name in changes
        ):
            raise InvalidArgumentError(
                f"node {node_id}: {CONTROL_DELTA} has arrays "
                f"{ {name: value.shape for name, value in changes.items()} }; the model has "
                f"{ {name: value.shape for name, value in control.items()} }"
            )
        self._average.add(node_id, content)  # checks the model before anything is summed
        for name, change in changes.items():
            if name in self._deltas:
                self._deltas[name] += change.astype(np.float64)
            else:
                self._deltas[name] = change.astype(np.float64)
        self._count += 1

    def result(self) -> tuple[ArrayRecord, dict[str, float]]:
        averaged, metrics = self._average.result()
        if self._count:
            self._strategy._apply(self._deltas, self._count)
        server_lr = self._strategy.server_lr
        if server_lr == 1.0:
            return averaged, metrics
        start, target = self._global.to_numpy_dict(), averaged.to_numpy_dict()
        stepped = {
            name: (value + server_lr * (target[name].astype(np.float64) - value)).astype(
                value.dtype
            )
            for name, value in start.items()
        }
        return ArrayRecord(stepped), metrics


class ScaffoldClient(Client):
    """A client that also answers ``scaffold_train``: corrected local steps, its own variate.

    Everything else (``train``, ``evaluate``, ``finish``) is the standard ``Client``'s. The
    client's control variate lives in its state store under ``"scaffold.control"``.

    The trainer must take ``LocalTerms`` (the built-in ones do) and report ``"steps"``; the
    learning rate comes from the request's config (``"lr"``) or the trainer's ``lr``.
    """

    def __init__(self, trainer: Trainer, node_id: int | None = None, **options: Any) -> None:
        super().__init__(trainer, node_id, **options)
        self.register_handlers(
            SCAFFOLD_TRAIN, self.on_scaffold_train, senders=[SERVER_ROLE], replies=False
        )

    def on_scaffold_train(self, message: Message) -> Message | None:
        """Train with the control variate correction and reply with the variate's change."""
        content = message.content
        received = read_arrays(content).to_numpy_dict()
        server_control = _read_control(content)
        config = request_config(message)
        own = self.state.get(self.node_id, CLIENT_CONTROL)
        if own is None:
            own = {name: np.zeros_like(value) for name, value in server_control.items()}
        correction = {name: server_control[name] - own[name] for name in server_control}
        arrays, num_examples, metrics = self.fit(
            received, config, LocalTerms(correction=correction)
        )
        scale = 1.0 / (_steps(metrics) * self._learning_rate(config))
        updated = {
            name: (
                own[name] - server_control[name] + scale * (received[name] - arrays[name])
            ).astype(own[name].dtype)
            for name in own
        }
        self.state.put(self.node_id, CLIENT_CONTROL, updated)
        reply = train_reply_content(arrays, num_examples, metrics)
        reply[CONTROL_DELTA] = ArrayRecord({name: updated[name] - own[name] for name in own})
        return message.create_reply(reply)

    def _learning_rate(self, config: dict[str, object]) -> float:
        lr = config.get("lr", getattr(self.trainer, "lr", None))
        if isinstance(lr, bool) or not isinstance(lr, int | float) or not lr > 0:
            raise ConfigError(
                "SCAFFOLD needs the clients' learning rate: send 'lr' in the train config "
                f"or give the trainer an 'lr' attribute (got {lr!r})"
            )
        return float(lr)


def _read_control(content: RecordDict) -> Arrays:
    record = content.get(CONTROL)
    if not isinstance(record, ArrayRecord):
        raise InvalidArgumentError(
            f"a {SCAFFOLD_TRAIN} request needs an ArrayRecord {CONTROL!r}, found {list(content)}"
        )
    return record.to_numpy_dict()


def _steps(metrics: Mapping[str, float]) -> int:
    steps = metrics.get("steps")
    if isinstance(steps, bool) or not isinstance(steps, int | float) or not steps >= 1:
        raise InvalidArgumentError(
            f"SCAFFOLD needs the trainer to report 'steps' >= 1 in its metrics, got {steps!r}"
        )
    return int(steps)


register_strategy(
    "scaffold",
    Scaffold,
    lambda settings: Scaffold(settings["federation.num_clients"], **server_lr_option(settings)),
    client=ScaffoldClient,
)
