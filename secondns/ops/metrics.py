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
from typing import Any

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
from secondns.transfer.refresh import STATES, TRANSFER_BUCKETS, ZoneStatus

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
            yield ZoneSeries(zones, self.unknown_notifies() if self.unknown_notifies is not None else None)
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
        if not self.per_zone:
            yield from self._zone_totals(zones)
            return

        def gauge(name: str, doc: str, labels: tuple[str, ...] = ("zone",)) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=list(labels))

        serial = gauge("secondns_zone_serial", "SOA serial of the zone as served.")
        primary_serial = gauge("secondns_zone_primary_serial",
                               "SOA serial the last check saw at each primary.", ("zone", "primary"))
        loaded = gauge("secondns_zone_loaded", "1 when the zone has data to serve.")
        expired = gauge("secondns_zone_expired", "1 when the zone expired and answers SERVFAIL.")
        records = gauge("secondns_zone_records", "Records in the served zone.")
        success = gauge("secondns_zone_last_refresh_success_timestamp_seconds",
                        "When a primary last confirmed our serial or a transfer finished.")
        attempt = gauge("secondns_zone_last_refresh_attempt_timestamp_seconds",
                        "When the last SOA check started.")
        expiry = gauge("secondns_zone_expiry_timestamp_seconds",
                       "When the zone expires unless a check succeeds first.")
        nxt = gauge("secondns_zone_next_refresh_timestamp_seconds", "When the next SOA check is due.")
        refresh = gauge("secondns_zone_refresh_seconds", "REFRESH interval in force (clamped SOA value).")
        retry = gauge("secondns_zone_retry_seconds", "RETRY interval in force (clamped SOA value).")
        expire = gauge("secondns_zone_expire_seconds", "EXPIRE interval in force (clamped SOA value).")
        sig_expiry = gauge("secondns_zone_signature_expiry_timestamp_seconds",
                           "Earliest RRSIG expiration in the served zone (hour-rounded down).")
        saved = gauge("secondns_zone_last_save_timestamp_seconds",
                      "When the zone's copy on disk was last written successfully.")
        save_failures = CounterMetricFamily("secondns_zone_save_failures",
                                            "Failed writes of the zone's copy on disk (disk full, ...).",
                                            labels=["zone"])
        up = gauge("secondns_primary_up", "1 when the last SOA check reached the primary.",
                   ("zone", "primary"))
        transfers = CounterMetricFamily("secondns_transfers", "Zone transfers, by type and result.",
                                        labels=["zone", "type", "result"])
        tbytes = CounterMetricFamily("secondns_transfer_bytes", "Bytes received in zone transfers.",
                                     labels=["zone"])
        checks = CounterMetricFamily("secondns_soa_checks", "SOA checks, by primary and result.",
                                     labels=["zone", "primary", "result"])
        notifies = CounterMetricFamily("secondns_notifies", "NOTIFY messages received, by result.",
                                       labels=["zone", "result"])
        for z in zones:
            name = z.name
            loaded.add_metric([name], 1.0 if z.loaded else 0.0)
            expired.add_metric([name], 1.0 if z.expired else 0.0)
            records.add_metric([name], z.records)
            if z.serial is not None:
                serial.add_metric([name], z.serial)
            for value, fam in ((z.last_success, success), (z.last_attempt, attempt),
                               (z.expire_at, expiry), (z.next_refresh, nxt), (z.refresh, refresh),
                               (z.retry, retry), (z.expire, expire), (z.signature_expiry, sig_expiry),
                               (z.last_save, saved)):
                if value is not None:
                    fam.add_metric([name], value)
            for primary, ps in list(z.primaries.items()):
                if ps.serial is not None:
                    primary_serial.add_metric([name, primary], ps.serial)
                if ps.up is not None:
                    up.add_metric([name, primary], 1.0 if ps.up else 0.0)
                for result, count in list(ps.checks.items()):
                    checks.add_metric([name, primary, result], count)
            for kind in ("axfr", "ixfr"):
                for result in ("success", "failure"):
                    transfers.add_metric([name, kind, result], z.transfers.get((kind, result), 0))
            tbytes.add_metric([name], z.transfer_bytes)
            save_failures.add_metric([name], z.save_failures)
            for result, count in list(z.notifies.items()):
                notifies.add_metric([name, result], count)
        if self.unknown_notifies is not None:
            # The zone label stays bounded: NOTIFYs for zones we do not serve share zone="".
            notifies.add_metric(["", "unknown_zone"], self.unknown_notifies())
        yield from (serial, primary_serial, loaded, expired, records, success, attempt, expiry, nxt,
                    refresh, retry, expire, sig_expiry, saved, save_failures, up,
                    transfers, tbytes, checks, notifies, _transfer_durations(zones))


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
    """Transfer durations summed over zones (a zone label would multiply 14 buckets by zones)."""
    by_kind: dict[str, tuple[list[int], float]] = {}
    for z in zones:
        for kind, buckets in list(z.transfer_buckets.items()):
            acc, total = by_kind.get(kind, ([0] * len(buckets), 0.0))
            by_kind[kind] = ([a + b for a, b in zip(acc, list(buckets), strict=True)],
                             total + z.transfer_seconds.get(kind, 0.0))
    durations = HistogramMetricFamily("secondns_transfer_duration_seconds",
                                      "Duration of zone transfers.", labels=["type"])
    for kind in ("axfr", "ixfr"):
        buckets, total = by_kind.get(kind, ([0] * (len(TRANSFER_BUCKETS) + 1), 0.0))
        durations.add_metric([kind], _bucket_pairs(TRANSFER_BUCKETS, buckets), total)
    return durations


def _label(value: str) -> str:
    # Label values escaped as prometheus_client does in both formats (backslash, newline, quote).
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r'\"')


# The per-zone families in the order SecondnsCollector._zones yields them: (name, type, help,
# label names).  Kept in step with _zones, which stays the reference (tests compare the two).
_ZONE_FAMILIES: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("secondns_zone_serial", "gauge", "SOA serial of the zone as served.", ("zone",)),
    ("secondns_zone_primary_serial", "gauge", "SOA serial the last check saw at each primary.",
     ("zone", "primary")),
    ("secondns_zone_loaded", "gauge", "1 when the zone has data to serve.", ("zone",)),
    ("secondns_zone_expired", "gauge", "1 when the zone expired and answers SERVFAIL.", ("zone",)),
    ("secondns_zone_records", "gauge", "Records in the served zone.", ("zone",)),
    ("secondns_zone_last_refresh_success_timestamp_seconds", "gauge",
     "When a primary last confirmed our serial or a transfer finished.", ("zone",)),
    ("secondns_zone_last_refresh_attempt_timestamp_seconds", "gauge",
     "When the last SOA check started.", ("zone",)),
    ("secondns_zone_expiry_timestamp_seconds", "gauge",
     "When the zone expires unless a check succeeds first.", ("zone",)),
    ("secondns_zone_next_refresh_timestamp_seconds", "gauge", "When the next SOA check is due.", ("zone",)),
    ("secondns_zone_refresh_seconds", "gauge", "REFRESH interval in force (clamped SOA value).", ("zone",)),
    ("secondns_zone_retry_seconds", "gauge", "RETRY interval in force (clamped SOA value).", ("zone",)),
    ("secondns_zone_expire_seconds", "gauge", "EXPIRE interval in force (clamped SOA value).", ("zone",)),
    ("secondns_zone_signature_expiry_timestamp_seconds", "gauge",
     "Earliest RRSIG expiration in the served zone (hour-rounded down).", ("zone",)),
    ("secondns_zone_last_save_timestamp_seconds", "gauge",
     "When the zone's copy on disk was last written successfully.", ("zone",)),
    ("secondns_zone_save_failures", "counter",
     "Failed writes of the zone's copy on disk (disk full, ...).", ("zone",)),
    ("secondns_primary_up", "gauge", "1 when the last SOA check reached the primary.", ("zone", "primary")),
    ("secondns_transfers", "counter", "Zone transfers, by type and result.", ("zone", "type", "result")),
    ("secondns_transfer_bytes", "counter", "Bytes received in zone transfers.", ("zone",)),
    ("secondns_soa_checks", "counter", "SOA checks, by primary and result.", ("zone", "primary", "result")),
    ("secondns_notifies", "counter", "NOTIFY messages received, by result.", ("zone", "result")),
)
_NOTIFIES = len(_ZONE_FAMILIES) - 1


@dataclass(frozen=True)
class ZoneSeries:
    """The per-zone families of one scrape, written as exposition text (see encode()).

    At 10,000 zones these are 240,000 samples; building a Sample object and a
    label dict, then sorting and escaping the labels, for each cost 1.6-2.6 s
    a scrape.  Here each zone's label is escaped once and its values read
    once, then each family is written by one comprehension over the zones
    (family by family, as the format orders them), and a value shown by
    many zones (0, 1, a common serial or interval) is formatted once per
    scrape: floatToGoString was ~40% of a rendering done zone by zone.  The
    text is byte for byte what prometheus_client renders from the same
    families (label names sorted, values through floatToGoString), in the
    Prometheus and the OpenMetrics format alike: their sample lines are the
    same for gauges and counters.  Nothing is kept between scrapes (keeping
    each zone's lines until it changes saved about a third of a rendering
    but held 3.6 KiB per zone).
    """

    zones: list[ZoneStatus]
    unknown_notifies: int | None

    def render(self, encoder: Callable[[Any], bytes]) -> bytes:
        escaping = getattr(encoder, "keywords", {}).get("escaping", openmetrics.UNDERSCORES)
        families = [(CounterMetricFamily if mtype == "counter" else GaugeMetricFamily)(
            name, doc, labels=list(labels)) for name, mtype, doc, labels in _ZONE_FAMILIES]
        # HELP and TYPE lines from the encoder itself, so they follow its format and escaping.
        headers = [_strip_eof(encoder(_Batch([f]))).decode() for f in families]
        names = [openmetrics.escape_metric_name(n + ("_total" if t == "counter" else ""), escaping)
                 for n, t, _, _ in _ZONE_FAMILIES]
        rows = [(f'zone="{_label(z.name)}"', _zone_values(z)) for z in self.zones]
        text = _GoStrings()
        out: list[str] = []
        for index, header in enumerate(headers):
            out.append(header)
            out.append(_family_lines(index, names[index], rows, text))
        if self.unknown_notifies is not None:
            # The zone label stays bounded: NOTIFYs for zones we do not serve share zone="".
            out.append(f'{names[_NOTIFIES]}{{result="unknown_zone",zone=""}} '
                       f"{text[self.unknown_notifies]}\n")
        return "".join(out).encode()


class _GoStrings(dict[Any, str]):
    """floatToGoString, remembered for one scrape: 1 and 1.0 (equal keys) print alike anyway."""

    def __missing__(self, value: Any) -> str:
        text = floatToGoString(value)
        self[value] = text
        return text


def _zone_values(z: ZoneStatus) -> tuple[Any, ...]:
    """Every value a zone's lines show, read once (the reactor may change them meanwhile).

    Indexes as _SIMPLE gives them for the one-sample families; 14 primaries, 15 transfers,
    17 notifies.
    """
    return (z.serial, 1.0 if z.loaded else 0.0, 1.0 if z.expired else 0.0, z.records,
            z.last_success, z.last_attempt, z.expire_at,
            z.next_refresh, z.refresh, z.retry, z.expire, z.signature_expiry, z.last_save,
            z.save_failures,
            [(p, ps.serial, ps.up, list(ps.checks.items())) for p, ps in list(z.primaries.items())],
            _transfer_counts(z.transfers), z.transfer_bytes, list(z.notifies.items()))


def _transfer_counts(transfers: dict[tuple[str, str], int]) -> tuple[int, int, int, int]:
    """AXFR success, failure, IXFR success, failure: the order of _TRANSFER_LABELS."""
    get = transfers.get
    return (get(_AXFR_OK, 0), get(_AXFR_FAILED, 0), get(_IXFR_OK, 0), get(_IXFR_FAILED, 0))


_AXFR_OK, _AXFR_FAILED = ("axfr", "success"), ("axfr", "failure")
_IXFR_OK, _IXFR_FAILED = ("ixfr", "success"), ("ixfr", "failure")


# Family index in _ZONE_FAMILIES -> index of its value in _zone_values, for the families with
# one sample per zone (absent where the value is None).
_SIMPLE = {0: 0, 2: 1, 3: 2, 4: 3, 5: 4, 6: 5, 7: 6, 8: 7, 9: 8, 10: 9, 11: 10, 12: 11, 13: 12,
           14: 13, 17: 16}
_TRANSFER_LABELS = tuple(f'result="{result}",type="{kind}",' for kind in ("axfr", "ixfr")
                         for result in ("success", "failure"))


def _family_lines(index: int, name: str, rows: list[tuple[str, tuple[Any, ...]]],
                  text: _GoStrings) -> str:
    """All zones' samples of family *index* of _ZONE_FAMILIES, in zone order."""
    simple = _SIMPLE.get(index)
    if simple is not None:
        return "".join([f"{name}{{{zl}}} {text[v[simple]]}\n" for zl, v in rows
                        if v[simple] is not None])
    if index == 1:  # primary serial
        return "".join([f'{name}{{primary="{_label(p)}",{zl}}} {text[serial]}\n'
                        for zl, v in rows for p, serial, _, _ in v[14] if serial is not None])
    if index == 15:  # primary up
        return "".join([f'{name}{{primary="{_label(p)}",{zl}}} {"1.0" if up else "0.0"}\n'
                        for zl, v in rows for p, _, up, _ in v[14] if up is not None])
    if index == 18:  # SOA checks
        return "".join([f'{name}{{primary="{_label(p)}",result="{_label(result)}",{zl}}} {text[count]}\n'
                        for zl, v in rows for p, _, _, checks in v[14] for result, count in checks])
    if index == 16:  # transfers: always four a zone, written in one string
        a, b, c, d = (f"{name}{{{labels}" for labels in _TRANSFER_LABELS)
        return "".join([f"{a}{zl}}} {text[v[15][0]]}\n{b}{zl}}} {text[v[15][1]]}\n"
                        f"{c}{zl}}} {text[v[15][2]]}\n{d}{zl}}} {text[v[15][3]]}\n" for zl, v in rows])
    assert index == _NOTIFIES
    return "".join([f'{name}{{result="{_label(result)}",{zl}}} {text[count]}\n'
                    for zl, v in rows for result, count in v[17]])


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
