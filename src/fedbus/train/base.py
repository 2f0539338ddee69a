"""The ``Trainer`` contract: what a client does with a model it received.

A trainer sees named NumPy arrays and a plain configuration dict, never a message or a record;
the FL layer converts between the two. Any object with these two methods is a trainer, so a
researcher can plug in a trainer for any library without subclassing.

Configuration keys that built-in trainers honour when present (each overrides the default given
to the trainer's constructor):

``"lr"``
    Learning rate, a positive number.
``"epochs"``
    Number of passes over the local training data, a positive int.
``"batch_size"``
    Minibatch size, a positive int; ``0`` or ``None`` means full batch (plain gradient descent).

Unknown keys are ignored, so a server may send keys meant for other parts of a client.

Some algorithms change the local objective itself: FedProx and Ditto pull the weights toward an
anchor, SCAFFOLD corrects every gradient step. They pass a ``LocalTerms`` as the third argument
of ``fit``; the FL layer passes it only when an algorithm needs it, so a trainer whose ``fit``
takes two arguments works with every algorithm that does not.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias, runtime_checkable

import numpy as np

from fedbus.errors import InvalidArgumentError

__all__ = ["Arrays", "LocalTerms", "Trainer"]

#: Named model parameters, as a trainer receives and returns them.
Arrays: TypeAlias = dict[str, np.ndarray[Any, Any]]


@dataclass(frozen=True, slots=True)
class LocalTerms:
    """Terms an algorithm adds to a client's local objective; every step applies them.

    Parameters
    ----------
    proximal_mu, anchor
        With ``proximal_mu > 0``, the loss gains ``proximal_mu / 2 * ||w - anchor||^2``, so each
        gradient gains ``proximal_mu * (w - anchor)`` (FedProx; Ditto's personal model).
        ``anchor`` names every parameter it pulls; parameters it does not name are not pulled.
    correction
        Added to the gradient of the parameters it names at every step (SCAFFOLD adds
        ``c - c_i``, the server's control variate minus the client's).

    A trainer reports ``"steps"`` (optimizer steps taken) in its metrics, which SCAFFOLD needs
    to update its control variates.

    Examples
    --------
    >>> import numpy as np
    >>> terms = LocalTerms(proximal_mu=0.1, anchor={"w": np.zeros(3)})
    >>> terms.active
    True
    >>> LocalTerms().active
    False
    """

    proximal_mu: float = 0.0
    anchor: Mapping[str, np.ndarray[Any, Any]] | None = None
    correction: Mapping[str, np.ndarray[Any, Any]] | None = None

    def __post_init__(self) -> None:
        mu = self.proximal_mu
        if isinstance(mu, bool) or not isinstance(mu, int | float) or not math.isfinite(mu):
            raise InvalidArgumentError(f"LocalTerms.proximal_mu must be a number >= 0, got {mu!r}")
        if mu < 0:
            raise InvalidArgumentError(f"LocalTerms.proximal_mu must be >= 0, got {mu}")
        if mu > 0 and self.anchor is None:
            raise InvalidArgumentError("LocalTerms: proximal_mu > 0 needs an anchor to pull to")

    @property
    def active(self) -> bool:
        """True when the terms change training at all."""
        return self.proximal_mu > 0 or self.correction is not None


@runtime_checkable
class Trainer(Protocol):
    """Train and evaluate a model given as named NumPy arrays.

    Input arrays may be read-only views into a received buffer: a trainer never modifies them in
    place and returns new arrays.

    Examples
    --------
    >>> import numpy as np
    >>> from fedbus.train import NumpyTrainer, SoftmaxRegression
    >>> x = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
    >>> y = (x[:, 0] > 0).astype(np.int64)
    >>> model = SoftmaxRegression(num_features=3, num_classes=2)
    >>> trainer = NumpyTrainer(model, x, y, epochs=5, batch_size=8, lr=0.5)
    >>> isinstance(trainer, Trainer)
    True
    >>> arrays, num_examples, metrics = trainer.fit(model.init(seed=0), {"lr": 0.2})
    >>> num_examples, metrics["samples_processed"]
    (40, 200)
    """

    def fit(self, arrays: Arrays, config: dict[str, Any]) -> tuple[Arrays, int, dict[str, float]]:
        """Train from ``arrays`` and return ``(new_arrays, num_examples, metrics)``.

        Trainers that support ``LocalTerms`` take them as an optional third argument,
        ``fit(arrays, config, terms=None)``; the built-in trainers do.

        ``num_examples`` is the number of local training examples (the weight of this update in
        an average). ``metrics`` holds at least ``"samples_processed"`` (per-sample gradient
        evaluations, examples times epochs: the simulation turns it into compute time) and
        ``"train_loss"`` (mean loss over the last epoch).
        """
        ...

    def evaluate(
        self, arrays: Arrays, config: dict[str, Any]
    ) -> tuple[float, int, dict[str, float]]:
        """Evaluate ``arrays`` and return ``(loss, num_examples, metrics)``.

        ``metrics`` holds at least ``"accuracy"``.
        """
        ...
