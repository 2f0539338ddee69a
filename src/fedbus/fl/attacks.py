"""Simulated attacks by malicious clients, to measure how well an aggregation rule resists them.

Model poisoning wraps an honest trainer: ``AttackedTrainer`` trains as usual, then turns the
honest update ``u = new - received`` into a malicious one before the client replies.

==========  ======================================  =========================================
kind        the client sends                        provided by
==========  ======================================  =========================================
sign_flip   ``received - scale * u``                ``AttackedTrainer(t, "sign_flip")``
scale       ``received + scale * u``                ``AttackedTrainer(t, "scale")``
gaussian    ``new + N(0, noise_std^2)`` noise       ``AttackedTrainer(t, "gaussian")``
nan         every float value NaN                   ``AttackedTrainer(t, "nan")``
inf         every float value +inf                  ``AttackedTrainer(t, "inf")``
label_flip  an honest update on flipped labels      ``flip_labels(y, num_classes)``
==========  ======================================  =========================================

Label flipping poisons the data rather than the update, so it is not a wrapper: train the
client's ordinary trainer on ``flip_labels(y_train, num_classes)``. ``choose_attackers`` picks
which clients are malicious, the same ones for the same seed.

Examples
--------
>>> choose_attackers(10, 0.2, seed=0) == choose_attackers(10, 0.2, seed=0)
True
>>> len(choose_attackers(10, 0.2, seed=0))
2
"""

from __future__ import annotations

import math
from typing import Any, Final

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fedbus.errors import InvalidArgumentError
from fedbus.train.base import Arrays, LocalTerms, Trainer

__all__ = ["ATTACK_KINDS", "AttackedTrainer", "choose_attackers", "flip_labels"]

#: Every attack this module simulates; all but ``label_flip`` are ``AttackedTrainer`` kinds.
ATTACK_KINDS: Final = ("sign_flip", "scale", "gaussian", "nan", "inf", "label_flip")

_WRAPPER_KINDS: Final = ("sign_flip", "scale", "gaussian", "nan", "inf")
# non-finite updates (a diverged client, or one that tries to poison a plain mean)
_NON_FINITE: Final = {"nan": np.nan, "inf": np.inf}
# scale=None picks these: a plain sign flip, and a boost of ten (about 1/fraction of attackers).
_DEFAULT_SCALE: Final = {"sign_flip": 1.0, "scale": 10.0, "gaussian": 1.0, "nan": 1.0, "inf": 1.0}


def choose_attackers(num_clients: int, fraction: float, seed: int) -> frozenset[int]:
    """Node ids of the malicious clients among ``1..num_clients``.

    Exactly ``round(fraction * num_clients)`` ids (Python's ``round``: halves go to the even
    number), drawn without replacement from ``np.random.default_rng(seed)``.

    Parameters
    ----------
    num_clients
        Clients in the federation, an int >= 1; their node ids are ``1..num_clients``.
    fraction
        Share of them that attack, in ``[0, 1]``.
    seed
        Seed of the draw, an int >= 0: the same seed gives the same attackers.

    Examples
    --------
    >>> sorted(choose_attackers(5, 1.0, seed=3))
    [1, 2, 3, 4, 5]
    >>> choose_attackers(5, 0.0, seed=3)
    frozenset()
    """
    if isinstance(num_clients, bool) or not isinstance(num_clients, int) or num_clients < 1:
        raise InvalidArgumentError(
            f"choose_attackers: num_clients must be an int >= 1, got {num_clients!r}"
        )
    if (
        isinstance(fraction, bool)
        or not isinstance(fraction, int | float)
        or not 0 <= fraction <= 1
    ):
        raise InvalidArgumentError(
            f"choose_attackers: fraction must be a number in [0, 1], got {fraction!r}"
        )
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InvalidArgumentError(f"choose_attackers: seed must be an int >= 0, got {seed!r}")
    count = round(fraction * num_clients)
    picks = np.random.default_rng(seed).choice(num_clients, size=count, replace=False)
    return frozenset(int(index) + 1 for index in picks)


def flip_labels(y: ArrayLike, num_classes: int) -> NDArray[Any]:
    """Labels mapped ``k -> num_classes - 1 - k``: the label-flipping attack's training labels.

    The result is a new array of ``y``'s integer dtype; ``y`` is not modified.

    Examples
    --------
    >>> import numpy as np
    >>> flip_labels(np.array([0, 1, 2, 9]), num_classes=10)
    array([9, 8, 7, 0])
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise InvalidArgumentError(
            f"flip_labels: num_classes must be an int >= 1, got {num_classes!r}"
        )
    labels = np.asarray(y)
    if labels.dtype.kind not in "iu":
        raise InvalidArgumentError(
            f"flip_labels: y must hold integer class labels, got dtype {labels.dtype}; "
            "convert the labels with astype(np.int64)"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise InvalidArgumentError(
            f"flip_labels: labels must lie in 0..{num_classes - 1}, found "
            f"{labels.min()}..{labels.max()}; check num_classes"
        )
    return (num_classes - 1 - labels).astype(labels.dtype)


class AttackedTrainer:
    """A ``Trainer`` that trains honestly, then sends a poisoned model instead.

    With ``received`` the model it was sent, ``new`` the honestly trained one and
    ``u = new - received`` the honest update, ``fit`` returns:

    - ``sign_flip``: ``received - scale * u``, a step against the honest direction (``scale``
      defaults to 1, the plain sign flip; it must be > 0);
    - ``scale``: ``received + scale * u``, the honest update boosted (default ``scale`` 10; a
      negative factor such as -10 is a boosted sign flip);
    - ``gaussian``: ``new + e`` with ``e ~ N(0, noise_std^2)`` drawn per value.

    The arithmetic runs in float64 and each array keeps the dtype the inner trainer returned.
    ``num_examples`` and the metrics are the inner trainer's; ``evaluate`` is the inner
    trainer's, unchanged.

    Parameters
    ----------
    trainer
        The honest trainer to wrap (any ``Trainer``).
    kind
        One of ``"sign_flip"``, ``"scale"``, ``"gaussian"``. ``"label_flip"`` poisons data,
        not updates: use ``flip_labels`` on the wrapped trainer's labels instead.
    scale
        The factor of ``sign_flip`` and ``scale``; ``None`` takes the kind's default.
        ``gaussian`` does not use it.
    noise_std
        Standard deviation of the ``gaussian`` noise, a number >= 0.
    seed
        Seed of the noise generator, an int >= 0. A config holding ``"seed"`` makes one call's
        noise independent of earlier calls, as ``NumpyTrainer`` does for its shuffling.

    Examples
    --------
    >>> import numpy as np
    >>> class Step:
    ...     def fit(self, arrays, config):
    ...         return {"w": arrays["w"] + 1.0}, 5, {"train_loss": 0.0}
    ...     def evaluate(self, arrays, config):
    ...         return 0.0, 5, {"accuracy": 1.0}
    >>> attacked = AttackedTrainer(Step(), "scale", scale=-3.0)
    >>> arrays, num_examples, _ = attacked.fit({"w": np.zeros(2)}, {})
    >>> arrays["w"], num_examples
    (array([-3., -3.]), 5)
    """

    def __init__(
        self,
        trainer: Trainer,
        kind: str,
        *,
        scale: float | None = None,
        noise_std: float = 1.0,
        seed: int = 0,
    ) -> None:
        if kind == "label_flip":
            raise InvalidArgumentError(
                "AttackedTrainer: 'label_flip' poisons the data, not the update; train the "
                "client on flip_labels(y_train, num_classes) with an ordinary trainer instead"
            )
        if kind not in _WRAPPER_KINDS:
            raise InvalidArgumentError(
                f"AttackedTrainer: unknown kind {kind!r}; expected one of {list(_WRAPPER_KINDS)}"
            )
        factor = _DEFAULT_SCALE[kind] if scale is None else scale
        if (
            isinstance(factor, bool)
            or not isinstance(factor, int | float)
            or not math.isfinite(factor)
        ):
            raise InvalidArgumentError(
                f"AttackedTrainer: scale must be a finite number, got {scale!r}"
            )
        if kind == "sign_flip" and factor <= 0:
            raise InvalidArgumentError(
                f"AttackedTrainer: sign_flip sends received - scale * update, so scale must be "
                f"> 0, got {scale!r}; for a boost along the honest direction use kind='scale'"
            )
        if (
            isinstance(noise_std, bool)
            or not isinstance(noise_std, int | float)
            or not math.isfinite(noise_std)
            or noise_std < 0
        ):
            raise InvalidArgumentError(
                f"AttackedTrainer: noise_std must be a finite number >= 0, got {noise_std!r}"
            )
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise InvalidArgumentError(f"AttackedTrainer: seed must be an int >= 0, got {seed!r}")
        self.trainer = trainer
        self.kind = kind
        self.scale = float(factor)
        self.noise_std = float(noise_std)
        self.seed = seed
        self._rng = np.random.default_rng(seed)

    def fit(
        self, arrays: Arrays, config: dict[str, Any], terms: LocalTerms | None = None
    ) -> tuple[Arrays, int, dict[str, float]]:
        """Train with the inner trainer, then return the poisoned arrays.

        ``terms`` is passed on only when it is not ``None``, so a trainer whose ``fit`` takes
        two arguments can be wrapped too.
        """
        if terms is None:
            new, num_examples, metrics = self.trainer.fit(arrays, config)
        else:
            fit_with_terms: Any = self.trainer.fit
            new, num_examples, metrics = fit_with_terms(arrays, config, terms)
        rng = self._noise_rng(config)
        poisoned = {
            name: self._poison(name, arrays, np.asarray(value), rng) for name, value in new.items()
        }
        return poisoned, num_examples, metrics

    def evaluate(
        self, arrays: Arrays, config: dict[str, Any]
    ) -> tuple[float, int, dict[str, float]]:
        """The inner trainer's evaluation, unchanged."""
        return self.trainer.evaluate(arrays, config)

    def _poison(
        self,
        name: str,
        received: Arrays,
        new: np.ndarray[Any, Any],
        rng: np.random.Generator,
    ) -> np.ndarray[Any, Any]:
        if self.kind in _NON_FINITE:
            if new.dtype.kind not in "fc":
                return new
            return np.full_like(new, _NON_FINITE[self.kind])
        if self.kind == "gaussian":
            noisy: np.ndarray[Any, Any] = new.astype(np.float64) + rng.normal(
                0.0, self.noise_std, size=new.shape
            )
            return noisy.astype(new.dtype)
        start = received.get(name)
        if start is None or np.shape(start) != new.shape:
            raise InvalidArgumentError(
                f"AttackedTrainer: the inner trainer returned array {name!r} of shape "
                f"{new.shape}, which the received model "
                f"{'lacks' if start is None else f'has with shape {np.shape(start)}'}; "
                "an update needs both"
            )
        base = np.asarray(start, dtype=np.float64)
        update = new.astype(np.float64) - base
        sign = -1.0 if self.kind == "sign_flip" else 1.0
        return (base + sign * self.scale * update).astype(new.dtype)

    def _noise_rng(self, config: dict[str, Any]) -> np.random.Generator:
        call_seed = config.get("seed")
        if call_seed is None or self.kind != "gaussian":
            return self._rng
        if isinstance(call_seed, bool) or not isinstance(call_seed, int) or call_seed < 0:
            raise InvalidArgumentError(
                f"AttackedTrainer: config 'seed' must be an int >= 0, got {call_seed!r}"
            )
        return np.random.default_rng([self.seed, call_seed])
