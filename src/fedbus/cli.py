"""The ``fedbus`` command line: argument parsing and printing only.

::

    fedbus run [CONFIG] [--set section.key=value ...] [-q] [--resume RUN_DIR]
               [--dashboard [HOST:PORT]] [--dashboard-token-file F]
    fedbus verify RUN_DIR
    fedbus flow [CONFIG] [--set ...] [--output flow.png]
    fedbus plot RUN_DIR [RUN_DIR ...] [--output comparison.png]
    fedbus partition [CONFIG] [--set ...] [--plot partition.png]
    fedbus trace RUN_DIR [--node N] [--type TYPE] [--round R] [--csv FILE]
    fedbus dashboard RUN_DIR [RUN_DIR ...] [--listen HOST:PORT] [--token-file F]
    fedbus server [CONFIG] --listen HOST:PORT (--tls-cert F --tls-key F | --insecure)
                  [--resume RUN_DIR] [--min-clients N] [--join-timeout S] [--heartbeat S]
                  [--dashboard HOST:PORT] [--dashboard-token-file F]
    fedbus client [CONFIG] --server HOST:PORT (--partition K | --data PATH)
                  (--root-cert F | --insecure) [--connect-timeout S] [--heartbeat S]
    fedbus keys (new NAME | register REGISTRY PUBFILE | revoke REGISTRY NAME | list REGISTRY)
    fedbus --version

``-v`` (``-vv``: more) logs what fedbus does; it may come before or after the command. Each
command's ``--help`` has a description and examples. ``server`` and ``client`` read the
federation's token from ``--token-file`` or, without it, from the ``FEDBUS_TOKEN`` environment
variable (a token on the command line would show in ``ps``). Mistakes on the command line
(a ``--listen`` without its port, an ``--output`` of a format that cannot be written) are
refused with one line saying what to give instead, before any work is done.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from fedbus.errors import ConfigError, FedbusError, RunError, RunInterruptedError

if TYPE_CHECKING:  # imported when used: `fedbus plot` need not load gRPC
    from fedbus.run.config import Config
    from fedbus.run.experiment import DashboardOptions
    from fedbus.runtime.grpc import Heartbeat

__all__ = ["build_parser", "main"]

logger = logging.getLogger(__name__)

# [IPv6]:PORT, or HOST:PORT with a host name or IPv4 address (no colon in it)
_ADDRESS = re.compile(
    r"\[(?P<ipv6>[^\[\]]+)\]:(?P<port>[^:]*)|(?P<host>[^:\[\]]+):(?P<port4>[^:]*)"
)
_HOST_NAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?")


_RAW = argparse.RawDescriptionHelpFormatter
# The exit status of a command stopped by Ctrl-C: 128 + SIGINT, as shells report it.
_INTERRUPTED = 130
_VERBOSE_HELP = "log what fedbus does (-vv: in more detail)"

# (description, examples) of each command; lines of at most 78 characters: a terminal of 80
# columns shows them unwrapped
_FEDBUS = (
    """\
Message-oriented federated learning: run a federation in simulation, draw its
message flow and its curves, or deploy it over gRPC.""",
    """\
examples:
  fedbus run                        # FedAvg on digits, 100 clients
  fedbus run examples/configs/scaffold.toml --set federation.num_rounds=20
  fedbus plot runs/* --output comparison.pdf
  fedbus COMMAND --help             # what a command does, with examples

-v logs what fedbus does, -vv logs more; before or after the command.""",
)
_RUN = (
    """\
Run a federation in simulation on this machine, in simulated time. Without
CONFIG: FedAvg on the digits dataset with 100 clients. It writes a run
directory (config.toml, metrics.jsonl, summary.json, model.npz, curves.png,
the message trace) under run.output_dir and prints where. Ctrl-C stops it
with the completed rounds written; --resume RUN_DIR goes on from the last
one, bit for bit. --dashboard serves a live page of the run. Every key:
docs/config.md.""",
    """\
examples:
  fedbus run
  fedbus run examples/configs/scaffold.toml --set federation.num_rounds=20
  fedbus run --set data.partition=iid --set strategy.name=fedprox -q
  fedbus run --resume runs/fedbus-20250101-120000
  fedbus run --dashboard                  # http://127.0.0.1:8050/""",
)
_VERIFY = (
    """\
Run a simulated run again from its own run directory (its config.toml) and
say whether the final model and the message trace are identical, bit for bit:
exit status 0 when they are, 1 when not. The versions recorded in
RUN_DIR/versions.json are compared with this machine's. See docs/trace.md.""",
    """\
examples:
  fedbus verify runs/fedbus-20250101-120000""",
)
_FLOW = (
    """\
Print which role handles which message type and who sends what to whom, draw
it as a picture with its Mermaid text beside it (same name, suffix .mmd), and
check that every type sent has a handler.""",
    """\
examples:
  fedbus flow
  fedbus flow examples/configs/secure.toml --output secagg-flow.svg""",
)
_PLOT = (
    """\
Draw the accuracy and loss curves of one or more runs on one figure, against
rounds and simulated time. Each run has one colour; the legend says what was
run (its strategy, and the settings in which the runs differ) and where.""",
    """\
examples:
  fedbus plot runs/scaffold-20250101-120000 runs/scaffold-20250101-120500
  fedbus plot runs/* --output comparison.pdf""",
)
_PARTITION = (
    """\
Build the dataset of CONFIG as fedbus run would, and show how it is divided
among the clients: per client its train and test samples, how many labels it
holds and the share of its most frequent one (beyond 100 clients, their
distribution instead), then totals; draw a clients x labels heat map of
sample counts with the client sizes beside it (the first 100 clients). See
docs/partitioning.md.""",
    """\
examples:
  fedbus partition --set data.partition=pathological \\
      --set data.classes_per_client=2 --set federation.num_clients=20
  fedbus partition experiment.toml --set data.partition=power_law --plot sizes.svg""",
)
_TRACE = (
    """\
Summarise the message trace of a run (RUN_DIR/trace/, one row per message):
totals and outcomes, per message type, per node (sent, received, bytes,
failures), the slowest nodes to answer, and the messages that were not
delivered or carried an error. --node, --type and --round keep only those
messages; --csv writes them as CSV, for any other tool. See docs/trace.md.""",
    """\
examples:
  fedbus trace runs/fedbus-20250101-120000
  fedbus trace runs/fedbus-20250101-120000 --round 3 --type train
  fedbus trace runs/fedbus-20250101-120000 --node 17 --csv node17.csv""",
)
_DASHBOARD = (
    """\
Serve a read-only live dashboard of one or more run directories, side by
side: state and round, accuracy and loss curves, each node's traffic and
failures, the message flow and the last messages; it follows a run that is
still writing. It serves until Ctrl-C. Off 127.0.0.1 it needs a token, from
--token-file or $FEDBUS_DASHBOARD_TOKEN. See docs/dashboard.md.""",
    """\
examples:
  fedbus dashboard runs/fedbus-20250101-120000     # http://127.0.0.1:8050/
  fedbus dashboard runs/* --listen 127.0.0.1:0     # any free port, printed
  fedbus dashboard runs/fedbus-20250101-120000 --listen 0.0.0.0:8050 \\
      --token-file dashboard-token.txt""",
)
_SERVER = (
    """\
Serve a federation over gRPC: build the server from CONFIG, wait for the
clients, run the rounds, and write the run directory as fedbus run does. The
token comes from --token-file or $FEDBUS_TOKEN. It logs what it does; -v logs
more. See docs/deployment.md.""",
    """\
examples:
  fedbus server experiment.toml --listen 0.0.0.0:8080 --token-file token.txt \\
      --tls-cert server.pem --tls-key server.key
  fedbus server experiment.toml --listen 127.0.0.1:0 --insecure  # any free port""",
)
_CLIENT = (
    """\
Join a federation that fedbus server serves over gRPC, and train on part K of
the configured dataset, or on a file of your own, until the federation is
over. The token comes from --token-file or $FEDBUS_TOKEN. See
docs/deployment.md.""",
    """\
examples:
  fedbus client experiment.toml --server server.example.org:8080 \\
      --partition 3 --token-file token.txt --root-cert ca.pem
  fedbus client experiment.toml --server [::1]:8080 --data local.npz --insecure""",
)


def build_parser() -> argparse.ArgumentParser:
    """The parser of the ``fedbus`` command and all its subcommands."""
    parser = argparse.ArgumentParser(
        prog="fedbus", description=_FEDBUS[0], epilog=_FEDBUS[1], formatter_class=_RAW
    )
    parser.add_argument("--version", action="version", version=f"fedbus {_version()}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help=_VERBOSE_HELP)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = _command(commands, "run", "run a federation in simulation", _RUN)
    _config_arguments(run)
    run.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    run.add_argument(
        "--resume",
        type=Path,
        metavar="RUN_DIR",
        help="go on with a stopped run from its last completed round (its own config.toml)",
    )
    run.add_argument(
        "--dashboard",
        nargs="?",
        const="127.0.0.1:8050",
        metavar="HOST:PORT",
        help="serve a live dashboard of the run (default 127.0.0.1:8050)",
    )
    _dashboard_token_argument(run)

    verify = _command(commands, "verify", "check that a simulated run reproduces", _VERIFY)
    verify.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run directory to check")
    verify.add_argument("-q", "--quiet", action="store_true", help="no progress display")

    flow = _command(commands, "flow", "print and draw the message flow of a federation", _FLOW)
    _config_arguments(flow)
    flow.add_argument(
        "--output",
        default="flow.png",
        metavar="FILE",
        help="picture to write, .png or .svg (default flow.png);"
        " the Mermaid text goes beside it with the suffix .mmd",
    )

    plot = _command(commands, "plot", "draw the curves of one or more runs on one figure", _PLOT)
    plot.add_argument(
        "run_dirs",
        nargs="+",
        metavar="RUN_DIR",
        help="a run directory (it holds metrics.jsonl), as fedbus run prints it",
    )
    plot.add_argument(
        "--output",
        default="comparison.png",
        metavar="FILE",
        help="picture to write; its suffix sets the format: .png, .pdf, .svg, .jpg, ..."
        " (default comparison.png)",
    )
    partition = _command(
        commands, "partition", "print and draw how a run divides its data", _PARTITION
    )
    _config_arguments(partition)
    partition.add_argument(
        "--plot",
        default="partition.png",
        metavar="FILE",
        help="heat map to write; its suffix sets the format: .png, .pdf, .svg, ..."
        " (default partition.png)",
    )
    trace = _command(commands, "trace", "summarise the messages of a run", _TRACE)
    trace.add_argument("run_dir", metavar="RUN_DIR", help="a run directory with a trace")
    trace.add_argument("--node", type=int, metavar="N", help="messages sent or received by N")
    trace.add_argument("--type", metavar="TYPE", help="messages of this type, e.g. train")
    trace.add_argument("--round", type=int, metavar="R", help="messages of round R")
    trace.add_argument(
        "--csv", type=Path, metavar="FILE", help="also write the messages kept to FILE as CSV"
    )
    dashboard = _command(
        commands, "dashboard", "serve a live dashboard of one or more runs", _DASHBOARD
    )
    dashboard.add_argument(
        "run_dirs", nargs="+", metavar="RUN_DIR", help="a run directory, as fedbus run prints it"
    )
    dashboard.add_argument(
        "--listen",
        default="127.0.0.1:8050",
        metavar="HOST:PORT",
        help="where to serve (default 127.0.0.1:8050); any other host than a loopback one "
        "needs a token",
    )
    dashboard.add_argument(
        "--token-file",
        type=Path,
        help="file holding the token the page must carry (default: $FEDBUS_DASHBOARD_TOKEN)",
    )
    _server_parser(_command(commands, "server", "serve a federation over gRPC", _SERVER))
    _client_parser(_command(commands, "client", "join a federation served over gRPC", _CLIENT))
    from fedbus.run.keys import add_keys_parser  # it loads gRPC and cryptography only when run

    add_keys_parser(commands)
    _add_verbose(parser)
    return parser


def _command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    summary: str,
    text: tuple[str, str],
) -> argparse.ArgumentParser:
    """A subcommand with its one-line summary, its description and its examples."""
    return commands.add_parser(
        name, help=summary, description=text[0], epilog=text[1], formatter_class=_RAW
    )


def _add_verbose(parser: argparse.ArgumentParser) -> None:
    """Let every subcommand take -v too: ``fedbus run CONFIG -v`` as ``fedbus -v run CONFIG``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                # SUPPRESS: a subcommand without -v leaves the count given before it alone
                command.add_argument(
                    "-v",
                    "--verbose",
                    dest="verbose_after",
                    action="count",
                    default=argparse.SUPPRESS,
                    help=_VERBOSE_HELP,
                )
                _add_verbose(command)


def _version() -> str:
    """The installed distribution's version, or the package's own when not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fedbus")
    except PackageNotFoundError:
        import fedbus

        return str(getattr(fedbus, "__version__", "unknown"))


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
    server.add_argument(
        "--listen",
        required=True,
        metavar="HOST:PORT",
        help="where to listen, e.g. 0.0.0.0:8080 (every interface), [::]:8080 (IPv6), "
        "or 127.0.0.1:0 (any free port, logged)",
    )
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
    server.add_argument(
        "--dashboard",
        metavar="HOST:PORT",
        help="serve a live dashboard of the run there, e.g. 127.0.0.1:8050",
    )
    _dashboard_token_argument(server)


def _client_parser(client: argparse.ArgumentParser) -> None:
    _network_arguments(client)
    client.add_argument(
        "--server",
        required=True,
        metavar="HOST:PORT",
        help="the address fedbus server listens on, e.g. server.example.org:8080 or [::1]:8080",
    )
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
    from fedbus.run.experiment import run_experiment

    given = args.config is not None or args.overrides
    config = _load(args) if given or args.resume is None else None
    dashboard = None
    if args.dashboard is not None:
        dashboard = _dashboard_options(args.dashboard, "--dashboard", args.dashboard_token_file)
    result = run_experiment(config, quiet=args.quiet, resume=args.resume, dashboard=dashboard)
    summary = result.summary
    accuracy = summary["final_test_accuracy"]
    print(f"run directory:       {result.run_dir}")
    print(f"final test accuracy: {accuracy:.4f}" if accuracy is not None else "no evaluation")
    print(f"simulated time:      {summary['simulated_time']:.1f} s")
    print(f"wall time:           {summary['wall_time']:.1f} s")


def _flow(args: argparse.Namespace) -> None:
    from fedbus.run.federation import build_federation
    from fedbus.run.flowchart import check_flow_path, draw_flow

    check_flow_path(args.output, name="--output")  # before any work, and before printing
    flow = build_federation(_load(args)).simulation.message_flow()
    print(flow.describe())
    picture = draw_flow(flow, args.output)
    mermaid = picture.with_suffix(".mmd")
    mermaid.write_text(flow.to_mermaid(), encoding="utf-8")
    print(f"\nwrote {picture} and {mermaid}")
    flow.check()


def _dashboard_token_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dashboard-token-file",
        type=Path,
        metavar="FILE",
        help="file holding the token the dashboard asks for (default: "
        "$FEDBUS_DASHBOARD_TOKEN; required off loopback)",
    )


def _dashboard_options(address: str, option: str, token_file: Path | None) -> DashboardOptions:
    """Where ``--dashboard`` serves, with its token (``--dashboard-token-file``)."""
    from fedbus.run.dashboard.server import dashboard_token
    from fedbus.run.experiment import DashboardOptions

    listen = _ADDRESS.fullmatch(_address(address, option, any_port=True))
    assert listen is not None  # _address checked it
    host, port = listen["ipv6"] or listen["host"], listen["port"] or listen["port4"]
    return DashboardOptions(host, int(port), dashboard_token(token_file))


def _verify(args: argparse.Namespace) -> None:
    from fedbus.run.verify import verify_run

    report = verify_run(args.run_dir, quiet=args.quiet)
    print(report.text())
    if not report.identical:
        raise RunError(f"{args.run_dir} does not reproduce")


def _plot(args: argparse.Namespace) -> None:
    from fedbus.run.plot import check_picture_path, plot_runs

    output = check_picture_path(args.output, name="--output")
    logger.info("plotting %d run(s) into %s", len(args.run_dirs), output)
    print(f"wrote {plot_runs([Path(d) for d in args.run_dirs], output)}")


def _partition(args: argparse.Namespace) -> None:
    from fedbus.run.partition_report import partition_report
    from fedbus.run.plot import check_picture_path

    output = check_picture_path(args.plot, name="--plot")  # before the dataset is built
    text, picture = partition_report(_load(args), output)
    print(text)
    print(f"\nwrote {picture}")


def _trace(args: argparse.Namespace) -> None:
    from fedbus.run.trace import read_trace, write_csv
    from fedbus.run.trace_summary import filter_rows, format_summary

    rows = read_trace(args.run_dir)
    chosen = filter_rows(rows, node=args.node, message_type=args.type, server_round=args.round)
    kept = [f"{name} {value}" for name, value in vars(args).items() if name in _FILTERS and value]
    if kept:
        print(f"{len(chosen):,} of {len(rows):,} messages ({', '.join(kept)})")
    print(format_summary(chosen))
    if args.csv is not None:
        try:
            write_csv(args.csv, chosen)
        except OSError as exc:
            raise ConfigError(f"--csv {args.csv}: cannot write it ({exc.strerror})") from exc
        print(f"wrote {len(chosen):,} messages to {args.csv}")


_FILTERS = ("node", "type", "round")


def _dashboard(args: argparse.Namespace) -> None:
    from fedbus.run.dashboard import RunDirSource, serve_dashboard
    from fedbus.run.dashboard.server import dashboard_token, serve_until_interrupted

    listen = _ADDRESS.fullmatch(_address(args.listen, "--listen", any_port=True))
    assert listen is not None  # _address checked it
    for run_dir in args.run_dirs:
        if not Path(run_dir, "config.toml").is_file():
            raise ConfigError(
                f"RUN_DIR {run_dir!r}: not a run directory (no config.toml in it); "
                "give a directory fedbus run or fedbus server wrote"
            )
    sources = [RunDirSource(run_dir) for run_dir in args.run_dirs]
    host, port = listen["ipv6"] or listen["host"], listen["port"] or listen["port4"]
    handle = serve_dashboard(sources, host, int(port), dashboard_token(args.token_file))
    print(f"dashboard of {len(sources)} run(s) at {handle.url} (Ctrl-C stops it)", flush=True)
    serve_until_interrupted(handle)


def _load(args: argparse.Namespace) -> Config:
    """The configuration of CONFIG and --set; -v logs what it is, -vv every setting."""
    from fedbus.run.config import config_to_toml, load_config

    config = load_config(args.config, args.overrides)
    overrides = " ".join(f"--set {item}" for item in args.overrides)
    logger.info("configuration: %s %s", args.config or "(built-in default)", overrides)
    logger.info(
        "%s on %s with model %s: %d clients, %d per round, %d rounds",
        config.strategy.name,
        config.data.dataset,
        config.model.name,
        config.federation.num_clients,
        config.federation.clients_per_round,
        config.federation.num_rounds,
    )
    logger.debug("every setting:\n%s", config_to_toml(config))
    return config


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


def _address(value: str, option: str, *, any_port: bool) -> str:
    """``value`` if it is HOST:PORT (an IPv6 host in brackets); else a ConfigError saying why.

    ``any_port``: port 0 is allowed, and means any free port (``--listen``).
    """
    example = f"{option} 127.0.0.1:8080"
    if any_port:
        example += f" (or {option} 127.0.0.1:0 for any free port)"
    match = _ADDRESS.fullmatch(value)
    if match is None:
        if value.count(":") > 1 and not value.startswith("["):
            raise ConfigError(
                f"{option} {value!r}: an IPv6 address goes in brackets, before the port: "
                f"e.g. {option} [::1]:8080"
            )
        if not value.endswith("]") and ":" in value:
            raise ConfigError(f"{option} {value!r}: expected HOST:PORT, e.g. {example}")
        raise ConfigError(f"{option} {value!r}: the address needs a port, e.g. {example}")
    host, port = match["ipv6"] or match["host"], match["port"] or match["port4"] or ""
    _check_host(value, option, host, ipv6=match["ipv6"] is not None)
    lowest = 0 if any_port else 1
    if not port.isdigit() or not lowest <= int(port) <= 65535:
        raise ConfigError(
            f"{option} {value!r}: the port must be a number from {lowest} to 65535, "
            f"got {port!r}; e.g. {example}"
        )
    return value


def _check_host(value: str, option: str, host: str, *, ipv6: bool) -> None:
    try:
        if ipv6:
            ipaddress.IPv6Address(host)
        elif host.replace(".", "").isdigit():
            ipaddress.IPv4Address(host)
        elif _HOST_NAME.fullmatch(host) is None:
            raise ValueError(host)
    except ValueError:
        kind = "IPv6 address" if ipv6 else "host name or IPv4 address"
        raise ConfigError(
            f"{option} {value!r}: {host!r} is not a valid {kind}; "
            f"e.g. {option} {'[::1]' if ipv6 else '127.0.0.1'}:8080"
        ) from None


def _heartbeat(args: argparse.Namespace) -> Heartbeat:
    from fedbus.runtime.grpc import Heartbeat

    return Heartbeat(interval=args.heartbeat, timeout=3 * args.heartbeat)


def _server(args: argparse.Namespace) -> None:
    from fedbus.run.deployment import ServerOptions, run_server
    from fedbus.runtime.grpc import ServerTls
    from fedbus.runtime.grpc.security import read_pem

    listen = _address(args.listen, "--listen", any_port=True)
    given = args.config is not None or args.overrides
    config = _load(args) if given or not args.resume else None
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
        listen=listen,
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
        dashboard=None
        if args.dashboard is None
        else _dashboard_options(args.dashboard, "--dashboard", args.dashboard_token_file),
    )
    result = run_server(config, options)
    accuracy = result.summary["final_test_accuracy"]
    print(f"run directory:       {result.run_dir}")
    print(f"final test accuracy: {accuracy:.4f}" if accuracy is not None else "no evaluation")


def _client(args: argparse.Namespace) -> None:
    from fedbus.run.deployment import ClientOptions, run_client
    from fedbus.runtime.grpc import NodeIdentity, NodeKey, ServerTls
    from fedbus.runtime.grpc.security import read_pem

    server = _address(args.server, "--server", any_port=False)
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
        server=server,
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
    node_id = run_client(_load(args), options)
    hosted = (
        f"nodes {node_id} to {node_id + args.nodes - 1}" if args.nodes > 1 else f"node {node_id}"
    )
    print(f"{hosted}: the federation is over")


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to ``sys.stderr`` as it is when a record comes, not as it was at the start.

    The live progress display of ``fedbus run`` redirects stderr while it runs, so that a
    record logged then is printed above the bar instead of through it.
    """

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def _logging(command: str, verbosity: int) -> logging.Handler:
    """Send fedbus's logs to stderr at the level -v asks for; return the handler to remove.

    ``run``, ``flow``, ``plot`` and ``keys`` log errors only, -v adds INFO and -vv DEBUG.
    ``server`` and ``client`` are long-running processes: they log INFO by default, DEBUG
    with -v. Other libraries keep logging warnings only, whatever -v says.
    """
    network = command in ("server", "client")
    levels = (logging.ERROR, logging.INFO, logging.DEBUG)
    level = levels[min(verbosity + network, len(levels) - 1)]
    handler = _StderrHandler()
    handler.setFormatter(
        logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s: %(message)s"
            if network
            else "%(levelname)s %(name)s: %(message)s"
        )
    )
    package = logging.getLogger("fedbus")
    package.addHandler(handler)
    package.setLevel(level)
    return handler


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fedbus`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    package = logging.getLogger("fedbus")
    level_before = package.level
    handler = _logging(args.command, args.verbose + getattr(args, "verbose_after", 0))
    commands = {
        "run": _run,
        "flow": _flow,
        "plot": _plot,
        "partition": _partition,
        "trace": _trace,
        "verify": _verify,
        "dashboard": _dashboard,
        "server": _server,
        "client": _client,
        "keys": _keys,
    }
    try:
        commands[args.command](args)
    except ConfigError as exc:
        print(f"fedbus: configuration error: {exc}", file=sys.stderr)
        return 2
    except RunInterruptedError as exc:
        print(f"\nfedbus: {exc}", file=sys.stderr)
        return _INTERRUPTED
    except KeyboardInterrupt:  # before a run started, or a command that writes nothing
        print("\nfedbus: interrupted", file=sys.stderr)
        return _INTERRUPTED
    except FedbusError as exc:
        print(f"fedbus: {exc}", file=sys.stderr)
        return 1
    finally:  # main() may be called again in the same process (tests, notebooks)
        package.removeHandler(handler)
        package.setLevel(level_before)
    return 0


if __name__ == "__main__":
    sys.exit(main())
