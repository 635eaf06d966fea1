"""The per-zone refresh state machine, driven by task.Clock: no sleeping, no sockets."""

from __future__ import annotations

import random
from typing import Any

import pytest
from twisted.internet import defer, task
from zonetools import zone_from_text

from secondns.config import Endpoint, ZoneConfig
from secondns.errors import TransferError
from secondns.names import from_text
from secondns.registry import Registry
from secondns.store.storage import CopyMeta
from secondns.transfer.refresh import CHECKING, IDLE, Refresher, Timers, TransferOutcome, jittered
from secondns.transfer.xfrin import SoaProbeResult
from secondns.zone import Zone

ORIGIN = from_text("example.com.")
P1 = Endpoint("127.0.0.1", 5301)
P2 = Endpoint("127.0.0.2", 5302)


def make_zone(serial: int, refresh: int = 100, retry: int = 20, expire: int = 1000) -> Zone:
    return zone_from_text(f"""
$TTL 300
@ IN SOA ns1 host {serial} {refresh} {retry} {expire} 60
  IN NS ns1
ns1 IN A 192.0.2.1
""", "example.com.")


class FakeClient:
    """Answers SOA probes and transfers from per-primary scripts."""

    def __init__(self) -> None:
        self.serials: dict[Endpoint, int | Exception] = {}
        self.zones: dict[Endpoint, Zone | Exception] = {}
        self.expire: int | None = None
        self.probes: list[Endpoint] = []
        self.transfers: list[tuple[Endpoint, str]] = []
        self.hold: defer.Deferred[Any] | None = None
        self.answers: dict[Endpoint, SoaProbeResult] = {}  # a whole reply, for odd answers

    def soa_query(self, primary: Endpoint, zc: ZoneConfig) -> defer.Deferred[SoaProbeResult]:
        self.probes.append(primary)
        if primary in self.answers:
            return defer.succeed(self.answers[primary])
        value = self.serials.get(primary, TransferError("no answer"))
        if isinstance(value, Exception):
            return defer.fail(value)
        soa = make_zone(value).soa
        return defer.succeed(SoaProbeResult(0, value, soa, False, self.expire, True))

    def transfer(self, primary: Endpoint, zc: ZoneConfig, current: Zone | None,
                 kind: str) -> defer.Deferred[TransferOutcome]:
        self.transfers.append((primary, kind))
        if self.hold is not None:
            return self.hold
        value = self.zones.get(primary, TransferError("connection refused"))
        if isinstance(value, Exception):
            return defer.fail(value)
        return defer.succeed(TransferOutcome(value, "axfr", 100, 1, value.record_count + 1))


class MemStore:
    def __init__(self) -> None:
        self.zones: list[int] = []
        self.metas: list[CopyMeta] = []

    def save_zone(self, zc: ZoneConfig, zone: Zone, meta: CopyMeta) -> None:
        self.zones.append(zone.serial)
        self.metas.append(meta)

    def save_meta(self, zc: ZoneConfig, meta: CopyMeta) -> None:
        self.metas.append(meta)


class Rig:
    def __init__(self, primaries: tuple[Endpoint, ...] = (P1,), zone: Zone | None = None,
                 meta: CopyMeta | None = None, **zc_kw: Any) -> None:
        self.clock = task.Clock()
        self.clock.advance(1_000_000)
        self.registry = Registry()
        self.registry.add(ORIGIN)
        if zone is not None:
            self.registry.swap(ORIGIN, zone)
        self.client = FakeClient()
        self.store = MemStore()
        kw: dict[str, Any] = {"refresh_min": 1, "retry_min": 1, "expire_min": 1}
        kw.update(zc_kw)
        self.zc = ZoneConfig("example.com.", ORIGIN, primaries=primaries, **kw)
        self.ref = Refresher(self.zc, self.registry, self.client, self.store, self.clock,
                             rand=lambda: 1.0, wallclock=self.clock.seconds)
        self.meta = meta

    def start(self) -> Rig:
        self.ref.start(self.meta)
        return self

    @property
    def serving(self) -> int | None:
        entry = self.registry.get(ORIGIN)
        assert entry is not None
        if not entry.serving:
            return None
        assert entry.snapshot is not None
        return entry.snapshot.serial


def test_timers_are_clamped() -> None:
    zc = ZoneConfig("example.com.", ORIGIN, refresh_min=50, refresh_max=60, retry_min=5,
                    retry_max=6, expire_min=100, expire_max=200)
    soa = make_zone(1, refresh=10, retry=900, expire=50).soa
    assert Timers.for_zone(soa, zc) == Timers(50.0, 6.0, 100.0)


def test_jitter_retries_early_never_late() -> None:
    assert jittered(100, lambda: 0.0) == 80.0
    assert jittered(100, lambda: 1.0) == 100.0


def test_first_check_transfers_when_no_zone() -> None:
    rig = Rig().start()
    rig.client.serials[P1] = 5
    rig.client.zones[P1] = make_zone(5)
    rig.clock.advance(0)
    assert rig.client.transfers == [(P1, "axfr")]
    assert rig.serving == 5
    assert rig.store.zones == [5]
    assert rig.ref.status.phase == IDLE


def test_same_serial_no_transfer_and_refresh_timer() -> None:
    rig = Rig(zone=make_zone(5, refresh=100))
    rig.client.serials[P1] = 5
    rig.start()
    rig.clock.advance(0)
    assert rig.client.transfers == []
    assert rig.store.metas and rig.store.metas[-1].last_refresh == rig.clock.seconds()
    rig.clock.advance(99)
    assert len(rig.client.probes) == 1
    rig.clock.advance(1)
    assert len(rig.client.probes) == 2


def test_newer_serial_transfers_ixfr_kind_by_default() -> None:
    rig = Rig(zone=make_zone(5))
    rig.client.serials[P1] = 6
    rig.client.zones[P1] = make_zone(6)
    rig.start()
    rig.clock.advance(0)
    assert rig.client.transfers == [(P1, "ixfr")]
    assert rig.serving == 6


def test_older_serial_is_never_loaded() -> None:
    rig = Rig(zone=make_zone(10))
    rig.client.serials[P1] = 9
    rig.client.zones[P1] = make_zone(9)
    rig.start()
    rig.clock.advance(0)
    assert rig.client.transfers == []
    assert rig.serving == 10


def test_serial_wraparound_is_newer() -> None:
    rig = Rig(zone=make_zone(0xFFFFFFF0))
    rig.client.serials[P1] = 5
    rig.client.zones[P1] = make_zone(5)
    rig.start()
    rig.clock.advance(0)
    assert rig.serving == 5  # RFC 1982: 5 follows 0xFFFFFFF0


def test_failure_retries_at_retry_interval() -> None:
    rig = Rig(zone=make_zone(5, refresh=100, retry=20)).start()
    rig.clock.advance(0)
    assert len(rig.client.probes) == 1
    assert rig.ref.status.last_error
    rig.clock.advance(19)
    assert len(rig.client.probes) == 1
    rig.clock.advance(1)
    assert len(rig.client.probes) == 2


def test_second_primary_used_when_first_fails() -> None:
    rig = Rig(primaries=(P1, P2))
    rig.client.serials[P1] = TransferError("REFUSED")
    rig.client.serials[P2] = 7
    rig.client.zones[P2] = make_zone(7)
    rig.start()
    rig.clock.advance(0)
    assert rig.client.probes == [P1, P2]
    assert rig.serving == 7
    assert rig.ref.status.primaries[str(P1)].up is False
    assert rig.ref.status.primaries[str(P2)].up is True


def test_transfer_failure_probes_then_transfers_from_the_next_primary() -> None:
    rig = Rig(primaries=(P1, P2))
    rig.client.serials[P1] = 7
    rig.client.serials[P2] = 7
    rig.client.zones[P1] = TransferError("closing SOA serial differs")
    rig.client.zones[P2] = make_zone(7)
    rig.start()
    rig.clock.advance(0)
    assert rig.client.probes == [P1, P2]  # P2 is asked for its SOA before any transfer from it
    assert [p for p, _ in rig.client.transfers] == [P1, P2]
    assert rig.serving == 7


def test_failover_never_installs_an_older_serial() -> None:
    # Review finding: P1 (serial 12) fails mid-transfer; P2 lags at 5.  We keep 10.
    rig = Rig(primaries=(P1, P2), zone=make_zone(10))
    rig.client.serials = {P1: 12, P2: 5}
    rig.client.zones = {P1: TransferError("connection reset"), P2: make_zone(5)}
    rig.start()
    rig.clock.advance(0)
    assert rig.serving == 10
    assert [p for p, _ in rig.client.transfers] == [P1]  # nothing asked of the lagging P2
    assert "older than ours" in (rig.ref.status.last_error or "")


def test_a_full_zone_older_than_ours_is_refused() -> None:
    # The primary's SOA said 12, but the transfer (AXFR or an AXFR-style IXFR reply) brought 5.
    rig = Rig(zone=make_zone(10))
    rig.client.serials[P1] = 12
    rig.client.zones[P1] = make_zone(5)
    rig.start()
    rig.clock.advance(0)
    assert rig.serving == 10
    assert rig.ref.status.last_transfer is not None
    assert rig.ref.status.last_transfer.result == "failure"


def test_up_to_date_from_a_primary_behind_us_does_not_reset_expiry() -> None:
    rig = Rig(primaries=(P1,), zone=make_zone(10, expire=1000))
    rig.client.serials[P1] = 12

    def transfer(primary: Endpoint, zc: ZoneConfig, current: Zone | None,
                 kind: str) -> defer.Deferred[TransferOutcome]:
        assert current is not None
        return defer.succeed(TransferOutcome(current, "ixfr", 50, 1, 1, up_to_date=True,
                                             primary_serial=5))

    rig.client.transfer = transfer  # type: ignore[method-assign]
    rig.start()
    rig.clock.advance(0)
    first_expiry = rig.ref.status.expire_at
    rig.clock.advance(500)
    assert rig.ref.status.expire_at == first_expiry
    assert "older than ours" in (rig.ref.status.last_error or "")


def test_a_client_that_raises_at_once_is_a_failed_probe_not_a_stuck_zone() -> None:
    # Review finding: listenUDP raising EMFILE inside soa_query left the zone in CHECKING for ever.
    rig = Rig(zone=make_zone(5, retry=20))

    def boom(primary: Endpoint, zc: ZoneConfig) -> defer.Deferred[SoaProbeResult]:
        raise OSError(24, "Too many open files")

    rig.client.soa_query = boom  # type: ignore[method-assign]
    rig.start()
    rig.clock.advance(0)
    assert rig.ref.status.phase == IDLE
    assert "Too many open files" in (rig.ref.status.last_error or "")
    assert rig.ref.status.next_refresh is not None  # the retry timer is armed


def test_retransfer_asked_during_a_cycle_applies_to_the_next_one() -> None:
    rig = Rig(zone=make_zone(5, refresh=1000))
    rig.client.serials[P1] = 5
    rig.client.zones[P1] = make_zone(5)
    hold: defer.Deferred[SoaProbeResult] = defer.Deferred()
    real = rig.client.soa_query
    rig.client.soa_query = lambda p, zc: hold  # type: ignore[method-assign]
    rig.start()
    rig.clock.advance(0)
    rig.ref.retransfer()  # arrives while the first check is in flight
    rig.client.soa_query = real  # type: ignore[method-assign]
    hold.callback(SoaProbeResult(0, 5, make_zone(5).soa, False, None, True))
    rig.clock.advance(0)
    assert rig.client.transfers == [(P1, "axfr")]


def test_failed_transfer_keeps_old_zone_and_retries() -> None:
    rig = Rig(zone=make_zone(5, retry=20))
    rig.client.serials[P1] = 6
    rig.client.zones[P1] = TransferError("stalled")
    rig.start()
    rig.clock.advance(0)
    assert rig.serving == 5
    assert rig.ref.status.last_transfer is not None
    assert rig.ref.status.last_transfer.result == "failure"
    rig.clock.advance(20)
    assert len(rig.client.transfers) == 2


def test_expiry_turns_zone_servfail_and_recovers() -> None:
    rig = Rig(zone=make_zone(5, refresh=100, retry=20, expire=300))
    rig.client.serials[P1] = 5
    rig.start()
    rig.clock.advance(0)
    rig.client.serials[P1] = TransferError("down")
    for _ in range(20):
        rig.clock.advance(20)
    assert rig.ref.status.expired
    assert rig.serving is None
    rig.client.serials[P1] = 5
    rig.clock.advance(20)
    assert not rig.ref.status.expired
    assert rig.serving == 5


def test_expiry_counts_from_stored_time_across_restart() -> None:
    clock_now = 1_000_000.0
    meta = CopyMeta(serial=5, last_refresh=clock_now - 250, expire_at=None, primary=None, saved=0)
    rig = Rig(zone=make_zone(5, expire=300), meta=meta)
    rig.start()
    rig.clock.advance(0)  # the first check fails: primary down
    assert not rig.ref.status.expired
    rig.clock.advance(49)
    assert not rig.ref.status.expired
    rig.clock.advance(2)
    assert rig.ref.status.expired


def test_copy_older_than_expire_is_expired_at_start() -> None:
    meta = CopyMeta(serial=5, last_refresh=1_000_000.0 - 5000, expire_at=None, primary=None, saved=0)
    rig = Rig(zone=make_zone(5, expire=300), meta=meta).start()
    assert rig.ref.status.expired
    assert rig.serving is None


def test_edns_expire_shortens_expiry() -> None:
    rig = Rig(zone=make_zone(5, expire=1000))
    rig.client.serials[P1] = 5
    rig.client.expire = 100  # RFC 7314: the primary's own remaining expiry
    rig.start()
    rig.clock.advance(0)
    assert rig.ref.status.expire_at == pytest.approx(rig.clock.seconds() + 100)


def test_notify_checks_now() -> None:
    rig = Rig(zone=make_zone(5, refresh=1000))
    rig.client.serials[P1] = 5
    rig.start()
    rig.clock.advance(0)
    rig.client.serials[P1] = 6
    rig.client.zones[P1] = make_zone(6)
    rig.ref.notify(P1)
    rig.clock.advance(0)
    assert rig.serving == 6


def test_notifies_during_transfer_coalesce_into_one_check() -> None:
    rig = Rig(zone=make_zone(5, refresh=1000))
    rig.client.serials[P1] = 6
    rig.client.hold = defer.Deferred()
    rig.start()
    rig.clock.advance(0)
    assert rig.ref.status.phase != IDLE
    for _ in range(5):
        rig.ref.notify(P1)
    held = rig.client.hold
    rig.client.hold = None
    rig.client.zones[P1] = make_zone(6)
    held.callback(TransferOutcome(make_zone(6), "axfr", 10, 1, 4))
    probes = len(rig.client.probes)
    rig.clock.advance(0)
    assert len(rig.client.probes) == probes + 1  # exactly one more check
    rig.clock.advance(0)
    assert len(rig.client.probes) == probes + 1


def test_retransfer_forces_axfr_with_same_serial() -> None:
    rig = Rig(zone=make_zone(5))
    rig.client.serials[P1] = 5
    rig.client.zones[P1] = make_zone(5)
    rig.start()
    rig.clock.advance(0)
    rig.ref.retransfer()
    rig.clock.advance(0)
    assert rig.client.transfers == [(P1, "axfr")]


def test_stop_cancels_timers() -> None:
    rig = Rig(zone=make_zone(5)).start()
    rig.ref.stop()
    rig.clock.advance(10_000)
    assert rig.client.probes == []
    assert rig.clock.getDelayedCalls() == []


def test_static_zone_never_checks_or_expires() -> None:
    rig = Rig(primaries=(), zone=make_zone(5, expire=1)).start()
    rig.clock.advance(100_000)
    assert rig.client.probes == []
    assert rig.serving == 5
    assert rig.ref.status.state == "fresh"


def test_status_state_stale_when_behind() -> None:
    rig = Rig(zone=make_zone(5))
    rig.client.serials[P1] = 6
    rig.client.zones[P1] = TransferError("refused")
    rig.start()
    rig.clock.advance(0)
    assert rig.ref.status.state == "stale"
    assert rig.ref.status.phase in (IDLE, CHECKING)


# -- issue 10 item 3: an SOA answer that does not vouch for the zone is a failed check

_SOA5 = make_zone(5).soa
NOT_VOUCHING = {
    "aa-clear": SoaProbeResult(0, 5, _SOA5, False, None, False),  # a cache or a parent answering
    "noerror-no-soa": SoaProbeResult(0, None, None, False, None, True),
    "servfail": SoaProbeResult(2, None, None, False, None, True),
    "refused": SoaProbeResult(5, None, None, False, None, True),
}


@pytest.mark.parametrize("answer", list(NOT_VOUCHING), ids=list(NOT_VOUCHING))
def test_an_answer_that_does_not_vouch_for_the_zone_lets_it_expire_on_time(answer: str) -> None:
    rig = Rig(zone=make_zone(5, refresh=100, retry=20, expire=300))
    rig.client.serials[P1] = 5
    rig.start()
    rig.clock.advance(0)  # one good check: expiry counts from here
    good_at = rig.clock.seconds()
    assert rig.ref.status.expire_at == good_at + 300
    rig.client.answers[P1] = NOT_VOUCHING[answer]
    probes = len(rig.client.probes)
    for _ in range(29):
        rig.clock.advance(10)
    assert len(rig.client.probes) > probes + 5  # it kept retrying at RETRY, not REFRESH
    assert not rig.ref.status.expired
    assert rig.ref.status.expire_at == good_at + 300  # never pushed back by a bad answer
    assert rig.ref.status.primaries[str(P1)].up is False
    assert rig.ref.status.primaries[str(P1)].checks["failure"] >= 5
    assert rig.ref.status.state == "stale"
    rig.clock.advance(10)  # 300 s after the last good check
    assert rig.ref.status.expired
    assert rig.serving is None
    rig.client.answers.clear()
    rig.clock.advance(20)  # a real answer brings it back
    assert not rig.ref.status.expired
    assert rig.serving == 5


def test_aa_clear_from_the_first_primary_tries_the_next() -> None:
    rig = Rig(primaries=(P1, P2), zone=make_zone(5))
    rig.client.answers[P1] = NOT_VOUCHING["aa-clear"]
    rig.client.serials[P2] = 6
    rig.client.zones[P2] = make_zone(6)
    rig.start()
    rig.clock.advance(0)
    assert rig.client.probes == [P1, P2]
    assert rig.client.transfers == [(P2, "ixfr")]
    assert rig.serving == 6
    assert "AA clear" in (rig.ref.status.primaries[str(P1)].error or "")


def test_aa_clear_with_a_newer_serial_transfers_nothing() -> None:
    rig = Rig(zone=make_zone(5))
    rig.client.answers[P1] = SoaProbeResult(0, 9, make_zone(9).soa, False, None, False)
    rig.client.zones[P1] = make_zone(9)
    rig.start()
    rig.clock.advance(0)
    assert rig.client.transfers == []
    assert rig.ref.status.primaries[str(P1)].serial is None  # not believed either


# -- issue 10 item 7: refresh and retry timers are spread, never past EXPIRE

REFRESH_SPREAD = 0.1  # refresh.REFRESH_SPREAD: up to 10% early

def _fleet(n: int, seed: int, refresh: int, retry: int, expire: int,
           serial: int | None) -> tuple[task.Clock, list[Refresher]]:
    """*n* zones with the same SOA timers on one clock, one seeded RNG between them."""
    clock = task.Clock()
    clock.advance(1_000_000)
    rng = random.Random(seed)
    client = FakeClient()
    if serial is not None:
        client.serials[P1] = serial
    fleet = []
    for i in range(n):
        name = f"z{i}.example."
        origin = from_text(name)
        registry = Registry()
        registry.add(origin)
        registry.swap(origin, zone_from_text(f"""
$TTL 300
@ IN SOA ns1 host 5 {refresh} {retry} {expire} 60
  IN NS ns1
ns1 IN A 192.0.2.1
""", name))
        zc = ZoneConfig(name, origin, primaries=(P1,), refresh_min=1, retry_min=1, expire_min=1)
        ref = Refresher(zc, registry, client, MemStore(), clock, rand=rng.random,
                        wallclock=clock.seconds)
        ref.start(None)
        fleet.append(ref)
    clock.advance(0)
    return clock, fleet


def test_refresh_of_many_equal_zones_is_spread_within_bounds() -> None:
    clock, fleet = _fleet(100, seed=7, refresh=1000, retry=100, expire=5000, serial=5)
    now = clock.seconds()
    due = [r.status.next_refresh for r in fleet]
    assert all(d is not None for d in due)
    times = sorted(float(d) for d in due if d is not None)
    assert times[0] >= now + 1000 * (1 - REFRESH_SPREAD)  # a few percent early at most
    assert times[-1] <= now + 1000  # never later than REFRESH (RFC 1034 4.3.5)
    assert times[-1] - times[0] > 1000 * REFRESH_SPREAD * 0.8  # spread over the window
    assert len({round(t) for t in times}) > 50  # not in lock step
    # ... and the probes really go out at those times, not all at once.
    probes = len(fleet[0].client.probes)  # type: ignore[attr-defined]
    clock.advance(950 - 0.001)
    early = len(fleet[0].client.probes) - probes  # type: ignore[attr-defined]
    assert 20 < early < 80


def test_retry_of_many_equal_zones_is_spread_and_never_past_expiry() -> None:
    clock, fleet = _fleet(100, seed=11, refresh=1000, retry=100, expire=250, serial=None)
    now = clock.seconds()
    times = sorted(float(r.status.next_refresh or 0) for r in fleet)
    assert times[0] >= now + 80 and times[-1] <= now + 100
    assert len({round(t, 1) for t in times}) > 50
    for _ in range(10):  # keep failing: every retry stays before the zone would expire
        clock.advance(10)
        for r in fleet:
            if not r.status.expired:
                assert r.status.next_refresh is not None and r.status.expire_at is not None
                assert r.status.next_refresh <= r.status.expire_at


def test_refresh_longer_than_expire_checks_by_expiry() -> None:
    # An SOA with REFRESH > EXPIRE: waiting REFRESH would let the zone expire unchecked.
    rig = Rig(zone=make_zone(5, refresh=5000, retry=20, expire=300))
    rig.client.serials[P1] = 5
    rig.start()
    rig.clock.advance(0)
    st = rig.ref.status
    assert st.next_refresh is not None and st.expire_at is not None
    assert st.next_refresh <= st.expire_at
    rig.clock.advance(300)
    assert len(rig.client.probes) == 2
    assert not st.expired


def test_refresh_jitter_uses_the_injected_rng() -> None:
    rig = Rig(zone=make_zone(5, refresh=100))
    rig.ref.rand = lambda: 0.0
    rig.client.serials[P1] = 5
    rig.start()
    rig.clock.advance(0)
    assert rig.ref.status.next_refresh == rig.clock.seconds() + 90.0


def test_refresh_spread_near_expire_is_cut_at_expiry() -> None:
    # REFRESH 1000 against EXPIRE 950: the jittered window [900, 1000] is cut at 950, never past.
    clock, fleet = _fleet(100, seed=3, refresh=1000, retry=100, expire=950, serial=5)
    now = clock.seconds()
    for r in fleet:
        assert r.status.next_refresh is not None and r.status.expire_at == now + 950
        assert now + 900 <= r.status.next_refresh <= r.status.expire_at
    assert len({round(r.status.next_refresh or 0) for r in fleet}) > 20
