"""FedProx (Li et al., 2020): local training pulled toward the global model.

Each client minimises its loss plus ``mu / 2 * ||w - w_global||^2``, which bounds how far
heterogeneous clients drift in a round. It needs no message of its own: the server adds
``proximal_mu`` to the ``train`` config, and every ``Client`` honours it by passing the received
model as the anchor of ``LocalTerms`` to its trainer. With ``mu = 0`` it is FedAvg, bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from fedbus.errors import InvalidArgumentError
from fedbus.fl.client import PROXIMAL_MU
from fedbus.fl.protocol import model_content
from fedbus.fl.strategy.fedavg import FedAvg
from fedbus.message import ArrayRecord, ConfigRecord, RecordDict

__all__ = ["FedProx"]


class FedProx(FedAvg):
    """FedAvg whose clients train with a proximal term of strength ``proximal_mu``.

    Examples
    --------
    >>> FedProx(proximal_mu=0.01).name
    'fedprox'
    """

    name = "fedprox"

    def __init__(self, proximal_mu: float = 0.01) -> None:
        mu = proximal_mu
        if isinstance(mu, bool) or not isinstance(mu, int | float) or not math.isfinite(mu):
            raise InvalidArgumentError(f"FedProx: proximal_mu must be a number >= 0, got {mu!r}")
        if mu < 0:
            raise InvalidArgumentError(f"FedProx: proximal_mu must be >= 0, got {mu}")
        self.proximal_mu = float(mu)

    def configure_train(
        self,
        server_round: int,
        arrays: ArrayRecord,
        config: ConfigRecord,
        node_ids: Sequence[int],
    ) -> RecordDict:
        """The model and the settings, with ``proximal_mu`` added."""
        return model_content(arrays, ConfigRecord({**config, PROXIMAL_MU: self.proximal_mu}))
