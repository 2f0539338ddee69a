"""FedProx's pull as a client mod: local training pulled toward the model the client received.

The FedProx strategy (``fedbus.fl.algorithms.fedprox``) adds ``proximal_mu`` to every request's
config; this mod, on each client, turns it into ``LocalTerms(proximal_mu, anchor=received
model)`` that the training handler hands its trainer (``fedbus.fl.client.LOCAL_TERMS``). The
client's handlers know nothing of it: any client that trains through ``Client.fit`` honours it.
With ``proximal_mu = 0`` (or no mod) training is plain local training, bit for bit.

>>> from fedbus.fl import Client
>>> from fedbus.train import NumpyTrainer, SoftmaxRegression
>>> import numpy as np
>>> trainer = NumpyTrainer(SoftmaxRegression(2, 2), np.zeros((4, 2)), np.array([0, 1, 0, 1]))
>>> client = Client(trainer).use(FedProxMod())
"""

from __future__ import annotations

from typing import Final

from fedbus.errors import ConfigError
from fedbus.fl.client import LOCAL_TERMS
from fedbus.fl.mods.registry import register_mod
from fedbus.fl.protocol import ARRAYS, CONFIG, read_arrays
from fedbus.message import ConfigRecord, Message
from fedbus.train.base import LocalTerms
from fedbus.worker.mods import CallNext, MessageContext, Mod

__all__ = ["PROXIMAL_MU", "FedProxMod"]

#: The request config key of FedProx's proximal term: the client pulls its weights toward the
#: global model it received with strength ``proximal_mu`` (0: plain local training).
PROXIMAL_MU: Final = "proximal_mu"


class FedProxMod(Mod):
    """Trains each request whose config has ``proximal_mu > 0`` with a pull toward its model.

    Keeps nothing between requests: one instance may serve every client.
    """

    def __call__(
        self, message: Message, context: MessageContext, call_next: CallNext
    ) -> Message | None:
        """Hand the handler ``LocalTerms(proximal_mu, anchor=the request's arrays)``."""
        content = message.content
        config = content.get(CONFIG)
        if isinstance(config, ConfigRecord) and PROXIMAL_MU in config and ARRAYS in content:
            mu = _proximal_mu(config[PROXIMAL_MU])
            if mu > 0:
                anchor = read_arrays(content).to_numpy_dict()
                context.values[LOCAL_TERMS] = LocalTerms(proximal_mu=mu, anchor=anchor)
        return call_next(message, context)

    def __repr__(self) -> str:
        return "FedProxMod()"


def _proximal_mu(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ConfigError(f"{PROXIMAL_MU!r}: expected a number >= 0, got {value!r}")
    return float(value)


_SHARED = FedProxMod()  # it keeps nothing: 100,000 clients share one
register_mod("fedprox", lambda settings, seed: _SHARED)
