"""Federated fine-tuning of Hugging Face causal language models, with LoRA (``fedbus[llm]``).

- ``models``: ``load_causal_lm`` (a hub id, a local directory, or a config built in code),
  ``add_lora`` (checks the target modules against the model first), ``trainable_arrays``.
- ``trainer``: ``CausalLMTrainer``, next-token training behind the ``Trainer`` contract; its
  arrays are the trainable parameters only, so with LoRA only the adapters travel.
- ``kit``: ``CausalLM``, the model of a configured run (``model.framework = "hf"``), shared by
  the server's evaluation and every client's trainer in one process.

Importing this package imports torch, transformers and peft; ``import fedbus`` never does.

Examples
--------
>>> import numpy as np, transformers
>>> config = transformers.LlamaConfig(
...     vocab_size=256, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
...     num_attention_heads=2, num_key_value_heads=2)
>>> model = add_lora(load_causal_lm(config, seed=0), LoraSettings(r=2))
>>> blocks = np.random.default_rng(0).integers(0, 256, size=(8, 16))
>>> trainer = CausalLMTrainer(model, blocks, blocks[:, 0], epochs=2, batch_size=4, lr=0.01)
>>> arrays, n, metrics = trainer.fit(trainable_arrays(model), {})
>>> n, metrics["steps"], sorted({name.split(".")[-3] for name in arrays})
(8, 4, ['lora_A', 'lora_B'])
"""

from __future__ import annotations

from fedbus.train.hf.kit import CausalLM
from fedbus.train.hf.models import (
    LoraSettings,
    adaptable_modules,
    add_lora,
    check_target_modules,
    load_causal_lm,
    parameter_count,
    trainable_arrays,
)
from fedbus.train.hf.trainer import CausalLMTrainer

__all__ = [
    "CausalLM",
    "CausalLMTrainer",
    "LoraSettings",
    "adaptable_modules",
    "add_lora",
    "check_target_modules",
    "load_causal_lm",
    "parameter_count",
    "trainable_arrays",
]
