"""The ``fedbus`` command line: argument parsing and printing only.

::

    fedbus run [CONFIG] [--set section.key=value ...] [-q]
    fedbus flow [CONFIG] [--set ...] [--output flow.png]
    fedbus plot RUN_DIR [RUN_DIR ...] [--output comparison.png]
    fedbus server [CONFIG] --listen HOST:PORT (--tls-cert F --tls-key F | --insecure)
                  [--resume RUN_DIR] [--min-clients N] [--join-timeout S] [--heartbeat S]
    fedbus client [CONFIG] --server HOST:PORT (--partition K | --data PATH)
                  (--root-cert F | --insecure) [--connect-timeout S] [--heartbeat S]
    fedbus keys (new NAME | register REGISTRY PUBFILE | revoke REGISTRY NAME | list REGISTRY)

``server`` and ``client`` read the federation's token from ``--token-file`` or, without it,
from the ``FEDBUS_TOKEN`` environment variable (a token on the command line would show in
``ps``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from fedbus.errors import ConfigError, FedbusError

if TYPE_CHECKING:  # imported when used: `fedbus plot` need not load gRPC
    from fedbus.runtime.grpc import Heartbeat

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedbus", description="Message-oriented federated learning."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what fedbus does")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run a federation in simulation")
    _config_arguments(run)
    run.add_argument("-q", "--quiet", action="store_true", help="no progress display")

    flow = commands.add_parser("flow", help="print and draw the message flow of a federation")
    _config_arguments(flow)
    flow.add_argument(
        "--output",
        default="flow.png",
        help="picture to write, .png or .svg (default flow.png);"
        " the Mermaid text goes beside it with the suffix .mmd",
    )

    plot = commands.add_parser("plot", help="draw the curves of one or more runs on one figure")
    plot.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    plot.add_argument("--output", default="comparison.png", help="default comparison.png")
    _server_parser(commands.add_parser("server", help="serve a federation over gRPC"))
    _client_parser(commands.add_parser("client", help="join a federation served over gRPC"))
    from fedbus.run.keys import add_keys_parser  # it loads gRPC and cryptography only when run

    add_keys_parser(commands)
    return parser


def _network_arguments(parser: argparse.ArgumentParser) -> None:
    _config_arguments(parser)
    parser.add_argument(
        "--token-file",
        type=Path,
        help="file holding the federation's token (default: $FEDBUS_TOKEN)",
    )
    parser.add_argument(
        "--insecure", action="store_true", help="no TLS: only on a network you trust"
    )
    parser.add_argument(
        "--heartbeat",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="heartbeat interval; a peer silent for 3 intervals is gone (default 5)",
    )


def _server_parser(server: argparse.ArgumentParser) -> None:
    _network_arguments(server)
    server.add_argument("--listen", required=True, metavar="HOST:PORT", help="e.g. 0.0.0.0:8080")
    server.add_argument("--tls-cert", type=Path, help="PEM certificate (chain) of the server")
    server.add_argument("--tls-key", type=Path, help="PEM private key of the server")
    server.add_argument(
        "--resume", type=Path, metavar="RUN_DIR", help="continue a run after its last round"
    )
    server.add_argument(
        "--min-clients", type=int, help="clients to wait for (default: federation.num_clients)"
    )
    server.add_argument(
        "--join-timeout",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="give up when min-clients have not joined by then (default 600)",
    )
    server.add_argument(
        "--max-clients", type=int, help="client nodes at once (default: deployment.max_clients)"
    )
    server.add_argument(
        "--keys",
        type=Path,
        metavar="REGISTRY",
        help="registry of node keys (fedbus keys register): nodes prove their key; "
        "default: deployment.key_registry",
    )
    server.add_argument(
        "--client-ca",
        type=Path,
        metavar="PEM",
        help="CA of client certificates: every node must present one it signed (mutual TLS)",
    )


def _client_parser(client: argparse.ArgumentParser) -> None:
    _network_arguments(client)
    client.add_argument("--server", required=True, metavar="HOST:PORT")
    data = client.add_mutually_exclusive_group(required=True)
    data.add_argument(
        "--partition", type=int, metavar="K", help="train on part K of the configured dataset"
    )
    data.add_argument("--data", type=Path, metavar="PATH", help="train on this .npz or .csv file")
    client.add_argument("--num-classes", type=int, help="classes of --data (default: from labels)")
    client.add_argument(
        "--nodes",
        type=int,
        default=1,
        metavar="N",
        help="host N nodes from this process: partitions K to K+N-1 (default 1)",
    )
    client.add_argument("--root-cert", type=Path, help="PEM certificate(s) to trust")
    client.add_argument(
        "--key", type=Path, metavar="FILE", help="this node's private key (fedbus keys new)"
    )
    client.add_argument("--name", help="this node's registered name (default: the key's file name)")
    client.add_argument(
        "--cert", type=Path, metavar="PEM", help="this node's certificate, for mutual TLS"
    )
    client.add_argument("--cert-key", type=Path, metavar="PEM", help="the key of --cert")
    for name, meaning in (("--connect-timeout", "to join"), ("--reconnect-timeout", "to rejoin")):
        client.add_argument(
            name, type=float, default=300.0, metavar="SECONDS", help=f"time {meaning} (300)"
        )


def _config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", help="TOML file (default: the built-in default)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one key, e.g. --set federation.num_rounds=50 (repeatable)",
    )


def _run(args: argparse.Namespace) -> None:
    from fedbus.run.config import load_config
    from fedbus.run.experiment import run_experiment

    config = load_config(args.config, args.overrides)
    result = run_experiment(config, quiet=args.quiet)
    summary = result.summary
    accuracy = summary["final_test_accuracy"]
    print(f"run directory:       {result.run_dir}")
    print(f"final test accuracy: {accuracy:.4f}" if accuracy is not None else "no evaluation")
    print(f"simulated time:      {summary['simulated_time']:.1f} s")
    print(f"wall time:           {summary['wall_time']:.1f} s")


def _flow(args: argparse.Namespace) -> None:
    from fedbus.run.config import load_config
    from fedbus.run.federation import build_federation
    from fedbus.run.flowchart import draw_flow

    config = load_config(args.config, args.overrides)
    flow = build_federation(config).simulation.message_flow()
    print(flow.describe())
    picture = draw_flow(flow, args.output)
    mermaid = picture.with_suffix(".mmd")
    mermaid.write_text(flow.to_mermaid(), encoding="utf-8")
    print(f"\nwrote {picture} and {mermaid}")
    flow.check()


def _plot(args: argparse.Namespace) -> None:
    from fedbus.run.plot import plot_runs

    print(f"wrote {plot_runs([Path(d) for d in args.run_dirs], Path(args.output))}")


def _keys(args: argparse.Namespace) -> None:
    from fedbus.run.keys import run_keys

    run_keys(args)


def _token(args: argparse.Namespace, *, required: bool = True) -> str | None:
    """The federation token; None when not given and a key or certificate proves identity."""
    if args.token_file is not None:
        try:
            token = str(args.token_file.read_text(encoding="utf-8")).strip()
        except OSError as exc:
            raise ConfigError(
                f"cannot read --token-file {args.token_file}: {exc.strerror}"
            ) from exc
    else:
        token = os.environ.get("FEDBUS_TOKEN", "").strip()
    if not token and not required:
        return None
    if not token:
        raise ConfigError(
            "no token: put the federation's secret in a file and pass --token-file FILE, "
            "or set FEDBUS_TOKEN"
        )
    return token


def _heartbeat(args: argparse.Namespace) -> Heartbeat:
    from fedbus.runtime.grpc import Heartbeat

    return Heartbeat(interval=args.heartbeat, timeout=3 * args.heartbeat)


def _server(args: argparse.Namespace) -> None:
    from fedbus.run.config import load_config
    from fedbus.run.deployment import ServerOptions, run_server
    from fedbus.runtime.grpc import ServerTls
    from fedbus.runtime.grpc.security import read_pem

    given = args.config is not None or args.overrides
    config = load_config(args.config, args.overrides) if given or not args.resume else None
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ConfigError("--tls-cert and --tls-key go together")
    if args.tls_cert is None and not args.insecure:
        raise ConfigError("give --tls-cert and --tls-key, or --insecure to serve without TLS")
    if args.tls_cert is not None and args.insecure:
        raise ConfigError("give --tls-cert/--tls-key or --insecure, not both")
    tls = None if args.tls_cert is None else ServerTls.from_files(args.tls_cert, args.tls_key)
    if args.client_ca is not None and tls is None:
        raise ConfigError("--client-ca (mutual TLS) needs --tls-cert and --tls-key")
    keys = args.keys or (config is not None and config.deployment.key_registry)
    heartbeat = _heartbeat(args)
    options = ServerOptions(
        listen=args.listen,
        token=_token(args, required=not keys and args.client_ca is None),
        tls=tls,
        insecure=args.insecure,
        resume=args.resume,
        min_clients=args.min_clients,
        join_timeout=args.join_timeout or None,
        max_clients=args.max_clients,
        heartbeat=heartbeat,
        keys=args.keys,
        client_ca=None if args.client_ca is None else read_pem(args.client_ca, "client CA"),
    )
    result = run_server(config, options)
    accuracy = result.summary["final_test_accuracy"]
    print(f"run directory:       {result.run_dir}")
    print(f"final test accuracy: {accuracy:.4f}" if accuracy is not None else "no evaluation")


def _client(args: argparse.Namespace) -> None:
    from fedbus.run.config import load_config
    from fedbus.run.deployment import ClientOptions, run_client
    from fedbus.runtime.grpc import NodeIdentity, NodeKey, ServerTls
    from fedbus.runtime.grpc.security import read_pem

    if args.root_cert is not None and args.insecure:
        raise ConfigError("give --root-cert or --insecure, not both")
    if (args.cert is None) != (args.cert_key is None):
        raise ConfigError("--cert and --cert-key go together")
    if args.name is not None and args.key is None:
        raise ConfigError("--name names the node of --key: give --key FILE with it")
    identity = None
    if args.key is not None:
        identity = NodeIdentity(args.name or args.key.stem, NodeKey.from_file(args.key))
    certificate = None if args.cert is None else ServerTls.from_files(args.cert, args.cert_key)
    heartbeat = _heartbeat(args)
    options = ClientOptions(
        server=args.server,
        token=_token(args, required=identity is None and certificate is None),
        partition=args.partition,
        data_path=args.data,
        num_classes=args.num_classes,
        root_certificates=None
        if args.root_cert is None
        else read_pem(args.root_cert, "root certificate"),
        insecure=args.insecure,
        connect_timeout=args.connect_timeout,
        reconnect_timeout=args.reconnect_timeout,
        heartbeat=heartbeat,
        nodes=args.nodes,
        identity=identity,
        certificate=certificate,
    )
    node_id = run_client(load_config(args.config, args.overrides), options)
    hosted = (
        f"nodes {node_id} to {node_id + args.nodes - 1}" if args.nodes > 1 else f"node {node_id}"
    )
    print(f"{hosted}: the federation is over")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fedbus`` command; returns the exit status."""
    args = _parser().parse_args(argv)
    # server and client are long-running processes: they log what they do by default
    network = args.command in ("server", "client")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose and network else
        logging.INFO if args.verbose or network else logging.ERROR,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s" if network
        else "%(levelname)s %(name)s: %(message)s",
    )  # fmt: skip
    commands = {
        "run": _run,
        "flow": _flow,
        "plot": _plot,
        "server": _server,
        "client": _client,
        "keys": _keys,
    }
    try:
        commands[args.command](args)
    except ConfigError as exc:
        print(f"fedbus: configuration error: {exc}", file=sys.stderr)
        return 2
    except FedbusError as exc:
        print(f"fedbus: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
