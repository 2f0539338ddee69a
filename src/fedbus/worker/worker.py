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
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from fedbus.errors import InvalidArgumentError, InvalidTypeError, SendError
from fedbus.message import (
    DEFAULT_TTL,
    UNSET_NODE_ID,
    Error,
    ErrorCode,
    Message,
    RecordDict,
    check_message_type,
)
from fedbus.worker.comm import CommManager, TimerHandle

__all__ = ["Handler", "HandlerSpec", "Worker", "handler", "runtime_error_reply"]

logger = logging.getLogger("fedbus.worker")

#: The server's node id in every runtime.
SERVER_NODE_ID = 0

Handler = Callable[[Message], Message | None]
_F = TypeVar("_F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    """A registered handler: the type it handles, the callback, the types it may send."""

    message_type: str
    callback: Handler
    sends: tuple[str, ...]


def handler(message_type: str, *, sends: Iterable[str] = ()) -> Callable[[_F], _F]:
    """Decorator form of ``register_handlers`` for methods of a ``Worker`` subclass.

    >>> class Echo(Worker):
    ...     @handler("ping", sends=())
    ...     def on_ping(self, message):
    ...         return message.create_reply(message.content)
    >>> Echo(node_id=1).handled_types()
    ['ping']
    """
    check_message_type(message_type)
    declared = tuple(check_message_type(kind) for kind in sends)

    def mark(function: _F) -> _F:
        function.__fedbus_handler__ = (message_type, declared)  # type: ignore[attr-defined]
        return function

    return mark


def runtime_error_reply(message: Message, code: ErrorCode, reason: str) -> Message:
    """The error reply a runtime or worker sends for ``message`` (default TTL, so it arrives)."""
    return message.create_error_reply(Error(code, reason), ttl=DEFAULT_TTL)


def _is_reply_or_error(message: Message) -> bool:
    return message.has_error() or bool(message.metadata.reply_to_message_id)


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
    last_failure
        The reason of the last message this worker failed to handle, or None.
    """

    start_sends: Sequence[str] = ()
    portable: ClassVar[bool] = False
    _declared_handlers: ClassVar[tuple[tuple[str, str, tuple[str, ...]], ...]] = ()

    def __init__(self, node_id: int | None = None) -> None:
        if node_id is not None and (not isinstance(node_id, int) or node_id < 0):
            raise InvalidArgumentError(f"Worker: node_id must be an int >= 0, got {node_id!r}")
        self.node_id: int = UNSET_NODE_ID if node_id is None else node_id
        self.comm_manager: CommManager | None = None
        self.failed_messages = 0
        self.last_failure: str | None = None
        self._handlers: dict[str, HandlerSpec] = {}
        # Checked once when the class was made (see ``handler``): 100,000 lazily built clients
        # do not check them again.
        for message_type, method_name, sends in type(self)._declared_handlers:
            self._handlers[message_type] = HandlerSpec(
                message_type, getattr(self, method_name), sends
            )

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Collected once per class, so building 100,000 lazily created clients costs no scans.
        declared: dict[str, tuple[str, str, tuple[str, ...]]] = {}
        for klass in reversed(cls.__mro__):
            for name, value in vars(klass).items():
                mark = getattr(value, "__fedbus_handler__", None)
                if mark is not None:
                    declared[mark[0]] = (mark[0], name, mark[1])
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
        replace: bool = False,
    ) -> None:
        """Register ``callback_func`` as the handler of ``message_type``.

        Parameters
        ----------
        message_type
            The type it handles (1-128 characters of ``[A-Za-z0-9_.-]``).
        callback_func
            Called with each ``Message`` of that type, replies and error replies included;
            may return a ``Message``, which is sent.
        sends
            Types this handler may send, for the message-flow check.
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
        self._handlers[message_type] = HandlerSpec(message_type, callback_func, declared)

    def handled_types(self) -> list[str]:
        """The message types this worker has handlers for."""
        return list(self._handlers)

    def handler_specs(self) -> list[HandlerSpec]:
        """The registered handlers (for the message-flow check and tools)."""
        return list(self._handlers.values())

    # -- what a handler may call ------------------------------------------------------------
    def send(self, message: Message) -> None:
        """Send ``message`` through the runtime (same as ``self.comm_manager.send``)."""
        sender = message.metadata.src_node_id
        if sender not in (UNSET_NODE_ID, self.node_id):
            raise SendError(
                f"node {self.node_id} cannot send a message whose sender is {sender}; "
                f"build it with sender={self.node_id} or leave the sender out"
            )
        self._comm().send(message)

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        """Run ``callback`` after ``delay`` seconds of the runtime's clock (never blocks)."""
        return self._comm().call_later(delay, callback)

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

    def deliver(self, message: Message) -> None:
        """Run the handler for ``message``; errors become error replies (runtimes call this)."""
        spec = self._handlers.get(message.metadata.message_type)
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
            self._fail(
                message,
                ErrorCode.HANDLER_EXCEPTION,
                f"{type(exc).__name__}: {exc}",
                exc_info=exc,
            )
            return
        if reply is not None:
            if not isinstance(reply, Message):
                self._fail(
                    message,
                    ErrorCode.HANDLER_EXCEPTION,
                    f"handler for {spec.message_type!r} returned {type(reply).__name__}, "
                    "expected a Message or None",
                )
                return
            self.send(reply)

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
        if _is_reply_or_error(message):
            # Never answer an error or a reply with an error: two nodes could ping-pong forever.
            self.failed_messages += 1
            logger.warning("node %s dropped %r: %s", self.node_id, message, reason)
            return
        logger.warning("node %s answers %r with an error: %s", self.node_id, message, reason)
        if exc_info is not None:
            logger.debug("handler traceback", exc_info=exc_info)
        self.send(runtime_error_reply(message, code, reason))

    def _comm(self) -> CommManager:
        if self.comm_manager is None:
            raise SendError(
                f"{type(self).__name__} (node {self.node_id}) is not attached to a runtime; "
                "run it with fedbus.simulate(...) or a deployment runtime"
            )
        return self.comm_manager
