"""Datasets, partitioners and federated datasets, as NumPy arrays.

This layer is plain data handling: it knows nothing of messages or training. A
``FederatedDataset`` hands each client its ``ClientData`` on demand and keeps a central test set
for evaluating the global model; ``build_dataset`` builds one by name. ``load_text`` cuts a
UTF-8 file into blocks of token ids for causal language models (``fedbus.data.text``).

Examples
--------
>>> from fedbus.data import build_dataset
>>> data = build_dataset("synthetic", num_clients=100, alpha=1.0, beta=1.0)
>>> data.client(7).x_train.shape
(51, 60)
"""

from __future__ import annotations

from fedbus.data.base import ClientData, FederatedDataset
from fedbus.data.datasets import ArrayDataset, load_csv, load_digits, load_npz
from fedbus.data.federated import (
    DATASET_NAMES,
    PARTITION_NAMES,
    PartitionedDataset,
    build_dataset,
)
from fedbus.data.huggingface import load_huggingface
from fedbus.data.images import load_image_folder
from fedbus.data.leaf import LeafDataset
from fedbus.data.mnist1d import load_mnist1d
from fedbus.data.partition import dirichlet, iid, shards
from fedbus.data.synthetic import SyntheticDataset
from fedbus.data.text import load_text

__all__ = [
    "DATASET_NAMES",
    "PARTITION_NAMES",
    "ArrayDataset",
    "ClientData",
    "FederatedDataset",
    "LeafDataset",
    "PartitionedDataset",
    "SyntheticDataset",
    "build_dataset",
    "dirichlet",
    "iid",
    "load_csv",
    "load_digits",
    "load_huggingface",
    "load_image_folder",
    "load_mnist1d",
    "load_npz",
    "load_text",
    "shards",
]
