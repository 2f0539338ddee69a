"""``RequestGroup``: the one request/reply primitive every server schedule is written on.

A group sends a set of requests, each remembered with the node it went to, and hears back
through the worker's dispatch (``Worker.request``), which accepts a reply only from that node:
a reply from anybody else never reaches the group (it is refused and counted by the worker).
The group counts what came back and closes

- when every request is answered (a reply, an error reply, or a request timeout),
- when ``enough`` replies were accepted (over-selection: the stragglers are not waited for),
- at its ``deadline`` (seconds after it opened), or
- when its owner calls ``close()``.

On closing it forgets the requests still in flight (a reply to one of them arrives *late* and
is counted by the worker's ``on_late_reply``) and calls ``on_close`` once. A *rolling*
group (asynchronous training) never closes by itself: requests join and leave it for the
whole run.

Schedules are written on it: synchronous rounds open a group per phase in sequence;
asynchronous training keeps one rolling group; SecAgg+ chains four groups, each opened by the
previous one's ``on_close``. A new multi-stage protocol is one more schedule (docs/protocols.md).

Example
-------
>>> from fedbus.message import Message, RecordDict
>>> group = RequestGroup(worker, on_reply=keep, on_close=aggregate, deadline=60.0)  # doctest: +SKIP
>>> for node_id in sampled:  # doctest: +SKIP
...     group.send(Message(content, node_id, "train"))
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial

from fedbus.errors import FedbusError, InvalidArgumentError
from fedbus.fl.watchdog import WaitingFor, Watchdog
from fedbus.message import Message, now
from fedbus.worker import TimerHandle, Worker

__all__ = ["RequestGroup"]

logger = logging.getLogger("fedbus.requests")

#: Called with (node id, reply) for each content reply; raising ``FedbusError`` refuses the
#: reply, which then counts as that node's failure.
OnReply = Callable[[int, Message], None]
#: Called with (node id, message id of the request, reason) for each request that failed: an
#: error reply, a refused reply or a request timeout.
OnFailure = Callable[[int, str, str], None]


class RequestGroup:
    """A set of requests in flight and the rule for when they are done.

    Parameters
    ----------
    worker
        The worker that sends the requests and receives the replies.
    on_reply
        Called with ``(node_id, reply)`` for each reply with content, from the node its request
        went to. Raise a ``FedbusError`` to refuse it: it then counts as a failure.
    on_close
        Called once with the group when it closes.
    on_failure
        Called with ``(node_id, message_id, reason)`` for each failed request (error reply,
        refused reply, request timeout), ``message_id`` being the request's.
    enough
        Close once this many replies were accepted (None: wait for every request).
    deadline
        Close this many seconds (the runtime's clock) after the group opened; None: never.
    request_timeout
        Give up a request this many seconds after it was sent (a failure); None: never.
    rolling
        Never close by itself, even with nothing in flight (asynchronous training).
    name
        Used in logs, e.g. ``"round 3 train"``.
    watchdog
        The owner's ``Watchdog``: while the group is open (and not rolling), it warns when the
        group has waited too long, naming the nodes that have not answered.
    """

    def __init__(
        self,
        worker: Worker,
        *,
        on_reply: OnReply,
        on_close: Callable[[RequestGroup], None] | None = None,
        on_failure: OnFailure | None = None,
        enough: int | None = None,
        deadline: float | None = None,
        request_timeout: float | None = None,
        rolling: bool = False,
        name: str = "requests",
        watchdog: Watchdog | None = None,
    ) -> None:
        for setting, value in (("deadline", deadline), ("request_timeout", request_timeout)):
            if value is not None and not value > 0:
                raise InvalidArgumentError(f"RequestGroup: {setting} must be > 0, got {value!r}")
        if enough is not None and enough < 1:
            raise InvalidArgumentError(f"RequestGroup: enough must be >= 1, got {enough!r}")
        self.worker, self.name = worker, name
        self._on_reply, self._on_close, self._on_failure = on_reply, on_close, on_failure
        self.enough, self.rolling, self.request_timeout = enough, rolling, request_timeout
        #: Requests in flight: message id -> node id.
        self.pending: dict[str, int] = {}
        self.sent = 0
        self.replied = 0
        self.failed = 0
        self.closed = False
        self._timers: dict[str, TimerHandle] = {}
        self._deadline = (
            None if deadline is None else worker.call_later(deadline, self._on_deadline)
        )
        self._deadline_at = None if deadline is None else now() + deadline
        self._watchdog = watchdog
        self._wait = None if watchdog is None or rolling else watchdog.watch(name, self.waiting)

    # -- sending ------------------------------------------------------------------------------
    def send(self, message: Message) -> str:
        """Send ``message`` as one of this group's requests; returns its message id."""
        if self.closed:
            raise InvalidArgumentError(f"{self.name}: the group is closed; open a new one")
        node_id = message.metadata.dst_node_id
        message_id = self.worker.request(message, self._answered)
        self.pending[message_id] = node_id
        self.sent += 1
        if self.request_timeout is not None:
            self._timers[message_id] = self.worker.call_later(
                self.request_timeout, partial(self._timed_out, message_id)
            )
        return message_id

    def send_all(self, messages: list[Message]) -> None:
        """Send each of ``messages``; a group that got nothing to send closes at once."""
        for message in messages:
            self.send(message)
        self.close_if_done()

    @property
    def in_flight(self) -> int:
        """Requests sent and not yet answered or given up."""
        return len(self.pending)

    def waiting(self) -> WaitingFor:
        """What the group waits for, and the nodes it waits on (the watchdog's warning, a
        dashboard): replies so far of those sent, and when the group's deadline falls."""
        what = f"for {len(self.pending)} of {self.sent} replies"
        if self.enough is not None and self.enough < self.sent:
            what += f" ({self.enough - self.replied} more close it)"
        nodes = list(self.pending.values())
        return WaitingFor(what, nodes, self.replied, self.sent, self._deadline_at)

    # -- what comes back ----------------------------------------------------------------------
    def _answered(self, reply: Message) -> None:
        # the worker's dispatch let through only a reply from the node the request went to
        message_id = reply.metadata.reply_to_message_id
        node_id = None if self.closed else self.pending.pop(message_id, None)
        if node_id is None:
            return  # the group closed while the dispatch held it: nothing more to count
        self._cancel_timer(message_id)
        if reply.has_error():
            self._fail(node_id, message_id, f"error reply {reply.error!r}")
        else:
            try:
                self._on_reply(node_id, reply)
            except FedbusError as exc:
                self._fail(node_id, message_id, f"reply refused: {exc}", warn=True)
            else:
                self.replied += 1
        self.close_if_done()

    def _timed_out(self, message_id: str) -> None:
        self._timers.pop(message_id, None)
        node_id = self.pending.pop(message_id, None)
        if node_id is None or self.closed:
            return
        self.worker.forget(message_id)
        self._fail(
            node_id, message_id, f"no answer within request_timeout={self.request_timeout} s"
        )
        self.close_if_done()

    def _fail(self, node_id: int, message_id: str, reason: str, *, warn: bool = False) -> None:
        self.failed += 1
        log = logger.warning if warn else logger.info
        log("%s: node %s failed: %s", self.name, node_id, reason)
        if self._on_failure is not None:
            self._on_failure(node_id, message_id, reason)

    # -- closing ------------------------------------------------------------------------------
    def close_if_done(self) -> None:
        """Close if every request is answered (unless rolling) or enough replies came."""
        if self.closed:
            return
        if (self.enough is not None and self.replied >= self.enough) or (
            not self.rolling and not self.pending
        ):
            self.close()

    def _on_deadline(self) -> None:
        self._deadline = None
        if not self.closed:
            logger.info("%s: deadline passed with %d in flight", self.name, len(self.pending))
            self.close()

    def close(self) -> None:
        """Stop waiting: forget what is in flight, cancel timers, call ``on_close`` once."""
        if self.closed:
            return
        self.closed = True
        for message_id in self.pending:
            self.worker.forget(message_id)
            self._cancel_timer(message_id)
        self.pending.clear()
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if self._watchdog is not None:  # before on_close, which may open the next group
            self._watchdog.release(self._wait)
        if self._on_close is not None:
            self._on_close(self)

    def _cancel_timer(self, message_id: str) -> None:
        timer = self._timers.pop(message_id, None)
        if timer is not None:
            timer.cancel()
