"""The server's registry of connected clients: who may join, under which node id.

Admission happens in the stream handler, before a single frame is read:

1. *Who is it?* A node proves an identity in one of three ways (``Identity``):
   - a registered key: it names itself and signs a fresh challenge (``identity``); the key
     must be in the server's ``KeyRegistry`` and not revoked;
   - a client certificate (mutual TLS): gRPC has checked it against the server's CA; the
     certificate's common name is the node's name;
   - a resume secret: 32 random bytes the client draws when it starts and presents on every
     connection. It proves nothing about who the node is (the federation token does that, for
     quick starts), only that a reconnecting node is the one that held its node id before.
   Without a key or certificate, the federation's token is checked (``Authenticator``).
2. *The transport protocol* must be the one this server speaks.
3. *Which node id?* A node id, once given in a run, belongs to the identity that first held
   it: only that identity gets it back (after a lost connection, a restart of the client, a
   storm of reconnections). A registry entry may pin a node's id; ids that nobody asked for
   are given in join order from ``first_node_id``, skipping ids already held or pinned.
4. *Is there room?* A node that reconnects while its old connection is still open (the server
   has not yet seen it drop) replaces it and needs no extra room; any other node is refused
   with ``RESOURCE_EXHAUSTED`` only when ``max_clients`` connections are open.

A refused attempt raises ``RefusedError`` with the gRPC status to answer.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc

from fedbus.errors import FedbusError
from fedbus.runtime.grpc.framing import Reassembler, TransportLimits
from fedbus.runtime.grpc.identity import (
    CHALLENGE_KEY,
    NODE_NAME_KEY,
    SIGNATURE_KEY,
    Challenges,
    KeyRegistry,
    check_node_name,
)
from fedbus.runtime.grpc.security import (
    NODE_ID_KEY,
    PROTOCOL_KEY,
    PROTOCOL_VERSION,
    RESUME_KEY,
    TOKEN_KEY,
    Authenticator,
)
from fedbus.runtime.grpc.stream import Outbox

__all__ = ["Admission", "ClientRegistry", "Connection", "Identity", "RefusedError"]

_INT64_MAX = 2**63 - 1
_MIN_RESUME_BYTES = 16


class RefusedError(Exception):
    """A connection attempt that is turned away, with the gRPC status to answer."""

    def __init__(self, code: grpc.StatusCode, details: str, name: str = "") -> None:
        super().__init__(details)
        self.code, self.details, self.name = code, details, name


@dataclass(frozen=True, slots=True)
class Identity:
    """What a connection proved: ``kind`` is "key", "certificate" or "resume"."""

    kind: str
    #: The node's name (key and certificate), or a digest of the resume secret.
    name: str
    #: Short fingerprint for logs: the key's, or empty.
    fingerprint: str = ""

    def describe(self) -> str:
        """For logs and errors: never the secret, not even its digest."""
        if self.kind == "resume":
            return "an anonymous node (federation token)"
        return f"{self.kind} {self.name!r}"


class Connection:
    """One client's stream: its identity, its outbox and what its reader has put together."""

    def __init__(
        self,
        node_id: int,
        identity: Identity,
        peer: str,
        outbox: Outbox,
        limits: TransportLimits,
    ) -> None:
        self.node_id, self.identity, self.peer, self.outbox = node_id, identity, peer, outbox
        self.reassembler = Reassembler(limits)
        #: Bytes of the message in reassembly reserved in the server's receive budget, and
        #: whether in memory (else in a spill file).
        self.reserved = 0
        self.reserved_in_memory = True
        #: When the message in reassembly began to arrive (loop time), once it had room.
        self.receiving_since = 0.0
        self.last_seen = 0.0
        #: The gRPC status the stream ends with when the server closes it for a reason.
        self.status: tuple[grpc.StatusCode, str] | None = None
        self.said_goodbye = False
        #: Why the server closed the stream, for the audit log ("" while open).
        self.closed_because = ""
        #: The coroutine serving the stream (set by the server; cancelled if its writer sticks).
        self.task: Any = None
        self.ended = threading.Event()


@dataclass(frozen=True, slots=True)
class Admission:
    """What ``admit`` decided: the new connection, and the one it replaces, if any."""

    connection: Connection
    replaced: Connection | None
    #: True when this identity held its node id before, in this run.
    returning: bool


def requested_id(value: object) -> int | None:
    """The node id a client asks for in its metadata, or None; refused if not an id."""
    if value is None:
        return None
    text = str(value)
    if not text.isdigit() or not 1 <= int(text) <= _INT64_MAX:
        raise RefusedError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"requested node id {text[:32]!r} is not an integer in [1, 2**63)",
        )
    return int(text)


class ClientRegistry:
    """The connected clients by node id, who held which id, and the rules for letting one in.

    Parameters
    ----------
    authenticator
        The federation token (and per-node tokens), for nodes without a key or certificate.
    max_clients
        Most connections open at once.
    first_node_id
        The first id given to a node that asks for none.
    keys
        The registry of node keys; None: no node can join with a key.
    challenges
        The server's outstanding challenges (``Challenge`` calls issue them).
    """

    def __init__(
        self,
        authenticator: Authenticator,
        max_clients: int,
        first_node_id: int = 1,
        *,
        keys: KeyRegistry | None = None,
        challenges: Challenges | None = None,
    ) -> None:
        self._auth, self._max_clients = authenticator, max_clients
        self.keys = keys
        self.challenges = challenges or Challenges(capacity=max(1024, 2 * max_clients))
        self._lock = threading.Lock()
        self._connections: dict[int, Connection] = {}
        self._holders: dict[int, Identity] = {}  # node id -> the identity that holds it
        self._ids: dict[Identity, int] = {}
        self._next_id = first_node_id
        self._closing = False
        self._pinned: dict[int, str] = {}  # node id -> the registered name it is pinned to
        self.keys_changed()

    # -- who is it ------------------------------------------------------------------------
    def identify(self, metadata: Mapping[str, Any], certificate_name: str | None) -> Identity:
        """The identity a new stream proves, or ``RefusedError`` (``UNAUTHENTICATED``)."""
        name = metadata.get(NODE_NAME_KEY)
        if name is not None:
            return self._key_identity(name, metadata)
        if certificate_name is not None:
            return Identity("certificate", certificate_name)
        token = metadata.get(TOKEN_KEY)
        try:
            asked = requested_id(metadata.get(NODE_ID_KEY))
        except RefusedError:
            asked = None  # the token is judged first: a stranger learns nothing else
        problem = self._auth.problem(token if isinstance(token, str) else None, asked)
        if problem is None and self._auth.open and self.keys is not None:
            problem = "this federation requires a node key (fedbus keys new)"
        if problem is not None:
            raise RefusedError(grpc.StatusCode.UNAUTHENTICATED, problem)
        secret = metadata.get(RESUME_KEY)
        if not isinstance(secret, str) or len(secret) < _MIN_RESUME_BYTES:
            secret = ""  # an old or hand-made client: its node id can never be taken back
        digest = hashlib.sha256(secret.encode("utf-8", "replace")).hexdigest() if secret else ""
        return Identity("resume", digest)

    def _key_identity(self, name: object, metadata: Mapping[str, Any]) -> Identity:
        def refuse(problem: str) -> RefusedError:
            return RefusedError(grpc.StatusCode.UNAUTHENTICATED, problem, shown)

        shown = str(name)[:64]
        if self.keys is None:
            raise refuse("this server has no key registry: join with the federation token")
        try:
            node_name = check_node_name(name)
        except FedbusError:  # any malformed name is the same refusal
            raise refuse(f"node name {shown!r} is not a valid name") from None
        challenge, signature = metadata.get(CHALLENGE_KEY), metadata.get(SIGNATURE_KEY)
        if not isinstance(challenge, bytes) or not self.challenges.consume(challenge):
            raise refuse("the challenge is missing, unknown, used or expired: ask for a new one")
        node = self.keys.lookup(node_name)
        if node is None:
            raise refuse(f"node {node_name!r} is not registered on this server")
        if node.revoked:
            raise refuse(f"the key of node {node_name!r} was revoked")
        try:
            asked = requested_id(metadata.get(NODE_ID_KEY))
        except RefusedError as refused:
            raise refuse(refused.details) from None
        if not isinstance(signature, bytes) or not node.public_key.verify_challenge(
            signature, challenge, node_name, asked
        ):
            raise refuse(f"the signature does not prove the registered key of {node_name!r}")
        return Identity("key", node_name, node.public_key.fingerprint)

    # -- which node id, and room ----------------------------------------------------------
    def admit(
        self,
        identity: Identity,
        metadata: Mapping[str, Any],
        connect: Callable[[int], Connection],
    ) -> Admission:
        """Check protocol, node id and room; ``connect(node_id)`` builds the connection."""
        asked = requested_id(metadata.get(NODE_ID_KEY))
        if metadata.get(PROTOCOL_KEY) != PROTOCOL_VERSION:
            raise RefusedError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"transport protocol {str(metadata.get(PROTOCOL_KEY))[:32]!r} is not "
                f"supported; this server speaks {PROTOCOL_VERSION!r}",
            )
        with self._lock:
            if self._closing:
                raise RefusedError(grpc.StatusCode.FAILED_PRECONDITION, "the federation is over")
            node_id, returning = self._pick_id(identity, asked)
            replaced = self._connections.get(node_id)
            if replaced is None and len(self._connections) >= self._max_clients:
                raise RefusedError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"the server is full: max_clients={self._max_clients} are connected",
                )
            connection = connect(node_id)
            self._connections[node_id] = connection
            if identity.kind != "resume" or identity.name:
                self._holders[node_id], self._ids[identity] = identity, node_id
            else:
                self._holders[node_id] = Identity("resume", "")  # held for good: no proof
        return Admission(connection, replaced, returning)

    def _pick_id(self, identity: Identity, asked: int | None) -> tuple[int, bool]:
        """(node id, held before by this identity), with the lock held."""
        pinned = self._pinned_id(identity)
        held = self._ids.get(identity)
        own = pinned if pinned is not None else held
        if own is not None:
            if asked is not None and asked != own:
                raise RefusedError(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"{identity.describe()} holds node id {own}, not {asked}",
                )
            return own, held is not None
        if asked is not None:
            holder = self._holders.get(asked)
            if holder is not None or self._pinned_to_other(asked, identity):
                raise RefusedError(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"node id {asked} belongs to another node of this run; only that node "
                    "may take it back (with its key, certificate or resume secret)",
                )
            return asked, False
        while self._next_id in self._holders or self._pinned_to_other(self._next_id, identity):
            self._next_id += 1
        return self._next_id, False

    def keys_changed(self) -> None:
        """Read the pinned node ids again (the key registry was reloaded)."""
        nodes = [] if self.keys is None else self.keys.nodes()
        pinned = {node.node_id: node.name for node in nodes if node.node_id is not None}
        with self._lock:
            self._pinned = pinned

    def _pinned_id(self, identity: Identity) -> int | None:
        if identity.kind != "key" or self.keys is None:
            return None
        node = self.keys.lookup(identity.name)
        return None if node is None else node.node_id

    def _pinned_to_other(self, node_id: int, identity: Identity) -> bool:
        name = self._pinned.get(node_id)
        return name is not None and (identity.kind != "key" or name != identity.name)

    # -- the connections ------------------------------------------------------------------
    def get(self, node_id: int) -> Connection | None:
        """The connection of ``node_id``, if it is connected."""
        with self._lock:
            return self._connections.get(node_id)

    def remove(self, connection: Connection) -> bool:
        """Forget ``connection``; False if it was already gone (or replaced)."""
        with self._lock:
            if self._connections.get(connection.node_id) is not connection:
                return False
            del self._connections[connection.node_id]
            return True

    def revoked_connections(self) -> list[Connection]:
        """Connections whose key is now revoked or gone from the registry."""
        if self.keys is None:
            return []
        with self._lock:
            connections = list(self._connections.values())
        revoked = []
        for connection in connections:
            if connection.identity.kind == "key":
                node = self.keys.lookup(connection.identity.name)
                if node is None or node.revoked:
                    revoked.append(connection)
        return revoked

    def close(self) -> list[Connection] | None:
        """Admit nobody from now on; the connections open now, or None if already closed."""
        with self._lock:
            if self._closing:
                return None
            self._closing = True
            return list(self._connections.values())

    def connections(self) -> list[Connection]:
        """The connections open now."""
        with self._lock:
            return list(self._connections.values())

    def node_ids(self) -> list[int]:
        """Node ids of the clients connected now, sorted."""
        with self._lock:
            return sorted(self._connections)
