"""Trainers on NumPy arrays: models, SGD, and the ``Trainer`` contract.

This layer is plain machine learning: it knows nothing of messages or records. The FL layer
turns a received ``ArrayRecord`` into the dict of arrays a trainer takes, and the trainer's
result back into a reply.

Examples
--------
>>> from fedbus.train import NumpyTrainer, build_model
>>> model = build_model("softmax", num_features=64, num_classes=10)
"""

from __future__ import annotations

from fedbus.train.base import Arrays, LocalTerms, Trainer
from fedbus.train.models import MLP, MODEL_NAMES, NumpyModel, SoftmaxRegression, build_model
from fedbus.train.numpy_trainer import NumpyTrainer

__all__ = [
    "MLP",
    "MODEL_NAMES",
    "Arrays",
    "LocalTerms",
    "NumpyModel",
    "NumpyTrainer",
    "SoftmaxRegression",
    "Trainer",
    "build_model",
]
