"""Models: gradients against finite differences, initialisation, the model registry."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from fedbus.errors import ConfigError, InvalidArgumentError, InvalidTypeError
from fedbus.train import MLP, NumpyModel, SoftmaxRegression, build_model

MODELS = {
    "softmax": lambda: SoftmaxRegression(num_features=5, num_classes=4),
    "mlp": lambda: MLP(num_features=5, hidden=7, num_classes=4),
}


def random_params(model: NumpyModel, seed: int) -> dict[str, np.ndarray[Any, Any]]:
    rng = np.random.default_rng(seed)
    return {name: rng.normal(size=shape) for name, shape in model.param_shapes().items()}


def finite_difference(
    model: NumpyModel, params: dict[str, np.ndarray[Any, Any]], x: Any, y: Any, name: str
) -> np.ndarray[Any, Any]:
    step = 1e-6
    grad = np.zeros_like(params[name])
    for position in np.ndindex(grad.shape):
        shifted = {key: value.copy() for key, value in params.items()}
        shifted[name][position] += step
        loss_up = model.loss(shifted, x, y)
        shifted[name][position] -= 2 * step
        loss_down = model.loss(shifted, x, y)
        grad[position] = (loss_up - loss_down) / (2 * step)
    return grad


@pytest.mark.parametrize("name", sorted(MODELS))
def test_gradients_match_finite_differences(name: str) -> None:
    model = MODELS[name]()
    rng = np.random.default_rng(1)
    x = rng.normal(size=(20, 5))
    y = rng.integers(0, 4, size=20)
    params = random_params(model, seed=2)

    loss, grads = model.loss_and_grad(params, x, y)

    assert loss == pytest.approx(model.loss(params, x, y), rel=1e-12)
    assert set(grads) == set(params)
    for key in params:
        assert grads[key].shape == params[key].shape
        numeric = finite_difference(model, params, x, y, key)
        np.testing.assert_allclose(grads[key], numeric, rtol=1e-5, atol=1e-8)


def test_loss_is_stable_for_huge_logits() -> None:
    model = SoftmaxRegression(num_features=1, num_classes=3)
    params = {"weight": np.array([[1000.0, 0.0, -1000.0]]), "bias": np.zeros(3)}
    x = np.array([[1.0], [1.0]])

    loss, grads = model.loss_and_grad(params, x, np.array([0, 1]))

    # Sample 0 is classified with certainty (loss 0); sample 1 has logit gap 1000 (loss 1000).
    assert loss == pytest.approx(500.0)
    assert all(np.isfinite(grad).all() for grad in grads.values())


def test_mean_cross_entropy_of_uniform_prediction_is_log_classes() -> None:
    model = SoftmaxRegression(num_features=3, num_classes=10)
    params = model.init(seed=0, dtype=np.float64)
    x = np.random.default_rng(0).normal(size=(8, 3))

    assert model.loss(params, x, np.arange(8)) == pytest.approx(np.log(10))


def test_init_is_deterministic_and_typed() -> None:
    model = MLP(num_features=64, hidden=256, num_classes=10)

    first, again, other = model.init(seed=3), model.init(seed=3), model.init(seed=4)
    as_double = model.init(seed=3, dtype=np.float64)

    for name, shape in model.param_shapes().items():
        assert first[name].shape == shape
        assert first[name].dtype == np.float32
        assert as_double[name].dtype == np.float64
        np.testing.assert_array_equal(first[name], again[name])
    assert not np.array_equal(first["hidden.weight"], other["hidden.weight"])
    # He initialisation: standard deviation sqrt(2 / fan_in) = 0.177 for 64 inputs.
    assert first["hidden.weight"].std() == pytest.approx(np.sqrt(2 / 64), rel=0.05)
    assert not first["hidden.bias"].any()


def test_softmax_init_is_zero() -> None:
    params = SoftmaxRegression(num_features=4, num_classes=3).init(seed=9)

    assert not params["weight"].any()
    assert params["bias"].shape == (3,)


def test_predict_returns_class_indices() -> None:
    model = SoftmaxRegression(num_features=2, num_classes=3)
    params = {"weight": np.eye(2, 3), "bias": np.array([0.0, 0.0, 0.5])}
    x = np.array([[2.0, 0.0], [0.0, 2.0], [0.0, 0.0]])

    predicted = model.predict(params, x)

    assert predicted.tolist() == [0, 1, 2]
    assert predicted.dtype == np.int64


def test_build_model_by_name() -> None:
    mlp = build_model("mlp", num_features=8, num_classes=3, hidden=16)
    default_mlp = build_model("mlp", num_features=8, num_classes=3)

    assert isinstance(mlp, MLP)
    assert mlp.param_shapes()["hidden.weight"] == (8, 16)
    assert default_mlp.param_shapes()["hidden.weight"] == (8, 64)
    assert isinstance(build_model("softmax", 8, 3), SoftmaxRegression)


def test_build_model_rejects_unknown_names_and_options() -> None:
    with pytest.raises(ConfigError, match=r"unknown model 'cnn': expected one of mlp, softmax"):
        build_model("cnn", 8, 3)
    with pytest.raises(ConfigError, match=r"unknown options \['hidden'\]"):
        build_model("softmax", 8, 3, hidden=4)
    with pytest.raises(ConfigError, match=r"'hidden': expected int, got str"):
        build_model("mlp", 8, 3, hidden="64")
    with pytest.raises(ConfigError, match=r"hidden: expected an int >= 1, got 0"):
        build_model("mlp", 8, 3, hidden=0)


def test_model_arguments_are_checked() -> None:
    with pytest.raises(InvalidArgumentError, match=r"num_classes: expected an int >= 2"):
        SoftmaxRegression(num_features=3, num_classes=1)
    with pytest.raises(InvalidTypeError, match=r"num_features: expected int, got float"):
        SoftmaxRegression(num_features=3.0, num_classes=2)  # type: ignore[arg-type]


def test_check_params_names_what_is_wrong() -> None:
    model = SoftmaxRegression(num_features=3, num_classes=2)
    good = model.init(seed=0)

    model.check_params(good)
    with pytest.raises(InvalidArgumentError, match=r"expected parameters \['bias', 'weight'\]"):
        model.check_params({"weight": good["weight"]})
    with pytest.raises(InvalidArgumentError, match=r"'weight': expected shape \(3, 2\)"):
        model.check_params({**good, "weight": np.zeros((2, 3), np.float32)})
    with pytest.raises(InvalidTypeError, match=r"'bias': expected a floating dtype, got int64"):
        model.check_params({**good, "bias": np.zeros(2, np.int64)})
