"""``Worker``: a node of a federation, defined by the handlers it registered.

Define a message type, write a handler for it, register the handler::

    class Client(Worker):
        def __init__(self, node_id):
            super().__init__(node_id)
            self.register_handlers(message_type="gradients",
                                   callback_func=self.callback_for_message_gradients,
                                   sends=["updated_model"])

        def callback_for_message_gradients(self, message):
            ...
            self.comm_manager.send(Message(sender=self.ID, receiver=message.sender,
                                           msg_type="updated_model", content=content))

A handler receives the ``Message``; it may send any number of messages with ``self.send`` and may
return a ``Message`` (usually a reply), which is sent for it. Failures never kill a worker: a
message of a type with no handler, or one whose handler raises, is answered with an error reply,
and an error or reply that fails is logged and counted, never answered with another error.

Dispatch tells requests from replies, once, for every handler:

- A request is checked against the roles its handler accepts (``senders``): a ``finish`` from a
  client to a client is answered with ``PERMISSION_DENIED`` and never reaches the handler.
- A reply (or error reply) to a request sent with ``request(message, on_reply)`` goes to
  ``on_reply``, and only when it comes from the node the request went to; one from anybody else
  is refused, counted (``refused_replies``) and logged with its sender. When that node departs
  (``nodes_departed``), every request in flight to it is answered at once with
  ``NODE_UNAVAILABLE``. A reply to a request given up (``forget``) is *late*
  (``late_replies``).
- Any other reply goes to its type's handler if the handler takes replies (``replies=True``, the
  default of seed 000's handlers). For a handler of requests only, it answers nothing this
  worker asked (a forgery, a replay, a duplicate): refused and counted.

Mods (``fedbus.worker.mods``, installed with ``use``) wrap the handling of requests and see what
the worker sends and the replies to its requests; a worker without mods dispatches exactly as
described above.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final, NamedTuple, Self, TypeVar

from fedbus.errors import DecodeError, InvalidArgumentError, InvalidTypeError, SendError
from fedbus.message import (
    DEFAULT_TTL,
    UNSET_NODE_ID,
    Error,
    ErrorCode,
    Message,
    Metadata,
    RecordDict,
    check_message_type,
)
from fedbus.worker.comm import BackgroundTimers, CommManager, TimerHandle
from fedbus.worker.mods import (
    MessageContext,
    ModFunction,
    forget_part,
    incoming_part,
    outgoing_part,
    reply_part,
    run_chain,
)

__all__ = [
    "CLIENT_ROLE",
    "is_reply_or_error",
    "ROLES",
    "SERVER_ROLE",
    "Handler",
    "HandlerSpec",
    "ReplyHandler",
    "Worker",
    "handler",
    "role_of",
    "runtime_error_reply",
]

logger = logging.getLogger("fedbus.worker")

#: The server's node id in every runtime.
SERVER_NODE_ID = 0
#: The two roles a node plays: node 0 is the server, every other node a client.
SERVER_ROLE: Final = "server"
CLIENT_ROLE: Final = "client"
ROLES: Final = (SERVER_ROLE, CLIENT_ROLE)

#: Requests awaited at once by one worker; beyond it the oldest is forgotten (and its reply,
#: should it come, counts as late). A round of 100,000 clients fits; a leak does not grow.
MAX_AWAITED = 1_000_000
#: Requests given up that are remembered, to tell a late reply from a forged one.
MAX_FORGOTTEN = 100_000

Handler = Callable[[Message], Message | None]
ReplyHandler = Callable[[Message], None]
_F = TypeVar("_F", bound=Callable[..., Any])


def role_of(node_id: int) -> str:
    """The role of ``node_id``: ``"server"`` for node 0, ``"client"`` for every other node."""
    return SERVER_ROLE if node_id == SERVER_NODE_ID else CLIENT_ROLE


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    """A registered handler.

    ``sends`` are the types it may send (the message-flow check); ``senders`` the roles whose
    requests it accepts (None: any role); ``replies`` whether replies that answer no request of
    this worker's ``request`` reach it too.
    """

    message_type: str
    callback: Handler
    sends: tuple[str, ...]
    senders: frozenset[str] | None = None
    replies: bool = True


@dataclass(frozen=True, slots=True)
class _Declared:
    """A handler declared with ``@handler`` on a method, bound when an instance is built."""

    message_type: str
    method_name: str
    sends: tuple[str, ...]
    senders: frozenset[str] | None
    replies: bool


def _check_senders(senders: Collection[str] | None, where: str) -> frozenset[str] | None:
    if senders is None:
        return None
    if isinstance(senders, str):
        raise InvalidTypeError(f"{where}: senders must be a list of roles, not a str")
    unknown = sorted(set(senders) - set(ROLES))
    if unknown:
        raise InvalidArgumentError(
            f"{where}: senders must be roles among {list(ROLES)}, got {unknown}"
        )
    return frozenset(senders)


def handler(
    message_type: str,
    *,
    sends: Iterable[str] = (),
    senders: Collection[str] | None = None,
    replies: bool = True,
) -> Callable[[_F], _F]:
    """Decorator form of ``register_handlers`` for methods of a ``Worker`` subclass.

    >>> class Echo(Worker):
    ...     @handler("ping", sends=(), senders=["server"])
    ...     def on_ping(self, message):
    ...         return message.create_reply(message.content)
    >>> Echo(node_id=1).handled_types()
    ['ping']
    """
    check_message_type(message_type)
    declared = tuple(check_message_type(kind) for kind in sends)
    accepted = _check_senders(senders, f"handler({message_type!r})")

    def mark(function: _F) -> _F:
        function.__fedbus_handler__ = _Declared(  # type: ignore[attr-defined]
            message_type, "", declared, accepted, replies
        )
        return function

    return mark


def runtime_error_reply(message: Message, code: ErrorCode, reason: str) -> Message:
    """The error reply a runtime or worker sends for ``message`` (default TTL, so it arrives)."""
    return message.create_error_reply(Error(code, reason), ttl=DEFAULT_TTL)


def is_reply_or_error(message: Message) -> bool:
    """True for a reply or an error reply; False for a request."""
    return message.has_error() or bool(message.metadata.reply_to_message_id)


class _Awaited(NamedTuple):
    """A request in flight: what it was (to answer it if its node departs) and who gets the
    reply. A tuple: one is made per request, and a frozen dataclass costs 3x as much."""

    request: Metadata
    on_reply: ReplyHandler


class Worker:
    """A federation node: a handler registry, dispatch, and sending through its runtime.

    Parameters
    ----------
    node_id
        This node's id. The server is 0; simulated clients are 1..N. Leave it ``None`` to have
        the runtime assign one when the worker joins a federation.

    Attributes
    ----------
    start_sends
        Message types ``on_start`` may send, for the message-flow check: a class attribute,
        which an instance may override when what it sends depends on how it was built.
    portable
        True when the handlers keep nothing on the object from one message to the next (what
        outlives a message is in ``save_state``): a simulation may then answer each message on
        a fresh copy of the worker, in another process or on a Ray cluster, with the same
        result. A class attribute, False by default.
    failed_messages
        Number of incoming errors and replies that met no handler or a raising handler
        (logged and counted, never answered).
    refused_replies
        Replies refused (logged with their sender): from another node than the one their
        request went to, or answering no request of this worker at all (forged, replayed).
    late_replies
        Replies to requests this worker had given up (``forget``), from the node each went to.
    last_failure
        The reason of the last message this worker failed to handle, or None.
    """

    start_sends: Sequence[str] = ()
    portable: ClassVar[bool] = False
    _declared_handlers: ClassVar[tuple[_Declared, ...]] = ()
    # Mods, set by ``use`` only: class-level empty defaults keep a worker without mods as cheap
    # to build and to dispatch to as before (100,000 simulated clients are built lazily).
    _mods: tuple[object, ...] = ()
    _incoming: tuple[ModFunction, ...] = ()
    _outgoing: tuple[Callable[[Message, MessageContext], Message], ...] = ()
    _replies: tuple[Callable[[Message, MessageContext], Message], ...] = ()
    _forgets: tuple[Callable[[str], None], ...] = ()
    _context: MessageContext | None = None

    def __init__(self, node_id: int | None = None) -> None:
        if node_id is not None and (not isinstance(node_id, int) or node_id < 0):
            raise InvalidArgumentError(f"Worker: node_id must be an int >= 0, got {node_id!r}")
        self.node_id: int = UNSET_NODE_ID if node_id is None else node_id
        self.comm_manager: CommManager | None = None
        self.failed_messages = 0
        self.refused_replies = 0
        self.late_replies = 0
        self.last_failure: str | None = None
        self._handlers: dict[str, HandlerSpec] = {}
        # Requests in flight, by message id (insertion order: the oldest first).
        self._awaited: dict[str, _Awaited] = {}
        # Requests given up: message id -> the node each went to (the oldest first).
        self._forgotten: dict[str, int] = {}
        # Checked once when the class was made (see ``handler``): 100,000 lazily built clients
        # do not check them again. The callback is the method name, bound here.
        for declared in type(self)._declared_handlers:
            self._handlers[declared.message_type] = HandlerSpec(
                declared.message_type,
                getattr(self, declared.method_name),
                declared.sends,
                declared.senders,
                declared.replies,
            )

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Collected once per class, so building 100,000 lazily created clients costs no scans.
        declared: dict[str, _Declared] = {}
        for klass in reversed(cls.__mro__):
            for name, value in vars(klass).items():
                mark = getattr(value, "__fedbus_handler__", None)
                if isinstance(mark, _Declared):
                    declared[mark.message_type] = dataclasses.replace(mark, method_name=name)
        cls._declared_handlers = tuple(declared.values())

    # -- seed 000's spellings -------------------------------------------------------------
    @property
    def ID(self) -> int:  # noqa: N802  # the handler style's name
        """Alias of ``node_id``."""
        return self.node_id

    @property
    def server_ID(self) -> int:  # noqa: N802  # the handler style's name
        """The server's node id (always 0)."""
        return SERVER_NODE_ID

    # -- handlers -------------------------------------------------------------------------
    def register_handlers(
        self,
        message_type: str,
        callback_func: Handler,
        sends: Iterable[str] = (),
        *,
        senders: Collection[str] | None = None,
        replies: bool = True,
        replace: bool = False,
    ) -> None:
        """Register ``callback_func`` as the handler of ``message_type``.

        Parameters
        ----------
        message_type
            The type it handles (1-128 characters of ``[A-Za-z0-9_.-]``).
        callback_func
            Called with each ``Message`` of that type (requests, and replies as ``replies``
            says); may return a ``Message``, which is sent.
        sends
            Types this handler may send, for the message-flow check (and the routing policy
            the runtimes enforce from it).
        senders
            The roles (``"server"``, ``"client"``) whose requests of this type it accepts; a
            request from another role is answered with ``PERMISSION_DENIED`` and never reaches
            the handler. None (the default): any role.
        replies
            Whether replies and error replies of this type that answer no request sent with
            ``request`` reach the handler (True, as in seed 000's handlers). False: the handler
            sees requests only, and such replies are refused and counted.
        replace
            Allow replacing a handler already registered for this type (e.g. a default);
            otherwise registering a type twice raises.
        """
        check_message_type(message_type)
        if not callable(callback_func):
            raise InvalidTypeError(
                f"register_handlers: callback_func for {message_type!r} must be callable, "
                f"got {type(callback_func).__name__}"
            )
        if isinstance(sends, str):
            raise InvalidTypeError("register_handlers: sends must be a list of types, not a str")
        if message_type in self._handlers and not replace:
            raise InvalidArgumentError(
                f"register_handlers: {type(self).__name__} already has a handler for "
                f"{message_type!r}; pass replace=True to replace it"
            )
        declared = tuple(check_message_type(kind) for kind in sends)
        accepted = _check_senders(senders, f"register_handlers({message_type!r})")
        self._handlers[message_type] = HandlerSpec(
            message_type, callback_func, declared, accepted, replies
        )

    def handled_types(self) -> list[str]:
        """The message types this worker has handlers for."""
        return list(self._handlers)

    def handler_specs(self) -> list[HandlerSpec]:
        """The registered handlers (for the message-flow check and tools)."""
        return list(self._handlers.values())

    # -- mods -------------------------------------------------------------------------------
    def use(self, *mods: object) -> Self:
        """Install ``mods`` (see ``fedbus.worker.mods``) after those installed already.

        Each mod is a callable ``mod(message, context, call_next)`` that wraps the handling of
        every request, the first installed outermost, and may have an ``on_send(message,
        context)`` method that sees what the worker sends, an ``on_reply(message, context)``
        method that sees the replies to its requests and an ``on_forget(message_id)`` method.
        Returns the worker, so that ``Client(trainer).use(FedProxMod())`` reads as one
        expression.

        Raises
        ------
        InvalidTypeError
            A mod is neither callable nor has one of those methods.
        """
        for mod in mods:
            parts = (incoming_part, outgoing_part, reply_part, forget_part)
            if all(part(mod) is None for part in parts):
                raise InvalidTypeError(
                    f"use: a mod is a callable mod(message, context, call_next) or has an "
                    f"on_send, on_reply or on_forget method; got {type(mod).__name__}"
                )
        self._mods = (*self._mods, *mods)
        self._incoming = tuple(part for part in map(incoming_part, self._mods) if part)
        # a send passes the mods as a reply does: from the innermost out
        self._outgoing = tuple(
            part for part in map(outgoing_part, reversed(self._mods)) if part is not None
        )
        # a reply comes back in, as a request does: the outermost first
        self._replies = tuple(part for part in map(reply_part, self._mods) if part is not None)
        self._forgets = tuple(part for part in map(forget_part, self._mods) if part is not None)
        return self

    @property
    def mods(self) -> tuple[object, ...]:
        """The installed mods, the outermost first."""
        return self._mods

    def make_context(self) -> MessageContext:
        """A fresh ``MessageContext`` for one request, send or reply that passes the mods.

        Override it to hand the mods what they may read (``Client`` adds its state store).
        """
        return MessageContext(self.node_id)

    @property
    def context(self) -> MessageContext | None:
        """The ``MessageContext`` of the request being handled, which mods fill for the
        handler; None outside a handler and on a worker without mods."""
        return self._context

    # -- what a handler may call ------------------------------------------------------------
    def send(self, message: Message) -> None:
        """Send ``message`` through the runtime (same as ``self.comm_manager.send``).

        Installed mods' ``on_send`` see it first and may send another message in its place.
        """
        self._send(message)

    def _send(self, message: Message) -> Message:
        """Send ``message`` through the outgoing mods and the runtime; return what was sent."""
        self._check_sender(message)
        if self._outgoing:
            context = self._context or self.make_context()
            for on_send in self._outgoing:
                message = on_send(message, context)
                if not isinstance(message, Message):
                    raise SendError(
                        f"a mod's on_send returned {type(message).__name__}, expected a Message"
                    )
            self._check_sender(message)
        self._comm().send(message)
        return message

    def _check_sender(self, message: Message) -> None:
        sender = message.metadata.src_node_id
        if sender not in (UNSET_NODE_ID, self.node_id):
            raise SendError(
                f"node {self.node_id} cannot send a message whose sender is {sender}; "
                f"build it with sender={self.node_id} or leave the sender out"
            )

    def request(self, message: Message, on_reply: ReplyHandler) -> str:
        """Send the request ``message``; its reply or error reply goes to ``on_reply``.

        Only a reply from the node the request went to is accepted: one from any other node is
        refused and counted (``refused_replies``). If that node departs first, ``on_reply``
        gets a ``NODE_UNAVAILABLE`` error reply at once. Returns the request's message id, for
        ``forget``.
        """
        if is_reply_or_error(message):
            raise SendError(
                f"request: {message!r} is a reply; send replies with send() or return them"
            )
        sent = self._send(message)  # an outgoing mod may send another message in its place
        message_id = sent.metadata.message_id
        awaited = self._awaited
        awaited[message_id] = _Awaited(sent.metadata, on_reply)
        if len(awaited) > MAX_AWAITED:
            oldest = next(iter(awaited))
            self.forget(oldest)
            logger.warning(
                "node %s awaits more than %d replies: forgot the oldest request %s",
                self.node_id,
                MAX_AWAITED,
                oldest,
            )
        return message_id

    def forget(self, message_id: str) -> None:
        """Stop awaiting the reply to ``message_id``: if it comes, it counts as late."""
        entry = self._awaited.pop(message_id, None)
        if entry is None:
            return
        forgotten = self._forgotten
        forgotten[message_id] = entry.request.dst_node_id
        if len(forgotten) > MAX_FORGOTTEN:
            del forgotten[next(iter(forgotten))]
        for on_forget in self._forgets:
            try:
                on_forget(message_id)
            except Exception:
                logger.exception("node %s: a mod's on_forget raised", self.node_id)

    def awaiting(self, node_id: int) -> int:
        """Requests of this worker in flight to ``node_id``."""
        return sum(1 for entry in self._awaited.values() if entry.request.dst_node_id == node_id)

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        """Run ``callback`` after ``delay`` seconds of the runtime's clock (never blocks)."""
        return self._comm().call_later(delay, callback)

    def call_later_background(
        self, delay: float, callback: Callable[[], None]
    ) -> TimerHandle | None:
        """Run ``callback`` after ``delay`` seconds without keeping the run going (a watchdog's
        timer); None, and nothing scheduled, on a runtime that offers no background timers
        (the simulation, whose clock moves only from one event to the next)."""
        comm = self._comm()
        if not isinstance(comm, BackgroundTimers):
            return None
        return comm.call_later_background(delay, callback)

    def report_work(self, num_samples: int) -> None:
        """Tell the runtime how many samples the running handler trained on."""
        self._comm().report_work(num_samples)

    def stop(self) -> None:
        """End this worker's part in the federation."""
        self._comm().stop()

    # -- hooks ------------------------------------------------------------------------------
    def on_start(self) -> None:
        """Called once when the worker enters a federation, before any message reaches it."""

    def on_nodes_registered(self, node_ids: Sequence[int]) -> None:
        """Called on the server with client ids the runtime registered without a join message."""

    def on_nodes_departed(self, node_ids: Sequence[int]) -> None:
        """Called after ``node_ids`` left the federation (stream closed, heartbeat lost) and
        the requests in flight to them were answered with ``NODE_UNAVAILABLE``."""

    def on_late_reply(self, message: Message) -> None:
        """A reply to a request this worker had given up: counted in ``late_replies``;
        override to count more."""
        self.late_replies += 1
        logger.info("node %s: late %r", self.node_id, message)

    def on_refused_reply(self, message: Message, expected_node: int | None) -> None:
        """A reply refused: it came from ``message.sender`` while its request went to
        ``expected_node``, or (``expected_node`` None) it answers no request of this worker.
        Counted in ``refused_replies`` and logged; override to count more."""
        self.refused_replies += 1
        why = (
            "it answers no request of this node"
            if expected_node is None
            else f"the request went to node {expected_node}"
        )
        logger.warning(
            "node %s refused a reply to %s from node %s: %s",
            self.node_id,
            message.metadata.reply_to_message_id,
            message.sender,
            why,
        )

    def save_state(self) -> RecordDict:
        """What this node keeps between messages, for a runtime that answers its next message
        on another copy of it (see ``portable``). Default: nothing."""
        return RecordDict()

    def load_state(self, state: RecordDict) -> None:
        """Take over ``state`` from ``save_state`` of another copy of this node."""

    # -- what a runtime calls ---------------------------------------------------------------
    def attach(self, comm_manager: CommManager, node_id: int) -> None:
        """Connect the worker to its runtime (runtimes call this, not users)."""
        if self.node_id not in (UNSET_NODE_ID, node_id):
            raise InvalidArgumentError(
                f"{type(self).__name__} was built as node {self.node_id} but the runtime "
                f"runs it as node {node_id}"
            )
        self.node_id = node_id
        self.comm_manager = comm_manager

    def nodes_departed(self, node_ids: Sequence[int]) -> None:
        """``node_ids`` left the federation: answer every request in flight to them with
        ``NODE_UNAVAILABLE`` at once, then call ``on_nodes_departed`` (runtimes call this)."""
        gone = set(node_ids)
        lost = [
            (message_id, entry)
            for message_id, entry in self._awaited.items()
            if entry.request.dst_node_id in gone
        ]
        for message_id, entry in lost:
            self.forget(message_id)  # should the node answer after all, the reply is late
            request = Message.from_metadata(entry.request, content=RecordDict())
            reason = f"node {entry.request.dst_node_id} departed before it answered"
            reply = runtime_error_reply(request, ErrorCode.NODE_UNAVAILABLE, reason)
            self._answer(entry, reply)
        self.on_nodes_departed(sorted(gone))

    def deliver(self, message: Message) -> None:
        """Run the handler for ``message``; errors become error replies (runtimes call this)."""
        metadata = message.metadata
        if metadata.reply_to_message_id or message.has_error():
            self._deliver_reply(message)
            return
        spec = self._handlers.get(metadata.message_type)
        if spec is not None and spec.senders is not None:
            role = role_of(metadata.src_node_id)
            if role not in spec.senders:
                allowed = " or ".join(sorted(spec.senders)) or "no role"
                self._fail(
                    message,
                    ErrorCode.PERMISSION_DENIED,
                    f"node {self.node_id} accepts {metadata.message_type!r} requests from "
                    f"{allowed} only, not from {role} node {metadata.src_node_id}",
                )
                return
        if self._incoming and spec is not None:
            self._run_mods(spec, message)
            return
        self._run_handler(spec, message)

    def _run_mods(self, spec: HandlerSpec, message: Message) -> None:
        """Run a request through the mods to its handler; send what comes out as the reply."""
        context = self.make_context()

        def handle(request: Message, context: MessageContext) -> Message | None:
            outer, self._context = self._context, context
            try:
                return spec.callback(request)
            finally:
                self._context = outer

        try:
            # object, not Message | None: mods and handlers return whatever they return.
            reply: object = run_chain(self._incoming, message, context, handle)
        except Exception as exc:
            self._raised(message, exc)
            return
        self._send_reply(spec, message, reply)

    def _deliver_reply(self, message: Message) -> None:
        metadata = message.metadata
        entry = self._awaited.get(metadata.reply_to_message_id)
        if entry is not None:
            expected = entry.request.dst_node_id
            if metadata.src_node_id != expected:
                self.on_refused_reply(message, expected)
                return
            del self._awaited[metadata.reply_to_message_id]
            self._answer(entry, message)
            return
        given_up = self._forgotten.get(metadata.reply_to_message_id)
        if given_up is not None:
            if given_up == metadata.src_node_id:
                del self._forgotten[metadata.reply_to_message_id]
                self.on_late_reply(message)
            else:
                self.on_refused_reply(message, given_up)
            return
        spec = self._handlers.get(metadata.message_type)
        if spec is not None and not spec.replies:
            self.on_refused_reply(message, None)
            return
        self._run_handler(spec, message)

    def _answer(self, entry: _Awaited, reply: Message) -> None:
        if self._replies:
            reply = self._reply_through_mods(reply)
        try:
            entry.on_reply(reply)
        except Exception as exc:
            self._raised(reply, exc)

    def _reply_through_mods(self, reply: Message) -> Message:
        """``reply`` after the mods' ``on_reply``; an error reply in its place if one raises."""
        context = self.make_context()
        for on_reply in self._replies:
            try:
                handed = on_reply(reply, context)
                if not isinstance(handed, Message):
                    raise SendError(
                        f"a mod's on_reply returned {type(handed).__name__}, expected a Message"
                    )
            except Exception as exc:
                code = (
                    ErrorCode.DECODE_ERROR
                    if isinstance(exc, DecodeError)
                    else ErrorCode.HANDLER_EXCEPTION
                )
                reason = f"node {self.node_id} refused the reply: {type(exc).__name__}: {exc}"
                logger.warning("node %s: %r: %s", self.node_id, reply, reason)
                logger.debug("mod traceback", exc_info=exc)
                # the reply's own metadata: it still answers its request, from its node; the
                # mods after this one see the error reply (what they kept for it can go)
                handed = Message.from_metadata(reply.metadata, error=Error(code, reason))
            reply = handed
        return reply

    def _raised(self, message: Message, exc: Exception) -> None:
        """Code run for ``message`` raised: a ``HANDLER_EXCEPTION`` error reply (for a request)."""
        self._fail(message, ErrorCode.HANDLER_EXCEPTION, f"{type(exc).__name__}: {exc}", exc)

    def _run_handler(self, spec: HandlerSpec | None, message: Message) -> None:
        if spec is None:
            self._fail(
                message,
                ErrorCode.UNKNOWN_MESSAGE_TYPE,
                f"node {self.node_id} has no handler for {message.metadata.message_type!r}; "
                f"it handles {sorted(self._handlers)}",
            )
            return
        try:
            # object, not Message | None: user handlers return whatever they return.
            reply: object = spec.callback(message)
        except Exception as exc:
            self._raised(message, exc)
            return
        self._send_reply(spec, message, reply)

    def _send_reply(self, spec: HandlerSpec, message: Message, reply: object) -> None:
        """Send what a handler (or the mods around it) returned, when it is a Message."""
        if reply is None:
            return
        if not isinstance(reply, Message):
            self._fail(
                message,
                ErrorCode.HANDLER_EXCEPTION,
                f"handler for {spec.message_type!r} returned {type(reply).__name__}, "
                "expected a Message or None",
            )
            return
        # the mods saw the reply on its way out of the chain: their on_send does not see it again
        self._check_sender(reply)
        self._comm().send(reply)

    def _fail(
        self,
        message: Message,
        code: ErrorCode,
        reason: str,
        exc_info: BaseException | None = None,
    ) -> None:
        self.last_failure = (
            f"{message.metadata.message_type!r} from node {message.sender}: {reason}"
        )
        if is_reply_or_error(message):
            # Never answer an error or a reply with an error: two nodes could ping-pong forever.
            self.failed_messages += 1
            logger.warning("node %s dropped %r: %s", self.node_id, message, reason)
            return
        logger.warning("node %s answers %r with an error: %s", self.node_id, message, reason)
        if exc_info is not None:
            logger.debug("handler traceback", exc_info=exc_info)
        self._comm().send(runtime_error_reply(message, code, reason))

    def _comm(self) -> CommManager:
        if self.comm_manager is None:
            raise SendError(
                f"{type(self).__name__} (node {self.node_id}) is not attached to a runtime; "
                "run it with fedbus.simulate(...) or a deployment runtime"
            )
        return self.comm_manager
