"""Expiry and the journal with a real secondns process (issue 10 items 2, 3 and 4).

* A primary that lost the zone (SOA answered with AA clear, NOERROR with no SOA, SERVFAIL,
  REFUSED) is no proof of freshness: the zone still expires EXPIRE after the last real answer.
  The scripted primary of ``badprimary.py`` gives those answers; timers are clamped to seconds.
* The IXFR journal with BIND as the primary (``ixfr-from-differences``): a torn tail is cut
  before the next IXFR is appended, so a restart with the primary gone serves the newest serial;
  and a restart after a crash between the journal append and the sidecar write, later than
  EXPIRE, answers SERVFAIL instead of serving the zone for another EXPIRE.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import peers
import pytest
from badprimary import BadPrimary
from peers import LOOPBACK, Bind, Secondns, ZoneSpec, query, soa_serial

pytestmark = pytest.mark.integration

WAIT = 15.0  # bound on every wait for a transfer


class LostZonePrimary(BadPrimary):
    """Answers the SOA query as a server that no longer serves the zone, once ``lost`` is set.

    ``mode``: ``aa-clear`` (the SOA, but without authority, as a cache or a parent would give
    it), ``empty`` (NOERROR, AA, no SOA), or an rcode name (``SERVFAIL``, ``REFUSED``).
    AXFR keeps working, so nothing but the SOA check can keep the zone alive.
    """

    def __init__(self, origin: str, mode: str) -> None:
        super().__init__(origin, serial=1)
        self.mode = mode
        self.lost = False

    def _answer_plain(self, data: bytes) -> bytes | None:
        reply = super()._answer_plain(data)
        if reply is None or not self.lost:
            return reply
        msg = dns.message.from_wire(reply)
        if not msg.question or msg.question[0].rdtype != dns.rdatatype.SOA:
            return reply
        if self.mode == "aa-clear":
            msg.flags &= ~dns.flags.AA
        elif self.mode == "empty":
            msg.answer = []
        else:
            msg.answer = []
            msg.set_rcode(dns.rcode.from_text(self.mode))
        return msg.to_wire()


LOST_MODES = ("aa-clear", "empty", "SERVFAIL", "REFUSED")
EXPIRE = 5  # seconds, via expire-max


def rcode(port: int, zone: str) -> dns.rcode.Rcode:
    return query(port, zone, "SOA").rcode()


def test_a_primary_that_lost_the_zone_does_not_keep_it_alive(tmp_path: Path) -> None:
    primaries = {f"lost-{m.lower()}.test": LostZonePrimary(f"lost-{m.lower()}.test", m) for m in LOST_MODES}
    for p in primaries.values():
        p.start()
    timers = {"refresh-min": 1, "refresh-max": 1, "retry-min": 1, "retry-max": 1,
              "expire-min": 1, "expire-max": EXPIRE}
    sec = Secondns(tmp_path / "secondns",
                   {z: {"primaries": [f"{LOOPBACK}:{p.port}"], **timers} for z, p in primaries.items()},
                   ready_zones=list(primaries))
    try:
        sec.start()
        for zone in primaries:
            peers.wait_for(f"{zone} checked once more after its transfer",
                           lambda z=zone: peers.zone_status(sec, z)["last_success"] is not None, WAIT)
        for p in primaries.values():
            p.lost = True
        lost_at = time.monotonic()
        time.sleep(EXPIRE - 2.5)  # every zone retried at least once against the lost primary
        for zone in primaries:
            assert rcode(sec.port, zone) == dns.rcode.NOERROR, f"{zone} expired early"
            st = peers.zone_status(sec, zone)
            ps = next(iter(st["primaries"].values()))
            assert ps["reachable"] is False, (zone, st)
            assert st["state"] == "stale", (zone, st)
        # The last good answer came at most REFRESH (1 s) before lost_at: expired by EXPIRE + 1.5.
        time.sleep(max(0.0, lost_at + EXPIRE + 1.5 - time.monotonic()))
        for zone in primaries:
            assert rcode(sec.port, zone) == dns.rcode.SERVFAIL, (
                f"{zone}: still served {time.monotonic() - lost_at:.1f} s after its primary lost it\n"
                + sec.log_tail())
            assert peers.zone_status(sec, zone)["state"] == "expired"
        for p in primaries.values():  # the primary has the zone again: served again
            p.lost = False
        for zone in primaries:
            peers.wait_for(f"{zone} back", lambda z=zone: rcode(sec.port, z) == dns.rcode.NOERROR, WAIT)
    finally:
        sec.stop()
        for p in primaries.values():
            p.stop()


# --------------------------------------------------------------------------------------------------
# the journal, with BIND sending real IXFRs

ZONE = "journal.test"
ORIGIN = ZONE + "."


def zone_text(serial: int, expire: int = 3600) -> str:
    hosts = "".join(f"h{i} IN A 198.51.100.{i}\n" for i in range(60))
    return (f"$ORIGIN {ORIGIN}\n$TTL 300\n"
            f"@ IN SOA ns1.{ORIGIN} hostmaster.{ORIGIN} {serial} 3600 600 {expire} 60\n"
            f"@ IN NS ns1.{ORIGIN}\nns1 IN A 192.0.2.1\n"
            f'ver IN TXT "version {serial}"\n' + hosts)


def journal_path(sec: Secondns) -> Path:
    copy = sec.zone_path(ZONE)
    return copy.with_name(copy.name + ".journal")


def meta_path(sec: Secondns) -> Path:
    copy = sec.zone_path(ZONE)
    return copy.with_name(copy.name + ".meta")


def publish(primary: Bind, sec: Secondns, serial: int, expire: int = 3600) -> None:
    """A new version on BIND; it notifies secondns, which must take it as a true IXFR."""
    primary.write_zone(ZONE, zone_text(serial, expire))
    primary.reload(ZONE)
    primary.wait_serial(ZONE, serial, timeout=WAIT)
    st = peers.wait_for(f"serial {serial} on secondns",
                        lambda: (s := peers.zone_status(sec, ZONE))["serial"] == serial and s, WAIT)
    last = st["last_transfer"]
    assert (last["type"], last["result"]) == ("ixfr", "success"), st


def pair(bind_factory: Callable[..., Bind], secondns_factory: Callable[..., Secondns],
         expire: int = 3600, **zone_opts: Any) -> tuple[Bind, Secondns]:
    peers.require_binary("named")
    port = peers.free_port()
    spec = ZoneSpec(ZONE, zone_text(1, expire), options=["ixfr-from-differences yes;"], notify=[port])
    primary = bind_factory([spec])
    sec = secondns_factory({ORIGIN: {"primaries": [f"{LOOPBACK}:{primary.port}"], "transfer": "ixfr",
                                     **zone_opts}}, port=port)
    peers.wait_for("the first transfer", lambda: peers.zone_status(sec, ZONE)["serial"] == 1, WAIT)
    peers.wait_for("the first copy on disk", meta_path(sec).exists, WAIT)
    return primary, sec


def version(port: int) -> str:
    reply = query(port, f"ver.{ORIGIN}", "TXT")
    return " ".join(rd.to_text() for rrset in reply.answer for rd in rrset)


def test_ixfrs_after_a_torn_journal_survive_a_restart(bind_factory: Callable[..., Bind],
                                                      secondns_factory: Callable[..., Secondns]) -> None:
    primary, sec = pair(bind_factory, secondns_factory)
    publish(primary, sec, 2)
    peers.wait_for("the journal", journal_path(sec).exists, WAIT)
    sec.kill9()
    # The crash came half-way through appending the next entry.
    with open(journal_path(sec), "ab") as fh:
        fh.write(b"; diff 2 3 base=0123\n- h0.journal.test. 300 IN A 198.51")
    sec.start()
    assert soa_serial(sec.port, ORIGIN) == 2  # the torn entry is dropped, the rest replayed
    publish(primary, sec, 3)
    publish(primary, sec, 4)
    assert b"198.51\n" not in journal_path(sec).read_bytes()
    primary.stop()
    sec.stop()
    sec.start()
    assert soa_serial(sec.port, ORIGIN) == 4, sec.log_tail()
    assert version(sec.port) == '"version 4"'


def test_restart_after_expire_with_the_sidecar_behind_the_journal_is_servfail(
        bind_factory: Callable[..., Bind], secondns_factory: Callable[..., Secondns]) -> None:
    expire = 4
    primary, sec = pair(bind_factory, secondns_factory, expire=expire, **{"expire-min": 1})
    sidecar = meta_path(sec).read_bytes()  # as it is before the IXFR
    publish(primary, sec, 2, expire)
    peers.wait_for("the journal", journal_path(sec).exists, WAIT)
    ixfr_done = time.monotonic()
    primary.stop()
    sec.kill9()
    # The state a kill -9 between the journal append and the sidecar write leaves behind.
    meta_path(sec).write_bytes(sidecar)
    time.sleep(max(0.0, ixfr_done + expire + 1.5 - time.monotonic()))
    sec.start()
    reply = query(sec.port, ORIGIN, "SOA")
    assert reply.rcode() == dns.rcode.SERVFAIL, (
        f"a copy older than EXPIRE is served again after a restart:\n{reply}\n{sec.log_tail()}")
    st = peers.zone_status(sec, ZONE)
    assert (st["serial"], st["state"]) == (2, "expired"), st
