"""Who may join a federation: shared or per-node tokens, and TLS.

A client presents its token in the call metadata (``fedbus-token``), and may ask for a node id
(``fedbus-node-id``). The server checks both in the stream handler before it reads a single
frame; a refused peer gets ``UNAUTHENTICATED`` and nothing it sent is ever decoded.

- ``token``: one secret for the whole federation.
- ``node_tokens``: optional per-node secrets, ``{node_id: token}``. A client that asks for
  such a node id must present that node's token; the federation token is not enough for it.

Tokens are compared with ``hmac.compare_digest`` (constant time). TLS certificates are PEM
bytes, read once at start; ``insecure=True`` must be asked for to go without TLS.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from fedbus.errors import InvalidArgumentError, InvalidTypeError

__all__ = [
    "NODE_ID_KEY",
    "PROTOCOL_KEY",
    "PROTOCOL_VERSION",
    "RESUME_KEY",
    "RUN_ID_KEY",
    "TOKEN_KEY",
    "Authenticator",
    "ServerTls",
    "read_pem",
]

#: Call metadata keys (gRPC metadata keys are lower case ASCII).
TOKEN_KEY: Final = "fedbus-token"
NODE_ID_KEY: Final = "fedbus-node-id"
RUN_ID_KEY: Final = "fedbus-run-id"
PROTOCOL_KEY: Final = "fedbus-protocol"
#: A client's resume secret: whoever held a node id gets it back only by presenting it again.
RESUME_KEY: Final = "fedbus-resume"
#: The transport frame layout version (``framing``); both ends must speak the same.
PROTOCOL_VERSION: Final = "1"

# Longest token accepted: a token is a secret, not a payload (gRPC caps metadata at 8 KiB).
_MAX_TOKEN_BYTES = 1024


def read_pem(path: str | Path, what: str) -> bytes:
    """The bytes of a PEM file, or an error naming ``what`` the file should hold."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InvalidArgumentError(f"cannot read the {what} {str(path)!r}: {exc.strerror}") from exc
    if b"-----BEGIN " not in data:
        raise InvalidArgumentError(f"the {what} {str(path)!r} is not a PEM file")
    return data


@dataclass(frozen=True, slots=True)
class ServerTls:
    """The server's certificate chain and private key, PEM-encoded.

    Examples
    --------
    >>> tls = ServerTls.from_files("server.pem", "server.key")  # doctest: +SKIP
    """

    certificate_chain: bytes
    private_key: bytes = field(repr=False)

    @classmethod
    def from_files(cls, certificate: str | Path, key: str | Path) -> ServerTls:
        """Read a PEM certificate (chain) and its PEM private key."""
        return cls(read_pem(certificate, "TLS certificate"), read_pem(key, "TLS private key"))


def _secret(name: str, token: object) -> bytes:
    if not isinstance(token, str):
        raise InvalidTypeError(f"{name} must be a str, got {type(token).__name__}")
    data = token.encode("utf-8")
    if not data or len(data) > _MAX_TOKEN_BYTES or not token.isprintable():
        raise InvalidArgumentError(
            f"{name} must be 1 to {_MAX_TOKEN_BYTES} bytes of printable text"
        )
    return data


class Authenticator:
    """Checks the token a peer presents against the federation's and the nodes' tokens.

    Parameters
    ----------
    token
        The federation's shared token; None lets any peer join (only with ``node_tokens``
        or for experiments on a trusted network).
    node_tokens
        ``{node_id: token}`` for nodes that have their own token.
    """

    def __init__(self, token: str | None, node_tokens: Mapping[int, str] | None = None) -> None:
        self._token = None if token is None else _secret("token", token)
        self._node_tokens = {
            int(node_id): _secret(f"node_tokens[{node_id}]", secret)
            for node_id, secret in (node_tokens or {}).items()
        }

    @property
    def open(self) -> bool:
        """True when no token at all is required."""
        return self._token is None and not self._node_tokens

    def problem(self, presented: str | None, node_id: int | None) -> str | None:
        """Why a peer presenting ``presented`` for ``node_id`` is refused, or None."""
        given = (presented or "").encode("utf-8", "replace")
        expected = self._node_tokens.get(node_id) if node_id is not None else None
        if expected is not None:
            ok = hmac.compare_digest(given, expected)
            return None if ok else f"wrong or missing token for node {node_id}"
        if self._token is None:
            return None if not self._node_tokens else "this federation requires a node token"
        if hmac.compare_digest(given, self._token):
            return None
        return "wrong or missing federation token"
