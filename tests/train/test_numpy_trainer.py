"""NumpyTrainer: accuracy on digits, exact gradient descent, determinism, read-only inputs."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from fedbus.errors import ConfigError, InvalidArgumentError
from fedbus.train import MLP, NumpyTrainer, SoftmaxRegression, Trainer

Split = tuple[Any, Any, Any, Any]


@pytest.fixture(scope="module")
def digits() -> Split:
    """Standardised sklearn digits: 1,347 training and 450 test samples, stratified."""
    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, stratify=y, random_state=0
    )
    scaler = StandardScaler().fit(x_train)
    return (
        scaler.transform(x_train).astype(np.float32),
        y_train,
        scaler.transform(x_test).astype(np.float32),
        y_test,
    )


def small_problem(seed: int = 0) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(50, 4))
    y = rng.integers(0, 3, size=50)
    return x, y


def test_softmax_regression_reaches_93_percent_on_digits(digits: Split) -> None:
    x_train, y_train, x_test, y_test = digits
    model = SoftmaxRegression(num_features=64, num_classes=10)
    trainer = NumpyTrainer(model, x_train, y_train, x_test, y_test, batch_size=32, lr=0.05)

    arrays, num_examples, metrics = trainer.fit(model.init(seed=0), {"epochs": 20})
    loss, num_test, eval_metrics = trainer.evaluate(arrays, {})

    assert num_examples == 1347
    assert metrics["samples_processed"] == 1347 * 20
    assert num_test == 450
    assert eval_metrics["accuracy"] >= 0.93  # measured: 0.958
    assert loss < 0.3


def test_mlp_reaches_95_percent_on_digits(digits: Split) -> None:
    x_train, y_train, x_test, y_test = digits
    model = MLP(num_features=64, hidden=64, num_classes=10)
    trainer = NumpyTrainer(model, x_train, y_train, x_test, y_test, batch_size=32, lr=0.05)

    arrays, _, metrics = trainer.fit(model.init(seed=0), {"epochs": 30})
    _, _, eval_metrics = trainer.evaluate(arrays, {})

    assert eval_metrics["accuracy"] >= 0.95  # measured: 0.969
    assert metrics["train_loss"] < 0.05
    assert arrays["hidden.weight"].dtype == np.float32


def test_full_batch_training_equals_hand_computed_gradient_steps() -> None:
    x, y = small_problem()
    model = SoftmaxRegression(num_features=4, num_classes=3)
    start = {"weight": np.full((4, 3), 0.1), "bias": np.array([0.2, 0.0, -0.2])}
    trainer = NumpyTrainer(model, x, y, batch_size=0, lr=0.3)

    arrays, _, _ = trainer.fit(start, {"epochs": 5})

    weight, bias = start["weight"], start["bias"]
    one_hot = np.eye(3)[y]
    for _ in range(5):
        logits = x @ weight + bias
        probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        residual = (probabilities - one_hot) / len(y)
        weight = weight - 0.3 * x.T @ residual
        bias = bias - 0.3 * residual.sum(axis=0)
    np.testing.assert_allclose(arrays["weight"], weight, rtol=0, atol=1e-10)
    np.testing.assert_allclose(arrays["bias"], bias, rtol=0, atol=1e-10)


def test_mlp_full_batch_training_equals_gradient_steps() -> None:
    x, y = small_problem()
    model = MLP(num_features=4, hidden=6, num_classes=3)
    params = model.init(seed=1, dtype=np.float64)
    trainer = NumpyTrainer(model, x, y, batch_size=None, lr=0.5)

    arrays, _, metrics = trainer.fit(params, {"epochs": 3})

    expected = dict(params)
    for _ in range(3):
        last_loss, grads = model.loss_and_grad(expected, x, y)
        expected = {name: value - 0.5 * grads[name] for name, value in expected.items()}
    for name in params:
        np.testing.assert_allclose(arrays[name], expected[name], rtol=0, atol=1e-10)
    assert metrics["train_loss"] == pytest.approx(last_loss, abs=1e-12)


def test_same_seed_gives_bit_identical_results_and_other_seeds_differ() -> None:
    x, y = small_problem()
    model = MLP(num_features=4, hidden=5, num_classes=3)
    params = model.init(seed=0)

    def two_fits(seed: int) -> list[dict[str, np.ndarray[Any, Any]]]:
        trainer = NumpyTrainer(model, x, y, batch_size=8, seed=seed)
        return [trainer.fit(params, {})[0], trainer.fit(params, {})[0]]

    first, again, other = two_fits(7), two_fits(7), two_fits(8)

    for name in params:
        np.testing.assert_array_equal(first[0][name], again[0][name])
        np.testing.assert_array_equal(first[1][name], again[1][name])
    # The second call shuffles differently from the first, and another seed differs too.
    assert not np.array_equal(first[0]["output.weight"], first[1]["output.weight"])
    assert not np.array_equal(first[0]["output.weight"], other[0]["output.weight"])


def test_config_seed_makes_a_call_independent_of_history() -> None:
    x, y = small_problem()
    model = SoftmaxRegression(num_features=4, num_classes=3)
    params = model.init(seed=0)
    fresh = NumpyTrainer(model, x, y, batch_size=8, seed=1)
    used = NumpyTrainer(model, x, y, batch_size=8, seed=1)
    used.fit(params, {})

    from_fresh, _, _ = fresh.fit(params, {"seed": 42})
    from_used, _, _ = used.fit(params, {"seed": 42})

    np.testing.assert_array_equal(from_fresh["weight"], from_used["weight"])


def test_read_only_inputs_are_not_modified() -> None:
    x, y = small_problem()
    x, y = x.astype(np.float32), y.copy()
    model = SoftmaxRegression(num_features=4, num_classes=3)
    params = {"weight": np.full((4, 3), 0.5, np.float32), "bias": np.ones(3, np.float32)}
    for array in (*params.values(), x, y):
        array.flags.writeable = False
    trainer = NumpyTrainer(model, x, y, batch_size=10, lr=0.5)

    arrays, _, _ = trainer.fit(params, {"epochs": 2})
    trainer.evaluate(params, {})

    assert (params["weight"] == 0.5).all()
    assert (params["bias"] == 1.0).all()
    assert not np.array_equal(arrays["weight"], params["weight"])
    assert all(array.flags.writeable for array in arrays.values())
    assert list(arrays) == ["weight", "bias"]


def test_parameter_dtype_is_kept() -> None:
    x, y = small_problem()
    model = SoftmaxRegression(num_features=4, num_classes=3)
    trainer = NumpyTrainer(model, x.astype(np.float32), y)

    as_single, _, _ = trainer.fit(model.init(0, dtype=np.float32), {})
    as_double, _, _ = trainer.fit(model.init(0, dtype=np.float64), {})

    assert {array.dtype for array in as_single.values()} == {np.dtype(np.float32)}
    assert {array.dtype for array in as_double.values()} == {np.dtype(np.float64)}


def test_metrics_and_config_overrides() -> None:
    x, y = small_problem()
    model = SoftmaxRegression(num_features=4, num_classes=3)
    trainer = NumpyTrainer(model, x, y, epochs=1, batch_size=16, lr=0.1)
    params = model.init(seed=0)

    params, num_examples, metrics = trainer.fit(params, {"epochs": 3, "batch_size": 7})
    _, _, later = trainer.fit(params, {"epochs": 3, "lr": 0.2, "server_round": 2})

    assert num_examples == 50
    assert metrics["samples_processed"] == 150
    assert later["train_loss"] < metrics["train_loss"] < np.log(3)


def test_evaluate_uses_training_data_without_a_test_split() -> None:
    x, y = small_problem()
    model = SoftmaxRegression(num_features=4, num_classes=3)
    with_test = NumpyTrainer(model, x, y, x[:10], y[:10])
    without_test = NumpyTrainer(model, x, y)

    loss, num_examples, metrics = without_test.evaluate(model.init(0), {})

    assert with_test.evaluate(model.init(0), {})[1] == 10
    assert num_examples == 50
    assert loss == pytest.approx(np.log(3))
    assert metrics["accuracy"] == pytest.approx(np.mean(y == 0))


def test_empty_test_split_has_zero_weight() -> None:
    x, y = small_problem()
    model = SoftmaxRegression(num_features=4, num_classes=3)
    trainer = NumpyTrainer(model, x, y, x[:0], y[:0])

    assert trainer.evaluate(model.init(0), {}) == (0.0, 0, {"accuracy": 0.0})


def test_is_a_trainer() -> None:
    x, y = small_problem()
    trainer = NumpyTrainer(SoftmaxRegression(4, 3), x, y)

    assert isinstance(trainer, Trainer)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"lr": 0}, "'lr': expected a positive number, got 0"),
        ({"lr": "0.1"}, "'lr': expected a positive number, got str"),
        ({"epochs": 0}, "'epochs': expected an int >= 1, got 0"),
        ({"epochs": 2.0}, "'epochs': expected an int >= 1, got 2.0"),
        ({"batch_size": -1}, "'batch_size': expected an int >= 1, or 0 or None"),
        ({"seed": -3}, "'seed': expected a non-negative int"),
    ],
)
def test_bad_config_values_raise_config_error(config: dict[str, Any], message: str) -> None:
    x, y = small_problem()
    model = SoftmaxRegression(num_features=4, num_classes=3)
    trainer = NumpyTrainer(model, x, y)

    with pytest.raises(ConfigError, match=message):
        trainer.fit(model.init(0), config)


def test_bad_data_is_refused() -> None:
    x, y = small_problem()
    model = SoftmaxRegression(num_features=4, num_classes=3)

    with pytest.raises(InvalidArgumentError, match=r"x_train: expected shape \(n, 4\)"):
        NumpyTrainer(model, x[:, :3], y)
    with pytest.raises(InvalidArgumentError, match=r"y_train: labels must lie in 0..2"):
        NumpyTrainer(model, x, y + 1)
    with pytest.raises(InvalidArgumentError, match=r"y_train: expected 50 labels"):
        NumpyTrainer(model, x, y[:-1])
    with pytest.raises(InvalidArgumentError, match=r"at least one training example"):
        NumpyTrainer(model, x[:0], y[:0])
    with pytest.raises(InvalidArgumentError, match=r"give both or neither"):
        NumpyTrainer(model, x, y, x_test=x)
