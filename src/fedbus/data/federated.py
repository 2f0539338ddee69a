"""Federated datasets: the interface the rest of fedbus uses, and the dataset registry.

- ``PartitionedDataset`` splits one in-memory ``ArrayDataset`` among clients with any partition
  of ``fedbus.data.partition`` (label skew, size skew, or a client column) after setting aside a
  stratified central test set.
- ``SyntheticDataset`` generates the FedProx Synthetic(alpha, beta) clients on demand.
- ``build_dataset`` builds either by name, with the options a configuration file gives.

Examples
--------
>>> data = build_dataset("digits", num_clients=10, partition="dirichlet", alpha=0.5, seed=1)
>>> local = data.client(3)
>>> x_test, y_test = data.test_set()
>>> data.num_features, data.num_classes, len(y_test)
(64, 10, 359)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedbus.data.base import (
    ClientData,
    FederatedDataset,
    check_fraction,
    check_seed,
    split_client,
)
from fedbus.data.datasets import ArrayDataset, load_csv, load_digits, load_npz
from fedbus.data.partition import PARTITIONERS, Samples
from fedbus.data.registry import partition_options, register_dataset
from fedbus.data.synthetic import SyntheticDataset
from fedbus.errors import ConfigError, InvalidArgumentError, InvalidTypeError
from fedbus.plugins import Settings

__all__ = [
    "DATASET_NAMES",
    "PARTITION_NAMES",
    "ClientData",
    "FederatedDataset",
    "PartitionedDataset",
    "SyntheticDataset",
    "build_dataset",
]

#: Partition schemes accepted by ``PartitionedDataset.from_arrays`` (and ``data.partition``).
PARTITION_NAMES: tuple[str, ...] = tuple(PARTITIONERS)


class PartitionedDataset(FederatedDataset):
    """An ``ArrayDataset`` divided among clients by index arrays.

    Only indices are stored; ``client(i)`` slices the arrays when asked, and splits client
    ``i``'s samples into train and test with ``np.random.default_rng([seed, 1, i])``, so the
    split is the same on every call. Build one with ``from_arrays``.

    Parameters
    ----------
    dataset
        The samples.
    client_indices
        One index array per client, into ``dataset``.
    test_indices
        Indices of the central test set.
    client_test_fraction
        Share of each client's samples in its local test split (every client keeps at least one
        training sample).
    seed
        Seed of the per-client train/test splits.
    """

    def __init__(
        self,
        dataset: ArrayDataset,
        client_indices: Sequence[NDArray[np.int64]],
        test_indices: NDArray[np.int64],
        *,
        client_test_fraction: float = 0.2,
        seed: int = 0,
    ) -> None:
        super().__init__(len(client_indices), dataset.num_features, dataset.num_classes)
        self.dataset = dataset
        self._client_indices = [np.asarray(part, dtype=np.int64) for part in client_indices]
        self._test_indices = np.asarray(test_indices, dtype=np.int64)
        self.client_test_fraction = check_fraction("client_test_fraction", client_test_fraction)
        self.seed = check_seed(seed)

    @classmethod
    def from_arrays(
        cls,
        dataset: ArrayDataset,
        num_clients: int,
        partition: str = "iid",
        *,
        alpha: float = 0.5,
        shards_per_client: int = 2,
        min_size: int = 2,
        classes_per_client: int = 2,
        size_exponent: float = 1.5,
        size_alpha: float = 1.0,
        size_ratio: float = 10.0,
        central_test_fraction: float = 0.2,
        client_test_fraction: float = 0.2,
        seed: int = 0,
    ) -> PartitionedDataset:
        """Set aside a central test set, then partition the rest among ``num_clients``.

        Parameters
        ----------
        dataset
            The samples to divide.
        num_clients
            Number of clients.
        partition
            One of ``PARTITION_NAMES``: ``"iid"``, ``"dirichlet"`` (uses ``alpha`` and
            ``min_size``), ``"shards"`` (``shards_per_client``), ``"pathological"``
            (``classes_per_client``), ``"natural"`` (one client per id of
            ``dataset.client_ids``), ``"power_law"`` (``size_exponent``), ``"dirichlet_sizes"``
            (``size_alpha``), ``"linear"`` or ``"exponential"`` (``size_ratio``); see
            ``fedbus.data.partition``. The partition divides what the central test set leaves.
        alpha, shards_per_client, min_size, classes_per_client
            Options of the label partitions.
        size_exponent, size_alpha, size_ratio
            Options of the size partitions: the power law's exponent, the Dirichlet
            concentration of the shares, and the largest client's size over the smallest.
        central_test_fraction
            Share of every class held out for the central test set (stratified), in ``[0, 1)``.
        client_test_fraction
            Share of each client's part kept for its local test split, in ``[0, 1)``.
        seed
            Seed of the test split, the partition and the clients' splits (a non-negative int).

        Examples
        --------
        >>> from fedbus.data import load_digits
        >>> data = PartitionedDataset.from_arrays(load_digits(), num_clients=5, seed=0)
        >>> sum(data.client_size(i) for i in range(5)) + len(data.test_set()[1])
        1797
        """
        if partition not in PARTITION_NAMES:
            raise InvalidArgumentError(
                f"partition: expected one of {', '.join(PARTITION_NAMES)}, got {partition!r}"
            )
        fraction = check_fraction("central_test_fraction", central_test_fraction)
        rng = np.random.default_rng([check_seed(seed), 0])
        rest, test = _stratified_split(dataset.y, fraction, rng)
        client_ids = None if dataset.client_ids is None else dataset.client_ids[rest]
        options = {
            "alpha": alpha,
            "shards_per_client": shards_per_client,
            "min_size": min_size,
            "classes_per_client": classes_per_client,
            "size_exponent": size_exponent,
            "size_alpha": size_alpha,
            "size_ratio": size_ratio,
        }
        split = PARTITIONERS[partition].split
        parts = split(Samples(dataset.y[rest], client_ids), num_clients, options, rng)
        return cls(
            dataset,
            [rest[part] for part in parts],
            test,
            client_test_fraction=client_test_fraction,
            seed=seed,
        )

    @classmethod
    def from_splits(
        cls, train: ArrayDataset, test: ArrayDataset, num_clients: int, **options: Any
    ) -> PartitionedDataset:
        """Partition all of ``train`` among clients and keep ``test`` whole as the central test set.

        For datasets published with a fixed test split (MNIST-1D's 1,000 generated test
        samples): results then compare with those of the publication. ``train`` is divided
        exactly as ``from_arrays(train, num_clients, central_test_fraction=0.0, **options)``
        divides it.

        Parameters
        ----------
        train, test
            The training samples, divided among clients, and the central test set; same
            ``num_features`` and ``num_classes``.
        num_clients
            Number of clients.
        **options
            The options of ``from_arrays`` (``partition``, ``alpha``, ``client_test_fraction``,
            ``seed``, ...) except ``central_test_fraction``: the test set is given.

        Examples
        --------
        >>> from fedbus.data import load_digits
        >>> digits = load_digits()
        >>> data = PartitionedDataset.from_splits(
        ...     digits.subset(range(1500)), digits.subset(range(1500, 1797)), num_clients=5
        ... )
        >>> sum(data.client_size(i) for i in range(5)), len(data.test_set()[1])
        (1500, 297)
        """
        if "central_test_fraction" in options:
            raise InvalidArgumentError(
                "central_test_fraction: from_splits keeps the given test set whole; drop the "
                "option, or use from_arrays to carve a test set out of one dataset"
            )
        if (test.num_features, test.num_classes) != (train.num_features, train.num_classes):
            raise InvalidArgumentError(
                f"test: expected {train.num_features} features and {train.num_classes} classes "
                f"like train, got {test.num_features} features and {test.num_classes} classes"
            )
        split = cls.from_arrays(train, num_clients, central_test_fraction=0.0, **options)
        # One array holds both, so client() and test_set() slice it as for from_arrays; with no
        # test share, from_arrays' indices into train are indices into the joined arrays too.
        joined = ArrayDataset(
            np.concatenate([train.x, test.x]), np.concatenate([train.y, test.y]), train.num_classes
        )
        return cls(
            joined,
            [split.client_indices(i) for i in range(num_clients)],
            np.arange(len(train), len(train) + len(test), dtype=np.int64),
            client_test_fraction=split.client_test_fraction,
            seed=split.seed,
        )

    def client_indices(self, client_index: int) -> NDArray[np.int64]:
        """Indices into ``dataset`` of client ``client_index``'s samples (train and test)."""
        return self._client_indices[self.check_client_index(client_index)]

    def client_size(self, client_index: int) -> int:
        """Number of samples (train and test together) of client ``client_index``."""
        return len(self.client_indices(client_index))

    def client(self, client_index: int) -> ClientData:
        """Client ``client_index``'s train and test split (fresh copies on every call)."""
        indices = self.client_indices(client_index)
        rng = np.random.default_rng([self.seed, 1, int(client_index)])
        train, test = split_client(len(indices), self.client_test_fraction, rng)
        x, y = self.dataset.x, self.dataset.y
        return ClientData(x[indices[train]], y[indices[train]], x[indices[test]], y[indices[test]])

    def test_set(self) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """The central test set set aside by ``from_arrays`` (empty if its fraction was 0)."""
        return self.dataset.x[self._test_indices], self.dataset.y[self._test_indices]


def _stratified_split(
    labels: NDArray[np.int64], fraction: float, rng: np.random.Generator
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """``(rest, test)`` sorted indices, with ``round(fraction * count)`` of every class in test."""
    in_test = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        in_test[members[: round(fraction * len(members))]] = True
    return np.flatnonzero(~in_test), np.flatnonzero(in_test)


#: Names accepted by ``build_dataset``.
DATASET_NAMES = ("csv", "digits", "npz", "synthetic")

_PARTITION_OPTIONS = frozenset(
    {
        "partition",
        "alpha",
        "shards_per_client",
        "min_size",
        "classes_per_client",
        "size_exponent",
        "size_alpha",
        "size_ratio",
        "central_test_fraction",
        "client_test_fraction",
        "seed",
    }
)
_OPTIONS = {
    "digits": _PARTITION_OPTIONS,
    "npz": _PARTITION_OPTIONS | {"path", "x_key", "y_key", "num_classes"},
    "csv": _PARTITION_OPTIONS
    | {"path", "label_column", "client_column", "num_classes", "delimiter"},
    "synthetic": frozenset(
        {
            "alpha",
            "beta",
            "num_features",
            "num_classes",
            "samples_per_client",
            "size_sigma",
            "max_samples_per_client",
            "seed",
            "client_test_fraction",
            "test_clients",
            "test_samples_per_client",
        }
    ),
}


def build_dataset(name: str, num_clients: int, **options: Any) -> FederatedDataset:
    """Build a federated dataset by name.

    Parameters
    ----------
    name
        ``"digits"`` (scikit-learn's digits), ``"npz"`` (option ``path``, and ``x_key``,
        ``y_key``, ``num_classes``), ``"csv"`` (option ``path``, and ``label_column``,
        ``client_column``, ``num_classes``, ``delimiter``) or ``"synthetic"`` (the options of
        ``SyntheticDataset``; ``alpha`` and ``beta`` default to 1, Synthetic(1, 1)).
    num_clients
        Number of clients.
    **options
        For ``digits``, ``npz`` and ``csv``, also the options of
        ``PartitionedDataset.from_arrays``: ``partition``, ``alpha``, ``shards_per_client``,
        ``min_size``, ``classes_per_client``, ``size_exponent``, ``size_alpha``,
        ``size_ratio``, ``central_test_fraction``, ``client_test_fraction`` and ``seed``.

    Raises
    ------
    ConfigError
        For an unknown name or option, a missing ``path``, or any value the dataset refuses
        (the message says which).

    Examples
    --------
    >>> data = build_dataset("synthetic", num_clients=1000, alpha=0.0, beta=0.0, seed=3)
    >>> data.num_clients, data.num_features
    (1000, 60)
    """
    if name not in _OPTIONS:
        raise ConfigError(f"unknown dataset {name!r}: expected one of {', '.join(DATASET_NAMES)}")
    unknown = sorted(set(options) - _OPTIONS[name])
    if unknown:
        raise ConfigError(
            f"dataset {name!r}: unknown options {unknown}; "
            f"allowed options: {', '.join(sorted(_OPTIONS[name]))}"
        )
    try:
        if name == "synthetic":
            alpha = options.pop("alpha", 1.0)
            beta = options.pop("beta", 1.0)
            return SyntheticDataset(num_clients, alpha, beta, **options)
        return PartitionedDataset.from_arrays(_load(name, options), num_clients, **options)
    except ConfigError:
        raise
    except (InvalidArgumentError, InvalidTypeError) as exc:
        raise ConfigError(f"dataset {name!r}: {exc}") from exc


def _load(name: str, options: dict[str, Any]) -> ArrayDataset:
    """Load the samples of a partitioned dataset, removing its loader options from ``options``."""
    if name == "digits":
        return load_digits()
    if "path" not in options:
        raise ConfigError(f"dataset {name!r}: option 'path' is required (the file to load)")
    loader_keys = _OPTIONS[name] - _PARTITION_OPTIONS
    loader_options = {key: options.pop(key) for key in list(options) if key in loader_keys}
    if name == "npz":
        return load_npz(**loader_options)
    return load_csv(**loader_options)


def _digits(settings: Settings) -> FederatedDataset:
    return build_dataset(
        "digits", settings["federation.num_clients"], **partition_options(settings)
    )


def _npz(settings: Settings) -> FederatedDataset:
    options = partition_options(settings)
    return build_dataset(
        "npz", settings["federation.num_clients"], path=settings["data.path"], **options
    )


def _csv(settings: Settings) -> FederatedDataset:
    options = partition_options(settings) | {
        "path": settings["data.path"],
        "label_column": settings["data.label_column"],
    }
    if settings["data.client_column"]:
        options["client_column"] = settings["data.client_column"]
    return build_dataset("csv", settings["federation.num_clients"], **options)


register_dataset("digits", _digits)
register_dataset("npz", _npz, reads_file=True)
register_dataset("csv", _csv, reads_file=True)
