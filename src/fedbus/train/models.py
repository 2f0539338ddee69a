"""NumPy models with vectorised forward and backward passes.

Each model is stateless: it describes parameter shapes and computes with parameters passed in as
a dict of arrays, so the same object serves every client of a simulation. All arithmetic runs in
the parameters' dtype (``float32`` by default; ``float64`` for exact checks).

The module ends by registering the built-in models configuration files name
(``fedbus.train.registry``): ``softmax`` and ``mlp`` in NumPy and PyTorch; ``cnn``,
``femnist_cnn``, ``char_lstm`` and ``cnn1d`` in PyTorch (``fedbus.train.torch_models``).

Examples
--------
>>> import numpy as np
>>> model = build_model("mlp", num_features=4, num_classes=3, hidden=8)
>>> params = model.init(seed=0)
>>> sorted(params)
['hidden.bias', 'hidden.weight', 'output.bias', 'output.weight']
>>> x = np.zeros((5, 4), dtype=np.float32)
>>> model.predict(params, x).shape
(5,)
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from typing import Any

import numpy as np
from numpy.typing import DTypeLike, NDArray

from fedbus.errors import ConfigError, InvalidArgumentError, InvalidTypeError
from fedbus.plugins import Settings
from fedbus.train.base import Arrays
from fedbus.train.options import int_option, positive_int
from fedbus.train.registry import TorchBuilder, register_model

__all__ = ["MLP", "MODEL_NAMES", "NumpyModel", "SoftmaxRegression", "build_model"]


def log_softmax(logits: NDArray[Any]) -> NDArray[Any]:
    """Row-wise log-softmax, stable for large logits (the row maximum is subtracted first)."""
    shifted: NDArray[Any] = logits - logits.max(axis=1, keepdims=True)
    result: NDArray[Any] = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return result


def cross_entropy_and_grad(logits: NDArray[Any], y: NDArray[Any]) -> tuple[float, NDArray[Any]]:
    """Mean cross-entropy of ``logits`` against labels ``y`` and its gradient wrt ``logits``."""
    rows = np.arange(len(y))
    log_probs = log_softmax(logits)
    loss = -float(log_probs[rows, y].mean())
    # d(mean CE)/d(logits) = (softmax - one_hot) / n
    grad = np.exp(log_probs)
    grad[rows, y] -= 1
    grad /= len(y)
    return loss, grad


class NumpyModel(ABC):
    """A classifier whose parameters are a dict of NumPy arrays.

    Subclasses define ``param_shapes``, ``init``, ``logits`` and ``loss_and_grad``; ``predict``
    and ``loss`` follow from them.

    Parameters
    ----------
    num_features
        Width of an input row.
    num_classes
        Number of classes; labels are ints in ``0 .. num_classes - 1``.
    """

    def __init__(self, num_features: int, num_classes: int) -> None:
        self.num_features = positive_int("num_features", num_features)
        self.num_classes = positive_int("num_classes", num_classes, minimum=2)

    @abstractmethod
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Names and shapes of the parameters, in a fixed order."""

    @abstractmethod
    def init(self, seed: int, dtype: DTypeLike = np.float32) -> Arrays:
        """Fresh parameters, identical for the same ``seed`` and ``dtype``."""

    @abstractmethod
    def logits(self, params: Arrays, x: NDArray[Any]) -> NDArray[Any]:
        """Unnormalised class scores, shape ``(len(x), num_classes)``."""

    @abstractmethod
    def loss_and_grad(
        self, params: Arrays, x: NDArray[Any], y: NDArray[Any]
    ) -> tuple[float, Arrays]:
        """Mean cross-entropy on ``(x, y)`` and its gradient for every parameter."""

    def predict(self, params: Arrays, x: NDArray[Any]) -> NDArray[np.int64]:
        """Predicted class index of each row of ``x``."""
        classes: NDArray[np.int64] = self.logits(params, x).argmax(axis=1).astype(np.int64)
        return classes

    def loss(self, params: Arrays, x: NDArray[Any], y: NDArray[Any]) -> float:
        """Mean cross-entropy on ``(x, y)``."""
        log_probs = log_softmax(self.logits(params, x))
        return -float(log_probs[np.arange(len(y)), y].mean())

    def check_params(self, params: Arrays) -> None:
        """Raise unless ``params`` has exactly the expected names, shapes and a float dtype.

        Parameters arrive from the network, so a mismatch is reported with what was expected.
        """
        expected = self.param_shapes()
        if set(params) != set(expected):
            raise InvalidArgumentError(
                f"{type(self).__name__}: expected parameters {sorted(expected)}, "
                f"got {sorted(params)}"
            )
        for name, shape in expected.items():
            value = params[name]
            if not isinstance(value, np.ndarray):
                raise InvalidTypeError(
                    f"parameter {name!r}: expected numpy.ndarray, got {type(value).__name__}"
                )
            if value.shape != shape:
                raise InvalidArgumentError(
                    f"parameter {name!r}: expected shape {shape}, got {value.shape}"
                )
            if not np.issubdtype(value.dtype, np.floating):
                raise InvalidTypeError(
                    f"parameter {name!r}: expected a floating dtype, got {value.dtype}"
                )

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(num_features={self.num_features}, num_classes={self.num_classes})"


class SoftmaxRegression(NumpyModel):
    """Multinomial logistic regression: ``logits = x @ weight + bias``.

    Parameters are ``"weight"`` with shape ``(num_features, num_classes)`` and ``"bias"`` with
    shape ``(num_classes,)``; ``init`` returns zeros (the loss is convex, so no symmetry to break).
    """

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """``{"weight": (num_features, num_classes), "bias": (num_classes,)}``."""
        return {"weight": (self.num_features, self.num_classes), "bias": (self.num_classes,)}

    def init(self, seed: int, dtype: DTypeLike = np.float32) -> Arrays:
        """Zero parameters (``seed`` is accepted for a uniform interface and unused)."""
        return {name: np.zeros(shape, dtype=dtype) for name, shape in self.param_shapes().items()}

    def logits(self, params: Arrays, x: NDArray[Any]) -> NDArray[Any]:
        """``x @ weight + bias``."""
        result: NDArray[Any] = x @ params["weight"] + params["bias"]
        return result

    def loss_and_grad(
        self, params: Arrays, x: NDArray[Any], y: NDArray[Any]
    ) -> tuple[float, Arrays]:
        """Mean cross-entropy and ``{"weight": x.T @ d, "bias": d.sum(0)}``."""
        loss, d_logits = cross_entropy_and_grad(self.logits(params, x), y)
        return loss, {"weight": x.T @ d_logits, "bias": d_logits.sum(axis=0)}


class MLP(NumpyModel):
    """One hidden ReLU layer: ``logits = relu(x @ W1 + b1) @ W2 + b2``.

    Parameters are ``"hidden.weight"`` ``(num_features, hidden)``, ``"hidden.bias"``
    ``(hidden,)``, ``"output.weight"`` ``(hidden, num_classes)`` and ``"output.bias"``
    ``(num_classes,)``. ``init`` draws the hidden weights with He scaling (suited to ReLU), the
    output weights with Glorot scaling, and zero biases.

    Parameters
    ----------
    num_features, num_classes
        As for every ``NumpyModel``.
    hidden
        Width of the hidden layer.
    """

    def __init__(self, num_features: int, hidden: int, num_classes: int) -> None:
        super().__init__(num_features, num_classes)
        self.hidden = positive_int("hidden", hidden)

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shapes of the four parameters, hidden layer first."""
        return {
            "hidden.weight": (self.num_features, self.hidden),
            "hidden.bias": (self.hidden,),
            "output.weight": (self.hidden, self.num_classes),
            "output.bias": (self.num_classes,),
        }

    def init(self, seed: int, dtype: DTypeLike = np.float32) -> Arrays:
        """He-normal hidden weights, Glorot-uniform output weights, zero biases."""
        rng = np.random.default_rng(seed)
        he_std = np.sqrt(2.0 / self.num_features)
        glorot_limit = np.sqrt(6.0 / (self.hidden + self.num_classes))
        hidden_weight = rng.normal(0.0, he_std, (self.num_features, self.hidden))
        output_weight = rng.uniform(-glorot_limit, glorot_limit, (self.hidden, self.num_classes))
        return {
            "hidden.weight": hidden_weight.astype(dtype),
            "hidden.bias": np.zeros(self.hidden, dtype=dtype),
            "output.weight": output_weight.astype(dtype),
            "output.bias": np.zeros(self.num_classes, dtype=dtype),
        }

    def logits(self, params: Arrays, x: NDArray[Any]) -> NDArray[Any]:
        """Forward pass through the hidden ReLU layer and the output layer."""
        activations = np.maximum(x @ params["hidden.weight"] + params["hidden.bias"], 0)
        result: NDArray[Any] = activations @ params["output.weight"] + params["output.bias"]
        return result

    def loss_and_grad(
        self, params: Arrays, x: NDArray[Any], y: NDArray[Any]
    ) -> tuple[float, Arrays]:
        """Mean cross-entropy and the backpropagated gradient of all four parameters."""
        pre_activation = x @ params["hidden.weight"] + params["hidden.bias"]
        activations = np.maximum(pre_activation, 0)
        logits = activations @ params["output.weight"] + params["output.bias"]
        loss, d_logits = cross_entropy_and_grad(logits, y)
        d_hidden = d_logits @ params["output.weight"].T
        d_hidden *= pre_activation > 0
        return loss, {
            "hidden.weight": x.T @ d_hidden,
            "hidden.bias": d_hidden.sum(axis=0),
            "output.weight": activations.T @ d_logits,
            "output.bias": d_logits.sum(axis=0),
        }

    def __repr__(self) -> str:
        return (
            f"MLP(num_features={self.num_features}, hidden={self.hidden}, "
            f"num_classes={self.num_classes})"
        )


#: Names accepted by ``build_model``.
MODEL_NAMES = ("mlp", "softmax")


def build_model(name: str, num_features: int, num_classes: int, **options: Any) -> NumpyModel:
    """Build a built-in model by name.

    Parameters
    ----------
    name
        ``"softmax"`` (``SoftmaxRegression``, no options) or ``"mlp"`` (``MLP``, option
        ``hidden``, default 64).
    num_features, num_classes
        Input width and number of classes.
    **options
        Model-specific options, as listed above.

    Raises
    ------
    ConfigError
        For an unknown name or option, or an option with an impossible value.

    Examples
    --------
    >>> build_model("softmax", num_features=64, num_classes=10)
    SoftmaxRegression(num_features=64, num_classes=10)
    """
    allowed_options = {"softmax": set(), "mlp": {"hidden"}}
    if name not in allowed_options:
        raise ConfigError(f"unknown model {name!r}: expected one of {', '.join(MODEL_NAMES)}")
    unknown = sorted(set(options) - allowed_options[name])
    if unknown:
        allowed = ", ".join(sorted(allowed_options[name])) or "none"
        raise ConfigError(f"model {name!r}: unknown options {unknown}; allowed options: {allowed}")
    try:
        if name == "mlp":
            return MLP(num_features, int_option(options, "hidden", 64), num_classes)
        return SoftmaxRegression(num_features, num_classes)
    except InvalidArgumentError as exc:
        raise ConfigError(f"model {name!r}: {exc}") from exc


def _torch(name: str, **setting_keys: str) -> TorchBuilder:
    """A builder of ``fedbus.train.torch_models``' model ``name``; torch is imported when it is
    called, so that naming a model never needs torch. ``setting_keys`` maps its options to keys
    of the run's settings."""

    def build(num_features: int, num_classes: int, settings: Settings) -> Any:
        torch_models = importlib.import_module("fedbus.train.torch_models")
        options = {option: settings[key] for option, key in setting_keys.items()}
        return torch_models.build_torch_model(name, num_features, num_classes, **options)

    return build


register_model(
    "softmax",
    numpy=lambda num_features, num_classes, settings: build_model(
        "softmax", num_features, num_classes
    ),
    torch=_torch("softmax"),
)
register_model(
    "mlp",
    numpy=lambda num_features, num_classes, settings: build_model(
        "mlp", num_features, num_classes, hidden=settings["model.hidden"]
    ),
    torch=_torch("mlp", hidden="model.hidden"),
)
register_model("cnn", torch=_torch("cnn"))
# LEAF's baselines and MNIST-1D's CNN. char_lstm's width stays LEAF's 256 in a configured run:
# mapping it from model.hidden would make its default the MLP's 64.
register_model("femnist_cnn", torch=_torch("femnist_cnn"))
register_model("char_lstm", torch=_torch("char_lstm"))
register_model("cnn1d", torch=_torch("cnn1d"))
