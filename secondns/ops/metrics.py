"""Prometheus metrics, built at scrape time from state the server already holds.

The query path only bumps plain integers (``stats.ServingStats``) and each
zone's ``Refresher`` keeps its ``ZoneStatus``; this collector turns both into
metric families when Prometheus scrapes, as NSD and Knot render their
statistics.  Zone labels come only from configured zones, so a query for a
random name can never create a new time series.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, ClassVar

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString as _float_to_go

from secondns import __version__
from secondns.serve.stats import (
    INTERNAL_ERROR_PLACES,
    LATENCY_BUCKETS,
    RRL_KINDS,
    TCP_CLOSE_REASONS,
    TCP_REFUSED_REASONS,
    ServingStats,
)
from secondns.transfer.refresh import STATES, TRANSFER_BUCKETS, PrimaryStatus, ZoneStatus

# The value formatting prometheus_client's encoders use (untyped there).
floatToGoString: Callable[[Any], str] = _float_to_go

RCODE_NAMES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED",
               6: "YXDOMAIN", 7: "YXRRSET", 8: "NXRRSET", 9: "NOTAUTH", 10: "NOTZONE", 16: "BADVERS",
               23: "BADCOOKIE"}


def _bucket_pairs(bounds: tuple[float, ...], counts: list[int]) -> list[tuple[str, float]]:
    """Cumulative (le, count) pairs as HistogramMetricFamily wants them."""
    out = []
    total = 0
    for bound, count in zip(bounds, counts, strict=False):
        total += count
        out.append((repr(float(bound)), float(total)))
    total += counts[-1]
    out.append(("+Inf", float(total)))
    return out


class SecondnsCollector(Collector):
    """Yields every secondns family from live objects on each scrape.

    Safe to run in a worker thread while the reactor updates the statuses:
    it only reads attributes and copies each dict before iterating it (both
    atomic under the GIL), so a scrape sees each field as it was at some
    instant of the scrape, which is all a metric promises.
    """

    def __init__(self, stats: ServingStats, zones: Callable[[], Iterable[ZoneStatus]],
                 extra: Callable[[], dict[str, tuple[str, float]]] | None = None,
                 unknown_notifies: Callable[[], int] | None = None, per_zone: bool = True,
                 rrl: bool = False) -> None:
        self.stats = stats
        self.zones = zones
        # Off: no zone label anywhere (counters summed over zones), for 10,000s of zones.
        self.per_zone = per_zone
        self.extra = extra
        self.unknown_notifies = unknown_notifies
        self.rrl = rrl  # server.rate-limit set: its counters are exported, zero or not
        self.memo = RenderMemo()  # the last scrape's value and label strings, for the next

    def collect(self) -> Iterator[Any]:
        """Metric objects only, for any prometheus_client encoder (and the reference in tests)."""
        return self._collect(fast=False)

    def collect_fast(self) -> Iterator[Any]:
        """As collect(), but the per-zone families come as one ZoneSeries (see encode())."""
        return self._collect(fast=True)

    def _collect(self, fast: bool) -> Iterator[Any]:
        yield from self._serving()
        zones = list(self.zones())
        yield from self._summary(zones)
        if fast and self.per_zone:
            yield ZoneSeries(zones, self.unknown_notifies() if self.unknown_notifies is not None else None,
                             self.memo)
            yield _transfer_durations(zones)
        else:
            yield from self._zones(zones)
        info = InfoMetricFamily("secondns_build", "secondns version running.")
        info.add_metric([], {"version": __version__})
        yield info

    def _serving(self) -> Iterator[Any]:
        st = self.stats
        queries = CounterMetricFamily("secondns_queries", "DNS requests received.", labels=["transport"])
        queries.add_metric(["udp"], st.udp_queries)
        queries.add_metric(["tcp"], st.tcp_queries)
        yield queries
        # serve/steering.py: queries with a server cookie reach the priority socket
        by_socket = CounterMetricFamily("secondns_udp_queries", "UDP requests received, by the socket"
                                        " they were read from (priority: carrying a server cookie).",
                                        labels=["socket"])
        by_socket.add_metric(["priority"], st.udp_priority)
        by_socket.add_metric(["normal"], st.udp_queries - st.udp_priority)
        yield by_socket
        responses = CounterMetricFamily("secondns_responses", "DNS responses sent, by rcode.",
                                        labels=["rcode"])
        for code, count in enumerate(st.rcodes):
            if count or code in (0, 2, 3, 5):
                responses.add_metric([RCODE_NAMES.get(code, str(code))], count)
        yield responses
        yield CounterMetricFamily("secondns_responses_truncated", "UDP responses sent with TC=1.",
                                  value=st.truncated)
        yield CounterMetricFamily("secondns_requests_dropped",
                                  "Messages not answered (shorter than a header, or responses).",
                                  value=st.dropped)
        yield CounterMetricFamily("secondns_tcp_connections", "TCP connections accepted.",
                                  value=st.tcp_connections)
        refused = CounterMetricFamily(
            "secondns_tcp_refused", "New TCP connections closed at once: over the per-client or total limit.",
            labels=["reason"])
        for reason, count in zip(TCP_REFUSED_REASONS, st.tcp_refused, strict=True):
            refused.add_metric([reason], count)
        yield refused
        closed = CounterMetricFamily(
            "secondns_tcp_closed", "Accepted TCP connections the server closed, by which limit.",
            labels=["reason"])
        for reason, count in zip(TCP_CLOSE_REASONS, st.tcp_closed, strict=True):
            closed.add_metric([reason], count)
        yield closed
        yield CounterMetricFamily("secondns_send_errors",
                                  "UDP responses the kernel would not take (full buffer, ICMP error).",
                                  value=st.send_errors)
        internal = CounterMetricFamily(
            "secondns_internal_errors",
            "Messages answered SERVFAIL because answering raised (a bug), by where it was raised.",
            labels=["where"])
        for where, count in zip(INTERNAL_ERROR_PLACES, st.internal_errors, strict=True):
            internal.add_metric([where], count)
        yield internal
        if self.rrl:
            limited = CounterMetricFamily(
                "secondns_rrl_responses",
                "UDP responses response rate limiting dropped or sent slipped (TC=1, or BADCOOKIE "
                "to a client that sent a cookie); in log-only mode, those it would have.",
                labels=["action"])
            limited.add_metric(["dropped"], st.rrl_dropped)
            limited.add_metric(["slipped"], st.rrl_slipped)
            yield limited
            by_kind = CounterMetricFamily(
                "secondns_rrl_limited", "The same, by account kind (an amplification attack is"
                " limited as response, a random-subdomain flood as nxdomain).", labels=["kind", "action"])
            for i, kind in enumerate(RRL_KINDS):
                by_kind.add_metric([kind, "dropped"], st.rrl_by_kind[2 * i])
                by_kind.add_metric([kind, "slipped"], st.rrl_by_kind[2 * i + 1])
            yield by_kind
        latency = HistogramMetricFamily(
            "secondns_query_duration_seconds",
            "Processing time of one query in every 256 (sampled; excludes kernel and queueing time).")
        latency.add_metric([], _bucket_pairs(LATENCY_BUCKETS, st.latency_buckets), st.latency_sum)
        yield latency
        if self.extra is not None:
            for name, (doc, value) in self.extra().items():
                yield GaugeMetricFamily(name, doc, value=value)

    def _summary(self, zones: list[ZoneStatus]) -> Iterator[Any]:
        """Series whose number never depends on the number of zones: always exported."""
        now = time.time()
        counts = dict.fromkeys(STATES, 0)
        expiring = 0
        oldest: float | None = None
        soonest: float | None = None
        soonest_sig: float | None = None
        for z in zones:
            state = z.state
            counts[state] = counts.get(state, 0) + 1
            sig = z.signature_expiry  # static zones serve signatures too
            if sig is not None and (soonest_sig is None or sig < soonest_sig):
                soonest_sig = sig
            if z.static:
                continue
            if z.expiring(now):
                expiring += 1
            if z.last_success is not None and (oldest is None or z.last_success < oldest):
                oldest = z.last_success
            if (z.expire_at is not None and not z.expired
                    and (soonest is None or z.expire_at < soonest)):
                soonest = z.expire_at
        fam = GaugeMetricFamily("secondns_zones", "Configured zones, by state.", labels=["state"])
        for state, count in counts.items():
            fam.add_metric([state], count)
        yield fam
        yield GaugeMetricFamily("secondns_zones_expiring",
                                "Served zones in the last quarter of EXPIRE without a good check.",
                                value=expiring)
        yield GaugeMetricFamily("secondns_metrics_per_zone",
                                "1 when per-zone series are exported (server.metrics.per-zone).",
                                value=1.0 if self.per_zone else 0.0)
        for name, doc, value in (
                ("secondns_zones_oldest_refresh_success_timestamp_seconds",
                 "The oldest last good check among zones with primaries.", oldest),
                ("secondns_zones_soonest_expiry_timestamp_seconds",
                 "The soonest expiry among zones not yet expired.", soonest),
                ("secondns_zones_soonest_signature_expiry_timestamp_seconds",
                 "The earliest RRSIG expiration among served zones (hour-rounded down).", soonest_sig)):
            if value is not None:
                yield GaugeMetricFamily(name, doc, value=value)

    def _zones(self, zones: list[ZoneStatus]) -> Iterator[Any]:
        """The per-zone families as prometheus_client Metric objects, from ZONE_FAMILIES.

        The reference ZoneSeries is compared with in tests, and what collect() gives any
        other consumer; the scrape itself takes ZoneSeries.
        """
        if not self.per_zone:
            yield from self._zone_totals(zones)
            return
        for family in ZONE_FAMILIES:
            metric = (CounterMetricFamily if family.type == COUNTER else GaugeMetricFamily)(
                family.name, family.help, labels=list(family.labels))
            for z in zones:
                for extra, value in family.sampler.samples(z):
                    metric.add_metric([z.name, *extra], value)
            if family.name == _UNKNOWN_ZONE_FAMILY and self.unknown_notifies is not None:
                # The zone label stays bounded: NOTIFYs for zones we do not serve share zone="".
                metric.add_metric(["", "unknown_zone"], self.unknown_notifies())
            yield metric
        yield _transfer_durations(zones)


    def _zone_totals(self, zones: list[ZoneStatus]) -> Iterator[Any]:
        """The per-zone counters summed over zones: same names, no zone (or primary) label."""
        transfers: dict[tuple[str, str], int] = {(k, r): 0 for k in ("axfr", "ixfr")
                                                 for r in ("success", "failure")}
        checks = {"success": 0, "failure": 0}
        notifies = {"accepted": 0, "refused": 0}
        tbytes = save_failures = 0
        by_kind: dict[str, tuple[list[int], float]] = {}
        for z in zones:
            for key, count in dict(z.transfers).items():
                transfers[key] = transfers.get(key, 0) + count
            for ps in list(z.primaries.values()):
                for result, count in dict(ps.checks).items():
                    checks[result] = checks.get(result, 0) + count
            for result, count in dict(z.notifies).items():
                notifies[result] = notifies.get(result, 0) + count
            tbytes += z.transfer_bytes
            save_failures += z.save_failures
            for kind, buckets in dict(z.transfer_buckets).items():
                acc, total = by_kind.get(kind, ([0] * len(buckets), 0.0))
                by_kind[kind] = ([a + b for a, b in zip(acc, buckets, strict=True)],
                                 total + z.transfer_seconds.get(kind, 0.0))
        fam = CounterMetricFamily("secondns_transfers", "Zone transfers, by type and result.",
                                  labels=["type", "result"])
        for (kind, result), count in sorted(transfers.items()):
            fam.add_metric([kind, result], count)
        yield fam
        yield CounterMetricFamily("secondns_transfer_bytes", "Bytes received in zone transfers.",
                                  value=tbytes)
        fam = CounterMetricFamily("secondns_soa_checks", "SOA checks, by result.", labels=["result"])
        for result, count in checks.items():
            fam.add_metric([result], count)
        yield fam
        fam = CounterMetricFamily("secondns_notifies", "NOTIFY messages received, by result.",
                                  labels=["result"])
        for result, count in notifies.items():
            fam.add_metric([result], count)
        if self.unknown_notifies is not None:
            fam.add_metric(["unknown_zone"], self.unknown_notifies())
        yield fam
        yield CounterMetricFamily("secondns_zone_save_failures",
                                  "Failed writes of zone copies on disk (disk full, ...).",
                                  value=save_failures)
        durations = HistogramMetricFamily("secondns_transfer_duration_seconds",
                                          "Duration of zone transfers.", labels=["type"])
        for kind in ("axfr", "ixfr"):
            buckets, total = by_kind.get(kind, ([0] * (len(TRANSFER_BUCKETS) + 1), 0.0))
            durations.add_metric([kind], _bucket_pairs(TRANSFER_BUCKETS, buckets), total)
        yield durations


def _transfer_durations(zones: list[ZoneStatus]) -> HistogramMetricFamily:
    """Transfer durations summed over zones (a zone label would multiply 14 buckets by zones).

    Bucket columns are summed by zip(*lists) (the lists are read, not copied: the reactor only
    adds to their items); seconds are added in zone order from 0.0, a plain left fold, so the
    sum is the same float whatever Python's sum() does (3.12 compensates).
    """
    durations = HistogramMetricFamily("secondns_transfer_duration_seconds",
                                      "Duration of zone transfers.", labels=["type"])
    for kind in ("axfr", "ixfr"):
        lists: list[list[int]] = []
        total = 0.0
        for z in zones:
            buckets = z.transfer_buckets.get(kind)
            if buckets is not None:
                lists.append(buckets)
                total += z.transfer_seconds.get(kind, 0.0)
        sums = [sum(column) for column in zip(*lists, strict=True)] if lists else \
            [0] * (len(TRANSFER_BUCKETS) + 1)
        durations.add_metric([kind], _bucket_pairs(TRANSFER_BUCKETS, sums), total)
    return durations


def _escape(value: str) -> str:
    # Label values escaped as prometheus_client does in both formats (backslash, newline, quote).
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r'\"')


class _Memo(dict[Any, str]):
    """One scrape's strings by what they show; a miss is looked up in the previous scrape's memo
    before it is computed, so a value or label that did not change is formatted once, ever.

    Holds only what one scrape used (bounded by the zones served).  Equal keys share a string:
    1, 1.0 and True all print "1.0" (no zone value is ever -0.0, which would print as 0.0).
    """

    __slots__ = ("compute", "previous")

    def __init__(self, compute: Callable[[Any], str], previous: dict[Any, str]) -> None:
        super().__init__()
        self.compute = compute
        self.previous = previous

    def __missing__(self, key: Any) -> str:
        text = self.previous.get(key)
        if text is None:
            text = self.compute(key)
        self[key] = text
        return text


def _go_string(value: Any) -> str:
    """floatToGoString(value), the same text, with a shortcut for values in [1e9, 1e10): UNIX
    times of this era and most serials, a repr() of 10 digits, a dot and the rest, written as
    floatToGoString writes it (dot after the first digit, zeros stripped, "e+09").  About 40%
    less CPU for them: a first scrape at 10,000 zones formats ~50,000 distinct timestamps."""
    if 1e9 <= value < 1e10:
        s = repr(float(value))
        return f"{s[0]}.{s[1:10]}{s[11:]}".rstrip("0.") + "e+09"
    return floatToGoString(value)


def _labeller(name: str) -> Callable[[Any], str]:
    return lambda value: f'{name}="{_escape(value)}"'


class _Strings:
    """The memos of one rendering: sample values, and the zone, primary and result labels."""

    __slots__ = ("primary", "result", "value", "zone")
    value: _Memo
    zone: _Memo
    primary: _Memo
    result: _Memo

    def __init__(self, last: _Strings | None = None) -> None:
        self.value = _Memo(_go_string, last.value if last else {})
        self.zone = _Memo(_labeller("zone"), last.zone if last else {})
        self.primary = _Memo(_labeller("primary"), last.primary if last else {})
        self.result = _Memo(_labeller("result"), last.result if last else {})


class RenderMemo:
    """What one scrape formatted, kept for the next (SecondnsCollector holds one).

    At 10,000 zones most of a scrape's values (timestamps, serials, counters) and every label
    are the previous scrape's: looking them up saves formatting them again.  Two renderings at
    once (two formats) each start from the last finished one; the later to finish is kept.
    """

    def __init__(self) -> None:
        self.last: _Strings | None = None

    def start(self) -> _Strings:
        return _Strings(self.last)

    def keep(self, strings: _Strings) -> None:
        for memo in (strings.value, strings.zone, strings.primary, strings.result):
            memo.previous = {}  # or every scrape's memo would stay reachable from the last
        self.last = strings


# Sample lines are written with the zone label last: every other label name of a per-zone
# family must sort before "zone" (prometheus_client writes label names sorted).


class _Scrape:
    """What one rendering reads once and every family's lines share.

    rows: for each zone, the attributes the zone-level samplers name, read by one attrgetter
    call (one tuple a zone, the families then read these compact rows rather than 10,000
    statuses scattered over the heap once each); primaries: a copy of each zone's primaries.
    """

    __slots__ = ("column", "labels", "primaries", "rows", "strings")

    def __init__(self, zones: list[ZoneStatus], strings: _Strings) -> None:
        zone = strings.zone
        self.strings = strings
        self.labels = [zone[z.name] for z in zones]
        self.column = {attribute: i for i, attribute in enumerate(_ZONE_ATTRIBUTES)}
        self.rows: list[tuple[Any, ...]] = list(map(_ROW, zones))
        self.primaries = [z.primaries.copy() for z in zones] if _PRIMARY_FAMILIES else []


@dataclass(frozen=True)
class ZoneValue:
    """One sample per zone: the zone status's *attribute*, left out where it is None (a bool
    shows as 1.0 or 0.0, as floatToGoString writes it)."""

    attribute: str
    labels: ClassVar[tuple[str, ...]] = ()

    def samples(self, z: ZoneStatus) -> Iterator[tuple[tuple[str, ...], Any]]:
        value = getattr(z, self.attribute)
        if value is not None:
            yield (), value

    def lines(self, name: str, sc: _Scrape) -> str:
        i, value = sc.column[self.attribute], sc.strings.value
        return "".join([f"{name}{{{zl}}} {value[v]}\n" for zl, row in zip(sc.labels, sc.rows, strict=True)
                        if (v := row[i]) is not None])


@dataclass(frozen=True)
class PrimaryValue:
    """One sample per primary of a zone: the primary status's *attribute*, left out where it is
    None (a bool shows as 1.0 or 0.0)."""

    attribute: str
    labels: ClassVar[tuple[str, ...]] = ("primary",)

    def samples(self, z: ZoneStatus) -> Iterator[tuple[tuple[str, ...], Any]]:
        for primary, ps in z.primaries.copy().items():
            value = getattr(ps, self.attribute)
            if value is not None:
                yield (primary,), value

    def lines(self, name: str, sc: _Scrape) -> str:
        get, value, label = attrgetter(self.attribute), sc.strings.value, sc.strings.primary
        return "".join([f"{name}{{{label[p]},{zl}}} {value[v]}\n"
                        for zl, primaries in zip(sc.labels, sc.primaries, strict=True)
                        for p, ps in primaries.items() if (v := get(ps)) is not None])


@dataclass(frozen=True)
class PrimaryCounts:
    """One sample per primary of a zone and key of the primary status's dict *attribute*."""

    attribute: str
    labels: ClassVar[tuple[str, ...]] = ("primary", "result")

    def samples(self, z: ZoneStatus) -> Iterator[tuple[tuple[str, ...], Any]]:
        for primary, ps in z.primaries.copy().items():
            for key, count in getattr(ps, self.attribute).copy().items():
                yield (primary, key), count

    def lines(self, name: str, sc: _Scrape) -> str:
        get, value = attrgetter(self.attribute), sc.strings.value
        label, result = sc.strings.primary, sc.strings.result
        return "".join([f"{name}{{{label[p]},{result[k]},{zl}}} {value[n]}\n"
                        for zl, primaries in zip(sc.labels, sc.primaries, strict=True)
                        for p, ps in primaries.items() for k, n in get(ps).copy().items()])


@dataclass(frozen=True)
class ZoneCounts:
    """One sample per key of the zone status's dict *attribute*, the key as the result label."""

    attribute: str
    labels: ClassVar[tuple[str, ...]] = ("result",)

    def samples(self, z: ZoneStatus) -> Iterator[tuple[tuple[str, ...], Any]]:
        for key, count in getattr(z, self.attribute).copy().items():
            yield (key,), count

    def lines(self, name: str, sc: _Scrape) -> str:
        i, value, result = sc.column[self.attribute], sc.strings.value, sc.strings.result
        return "".join([f"{name}{{{result[k]},{zl}}} {value[n]}\n"
                        for zl, row in zip(sc.labels, sc.rows, strict=True)
                        for k, n in row[i].copy().items()])


@dataclass(frozen=True)
class FixedCounts:
    """A sample for each of *keys* in every zone (0 where absent) from the zone status's dict
    *attribute*, keyed by tuples of label values in the order of *labels*."""

    attribute: str
    labels: tuple[str, ...]
    keys: tuple[tuple[str, ...], ...]

    def samples(self, z: ZoneStatus) -> Iterator[tuple[tuple[str, ...], Any]]:
        counts = getattr(z, self.attribute)
        for key in self.keys:
            yield key, counts.get(key, 0)

    def lines(self, name: str, sc: _Scrape) -> str:
        i, value = sc.column[self.attribute], sc.strings.value
        heads = [(name + "{" + ",".join(f'{n}="{_escape(v)}"'
                                        for n, v in sorted(zip(self.labels, key, strict=True))) + ",", key)
                 for key in self.keys]
        return "".join([f"{head}{zl}}} {value[row[i].get(key, 0)]}\n"
                        for zl, row in zip(sc.labels, sc.rows, strict=True) for head, key in heads])


Sampler = ZoneValue | PrimaryValue | PrimaryCounts | ZoneCounts | FixedCounts
GAUGE, COUNTER = "gauge", "counter"


@dataclass(frozen=True)
class ZoneFamily:
    """A per-zone family: name (a counter's without _total), type, help, and its samples."""

    name: str
    type: str
    help: str
    sampler: Sampler

    @property
    def labels(self) -> tuple[str, ...]:
        return ("zone", *self.sampler.labels)


# Every per-zone family, in the order they are exported: one line each, the only place a per-zone
# family is declared (SecondnsCollector._zones builds Metric objects from it, ZoneSeries text).
ZONE_FAMILIES: tuple[ZoneFamily, ...] = (
    ZoneFamily("secondns_zone_serial", GAUGE, "SOA serial of the zone as served.", ZoneValue("serial")),
    ZoneFamily("secondns_zone_primary_serial", GAUGE, "SOA serial the last check saw at each primary.",
               PrimaryValue("serial")),
    ZoneFamily("secondns_zone_loaded", GAUGE, "1 when the zone has data to serve.", ZoneValue("loaded")),
    ZoneFamily("secondns_zone_expired", GAUGE, "1 when the zone expired and answers SERVFAIL.",
               ZoneValue("expired")),
    ZoneFamily("secondns_zone_records", GAUGE, "Records in the served zone.", ZoneValue("records")),
    ZoneFamily("secondns_zone_last_refresh_success_timestamp_seconds", GAUGE,
               "When a primary last confirmed our serial or a transfer finished.", ZoneValue("last_success")),
    ZoneFamily("secondns_zone_last_refresh_attempt_timestamp_seconds", GAUGE,
               "When the last SOA check started.", ZoneValue("last_attempt")),
    ZoneFamily("secondns_zone_expiry_timestamp_seconds", GAUGE,
               "When the zone expires unless a check succeeds first.", ZoneValue("expire_at")),
    ZoneFamily("secondns_zone_next_refresh_timestamp_seconds", GAUGE, "When the next SOA check is due.",
               ZoneValue("next_refresh")),
    ZoneFamily("secondns_zone_refresh_seconds", GAUGE, "REFRESH interval in force (clamped SOA value).",
               ZoneValue("refresh")),
    ZoneFamily("secondns_zone_retry_seconds", GAUGE, "RETRY interval in force (clamped SOA value).",
               ZoneValue("retry")),
    ZoneFamily("secondns_zone_expire_seconds", GAUGE, "EXPIRE interval in force (clamped SOA value).",
               ZoneValue("expire")),
    ZoneFamily("secondns_zone_signature_expiry_timestamp_seconds", GAUGE,
               "Earliest RRSIG expiration in the served zone (hour-rounded down).",
               ZoneValue("signature_expiry")),
    ZoneFamily("secondns_zone_last_save_timestamp_seconds", GAUGE,
               "When the zone's copy on disk was last written successfully.", ZoneValue("last_save")),
    ZoneFamily("secondns_zone_save_failures", COUNTER,
               "Failed writes of the zone's copy on disk (disk full, ...).", ZoneValue("save_failures")),
    ZoneFamily("secondns_primary_up", GAUGE, "1 when the last SOA check reached the primary.",
               PrimaryValue("up")),
    ZoneFamily("secondns_transfers", COUNTER, "Zone transfers, by type and result.",
               FixedCounts("transfers", ("type", "result"),
                           tuple((k, r) for k in ("axfr", "ixfr") for r in ("success", "failure")))),
    ZoneFamily("secondns_transfer_bytes", COUNTER, "Bytes received in zone transfers.",
               ZoneValue("transfer_bytes")),
    ZoneFamily("secondns_soa_checks", COUNTER, "SOA checks, by primary and result.", PrimaryCounts("checks")),
    ZoneFamily("secondns_notifies", COUNTER, "NOTIFY messages received, by result.", ZoneCounts("notifies")),
)
_UNKNOWN_ZONE_FAMILY = "secondns_notifies"  # also has the zone="" sample for zones not served
# The zone attributes _Scrape reads into its rows (derived from the table: nothing to keep in step).
_ZONE_ATTRIBUTES = tuple(dict.fromkeys(f.sampler.attribute for f in ZONE_FAMILIES
                                       if isinstance(f.sampler, ZoneValue | ZoneCounts | FixedCounts)))
assert len(_ZONE_ATTRIBUTES) > 1  # attrgetter of one name gives the value, not a tuple
_ROW = attrgetter(*_ZONE_ATTRIBUTES)
_PRIMARY_FAMILIES = any(isinstance(f.sampler, PrimaryValue | PrimaryCounts) for f in ZONE_FAMILIES)

for _family in ZONE_FAMILIES:  # the lines put the zone label last: see _Scrape
    assert list(_family.sampler.labels) == sorted(_family.sampler.labels) or isinstance(
        _family.sampler, FixedCounts), _family.name
    assert all(label < "zone" for label in _family.sampler.labels), _family.name
    assert _family.type in (GAUGE, COUNTER), _family.name
    assert hasattr(PrimaryStatus() if isinstance(_family.sampler, PrimaryValue | PrimaryCounts)
                   else ZoneStatus("x.", static=False), _family.sampler.attribute), _family.name


@dataclass(frozen=True)
class ZoneSeries:
    """The per-zone families of one scrape, written as exposition text (see encode()).

    At 10,000 zones these are 240,000 samples; building a Sample object and a
    label dict, then sorting and escaping the labels, for each cost 1.6-2.6 s
    a scrape.  Here each zone's attributes are read once into a row (_Scrape),
    each family of ZONE_FAMILIES is written by one comprehension over the rows
    (family by family, as the format orders them), and every value and label
    string comes from a memo that outlives the scrape (RenderMemo): a
    timestamp, serial or label is formatted once, not once per scrape.  The
    text is byte for byte what prometheus_client renders from the same
    families (label names sorted, values through floatToGoString), in the
    Prometheus and the OpenMetrics format alike: their sample lines are the
    same for gauges and counters.  Rendered lines are not kept between
    scrapes (keeping each zone's lines until it changes saved about a third
    of a rendering but held 3.6 KiB per zone).
    """

    zones: list[ZoneStatus]
    unknown_notifies: int | None
    memo: RenderMemo | None = None

    def render(self, encoder: Callable[[Any], bytes]) -> bytes:
        escaping = getattr(encoder, "keywords", {}).get("escaping", openmetrics.UNDERSCORES)
        strings = self.memo.start() if self.memo is not None else _Strings()
        scrape = _Scrape(self.zones, strings)
        out: list[str] = []
        for family in ZONE_FAMILIES:
            counter = family.type == COUNTER
            # HELP and TYPE lines from the encoder itself, so they follow its format and escaping.
            header = (CounterMetricFamily if counter else GaugeMetricFamily)(
                family.name, family.help, labels=list(family.labels))
            out.append(_strip_eof(encoder(_Batch([header]))).decode())
            name = openmetrics.escape_metric_name(family.name + ("_total" if counter else ""), escaping)
            out.append(family.sampler.lines(name, scrape))
            if family.name == _UNKNOWN_ZONE_FAMILY and self.unknown_notifies is not None:
                # The zone label stays bounded: NOTIFYs for zones we do not serve share zone="".
                out.append(f'{name}{{result="unknown_zone",zone=""}} '
                           f"{strings.value[self.unknown_notifies]}\n")
        if self.memo is not None:
            self.memo.keep(strings)
        return "".join(out).encode()


class _Batch:
    """Metric objects handed to a prometheus_client encoder as if they were a registry."""

    def __init__(self, metrics: list[Any]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Any]:
        return iter(self.metrics)


_EOF = b"# EOF\n"


def _strip_eof(data: bytes) -> bytes:
    return data[:-len(_EOF)] if data.endswith(_EOF) else data


class SecondnsRegistry(CollectorRegistry):
    """Our registry: keeps its collectors in order so encode() can take the fast path."""

    def __init__(self) -> None:
        super().__init__(auto_describe=False)
        self.ordered: list[Collector] = []

    def register(self, collector: Collector) -> None:
        super().register(collector)
        self.ordered.append(collector)

    def unregister(self, collector: Collector) -> None:
        super().unregister(collector)
        self.ordered.remove(collector)


def encode(registry: CollectorRegistry, encoder: Callable[[Any], bytes]) -> bytes:
    """The scrape in the format of a prometheus_client encoder (from choose_encoder).

    Same bytes as ``encoder(registry)``, faster: families other than the
    per-zone ones go through the encoder, a batch at a time; the per-zone
    ones come from ZoneSeries.  OpenMetrics' closing "# EOF" is written once.
    """
    if not isinstance(registry, SecondnsRegistry):
        return encoder(registry)
    pieces: list[bytes] = []
    batch: list[Any] = []
    for collector in list(registry.ordered):
        metrics = (collector.collect_fast() if isinstance(collector, SecondnsCollector)
                   else collector.collect())
        for metric in metrics:
            if isinstance(metric, ZoneSeries):
                if batch:
                    pieces.append(_strip_eof(encoder(_Batch(batch))))
                    batch = []
                pieces.append(metric.render(encoder))
            else:
                batch.append(metric)
    pieces.append(encoder(_Batch(batch)))  # OpenMetrics: ends with "# EOF", even when empty
    return b"".join(pieces)


def build_registry(collector: SecondnsCollector) -> SecondnsRegistry:
    """A registry of our own (never the global one), with process and platform collectors."""
    registry = SecondnsRegistry()
    registry.register(collector)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry
