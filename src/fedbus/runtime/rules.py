"""The delivery rules every runtime applies, written once.

A runtime carries messages; what it owes the workers it runs is the same whatever carries them
(events in simulated time, gRPC streams, Ray tasks replayed in the loop):

- **stamping**: a message that is sent gets the run id, a fresh unguessable message id
  (``runtime.ids``) and its true sender, whatever the message claimed;
- **expiry**: a message whose TTL has passed when it is sent, or by the time it arrives, is
  never delivered (``MESSAGE_EXPIRED``);
- **size**: a message larger than the runtime's limit is refused (``MESSAGE_TOO_LARGE``);
- **routing**: a client's message travels only where the flow declaration lets it
  (``RoutingPolicy``, ``PERMISSION_DENIED``);
- **error replies**: a message that is refused or cannot be delivered gets one error reply to its
  sender, as if from the node it was for, unless it is itself an error (an error about an error
  would never end).

Node departure is the workers' side of the same contract: a runtime that learns a node left
calls ``Worker.nodes_departed`` on the server, which answers the requests in flight to it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fedbus.message import ErrorCode, Message, mark_sent
from fedbus.runtime.ids import MessageIds
from fedbus.worker import SERVER_NODE_ID, RoutingPolicy, runtime_error_reply

__all__ = ["DeliveryRules", "Refusal"]


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a message is not delivered: the error code its sender gets, and the reason."""

    code: ErrorCode
    reason: str

    @property
    def event(self) -> str:
        """The trace event name of this refusal (``expired``, ``refused``, ``too_large``)."""
        return _EVENTS[self.code]


_EVENTS = {
    ErrorCode.MESSAGE_EXPIRED: "expired",
    ErrorCode.PERMISSION_DENIED: "refused",
    ErrorCode.MESSAGE_TOO_LARGE: "too_large",
}


class DeliveryRules:
    """One runtime's stamping, checks and error replies.

    Parameters
    ----------
    run_id
        Stamped on every message.
    ids
        Where message ids come from (``MessageIds()`` in deployments, seeded in simulation).
    clock
        The runtime's clock, for TTLs (simulated seconds in simulation, wall-clock time in
        deployment).
    policy
        What clients may send whom; the server's messages are not checked. Default: nothing
        checked (a client runtime, whose server checks).
    max_message_bytes
        The largest encoded message allowed; None: no limit.
    """

    __slots__ = ("_clock", "_ids", "max_message_bytes", "policy", "run_id")

    def __init__(
        self,
        run_id: int,
        ids: MessageIds,
        clock: Callable[[], float],
        *,
        policy: RoutingPolicy | None = None,
        max_message_bytes: int | None = None,
    ) -> None:
        self.run_id, self._ids, self._clock = run_id, ids, clock
        self.policy, self.max_message_bytes = policy, max_message_bytes

    def stamp(self, message: Message, sender: int) -> None:
        """Fill the fields the runtime owns: run id, a fresh message id, the true sender."""
        mark_sent(message, run_id=self.run_id, message_id=self._ids.next(), src_node_id=sender)

    def expired(self, message: Message, at: float | None = None) -> bool:
        """Whether ``message``'s TTL has passed at ``at`` (default: now)."""
        metadata = message.metadata
        return metadata.ttl <= 0 or (self._clock() if at is None else at) > metadata.expires_at

    def check_sent(
        self, message: Message, *, size: int | None = None, at: float | None = None
    ) -> Refusal | None:
        """What refuses a stamped message as it leaves (``at``: its departure time), or None.

        Checked in order: routing (clients only), TTL, then ``size`` when given.
        """
        refusal = self.check_route(message)
        if refusal is not None:
            return refusal
        if self.expired(message, at):
            return Refusal(ErrorCode.MESSAGE_EXPIRED, "its TTL had passed when sent")
        return None if size is None else self.check_size(size)

    def check_route(self, message: Message) -> Refusal | None:
        """``PERMISSION_DENIED`` for a client's message the flow does not declare."""
        if self.policy is None or message.metadata.src_node_id == SERVER_NODE_ID:
            return None
        reason = self.policy.refusal(message)
        return None if reason is None else Refusal(ErrorCode.PERMISSION_DENIED, reason)

    def check_size(self, size: int) -> Refusal | None:
        """``MESSAGE_TOO_LARGE`` when ``size`` encoded bytes exceed the limit."""
        limit = self.max_message_bytes
        if limit is None or size <= limit:
            return None
        return Refusal(
            ErrorCode.MESSAGE_TOO_LARGE,
            f"{size} bytes encoded, more than max_message_bytes={limit}",
        )

    def check_arrived(self, message: Message) -> Refusal | None:
        """``MESSAGE_EXPIRED`` when the TTL passed in transit."""
        if self.expired(message):
            return Refusal(ErrorCode.MESSAGE_EXPIRED, "its TTL passed in transit")
        return None

    def error_reply(self, message: Message, refusal: Refusal) -> Message | None:
        """The stamped error reply to ``message``'s sender, as if from the node it was for;
        None when ``message`` is itself an error."""
        if message.has_error():
            return None
        metadata = message.metadata
        reason = f"message {metadata.message_id} ({metadata.message_type!r}): {refusal.reason}"
        reply = runtime_error_reply(message, refusal.code, reason)
        self.stamp(reply, metadata.dst_node_id)
        return reply
