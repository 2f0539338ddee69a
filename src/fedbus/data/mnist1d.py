"""MNIST-1D (Greydanus, 2020): ten digit-like templates as 1-D signals, generated offline.

``data.dataset = "mnist1d"`` gives the published dataset, which the ``mnist1d`` package
generates from its default arguments (``get_dataset_args()``, seed 42): 5,000 signals of 40
features and 10 classes, the first 4,000 for training and the last 1,000 for testing. Nothing is
downloaded or written to disk. The 1,000 test signals are the central test set, whole, so that
centralised results compare with the paper's table (logistic regression 32%, MLP 68%, CNN 94%);
``data.partition`` divides the 4,000 training signals among the clients, and
``data.central_test_fraction`` does not apply.

Generation takes about a second, so its arrays are kept for the life of the process (read-only,
shared by every call). The package draws from NumPy's and Python's global random generators after
seeding them; both states are saved before and restored after, so generating MNIST-1D changes no
other random stream of the process.

Examples
--------
>>> train, test = load_mnist1d()
>>> train.x.shape, test.x.shape, train.num_classes
((4000, 40), (1000, 40), 10)
"""

from __future__ import annotations

import functools
import random
import threading

import numpy as np
from numpy.typing import NDArray

from fedbus.data.base import FederatedDataset
from fedbus.data.datasets import ArrayDataset
from fedbus.data.federated import PartitionedDataset
from fedbus.data.registry import partition_options, register_dataset
from fedbus.errors import InvalidArgumentError, MissingDependencyError
from fedbus.plugins import Settings

__all__ = [
    "MNIST1D_CLASSES",
    "MNIST1D_FEATURES",
    "MNIST1D_TEST",
    "MNIST1D_TRAIN",
    "generate_mnist1d",
    "load_mnist1d",
]

#: Training signals of the published dataset.
MNIST1D_TRAIN = 4000
#: Test signals of the published dataset.
MNIST1D_TEST = 1000
#: Length of each signal.
MNIST1D_FEATURES = 40
#: Digits 0 to 9.
MNIST1D_CLASSES = 10

# The package seeds and draws from the process-wide generators: one generation at a time.
_GENERATION_LOCK = threading.Lock()

_Arrays = tuple[NDArray[np.float32], NDArray[np.int64], NDArray[np.float32], NDArray[np.int64]]


def load_mnist1d() -> tuple[ArrayDataset, ArrayDataset]:
    """The published MNIST-1D as ``(train, test)``: 4,000 and 1,000 signals of 40 features.

    Generated on the first call with the ``mnist1d`` package's default arguments, then served
    from memory; the arrays are read-only and shared between calls.

    Raises
    ------
    MissingDependencyError
        The ``mnist1d`` package is not installed.
    InvalidArgumentError
        The installed package generates something other than the published shapes.

    Examples
    --------
    >>> import numpy as np
    >>> train, test = load_mnist1d()
    >>> np.bincount(test.y).tolist()
    [102, 104, 89, 106, 106, 98, 99, 96, 98, 102]
    """
    x_train, y_train, x_test, y_test = _published_arrays()
    return (
        ArrayDataset(x_train, y_train, MNIST1D_CLASSES),
        ArrayDataset(x_test, y_test, MNIST1D_CLASSES),
    )


@functools.cache
def _published_arrays() -> _Arrays:
    """Generate once per process; read-only, so no caller can change what the next one gets."""
    arrays = generate_mnist1d()
    for array in arrays:
        array.flags.writeable = False
    return arrays


def generate_mnist1d() -> _Arrays:
    """Generate the published MNIST-1D afresh: ``(x_train, y_train, x_test, y_test)``.

    NumPy's and Python's global random states are restored afterwards. ``load_mnist1d`` keeps
    the result; call this only to check that generation is deterministic.
    """
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as exc:  # pragma: no cover - mnist1d is a dependency of fedbus
        raise MissingDependencyError(
            "data.dataset = 'mnist1d' needs the mnist1d package: pip install mnist1d"
        ) from exc
    with _GENERATION_LOCK:
        numpy_state, python_state = np.random.get_state(), random.getstate()
        try:
            # make_dataset, never get_dataset: the latter downloads or writes a pickle file.
            generated = make_dataset(get_dataset_args())
        finally:
            np.random.set_state(numpy_state)
            random.setstate(python_state)
    arrays = (
        np.asarray(generated["x"], dtype=np.float32),
        np.asarray(generated["y"], dtype=np.int64),
        np.asarray(generated["x_test"], dtype=np.float32),
        np.asarray(generated["y_test"], dtype=np.int64),
    )
    expected = [
        (MNIST1D_TRAIN, MNIST1D_FEATURES),
        (MNIST1D_TRAIN,),
        (MNIST1D_TEST, MNIST1D_FEATURES),
        (MNIST1D_TEST,),
    ]
    if [array.shape for array in arrays] != expected:
        raise InvalidArgumentError(
            f"mnist1d: expected arrays of shapes {expected} (the published dataset), the "
            f"installed mnist1d package made {[array.shape for array in arrays]}; install "
            f"a release whose default arguments are the published ones (pip install mnist1d)"
        )
    return arrays


def _build(settings: Settings) -> FederatedDataset:
    """``data.dataset = "mnist1d"``: the training signals split by ``data.partition``."""
    train, test = load_mnist1d()
    options = partition_options(settings)
    options.pop("central_test_fraction")  # the generated test split is the central test set
    return PartitionedDataset.from_splits(
        train, test, settings["federation.num_clients"], **options
    )


register_dataset("mnist1d", _build)
