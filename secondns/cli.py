"""The ``secondns`` command: one function per verb.

``serve`` runs the server; ``check-config`` and ``dump`` work on files
alone; ``status``, ``refresh``, ``retransfer`` and ``reload`` talk to the
running server over its HTTP listener (``server.http``), like rndc/knotc do
over their control channels.  Every failure is one line on stderr and a
non-zero exit.
"""

from __future__ import annotations

import argparse
import gc
import json
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from secondns import __version__
from secondns.config import Config, load_config
from secondns.errors import ConfigError, SecondnsError


class CommandError(SecondnsError):
    """A verb failed; the message is the one line the operator sees."""


def _cmd_serve(args: argparse.Namespace) -> int:
    from secondns.serve.reactor import install

    install()  # before anything imports twisted.internet.reactor (serve/reactor.py)
    from twisted.internet import reactor as _reactor
    from twisted.internet.error import CannotListenError

    from secondns.app import Application
    from secondns.ops.logsetup import setup_logging

    config = load_config(args.config)
    setup_logging(args.log_level or config.server.log_level,
                  args.log_format or config.server.log_format)
    reactor: Any = _reactor
    app = Application(config, reactor)
    try:
        app.start()
    except CannotListenError as exc:  # one line, not a traceback: port in use, address not configured
        raise CommandError(f"cannot listen on {exc.interface or '*'} port {exc.port}: {exc.socketError}")
    # The query path makes no reference cycles, so the cyclic collector only has to
    # catch Twisted's occasional ones: move the loaded zones out of its sight and
    # run it less often, so a full collection never stalls queries.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    signal.signal(signal.SIGHUP, lambda *_: reactor.callFromThread(app.on_sighup))
    reactor.run()
    return 0


def _cmd_check_config(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    print(f"{args.config}: OK ({len(config.zones)} zones)")
    return 0


def _control_url(config: Config, path: str) -> str:
    http = config.server.http
    if http is None:
        raise CommandError("server.http is null in the configuration: no control channel")
    host = f"[{http.host}]" if ":" in http.host else http.host
    if http.host in ("0.0.0.0", "::"):
        host = "127.0.0.1" if http.host == "0.0.0.0" else "[::1]"
    return f"http://{host}:{http.port}{path}"


def _request(config: Config, path: str, method: str = "GET", timeout: float = 10.0) -> Any:
    url = _control_url(config, path)
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    token = config.server.control_token
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            body = json.loads(exc.read() or b"{}")
            message = body.get("error") or body.get("message") or exc.reason
        except ValueError:
            message = exc.reason
        raise CommandError(f"{message} (HTTP {exc.code})") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CommandError(f"cannot reach secondns at {url}: {reason}") from None


def _ago(iso: str | None) -> str:
    if not iso:
        return "-"
    ts = time.mktime(time.strptime(iso, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    delta = ts - time.time()
    secs = abs(delta)
    text = f"{secs:.0f}s" if secs < 120 else f"{secs / 60:.0f}m" if secs < 7200 else f"{secs / 3600:.1f}h"
    return f"in {text}" if delta > 0 else f"{text} ago"


def _cmd_status(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    body = _request(config, "/status")
    zones = body.get("zones", [])
    # /status pages (1,000 zones by default): follow next_offset, bounded by the total.
    for _ in range(int(body.get("total", 0)) // max(1, len(zones) or 1) + 1):
        if "next_offset" not in body:
            break
        body = _request(config, f"/status?offset={int(body['next_offset'])}")
        zones.extend(body.get("zones", []))
    body["zones"] = zones
    body.pop("next_offset", None)
    if args.json:
        print(json.dumps(body, indent=2))
        return 0
    rows = [("ZONE", "STATE", "SERIAL", "PRIMARY SERIAL", "LAST CHECK", "NEXT CHECK", "EXPIRES")]
    for z in zones:
        primary = ",".join(str(p["serial"]) if p["serial"] is not None else "-"
                           for p in z["primaries"].values()) or "static"
        rows.append((z["zone"], z["state"], str(z["serial"] if z["serial"] is not None else "-"), primary,
                     _ago(z["last_success"]), _ago(z["next_refresh"]),
                     _ago(z["expires"]) if z["expires"] else "never"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    errors = [z for z in zones if z.get("last_error")]
    for z in errors:
        print(f"{z['zone']}: last error: {z['last_error']}", file=sys.stderr)
    return 0 if all(z["state"] != "expired" for z in zones) else 1


def _control(args: argparse.Namespace, action: str) -> int:
    path = f"/control/{action}" + (f"/{args.zone}" if getattr(args, "zone", None) else "")
    body = _request(load_config(args.config), path, method="POST")
    print(body.get("message", "ok"))
    return 0


def _cmd_refresh(args: argparse.Namespace) -> int:
    return _control(args, "refresh")


def _cmd_retransfer(args: argparse.Namespace) -> int:
    return _control(args, "retransfer")


def _cmd_reload(args: argparse.Namespace) -> int:
    return _control(args, "reload")


def _cmd_dump(args: argparse.Namespace) -> int:
    from secondns.app import read_copy
    from secondns.store.zonefile import write_zone

    config = load_config(args.config)
    name = args.zone.lower().rstrip(".") + "."
    zc = config.zones.get(name)
    if zc is None:
        raise CommandError(f"zone {name} is not in {args.config}")
    loaded = read_copy(config.server.storage, zc)
    if loaded is None:
        raise CommandError(f"zone {name}: no copy in {config.server.storage} yet")
    write_zone(loaded[0], sys.stdout)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; ``secondns --help`` lists every verb."""
    parser = argparse.ArgumentParser(prog="secondns", description="Secondary authoritative DNS server.")
    parser.add_argument("--version", action="version", version=f"secondns {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def verb(name: str, helptext: str, func: Any, zone: bool = False) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=helptext, description=helptext)
        p.add_argument("-c", "--config", default="/etc/secondns/secondns.yaml",
                       help="configuration file (default: %(default)s)")
        if zone:
            p.add_argument("zone", help="zone name, e.g. example.com")
        p.set_defaults(func=func)
        return p

    serve = verb("serve", "run the server", _cmd_serve)
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--log-format", choices=["text", "json"])
    verb("check-config", "validate a configuration file and exit", _cmd_check_config)
    status = verb("status", "table of zones: serial, primary serial, state, checks, expiry", _cmd_status)
    status.add_argument("--json", action="store_true", help="print the raw JSON status")
    verb("refresh", "check a zone's SOA at its primaries now", _cmd_refresh, zone=True)
    verb("retransfer", "transfer a zone in full (AXFR) now", _cmd_retransfer, zone=True)
    verb("reload", "re-read the configuration of the running server", _cmd_reload)
    verb("dump", "print a zone's copy on disk as a zone file", _cmd_dump, zone=True)
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
    except SecondnsError as exc:
        print(f"secondns: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 1
