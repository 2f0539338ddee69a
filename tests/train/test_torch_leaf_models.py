"""The published baselines' torch models: LEAF's FEMNIST CNN and Shakespeare LSTM, and the
MNIST-1D CNN: their shapes, refusals, seeded initialisation, and that they learn with
TorchTrainer as it is."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from fedbus.errors import ConfigError, InvalidArgumentError
from fedbus.run import load_config
from fedbus.run.algorithms import settings_of
from fedbus.run.federation import build_federation
from fedbus.train.registry import MODELS

torch = pytest.importorskip("torch")

from fedbus.train.torch_models import (  # noqa: E402  (needs torch, skipped above without it)
    CharLSTM,
    FemnistCNN,
    TorchCNN1D,
    build_torch_model,
    init_state,
)
from fedbus.train.torch_trainer import TorchTrainer  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread: for models this small, a second thread on a busy 2-core machine
    spins more than it computes (ten times slower for the LSTM)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _parameters(model: Any) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def test_femnist_cnn_has_leafs_layers_on_28x28_images() -> None:
    model = build_torch_model("femnist_cnn", num_features=784, num_classes=62)
    shapes = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}

    assert shapes == {
        "conv1.weight": (32, 1, 5, 5),
        "conv1.bias": (32,),
        "conv2.weight": (64, 32, 5, 5),
        "conv2.bias": (64,),
        "dense.weight": (2048, 7 * 7 * 64),
        "dense.bias": (2048,),
        "output.weight": (62, 2048),
        "output.bias": (62,),
    }
    assert _parameters(model) == 6_603_710
    assert model(torch.zeros(5, 784)).shape == (5, 62)


@pytest.mark.parametrize("width", [40, 785, 9])
def test_femnist_cnn_refuses_rows_that_are_not_square_images(width: int) -> None:
    with pytest.raises(ConfigError, match=f"got {width}; use the 'mlp' or 'softmax'.*'cnn1d'"):
        build_torch_model("femnist_cnn", num_features=width, num_classes=10)
    with pytest.raises(InvalidArgumentError, match="square image"):
        FemnistCNN(width, 10)


def test_femnist_cnn_also_takes_other_square_sizes() -> None:
    model = FemnistCNN(64, 10)  # 8x8 digits: 8 -> 4 -> 2 after the poolings

    assert model.dense.in_features == 2 * 2 * 64
    assert model(torch.zeros(3, 64)).shape == (3, 10)


def test_init_state_is_seeded_and_leaves_torch_global_rng_alone() -> None:
    model = build_torch_model("char_lstm", num_features=10, num_classes=7, hidden=8)
    torch.manual_seed(99)
    expected = torch.rand(3)
    torch.manual_seed(99)
    first = init_state(model, seed=5)
    second = init_state(model, seed=5)
    other = init_state(model, seed=6)

    assert torch.equal(torch.rand(3), expected)
    assert all(np.array_equal(first[name], second[name]) for name in first)
    assert not np.array_equal(first["lstm.weight_hh_l1"], other["lstm.weight_hh_l1"])


def test_char_lstm_is_leafs_model_at_its_default_size() -> None:
    model = build_torch_model("char_lstm", num_features=80, num_classes=80)

    assert isinstance(model, CharLSTM)
    assert tuple(model.embedding.weight.shape) == (80, 8)
    assert (model.lstm.num_layers, model.lstm.hidden_size) == (2, 256)
    assert _parameters(model) == 819_920
    ids = torch.randint(0, 80, (4, 80)).float()  # rows of ids as fedbus stores them
    assert model(ids).shape == (4, 80)


@pytest.mark.parametrize("bad", [-1.0, 7.0, 2.5, float("nan")])
def test_char_lstm_refuses_values_that_are_not_ids(bad: float) -> None:
    model = CharLSTM(num_features=4, num_classes=7, hidden=8)
    rows = torch.tensor([[0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, bad]])

    with pytest.raises(InvalidArgumentError, match=r"whole numbers in 0\.\.6"):
        model(rows)
    with pytest.raises(InvalidArgumentError, match="shape"):
        model(torch.zeros(2, 4, 1))


# A tiny language: words drawn at random, so the first letter of a word is a guess (one of
# four) and every later character follows from the characters before it.
WORDS = ("cab", "bead", "dace", "fade")
ALPHABET = " abcdef"


def _next_character_task(num_words: int, seed: int, length: int = 8) -> tuple[Any, Any]:
    rng = np.random.default_rng(seed)
    text = " ".join(WORDS[i] for i in rng.integers(0, len(WORDS), num_words))
    ids = np.array([ALPHABET.index(character) for character in text])
    x = np.lib.stride_tricks.sliding_window_view(ids[:-1], length).astype(np.float32)
    return x, ids[length:].astype(np.int64)


def test_char_lstm_learns_next_characters_with_torch_trainer() -> None:
    x_train, y_train = _next_character_task(150, seed=0)
    x_test, y_test = _next_character_task(100, seed=1)
    model = build_torch_model("char_lstm", 8, len(ALPHABET), hidden=16, seed=0)

    def adam(parameters: Any, lr: float) -> Any:
        return torch.optim.Adam(parameters, lr=lr)

    trainer = TorchTrainer(
        model, x_train, y_train, x_test, y_test, epochs=3, batch_size=32, lr=0.03, optimizer=adam
    )
    initial = init_state(model, seed=0)
    _, _, before = trainer.evaluate(initial, {})
    arrays, _, _ = trainer.fit(initial, {})
    _, _, after = trainer.evaluate(arrays, {})

    chance = 1 / len(ALPHABET)
    # About 0.83 is reachable: one character in four or five is a word's guessed first letter.
    assert after["accuracy"] > max(0.6, 3 * chance, before["accuracy"] + 0.3)


def test_cnn1d_is_the_mnist1d_papers_network() -> None:
    model = build_torch_model("cnn1d", num_features=40, num_classes=10)

    assert isinstance(model, TorchCNN1D)
    assert model.head.in_features == 25 * 5
    assert _parameters(model) == 5_210
    assert model(torch.zeros(3, 40)).shape == (3, 10)
    with pytest.raises(ConfigError, match="length >= 3"):
        build_torch_model("cnn1d", num_features=2, num_classes=10)


def test_the_models_are_registered_for_torch_only() -> None:
    settings = settings_of(load_config(None, []))
    for name, width, model_class in (
        ("femnist_cnn", 784, FemnistCNN),
        ("char_lstm", 80, CharLSTM),
        ("cnn1d", 40, TorchCNN1D),
    ):
        source = MODELS.get(name)
        assert source.numpy is None
        assert source.torch is not None
        assert isinstance(source.torch(width, 10, settings), model_class)
    # model.hidden is the MLP's width; a configured char_lstm keeps LEAF's 256.
    lstm = MODELS.get("char_lstm").torch
    assert lstm is not None
    assert lstm(80, 80, settings).lstm.hidden_size == 256


def test_a_configured_cnn1d_federation_learns_mnist1d() -> None:
    config = load_config(
        None,
        [
            "data.dataset=mnist1d",
            "data.partition=iid",
            "model.framework=torch",
            "model.name=cnn1d",
            "federation.num_clients=4",
            "federation.clients_per_round=4",
            "federation.num_rounds=3",
            "federation.evaluate_every=0",
            "trainer.epochs=3",
            "trainer.batch_size=16",
            "trainer.lr=0.2",
        ],
    )
    federation = build_federation(config)
    federation.simulation.run()
    server = federation.server

    assert server.finished, server.failure
    accuracy = server.history[-1].test_accuracy
    # Seeds 0-2 reach 0.50-0.56 in these three rounds; chance is 0.1.
    assert accuracy is not None
    assert accuracy > 0.4
