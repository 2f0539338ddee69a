"""The ``fedbus`` command line: argument parsing and printing only.

::

    fedbus run [CONFIG] [--set section.key=value ...] [-q]
    fedbus flow [CONFIG] [--set ...] [--output flow.png]
    fedbus plot RUN_DIR [RUN_DIR ...] [--output comparison.png]
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from fedbus.errors import ConfigError, FedbusError

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
    return parser


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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fedbus`` command; returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.ERROR,
        format="%(levelname)s %(name)s: %(message)s",
    )
    commands = {"run": _run, "flow": _flow, "plot": _plot}
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
