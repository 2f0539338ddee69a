"""Simulated attacks: the poisoned updates, the choice of attackers, label flipping, errors."""

from __future__ import annotations

import doctest
from typing import Any

import numpy as np
import pytest

import fedbus.fl.attacks
from fedbus.errors import InvalidArgumentError
from fedbus.fl.attacks import ATTACK_KINDS, AttackedTrainer, choose_attackers, flip_labels
from fedbus.train import NumpyTrainer, SoftmaxRegression, Trainer
from fedbus.train.base import LocalTerms

Arrays = dict[str, np.ndarray]


class StepTrainer:
    """Adds a fixed step to every array; records how it was called."""

    def __init__(self, step: float = 1.0) -> None:
        self.step = step
        self.calls: list[tuple[Any, ...]] = []

    def fit(self, arrays: Arrays, config: dict[str, Any]) -> tuple[Arrays, int, dict[str, float]]:
        self.calls.append((config,))
        return {k: v + self.step for k, v in arrays.items()}, 7, {"train_loss": 0.25}

    def evaluate(
        self, arrays: Arrays, config: dict[str, Any]
    ) -> tuple[float, int, dict[str, float]]:
        return 1.5, 3, {"accuracy": 0.75}


class TermsTrainer(StepTrainer):
    def fit(  # type: ignore[override]
        self, arrays: Arrays, config: dict[str, Any], terms: LocalTerms | None = None
    ) -> tuple[Arrays, int, dict[str, float]]:
        self.calls.append((config, terms))
        return {k: v + self.step for k, v in arrays.items()}, 7, {"train_loss": 0.25}


def received() -> Arrays:
    return {"w": np.array([[1.0, 2.0], [3.0, 4.0]]), "b": np.array([-1.0])}


def test_sign_flip_steps_against_the_honest_update() -> None:
    arrays, num_examples, metrics = AttackedTrainer(StepTrainer(0.5), "sign_flip").fit(
        received(), {}
    )
    np.testing.assert_array_equal(arrays["w"], [[0.5, 1.5], [2.5, 3.5]])
    np.testing.assert_array_equal(arrays["b"], [-1.5])
    assert (num_examples, metrics) == (7, {"train_loss": 0.25})
    arrays, _, _ = AttackedTrainer(StepTrainer(0.5), "sign_flip", scale=4.0).fit(received(), {})
    np.testing.assert_array_equal(arrays["b"], [-1.0 - 4.0 * 0.5])


def test_scale_boosts_the_honest_update() -> None:
    arrays, _, _ = AttackedTrainer(StepTrainer(0.5), "scale").fit(received(), {})
    np.testing.assert_array_equal(arrays["w"], [[6.0, 7.0], [8.0, 9.0]])  # default scale 10
    arrays, _, _ = AttackedTrainer(StepTrainer(0.5), "scale", scale=-10.0).fit(received(), {})
    np.testing.assert_array_equal(arrays["b"], [-6.0])


def test_gaussian_adds_seeded_noise_to_the_trained_model() -> None:
    attacked = AttackedTrainer(StepTrainer(0.5), "gaussian", noise_std=2.0, seed=3)
    arrays, _, _ = attacked.fit(received(), {})
    noise = np.random.default_rng(3)
    expected_w = received()["w"] + 0.5 + noise.normal(0.0, 2.0, size=(2, 2))
    expected_b = received()["b"] + 0.5 + noise.normal(0.0, 2.0, size=(1,))
    np.testing.assert_allclose(arrays["w"], expected_w)
    np.testing.assert_allclose(arrays["b"], expected_b)
    # the stream goes on: a second call draws new noise
    again, _, _ = attacked.fit(received(), {})
    assert not np.allclose(again["w"], arrays["w"])
    # with noise_std 0 it is the honest model
    honest, _, _ = AttackedTrainer(StepTrainer(0.5), "gaussian", noise_std=0.0).fit(received(), {})
    np.testing.assert_array_equal(honest["w"], received()["w"] + 0.5)


def test_gaussian_noise_follows_a_config_seed() -> None:
    first = AttackedTrainer(StepTrainer(), "gaussian", seed=1)
    second = AttackedTrainer(StepTrainer(), "gaussian", seed=1)
    second.fit(received(), {})  # consumes the trainer's own stream
    a, _, _ = first.fit(received(), {"seed": 9})
    b, _, _ = second.fit(received(), {"seed": 9})
    np.testing.assert_array_equal(a["w"], b["w"])
    with pytest.raises(InvalidArgumentError, match="config 'seed' must be an int >= 0"):
        first.fit(received(), {"seed": "x"})


def test_dtypes_are_kept() -> None:
    start = {"w": np.array([1.0, 2.0], dtype=np.float32)}
    for kind in ("sign_flip", "scale", "gaussian"):
        arrays, _, _ = AttackedTrainer(StepTrainer(0.25), kind).fit(start, {})
        assert arrays["w"].dtype == np.float32
    arrays, _, _ = AttackedTrainer(StepTrainer(0.25), "scale", scale=3.0).fit(start, {})
    np.testing.assert_array_equal(arrays["w"], np.array([1.75, 2.75], dtype=np.float32))


def test_terms_are_passed_only_when_given() -> None:
    inner = TermsTrainer()
    attacked = AttackedTrainer(inner, "scale")
    terms = LocalTerms(proximal_mu=0.1, anchor=received())
    attacked.fit(received(), {"lr": 0.1}, terms)
    attacked.fit(received(), {"lr": 0.2})
    assert inner.calls == [({"lr": 0.1}, terms), ({"lr": 0.2}, None)]
    two_arguments = StepTrainer()
    AttackedTrainer(two_arguments, "scale").fit(received(), {"lr": 0.3})
    assert two_arguments.calls == [({"lr": 0.3},)]


def test_evaluate_passes_through_and_it_is_a_trainer() -> None:
    attacked = AttackedTrainer(StepTrainer(), "sign_flip")
    assert attacked.evaluate(received(), {}) == (1.5, 3, {"accuracy": 0.75})
    assert isinstance(attacked, Trainer)


def test_wrapping_a_numpy_trainer() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 3))
    y = (x[:, 0] > 0).astype(np.int64)
    model = SoftmaxRegression(3, 2)
    start = model.init(seed=0, dtype=np.float64)
    honest, _, _ = NumpyTrainer(model, x, y, seed=4).fit(start, {})
    flipped, _, _ = AttackedTrainer(NumpyTrainer(model, x, y, seed=4), "sign_flip").fit(start, {})
    for name in start:
        np.testing.assert_allclose(flipped[name] - start[name], start[name] - honest[name])


def test_a_returned_array_the_model_lacks_is_an_error() -> None:
    class Extra(StepTrainer):
        def fit(self, arrays, config):  # type: ignore[no-untyped-def]
            return {"w": np.zeros(1), "new": np.zeros(1)}, 1, {}

    with pytest.raises(InvalidArgumentError, match="'new' of shape \\(1,\\), which the received"):
        AttackedTrainer(Extra(), "scale").fit({"w": np.zeros(1)}, {})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"kind": "label_flip"}, r"'label_flip' poisons the data.*flip_labels"),
        ({"kind": "boost"}, r"unknown kind 'boost'; expected one of \['sign_flip'"),
        ({"kind": "sign_flip", "scale": -1.0}, r"scale must be > 0, got -1\.0.*kind='scale'"),
        ({"kind": "scale", "scale": float("inf")}, r"scale must be a finite number, got inf"),
        ({"kind": "scale", "scale": "10"}, r"scale must be a finite number, got '10'"),
        ({"kind": "gaussian", "noise_std": -1.0}, r"noise_std must be a finite number >= 0"),
        ({"kind": "gaussian", "seed": -1}, r"seed must be an int >= 0, got -1"),
    ],
)
def test_attacked_trainer_arguments_are_checked(options: dict[str, Any], message: str) -> None:
    kind = options.pop("kind")
    with pytest.raises(InvalidArgumentError, match=message):
        AttackedTrainer(StepTrainer(), kind, **options)


def test_attack_kinds() -> None:
    assert ATTACK_KINDS == ("sign_flip", "scale", "gaussian", "nan", "inf", "label_flip")


@pytest.mark.parametrize(
    ("num_clients", "fraction", "count"),
    [(10, 0.2, 2), (30, 0.2, 6), (7, 0.3, 2), (7, 1.0, 7), (7, 0.0, 0), (1, 0.6, 1)],
)
def test_choose_attackers_count_and_range(num_clients: int, fraction: float, count: int) -> None:
    attackers = choose_attackers(num_clients, fraction, seed=5)
    assert len(attackers) == count == round(fraction * num_clients)
    assert attackers <= set(range(1, num_clients + 1))


def test_choose_attackers_is_deterministic_for_a_seed() -> None:
    assert choose_attackers(50, 0.2, seed=1) == choose_attackers(50, 0.2, seed=1)
    draws = {choose_attackers(50, 0.2, seed=seed) for seed in range(5)}
    assert len(draws) == 5


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ((0, 0.2, 0), r"num_clients must be an int >= 1, got 0"),
        ((10, 1.5, 0), r"fraction must be a number in \[0, 1\], got 1\.5"),
        ((10, -0.1, 0), r"fraction must be a number in \[0, 1\]"),
        ((10, 0.2, -3), r"seed must be an int >= 0, got -3"),
        ((10.0, 0.2, 0), r"num_clients must be an int >= 1, got 10\.0"),
    ],
)
def test_choose_attackers_arguments_are_checked(arguments: tuple[Any, ...], message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        choose_attackers(*arguments)


def test_flip_labels() -> None:
    y = np.array([0, 3, 9, 5], dtype=np.int32)
    flipped = flip_labels(y, 10)
    np.testing.assert_array_equal(flipped, [9, 6, 0, 4])
    assert flipped.dtype == np.int32
    np.testing.assert_array_equal(y, [0, 3, 9, 5])  # not modified
    np.testing.assert_array_equal(flip_labels(flipped, 10), y)
    assert flip_labels(np.zeros(0, np.int64), 3).shape == (0,)


@pytest.mark.parametrize(
    ("labels", "num_classes", "message"),
    [
        ([0, 10], 10, r"labels must lie in 0\.\.9, found 0\.\.10; check num_classes"),
        ([-1, 2], 10, r"found -1\.\.2"),
        ([0.0, 1.0], 10, r"integer class labels, got dtype float64"),
        ([0, 1], 0, r"num_classes must be an int >= 1, got 0"),
    ],
)
def test_flip_labels_arguments_are_checked(
    labels: list[Any], num_classes: int, message: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        flip_labels(np.array(labels), num_classes)


def test_docstring_examples() -> None:
    result = doctest.testmod(fedbus.fl.attacks)
    assert result.attempted > 0
    assert result.failed == 0


def test_non_finite_kinds_send_nan_or_infinity_in_every_float_value() -> None:
    for kind, value in (("nan", np.nan), ("inf", np.inf)):
        arrays, num_examples, _ = AttackedTrainer(StepTrainer(0.5), kind).fit(received(), {})
        assert num_examples == 7
        for array in arrays.values():
            np.testing.assert_array_equal(array, np.full_like(array, value))
