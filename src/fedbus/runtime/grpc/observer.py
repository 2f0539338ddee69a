"""``ServerObserver``: what an application hosting a gRPC server sees of its traffic.

The server calls its observer as each message's fate is settled (delivered to the server
worker or handed to its receiver's stream, refused, expired, undeliverable, or refused for want
of room) and as clients connect, are heard from and leave. ``fedbus server`` records its message
trace and feeds its live dashboard from these calls. They come from the server's I/O thread and
must return quickly: an observer only notes what it is told.
"""

from __future__ import annotations

from fedbus.message import ErrorCode, Message, Metadata

__all__ = ["OUTCOME_OF_CODE", "ServerObserver", "error_of"]

#: The trace outcome of a message the server fails with this code.
OUTCOME_OF_CODE: dict[int, str] = {
    int(ErrorCode.MESSAGE_EXPIRED): "expired",
    int(ErrorCode.NODE_UNAVAILABLE): "unavailable",
    int(ErrorCode.RESOURCE_EXHAUSTED): "no_room",
}


class ServerObserver:
    """Override the calls you need; each default does nothing."""

    def message(self, metadata: Metadata, size: int, outcome: str, error: int) -> None:
        """A message's fate: ``outcome`` is ``delivered``, ``refused``, ``expired``,
        ``unavailable`` or ``no_room``; ``size`` its encoded bytes; ``error`` the error code it
        carries (0 for none)."""

    def connected(self, node_id: int) -> None:
        """``node_id`` connected (or reconnected)."""

    def heard(self, node_id: int) -> None:
        """``node_id`` sent something (a heartbeat, a message's chunk)."""

    def disconnected(self, node_id: int) -> None:
        """``node_id``'s connection ended."""


def error_of(message: Message) -> int:
    """The error code ``message`` carries, 0 for none."""
    return int(message.error.code) if message.has_error() else 0
