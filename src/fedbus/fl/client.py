"""``Client``: a worker with the standard flow's client handlers around a ``Trainer``.

Each default handler is a method declared with ``@handler`` (``on_train``, ``on_evaluate``,
``on_finish``, ``on_join``): override one in a subclass, or register handlers for new message
types, to change what a client does. The trainer owns the client's data and knows nothing of
messages: the client turns records into plain arrays and dicts for it, and its results back into
records.
"""

from __future__ import annotations

import logging
import zlib

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
from fedbus.worker import SERVER_NODE_ID, Worker, handler

__all__ = [
    "PROXIMAL_MU",
    "Client",
    "is_request",
    "SEED",
    "plain_config",
    "privatize",
    "proximal_terms",
    "request_config",
    "request_seed",
    "train_reply_content",
]

#: The config key of a request's seed (see ``request_seed``).
SEED = "seed"

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
    noise_seed
        Seed of the noise of local differential privacy, combined with each request's seed
        (``request_seed``). Default (None): fresh entropy from the operating system, drawn only
        when noise is added; a simulation passes a seed so that runs repeat.

    A client keeps nothing on the object from one message to the next: its trainer's shuffle and
    its noise are seeded per request (``request_seed``), and what outlives a round is in
    ``state``. So it is ``portable``: a simulation may answer each message on a fresh copy, in
    another process or on a Ray cluster, with the same result.
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
        noise_seed: int | None = None,
    ) -> None:
        super().__init__(node_id)
        self.trainer = trainer
        self.noise_seed = noise_seed
        self.join_on_start = join_on_start
        self.state = ClientStateStore() if state is None else state

    def on_start(self) -> None:
        """Announce this client to the server when ``join_on_start`` is set."""
        if self.join_on_start:
            self.send(Message(RecordDict(), SERVER_NODE_ID, JOIN))

    @handler(TRAIN)
    def on_train(self, message: Message) -> Message | None:
        """Train the received model on local data and reply with the result."""
        if not is_request(message):
            return None
        _, arrays, num_examples, metrics = self.train_on(message)
        return message.create_reply(train_reply_content(arrays, num_examples, metrics))

    def train_on(self, message: Message) -> tuple[Arrays, Arrays, int, dict[str, float]]:
        """Train on a request's model and config: ``(received, trained, num_examples, metrics)``.

        The trainer gets the request's seed (``request_seed``) in its config. FedProx's pull is
        applied when the config asks for it, and differential privacy's clipping and noise
        (client_clip, local) to the trained arrays.
        """
        content = message.content
        received = read_arrays(content).to_numpy_dict()
        config = request_config(message)
        arrays, num_examples, metrics = self.fit(received, config, proximal_terms(config, received))
        arrays, metrics = privatize(arrays, metrics, received, config, self.noise_rng(config))
        return received, arrays, num_examples, metrics

    def noise_rng(self, config: dict[str, object]) -> np.random.Generator | None:
        """The generator of this request's local noise: seeded from ``noise_seed`` and the
        request's seed, or None (operating-system entropy) when ``noise_seed`` is None."""
        if self.noise_seed is None:
            return None
        # A stream of its own: the trainer's shuffle draws from [seed, request seed] already.
        return np.random.default_rng([self.noise_seed, _as_seed(config.get(SEED, 0)), 0xD1])

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

    @handler(EVALUATE)
    def on_evaluate(self, message: Message) -> Message | None:
        """Evaluate the received model on local test data and reply with the metrics."""
        if not is_request(message):
            return None
        loss, num_examples, metrics = self.trainer.evaluate(
            read_arrays(message.content).to_numpy_dict(), request_config(message)
        )
        self.report_work(num_examples)
        reply_metrics = MetricRecord({**metrics, "loss": loss, "num_examples": num_examples})
        return message.create_reply(RecordDict({METRICS: reply_metrics}))

    @handler(FINISH)
    def on_finish(self, message: Message) -> None:
        """The federation is over: stop."""
        if is_request(message):
            self.stop()

    @handler(JOIN)
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


def request_seed(message: Message) -> int:
    """The seed of one request's randomness (the trainer's shuffle, local noise).

    The config's ``"seed"`` when the server sent one; otherwise derived from the request's group
    id (the round, or the model version, it belongs to). A client seeds its own generators from
    it and from its own seed, so its answer depends on the request alone: the same on a fresh
    copy of the client, in another process, as on one that answered many requests before.
    """
    seed = plain_config(message.content).get(SEED)
    if seed is not None:
        return _as_seed(seed)
    return zlib.crc32(message.metadata.group_id.encode("utf-8"))


def request_config(message: Message) -> dict[str, object]:
    """A request's config as a plain dict, with its ``"seed"`` (``request_seed``) filled in."""
    config = plain_config(message.content)
    config[SEED] = request_seed(message)
    return config


def _as_seed(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{SEED!r}: expected an int >= 0, got {value!r}")
    return value


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
