"""The message-flow check: every type some worker sends has a handler somewhere.

Before a federation starts, the runtime builds a ``MessageFlow`` from one worker of each role
(the server, one client of each class) and refuses to start when a declared send has no handler
on any role. Handlers that nothing declares to send are reported as notes, not errors: error
replies and undeclared sends may still reach them.

Declarations come from ``register_handlers(..., sends=[...])`` and from ``start_sends`` (what
``on_start`` sends). A returned reply needs no declaration: it has the type it answers, so the
sender of a request usually handles its own type too, for the replies. A sent type is therefore
drawn to the *other* roles that handle it, and to the sender's own role only when no other role
does (client-to-client types).

The same declarations are the federation's routing policy (``RoutingPolicy``), which every
runtime enforces: a request travels only along a declared edge (sender role, type, receiver
role), and a reply only back along one. Anything else gets an error reply to its sender and
never reaches its target.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from fedbus.errors import FlowError
from fedbus.message import Message
from fedbus.worker.worker import CLIENT_ROLE, SERVER_ROLE, Worker, is_reply_or_error, role_of

__all__ = ["START", "FlowEdge", "MessageFlow", "RoutingPolicy"]

#: Name used for ``on_start`` in place of a handled type.
START = "on_start"


@dataclass(frozen=True, slots=True)
class FlowEdge:
    """``sender_role``'s handler for ``trigger`` sends ``message_type`` to ``receiver_roles``."""

    sender_role: str
    trigger: str
    message_type: str
    receiver_roles: tuple[str, ...]


@dataclass(slots=True)
class MessageFlow:
    """Which role handles which type, and who sends what to whom."""

    handled: dict[str, list[str]] = field(default_factory=dict)
    edges: list[FlowEdge] = field(default_factory=list)

    @classmethod
    def from_roles(cls, roles: Sequence[tuple[str, Worker]]) -> MessageFlow:
        """Build the flow of ``roles``: (role name, a worker playing it) pairs."""
        flow = cls({name: worker.handled_types() for name, worker in roles})
        for name, worker in roles:
            triggers = [(START, tuple(worker.start_sends))]
            triggers += [(spec.message_type, spec.sends) for spec in worker.handler_specs()]
            for trigger, sends in triggers:
                for message_type in sends:
                    receivers = flow._receivers(name, message_type)
                    flow.edges.append(FlowEdge(name, trigger, message_type, receivers))
        return flow

    def _receivers(self, sender_role: str, message_type: str) -> tuple[str, ...]:
        handlers = [role for role, types in self.handled.items() if message_type in types]
        others = tuple(role for role in handlers if role != sender_role)
        return others or tuple(handlers)

    @property
    def missing(self) -> list[FlowEdge]:
        """Declared sends that no role handles."""
        return [edge for edge in self.edges if not edge.receiver_roles]

    @property
    def unreachable(self) -> list[tuple[str, str]]:
        """(role, type) handlers that no declaration sends to."""
        sent = {edge.message_type for edge in self.edges}
        return [
            (role, message_type)
            for role, types in self.handled.items()
            for message_type in types
            if message_type not in sent
        ]

    def check(self) -> None:
        """Raise ``FlowError`` naming every missing type and the handler that sends it."""
        if self.missing:
            lines = [
                f"  {edge.sender_role}.{edge.trigger} sends {edge.message_type!r}, "
                "which no worker handles"
                for edge in self.missing
            ]
            raise FlowError(
                "message-flow check failed:\n"
                + "\n".join(lines)
                + "\nregister a handler for each type with register_handlers(message_type=...)"
            )

    def describe(self) -> str:
        """A plain-text listing of the flow, with the notes and problems found."""
        lines = []
        for role, types in self.handled.items():
            lines.append(f"{role} handles: {', '.join(types) or '(nothing)'}")
        lines.append("")
        for edge in self.edges:
            receivers = ", ".join(edge.receiver_roles) or "NOBODY (missing handler)"
            lines.append(f"{edge.sender_role}.{edge.trigger} --{edge.message_type}--> {receivers}")
        for role, message_type in self.unreachable:
            lines.append(f"note: nothing declares sending {message_type!r} to {role}")
        return "\n".join(lines)

    def to_mermaid(self) -> str:
        """The flow as a Mermaid ``flowchart`` (roles as nodes, types as labelled edges)."""
        lines = ["flowchart LR"]
        for role in self.handled:
            lines.append(f'    {_mermaid_id(role)}["{role}"]')
        for edge in self.edges:
            label = edge.message_type
            if edge.trigger != edge.message_type:
                label = f"{edge.message_type} (from {edge.trigger})"
            for receiver in edge.receiver_roles or ("missing",):
                target = _mermaid_id(receiver)
                lines.append(f'    {_mermaid_id(edge.sender_role)} -- "{label}" --> {target}')
        return "\n".join(lines) + "\n"


def _mermaid_id(role: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in role)


def _kind(role: str) -> str:
    """``"client"`` for ``"client"`` and ``"client:SomeClass"``: routing knows node kinds."""
    return role.split(":", 1)[0]


@dataclass(frozen=True, slots=True)
class RoutingPolicy:
    """Which messages from clients may travel, from the flow declaration.

    ``requests`` holds (sender role, message type, receiver role) with roles ``"server"`` and
    ``"client"``. Clients are untrusted: a client's request is allowed only along such an edge,
    and its reply (or error reply) to another client only when that client may send it requests
    of the type (it answers one). The server is the federation's coordinator, run by its
    operator: what it sends is not checked, and a reply to it always reaches its dispatch, which
    accepts one only from the node its request went to (``Worker.request``).

    >>> policy = RoutingPolicy(frozenset({("server", "train", "client")}))
    >>> policy.allows(3, "train", 4, reply=False), policy.allows(3, "finish", 0, reply=False)
    (False, False)
    >>> policy.allows(3, "train", 0, reply=True), policy.allows(0, "anything", 3, reply=False)
    (True, True)
    """

    requests: frozenset[tuple[str, str, str]]

    @classmethod
    def from_flow(cls, flow: MessageFlow) -> RoutingPolicy:
        """The edges ``flow`` declares, between node kinds."""
        return cls(
            frozenset(
                (_kind(edge.sender_role), edge.message_type, _kind(receiver))
                for edge in flow.edges
                for receiver in edge.receiver_roles
            )
        )

    @classmethod
    def from_server(cls, server: Worker) -> RoutingPolicy:
        """The policy when only the server's declarations are known (a deployment whose
        clients were not shown to it): the server may send what it declares to clients,
        clients may send the server the requests its handlers accept, and nothing travels
        from client to client."""
        sends = set(server.start_sends)
        accepted = set()
        for spec in server.handler_specs():
            sends.update(spec.sends)
            if spec.senders is None or CLIENT_ROLE in spec.senders:
                accepted.add(spec.message_type)
        return cls(
            frozenset(
                {(SERVER_ROLE, kind, CLIENT_ROLE) for kind in sends}
                | {(CLIENT_ROLE, kind, SERVER_ROLE) for kind in accepted}
            )
        )

    def allows(self, src_node_id: int, message_type: str, dst_node_id: int, *, reply: bool) -> bool:
        """Whether a request (or, with ``reply``, a reply) may go from src to dst."""
        sender, receiver = role_of(src_node_id), role_of(dst_node_id)
        if sender == SERVER_ROLE or (reply and receiver == SERVER_ROLE):
            return True
        if reply:
            sender, receiver = receiver, sender
        return (sender, message_type, receiver) in self.requests

    def refusal(self, message: Message) -> str | None:
        """Why ``message`` may not travel, or None when the flow declares it."""
        metadata = message.metadata
        reply = is_reply_or_error(message)
        if self.allows(
            metadata.src_node_id, metadata.message_type, metadata.dst_node_id, reply=reply
        ):
            return None
        sender, receiver = role_of(metadata.src_node_id), role_of(metadata.dst_node_id)
        what = "a reply" if reply else "a request"
        return (
            f"{sender} node {metadata.src_node_id} may not send {what} of type "
            f"{metadata.message_type!r} to {receiver} node {metadata.dst_node_id}: the "
            "federation's message flow does not declare it (declare it with "
            "register_handlers(..., sends=[...]) or start_sends)"
        )
