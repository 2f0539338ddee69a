"""Privacy accounting with Google's ``dp-accounting`` library (RDP accountant).

The guarantee is per client (user-level): neighbouring federations differ in one client's whole
data, which can change that client's clipped update by at most ``2 C`` in L2 norm (replacing
one update by another, both within ``C``). The server adds Gaussian noise of standard deviation
``z C`` to the sum, so the noise multiplier relative to that sensitivity is ``z / 2``.

- ``central`` and ``client_clip``: each round samples ``m`` of the ``n`` clients uniformly
  without replacement, exactly how ``Server`` samples; the accountant composes one
  ``SampledWithoutReplacementDpEvent(n, m, Gaussian(z / 2))`` per round (the sampled Gaussian
  of Wang, Balle and Kasiviswanathan, AISTATS 2019) under the replace-one relation.
- ``local``: each client adds the noise itself, so the server, who knows who was sampled, gets
  no amplification from sampling: the accountant composes one ``Gaussian(z / 2)`` per round the
  most frequent client took part in.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fedbus.errors import InvalidArgumentError

__all__ = ["RDP_ORDERS", "PrivacyAccountant"]

#: The Renyi orders the accountant tries: integers, where the sampled Gaussian's bound is exact.
RDP_ORDERS: tuple[int, ...] = (*range(2, 64), 80, 96, 128, 192, 256)


class PrivacyAccountant:
    """Epsilon after a number of rounds, for one configuration of noise and sampling.

    Parameters
    ----------
    noise_multiplier
        ``z``: the noise's standard deviation divided by the clipping norm (0: no privacy).
    num_clients, clients_per_round
        ``n`` and ``m`` of the sampling (ignored for ``local``).
    delta
        The target delta, in (0, 1).
    local
        Account for local noise (no amplification by sampling).

    Examples
    --------
    >>> accountant = PrivacyAccountant(1.0, num_clients=100, clients_per_round=10, delta=1e-5)
    >>> accountant.epsilon(10) < accountant.epsilon(20)
    True
    """

    def __init__(
        self,
        noise_multiplier: float,
        *,
        num_clients: int,
        clients_per_round: int,
        delta: float,
        local: bool = False,
    ) -> None:
        if not (math.isfinite(noise_multiplier) and noise_multiplier >= 0):
            raise InvalidArgumentError(
                f"noise_multiplier must be a finite number >= 0, got {noise_multiplier}"
            )
        if not 1 <= clients_per_round <= num_clients:
            raise InvalidArgumentError(
                f"need 1 <= clients_per_round <= num_clients, got {clients_per_round} and "
                f"{num_clients}"
            )
        if not 0 < delta < 1:
            raise InvalidArgumentError(f"delta must be in (0, 1), got {delta}")
        self.noise_multiplier, self.delta, self.local = noise_multiplier, delta, local
        self.num_clients, self.clients_per_round = num_clients, clients_per_round
        self._round_rdp: np.ndarray[Any, Any] | None = None  # the RDP of one round, per order

    def event(self, rounds: int) -> Any:
        """The ``dp-accounting`` event of ``rounds`` rounds (participations, for ``local``)."""
        import dp_accounting  # imported when used: it loads scipy, which a plain run never needs

        gaussian = dp_accounting.GaussianDpEvent(self.noise_multiplier / 2)
        if self.local:
            return dp_accounting.SelfComposedDpEvent(gaussian, rounds)
        sampled = dp_accounting.SampledWithoutReplacementDpEvent(
            self.num_clients, self.clients_per_round, gaussian
        )
        return dp_accounting.SelfComposedDpEvent(sampled, rounds)

    def epsilon(self, rounds: int) -> float:
        """Epsilon at ``delta`` after ``rounds`` rounds (0 rounds: 0; no noise: infinity).

        RDP composes additively, so the accountant computes one round's RDP once and scales it:
        the same number a fresh ``RdpAccountant`` composing ``event(rounds)`` gives.
        """
        if rounds <= 0:
            return 0.0
        if self.noise_multiplier == 0:
            return math.inf
        import dp_accounting
        from dp_accounting import rdp
        from dp_accounting.rdp.rdp_privacy_accountant import compute_epsilon

        if self._round_rdp is None:
            accountant = rdp.RdpAccountant(
                list(RDP_ORDERS), dp_accounting.NeighboringRelation.REPLACE_ONE
            )
            accountant.compose(self.event(1))
            self._round_rdp = np.asarray(accountant.rdp, dtype=np.float64)
        epsilon, _ = compute_epsilon(list(RDP_ORDERS), rounds * self._round_rdp, self.delta)
        return float(epsilon)
