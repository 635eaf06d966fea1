"""Per-zone refresh state machine: SOA checks, transfers, retry, expiry (RFC 1034 4.3.5).

Like NSD's xfrd and Knot's zone events, each zone has one small machine
whose phase changes in one method (``_enter``), and whose timers are plain
arithmetic (``Timers``).  The machine does no I/O itself: it asks a
``TransferClient`` for SOA probes and transfers (Deferreds), tells the
``Registry`` when the served data changes, and a ``ZoneStore`` to persist.
A ``task.Clock`` and fake clients drive it in tests without sleeping.

Timeline of a zone::

    start --> CHECKING --(primary newer)--> TRANSFERRING --ok--> IDLE (refresh timer)
                 |  \\--(same serial)-----------------------------^
                 |                                 \\--fail--> IDLE (retry timer)
                 \\--(every primary failed)--> IDLE (retry timer)
    no success for EXPIRE seconds --> expired (SERVFAIL) until a check succeeds
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from twisted.internet import defer
from twisted.internet.error import CannotListenError

from secondns import dnssec
from secondns.config import Endpoint, ZoneConfig
from secondns.diff import VersionStep, invalidated_names, replaced_names
from secondns.dnssec import earliest_expiry
from secondns.errors import SecondnsError, StorageError, TransientError
from secondns.registry import Registry
from secondns.serial import serial_gt, serial_lt
from secondns.store.storage import CopyMeta
from secondns.transfer.pacing import Pacer, Release
from secondns.transfer.xfrin import SoaProbeResult, rcode_text
from secondns.wire import NOERROR, SERVFAIL
from secondns.zone import SOA, Zone

log = logging.getLogger("secondns.refresh")

IDLE = "idle"
CHECKING = "checking"
TRANSFERRING = "transferring"
STOPPED = "stopped"

# Transfer duration histogram bounds (seconds), for the metrics collector.
TRANSFER_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
# Used before a zone has an SOA of its own (never transferred).
BOOTSTRAP_RETRY = 10.0


@dataclass(frozen=True)
class Timers:
    """REFRESH, RETRY and EXPIRE of a zone after the configured clamps."""

    refresh: float
    retry: float
    expire: float

    @classmethod
    def for_zone(cls, soa: SOA | None, zc: ZoneConfig) -> Timers:
        """Clamp the SOA's timers to the zone's configured bounds."""
        if soa is None:
            return cls(zc.refresh_min, min(max(BOOTSTRAP_RETRY, zc.retry_min), zc.retry_max),
                       float(zc.expire_max))
        return cls(_clamp(soa.refresh, zc.refresh_min, zc.refresh_max),
                   _clamp(soa.retry, zc.retry_min, zc.retry_max),
                   _clamp(soa.expire, zc.expire_min, zc.expire_max))


def _clamp(value: int, low: int, high: int) -> float:
    return float(min(max(value, low), high))


# After a transient failure (quota reached, timeout, connection refused) the next check comes
# after BACKOFF_FIRST seconds, doubling with each further such failure, never later than RETRY.
BACKOFF_FIRST = 5.0
# The first checks after start-up are spread over this many seconds (the app's default).
STARTUP_SPREAD = 5.0

# A zone counts as "expiring" (status filter, secondns_zones_expiring) in the last quarter of
# EXPIRE, as the SecondnsZoneExpiringSoon alert has it.
EXPIRING_FRACTION = 0.25
STATES = ("fresh", "stale", "expired", "loading")

RETRY_SPREAD = 0.2  # a retry comes up to 20% early
REFRESH_SPREAD = 0.1  # a refresh up to 10% early: uniform in [0.9, 1.0] x REFRESH


def jittered(seconds: float, rand: Callable[[], float], spread: float = RETRY_SPREAD) -> float:
    """Come a little early, by up to *spread*, so many zones do not probe in lockstep.

    Zones loaded together with the same SOA timers would otherwise query
    their primaries in the same second for ever.  BIND draws from
    [0.75, 1.0] x the interval (``DNS_ZONE_JITTER_ADD``); early rather than
    late, because RFC 1034 4.3.5 gives REFRESH as the longest wait.
    """
    return seconds * (1.0 - spread + spread * rand())


@dataclass
class PrimaryStatus:
    """What the last SOA check learnt about one primary."""

    serial: int | None = None
    up: bool | None = None
    last_check: float | None = None
    error: str | None = None
    checks: dict[str, int] = field(default_factory=lambda: {"success": 0, "failure": 0})


@dataclass
class TransferRecord:
    """One finished (or failed) transfer, for status and logs."""

    kind: str
    result: str
    primary: str
    started: float
    duration: float
    records: int = 0
    bytes: int = 0
    serial: int | None = None
    error: str | None = None


@dataclass
class ZoneStatus:
    """Everything operators and metrics see of a zone; written only by its Refresher."""

    name: str
    static: bool
    phase: str = IDLE
    serial: int | None = None
    records: int = 0
    loaded: bool = False
    expired: bool = False
    last_success: float | None = None
    last_attempt: float | None = None
    next_refresh: float | None = None
    expire_at: float | None = None
    refresh: float | None = None
    retry: float | None = None
    expire: float | None = None
    signature_expiry: float | None = None  # earliest RRSIG expiration served (UNIX time)
    last_save: float | None = None  # when the copy on disk was last written
    save_failures: int = 0
    primaries: dict[str, PrimaryStatus] = field(default_factory=dict)
    last_transfer: TransferRecord | None = None
    last_error: str | None = None
    transfers: dict[tuple[str, str], int] = field(default_factory=dict)
    transfer_bytes: int = 0
    # Per transfer type: histogram bucket counts (TRANSFER_BUCKETS, then +Inf) and sum of seconds.
    transfer_buckets: dict[str, list[int]] = field(default_factory=dict)
    transfer_seconds: dict[str, float] = field(default_factory=dict)
    notifies: dict[str, int] = field(default_factory=lambda: {"accepted": 0, "refused": 0})
    catalog: str | None = None  # the catalog zone this member comes from (membership.py)
    catalog_members: int | None = None  # for a catalog zone: members it provides
    catalog_error: str | None = None  # for a catalog zone: entries or versions not acted on

    @property
    def state(self) -> str:
        """fresh, stale (last check failed or behind a primary), expired, or loading."""
        if self.expired:
            return "expired"
        if not self.loaded:
            return "loading"
        if self.static:
            return "fresh"
        behind = any(p.serial is not None and self.serial is not None and serial_gt(p.serial, self.serial)
                     for p in self.primaries.values())
        failing = self.last_error is not None and (
            self.last_success is None or (self.last_attempt or 0) > self.last_success)
        return "stale" if behind or failing else "fresh"

    def expiring(self, now: float) -> bool:
        """Served, and more than three quarters of EXPIRE gone without a good check."""
        if self.expired or not self.loaded or self.expire_at is None or self.expire is None:
            return False
        return self.expire_at - now < EXPIRING_FRACTION * self.expire


@dataclass(frozen=True)
class TransferOutcome:
    """A validated zone from a primary, not yet served."""

    zone: Zone
    kind: str
    bytes: int
    messages: int
    records: int
    expire: int | None = None
    ignored: int = 0
    steps: list[VersionStep] | None = None  # the changes, when the transfer was incremental
    fallback: str | None = None  # why an IXFR was retried as this AXFR
    up_to_date: bool = False  # IXFR answered with our own version
    primary_serial: int | None = None  # the serial an "up to date" answer carried


class TransferClient(Protocol):
    """The I/O the machine needs; transfer.py implements it with Twisted."""

    def soa_query(self, primary: Endpoint, zc: ZoneConfig) -> Any:
        """Deferred firing with a SoaProbeResult, or failing with a reason."""

    def transfer(self, primary: Endpoint, zc: ZoneConfig, current: Zone | None, kind: str) -> Any:
        """Deferred firing with a TransferOutcome, or failing with a reason."""


class ZoneStore(Protocol):
    """Persistence the machine needs; storage-backed in the app, in memory in tests."""

    def save_zone(self, zc: ZoneConfig, zone: Zone, meta: CopyMeta) -> Any:
        """Deferred (or None) firing once the copy is durable."""

    def save_meta(self, zc: ZoneConfig, meta: CopyMeta) -> Any:
        """Persist timestamps only; a Deferred (or None) firing once written."""

    def save_diff(self, zc: ZoneConfig, steps: list[VersionStep], zone: Zone, meta: CopyMeta) -> Any:
        """Persist an IXFR as journal entries (folding into a full copy when due)."""


class Refresher:
    """The state machine of one secondary zone."""

    def __init__(self, zc: ZoneConfig, registry: Registry, client: TransferClient, store: ZoneStore,
                 clock: Any, rand: Callable[[], float] = random.random,
                 wallclock: Callable[[], float] = time.time, pacer: Pacer | None = None,
                 first_check_spread: float = 0.0) -> None:
        self.zc = zc
        self.pacer = pacer or Pacer(clock)  # the app shares one; alone, no limits
        self.registry = registry
        self.client = client
        self.store = store
        self.clock = clock
        self.rand = rand
        self.wallclock = wallclock
        self.status = ZoneStatus(zc.name, zc.static)
        for primary in zc.primaries:
            self.status.primaries[str(primary)] = PrimaryStatus()
        self._timer: Any = None
        self._expire_timer: Any = None
        self._pending_check = False
        self._force_axfr = False  # an operator's retransfer, for the next cycle
        self._cycle_force = False  # ... and for the cycle in progress
        self._prefer: Endpoint | None = None
        self.first_check_spread = first_check_spread
        self._cycle_transient = False  # some primary failed this cycle for a passing reason
        self._backoffs = 0  # consecutive cycles that failed so

    # -- time: the clock is reactor time (seconds); status shows wall time.

    def _now(self) -> float:
        return float(self.clock.seconds())

    def _wall(self, at: float) -> float:
        """Convert a reactor time to UNIX time for status and on-disk metadata."""
        return self.wallclock() + (at - self._now())

    def _from_wall(self, unix: float) -> float:
        return self._now() + (unix - self.wallclock())

    @property
    def zone(self) -> Zone | None:
        """The snapshot currently served."""
        entry = self.registry.get(self.zc.origin)
        return entry.snapshot if entry is not None else None

    def timers(self) -> Timers:
        """The clamped timers of the zone as served now."""
        zone = self.zone
        return Timers.for_zone(zone.soa if zone is not None else None, self.zc)

    # -- lifecycle

    def start(self, meta: CopyMeta | None) -> None:
        """Begin: restore the expiry clock from disk metadata, then check at once."""
        zone = self.zone
        st = self.status
        if zone is not None:
            self._mark_loaded(zone)
        if self.zc.static:
            st.expire_at = None
            return
        timers = self.timers()
        if zone is not None and meta is not None and meta.last_refresh is not None:
            # The expiry clock continues across restarts (issue: timers survive restarts).
            st.last_success = meta.last_refresh
            expire_at = meta.expire_at if meta.expire_at is not None else meta.last_refresh + timers.expire
            st.expire_at = expire_at
            if expire_at <= self.wallclock():
                self._set_expired(True, "copy on disk is older than EXPIRE")
            else:
                self._arm_expiry()
        elif zone is not None:
            # A hand-placed zone file with no metadata: its age is unknown, count from now.
            st.expire_at = self.wallclock() + timers.expire
            self._arm_expiry()
        # Zones started together must not all probe in the same instant (the pacer caps the
        # rate, this spreads the queue too, so NOTIFYs and new zones are not stuck behind it).
        self._schedule(self.first_check_spread * self.rand())

    def stop(self) -> None:
        """Cancel timers; an in-flight check or transfer is ignored when it returns."""
        self._enter(STOPPED)
        for timer in (self._timer, self._expire_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self._timer = self._expire_timer = None

    def reconfigure(self, zc: ZoneConfig) -> None:
        """New primaries, key or limits from a reload; used from the next check on."""
        self.zc = zc
        self.status.static = zc.static
        keep = {str(p) for p in zc.primaries}
        for name in list(self.status.primaries):
            if name not in keep:
                del self.status.primaries[name]
        for primary in zc.primaries:
            self.status.primaries.setdefault(str(primary), PrimaryStatus())

    # -- external triggers

    def notify(self, source: Endpoint | None) -> None:
        """RFC 1996 3.11: check now; during a check or transfer, check once more afterwards."""
        if self.zc.static or self.status.phase == STOPPED:
            return
        if source is not None:
            self._prefer = source
        if self.status.phase == IDLE:
            self._schedule(0.0)
        else:
            self._pending_check = True

    def refresh_now(self) -> None:
        """Operator asked for an SOA check now."""
        self.notify(None)

    def retransfer(self) -> None:
        """Operator asked for a full AXFR now, whatever the serials say."""
        self._force_axfr = True
        self.notify(None)

    # -- the machine

    def _enter(self, phase: str) -> None:
        """The only place the phase changes, so every change is logged the same way."""
        if self.status.phase != phase:
            log.debug("zone %s: %s -> %s", self.zc.name, self.status.phase, phase)
            self.status.phase = phase

    def _schedule(self, delay: float) -> None:
        if self.status.phase == STOPPED:
            return
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = self.clock.callLater(delay, self._check)
        self.status.next_refresh = self._wall(self._now() + delay)

    def _check(self) -> None:
        self._timer = None
        if self.status.phase != IDLE:
            return
        self._enter(CHECKING)
        self.status.last_attempt = self.wallclock()
        self._pending_check = False
        # A retransfer asked for during this cycle belongs to the next one.
        self._cycle_force = self._force_axfr
        self._force_axfr = False
        self.status.next_refresh = None
        order = list(self.zc.primaries)
        if self._prefer in order:
            order.remove(self._prefer)
            order.insert(0, self._prefer)
        self._prefer = None
        self._cycle_transient = False
        self._probe(order, [])

    def _probe(self, remaining: list[Endpoint], errors: list[str]) -> None:
        """Ask the next primary for its SOA; every primary is probed before any transfer from it."""
        if self.status.phase == STOPPED:
            return
        if not remaining:
            self._failed("; ".join(errors) or "no primaries configured")
            return
        primary = remaining[0]
        self._enter(CHECKING)
        # The zone waits in CHECKING for a query token (server.soa-queries-per-second).
        self.pacer.soa_query(lambda: self._send_probe(primary, remaining, errors))

    def _send_probe(self, primary: Endpoint, remaining: list[Endpoint], errors: list[str]) -> None:
        if self.status.phase == STOPPED:
            return
        # maybeDeferred: a client that raises at once (no file descriptors left) is a failed
        # probe, not an exception that leaves the zone in CHECKING with no timer, for ever.
        d = defer.maybeDeferred(self.client.soa_query, primary, self.zc)
        d.addCallbacks(self._probed, self._probe_failed, callbackArgs=(primary, remaining[1:], errors),
                       errbackArgs=(primary, remaining[1:], errors))

    def _probe_failed(self, failure: Any, primary: Endpoint, rest: list[Endpoint],
                      errors: list[str]) -> None:
        if self.status.phase == STOPPED:
            return
        reason = _reason(failure)
        self._cycle_transient |= _transient(failure)
        self._primary_result(primary, None, reason)
        log.warning("zone %s: SOA check of %s failed: %s", self.zc.name, primary, reason)
        self._probe(rest, [*errors, f"{primary}: {reason}"])

    def _probed(self, result: SoaProbeResult, primary: Endpoint, rest: list[Endpoint],
                errors: list[str]) -> None:
        if self.status.phase == STOPPED:
            return
        reason = _unusable(result)
        if reason is not None or result.serial is None:
            reason = reason or "answered with no SOA for the zone"
            # SERVFAIL: the primary is busy (BIND at its quota) or still loading the zone.
            self._cycle_transient |= result.rcode == SERVFAIL
            self._primary_result(primary, None, reason)
            log.warning("zone %s: SOA check of %s failed: %s", self.zc.name, primary, reason)
            self._probe(rest, [*errors, f"{primary}: {reason}"])
            return
        self._primary_result(primary, result.serial, None)
        zone = self.zone
        force = self._cycle_force
        if zone is None or serial_gt(result.serial, zone.serial) or (
                force and not serial_lt(result.serial, zone.serial)):
            kind = "axfr" if (zone is None or force or self.zc.transfer == "axfr") else "ixfr"
            self._transfer(primary, rest, kind, errors, result.expire)
            return
        if serial_lt(result.serial, zone.serial):
            # Never go back to an older serial (RFC 1982), and a primary behind us does not
            # vouch for our copy (RFC 1034 4.3.5): try the next one.
            reason = f"has serial {result.serial}, older than ours ({zone.serial})"
            log.warning("zone %s: primary %s %s; keeping ours", self.zc.name, primary, reason)
            self._probe(rest, [*errors, f"{primary}: {reason}"])
            return
        self._succeeded(primary, result.expire)

    def _primary_result(self, primary: Endpoint, serial: int | None, error: str | None) -> None:
        ps = self.status.primaries.get(str(primary))
        if ps is None:
            return  # removed by a reload while this check was in flight
        ps.last_check = self.wallclock()
        ps.up = error is None
        ps.error = error
        if serial is not None:
            ps.serial = serial
        ps.checks["success" if error is None else "failure"] += 1

    def _transfer(self, primary: Endpoint, rest: list[Endpoint], kind: str, errors: list[str],
                  expire: int | None) -> None:
        self._enter(TRANSFERRING)
        # The zone waits in TRANSFERRING for a slot (server.transfers-in).
        self.pacer.transfer(lambda release: self._start_transfer(release, primary, rest, kind, errors,
                                                                 expire))

    def _start_transfer(self, release: Release, primary: Endpoint, rest: list[Endpoint], kind: str,
                        errors: list[str], expire: int | None) -> None:
        if self.status.phase == STOPPED:
            release()
            return
        started = self.clock.seconds()
        log.info("zone %s: %s from %s started", self.zc.name, kind.upper(), primary)
        d = defer.maybeDeferred(self.client.transfer, primary, self.zc, self.zone, kind)
        d.addBoth(_releasing, release)
        d.addCallbacks(self._transferred, self._transfer_failed,
                       callbackArgs=(primary, rest, kind, started, errors, expire),
                       errbackArgs=(primary, rest, kind, started, errors))

    def _transfer_failed(self, failure: Any, primary: Endpoint, rest: list[Endpoint], kind: str,
                         started: float, errors: list[str]) -> None:
        if self.status.phase == STOPPED:
            return
        reason = _reason(failure)
        self._cycle_transient |= _transient(failure)
        ixfr_reason = getattr(getattr(failure, "value", None), "ixfr_reason", None)
        duration = self.clock.seconds() - started
        if ixfr_reason is not None:
            # The IXFR failed, then the AXFR tried after it (transfer.FallbackFailed): count both.
            self._record_transfer(TransferRecord("ixfr", "failure", str(primary), self._wall(started),
                                                 duration, error=ixfr_reason))
        failed_kind = "axfr" if ixfr_reason is not None else kind
        self._record_transfer(TransferRecord(failed_kind, "failure", str(primary), self._wall(started),
                                             duration, error=reason))
        log.error("zone %s: %s from %s failed: %s", self.zc.name, failed_kind.upper(), primary, reason)
        # The next primary is probed first: it may be behind the one that failed.
        self._probe(rest, [*errors, f"{kind.upper()} from {primary}: {reason}"])

    def _transferred(self, outcome: TransferOutcome, primary: Endpoint, rest: list[Endpoint], kind: str,
                     started: float, errors: list[str], expire: int | None) -> None:
        if self.status.phase == STOPPED:
            return
        zone = outcome.zone
        current = self.zone
        duration = self.clock.seconds() - started
        expire_option = outcome.expire if outcome.expire is not None else expire
        if outcome.fallback is not None:
            self._record_transfer(TransferRecord("ixfr", "failure", str(primary), self._wall(started),
                                                 duration, error=outcome.fallback))
        offered = outcome.primary_serial if outcome.up_to_date else zone.serial
        if current is not None and offered is not None and serial_lt(offered, current.serial):
            # RFC 1982: never go back.  The primary moved backwards since its SOA answer.
            reason = f"offered serial {offered}, older than ours ({current.serial})"
            self._record_transfer(TransferRecord(outcome.kind, "failure", str(primary),
                                                 self._wall(started), duration, error=reason))
            log.error("zone %s: %s from %s refused: %s", self.zc.name, outcome.kind.upper(), primary,
                      reason)
            self._probe(rest, [*errors, f"{primary}: {reason}"])
            return
        if current is not None and (outcome.up_to_date or (
                zone.serial == current.serial and not self._cycle_force)):
            # Up to date after all (IXFR answered with our own SOA, or the same version again).
            self._succeeded(primary, expire_option)
            return
        # An IXFR names what changed, so cached answers for the rest of the zone survive; so
        # does a small zone's AXFR, compared node by node.
        changed: frozenset[bytes] | None = None
        if current is not None:
            changed = (invalidated_names(current, zone, outcome.steps) if outcome.steps
                       else replaced_names(current, zone))
        self.registry.swap(self.zc.origin, zone, changed)
        self._mark_loaded(zone)
        self._record_transfer(TransferRecord(outcome.kind, "success", str(primary), self._wall(started),
                                             duration, outcome.records, outcome.bytes, zone.serial))
        log.info("zone %s: %s from %s finished: serial %d, %d records, %d bytes, %.2f s",
                 self.zc.name, outcome.kind.upper(), primary, zone.serial, zone.record_count,
                 outcome.bytes, duration)
        warning = dnssec.iterations_warning(zone, current)
        if warning is not None:
            log.warning("zone %s: %s", self.zc.name, warning)
        self._succeeded(primary, expire_option, saved=zone, steps=outcome.steps)

    def _record_transfer(self, rec: TransferRecord) -> None:
        st = self.status
        st.last_transfer = rec
        key = (rec.kind, rec.result)
        st.transfers[key] = st.transfers.get(key, 0) + 1
        st.transfer_bytes += rec.bytes
        st.transfer_seconds[rec.kind] = st.transfer_seconds.get(rec.kind, 0.0) + rec.duration
        buckets = st.transfer_buckets.setdefault(rec.kind, [0] * (len(TRANSFER_BUCKETS) + 1))
        for i, bound in enumerate(TRANSFER_BUCKETS):
            if rec.duration <= bound:
                buckets[i] += 1
                break
        else:
            buckets[-1] += 1
        if rec.result == "failure":
            st.last_error = rec.error

    def _succeeded(self, primary: Endpoint, expire_option: int | None, saved: Zone | None = None,
                   steps: list[VersionStep] | None = None) -> None:
        """A primary vouched for our serial: reset the expiry clock, wait REFRESH."""
        st = self.status
        timers = self.timers()
        now_wall = self.wallclock()
        self._backoffs = 0
        st.last_success = now_wall
        st.last_error = None
        # RFC 7314 4: a primary that is itself a secondary passes on its remaining expiry.
        expire = timers.expire if expire_option is None else min(float(expire_option), timers.expire)
        st.expire_at = now_wall + expire
        self._set_expired(False, None)
        self._arm_expiry()
        meta = CopyMeta(serial=self.zone.serial if self.zone else 0, last_refresh=now_wall,
                        expire_at=st.expire_at, primary=str(primary), saved=now_wall)
        self._persist(saved, meta, steps)
        self._enter(IDLE)
        self._schedule(0.0 if self._pending_check else self._before_expiry(
            jittered(timers.refresh, self.rand, REFRESH_SPREAD)))

    def _failed(self, reason: str) -> None:
        """Every primary failed: retry at RETRY (jittered); expiry keeps counting.

        When a primary failed for a passing reason (its quota, a timeout, a
        refused connection) the retry comes after a short back-off instead,
        doubling per such failure and bounded by RETRY, and jittered over
        half its length, so zones that failed together retry apart.
        """
        st = self.status
        st.last_error = reason
        self._enter(IDLE)
        timers = self.timers()
        if self._cycle_transient:
            self._backoffs += 1
            step = BACKOFF_FIRST * 2.0 ** min(self._backoffs - 1, 20)
            delay = min(step, timers.retry) * (0.5 + 0.5 * self.rand())
        else:
            self._backoffs = 0
            delay = jittered(timers.retry, self.rand)
        log.warning("zone %s: refresh failed, retrying in %.0f s: %s", self.zc.name, delay, reason)
        self._schedule(0.0 if self._pending_check else self._before_expiry(delay))

    def _before_expiry(self, delay: float) -> float:
        """Never wait past EXPIRE (an SOA may say REFRESH > EXPIRE): check when the zone would expire."""
        expire_at = self.status.expire_at
        if expire_at is None or self.status.expired:
            return delay
        remaining = expire_at - self.wallclock()
        return min(delay, remaining) if remaining > 0 else delay

    def _persist(self, zone: Zone | None, meta: CopyMeta, steps: list[VersionStep] | None) -> None:
        try:
            if zone is not None:
                if steps:
                    d = self.store.save_diff(self.zc, steps, zone, meta)
                else:
                    d = self.store.save_zone(self.zc, zone, meta)
                if d is not None:
                    d.addCallbacks(self._saved, self._save_failed)
                else:
                    self._saved(None)
            else:
                d = self.store.save_meta(self.zc, meta)
                if d is not None:
                    d.addErrback(self._save_failed)
        except (StorageError, OSError) as exc:
            self._save_failed(exc)

    def _saved(self, _result: Any) -> None:
        self.status.last_save = self.wallclock()

    def _save_failed(self, failure: Any) -> None:
        self.status.save_failures += 1
        reason = _reason(failure)
        self.status.last_error = f"saving the zone copy failed: {reason}"
        log.error("zone %s: saving the copy on disk failed (still served from memory): %s",
                  self.zc.name, reason)

    def _mark_loaded(self, zone: Zone) -> None:
        st = self.status
        st.loaded = True
        st.serial = zone.serial
        st.records = zone.record_count
        st.signature_expiry = earliest_expiry(zone.sig_hours)
        timers = Timers.for_zone(zone.soa, self.zc)
        st.refresh, st.retry, st.expire = timers.refresh, timers.retry, timers.expire

    # -- expiry

    def _arm_expiry(self) -> None:
        if self._expire_timer is not None and self._expire_timer.active():
            self._expire_timer.cancel()
        self._expire_timer = None
        st = self.status
        if st.expire_at is None or st.phase == STOPPED:
            return
        delay = max(0.0, st.expire_at - self.wallclock())
        self._expire_timer = self.clock.callLater(delay, self._expire_due)

    def _expire_due(self) -> None:
        self._expire_timer = None
        st = self.status
        if st.expire_at is not None and self.wallclock() >= st.expire_at - 0.001:
            self._set_expired(True, "no successful check for EXPIRE seconds")
        else:
            self._arm_expiry()

    def _set_expired(self, expired: bool, why: str | None) -> None:
        st = self.status
        if st.expired == expired:
            return
        st.expired = expired
        if self.registry.get(self.zc.origin) is not None:
            self.registry.set_expired(self.zc.origin, expired)
        if expired:
            log.error("zone %s: expired, answering SERVFAIL: %s", self.zc.name, why)
        else:
            log.info("zone %s: no longer expired", self.zc.name)


def _unusable(result: SoaProbeResult) -> str | None:
    """Why an SOA answer does not vouch for the zone, or None when it does.

    RFC 1034 4.3.5: a refresh succeeds only when the primary answers for the
    zone with authority.  A server that lost the zone may answer SERVFAIL or
    REFUSED, or NOERROR from a cache or a parent with AA clear; counting any
    of those as a success would keep a zone nobody serves alive for ever.
    """
    if result.rcode != NOERROR:
        return f"answered {rcode_text(result.rcode)}"
    if result.serial is None:
        return "answered with no SOA for the zone"
    if not result.authoritative:
        return "answered without authority (AA clear): it does not serve the zone"
    return None


def _releasing(result: Any, release: Release) -> Any:
    """Free the transfer slot whatever the outcome, before the machine moves on."""
    release()
    return result


def _transient(failure: Any) -> bool:
    """True for failures that may clear within seconds (see errors.TransientError)."""
    exc = getattr(failure, "value", failure)
    return isinstance(exc, TransientError | OSError | CannotListenError) or bool(
        getattr(exc, "transient", False))


def _reason(failure: Any) -> str:
    """A one-line reason from a Failure or exception, never a traceback."""
    exc = getattr(failure, "value", failure)
    if isinstance(exc, SecondnsError):
        return str(exc)
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0] if text else type(exc).__name__
