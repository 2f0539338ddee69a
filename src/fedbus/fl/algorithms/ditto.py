"""Ditto (Li et al., 2021): a global model for everyone and a personal model for each client.

Each client trains the global model as in FedAvg, and also a personal model of its own, pulled
toward the global one by a proximal term of strength ``lam``. Only the global model travels; the
personal model stays in the client's state store. Ditto exchanges on message types of its own,
so that its evaluation can report both models::

    server                                       client i
      | -- ditto_train {arrays: w, config} -------> |  local training from w         -> w_i
      |                                             |  v_i (its own, w at first) trained with
      |                                             |    lam/2 ||v - w||^2 added      -> v_i+
      | <-- reply {arrays: w_i, metrics} ---------- |  keeps v_i+ in its state store
      | -- ditto_evaluate {arrays: w, config} ----> |  evaluates w and v_i on its test data
      | <-- reply {metrics: accuracy, loss, ------- |
      |      personal_accuracy, personal_loss}      |

The server averages the ``w_i`` as FedAvg does; a federated evaluation's metrics then hold the
global model's accuracy on the clients' data (``accuracy``) next to the personal models'
(``personal_accuracy``).
"""

from __future__ import annotations

from typing import Any, Final

from fedbus.errors import ConfigError
from fedbus.fl.client import Client, request_config, train_reply_content
from fedbus.fl.protocol import METRICS, read_arrays
from fedbus.fl.registry import register_strategy
from fedbus.fl.strategy.base import check_parameter
from fedbus.fl.strategy.fedavg import FedAvg
from fedbus.message import Message, MetricRecord, RecordDict
from fedbus.train.base import Arrays, LocalTerms, Trainer
from fedbus.worker import SERVER_ROLE

__all__ = ["DITTO_EVALUATE", "DITTO_LAMBDA", "DITTO_TRAIN", "Ditto", "DittoClient"]

#: Message types of Ditto's training and evaluation requests.
DITTO_TRAIN: Final = "ditto_train"
DITTO_EVALUATE: Final = "ditto_evaluate"
#: The config key of the proximal strength that pulls a personal model to the global one.
DITTO_LAMBDA: Final = "ditto_lambda"
#: Name of the personal model in a client's ``ClientStateStore``.
PERSONAL_MODEL: Final = "ditto.personal"


class Ditto(FedAvg):
    """The server side of Ditto: FedAvg on the global model, ``lam`` sent to the clients.

    Parameters
    ----------
    lam
        Strength of the pull of each personal model toward the global one (the paper's
        lambda): 0 trains purely local models, large values make them the global model.

    Examples
    --------
    >>> Ditto(lam=0.5).train_message_type
    'ditto_train'
    """

    name = "ditto"
    # the global model is a sum, but DittoClient trains twice and privatizes neither
    aggregates_by_sum = False
    train_message_type = DITTO_TRAIN
    evaluate_message_type = DITTO_EVALUATE

    def __init__(self, lam: float = 0.1) -> None:
        self.lam = check_parameter(self, "lam", lam, ">= 0", lambda value: value >= 0)

    def client_settings(self) -> dict[str, Any]:
        """``ditto_lambda``, added to every request's config."""
        return {DITTO_LAMBDA: self.lam}


class DittoClient(Client):
    """A client that answers Ditto's requests, keeping a personal model in its state store.

    The standard ``train`` and ``evaluate`` handlers stay registered, so the same client also
    takes part in a plain FedAvg run.
    """

    def __init__(self, trainer: Trainer, node_id: int | None = None, **options: Any) -> None:
        super().__init__(trainer, node_id, **options)
        self.register_handlers(
            DITTO_TRAIN, self.on_ditto_train, senders=[SERVER_ROLE], replies=False
        )
        self.register_handlers(
            DITTO_EVALUATE, self.on_ditto_evaluate, senders=[SERVER_ROLE], replies=False
        )

    def on_ditto_train(self, message: Message) -> Message | None:
        """Train the global model, then the personal one pulled toward it; reply with the first."""
        content = message.content
        received = read_arrays(content).to_numpy_dict()
        config = request_config(message)
        arrays, num_examples, metrics = self.fit(received, config)
        personal = self._personal_model(received)
        pull = LocalTerms(proximal_mu=_lambda(config), anchor=received)
        personal, _, personal_metrics = self.fit(personal, config, pull)
        self.state.put(self.node_id, PERSONAL_MODEL, personal)
        metrics = {**metrics, "personal_train_loss": personal_metrics.get("train_loss", 0.0)}
        return message.create_reply(train_reply_content(arrays, num_examples, metrics))

    def on_ditto_evaluate(self, message: Message) -> Message | None:
        """Evaluate the global model and this client's personal model on local test data."""
        content = message.content
        received = read_arrays(content).to_numpy_dict()
        config = request_config(message)
        loss, num_examples, metrics = self.trainer.evaluate(received, config)
        personal_loss, _, personal = self.trainer.evaluate(self._personal_model(received), config)
        self.report_work(2 * num_examples)
        reply = MetricRecord(
            {
                **metrics,
                "loss": loss,
                "num_examples": num_examples,
                "personal_loss": personal_loss,
                "personal_accuracy": personal["accuracy"],
            }
        )
        return message.create_reply(RecordDict({METRICS: reply}))

    def _personal_model(self, received: Arrays) -> Arrays:
        """This client's personal model; the global model before its first Ditto round."""
        personal = self.state.get(self.node_id, PERSONAL_MODEL)
        return dict(personal) if personal is not None else received


def _lambda(config: dict[str, object]) -> float:
    value = config.get(DITTO_LAMBDA)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ConfigError(f"{DITTO_LAMBDA!r}: a Ditto request needs a number >= 0, got {value!r}")
    return float(value)


register_strategy(
    "ditto", Ditto, lambda settings: Ditto(settings["strategy.ditto_lambda"]), client=DittoClient
)
