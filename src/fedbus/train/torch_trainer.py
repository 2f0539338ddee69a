"""``TorchTrainer``: minibatch training of any ``torch.nn.Module`` behind the ``Trainer`` contract.

Arrays in and out are the module's ``state_dict`` as named NumPy arrays, buffers included (the
running statistics and batch counters of BatchNorm travel and are averaged like parameters).
``fit`` copies the received arrays once into the module's own tensors, trains the module in
place, and returns new arrays; it never writes to the arrays it received, which may be read-only
views into a message buffer. Results have the module's dtypes (a ``float32`` module returns
``float32`` arrays whatever dtype it was sent).

The configuration keys and their checks are those of ``NumpyTrainer``: ``"lr"``, ``"epochs"``,
``"batch_size"`` (``0`` or ``None``: full batch) and ``"seed"``. With the default loss
(cross-entropy) and optimizer (SGD without momentum), a full-batch ``fit`` takes the same steps
as ``NumpyTrainer`` does on the same arrays, up to float rounding.

Determinism: minibatches are drawn with ``torch.randperm`` from the trainer's own
``torch.Generator(seed)``, so two trainers built alike and given the same calls return the same
arrays on the CPU. A ``"seed"`` key in the config makes one call independent of the calls before
it (the shuffle then uses a generator seeded from ``[seed, config["seed"]]``).

Threads: fedbus leaves torch's intra-op thread pool as it is (``torch.get_num_threads()``, one
thread per core by default). A simulation trains one client at a time, so that default suits it;
when several training processes share a machine, or for models this small, where threads cost
more than they save, call ``torch.set_num_threads`` yourself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from fedbus.errors import InvalidArgumentError, InvalidTypeError, MissingDependencyError
from fedbus.train import options
from fedbus.train.base import Arrays, LocalTerms

try:
    import torch
    from torch import nn
except ImportError as exc:  # pragma: no cover - torch is installed by `make install`
    raise MissingDependencyError(
        "TorchTrainer needs PyTorch: pip install 'torch==2.13.0' then pip install 'fedbus[torch]'"
    ) from exc

__all__ = ["LossFunction", "OptimizerFactory", "TorchTrainer", "sgd", "shuffle_generator"]

#: ``loss(outputs, labels)``: the mean loss over a minibatch, a scalar tensor.
LossFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: ``optimizer(parameters, lr)``: a fresh optimizer; ``fit`` builds one per call.
OptimizerFactory = Callable[[Iterable[nn.Parameter], float], torch.optim.Optimizer]

# Rows per forward pass in evaluate: bounds activation memory on large test sets.
_EVAL_CHUNK = 8192


def sgd(parameters: Iterable[nn.Parameter], lr: float) -> torch.optim.Optimizer:
    """Plain SGD, no momentum and no weight decay: the step ``NumpyTrainer`` takes."""
    return torch.optim.SGD(parameters, lr=lr)


class TorchTrainer:
    """Train any ``torch.nn.Module`` on one client's data; arrays are its ``state_dict``.

    Parameters
    ----------
    model
        The module. It is moved to ``device`` and trained in place; several trainers may share
        one module as long as their calls do not overlap (each call loads the full state first),
        which is how the simulation runs them.
    x_train, y_train
        Local training inputs (first dimension: examples) and int class labels ``(n,)``, as
        NumPy arrays or tensors; at least one example. Inputs are cast once to the module's
        floating dtype and moved to ``device``.
    x_test, y_test
        Local evaluation split. When absent, ``evaluate`` measures the training data instead.
    train_loader, test_loader
        Instead of arrays: ``DataLoader`` s (or any iterables) of ``(inputs, labels)`` batches.
        Their own batching and shuffling are used, so the config keys ``"batch_size"`` and
        ``"seed"`` do not apply to them.
    loss
        ``loss(outputs, labels)``, the mean over a batch; default cross-entropy.
    optimizer
        ``optimizer(parameters, lr)``; default plain SGD (``sgd``). A fresh optimizer is built
        for every ``fit``, so optimizer state (momentum, Adam moments) does not outlive a round.
    epochs, batch_size, lr
        Defaults for the config keys ``"epochs"``, ``"batch_size"`` (``0`` or ``None``: full
        batch) and ``"lr"``; a config overrides them per call.
    seed
        Seed of the shuffling generator (a non-negative int).
    device
        Where to train: ``"cpu"`` (default), ``"cuda"``, ``"cuda:1"``, ``"mps"``, ...

    Examples
    --------
    >>> import numpy as np
    >>> from fedbus.train.torch_models import build_torch_model, init_state
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(200, 2)).astype(np.float32)
    >>> y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    >>> model = build_torch_model("softmax", num_features=2, num_classes=2)
    >>> trainer = TorchTrainer(model, x, y, epochs=10, batch_size=20, lr=0.5)
    >>> arrays, n, metrics = trainer.fit(init_state(model, seed=0), {})
    >>> n, metrics["samples_processed"], metrics["steps"]
    (200, 2000, 100)
    >>> loss, n_eval, eval_metrics = trainer.evaluate(arrays, {})
    >>> eval_metrics["accuracy"] > 0.95
    True
    """

    def __init__(
        self,
        model: nn.Module,
        x_train: ArrayLike | torch.Tensor | None = None,
        y_train: ArrayLike | torch.Tensor | None = None,
        x_test: ArrayLike | torch.Tensor | None = None,
        y_test: ArrayLike | torch.Tensor | None = None,
        *,
        train_loader: Iterable[Any] | None = None,
        test_loader: Iterable[Any] | None = None,
        loss: LossFunction | None = None,
        optimizer: OptimizerFactory | None = None,
        epochs: int = 1,
        batch_size: int | None = 32,
        lr: float = 0.1,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ) -> None:
        if not isinstance(model, nn.Module):
            raise InvalidTypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
        self.device = _device(device)
        state = _tensor_state(model, keep_vars=True)
        if any(tensor.device != self.device for tensor in state.values()):
            model.to(self.device)
        self.model = model
        self.loss: LossFunction = loss or nn.functional.cross_entropy
        self.optimizer: OptimizerFactory = optimizer or sgd
        floating = (tensor.dtype for tensor in state.values() if tensor.is_floating_point())
        self._dtype = dtype = next(floating, torch.get_default_dtype())
        train = _data("train", x_train, y_train, train_loader, dtype, self.device)
        if train is None:
            raise InvalidArgumentError(
                "TorchTrainer: give the training data, as x_train and y_train or as train_loader"
            )
        evaluation = _data("test", x_test, y_test, test_loader, dtype, self.device)
        self._train = train
        self._eval = train if evaluation is None else evaluation
        self.lr = options.learning_rate({}, lr)
        self.epochs = options.epochs({}, epochs)
        self.batch_size = options.batch_size({}, batch_size)
        self.seed = options.seed("seed", seed)
        self._generator = torch.Generator().manual_seed(self.seed)

    @property
    def num_train_examples(self) -> int | None:
        """Number of local training examples (``None`` for a loader of unknown length)."""
        return _length(self._train)

    @property
    def num_eval_examples(self) -> int | None:
        """Number of examples ``evaluate`` measures (``None`` for a loader of unknown length)."""
        return _length(self._eval)

    def fit(
        self, arrays: Arrays, config: dict[str, Any], terms: LocalTerms | None = None
    ) -> tuple[Arrays, int, dict[str, float]]:
        """Train from ``arrays`` and return ``(new_arrays, num_examples, metrics)``.

        ``arrays`` must hold exactly the module's ``state_dict`` names and shapes; it is never
        modified. ``metrics`` holds ``"train_loss"`` (mean batch loss of the last epoch, each
        measured before its step), ``"samples_processed"`` (examples times epochs) and
        ``"steps"`` (optimizer steps). ``terms`` adds a proximal pull and a gradient correction
        to the gradients of the parameters they name before every step; names of buffers are
        ignored (buffers have no gradient).
        """
        lr = options.learning_rate(config, self.lr)
        epochs = options.epochs(config, self.epochs)
        batch_size = options.batch_size(config, self.batch_size)
        generator = self._shuffle_generator(config)
        self._load(arrays)
        local_terms = _PreparedTerms(self.model, terms)
        optimizer = self.optimizer(self.model.parameters(), lr)
        self.model.train()
        steps, samples, epoch_loss, epoch_rows = 0, 0, 0.0, 0
        for _ in range(epochs):
            losses: list[tuple[torch.Tensor, int]] = []
            for inputs, labels in self._train_batches(batch_size, generator):
                optimizer.zero_grad(set_to_none=True)
                loss = self.loss(self.model(inputs), labels)
                loss.backward()  # type: ignore[no-untyped-call]
                local_terms.apply()
                optimizer.step()
                # Read the losses once the epoch is over: on a GPU, reading one waits for it.
                losses.append((loss.detach(), len(labels)))
            epoch_rows = sum(rows for _, rows in losses)
            steps += len(losses)
            samples += epoch_rows
            epoch_loss = sum(float(value) * rows for value, rows in losses) / max(epoch_rows, 1)
        metrics = {"train_loss": epoch_loss, "samples_processed": samples, "steps": steps}
        return self._state_arrays(), epoch_rows, metrics

    def evaluate(
        self, arrays: Arrays, config: dict[str, Any]
    ) -> tuple[float, int, dict[str, float]]:
        """Mean loss and accuracy of ``arrays`` on the evaluation split, in eval mode.

        The split is the test data given to the constructor, or the training data when none was
        given. Accuracy counts the rows whose highest output is the label. With no evaluation
        examples the result is ``(0.0, 0, {"accuracy": 0.0})``, which carries zero weight in an
        example-weighted average.
        """
        self._load(arrays)
        self.model.eval()
        total_loss, correct, rows = 0.0, 0, 0
        with torch.no_grad():
            for inputs, labels in self._eval_batches():
                outputs = self.model(inputs)
                total_loss += float(self.loss(outputs, labels)) * len(labels)
                correct += int((outputs.argmax(dim=1) == labels).sum())
                rows += len(labels)
        if rows == 0:
            return 0.0, 0, {"accuracy": 0.0}
        return total_loss / rows, rows, {"accuracy": correct / rows}

    # -- state in and out -----------------------------------------------------------------------
    def _load(self, arrays: Arrays) -> None:
        """Copy ``arrays`` into the module's parameters and buffers, checking each one."""
        state = _tensor_state(self.model, keep_vars=True)
        if arrays.keys() != state.keys():
            missing = sorted(state.keys() - arrays.keys())
            unexpected = sorted(arrays.keys() - state.keys())
            raise InvalidArgumentError(
                f"TorchTrainer: the arrays do not match the model's state_dict: missing "
                f"{missing}, unexpected {unexpected}; send the arrays of this model, e.g. "
                f"init_state(model, seed)"
            )
        with torch.no_grad():
            for name, target in state.items():
                _copy_into(name, target, arrays[name])

    def _state_arrays(self) -> Arrays:
        # Copies: the module trains on in later calls, the result must not change with it.
        return {
            name: tensor.detach().to("cpu", copy=True).numpy()
            for name, tensor in _tensor_state(self.model, keep_vars=True).items()
        }

    # -- batches --------------------------------------------------------------------------------
    def _train_batches(
        self, batch_size: int | None, generator: torch.Generator
    ) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        data = self._train
        if not isinstance(data, _TensorData):
            return self._loader_batches(data)
        x, y = data.x, data.y
        num_examples = len(y)
        if batch_size is None or batch_size >= num_examples:
            # Full batch: the order of rows cannot change the step, so skip the shuffle.
            return [(x, y)]
        # One gather per epoch, then contiguous slices: cheaper than an index per batch.
        order = torch.randperm(num_examples, generator=generator).to(self.device)
        x, y = x[order], y[order]
        return [
            (x[start : start + batch_size], y[start : start + batch_size])
            for start in range(0, num_examples, batch_size)
        ]

    def _eval_batches(self) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        data = self._eval
        if not isinstance(data, _TensorData):
            return self._loader_batches(data)
        return [
            (data.x[start : start + _EVAL_CHUNK], data.y[start : start + _EVAL_CHUNK])
            for start in range(0, len(data.y), _EVAL_CHUNK)
        ]

    def _loader_batches(self, loader: Iterable[Any]) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        for batch in loader:
            if not isinstance(batch, tuple | list) or len(batch) != 2:
                raise InvalidTypeError(
                    f"TorchTrainer: a loader must yield (inputs, labels) pairs, got "
                    f"{type(batch).__name__}"
                )
            inputs, labels = batch
            if inputs.is_floating_point():
                inputs = inputs.to(self.device, self._dtype)
            yield inputs.to(self.device), labels.to(self.device)

    def _shuffle_generator(self, config: dict[str, Any]) -> torch.Generator:
        return shuffle_generator(self.seed, self._generator, config)

    def __repr__(self) -> str:
        return (
            f"TorchTrainer({type(self.model).__name__}, train={self.num_train_examples}, "
            f"eval={self.num_eval_examples}, epochs={self.epochs}, "
            f"batch_size={self.batch_size}, lr={self.lr}, device={str(self.device)!r})"
        )


class _TensorData:
    """Inputs and labels already on the training device."""

    __slots__ = ("x", "y")

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y


class _PreparedTerms:
    """``LocalTerms`` as tensors on the parameters' device and dtype, checked once per call."""

    __slots__ = ("_corrections", "_mu", "_pulls")

    def __init__(self, model: nn.Module, terms: LocalTerms | None) -> None:
        self._mu = 0.0 if terms is None else terms.proximal_mu
        self._pulls: list[tuple[nn.Parameter, torch.Tensor]] = []
        self._corrections: list[tuple[nn.Parameter, torch.Tensor]] = []
        if terms is None or not terms.active:
            return
        state = _tensor_state(model)
        parameters = dict(model.named_parameters())
        anchor = terms.anchor if self._mu > 0 else None
        self._pulls = _term_tensors("anchor", anchor, state, parameters)
        self._corrections = _term_tensors("correction", terms.correction, state, parameters)

    def apply(self) -> None:
        """Add ``mu * (w - anchor)`` and the correction to the named parameters' gradients."""
        for parameter, anchor in self._pulls:
            _add_to_grad(parameter, parameter.detach() - anchor, self._mu)
        for parameter, correction in self._corrections:
            _add_to_grad(parameter, correction, 1.0)


def _add_to_grad(parameter: nn.Parameter, term: torch.Tensor, scale: float) -> None:
    if parameter.grad is None:  # the loss did not reach it this step; the term still does
        parameter.grad = term * scale
    else:
        parameter.grad.add_(term, alpha=scale)


def _term_tensors(
    what: str,
    arrays: Mapping[str, np.ndarray[Any, Any]] | None,
    state: Mapping[str, torch.Tensor],
    parameters: Mapping[str, nn.Parameter],
) -> list[tuple[nn.Parameter, torch.Tensor]]:
    if not arrays:
        return []
    unknown = sorted(set(arrays) - set(state))
    if unknown:
        raise InvalidArgumentError(
            f"LocalTerms.{what}: the model has no parameters named {unknown}; expected names "
            f"from its state_dict"
        )
    result = []
    for name, value in arrays.items():
        parameter = parameters.get(name)
        if parameter is None or not parameter.requires_grad:
            continue  # a buffer or a frozen parameter: no gradient to change
        if tuple(value.shape) != tuple(parameter.shape):
            raise InvalidArgumentError(
                f"LocalTerms.{what}[{name!r}]: expected shape {tuple(parameter.shape)}, "
                f"got {tuple(value.shape)}"
            )
        # torch.tensor copies, so a read-only array is fine (torch.from_numpy would warn).
        tensor = torch.tensor(np.asarray(value), dtype=parameter.dtype, device=parameter.device)
        result.append((parameter, tensor))
    return result


def _copy_into(name: str, target: torch.Tensor, value: object) -> None:
    """Check ``value`` against ``target`` and copy it in, without writing to ``value``."""
    kind = "parameter" if isinstance(target, nn.Parameter) else "buffer"
    if not isinstance(value, np.ndarray):
        raise InvalidTypeError(
            f"{kind} {name!r}: expected numpy.ndarray, got {type(value).__name__}"
        )
    if value.shape != tuple(target.shape):
        raise InvalidArgumentError(
            f"{kind} {name!r}: expected shape {tuple(target.shape)}, got {value.shape}"
        )
    if value.dtype.kind not in _KINDS_INTO[_kind(target)]:
        raise InvalidTypeError(
            f"{kind} {name!r}: expected values castable to {target.dtype}, got {value.dtype}"
        )
    if target.device.type != "cpu":
        # torch.tensor copies, so a read-only array is fine; one host-to-device transfer.
        target.copy_(torch.tensor(value, device=target.device))
        return
    destination = target.detach().numpy()
    if np.may_share_memory(destination, value):
        # The caller's arrays are this module's own memory (e.g. arrays made from its
        # state_dict without copying): train on a private copy so they stay unchanged.
        target.data = target.data.clone()
        destination = target.detach().numpy()
    # NumPy writes straight into the tensor's memory: no temporary tensor, and no torch
    # warning for a read-only source.
    np.copyto(destination, value, casting="same_kind")


# NumPy dtype kinds that may be copied into a tensor of each kind (NumPy's "same_kind" casts).
_KINDS_INTO = {"bool": "b", "integer": "biu", "floating": "biuf", "complex": "biufc"}


def _kind(tensor: torch.Tensor) -> str:
    if tensor.dtype == torch.bool:
        return "bool"
    if tensor.is_complex():
        return "complex"
    return "floating" if tensor.is_floating_point() else "integer"


def _tensor_state(model: nn.Module, keep_vars: bool = False) -> dict[str, torch.Tensor]:
    """The module's ``state_dict`` entries that are tensors (extra state is not an array)."""
    return {
        name: value
        for name, value in model.state_dict(keep_vars=keep_vars).items()
        if isinstance(value, torch.Tensor)
    }


def _device(device: str | torch.device) -> torch.device:
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InvalidArgumentError(
            f"device: {device!r} is not a torch device; use 'cpu', 'cuda' or 'cuda:N'"
        ) from exc
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise InvalidArgumentError(
                f"device {str(resolved)!r}: torch sees no CUDA GPU here (no GPU, no driver, or a "
                f"CPU-only torch build); use device='cpu'"
            )
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise InvalidArgumentError(
                f"device {str(resolved)!r}: only {count} CUDA device(s), numbered from 0"
            )
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise InvalidArgumentError("device 'mps': this machine has no MPS device; use 'cpu'")
    return resolved


def _data(
    split: str,
    x: ArrayLike | torch.Tensor | None,
    y: ArrayLike | torch.Tensor | None,
    loader: Iterable[Any] | None,
    dtype: torch.dtype,
    device: torch.device,
) -> _TensorData | Iterable[Any] | None:
    if loader is not None:
        if x is not None or y is not None:
            raise InvalidArgumentError(
                f"TorchTrainer: give x_{split} and y_{split}, or {split}_loader, not both"
            )
        return loader
    if (x is None) != (y is None):
        raise InvalidArgumentError(f"x_{split} and y_{split}: give both or neither")
    if x is None or y is None:
        return None
    inputs, labels = _tensor(f"x_{split}", x), _tensor(f"y_{split}", y)
    if inputs.ndim == 0 or not (inputs.is_floating_point() or _is_integer(inputs)):
        raise InvalidArgumentError(
            f"x_{split}: expected numeric inputs with one row per example, got shape "
            f"{tuple(inputs.shape)} and dtype {inputs.dtype}"
        )
    if labels.ndim != 1 or not _is_integer(labels):
        raise InvalidArgumentError(
            f"y_{split}: expected a 1-D array of int labels, got shape {tuple(labels.shape)} "
            f"and dtype {labels.dtype}"
        )
    if len(labels) != len(inputs):
        raise InvalidArgumentError(
            f"y_{split}: expected {len(inputs)} labels (one per row of x_{split}), "
            f"got {len(labels)}"
        )
    if split == "train" and len(labels) == 0:
        raise InvalidArgumentError("x_train: expected at least one training example, got 0")
    if len(labels) and int(labels.min()) < 0:
        raise InvalidArgumentError(f"y_{split}: labels must be >= 0, found {int(labels.min())}")
    return _TensorData(inputs.to(device, dtype), labels.to(device, torch.int64))


def _tensor(name: str, values: ArrayLike | torch.Tensor) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        return values.detach()
    array = np.asarray(values)
    if array.dtype.kind not in "biuf":
        raise InvalidTypeError(f"{name}: expected numbers, got dtype {array.dtype}")
    if array.dtype.kind == "b":
        array = array.astype(np.uint8)
    if array.flags.writeable and array.dtype.isnative:
        return torch.from_numpy(array)  # shares the caller's memory, which is never written
    return torch.tensor(array)  # a copy: torch.from_numpy refuses or warns on these


def _is_integer(tensor: torch.Tensor) -> bool:
    return not tensor.is_floating_point() and not tensor.is_complex() and tensor.dtype != torch.bool


def _length(data: _TensorData | Iterable[Any]) -> int | None:
    if isinstance(data, _TensorData):
        return len(data.y)
    dataset: Any = getattr(data, "dataset", data)
    try:
        return len(dataset)
    except TypeError:
        return None


def shuffle_generator(seed: int, own: torch.Generator, config: dict[str, Any]) -> torch.Generator:
    """The generator that orders one call's batches: the trainer's ``own`` stream, or, when
    the request carries a ``seed``, a fresh one from it and the trainer's ``seed`` (so that
    any copy of a client shuffles a request alike)."""
    if config.get("seed") is None:
        return own
    call_seed = options.seed("config 'seed'", config["seed"])
    mixed = np.random.SeedSequence([seed, call_seed]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(mixed))
