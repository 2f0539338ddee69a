"""Differential privacy's client side as a mod: clip the update, and add noise, before it leaves.

In the ``client_clip`` and ``local`` modes of ``DifferentialPrivacy`` each request carries the
clipping norm (``clipping_norm``) and, in local mode, the noise's standard deviation
(``noise_std``). On a client with this mod, the training handler's update is then clipped to the
norm (``trained - received`` scaled down as a whole) and noised, and the reply's metrics get
``unclipped`` (1 if the update was within the norm), which adaptive clipping counts. The mod
hands the handler an update filter (``fedbus.fl.client.add_update_filter``), so the update is
private wherever the handler sends it: in a plain ``train`` reply, or masked by secure
aggregation (``SecAggClient``).

Noise is seeded per request from the mod's ``noise_seed`` and the request's seed, so that any
copy of a client adds the same noise to the same request; without a ``noise_seed`` it comes from
the operating system's entropy (deployments: the federation's seed is no secret).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np

from fedbus.errors import ConfigError
from fedbus.fl.client import add_update_filter, plain_config, request_seed
from fedbus.fl.mods.registry import register_mod
from fedbus.fl.privacy.clipping import add_noise, clip_update
from fedbus.fl.privacy.names import CLIPPING_NORM, NOISE_STD, UNCLIPPED
from fedbus.message import Message
from fedbus.train.base import Arrays
from fedbus.worker.mods import CallNext, MessageContext, Mod

__all__ = ["ClientPrivacy", "privatize"]

#: Mixed into the noise's seed: the trainer's shuffle draws from [seed, request seed] already.
_NOISE_STREAM = 0xD1


class ClientPrivacy(Mod):
    """Clips (and noises) the update of every request that carries a ``clipping_norm``.

    Parameters
    ----------
    noise_seed
        Seed of the noise, combined with each request's seed (``request_seed``). Default
        (None): fresh entropy from the operating system, drawn only when noise is added; a
        simulation passes one so that runs repeat.
    """

    def __init__(self, noise_seed: int | None = None) -> None:
        self.noise_seed = noise_seed

    def __call__(
        self, message: Message, context: MessageContext, call_next: CallNext
    ) -> Message | None:
        """Add the clipping (and noise) the request asks for to its update filters."""
        config = plain_config(message.content)
        norm = config.get(CLIPPING_NORM)
        if norm is not None:
            if isinstance(norm, bool) or not isinstance(norm, int | float):
                raise ConfigError(f"{CLIPPING_NORM!r}: expected a number > 0, got {norm!r}")
            std = config.get(NOISE_STD, 0.0)
            if isinstance(std, bool) or not isinstance(std, int | float):
                raise ConfigError(f"{NOISE_STD!r}: expected a number >= 0, got {std!r}")
            rng = self.noise_rng(message) if std > 0 else None
            add_update_filter(
                context,
                partial(privatize, clipping_norm=float(norm), noise_std=float(std), rng=rng),
            )
        return call_next(message, context)

    def noise_rng(self, message: Message) -> np.random.Generator | None:
        """The generator of ``message``'s noise: seeded from ``noise_seed`` and the request's
        seed, or None (operating-system entropy) when ``noise_seed`` is None."""
        if self.noise_seed is None:
            return None
        return np.random.default_rng([self.noise_seed, request_seed(message), _NOISE_STREAM])

    def __repr__(self) -> str:
        return f"ClientPrivacy(noise_seed={self.noise_seed})"


def privatize(
    received: Arrays,
    trained: Arrays,
    metrics: dict[str, float],
    *,
    clipping_norm: float,
    noise_std: float = 0.0,
    rng: np.random.Generator | None = None,
) -> tuple[dict[str, np.ndarray[Any, Any]], dict[str, float]]:
    """Clip ``trained - received`` to ``clipping_norm`` and add ``noise_std`` noise.

    The metrics get ``unclipped`` (1 if the update was within the norm). The arrays keep their
    dtypes. Noise comes from ``rng``, or from the operating system's entropy when it is None.
    """
    clipped, unclipped = clip_update(trained, received, clipping_norm)
    if noise_std > 0:
        clipped = add_noise(clipped, noise_std, rng if rng is not None else np.random.default_rng())
    private = {name: clipped[name].astype(value.dtype) for name, value in trained.items()}
    return private, {**metrics, UNCLIPPED: float(unclipped)}


def _build(settings: object, seed: int | None) -> ClientPrivacy:
    return ClientPrivacy(noise_seed=seed)


register_mod("privacy", _build)
