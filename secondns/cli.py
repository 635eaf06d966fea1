"""The ``secondns`` command: one function per verb."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from . import __version__
from .errors import ConfigError


def _cmd_serve(args: argparse.Namespace) -> int:
    from twisted.internet import reactor as _reactor

    from .app import Application
    from .config import load_config
    from .logsetup import setup_logging

    config = load_config(args.config)
    setup_logging(args.log_level or config.server.log_level,
                  args.log_format or config.server.log_format)
    reactor: Any = _reactor
    app = Application(config, reactor)
    app.start()
    reactor.run()
    return 0


def _cmd_check_config(args: argparse.Namespace) -> int:
    from .config import load_config

    config = load_config(args.config)
    print(f"{args.config}: OK ({len(config.zones)} zones)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; ``secondns --help`` lists every verb."""
    parser = argparse.ArgumentParser(prog="secondns", description="Secondary authoritative DNS server.")
    parser.add_argument("--version", action="version", version=f"secondns {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the server")
    serve.add_argument("-c", "--config", required=True, help="configuration file (YAML)")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--log-format", choices=["text", "json"])
    serve.set_defaults(func=_cmd_serve)

    check = sub.add_parser("check-config", help="validate a configuration file and exit")
    check.add_argument("-c", "--config", required=True, help="configuration file (YAML)")
    check.set_defaults(func=_cmd_check_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
        return result
    except ConfigError as exc:
        print(f"secondns: configuration error:\n{exc}", file=sys.stderr)
        return 2
