"""Shamir's t-of-n secret sharing over the prime field GF(2**521 - 1).

A secret of up to 64 bytes is the constant term of a random polynomial of degree ``t - 1``; a
share is the polynomial's value at a client's id. Any ``t`` shares give the secret back by
Lagrange interpolation at 0; fewer give no information about it (every secret fits them
equally well). The prime is a Mersenne prime, larger than any 64-byte secret.

>>> shares = split_secret(b"seed", 2, [1, 2, 3])
>>> combine_shares({1: shares[1], 3: shares[3]}, 2, 4)
b'seed'
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Mapping, Sequence
from typing import Final

from fedbus.errors import InvalidArgumentError

__all__ = ["MAX_SECRET_BYTES", "PRIME", "SHARE_BYTES", "combine_shares", "split_secret"]

PRIME: Final = 2**521 - 1
#: The longest secret that fits below the prime.
MAX_SECRET_BYTES: Final = 64
#: Every share is this many big-endian bytes, whatever its value.
SHARE_BYTES: Final = (PRIME.bit_length() + 7) // 8


def split_secret(
    secret: bytes,
    threshold: int,
    share_ids: Sequence[int],
    rng: secrets.SystemRandom | random.Random | None = None,
) -> dict[int, bytes]:
    """Shares of ``secret`` for each id in ``share_ids``, any ``threshold`` of which rebuild it.

    ``rng`` draws the polynomial's coefficients: the operating system's entropy by default; a
    seeded ``random.Random`` only where reproducible tests need it.
    """
    if len(secret) > MAX_SECRET_BYTES:
        raise InvalidArgumentError(
            f"split_secret: a secret has at most {MAX_SECRET_BYTES} bytes, got {len(secret)}"
        )
    _check_ids(share_ids)
    if not 1 <= threshold <= len(share_ids):
        raise InvalidArgumentError(
            f"split_secret: threshold must be in 1..{len(share_ids)} (the number of shares), "
            f"got {threshold}"
        )
    draw = rng or secrets.SystemRandom()
    coefficients = [int.from_bytes(secret, "big")]
    coefficients += [draw.randrange(PRIME) for _ in range(threshold - 1)]
    shares = {}
    for share_id in share_ids:
        value = 0
        for coefficient in reversed(coefficients):  # Horner's rule
            value = (value * share_id + coefficient) % PRIME
        shares[share_id] = value.to_bytes(SHARE_BYTES, "big")
    return shares


def combine_shares(shares: Mapping[int, bytes], threshold: int, length: int) -> bytes:
    """The ``length``-byte secret rebuilt from ``threshold`` of its shares (extra ones unused)."""
    if len(shares) < threshold:
        raise InvalidArgumentError(
            f"combine_shares: {len(shares)} shares cannot rebuild a secret that needs {threshold}"
        )
    if not 0 <= length <= MAX_SECRET_BYTES:
        raise InvalidArgumentError(f"combine_shares: length must be in 0..64, got {length}")
    chosen = sorted(shares.items())[:threshold]
    _check_ids([share_id for share_id, _ in chosen])
    points = []
    for share_id, share in chosen:
        if len(share) != SHARE_BYTES:
            raise InvalidArgumentError(
                f"combine_shares: share {share_id} has {len(share)} bytes, expected {SHARE_BYTES}"
            )
        value = int.from_bytes(share, "big")
        if value >= PRIME:
            raise InvalidArgumentError(f"combine_shares: share {share_id} is not a field element")
        points.append((share_id, value))
    secret = 0
    for i, (x_i, y_i) in enumerate(points):
        numerator = denominator = 1
        for j, (x_j, _) in enumerate(points):
            if i != j:
                numerator = numerator * x_j % PRIME
                denominator = denominator * (x_j - x_i) % PRIME
        secret = (secret + y_i * numerator * pow(denominator, -1, PRIME)) % PRIME
    if secret.bit_length() > 8 * length:
        raise InvalidArgumentError(
            "combine_shares: the shares do not rebuild a secret of that length (wrong or "
            "tampered shares)"
        )
    return secret.to_bytes(length, "big")


def _check_ids(share_ids: Sequence[int]) -> None:
    if any(isinstance(i, bool) or not isinstance(i, int) or not 1 <= i < PRIME for i in share_ids):
        raise InvalidArgumentError(f"share ids must be ints >= 1, got {list(share_ids)}")
    if len(set(share_ids)) != len(share_ids):
        raise InvalidArgumentError(f"share ids must be distinct, got {list(share_ids)}")
