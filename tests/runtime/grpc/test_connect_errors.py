"""A client that cannot reach its server says what it tried and what to check."""

from __future__ import annotations

import logging
import socket

import grpc
import pytest

from fedbus.errors import RunError
from fedbus.runtime.grpc import ClientSettings, ServerTls, connect, serve
from fedbus.runtime.grpc.client import connect_hint
from fedbus.worker import Worker

from ...conftest import TlsFiles
from .conftest import TOKEN

QUICK = ClientSettings(connect_timeout=1.0, max_backoff=0.2)


def free_port() -> int:
    """A port on 127.0.0.1 where nothing listens (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def client_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "fedbus.grpc.client" and r.levelno == logging.WARNING
    ]


def test_nothing_listening_names_the_address_and_the_server_to_start(caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.WARNING)
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(RunError) as raised:
        connect(Worker(), address, token=TOKEN, insecure=True, settings=QUICK)
    message = str(raised.value)
    assert message.startswith(f"could not connect to the server at {address} within 1 s: ")
    assert "attempts in " in message
    assert "UNAVAILABLE" in message
    assert "Connection refused" in message
    hint = f"hint: is `fedbus server` running and listening on {address}? check --listen"
    assert hint in message
    first = client_warnings(caplog)[0]  # the first failure is logged at once
    assert f"cannot connect to the server at {address} yet (1 attempt in " in first
    assert hint in first


def test_a_client_without_tls_meeting_a_tls_server_is_told_about_certificates(
    tls_files: TlsFiles, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    tls = ServerTls.from_files(tls_files.cert, tls_files.key)
    server = serve(Worker(0), "127.0.0.1:0", token=TOKEN, tls=tls)
    address = f"127.0.0.1:{server.port}"
    try:
        with pytest.raises(RunError, match="could not connect") as raised:
            connect(Worker(), address, token=TOKEN, insecure=True, settings=QUICK)
        assert "check --root-cert matches the server's certificate" in str(raised.value)
        assert "--insecure" in str(raised.value)
        with pytest.raises(RunError, match="CERTIFICATE_VERIFY_FAILED") as raised:
            connect(
                Worker(),
                address,
                token=TOKEN,
                root_certificates=tls_files.other_ca.read_bytes(),
                settings=QUICK,
            )
        assert "hint: check --root-cert" in str(raised.value)
        assert any("check --root-cert" in line for line in client_warnings(caplog))
    finally:
        server.stop()
        assert server.wait(15)


def test_a_wrong_token_is_refused_at_once_with_what_to_check() -> None:
    server = serve(Worker(0), "127.0.0.1:0", token=TOKEN, insecure=True)
    try:
        with pytest.raises(RunError, match="refused this client: UNAUTHENTICATED") as raised:
            connect(Worker(), f"127.0.0.1:{server.port}", token="wrong", insecure=True)
        assert "hint: check the token file (--token-file) or the node key" in str(raised.value)
    finally:
        server.stop()
        assert server.wait(15)


@pytest.mark.parametrize(
    ("code", "details", "expected"),
    [
        (grpc.StatusCode.UNAVAILABLE, "Domain name not found", "check the host name in h:1"),
        (grpc.StatusCode.UNAVAILABLE, "failed: Connection refused", "is `fedbus server`"),
        (grpc.StatusCode.UNAVAILABLE, "Tls handshake failed (TSI_PROTOCOL_FAILURE)", "--root"),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", "firewall drops packets"),
        (grpc.StatusCode.PERMISSION_DENIED, "a revoked key", "the node key"),
        (grpc.StatusCode.UNAVAILABLE, "something new", ""),
    ],
)
def test_the_hint_follows_the_kind_of_failure(
    code: grpc.StatusCode, details: str, expected: str
) -> None:
    hint = connect_hint(code, details, "h:1")
    assert expected in hint
    assert bool(hint) == bool(expected)
