"""Secure aggregation: SecAgg+ (Bell et al., CCS 2020) written as message types and handlers.

- ``protocol``: the four stages' message types and the names their records use.
- ``client``: ``SecAggClient``, a ``Client`` that answers them.
- ``server``: ``SecAggServer``, synchronous rounds whose updates it only sees summed.
- ``shamir``, ``crypto``, ``quantize``, ``graph``: the building blocks (secret sharing, X25519,
  AES-GCM and the AES-CTR mask generator, fixed-point arithmetic modulo ``2**bits``, the
  neighbour graph).
"""

from fedbus.fl.secagg.client import SecAggClient
from fedbus.fl.secagg.server import SecAggServer

__all__ = ["SecAggClient", "SecAggServer"]
