"""Who gets in, under which node id: node keys, revocation, client certificates, the audit log.

Every refusal concerns one peer only: after it, the federation's own client still gets its
answers. Nothing here waits on a sleep: revocations and departures are waited for as events.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from fedbus.errors import RunError
from fedbus.runtime.grpc import (
    ClientSettings,
    GrpcClient,
    GrpcServer,
    KeyRegistry,
    NodeIdentity,
    NodeKey,
    ServerTls,
    connect,
    read_audit,
    serve,
)
from fedbus.runtime.grpc.identity import CHALLENGE_KEY, NODE_NAME_KEY, SIGNATURE_KEY

from ...conftest import TlsFiles
from .conftest import TOKEN, RawStream, wait_until
from .test_security import Hub, Pinger

STUCK = 60.0


@dataclass
class Site:
    """A server with a key registry, and the keys of its nodes."""

    server: GrpcServer
    registry: KeyRegistry
    keys: dict[str, NodeKey]
    audit: Path
    address: str

    def join(self, name: str, **settings: object) -> tuple[GrpcClient, Pinger]:
        pinger = Pinger()
        identity = NodeIdentity(name, self.keys[name])
        options = ClientSettings(identity=identity, connect_timeout=10, **settings)  # type: ignore[arg-type]
        client = connect(pinger, self.address, insecure=True, settings=options)
        return client, pinger

    def revoke(self, name: str) -> None:
        """What ``fedbus keys revoke`` does: another process edits the file."""
        other = KeyRegistry.load(self.registry.path)
        other.revoke(name)
        other.save()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    registry = KeyRegistry.load(tmp_path / "nodes.json", create=True)
    keys = {name: NodeKey.generate() for name in ("alice", "bob", "pinned")}
    registry.register("alice", keys["alice"].public_key)
    registry.register("bob", keys["bob"].public_key)
    registry.register("pinned", keys["pinned"].public_key, node_id=7)
    registry.save()
    audit = tmp_path / "audit.jsonl"
    server = serve(
        Hub(), "127.0.0.1:0", keys=registry.path, insecure=True, audit_log=audit, max_clients=10
    )
    yield Site(server, registry, keys, audit, f"127.0.0.1:{server.port}")
    server.stop()
    assert server.wait(STUCK)


def still_answers(pinger: Pinger, client: GrpcClient) -> None:
    client.submit(pinger.ping)
    assert pinger.replies.get(timeout=STUCK).has_content()


def test_a_registered_key_joins_and_keeps_its_node_id(site: Site) -> None:
    alice, pinger = site.join("alice")
    pinned, _ = site.join("pinned")
    assert pinned.node_id == 7  # the registry pins it
    still_answers(pinger, alice)
    first = alice.node_id
    alice.stop()
    assert alice.wait(STUCK)
    # a restarted alice (a new process: nothing but its key) gets its node id back
    again, pinger = site.join("alice")
    assert again.node_id == first
    still_answers(pinger, again)
    events = [(e["event"], e.get("name")) for e in read_audit(site.audit)]
    assert ("join", "alice") in events
    assert ("reconnect", "alice") in events


def test_without_the_key_nobody_takes_a_departed_nodes_id(site: Site) -> None:
    alice, _ = site.join("alice")
    taken = alice.node_id
    alice.stop()
    assert alice.wait(STUCK)
    wait_until(lambda: taken not in site.server.connected, STUCK)
    # bob's own key does not prove alice: he cannot ask for her id, nor for a pinned one
    with pytest.raises(RunError, match="belongs to another node"):
        site.join("bob", node_id=taken)
    with pytest.raises(RunError, match="belongs to another node"):
        site.join("bob", node_id=7)
    # a key made by an attacker under alice's name proves nothing
    site.keys["alice"] = NodeKey.generate()
    with pytest.raises(RunError, match="does not prove the registered key"):
        site.join("alice")
    # nor does a name without a signature
    raw = RawStream(site.server.port, token=None, **{NODE_NAME_KEY: "bob"})
    assert raw.status()[0] == grpc.StatusCode.UNAUTHENTICATED
    bob, pinger = site.join("bob")
    still_answers(pinger, bob)


def test_a_replayed_signature_is_refused(site: Site) -> None:
    challenge = site.server._clients.challenges.issue()
    signature = site.keys["bob"].sign_challenge(challenge, "bob", None)
    proof = {NODE_NAME_KEY: "bob", CHALLENGE_KEY: challenge, SIGNATURE_KEY: signature}
    first = RawStream(site.server.port, token=None, **proof)  # type: ignore[arg-type]
    assert first.node_id >= 1
    replay = RawStream(site.server.port, token=None, **proof)  # type: ignore[arg-type]
    code, details = replay.status()
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert "challenge is missing, unknown, used or expired" in details
    first.close()


def test_a_revoked_key_is_disconnected_at_once_and_refused_after(site: Site) -> None:
    alice, alice_pings = site.join("alice", reconnect=True)
    bob, bob_pings = site.join("bob")
    still_answers(alice_pings, alice)
    site.revoke("alice")
    # mid-run: the server sees the file change and closes alice's stream for good
    assert alice.wait(STUCK)
    assert alice.error is not None
    assert "revoked" in str(alice.error)
    with pytest.raises(RunError, match="was revoked"):
        site.join("alice")
    still_answers(bob_pings, bob)  # the federation goes on
    events = read_audit(site.audit)
    revoked = [e for e in events if e["event"] == "revoked"]
    assert [e["name"] for e in revoked] == ["alice"]
    refused = [e for e in events if e["event"] == "refused" and e.get("name") == "alice"]
    assert refused
    assert "revoked" in refused[-1]["reason"]


def test_keys_without_a_token_refuse_token_holders_and_never_log_secrets(site: Site) -> None:
    stranger = RawStream(site.server.port, token=TOKEN)
    code, details = stranger.status()
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert "requires a node key" in details
    alice, _ = site.join("alice")
    alice.stop()
    assert alice.wait(STUCK)
    text = site.audit.read_text()
    assert TOKEN not in text
    for line in text.splitlines():
        event = json.loads(line)
        assert not {"token", "signature", "challenge"} & set(event)
    assert {e["event"] for e in read_audit(site.audit)} >= {"join", "refused", "leave"}


def test_a_registered_key_works_over_tls(tmp_path: Path, tls_files: TlsFiles) -> None:
    registry = KeyRegistry.load(tmp_path / "nodes.json", create=True)
    key = NodeKey.generate()
    registry.register("alice", key.public_key)
    registry.save()
    tls = ServerTls.from_files(tls_files.cert, tls_files.key)
    server = serve(Hub(), "127.0.0.1:0", keys=registry.path, tls=tls)
    try:
        pinger = Pinger()
        client = connect(
            pinger,
            f"127.0.0.1:{server.port}",
            root_certificates=tls_files.ca.read_bytes(),
            settings=ClientSettings(identity=NodeIdentity("alice", key), connect_timeout=10),
        )
        still_answers(pinger, client)
    finally:
        server.stop()
        assert server.wait(STUCK)


def test_client_certificates_prove_the_node_and_keep_its_id(tls_files: TlsFiles) -> None:
    tls = ServerTls.from_files(tls_files.cert, tls_files.key)
    server = serve(Hub(), "127.0.0.1:0", tls=tls, client_ca=tls_files.ca.read_bytes())
    address = f"127.0.0.1:{server.port}"
    roots = tls_files.ca.read_bytes()
    site_a = ServerTls.from_files(tls_files.client_cert, tls_files.client_key)
    stranger = ServerTls.from_files(tls_files.stranger_cert, tls_files.stranger_key)
    quick = ClientSettings(connect_timeout=2.0)
    try:
        pinger = Pinger()
        client = connect(pinger, address, root_certificates=roots, certificate=site_a)
        still_answers(pinger, client)
        first = client.node_id
        # no certificate, or one from another CA: the TLS handshake itself fails
        with pytest.raises(RunError, match="could not connect"):
            connect(Pinger(), address, token=TOKEN, root_certificates=roots, settings=quick)
        with pytest.raises(RunError, match="could not connect"):
            connect(
                Pinger(), address, root_certificates=roots, certificate=stranger, settings=quick
            )
        client.stop()
        assert client.wait(STUCK)
        again = connect(Pinger(), address, root_certificates=roots, certificate=site_a)
        assert again.node_id == first
    finally:
        server.stop()
        assert server.wait(STUCK)


def test_a_token_holder_cannot_take_an_anonymous_nodes_id() -> None:
    server = serve(Hub(), "127.0.0.1:0", token=TOKEN, insecure=True)
    try:
        pinger = Pinger()
        client = connect(pinger, f"127.0.0.1:{server.port}", token=TOKEN, insecure=True)
        taken = client.node_id
        client.stop()
        assert client.wait(STUCK)
        wait_until(lambda: taken not in server.connected, STUCK)
        thief = RawStream(server.port, node_id=taken)
        code, details = thief.status()
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert "belongs to another node" in details
        assert server.stats.connections_refused == 1
    finally:
        server.stop()
        assert server.wait(STUCK)
