"""HTTP listener: metrics, health, readiness, status (JSON and HTML), control.

Served by twisted.web from the DNS process.  Reads only: the collector and
status views look at state the refreshers already keep.  Control requests
(POST) need the bearer token, except from loopback clients of a listener
bound to 127.0.0.1 or ::1, because a reachable "retransfer" is an
amplification and denial tool.
"""

from __future__ import annotations

import hmac
import html
import ipaddress
import json
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from twisted.web import resource, server

from .refresh import ZoneStatus


class Controller(Protocol):
    """What the control endpoints ask of the application."""

    def control(self, action: str, zone: str | None) -> tuple[int, str]:
        """Run an action; returns (HTTP status, one-line message)."""


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def zone_status_json(z: ZoneStatus) -> dict[str, Any]:
    """One zone as GET /status shows it."""
    lt = z.last_transfer
    return {
        "zone": z.name,
        "state": z.state,
        "phase": z.phase,
        "serial": z.serial,
        "loaded": z.loaded,
        "expired": z.expired,
        "records": z.records,
        "static": z.static,
        "primaries": {p: {"serial": ps.serial, "reachable": ps.up, "last_check": _iso(ps.last_check),
                          "error": ps.error} for p, ps in z.primaries.items()},
        "last_success": _iso(z.last_success),
        "last_attempt": _iso(z.last_attempt),
        "next_refresh": _iso(z.next_refresh),
        "expires": _iso(z.expire_at),
        "timers": {"refresh": z.refresh, "retry": z.retry, "expire": z.expire},
        "last_transfer": None if lt is None else {
            "type": lt.kind, "result": lt.result, "primary": lt.primary, "started": _iso(lt.started),
            "duration": round(lt.duration, 3), "records": lt.records, "bytes": lt.bytes,
            "serial": lt.serial, "error": lt.error},
        "last_error": z.last_error,
    }


def not_ready_reasons(zones: Iterable[ZoneStatus]) -> dict[str, str]:
    """Zones that keep the node from being ready, with why."""
    out = {}
    for z in zones:
        if not z.loaded:
            out[z.name] = "not loaded" + (f": {z.last_error}" if z.last_error else "")
        elif z.expired:
            out[z.name] = "expired" + (f": {z.last_error}" if z.last_error else "")
    return out


def _is_loopback(host: str) -> bool:
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


class _Leaf(resource.Resource):
    isLeaf = True

    def __init__(self, handler: Callable[[Any], bytes]) -> None:
        resource.Resource.__init__(self)  # type: ignore[no-untyped-call]
        self.handler = handler

    def render_GET(self, request: Any) -> bytes:
        return self.handler(request)


class _Control(resource.Resource):
    """POST /control/<action>[/<zone>]."""

    isLeaf = True

    def __init__(self, controller: Controller, token: Callable[[], str | None],
                 trust_loopback: bool = True) -> None:
        resource.Resource.__init__(self)  # type: ignore[no-untyped-call]
        self.controller = controller
        self.token = token
        self.trust_loopback = trust_loopback  # False unless the listener itself is 127.0.0.1 or ::1

    def _authorised(self, request: Any) -> bool:
        token = self.token()
        given = request.getHeader("authorization") or ""
        if token and given.startswith("Bearer ") and hmac.compare_digest(
                given[7:].strip().encode(), token.encode()):
            return True
        return self.trust_loopback and _is_loopback(request.getClientAddress().host)

    def render_POST(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        if not self._authorised(request):
            request.setResponseCode(403)
            return _json({"ok": False, "error": "control requests need loopback or a valid bearer token"})
        parts = [p.decode("utf-8", "replace") for p in request.postpath if p]
        if not parts:
            request.setResponseCode(404)
            return _json({"ok": False, "error": "no action given"})
        action, zone = parts[0], ("/".join(parts[1:]) or None)
        code, message = self.controller.control(action, zone)
        request.setResponseCode(code)
        return _json({"ok": code < 400, "message" if code < 400 else "error": message})

    def render_GET(self, request: Any) -> bytes:
        request.setResponseCode(405)
        request.setHeader(b"allow", b"POST")
        return b"use POST\n"


def _json(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2) + "\n").encode()


class StatusSite:
    """Builds the resource tree; one instance per HTTP listener."""

    def __init__(self, registry: CollectorRegistry, zones: Callable[[], list[ZoneStatus]],
                 controller: Controller, token: Callable[[], str | None],
                 trust_loopback: bool = True, loading: Callable[[], str | None] | None = None) -> None:
        self.registry = registry
        self.zones = zones
        self.loading = loading  # start-up progress while copies load, None once all are in
        root: Any = _Root(self._page)  # zope interfaces do not type-check
        root.putChild(b"", _Leaf(self._page))
        root.putChild(b"metrics", _Leaf(self._metrics))
        root.putChild(b"healthz", _Leaf(self._healthz))
        root.putChild(b"readyz", _Leaf(self._readyz))
        root.putChild(b"status", _Leaf(self._status))
        root.putChild(b"control", _Control(controller, token, trust_loopback))
        self.site: Any = server.Site(root)  # type: ignore[no-untyped-call]
        self.site.displayTracebacks = False

    def _metrics(self, request: Any) -> bytes:
        accept = request.getHeader("accept") or ""
        encoder, content_type = choose_encoder(accept)
        request.setHeader(b"content-type", content_type.encode())
        data: bytes = encoder(self.registry)
        return data

    def _healthz(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"text/plain")
        return b"ok\n"

    def _readyz(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        loading = self.loading() if self.loading is not None else None
        if loading is not None:
            request.setResponseCode(503)
            return _json({"ready": False, "loading": loading})
        reasons = not_ready_reasons(self.zones())
        if reasons:
            request.setResponseCode(503)
            return _json({"ready": False, "zones": reasons})
        return _json({"ready": True})

    def _status(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        return _json({"time": _iso(time.time()), "zones": [zone_status_json(z) for z in self.zones()]})

    def _page(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return render_html(self.zones()).encode()


class _Root(resource.Resource):
    def __init__(self, page: Callable[[Any], bytes]) -> None:
        resource.Resource.__init__(self)  # type: ignore[no-untyped-call]
        self.page = page

    def render_GET(self, request: Any) -> bytes:
        return self.page(request)


_STATE_STYLE = {"fresh": "#1a7f37", "stale": "#9a6700", "expired": "#cf222e", "loading": "#57606a"}


def _ago(ts: float | None, now: float) -> str:
    if ts is None:
        return "never"
    delta = ts - now
    word = "in " if delta > 0 else ""
    suffix = "" if delta > 0 else " ago"
    secs = abs(delta)
    if secs < 120:
        text = f"{secs:.0f}s"
    elif secs < 7200:
        text = f"{secs / 60:.0f}m"
    elif secs < 172800:
        text = f"{secs / 3600:.1f}h"
    else:
        text = f"{secs / 86400:.1f}d"
    return f"{word}{text}{suffix}"


def render_html(zones: list[ZoneStatus], now: float | None = None) -> str:
    """A plain status page: one table row per zone, readable in a text browser."""
    now = time.time() if now is None else now
    counts: dict[str, int] = {}
    for z in zones:
        counts[z.state] = counts.get(z.state, 0) + 1
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "no zones"
    rows = []
    for z in zones:
        primaries = "<br>".join(
            f"{html.escape(p)}: {ps.serial if ps.serial is not None else '-'}"
            f" ({'up' if ps.up else 'down' if ps.up is False else 'unchecked'})"
            for p, ps in z.primaries.items()) or "(none: static zone)"
        lt = z.last_transfer
        transfer = "-" if lt is None else (
            f"{lt.kind.upper()} {lt.result}, {lt.records} records, {lt.duration:.2f}s, "
            f"{_ago(lt.started, now)}")
        color = _STATE_STYLE.get(z.state, "#000")
        rows.append(
            "<tr>"
            f"<td>{html.escape(z.name)}</td>"
            f"<td style=\"color:{color}\"><b>{z.state.upper()}</b></td>"
            f"<td>{z.serial if z.serial is not None else '-'}</td>"
            f"<td>{primaries}</td>"
            f"<td>{_ago(z.last_success, now)}</td>"
            f"<td>{_ago(z.next_refresh, now) if z.next_refresh else '-'}</td>"
            f"<td>{_ago(z.expire_at, now) if z.expire_at else 'never'}</td>"
            f"<td>{html.escape(transfer)}</td>"
            f"<td>{html.escape(z.last_error or '-')}</td>"
            "</tr>")
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>secondns status</title>
<style>body{{font-family:sans-serif}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}}</style></head>
<body><h1>secondns status</h1>
<p>{len(zones)} zones: {html.escape(summary)}. Generated {_iso(now)}.
Also as <a href="/status">JSON</a>, <a href="/metrics">metrics</a>, <a href="/readyz">readiness</a>.</p>
<table><tr><th>Zone</th><th>State</th><th>Serial</th><th>Primaries (serial)</th><th>Last good check</th>
<th>Next check</th><th>Expires</th><th>Last transfer</th><th>Last error</th></tr>
{chr(10).join(rows)}
</table></body></html>
"""
