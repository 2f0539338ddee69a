"""``CausalLM``: the language model of one configured run, shared by its server and clients.

One process holds one copy of the model: the frozen base with its adapters. The server's
central evaluation and every client's trainer use it in turn, each call loading the arrays it
was given (all the trainable parameters) first, so a simulation of many clients costs one model
of memory, not one per client. Worker processes and deployed clients build the same model from
the same settings: the same pretrained weights, or the same random ones from
``federation.seed``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from numpy.typing import ArrayLike

from fedbus.errors import ConfigError, InvalidArgumentError
from fedbus.train.base import Arrays
from fedbus.train.hf.models import (
    LoraSettings,
    add_lora,
    load_causal_lm,
    parameter_count,
    trainable_arrays,
)
from fedbus.train.hf.trainer import CausalLMTrainer

__all__ = ["CausalLM", "EvaluateArrays"]

#: ``evaluate(arrays) -> (loss, {"accuracy": ..., "perplexity": ...})``
EvaluateArrays = Callable[[Arrays], tuple[float, dict[str, float]]]


class CausalLM:
    """A causal language model with its trainable parameters, ready for a federation.

    Parameters
    ----------
    model
        The model as it trains: a base wrapped by ``add_lora``, or a whole model (full
        fine-tuning). Its current trainable parameters are the initial global model.
    device
        Where it trains: ``"auto"`` (CUDA when torch sees a GPU, else the CPU), ``"cpu"``,
        ``"cuda"``, ``"cuda:N"`` or ``"mps"``.
    seed
        The seed the model was built from (``initial_arrays`` checks it).
    """

    def __init__(self, model: Any, *, device: str = "auto", seed: int = 0) -> None:
        import torch

        self.model = model
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        self.seed = seed
        self._initial = trainable_arrays(model)
        self._lock = threading.Lock()  # one model, many trainers: one call at a time

    @classmethod
    def from_settings(
        cls, settings: Mapping[str, Any], block_size: int, vocab_size: int
    ) -> CausalLM:
        """The model ``model.*`` describes, for blocks of ``block_size`` tokens with ids below
        ``vocab_size``.

        Raises
        ------
        ConfigError
            The model cannot be loaded, a LoRA target module does not exist (the message lists
            those that do), or the data do not fit the model (vocabulary, positions).
        """
        seed = settings["federation.seed"]
        base = load_causal_lm(
            settings["model.hf_model"], seed=seed, revision=settings["model.hf_revision"]
        )
        _check_fits(base, block_size, vocab_size)
        model = base
        if settings["model.lora"]:
            targets = settings["model.lora_target_modules"]
            try:
                lora = LoraSettings(
                    r=settings["model.lora_r"],
                    alpha=settings["model.lora_alpha"],
                    dropout=settings["model.lora_dropout"],
                    target_modules=tuple(targets.split(",")) if targets else (),
                )
            except InvalidArgumentError as exc:
                raise ConfigError(f"[model] LoRA: {exc}") from exc
            model = add_lora(base, lora, seed=seed)
        return cls(model, device=settings["model.hf_device"], seed=seed)

    @property
    def num_parameters(self) -> int:
        """Parameters of the whole model, frozen ones included."""
        return parameter_count(self.model)

    @property
    def num_trainable(self) -> int:
        """Parameters that train and travel."""
        return parameter_count(self.model, trainable=True)

    def initial_arrays(self, seed: int) -> Arrays:
        """The trainable parameters as built, from the seed the model was built with."""
        if seed != self.seed:
            raise InvalidArgumentError(
                f"CausalLM: built from seed {self.seed}, asked for the initial arrays of seed "
                f"{seed}; build the model from that seed instead"
            )
        return {name: value.copy() for name, value in self._initial.items()}

    def trainer(
        self,
        x_train: ArrayLike,
        y_train: ArrayLike,
        x_test: ArrayLike | None = None,
        y_test: ArrayLike | None = None,
        *,
        seed: int = 0,
        **options: Any,
    ) -> CausalLMTrainer:
        """A trainer on one client's blocks, sharing this model (``epochs``, ``batch_size`` and
        ``lr`` as ``CausalLMTrainer`` takes them)."""
        return CausalLMTrainer(
            self.model,
            x_train,
            y_train,
            x_test,
            y_test,
            seed=seed,
            device=self.device,
            lock=self._lock,
            **options,
        )

    def evaluate_fn(self, x_test: ArrayLike, y_test: ArrayLike) -> EvaluateArrays:
        """Central evaluation of global arrays on ``(x_test, y_test)``."""
        trainer = self.trainer(x_test, y_test)

        def evaluate(arrays: Arrays) -> tuple[float, dict[str, float]]:
            loss, _, metrics = trainer.evaluate(arrays, {})
            return loss, metrics

        return evaluate

    def __repr__(self) -> str:
        return (
            f"CausalLM({type(self.model).__name__}, {self.num_trainable:,} of "
            f"{self.num_parameters:,} parameters train, device={self.device!r})"
        )


def _check_fits(model: Any, block_size: int, vocab_size: int) -> None:
    config = model.config
    vocabulary = model.get_input_embeddings().num_embeddings
    if vocab_size > vocabulary:
        raise ConfigError(
            f"the text's tokenizer has {vocab_size} token ids, but model.hf_model's vocabulary "
            f'has {vocabulary}: use the model\'s tokenizer (data.tokenizer = "model") or a model '
            f"with vocab_size >= {vocab_size}"
        )
    positions = getattr(config, "max_position_embeddings", None) or getattr(
        config, "n_positions", None
    )
    if isinstance(positions, int) and block_size > positions:
        raise ConfigError(
            f"data.block_size = {block_size} exceeds the {positions} positions model.hf_model "
            "reads at once: lower data.block_size"
        )
