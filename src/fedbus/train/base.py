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
"""

from __future__ import annotations

from typing import Any, Protocol, TypeAlias, runtime_checkable

import numpy as np

__all__ = ["Arrays", "Trainer"]

#: Named model parameters, as a trainer receives and returns them.
Arrays: TypeAlias = dict[str, np.ndarray[Any, Any]]


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
