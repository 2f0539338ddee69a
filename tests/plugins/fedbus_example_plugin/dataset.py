"""``blobs``: one Gaussian blob per class, split among clients as ``[data]`` says."""

from __future__ import annotations

import numpy as np

from fedbus.data import ArrayDataset, PartitionedDataset
from fedbus.data.registry import partition_options, register_dataset
from fedbus.plugins import Settings

NUM_CLASSES = 4
NUM_FEATURES = 8


def blobs(settings: Settings) -> PartitionedDataset:
    """2,000 samples around four well separated centres, partitioned among the clients."""
    rng = np.random.default_rng(settings["federation.seed"])
    centres = rng.normal(0.0, 3.0, size=(NUM_CLASSES, NUM_FEATURES))
    labels = rng.integers(0, NUM_CLASSES, size=2000)
    features = centres[labels] + rng.normal(0.0, 1.0, size=(len(labels), NUM_FEATURES))
    samples = ArrayDataset(features.astype(np.float32), labels, NUM_CLASSES)
    num_clients = settings["federation.num_clients"]
    return PartitionedDataset.from_arrays(samples, num_clients, **partition_options(settings))


register_dataset("blobs", blobs)
