"""Per-node identity: keys, proofs, challenges, the key registry and the audit log."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import stat
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedbus.errors import InvalidArgumentError, InvalidTypeError
from fedbus.runtime.grpc.audit import MAX_FIELD_CHARS, AuditLog, read_audit
from fedbus.runtime.grpc.identity import (
    CHALLENGE_BYTES,
    CHALLENGE_KEY,
    NODE_NAME_KEY,
    SIGNATURE_KEY,
    Challenges,
    KeyRegistry,
    NodeKey,
    PublicKey,
    check_node_name,
    proof_bytes,
)

CHALLENGE = bytes(range(32))


@pytest.fixture(scope="module")
def alice() -> NodeKey:
    return NodeKey.generate()


@pytest.fixture(scope="module")
def bob() -> NodeKey:
    return NodeKey.generate()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- proofs ----------------------------------------------------------------------------------


def test_metadata_keys_are_lower_case_and_binary_where_raw() -> None:
    assert NODE_NAME_KEY == "fedbus-node-name"
    assert CHALLENGE_KEY == "fedbus-challenge-bin"
    assert SIGNATURE_KEY == "fedbus-signature-bin"


def test_the_signed_bytes_are_exactly_as_documented() -> None:
    assert proof_bytes(CHALLENGE, "alice", 17) == (
        b"fedbus node proof v1\x00" + CHALLENGE + b"alice\x00" + b"17"
    )
    assert proof_bytes(CHALLENGE, "alice", None) == (
        b"fedbus node proof v1\x00" + CHALLENGE + b"alice\x00"
    )
    assert proof_bytes(CHALLENGE, "a", 12) != proof_bytes(CHALLENGE, "a1", 2)


@pytest.mark.parametrize("node_id", [None, 1, 3, 2**63 - 1])
def test_a_proof_verifies_with_its_public_key(alice: NodeKey, node_id: int | None) -> None:
    signature = alice.sign_challenge(CHALLENGE, "alice", node_id)
    assert len(signature) == 64
    assert alice.public_key.verify_challenge(signature, CHALLENGE, "alice", node_id)


@pytest.mark.parametrize(
    ("challenge", "name", "node_id"),
    [
        (CHALLENGE, "alicf", 3),  # wrong name
        (CHALLENGE, "alice", 4),  # wrong node id
        (CHALLENGE, "alice", None),  # an id-less proof is not a proof for node 3, nor back
        (bytes(32), "alice", 3),  # wrong challenge
        (CHALLENGE[:31], "alice", 3),  # malformed challenge: False, not an exception
        (CHALLENGE + b"\0", "alice", 3),
        (CHALLENGE, "al ice", 3),  # invalid name
        (CHALLENGE, "alice", -3),  # invalid node id
        (CHALLENGE, "alice", True),
    ],
)
def test_a_proof_for_anything_else_is_refused(
    alice: NodeKey, challenge: bytes, name: str, node_id: Any
) -> None:
    signature = alice.sign_challenge(CHALLENGE, "alice", 3)
    assert not alice.public_key.verify_challenge(signature, challenge, name, node_id)


def test_an_id_less_proof_does_not_prove_an_id(alice: NodeKey) -> None:
    signature = alice.sign_challenge(CHALLENGE, "alice", None)
    assert not alice.public_key.verify_challenge(signature, CHALLENGE, "alice", 1)


@pytest.mark.parametrize(
    "signature",
    [b"", b"\0" * 64, b"\xff" * 64, os.urandom(64), os.urandom(65), b"x" * 10_000],
    ids=["empty", "zeros", "ones", "random", "random-65", "long"],  # the same in every process
)
def test_garbage_signatures_are_refused_without_raising(alice: NodeKey, signature: bytes) -> None:
    assert not alice.public_key.verify_challenge(signature, CHALLENGE, "alice", 3)


def test_a_signature_that_is_not_bytes_is_refused(alice: NodeKey) -> None:
    signature: Any = alice.sign_challenge(CHALLENGE, "alice", 3).hex()
    assert not alice.public_key.verify_challenge(signature, CHALLENGE, "alice", 3)
    assert not alice.public_key.verify_challenge(None, CHALLENGE, "alice", 3)  # type: ignore[arg-type]


def test_another_key_cannot_prove_for_alice(alice: NodeKey, bob: NodeKey) -> None:
    signature = bob.sign_challenge(CHALLENGE, "alice", 3)
    assert not alice.public_key.verify_challenge(signature, CHALLENGE, "alice", 3)


def test_signing_a_malformed_challenge_is_an_error(alice: NodeKey) -> None:
    with pytest.raises(InvalidArgumentError, match="32 bytes"):
        alice.sign_challenge(b"short", "alice", None)
    with pytest.raises(InvalidArgumentError, match="node name"):
        alice.sign_challenge(CHALLENGE, "", None)


# -- names and public keys -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "alice", "node-17", "x.y_z", "A" * 64, "..", "-"])
def test_valid_names(name: str) -> None:
    assert check_node_name(name) == name


@pytest.mark.parametrize("name", ["", "A" * 65, "a b", "a/b", "ä", "alice\n", "a\0", "a:b"])
def test_invalid_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidArgumentError, match="1 to 64 characters"):
        check_node_name(name)


def test_a_name_must_be_a_str() -> None:
    with pytest.raises(InvalidTypeError):
        check_node_name(b"alice")


def test_public_key_text_round_trip(alice: NodeKey) -> None:
    text = alice.public_key.to_text()
    assert re.fullmatch(r"ed25519 [A-Za-z0-9+/]{43}=", text)
    assert base64.b64decode(text.split(" ")[1]) == alice.public_key.raw
    assert PublicKey.from_text(text) == alice.public_key
    assert PublicKey.from_text(f"  {text}\n") == alice.public_key


def test_the_fingerprint_is_a_short_sha256(alice: NodeKey, bob: NodeKey) -> None:
    key = alice.public_key
    assert key.fingerprint == hashlib.sha256(key.raw).hexdigest()[:16]
    assert key.fingerprint != bob.public_key.fingerprint


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "not a public key"),
        ("ed25519", "not a public key"),
        ("ssh-ed25519 AAAA", "not a public key"),
        ("ED25519 " + "A" * 43 + "=", "not a public key"),
        ("ed25519  " + "A" * 43 + "=", "not valid base64"),
        ("ed25519 " + "A" * 43 + "= alice", "not valid base64"),
        ("ed25519 " + "*" * 43 + "=", "not valid base64"),
        ("ed25519 " + base64.b64encode(bytes(31)).decode(), "31 bytes"),
        ("ed25519 " + base64.b64encode(bytes(33)).decode(), "33 bytes"),
        ("ed25519 " + "A" * 42 + "B=", "non-canonical"),  # padding bits set
    ],
)
def test_malformed_public_key_texts_are_refused(text: str, problem: str) -> None:
    with pytest.raises(InvalidArgumentError, match=problem):
        PublicKey.from_text(text)


def test_public_key_text_must_be_a_str() -> None:
    with pytest.raises(InvalidTypeError):
        PublicKey.from_text(b"ed25519 AAAA")  # type: ignore[arg-type]


# -- node key files --------------------------------------------------------------------------


def test_a_key_file_round_trips_with_mode_0600(tmp_path: Path, alice: NodeKey) -> None:
    path = tmp_path / "alice.key"
    alice.write(path)
    assert mode(path) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    loaded = NodeKey.from_file(path)
    assert loaded.public_key == alice.public_key
    signature = loaded.sign_challenge(CHALLENGE, "alice", 1)
    assert alice.public_key.verify_challenge(signature, CHALLENGE, "alice", 1)


def test_writing_never_overwrites(tmp_path: Path, alice: NodeKey, bob: NodeKey) -> None:
    path = tmp_path / "alice.key"
    alice.write(path)
    before = path.read_bytes()
    with pytest.raises(InvalidArgumentError, match="refusing to overwrite"):
        bob.write(path)
    assert path.read_bytes() == before


def test_a_key_repr_shows_no_secret(alice: NodeKey) -> None:
    assert repr(alice) == f"NodeKey(fingerprint={alice.public_key.fingerprint!r})"


def _ec_key_pem() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _encrypted_pem(key: NodeKey) -> bytes:
    private = serialization.load_pem_private_key(key.to_pem(), password=None)
    return private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    )


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "cannot read"),
        (b"", "not a PEM private key"),
        (b"hello", "not a PEM private key"),
        (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "not a PEM"),
        ("ec", "not an Ed25519 key"),
        ("encrypted", "is encrypted"),
    ],
)
def test_unusable_key_files_are_named_in_the_error(
    tmp_path: Path, alice: NodeKey, content: bytes | str | None, problem: str
) -> None:
    path = tmp_path / "node.key"
    if content == "ec":
        path.write_bytes(_ec_key_pem())
    elif content == "encrypted":
        path.write_bytes(_encrypted_pem(alice))
    elif isinstance(content, bytes):
        path.write_bytes(content)
    with pytest.raises(InvalidArgumentError, match=problem) as caught:
        NodeKey.from_file(path)
    assert str(path) in str(caught.value)


def test_a_folder_is_not_a_key_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="cannot read"):
        NodeKey.from_file(tmp_path)


# -- challenges ------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_challenges_are_random_and_single_use() -> None:
    book = Challenges()
    first, second = book.issue(), book.issue()
    assert len(first) == CHALLENGE_BYTES
    assert first != second
    assert book.consume(second)
    assert not book.consume(second)
    assert book.consume(first)
    assert not book.consume(first)
    assert len(book) == 0


def test_unknown_challenges_are_refused() -> None:
    book = Challenges()
    book.issue()
    assert not book.consume(os.urandom(CHALLENGE_BYTES))
    assert not book.consume(b"")
    assert not book.consume("text")  # type: ignore[arg-type]
    assert len(book) == 1


def test_a_challenge_expires_after_ttl() -> None:
    clock = FakeClock()
    book = Challenges(ttl=30.0, clock=clock)
    early, late = book.issue(), book.issue()
    clock.now += 29.999
    assert book.consume(early)
    clock.now += 0.001  # exactly ttl after issue: gone
    assert not book.consume(late)


def test_expired_challenges_are_forgotten_when_issuing() -> None:
    clock = FakeClock()
    book = Challenges(ttl=10.0, clock=clock)
    for _ in range(5):
        book.issue()
    clock.now += 10.0
    fresh = book.issue()
    assert len(book) == 1
    assert book.consume(fresh)


def test_the_oldest_challenge_goes_when_the_book_is_full() -> None:
    book = Challenges(capacity=3, clock=FakeClock())
    issued = [book.issue() for _ in range(4)]
    assert len(book) == 3
    assert not book.consume(issued[0])
    assert all(book.consume(challenge) for challenge in issued[1:])


def test_a_challenge_is_consumed_once_among_racing_threads() -> None:
    book = Challenges()
    challenge = book.issue()
    start = threading.Barrier(8)
    results: list[bool] = []

    def race() -> None:
        start.wait()
        results.append(book.consume(challenge))

    threads = [threading.Thread(target=race) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 7 + [True]


@pytest.mark.parametrize(("ttl", "capacity"), [(0.0, 10), (-1.0, 10), (10.0, 0)])
def test_challenges_need_a_positive_ttl_and_capacity(ttl: float, capacity: int) -> None:
    with pytest.raises(InvalidArgumentError):
        Challenges(ttl=ttl, capacity=capacity)


# -- the key registry ------------------------------------------------------------------------


@pytest.fixture
def registry_path(tmp_path: Path) -> Path:
    return tmp_path / "registry.json"


def test_registry_round_trip(registry_path: Path, alice: NodeKey, bob: NodeKey) -> None:
    registry = KeyRegistry.load(registry_path, create=True)
    assert registry.names() == []
    registry.register("alice", alice.public_key, node_id=3)
    registry.register("bob", bob.public_key)
    registry.save()

    document = json.loads(registry_path.read_text())
    assert document["format"] == "fedbus-key-registry"
    assert document["version"] == 1
    assert set(document["nodes"]) == {"alice", "bob"}
    entry = document["nodes"]["alice"]
    assert entry["public_key"] == alice.public_key.to_text()
    assert entry["node_id"] == 3
    assert entry["revoked"] is False
    assert entry["revoked_at"] is None
    assert datetime.fromisoformat(entry["registered"]).tzinfo is not None
    assert document["nodes"]["bob"]["node_id"] is None

    loaded = KeyRegistry.load(registry_path)
    assert loaded.names() == ["alice", "bob"]
    assert loaded.nodes() == registry.nodes()
    node = loaded.lookup("alice")
    assert node is not None
    assert (node.name, node.public_key, node.node_id, node.revoked) == (
        "alice",
        alice.public_key,
        3,
        False,
    )
    assert loaded.lookup("carol") is None


def test_a_missing_registry_is_empty_only_when_asked(registry_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="cannot read") as caught:
        KeyRegistry.load(registry_path)
    assert str(registry_path) in str(caught.value)
    registry = KeyRegistry.load(registry_path, create=True)
    assert not registry_path.exists()
    registry.save()
    assert KeyRegistry.load(registry_path).names() == []


def test_a_name_is_registered_once(registry_path: Path, alice: NodeKey, bob: NodeKey) -> None:
    registry = KeyRegistry.load(registry_path, create=True)
    registry.register("alice", alice.public_key)
    with pytest.raises(InvalidArgumentError, match="'alice' is already registered"):
        registry.register("alice", bob.public_key)
    with pytest.raises(InvalidArgumentError, match="'alice' is already registered"):
        registry.register("alice", bob.public_key, replace_revoked=True)
    assert registry.lookup("alice").public_key == alice.public_key  # type: ignore[union-attr]


def test_a_key_is_registered_once(registry_path: Path, alice: NodeKey) -> None:
    registry = KeyRegistry.load(registry_path, create=True)
    registry.register("alice", alice.public_key)
    with pytest.raises(InvalidArgumentError, match="already registered as 'alice'"):
        registry.register("alice2", alice.public_key)


def test_a_pinned_node_id_belongs_to_one_name(
    registry_path: Path, alice: NodeKey, bob: NodeKey
) -> None:
    registry = KeyRegistry.load(registry_path, create=True)
    registry.register("alice", alice.public_key, node_id=3)
    with pytest.raises(InvalidArgumentError, match="node id 3 is pinned to 'alice'"):
        registry.register("bob", bob.public_key, node_id=3)
    registry.revoke("alice")
    with pytest.raises(InvalidArgumentError, match="node id 3 is pinned to 'alice'"):
        registry.register("bob", bob.public_key, node_id=3)
    assert registry.register("bob", bob.public_key, node_id=4).node_id == 4


@pytest.mark.parametrize("node_id", [-1, 2**63])
def test_node_ids_are_int64(registry_path: Path, alice: NodeKey, node_id: int) -> None:
    registry = KeyRegistry.load(registry_path, create=True)
    with pytest.raises(InvalidArgumentError, match=r"\[1, 2\*\*63\)"):
        registry.register("alice", alice.public_key, node_id=node_id)


def test_revoking_keeps_the_entry_and_its_time(registry_path: Path, alice: NodeKey) -> None:
    registry = KeyRegistry.load(registry_path, create=True)
    registry.register("alice", alice.public_key, node_id=3)
    revoked = registry.revoke("alice")
    assert revoked.revoked
    assert revoked.revoked_at is not None
    assert registry.revoke("alice") == revoked  # twice: unchanged
    registry.save()
    node = KeyRegistry.load(registry_path).lookup("alice")
    assert node == revoked


def test_revoking_an_unknown_name_lists_the_known(registry_path: Path, alice: NodeKey) -> None:
    registry = KeyRegistry.load(registry_path, create=True)
    registry.register("alice", alice.public_key)
    with pytest.raises(InvalidArgumentError, match=r"no node 'bob' .*registered: alice"):
        registry.revoke("bob")


def test_a_revoked_name_takes_a_new_key_only_when_asked(
    registry_path: Path, alice: NodeKey, bob: NodeKey
) -> None:
    registry = KeyRegistry.load(registry_path, create=True)
    registry.register("alice", alice.public_key, node_id=3)
    registry.revoke("alice")
    with pytest.raises(InvalidArgumentError, match=r"was revoked at .*replace_revoked"):
        registry.register("alice", bob.public_key, node_id=3)
    with pytest.raises(InvalidArgumentError, match="already revoked as 'alice'"):
        registry.register("alice", alice.public_key, replace_revoked=True)
    node = registry.register("alice", bob.public_key, node_id=3, replace_revoked=True)
    assert (node.public_key, node.node_id, node.revoked, node.revoked_at) == (
        bob.public_key,
        3,
        False,
        None,
    )


def test_a_revoked_key_cannot_come_back_under_another_name(
    registry_path: Path, alice: NodeKey
) -> None:
    registry = KeyRegistry.load(registry_path, create=True)
    registry.register("alice", alice.public_key)
    registry.revoke("alice")
    with pytest.raises(InvalidArgumentError, match="already revoked as 'alice'"):
        registry.register("mallory", alice.public_key)


def test_register_checks_its_arguments(registry_path: Path, alice: NodeKey) -> None:
    registry = KeyRegistry.load(registry_path, create=True)
    with pytest.raises(InvalidArgumentError, match="node name"):
        registry.register("a b", alice.public_key)
    with pytest.raises(InvalidTypeError, match="PublicKey"):
        registry.register("alice", alice.public_key.to_text())  # type: ignore[arg-type]
    with pytest.raises(InvalidTypeError, match="node id"):
        registry.register("alice", alice.public_key, node_id="3")  # type: ignore[arg-type]
    assert registry.names() == []


def _valid_document(alice: NodeKey) -> dict[str, Any]:
    return {
        "format": "fedbus-key-registry",
        "version": 1,
        "nodes": {
            "alice": {
                "public_key": alice.public_key.to_text(),
                "node_id": 3,
                "revoked": False,
                "registered": "2025-01-02T03:04:05Z",
                "revoked_at": None,
            }
        },
    }


def _entry_with(alice: NodeKey, **changes: Any) -> dict[str, Any]:
    document = _valid_document(alice)
    document["nodes"]["alice"].update(changes)
    return document


def test_a_hand_written_registry_loads(registry_path: Path, alice: NodeKey) -> None:
    registry_path.write_text(json.dumps(_valid_document(alice)))
    node = KeyRegistry.load(registry_path).lookup("alice")
    assert node is not None
    assert node.registered == "2025-01-02T03:04:05Z"
    # a hand revocation without a time is still a revocation
    registry_path.write_text(json.dumps(_entry_with(alice, revoked=True)))
    assert KeyRegistry.load(registry_path).lookup("alice").revoked  # type: ignore[union-attr]


MALFORMED: dict[str, tuple[Any, str]] = {
    "not json": (b"{nodes: }", "not valid JSON"),
    "truncated": (b'{"format": "fedbus-key-registry", "nodes": {', "not valid JSON"),
    "not utf-8": (b"\xff\xfe{}", "not valid JSON"),
    "nan": (b'{"format": "fedbus-key-registry", "version": NaN}', "not valid JSON"),
    "a list": ([], "not a fedbus key registry"),
    "other format": ({"format": "something", "version": 1, "nodes": {}}, "not a fedbus key"),
    "newer version": ({"format": "fedbus-key-registry", "version": 2, "nodes": {}}, "version 2"),
    "boolean version": (
        {"format": "fedbus-key-registry", "version": True, "nodes": {}},
        "version True",
    ),
    "unknown key": (
        {"format": "fedbus-key-registry", "version": 1, "nodes": {}, "nodez": {}},
        "unknown keys",
    ),
    "nodes a list": ({"format": "fedbus-key-registry", "version": 1, "nodes": []}, '"nodes"'),
    "missing key": ("drop:revoked_at", "expected the keys"),
    "extra key": ("add:revokd", "expected the keys"),
    "bad public key": ('set:public_key="ed25519 AAAA"', "bytes"),
    "string node id": ('set:node_id="3"', "must be an int"),
    "boolean node id": ("set:node_id=true", "must be an int"),
    "negative node id": ("set:node_id=-1", r"\[1, 2\*\*63\)"),
    "revoked as text": ('set:revoked="yes"', '"revoked" must be true or false'),
    "bad time": ('set:registered="yesterday"', "ISO 8601"),
    "revoked_at not revoked": ('set:revoked_at="2025-01-02T03:04:05Z"', '"revoked" is false'),
    "entry not an object": ("entry:[]", "expected the keys"),
    "invalid name": ("rename:al ice", "1 to 64 characters"),
    "name twice": ("twice", "appears twice"),
    "node id twice": ("pin twice", "pinned to both"),
}


def _malformed(kind: str, alice: NodeKey) -> bytes:
    spec, _ = MALFORMED[kind]
    if isinstance(spec, bytes):
        return spec
    if not isinstance(spec, str):
        return json.dumps(spec).encode()
    document = _valid_document(alice)
    entry = document["nodes"]["alice"]
    action, _, argument = spec.partition(":")
    if action == "drop":
        del entry[argument]
    elif action == "add":
        entry[argument] = False
    elif action == "set":
        key, _, value = argument.partition("=")
        entry[key] = json.loads(value)
    elif action == "entry":
        document["nodes"]["alice"] = []
    elif action == "rename":
        document["nodes"] = {argument: entry}
    elif action == "pin twice":
        second = dict(entry, public_key=NodeKey.generate().public_key.to_text())
        document["nodes"]["bob"] = second
    elif action == "twice":
        text = json.dumps(document)
        duplicated = json.dumps(entry)
        return text.replace('"nodes": {', f'"nodes": {{"alice": {duplicated}, ', 1).encode()
    return json.dumps(document).encode()


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_a_malformed_registry_says_which_file_and_what(
    registry_path: Path, alice: NodeKey, kind: str
) -> None:
    registry_path.write_bytes(_malformed(kind, alice))
    with pytest.raises(InvalidArgumentError, match=MALFORMED[kind][1]) as caught:
        KeyRegistry.load(registry_path)
    assert str(registry_path) in str(caught.value)


def test_a_running_server_notices_another_writer(
    registry_path: Path, alice: NodeKey, bob: NodeKey
) -> None:
    writer = KeyRegistry.load(registry_path, create=True)
    writer.register("alice", alice.public_key)
    writer.save()
    server = KeyRegistry.load(registry_path)
    assert not server.changed_on_disk()
    assert not server.reload_if_changed()

    other = KeyRegistry.load(registry_path)  # `fedbus keys revoke` in another process
    other.revoke("alice")
    other.register("bob", bob.public_key)
    other.save()

    assert server.changed_on_disk()
    assert not server.lookup("alice").revoked  # type: ignore[union-attr]
    server.reload()
    assert server.lookup("alice").revoked  # type: ignore[union-attr]
    assert server.names() == ["alice", "bob"]
    assert not server.changed_on_disk()


def test_reload_if_changed_reloads_once(registry_path: Path, alice: NodeKey) -> None:
    KeyRegistry.load(registry_path, create=True).save()
    server = KeyRegistry.load(registry_path)
    other = KeyRegistry.load(registry_path)
    other.register("alice", alice.public_key)
    other.save()
    assert server.reload_if_changed()
    assert server.names() == ["alice"]
    assert not server.reload_if_changed()


def test_a_malformed_reload_keeps_what_was_loaded(registry_path: Path, alice: NodeKey) -> None:
    registry = KeyRegistry.load(registry_path, create=True)
    registry.register("alice", alice.public_key)
    registry.save()
    registry_path.write_text("{")
    with pytest.raises(InvalidArgumentError, match="not valid JSON"):
        registry.reload()
    assert registry.names() == ["alice"]
    assert registry.changed_on_disk()


def test_save_refuses_to_undo_another_writer(
    registry_path: Path, alice: NodeKey, bob: NodeKey
) -> None:
    first = KeyRegistry.load(registry_path, create=True)
    second = KeyRegistry.load(registry_path, create=True)
    first.register("alice", alice.public_key)
    first.save()
    second.register("bob", bob.public_key)
    with pytest.raises(InvalidArgumentError, match="changed on disk"):
        second.save()
    assert KeyRegistry.load(registry_path).names() == ["alice"]


def test_save_replaces_atomically_and_keeps_the_mode(registry_path: Path, alice: NodeKey) -> None:
    registry = KeyRegistry.load(registry_path, create=True)
    registry.save()
    assert mode(registry_path) == 0o644
    registry_path.chmod(0o640)
    inode = registry_path.stat().st_ino
    registry.register("alice", alice.public_key)
    registry.save()
    assert mode(registry_path) == 0o640
    assert registry_path.stat().st_ino != inode  # a new file renamed over the old one
    assert sorted(path.name for path in registry_path.parent.iterdir()) == ["registry.json"]


def test_saving_into_a_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    registry = KeyRegistry.load(tmp_path / "absent" / "registry.json", create=True)
    with pytest.raises(InvalidArgumentError, match="cannot write"):
        registry.save()


# -- the audit log ---------------------------------------------------------------------------


@pytest.fixture
def audit_path(tmp_path: Path) -> Path:
    return tmp_path / "audit.jsonl"


def test_audit_lines_hold_time_event_and_fields(audit_path: Path) -> None:
    with AuditLog(audit_path, strict=True) as audit:
        audit.record("join", node_id=3, name="alice", peer="ipv4:10.0.0.7:5000", fingerprint="ab")
        audit.record("refused", name="mallory", reason="unknown name", peer="ipv6:[::1]:1")
        audit.record("leave", node_id=3, rounds=2.5, late=None, clean=True)
    lines = audit_path.read_text().splitlines()
    assert len(lines) == 3
    events = read_audit(audit_path)
    assert [event["event"] for event in events] == ["join", "refused", "leave"]
    assert list(events[0]) == ["time", "event", "node_id", "name", "peer", "fingerprint"]
    assert events[0]["node_id"] == 3
    assert events[1]["reason"] == "unknown name"
    # a field given as None does not apply to the event: it is left out
    assert events[2] == {**events[2], "rounds": 2.5, "clean": True}
    assert "late" not in events[2]
    for event in events:
        assert event["time"].endswith("Z")
        assert datetime.fromisoformat(event["time"]).utcoffset().total_seconds() == 0


def test_the_audit_log_is_private_and_appended_to(audit_path: Path) -> None:
    with AuditLog(audit_path) as audit:
        audit.record("join", node_id=1)
    assert mode(audit_path) == 0o600
    with AuditLog(audit_path) as audit:
        audit.record("leave", node_id=1)
    assert [event["event"] for event in read_audit(audit_path)] == ["join", "leave"]


def test_each_line_is_on_disk_when_record_returns(audit_path: Path) -> None:
    audit = AuditLog(audit_path)
    audit.record("join", node_id=1)
    assert read_audit(audit_path)[0]["node_id"] == 1  # before close
    audit.close()


def test_long_strings_are_truncated(audit_path: Path) -> None:
    with AuditLog(audit_path, strict=True) as audit:
        audit.record("refused", name="x" * 10_000, reason="short")
    (event,) = read_audit(audit_path)
    assert len(event["name"]) == MAX_FIELD_CHARS
    assert event["name"] == "x" * (MAX_FIELD_CHARS - 1) + "…"
    assert event["reason"] == "short"


def test_a_peer_cannot_forge_a_line(audit_path: Path) -> None:
    forged = 'x"}\n{"time": "2000-01-01T00:00:00Z", "event": "join", "name": "admin'
    with AuditLog(audit_path, strict=True) as audit:
        audit.record("refused", name=forged, reason="\r\x00\x1b[31m")
    assert len(audit_path.read_text().splitlines()) == 1
    assert audit_path.read_bytes().isascii()
    (event,) = read_audit(audit_path)
    assert event["name"] == forged
    assert event["reason"] == "\r\x00\x1b[31m"


@pytest.mark.parametrize(
    "field",
    ["token", "signature", "challenge", "private_key", "node_token", "secret", "password"],
)
def test_strict_audit_refuses_secret_fields(audit_path: Path, field: str) -> None:
    with AuditLog(audit_path, strict=True) as audit, pytest.raises(InvalidArgumentError):
        audit.record("join", node_id=1, **{field: "hunter2"})
    assert read_audit(audit_path) == []


def test_strict_audit_refuses_bytes_and_reserved_fields(audit_path: Path) -> None:
    with AuditLog(audit_path, strict=True) as audit:
        with pytest.raises(InvalidArgumentError, match="secret"):
            audit.record("join", proof=b"\x01\x02")
        with pytest.raises(InvalidArgumentError, match="invalid audit field"):
            audit.record("join", time="yesterday")
        with pytest.raises(InvalidArgumentError, match="invalid audit field"):
            audit.record("join", nodeId=1)


def test_lenient_audit_drops_secrets_and_keeps_the_rest(
    audit_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING), AuditLog(audit_path) as audit:
        audit.record("join", node_id=1, token="hunter2", challenge=b"abc", signature="c2ln")
    (event,) = read_audit(audit_path)
    assert set(event) == {"time", "event", "node_id"}
    text = audit_path.read_text()
    assert "hunter2" not in text
    assert "c2ln" not in text
    assert "hunter2" not in caplog.text
    assert "'token' may hold a secret" in caplog.text


def test_values_become_json_scalars(audit_path: Path) -> None:
    with AuditLog(audit_path, strict=True) as audit:
        audit.record("leave", where=Path("/x/y"), ratio=float("nan"), count=7, flag=False)
    (event,) = read_audit(audit_path)
    assert event["where"] == "/x/y"
    assert event["ratio"] == "nan"
    assert (event["count"], event["flag"]) == (7, False)


@pytest.mark.parametrize("event", ["", "Join", "join now", "x" * 65, "join\n"])
def test_events_are_lower_case_words(audit_path: Path, event: str) -> None:
    with AuditLog(audit_path) as audit, pytest.raises(InvalidArgumentError):
        audit.record(event)


def test_no_path_records_nothing_but_still_checks(tmp_path: Path) -> None:
    audit = AuditLog(None, strict=True)
    assert audit.path is None
    audit.record("join", node_id=1)
    with pytest.raises(InvalidArgumentError):
        audit.record("join", token="hunter2")
    audit.close()
    assert list(tmp_path.iterdir()) == []


def test_after_close_nothing_is_written(audit_path: Path) -> None:
    audit = AuditLog(audit_path)
    audit.record("join", node_id=1)
    audit.close()
    audit.record("leave", node_id=1)
    audit.close()
    assert [event["event"] for event in read_audit(audit_path)] == ["join"]


def test_concurrent_records_never_interleave(audit_path: Path) -> None:
    audit = AuditLog(audit_path, strict=True)
    start = threading.Barrier(8)

    def write(thread: int) -> None:
        start.wait()
        for index in range(200):
            audit.record("reconnect", node_id=thread, index=index, name="n" * 200)

    threads = [threading.Thread(target=write, args=(thread,)) for thread in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    audit.close()
    events = read_audit(audit_path)
    assert len(events) == 1600
    for thread in range(8):
        mine = [event["index"] for event in events if event["node_id"] == thread]
        assert mine == list(range(200))


def test_an_unopenable_audit_log_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="cannot open the audit log"):
        AuditLog(tmp_path / "absent" / "audit.jsonl")


def test_read_audit_names_a_bad_line(audit_path: Path) -> None:
    audit_path.write_text('{"time": "t", "event": "join"}\n\nnot json\n')
    with pytest.raises(InvalidArgumentError, match="line 3"):
        read_audit(audit_path)
    audit_path.write_text("[1, 2]\n")
    with pytest.raises(InvalidArgumentError, match="line 1: not an audit event"):
        read_audit(audit_path)
