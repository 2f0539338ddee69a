"""``Message``: what nodes exchange. Content or an error, plus metadata.

A message is built in one of three forms::

    Message(content, dst_node_id, message_type, *, ttl=None, group_id=None)   # a new message
    Message(content, *, reply_to=msg, ttl=None)                              # a reply
    Message(error, *, reply_to=msg, ttl=None)                                # an error reply

and, in the handler style, ``Message(sender=..., receiver=..., msg_type=..., content=...)``
builds the same message as the first form.

``created_at`` is stamped from the runtime's clock (``fedbus.message.clock``) when the message
is built and never changes: the message expires at ``created_at + ttl``. The runtime fills
``run_id``, ``message_id`` and ``src_node_id`` when the message is sent.

A reply never outlives the message it answers: without a ttl it gets what that message has
left, and an explicit ttl longer than that is capped to it, with a ``UserWarning``. Error
replies are the exception: they keep the ttl they are given (see ``Message``).
"""

from __future__ import annotations

import math
import re
import sys
import warnings
from dataclasses import dataclass
from enum import IntEnum
from types import FrameType
from typing import Final, overload

from fedbus.errors import InvalidArgumentError, InvalidTypeError, MessageFieldError
from fedbus.message.clock import now
from fedbus.message.records import RecordDict

__all__ = [
    "DEFAULT_TTL",
    "MAX_MESSAGE_TYPE_LENGTH",
    "UNSET_NODE_ID",
    "Error",
    "ErrorCode",
    "Message",
    "Metadata",
    "check_message_type",
    "mark_sent",
]

#: Seconds a message lives when no ttl is given (12 hours).
DEFAULT_TTL: Final = 43200.0
#: ``src_node_id`` of a message that has not been sent yet (the runtime fills it on send).
UNSET_NODE_ID: Final = -1
#: Longest message type accepted.
MAX_MESSAGE_TYPE_LENGTH: Final = 128

_MESSAGE_TYPE = re.compile(rf"[A-Za-z0-9_.\-]{{1,{MAX_MESSAGE_TYPE_LENGTH}}}")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

# The constructor's forms, named in every error it raises so the caller sees which one was meant.
_NEW = "Message(content, dst_node_id, message_type, *, ttl=None, group_id=None)"
_REPLY = "Message(content, *, reply_to=msg, ttl=None)"
_ERROR_REPLY = "Message(error, *, reply_to=msg, ttl=None)"
_HANDLER_STYLE = "Message(sender=..., receiver=..., msg_type=..., content=...)"


class ErrorCode(IntEnum):
    """Error codes fedbus itself uses. Values are stable; user code may use other integers.

    ======================  =====  ==============================================================
    name                    value  meaning
    ======================  =====  ==============================================================
    UNKNOWN                 0      an error without a more precise code
    UNKNOWN_MESSAGE_TYPE    1      the receiver has no handler for the message's type
    HANDLER_EXCEPTION       2      the receiver's handler raised; the reason has the exception
    MESSAGE_EXPIRED         3      the message's TTL passed before it was delivered
    NODE_UNAVAILABLE        4      the receiving node is offline, dropped out or unknown
    DECODE_ERROR            5      the receiver could not decode the message's bytes
    UNAUTHENTICATED         6      the sender did not prove who it is, or claimed another id
    MESSAGE_TOO_LARGE       7      the message exceeds the receiver's size limit
    PERMISSION_DENIED       8      the sender's role may not send this type to the receiver
    RESOURCE_EXHAUSTED      9      no room was left for the message (a memory budget, a disk)
    ======================  =====  ==============================================================
    """

    UNKNOWN = 0
    UNKNOWN_MESSAGE_TYPE = 1
    HANDLER_EXCEPTION = 2
    MESSAGE_EXPIRED = 3
    NODE_UNAVAILABLE = 4
    DECODE_ERROR = 5
    UNAUTHENTICATED = 6
    MESSAGE_TOO_LARGE = 7
    PERMISSION_DENIED = 8
    RESOURCE_EXHAUSTED = 9


@dataclass(frozen=True, slots=True)
class Error:
    """What went wrong while processing a message: an integer code and an optional reason.

    >>> Error(ErrorCode.MESSAGE_EXPIRED, "ttl passed")
    Error(code=3 (MESSAGE_EXPIRED), reason='ttl passed')
    """

    code: int
    reason: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.code, int) or isinstance(self.code, bool):
            raise InvalidTypeError(f"Error: code must be int, got {type(self.code).__name__}")
        if not _INT64_MIN <= self.code <= _INT64_MAX:
            raise InvalidArgumentError(f"Error: code {self.code} does not fit in 64 bits")
        if self.reason is not None and not isinstance(self.reason, str):
            raise InvalidTypeError(
                f"Error: reason must be str or None, got {type(self.reason).__name__}"
            )

    def __repr__(self) -> str:
        try:
            code = f"{int(self.code)} ({ErrorCode(self.code).name})"
        except ValueError:
            code = str(int(self.code))
        return f"Error(code={code}, reason={self.reason!r})"


@dataclass(frozen=True, slots=True)
class Metadata:
    """Everything about a message except its content.

    Attributes
    ----------
    run_id
        The run (federation) the message belongs to; filled by the runtime on send.
    message_id
        Unique within a run; ``""`` until the message is sent.
    src_node_id
        The sender; ``UNSET_NODE_ID`` (-1) until sent, unless the sender was given.
    dst_node_id
        The receiver.
    reply_to_message_id
        For a reply, the ``message_id`` of the message it answers; ``""`` otherwise.
    group_id
        Groups messages; the FL layer uses the round number.
    created_at
        Seconds on the runtime's clock when the message was built.
    ttl
        Seconds the message lives after ``created_at``.
    message_type
        What the receiver should do; selects the receiver's handler.
    """

    run_id: int
    message_id: str
    src_node_id: int
    dst_node_id: int
    reply_to_message_id: str
    group_id: str
    created_at: float
    ttl: float
    message_type: str

    @property
    def expires_at(self) -> float:
        """``created_at + ttl``: the clock time after which the message is not delivered."""
        return self.created_at + self.ttl


# Types already checked: a set lookup instead of a regex on every message (~0.5 us saved each).
# Bounded, so a stream of distinct hostile names cannot grow it without limit.
_VALID_TYPES: set[str] = set()
_MAX_REMEMBERED_TYPES = 4096


def check_message_type(message_type: object, form: str | None = None) -> str:
    """Return ``message_type`` if it is a valid type name, else raise with what is allowed."""
    if type(message_type) is str and message_type in _VALID_TYPES:
        return message_type
    where = f" (in {form})" if form else ""
    if not isinstance(message_type, str):
        raise InvalidTypeError(
            f"Message: message_type must be str, got {type(message_type).__name__}{where}"
        )
    if _MESSAGE_TYPE.fullmatch(message_type) is None:
        raise InvalidArgumentError(
            f"Message: invalid message_type {message_type!r}: use 1 to "
            f"{MAX_MESSAGE_TYPE_LENGTH} characters from A-Z a-z 0-9 _ . -{where}"
        )
    if len(_VALID_TYPES) < _MAX_REMEMBERED_TYPES:
        _VALID_TYPES.add(message_type)
    return message_type


def _check_node_id(name: str, node_id: object, form: str) -> int:
    if not isinstance(node_id, int) or isinstance(node_id, bool):
        raise InvalidTypeError(
            f"Message: {name} must be int, got {type(node_id).__name__} (in {form})"
        )
    if not 0 <= node_id <= _INT64_MAX:
        raise InvalidArgumentError(
            f"Message: {name} must be in [0, 2**63), got {node_id} (in {form})"
        )
    return node_id


def _check_ttl(ttl: object, form: str) -> float:
    if not isinstance(ttl, int | float) or isinstance(ttl, bool):
        raise InvalidTypeError(f"Message: ttl must be a number of seconds, got {ttl!r} (in {form})")
    if not math.isfinite(ttl) or ttl <= 0:
        raise InvalidArgumentError(
            f"Message: ttl must be a finite number of seconds > 0, got {ttl!r} (in {form})"
        )
    return float(ttl)


def _warn_ttl_capped(ttl: float, remaining: float, original: Metadata, created_at: float) -> None:
    origin = f"ttl {original.ttl} s, created {created_at - original.created_at} s before the reply"
    if remaining > 0:
        state = f"which has {remaining} s left ({origin})"
    else:
        state = (
            f"which expired {abs(remaining)} s ago ({origin}): the reply will be refused when sent"
        )
    warnings.warn(
        f"Message: reply ttl={ttl} capped to {remaining} s: a reply must not outlive the "
        f"message it answers, {state}. Leave ttl unset to get the time left without a warning",
        UserWarning,
        stacklevel=_first_caller_outside_this_module(),
    )


def _first_caller_outside_this_module() -> int:
    """The ``stacklevel`` that points a warning at the user's line, not at Message's code.

    The same warning comes through ``Message(...)`` and ``create_reply`` (one frame deeper).
    """
    frame: FrameType | None = sys._getframe(1)  # the caller of warnings.warn: stacklevel 1
    level = 1
    while frame is not None and frame.f_code.co_filename == __file__:
        frame, level = frame.f_back, level + 1
    return level


def _check_content(content: object, form: str) -> RecordDict:
    if not isinstance(content, RecordDict):
        raise InvalidTypeError(
            f"Message: content must be a RecordDict, got {type(content).__name__} (in {form})"
        )
    return content


class Message:
    """A message between two nodes: content (a ``RecordDict``) or an ``Error``, plus metadata.

    Parameters
    ----------
    content
        The records to send; in the error-reply form, the ``Error`` may be given here.
    dst_node_id
        The receiving node (new messages only).
    message_type
        The receiver's handler to run (new messages only): 1-128 characters of
        ``[A-Za-z0-9_.-]``.
    ttl
        Seconds to live. Default: 43,200 for a new message; for a reply, what the message it
        answers has left: ``reply_to.ttl - (reply.created_at - reply_to.created_at)``. A
        reply's explicit ttl longer than that is capped to it, with a ``UserWarning``: a reply
        must not outlive its request. An error reply keeps the ttl it is given, so that it can
        report, for instance, that its request expired.
    group_id
        Groups messages, e.g. by FL round (new messages only; replies inherit it).
    reply_to
        The message this one answers: run_id, group_id and message_type are inherited,
        source and destination swapped, ``reply_to_message_id`` set.
    error
        The error to report (error replies only).
    sender, receiver, msg_type
        The handler style's spelling: ``Message(sender=..., receiver=..., msg_type=...,
        content=...)``; ``payload`` is accepted for ``content`` in this form. The sender given
        is checked against the sending worker when the message is sent.

    Examples
    --------
    >>> from fedbus import ConfigRecord, RecordDict
    >>> ask = Message(RecordDict({"cfg": ConfigRecord({"lr": 0.1})}), 3, "train")
    >>> reply = ask.create_reply(RecordDict())
    >>> reply.metadata.dst_node_id == ask.metadata.src_node_id, reply.metadata.message_type
    (True, 'train')

    Without a ttl, a reply lives as long as the message it answers has left:

    >>> from fedbus.message.clock import use_clock
    >>> with use_clock(lambda: 100.0):
    ...     ask = Message(RecordDict(), 3, "train", ttl=50.0)
    >>> with use_clock(lambda: 130.0):  # 20 s of the 50 are left
    ...     ask.create_reply(RecordDict()).metadata.ttl
    20.0
    """

    __slots__ = ("_content", "_error", "_metadata")
    _content: RecordDict | None
    _error: Error | None
    _metadata: Metadata

    @overload
    def __init__(
        self,
        content: RecordDict,
        dst_node_id: int,
        message_type: str,
        *,
        ttl: float | None = None,
        group_id: str | None = None,
    ) -> None: ...
    @overload
    def __init__(
        self, content: RecordDict, *, reply_to: Message, ttl: float | None = None
    ) -> None: ...
    @overload
    def __init__(self, error: Error, /, *, reply_to: Message, ttl: float | None = None) -> None: ...
    @overload
    def __init__(self, *, error: Error, reply_to: Message, ttl: float | None = None) -> None: ...
    @overload
    def __init__(
        self,
        *,
        receiver: int,
        msg_type: str,
        content: RecordDict | None = None,
        payload: RecordDict | None = None,
        sender: int | None = None,
        ttl: float | None = None,
        group_id: str | None = None,
    ) -> None: ...

    def __init__(
        self,
        content: RecordDict | Error | None = None,
        dst_node_id: int | None = None,
        message_type: str | None = None,
        *,
        ttl: float | None = None,
        group_id: str | None = None,
        reply_to: Message | None = None,
        error: Error | None = None,
        sender: int | None = None,
        receiver: int | None = None,
        msg_type: str | None = None,
        payload: RecordDict | None = None,
    ) -> None:
        if isinstance(content, Error):
            if error is not None:
                raise InvalidTypeError(
                    f"Message: the error was given twice; an error reply is {_ERROR_REPLY}"
                )
            content, error = None, content
        if content is not None and error is not None:
            raise InvalidTypeError(
                "Message: give content or an error, not both; a reply is "
                f"{_REPLY}, an error reply {_ERROR_REPLY}"
            )
        if (sender, receiver, msg_type, payload) != (None, None, None, None):
            if dst_node_id is not None or message_type is not None or reply_to is not None:
                raise InvalidTypeError(
                    "Message: sender/receiver/msg_type/payload cannot be mixed with dst_node_id, "
                    f"message_type or reply_to; use either {_HANDLER_STYLE} or {_NEW}"
                )
            if content is not None and payload is not None:
                raise InvalidTypeError(
                    f"Message: give content or payload, not both (in {_HANDLER_STYLE})"
                )
            if error is not None:
                raise InvalidTypeError(
                    f"Message: {_HANDLER_STYLE} carries content; an error answers a message: "
                    f"{_ERROR_REPLY}"
                )
            content = content if content is not None else payload
            self._init_new(content, receiver, msg_type, ttl, group_id, sender, _HANDLER_STYLE)
        elif reply_to is not None:
            self._init_reply(content, error, reply_to, ttl, dst_node_id, message_type, group_id)
        elif error is not None:
            raise InvalidTypeError(
                "Message: an error can only answer a message: use "
                f"{_ERROR_REPLY} or msg.create_error_reply(error)"
            )
        else:
            self._init_new(content, dst_node_id, message_type, ttl, group_id, None, _NEW)

    def _init_new(
        self,
        content: RecordDict | None,
        dst_node_id: int | None,
        message_type: str | None,
        ttl: float | None,
        group_id: str | None,
        sender: int | None,
        form: str,
    ) -> None:
        handler_style = form == _HANDLER_STYLE
        named = (
            ("content", content),
            ("receiver" if handler_style else "dst_node_id", dst_node_id),
            ("msg_type" if handler_style else "message_type", message_type),
        )
        missing = [name for name, value in named if value is None]
        if missing:
            hint = "" if handler_style else f"; a reply is {_REPLY}"
            raise InvalidTypeError(
                f"Message: missing {', '.join(missing)}; a new message is {form}{hint}"
            )
        if group_id is not None and not isinstance(group_id, str):
            raise InvalidTypeError(
                f"Message: group_id must be str, got {type(group_id).__name__} (in {form})"
            )
        self._content = _check_content(content, form)
        self._error = None
        self._metadata = Metadata(
            run_id=0,
            message_id="",
            src_node_id=UNSET_NODE_ID if sender is None else _check_node_id("sender", sender, form),
            dst_node_id=_check_node_id(named[1][0], dst_node_id, form),
            reply_to_message_id="",
            group_id=group_id or "",
            created_at=float(now()),
            ttl=DEFAULT_TTL if ttl is None else _check_ttl(ttl, form),
            message_type=check_message_type(message_type, form),
        )

    def _init_reply(
        self,
        content: RecordDict | None,
        error: object,
        reply_to: object,
        ttl: float | None,
        dst_node_id: int | None,
        message_type: str | None,
        group_id: str | None,
    ) -> None:
        form = _REPLY if error is None else _ERROR_REPLY
        if not isinstance(reply_to, Message):
            raise InvalidTypeError(
                f"Message: reply_to must be a Message, got {type(reply_to).__name__} (in {form})"
            )
        if dst_node_id is not None or message_type is not None or group_id is not None:
            raise InvalidTypeError(
                "Message: a reply takes its destination, type and group from reply_to; "
                f"drop dst_node_id, message_type and group_id (in {form})"
            )
        if content is None and error is None:
            raise InvalidTypeError(
                f"Message: a reply carries content or an error: {_REPLY} or {_ERROR_REPLY}"
            )
        if error is None:
            content = _check_content(content, form)
        elif not isinstance(error, Error):
            raise InvalidTypeError(
                f"Message: error must be an Error, got {type(error).__name__} (in {form})"
            )
        original = reply_to._metadata
        created_at = float(now())
        # What the request has left. May be <= 0 when it has expired: built, but refused when sent.
        remaining = original.ttl - (created_at - original.created_at)
        if ttl is None:
            reply_ttl = remaining
        else:
            reply_ttl = _check_ttl(ttl, form)
            # Error replies are exempt: one may report that its request expired, which is only
            # known once the request is dead (the runtime sends those with DEFAULT_TTL).
            if error is None and reply_ttl > remaining:
                _warn_ttl_capped(reply_ttl, remaining, original, created_at)
                reply_ttl = remaining
        self._content, self._error = content, error
        self._metadata = Metadata(
            run_id=original.run_id,
            message_id="",
            src_node_id=original.dst_node_id,
            dst_node_id=original.src_node_id,
            reply_to_message_id=original.message_id,
            group_id=original.group_id,
            created_at=created_at,
            ttl=reply_ttl,
            message_type=original.message_type,
        )

    @classmethod
    def from_metadata(
        cls, metadata: Metadata, content: RecordDict | None = None, error: Error | None = None
    ) -> Message:
        """Rebuild a message exactly as described, for the codec and runtimes.

        No clock is read and no default applied; exactly one of ``content`` and ``error``.
        """
        if (content is None) == (error is None):
            raise InvalidTypeError("Message.from_metadata: give exactly one of content or error")
        message = object.__new__(cls)
        message._metadata, message._content, message._error = metadata, content, error
        return message

    @property
    def metadata(self) -> Metadata:
        """The message's ``Metadata``."""
        return self._metadata

    @property
    def content(self) -> RecordDict:
        """The content of this message; raises ``MessageFieldError`` for an error message."""
        if self._content is None:
            raise MessageFieldError(
                f"this message carries an error, not content ({self._error!r}); "
                "check message.has_content() or has_error() first"
            )
        return self._content

    @property
    def error(self) -> Error:
        """The error this message reports; raises ``MessageFieldError`` for a content message."""
        if self._error is None:
            raise MessageFieldError(
                "this message carries content, not an error; check message.has_error() first"
            )
        return self._error

    def has_content(self) -> bool:
        """Return True if the message has content, else False."""
        return self._content is not None

    def has_error(self) -> bool:
        """Return True if the message has an error, else False."""
        return self._error is not None

    @property
    def sender(self) -> int:
        """Alias of ``metadata.src_node_id`` (handler style)."""
        return self._metadata.src_node_id

    @property
    def receiver(self) -> int:
        """Alias of ``metadata.dst_node_id`` (handler style)."""
        return self._metadata.dst_node_id

    @property
    def msg_type(self) -> str:
        """Alias of ``metadata.message_type`` (handler style)."""
        return self._metadata.message_type

    def create_reply(self, content: RecordDict, ttl: float | None = None) -> Message:
        """Create a reply to this message with the given content and TTL.

        The reply goes back to this message's sender: source and destination are swapped,
        ``run_id``, ``group_id`` and ``message_type`` are inherited, and
        ``reply_to_message_id`` is this message's ``message_id``.

        Parameters
        ----------
        content
            The records the reply carries.
        ttl
            Seconds to live. If None, what this message has left::

                ttl = msg.metadata.ttl - (reply.metadata.created_at - msg.metadata.created_at)

            which is <= 0 when this message has already expired: such a reply is built, and
            the runtime refuses to send it. A ttl longer than what this message has left is
            capped to it, with a ``UserWarning``: the reply expires when this message does.
        """
        return Message(content, reply_to=self, ttl=ttl)

    def create_error_reply(self, error: Error, ttl: float | None = None) -> Message:
        """Create a reply to this message that reports ``error`` instead of content.

        Metadata follow the same rules as ``create_reply``, and so does ``ttl`` when it is
        None. A ``ttl`` that is given is kept as it is, even past this message's expiry: an
        error reply may have to report that this message expired (``MESSAGE_EXPIRED``).
        """
        return Message(error, reply_to=self, ttl=ttl)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return (
            self._metadata == other._metadata
            and self._content == other._content
            and self._error == other._error
        )

    __hash__ = None  # type: ignore[assignment]  # content is mutable: not hashable

    def __repr__(self) -> str:
        meta = self._metadata
        body = f"content={self._content!r}" if self._content is not None else f"{self._error!r}"
        return (
            f"Message({meta.message_type!r}, {meta.src_node_id} -> {meta.dst_node_id}, "
            f"group={meta.group_id!r}, {body})"
        )


def mark_sent(message: Message, *, run_id: int, message_id: str, src_node_id: int) -> None:
    """Fill the fields a runtime owns when it sends ``message`` (for runtime authors).

    ``created_at`` and ``ttl`` are never changed.
    """
    old = message._metadata
    # Built field by field: 4x faster than dataclasses.replace, and this runs on every send.
    message._metadata = Metadata(
        run_id,
        message_id,
        src_node_id,
        old.dst_node_id,
        old.reply_to_message_id,
        old.group_id,
        old.created_at,
        old.ttl,
        old.message_type,
    )
