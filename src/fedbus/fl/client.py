"""``Client``: a worker with the standard flow's client handlers around a ``Trainer``.

Each default handler is a method (``on_train``, ``on_evaluate``, ``on_finish``, ``on_join``):
override one in a subclass, or register handlers for new message types, to change what a
client does. The trainer owns the client's data and knows nothing of messages: the client turns
records into plain arrays and dicts for it, and its results back into records.
"""

from __future__ import annotations

import logging

import numpy as np

from fedbus.errors import ConfigError
from fedbus.fl.privacy.clipping import add_noise, clip_update
from fedbus.fl.privacy.names import CLIPPING_NORM, NOISE_STD, UNCLIPPED
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
from fedbus.worker import SERVER_NODE_ID, Worker

__all__ = [
    "PROXIMAL_MU",
    "Client",
    "is_request",
    "plain_config",
    "privatize",
    "proximal_terms",
    "train_reply_content",
]

#: The ``train`` config key of FedProx's proximal term: the client pulls its weights toward the
#: global model it received with strength ``proximal_mu`` (0: plain local training).
PROXIMAL_MU = "proximal_mu"

logger = logging.getLogger("fedbus.client")


def is_request(message: Message) -> bool:
    """True for a request; False (logged) for an error or a reply that reached a request
    handler: a client handler answers requests only."""
    if message.has_error():
        logger.info("client got an error for its %s message: %r", message.msg_type, message.error)
        return False
    return not message.metadata.reply_to_message_id


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
    noise_rng
        Where the noise of local differential privacy comes from. Default (None): fresh entropy
        from the operating system, drawn only when noise is added; a simulation passes a seeded
        generator so that runs repeat.
    """

    start_sends = (JOIN,)

    def __init__(
        self,
        trainer: Trainer,
        node_id: int | None = None,
        *,
        join_on_start: bool = False,
        state: ClientStateStore | None = None,
        noise_rng: np.random.Generator | None = None,
    ) -> None:
        super().__init__(node_id)
        self.trainer = trainer
        self.noise_rng = noise_rng
        self.join_on_start = join_on_start
        self.state = ClientStateStore() if state is None else state
        self.register_handlers(TRAIN, self.on_train)
        self.register_handlers(EVALUATE, self.on_evaluate)
        self.register_handlers(FINISH, self.on_finish)
        self.register_handlers(JOIN, self.on_join)

    def on_start(self) -> None:
        """Announce this client to the server when ``join_on_start`` is set."""
        if self.join_on_start:
            self.send(Message(RecordDict(), SERVER_NODE_ID, JOIN))

    def on_train(self, message: Message) -> Message | None:
        """Train the received model on local data and reply with the result."""
        if not is_request(message):
            return None
        _, arrays, num_examples, metrics = self.train_on(message.content)
        return message.create_reply(train_reply_content(arrays, num_examples, metrics))

    def train_on(self, content: RecordDict) -> tuple[Arrays, Arrays, int, dict[str, float]]:
        """Train on a request's model and config: ``(received, trained, num_examples, metrics)``.

        FedProx's pull is applied when the config asks for it, and differential privacy's
        clipping and noise (client_clip, local) to the trained arrays.
        """
        received = read_arrays(content).to_numpy_dict()
        config = plain_config(content)
        arrays, num_examples, metrics = self.fit(received, config, proximal_terms(config, received))
        arrays, metrics = privatize(arrays, metrics, received, config, self.noise_rng)
        return received, arrays, num_examples, metrics

    def fit(
        self, arrays: Arrays, config: dict[str, object], terms: LocalTerms | None = None
    ) -> tuple[Arrays, int, dict[str, float]]:
        """Run the trainer (with ``terms`` when given) and report the work to the runtime."""
        if terms is None:
            result = self.trainer.fit(arrays, config)
        else:
            result = self.trainer.fit(arrays, config, terms)  # type: ignore[call-arg]
        arrays, num_examples, metrics = result
        self.report_work(int(metrics.get("samples_processed", num_examples)))
        return arrays, num_examples, metrics

    def on_evaluate(self, message: Message) -> Message | None:
        """Evaluate the received model on local test data and reply with the metrics."""
        if not is_request(message):
            return None
        content = message.content
        loss, num_examples, metrics = self.trainer.evaluate(
            read_arrays(content).to_numpy_dict(), plain_config(content)
        )
        self.report_work(num_examples)
        reply_metrics = MetricRecord({**metrics, "loss": loss, "num_examples": num_examples})
        return message.create_reply(RecordDict({METRICS: reply_metrics}))

    def on_finish(self, message: Message) -> None:
        """The federation is over: stop."""
        if is_request(message):
            self.stop()

    def on_join(self, message: Message) -> None:
        """The server acknowledged (or refused) this client's join."""
        if message.has_error():
            logger.warning("node %s: join refused: %r", self.node_id, message.error)


def privatize(
    arrays: Arrays,
    metrics: dict[str, float],
    received: Arrays,
    config: dict[str, object],
    rng: np.random.Generator | None,
) -> tuple[Arrays, dict[str, float]]:
    """Clip the update to the request's ``clipping_norm`` and add its ``noise_std`` (differential
    privacy's client_clip and local modes); unchanged when the request asks for neither.

    The metrics get ``unclipped`` (1 if the update was within the norm), which adaptive clipping
    counts. Clipped arrays keep their dtypes. Noise comes from ``rng``, or from the operating
    system's entropy when it is None.
    """
    norm = config.get(CLIPPING_NORM)
    if norm is None:
        return arrays, metrics
    if isinstance(norm, bool) or not isinstance(norm, int | float):
        raise ConfigError(f"{CLIPPING_NORM!r}: expected a number > 0, got {norm!r}")
    clipped, unclipped = clip_update(arrays, received, float(norm))
    std = config.get(NOISE_STD, 0.0)
    if isinstance(std, bool) or not isinstance(std, int | float):
        raise ConfigError(f"{NOISE_STD!r}: expected a number >= 0, got {std!r}")
    if std > 0:
        clipped = add_noise(
            clipped, float(std), rng if rng is not None else np.random.default_rng()
        )
    private = {name: clipped[name].astype(value.dtype) for name, value in arrays.items()}
    return private, {**metrics, UNCLIPPED: float(unclipped)}


def plain_config(content: RecordDict) -> dict[str, object]:
    """The ``config`` record of a request as a plain dict (empty when there is none)."""
    record = content.get(CONFIG)
    return dict(record) if isinstance(record, ConfigRecord) else {}


def proximal_terms(config: dict[str, object], anchor: Arrays) -> LocalTerms | None:
    """FedProx's pull toward ``anchor`` when the config asks for it (``proximal_mu > 0``)."""
    mu = config.get(PROXIMAL_MU, 0.0)
    if isinstance(mu, bool) or not isinstance(mu, int | float) or mu < 0:
        raise ConfigError(f"{PROXIMAL_MU!r}: expected a number >= 0, got {mu!r}")
    return LocalTerms(proximal_mu=float(mu), anchor=anchor) if mu > 0 else None


def train_reply_content(arrays: Arrays, num_examples: int, metrics: dict[str, float]) -> RecordDict:
    """The content of a reply to ``train``: the local model and its metrics."""
    reply_metrics = MetricRecord({**metrics, "num_examples": num_examples})
    return RecordDict({ARRAYS: ArrayRecord(arrays), METRICS: reply_metrics})
