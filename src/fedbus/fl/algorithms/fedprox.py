"""FedProx (Li et al., 2020): local training pulled toward the global model.

Each client minimises its loss plus ``mu / 2 * ||w - w_global||^2``, which bounds how far
heterogeneous clients drift in a round. It needs no message of its own: the server adds
``proximal_mu`` to the ``train`` config, and the ``fedprox`` mod on each client
(``fedbus.fl.mods.FedProxMod``, installed by a configured run) hands the trainer the received
model as the anchor of ``LocalTerms``. With ``mu = 0`` it is FedAvg, bit for bit.
"""

from __future__ import annotations

from typing import Any

from fedbus.fl.mods.fedprox import PROXIMAL_MU
from fedbus.fl.registry import register_strategy
from fedbus.fl.strategy.base import check_parameter
from fedbus.fl.strategy.fedavg import FedAvg

__all__ = ["FedProx"]


class FedProx(FedAvg):
    """FedAvg whose clients train with a proximal term of strength ``proximal_mu``.

    Examples
    --------
    >>> FedProx(proximal_mu=0.01).name
    'fedprox'
    """

    name = "fedprox"
    client_mods = ("fedprox",)

    def __init__(self, proximal_mu: float = 0.01) -> None:
        self.proximal_mu = check_parameter(self, "proximal_mu", proximal_mu, ">= 0", _at_least_0)

    def client_settings(self) -> dict[str, Any]:
        """``proximal_mu``, added to every request's config."""
        return {PROXIMAL_MU: self.proximal_mu}


def _at_least_0(value: float) -> bool:
    return value >= 0


register_strategy("fedprox", FedProx, lambda settings: FedProx(settings["strategy.proximal_mu"]))
