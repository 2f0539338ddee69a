"""``SyntheticDataset``: the FedProx paper's Synthetic(alpha, beta) benchmark, generated lazily.

Li et al., "Federated Optimization in Heterogeneous Networks" (MLSys 2020), define for client k::

    u_k ~ N(0, alpha)     W_k ~ N(u_k, 1)  (num_features x num_classes)    b_k ~ N(u_k, 1)
    B_k ~ N(0, beta)      v_k ~ N(B_k, 1)  (num_features)
    x ~ N(v_k, Sigma)     Sigma diagonal, Sigma_jj = j^-1.2 (j = 1 .. num_features)
    y = argmax(softmax(x @ W_k + b_k))

``alpha`` controls how much the clients' models differ, ``beta`` how much their inputs differ;
Synthetic(0, 0) is the mildest setting, Synthetic(1, 1) the most heterogeneous of the paper. As in
the paper's reference code, ``alpha`` and ``beta`` are used as standard deviations (for 0 and 1,
the values used in practice, standard deviation and variance agree).

Nothing is generated up front: client ``i``'s distribution, size and samples come from
``np.random.SeedSequence([seed, i])`` when ``client(i)`` is called, so a dataset of 100,000
clients is created instantly and each client's data is the same whenever it is asked for,
regardless of which other clients were generated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedbus.data.base import ClientData, FederatedDataset, check_fraction, split_client
from fedbus.data.registry import register_dataset
from fedbus.errors import InvalidArgumentError
from fedbus.plugins import Settings

__all__ = ["SyntheticDataset"]


@dataclass(frozen=True, slots=True)
class _ClientDistribution:
    weight: NDArray[np.float64]
    bias: NDArray[np.float64]
    mean: NDArray[np.float64]


class SyntheticDataset(FederatedDataset):
    """Synthetic(alpha, beta) federated data, each client generated on demand.

    Parameters
    ----------
    num_clients
        Number of clients.
    alpha, beta
        Heterogeneity of the clients' models and of their inputs (``>= 0``).
    num_features, num_classes
        Input width (60 in the paper) and number of classes (10).
    samples_per_client
        Samples per client (train and test together) when ``size_sigma`` is 0; the median size
        otherwise.
    size_sigma
        ``0`` gives every client ``samples_per_client`` samples. A positive value draws sizes
        from a lognormal distribution, ``round(samples_per_client * exp(size_sigma * z))`` with
        ``z ~ N(0, 1)``, at least 2, mimicking the power-law sizes of the paper.
    max_samples_per_client
        Upper bound on a client's size (``None``: no bound); useful with a large ``size_sigma``.
    seed
        Seed of every draw (a non-negative int).
    client_test_fraction
        Share of each client's samples kept for its local test split.
    test_clients, test_samples_per_client
        The central test set holds ``test_samples_per_client`` fresh samples from the
        distribution of each of clients ``0 .. test_clients - 1`` (fewer if there are fewer
        clients). They are drawn from a separate stream, so they appear in no client's data.

    Examples
    --------
    >>> data = SyntheticDataset(100_000, alpha=1.0, beta=1.0, seed=0)
    >>> local = data.client(99_999)
    >>> local.x_train.shape, local.x_test.shape
    ((51, 60), (13, 60))
    >>> bool((data.client(99_999).x_train == local.x_train).all())
    True
    """

    def __init__(
        self,
        num_clients: int,
        alpha: float,
        beta: float,
        *,
        num_features: int = 60,
        num_classes: int = 10,
        samples_per_client: int = 64,
        size_sigma: float = 0.0,
        max_samples_per_client: int | None = None,
        seed: int = 0,
        client_test_fraction: float = 0.2,
        test_clients: int = 10,
        test_samples_per_client: int = 100,
    ) -> None:
        super().__init__(num_clients, num_features, num_classes)
        self.alpha = _non_negative("alpha", alpha)
        self.beta = _non_negative("beta", beta)
        self.samples_per_client = _int_at_least("samples_per_client", samples_per_client, 1)
        self.size_sigma = _non_negative("size_sigma", size_sigma)
        self.max_samples_per_client = (
            None
            if max_samples_per_client is None
            else _int_at_least("max_samples_per_client", max_samples_per_client, 1)
        )
        self.seed = _int_at_least("seed", seed, 0)
        self.client_test_fraction = check_fraction("client_test_fraction", client_test_fraction)
        self.test_clients = min(_int_at_least("test_clients", test_clients, 1), num_clients)
        self.test_samples_per_client = _int_at_least(
            "test_samples_per_client", test_samples_per_client, 1
        )
        # Covariance diagonal j^-1.2, j = 1..d; its square root scales standard normal draws.
        self._input_scale = np.arange(1, num_features + 1, dtype=np.float64) ** -0.6
        self._test_set: tuple[NDArray[np.float32], NDArray[np.int64]] | None = None

    def client_size(self, client_index: int) -> int:
        """Number of samples (train and test together) of client ``client_index``."""
        index = self.check_client_index(client_index)
        if self.size_sigma == 0:
            return self.samples_per_client
        size_rng = np.random.default_rng(self._streams(index)[1])
        size = max(
            2, round(self.samples_per_client * math.exp(self.size_sigma * size_rng.normal()))
        )
        if self.max_samples_per_client is not None:
            size = min(size, self.max_samples_per_client)
        return size

    def client(self, client_index: int) -> ClientData:
        """Generate client ``client_index``'s data (the same arrays on every call)."""
        index = self.check_client_index(client_index)
        _, _, sample_seed = self._streams(index)
        rng = np.random.default_rng(sample_seed)
        x, y = self._sample(self._distribution(index), self.client_size(index), rng)
        train, test = split_client(len(y), self.client_test_fraction, rng)
        return ClientData(x[train], y[train], x[test], y[test])

    def test_set(self) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """Fresh samples from the distributions of clients ``0 .. test_clients - 1``.

        Computed on the first call and kept (``test_clients * test_samples_per_client`` rows).
        """
        if self._test_set is None:
            parts = []
            for index in range(self.test_clients):
                test_seed = np.random.SeedSequence([self.seed, index, 1])
                rng = np.random.default_rng(test_seed)
                distribution = self._distribution(index)
                parts.append(self._sample(distribution, self.test_samples_per_client, rng))
            self._test_set = (
                np.concatenate([x for x, _ in parts]),
                np.concatenate([y for _, y in parts]),
            )
        return self._test_set

    def _streams(self, index: int) -> list[np.random.SeedSequence]:
        # Independent streams for the distribution, the size and the samples: changing
        # size_sigma changes a client's size but not its distribution.
        return np.random.SeedSequence([self.seed, index, 0]).spawn(3)

    def _distribution(self, index: int) -> _ClientDistribution:
        rng = np.random.default_rng(self._streams(index)[0])
        shape = (self.num_features, self.num_classes)
        model_mean = rng.normal(0.0, self.alpha)
        input_mean = rng.normal(0.0, self.beta)
        return _ClientDistribution(
            weight=rng.normal(model_mean, 1.0, shape),
            bias=rng.normal(model_mean, 1.0, self.num_classes),
            mean=rng.normal(input_mean, 1.0, self.num_features),
        )

    def _sample(
        self, distribution: _ClientDistribution, size: int, rng: np.random.Generator
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        noise = rng.standard_normal((size, self.num_features))
        x = distribution.mean + noise * self._input_scale
        # argmax of softmax(z) is argmax of z: no need to normalise.
        labels: NDArray[np.int64] = (x @ distribution.weight + distribution.bias).argmax(axis=1)
        return x.astype(np.float32), labels.astype(np.int64)

    def __repr__(self) -> str:
        return (
            f"SyntheticDataset(num_clients={self.num_clients}, alpha={self.alpha}, "
            f"beta={self.beta}, num_features={self.num_features}, "
            f"num_classes={self.num_classes}, seed={self.seed})"
        )


def _non_negative(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise InvalidArgumentError(f"{name}: expected a number >= 0, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise InvalidArgumentError(f"{name}: expected a finite number >= 0, got {value}")
    return float(value)


def _int_at_least(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise InvalidArgumentError(f"{name}: expected an int >= {minimum}, got {value!r}")
    return int(value)


def _from_settings(settings: Settings) -> SyntheticDataset:
    """Synthetic(``data.synthetic_alpha``, ``data.synthetic_beta``) as a run configures it."""
    return SyntheticDataset(
        settings["federation.num_clients"],
        settings["data.synthetic_alpha"],
        settings["data.synthetic_beta"],
        num_features=settings["data.num_features"],
        samples_per_client=settings["data.samples_per_client"],
        size_sigma=settings["data.size_sigma"],
        client_test_fraction=settings["data.client_test_fraction"],
        seed=settings["federation.seed"],
    )


register_dataset("synthetic", _from_settings)
