"""The models configuration files name, each registered by its own module.

A model registers a builder for NumPy (a ``NumpyModel``, trained by ``NumpyTrainer``), for
PyTorch (an ``nn.Module``, trained by ``TorchTrainer``), or both; each builder takes the input
width, the number of classes and the run's ``Settings``. A torch builder imports torch only
when called. Plugin packages add theirs through the ``fedbus.models`` entry point group
(``docs/plugins.md``).

Examples
--------
>>> from fedbus.train.registry import MODELS
>>> MODELS.get("cnn").numpy is None
True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

from fedbus.errors import InvalidArgumentError
from fedbus.plugins import Registry, Settings

if TYPE_CHECKING:
    # models.py registers the built-in models here, so it is imported for annotations only
    from fedbus.train.models import NumpyModel

__all__ = ["MODELS", "ModelSource", "NumpyBuilder", "TorchBuilder", "register_model"]

#: ``build(num_features, num_classes, settings) -> NumpyModel``
NumpyBuilder: TypeAlias = "Callable[[int, int, Settings], NumpyModel]"
#: ``build(num_features, num_classes, settings) -> torch.nn.Module``
TorchBuilder: TypeAlias = Callable[[int, int, Settings], Any]


@dataclass(frozen=True, slots=True)
class ModelSource:
    """How a configured run builds one model, in each framework it supports.

    Attributes
    ----------
    numpy : callable or None
        The NumPy builder, or None for a PyTorch-only model.
    torch : callable or None
        The PyTorch builder, or None for a NumPy-only model.
    """

    numpy: NumpyBuilder | None = None
    torch: TorchBuilder | None = None


#: Every model a configuration may name in ``model.name``.
MODELS: Registry[ModelSource] = Registry(
    "model", group="fedbus.models", builtins=("fedbus.train.models",)
)


def register_model(
    name: str, *, numpy: NumpyBuilder | None = None, torch: TorchBuilder | None = None
) -> ModelSource:
    """Make a model available to configuration files as ``model.name = name``.

    Parameters
    ----------
    name : str
        The name configuration files use.
    numpy, torch : callable, optional
        ``build(num_features, num_classes, settings)`` for the framework; at least one.

    Raises
    ------
    InvalidArgumentError
        Neither builder is given.
    PluginError
        ``name`` is already registered by another module.
    """
    builder = numpy if numpy is not None else torch
    if builder is None:
        raise InvalidArgumentError(f"model {name!r}: give a numpy builder, a torch builder or both")
    return MODELS.register(name, ModelSource(numpy, torch), module=builder.__module__)
