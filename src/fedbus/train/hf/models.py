"""Causal language models from Hugging Face ``transformers``, and LoRA adapters from ``peft``.

``load_causal_lm`` builds the frozen base every client shares: from a ``transformers`` config
object or a directory holding only ``config.json`` (random weights drawn from a seed, the same
on every client), or from pretrained ``*.safetensors`` weights (a local directory or a hub id).
Weights are read with ``use_safetensors=True`` and no code of a model repository ever runs
(``trust_remote_code`` stays off), so a model file can hold tensors only.

``add_lora`` wraps the base in LoRA adapters after checking, against the model itself, that the
modules it names exist: a wrong name is refused before any training, with the names the model
has. ``trainable_arrays`` are then the adapters alone, the only arrays that travel.

This module imports torch, transformers and peft (``pip install 'fedbus[llm]'``).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fedbus.errors import ConfigError, InvalidArgumentError, MissingDependencyError
from fedbus.train.base import Arrays
from fedbus.train.options import positive_int

try:
    import peft
    import torch
    import transformers
    from torch import nn
    from transformers.pytorch_utils import Conv1D
except ImportError as exc:  # pragma: no cover - installed by `make install`
    raise MissingDependencyError(
        "Hugging Face models need torch, transformers and peft: pip install 'torch==2.13.0' "
        "then pip install 'fedbus[llm]'"
    ) from exc

__all__ = [
    "LoraSettings",
    "adaptable_modules",
    "add_lora",
    "check_target_modules",
    "load_causal_lm",
    "parameter_count",
    "seeded",
    "trainable_arrays",
]

# Module types a LoRA adapter can wrap as a linear map: GPT-2's Conv1D is a transposed Linear.
_LINEAR_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, Conv1D)


@dataclass(frozen=True, slots=True)
class LoraSettings:
    """How LoRA adapts a model: ``W x`` becomes ``W x + (alpha / r) * B A x``.

    Attributes
    ----------
    r : int
        Rank of ``A`` (``r x in``) and ``B`` (``out x r``).
    alpha : float
        Scale numerator.
    dropout : float
        Dropout on the adapter's input, in ``[0, 1)``.
    target_modules : tuple of str
        Names (the last component, such as ``"q_proj"``, or a full dotted path) of the modules
        that get an adapter; empty: peft's default for the architecture.

    Examples
    --------
    >>> LoraSettings(r=4, target_modules=("q_proj", "v_proj")).scale
    4.0
    """

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        positive_int("LoraSettings.r", self.r)
        if not self.alpha > 0:
            raise InvalidArgumentError(f"LoraSettings.alpha: expected > 0, got {self.alpha}")
        if not 0 <= self.dropout < 1:
            raise InvalidArgumentError(
                f"LoraSettings.dropout: expected a number in [0, 1), got {self.dropout}"
            )

    @property
    def scale(self) -> float:
        """``alpha / r``, the factor of every adapter's output."""
        return self.alpha / self.r


@contextmanager
def seeded(seed: int, device: torch.device | None = None) -> Iterator[None]:
    """Draw from torch's global generator seeded with ``seed``, then restore it as it was.

    ``transformers`` and ``peft`` initialise weights (and dropout draws masks) from the global
    generator; forking it keeps them repeatable without changing any other random stream.
    """
    devices = [device] if device is not None and device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def load_causal_lm(
    source: str | os.PathLike[str] | transformers.PretrainedConfig,
    *,
    seed: int = 0,
    revision: str = "main",
) -> nn.Module:
    """The base causal language model, on the CPU, in evaluation mode.

    Parameters
    ----------
    source
        A ``transformers`` config (random weights from ``seed``); a directory with
        ``config.json`` and ``*.safetensors`` weights, or with ``config.json`` alone (random
        weights from ``seed``); or a hub id such as ``"HuggingFaceTB/SmolLM2-135M"``, downloaded
        to the Hugging Face cache unless it is there already (``HF_HUB_OFFLINE=1`` forbids
        downloads).
    seed
        Seed of random weights; the same seed gives the same model everywhere.
    revision
        Hub revision of a hub id: pin a commit so that every client gets the same weights.

    Raises
    ------
    ConfigError
        The model cannot be loaded, is not a causal language model, or has weights only in
        pickle-based files; the message says what to do.
    """
    if isinstance(source, transformers.PretrainedConfig):
        return _from_config(source, seed, str(type(source).__name__))
    name = os.fspath(source)
    directory = Path(name)
    if directory.is_dir() and not any(directory.glob("*.safetensors")):
        if any(directory.glob("*.bin")) or any(directory.glob("*.pt")):
            raise ConfigError(
                f"model.hf_model {name!r}: its weights are in pickle files (*.bin, *.pt), which "
                "fedbus does not load; convert them to safetensors (model.save_pretrained "
                "writes safetensors by default)"
            )
        try:
            config = transformers.AutoConfig.from_pretrained(name)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"model.hf_model {name!r}: no usable config.json: {exc}") from exc
        return _from_config(config, seed, name)
    try:
        with seeded(seed):  # weights the checkpoint lacks are drawn from the seed too
            model: nn.Module = transformers.AutoModelForCausalLM.from_pretrained(
                name, revision=revision, use_safetensors=True
            )
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(
            f"model.hf_model {name!r} (revision {revision!r}): cannot load a causal language "
            f"model with safetensors weights: {exc}"
        ) from exc
    model.eval()
    return model


def _from_config(config: transformers.PretrainedConfig, seed: int, name: str) -> nn.Module:
    try:
        with seeded(seed):
            model: nn.Module = transformers.AutoModelForCausalLM.from_config(config)
    except (ValueError, KeyError) as exc:
        raise ConfigError(f"model.hf_model {name!r}: not a causal language model: {exc}") from exc
    model.eval()
    return model


def adaptable_modules(model: nn.Module) -> list[str]:
    """The distinct last names of the model's linear modules (what LoRA adapters can wrap).

    Examples
    --------
    >>> config = transformers.LlamaConfig(
    ...     vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
    ...     num_attention_heads=2, num_key_value_heads=2)
    >>> adaptable_modules(load_causal_lm(config))
    ['down_proj', 'gate_proj', 'k_proj', 'lm_head', 'o_proj', 'q_proj', 'up_proj', 'v_proj']
    """
    names = {
        name.rpartition(".")[2]
        for name, module in model.named_modules()
        if name and isinstance(module, _LINEAR_TYPES)
    }
    return sorted(names)


def _default_targets(model: nn.Module) -> tuple[str, ...]:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    mapping = peft.utils.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
    targets = mapping.get(model_type) if isinstance(model_type, str) else None
    if not targets:
        raise ConfigError(
            f"model.lora_target_modules: peft has no default modules for the model type "
            f"{model_type!r}; name them, from its linear modules: "
            f"{', '.join(adaptable_modules(model))}"
        )
    return tuple(targets)


def check_target_modules(model: nn.Module, targets: tuple[str, ...]) -> tuple[str, ...]:
    """``targets``, or peft's default for the model when empty, each checked to name at least
    one linear module of ``model``.

    Raises
    ------
    ConfigError
        Naming the targets that match no linear module, and listing those the model has.
    """
    chosen = targets or _default_targets(model)
    linear = [name for name, module in model.named_modules() if isinstance(module, _LINEAR_TYPES)]
    missing = [
        target
        for target in chosen
        if not any(name == target or name.endswith(f".{target}") for name in linear)
    ]
    if missing:
        raise ConfigError(
            f"model.lora_target_modules: the model has no linear module named "
            f"{', '.join(repr(name) for name in missing)}; its linear modules are "
            f"{', '.join(adaptable_modules(model))}"
        )
    return chosen


def add_lora(model: nn.Module, lora: LoraSettings, *, seed: int = 0) -> nn.Module:
    """Freeze ``model`` and wrap it in LoRA adapters, drawn from ``seed``; returns the wrapper.

    The target modules are checked first (``check_target_modules``). Every adapter starts with
    ``B = 0``, so the wrapped model computes what the base does until it trains.

    Examples
    --------
    >>> config = transformers.GPT2Config(vocab_size=64, n_embd=16, n_layer=1, n_head=2)
    >>> adapted = add_lora(load_causal_lm(config), LoraSettings(r=2))
    >>> for name, value in trainable_arrays(adapted).items():
    ...     print(name, value.shape)
    base_model.model.transformer.h.0.attn.c_attn.lora_A.default.weight (2, 16)
    base_model.model.transformer.h.0.attn.c_attn.lora_B.default.weight (48, 2)
    """
    targets = check_target_modules(model, lora.target_modules)
    config = peft.LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,  # peft annotates int, computes alpha / r
        lora_dropout=lora.dropout,
        target_modules=list(targets),
        # GPT-2's Conv1D stores its weight transposed; peft would otherwise warn and switch.
        fan_in_fan_out=_all_conv1d(model, targets),
        bias="none",
        task_type="CAUSAL_LM",
    )
    with seeded(seed), warnings.catch_warnings():
        # peft reads an attribute transformers deprecated; nothing for a user to change
        warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
        adapted: nn.Module = peft.get_peft_model(model, config)
    return adapted


def _all_conv1d(model: nn.Module, targets: tuple[str, ...]) -> bool:
    matched = [
        module
        for name, module in model.named_modules()
        if isinstance(module, _LINEAR_TYPES)
        and any(name == target or name.endswith(f".{target}") for target in targets)
    ]
    return bool(matched) and all(isinstance(module, Conv1D) for module in matched)


def trainable_arrays(model: nn.Module) -> Arrays:
    """The parameters that train (``requires_grad``), as new NumPy arrays: what travels.

    With LoRA these are the adapters alone; with full fine-tuning, every parameter.
    """
    return {
        name: parameter.detach().to("cpu", copy=True).numpy()
        for name, parameter in model.named_parameters()
        if parameter.requires_grad
    }


def parameter_count(model: nn.Module, trainable: bool = False) -> int:
    """Number of parameters of ``model`` (with ``trainable``, of those that train only)."""
    return sum(
        parameter.numel()
        for parameter in model.parameters()
        if parameter.requires_grad or not trainable
    )
