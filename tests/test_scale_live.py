"""2,000 small zones from a real BIND primary, with 256 open files: start, serve, restart.

The issue's failure at scale was fd exhaustion (one socket per SOA probe, no cap on transfers)
and a quadratic restart.  Here secondns runs under ``prlimit --nofile=256`` against a stock BIND
primary (transfers-out 10), and every zone must end up served (a dnspython SOA query to each),
with no "Too many open files" in the log.  Times are printed, never asserted: the linearity
guard counts directory listings instead (tests/test_scale.py).  Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype
import pytest
from peers import Bind, Secondns, ZoneSpec, query, require_binary, soa_zone_text

pytestmark = pytest.mark.integration

ZONES = 2000
NOFILE = 256
SERIAL = 2024061501


class LimitedSecondns(Secondns):
    """secondns with a low open-files limit; prlimit execs it, so the PID is still ours."""

    def _command(self) -> list[str]:
        return [require_binary("prlimit"), f"--nofile={NOFILE}:{NOFILE}", *super()._command()]


def names() -> list[str]:
    return [f"z{i:05d}.scale.test." for i in range(ZONES)]


def wait_ready(sec: Secondns, timeout: float) -> float:
    """Seconds until /readyz says 200 (every copy loaded, every zone served)."""
    start = time.monotonic()
    last = ""
    while time.monotonic() - start < timeout:
        try:
            with urllib.request.urlopen(sec.http_url("/readyz"), timeout=5) as resp:
                if resp.status == 200:
                    return time.monotonic() - start
        except urllib.error.HTTPError as exc:
            last = exc.read().decode()[:300]
        except OSError as exc:
            last = str(exc)
        assert sec.running(), sec.log_tail()
        time.sleep(0.5)
    pytest.fail(f"not ready within {timeout:g} s: {last}\n{sec.log_tail()}")


def _ask(port: int, name: str) -> dns.message.Message:
    """The SOA answer, asked again when a UDP datagram is lost (loopback under the full suite's
    load drops one now and then): a zone not served answers SERVFAIL, which is not retried."""
    for _ in range(2):
        with contextlib.suppress(dns.exception.Timeout):
            return query(port, name, "SOA", timeout=2.0)
    return query(port, name, "SOA", timeout=2.0)


def unserved(sec: Secondns, serial: int) -> list[str]:
    bad = []
    for name in names():
        reply = _ask(sec.port, name)
        soa = [r for r in reply.answer if r.rdtype == dns.rdatatype.SOA]
        if reply.rcode() != dns.rcode.NOERROR or not soa or soa[0][0].serial != serial:
            bad.append(name)
    return bad


@pytest.fixture(scope="module")
def primary(tmp_path_factory: pytest.TempPathFactory) -> Bind:
    require_binary("named")
    specs = [ZoneSpec(n, soa_zone_text(n.rstrip("."), SERIAL)) for n in names()]
    bind = Bind(tmp_path_factory.mktemp("bind"), specs, startup_timeout=120)
    bind._ready_zones = lambda: [names()[-1]]  # type: ignore[method-assign]
    bind.start()
    yield bind
    bind.stop()


def test_two_thousand_zones_start_and_restart_with_256_open_files(
        primary: Bind, tmp_path: Path) -> None:
    zones = {n: {"primaries": [f"127.0.0.1:{primary.port}"]} for n in names()}
    sec = LimitedSecondns(tmp_path, zones, ready_zones=[], startup_timeout=60,
                          server={"soa-queries-per-second": 400, "log-level": "warning"})
    sec.start()
    try:
        cold = wait_ready(sec, 300)
        assert unserved(sec, SERIAL) == []
        emfile = sec.log_text().count("Too many open files")
        assert emfile == 0, f"{emfile} 'Too many open files' in the log\n{sec.log_tail(20)}"
        sec.stop()
        sec.start()
        warm = wait_ready(sec, 120)
        assert unserved(sec, SERIAL) == []  # from disk, whatever the checks are doing
        with urllib.request.urlopen(sec.http_url("/status?limit=1"), timeout=10) as resp:
            assert json.loads(resp.read())["total"] == ZONES
    finally:
        sec.stop()
    log = sec.log_text()
    assert "Too many open files" not in log and "EMFILE" not in log, sec.log_tail(80)
    print(f"\n{ZONES} zones, nofile {NOFILE}: cold start ready in {cold:.1f} s, restart {warm:.1f} s")
