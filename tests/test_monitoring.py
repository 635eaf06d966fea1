"""The monitoring kit in docs/monitoring against real tools: promtool, Prometheus, BIND, secondns.

* the alert rules pass ``promtool check rules`` and their unit tests (``promtool test rules``);
* a live scrape passes ``promtool check metrics`` and comes as OpenMetrics when asked;
* every metric the dashboard and the rules name exists in a live scrape;
* failover end to end: secondns follows a BIND primary whose zone has a short EXPIRE, Prometheus
  scrapes it every second and evaluates ``alerts.yml``; the primary stops and the test watches,
  through Prometheus's HTTP API, the primary go down and the expiry alerts go pending and fire;
* ``/readyz`` turns 503 when the zone expires and 200 again once the primary is back.

Prometheus runs a copy of alerts.yml whose ``for:`` durations are all rewritten to 1s, so alerts
meant to wait minutes fire within the test's time; the expressions themselves are unchanged.
Every wait is bounded, and every server listens on 127.0.0.1 only and is stopped by PID.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from peers import LOOPBACK, REPO_ROOT, Bind, Peer, Secondns, query, require_binary, soa_zone_text
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

pytestmark = pytest.mark.integration

DOCS = REPO_ROOT / "docs" / "monitoring"
ALERTS = DOCS / "alerts.yml"
ALERTS_TEST = DOCS / "alerts_test.yml"
DASHBOARD = DOCS / "grafana-dashboard.json"
ZONE = "example.com"
ORIGIN = ZONE + "."
# REFRESH 2, RETRY 1, EXPIRE 10: the zone expires 10 s after the primary stops answering.
EXPIRE = 10
SHORT_TIMERS_ZONE = soa_zone_text(ZONE, 2024061501).replace("3600 600 86400 300", f"2 1 {EXPIRE} 300")
# secondns clamps SOA timers to at least 5/5/60 s by default; let the short ones through.
SHORT_CLAMPS = {"refresh-min": 1, "retry-min": 1, "expire-min": 1}
METRIC_NAME = re.compile(r"\b(?:secondns|process)_[a-z0-9_]+\b")
OPENMETRICS = "application/openmetrics-text; version=1.0.0"


def wait_for(what: str, probe: Callable[[], Any], timeout: float, interval: float = 0.25,
             explain: Callable[[], str] = str) -> Any:
    """Poll ``probe`` until it returns something truthy; fail with ``what``, the last value and
    ``explain()`` (say, a server's status and log tail)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"{what}: not seen within {timeout:g} s (last: {last!r})\n{explain()}")


Response = tuple[int, dict[str, str], bytes]


def http_get(url: str, headers: dict[str, str] | None = None, timeout: float = 5.0) -> Response:
    """(status, headers, body) of a GET, error statuses included."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def promtool(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    exe = require_binary("promtool")
    return subprocess.run([exe, *args], input=stdin.decode() if stdin is not None else None,
                          capture_output=True, text=True, timeout=60, check=False, cwd=REPO_ROOT)


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"] if "alert" in rule]


def dashboard_exprs() -> list[str]:
    """Every PromQL expression in the dashboard: panel targets and templating queries."""
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            exprs.append(var["query"]["query"] if isinstance(var["query"], dict) else var["query"])
    return exprs


def sample_names(exposition: str) -> set[str]:
    return {s.name for family in parse_text(exposition) for s in family.samples}


# --------------------------------------------------------------------------------------------------
# Prometheus as a peer


class Prometheus(Peer):
    """``prometheus`` on 127.0.0.1 with its TSDB in the work directory; ``port`` is its HTTP port.

    ``rules`` is copied in with every ``for:`` shortened to ``for_`` (see the module docstring).
    """

    binary = "prometheus"
    log_name = "prometheus.log"

    def __init__(self, workdir: Path, targets: list[str], rules: Path, *, for_: str = "1s") -> None:
        super().__init__(workdir)
        self.targets = targets
        self.rules = rules
        self.for_ = for_

    def _write_config(self) -> None:
        rules = re.sub(r"(?m)^(\s+for:\s*)\S+", rf"\g<1>{self.for_}", self.rules.read_text())
        (self.workdir / "alerts.yml").write_text(rules)
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": ["alerts.yml"],
            "scrape_configs": [{"job_name": "secondns", "static_configs": [{"targets": self.targets}]}],
        }
        (self.workdir / "prometheus.yml").write_text(yaml.safe_dump(config))

    def _command(self) -> list[str]:
        return [require_binary("prometheus"),
                f"--config.file={self.workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address={LOOPBACK}:{self.port}",
                "--log.level=warn"]

    def _answers(self) -> bool:
        try:
            return http_get(f"http://{LOOPBACK}:{self.port}/-/ready", timeout=0.5)[0] == 200
        except OSError:
            return False

    def api(self, path: str, **params: str) -> Any:
        url = f"http://{LOOPBACK}:{self.port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        status, _, body = http_get(url)
        reply = json.loads(body)
        assert status == 200 and reply["status"] == "success", reply
        return reply["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant vector result: [{"metric": {...}, "value": [ts, "v"]}, ...]."""
        data = self.api("query", query=expr)
        result: list[dict[str, Any]] = data["result"]
        return result

    def alerts(self, name: str, state: str | None = None) -> list[dict[str, Any]]:
        """Active alerts called ``name`` (pending or firing, or only ``state``)."""
        return [a for a in self.api("alerts")["alerts"]
                if a["labels"]["alertname"] == name and (state is None or a["state"] == state)]


# --------------------------------------------------------------------------------------------------
# fixtures: a healthy pair to scrape, and a failover scenario watched by Prometheus


@dataclass
class Failover:
    bind: Bind
    secondns: Secondns
    prometheus: Prometheus


def _follow(workdir: Path, bind: Bind, zone_files: dict[str, Any] | None = None, **zone: Any) -> Secondns:
    return Secondns(workdir, {ZONE: {"primaries": [f"{LOOPBACK}:{bind.port}"], **zone}}, ready_zones=[ZONE],
                    zone_files=zone_files)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secondns]:
    """secondns serving a zone transferred from BIND and a signed static zone, after some traffic.

    The signed zone makes the DNSSEC series (signature expiry) appear in the scrape.
    """
    from signing import make_signed_zone

    base = tmp_path_factory.mktemp("live")
    signed = make_signed_zone(base / "signed", "signed.test.")
    with Bind(base / "bind", [(ZONE, soa_zone_text(ZONE, 2024061501))]) as bind, \
            _follow(base / "secondns", bind, zone_files={signed.name: signed.path}) as secondns:
        for qtype in ("SOA", "NS", "A"):
            query(secondns.port, f"www.{ZONE}", qtype)
        query(secondns.port, f"www.{ZONE}", "A", tcp=True)
        for name in ("not-served.example.", "x1.random.example.", "x2.random.example."):
            query(secondns.port, name, "A")  # REFUSED: these names must never become labels
        yield secondns


@pytest.fixture(scope="module")
def scrape(live: Secondns) -> str:
    status, _, body = http_get(live.http_url("/metrics"))
    assert status == 200
    return body.decode()


@pytest.fixture(scope="module")
def failover(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Failover]:
    """Prometheus watching secondns follow BIND; the primary is stopped before the tests run."""
    base = tmp_path_factory.mktemp("failover")
    with Bind(base / "bind", [(ZONE, SHORT_TIMERS_ZONE)]) as bind, \
            _follow(base / "secondns", bind, **SHORT_CLAMPS) as secondns, \
            Prometheus(base / "prometheus", [f"{LOOPBACK}:{secondns.http_port}"], ALERTS) as prom:
        wait_for("Prometheus scraping the loaded zone with its primary up",
                 lambda: prom.query(f'secondns_zone_loaded{{zone="{ORIGIN}"}} == 1 '
                                    f'and on(zone) max without(primary) (secondns_primary_up) == 1'),
                 timeout=20)
        bind.stop()
        yield Failover(bind, secondns, prom)


# --------------------------------------------------------------------------------------------------
# rules


def test_alert_rules_pass_promtool_check() -> None:
    out = promtool("check", "rules", str(ALERTS))
    assert out.returncode == 0, out.stdout + out.stderr


def test_alert_rule_unit_tests_pass() -> None:
    out = promtool("test", "rules", str(ALERTS_TEST))
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_alert_rule_has_a_firing_and_a_quiet_unit_test() -> None:
    cases = [case for test in yaml.safe_load(ALERTS_TEST.read_text())["tests"]
             for case in test.get("alert_rule_test", [])]
    fires = {c["alertname"] for c in cases if c.get("exp_alerts")}
    quiet = {c["alertname"] for c in cases if not c.get("exp_alerts")}
    names = {rule["alert"] for rule in alert_rules()}
    assert (names - fires, names - quiet) == (set(), set())


def test_every_alert_has_severity_and_a_zone_aware_summary() -> None:
    for rule in alert_rules():
        assert rule["labels"]["severity"] in ("page", "ticket"), rule["alert"]
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]
        # Per-zone series only: the summary series (secondns_zones*) carry no zone label.
        if "secondns_zone_" in rule["expr"] or "secondns_primary" in rule["expr"]:
            assert "{{ $labels.zone }}" in rule["annotations"]["summary"], rule["alert"]


# --------------------------------------------------------------------------------------------------
# scraping


def test_live_scrape_passes_promtool_check_metrics(scrape: str) -> None:
    out = promtool("check", "metrics", stdin=scrape.encode())
    assert out.returncode == 0, out.stdout + out.stderr


def test_scrape_is_openmetrics_when_asked(live: Secondns) -> None:
    status, headers, body = http_get(live.http_url("/metrics"), {"Accept": OPENMETRICS})
    assert status == 200
    assert headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
    assert body.endswith(b"# EOF\n")
    names = {family.name for family in parse_openmetrics(body.decode())}
    assert {"secondns_queries", "secondns_zone_serial", "secondns_transfers"} <= names


def test_scrape_labels_zones_only_by_configured_names(scrape: str) -> None:
    zones = {s.labels["zone"] for family in parse_text(scrape) for s in family.samples if "zone" in s.labels}
    # The two configured zones (followed and signed static), and "" only for NOTIFYs about
    # zones we do not serve; the queries for other names above never become labels.
    assert zones == {ORIGIN, "signed.test.", ""}


def test_dashboard_is_grafana_json() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert 36 <= dash["schemaVersion"] <= 41
    assert dash["uid"] and dash["title"]
    targets = [t for p in dash["panels"] for t in p.get("targets", [])]
    assert targets and all(t["datasource"]["uid"] == "${datasource}" for t in targets)


def test_every_metric_the_dashboard_names_is_in_a_live_scrape(scrape: str) -> None:
    named = {m for expr in dashboard_exprs() for m in METRIC_NAME.findall(expr)}
    assert named - sample_names(scrape) == set()


def test_every_metric_the_alert_rules_name_is_in_a_live_scrape(scrape: str) -> None:
    named = {m for rule in alert_rules() for m in METRIC_NAME.findall(rule["expr"])}
    assert named - sample_names(scrape) == set()


def test_dashboard_panels_cover_the_issue() -> None:
    exprs = " ".join(dashboard_exprs())
    needed = {"secondns_zone_serial", "secondns_zone_primary_serial",
              "secondns_zone_expiry_timestamp_seconds", "secondns_queries_total", "secondns_responses_total",
              "secondns_query_duration_seconds_bucket", "secondns_transfers_total",
              "secondns_transfer_duration_seconds_bucket", "secondns_primary_up"}
    assert {n for n in needed if n not in exprs} == set()


# --------------------------------------------------------------------------------------------------
# failover, seen by Prometheus


def test_dashboard_queries_run_in_prometheus(failover: Failover) -> None:
    for expr in dashboard_exprs():
        concrete = (expr.replace("$__rate_interval", "1m").replace("$__interval", "15s")
                    .replace("$instance", ".*").replace("$zone", ".*"))
        if concrete.startswith("label_values("):
            continue  # a Grafana function, not PromQL
        failover.prometheus.query(concrete)  # raises on a PromQL error


def test_prometheus_sees_the_primary_go_down(failover: Failover) -> None:
    wait_for("secondns_primary_up == 0",
             lambda: failover.prometheus.query(f'secondns_primary_up{{zone="{ORIGIN}"}} == 0'), timeout=15)


def test_primary_unreachable_alert_fires(failover: Failover) -> None:
    alerts = wait_for("SecondnsPrimaryUnreachable firing",
                      lambda: failover.prometheus.alerts("SecondnsPrimaryUnreachable", "firing"), timeout=20)
    assert alerts[0]["labels"]["primary"] == f"{LOOPBACK}:{failover.bind.port}"


def test_zone_expiring_alert_goes_pending_before_the_zone_expires(failover: Failover) -> None:
    # The window is the last 25% of EXPIRE (2.5 s here) and closes at expiry, so look at the
    # ALERTS series Prometheus keeps for every pending or firing alert rather than the live state.
    history = f'max_over_time(ALERTS{{alertname="SecondnsZoneExpiringSoon", zone="{ORIGIN}"}}[2m])'
    seen = wait_for("SecondnsZoneExpiringSoon pending or firing at some point",
                    lambda: failover.prometheus.query(history), timeout=30)
    assert seen[0]["metric"]["severity"] == "page"


def test_zone_expired_alert_fires(failover: Failover) -> None:
    alerts = wait_for("SecondnsZoneExpired firing",
                      lambda: failover.prometheus.alerts("SecondnsZoneExpired", "firing"), timeout=30)
    assert alerts[0]["labels"]["zone"] == ORIGIN
    assert alerts[0]["annotations"]["summary"].startswith(f"Zone {ORIGIN} expired")


# --------------------------------------------------------------------------------------------------
# readiness follows the zone


def _readyz(secondns: Secondns) -> tuple[int, Any]:
    """(status, JSON body) of /readyz; (0, error text) if the request itself failed."""
    try:
        status, _, body = http_get(secondns.http_url("/readyz"))
    except OSError as exc:
        return 0, str(exc)
    return status, json.loads(body)


def _explain(secondns: Secondns) -> Callable[[], str]:
    def explain() -> str:
        try:
            status = http_get(secondns.http_url("/status"))[2].decode()
        except OSError as exc:
            status = f"/status failed: {exc}"
        return f"{status}\n{secondns.log_tail()}"

    return explain


def test_readyz_is_503_naming_the_zone_when_it_expires(bind_factory: Callable[..., Bind],
                                                       secondns_factory: Callable[..., Secondns]) -> None:
    bind = bind_factory([(ZONE, SHORT_TIMERS_ZONE)])
    secondns = secondns_factory({ZONE: {"primaries": [f"{LOOPBACK}:{bind.port}"], **SHORT_CLAMPS}},
                                ready_zones=[ZONE])
    assert _readyz(secondns) == (200, {"ready": True})
    bind.stop()
    _, body = wait_for("/readyz 503", lambda: (r := _readyz(secondns))[0] == 503 and r, timeout=EXPIRE + 10,
                       explain=_explain(secondns))
    assert body["ready"] is False
    assert body["zones"][ORIGIN].startswith("expired: ")
    assert "refused" in body["zones"][ORIGIN]  # why: the primary's port is closed


def test_readyz_is_200_again_once_the_primary_is_back(bind_factory: Callable[..., Bind],
                                                      secondns_factory: Callable[..., Secondns]) -> None:
    bind = bind_factory([(ZONE, SHORT_TIMERS_ZONE)])
    secondns = secondns_factory({ZONE: {"primaries": [f"{LOOPBACK}:{bind.port}"], **SHORT_CLAMPS}},
                                ready_zones=[ZONE])
    bind.stop()
    wait_for("/readyz 503", lambda: _readyz(secondns)[0] == 503, timeout=EXPIRE + 10,
             explain=_explain(secondns))
    bind.start()  # same port, same zone
    ready = wait_for("/readyz 200", lambda: (r := _readyz(secondns))[0] == 200 and r, timeout=15,
                     explain=_explain(secondns))
    assert ready == (200, {"ready": True})
