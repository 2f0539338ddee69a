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

    ``partition``, ``alpha``, ``shards_per_client``, ``central_test_fraction``,
    ``client_test_fraction``, and ``seed`` from ``federation.seed``.
    """
    return {
        "partition": settings["data.partition"],
        "alpha": settings["data.alpha"],
        "shards_per_client": settings["data.shards_per_client"],
        "central_test_fraction": settings["data.central_test_fraction"],
        "client_test_fraction": settings["data.client_test_fraction"],
        "seed": settings["federation.seed"],
    }
