"""``CausalLMTrainer``: next-token training of a causal language model behind the ``Trainer``
contract.

Arrays in and out are the model's trainable parameters only (``requires_grad``): with LoRA, the
adapters; the frozen base never travels and stays the same on every client. ``fit`` copies the
received arrays into the model, trains, and returns new arrays; it never writes to the arrays it
received. Data are blocks of token ids ``(n, block_size)`` and, for each block, the token that
follows it (``fedbus.data.text``): the model predicts every next token of the block, the last
being that label.

Metrics: ``train_loss`` (mean next-token cross-entropy of the last epoch, in nats),
``samples_processed`` (blocks times epochs) and ``steps``; ``evaluate`` reports the mean
cross-entropy as the loss, and ``accuracy`` (next-token accuracy) and ``perplexity``
(``exp(loss)``) as metrics.

Determinism: minibatches come from the trainer's own ``torch.Generator(seed)`` and dropout from
torch's global generator seeded per call from it (then restored), so two trainers built alike
and given the same calls return the same arrays on the CPU. A ``"seed"`` in the config makes one
call independent of the calls before it, as for ``TorchTrainer``.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import nn

from fedbus.errors import InvalidArgumentError
from fedbus.train import options
from fedbus.train.base import Arrays, LocalTerms
from fedbus.train.hf.models import seeded, trainable_arrays
from fedbus.train.torch_trainer import _copy_into, _device, _PreparedTerms, shuffle_generator

__all__ = ["CausalLMTrainer", "adamw"]

#: ``optimizer(parameters, lr)``: a fresh optimizer; ``fit`` builds one per call.
OptimizerFactory = Callable[[Iterable[nn.Parameter], float], torch.optim.Optimizer]


def adamw(parameters: Iterable[nn.Parameter], lr: float) -> torch.optim.Optimizer:
    """AdamW without weight decay: the usual optimizer of LoRA fine-tuning."""
    return torch.optim.AdamW(parameters, lr=lr, weight_decay=0.0)


class CausalLMTrainer:
    """Train a causal language model's trainable parameters on blocks of token ids.

    Parameters
    ----------
    model
        A causal language model (``transformers``' ``...ForCausalLM``, possibly wrapped by
        ``add_lora``); its output has ``.logits``. Several trainers may share one model (the
        base is frozen and every call loads all trainable parameters first); their calls are
        serialised by ``lock``.
    x_train, y_train
        Blocks of token ids ``(n, block_size)`` (any numeric dtype holding whole numbers) and
        the token after each block ``(n,)``; at least one block.
    x_test, y_test
        Evaluation blocks; when absent, ``evaluate`` measures the training blocks.
    optimizer
        ``optimizer(parameters, lr)``; default ``adamw``. A fresh one per ``fit``.
    epochs, batch_size, lr
        Defaults for the config keys ``"epochs"``, ``"batch_size"`` (``0`` or ``None``: all
        blocks in one step) and ``"lr"``.
    seed
        Seed of the shuffling and dropout (a non-negative int).
    device
        ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``; the model is moved there.
    lock
        Shared by the trainers of one model; default: a lock of this trainer's own.
    """

    def __init__(
        self,
        model: nn.Module,
        x_train: ArrayLike,
        y_train: ArrayLike,
        x_test: ArrayLike | None = None,
        y_test: ArrayLike | None = None,
        *,
        optimizer: OptimizerFactory | None = None,
        epochs: int = 1,
        batch_size: int | None = 8,
        lr: float = 1e-3,
        seed: int = 0,
        device: str | torch.device = "cpu",
        lock: threading.Lock | None = None,
    ) -> None:
        self.device = _device(device)
        model.to(self.device)
        self.model = model
        self.vocab_size = _vocab_size(model)
        self._trainable = {
            name: parameter
            for name, parameter in model.named_parameters()
            if parameter.requires_grad
        }
        if not self._trainable:
            raise InvalidArgumentError("CausalLMTrainer: the model has no trainable parameters")
        self._train = self._blocks("train", x_train, y_train)
        if len(self._train[1]) == 0:
            raise InvalidArgumentError("x_train: expected at least one block, got 0")
        has_test = x_test is not None and y_test is not None and len(np.asarray(y_test)) > 0
        self._eval = self._blocks("test", x_test, y_test) if has_test else self._train
        self.optimizer: OptimizerFactory = optimizer or adamw
        self.lr = options.learning_rate({}, lr)
        self.epochs = options.epochs({}, epochs)
        self.batch_size = options.batch_size({}, batch_size)
        self.seed = options.seed("seed", seed)
        self._generator = torch.Generator().manual_seed(self.seed)
        self._lock = lock or threading.Lock()

    @property
    def num_train_examples(self) -> int:
        """Number of training blocks."""
        return len(self._train[1])

    @property
    def num_eval_examples(self) -> int:
        """Number of blocks ``evaluate`` measures."""
        return len(self._eval[1])

    def fit(
        self, arrays: Arrays, config: dict[str, Any], terms: LocalTerms | None = None
    ) -> tuple[Arrays, int, dict[str, float]]:
        """Train from ``arrays`` (exactly the trainable parameters) and return new ones.

        ``terms`` (FedProx's pull, SCAFFOLD's correction) act on the trainable parameters they
        name, as in ``TorchTrainer``.
        """
        lr = options.learning_rate(config, self.lr)
        epochs = options.epochs(config, self.epochs)
        batch_size = options.batch_size(config, self.batch_size)
        generator = self._shuffle_generator(config)
        dropout_seed = int(torch.randint(2**62, (1,), generator=generator))
        with self._lock:
            self._load(arrays)
            local_terms = _PreparedTerms(self.model, terms)
            optimizer = self.optimizer(self._trainable.values(), lr)
            self.model.train()
            steps, epoch_loss = 0, 0.0
            with seeded(dropout_seed, self.device):
                for _ in range(epochs):
                    total, count = torch.zeros((), device=self.device), 0
                    for inputs, targets in self._batches(batch_size, generator):
                        optimizer.zero_grad(set_to_none=True)
                        loss = self._loss(inputs, targets)
                        loss.backward()  # type: ignore[no-untyped-call]
                        local_terms.apply()
                        optimizer.step()
                        total += loss.detach() * len(inputs)
                        count += len(inputs)
                        steps += 1
                    epoch_loss = float(total) / count
            self.model.eval()
            result = trainable_arrays(self.model)
        n = self.num_train_examples
        metrics = {"train_loss": epoch_loss, "samples_processed": n * epochs, "steps": steps}
        return result, n, metrics

    def evaluate(
        self, arrays: Arrays, config: dict[str, Any]
    ) -> tuple[float, int, dict[str, float]]:
        """Mean next-token cross-entropy of ``arrays`` on the evaluation blocks, with
        ``accuracy`` and ``perplexity``."""
        inputs, following = self._eval
        loss_sum, correct, tokens = 0.0, 0, 0
        with self._lock:
            self._load(arrays)
            self.model.eval()
            with torch.no_grad():
                for start in range(0, len(inputs), _EVAL_BLOCKS):
                    chunk = slice(start, start + _EVAL_BLOCKS)
                    targets = _targets(inputs[chunk], following[chunk])
                    logits = self._logits(inputs[chunk])
                    loss_sum += float(
                        nn.functional.cross_entropy(
                            logits.flatten(0, 1), targets.flatten(), reduction="sum"
                        )
                    )
                    correct += int((logits.argmax(-1) == targets).sum())
                    tokens += targets.numel()
        loss = loss_sum / tokens
        perplexity = math.exp(min(loss, _LARGEST_EXPONENT))
        return loss, len(following), {"accuracy": correct / tokens, "perplexity": perplexity}

    def _logits(self, inputs: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.model(input_ids=inputs).logits
        return logits.float()

    def _loss(self, inputs: torch.Tensor, following: torch.Tensor) -> torch.Tensor:
        logits = self._logits(inputs)
        targets = _targets(inputs, following)
        return nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())

    def _load(self, arrays: Arrays) -> None:
        missing = sorted(set(self._trainable) - set(arrays))
        unknown = sorted(set(arrays) - set(self._trainable))
        if missing or unknown:
            raise InvalidArgumentError(
                f"CausalLMTrainer: expected exactly the model's {len(self._trainable)} trainable "
                f"parameters; missing {_few(missing)}, unknown {_few(unknown)}"
            )
        with torch.no_grad():
            for name, parameter in self._trainable.items():
                _copy_into(name, parameter, arrays[name])

    def _batches(
        self, batch_size: int | None, generator: torch.Generator
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        inputs, following = self._train
        n = len(following)
        size = n if batch_size is None else batch_size
        order = torch.randperm(n, generator=generator).to(self.device)
        for start in range(0, n, size):
            rows = order[start : start + size]
            yield inputs[rows], following[rows]

    def _blocks(
        self, split: str, x: ArrayLike | None, y: ArrayLike | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        blocks, following = np.asarray(x), np.asarray(y)
        if blocks.ndim != 2 or blocks.shape[1] < 1 or following.shape != (len(blocks),):
            raise InvalidArgumentError(
                f"x_{split}, y_{split}: expected blocks (n, block_size) and one next token per "
                f"block (n,), got shapes {blocks.shape} and {following.shape}"
            )
        ids = np.concatenate([blocks.reshape(-1), following])
        if ids.dtype.kind not in "iuf" or (ids.size and not np.array_equal(ids, np.round(ids))):
            raise InvalidArgumentError(f"x_{split}, y_{split}: expected whole-number token ids")
        if ids.size and not 0 <= ids.min() <= ids.max() < self.vocab_size:
            raise InvalidArgumentError(
                f"x_{split}, y_{split}: token ids must lie in 0..{self.vocab_size - 1} (the "
                f"model's vocabulary), found {int(ids.min())}..{int(ids.max())}"
            )
        as_ids = (torch.tensor(part.astype(np.int64)) for part in (blocks, following))
        return tuple(part.to(self.device) for part in as_ids)  # type: ignore[return-value]

    def _shuffle_generator(self, config: dict[str, Any]) -> torch.Generator:
        return shuffle_generator(self.seed, self._generator, config)

    def __repr__(self) -> str:
        return (
            f"CausalLMTrainer({type(self.model).__name__}, train={self.num_train_examples}, "
            f"eval={self.num_eval_examples}, trainable={len(self._trainable)} arrays, "
            f"device={str(self.device)!r})"
        )


# Blocks per forward pass in evaluate: bounds activation memory (block x vocab logits each).
_EVAL_BLOCKS = 32
# exp(700) is near float64's largest value; a worse loss reports that perplexity.
_LARGEST_EXPONENT = 700.0


def _few(names: list[str]) -> str:
    """Up to three names, and how many more."""
    more = f" and {len(names) - 3} more" if len(names) > 3 else ""
    return f"{names[:3]}{more}"


def _targets(inputs: torch.Tensor, following: torch.Tensor) -> torch.Tensor:
    """The next token of every position: the block shifted by one, then the label."""
    return torch.cat([inputs[:, 1:], following[:, None]], dim=1)


def _vocab_size(model: nn.Module) -> int:
    embeddings: Any = getattr(model, "get_input_embeddings", lambda: None)()
    if embeddings is None or not hasattr(embeddings, "num_embeddings"):
        raise InvalidArgumentError(
            f"CausalLMTrainer: expected a causal language model with input embeddings, got "
            f"{type(model).__name__}"
        )
    return int(embeddings.num_embeddings)
