"""The per-zone /metrics families rendered as text (metrics.ZoneSeries) against prometheus_client.

The reference is the same collector's ``collect()``, which still builds prometheus_client Metric
objects, fed to prometheus_client's own encoders: the fast path must give the same bytes (and so
the same sample set) in every format choose_encoder can pick, stay the same after zones change
between scrapes, and pass ``promtool check metrics``.
"""

from __future__ import annotations

import random
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from peers import require_binary
from prometheus_client.exposition import choose_encoder, generate_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString
from test_httpapi import (
    NOW,
    PRIMARY,
    Harness,
    expired_zone,
    fresh_zone,
    loading_zone,
    stale_zone,
    static_zone,
)

from secondns.ops.metrics import (
    SecondnsCollector,
    SecondnsRegistry,
    ZoneSeries,
    _Batch,
    _go_string,
    build_registry,
    encode,
)
from secondns.serve.stats import ServingStats
from secondns.transfer.refresh import PrimaryStatus, ZoneStatus

ACCEPTS = ("", "text/plain; version=0.0.4",
           "application/openmetrics-text; version=1.0.0",
           "application/openmetrics-text; version=1.0.0; escaping=dots",
           "text/plain; version=1.0.0; escaping=allow-utf-8")


def varied_zones() -> list[ZoneStatus]:
    """Every shape a zone's samples take: None fields, two primaries, counters, odd label text."""
    second = fresh_zone("two.example.")
    second.primaries["[2001:db8::1]:53"] = PrimaryStatus(serial=2024061502, up=False, last_check=NOW)
    second.primaries["[2001:db8::1]:53"].checks["failure"] = 3
    second.transfers[("axfr", "success")] = 2
    second.transfers[("ixfr", "failure")] = 1
    second.transfer_bytes = 1234
    second.transfer_buckets["axfr"] = [0, 1] + [0] * 12
    second.transfer_seconds["axfr"] = 0.5
    second.notifies["accepted"] = 5
    second.signature_expiry = NOW + 86400
    second.last_save = NOW - 3
    second.save_failures = 1
    odd = fresh_zone('odd\\"name\n.example.')  # escaping of backslash, quote and newline
    return [fresh_zone(), second, stale_zone(), expired_zone(), loading_zone(), static_zone(), odd]


def registry_for(zones: list[ZoneStatus]) -> SecondnsRegistry:
    collector = SecondnsCollector(ServingStats(), lambda: zones, unknown_notifies=lambda: 4)
    return build_registry(collector)


def without_process(data: bytes) -> bytes:
    """process_* series (CPU seconds, RSS) move between two renderings; everything else may not."""
    return b"\n".join(line for line in data.split(b"\n") if b"process_" not in line)


def both(registry: SecondnsRegistry, accept: str) -> tuple[bytes, bytes]:
    encoder: Callable[[Any], bytes] = choose_encoder(accept)[0]
    return without_process(encoder(registry)), without_process(encode(registry, encoder))


@pytest.mark.parametrize("accept", ACCEPTS)
def test_fast_rendering_is_byte_for_byte_prometheus_clients(accept: str) -> None:
    reference, fast = both(registry_for(fixture_zones()), accept)
    assert fast == reference
    assert b'zone="two.example."' in fast


def test_fast_rendering_has_the_same_sample_set() -> None:
    reference, fast = both(registry_for(varied_zones()), "")

    def samples(data: bytes) -> set[tuple[str, tuple[tuple[str, str], ...], float]]:
        return {(s.name, tuple(sorted(s.labels.items())), s.value)
                for fam in text_string_to_metric_families(data.decode()) for s in fam.samples}

    assert samples(fast) == samples(reference)
    assert len(samples(fast)) > 100


def test_zone_changes_between_scrapes_show_in_the_next_rendering() -> None:
    zones = varied_zones()
    registry = registry_for(zones)
    for accept in ACCEPTS:  # fill every format's cache
        both(registry, accept)
    zones[0].serial = 2024061599
    zones[0].primaries[PRIMARY].checks["success"] += 1
    zones[1].notifies["refused"] += 1
    zones[1].transfers[("ixfr", "success")] = 7
    zones[2].expired = True
    zones[4].primaries[PRIMARY].up = False
    del zones[5]
    zones.append(fresh_zone("new.example."))
    for accept in ACCEPTS:
        reference, fast = both(registry, accept)
        assert fast == reference
    text = encode(registry, choose_encoder("")[0]).decode()
    assert 'secondns_zone_serial{zone="example.com."} 2.024061599e+09' in text
    assert "static.example." not in text
    assert 'secondns_notifies_total{result="refused",zone="two.example."} 1.0' in text


def test_fast_scrape_passes_promtool_check_metrics() -> None:
    exe = require_binary("promtool")
    reply = Harness(fixture_zones()).request("/metrics")
    assert b"secondns_zone_loaded" in reply.body
    out = subprocess.run([exe, "check", "metrics"], input=reply.body.decode(), capture_output=True,
                         text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def test_fast_openmetrics_scrape_parses_strictly() -> None:
    """promtool reads only the Prometheus format; the OpenMetrics parser is strict (one # EOF, order)."""
    reply = Harness(varied_zones()).request(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert reply.body.endswith(b"# EOF\n") and reply.body.count(b"# EOF") == 1
    families = {f.name for f in openmetrics_families(reply.body.decode())}
    assert {"secondns_zone_serial", "secondns_notifies", "process_cpu_seconds"} <= families


# --- Pinned text of the per-zone families --------------------------------------------------------
# tests/data/metrics_zone_series.txt was written by ``python3 tests/test_metrics_text.py`` from the
# code at b054c8c, before the per-zone families were declared in one table (metrics.ZONE_FAMILIES):
# a refactor of the rendering must give these bytes.  Regenerate only for a deliberate change of
# the output, and say so in the commit.
FIXTURE = Path(__file__).parent / "data" / "metrics_zone_series.txt"


def fixture_zones() -> list[ZoneStatus]:
    """varied_zones() and more: no primaries, None serial with an up primary, odd primary and
    result labels, large, fractional and infinite values, every transfer kind, empty notifies."""
    zones = varied_zones()
    bare = ZoneStatus("bare.example.", static=False, serial=None, records=0, loaded=True)
    bare.notifies = {}
    big = fresh_zone("big.example.")
    big.serial = 4294967295
    big.records = 123456
    big.transfer_bytes = 10**12
    big.last_success = NOW + 0.123456789
    big.last_attempt = NOW + 0.5
    big.refresh = 300  # an int where a float is usual: both print as 300.0
    big.retry = 1e-05
    big.expire = 1e22
    big.last_save = float("inf")
    big.signature_expiry = NOW + 1
    big.save_failures = 12
    for key in (("axfr", "success"), ("axfr", "failure"), ("ixfr", "success"), ("ixfr", "failure")):
        big.transfers[key] = len(key[0]) * 10 + len(key[1])
    big.transfers[("axfr", "refused")] = 99  # not one of the four: never exported
    big.transfer_buckets["ixfr"] = [1] * 14
    big.transfer_seconds["ixfr"] = 2.25
    big.notifies["refused"] = 2
    big.notifies['odd"result\\'] = 1
    odd = 'odd"primary\\\n:53'
    big.primaries[odd] = PrimaryStatus(serial=None, up=True, last_check=NOW)
    big.primaries[odd].checks = {"success": 0, "failure": 7, 'strange"result': 1}
    big.primaries["[2001:db8::2]:53"] = PrimaryStatus(serial=17, up=None)
    big.primaries["[2001:db8::2]:53"].checks = {}
    idn = loading_zone("bücher.example.")
    idn.primaries[PRIMARY].up = False
    idn.primaries[PRIMARY].checks["failure"] = 1
    return [*zones, bare, big, idn]


def fixture_text() -> str:
    """The per-zone families (ZoneSeries) in every ACCEPTS format, with and without the
    unknown-zone NOTIFY sample, then the summed families of ``per-zone: false``."""
    zones = fixture_zones()
    out: list[str] = []
    for accept in ACCEPTS:
        encoder = choose_encoder(accept)[0]
        for unknown in (4, None):
            out.append(f"### accept={accept!r} unknown_notifies={unknown}\n")
            out.append(ZoneSeries(zones, unknown).render(encoder).decode())
    collector = SecondnsCollector(ServingStats(), lambda: zones, unknown_notifies=lambda: 4,
                                  per_zone=False)
    out.append("### per-zone: false\n")
    out.append(generate_latest(_Batch(list(collector._zones(zones)))).decode())
    return "".join(out)


def test_zone_series_text_is_the_pinned_fixture() -> None:
    expected = FIXTURE.read_text(encoding="utf-8")
    assert 'primary="odd\\"primary\\\\\\n:53"' in expected  # the fixture covers label escaping
    assert fixture_text() == expected


def test_reference_rendering_matches_the_pinned_fixture_too() -> None:
    """collect() (Metric objects through prometheus_client) gives the fixture's text as well."""
    zones = fixture_zones()
    collector = SecondnsCollector(ServingStats(), lambda: zones, unknown_notifies=lambda: 4)
    expected = FIXTURE.read_text(encoding="utf-8")
    section = expected.split("### ")[1].split("\n", 1)[1]  # text format, with unknown NOTIFYs
    families = [m for m in collector.collect() if m.name.startswith(("secondns_zone_", "secondns_primary_",
                                                                     "secondns_transfers",
                                                                     "secondns_transfer_bytes",
                                                                     "secondns_soa_checks",
                                                                     "secondns_notifies"))]
    assert generate_latest(_Batch(families)).decode() == section


if __name__ == "__main__":
    FIXTURE.write_text(fixture_text(), encoding="utf-8")


def test_go_string_shortcut_is_float_to_go_string() -> None:
    """metrics._go_string writes values in [1e9, 1e10) itself: it must agree with prometheus_client."""
    rnd = random.Random(3)
    values: list[Any] = [rnd.random() * 10**e for e in range(-8, 25) for _ in range(200)]
    values += [1.7e9 + rnd.random() * 1000 for _ in range(3000)]
    values += [rnd.randrange(10**9, 10**10) for _ in range(1000)]
    values += [float(rnd.randrange(10**9, 10**10)) for _ in range(1000)]
    values += [1e9, 1e10, 999999999.9999999, 9999999999.999998, 1000000000.0000001, 1718445600,
               2024061501, 4294967295, 0, 1, 12, 300.0, -1.5, True, False, float("inf"), float("-inf")]
    for value in values:
        assert _go_string(value) == floatToGoString(value), value
    assert _go_string(float("nan")) == "NaN"


def test_render_memo_keeps_only_what_the_last_scrape_used() -> None:
    """The memo outlives a scrape but not the zones: a zone gone takes its label string with it,
    and a value that changed is formatted anew (the old string is not shown, nor kept)."""
    zones = fixture_zones()
    collector = SecondnsCollector(ServingStats(), lambda: zones, unknown_notifies=lambda: 4)
    registry = build_registry(collector)
    encoder = choose_encoder("")[0]
    encode(registry, encoder)
    last = collector.memo.last
    assert last is not None and "static.example." in last.zone
    assert 3590 + NOW in last.value
    zones[:] = [z for z in zones if z.name != "static.example."]
    zones[0].expire_at = NOW + 7200.25
    text = encode(registry, encoder).decode()
    last = collector.memo.last
    assert last is not None and "static.example." not in last.zone
    assert 'secondns_zone_expiry_timestamp_seconds{zone="example.com."} 1.71845280025e+09' in text
    assert NOW + 7200.25 in last.value
    assert len(last.zone) == len(zones)
    assert not last.value.previous and not last.zone.previous  # no chain of earlier scrapes' memos
    reference, fast = both(registry, "")
    assert fast == reference
