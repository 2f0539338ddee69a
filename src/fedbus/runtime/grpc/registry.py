"""The server's registry of connected clients: who may join, under which node id.

Admission happens in the stream handler, before a single frame is read: the token first (a
stranger learns nothing else), then the transport protocol version, then the node id: the one
asked for when no connected client holds it, else the next id never assigned in this run
(``first_node_id``, then up, in join order). A refused attempt raises ``RefusedError`` with
the gRPC status to answer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import grpc

from fedbus.runtime.grpc.framing import Reassembler, TransportLimits
from fedbus.runtime.grpc.security import (
    NODE_ID_KEY,
    PROTOCOL_KEY,
    PROTOCOL_VERSION,
    TOKEN_KEY,
    Authenticator,
)
from fedbus.runtime.grpc.stream import Outbox

__all__ = ["ClientRegistry", "Connection", "RefusedError"]

_INT64_MAX = 2**63 - 1


class RefusedError(Exception):
    """A connection attempt that is turned away, with the gRPC status to answer."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code, self.details = code, details


class Connection:
    """One client's stream: its identity, its outbox and what its reader has put together."""

    def __init__(
        self, node_id: int, peer: str, context: Any, outbox: Outbox, limits: TransportLimits
    ) -> None:
        self.node_id, self.peer, self.context, self.outbox = node_id, peer, context, outbox
        self.reassembler = Reassembler(limits)
        self.last_seen = time.monotonic()
        #: The gRPC status the stream ends with when the server closes it for a reason.
        self.status: tuple[grpc.StatusCode, str] | None = None
        self.said_goodbye = False
        self.ended = threading.Event()


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
    """The connected clients by node id, and the rules for letting one more in."""

    def __init__(
        self, authenticator: Authenticator, max_clients: int, first_node_id: int = 1
    ) -> None:
        self._auth, self._max_clients = authenticator, max_clients
        self._lock = threading.Lock()
        self._connections: dict[int, Connection] = {}
        self._ever_assigned: set[int] = set()
        self._next_id = first_node_id
        self._closing = False

    def admit(
        self, metadata: Mapping[str, Any], connect: Callable[[int], Connection]
    ) -> Connection:
        """Check a new stream's metadata; ``connect(node_id)`` builds its connection."""
        token = metadata.get(TOKEN_KEY)
        try:
            asked: int | None = requested_id(metadata.get(NODE_ID_KEY))
            bad_id = None
        except RefusedError as refused:
            asked, bad_id = None, refused
        problem = self._auth.problem(token if isinstance(token, str) else None, asked)
        if problem is not None:
            raise RefusedError(grpc.StatusCode.UNAUTHENTICATED, problem)
        if bad_id is not None:
            raise bad_id
        if metadata.get(PROTOCOL_KEY) != PROTOCOL_VERSION:
            raise RefusedError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"transport protocol {metadata.get(PROTOCOL_KEY)!r} is not supported; "
                f"this server speaks {PROTOCOL_VERSION!r}",
            )
        with self._lock:
            connection = connect(self._pick_id(asked))
            self._connections[connection.node_id] = connection
            self._ever_assigned.add(connection.node_id)
        return connection

    def _pick_id(self, asked: int | None) -> int:
        """The node id of a new connection (called with the lock held)."""
        if self._closing:
            raise RefusedError(grpc.StatusCode.FAILED_PRECONDITION, "the federation is over")
        if asked is not None and asked in self._connections:
            raise RefusedError(
                grpc.StatusCode.ALREADY_EXISTS, f"node id {asked} is taken by a connected client"
            )
        if len(self._connections) >= self._max_clients:
            raise RefusedError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the server is full: max_clients={self._max_clients} are connected",
            )
        if asked is not None:
            return asked
        while self._next_id in self._ever_assigned or self._next_id in self._connections:
            self._next_id += 1
        return self._next_id

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
