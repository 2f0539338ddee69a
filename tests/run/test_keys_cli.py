"""``fedbus keys``: new, register, revoke and list, their files, their output, their errors."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path

import pytest

from fedbus.cli import main
from fedbus.runtime.grpc.identity import KeyRegistry, NodeKey, PublicKey

CHALLENGE = bytes(range(32))


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    """The error printed, checked to be one line of fedbus's, not a traceback."""
    err = capsys.readouterr().err
    assert err.startswith("fedbus: "), err
    assert err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    return tmp_path / "keys"


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    return tmp_path / "registry.json"


def new(keys: Path, name: str, capsys: pytest.CaptureFixture[str]) -> Path:
    assert main(["keys", "new", name, "--dir", str(keys)]) == 0
    capsys.readouterr()
    return keys / f"{name}.pub"


def test_new_writes_a_private_key_and_a_public_line(
    keys: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "new", "alice", "--dir", str(keys)]) == 0
    out = capsys.readouterr().out
    key_file, public_file = keys / "alice.key", keys / "alice.pub"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    line = public_file.read_text()
    assert re.fullmatch(r"ed25519 [A-Za-z0-9+/]{43}= alice\n", line)
    key = NodeKey.from_file(key_file)
    assert PublicKey.from_text(line.rsplit(" ", 1)[0]) == key.public_key
    assert f"fingerprint: {key.public_key.fingerprint}" in out
    assert "fedbus keys register registry.json alice.pub" in out


def test_new_never_overwrites(keys: Path, capsys: pytest.CaptureFixture[str]) -> None:
    public_file = new(keys, "alice", capsys)
    before = (keys / "alice.key").read_bytes(), public_file.read_bytes()
    assert main(["keys", "new", "alice", "--dir", str(keys)]) == 1
    assert "refusing to overwrite" in one_line_error(capsys)
    assert ((keys / "alice.key").read_bytes(), public_file.read_bytes()) == before


def test_new_leaves_nothing_when_the_public_file_exists(
    keys: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys.mkdir()
    (keys / "bob.pub").write_text("mine\n")
    assert main(["keys", "new", "bob", "--dir", str(keys)]) == 1
    assert "bob.pub" in one_line_error(capsys)
    assert not (keys / "bob.key").exists()


def test_new_refuses_an_invalid_name(keys: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "new", "../etc/passwd", "--dir", str(keys)]) == 1
    assert "invalid node name" in one_line_error(capsys)
    assert not keys.exists()


def test_register_list_revoke(
    keys: Path, registry: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    alice, bob = new(keys, "alice", capsys), new(keys, "bob", capsys)
    assert main(["keys", "register", str(registry), str(alice), "--node-id", "3"]) == 0
    fingerprint = KeyRegistry.load(registry).lookup("alice").public_key.fingerprint  # type: ignore[union-attr]
    assert capsys.readouterr().out == (
        f"registered 'alice' (key {fingerprint}, node id 3) in {registry}\n"
    )
    assert main(["keys", "register", str(registry), str(bob)]) == 0
    capsys.readouterr()

    assert main(["keys", "list", str(registry)]) == 0
    header, first, second = capsys.readouterr().out.splitlines()
    assert header.split() == ["NAME", "NODE", "ID", "FINGERPRINT", "REVOKED", "REGISTERED"]
    assert first.split()[:4] == ["alice", "3", fingerprint, "no"]
    assert second.split()[:2] == ["bob", "-"]

    assert main(["keys", "revoke", str(registry), "alice"]) == 0
    assert capsys.readouterr().out.startswith(f"revoked 'alice' (key {fingerprint}")
    node = KeyRegistry.load(registry).lookup("alice")
    assert node is not None
    assert node.revoked
    assert main(["keys", "list", str(registry)]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[:4] == [
        "alice",
        "3",
        fingerprint,
        node.revoked_at,
    ]


def test_a_registered_key_proves_its_node(
    keys: Path, registry: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """End to end: the node's key file signs, the server's registry entry verifies."""
    main(["keys", "register", str(registry), str(new(keys, "alice", capsys)), "--node-id", "7"])
    node = KeyRegistry.load(registry).lookup("alice")
    assert node is not None
    signature = NodeKey.from_file(keys / "alice.key").sign_challenge(CHALLENGE, "alice", 7)
    assert node.public_key.verify_challenge(signature, CHALLENGE, node.name, node.node_id)
    assert not node.public_key.verify_challenge(signature, CHALLENGE, node.name, 8)


def test_a_server_sees_a_revocation_made_by_the_command(
    keys: Path, registry: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["keys", "register", str(registry), str(new(keys, "alice", capsys))])
    server = KeyRegistry.load(registry)
    assert main(["keys", "revoke", str(registry), "alice"]) == 0
    assert server.reload_if_changed()
    assert server.lookup("alice").revoked  # type: ignore[union-attr]


def test_register_under_another_name(
    keys: Path, registry: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    alice = new(keys, "alice", capsys)
    assert main(["keys", "register", str(registry), str(alice), "--name", "site-a"]) == 0
    assert KeyRegistry.load(registry).names() == ["site-a"]


def test_a_public_file_without_a_name_needs_name(
    tmp_path: Path, registry: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    public_file = tmp_path / "anonymous.pub"
    public_file.write_text(NodeKey.generate().public_key.to_text() + "\n")
    assert main(["keys", "register", str(registry), str(public_file)]) == 1
    assert "give --name NAME" in one_line_error(capsys)
    assert not registry.exists()
    assert main(["keys", "register", str(registry), str(public_file), "--name", "carol"]) == 0


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("", "must hold one line"),
        ("ed25519\n", "must hold one line"),
        ("ed25519 AAAA alice extra\n", "must hold one line"),
        ("ed25519 AAAA alice\n", "3 bytes, not 32"),
        ("ssh-ed25519 AAAA alice\n", "not a public key"),
    ],
)
def test_a_malformed_public_file_is_named(
    tmp_path: Path,
    registry: Path,
    capsys: pytest.CaptureFixture[str],
    content: str,
    problem: str,
) -> None:
    public_file = tmp_path / "bad.pub"
    public_file.write_text(content)
    assert main(["keys", "register", str(registry), str(public_file)]) == 1
    err = one_line_error(capsys)
    assert problem in err
    assert str(public_file) in err


def test_a_missing_public_file_is_named(
    tmp_path: Path, registry: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "register", str(registry), str(tmp_path / "nope.pub")]) == 1
    assert "nope.pub" in one_line_error(capsys)


def test_conflicts_are_one_line_errors(
    keys: Path, registry: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    alice, bob = new(keys, "alice", capsys), new(keys, "bob", capsys)
    main(["keys", "register", str(registry), str(alice), "--node-id", "3"])
    capsys.readouterr()
    saved = registry.read_bytes()
    attempts = {
        "'alice' is already registered": [str(alice)],
        "already registered as 'alice'": [str(alice), "--name", "alice2"],
        "node id 3 is pinned to 'alice'": [str(bob), "--node-id", "3"],
        "[1, 2**63)": [str(bob), "--node-id", "-1"],
    }
    for problem, arguments in attempts.items():
        assert main(["keys", "register", str(registry), *arguments]) == 1
        assert problem in one_line_error(capsys)
    assert registry.read_bytes() == saved


def test_a_revoked_name_gets_a_new_key_with_replace_revoked(
    keys: Path, registry: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["keys", "register", str(registry), str(new(keys, "alice", capsys)), "--node-id", "3"])
    main(["keys", "revoke", str(registry), "alice"])
    fresh = new(keys / "new", "alice", capsys)
    assert main(["keys", "register", str(registry), str(fresh), "--node-id", "3"]) == 1
    assert "--replace-revoked" in one_line_error(capsys)
    arguments = [str(fresh), "--node-id", "3", "--replace-revoked"]
    assert main(["keys", "register", str(registry), *arguments]) == 0
    node = KeyRegistry.load(registry).lookup("alice")
    assert node is not None
    assert not node.revoked
    assert node.public_key == NodeKey.from_file(keys / "new" / "alice.key").public_key


def test_revoking_twice_says_so_and_keeps_the_time(
    keys: Path, registry: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["keys", "register", str(registry), str(new(keys, "alice", capsys))])
    main(["keys", "revoke", str(registry), "alice"])
    capsys.readouterr()
    saved = registry.read_bytes()
    assert main(["keys", "revoke", str(registry), "alice"]) == 0
    revoked_at = json.loads(saved)["nodes"]["alice"]["revoked_at"]
    assert f"was already revoked at {revoked_at}" in capsys.readouterr().out
    assert registry.read_bytes() == saved


def test_revoking_an_unknown_name(
    keys: Path, registry: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["keys", "register", str(registry), str(new(keys, "alice", capsys))])
    capsys.readouterr()
    assert main(["keys", "revoke", str(registry), "bob"]) == 1
    assert "no node 'bob'" in one_line_error(capsys)


def test_revoke_and_list_need_an_existing_registry(
    registry: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for action in (["revoke", str(registry), "alice"], ["list", str(registry)]):
        assert main(["keys", *action]) == 1
        assert f"cannot read key registry {str(registry)!r}" in one_line_error(capsys)
    assert not registry.exists()


def test_listing_an_empty_registry(registry: Path, capsys: pytest.CaptureFixture[str]) -> None:
    registry.write_text('{"format": "fedbus-key-registry", "version": 1, "nodes": {}}')
    assert main(["keys", "list", str(registry)]) == 0
    assert capsys.readouterr().out == f"no nodes registered in {registry}\n"


def test_a_malformed_registry_is_one_line(
    keys: Path, registry: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry.write_text('{"format": "fedbus-key-registry", "version": 1, "nodes": {"a": 1}}')
    alice = new(keys, "alice", capsys)
    for action in (["list", str(registry)], ["register", str(registry), str(alice)]):
        assert main(["keys", *action]) == 1
        assert "expected the keys" in one_line_error(capsys)


def test_keys_needs_an_action(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["keys"])
    assert exit_.value.code == 2
    assert "ACTION" in capsys.readouterr().err


@pytest.mark.parametrize("action", [[], ["new"], ["register"], ["revoke"], ["list"]])
def test_every_action_has_help_with_an_example(
    action: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["keys", *action, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "example:" in out
    assert "fedbus keys " in out.split("example:")[1]


def test_the_top_level_help_lists_keys(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    assert re.search(r"keys\s+make node keys", capsys.readouterr().out)
