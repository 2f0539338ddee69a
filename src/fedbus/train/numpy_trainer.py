"""``NumpyTrainer``: minibatch SGD for a ``NumpyModel`` on in-memory arrays.

Every step is a vectorised forward and backward pass over one minibatch; there is no Python loop
over samples. Arithmetic runs in the dtype of the parameters received (``float32`` unless the
server sends ``float64``), and the features are cast to that dtype once and cached.

Determinism: the trainer shuffles with its own ``np.random.default_rng(seed)``, so two trainers
built with the same seed and given the same calls return bit-identical arrays. A ``"seed"`` key
in the config makes a single call independent of the calls before it (the shuffle then uses
``np.random.default_rng([seed, config["seed"]])``), which is what parallel execution of client
work needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fedbus.errors import InvalidArgumentError, InvalidTypeError
from fedbus.train import options
from fedbus.train.base import Arrays, LocalTerms
from fedbus.train.models import NumpyModel, log_softmax

__all__ = ["NumpyTrainer"]

# Rows per forward pass in evaluate: bounds memory (rows x hidden activations) on large test sets.
_EVAL_CHUNK = 8192


class NumpyTrainer:
    """Train a ``NumpyModel`` with minibatch SGD on one client's arrays.

    Parameters
    ----------
    model
        The model (``SoftmaxRegression``, ``MLP`` or any ``NumpyModel``).
    x_train, y_train
        Local training features ``(n, num_features)`` and int labels ``(n,)``; at least one row.
        They are kept by reference and never modified.
    x_test, y_test
        Local evaluation split. When absent, ``evaluate`` measures the training data instead.
    epochs, batch_size, lr
        Defaults for the config keys ``"epochs"``, ``"batch_size"`` (``0`` or ``None``: full
        batch) and ``"lr"``; a config overrides them per call.
    seed
        Seed of the shuffling generator (a non-negative int).

    Examples
    --------
    >>> import numpy as np
    >>> from fedbus.train import SoftmaxRegression
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(200, 2)).astype(np.float32)
    >>> y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    >>> model = SoftmaxRegression(num_features=2, num_classes=2)
    >>> trainer = NumpyTrainer(model, x, y, epochs=10, batch_size=20, lr=0.5)
    >>> arrays, n, metrics = trainer.fit(model.init(seed=0), {})
    >>> loss, n_eval, eval_metrics = trainer.evaluate(arrays, {})
    >>> eval_metrics["accuracy"] > 0.95
    True
    """

    def __init__(
        self,
        model: NumpyModel,
        x_train: ArrayLike,
        y_train: ArrayLike,
        x_test: ArrayLike | None = None,
        y_test: ArrayLike | None = None,
        *,
        epochs: int = 1,
        batch_size: int | None = 32,
        lr: float = 0.1,
        seed: int = 0,
    ) -> None:
        if not isinstance(model, NumpyModel):
            raise InvalidTypeError(f"model: expected a NumpyModel, got {type(model).__name__}")
        self.model = model
        self._x_train, self._y_train = _check_split(model, "train", x_train, y_train)
        if len(self._y_train) == 0:
            raise InvalidArgumentError("x_train: expected at least one training example, got 0")
        if (x_test is None) != (y_test is None):
            raise InvalidArgumentError("x_test and y_test: give both or neither")
        if x_test is None or y_test is None:
            self._x_eval, self._y_eval = self._x_train, self._y_train
        else:
            self._x_eval, self._y_eval = _check_split(model, "test", x_test, y_test)
        self.lr = options.learning_rate({}, lr)
        self.epochs = options.epochs({}, epochs)
        self.batch_size = options.batch_size({}, batch_size)
        self.seed = options.seed("seed", seed)
        self._rng = np.random.default_rng(self.seed)
        self._cast_cache: dict[tuple[str, str], NDArray[Any]] = {}

    @property
    def num_train_examples(self) -> int:
        """Number of local training examples."""
        return len(self._y_train)

    @property
    def num_eval_examples(self) -> int:
        """Number of examples ``evaluate`` measures (the test split, or the training data)."""
        return len(self._y_eval)

    def fit(
        self, arrays: Arrays, config: dict[str, Any], terms: LocalTerms | None = None
    ) -> tuple[Arrays, int, dict[str, float]]:
        """Run SGD from ``arrays`` and return ``(new_arrays, num_examples, metrics)``.

        ``arrays`` is never modified (it may be read-only); the result is a new dict of new
        arrays in the model's parameter order and the parameters' dtype. ``metrics`` holds
        ``"train_loss"`` (mean minibatch loss of the last epoch, each measured before its step),
        ``"samples_processed"`` (examples times epochs) and ``"steps"`` (SGD steps taken).
        ``terms`` adds a proximal pull and a gradient correction to every step.
        """
        self.model.check_params(arrays)
        lr = options.learning_rate(config, self.lr)
        epochs = options.epochs(config, self.epochs)
        batch_size = options.batch_size(config, self.batch_size)
        rng = self._shuffle_rng(config)
        # Our own writable copies: SGD then updates in place without touching the input.
        params = {name: np.array(arrays[name], copy=True) for name in self.model.param_shapes()}
        dtype = params[next(iter(params))].dtype
        step = _Step(lr, terms, params)
        x = self._features("train", self._x_train, dtype)
        epoch_loss = 0.0
        for _ in range(epochs):
            epoch_loss = self._run_epoch(params, x, self._y_train, batch_size, rng, step)
        num_examples = len(self._y_train)
        metrics = {
            "train_loss": epoch_loss,
            "samples_processed": num_examples * epochs,
            "steps": step.count,
        }
        return params, num_examples, metrics

    def evaluate(
        self, arrays: Arrays, config: dict[str, Any]
    ) -> tuple[float, int, dict[str, float]]:
        """Mean cross-entropy and accuracy of ``arrays`` on the evaluation split.

        The split is the test data given to the constructor, or the training data when none was
        given. With no evaluation examples the result is ``(0.0, 0, {"accuracy": 0.0})``, which
        carries zero weight in an example-weighted average.
        """
        self.model.check_params(arrays)
        num_examples = len(self._y_eval)
        if num_examples == 0:
            return 0.0, 0, {"accuracy": 0.0}
        dtype = arrays[next(iter(self.model.param_shapes()))].dtype
        x = self._features("eval", self._x_eval, dtype)
        total_loss, correct = 0.0, 0
        for start in range(0, num_examples, _EVAL_CHUNK):
            x_chunk = x[start : start + _EVAL_CHUNK]
            y_chunk = self._y_eval[start : start + _EVAL_CHUNK]
            logits = self.model.logits(arrays, x_chunk)
            total_loss -= float(log_softmax(logits)[np.arange(len(y_chunk)), y_chunk].sum())
            correct += int((logits.argmax(axis=1) == y_chunk).sum())
        return total_loss / num_examples, num_examples, {"accuracy": correct / num_examples}

    def _run_epoch(
        self,
        params: Arrays,
        x: NDArray[Any],
        y: NDArray[np.int64],
        batch_size: int | None,
        rng: np.random.Generator,
        step: _Step,
    ) -> float:
        num_examples = len(y)
        if batch_size is None or batch_size >= num_examples:
            # Full batch: the order of rows cannot change the step, so skip the shuffle.
            loss, grads = self.model.loss_and_grad(params, x, y)
            step(params, grads)
            return loss
        # One gather per epoch, then contiguous slices: cheaper than a fancy index per batch.
        order = rng.permutation(num_examples)
        x_shuffled, y_shuffled = x[order], y[order]
        total = 0.0
        for start in range(0, num_examples, batch_size):
            y_batch = y_shuffled[start : start + batch_size]
            x_batch = x_shuffled[start : start + batch_size]
            loss, grads = self.model.loss_and_grad(params, x_batch, y_batch)
            step(params, grads)
            total += loss * len(y_batch)
        return total / num_examples

    def _shuffle_rng(self, config: dict[str, Any]) -> np.random.Generator:
        if config.get("seed") is None:
            return self._rng
        return np.random.default_rng([self.seed, options.seed("config 'seed'", config["seed"])])

    def _features(self, split: str, x: NDArray[Any], dtype: np.dtype[Any]) -> NDArray[Any]:
        if x.dtype == dtype:
            return x
        key = (split, dtype.str)
        if key not in self._cast_cache:
            self._cast_cache[key] = x.astype(dtype)
        return self._cast_cache[key]

    def __repr__(self) -> str:
        return (
            f"NumpyTrainer({self.model!r}, train={self.num_train_examples}, "
            f"eval={self.num_eval_examples}, epochs={self.epochs}, "
            f"batch_size={self.batch_size}, lr={self.lr})"
        )


class _Step:
    """One SGD step, with the ``LocalTerms`` cast once to the parameters' dtypes."""

    __slots__ = ("_anchor", "_correction", "_lr", "_mu", "count")

    def __init__(self, lr: float, terms: LocalTerms | None, params: Arrays) -> None:
        self._lr = lr
        self.count = 0
        terms = terms or LocalTerms()
        self._mu = terms.proximal_mu
        self._anchor = _terms_arrays("anchor", terms.anchor, params) if self._mu > 0 else {}
        self._correction = _terms_arrays("correction", terms.correction, params)

    def __call__(self, params: Arrays, grads: Arrays) -> None:
        for name, grad in grads.items():
            anchor = self._anchor.get(name)
            if anchor is not None:
                grad += self._mu * (params[name] - anchor)
            correction = self._correction.get(name)
            if correction is not None:
                grad += correction
            params[name] -= self._lr * grad
        self.count += 1


def _terms_arrays(
    what: str, arrays: Mapping[str, np.ndarray[Any, Any]] | None, params: Arrays
) -> Arrays:
    """``arrays`` checked against the parameters and cast to their dtypes."""
    if not arrays:
        return {}
    unknown = sorted(set(arrays) - set(params))
    if unknown:
        raise InvalidArgumentError(f"LocalTerms.{what}: no parameters named {unknown}")
    result: Arrays = {}
    for name, value in arrays.items():
        if value.shape != params[name].shape:
            raise InvalidArgumentError(
                f"LocalTerms.{what}[{name!r}]: expected shape {params[name].shape}, "
                f"got {value.shape}"
            )
        result[name] = np.asarray(value, dtype=params[name].dtype)
    return result


def _check_split(
    model: NumpyModel, split: str, x: ArrayLike, y: ArrayLike
) -> tuple[NDArray[Any], NDArray[np.int64]]:
    features = np.asarray(x)
    if not np.issubdtype(features.dtype, np.floating):
        features = features.astype(np.float32)
    if features.ndim != 2 or features.shape[1] != model.num_features:
        raise InvalidArgumentError(
            f"x_{split}: expected shape (n, {model.num_features}), got {features.shape}"
        )
    labels = np.asarray(y)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise InvalidArgumentError(
            f"y_{split}: expected a 1-D array of int labels, got shape {labels.shape} "
            f"and dtype {labels.dtype}"
        )
    if len(labels) != len(features):
        raise InvalidArgumentError(
            f"y_{split}: expected {len(features)} labels (one per row of x_{split}), "
            f"got {len(labels)}"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= model.num_classes):
        raise InvalidArgumentError(
            f"y_{split}: labels must lie in 0..{model.num_classes - 1}, "
            f"got {labels.min()}..{labels.max()}"
        )
    return features, labels.astype(np.int64, copy=False)
