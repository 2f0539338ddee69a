"""Small PyTorch models, and seeded initialisation that leaves torch's global RNG alone.

The ``"softmax"`` and ``"mlp"`` models have exactly the parameter names and shapes of the NumPy
``SoftmaxRegression`` and ``MLP`` (weights stored ``(inputs, outputs)``, not ``nn.Linear``'s
``(outputs, inputs)``), and ``init_state`` draws the same values as the NumPy ``init``. The same
arrays therefore run on a ``NumpyTrainer`` or a ``TorchTrainer``: a federation may mix them.

``"cnn"`` is a small convolutional network for square greyscale images given as flat rows, such
as the 8x8 digits (64 features): two convolution blocks with batch normalisation, then a linear
head. Its state includes BatchNorm buffers (running statistics and a batch counter), which travel
and are averaged like parameters.

Three models reproduce published baselines:

- ``"femnist_cnn"`` (``FemnistCNN``): the CNN of the FedAvg paper and of LEAF's FEMNIST
  baseline, for 28x28 greyscale images (784 features).
- ``"char_lstm"`` (``CharLSTM``): LEAF's Shakespeare next-character model; each row is a
  sequence of character ids stored as floats, and the vocabulary is the set of classes.
- ``"cnn1d"`` (``TorchCNN1D``): the 1-D convolutional network of the MNIST-1D paper, for
  signals such as MNIST-1D's 40 features.

This module imports torch; ``import fedbus.train`` does not, so it works without torch.

Examples
--------
>>> model = build_torch_model("mlp", num_features=4, num_classes=3, hidden=8)
>>> state = init_state(model, seed=0)
>>> sorted(state)
['hidden.bias', 'hidden.weight', 'output.bias', 'output.weight']
>>> from fedbus.train import MLP
>>> numpy_state = MLP(num_features=4, hidden=8, num_classes=3).init(seed=0)
>>> all((state[name] == numpy_state[name]).all() for name in state)
True
"""

from __future__ import annotations

import math
from typing import Any

from fedbus.errors import ConfigError, InvalidArgumentError, MissingDependencyError
from fedbus.train.base import Arrays
from fedbus.train.models import MLP
from fedbus.train.options import int_option, positive_int

try:
    import torch
    from torch import nn
except ImportError as exc:  # pragma: no cover - torch is installed by `make install`
    raise MissingDependencyError(
        "fedbus's torch models need PyTorch: pip install 'torch==2.13.0' "
        "then pip install 'fedbus[torch]'"
    ) from exc

__all__ = [
    "TORCH_MODEL_NAMES",
    "CharLSTM",
    "Dense",
    "FemnistCNN",
    "SeededModule",
    "TorchCNN",
    "TorchCNN1D",
    "TorchMLP",
    "TorchSoftmaxRegression",
    "build_torch_model",
    "init_state",
    "state_arrays",
]


class SeededModule(nn.Module):
    """A module that initialises its own parameters from a seed (see ``init_state``).

    Subclasses implement ``seeded_init``; ``init_state`` calls it instead of descending into the
    module's children.
    """

    def seeded_init(self, seed: int) -> None:
        """Set every parameter and buffer of this module from ``seed``, deterministically."""
        raise NotImplementedError


class Dense(nn.Module):
    """``x @ weight + bias`` with ``weight`` of shape ``(in_features, out_features)``.

    The NumPy models store weights this way round, so their arrays load here unchanged.
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The affine map of each row of ``x``."""
        return torch.addmm(self.bias, x, self.weight)


class TorchSoftmaxRegression(SeededModule):
    """Multinomial logistic regression; parameters ``"weight"`` ``(num_features, num_classes)``
    and ``"bias"`` ``(num_classes,)``, as the NumPy ``SoftmaxRegression``.

    ``seeded_init`` sets zeros whatever the seed: the loss is convex, no symmetry to break.
    """

    def __init__(self, num_features: int, num_classes: int) -> None:
        super().__init__()
        self.num_features = positive_int("num_features", num_features)
        self.num_classes = positive_int("num_classes", num_classes, minimum=2)
        self.weight = nn.Parameter(torch.zeros(self.num_features, self.num_classes))
        self.bias = nn.Parameter(torch.zeros(self.num_classes))

    def seeded_init(self, seed: int) -> None:
        """Zero weight and bias (``seed`` is accepted for a uniform interface and unused)."""
        with torch.no_grad():
            self.weight.zero_()
            self.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores ``x @ weight + bias``."""
        return torch.addmm(self.bias, x, self.weight)


class TorchMLP(SeededModule):
    """One hidden ReLU layer, with the parameter names, shapes and initial values of ``MLP``.

    Parameters are ``"hidden.weight"`` ``(num_features, hidden)``, ``"hidden.bias"``,
    ``"output.weight"`` ``(hidden, num_classes)`` and ``"output.bias"``; ``seeded_init(seed)``
    sets the values ``MLP(...).init(seed)`` returns.
    """

    def __init__(self, num_features: int, hidden: int, num_classes: int) -> None:
        super().__init__()
        self._numpy_model = MLP(num_features, hidden, num_classes)  # checks the sizes
        self.hidden = Dense(num_features, hidden)
        self.output = Dense(hidden, num_classes)

    def seeded_init(self, seed: int) -> None:
        """He-normal hidden weights, Glorot-uniform output weights, zero biases (as ``MLP``)."""
        values = self._numpy_model.init(seed)
        with torch.no_grad():
            for name, tensor in self.state_dict().items():
                tensor.copy_(torch.from_numpy(values[name]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores of each row of ``x``."""
        scores: torch.Tensor = self.output(torch.relu(self.hidden(x)))
        return scores


class TorchCNN(nn.Module):
    """Two convolution blocks and a linear head, for square images given as flat rows.

    Each row of ``num_features = side * side`` values is read as a one-channel ``side x side``
    image. Each block is a 3x3 convolution (no bias: the batch normalisation after it has one),
    ``BatchNorm2d``, ReLU and 2x2 max pooling; the second block has twice the channels of the
    first. With 8x8 digits, the default 16 channels and 10 classes that is 6,138 parameters,
    plus 96 running statistics and two batch counters.

    Parameters
    ----------
    num_features
        Pixels per image, a perfect square of a side >= 4.
    num_classes
        Number of classes.
    channels
        Channels of the first convolution.
    """

    def __init__(self, num_features: int, num_classes: int, channels: int = 16) -> None:
        super().__init__()
        side = _square_side("cnn", num_features)
        num_classes = positive_int("num_classes", num_classes, minimum=2)
        channels = positive_int("channels", channels)
        self.side = side
        self.conv1 = nn.Conv2d(1, channels, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, 2 * channels, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(2 * channels)
        pooled = side // 4  # two 2x2 poolings, each rounding down
        self.head = nn.Linear(2 * channels * pooled * pooled, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores of each row of ``x`` (shape ``(n, side * side)``)."""
        images = x.reshape(-1, 1, self.side, self.side)
        hidden = torch.max_pool2d(torch.relu(self.bn1(self.conv1(images))), 2)
        hidden = torch.max_pool2d(torch.relu(self.bn2(self.conv2(hidden))), 2)
        scores: torch.Tensor = self.head(hidden.flatten(1))
        return scores


class FemnistCNN(nn.Module):
    """The CNN of the FedAvg paper (McMahan et al., 2017) and LEAF's FEMNIST baseline.

    Each row of ``num_features = side * side`` values is read as a one-channel ``side x side``
    image: a 5x5 convolution to 32 channels, ReLU and 2x2 max pooling; a 5x5 convolution to 64
    channels, ReLU and 2x2 max pooling; a dense layer of 2048 ReLU units; the class layer. The
    convolutions pad by 2 on every side, which keeps the size ("same" padding). LEAF's model takes
    784 features (28x28); any square image of side >= 4 works here (``data.image_size``). With
    784 features and FEMNIST's 62 classes that is 6,603,710 parameters, 6,497,162 with 10
    classes. Initial values are torch's defaults, drawn by ``init_state``.

    Parameters
    ----------
    num_features
        Pixels per image, a perfect square of a side >= 4 (784 for LEAF's FEMNIST).
    num_classes
        Number of classes (62 for FEMNIST).
    """

    def __init__(self, num_features: int, num_classes: int) -> None:
        super().__init__()
        self.side = _square_side("femnist_cnn", num_features)
        num_classes = positive_int("num_classes", num_classes, minimum=2)
        self.conv1 = nn.Conv2d(1, 32, kernel_size=5, padding=2)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=5, padding=2)
        pooled = self.side // 4  # two 2x2 poolings, each rounding down: 28 -> 14 -> 7
        self.dense = nn.Linear(64 * pooled * pooled, 2048)
        self.output = nn.Linear(2048, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores of each row of ``x`` (shape ``(n, side * side)``)."""
        images = x.reshape(-1, 1, self.side, self.side)
        hidden = torch.max_pool2d(torch.relu(self.conv1(images)), 2)
        hidden = torch.max_pool2d(torch.relu(self.conv2(hidden)), 2)
        hidden = torch.relu(self.dense(hidden.flatten(1)))
        scores: torch.Tensor = self.output(hidden)
        return scores


class CharLSTM(nn.Module):
    """LEAF's Shakespeare model: the next character after a sequence of character ids.

    Each row of ``x`` is a sequence of ``num_features`` character ids stored as floats (the way
    fedbus stores every row; exact for ids below 2**24). Each id is embedded in 8 dimensions,
    two stacked LSTM layers of ``hidden`` units read the sequence, and a linear layer maps the
    last step's output to the classes. Input and output alphabet are the same, so the vocabulary
    size is ``num_classes``: ids must be whole numbers in ``0 .. num_classes - 1``, and anything
    else is refused before the embedding reads it. With LEAF's 80 characters and the default 256
    units that is 819,920 parameters (torch's LSTM has two bias vectors per gate, TensorFlow's
    cell one, hence 2,048 more than LEAF's model). Initial values are torch's defaults, drawn by
    ``init_state``.

    Parameters
    ----------
    num_features
        Length of each input sequence (80 in LEAF).
    num_classes
        Size of the alphabet (80 in LEAF's Shakespeare).
    hidden
        Units of each LSTM layer (256 in LEAF).
    """

    def __init__(self, num_features: int, num_classes: int, hidden: int = 256) -> None:
        super().__init__()
        self.sequence_length = positive_int("num_features", num_features)
        self.vocabulary = positive_int("num_classes", num_classes, minimum=2)
        hidden = positive_int("hidden", hidden)
        self.embedding = nn.Embedding(self.vocabulary, 8)
        self.lstm = nn.LSTM(8, hidden, num_layers=2, batch_first=True)
        self.output = nn.Linear(hidden, self.vocabulary)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scores of the character after each row of ids ``x`` (shape ``(n, length)``).

        Raises
        ------
        InvalidArgumentError
            ``x`` is not 2-D, or holds a value that is not an id in ``0 .. num_classes - 1``.
        """
        if x.ndim != 2:
            raise InvalidArgumentError(
                f"char_lstm: expected rows of character ids, shape (n, length), got shape "
                f"{tuple(x.shape)}"
            )
        if x.is_floating_point():
            # An out-of-range id would crash the embedding (a device assert on a GPU).
            invalid = (x < 0) | (x >= self.vocabulary) | (x != torch.floor(x))
        else:
            invalid = (x < 0) | (x >= self.vocabulary)
        if bool(invalid.any()):
            value = x[invalid][0].item()
            raise InvalidArgumentError(
                f"char_lstm: inputs must be character ids, whole numbers in "
                f"0..{self.vocabulary - 1} (num_classes is the vocabulary size), found {value}"
            )
        outputs, _ = self.lstm(self.embedding(x.long()))
        scores: torch.Tensor = self.output(outputs[:, -1])
        return scores


class TorchCNN1D(nn.Module):
    """The 1-D convolutional network of the MNIST-1D paper (Greydanus, 2020).

    Each row is one signal. Three convolutions with stride 2 and padding 1 (kernel 5, then 3,
    then 3), each followed by ReLU, keep ``channels`` channels; a linear layer maps the
    flattened result to the classes. On MNIST-1D's 40 features (40 -> 19 -> 10 -> 5 steps) with
    the default 25 channels and 10 classes that is 5,210 parameters.

    Parameters
    ----------
    num_features
        Length of each signal, at least 3.
    num_classes
        Number of classes.
    channels
        Channels of every convolution.
    """

    def __init__(self, num_features: int, num_classes: int, channels: int = 25) -> None:
        super().__init__()
        num_features = positive_int("num_features", num_features)
        if num_features < 3:
            raise InvalidArgumentError(
                f"num_features: the cnn1d reads each row as a signal of length >= 3, got "
                f"{num_features}; use the 'mlp' or 'softmax' model for shorter rows"
            )
        num_classes = positive_int("num_classes", num_classes, minimum=2)
        channels = positive_int("channels", channels)
        self.conv1 = nn.Conv1d(1, channels, kernel_size=5, stride=2, padding=1)
        self.conv2 = nn.Conv1d(channels, channels, kernel_size=3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(channels, channels, kernel_size=3, stride=2, padding=1)
        length = (num_features - 3) // 2 + 1  # kernel 5, padding 1, stride 2
        for _ in range(2):
            length = (length - 1) // 2 + 1  # kernel 3, padding 1, stride 2
        self.head = nn.Linear(channels * length, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores of each row of ``x`` (shape ``(n, num_features)``)."""
        hidden = torch.relu(self.conv1(x.reshape(len(x), 1, -1)))
        hidden = torch.relu(self.conv2(hidden))
        hidden = torch.relu(self.conv3(hidden))
        scores: torch.Tensor = self.head(hidden.flatten(1))
        return scores


def _square_side(model: str, num_features: int) -> int:
    """The side of the square images of ``num_features`` pixels, or an error naming the
    models that take other rows."""
    num_features = positive_int("num_features", num_features)
    side = math.isqrt(num_features)
    if side * side != num_features or side < 4:
        raise InvalidArgumentError(
            f"num_features: the {model} reads each row as a square image of side >= 4, so "
            f"num_features must be 16, 25, 36, 49, 64, ..., 784 (28x28), ...; got "
            f"{num_features}; use the 'mlp' or 'softmax' model (or 'cnn1d' for 1-D signals) "
            f"for data that is not square images"
        )
    return side


def init_state(model: nn.Module, seed: int) -> Arrays:
    """Initialise ``model`` from ``seed`` in place and return its state as NumPy arrays.

    A ``SeededModule`` (the ``"softmax"`` and ``"mlp"`` models) sets itself; any other module
    with a ``reset_parameters`` method (``nn.Linear``, ``nn.Conv2d``, ``nn.BatchNorm2d``, ...)
    draws torch's default initialisation from a CPU generator seeded with ``seed``. torch's
    global RNG state is saved and restored around this, so the call changes no other random
    stream; the same seed gives the same values on every call.

    Parameters
    ----------
    model
        Any module whose parameters are on the CPU (move it to a device afterwards).
    seed
        A non-negative int.

    Returns
    -------
    Arrays
        ``state_arrays(model)``: new arrays, for example the initial model of a ``Server``.

    Examples
    --------
    >>> import torch
    >>> layer = torch.nn.Linear(3, 2)
    >>> a, b = init_state(layer, seed=1), init_state(layer, seed=1)
    >>> bool((a["weight"] == b["weight"]).all())
    True
    """
    seed = positive_int("seed", seed, minimum=0)
    devices = {tensor.device.type for tensor in model.state_dict().values()}
    if devices - {"cpu"}:
        raise InvalidArgumentError(
            f"init_state draws on the CPU, but the model has tensors on {sorted(devices)}: "
            f"call it before moving the model to a device"
        )
    # devices=[]: only the CPU generator is forked; nothing here draws on an accelerator.
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        _initialise(model, seed)
    return state_arrays(model)


def _initialise(module: nn.Module, seed: int) -> None:
    if isinstance(module, SeededModule):
        module.seeded_init(seed)
        return
    reset = getattr(module, "reset_parameters", None)
    if callable(reset):
        reset()
    for child in module.children():
        _initialise(child, seed)


def state_arrays(model: nn.Module) -> Arrays:
    """The model's ``state_dict`` as new NumPy arrays (copies: training never changes them).

    Parameters and buffers are both included, in ``state_dict`` order.
    """
    return {
        name: tensor.detach().to("cpu", copy=True).numpy()
        for name, tensor in model.state_dict().items()
    }


#: Names accepted by ``build_torch_model``.
TORCH_MODEL_NAMES = ("char_lstm", "cnn", "cnn1d", "femnist_cnn", "mlp", "softmax")

_OPTIONS: dict[str, set[str]] = {
    "char_lstm": {"hidden"},
    "cnn": {"channels"},
    "cnn1d": {"channels"},
    "femnist_cnn": set(),
    "mlp": {"hidden"},
    "softmax": set(),
}


def build_torch_model(
    name: str, num_features: int, num_classes: int, *, seed: int = 0, **options: Any
) -> nn.Module:
    """Build a built-in torch model by name, initialised from ``seed`` (see ``init_state``).

    Parameters
    ----------
    name
        ``"softmax"`` (``TorchSoftmaxRegression``, no options), ``"mlp"`` (``TorchMLP``, option
        ``hidden``, default 64), ``"cnn"`` (``TorchCNN``, option ``channels``, default 16;
        ``num_features`` must be a perfect square), ``"femnist_cnn"`` (``FemnistCNN``, no
        options; a perfect square, 784 in LEAF), ``"char_lstm"`` (``CharLSTM``, option
        ``hidden``, default 256; ``num_classes`` is the vocabulary size) or ``"cnn1d"``
        (``TorchCNN1D``, option ``channels``, default 25).
    num_features, num_classes
        Input width and number of classes.
    seed
        Seed of the initial values (a non-negative int).
    **options
        Model-specific options, as listed above.

    Raises
    ------
    ConfigError
        For an unknown name or option, or an impossible size (the message says which).

    Examples
    --------
    >>> model = build_torch_model("cnn", num_features=64, num_classes=10)
    >>> sum(p.numel() for p in model.parameters())
    6138
    """
    if name not in _OPTIONS:
        raise ConfigError(
            f"unknown torch model {name!r}: expected one of {', '.join(TORCH_MODEL_NAMES)}"
        )
    unknown = sorted(set(options) - _OPTIONS[name])
    if unknown:
        allowed = ", ".join(sorted(_OPTIONS[name])) or "none"
        raise ConfigError(f"model {name!r}: unknown options {unknown}; allowed options: {allowed}")
    model: nn.Module
    try:
        if name == "cnn":
            channels = int_option(options, "channels", 16)
            model = TorchCNN(num_features, num_classes, channels)
        elif name == "femnist_cnn":
            model = FemnistCNN(num_features, num_classes)
        elif name == "char_lstm":
            model = CharLSTM(num_features, num_classes, int_option(options, "hidden", 256))
        elif name == "cnn1d":
            channels = int_option(options, "channels", 25)
            model = TorchCNN1D(num_features, num_classes, channels)
        elif name == "mlp":
            model = TorchMLP(num_features, int_option(options, "hidden", 64), num_classes)
        else:
            model = TorchSoftmaxRegression(num_features, num_classes)
        init_state(model, seed)
    except InvalidArgumentError as exc:
        raise ConfigError(f"model {name!r}: {exc}") from exc
    return model
