"""The delivery rules every runtime applies: stamping, expiry, size, routing, error replies."""

from __future__ import annotations

from fedbus import Message, RecordDict
from fedbus.message import Error, ErrorCode, use_clock
from fedbus.runtime.ids import MessageIds
from fedbus.runtime.rules import DeliveryRules, Refusal
from fedbus.worker import RoutingPolicy


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


POLICY = RoutingPolicy(frozenset({("server", "train", "client"), ("client", "join", "server")}))


def rules(clock: Clock, **options: object) -> DeliveryRules:
    return DeliveryRules(7, MessageIds(seed=1), clock, **options)  # type: ignore[arg-type]


def test_stamping_fills_run_id_a_random_id_and_the_true_sender() -> None:
    clock = Clock()
    message = Message(RecordDict(), 0, "join")
    rules(clock).stamp(message, 3)
    metadata = message.metadata
    assert (metadata.run_id, metadata.src_node_id) == (7, 3)
    assert len(metadata.message_id) == 32
    int(metadata.message_id, 16)  # hex


def test_expiry_when_sent_and_in_transit() -> None:
    clock = Clock()
    checks = rules(clock)
    with use_clock(clock):  # created at the runtime's time 0
        message = Message(RecordDict(), 1, "train", ttl=10.0)
    checks.stamp(message, 0)
    assert checks.check_sent(message) is None
    assert checks.check_sent(message, at=11.0) == Refusal(
        ErrorCode.MESSAGE_EXPIRED, "its TTL had passed when sent"
    )
    clock.now = 10.5
    refusal = checks.check_arrived(message)
    assert refusal is not None
    assert (refusal.code, refusal.event) == (ErrorCode.MESSAGE_EXPIRED, "expired")


def test_size_limit() -> None:
    checks = rules(Clock(), max_message_bytes=100)
    assert checks.check_size(100) is None
    refusal = checks.check_size(101)
    assert refusal is not None
    assert refusal.code == ErrorCode.MESSAGE_TOO_LARGE
    assert "101 bytes" in refusal.reason
    assert rules(Clock()).check_size(10**12) is None  # no limit


def test_routing_checks_clients_only() -> None:
    checks = rules(Clock(), policy=POLICY)
    to_client = Message(RecordDict(), 2, "finish")
    checks.stamp(to_client, 1)  # a client's finish for another client
    refusal = checks.check_route(to_client)
    assert refusal is not None
    assert (refusal.code, refusal.event) == (ErrorCode.PERMISSION_DENIED, "refused")
    from_server = Message(RecordDict(), 2, "finish")
    checks.stamp(from_server, 0)  # the server is not checked
    assert checks.check_route(from_server) is None
    join = Message(RecordDict(), 0, "join")
    checks.stamp(join, 4)
    assert checks.check_sent(join) is None


def test_error_replies_come_from_the_receiver_and_never_answer_errors() -> None:
    checks = rules(Clock())
    message = Message(RecordDict(), 5, "train")
    checks.stamp(message, 0)
    reply = checks.error_reply(message, Refusal(ErrorCode.NODE_UNAVAILABLE, "gone"))
    assert reply is not None
    metadata = reply.metadata
    assert (metadata.src_node_id, metadata.dst_node_id) == (5, 0)
    assert metadata.reply_to_message_id == message.metadata.message_id
    assert reply.error.code == ErrorCode.NODE_UNAVAILABLE
    assert "('train'): gone" in str(reply.error.reason)
    error = Message(Error(ErrorCode.UNKNOWN, "x"), reply_to=message)
    assert checks.error_reply(error, Refusal(ErrorCode.NODE_UNAVAILABLE, "gone")) is None
