"""The per-zone /metrics families rendered as text (metrics.ZoneSeries) against prometheus_client.

The reference is the same collector's ``collect()``, which still builds prometheus_client Metric
objects, fed to prometheus_client's own encoders: the fast path must give the same bytes (and so
the same sample set) in every format choose_encoder can pick, stay the same after zones change
between scrapes, and pass ``promtool check metrics``.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from typing import Any

import pytest
from peers import require_binary
from prometheus_client.exposition import choose_encoder
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families
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

from secondns.ops.metrics import SecondnsCollector, SecondnsRegistry, build_registry, encode
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
    reference, fast = both(registry_for(varied_zones()), accept)
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
    reply = Harness(varied_zones()).request("/metrics")
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
