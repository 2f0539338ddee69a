"""Dispatch tells requests from replies once: roles per handler, replies only from the node
their request went to, and requests in flight to a departed node answered at once."""

from __future__ import annotations

import pytest

from fedbus import ConfigRecord, Message, RecordDict, Worker
from fedbus.errors import InvalidArgumentError, SendError
from fedbus.message import ErrorCode, Metadata
from fedbus.worker import CLIENT_ROLE, SERVER_ROLE, handler, role_of

from ..conftest import RunFederation


def test_roles_of_nodes() -> None:
    assert role_of(0) == SERVER_ROLE
    assert role_of(1) == role_of(10**9) == CLIENT_ROLE


def test_senders_must_be_known_roles() -> None:
    worker = Worker(1)
    with pytest.raises(InvalidArgumentError, match="roles among"):
        worker.register_handlers("x", lambda m: None, senders=["admin"])
    with pytest.raises(InvalidArgumentError, match="roles among"):
        handler("x", senders=["root"])


class Asker(Worker):
    """The server: asks every client for its id with ``request`` and records the answers."""

    start_sends = ("ask",)

    def __init__(self, clients: list[int]) -> None:
        super().__init__(0)
        self.clients = clients
        self.answers: dict[int, object] = {}
        self.errors: dict[int, int] = {}
        self.request_ids: dict[int, str] = {}

    def on_start(self) -> None:
        for node_id in self.clients:
            message = Message(RecordDict(), node_id, "ask")
            self.request_ids[node_id] = self.request(message, self.on_answer)

    def on_answer(self, reply: Message) -> None:
        if reply.has_error():
            self.errors[reply.sender] = reply.error.code
        else:
            self.answers[reply.sender] = reply.content["a"]["id"]


class Answerer(Worker):
    """A client that answers ``ask`` requests from the server only."""

    @handler("ask", senders=[SERVER_ROLE], replies=False)
    def on_ask(self, message: Message) -> Message:
        return message.create_reply(RecordDict({"a": ConfigRecord({"id": self.node_id})}))


def test_a_request_gets_its_reply_from_its_node(federation: RunFederation) -> None:
    server = Asker([1, 2, 3])
    federation(server, [Answerer(), Answerer(), Answerer()])
    assert server.answers == {1: 1, 2: 2, 3: 3}
    assert server.refused_replies == server.late_replies == 0
    assert server.awaiting(1) == 0


class Impostor(Worker):
    """Answers its own request, then forges a reply to the server's request to node 1.

    It learned that request's id (an attacker that reads another client's traffic); the
    runtime stamps the forgery with the impostor's own node id, as every runtime does.
    """

    def __init__(self, server: Asker) -> None:
        super().__init__()
        self.server = server
        self.register_handlers("ask", self.on_ask, senders=[SERVER_ROLE], replies=False)

    def on_ask(self, message: Message) -> Message:
        target = self.server.request_ids[1]
        stolen = Metadata(
            message.metadata.run_id, target, 0, 1, "", message.metadata.group_id,
            message.metadata.created_at, message.metadata.ttl, "ask",
        )  # fmt: skip
        forged = Message.from_metadata(stolen, content=RecordDict()).create_reply(
            RecordDict({"a": ConfigRecord({"id": 666})})
        )
        assert self.comm_manager is not None
        self.comm_manager.send(forged)  # past Worker.send's own check, as a raw peer would
        return message.create_reply(RecordDict({"a": ConfigRecord({"id": self.node_id})}))


def test_a_reply_from_another_node_is_refused_and_counted() -> None:
    from fedbus.runtime.simulation import ClientProfile, simulate

    server = Asker([1, 2])
    honest, impostor = Answerer(), Impostor(server)
    # node 1 is slow: the forgery reaches the server first
    profiles = {1: ClientProfile(latency=5.0), 2: ClientProfile()}
    simulate(server, [honest, impostor], profiles=profiles.__getitem__)
    assert server.answers == {1: 1, 2: 2}  # the honest reply still counts
    assert server.refused_replies == 1


def test_send_refuses_a_message_claiming_another_sender() -> None:
    worker = Worker(3)
    message = Message(RecordDict(), 0, "x")
    from fedbus.message import mark_sent

    mark_sent(message, run_id=1, message_id="m", src_node_id=4)
    with pytest.raises(SendError, match="cannot send a message whose sender is 4"):
        worker.send(message)


class Relay(Worker):
    """A client that tells another client to finish, which only the server may do."""

    start_sends = ("finish",)

    def __init__(self) -> None:
        super().__init__()
        self.refusals: list[int] = []
        self.finished = False
        self.register_handlers("finish", self.on_finish, senders=[SERVER_ROLE])

    def on_start(self) -> None:
        if self.node_id == 1:
            self.send(Message(RecordDict(), 2, "finish"))

    def on_finish(self, message: Message) -> None:
        if message.has_error():
            self.refusals.append(message.error.code)
        else:
            self.finished = True
            self.stop()


class Quiet(Worker):
    """Sends nothing; with ``handles_finish``, ``finish`` is a server type in the message flow."""

    start_sends = ("finish",)

    def __init__(self, handles_finish: bool) -> None:
        super().__init__(0)
        if handles_finish:
            self.register_handlers("finish", lambda m: None)


def test_a_request_from_a_role_the_handler_does_not_accept_is_refused() -> None:
    from fedbus.runtime.simulation import simulate

    # only clients handle finish, so the flow lets clients send it to clients: the receiving
    # handler, which accepts it from the server only, refuses it
    first, second = Relay(), Relay()
    result = simulate(Quiet(handles_finish=False), [first, second])
    assert first.refusals == [ErrorCode.PERMISSION_DENIED]
    assert not second.finished
    assert second.last_failure is not None
    assert "from server only" in second.last_failure
    assert [entry.event for entry in result.trace] == ["delivered", "delivered"]


def test_a_request_the_flow_does_not_declare_never_reaches_its_target() -> None:
    from fedbus.runtime.simulation import simulate

    # the server handles finish: a client's finish goes to the server, never to a client
    first, second = Relay(), Relay()
    result = simulate(Quiet(handles_finish=True), [first, second])
    assert first.refusals == [ErrorCode.PERMISSION_DENIED]
    assert not second.finished
    assert second.last_failure is None
    assert [entry.event for entry in result.trace] == ["refused", "delivered"]
    assert result.trace[1].metadata.dst_node_id == 1  # the error reply to the sender


def test_requests_in_flight_to_a_departed_node_fail_at_once() -> None:
    sent: list[Message] = []

    class Comm:
        def send(self, message: Message) -> None:
            from fedbus.message import mark_sent

            mark_sent(message, run_id=1, message_id=f"id{len(sent)}", src_node_id=0)
            sent.append(message)

        def call_later(self, delay: float, callback: object) -> None:
            raise AssertionError("no timers here")

        def report_work(self, num_samples: int) -> None: ...

        def stop(self) -> None: ...

    server = Asker([1, 2, 3])
    departed: list[list[int]] = []
    server.on_nodes_departed = departed.append  # type: ignore[method-assign]
    server.attach(Comm(), 0)  # type: ignore[arg-type]
    server.on_start()
    assert server.awaiting(2) == 1
    server.nodes_departed([2, 7])
    assert server.errors == {2: ErrorCode.NODE_UNAVAILABLE}
    assert server.awaiting(2) == 0
    assert server.awaiting(1) == 1
    assert departed == [[2, 7]]
    # the departed node's late reply is no longer awaited: late, not an answer
    late = sent[1].create_reply(RecordDict({"a": ConfigRecord({"id": 2})}))
    from fedbus.message import mark_sent

    mark_sent(late, run_id=1, message_id="late", src_node_id=2)
    server.deliver(late)
    assert 2 not in server.answers
    assert (server.late_replies, server.refused_replies) == (1, 0)
    # a reply to a request that was never sent: refused, whoever sends it
    forged = sent[0].create_reply(RecordDict({"a": ConfigRecord({"id": 1})}))
    mark_sent(forged, run_id=1, message_id="forged", src_node_id=3)
    server.deliver(forged)  # node 1's request, answered by node 3
    replayed = sent[1].create_reply(RecordDict({"a": ConfigRecord({"id": 2})}))
    mark_sent(replayed, run_id=1, message_id="again", src_node_id=2)
    server.deliver(replayed)  # node 2's late reply, a second time: nothing awaits it
    assert (server.late_replies, server.refused_replies) == (1, 1)
    assert server.failed_messages == 1  # Asker has no handler for "ask" replies
    assert server.answers == {}


class Quitter(Answerer):
    """Node 2 leaves the federation instead of answering."""

    @handler("ask", senders=[SERVER_ROLE], replies=False)
    def on_ask(self, message: Message) -> Message | None:
        if self.node_id == 2:
            self.stop()
            return None
        return super().on_ask(message)


def test_a_simulated_client_that_stops_has_departed() -> None:
    from fedbus.runtime.simulation import simulate

    departed: list[list[int]] = []
    server = Asker([1, 2, 3])
    server.on_nodes_departed = departed.append  # type: ignore[method-assign]
    simulate(server, [Quitter(), Quitter(), Quitter()])
    assert server.answers == {1: 1, 3: 3}
    assert server.errors == {2: ErrorCode.NODE_UNAVAILABLE}  # at once, not at the TTL
    assert departed == [[2]]
