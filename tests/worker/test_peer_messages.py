"""Any worker may send to any node: clients exchange messages with each other directly."""

from __future__ import annotations

from fedbus import ConfigRecord, Message, RecordDict, Worker

from ..conftest import RunFederation


class Starter(Worker):
    """Tells client 1 to pass a token around the ring of clients."""

    start_sends = ("pass",)

    def __init__(self, ring: int) -> None:
        super().__init__(0)
        self.ring = ring
        self.finished_by: list[int] = []
        self.register_handlers("done", self.on_done)

    def on_start(self) -> None:
        self.send(Message(RecordDict({"t": ConfigRecord({"hops": 0})}), 1, "pass"))

    def on_done(self, message: Message) -> None:
        self.finished_by.append(message.sender)
        hops = message.content["t"]["hops"]
        assert hops == self.ring


class RingMember(Worker):
    """Adds one hop and passes the token to the next client; the last one reports to the server."""

    def __init__(self, ring: int) -> None:
        super().__init__()
        self.ring = ring
        self.seen_from: list[int] = []
        self.register_handlers("pass", self.on_pass, sends=["pass", "done"])

    def on_pass(self, message: Message) -> None:
        self.seen_from.append(message.sender)
        hops = message.content["t"]["hops"]
        assert isinstance(hops, int)
        token = RecordDict({"t": ConfigRecord({"hops": hops + 1})})
        if self.node_id < self.ring:
            self.send(Message(token, self.node_id + 1, "pass"))
        else:
            self.send(Message(token, self.server_ID, "done"))


def test_clients_send_to_each_other(federation: RunFederation) -> None:
    ring = 4
    server = Starter(ring)
    clients = [RingMember(ring) for _ in range(ring)]
    federation(server, clients)
    assert server.finished_by == [ring]
    assert [c.seen_from for c in clients] == [[0], [1], [2], [3]]
