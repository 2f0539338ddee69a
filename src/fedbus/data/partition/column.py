"""The natural partition: the data say which client each sample comes from.

Federated benchmarks such as LEAF record the writer, speaker or user of every sample; with a
client column, one fedbus client stands for one such writer.

Examples
--------
>>> import numpy as np
>>> parts, ids = natural(np.array([7, 3, 7, 9, 3]), num_clients=3, rng=0, return_ids=True)
>>> [part.tolist() for part in parts], ids.tolist()
([[1, 4], [0, 2], [3]], [3, 7, 9])
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, overload

import numpy as np
from numpy.typing import ArrayLike

from fedbus.data.partition._checks import check_int, check_labels
from fedbus.data.partition.base import IndexArray, NamedPartitioner, Samples
from fedbus.errors import InvalidArgumentError

__all__ = ["NAMED", "natural"]


@overload
def natural(
    client_ids: ArrayLike,
    num_clients: int,
    rng: np.random.Generator | int,
    *,
    return_ids: Literal[False] = False,
) -> list[IndexArray]: ...


@overload
def natural(
    client_ids: ArrayLike,
    num_clients: int,
    rng: np.random.Generator | int,
    *,
    return_ids: Literal[True],
) -> tuple[list[IndexArray], IndexArray]: ...


def natural(
    client_ids: ArrayLike,
    num_clients: int,
    rng: np.random.Generator | int,
    *,
    return_ids: bool = False,
) -> list[IndexArray] | tuple[list[IndexArray], IndexArray]:
    """One client per distinct id of ``client_ids``, holding exactly that id's samples.

    With as many distinct ids as ``num_clients``, client ``k`` gets the ``k``-th smallest id
    and the seed is not used. With more, ``num_clients`` ids are chosen at random with the
    seed (then sorted, and dealt in that order), and the samples of the other ids belong to
    no client: unlike the other partitioners, the parts then do not cover every sample.

    Parameters
    ----------
    client_ids
        Int id of the client of every sample (``>= 0``).
    num_clients
        Number of parts, at most the number of distinct ids.
    rng
        Generator or int seed.
    return_ids
        Also return which id each client got.

    Returns
    -------
    list of numpy.ndarray, or (list of numpy.ndarray, numpy.ndarray)
        One sorted ``int64`` index array per client; with ``return_ids``, also the ``int64``
        array of the ids, ``ids[k]`` being client ``k``'s.

    Raises
    ------
    InvalidArgumentError
        For a bad argument, or fewer distinct ids than ``num_clients`` (the message gives both).
    """
    ids = check_labels(client_ids, "client_ids", "int client ids")
    check_int("num_clients", num_clients, 1)
    distinct = np.unique(ids)
    if len(distinct) < num_clients:
        raise InvalidArgumentError(
            f"natural: {num_clients} clients asked for, but the client column names only "
            f"{len(distinct)} distinct clients; use num_clients <= {len(distinct)}"
        )
    chosen = distinct
    if len(distinct) > num_clients:
        pick = np.random.default_rng(rng).choice(len(distinct), num_clients, replace=False)
        chosen = distinct[np.sort(pick)]
    # A stable sort keeps each id's sample indices in increasing order.
    order = np.argsort(ids, kind="stable")
    starts = np.searchsorted(ids[order], chosen, side="left")
    ends = np.searchsorted(ids[order], chosen, side="right")
    parts = [order[start:end].astype(np.int64) for start, end in zip(starts, ends, strict=True)]
    return (parts, chosen.astype(np.int64)) if return_ids else parts


def _split(
    samples: Samples, num_clients: int, options: Mapping[str, object], rng: np.random.Generator
) -> list[IndexArray]:
    if samples.client_ids is None:
        raise InvalidArgumentError(
            "partition natural needs a client column: set data.client_column"
        )
    return natural(samples.client_ids, num_clients, rng)


NAMED: Mapping[str, NamedPartitioner] = {"natural": NamedPartitioner(_split)}
