"""Who may join and what a peer may send: tokens, TLS, spoofing and bad input.

Each refusal concerns one peer only: after it, the federation's own client still gets its
answers.
"""

from __future__ import annotations

import logging
import queue
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from fedbus import ErrorCode, Message, RecordDict
from fedbus.errors import InvalidArgumentError, RunError
from fedbus.message import decode_message, encode_message, mark_sent
from fedbus.runtime.grpc import (
    ClientSettings,
    GrpcClient,
    GrpcServer,
    ServerTls,
    TransportLimits,
    connect,
    serve,
)
from fedbus.runtime.grpc.framing import HEADER_SIZE, Reassembler, message_frames
from fedbus.worker import Worker

from ...conftest import TlsFiles
from .conftest import TOKEN, RawStream


class Hub(Worker):
    """Node 0: answers ``ping`` requests."""

    def __init__(self) -> None:
        super().__init__(0)
        self.pings: list[Message] = []
        self.register_handlers("ping", self.on_ping)

    def on_ping(self, message: Message) -> Message | None:
        self.pings.append(message)
        if message.has_error() or message.metadata.reply_to_message_id:
            return None
        return message.create_reply(RecordDict())


class Pinger(Worker):
    def __init__(self) -> None:
        super().__init__()
        self.replies: queue.SimpleQueue[Message] = queue.SimpleQueue()
        self.register_handlers("ping", self.replies.put)

    def ping(self) -> None:
        self.send(Message(RecordDict(), 0, "ping"))


@dataclass
class Live:
    server: GrpcServer
    client: GrpcClient
    pinger: Pinger
    hub: Hub

    @property
    def port(self) -> int:
        return self.server.port

    def still_answers(self) -> None:
        self.client.submit(self.pinger.ping)
        reply = self.pinger.replies.get(timeout=10)
        assert reply.has_content()
        assert reply.sender == 0


def start(max_clients: int = 10, **server_options: object) -> Live:
    hub, pinger = Hub(), Pinger()
    options: dict[str, object] = {"token": TOKEN, "insecure": True, **server_options}
    server = serve(hub, "127.0.0.1:0", max_clients=max_clients, **options)  # type: ignore[arg-type]
    client = connect(
        pinger,
        f"127.0.0.1:{server.port}",
        token=TOKEN,
        insecure=True,
        settings=ClientSettings(connect_timeout=10),
    )
    return Live(server, client, pinger, hub)


def shut(live: Live) -> None:
    live.server.stop()
    assert live.server.wait(15)
    assert live.client.wait(15)
    assert live.client.error is None


@pytest.fixture
def live() -> Iterator[Live]:
    federation = start()
    federation.still_answers()
    yield federation
    shut(federation)


def test_wrong_or_missing_token_is_refused_before_any_frame_is_read(live: Live) -> None:
    for token in ("wrong", None):
        raw = RawStream(live.port, token=token)
        raw.send(b"garbage that is never read")
        code, details = raw.status()
        # had the frame been read, the stream would have ended with INVALID_ARGUMENT
        assert code == grpc.StatusCode.UNAUTHENTICATED
        assert "wrong or missing federation token" in details
        raw.close()
    with pytest.raises(RunError, match="UNAUTHENTICATED"):
        connect(Pinger(), f"127.0.0.1:{live.port}", token="wrong", insecure=True)
    live.still_answers()


def test_a_message_claiming_another_sender_is_refused_and_logged(
    live: Live, caplog: pytest.LogCaptureFixture
) -> None:
    raw = RawStream(live.port)
    me = raw.node_id
    spoof = Message(RecordDict(), 0, "ping")
    mark_sent(spoof, run_id=1, message_id="spoof-1", src_node_id=live.client.node_id or 0)
    with caplog.at_level(logging.WARNING, logger="fedbus.grpc.server"):
        for frame in message_frames(encode_message(spoof), 1, 1 << 20):
            raw.send(frame)
        reply = _next_message(raw)
    assert reply.has_error()
    assert reply.error.code == ErrorCode.UNAUTHENTICATED
    assert reply.metadata.dst_node_id == me  # answered to the true sender, not the one claimed
    assert reply.metadata.reply_to_message_id == "spoof-1"
    assert f"refused a message of node {me}: it claims to come from node" in caplog.text
    assert live.hub.pings == [] or all(p.sender != me for p in live.hub.pings)
    live.still_answers()
    assert live.client.worker is live.pinger
    raw.close()


def _next_message(raw: RawStream) -> Message:
    """The first DATA message the raw stream receives (heartbeats skipped)."""
    reassembler = Reassembler(TransportLimits())
    while (frame := raw.next_frame()) is not None:
        _, encoded = reassembler.feed(frame)
        if encoded is not None:
            return decode_message(encoded)
    raise AssertionError("the stream ended before a message arrived")


def test_garbage_bytes_close_that_stream_only(live: Live) -> None:
    raw = RawStream(live.port)
    raw.send(b"\x00" * 100)
    code, details = raw.status()
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "unknown kind 0" in details
    undecodable = RawStream(live.port)
    for frame in message_frames(b"FBUS" + b"\xff" * 200, 1, 1 << 20):
        undecodable.send(frame)
    code, details = undecodable.status()
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "fedbus frame" in details or "format version" in details
    live.still_answers()


def test_an_oversized_frame_or_message_is_refused(live: Live) -> None:
    raw = RawStream(live.port)
    raw.send(bytes([1, 1]) + bytes(5 << 20))  # 5 MiB in one frame: gRPC's limit refuses it
    code, _ = raw.status()
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    huge = RawStream(live.port)
    header = struct.pack("<BBHIQQ", 1, 0, 0, 1, 65 << 30, 0)  # announces 65 GiB: over 64
    huge.send(header + bytes(16))
    code, details = huge.status()
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert f"announces {65 << 30} bytes" in details
    assert len(header) == HEADER_SIZE
    live.still_answers()


def test_a_flood_of_joins_is_bounded_and_the_federation_goes_on() -> None:
    live = start(max_clients=2)
    try:
        strangers = [RawStream(live.port, token="nope") for _ in range(30)]
        assert {s.status()[0] for s in strangers} == {grpc.StatusCode.UNAUTHENTICATED}
        member = RawStream(live.port)
        assert member.node_id == 2
        full = RawStream(live.port)
        code, details = full.status()
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_clients=2" in details
        # the id of a connected node belongs to it: without its proof, nobody else gets it
        taken = RawStream(live.port, node_id=live.client.node_id)
        code, details = taken.status()
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert "belongs to another node" in details
        live.still_answers()
        for stream in [*strangers, member, full, taken]:
            stream.close()
    finally:
        shut(live)


def test_per_node_tokens() -> None:
    server = serve(Hub(), "127.0.0.1:0", node_tokens={1: "one-secret", 2: "two"}, insecure=True)
    address = f"127.0.0.1:{server.port}"

    def join(token: str, node_id: int | None) -> GrpcClient:
        settings = ClientSettings(node_id=node_id, connect_timeout=5)
        return connect(Pinger(), address, token=token, insecure=True, settings=settings)

    try:
        assert join("one-secret", 1).node_id == 1
        with pytest.raises(RunError, match="wrong or missing token for node 2"):
            join("one-secret", 2)
        with pytest.raises(RunError, match="requires a node token"):
            join("one-secret", None)
    finally:
        server.stop()
        assert server.wait(15)


def test_tls_federation_and_refusals(tls_files: TlsFiles) -> None:
    tls = ServerTls.from_files(tls_files.cert, tls_files.key)
    hub, pinger = Hub(), Pinger()
    server = serve(hub, "127.0.0.1:0", token=TOKEN, tls=tls)
    address = f"127.0.0.1:{server.port}"
    try:
        quick = ClientSettings(connect_timeout=1.0)
        with pytest.raises(RunError, match="could not connect"):
            connect(Pinger(), address, token=TOKEN, insecure=True, settings=quick)
        with pytest.raises(RunError, match="could not connect"):
            connect(
                Pinger(),
                address,
                token=TOKEN,
                root_certificates=tls_files.other_ca.read_bytes(),
                settings=quick,
            )
        client = connect(pinger, address, token=TOKEN, root_certificates=tls_files.ca.read_bytes())
        live = Live(server, client, pinger, hub)
        live.still_answers()
    finally:
        server.stop()
        assert server.wait(15)


def test_serving_without_tls_must_be_asked_for(
    tls_files: TlsFiles, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(InvalidArgumentError, match="insecure=True"):
        serve(Hub(), "127.0.0.1:0", token=TOKEN)
    tls = ServerTls.from_files(tls_files.cert, tls_files.key)
    with pytest.raises(InvalidArgumentError, match="not both"):
        serve(Hub(), "127.0.0.1:0", token=TOKEN, tls=tls, insecure=True)
    with pytest.raises(InvalidArgumentError, match="cannot read the TLS certificate"):
        ServerTls.from_files(tls_files.cert.parent / "missing.pem", tls_files.key)
    with pytest.raises(InvalidArgumentError, match=r"TLS private key .* is not a PEM file"):
        ServerTls.from_files(tls_files.cert, Path(__file__))
    with caplog.at_level(logging.WARNING, logger="fedbus.grpc"):
        server = serve(Hub(), "127.0.0.1:0", token=TOKEN, insecure=True)
        server.stop()
        assert server.wait(15)
    assert "WITHOUT TLS" in caplog.text
