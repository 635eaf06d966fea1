"""In-process CPU of what a restart with N zones does before it serves, and of one scrape.

Writes N small zones' copies once with ``storage.save_zone`` (copy, snapshot, sidecar, as the
server leaves them) and a configuration naming them, then measures the CPU seconds of parsing
that configuration, of reading every copy the way start-up does (one directory listing, then
``app._read_copy_safely`` per zone, the cyclic collector set as ``secondns serve`` sets it),
the files opened per zone, and of rendering ``/metrics`` for N live-shaped zone statuses
(per-zone series on, best of 3).  No sockets, no peer: a before/after check for one machine,
run under ``flock /tmp/bench.lock``; bench/scale.py gives the figures against BIND.

    python bench/restart_read.py --zones 10000 --workdir /tmp/restart-read
"""

from __future__ import annotations

import argparse
import builtins
import gc
import io
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prometheus_client.exposition import choose_encoder

from secondns import app as appmod
from secondns.config import load_config
from secondns.names import from_text
from secondns.ops.metrics import SecondnsCollector, build_registry, encode
from secondns.serve.stats import ServingStats
from secondns.store import storage
from secondns.store.storage import CopyMeta
from secondns.store.zonefile import load_zone_text
from secondns.transfer.refresh import PrimaryStatus, ZoneStatus


def setup(workdir: Path, n: int) -> Path:
    """The configuration and copies for *n* zones (kept: a second run reuses them)."""
    config = workdir / f"z{n}.yaml"
    if config.exists():
        return config
    directory = workdir / f"z{n}"
    directory.mkdir(parents=True)
    lines = [f"server: {{storage: {directory}, http: null, workers: 1, listen: ['127.0.0.1:5399']}}",
             "zones:"]
    now = time.time()
    for i in range(n):
        name = f"zone{i:05d}.example."
        lines.append(f"  {name}: {{primaries: ['127.0.0.1:5301']}}")
        zone = load_zone_text("$TTL 300\n@ IN SOA ns1 host 2026120301 100 20 1000 60\n  IN NS ns1\n"
                              "ns1 IN A 192.0.2.1\nwww IN A 192.0.2.2\n", from_text(name))
        storage.save_zone(directory, name, zone, CopyMeta(zone.serial, now, None, None, now))
    config.write_text("\n".join(lines) + "\n")
    return config


def restart(config_path: Path) -> dict[str, Any]:
    t = time.process_time()
    config = load_config(config_path)
    parsed = time.process_time() - t
    gc.collect()
    gc.freeze()  # as _cmd_serve does once started
    gc.set_threshold(50_000, 20, 100)
    opened = [0]
    real_open = io.open

    def counting(file: Any, *a: Any, **k: Any) -> Any:
        opened[0] += 1
        return real_open(file, *a, **k)

    directory = config.server.storage
    t = time.process_time()
    listing = storage.Leftovers.scan(directory)
    loaded = [appmod._read_copy_safely(directory, zc, listing) for zc in config.zones.values()]
    read = time.process_time() - t
    assert all(isinstance(x, tuple) for x in loaded)
    io.open = builtins.open = counting  # type: ignore[assignment]
    try:
        listing = storage.Leftovers.scan(directory)
        for zc in config.zones.values():
            appmod._read_copy_safely(directory, zc, listing)
    finally:
        io.open = builtins.open = real_open
    gc.unfreeze()
    return {"config_cpu_seconds": round(parsed, 3), "read_cpu_seconds": round(read, 3),
            "opens_per_zone": round(opened[0] / len(loaded), 2)}


def live_zones(n: int) -> list[ZoneStatus]:
    """*n* statuses shaped as a live node's: one primary, SOA checks, one AXFR, a saved copy."""
    rnd = random.Random(1)
    now = time.time()
    zones = []
    for i in range(n):
        z = ZoneStatus(name=f"zone{i:05d}.example.", static=False, serial=2026120301, records=4,
                       loaded=True, last_success=now - rnd.random() * 100, last_attempt=now,
                       next_refresh=now + 100, expire_at=now + 1000, refresh=100.0, retry=20.0,
                       expire=1000.0, last_save=now)
        z.primaries["127.0.0.1#5301"] = PrimaryStatus(serial=2026120301, up=True, last_check=now,
                                                       checks={"success": 3, "failure": 1})
        z.transfers[("axfr", "success")] = 1
        z.transfer_bytes = 300
        z.transfer_buckets["axfr"] = [0] * 13 + [1]
        z.transfer_seconds["axfr"] = 0.01
        zones.append(z)
    return zones


def scrape(n: int) -> dict[str, Any]:
    zones = live_zones(n)
    registry = build_registry(SecondnsCollector(ServingStats(), lambda: zones, per_zone=True))
    encoder = choose_encoder("")[0]
    best = float("inf")
    for _ in range(3):
        t = time.process_time()
        body = encode(registry, encoder)
        best = min(best, time.process_time() - t)
    return {"scrape_cpu_seconds": round(best, 3), "bytes": len(body), "lines": body.count(b"\n")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zones", type=int, default=2000)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/restart-read"))
    args = ap.parse_args()
    results: dict[str, Any] = {"zones": args.zones, "loadavg_start": os.getloadavg()[0]}
    results.update(restart(setup(args.workdir, args.zones)))
    results.update(scrape(args.zones))
    results["loadavg_end"] = os.getloadavg()[0]
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
