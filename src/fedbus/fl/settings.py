"""``TrainingSettings``: what every FL server shares, whatever its schedule.

Each server takes its own parameters (``clients_per_round``, ``concurrency``, ``degree``) and
the shared ones, either as one ``settings=TrainingSettings(...)`` or as keywords
(``SharedOptions``), which one function, ``settings_from_options``, turns into the settings
object: no server lists and forwards them one by one.

The keywords ``evaluate_fn``, ``evaluate_every`` and ``on_round_end`` are conveniences that
become callbacks (``fl.callbacks``), in this order: ``CentralEvaluation``, the ``callbacks``
given, then ``RoundEndFunction``. These two build the same server::

    Server(FedAvg(), arrays, clients_per_round=10, num_rounds=20, evaluate_fn=evaluate)
    Server(FedAvg(), arrays, clients_per_round=10,
           settings=TrainingSettings(num_rounds=20, callbacks=(CentralEvaluation(evaluate),)))
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict

from fedbus.errors import InvalidArgumentError, InvalidTypeError
from fedbus.fl.callbacks import Callback, CentralEvaluation, EvaluateFn, RoundEndFunction
from fedbus.fl.record import RoundRecord

__all__ = ["SharedOptions", "TrainingSettings", "settings_from_options"]


@dataclass(frozen=True, slots=True)
class TrainingSettings:
    """The settings every server shares; checked when built.

    Parameters
    ----------
    num_rounds
        Rounds to run (asynchronous training: aggregations, i.e. model versions).
    train_config
        Settings sent to clients with each ``train`` request (e.g. lr, epochs, batch_size).
    min_clients
        Clients that must be known before training starts (None: the server's default, its
        ``clients_per_round`` or ``concurrency``).
    seed
        Seed of client sampling.
    first_round, sampler_state
        Continue a run: start at ``first_round`` (rounds keep their numbers), sampling from
        ``sampler_state`` (what ``server.sampler_state()`` returned after round
        ``first_round - 1``).
    callbacks
        Run in order after each aggregation (``fl.callbacks``).
    watchdog
        Seconds a round (an asynchronous model version, the start of training) may wait
        before the server logs a WARNING naming the nodes it waits on, repeated every as many
        seconds while it waits (``fl.watchdog``); the runtime's clock, as ``round_timeout``.
        None: never. Results are the same either way.

    Raises
    ------
    InvalidArgumentError
        A value out of range, naming the setting, what was expected and what was given.
    InvalidTypeError
        A callback that is not a ``Callback``.
    """

    num_rounds: int
    train_config: Mapping[str, Any] = field(default_factory=dict)
    min_clients: int | None = None
    seed: int = 0
    first_round: int = 1
    sampler_state: Mapping[str, Any] | None = None
    callbacks: tuple[Callback, ...] = ()
    watchdog: float | None = 60.0

    def __post_init__(self) -> None:
        _require(
            _is_int(self.num_rounds) and self.num_rounds >= 1,
            "num_rounds",
            "an integer >= 1",
            self.num_rounds,
        )
        _require(
            _is_int(self.first_round) and 1 <= self.first_round <= self.num_rounds,
            "first_round",
            "in 1..num_rounds",
            self.first_round,
        )
        _require(
            self.min_clients is None or (_is_int(self.min_clients) and self.min_clients >= 1),
            "min_clients",
            "an integer >= 1 or None",
            self.min_clients,
        )
        _require(_is_int(self.seed) and self.seed >= 0, "seed", "an integer >= 0", self.seed)
        _require(
            self.train_config is None or isinstance(self.train_config, Mapping),
            "train_config",
            "a mapping of setting names to values",
            self.train_config,
        )
        _require(
            self.sampler_state is None or isinstance(self.sampler_state, Mapping),
            "sampler_state",
            "a mapping (what sampler_state() returned) or None",
            self.sampler_state,
        )
        _require(
            self.watchdog is None
            or (
                isinstance(self.watchdog, int | float)
                and not isinstance(self.watchdog, bool)
                and math.isfinite(self.watchdog)
                and self.watchdog > 0
            ),
            "watchdog",
            "a finite number of seconds > 0 or None (off)",
            self.watchdog,
        )
        if isinstance(self.callbacks, Callback) or not isinstance(self.callbacks, Sequence):
            raise InvalidTypeError(
                f"TrainingSettings: callbacks must be a list of Callback, got "
                f"{type(self.callbacks).__name__}"
            )
        given: Sequence[object] = self.callbacks  # checked here, whatever the annotation says
        for index, callback in enumerate(given):
            if not isinstance(callback, Callback):
                hint = (
                    "; wrap a function of the RoundRecord as RoundEndFunction(function)"
                    if callable(callback)
                    else ""
                )
                raise InvalidTypeError(
                    f"TrainingSettings: callbacks[{index}] must be a fedbus.fl.callbacks."
                    f"Callback, got {type(callback).__name__}{hint}"
                )
        # frozen: the fields stay as built, so a caller's dict or list changed later is not ours
        object.__setattr__(self, "train_config", dict(self.train_config or {}))
        object.__setattr__(self, "callbacks", tuple(self.callbacks))


class SharedOptions(TypedDict, total=False):
    """The keywords every server accepts besides its own: ``TrainingSettings``'s fields, plus
    ``evaluate_fn``, ``evaluate_every`` and ``on_round_end``, which become callbacks."""

    num_rounds: int
    train_config: Mapping[str, Any] | None
    min_clients: int | None
    seed: int
    first_round: int
    sampler_state: Mapping[str, Any] | None
    callbacks: Sequence[Callback]
    watchdog: float | None
    evaluate_fn: EvaluateFn | None
    evaluate_every: int
    on_round_end: Callable[[RoundRecord], object] | None


_OPTION_NAMES = frozenset(SharedOptions.__optional_keys__ | SharedOptions.__required_keys__)


def settings_from_options(
    owner: str, settings: TrainingSettings | None, options: Mapping[str, Any]
) -> TrainingSettings:
    """The settings of server ``owner``: ``settings`` as given, or built from ``options``
    (the ``SharedOptions`` keywords), with ``evaluate_fn`` and ``on_round_end`` as callbacks.

    Raises ``InvalidTypeError`` for an unknown keyword, for both ``settings`` and keywords, or
    for neither; ``InvalidArgumentError`` for a value out of range.
    """
    unknown = sorted(set(options) - _OPTION_NAMES)
    if unknown:
        raise InvalidTypeError(
            f"{owner}: unexpected keyword argument {unknown[0]!r}; the shared ones are "
            f"{', '.join(sorted(_OPTION_NAMES))}"
        )
    if settings is not None:
        if options:
            raise InvalidTypeError(
                f"{owner}: give settings=TrainingSettings(...) or the keywords "
                f"{', '.join(sorted(options))}, not both"
            )
        if not isinstance(settings, TrainingSettings):
            raise InvalidTypeError(
                f"{owner}: settings must be a TrainingSettings, got {type(settings).__name__}"
            )
        return settings
    if "num_rounds" not in options:
        raise InvalidTypeError(
            f"{owner}: missing keyword argument 'num_rounds' (or settings=TrainingSettings(...))"
        )
    shared = dict(options)
    evaluate_fn = shared.pop("evaluate_fn", None)
    evaluate_every = shared.pop("evaluate_every", 1)
    on_round_end = shared.pop("on_round_end", None)
    callbacks: list[Callback] = []
    if evaluate_fn is not None:
        callbacks.append(CentralEvaluation(evaluate_fn, every=evaluate_every))
    else:
        _require(
            _is_int(evaluate_every) and evaluate_every >= 0,
            "evaluate_every",
            "an integer >= 0",
            evaluate_every,
        )
    callbacks += _listed(owner, shared.pop("callbacks", ()))
    if on_round_end is not None:
        callbacks.append(RoundEndFunction(on_round_end))
    return TrainingSettings(**shared, callbacks=tuple(callbacks))


def _listed(owner: str, callbacks: object) -> list[Callback]:
    if isinstance(callbacks, Callback) or not isinstance(callbacks, Sequence):
        raise InvalidTypeError(
            f"{owner}: callbacks must be a list of Callback, got {type(callbacks).__name__}"
        )
    return list(callbacks)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _require(condition: bool, name: str, expected: str, value: object) -> None:
    if not condition:
        raise InvalidArgumentError(f"TrainingSettings: {name} must be {expected}, got {value!r}")
