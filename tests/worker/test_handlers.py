"""The handler model: custom types, replies, sends, and failures that never kill a worker.

Every test runs on every runtime through the ``federation`` fixture.
"""

from __future__ import annotations

import numpy as np
import pytest

from fedbus import ConfigRecord, ErrorCode, Message, MetricRecord, RecordDict
from fedbus.errors import FlowError, InvalidArgumentError
from fedbus.worker import Worker, handler

from ..conftest import RunFederation


def ping_content(value: int) -> RecordDict:
    return RecordDict({"ping": ConfigRecord({"value": value})})


class Coordinator(Worker):
    """Sends one message of ``message_type`` to each client and records what comes back."""

    def __init__(self, clients: list[int], message_type: str = "ping", then: str | None = None):
        super().__init__(0)
        self.clients, self.message_type, self.then = clients, message_type, then
        self.sent: dict[str, int] = {}
        self.received: list[Message] = []
        self.register_handlers(message_type, self.on_answer)
        if then:
            self.register_handlers(then, self.on_answer)

    def on_start(self) -> None:
        for node_id in self.clients:
            message = Message(ping_content(node_id), node_id, self.message_type)
            self.send(message)
            self.sent[message.metadata.message_id] = node_id
        if self.then:
            for node_id in self.clients:
                self.send(Message(ping_content(node_id), node_id, self.then))

    def on_answer(self, message: Message) -> None:
        self.received.append(message)


class Echo(Worker):
    """Answers ``ping`` with the doubled value; raises on ``boom``."""

    def __init__(self) -> None:
        super().__init__()
        self.handled = 0
        self.register_handlers(message_type="ping", callback_func=self.on_ping)
        self.register_handlers(message_type="boom", callback_func=self.on_boom)

    def on_ping(self, message: Message) -> Message:
        self.handled += 1
        value = message.content["ping"]["value"]
        assert isinstance(value, int)
        return message.create_reply(RecordDict({"pong": MetricRecord({"value": 2 * value})}))

    def on_boom(self, message: Message) -> None:
        raise ValueError("boom happened")


def test_custom_type_reply_reaches_senders_handler(federation: RunFederation) -> None:
    server = Coordinator([1, 2, 3])
    clients = [Echo(), Echo(), Echo()]
    federation(server, clients)
    assert len(server.received) == 3
    for reply in server.received:
        meta = reply.metadata
        assert meta.message_type == "ping"
        assert meta.dst_node_id == 0
        assert server.sent[meta.reply_to_message_id] == meta.src_node_id
        assert reply.content["pong"]["value"] == 2 * meta.src_node_id


def test_unknown_type_gets_error_reply_and_worker_goes_on(federation: RunFederation) -> None:
    server = Coordinator([1, 2], message_type="nothing_handles_this", then="ping")
    clients = [Echo(), Echo()]
    federation(server, clients)
    errors = [m for m in server.received if m.has_error()]
    replies = [m for m in server.received if m.has_content()]
    assert len(errors) == 2
    assert len(replies) == 2
    assert {m.error.code for m in errors} == {ErrorCode.UNKNOWN_MESSAGE_TYPE}
    assert all("nothing_handles_this" in (m.error.reason or "") for m in errors)
    assert all(m.metadata.message_type == "nothing_handles_this" for m in errors)
    assert [c.handled for c in clients] == [1, 1]


def test_handler_exception_gets_error_reply_with_type_and_text(federation: RunFederation) -> None:
    server = Coordinator([1], message_type="boom", then="ping")
    client = Echo()
    federation(server, [client])
    (error,) = [m for m in server.received if m.has_error()]
    assert error.error.code == ErrorCode.HANDLER_EXCEPTION
    assert error.error.reason == "ValueError: boom happened"
    assert client.handled == 1  # the ping after the boom was handled


class Chatty(Worker):
    """A handler that sends extra messages through both spellings and returns a reply."""

    def __init__(self) -> None:
        super().__init__()
        self.register_handlers("ping", self.on_ping, sends=["note"])

    def on_ping(self, message: Message) -> Message:
        self.send(Message(RecordDict(), 0, "note"))
        assert self.comm_manager is not None
        self.comm_manager.send(
            Message(sender=self.ID, receiver=self.server_ID, msg_type="note", content=RecordDict())
        )
        return message.create_reply(RecordDict())


def test_handler_sends_several_messages_and_a_reply(federation: RunFederation) -> None:
    server = Coordinator([1], then="note")
    federation(server, [Chatty()])
    types = sorted(m.metadata.message_type for m in server.received if m.has_content())
    # the client's "note" error comes back too: Chatty has no "note" handler
    assert types == ["note", "note", "ping"]


class Impostor(Worker):
    def __init__(self) -> None:
        super().__init__()
        self.register_handlers("ping", self.on_ping)

    def on_ping(self, message: Message) -> None:
        self.send(Message(sender=7, receiver=0, msg_type="ping", content=RecordDict()))


def test_message_claiming_another_sender_is_refused(federation: RunFederation) -> None:
    server = Coordinator([1])
    federation(server, [Impostor()])
    (error,) = server.received
    assert error.error.code == ErrorCode.HANDLER_EXCEPTION
    assert "cannot send a message whose sender is 7" in (error.error.reason or "")


class Silent(Worker):
    """Receives errors for a type it never handles."""

    def __init__(self) -> None:
        super().__init__(0)
        self.register_handlers("start", lambda m: None)

    def on_start(self) -> None:
        self.send(Message(RecordDict(), 1, "unhandled"))  # undeclared: the flow check allows it


def test_error_meeting_an_unknown_type_is_counted_not_answered(federation: RunFederation) -> None:
    server, client = Silent(), Echo()
    federation(server, [client])
    # the client answered with UNKNOWN_MESSAGE_TYPE; the server has no handler for it either
    assert server.failed_messages == 1
    assert client.failed_messages == 0


def test_decorator_form_registers_handlers() -> None:
    class Decorated(Worker):
        @handler("gradients", sends=["updated_model"])
        def on_gradients(self, message: Message) -> None:
            return None

    worker = Decorated(3)
    (spec,) = worker.handler_specs()
    assert (spec.message_type, spec.sends) == ("gradients", ("updated_model",))
    assert spec.callback == worker.on_gradients


def test_registering_a_type_twice_raises_unless_replacing() -> None:
    worker = Echo()
    with pytest.raises(InvalidArgumentError, match="already has a handler for 'ping'"):
        worker.register_handlers("ping", worker.on_ping)
    worker.register_handlers("ping", worker.on_boom, replace=True)
    assert worker.handler_specs()[0].callback == worker.on_boom


def test_invalid_registrations_are_refused() -> None:
    worker = Echo()
    with pytest.raises(InvalidArgumentError, match="invalid message_type"):
        worker.register_handlers("no spaces", worker.on_ping)
    with pytest.raises(TypeError, match="must be callable"):
        worker.register_handlers("other", "not callable")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not a str"):
        worker.register_handlers("other", worker.on_ping, sends="train")


def test_seed_aliases() -> None:
    worker = Echo()
    worker.attach(comm_manager=None, node_id=4)  # type: ignore[arg-type]
    assert (worker.ID, worker.server_ID, worker.node_id) == (4, 0, 4)


def test_flow_check_refuses_missing_handlers() -> None:
    from fedbus.runtime.simulation import simulate

    class Sender(Worker):
        start_sends = ("ping",)

        def __init__(self) -> None:
            super().__init__(0)
            self.register_handlers("ping", lambda m: None, sends=["gradients"])

    with pytest.raises(FlowError) as excinfo:
        simulate(Sender(), [Worker()])
    text = str(excinfo.value)
    assert "server.ping sends 'gradients', which no worker handles" in text
    assert "on_start sends 'ping'" not in text  # the server handles 'ping' itself


def test_flow_notes_unreachable_handlers() -> None:
    from fedbus.worker import MessageFlow

    flow = MessageFlow.from_roles([("server", Coordinator([1])), ("client", Echo())])
    assert ("client", "boom") in flow.unreachable
    assert "note: nothing declares sending 'boom' to client" in flow.describe()


def test_flow_graph_lists_edges_and_draws_mermaid() -> None:
    from fedbus.worker import MessageFlow

    class Server(Worker):
        start_sends = ("ping",)

        def __init__(self) -> None:
            super().__init__(0)
            self.register_handlers("note", lambda m: None)
            self.register_handlers("ping", lambda m: None)

    flow = MessageFlow.from_roles([("server", Server()), ("client", Chatty())])
    edges = {(e.sender_role, e.trigger, e.message_type, e.receiver_roles) for e in flow.edges}
    assert edges == {
        ("server", "on_start", "ping", ("client",)),
        ("client", "ping", "note", ("server",)),
    }
    assert flow.missing == []
    assert flow.to_mermaid().splitlines() == [
        "flowchart LR",
        '    server["server"]',
        '    client["client"]',
        '    server -- "ping (from on_start)" --> client',
        '    client -- "note (from ping)" --> server',
    ]


def test_numpy_arrays_arrive_intact(federation: RunFederation) -> None:
    from fedbus import ArrayRecord

    weights = np.arange(12, dtype=np.float32).reshape(3, 4)

    class Sender(Worker):
        start_sends = ("weights",)

        def __init__(self) -> None:
            super().__init__(0)
            self.register_handlers("weights", lambda m: None)

        def on_start(self) -> None:
            self.send(Message(RecordDict({"w": ArrayRecord({"w": weights})}), 1, "weights"))

    got: list[np.ndarray] = []

    class Receiver(Worker):
        def __init__(self) -> None:
            super().__init__()
            self.register_handlers("weights", lambda m: got.append(m.content["w"]["w"].numpy()))

    federation(Sender(), [Receiver()])
    np.testing.assert_array_equal(got[0], weights)
