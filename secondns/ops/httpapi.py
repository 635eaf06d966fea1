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
from twisted.internet import defer
from twisted.web import resource, server

from secondns.ops.metrics import encode
from secondns.transfer.refresh import STATES, ZoneStatus

# A scrape rendered less than this long ago is served again: Prometheus HA pairs and a person
# with a browser scraping at once cost one rendering.
METRICS_CACHE_SECONDS = 1.0
# ...but only a rendering that took this long is reused: small configurations (a few ms) are
# always rendered fresh, so a scrape right after an event shows it.
METRICS_CACHE_MIN_RENDER_SECONDS = 0.05
# /status and / show at most this many zones unless ?limit= says otherwise (at most MAX_LIMIT).
DEFAULT_LIMIT = 1000
MAX_LIMIT = 100_000
# The HTML page lists problems first: expired, then not loaded, stale, expiring, fresh.
_PROBLEM_ORDER = {"expired": 0, "loading": 1, "stale": 2, "expiring": 3, "fresh": 4}

Renderer = Callable[[Callable[[], bytes]], "defer.Deferred[bytes]"]
"""Runs a rendering function off the reactor thread (the app uses the reactor's thread pool)."""


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
    out = _zone_json(z, lt)
    if z.catalog is not None:
        out["catalog"] = z.catalog
    if z.catalog_members is not None:
        out["catalog_zone"] = {"members": z.catalog_members, "problems": z.catalog_error}
    return out


def _zone_json(z: ZoneStatus, lt: Any) -> dict[str, Any]:
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


class ZoneQuery:
    """``?state=&zone=&limit=&offset=`` of /status and /, checked.

    ``state`` is one of the zone states, or ``expiring`` (served, in the
    last quarter of EXPIRE), or ``problem`` (anything but fresh); ``zone``
    is a name prefix, compared without case and trailing dot.
    """

    def __init__(self, args: dict[bytes, list[bytes]], default_limit: int = DEFAULT_LIMIT) -> None:
        def one(key: bytes) -> str | None:
            values = args.get(key)
            return values[0].decode("utf-8", "replace") if values else None

        self.error: str | None = None
        self.state = one(b"state")
        if self.state is not None:
            self.state = self.state.lower()
            if self.state not in (*STATES, "expiring", "problem"):
                self.error = (f"state must be one of {', '.join((*STATES, 'expiring', 'problem'))},"
                              f" got {self.state!r}")
        zone = one(b"zone")
        self.zone = zone.lower().rstrip(".") if zone else None
        self.limit = self._int(one(b"limit"), default_limit, 1, MAX_LIMIT, "limit")
        self.offset = self._int(one(b"offset"), 0, 0, None, "offset")

    def _int(self, text: str | None, default: int, lo: int, hi: int | None, what: str) -> int:
        if text is None:
            return default
        if not text.isdigit() or int(text) < lo or (hi is not None and int(text) > hi):
            self.error = f"{what} must be an integer in {lo}..{hi if hi is not None else ''}"
            return default
        return int(text)

    def matches(self, z: ZoneStatus, now: float) -> bool:
        if self.zone is not None and not z.name.startswith(self.zone):
            return False
        if self.state is None:
            return True
        if self.state == "expiring":
            return z.expiring(now)
        if self.state == "problem":
            return z.state != "fresh" or z.expiring(now)
        return z.state == self.state

    def select(self, zones: Iterable[ZoneStatus], now: float,
               problems_first: bool = False) -> tuple[list[ZoneStatus], int]:
        """The page asked for, and how many zones matched in all."""
        chosen = [z for z in zones if self.matches(z, now)]
        if problems_first:
            chosen.sort(key=lambda z: _PROBLEM_ORDER.get(
                "expiring" if z.state == "fresh" and z.expiring(now) else z.state, 5))
        return chosen[self.offset:self.offset + self.limit], len(chosen)


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
                 trust_loopback: bool = True, loading: Callable[[], str | None] | None = None,
                 renderer: Renderer | None = None) -> None:
        self.registry = registry
        self.zones = zones
        self.renderer = renderer  # None: render /metrics on the spot (tests)
        self._cache: dict[str, tuple[float, bytes]] = {}
        self._started: dict[str, float] = {}  # content type -> when its rendering began
        self._rendering: dict[str, list[Any]] = {}
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

    def _metrics(self, request: Any) -> Any:
        """Render off the reactor: at 10,000 zones one rendering takes seconds of CPU.

        With a renderer, the collector runs in a worker thread and the
        reactor keeps answering queries meanwhile (it gets the GIL back every
        switch interval); requests that arrive during a rendering wait for
        it, and one finished less than METRICS_CACHE_SECONDS ago is reused when it
        was expensive (METRICS_CACHE_MIN_RENDER_SECONDS or more).
        """
        accept = request.getHeader("accept") or ""
        encoder, content_type = choose_encoder(accept)
        request.setHeader(b"content-type", content_type.encode())
        if self.renderer is None:
            return encode(self.registry, encoder)
        cached = self._cache.get(content_type)
        if cached is not None and time.monotonic() - cached[0] < METRICS_CACHE_SECONDS:
            return cached[1]
        waiting = self._rendering.get(content_type)
        if waiting is not None:
            waiting.append(request)
            return server.NOT_DONE_YET
        self._rendering[content_type] = [request]  # before the renderer, which may finish at once
        self._started[content_type] = time.monotonic()
        d = self.renderer(lambda: encode(self.registry, encoder))
        d.addBoth(self._rendered, content_type)
        return server.NOT_DONE_YET

    def _rendered(self, result: Any, content_type: str) -> None:
        waiting = self._rendering.pop(content_type, [])
        now = time.monotonic()
        if isinstance(result, bytes) and \
                now - self._started.pop(content_type, now) >= METRICS_CACHE_MIN_RENDER_SECONDS:
            self._cache[content_type] = (now, result)
        for request in waiting:
            if getattr(request, "_disconnected", False) or request.finished:
                continue
            if not isinstance(result, bytes):
                request.setResponseCode(500)
                request.setHeader(b"content-type", b"text/plain")
                request.write(b"metrics rendering failed\n")
            else:
                request.write(result)
            request.finish()

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
        q = ZoneQuery(request.args or {})
        if q.error is not None:
            request.setResponseCode(400)
            return _json({"error": q.error})
        now = time.time()
        page, total = q.select(self.zones(), now)
        body: dict[str, Any] = {"time": _iso(now), "total": total, "offset": q.offset,
                                "limit": q.limit, "zones": [zone_status_json(z) for z in page]}
        if q.offset + len(page) < total:
            body["next_offset"] = q.offset + len(page)
        return _json(body)

    def _page(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        q = ZoneQuery(request.args or {}, default_limit=200)
        if q.error is not None:
            request.setResponseCode(400)
            return f"<!DOCTYPE html><p>{html.escape(q.error)}</p>\n".encode()
        zones = self.zones()
        now = time.time()
        page, total = q.select(zones, now, problems_first=True)
        return render_html(page, now, all_zones=zones, matched=total, query=q).encode()


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


def render_html(zones: list[ZoneStatus], now: float | None = None, *,
                all_zones: list[ZoneStatus] | None = None, matched: int | None = None,
                query: ZoneQuery | None = None) -> str:
    """A plain status page: one table row per zone, readable in a text browser.

    *zones* is the page shown (problems first); the summary counts
    *all_zones*, so a filtered page still says how the whole node is doing.
    """
    now = time.time() if now is None else now
    everything = zones if all_zones is None else all_zones
    counts: dict[str, int] = {}
    for z in everything:
        counts[z.state] = counts.get(z.state, 0) + 1
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "no zones"
    shown = len(zones) if matched is None else matched
    paging = ""
    if query is not None:
        links = " ".join(f'<a href="/?state={s}">{s}</a>' for s in ("problem", *STATES, "expiring"))
        paging = (f"<p>Showing {len(zones)} of {shown} matching zones from {query.offset}"
                  f" (<code>?state=&amp;zone=&amp;limit=&amp;offset=</code>). Filter: {links}.</p>")
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
<p>{len(everything)} zones: {html.escape(summary)}. Generated {_iso(now)}.
Also as <a href="/status">JSON</a>, <a href="/metrics">metrics</a>, <a href="/readyz">readiness</a>.</p>
{paging}
<table><tr><th>Zone</th><th>State</th><th>Serial</th><th>Primaries (serial)</th><th>Last good check</th>
<th>Next check</th><th>Expires</th><th>Last transfer</th><th>Last error</th></tr>
{chr(10).join(rows)}
</table></body></html>
"""
