"""TorchTrainer and the torch models: the same numbers as NumpyTrainer, state_dict round trips,
determinism, read-only inputs, clear errors, and torch imported only when asked for."""

from __future__ import annotations

import doctest
import importlib
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from fedbus.data import load_digits
from fedbus.errors import ConfigError, InvalidArgumentError, InvalidTypeError
from fedbus.fl import Client, FedAvg, Server
from fedbus.runtime.simulation import simulate
from fedbus.train import MLP, LocalTerms, NumpyTrainer, SoftmaxRegression, Trainer

torch = pytest.importorskip("torch")

from fedbus.train.torch_models import (  # noqa: E402  (needs torch, skipped above without it)
    TorchCNN,
    build_torch_model,
    init_state,
    state_arrays,
)
from fedbus.train.torch_trainer import TorchTrainer  # noqa: E402

Arrays = dict[str, np.ndarray[Any, Any]]
Digits = tuple[
    np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any]
]


@pytest.fixture(scope="module")
def digits() -> Digits:
    """sklearn digits scaled to [0, 1]: 1,437 training and 360 test rows, shuffled once."""
    data = load_digits()
    order = np.random.default_rng(0).permutation(len(data.y))
    x, y = data.x[order], data.y[order]
    return x[:1437], y[:1437], x[1437:], y[1437:]


def random_arrays(model: SoftmaxRegression | MLP, seed: int, scale: float = 0.1) -> Arrays:
    rng = np.random.default_rng(seed)
    return {
        name: (scale * rng.normal(size=shape)).astype(np.float32)
        for name, shape in model.param_shapes().items()
    }


def assert_arrays_close(actual: Arrays, expected: Arrays, atol: float = 1e-4) -> None:
    assert actual.keys() == expected.keys()
    for name in expected:
        np.testing.assert_allclose(actual[name], expected[name], rtol=0, atol=atol, err_msg=name)


def read_only(arrays: Arrays) -> Arrays:
    frozen = {}
    for name, value in arrays.items():
        copy = value.copy()
        copy.flags.writeable = False
        frozen[name] = copy
    return frozen


# -- the same numbers as NumpyTrainer ---------------------------------------------------------


@pytest.mark.parametrize("name", ["softmax", "mlp"])
def test_full_batch_fit_equals_numpy_trainer(digits: Digits, name: str) -> None:
    x, y = digits[0][:400], digits[1][:400]
    numpy_model = SoftmaxRegression(64, 10) if name == "softmax" else MLP(64, 16, 10)
    options = {"hidden": 16} if name == "mlp" else {}
    start = random_arrays(numpy_model, seed=1)
    config = {"epochs": 8, "lr": 0.5, "batch_size": 0}

    expected, n_numpy, numpy_metrics = NumpyTrainer(numpy_model, x, y).fit(start, config)
    model = build_torch_model(name, 64, 10, **options)
    arrays, n_torch, metrics = TorchTrainer(model, x, y).fit(start, config)

    assert_arrays_close(arrays, expected)
    assert n_torch == n_numpy == 400
    assert metrics["samples_processed"] == numpy_metrics["samples_processed"] == 3200
    assert metrics["steps"] == numpy_metrics["steps"] == 8
    assert metrics["train_loss"] == pytest.approx(numpy_metrics["train_loss"], abs=1e-5)
    assert all(arrays[key].dtype == np.float32 for key in arrays)


def test_evaluate_equals_numpy_trainer(digits: Digits) -> None:
    x_train, y_train, x_test, y_test = digits
    numpy_model = MLP(64, 16, 10)
    arrays = numpy_model.init(seed=4)
    model = build_torch_model("mlp", 64, 10, hidden=16)

    loss, count, metrics = TorchTrainer(model, x_train, y_train, x_test, y_test).evaluate(
        arrays, {}
    )
    expected = NumpyTrainer(numpy_model, x_train, y_train, x_test, y_test).evaluate(arrays, {})

    assert count == expected[1] == 360
    assert loss == pytest.approx(expected[0], abs=1e-5)
    assert metrics["accuracy"] == expected[2]["accuracy"]


class NumpyOrderBatches:
    """Minibatches in exactly the order NumpyTrainer(seed=...) draws them, as tensors."""

    def __init__(self, x: np.ndarray[Any, Any], y: np.ndarray[Any, Any], size: int, seed: int):
        self.x, self.y, self.size = x, y, size
        self.rng = np.random.default_rng(seed)

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        order = self.rng.permutation(len(self.y))
        x, y = self.x[order], self.y[order]
        for start in range(0, len(y), self.size):
            yield (
                torch.from_numpy(x[start : start + self.size]),
                torch.from_numpy(y[start : start + self.size]),
            )


def test_minibatches_in_numpy_trainer_order_give_its_result(digits: Digits) -> None:
    x, y = digits[0][:300], digits[1][:300]
    numpy_model = SoftmaxRegression(64, 10)
    start = random_arrays(numpy_model, seed=2)
    config = {"epochs": 3, "lr": 0.3, "batch_size": 32}

    expected, _, numpy_metrics = NumpyTrainer(numpy_model, x, y, seed=5).fit(start, config)
    loader = NumpyOrderBatches(x, y, size=32, seed=5)
    trainer = TorchTrainer(build_torch_model("softmax", 64, 10), train_loader=loader)
    arrays, num_examples, metrics = trainer.fit(start, config)

    assert_arrays_close(arrays, expected)
    assert num_examples == 300
    assert metrics["steps"] == numpy_metrics["steps"] == 30
    assert metrics["train_loss"] == pytest.approx(numpy_metrics["train_loss"], abs=1e-5)


def test_a_torch_data_loader_trains_like_arrays(digits: Digits) -> None:
    x, y = digits[0][:200], digits[1][:200]
    dataset = torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    loader = torch.utils.data.DataLoader(dataset, batch_size=200, shuffle=False)
    model = build_torch_model("softmax", 64, 10)
    start = random_arrays(SoftmaxRegression(64, 10), seed=3)

    from_loader = TorchTrainer(model, train_loader=loader, test_loader=loader)
    from_arrays = TorchTrainer(model, x, y, batch_size=0)
    arrays, _, _ = from_loader.fit(start, {"epochs": 4})

    assert_arrays_close(arrays, from_arrays.fit(start, {"epochs": 4})[0], atol=1e-6)
    assert from_loader.num_train_examples == 200
    assert from_loader.evaluate(arrays, {})[1] == 200


def federate(trainers: list[Any], initial: Arrays, rounds: int = 3) -> Arrays:
    server = Server(
        FedAvg(),
        initial,
        num_rounds=rounds,
        clients_per_round=len(trainers),
        train_config={"epochs": 2, "batch_size": 0, "lr": 0.5},
        evaluate_every=0,
    )
    simulate(server, [Client(trainer) for trainer in trainers], check_serialization=True)
    assert server.finished
    return server.arrays.to_numpy_dict()


def test_fedavg_over_torch_clients_equals_fedavg_over_numpy_clients(digits: Digits) -> None:
    x, y = digits[0], digits[1]
    parts = [slice(0, 150), slice(150, 400), slice(400, 500)]
    numpy_model = SoftmaxRegression(64, 10)
    model = build_torch_model("softmax", 64, 10)
    initial = random_arrays(numpy_model, seed=6)

    expected = federate([NumpyTrainer(numpy_model, x[p], y[p]) for p in parts], initial)
    federated = federate([TorchTrainer(model, x[p], y[p]) for p in parts], initial)
    mixed = federate(
        [
            TorchTrainer(model, x[parts[0]], y[parts[0]]),
            NumpyTrainer(numpy_model, x[parts[1]], y[parts[1]]),
            TorchTrainer(model, x[parts[2]], y[parts[2]]),
        ],
        initial,
    )

    assert_arrays_close(federated, expected)
    assert_arrays_close(mixed, expected)
    assert not np.allclose(federated["weight"], initial["weight"], atol=1e-3)  # it trained


# -- LocalTerms -------------------------------------------------------------------------------


def test_proximal_pull_equals_numpy_trainer(digits: Digits) -> None:
    x, y = digits[0][:300], digits[1][:300]
    numpy_model = MLP(64, 16, 10)
    start = numpy_model.init(seed=0)
    terms = LocalTerms(proximal_mu=0.5, anchor=random_arrays(numpy_model, seed=7, scale=0.3))
    config = {"epochs": 6, "lr": 0.4, "batch_size": 0}

    expected, _, _ = NumpyTrainer(numpy_model, x, y).fit(start, config, terms)
    arrays, _, _ = TorchTrainer(build_torch_model("mlp", 64, 10, hidden=16), x, y).fit(
        start, config, terms
    )
    unpulled, _, _ = NumpyTrainer(numpy_model, x, y).fit(start, config)

    assert_arrays_close(arrays, expected)
    assert not np.allclose(expected["hidden.weight"], unpulled["hidden.weight"], atol=1e-3)


def test_gradient_correction_equals_numpy_trainer(digits: Digits) -> None:
    x, y = digits[0][:300], digits[1][:300]
    numpy_model = SoftmaxRegression(64, 10)
    start = random_arrays(numpy_model, seed=8)
    correction = random_arrays(numpy_model, seed=9, scale=0.05)
    del correction["bias"]  # names it does not give are not corrected
    terms = LocalTerms(correction=correction)
    config = {"epochs": 5, "lr": 0.5, "batch_size": 0}

    expected, _, numpy_metrics = NumpyTrainer(numpy_model, x, y).fit(start, config, terms)
    arrays, _, metrics = TorchTrainer(build_torch_model("softmax", 64, 10), x, y).fit(
        start, config, terms
    )

    assert_arrays_close(arrays, expected)
    assert metrics["steps"] == numpy_metrics["steps"] == 5


def test_terms_skip_buffers_and_refuse_unknown_names(digits: Digits) -> None:
    x, y = digits[0][:64], digits[1][:64]
    model = build_torch_model("cnn", 64, 10)
    start = init_state(model, seed=0)
    trainer = TorchTrainer(model, x, y, batch_size=0)

    # an anchor naming every state entry, BatchNorm buffers included, pulls the parameters only
    arrays, _, _ = trainer.fit(start, {}, LocalTerms(proximal_mu=0.1, anchor=start))
    assert int(arrays["bn1.num_batches_tracked"]) == 1

    with pytest.raises(InvalidArgumentError, match=r"no parameters named \['conv9.weight'\]"):
        trainer.fit(start, {}, LocalTerms(correction={"conv9.weight": np.zeros(3)}))
    with pytest.raises(InvalidArgumentError, match=r"correction\['head.bias'\]: expected shape"):
        trainer.fit(start, {}, LocalTerms(correction={"head.bias": np.zeros(3)}))


# -- state_dict, BatchNorm buffers ------------------------------------------------------------


def test_batchnorm_buffers_round_trip_through_fit(digits: Digits) -> None:
    x, y = digits[0][:100], digits[1][:100]
    model = build_torch_model("cnn", 64, 10, seed=0)
    start = init_state(model, seed=0)
    trainer = TorchTrainer(model, x, y, batch_size=25, lr=0.1)

    arrays, _, metrics = trainer.fit(start, {"epochs": 2})

    assert list(arrays) == list(model.state_dict())
    assert metrics["steps"] == 8
    for layer in ("bn1", "bn2"):
        counter = arrays[f"{layer}.num_batches_tracked"]
        assert counter.dtype == np.int64
        assert counter.shape == ()
        assert int(counter) == 8
        assert not np.allclose(arrays[f"{layer}.running_mean"], start[f"{layer}.running_mean"])
    # the counters continue from what was sent, not from the module's own
    again, _, _ = trainer.fit(arrays, {"epochs": 1})
    assert int(again["bn1.num_batches_tracked"]) == 12


def test_batchnorm_model_federates_through_the_codec(digits: Digits) -> None:
    x, y = digits[0][:120], digits[1][:120]
    model = build_torch_model("cnn", 64, 10, seed=1)
    initial = init_state(model, seed=1)
    trainers = [TorchTrainer(model, x[i::2], y[i::2], batch_size=20) for i in range(2)]

    result = federate(trainers, initial, rounds=2)

    assert result.keys() == initial.keys()
    assert result["bn2.num_batches_tracked"].dtype == np.int64
    # the server's config (full batch, 2 epochs) overrides the trainers' batch_size=20:
    # one step per epoch, counted on from round to round
    assert int(result["bn2.num_batches_tracked"]) == 2 * 2
    assert result["conv1.weight"].dtype == np.float32


# -- determinism ------------------------------------------------------------------------------


def test_same_seed_same_arrays_and_config_seed_makes_calls_independent(digits: Digits) -> None:
    x, y = digits[0][:200], digits[1][:200]
    start = init_state(build_torch_model("cnn", 64, 10), seed=0)

    def trainer() -> TorchTrainer:
        return TorchTrainer(build_torch_model("cnn", 64, 10), x, y, batch_size=16, seed=3)

    first, second = trainer(), trainer()
    a = first.fit(start, {})[0]
    b = second.fit(start, {})[0]
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    # the generator moved on: the next call shuffles differently
    assert not np.array_equal(first.fit(start, {})[0]["head.weight"], a["head.weight"])
    # with a config seed, a call depends on nothing before it
    seeded = first.fit(start, {"seed": 11})[0]
    np.testing.assert_array_equal(
        second.fit(start, {"seed": 11})[0]["head.weight"], seeded["head.weight"]
    )
    assert not np.array_equal(
        first.fit(start, {"seed": 12})[0]["head.weight"], seeded["head.weight"]
    )


def test_init_state_is_seeded_and_leaves_the_global_generator_alone() -> None:
    model = build_torch_model("cnn", 64, 10)
    before = torch.random.get_rng_state()

    a, b, c = init_state(model, 5), init_state(model, 5), init_state(model, 6)

    assert torch.equal(torch.random.get_rng_state(), before)
    assert all(np.array_equal(a[name], b[name]) for name in a)
    assert not np.array_equal(a["conv1.weight"], c["conv1.weight"])
    np.testing.assert_array_equal(a["bn1.running_var"], np.ones(16, dtype=np.float32))


# -- the caller's arrays ----------------------------------------------------------------------


def test_read_only_arrays_are_accepted_and_never_modified(digits: Digits) -> None:
    x, y = digits[0][:100], digits[1][:100]
    model = build_torch_model("cnn", 64, 10)
    start = read_only(init_state(model, seed=0))
    originals = {name: value.copy() for name, value in start.items()}
    trainer = TorchTrainer(model, x, y, batch_size=10)

    arrays, _, _ = trainer.fit(start, {})
    trainer.evaluate(start, {})
    later, _, _ = trainer.fit(arrays, {})  # the module trains on; earlier results stay

    for name, value in start.items():
        np.testing.assert_array_equal(value, originals[name])
        assert arrays[name].flags.writeable
        assert not np.shares_memory(arrays[name], later[name])
    assert not np.array_equal(arrays["head.weight"], later["head.weight"])


def test_arrays_that_are_the_modules_own_memory_stay_unchanged(digits: Digits) -> None:
    x, y = digits[0][:100], digits[1][:100]
    model = build_torch_model("softmax", 64, 10)
    # views of the module's own tensors, as ArrayRecord(model.state_dict()) would hold
    views = {name: tensor.numpy() for name, tensor in model.state_dict().items()}
    trainer = TorchTrainer(model, x, y, batch_size=0)

    arrays, _, _ = trainer.fit(views, {"epochs": 3})

    np.testing.assert_array_equal(views["weight"], np.zeros((64, 10), dtype=np.float32))
    assert np.abs(arrays["weight"]).max() > 0


def test_state_arrays_are_copies() -> None:
    model = build_torch_model("softmax", 4, 3)
    arrays = state_arrays(model)
    with torch.no_grad():
        model.weight.fill_(1.0)
    np.testing.assert_array_equal(arrays["weight"], np.zeros((4, 3), dtype=np.float32))


# -- errors ------------------------------------------------------------------------------------


@pytest.fixture
def softmax_trainer(digits: Digits) -> TorchTrainer:
    return TorchTrainer(build_torch_model("softmax", 64, 10), digits[0][:50], digits[1][:50])


def test_wrong_parameter_names_are_reported(softmax_trainer: TorchTrainer) -> None:
    good = init_state(softmax_trainer.model, seed=0)
    with pytest.raises(InvalidArgumentError, match=r"missing \['bias'\], unexpected \[\]"):
        softmax_trainer.fit({"weight": good["weight"]}, {})
    with pytest.raises(InvalidArgumentError, match=r"missing \[\], unexpected \['extra'\]"):
        softmax_trainer.evaluate({**good, "extra": np.zeros(1)}, {})


def test_wrong_shapes_and_types_name_the_parameter(softmax_trainer: TorchTrainer) -> None:
    good = init_state(softmax_trainer.model, seed=0)
    with pytest.raises(
        InvalidArgumentError, match=r"parameter 'weight': expected shape \(64, 10\)"
    ):
        softmax_trainer.fit({**good, "weight": np.zeros((10, 64), dtype=np.float32)}, {})
    with pytest.raises(
        InvalidTypeError, match=r"parameter 'bias': expected numpy\.ndarray, got list"
    ):
        softmax_trainer.fit({**good, "bias": [0.0] * 10}, {})  # type: ignore[dict-item]
    with pytest.raises(InvalidTypeError, match="parameter 'bias': expected values castable"):
        softmax_trainer.fit({**good, "bias": np.zeros(10, dtype=np.complex64)}, {})


def test_a_float_batch_counter_is_refused(digits: Digits) -> None:
    model = build_torch_model("cnn", 64, 10)
    arrays = init_state(model, seed=0)
    arrays["bn1.num_batches_tracked"] = np.array(1.5)
    trainer = TorchTrainer(model, digits[0][:20], digits[1][:20])
    with pytest.raises(InvalidTypeError, match=r"buffer 'bn1.num_batches_tracked'.*int64"):
        trainer.fit(arrays, {})


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"lr": -1.0}, "'lr': expected a positive number"),
        ({"epochs": 0}, "'epochs': expected an int >= 1"),
        ({"batch_size": -2}, "'batch_size': expected an int >= 1"),
        ({"seed": -1}, "config 'seed': expected a non-negative int"),
    ],
)
def test_config_is_checked_like_numpy_trainer(
    softmax_trainer: TorchTrainer, config: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        softmax_trainer.fit(init_state(softmax_trainer.model, seed=0), config)


def test_bad_training_data_is_refused(digits: Digits) -> None:
    model = build_torch_model("softmax", 64, 10)
    x, y = digits[0][:10], digits[1][:10]
    with pytest.raises(InvalidArgumentError, match="give the training data"):
        TorchTrainer(model)
    with pytest.raises(InvalidArgumentError, match="expected 10 labels"):
        TorchTrainer(model, x, y[:9])
    with pytest.raises(InvalidArgumentError, match="y_train: expected a 1-D array of int labels"):
        TorchTrainer(model, x, y.astype(np.float32))
    with pytest.raises(InvalidArgumentError, match="x_test and y_test: give both or neither"):
        TorchTrainer(model, x, y, x_test=x)
    with pytest.raises(InvalidTypeError, match=r"expected a torch\.nn\.Module"):
        TorchTrainer(SoftmaxRegression(64, 10), x, y)  # type: ignore[arg-type]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_a_clear_error(digits: Digits) -> None:
    model = build_torch_model("softmax", 64, 10)
    with pytest.raises(InvalidArgumentError, match=r"no CUDA GPU.*use device='cpu'"):
        TorchTrainer(model, digits[0][:10], digits[1][:10], device="cuda")


def test_an_unknown_device_is_a_clear_error(digits: Digits) -> None:
    model = build_torch_model("softmax", 64, 10)
    with pytest.raises(InvalidArgumentError, match="'gpu0' is not a torch device"):
        TorchTrainer(model, digits[0][:10], digits[1][:10], device="gpu0")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_training_on_cuda_matches_the_cpu(digits: Digits) -> None:
    x, y = digits[0][:300], digits[1][:300]
    start = init_state(build_torch_model("cnn", 64, 10), seed=0)
    config = {"epochs": 2, "batch_size": 0, "lr": 0.1}
    cpu = TorchTrainer(build_torch_model("cnn", 64, 10), x, y).fit(read_only(start), config)[0]
    cuda = TorchTrainer(build_torch_model("cnn", 64, 10), x, y, device="cuda").fit(
        read_only(start), config
    )[0]
    assert_arrays_close(cuda, cpu, atol=1e-4)


# -- models -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "numpy_model", "options"),
    [("softmax", SoftmaxRegression(64, 10), {}), ("mlp", MLP(64, 32, 10), {"hidden": 32})],
)
def test_torch_models_share_names_shapes_and_initial_values_with_numpy_ones(
    name: str, numpy_model: SoftmaxRegression | MLP, options: dict[str, Any]
) -> None:
    arrays = init_state(build_torch_model(name, 64, 10, **options), seed=3)
    expected = numpy_model.init(seed=3)

    assert list(arrays) == list(numpy_model.param_shapes())
    for key, value in expected.items():
        assert arrays[key].shape == value.shape
        np.testing.assert_array_equal(arrays[key], value)


def test_the_cnn_reaches_90_percent_on_digits(digits: Digits) -> None:
    x_train, y_train, x_test, y_test = digits
    model = build_torch_model("cnn", 64, 10, seed=0)
    trainer = TorchTrainer(model, x_train, y_train, x_test, y_test, batch_size=32, lr=0.1)

    arrays, _, metrics = trainer.fit(init_state(model, seed=0), {"epochs": 5})
    loss, count, eval_metrics = trainer.evaluate(arrays, {})

    assert 4_000 <= sum(p.numel() for p in model.parameters()) <= 20_000
    assert count == 360
    assert eval_metrics["accuracy"] > 0.9  # measured: 0.97
    assert metrics["train_loss"] < 0.3
    assert loss < 0.3


def test_the_cnn_needs_square_images() -> None:
    with pytest.raises(ConfigError, match=r"num_features must be 16, 25, 36.*got 60"):
        build_torch_model("cnn", 60, 10)
    with pytest.raises(InvalidArgumentError, match="side >= 4"):
        TorchCNN(9, 10)
    model = build_torch_model("cnn", 100, 3, channels=4)
    assert model(torch.zeros(2, 100)).shape == (2, 3)


def test_unknown_models_and_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown torch model 'resnet'"):
        build_torch_model("resnet", 64, 10)
    with pytest.raises(ConfigError, match=r"unknown options \['hidden'\].*allowed options: none"):
        build_torch_model("softmax", 64, 10, hidden=3)


def test_torch_trainer_is_a_trainer(softmax_trainer: TorchTrainer) -> None:
    assert isinstance(softmax_trainer, Trainer)
    assert repr(softmax_trainer).startswith("TorchTrainer(TorchSoftmaxRegression, train=50")


@pytest.mark.parametrize("name", ["fedbus.train.torch_models", "fedbus.train.torch_trainer"])
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0
    assert result.failed == 0


# -- torch only when asked for ------------------------------------------------------------------


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )


def test_importing_fedbus_does_not_import_torch() -> None:
    result = run_python(
        "import fedbus, fedbus.train, fedbus.fl, sys\n"
        "from fedbus.train import *\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "from fedbus.train import TorchTrainer, build_torch_model\n"
        "assert 'torch' in sys.modules\n"
    )
    assert result.returncode == 0, result.stderr


def test_without_torch_the_error_says_what_to_install() -> None:
    result = run_python(
        "import sys\n"
        "sys.modules['torch'] = None  # what an absent package looks like to import\n"
        "import fedbus.train\n"
        "from fedbus.errors import MissingDependencyError\n"
        "try:\n"
        "    from fedbus.train import TorchTrainer\n"
        "except MissingDependencyError as exc:\n"
        "    print(exc)\n"
    )
    assert result.returncode == 0, result.stderr
    assert "pip install 'fedbus[torch]'" in result.stdout
