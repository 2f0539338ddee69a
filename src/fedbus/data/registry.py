"""The datasets configuration files name, each registered by its own module.

A dataset registers a builder from the run's ``Settings`` (the ``[data]`` and
``[federation]`` keys it needs) to a ``FederatedDataset``; plugin packages add theirs through
the ``fedbus.datasets`` entry point group (``docs/plugins.md``).

Examples
--------
>>> from fedbus.data.registry import DATASETS
>>> "digits" in DATASETS
True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fedbus.data.base import FederatedDataset
from fedbus.data.partition import PARTITIONERS
from fedbus.plugins import Registry, Settings

__all__ = ["DATASETS", "DatasetSource", "partition_options", "register_dataset"]


@dataclass(frozen=True, slots=True)
class DatasetSource:
    """How a configured run builds one dataset.

    Attributes
    ----------
    build : callable
        ``build(settings) -> FederatedDataset``, split among ``federation.num_clients``
        clients.
    reads_file : bool
        Whether the dataset is read from ``data.path``, which configuration checks then
        require.
    """

    build: Callable[[Settings], FederatedDataset]
    reads_file: bool = False


#: Every dataset a configuration may name in ``data.dataset``.
DATASETS: Registry[DatasetSource] = Registry(
    "dataset", group="fedbus.datasets", builtins=("fedbus.data",)
)


def register_dataset(
    name: str, build: Callable[[Settings], FederatedDataset], *, reads_file: bool = False
) -> DatasetSource:
    """Make a dataset available to configuration files as ``data.dataset = name``.

    Parameters
    ----------
    name : str
        The name configuration files use.
    build : callable
        ``build(settings) -> FederatedDataset``; ``partition_options(settings)`` gives the
        ``[data]`` keys that ``PartitionedDataset.from_arrays`` takes.
    reads_file : bool
        The dataset is read from ``data.path``: a configuration must then set it.

    Raises
    ------
    PluginError
        ``name`` is already registered by another module.
    """
    source = DatasetSource(build, reads_file)
    return DATASETS.register(name, source, module=build.__module__)


def partition_options(settings: Settings) -> dict[str, Any]:
    """The options of ``PartitionedDataset.from_arrays`` that ``[data]`` configures.

    Always ``partition``, ``alpha``, ``shards_per_client``, ``central_test_fraction``,
    ``client_test_fraction``, and ``seed`` from ``federation.seed``; then the keys the chosen
    partition reads (``classes_per_client`` for ``pathological``; ``size_exponent``,
    ``size_alpha`` or ``size_ratio`` for the size partitions; see
    ``fedbus.data.partition.PARTITIONERS``). Only the chosen partition's keys are given, so a
    builder that offers a few partitions need not take the options of all the others.

    Examples
    --------
    >>> settings = {"data.partition": "pathological", "data.alpha": 0.5,
    ...             "data.shards_per_client": 2, "data.classes_per_client": 3,
    ...             "data.central_test_fraction": 0.2, "data.client_test_fraction": 0.2,
    ...             "federation.seed": 0}
    >>> sorted(partition_options(settings))  # doctest: +NORMALIZE_WHITESPACE
    ['alpha', 'central_test_fraction', 'classes_per_client', 'client_test_fraction',
     'partition', 'seed', 'shards_per_client']
    """
    partition = settings["data.partition"]
    options = {
        "partition": partition,
        "alpha": settings["data.alpha"],
        "shards_per_client": settings["data.shards_per_client"],
        "central_test_fraction": settings["data.central_test_fraction"],
        "client_test_fraction": settings["data.client_test_fraction"],
        "seed": settings["federation.seed"],
    }
    if partition in PARTITIONERS:  # an unknown name is refused by whoever partitions
        for key in PARTITIONERS[partition].options:
            options[key] = settings[f"data.{key}"]
    return options
