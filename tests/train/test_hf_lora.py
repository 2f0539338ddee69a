"""Federated LoRA fine-tuning of a causal language model, through the configuration path.

The model is a tiny Llama built from a config written by the test (random weights from the
federation's seed, nothing downloaded); the text is a small made-up grammar written by the test.
"""

from __future__ import annotations

import doctest
import importlib
import random
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers", reason="fedbus[llm] is not installed (transformers)")
pytest.importorskip("peft", reason="fedbus[llm] is not installed (peft)")

import transformers

from fedbus.errors import ConfigError, InvalidArgumentError
from fedbus.run.config import load_config
from fedbus.run.federation import Federation, build_federation
from fedbus.train.hf import trainable_arrays

# Adapters on two attention projections, one MLP projection and the output head: enough for a
# random base to learn the grammar's characters within a few rounds.
TARGETS = "q_proj,v_proj,down_proj,lm_head"
ROUNDS = 4


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread: for a model this small, a second thread on a busy 2-core machine
    spins more than it computes (tens of times slower)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A directory with a tiny Llama's config.json (no weights), and a text file."""
    root = tmp_path_factory.mktemp("llm")
    model = root / "tiny-llama"
    transformers.LlamaConfig(
        vocab_size=256,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
    ).save_pretrained(model)
    text = root / "grammar.txt"
    text.write_text(_grammar(300), encoding="utf-8")
    return model, text


def _grammar(lines: int) -> str:
    rng = random.Random(0)
    subjects = ["the cat", "a dog", "the bird", "my friend"]
    verbs = ["sees", "likes", "follows", "hears"]
    objects = ["the ball", "a tree", "the river", "some bread"]
    sentences = [
        f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)}." for _ in range(lines)
    ]
    return "\n".join(sentences) + "\n"


def _options(files: tuple[Path, Path], *extra: str) -> list[str]:
    model, text = files
    return [
        "model.framework=hf",
        f"model.hf_model={model}",
        "model.lora_r=4",
        f"model.lora_target_modules={TARGETS}",
        "data.dataset=text",
        f"data.path={text}",
        "data.block_size=32",
        "data.partition=iid",
        "federation.num_clients=3",
        "federation.clients_per_round=3",
        "federation.clients_per_evaluation=3",
        f"federation.num_rounds={ROUNDS}",
        "trainer.epochs=2",
        "trainer.batch_size=8",
        "trainer.lr=0.03",
        "simulation.workers=1",  # worker processes would each import transformers again
        *extra,
    ]


def _run(files: tuple[Path, Path], *extra: str) -> tuple[Federation, int, int, float]:
    """Run a federation; returns it, bytes up and down, and the initial central loss."""
    federation = build_federation(load_config(None, _options(files, *extra)))
    evaluate = federation.model.evaluate_fn(*federation.dataset.test_set())
    initial_loss, _ = evaluate(federation.server.arrays.to_numpy_dict())
    result = federation.simulation.run()
    assert federation.server.finished, federation.server.failure
    return federation, result.stats.bytes_up, result.stats.bytes_down, initial_loss


def test_lora_federation_lowers_the_loss_and_sends_only_the_adapters(
    files: tuple[Path, Path],
) -> None:
    federation, bytes_up, bytes_down, initial_loss = _run(files)
    history = federation.server.history
    assert len(history) == ROUNDS
    final_loss = history[-1].test_loss
    assert final_loss is not None
    # ln(256) = 5.55 for a uniform guess over bytes; the grammar uses 26 of them.
    assert initial_loss > 5.0
    assert final_loss < initial_loss - 1.5
    assert history[-1].test_accuracy is not None
    assert history[-1].test_accuracy > 0.25

    language_model = federation.model.language_model
    assert language_model is not None
    names = set(federation.server.arrays.to_numpy_dict())
    assert names
    assert all(".lora_A." in name or ".lora_B." in name for name in names)
    assert names == set(trainable_arrays(language_model.model))
    adapters = sum(value.nbytes for value in federation.server.arrays.to_numpy_dict().values())
    assert adapters == 4 * language_model.num_trainable
    # Each reply carries the adapters and little else; the whole model is 13x larger.
    replies = ROUNDS * 3
    assert adapters <= bytes_up / replies < 1.2 * adapters
    assert bytes_down / replies < 1.2 * adapters
    assert 4 * language_model.num_parameters > 10 * adapters


def test_full_fine_tuning_sends_every_parameter(files: tuple[Path, Path]) -> None:
    federation, bytes_up, _, initial_loss = _run(
        files, "model.lora=false", "federation.num_rounds=1", "trainer.lr=0.003"
    )
    language_model = federation.model.language_model
    assert language_model is not None
    assert language_model.num_trainable == language_model.num_parameters
    arrays = federation.server.arrays.to_numpy_dict()
    assert not any("lora" in name for name in arrays)
    full = sum(value.nbytes for value in arrays.values())
    assert full == 4 * language_model.num_parameters
    assert full <= bytes_up / 3 < 1.1 * full
    final_loss = federation.server.history[-1].test_loss
    assert final_loss is not None
    assert final_loss < initial_loss


def test_the_same_seed_gives_the_same_adapters(files: tuple[Path, Path]) -> None:
    runs = [_run(files, "federation.num_rounds=2")[0] for _ in range(2)]
    first, second = (run.server.arrays.to_numpy_dict() for run in runs)
    assert first.keys() == second.keys()
    assert all(first[name].tobytes() == second[name].tobytes() for name in first)
    other = _run(files, "federation.num_rounds=2", "federation.seed=1")[0]
    changed = other.server.arrays.to_numpy_dict()
    assert any(first[name].tobytes() != changed[name].tobytes() for name in first)


def test_target_modules_the_model_lacks_are_refused_before_the_run(
    files: tuple[Path, Path],
) -> None:
    config = load_config(None, _options(files, "model.lora_target_modules=q_proj,c_attn,qkv"))
    with pytest.raises(ConfigError) as error:
        build_federation(config)
    message = str(error.value)
    assert "'c_attn', 'qkv'" in message
    assert "q_proj'" not in message.split("are")[0]  # q_proj exists: not among the missing
    for name in ("down_proj", "gate_proj", "k_proj", "lm_head", "o_proj", "q_proj", "up_proj"):
        assert name in message.split("its linear modules are")[1]


def test_peft_default_targets_apply_when_none_are_named(files: tuple[Path, Path]) -> None:
    config = load_config(None, _options(files, "model.lora_target_modules="))
    federation = build_federation(config)
    names = federation.server.arrays.to_numpy_dict()
    projections = {name.split(".")[-4] for name in names}
    assert projections == {"q_proj", "v_proj"}  # peft's default for Llama


def test_text_must_fit_the_model(files: tuple[Path, Path], tmp_path: Path) -> None:
    small = tmp_path / "small-vocab"
    transformers.LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=16,
    ).save_pretrained(small)
    with pytest.raises(ConfigError, match=r"256 token ids.*vocabulary has 64"):
        build_federation(load_config(None, _options(files, f"model.hf_model={small}")))
    with pytest.raises(ConfigError, match=re.escape("block_size = 80 exceeds the 64 positions")):
        build_federation(load_config(None, _options(files, "data.block_size=80")))


def test_bad_text_files_get_clear_errors(files: tuple[Path, Path], tmp_path: Path) -> None:
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\u00e9 au lait\n".encode("latin-1") * 50)
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(byte 0xe9 at offset 3"):
        build_federation(load_config(None, _options(files, f"data.path={latin1}")))
    short = tmp_path / "short.txt"
    short.write_text(_grammar(3), encoding="utf-8")
    with pytest.raises(ConfigError) as error:
        build_federation(load_config(None, _options(files, f"data.path={short}")))
    message = str(error.value)
    assert "data.block_size = 32" in message
    assert "federation.num_clients = 3" in message
    assert "2 blocks are too few for 3 clients and a central test set of 1" in message
    assert "at least 4 needed" in message
    for partition in ("dirichlet", "pathological", "power_law"):
        with pytest.raises(ConfigError, match="text blocks have none"):
            build_federation(load_config(None, _options(files, f"data.partition={partition}")))
    with pytest.raises(
        ConfigError, match=re.escape("data.path: expected a path to an existing file")
    ):
        load_config(None, _options(files, f"data.path={tmp_path / 'missing.txt'}"))


def test_the_framework_and_the_dataset_go_together(files: tuple[Path, Path]) -> None:
    with pytest.raises(ConfigError, match=re.escape('set data.dataset = "text"')):
        build_federation(load_config(None, _options(files, "data.dataset=digits")))
    _, text = files
    numpy_on_text = ["data.dataset=text", f"data.path={text}", "data.partition=iid"]
    numpy_on_text += ["federation.num_clients=3", "federation.clients_per_round=3"]
    numpy_on_text += ["federation.clients_per_evaluation=3"]
    with pytest.raises(ConfigError, match=re.escape('set model.framework = "hf"')):
        build_federation(load_config(None, numpy_on_text))
    with pytest.raises(
        ConfigError, match=re.escape('model.hf_model: required when model.framework is "hf"')
    ):
        load_config(None, ["model.framework=hf"])


def test_the_model_tokenizer_reads_the_text(files: tuple[Path, Path], tmp_path: Path) -> None:
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers

    model, text = files
    characters = sorted(set(text.read_text(encoding="utf-8")))
    vocabulary = {token: index for index, token in enumerate(["<unk>", *characters])}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocabulary, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(".|\n"), behavior="isolated")
    directory = tmp_path / "with-tokenizer"
    transformers.AutoConfig.from_pretrained(model).save_pretrained(directory)
    transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="<unk>"
    ).save_pretrained(directory)
    config = load_config(
        None, _options(files, f"model.hf_model={directory}", "data.tokenizer=model")
    )
    federation = build_federation(config)
    assert federation.dataset.num_classes == len(vocabulary)
    x_test, y_test = federation.dataset.test_set()
    assert int(x_test.max()) < len(vocabulary)
    assert int(y_test.max()) < len(vocabulary)


def test_the_trainer_refuses_arrays_that_are_not_its_parameters(files: tuple[Path, Path]) -> None:
    federation = build_federation(load_config(None, _options(files)))
    trainer = federation.client_fn(1).trainer
    arrays = federation.server.arrays.to_numpy_dict()
    with pytest.raises(InvalidArgumentError, match="missing"):
        trainer.fit({name: arrays[name] for name in list(arrays)[1:]}, {})
    with pytest.raises(InvalidArgumentError, match="unknown"):
        trainer.fit({**arrays, "base_model.model.lm_head.weight": np.zeros(3)}, {})


def test_importing_fedbus_imports_no_language_model_library() -> None:
    code = (
        "import sys, fedbus, fedbus.cli, fedbus.run.federation\n"
        "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert output.strip() == "[]"


@pytest.mark.parametrize(
    "name",
    ["fedbus.train.hf", "fedbus.train.hf.models"],
)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0
    assert result.failed == 0
