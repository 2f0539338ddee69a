"""SecAgg+ as message types: what each stage sends, and the names its records use.

One round of secure aggregation (Bell et al., CCS 2020) is four request/reply stages, each a
message type the server sends and the client answers:

- ``secagg_train``: the server sends the model and a config with the round's neighbours,
  threshold and quantisation; the client trains, keeps its update, and replies ``keys``: two
  fresh X25519 public keys (``c_pk`` to encrypt shares, ``s_pk`` to agree pairwise masks).
- ``secagg_share``: the server sends ``peers``, the neighbours that advertised keys, with their
  keys; the client replies ``shares``: for each peer, Shamir shares of its self-mask seed and of
  its mask key, AES-GCM encrypted for that peer.
- ``secagg_mask``: the server relays ``shares``, the ciphertexts addressed to the client; the
  client replies ``masked``: its quantised update plus its self mask and a pairwise mask with
  every peer that shared, modulo ``2**bits`` (uint32 when ``bits <= 32``, else uint64).
- ``secagg_unmask``: the server sends ``status``, which peers sent a masked input
  (``survivors``) and which did not (``dropped``); the client replies ``reveal``: its shares of
  the survivors' seeds and of the dropped clients' mask keys, never both of one client.

The server relays every share without being able to read it (each is encrypted under a key only
its sender and receiver can agree on), so it learns only the sum of the updates of the clients
that sent a masked input, and only if enough neighbours answer the last stage.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "ENCRYPTION_INFO",
    "MASK_INFO",
    "SECAGG_MASK",
    "SECAGG_SHARE",
    "SECAGG_TRAIN",
    "SECAGG_UNMASK",
    "STAGES",
    "pair_sign",
    "share_associated_data",
]

SECAGG_TRAIN: Final = "secagg_train"
SECAGG_SHARE: Final = "secagg_share"
SECAGG_MASK: Final = "secagg_mask"
SECAGG_UNMASK: Final = "secagg_unmask"
STAGES: Final = (SECAGG_TRAIN, SECAGG_SHARE, SECAGG_MASK, SECAGG_UNMASK)

# Config keys of the secagg_train request.
ROUND: Final = "secagg_round"
NEIGHBOURS: Final = "secagg_neighbours"
THRESHOLD: Final = "secagg_threshold"
CLIP_RANGE: Final = "secagg_clip_range"
BITS: Final = "secagg_bits"
NUM_INPUTS: Final = "secagg_num_inputs"

# HKDF "info" strings: the same X25519 agreement gives unrelated keys for the two uses.
ENCRYPTION_INFO: Final = b"fedbus secagg+ share encryption"
MASK_INFO: Final = b"fedbus secagg+ pairwise mask"


def pair_sign(node: int, peer: int) -> int:
    """+1 or -1: the pairwise mask of ``node`` and ``peer`` is added by the smaller id and
    subtracted by the larger, so it cancels in the sum."""
    return 1 if node < peer else -1


def share_associated_data(server_round: int, sender: int, receiver: int) -> bytes:
    """What an encrypted share is bound to: a share replayed to another client or round fails
    authentication."""
    return f"secagg+ round {server_round} from {sender} to {receiver}".encode()
