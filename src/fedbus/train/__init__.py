"""Trainers on NumPy arrays: models, SGD, and the ``Trainer`` contract.

This layer is plain machine learning: it knows nothing of messages or records. The FL layer
turns a received ``ArrayRecord`` into the dict of arrays a trainer takes, and the trainer's
result back into a reply.

Examples
--------
>>> from fedbus.train import NumpyTrainer, build_model
>>> model = build_model("softmax", num_features=64, num_classes=10)

PyTorch support lives in ``fedbus.train.torch_trainer`` (``TorchTrainer``) and
``fedbus.train.torch_models`` (``build_torch_model``, ``init_state``, ``state_arrays``). Those
names can be imported from here too, but torch is imported only when one of them is first used,
so ``import fedbus.train`` works without torch. They are not in ``__all__``: a star import would
then import torch (or fail without it).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from fedbus.train.torch_models import TORCH_MODEL_NAMES as TORCH_MODEL_NAMES
    from fedbus.train.torch_models import build_torch_model as build_torch_model
    from fedbus.train.torch_models import init_state as init_state
    from fedbus.train.torch_models import state_arrays as state_arrays
    from fedbus.train.torch_trainer import TorchTrainer as TorchTrainer

# Names served on first use, and the module that defines each: importing it imports torch.
_TORCH_NAMES = {
    "TORCH_MODEL_NAMES": "fedbus.train.torch_models",
    "TorchTrainer": "fedbus.train.torch_trainer",
    "build_torch_model": "fedbus.train.torch_models",
    "init_state": "fedbus.train.torch_models",
    "state_arrays": "fedbus.train.torch_models",
}


def __getattr__(name: str) -> Any:
    module_name = _TORCH_NAMES.get(name)
    if module_name is None:
        raise AttributeError(f"module 'fedbus.train' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_TORCH_NAMES})
