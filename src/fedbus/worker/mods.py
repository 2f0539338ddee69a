"""Mods: middleware around a worker's handlers and sends.

What changes messages without changing the algorithm (differential privacy's clipping, FedProx's
pull, compression, tracing) is a *mod*, installed on a worker with ``Worker.use``. A mod is a
callable that wraps the handling of each request::

    def mod(message, context, call_next):
        ...                                   # before the handler: read or replace the request
        reply = call_next(message, context)   # the rest of the chain, then the handler
        ...                                   # after it: read or replace the reply
        return reply

Mods run in the order they were installed, the first one outermost: it sees the request first
and the reply last. A mod may answer by itself without calling ``call_next`` (the handler then
never runs), and an exception raised by a mod or the handler becomes the usual
``HANDLER_EXCEPTION`` error reply to that request alone. Only requests go through the chain.

``context`` is a ``MessageContext`` made for each request: what a mod puts in its ``values`` the
handler reads from ``Worker.context`` (FedProx's mod hands the trainer its ``LocalTerms`` this
way). A mod with an ``on_send(message, context)`` method also sees what the worker sends with
``send`` or ``request`` (not the replies its handlers return, which the chain saw already): it
returns the message to send in its place. Sends pass the mods as a reply does, the last
installed first.

The replies to what a worker sent with ``request`` come back the other way. A mod with an
``on_reply(message, context)`` method sees each of them, content or error, before the request's
``on_reply`` does, and returns the reply to hand on (compression rebuilds the model there); the
first installed sees it first. An exception raised there turns that reply into an error reply
(``DECODE_ERROR`` for a ``DecodeError``, ``HANDLER_EXCEPTION`` otherwise): the request fails for
that node alone. A mod with an ``on_forget(message_id)`` method learns when the worker gives a
request up (a deadline passed; a reply that still comes is late and reaches no mod), so that
what it kept for the reply can go.

A worker without mods pays nothing for them: no context is made and dispatch is unchanged.

>>> from fedbus.message import Message, RecordDict
>>> order = []
>>> def outer(message, context, call_next):
...     order.append("outer")
...     return call_next(message, context)
>>> def inner(message, context, call_next):
...     order.append("inner")
...     return call_next(message, context)
>>> run_chain((outer, inner), Message(RecordDict(), 1, "ping"), MessageContext(1),
...           lambda message, context: None)
>>> order
['outer', 'inner']
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from fedbus.message import Message

__all__ = ["CallNext", "MessageContext", "Mod", "ModFunction", "run_chain"]

#: The rest of the chain: ``call_next(message, context)`` returns the handler's reply (or None).
CallNext = Callable[[Message, "MessageContext"], Message | None]


class ModFunction(Protocol):
    """What a mod is: ``mod(message, context, call_next) -> reply or None``."""

    def __call__(
        self, message: Message, context: MessageContext, call_next: CallNext
    ) -> Message | None:
        """Handle ``message``, usually by calling ``call_next(message, context)``."""


class MessageContext:
    """What travels with one request through the mods to its handler.

    Attributes
    ----------
    node_id
        The node handling the request.
    values
        Per-request data mods hand to the handler (and to the mods after them), by name; the
        handler reads them through ``Worker.context``. Names are the installing layer's: the FL
        layer's are in ``fedbus.fl.client`` (``LOCAL_TERMS``, ``UPDATE_FILTERS``).
    """

    __slots__ = ("node_id", "values")

    def __init__(self, node_id: int, values: dict[str, Any] | None = None) -> None:
        self.node_id = node_id
        self.values: dict[str, Any] = {} if values is None else values

    def get(self, name: str, default: Any = None) -> Any:
        """``values[name]``, or ``default`` when no mod set it."""
        return self.values.get(name, default)

    def __repr__(self) -> str:
        return f"MessageContext(node {self.node_id}, values {sorted(self.values)})"


class Mod:
    """Base of a mod that keeps settings, or sees sends too; a plain function is a mod as well.

    Override ``__call__`` to wrap the handling of requests, ``on_send`` to see what the worker
    sends, ``on_reply`` to see the replies to its requests, ``on_forget`` to hear of requests
    given up, or any of them. What a subclass leaves as it is costs nothing: a mod that only
    overrides ``on_send`` is not in the request chain, and the other way round.

    Examples
    --------
    >>> class CountRequests(Mod):
    ...     def __init__(self):
    ...         self.seen = 0
    ...     def __call__(self, message, context, call_next):
    ...         self.seen += 1
    ...         return call_next(message, context)
    """

    def __call__(
        self, message: Message, context: MessageContext, call_next: CallNext
    ) -> Message | None:
        """Wrap the handling of one request (default: pass it on unchanged)."""
        return call_next(message, context)

    def on_send(self, message: Message, context: MessageContext) -> Message:
        """The message to send in place of ``message`` (default: ``message`` itself).

        ``context`` is that of the request being handled when the send happens in a handler,
        otherwise a fresh one.
        """
        return message

    def on_reply(self, message: Message, context: MessageContext) -> Message:
        """The reply to hand on in place of ``message`` (default: ``message`` itself).

        ``message`` answers a request this worker sent with ``request``, from the node it went
        to: a reply with content or an error reply. ``context`` is a fresh one.
        """
        return message

    def on_forget(self, message_id: str) -> None:
        """The worker gave up the request ``message_id``: its reply, if it comes, is late."""


def incoming_part(mod: object) -> ModFunction | None:
    """The part of ``mod`` that wraps requests, or None when it only sees sends."""
    if isinstance(mod, Mod):
        return mod if type(mod).__call__ is not Mod.__call__ else None
    return mod if callable(mod) else None


def outgoing_part(mod: object) -> Callable[[Message, MessageContext], Message] | None:
    """``mod.on_send`` when the mod sees sends, else None."""
    if isinstance(mod, Mod):
        return mod.on_send if type(mod).on_send is not Mod.on_send else None
    on_send = getattr(mod, "on_send", None)
    return on_send if callable(on_send) else None


def reply_part(mod: object) -> Callable[[Message, MessageContext], Message] | None:
    """``mod.on_reply`` when the mod sees the replies to its worker's requests, else None."""
    if isinstance(mod, Mod):
        return mod.on_reply if type(mod).on_reply is not Mod.on_reply else None
    on_reply = getattr(mod, "on_reply", None)
    return on_reply if callable(on_reply) else None


def forget_part(mod: object) -> Callable[[str], None] | None:
    """``mod.on_forget`` when the mod hears of requests given up, else None."""
    if isinstance(mod, Mod):
        return mod.on_forget if type(mod).on_forget is not Mod.on_forget else None
    on_forget = getattr(mod, "on_forget", None)
    return on_forget if callable(on_forget) else None


class _Next:
    """``call_next`` for the mod at ``index``: the mods after it, then ``last``."""

    __slots__ = ("_index", "_last", "_mods")

    def __init__(self, mods: Sequence[ModFunction], index: int, last: CallNext) -> None:
        self._mods, self._index, self._last = mods, index, last

    def __call__(self, message: Message, context: MessageContext) -> Message | None:
        mods, index = self._mods, self._index
        if index == len(mods):
            return self._last(message, context)
        return mods[index](message, context, _Next(mods, index + 1, self._last))


def run_chain(
    mods: Sequence[ModFunction], message: Message, context: MessageContext, last: CallNext
) -> Message | None:
    """Run ``message`` through ``mods`` (the first outermost) and finally through ``last``."""
    return _Next(mods, 0, last)(message, context)
