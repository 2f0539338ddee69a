"""The cryptography of SecAgg+, all from the ``cryptography`` package.

- ``KeyPair``: an X25519 key pair; ``agree`` turns two parties' keys into one 32-byte key with
  HKDF-SHA256, an ``info`` string keeping the keys for different uses apart.
- ``encrypt``/``decrypt``: AES-256-GCM with a random 12-byte nonce prepended; the associated
  data binds a ciphertext to its round, sender and receiver.
- ``mask``: a pseudorandom vector of integers below ``2**bits``, the AES-256-CTR keystream of a
  32-byte seed: the same seed, the same mask, on every machine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from fedbus.errors import InvalidArgumentError

__all__ = ["KEY_BYTES", "KeyPair", "agree", "decrypt", "encrypt", "mask"]

KEY_BYTES = 32
_NONCE_BYTES = 12


@dataclass(frozen=True, slots=True)
class KeyPair:
    """An X25519 key pair."""

    private: X25519PrivateKey

    @classmethod
    def generate(cls) -> KeyPair:
        """A fresh key pair from the operating system's entropy."""
        return cls(X25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, data: bytes) -> KeyPair:
        """The key pair of a raw 32-byte private key (a secret rebuilt from shares)."""
        if len(data) != KEY_BYTES:
            raise InvalidArgumentError(f"an X25519 private key has 32 bytes, got {len(data)}")
        return cls(X25519PrivateKey.from_private_bytes(data))

    @property
    def public_bytes(self) -> bytes:
        """The raw 32-byte public key."""
        return self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def private_bytes(self) -> bytes:
        """The raw 32-byte private key (to be secret-shared, never sent in the clear)."""
        return self.private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


def agree(private: KeyPair, peer_public: bytes, *, info: bytes) -> bytes:
    """The 32-byte key ``private`` and the owner of ``peer_public`` both derive."""
    if len(peer_public) != KEY_BYTES:
        raise InvalidArgumentError(f"an X25519 public key has 32 bytes, got {len(peer_public)}")
    shared = private.private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(shared)


def encrypt(key: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
    """AES-256-GCM: a random nonce, then the ciphertext and its tag."""
    _check_key(key)
    nonce = os.urandom(_NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, associated_data)


def decrypt(key: bytes, ciphertext: bytes, associated_data: bytes) -> bytes:
    """The plaintext of ``encrypt``; ``InvalidArgumentError`` if anything was altered."""
    _check_key(key)
    if len(ciphertext) < _NONCE_BYTES + 16:
        raise InvalidArgumentError("a ciphertext is shorter than its nonce and tag")
    try:
        return AESGCM(key).decrypt(
            ciphertext[:_NONCE_BYTES], ciphertext[_NONCE_BYTES:], associated_data
        )
    except InvalidTag as exc:
        raise InvalidArgumentError(
            "a share failed authentication: wrong key, wrong round or receiver, or tampered"
        ) from exc


def mask(seed: bytes, size: int, bits: int) -> np.ndarray[Any, np.dtype[np.uint64]]:
    """``size`` pseudorandom integers uniform in ``[0, 2**bits)`` (uint64) from ``seed``."""
    _check_key(seed)
    if not 1 <= bits <= 62:
        raise InvalidArgumentError(f"mask: bits must be in 1..62, got {bits}")
    if size < 0:
        raise InvalidArgumentError(f"mask: size must be >= 0, got {size}")
    encryptor = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor()
    stream = encryptor.update(bytes(8 * size)) + encryptor.finalize()
    values = np.frombuffer(stream, dtype="<u8").astype(np.uint64)
    return values & np.uint64((1 << bits) - 1)


def _check_key(key: bytes) -> None:
    if len(key) != KEY_BYTES:
        raise InvalidArgumentError(f"keys and seeds have 32 bytes, got {len(key)}")
