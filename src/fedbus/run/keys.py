"""``fedbus keys``: make a node's key pair; register, revoke and list keys in a server's registry.

::

    fedbus keys new NAME [--dir DIR]
    fedbus keys register REGISTRY PUBFILE [--name NAME] [--node-id K] [--replace-revoked]
    fedbus keys revoke REGISTRY NAME
    fedbus keys list REGISTRY

A public key file (``NAME.pub``) holds one line: ``ed25519 <base64 of 32 bytes> NAME``. The
private key (``NAME.key``, PKCS8 PEM, mode 0600) never leaves the node. The registry is the
server's JSON file (``fedbus.runtime.grpc.identity.KeyRegistry``); see docs/deployment.md.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

from fedbus.errors import InvalidArgumentError

if TYPE_CHECKING:  # imported when used: the parser is built for every fedbus command
    from fedbus.runtime.grpc.identity import PublicKey, RegisteredNode

__all__ = ["add_keys_parser", "new_key_files", "read_public_key_file", "run_keys"]

_DESCRIPTION = """\
Per-node identity for a federation served over gRPC. Each node makes its own
key pair; the server's operator registers the public half in the registry file
the server reads (fedbus server --keys REGISTRY). See docs/deployment.md."""

_EXAMPLES = """\
example:
  fedbus keys new alice --dir keys/        # on the node: keys/alice.key, .pub
  fedbus keys register registry.json alice.pub --node-id 3    # on the server
  fedbus keys list registry.json
  fedbus keys revoke registry.json alice"""

# (summary, description, examples) of each action; lines of at most 78 characters
_ACTIONS = {
    "new": (
        "make a node's key pair: NAME.key (private, mode 0600) and NAME.pub",
        "Write DIR/NAME.key, the node's private key (keep it on the node), and\n"
        "DIR/NAME.pub, its public key, to give to the server's operator. Existing\n"
        "files are never overwritten.",
        "example:\n  fedbus keys new alice --dir keys/",
    ),
    "register": (
        "add a node's public key to a registry (created when missing)",
        "Add the public key in PUBFILE to REGISTRY under the name the file ends with\n"
        "(or --name). With --node-id, only this key may claim that node id. A name or\n"
        "key registered before is refused; --replace-revoked gives a revoked name a\n"
        "new key.",
        "example:\n  fedbus keys register registry.json alice.pub --node-id 3",
    ),
    "revoke": (
        "mark a node's key revoked: a server reading the registry refuses it",
        "Mark NAME revoked in REGISTRY. The entry stays, so that the key can never be\n"
        "registered again. A server reading REGISTRY disconnects the node at once.",
        "example:\n  fedbus keys revoke registry.json alice",
    ),
    "list": (
        "list the nodes of a registry",
        "Print each node of REGISTRY: name, node id, key fingerprint, revoked or not.",
        "example:\n  fedbus keys list registry.json",
    ),
}


def add_keys_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``fedbus keys`` and its four actions on the top-level ``commands``."""
    keys = commands.add_parser(
        "keys",
        help="make node keys; register, revoke and list them in a server's registry",
        description=_DESCRIPTION,
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = keys.add_subparsers(dest="keys_action", required=True, metavar="ACTION")
    parsers = {
        name: actions.add_parser(
            name,
            help=short,
            description=long,
            epilog=example,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        for name, (short, long, example) in _ACTIONS.items()
    }
    parsers["new"].add_argument("name", metavar="NAME", help="1-64 of A-Z a-z 0-9 . _ -")
    parsers["new"].add_argument(
        "--dir", type=Path, default=Path(), metavar="DIR", help="where to write (default .)"
    )
    register = parsers["register"]
    register.add_argument("registry", type=Path, metavar="REGISTRY", help="the registry file")
    register.add_argument("pubfile", type=Path, metavar="PUBFILE", help="a NAME.pub file")
    register.add_argument("--name", help="register under this name, not the file's")
    register.add_argument("--node-id", type=int, metavar="K", help="pin node id K to this key")
    register.add_argument(
        "--replace-revoked", action="store_true", help="give a revoked name this new key"
    )
    for action in ("revoke", "list"):
        parsers[action].add_argument(
            "registry", type=Path, metavar="REGISTRY", help="the registry file"
        )
    parsers["revoke"].add_argument("name", metavar="NAME", help="the node to revoke")


def run_keys(args: argparse.Namespace) -> None:
    """Carry out the ``fedbus keys`` action parsed into ``args``; errors are FedbusErrors."""
    actions = {"new": _new, "register": _register, "revoke": _revoke, "list": _list}
    actions[args.keys_action](args)


def new_key_files(name: str, directory: Path) -> tuple[Path, Path, PublicKey]:
    """Write ``directory/NAME.key`` (mode 0600) and ``NAME.pub``; refuses to overwrite."""
    from fedbus.runtime.grpc.identity import NodeKey, check_node_name

    check_node_name(name)
    key_file, public_file = directory / f"{name}.key", directory / f"{name}.pub"
    for path in (key_file, public_file):
        if path.exists():
            raise InvalidArgumentError(f"{str(path)!r} exists: refusing to overwrite it")
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidArgumentError(f"cannot create {str(directory)!r}: {exc.strerror}") from exc
    key = NodeKey.generate()
    key.write(key_file)
    try:
        with open(public_file, "x", encoding="utf-8") as file:
            file.write(f"{key.public_key.to_text()} {name}\n")
    except OSError as exc:
        key_file.unlink(missing_ok=True)  # half a key pair is worse than none
        raise InvalidArgumentError(f"cannot write {str(public_file)!r}: {exc.strerror}") from exc
    return key_file, public_file, key.public_key


def read_public_key_file(path: Path) -> tuple[PublicKey, str | None]:
    """The key of a ``.pub`` file (``ed25519 <base64> [NAME]``) and the name it ends with."""
    from fedbus.runtime.grpc.identity import PublicKey, check_node_name

    where = f"public key file {str(path)!r}"
    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise InvalidArgumentError(f"cannot read the {where}: {reason}") from exc
    fields = lines[0].strip().split(" ") if len(lines) == 1 else []
    if len(fields) not in (2, 3):
        raise InvalidArgumentError(
            f"the {where} must hold one line 'ed25519 <base64 key> NAME', "
            "as written by `fedbus keys new`"
        )
    try:
        key = PublicKey.from_text(" ".join(fields[:2]))
        name = check_node_name(fields[2]) if len(fields) == 3 else None
    except InvalidArgumentError as exc:
        raise InvalidArgumentError(f"the {where}: {exc}") from None
    return key, name


def _new(args: argparse.Namespace) -> None:
    key_file, public_file, public_key = new_key_files(args.name, args.dir)
    print(f"wrote {key_file} (the private key: it stays on this node, mode 0600)")
    print(f"wrote {public_file} (the public key: give it to the server's operator)")
    print(f"fingerprint: {public_key.fingerprint}")
    print("next, on the server:")
    print(f"  fedbus keys register registry.json {shlex.quote(public_file.name)}")


def _register(args: argparse.Namespace) -> None:
    from fedbus.runtime.grpc.identity import KeyRegistry

    public_key, named = read_public_key_file(args.pubfile)
    name = args.name if args.name is not None else named
    if name is None:
        raise InvalidArgumentError(f"{str(args.pubfile)!r} names no node: give --name NAME")
    registry = KeyRegistry.load(args.registry, create=True)
    node = registry.register(name, public_key, args.node_id, replace_revoked=args.replace_revoked)
    registry.save()
    print(f"registered {_describe(node)} in {registry.path}")


def _revoke(args: argparse.Namespace) -> None:
    from fedbus.runtime.grpc.identity import KeyRegistry

    registry = KeyRegistry.load(args.registry)
    before = registry.lookup(args.name)
    node = registry.revoke(args.name)
    if before is not None and before.revoked:
        print(f"{_describe(node)} was already revoked at {node.revoked_at or 'an unknown time'}")
        return
    registry.save()
    print(f"revoked {_describe(node)} in {registry.path}")


def _list(args: argparse.Namespace) -> None:
    from fedbus.runtime.grpc.identity import KeyRegistry

    registry = KeyRegistry.load(args.registry)
    rows = [("NAME", "NODE ID", "FINGERPRINT", "REVOKED", "REGISTERED")]
    for node in registry.nodes():
        revoked = (node.revoked_at or "yes") if node.revoked else "no"
        node_id = "-" if node.node_id is None else str(node.node_id)
        rows.append((node.name, node_id, node.public_key.fingerprint, revoked, node.registered))
    if len(rows) == 1:
        print(f"no nodes registered in {registry.path}")
        return
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]))


def _describe(node: RegisteredNode) -> str:
    pinned = "" if node.node_id is None else f", node id {node.node_id}"
    return f"{node.name!r} (key {node.public_key.fingerprint}{pinned})"
