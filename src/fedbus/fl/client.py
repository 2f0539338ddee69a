"""``Client``: a worker with the standard flow's client handlers around a ``Trainer``.

Each default handler is a method declared with ``@handler`` (``on_train``, ``on_evaluate``,
``on_finish``, ``on_join``): override one in a subclass, or register handlers for new message
types, to change what a client does. The trainer owns the client's data and knows nothing of
messages: the client turns records into plain arrays and dicts for it, and its results back into
records.

What changes a client's training without changing the flow (FedProx's pull, differential
privacy's clipping and noise) is a mod (``fedbus.fl.mods``) installed with ``Client.use``. Mods
hand the training handler two things through the request's ``MessageContext``: ``LocalTerms``
for the trainer (``LOCAL_TERMS``) and filters of the trained update (``UPDATE_FILTERS``), which
``train_on`` applies before the update leaves the client.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Iterable
from typing import Any, Final, TypeAlias, TypeVar

from fedbus.errors import ConfigError
from fedbus.fl.protocol import (
    ARRAYS,
    CONFIG,
    EVALUATE,
    FINISH,
    JOIN,
    METRICS,
    TRAIN,
    read_arrays,
)
from fedbus.fl.state import ClientStateStore
from fedbus.message import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from fedbus.train.base import Arrays, LocalTerms, Trainer
from fedbus.worker import SERVER_NODE_ID, SERVER_ROLE, Worker, handler
from fedbus.worker.mods import MessageContext

__all__ = [
    "CLIENT_STATE",
    "LOCAL_TERMS",
    "UPDATE_FILTERS",
    "Client",
    "SEED",
    "UpdateFilter",
    "add_update_filter",
    "from_server",
    "plain_config",
    "request_config",
    "request_seed",
    "train_reply_content",
]

#: The config key of a request's seed (see ``request_seed``).
SEED = "seed"

#: ``MessageContext`` value: the ``LocalTerms`` the trainer gets for this request (set by a mod,
#: e.g. FedProx's pull toward the received model).
LOCAL_TERMS: Final = "local_terms"
#: ``MessageContext`` value: the client's ``ClientStateStore``, for mods that keep state per client
#: from one round to the next (compression's error feedback), so that it travels with the client.
CLIENT_STATE: Final = "client_state"
#: ``MessageContext`` value: the ``UpdateFilter`` list ``train_on`` applies to the trained
#: arrays, in order, before they leave the client (differential privacy's clipping and noise).
UPDATE_FILTERS: Final = "update_filters"

#: ``filter(received, trained, metrics) -> (trained, metrics)``: what a mod does to a trained
#: update before it leaves the client.
UpdateFilter: TypeAlias = Callable[
    [Arrays, Arrays, dict[str, float]], tuple[Arrays, dict[str, float]]
]

logger = logging.getLogger("fedbus.client")

_F = TypeVar("_F", bound=Callable[..., Any])


def from_server(message_type: str, *, sends: Iterable[str] = ()) -> Callable[[_F], _F]:
    """``@handler`` for a request only the server may send: a client that sends one to another
    client is answered with ``PERMISSION_DENIED``, and replies of the type never reach it."""
    return handler(message_type, sends=sends, senders=[SERVER_ROLE], replies=False)


class Client(Worker):
    """A federated client: trains and evaluates the model it is sent.

    Parameters
    ----------
    trainer
        Trains and evaluates on this client's data (see ``fedbus.train.Trainer``).
    node_id
        The client's id; ``None`` lets the runtime assign it.
    join_on_start
        Send a ``join`` message to the server when the client starts (deployments); in
        simulation the runtime registers clients without messages.
    state
        Where state that outlives a round is kept (SCAFFOLD's control variate, Ditto's personal
        model), keyed by node id: a simulation shares one store among all its clients. Default:
        a store of this client's own, in memory.

    A client keeps nothing on the object from one message to the next: its trainer's shuffle
    (and its mods' randomness) is seeded per request (``request_seed``), and what outlives a round
    is in ``state``. So it is ``portable``: a simulation may answer each message on a fresh copy,
    built by the same factory with the same mods, in another process or on a Ray cluster, with
    the same result.
    """

    start_sends = (JOIN,)
    portable = True

    def __init__(
        self,
        trainer: Trainer,
        node_id: int | None = None,
        *,
        join_on_start: bool = False,
        state: ClientStateStore | None = None,
    ) -> None:
        super().__init__(node_id)
        self.trainer = trainer
        self.join_on_start = join_on_start
        self.state = ClientStateStore() if state is None else state

    def make_context(self) -> MessageContext:
        """A ``MessageContext`` that hands the mods this client's state store (``CLIENT_STATE``)."""
        return MessageContext(self.node_id, {CLIENT_STATE: self.state})

    def on_start(self) -> None:
        """Announce this client to the server when ``join_on_start`` is set."""
        if self.join_on_start:
            self.send(Message(RecordDict(), SERVER_NODE_ID, JOIN))

    @from_server(TRAIN)
    def on_train(self, message: Message) -> Message | None:
        """Train the received model on local data and reply with the result."""
        _, arrays, num_examples, metrics = self.train_on(message)
        return message.create_reply(train_reply_content(arrays, num_examples, metrics))

    def train_on(self, message: Message) -> tuple[Arrays, Arrays, int, dict[str, float]]:
        """Train on a request's model and config: ``(received, trained, num_examples, metrics)``.

        The trainer gets the request's seed (``request_seed``) in its config and the local terms
        the mods set (``fit``); the mods' update filters (``UPDATE_FILTERS``: differential
        privacy's clipping and noise) are then applied to the trained arrays.
        """
        content = message.content
        received = read_arrays(content).to_numpy_dict()
        arrays, num_examples, metrics = self.fit(received, request_config(message))
        context = self.context
        if context is not None:
            for update_filter in context.get(UPDATE_FILTERS, ()):
                arrays, metrics = update_filter(received, arrays, metrics)
        return received, arrays, num_examples, metrics

    def fit(
        self, arrays: Arrays, config: dict[str, object], terms: LocalTerms | None = None
    ) -> tuple[Arrays, int, dict[str, float]]:
        """Run the trainer and report the work to the runtime.

        The trainer gets ``terms`` when given, otherwise the ``LocalTerms`` a mod set for this
        request (``LOCAL_TERMS``: FedProx's pull), if any.
        """
        if terms is None and self.context is not None:
            terms = self.context.get(LOCAL_TERMS)
        if terms is None:
            result = self.trainer.fit(arrays, config)
        else:
            result = self.trainer.fit(arrays, config, terms)  # type: ignore[call-arg]
        arrays, num_examples, metrics = result
        self.report_work(int(metrics.get("samples_processed", num_examples)))
        return arrays, num_examples, metrics

    @from_server(EVALUATE)
    def on_evaluate(self, message: Message) -> Message | None:
        """Evaluate the received model on local test data and reply with the metrics."""
        loss, num_examples, metrics = self.trainer.evaluate(
            read_arrays(message.content).to_numpy_dict(), request_config(message)
        )
        self.report_work(num_examples)
        reply_metrics = MetricRecord({**metrics, "loss": loss, "num_examples": num_examples})
        return message.create_reply(RecordDict({METRICS: reply_metrics}))

    @from_server(FINISH)
    def on_finish(self, message: Message) -> None:
        """The federation is over: stop."""
        self.stop()

    # no role may send a client a join request: it only ever receives the server's answer
    @handler(JOIN, senders=())
    def on_join(self, message: Message) -> None:
        """The server acknowledged (or refused) this client's join."""
        if message.has_error():
            logger.warning("node %s: join refused: %r", self.node_id, message.error)

    def save_state(self) -> RecordDict:
        """This client's entries in ``state``, one ArrayRecord per entry name."""
        return RecordDict(
            {name: ArrayRecord(arrays) for name, arrays in self.state.entries(self.node_id).items()}
        )

    def load_state(self, state: RecordDict) -> None:
        """Make ``state`` (from ``save_state``) this client's entries in ``state``."""
        self.state.replace_entries(
            self.node_id,
            {name: record.to_numpy_dict() for name, record in state.array_records.items()},
        )


def request_seed(message: Message) -> int:
    """The seed of one request's randomness (the trainer's shuffle, local noise).

    The config's ``"seed"`` when the server sent one; otherwise derived from the request's group
    id (the round, or the model version, it belongs to). A client seeds its own generators from
    it and from its own seed, so its answer depends on the request alone: the same on a fresh
    copy of the client, in another process, as on one that answered many requests before.
    """
    return _seed_of(message, plain_config(message.content))


def request_config(message: Message) -> dict[str, object]:
    """A request's config as a plain dict, with its ``"seed"`` (``request_seed``) filled in."""
    config = plain_config(message.content)
    config[SEED] = _seed_of(message, config)
    return config


def _seed_of(message: Message, config: dict[str, object]) -> int:
    seed = config.get(SEED)
    if seed is not None:
        return _as_seed(seed)
    return zlib.crc32(message.metadata.group_id.encode("utf-8"))


def _as_seed(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{SEED!r}: expected an int >= 0, got {value!r}")
    return value


def plain_config(content: RecordDict) -> dict[str, object]:
    """The ``config`` record of a request as a plain dict (empty when there is none)."""
    record = content.get(CONFIG)
    return dict(record) if isinstance(record, ConfigRecord) else {}


def add_update_filter(context: MessageContext, update_filter: UpdateFilter) -> None:
    """Have ``train_on`` apply ``update_filter`` to this request's trained update (mods call
    this; filters run in the order they were added)."""
    context.values.setdefault(UPDATE_FILTERS, []).append(update_filter)


def train_reply_content(arrays: Arrays, num_examples: int, metrics: dict[str, float]) -> RecordDict:
    """The content of a reply to ``train``: the local model and its metrics."""
    reply_metrics = MetricRecord({**metrics, "num_examples": num_examples})
    return RecordDict({ARRAYS: ArrayRecord(arrays), METRICS: reply_metrics})
