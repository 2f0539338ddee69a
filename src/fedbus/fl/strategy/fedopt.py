"""Server-side optimisers: FedAvgM (Hsu et al., 2019) and FedAdagrad, FedAdam, FedYogi (Reddi
et al., 2021, "Adaptive Federated Optimization", Algorithm 2).

Each round, the clients' models are averaged as FedAvg does (weighted by ``num_examples``); the
difference ``delta = average - global`` is a pseudo-gradient that the server's optimiser turns
into a step, and ``global + step`` is the new global model. Arithmetic is float64; each array
keeps its dtype. A round in which no client had weight leaves the model and the moments as they
were.

The moments are created at the first aggregation, shaped like the model. ``state()`` names each
``"<moment>:<array name>"`` (``"m:layer/w"``, ``"v:layer/w"``): a moment's name holds no ``:``,
so whatever follows the first ``:`` is the array's name, whatever characters that name holds.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedbus.errors import InvalidArgumentError
from fedbus.fl.protocol import read_num_examples
from fedbus.fl.registry import register_strategy, server_lr_option
from fedbus.fl.strategy.base import Strategy, check_parameter
from fedbus.fl.strategy.fedavg import WeightedAverage
from fedbus.message import ArrayRecord, RecordDict
from fedbus.plugins import Settings

__all__ = [
    "AdaptiveFedOpt",
    "FedAdagrad",
    "FedAdam",
    "FedAvgM",
    "FedOpt",
    "FedYogi",
    "OptimiserStep",
]

Float64Array = NDArray[np.float64]
Moments = dict[str, Float64Array]


class FedOpt(Strategy):
    """FedAvg's weighted average, then a server optimiser step on ``delta = average - global``.

    Subclasses name their moments in ``moment_names`` and implement ``initial_moment`` and
    ``step``. ``state()`` returns the moments and ``load_state()`` restores them, so a resumed
    run continues exactly as one that never stopped.

    Examples
    --------
    >>> from fedbus.message import MetricRecord
    >>> strategy = FedAvgM(server_lr=1.0, momentum=0.5)
    >>> aggregator = strategy.start_aggregation(1, ArrayRecord({"w": np.zeros(2)}))
    >>> aggregator.add(
    ...     7, RecordDict({"arrays": ArrayRecord({"w": np.ones(2)}),
    ...                    "metrics": MetricRecord({"num_examples": 4})})
    ... )
    >>> aggregator.result()[0].to_numpy_dict()["w"]
    array([1., 1.])
    >>> sorted(strategy.state())
    ['v:w']
    """

    name = "fedopt"
    aggregates_by_sum = True
    #: The moments kept for each model array: the prefixes of the keys of ``state()``.
    moment_names: tuple[str, ...] = ()

    def __init__(self, server_lr: float) -> None:
        self.server_lr = check_parameter(self, "server_lr", server_lr, "> 0", lambda x: x > 0)
        self._moments: dict[str, Moments] | None = None  # array name -> moment name -> values

    @abstractmethod
    def initial_moment(self, moment: str, shape: tuple[int, ...]) -> Float64Array:
        """The float64 value of ``moment`` before the first round, for an array of ``shape``."""

    @abstractmethod
    def step(self, delta: Float64Array, moments: Moments) -> Float64Array:
        """Replace one array's ``moments`` by their next values; return its float64 step."""

    def start_aggregation(self, server_round: int, arrays: ArrayRecord) -> OptimiserStep:
        """The weighted average of this round's replies, turned into one step when read."""
        if self._moments is not None:
            _check_layout(self, _shapes(self._moments), {k: a.shape for k, a in arrays.items()})
        return OptimiserStep(self, arrays)

    def apply(self, current: ArrayRecord, average: ArrayRecord) -> ArrayRecord:
        """Advance the moments by one round and return the new global arrays."""
        model, target = current.to_numpy_dict(), average.to_numpy_dict()
        if self._moments is None:
            self._moments = {
                key: {name: self.initial_moment(name, value.shape) for name in self.moment_names}
                for key, value in model.items()
            }
        updated = {}
        for key, value in model.items():
            average64 = target[key].astype(np.float64)
            delta = average64 - value.astype(np.float64)
            step = self.step(delta, self._moments[key])
            # average + (step - delta) is global + step, and exactly the average when the step
            # is delta (FedAvgM with momentum 0 and server_lr 1), in any dtype
            updated[key] = (average64 + (step - delta)).astype(value.dtype)
        return ArrayRecord(updated)

    def state(self) -> dict[str, np.ndarray[Any, Any]]:
        """The moments as ``{"<moment>:<array name>": float64 array}``; ``{}`` before round 1."""
        if self._moments is None:
            return {}
        return {
            f"{name}:{key}": moments[name].copy()
            for name in self.moment_names
            for key, moments in self._moments.items()
        }

    def load_state(self, state: Mapping[str, np.ndarray[Any, Any]]) -> None:
        """Restore what ``state()`` returned; ``{}`` starts the moments afresh.

        Raises ``InvalidArgumentError`` for an unknown key, a non-float array, an array missing
        one of its moments, or shapes other than the model's (when the model is known already).
        """
        loaded: dict[str, Moments] = {}
        for full_key, value in state.items():
            name, _, key = full_key.partition(":")
            if name not in self.moment_names or not key:
                expected = " or ".join(f"'{m}:<array name>'" for m in self.moment_names)
                raise InvalidArgumentError(
                    f"{self.name}: unknown state key {full_key!r}; expected keys {expected}"
                )
            if not isinstance(value, np.ndarray) or value.dtype.kind != "f":
                kind = getattr(value, "dtype", type(value).__name__)
                raise InvalidArgumentError(
                    f"{self.name}: state {full_key!r} must be a float numpy array, got {kind}"
                )
            loaded.setdefault(key, {})[name] = value.astype(np.float64)
        for key, moments in loaded.items():
            shapes = {name: value.shape for name, value in moments.items()}
            if set(moments) != set(self.moment_names) or len(set(shapes.values())) != 1:
                raise InvalidArgumentError(
                    f"{self.name}: array {key!r} needs the moments {list(self.moment_names)} "
                    f"with one shape, got {shapes}; pass the whole dict that state() returned"
                )
        if loaded and self._moments is not None:
            _check_layout(self, _shapes(loaded), _shapes(self._moments))
        self._moments = loaded or None


class OptimiserStep:
    """The aggregator of a ``FedOpt`` round: a ``WeightedAverage``, then one optimiser step.

    Replies are refused exactly as ``WeightedAverage`` refuses them. ``result()`` moves the
    optimiser once, however often it is called.
    """

    __slots__ = ("_average", "_current", "_result", "_strategy", "_weight")

    def __init__(self, strategy: FedOpt, current: ArrayRecord) -> None:
        self._strategy, self._current = strategy, current
        self._average = WeightedAverage(current)
        self._weight = 0
        self._result: tuple[ArrayRecord, dict[str, float]] | None = None

    def add(self, node_id: int, content: RecordDict) -> None:
        """Fold one reply into the average."""
        self._average.add(node_id, content)
        self._weight += read_num_examples(content)

    def result(self) -> tuple[ArrayRecord, dict[str, float]]:
        """The new global arrays and the weighted train metrics."""
        if self._result is None:
            average, metrics = self._average.result()
            if self._weight > 0:  # with no weight the average is the current model: no step
                average = self._strategy.apply(self._current, average)
            self._result = average, metrics
        return self._result


class FedAvgM(FedOpt):
    """Server momentum (Hsu et al., 2019): ``v = momentum * v + delta``, ``x += server_lr * v``.

    ``v`` starts at zero; with ``momentum=0`` and ``server_lr=1`` this is FedAvg.

    Parameters
    ----------
    server_lr : float
        The server's learning rate, > 0.
    momentum : float
        The share of the previous velocity kept each round, in [0, 1).

    Examples
    --------
    >>> FedAvgM().name, FedAvgM().momentum
    ('fedavgm', 0.9)
    """

    name = "fedavgm"
    moment_names = ("v",)

    def __init__(self, server_lr: float = 1.0, momentum: float = 0.9) -> None:
        super().__init__(server_lr)
        self.momentum = check_parameter(self, "momentum", momentum, "in [0, 1)", _below_one)

    def initial_moment(self, moment: str, shape: tuple[int, ...]) -> Float64Array:
        """Zero velocity."""
        return np.zeros(shape, dtype=np.float64)

    def step(self, delta: Float64Array, moments: Moments) -> Float64Array:
        """``v = momentum * v + delta``; the step is ``server_lr * v``."""
        moments["v"] = self.momentum * moments["v"] + delta
        return self.server_lr * moments["v"]


class AdaptiveFedOpt(FedOpt):
    """Reddi et al.'s Algorithm 2, whose variants differ only in how ``v`` follows ``delta**2``.

    ``m = beta1 * m + (1 - beta1) * delta``, then ``v`` (``second_moment``), then
    ``x += server_lr * m / (sqrt(v) + tau)``. As in the paper there is no bias correction. ``m``
    starts at 0 and ``v`` at ``tau**2``, the smallest start the paper allows (``v_{-1} >= tau^2``).
    ``beta1=0.9``, ``beta2=0.99`` and ``tau=1e-3`` are the values the paper fixes in its
    experiments; it tunes ``server_lr`` per task over powers of ten, so the default 0.1 is a
    starting point to tune, not a universal value.

    Parameters
    ----------
    server_lr : float
        The server's learning rate (the paper's eta), > 0.
    beta1 : float
        Decay of the first moment ``m``, in [0, 1).
    tau : float
        The degree of adaptivity, > 0: steps are at most about ``server_lr * |m| / tau``.
    """

    moment_names = ("m", "v")

    def __init__(self, server_lr: float, beta1: float, tau: float) -> None:
        super().__init__(server_lr)
        self.beta1 = check_parameter(self, "beta1", beta1, "in [0, 1)", _below_one)
        self.tau = check_parameter(self, "tau", tau, "> 0", lambda x: x > 0)

    def initial_moment(self, moment: str, shape: tuple[int, ...]) -> Float64Array:
        """``m`` starts at 0, ``v`` at ``tau**2``."""
        return np.full(shape, 0.0 if moment == "m" else self.tau**2, dtype=np.float64)

    @abstractmethod
    def second_moment(self, v: Float64Array, delta_squared: Float64Array) -> Float64Array:
        """The next ``v``."""

    def step(self, delta: Float64Array, moments: Moments) -> Float64Array:
        """Update ``m`` and ``v``; the step is ``server_lr * m / (sqrt(v) + tau)``."""
        moments["m"] = self.beta1 * moments["m"] + (1.0 - self.beta1) * delta
        moments["v"] = self.second_moment(moments["v"], delta * delta)
        return self.server_lr * moments["m"] / (np.sqrt(moments["v"]) + self.tau)


class FedAdagrad(AdaptiveFedOpt):
    """FedAdagrad: ``v = v + delta**2``; parameters as ``AdaptiveFedOpt``'s.

    >>> FedAdagrad().name, FedAdagrad().server_lr
    ('fedadagrad', 0.1)
    """

    name = "fedadagrad"

    def __init__(self, server_lr: float = 0.1, beta1: float = 0.9, tau: float = 1e-3) -> None:
        super().__init__(server_lr, beta1, tau)

    def second_moment(self, v: Float64Array, delta_squared: Float64Array) -> Float64Array:
        """``v + delta**2``."""
        return v + delta_squared


class FedAdam(AdaptiveFedOpt):
    """FedAdam: ``v = beta2 * v + (1 - beta2) * delta**2``; ``beta2`` in [0, 1), the rest as
    ``AdaptiveFedOpt``'s.

    >>> FedAdam(server_lr=0.05).server_lr, FedAdam().beta2
    (0.05, 0.99)
    """

    name = "fedadam"

    def __init__(
        self, server_lr: float = 0.1, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3
    ) -> None:
        super().__init__(server_lr, beta1, tau)
        self.beta2 = check_parameter(self, "beta2", beta2, "in [0, 1)", _below_one)

    def second_moment(self, v: Float64Array, delta_squared: Float64Array) -> Float64Array:
        """``beta2 * v + (1 - beta2) * delta**2``."""
        return self.beta2 * v + (1.0 - self.beta2) * delta_squared


class FedYogi(FedAdam):
    """FedYogi: ``v = v - (1 - beta2) * delta**2 * sign(v - delta**2)``; parameters as
    ``FedAdam``'s. ``v`` moves by an amount independent of ``v`` itself, so it changes more
    gently than Adam's.

    >>> FedYogi().name, FedYogi().tau
    ('fedyogi', 0.001)
    """

    name = "fedyogi"

    def second_moment(self, v: Float64Array, delta_squared: Float64Array) -> Float64Array:
        """``v - (1 - beta2) * delta**2 * sign(v - delta**2)``."""
        return v - (1.0 - self.beta2) * delta_squared * np.sign(v - delta_squared)


def _below_one(value: float) -> bool:
    return 0 <= value < 1


def _shapes(moments: Mapping[str, Moments]) -> dict[str, tuple[int, ...]]:
    return {key: next(iter(values.values())).shape for key, values in moments.items()}


def _check_layout(
    strategy: Strategy, held: Mapping[str, tuple[int, ...]], model: Mapping[str, tuple[int, ...]]
) -> None:
    """Raise if the moments are kept for arrays other than the model's."""
    if dict(held) != dict(model):
        raise InvalidArgumentError(
            f"{strategy.name}: the optimiser state holds arrays {dict(held)} but the model has "
            f"{dict(model)}; load the state saved with this model, or load_state({{}}) to start "
            "afresh"
        )


def _adaptive(settings: Settings) -> dict[str, Any]:
    """The keys FedAdam and FedYogi share."""
    return {
        **server_lr_option(settings),
        "beta1": settings["strategy.beta1"],
        "beta2": settings["strategy.beta2"],
        "tau": settings["strategy.tau"],
    }


register_strategy(
    "fedavgm",
    FedAvgM,
    lambda settings: FedAvgM(**server_lr_option(settings), momentum=settings["strategy.momentum"]),
)
register_strategy(
    "fedadagrad",
    FedAdagrad,
    lambda settings: FedAdagrad(
        **server_lr_option(settings),
        beta1=settings["strategy.beta1"],
        tau=settings["strategy.tau"],
    ),
)
register_strategy("fedadam", FedAdam, lambda settings: FedAdam(**_adaptive(settings)))
register_strategy("fedyogi", FedYogi, lambda settings: FedYogi(**_adaptive(settings)))
