"""``DifferentialPrivacy``: user-level differential privacy around a sum-based strategy.

Three modes, the same accounting (``accounting``):

- ``central``: clients send their models as usual; the server clips each update
  ``x_i - x`` to the clipping norm ``C``, sums them, adds Gaussian noise of standard deviation
  ``z C`` to the sum and divides by ``clients_per_round`` (a fixed denominator, so one client
  moves the mean by at most ``2 C / m`` whoever else answered). Protects against whoever sees the
  model, not against the server.
- ``client_clip``: the clients clip their own update before sending it (the request carries
  ``clipping_norm``, and the ``privacy`` mod on each client, ``fedbus.fl.mods.ClientPrivacy``,
  clips); the server refuses an update above the norm, then adds the noise as in ``central``.
  The server never needs an individual update, so this mode is the one secure aggregation can
  hide the updates of.
- ``local``: each client clips its update and adds the noise ``z C`` itself (the request
  carries ``noise_std``); the server averages. Protects against the server too, at the price of
  ``sqrt(m)`` times more noise in the mean.

The noised mean update is handed to the wrapped strategy as a single update, so FedAvg applies
it as it is and FedAvgM or FedAdam take it as their pseudo-gradient. Rules that need every
update (median, Krum) cannot work on a noised sum and are refused.

With ``adaptive_clipping`` (Andrew et al., NeurIPS 2021, "Differentially Private Learning with
Adaptive Clipping") the norm follows a quantile of the update norms: each client reports whether
its update was within ``C``, the server noises the count and moves
``C <- C exp(-clipping_lr (unclipped share - target_quantile))``. The count's noise takes part
of the privacy budget: the update noise is set so that both together make ``z``,
``z_update = (z^-2 - (2 sigma_count)^-2)^-1/2``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np

from fedbus.errors import InvalidArgumentError
from fedbus.fl.privacy.accounting import PrivacyAccountant
from fedbus.fl.privacy.clipping import clip_update
from fedbus.fl.privacy.names import CLIPPING_NORM, NOISE_STD, UNCLIPPED
from fedbus.fl.protocol import read_arrays, read_metrics, read_num_examples
from fedbus.fl.strategy.base import (
    Aggregator,
    Strategy,
    WeightedMetrics,
    apply_mean_update,
    check_parameter,
)
from fedbus.fl.updates import check_layout
from fedbus.message import ArrayRecord, ConfigRecord, RecordDict

__all__ = ["MODES", "DifferentialPrivacy"]

MODES: Final = ("central", "client_clip", "local")


class DifferentialPrivacy(Strategy):
    """Clip, noise and account around ``inner`` (FedAvg, FedAvgM, FedOpt, FedProx).

    Parameters
    ----------
    inner
        The strategy that applies the noised mean update; it must aggregate by weighted sum.
    mode
        ``central``, ``client_clip`` or ``local`` (see the module docstring).
    clipping_norm
        ``C``, the largest L2 norm of a client's update (the initial one with adaptive clipping).
    noise_multiplier
        ``z``: the noise's standard deviation is ``z C``.
    num_clients, clients_per_round
        The federation's sampling, for the accountant and the fixed denominator.
    target_delta
        The delta epsilon is reported at.
    max_epsilon
        Stop the run cleanly before a round that would take epsilon past this (None: never).
    adaptive_clipping, target_quantile, clipping_lr, clipped_count_stddev
        Adaptive clipping (central and client_clip): the quantile of update norms ``C`` tracks,
        the learning rate of its geometric update, and the noise of the unclipped count
        (default ``clients_per_round / 20``, the paper's choice).
    rng
        Where the server's noise comes from. Default: fresh entropy from the operating system; a
        seeded generator makes a simulation repeat exactly, and must never be used where the
        seed is known to whoever should not learn the updates.
    """

    # the accountant counts rounds of sampled clients answering one model version
    synchronous_only = True
    aggregates_by_sum = True

    def __init__(
        self,
        inner: Strategy,
        *,
        mode: str,
        clipping_norm: float,
        noise_multiplier: float,
        num_clients: int,
        clients_per_round: int,
        target_delta: float = 1e-5,
        max_epsilon: float | None = None,
        adaptive_clipping: bool = False,
        target_quantile: float = 0.5,
        clipping_lr: float = 0.2,
        clipped_count_stddev: float | None = None,
        rng: np.random.Generator | None = None,
    ) -> None:
        if mode not in MODES:
            raise InvalidArgumentError(
                f"DifferentialPrivacy: mode must be one of {', '.join(MODES)}, got {mode!r}"
            )
        if not inner.aggregates_by_sum:
            raise InvalidArgumentError(
                f"DifferentialPrivacy: strategy {inner.name!r} needs every client's update, "
                "which noise added to the sum hides; use fedavg, fedavgm, fedadagrad, fedadam, "
                "fedyogi or fedprox"
            )
        if adaptive_clipping and mode == "local":
            raise InvalidArgumentError(
                "DifferentialPrivacy: adaptive clipping needs the server to count clipped "
                "updates, which local noise hides; use central or client_clip"
            )
        self.inner, self.mode = inner, mode
        self.name = inner.name
        # the client modes clip (and noise) on the clients, in their "privacy" mod
        private = ("privacy",) if mode != "central" else ()
        self.client_mods = (*inner.client_mods, *private)
        self.train_message_type = inner.train_message_type
        self.evaluate_message_type = inner.evaluate_message_type
        self.clipping_norm = check_parameter(self, "clipping_norm", clipping_norm, "> 0", _positive)
        self.noise_multiplier = check_parameter(
            self, "noise_multiplier", noise_multiplier, ">= 0", lambda x: x >= 0
        )
        self.clients_per_round = clients_per_round
        self.max_epsilon = (
            None
            if max_epsilon is None
            else check_parameter(self, "max_epsilon", max_epsilon, "> 0", _positive)
        )
        self.adaptive_clipping = adaptive_clipping
        self.target_quantile = check_parameter(
            self, "target_quantile", target_quantile, "in [0, 1]", lambda x: 0 <= x <= 1
        )
        self.clipping_lr = check_parameter(
            self, "clipping_lr", clipping_lr, ">= 0", lambda x: x >= 0
        )
        count_std = clients_per_round / 20 if clipped_count_stddev is None else clipped_count_stddev
        self.clipped_count_stddev = check_parameter(
            self, "clipped_count_stddev", count_std, "> 0", _positive
        )
        self.update_noise_multiplier = self._update_noise_multiplier()
        self.accountant = PrivacyAccountant(
            noise_multiplier,
            num_clients=num_clients,
            clients_per_round=clients_per_round,
            delta=target_delta,
            local=mode == "local",
        )
        self.rng = np.random.default_rng() if rng is None else rng
        # A seeded generator (a simulation) is part of a checkpoint; noise drawn from the
        # operating system is not, since whoever read its state could take the noise away.
        self._seeded = rng is not None
        self._participation: dict[int, int] = {}  # local mode: rounds each client took part in
        self._norm_used: dict[int, float] = {}  # server round -> the clipping norm it used

    def _update_noise_multiplier(self) -> float:
        """The part of ``z`` left for the update once the unclipped count took its share."""
        z = self.noise_multiplier
        if not self.adaptive_clipping or z == 0:
            return z
        count_share = (2 * self.clipped_count_stddev) ** -2
        if z**-2 <= count_share:
            raise InvalidArgumentError(
                f"DifferentialPrivacy: clipped_count_stddev={self.clipped_count_stddev} is too "
                f"small for adaptive clipping at noise_multiplier={z}: the count alone would "
                f"spend the whole budget; raise clipped_count_stddev above {z / 2:.4g} (or "
                "lower noise_multiplier)"
            )
        return float((z**-2 - count_share) ** -0.5)

    # -- what clients are sent ----------------------------------------------------------------
    def client_settings(self) -> dict[str, Any]:
        """The inner strategy's settings, the clipping norm (client_clip, local) and the noise
        (local)."""
        settings = dict(self.inner.client_settings())
        if self.mode != "central":
            settings[CLIPPING_NORM] = self.clipping_norm
        if self.mode == "local":
            settings[NOISE_STD] = self.noise_multiplier * self.clipping_norm
        return settings

    def configure_train(
        self,
        server_round: int,
        arrays: ArrayRecord,
        config: ConfigRecord,
        node_ids: Sequence[int],
    ) -> RecordDict | Mapping[int, RecordDict]:
        """The inner strategy's requests, with this round's clipping norm and noise."""
        self._norm_used[server_round] = self.clipping_norm
        for node_id in node_ids:
            self._participation[node_id] = self._participation.get(node_id, 0) + 1
        settings = ConfigRecord({**config, **self.client_settings()})
        return self.inner.configure_train(server_round, arrays, settings, node_ids)

    def configure_evaluate(
        self,
        server_round: int,
        arrays: ArrayRecord,
        config: ConfigRecord,
        node_ids: Sequence[int],
    ) -> RecordDict | Mapping[int, RecordDict]:
        """The inner strategy's evaluation requests."""
        return self.inner.configure_evaluate(server_round, arrays, config, node_ids)

    # -- aggregation ------------------------------------------------------------------------------
    def start_aggregation(self, server_round: int, arrays: ArrayRecord) -> Aggregator:
        """Clip (central), check (client_clip), sum, then noise once the round closes."""
        return _PrivateSum(self, server_round, arrays)

    def after_round(self, unclipped: int) -> None:
        """Adaptive clipping: move the norm toward the target quantile of the update norms."""
        if not self.adaptive_clipping:
            return
        noisy = unclipped + self.rng.normal(0.0, self.clipped_count_stddev)
        share = noisy / self.clients_per_round
        self.clipping_norm *= math.exp(-self.clipping_lr * (share - self.target_quantile))

    def epsilon(self, rounds: int) -> float:
        """Epsilon after ``rounds`` rounds (``local``: the most frequent client's rounds)."""
        if self.mode == "local":
            rounds = max(self._participation.values(), default=0)
        return self.accountant.epsilon(rounds)

    def report(self, server_round: int) -> dict[str, float]:
        """Epsilon spent so far, and the clipping norm and noise this round used."""
        norm = self._norm_used.get(server_round, self.clipping_norm)
        return {
            "epsilon": self.epsilon(server_round),
            "clipping_norm": norm,
            "noise_std": self.update_noise_multiplier * norm,
        }

    def stop_reason(self, server_round: int) -> str | None:
        """A reason to end the run before ``server_round`` if it would pass ``max_epsilon``."""
        if self.max_epsilon is None:
            return None
        rounds = server_round
        if self.mode == "local":  # worst case: the most frequent client takes part again
            rounds = max(self._participation.values(), default=0) + 1
        epsilon = self.accountant.epsilon(rounds)
        if epsilon <= self.max_epsilon:
            return None
        return (
            f"round {server_round} would spend epsilon {epsilon:.3f} > max_epsilon "
            f"{self.max_epsilon} (delta {self.accountant.delta})"
        )

    def aggregate_sum(
        self,
        server_round: int,
        arrays: ArrayRecord,
        update_sum: Mapping[str, np.ndarray[Any, Any]],
        count: int,
    ) -> ArrayRecord:
        """Noise a sum of clipped updates (client_clip, local) and apply its mean: what secure
        aggregation gives the server. Central mode needs each update and refuses."""
        if self.mode == "central":
            raise InvalidArgumentError(
                "DifferentialPrivacy: central mode clips each update at the server, which "
                "secure aggregation hides; use client_clip"
            )
        norm = self._norm_used.get(server_round, self.clipping_norm)
        return self._noised_mean(server_round, arrays, update_sum, count, norm)

    def _noised_mean(
        self,
        server_round: int,
        arrays: ArrayRecord,
        update_sum: Mapping[str, np.ndarray[Any, Any]],
        count: int,
        norm: float,
    ) -> ArrayRecord:
        std = 0.0 if self.mode == "local" else self.update_noise_multiplier * norm
        denominator = max(self.clients_per_round, count)
        mean = {
            key: (np.asarray(total) + self.rng.normal(0.0, std, size=np.shape(total))) / denominator
            for key, total in update_sum.items()
        }
        return apply_mean_update(self.inner, server_round, arrays, mean)

    # -- checkpoints --------------------------------------------------------------------------
    def state(self) -> dict[str, np.ndarray[Any, Any]]:
        """The inner strategy's state (prefixed ``inner:``), the clipping norm, the rounds each
        client took part in (local mode) and, for a seeded noise generator, its state."""
        state = {f"inner:{key}": value for key, value in self.inner.state().items()}
        state["dp:clipping_norm"] = np.array(self.clipping_norm)
        if self._participation:
            nodes = sorted(self._participation)
            counts = [self._participation[node] for node in nodes]
            state["dp:participation"] = np.array([nodes, counts], dtype=np.int64)
        if self._seeded:
            text = json.dumps(self.rng.bit_generator.state).encode("utf-8")
            state["dp:rng"] = np.frombuffer(text, dtype=np.uint8).copy()
        return state

    def load_state(self, state: Mapping[str, np.ndarray[Any, Any]]) -> None:
        """Restore what ``state()`` returned."""
        inner = {k.removeprefix("inner:"): v for k, v in state.items() if k.startswith("inner:")}
        self.inner.load_state(inner)
        if "dp:clipping_norm" in state:
            self.clipping_norm = float(state["dp:clipping_norm"])
        if "dp:participation" in state:
            nodes, counts = np.asarray(state["dp:participation"]).tolist()
            self._participation = dict(zip(nodes, counts, strict=True))
        if "dp:rng" in state and self._seeded:
            try:
                text = np.asarray(state["dp:rng"], dtype=np.uint8).tobytes().decode("utf-8")
                self.rng.bit_generator.state = json.loads(text)
            except (UnicodeDecodeError, ValueError, TypeError, KeyError) as exc:
                raise InvalidArgumentError(
                    f"DifferentialPrivacy: unusable noise generator state: {exc}"
                ) from exc


class _PrivateSum:
    """One round's clipped sum; ``result()`` noises it and hands the mean to the inner rule."""

    def __init__(
        self,
        strategy: DifferentialPrivacy,
        server_round: int,
        current: ArrayRecord,
    ) -> None:
        self._strategy, self._round = strategy, server_round
        self._norm = strategy._norm_used.get(server_round, strategy.clipping_norm)
        self._current = current.to_numpy_dict()
        self._sum = {key: np.zeros(value.shape) for key, value in self._current.items()}
        self._metrics = WeightedMetrics()
        self._count = self._unclipped = 0
        self._result: tuple[ArrayRecord, dict[str, float]] | None = None

    def add(self, node_id: int, content: RecordDict) -> None:
        arrays = read_arrays(content).to_numpy_dict()
        check_layout(node_id, arrays, self._current)
        metrics = read_metrics(content)
        mode = self._strategy.mode
        if mode == "central":
            arrays, unclipped = clip_update(arrays, self._current, self._norm)
        else:
            # the client clipped: check it did (a little slack for float32 rounding)
            _, within = clip_update(arrays, self._current, self._norm * (1 + 1e-5))
            if mode == "client_clip" and not within:
                raise InvalidArgumentError(
                    f"node {node_id} sent an update above clipping_norm={self._norm:.6g}"
                )
            if UNCLIPPED not in metrics:
                raise InvalidArgumentError(
                    f"node {node_id} sent an update without the {UNCLIPPED!r} metric: its client "
                    f"did not clip it; install the privacy mod on every client "
                    f"(client.use(fedbus.fl.mods.ClientPrivacy()))"
                )
            unclipped = bool(metrics[UNCLIPPED])
        self._metrics.add(metrics, read_num_examples(content))
        for key, value in arrays.items():
            self._sum[key] += value.astype(np.float64) - self._current[key]
        self._count += 1
        self._unclipped += int(unclipped)

    def result(self) -> tuple[ArrayRecord, dict[str, float]]:
        if self._result is not None:
            return self._result
        strategy = self._strategy
        if self._count == 0:
            self._result = ArrayRecord(self._current), self._metrics.result()
            return self._result
        arrays = strategy._noised_mean(
            self._round, ArrayRecord(self._current), self._sum, self._count, self._norm
        )
        strategy.after_round(self._unclipped)
        self._result = arrays, self._metrics.result()
        return self._result


def _positive(value: float) -> bool:
    return value > 0
