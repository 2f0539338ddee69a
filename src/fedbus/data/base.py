"""What a federated dataset is: per-client splits plus a central test set.

The FL layer asks a ``FederatedDataset`` for one client's data when that client is first sampled,
so a dataset with 100,000 clients should cost nothing until clients are used.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from fedbus.errors import InvalidArgumentError

__all__ = ["ClientData", "FederatedDataset"]


@dataclass(slots=True)
class ClientData:
    """One client's local data: a training split and a test split.

    ``x_*`` are ``float32`` arrays ``(n, num_features)``; ``y_*`` are ``int64`` labels ``(n,)``.
    The test split may be empty for a client with very few samples.
    """

    x_train: NDArray[np.float32]
    y_train: NDArray[np.int64]
    x_test: NDArray[np.float32]
    y_test: NDArray[np.int64]

    @property
    def num_train(self) -> int:
        """Number of training examples."""
        return len(self.y_train)

    @property
    def num_test(self) -> int:
        """Number of test examples."""
        return len(self.y_test)


class FederatedDataset(ABC):
    """Data split among ``num_clients`` clients, plus a central held-out test set.

    Subclasses call ``super().__init__`` with the three sizes and implement ``client`` and
    ``test_set``. Clients are numbered ``0 .. num_clients - 1``.

    Parameters
    ----------
    num_clients
        Number of clients, at least 1.
    num_features
        Width of a feature row.
    num_classes
        Number of classes, at least 2.
    """

    def __init__(self, num_clients: int, num_features: int, num_classes: int) -> None:
        self.num_clients = _positive_int("num_clients", num_clients, 1)
        self.num_features = _positive_int("num_features", num_features, 1)
        self.num_classes = _positive_int("num_classes", num_classes, 2)

    @abstractmethod
    def client(self, client_index: int) -> ClientData:
        """The local data of client ``client_index`` (in ``0 .. num_clients - 1``)."""

    @abstractmethod
    def test_set(self) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """``(x, y)`` of the central test set, for evaluating the global model."""

    def check_client_index(self, client_index: int) -> int:
        """Return ``client_index`` as an int, or raise ``InvalidArgumentError`` if out of range."""
        if isinstance(client_index, bool) or not isinstance(client_index, int | np.integer):
            raise InvalidArgumentError(
                f"client_index: expected an int, got {type(client_index).__name__}"
            )
        if not 0 <= client_index < self.num_clients:
            raise InvalidArgumentError(
                f"client_index: expected 0..{self.num_clients - 1}, got {client_index}"
            )
        return int(client_index)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_clients={self.num_clients}, "
            f"num_features={self.num_features}, num_classes={self.num_classes})"
        )


def split_client(
    num_samples: int, test_fraction: float, rng: np.random.Generator
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Random ``(train, test)`` positions in ``0 .. num_samples - 1``, both sorted.

    The test split gets ``round(num_samples * test_fraction)`` samples, but never the last one:
    every client with data keeps at least one training example.
    """
    num_test = min(round(num_samples * test_fraction), max(num_samples - 1, 0))
    order = rng.permutation(num_samples)
    return np.sort(order[num_test:]), np.sort(order[:num_test])


def check_fraction(name: str, value: object) -> float:
    """``value`` as a float in ``[0, 1)``, or ``InvalidArgumentError`` naming ``name``."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float | np.integer | np.floating)
        or not 0 <= value < 1
    ):
        raise InvalidArgumentError(f"{name}: expected a number in [0, 1), got {value!r}")
    return float(value)


def check_seed(value: object) -> int:
    """``value`` as a non-negative int seed, or ``InvalidArgumentError``."""
    return _positive_int("seed", value, 0)


def _positive_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise InvalidArgumentError(f"{name}: expected an int >= {minimum}, got {value!r}")
    return int(value)
