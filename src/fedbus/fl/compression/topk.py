"""Top-k sparsification (``topk``): send only the largest values of each array of an update.

Of each array of ``n`` values, the ``k = ceil(topk_ratio * n)`` largest in magnitude travel (at
least one), as their positions (``uint32``, increasing) and their values (the array's own
dtype, so that what is sent is exact). The rest is not lost: with error feedback the client
keeps it (``residual = update + residual - sent``) and adds it to its next update, so every
coordinate is sent eventually. The compression mod keeps that residual in the client's state
store (``fedbus.fl.client.CLIENT_STATE``), where it outlives the client object.

Top-k compresses updates only: the model the server sends travels whole.

>>> import numpy as np
>>> codec = TopK(0.5)
>>> encoded = codec.encode(np.array([0.1, -3.0, 0.2, 2.0]), np.random.default_rng(0))
>>> encoded.parts["indices"], encoded.parts["values"]
(array([1, 3], dtype=uint32), array([-3.,  2.]))
>>> codec.decode(encoded, np.dtype(np.float64), (4,))
array([ 0., -3.,  0.,  2.])
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fedbus.errors import DecodeError, InvalidArgumentError
from fedbus.fl.compression.base import AnyArray, Codec, Encoded, payload, register_codec

__all__ = ["TopK"]

#: Positions travel as uint32: an array may have at most this many values.
MAX_TOPK_SIZE = 2**32 - 1


class TopK(Codec):
    """Keeps the ``ceil(ratio * n)`` largest-magnitude values of each array (at least one).

    Parameters
    ----------
    ratio
        Share of each array's values sent, ``0 < ratio <= 1``.
    """

    name = "topk"
    parts = ("indices", "values")
    lossy = True
    error_feedback = True
    downstream = False

    def __init__(self, ratio: float = 0.01) -> None:
        if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0 < ratio <= 1:
            raise InvalidArgumentError(f"TopK: ratio must be in (0, 1], got {ratio!r}")
        self.ratio = float(ratio)

    def count(self, size: int) -> int:
        """Values of an array of ``size`` sent: ``ceil(ratio * size)``, between 1 and ``size``."""
        return min(size, max(1, math.ceil(self.ratio * size)))

    def encode(self, values: AnyArray, rng: np.random.Generator) -> Encoded:
        """The positions and values of the ``count(values.size)`` largest magnitudes."""
        flat = values.reshape(-1)
        size = flat.size
        if size > MAX_TOPK_SIZE:
            raise InvalidArgumentError(f"topk: an array of {size} values has too many to index")
        keep = self.count(size)
        if keep == size:
            indices: AnyArray = np.arange(size, dtype=np.uint32)
        else:
            largest = np.argpartition(np.abs(flat), size - keep)[size - keep :]
            indices = np.sort(largest).astype(np.uint32)
        return Encoded({"indices": indices, "values": flat[indices]})

    def decode(self, encoded: Encoded, dtype: np.dtype[Any], shape: tuple[int, ...]) -> AnyArray:
        """Zeros of ``shape``, with the sent values at their positions."""
        size = math.prod(shape)
        indices = encoded.parts["indices"]
        keep = indices.shape[0] if indices.ndim == 1 else -1
        if not 0 <= keep <= size:
            raise DecodeError(
                f"topk: {keep} positions for an array of {size} values (shape {indices.shape})"
            )
        indices = payload(encoded, "indices", np.uint32, keep)
        sent = payload(encoded, "values", dtype, keep)
        if keep and (int(indices[-1]) >= size or not bool(np.all(indices[1:] > indices[:-1]))):
            raise DecodeError(
                f"topk: positions must increase and stay below {size}; got some in "
                f"[{int(indices.min())}, {int(indices.max())}]"
            )
        if not bool(np.isfinite(sent).all()):
            raise DecodeError("topk: the sent values are not all finite")
        decoded = np.zeros(size, dtype)
        decoded[indices] = sent
        return decoded.reshape(shape)

    def __repr__(self) -> str:
        return f"TopK(ratio={self.ratio})"


register_codec("topk", lambda options: TopK(options.topk_ratio))
