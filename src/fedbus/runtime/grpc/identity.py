"""Per-node identity: Ed25519 node keys, the server's challenges and its registry of keys.

A node holds a private key (``NodeKey``, a PEM file written by ``fedbus keys new``); the server
holds the node's public key in its registry file (``KeyRegistry``), under the node's name and,
optionally, a node id pinned to that name. To join, a node signs a fresh challenge issued by the
server (``Challenges``); the server checks the signature with the registered public key.

What is signed (``proof_bytes``), byte for byte::

    b"fedbus node proof v1\\0"        domain separation: these signatures mean nothing elsewhere
    + challenge                      exactly 32 bytes, as issued by the server
    + name.encode("ascii")           1 to 64 characters of A-Z a-z 0-9 . _ -
    + b"\\0"
    + node id in decimal ASCII       e.g. b"17"; empty when the node asks for no id

The challenge has a fixed length and a name never holds ``\\0``, so two different (challenge,
name, node id) triples never give the same bytes.

The call metadata of the handshake (gRPC keys are lower case ASCII; a key ending in ``-bin``
carries raw bytes): ``NODE_NAME_KEY``, ``CHALLENGE_KEY``, ``SIGNATURE_KEY``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import secrets
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fedbus.errors import InvalidArgumentError, InvalidTypeError

__all__ = [
    "CHALLENGE_BYTES",
    "CHALLENGE_KEY",
    "NODE_NAME_KEY",
    "PROOF_DOMAIN",
    "REGISTRY_FORMAT",
    "REGISTRY_VERSION",
    "SIGNATURE_KEY",
    "Challenges",
    "KeyRegistry",
    "NodeKey",
    "PublicKey",
    "RegisteredNode",
    "check_node_name",
    "proof_bytes",
]

#: Call metadata keys of the handshake.
NODE_NAME_KEY: Final = "fedbus-node-name"
CHALLENGE_KEY: Final = "fedbus-challenge-bin"
SIGNATURE_KEY: Final = "fedbus-signature-bin"

#: The first bytes of every signed proof (see the module docstring).
PROOF_DOMAIN: Final = b"fedbus node proof v1\0"
#: Length of a challenge: 256 bits, never guessed nor repeated.
CHALLENGE_BYTES: Final = 32
REGISTRY_FORMAT: Final = "fedbus-key-registry"
REGISTRY_VERSION: Final = 1

_KEY_TYPE = "ed25519"
_RAW_KEY_BYTES = 32
_SIGNATURE_BYTES = 64
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_INT64_MAX = 2**63 - 1
# 16 hex digits (64 bits) tell keys apart in logs; it is not a security boundary.
_FINGERPRINT_HEX = 16
_ENTRY_KEYS = frozenset({"public_key", "node_id", "revoked", "registered", "revoked_at"})


def check_node_name(name: object) -> str:
    """``name`` if it is a valid node name (1 to 64 of A-Z a-z 0-9 . _ -), else an error."""
    if not isinstance(name, str):
        raise InvalidTypeError(f"a node name must be a str, got {type(name).__name__}")
    if _NAME.fullmatch(name) is None:
        raise InvalidArgumentError(
            f"invalid node name {name[:80]!r}: use 1 to 64 characters of A-Z a-z 0-9 . _ -"
        )
    return name


def _check_node_id(node_id: object) -> int | None:
    if node_id is None:
        return None
    if not isinstance(node_id, int) or isinstance(node_id, bool):
        raise InvalidTypeError(f"a node id must be an int or None, got {type(node_id).__name__}")
    if not 1 <= node_id <= _INT64_MAX:  # 0 is the server's
        raise InvalidArgumentError(f"a client node id must be in [1, 2**63), got {node_id}")
    return node_id


def proof_bytes(challenge: bytes, name: str, node_id: int | None) -> bytes:
    """The exact bytes a node signs to prove it holds its key (see the module docstring)."""
    if not isinstance(challenge, bytes) or len(challenge) != CHALLENGE_BYTES:
        raise InvalidArgumentError(f"a challenge must be {CHALLENGE_BYTES} bytes")
    node_id = _check_node_id(node_id)
    suffix = b"" if node_id is None else str(node_id).encode("ascii")
    return PROOF_DOMAIN + challenge + check_node_name(name).encode("ascii") + b"\0" + suffix


@dataclass(frozen=True, slots=True)
class PublicKey:
    """A node's Ed25519 public key: 32 raw bytes.

    Examples
    --------
    >>> key = NodeKey.generate().public_key
    >>> PublicKey.from_text(key.to_text()) == key
    True
    """

    raw: bytes
    _key: Ed25519PublicKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.raw, bytes) or len(self.raw) != _RAW_KEY_BYTES:
            raise InvalidArgumentError(f"an Ed25519 public key is {_RAW_KEY_BYTES} raw bytes")
        try:
            key = Ed25519PublicKey.from_public_bytes(self.raw)
        except ValueError as exc:
            raise InvalidArgumentError("these 32 bytes are not an Ed25519 public key") from exc
        object.__setattr__(self, "_key", key)

    @classmethod
    def from_text(cls, text: str) -> PublicKey:
        """Parse ``"ed25519 <base64 of the 32 raw bytes>"`` (surrounding whitespace allowed)."""
        if not isinstance(text, str):
            raise InvalidTypeError(f"a public key text must be a str, got {type(text).__name__}")
        kind, space, encoded = text.strip().partition(" ")
        expected = f"expected '{_KEY_TYPE} <base64 of 32 bytes>', as written by `fedbus keys new`"
        if kind != _KEY_TYPE or not space:
            raise InvalidArgumentError(f"not a public key: {text[:80]!r} ({expected})")
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidArgumentError(f"a public key is not valid base64 ({expected})") from exc
        if len(raw) != _RAW_KEY_BYTES or base64.b64encode(raw).decode("ascii") != encoded:
            raise InvalidArgumentError(
                f"a public key holds {len(raw)} bytes in non-canonical form ({expected})"
                if len(raw) == _RAW_KEY_BYTES
                else f"a public key holds {len(raw)} bytes, not {_RAW_KEY_BYTES} ({expected})"
            )
        return cls(raw)

    def to_text(self) -> str:
        """One line: ``"ed25519 <base64 of the 32 raw bytes>"``."""
        return f"{_KEY_TYPE} {base64.b64encode(self.raw).decode('ascii')}"

    @property
    def fingerprint(self) -> str:
        """The first 16 hex digits of the SHA-256 of the raw key: to tell keys apart in logs."""
        return hashlib.sha256(self.raw).hexdigest()[:_FINGERPRINT_HEX]

    def verify_challenge(
        self, signature: bytes, challenge: bytes, name: str, node_id: int | None
    ) -> bool:
        """Whether ``signature`` is this key's proof for (challenge, name, node id).

        Never raises for what a peer may send: a signature, challenge, name or node id that is
        malformed or of the wrong type gives False.
        """
        if not isinstance(signature, bytes) or len(signature) != _SIGNATURE_BYTES:
            return False
        try:
            message = proof_bytes(challenge, name, node_id)
        except (InvalidArgumentError, InvalidTypeError):
            return False
        try:
            self._key.verify(signature, message)
        except InvalidSignature:
            return False
        return True


class NodeKey:
    """A node's Ed25519 private key; keep its file on the node only, mode 0600.

    Examples
    --------
    >>> key = NodeKey.generate()
    >>> proof = key.sign_challenge(bytes(32), "alice", None)
    >>> key.public_key.verify_challenge(proof, bytes(32), "alice", None)
    True
    """

    __slots__ = ("_key",)

    def __init__(self, key: Ed25519PrivateKey) -> None:
        if not isinstance(key, Ed25519PrivateKey):
            raise InvalidTypeError(f"expected an Ed25519PrivateKey, got {type(key).__name__}")
        self._key = key

    def __repr__(self) -> str:
        return f"NodeKey(fingerprint={self.public_key.fingerprint!r})"

    @classmethod
    def generate(cls) -> NodeKey:
        """A new random key."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_file(cls, path: str | Path) -> NodeKey:
        """Read an unencrypted PKCS8 PEM Ed25519 key, as ``write`` and ``fedbus keys new`` do."""
        where = f"the node key file {str(path)!r}"
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise InvalidArgumentError(f"cannot read {where}: {exc.strerror}") from exc
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except TypeError as exc:  # cryptography's word for "encrypted, and no password given"
            raise InvalidArgumentError(
                f"{where} is encrypted: fedbus needs an unencrypted key (protect it with mode 0600)"
            ) from exc
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise InvalidArgumentError(
                f"{where} is not a PEM private key (expected an Ed25519 key in PKCS8 PEM, "
                "as written by `fedbus keys new`)"
            ) from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise InvalidArgumentError(
                f"{where} holds a {type(key).__name__.removeprefix('_')}, not an Ed25519 key"
            )
        return cls(key)

    def to_pem(self) -> bytes:
        """The key as unencrypted PKCS8 PEM."""
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def write(self, path: str | Path) -> None:
        """Write the key to a new file of mode 0600; an existing file is never overwritten."""
        path = Path(path)
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError as exc:
            raise InvalidArgumentError(f"{str(path)!r} exists: refusing to overwrite it") from exc
        except OSError as exc:
            raise InvalidArgumentError(f"cannot create {str(path)!r}: {exc.strerror}") from exc
        try:
            os.fchmod(descriptor, 0o600)  # whatever the umask
            with os.fdopen(descriptor, "wb") as file:
                file.write(self.to_pem())
        except OSError as exc:
            path.unlink(missing_ok=True)
            raise InvalidArgumentError(f"cannot write {str(path)!r}: {exc.strerror}") from exc

    @property
    def public_key(self) -> PublicKey:
        """The public half, for the server's registry."""
        return PublicKey(self._key.public_key().public_bytes_raw())

    def sign_challenge(self, challenge: bytes, name: str, node_id: int | None) -> bytes:
        """The 64-byte signature of ``proof_bytes(challenge, name, node_id)``."""
        return self._key.sign(proof_bytes(challenge, name, node_id))


class Challenges:
    """The server's book of outstanding challenges: each one good once, for ``ttl`` seconds.

    Parameters
    ----------
    ttl
        Seconds a challenge stays good after ``issue``.
    capacity
        Most challenges outstanding; issuing one more forgets the oldest, so that peers who ask
        and never answer cannot grow the book.
    clock
        Seconds, never going back (tests pass a fake one).

    Examples
    --------
    >>> book = Challenges(ttl=30.0)
    >>> challenge = book.issue()
    >>> book.consume(challenge), book.consume(challenge)
    (True, False)
    """

    def __init__(
        self,
        ttl: float = 60.0,
        capacity: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not ttl > 0:
            raise InvalidArgumentError(f"Challenges: ttl must be > 0 seconds, got {ttl!r}")
        if capacity < 1:
            raise InvalidArgumentError(f"Challenges: capacity must be >= 1, got {capacity!r}")
        self._ttl, self._capacity, self._clock = ttl, capacity, clock
        self._expiries: OrderedDict[bytes, float] = OrderedDict()  # in order of issue
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._expiries)

    def issue(self) -> bytes:
        """A new challenge of ``CHALLENGE_BYTES`` random bytes."""
        challenge = secrets.token_bytes(CHALLENGE_BYTES)
        with self._lock:
            now = self._clock()
            self._forget_expired(now)
            while len(self._expiries) >= self._capacity:
                self._expiries.popitem(last=False)
            self._expiries[challenge] = now + self._ttl
        return challenge

    def consume(self, challenge: bytes) -> bool:
        """True once for a challenge issued here less than ``ttl`` ago; False otherwise."""
        with self._lock:
            expiry = self._expiries.pop(challenge, None) if isinstance(challenge, bytes) else None
            return expiry is not None and self._clock() < expiry

    def _forget_expired(self, now: float) -> None:
        while self._expiries:
            oldest, expiry = next(iter(self._expiries.items()))
            if expiry > now:
                return
            del self._expiries[oldest]


@dataclass(frozen=True, slots=True)
class RegisteredNode:
    """One node of a ``KeyRegistry``; times are ISO 8601 UTC."""

    name: str
    public_key: PublicKey
    node_id: int | None
    revoked: bool
    registered: str
    revoked_at: str | None = None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


_Signature = tuple[int, int, int] | None  # (mtime_ns, size, inode) of the file, or absent


class KeyRegistry:
    """The server's registry file of node public keys (JSON, see docs/deployment.md).

    Load it with ``KeyRegistry.load``. Changes stay in memory until ``save``, which replaces
    the file atomically and refuses when another process changed it since it was read.

    Examples
    --------
    >>> registry = KeyRegistry.load("registry.json", create=True)  # doctest: +SKIP
    >>> registry.register("alice", NodeKey.generate().public_key, node_id=3)  # doctest: +SKIP
    >>> registry.save()  # doctest: +SKIP
    """

    def __init__(self, path: str | Path) -> None:
        self._path = Path(path)
        self._nodes: dict[str, RegisteredNode] = {}
        self._on_disk: _Signature = None
        self._lock = threading.RLock()

    @property
    def path(self) -> Path:
        """The registry file."""
        return self._path

    @classmethod
    def load(cls, path: str | Path, *, create: bool = False) -> KeyRegistry:
        """Read a registry file; a missing file is an empty registry only with ``create``."""
        registry = cls(path)
        if create and not registry._path.exists():
            return registry
        registry.reload()
        return registry

    def names(self) -> list[str]:
        """The registered names, revoked ones included, sorted."""
        with self._lock:
            return sorted(self._nodes)

    def nodes(self) -> list[RegisteredNode]:
        """Every registered node, revoked ones included, sorted by name."""
        with self._lock:
            return [self._nodes[name] for name in sorted(self._nodes)]

    def lookup(self, name: str) -> RegisteredNode | None:
        """The node registered under ``name`` (revoked or not), or None."""
        with self._lock:
            return self._nodes.get(name) if isinstance(name, str) else None

    def register(
        self,
        name: str,
        public_key: PublicKey,
        node_id: int | None = None,
        *,
        replace_revoked: bool = False,
    ) -> RegisteredNode:
        """Add a node; ``replace_revoked`` gives a revoked name a new key (and node id).

        Refused: a name already registered, a key registered before (even revoked: a revoked
        key stays revoked), a node id pinned to another name.
        """
        check_node_name(name)
        node_id = _check_node_id(node_id)
        if not isinstance(public_key, PublicKey):
            raise InvalidTypeError(f"expected a PublicKey, got {type(public_key).__name__}")
        with self._lock:
            self._check_new(name, public_key, node_id, replace_revoked)
            node = RegisteredNode(name, public_key, node_id, revoked=False, registered=_now())
            self._nodes[name] = node
            return node

    def _check_new(
        self, name: str, public_key: PublicKey, node_id: int | None, replace_revoked: bool
    ) -> None:
        where = f"key registry {str(self._path)!r}"
        existing = self._nodes.get(name)
        if existing is not None and not existing.revoked:
            raise InvalidArgumentError(
                f"{name!r} is already registered in {where} (key {existing.public_key.fingerprint})"
                "; revoke it first to give it a new key"
            )
        if existing is not None and not replace_revoked:
            raise InvalidArgumentError(
                f"{name!r} was revoked at {existing.revoked_at} in {where}; to give it a new key,"
                " register it again with replace_revoked=True (--replace-revoked)"
            )
        for other in self._nodes.values():
            if other.public_key == public_key:
                state = "revoked" if other.revoked else "registered"
                raise InvalidArgumentError(
                    f"key {public_key.fingerprint} is already {state} as {other.name!r} in "
                    f"{where}; each node needs a key of its own (`fedbus keys new`)"
                )
            if node_id is not None and other.node_id == node_id and other.name != name:
                raise InvalidArgumentError(
                    f"node id {node_id} is pinned to {other.name!r} in {where}; choose another id"
                )

    def revoke(self, name: str) -> RegisteredNode:
        """Mark ``name`` revoked (kept in the file, so that its key can never come back).

        Revoking a revoked name changes nothing and returns it as it was.
        """
        with self._lock:
            node = self._nodes.get(name)
            if node is None:
                known = ", ".join(sorted(self._nodes)[:20]) or "none"
                raise InvalidArgumentError(
                    f"no node {name!r} in key registry {str(self._path)!r} (registered: {known})"
                )
            if not node.revoked:
                node = replace(node, revoked=True, revoked_at=_now())
                self._nodes[name] = node
            return node

    def save(self) -> None:
        """Write the registry atomically: a temporary file in the same folder, then a rename."""
        with self._lock:
            if self.changed_on_disk():
                raise InvalidArgumentError(
                    f"key registry {str(self._path)!r} changed on disk since it was read "
                    "(another `fedbus keys` command?): nothing saved; run the command again"
                )
            text = json.dumps(self._document(), indent=2) + "\n"
            self._on_disk = _write_atomically(self._path, text.encode("utf-8"))

    def _document(self) -> dict[str, Any]:
        nodes = {
            node.name: {
                "public_key": node.public_key.to_text(),
                "node_id": node.node_id,
                "revoked": node.revoked,
                "registered": node.registered,
                "revoked_at": node.revoked_at,
            }
            for node in self.nodes()
        }
        return {"format": REGISTRY_FORMAT, "version": REGISTRY_VERSION, "nodes": nodes}

    def changed_on_disk(self) -> bool:
        """Whether the file differs from what was last read or written here (one ``stat``)."""
        try:
            status = os.stat(self._path)
        except FileNotFoundError:
            return self._on_disk is not None
        except OSError:
            return True
        return (status.st_mtime_ns, status.st_size, status.st_ino) != self._on_disk

    def reload(self) -> None:
        """Read the file again; if it is malformed the error is raised and nothing changes."""
        where = f"key registry {str(self._path)!r}"
        try:
            with open(self._path, "rb") as file:
                status = os.fstat(file.fileno())
                data = file.read()
        except OSError as exc:
            raise InvalidArgumentError(f"cannot read {where}: {exc.strerror}") from exc
        nodes = _parse_registry(data, where)
        with self._lock:
            self._nodes = nodes
            self._on_disk = (status.st_mtime_ns, status.st_size, status.st_ino)

    def reload_if_changed(self) -> bool:
        """``reload`` when ``changed_on_disk``; whether it did."""
        if not self.changed_on_disk():
            return False
        self.reload()
        return True


def _write_atomically(path: Path, data: bytes) -> _Signature:
    try:
        mode = os.stat(path).st_mode & 0o777
    except OSError:
        mode = 0o644  # public keys only: the server and its operators may read it
    try:
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        raise InvalidArgumentError(f"cannot write {str(path)!r}: {exc.strerror}") from exc
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
            os.fchmod(file.fileno(), mode)
            status = os.fstat(file.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise InvalidArgumentError(f"cannot write {str(path)!r}: {exc.strerror}") from exc
    return status.st_mtime_ns, status.st_size, status.st_ino


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # a name given twice would let a later entry silently undo an earlier revocation
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"the key {key[:80]!r} appears twice")
        result[key] = value
    return result


def _parse_registry(data: bytes, where: str) -> dict[str, RegisteredNode]:
    try:
        document = json.loads(
            data.decode("utf-8"),
            object_pairs_hook=_unique_keys,
            parse_constant=_refuse_constant,
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidArgumentError(f"{where} is not valid JSON: {exc}") from exc
    if not isinstance(document, dict) or document.get("format") != REGISTRY_FORMAT:
        raise InvalidArgumentError(
            f'{where} is not a fedbus key registry (expected {{"format": "{REGISTRY_FORMAT}", '
            '"version": 1, "nodes": {...}}, as `fedbus keys register` writes)'
        )
    version = document.get("version")
    if version != REGISTRY_VERSION or not isinstance(version, int) or isinstance(version, bool):
        raise InvalidArgumentError(
            f"{where} has version {version!r}; this fedbus reads version {REGISTRY_VERSION}"
        )
    unknown = set(document) - {"format", "version", "nodes"}
    if unknown:
        raise InvalidArgumentError(f"{where}: unknown keys {sorted(unknown)}")
    if not isinstance(document.get("nodes"), dict):
        raise InvalidArgumentError(f'{where}: "nodes" must be an object of name: entry')
    nodes: dict[str, RegisteredNode] = {}
    pinned: dict[int, str] = {}
    for name, entry in document["nodes"].items():
        node = _parse_entry(name, entry, f"{where}, node {name[:80]!r}")
        if node.node_id is not None and pinned.setdefault(node.node_id, name) != name:
            raise InvalidArgumentError(
                f"{where}: node id {node.node_id} is pinned to both "
                f"{pinned[node.node_id]!r} and {name!r}"
            )
        nodes[name] = node
    return nodes


def _parse_entry(name: str, entry: object, where: str) -> RegisteredNode:
    try:
        check_node_name(name)
    except InvalidArgumentError as exc:
        raise InvalidArgumentError(f"{where}: {exc}") from None
    if not isinstance(entry, dict) or set(entry) != _ENTRY_KEYS:
        keys = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
        raise InvalidArgumentError(f"{where}: expected the keys {sorted(_ENTRY_KEYS)}, got {keys}")
    try:
        public_key = PublicKey.from_text(entry["public_key"])
        node_id = _check_node_id(entry["node_id"])
    except (InvalidArgumentError, InvalidTypeError) as exc:
        raise InvalidArgumentError(f"{where}: {exc}") from None
    revoked, registered, revoked_at = entry["revoked"], entry["registered"], entry["revoked_at"]
    if not isinstance(revoked, bool):
        raise InvalidArgumentError(f'{where}: "revoked" must be true or false, got {revoked!r}')
    for key, value in (("registered", registered), ("revoked_at", revoked_at)):
        if not (value is None and key == "revoked_at") and not _is_time(value):
            raise InvalidArgumentError(f"{where}: {key!r} must be an ISO 8601 time, got {value!r}")
    if revoked_at is not None and not revoked:
        raise InvalidArgumentError(f'{where}: "revoked_at" is set but "revoked" is false')
    return RegisteredNode(name, public_key, node_id, revoked, registered, revoked_at)


def _is_time(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True
