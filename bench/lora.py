"""Bytes per round of federated LoRA against full fine-tuning, measured in the simulation.

Each cell runs the configured flow (``model.framework = "hf"``) for one round: the server sends
the trainable arrays to every sampled client, each trains on its share of a text and replies
with its update. The simulation counts the encoded bytes of every message (what a network would
carry); the table shows them per round, up (clients to server) and down, next to the parameter
counts. LoRA sends only the adapters; full fine-tuning (``model.lora = false``) sends every
parameter.

Models, built from a config in code (random weights, nothing downloaded):

- ``tiny``: the test suite's Llama (2 layers, hidden size 32, 256 byte tokens);
- ``gpt2-small``: GPT-2 small's shape (12 layers, hidden size 768, 50,257 tokens, 124M
  parameters). Random weights change no byte count.

LoRA uses peft's default target modules for each architecture (Llama: ``q_proj, v_proj``;
GPT-2: ``c_attn``) with rank ``--rank``. Needs fedbus[llm]; GPT-2 small's full fine-tuning
needs about 4 GB of memory.

Usage::

    python bench/lora.py [--clients 2] [--rank 8] [--models tiny,gpt2-small] [--threads 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import transformers

from fedbus.run.config import load_config
from fedbus.run.federation import build_federation

ROOT = Path(__file__).resolve().parents[1]
TEXT = ROOT / "examples" / "data" / "village_tales.txt"


def model_config(name: str) -> transformers.PretrainedConfig:
    """The model's config, built in code."""
    if name == "tiny":
        return transformers.LlamaConfig(
            vocab_size=256,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            max_position_embeddings=64,
        )
    if name == "gpt2-small":
        return transformers.GPT2Config()  # GPT-2 small's defaults: 12 x 768, 50,257 tokens
    raise SystemExit(f"unknown model {name!r}: tiny or gpt2-small")


def measure(directory: Path, clients: int, rank: int, lora: bool) -> dict[str, float]:
    """One round through the configured flow; bytes per round and parameter counts."""
    options = [
        "model.framework=hf",
        f"model.hf_model={directory}",
        f"model.lora={'true' if lora else 'false'}",
        f"model.lora_r={rank}",
        f"model.lora_alpha={2 * rank}",
        "data.dataset=text",
        f"data.path={TEXT}",
        "data.block_size=32",
        "data.partition=iid",
        f"federation.num_clients={clients}",
        f"federation.clients_per_round={clients}",
        f"federation.clients_per_evaluation={clients}",
        "federation.num_rounds=1",
        "federation.evaluate_every=0",
        "trainer.epochs=1",
        "trainer.batch_size=8",
        "trainer.lr=0.0001",
        "simulation.workers=1",
    ]
    started = time.perf_counter()
    federation = build_federation(load_config(None, options))
    result = federation.simulation.run()
    assert federation.server.finished, federation.server.failure
    model = federation.model.language_model
    assert model is not None
    return {
        "parameters": model.num_parameters,
        "trainable": model.num_trainable,
        "up": result.stats.bytes_up,
        "down": result.stats.bytes_down,
        "seconds": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--models", default="tiny,gpt2-small")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.models.split(","):
            directory = Path(scratch) / name
            model_config(name).save_pretrained(directory)
            for lora in (True, False):
                cells = measure(directory, args.clients, args.rank, lora)
                rows.append((name, f"LoRA r={args.rank}" if lora else "full", cells))
                print(f"measured {name}, {rows[-1][1]}: {cells['seconds']:.1f} s", flush=True)
    print(
        f"\n{args.clients} clients, 1 round: bytes per round (encoded messages)\n\n"
        "| model | fine-tuning | parameters | trained and sent | up / round | down / round "
        "| up vs full |\n|---|---|---:|---:|---:|---:|---:|"
    )
    full_up = {name: cells["up"] for name, kind, cells in rows if kind == "full"}
    for name, kind, cells in rows:
        share = cells["trainable"] / cells["parameters"]
        print(
            f"| {name} | {kind} | {cells['parameters']:,.0f} | {cells['trainable']:,.0f} "
            f"({share:.2%}) | {_size(cells['up'])} | {_size(cells['down'])} "
            f"| {cells['up'] / full_up[name]:.2%} |"
        )


def _size(count: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.2f} {unit}"
    return f"{count:.0f} B"


if __name__ == "__main__":
    main()
