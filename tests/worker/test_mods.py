"""Mods: a chain around a worker's handlers of requests, and a hook on what it sends."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from fedbus import ConfigRecord, Message, RecordDict, Worker
from fedbus.errors import DecodeError, InvalidTypeError, SendError
from fedbus.message import ErrorCode, mark_sent
from fedbus.worker import SERVER_ROLE, handler
from fedbus.worker.mods import CallNext, MessageContext, Mod

from ..conftest import RunFederation


class Sent:
    """A stand-in runtime that keeps what a worker sends, stamped as a runtime would."""

    def __init__(self, node_id: int) -> None:
        self.node_id = node_id
        self.messages: list[Message] = []

    def send(self, message: Message) -> None:
        mark_sent(message, run_id=1, message_id=f"m{len(self.messages)}", src_node_id=self.node_id)
        self.messages.append(message)

    def call_later(self, delay: float, callback: Callable[[], None]) -> Any:
        raise AssertionError("no timers here")

    def report_work(self, num_samples: int) -> None: ...

    def stop(self) -> None: ...


def request(kind: str = "ping", value: int = 1, sender: int = 0) -> Message:
    message = Message(RecordDict({"c": ConfigRecord({"value": value})}), 1, kind)
    mark_sent(message, run_id=1, message_id=f"{kind}-{value}", src_node_id=sender)
    return message


class Echo(Worker):
    """Replies to ``ping`` with the value it got and what the mods handed it."""

    def __init__(self) -> None:
        super().__init__(1)
        self.calls: list[str] = []
        self.comm = Sent(1)
        self.attach(self.comm, 1)  # type: ignore[arg-type]

    @handler("ping", senders=[SERVER_ROLE], replies=False)
    def on_ping(self, message: Message) -> Message:
        self.calls.append("handler")
        context = self.context
        handed = context.get("handed", "") if context is not None else "no context"
        value = message.content["c"]["value"]  # type: ignore[index]
        return message.create_reply(
            RecordDict({"c": ConfigRecord({"value": value, "handed": handed})})
        )


def recording(name: str, calls: list[str]) -> Callable[..., Message | None]:
    def mod(message: Message, context: MessageContext, call_next: CallNext) -> Message | None:
        calls.append(f"{name} in")
        reply = call_next(message, context)
        calls.append(f"{name} out")
        return reply

    return mod


def only_reply(worker: Echo) -> Message:
    assert len(worker.comm.messages) == 1, worker.comm.messages
    return worker.comm.messages[0]


def test_mods_run_in_order_around_the_handler() -> None:
    worker = Echo()
    worker.use(recording("a", worker.calls)).use(recording("b", worker.calls))
    worker.deliver(request())
    assert worker.calls == ["a in", "b in", "handler", "b out", "a out"]
    reply = only_reply(worker)
    assert reply.metadata.reply_to_message_id == "ping-1"
    assert reply.content["c"]["value"] == 1  # type: ignore[index]


def test_a_mod_hands_the_handler_what_it_needs_through_the_context() -> None:
    def hand(message: Message, context: MessageContext, call_next: CallNext) -> Message | None:
        context.values["handed"] = "terms"
        return call_next(message, context)

    plain, modded = Echo(), Echo().use(hand)
    plain.deliver(request())
    modded.deliver(request())
    assert only_reply(plain).content["c"]["handed"] == "no context"  # type: ignore[index]
    assert only_reply(modded).content["c"]["handed"] == "terms"  # type: ignore[index]
    assert modded.context is None  # only while a request is handled


def test_a_mod_may_replace_the_request_and_the_reply() -> None:
    def double(message: Message, context: MessageContext, call_next: CallNext) -> Message | None:
        value = message.content["c"]["value"]  # type: ignore[index]
        content = RecordDict({"c": ConfigRecord({"value": 2 * value})})
        changed = Message.from_metadata(message.metadata, content=content)
        reply = call_next(changed, context)
        assert reply is not None
        reply.content["c"]["value"] += 100  # type: ignore[index,operator]
        return reply

    worker = Echo().use(double)
    worker.deliver(request(value=5))
    assert only_reply(worker).content["c"]["value"] == 110  # type: ignore[index]


def test_a_mod_may_answer_without_the_handler() -> None:
    def refuse_odd(
        message: Message, context: MessageContext, call_next: CallNext
    ) -> Message | None:
        if message.content["c"]["value"] % 2:  # type: ignore[index,operator]
            return message.create_reply(RecordDict({"c": ConfigRecord({"refused": True})}))
        return call_next(message, context)

    worker = Echo().use(refuse_odd)
    worker.deliver(request(value=3))
    assert worker.calls == []
    assert only_reply(worker).content["c"]["refused"] is True  # type: ignore[index]


def test_a_raising_mod_gives_an_error_reply_for_that_message_only() -> None:
    def fragile(message: Message, context: MessageContext, call_next: CallNext) -> Message | None:
        if message.content["c"]["value"] == 13:  # type: ignore[index]
            raise ValueError("unlucky value")
        return call_next(message, context)

    worker = Echo().use(fragile)
    worker.deliver(request(value=13))
    worker.deliver(request(value=14))
    first, second = worker.comm.messages
    assert first.has_error()
    assert first.error.code == ErrorCode.HANDLER_EXCEPTION
    assert "ValueError: unlucky value" in (first.error.reason or "")
    assert first.metadata.reply_to_message_id == "ping-13"
    assert not second.has_error()
    assert second.content["c"]["value"] == 14
    assert worker.calls == ["handler"]


def test_a_mod_returning_what_is_no_message_is_an_error_reply() -> None:
    worker = Echo().use(lambda message, context, call_next: "oops")
    worker.deliver(request())
    reply = only_reply(worker)
    assert reply.has_error()
    assert "returned str, expected a Message" in (reply.error.reason or "")


def test_refused_and_unknown_requests_never_reach_the_mods() -> None:
    calls: list[str] = []
    worker = Echo().use(recording("a", calls))
    worker.deliver(request(sender=2))  # a client may not ping a client
    worker.deliver(request("nothing"))
    codes = [message.error.code for message in worker.comm.messages]
    assert codes == [ErrorCode.PERMISSION_DENIED, ErrorCode.UNKNOWN_MESSAGE_TYPE]
    assert calls == []


class Stamp(Mod):
    """Adds a record to every message its worker sends outside a reply."""

    def __init__(self, name: str) -> None:
        self.name = name

    def on_send(self, message: Message, context: MessageContext) -> Message:
        content = RecordDict(dict(message.content))
        stamps = list(content["stamps"]["by"]) if "stamps" in content else []  # type: ignore[index]
        content["stamps"] = ConfigRecord({"by": [*stamps, self.name]})
        return Message(content, message.metadata.dst_node_id, message.metadata.message_type)


class Tell(Worker):
    """Sends a ``note`` from its handler, besides the reply it returns."""

    @handler("ping")
    def on_ping(self, message: Message) -> Message:
        self.send(Message(RecordDict(), 0, "note"))
        return message.create_reply(RecordDict())


def test_sends_pass_the_outgoing_hooks_and_returned_replies_do_not() -> None:
    worker = Tell(1).use(Stamp("outer"), Stamp("inner"))
    comm = Sent(1)
    worker.attach(comm, 1)  # type: ignore[arg-type]
    assert worker._incoming == ()  # on_send only: not in the request chain
    worker.deliver(request())
    note, reply = comm.messages
    # the innermost mod sees a send first, as it sees a reply first
    assert note.content["stamps"]["by"] == ["inner", "outer"]  # type: ignore[index]
    assert "stamps" not in reply.content


def test_a_request_is_awaited_under_the_id_of_what_was_sent() -> None:
    server = Worker(0).use(Stamp("s"))
    comm = Sent(0)
    server.attach(comm, 0)  # type: ignore[arg-type]
    replies: list[Message] = []
    message_id = server.request(Message(RecordDict(), 1, "ask"), replies.append)
    (sent,) = comm.messages
    assert sent.metadata.message_id == message_id
    assert "stamps" in sent.content
    reply = sent.create_reply(RecordDict())
    mark_sent(reply, run_id=1, message_id="r", src_node_id=1)
    server.deliver(reply)
    assert replies == [reply]  # replies go to on_reply, past the mods


class Replies(Mod):
    """Sees the replies to its worker's requests, marks them, and hears of forgotten ones."""

    def __init__(self, name: str, log: list[str], fail_on: int | None = None) -> None:
        self.name, self.log, self.fail_on = name, log, fail_on
        self.forgotten: list[str] = []

    def on_reply(self, message: Message, context: MessageContext) -> Message:
        if message.has_error():
            self.log.append(f"{self.name} error {message.error.code}")
            return message
        value = message.content["c"]["value"]  # type: ignore[index]
        self.log.append(f"{self.name} {value}")
        if value == self.fail_on:
            raise DecodeError(f"cannot read {value}")
        content = RecordDict({"c": ConfigRecord({"value": value + 1})})
        return Message.from_metadata(message.metadata, content=content)

    def on_forget(self, message_id: str) -> None:
        self.forgotten.append(message_id)


def asked(server: Worker, comm: Sent, node_id: int, value: int) -> Message:
    """The reply node ``node_id`` gives, with ``value``, to the last request ``server`` sent."""
    reply = comm.messages[-1].create_reply(RecordDict({"c": ConfigRecord({"value": value})}))
    mark_sent(reply, run_id=1, message_id=f"r{value}", src_node_id=node_id)
    return reply


def test_replies_pass_on_reply_outermost_first_before_the_request_sees_them() -> None:
    log: list[str] = []
    server = Worker(0).use(Replies("outer", log), Replies("inner", log))
    comm = Sent(0)
    server.attach(comm, 0)  # type: ignore[arg-type]
    replies: list[Message] = []
    server.request(Message(RecordDict(), 1, "ask"), replies.append)
    server.deliver(asked(server, comm, 1, 10))
    assert log == ["outer 10", "inner 11"]
    assert [reply.content["c"]["value"] for reply in replies] == [12]  # type: ignore[index]
    assert server._incoming == ()
    assert server._outgoing == ()


def test_a_raising_on_reply_fails_that_request_only_and_later_mods_see_the_error() -> None:
    log: list[str] = []
    server = Worker(0).use(Replies("outer", log, fail_on=13), Replies("inner", log))
    comm = Sent(0)
    server.attach(comm, 0)  # type: ignore[arg-type]
    replies: list[Message] = []
    server.request(Message(RecordDict(), 1, "ask"), replies.append)
    server.deliver(asked(server, comm, 1, 13))
    server.request(Message(RecordDict(), 2, "ask"), replies.append)
    server.deliver(asked(server, comm, 2, 20))
    failed, fine = replies
    assert failed.has_error()
    assert failed.error.code == ErrorCode.DECODE_ERROR
    assert "DecodeError: cannot read 13" in (failed.error.reason or "")
    assert failed.sender == 1
    assert failed.metadata.reply_to_message_id == "m0"
    assert fine.content["c"]["value"] == 22  # type: ignore[index]
    assert log == ["outer 13", f"inner error {ErrorCode.DECODE_ERROR}", "outer 20", "inner 21"]
    assert len(comm.messages) == 2  # the two requests: a reply is never answered


def test_an_on_reply_returning_no_message_fails_the_request() -> None:
    class Broken(Mod):
        def on_reply(self, message: Message, context: MessageContext) -> Message:
            return "oops"  # type: ignore[return-value]

    server = Worker(0).use(Broken())
    comm = Sent(0)
    server.attach(comm, 0)  # type: ignore[arg-type]
    replies: list[Message] = []
    server.request(Message(RecordDict(), 1, "ask"), replies.append)
    server.deliver(asked(server, comm, 1, 1))
    (reply,) = replies
    assert reply.error.code == ErrorCode.HANDLER_EXCEPTION
    assert "on_reply returned str" in (reply.error.reason or "")


def test_on_reply_sees_departures_and_on_forget_hears_of_requests_given_up() -> None:
    log: list[str] = []
    mod = Replies("mod", log)
    server = Worker(0).use(mod)
    comm = Sent(0)
    server.attach(comm, 0)  # type: ignore[arg-type]
    replies: list[Message] = []
    gone = server.request(Message(RecordDict(), 1, "ask"), replies.append)
    given_up = server.request(Message(RecordDict(), 2, "ask"), replies.append)
    server.nodes_departed([1])
    assert log == [f"mod error {ErrorCode.NODE_UNAVAILABLE}"]
    server.forget(given_up)
    server.forget("never-sent")
    assert mod.forgotten == [gone, given_up]  # a departure forgets the request too
    late = asked(server, comm, 2, 5)
    server.deliver(late)
    assert server.late_replies == 1
    assert log == [f"mod error {ErrorCode.NODE_UNAVAILABLE}"]  # a late reply reaches no mod


def test_an_on_send_returning_no_message_is_refused() -> None:
    class Broken(Mod):
        def on_send(self, message: Message, context: MessageContext) -> Message:
            return None  # type: ignore[return-value]

    worker = Worker(1).use(Broken())
    worker.attach(Sent(1), 1)  # type: ignore[arg-type]
    with pytest.raises(SendError, match="on_send returned NoneType"):
        worker.send(Message(RecordDict(), 0, "note"))


def test_what_is_no_mod_is_refused_and_a_worker_without_mods_has_none() -> None:
    worker = Worker(1)
    assert worker.mods == ()
    assert worker.context is None
    assert "_incoming" not in vars(worker)  # nothing built per worker until a mod is used
    with pytest.raises(InvalidTypeError, match="got int"):
        worker.use(3)


class CountingMod(Mod):
    """Counts the requests it saw and the sends; the same object on every node it is on."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.sends: list[str] = []

    def __call__(
        self, message: Message, context: MessageContext, call_next: CallNext
    ) -> Message | None:
        self.requests.append(f"{context.node_id}:{message.metadata.message_type}")
        return call_next(message, context)

    def on_send(self, message: Message, context: MessageContext) -> Message:
        self.sends.append(message.metadata.message_type)
        return message


class Asker(Worker):
    start_sends = ("ping",)

    def __init__(self) -> None:
        super().__init__(0)
        self.values: list[int] = []

    def on_start(self) -> None:
        for node_id in (1, 2):
            self.request(Message(RecordDict(), node_id, "ping"), self.on_answer)

    def on_answer(self, reply: Message) -> None:
        self.values.append(reply.content["c"]["value"])  # type: ignore[index]
        if len(self.values) == 2:
            self.stop()


class Answer(Worker):
    @handler("ping", senders=[SERVER_ROLE], replies=False)
    def on_ping(self, message: Message) -> Message:
        context = self.context
        value = context.get("value") if context is not None else -1
        return message.create_reply(RecordDict({"c": ConfigRecord({"value": value})}))


def test_mods_work_on_every_runtime(federation: RunFederation) -> None:
    counting = CountingMod()

    def hand(message: Message, context: MessageContext, call_next: CallNext) -> Message | None:
        context.values["value"] = 10 * context.node_id
        return call_next(message, context)

    server = Asker().use(counting)
    clients = [Answer().use(counting, hand), Answer().use(counting, hand)]
    federation(server, clients)
    assert sorted(server.values) == [10, 20]
    assert sorted(counting.requests) == ["1:ping", "2:ping"]
    assert counting.sends == ["ping", "ping"]  # the server's requests; the replies are returned
