"""``Client``: a worker with the standard flow's client handlers around a ``Trainer``.

Each default handler is a method (``on_train``, ``on_evaluate``, ``on_finish``, ``on_join``):
override one in a subclass, or register handlers for new message types, to change what a
client does. The trainer owns the client's data and knows nothing of messages: the client turns
records into plain arrays and dicts for it, and its results back into records.
"""

from __future__ import annotations

import logging

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
from fedbus.message import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from fedbus.train.base import Trainer
from fedbus.worker import SERVER_NODE_ID, Worker

__all__ = ["Client"]

logger = logging.getLogger("fedbus.client")


def _is_request(message: Message) -> bool:
    """True for a request; False for an error or a reply that reached a request handler."""
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
    """

    start_sends = (JOIN,)

    def __init__(
        self, trainer: Trainer, node_id: int | None = None, *, join_on_start: bool = False
    ) -> None:
        super().__init__(node_id)
        self.trainer = trainer
        self.join_on_start = join_on_start
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
        if not _is_request(message):
            return None
        content = message.content
        arrays, num_examples, metrics = self.trainer.fit(
            read_arrays(content).to_numpy_dict(), _plain_config(content)
        )
        self.report_work(int(metrics.get("samples_processed", num_examples)))
        reply_metrics = MetricRecord({**metrics, "num_examples": num_examples})
        return message.create_reply(
            RecordDict({ARRAYS: ArrayRecord(arrays), METRICS: reply_metrics})
        )

    def on_evaluate(self, message: Message) -> Message | None:
        """Evaluate the received model on local test data and reply with the metrics."""
        if not _is_request(message):
            return None
        content = message.content
        loss, num_examples, metrics = self.trainer.evaluate(
            read_arrays(content).to_numpy_dict(), _plain_config(content)
        )
        self.report_work(num_examples)
        reply_metrics = MetricRecord({**metrics, "loss": loss, "num_examples": num_examples})
        return message.create_reply(RecordDict({METRICS: reply_metrics}))

    def on_finish(self, message: Message) -> None:
        """The federation is over: stop."""
        if _is_request(message):
            self.stop()

    def on_join(self, message: Message) -> None:
        """The server acknowledged (or refused) this client's join."""
        if message.has_error():
            logger.warning("node %s: join refused: %r", self.node_id, message.error)


def _plain_config(content: RecordDict) -> dict[str, object]:
    record = content.get(CONFIG)
    return dict(record) if isinstance(record, ConfigRecord) else {}
