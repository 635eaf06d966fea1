"""A primary that breaks the AXFR stream: each break fails the transfer, says why, and changes nothing.

One secondns (a real process) takes ``bad.test`` from the scripted primary in ``badprimary.py``.
Every test bumps the primary's serial, scripts one kind of broken stream and sends a NOTIFY; the
transfer must fail with its reason in the log and in ``GET /status``, and the zone served before
must still be served, answer for answer, with its copy on disk byte for byte as it was.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.opcode
import dns.query
import dns.rcode
import peers
import pytest
from badprimary import AxfrScript, BadPrimary
from peers import LOOPBACK, Secondns, query, soa_serial

pytestmark = pytest.mark.integration

ZONE = "bad.test"
IDLE_TIMEOUT = 2
MAX_RECORDS = 100
WAIT = 15.0  # bound on every wait for a transfer outcome
PROBES = [("bad.test", "SOA"), ("bad.test", "NS"), ("www.bad.test", "A"), ("www.bad.test", "TXT"),
          ("host0.bad.test", "A"), ("host11.bad.test", "A"), ("nothing.bad.test", "A")]


# --------------------------------------------------------------------------------------------------
# helpers


def zone_status(sec: Secondns, zone: str = ZONE) -> dict[str, Any]:
    return peers.zone_status(sec, zone)


def wait_for(what: str, check: Callable[[], Any], timeout: float = WAIT, interval: float = 0.05) -> Any:
    return peers.wait_for(what, check, timeout, interval)


def send_notify(port: int, zone: str, source: str = LOOPBACK) -> dns.message.Message:
    msg = dns.message.make_query(zone, "SOA")
    msg.flags = (msg.flags & ~dns.flags.RD) | dns.flags.AA
    msg.set_opcode(dns.opcode.NOTIFY)
    return dns.query.udp(msg, LOOPBACK, port=port, source=source, timeout=2.0)


def answers(port: int) -> list[tuple[dns.rcode.Rcode, list[str], list[str]]]:
    """Rcode, answer and authority of every probe: what a client sees of the served zone."""
    out = []
    for name, rdtype in PROBES:
        reply = query(port, name, rdtype)
        out.append((reply.rcode(), sorted(r.to_text() for r in reply.answer),
                    sorted(r.to_text() for r in reply.authority)))
    return out


def failure_lines(sec: Secondns, port: int) -> list[str]:
    pattern = re.compile(rf"zone {re.escape(ZONE)}\.: [AI]XFR from 127\.0\.0\.1:{port} failed: .*")
    return pattern.findall(sec.log_text())


def temp_files(sec: Secondns) -> list[str]:
    return sorted(p.name for p in sec.storage.iterdir() if ".tmp-" in p.name)


@dataclass
class Rig:
    primary: BadPrimary
    sec: Secondns
    served_serial: int

    def copy_path(self) -> Path:
        return self.sec.zone_path(ZONE)


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    primary = BadPrimary(ZONE, serial=1).start()
    sec = Secondns(
        tmp_path_factory.mktemp("secondns"),
        {ZONE: {"primaries": [f"{LOOPBACK}:{primary.port}"],
                "transfer-idle-timeout": IDLE_TIMEOUT, "transfer-timeout": 20,
                "max-records": MAX_RECORDS}},
        ready_zones=[ZONE],
    )
    try:
        sec.start()
        meta = sec.zone_path(ZONE).with_name(f"{ZONE}.zone.meta")
        wait_for("the first copy on disk", meta.exists)
        yield Rig(primary, sec, 1)
    finally:
        sec.stop()
        primary.stop()


def assert_transfer_fails(rig: Rig, script: AxfrScript, reason: str) -> float:
    """Script a broken stream for a newer serial, NOTIFY, and check it failed cleanly; returns seconds."""
    sec, primary = rig.sec, rig.primary
    before_bytes = rig.copy_path().read_bytes()
    before_answers = answers(sec.port)
    failures = len(failure_lines(sec, primary.port))
    primary.axfr = script
    primary.serial += 1
    started = time.monotonic()
    assert send_notify(sec.port, ZONE).rcode() == dns.rcode.NOERROR
    lines = wait_for(f"the {script} transfer to fail\n{sec.log_tail()}",
                     lambda: failure_lines(sec, primary.port)[failures:])
    elapsed = time.monotonic() - started
    assert reason in lines[0], lines[0]

    status = zone_status(sec)
    assert status["last_transfer"]["result"] == "failure"
    assert reason in status["last_transfer"]["error"]
    assert reason in status["last_error"]
    assert status["serial"] == rig.served_serial
    assert status["state"] == "stale"
    # The old zone, unchanged: in memory (every probe answers as before) and on disk (same bytes).
    assert soa_serial(sec.port, ZONE) == rig.served_serial
    assert answers(sec.port) == before_answers
    assert rig.copy_path().read_bytes() == before_bytes
    assert temp_files(sec) == []
    return elapsed


# --------------------------------------------------------------------------------------------------
# broken streams


def test_stream_cut_short_fails_and_keeps_the_old_zone(rig: Rig) -> None:
    assert_transfer_fails(rig, "truncated", "closed the connection before the transfer completed")


def test_closing_soa_of_another_serial_fails_and_keeps_the_old_zone(rig: Rig) -> None:
    new = rig.primary.serial + 1
    assert_transfer_fails(rig, "closing-serial",
                          f"closing SOA serial {new + 1} differs from opening SOA serial {new}")


def test_wrong_message_id_mid_stream_fails_and_keeps_the_old_zone(rig: Rig) -> None:
    assert_transfer_fails(rig, "wrong-id", "does not match query ID")


def test_notauth_mid_stream_fails_and_keeps_the_old_zone(rig: Rig) -> None:
    assert_transfer_fails(rig, "notauth", "primary answered NOTAUTH")


def test_garbage_message_fails_and_keeps_the_old_zone(rig: Rig) -> None:
    assert_transfer_fails(rig, "garbage", "message 2 is malformed")


def test_stalled_stream_fails_after_the_idle_timeout_and_keeps_the_old_zone(rig: Rig) -> None:
    reason = f"no data from {LOOPBACK}:{rig.primary.port} for {IDLE_TIMEOUT} s"
    elapsed = assert_transfer_fails(rig, "stall", reason)
    assert IDLE_TIMEOUT * 0.9 <= elapsed <= IDLE_TIMEOUT + 3


def test_stream_over_max_records_fails_and_keeps_the_old_zone(rig: Rig) -> None:
    assert_transfer_fails(rig, "oversize", f"transfer exceeds the limit of {MAX_RECORDS} records")


def test_refused_transfer_fails_and_keeps_the_old_zone(rig: Rig) -> None:
    assert_transfer_fails(rig, "refused", "primary answered REFUSED")


def test_mx_with_no_rdata_fails_and_keeps_the_old_zone(rig: Rig) -> None:
    """Stored, this record made every query touching mail.bad.test fail in the encoder."""
    assert_transfer_fails(rig, "empty-mx", "invalid record in message 2: mail.bad.test. MX: "
                          "rdata of 0 octets holds no domain name")
    assert query(rig.sec.port, "mail.bad.test", "MX").rcode() == dns.rcode.NXDOMAIN


def test_cname_with_garbage_rdata_fails_and_keeps_the_old_zone(rig: Rig) -> None:
    assert_transfer_fails(rig, "bad-cname", "invalid record in message 2: alias.bad.test. CNAME: "
                          "8 octets after the domain name")
    assert query(rig.sec.port, "alias.bad.test", "A").rcode() == dns.rcode.NXDOMAIN


def zone_records(primary: BadPrimary) -> int:
    return sum(len(rdataset) for _name, rdataset in primary.zone().iterate_rdatasets())


def test_zone_of_exactly_max_records_transfers(rig: Rig) -> None:
    """max-records counts the zone as served: its closing SOA is not one more record."""
    sec, primary = rig.sec, rig.primary
    primary.oversize_records = MAX_RECORDS - zone_records(primary)
    primary.axfr = "oversize"
    primary.serial += 1
    assert send_notify(sec.port, ZONE).rcode() == dns.rcode.NOERROR
    sec.wait_serial(ZONE, primary.serial, timeout=WAIT)
    rig.served_serial = primary.serial
    assert query(sec.port, f"bulk{primary.oversize_records - 1}.{ZONE}", "A").answer
    # One more record than the limit fails.
    primary.oversize_records += 1
    assert_transfer_fails(rig, "oversize", f"transfer exceeds the limit of {MAX_RECORDS} records")


def test_good_stream_after_failures_is_served_and_saved(rig: Rig) -> None:
    """The control case: the same rig does accept a correct stream, so the failures above are real."""
    sec, primary = rig.sec, rig.primary
    before = rig.copy_path().read_bytes()
    primary.axfr = "good"
    primary.serial += 1
    assert send_notify(sec.port, ZONE).rcode() == dns.rcode.NOERROR
    sec.wait_serial(ZONE, primary.serial, timeout=WAIT)
    rig.served_serial = primary.serial
    wait_for("the new copy on disk", lambda: rig.copy_path().read_bytes() != before)
    assert f"; serial {primary.serial}\n" in rig.copy_path().read_text()
    status = zone_status(sec)
    assert status["last_transfer"]["result"] == "success"
    assert status["last_error"] is None


# --------------------------------------------------------------------------------------------------
# falling back to the next primary


@pytest.fixture
def two_scripted_primaries(tmp_path: Path) -> Iterator[Callable[[BadPrimary], Secondns]]:
    """``start(first) -> Secondns`` taking ZONE from ``first``, then a good primary at serial 7."""
    good = BadPrimary(ZONE, serial=7).start()
    started: list[Any] = [good]

    def start(first: BadPrimary) -> Secondns:
        started.append(first.start())
        sec = Secondns(tmp_path / "secondns",
                       {ZONE: {"primaries": [f"{LOOPBACK}:{first.port}", f"{LOOPBACK}:{good.port}"]}},
                       ready_zones=[ZONE])
        started.append(sec)
        return sec.start()

    try:
        yield start
    finally:
        for server in reversed(started):
            server.stop()


def test_zone_comes_from_the_second_primary_when_the_first_refuses_soa(
        two_scripted_primaries: Callable[[BadPrimary], Secondns]) -> None:
    first = BadPrimary(ZONE, serial=9, soa_rcode=dns.rcode.REFUSED)
    sec = two_scripted_primaries(first)
    assert soa_serial(sec.port, ZONE) == 7
    status = zone_status(sec)
    assert status["primaries"][f"{LOOPBACK}:{first.port}"]["error"] == "answered REFUSED"
    assert first.axfr_requests == 0


def test_zone_comes_from_the_second_primary_when_the_first_refuses_axfr(
        two_scripted_primaries: Callable[[BadPrimary], Secondns]) -> None:
    first = BadPrimary(ZONE, serial=9, axfr="refused")
    sec = two_scripted_primaries(first)
    sec.wait_serial(ZONE, 7, timeout=WAIT)
    assert first.axfr_requests == 1
    assert failure_lines(sec, first.port)
    assert zone_status(sec)["last_transfer"]["result"] == "success"
