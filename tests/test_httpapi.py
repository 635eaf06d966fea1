"""The HTTP listener's resources, rendered in memory with twisted.web's DummyRequest: no sockets.

Zones are ``ZoneStatus`` values written by hand, one per state (fresh, stale, expired, loading,
static), so each endpoint is checked against exactly the state it reports.  The live endpoint
behind a real socket is exercised in ``test_monitoring.py``.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from peers import require_binary
from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.web.resource import getChildForRequest
from twisted.web.test.requesthelper import DummyRequest

from secondns.ops.httpapi import StatusSite
from secondns.ops.metrics import SecondnsCollector, build_registry
from secondns.serve.stats import ServingStats
from secondns.transfer.refresh import PrimaryStatus, TransferRecord, ZoneStatus

NOW = 1_718_445_600.0  # 2024-06-15T10:00:00Z
TOKEN = "s3cr3t-control-token-4f9a"
PRIMARY = "192.0.2.1:53"
REMOTE = "198.51.100.7"


def fresh_zone(name: str = "example.com.") -> ZoneStatus:
    z = ZoneStatus(name, static=False, serial=2024061501, records=6, loaded=True,
                   last_success=NOW - 10, last_attempt=NOW - 10, next_refresh=NOW + 290,
                   expire_at=NOW + 3590, refresh=300.0, retry=60.0, expire=3600.0)
    z.primaries[PRIMARY] = PrimaryStatus(serial=2024061501, up=True, last_check=NOW - 10)
    z.last_transfer = TransferRecord("ixfr", "success", PRIMARY, NOW - 10, 0.0512, records=12, bytes=800,
                                     serial=2024061501)
    return z


def stale_zone(name: str = "example.net.") -> ZoneStatus:
    z = fresh_zone(name)
    z.last_attempt = NOW - 5
    z.last_error = f"{PRIMARY}: no answer from {PRIMARY}"
    z.primaries[PRIMARY] = PrimaryStatus(serial=2024061501, up=False, last_check=NOW - 5,
                                         error=f"no answer from {PRIMARY}")
    return z


def expired_zone(name: str = "example.org.") -> ZoneStatus:
    z = stale_zone(name)
    z.expired = True
    z.expire_at = NOW - 1
    return z


def loading_zone(name: str = "example.edu.") -> ZoneStatus:
    z = ZoneStatus(name, static=False)
    z.primaries[PRIMARY] = PrimaryStatus()
    return z


def static_zone(name: str = "static.example.") -> ZoneStatus:
    return ZoneStatus(name, static=True, serial=7, records=4, loaded=True)


@dataclass
class FakeController:
    """Records control calls; answers as the application does for a known zone."""

    calls: list[tuple[str, str | None]] = field(default_factory=list)

    def control(self, action: str, zone: str | None) -> tuple[int, str]:
        self.calls.append((action, zone))
        return 202, f"zone {zone}.: SOA check started"


@dataclass
class Reply:
    code: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def text(self) -> str:
        return self.body.decode()


class Harness:
    """A StatusSite over a mutable zone list, with a fake controller."""

    def __init__(self, zones: list[ZoneStatus], token: str | None = TOKEN,
                 trust_loopback: bool = True) -> None:
        self.zones = zones
        self.controller = FakeController()
        self.stats = ServingStats()
        collector = SecondnsCollector(self.stats, lambda: self.zones, unknown_notifies=lambda: 0)
        self.site = StatusSite(build_registry(collector), lambda: self.zones, self.controller,
                               lambda: token, trust_loopback=trust_loopback)

    def request(self, path: str, *, method: bytes = b"GET", client: str = "127.0.0.1",
                headers: dict[str, str] | None = None) -> Reply:
        request = DummyRequest([p.encode() for p in path.lstrip("/").split("/")])
        request.method = method
        request.client = (IPv6Address if ":" in client else IPv4Address)("TCP", client, 40000)
        for name, value in (headers or {}).items():
            request.requestHeaders.addRawHeader(name, value)
        request.render(getChildForRequest(self.site.site.resource, request))
        headers_out = {k.decode().lower(): b", ".join(v).decode()
                       for k, v in request.responseHeaders.getAllRawHeaders()}
        return Reply(request.responseCode or 200, headers_out, b"".join(request.written))

    def request_args(self, path: str, **args: str) -> Reply:
        """GET with a query string (DummyRequest takes args apart from the path)."""
        request = DummyRequest([p.encode() for p in path.lstrip("/").split("/")])
        request.args = {k.encode(): [v.encode()] for k, v in args.items()}
        request.client = IPv4Address("TCP", "127.0.0.1", 40000)
        request.render(getChildForRequest(self.site.site.resource, request))
        return Reply(request.responseCode or 200, {}, b"".join(request.written))


# -- /healthz


def test_healthz_answers_ok() -> None:
    reply = Harness([expired_zone()]).request("/healthz")
    assert (reply.code, reply.body) == (200, b"ok\n")


# -- /readyz


def test_readyz_is_ready_when_every_zone_is_served() -> None:
    reply = Harness([fresh_zone(), static_zone()]).request("/readyz")
    assert reply.code == 200
    assert reply.headers["content-type"] == "application/json"
    assert reply.json() == {"ready": True}


def test_readyz_counts_a_stale_zone_as_ready() -> None:
    # Stale data is still correct data until EXPIRE: withdrawing the node would only shed capacity.
    assert Harness([stale_zone()]).request("/readyz").code == 200


def test_readyz_names_the_expired_zone_and_why() -> None:
    reply = Harness([fresh_zone(), expired_zone("example.org.")]).request("/readyz")
    assert reply.code == 503
    assert reply.json() == {"ready": False,
                            "zones": {"example.org.": f"expired: {PRIMARY}: no answer from {PRIMARY}"}}


def test_readyz_names_a_zone_not_loaded_yet() -> None:
    reply = Harness([fresh_zone(), loading_zone("example.edu.")]).request("/readyz")
    assert reply.code == 503
    assert reply.json() == {"ready": False, "zones": {"example.edu.": "not loaded"}}


# -- /status


STATUS_FIELDS = {"zone", "state", "phase", "serial", "loaded", "expired", "records", "static", "primaries",
                 "last_success", "last_attempt", "next_refresh", "expires", "timers", "last_transfer",
                 "last_error"}


def test_status_lists_every_zone_with_its_state() -> None:
    zones = [fresh_zone("a.example."), stale_zone("b.example."), expired_zone("c.example."),
             loading_zone("d.example."), static_zone("e.example.")]
    body = Harness(zones).request("/status").json()
    assert [(z["zone"], z["state"]) for z in body["zones"]] == [
        ("a.example.", "fresh"), ("b.example.", "stale"), ("c.example.", "expired"),
        ("d.example.", "loading"), ("e.example.", "fresh")]


def test_status_has_the_same_fields_for_every_zone() -> None:
    zones = [fresh_zone("a.example."), loading_zone("d.example."), static_zone("e.example.")]
    body = Harness(zones).request("/status").json()
    assert all(set(z) == STATUS_FIELDS for z in body["zones"])


def test_status_shows_serials_timers_and_primaries() -> None:
    zone = Harness([fresh_zone()]).request("/status").json()["zones"][0]
    assert zone["serial"] == 2024061501
    assert zone["timers"] == {"refresh": 300.0, "retry": 60.0, "expire": 3600.0}
    assert zone["primaries"] == {PRIMARY: {"serial": 2024061501, "reachable": True,
                                           "last_check": "2024-06-15T09:59:50Z", "error": None}}


def test_status_times_are_utc_iso8601() -> None:
    zone = Harness([fresh_zone()]).request("/status").json()["zones"][0]
    assert (zone["last_success"], zone["next_refresh"], zone["expires"]) == (
        "2024-06-15T09:59:50Z", "2024-06-15T10:04:50Z", "2024-06-15T10:59:50Z")


def test_status_reports_the_last_transfer() -> None:
    zone = Harness([fresh_zone()]).request("/status").json()["zones"][0]
    assert zone["last_transfer"] == {"type": "ixfr", "result": "success", "primary": PRIMARY,
                                     "started": "2024-06-15T09:59:50Z", "duration": 0.051,
                                     "records": 12, "bytes": 800, "serial": 2024061501, "error": None}


def test_status_reports_why_a_zone_is_stale() -> None:
    zone = Harness([stale_zone()]).request("/status").json()["zones"][0]
    assert zone["last_error"] == f"{PRIMARY}: no answer from {PRIMARY}"
    assert zone["primaries"][PRIMARY]["reachable"] is False


# -- / (HTML)


def _as_text(html: bytes) -> str:
    """The page as a text browser shows it (html2text), so the check does not depend on markup."""
    exe = require_binary("html2text")
    out = subprocess.run([exe, "-utf8", "-nobs", "-width", "200"], input=html, capture_output=True,
                         timeout=10, check=True)
    return out.stdout.decode()


def test_status_page_is_html() -> None:
    reply = Harness([fresh_zone()]).request("/")
    assert reply.code == 200
    assert reply.headers["content-type"] == "text/html; charset=utf-8"
    assert reply.body.startswith(b"<!DOCTYPE html>")


def test_status_page_shows_each_zone_and_its_state_as_text() -> None:
    zones = [fresh_zone("a.example."), stale_zone("b.example."), expired_zone("c.example."),
             loading_zone("d.example.")]
    lines = _as_text(Harness(zones).request("/").body).splitlines()
    for name, state in (("a.example.", "FRESH"), ("b.example.", "STALE"), ("c.example.", "EXPIRED"),
                        ("d.example.", "LOADING")):
        assert any(name in line and state in line for line in lines), (name, state, lines)


def test_status_page_summarises_zone_states() -> None:
    text = _as_text(Harness([fresh_zone("a.example."), expired_zone("c.example.")]).request("/").body)
    assert "2 zones: 1 expired, 1 fresh" in " ".join(text.split())


def test_status_page_escapes_error_text() -> None:
    zone = stale_zone()
    zone.last_error = "bad answer: <script>alert(1)</script>"
    body = Harness([zone]).request("/").body
    assert b"<script>" not in body
    assert b"&lt;script&gt;" in body


# -- /metrics


def test_metrics_are_prometheus_text_by_default() -> None:
    reply = Harness([fresh_zone()]).request("/metrics")
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert 'secondns_zone_serial{zone="example.com."} 2.024061501e+09' in reply.text()


def test_metrics_are_openmetrics_when_asked() -> None:
    reply = Harness([fresh_zone()]).request(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert reply.headers["content-type"].startswith("application/openmetrics-text")
    assert reply.body.endswith(b"# EOF\n")


# -- /control


def test_control_from_a_remote_client_without_a_token_is_refused() -> None:
    h = Harness([fresh_zone()])
    reply = h.request("/control/refresh/example.com", method=b"POST", client=REMOTE)
    assert reply.code == 403
    assert reply.json()["ok"] is False
    assert h.controller.calls == []


def test_control_from_a_remote_client_with_the_right_token_is_accepted() -> None:
    h = Harness([fresh_zone()])
    reply = h.request("/control/refresh/example.com", method=b"POST", client=REMOTE,
                      headers={"Authorization": f"Bearer {TOKEN}"})
    assert reply.code == 202
    assert reply.json() == {"ok": True, "message": "zone example.com.: SOA check started"}
    assert h.controller.calls == [("refresh", "example.com")]


def test_control_from_a_remote_client_with_a_wrong_token_is_refused() -> None:
    h = Harness([fresh_zone()])
    reply = h.request("/control/refresh/example.com", method=b"POST", client=REMOTE,
                      headers={"Authorization": f"Bearer {TOKEN}x"})
    assert reply.code == 403
    assert h.controller.calls == []


def test_control_bearer_is_refused_remotely_when_no_token_is_configured() -> None:
    h = Harness([fresh_zone()], token=None)
    reply = h.request("/control/reload", method=b"POST", client=REMOTE,
                      headers={"Authorization": "Bearer "})
    assert reply.code == 403
    assert h.controller.calls == []


@pytest.mark.parametrize("client", ["127.0.0.1", "::1", "::ffff:127.0.0.1"])
def test_control_from_loopback_needs_no_token(client: str) -> None:
    h = Harness([fresh_zone()])
    reply = h.request("/control/retransfer/example.com", method=b"POST", client=client)
    assert reply.code == 202
    assert h.controller.calls == [("retransfer", "example.com")]


def test_control_from_loopback_needs_the_token_when_the_listener_is_not_loopback() -> None:
    # Behind a wildcard or public listener, "loopback" may be a local proxy relaying anyone.
    h = Harness([fresh_zone()], trust_loopback=False)
    reply = h.request("/control/retransfer/example.com", method=b"POST", client="127.0.0.1")
    assert reply.code == 403
    assert h.controller.calls == []


def test_control_without_an_action_is_404() -> None:
    h = Harness([fresh_zone()])
    assert h.request("/control", method=b"POST").code == 404
    assert h.controller.calls == []


def test_control_get_is_405_and_names_post() -> None:
    h = Harness([fresh_zone()])
    reply = h.request("/control/refresh/example.com")
    assert reply.code == 405
    assert reply.headers["allow"] == "POST"
    assert h.controller.calls == []


def test_control_token_never_appears_in_a_response() -> None:
    h = Harness([fresh_zone(), expired_zone(), loading_zone()])
    replies = [h.request(p) for p in ("/", "/status", "/readyz", "/healthz", "/metrics", "/control")]
    replies += [
        h.request("/control/refresh/example.com", method=b"POST", client=REMOTE),
        h.request("/control/refresh/example.com", method=b"POST", client=REMOTE,
                  headers={"Authorization": f"Bearer {TOKEN}"}),
        h.request("/control/refresh/example.com", method=b"POST", client=REMOTE,
                  headers={"Authorization": f"Bearer {TOKEN}x"}),
    ]
    for reply in replies:
        assert TOKEN not in reply.body.decode(errors="replace")
        assert all(TOKEN not in v for v in reply.headers.values())


# -- /status and / at scale: filters, pages, problems first


def many() -> list[ZoneStatus]:
    zones = [fresh_zone(f"z{i:03d}.example.") for i in range(250)]
    zones[100] = expired_zone("z100.example.")
    zones[200] = stale_zone("z200.example.")
    for z in zones:  # the filters compare with the real clock: not expiring unless a test says so
        if not z.expired:
            z.expire_at = time.time() + 3590
    return zones


def test_status_pages_with_limit_and_offset_and_says_where_next() -> None:
    body = Harness(many()).request_args("/status", limit="100", offset="200").json()
    assert body["total"] == 250 and body["offset"] == 200 and len(body["zones"]) == 50
    assert "next_offset" not in body
    body = Harness(many()).request_args("/status", limit="100").json()
    assert [z["zone"] for z in body["zones"]][:2] == ["z000.example.", "z001.example."]
    assert body["next_offset"] == 100


def test_status_filters_by_state_and_zone_prefix() -> None:
    h = Harness(many())
    assert [z["zone"] for z in h.request_args("/status", state="expired").json()["zones"]] == [
        "z100.example."]
    assert [z["zone"] for z in h.request_args("/status", state="problem").json()["zones"]] == [
        "z100.example.", "z200.example."]
    assert h.request_args("/status", zone="Z01").json()["total"] == 10  # z010..z019, any case


def test_status_expiring_filter_finds_zones_in_the_last_quarter_of_expire() -> None:
    zones = many()
    zones[5].expire_at = time.time() + 0.1 * 3600  # EXPIRE 3600: 10% left
    body = Harness(zones).request_args("/status", state="expiring").json()
    assert [z["zone"] for z in body["zones"]] == ["z005.example."]


def test_status_rejects_a_bad_filter() -> None:
    assert Harness(many()).request_args("/status", state="bogus").code == 400
    assert Harness(many()).request_args("/status", limit="0").code == 400


def test_status_page_shows_problems_first_and_counts_every_zone() -> None:
    text = Harness(many()).request_args("/", limit="5").text()
    rows = text.split("<tr>")[2:]
    assert "z100.example." in rows[0] and "EXPIRED" in rows[0]
    assert "z200.example." in rows[1] and "STALE" in rows[1]
    assert len(rows) == 5
    assert "250 zones" in text


def test_metrics_with_per_zone_off_have_no_zone_label_but_every_summary() -> None:
    h = Harness([fresh_zone(), expired_zone(), loading_zone()])
    collector = SecondnsCollector(h.stats, lambda: h.zones, unknown_notifies=lambda: 0, per_zone=False)
    h.site = StatusSite(build_registry(collector), lambda: h.zones, h.controller, lambda: TOKEN)
    text = h.request("/metrics").text()
    assert "zone=" not in text
    assert 'secondns_zones{state="expired"} 1.0' in text
    assert 'secondns_zones{state="loading"} 1.0' in text
    assert "secondns_metrics_per_zone 0.0" in text
    assert "secondns_zones_oldest_refresh_success_timestamp_seconds 1.71844559e+09" in text
    assert "secondns_zones_soonest_expiry_timestamp_seconds" in text
    assert 'secondns_transfers_total{result="success",type="ixfr"}' in text


def test_metrics_rendered_off_the_reactor_are_shared_by_concurrent_scrapes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import secondns.ops.httpapi

    monkeypatch.setattr(secondns.ops.httpapi, "METRICS_CACHE_MIN_RENDER_SECONDS", 0.0)  # all count as slow
    renders: list[defer.Deferred[bytes]] = []
    calls: list[Any] = []

    def renderer(render: Any) -> defer.Deferred[bytes]:
        calls.append(render)
        d: defer.Deferred[bytes] = defer.Deferred()
        renders.append(d)
        return d

    h = Harness([fresh_zone()])
    h.site.renderer = renderer
    first, second = DummyRequest([b"metrics"]), DummyRequest([b"metrics"])
    for r in (first, second):
        r.render(getChildForRequest(h.site.site.resource, r))
    assert len(calls) == 1 and not first.written  # one rendering, nobody answered yet
    renders[0].callback(calls[0]())
    assert first.finished and second.finished
    assert b"secondns_zone_serial" in b"".join(second.written)
    third = DummyRequest([b"metrics"])
    third.render(getChildForRequest(h.site.site.resource, third))
    assert len(calls) == 1 and third.written  # served from the 1 s cache


def test_a_cheap_metrics_rendering_is_not_reused() -> None:
    # A scrape right after an event must show it when rendering costs nothing (small configs).
    calls: list[Any] = []

    def renderer(render: Any) -> defer.Deferred[bytes]:
        calls.append(render)
        return defer.succeed(render())

    h = Harness([fresh_zone()])
    h.site.renderer = renderer
    for _ in range(2):
        r = DummyRequest([b"metrics"])
        r.render(getChildForRequest(h.site.site.resource, r))
        assert r.written
    assert len(calls) == 2
