"""Message ids: 128 random bits each, written as 32 lowercase hex characters.

A message id names a request to the node that answers it: a reply counts only if its
``reply_to_message_id`` is the id of a request still open. An id another node could guess (a
counter, a node id and a sequence number) would let it answer requests it never received, so
every runtime draws its ids at random, from one place:

- a deployment (``MessageIds()``) draws them from the operating system (``secrets``): no one can
  predict the next id from those they saw;
- a simulation (``MessageIds(seed)``) draws them from a generator seeded from the simulation's
  seed, so the same seed gives the same ids, run after run, whatever runs the clients' work. The
  stream is its own: drawing ids never moves the simulation's other randomness (dropouts).

128 bits make a collision as unlikely as guessing: among a billion messages, the chance that two
ids are equal is below 1e-20.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Sequence
from typing import Any

from fedbus.errors import InvalidArgumentError

__all__ = ["MESSAGE_ID_BITS", "MessageIds"]

#: Random bits in every message id.
MESSAGE_ID_BITS = 128

_BYTES = MESSAGE_ID_BITS // 8


class MessageIds:
    """A source of message ids: ``next()`` returns a fresh one.

    Parameters
    ----------
    seed
        None (a deployment): ids come from ``secrets``, unguessable. An int (a simulation): ids
        come from a generator of their own seeded from it, so a run is reproducible; such ids
        are predictable by whoever knows the seed, and are for simulations only.

    Examples
    --------
    >>> ids = MessageIds(seed=7)
    >>> first = ids.next()
    >>> len(first), first == MessageIds(seed=7).next()
    (32, True)
    >>> len(MessageIds().next())
    32
    """

    __slots__ = ("_generator",)

    def __init__(self, seed: int | None = None) -> None:
        # A str seed is hashed (SHA-512) whole: the stream depends on the seed alone, not on
        # PYTHONHASHSEED or the process, and shares nothing with NumPy generators of the seed.
        self._generator = None if seed is None else random.Random(f"fedbus.message_ids:{seed}")

    def state(self) -> list[Any] | None:
        """Where a seeded stream stands, as JSON-serialisable data (None when unseeded)."""
        if self._generator is None:
            return None
        version, internal, gauss = self._generator.getstate()
        return [version, list(internal), gauss]

    def load_state(self, state: Sequence[Any]) -> None:
        """Continue a seeded stream from what ``state()`` returned.

        Raises ``InvalidArgumentError`` for an unseeded source or a state that is not one.
        """
        if self._generator is None:
            raise InvalidArgumentError("MessageIds: an unseeded source has no state to restore")
        try:
            version, internal, gauss = state
            self._generator.setstate((version, tuple(internal), gauss))
        except (TypeError, ValueError) as exc:
            raise InvalidArgumentError(f"MessageIds: unusable state: {exc}") from exc

    def next(self) -> str:
        """A new message id: ``MESSAGE_ID_BITS`` random bits as 32 hex characters."""
        if self._generator is None:
            return secrets.token_hex(_BYTES)
        return self._generator.getrandbits(MESSAGE_ID_BITS).to_bytes(_BYTES).hex()
