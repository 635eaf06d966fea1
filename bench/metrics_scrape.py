"""CPU of rendering ``/metrics`` for N live-shaped zones, first scrape and steady.

The zones are bench/restart_read.py's (one primary, checks, a transfer, per-zone series on), with
each zone's check, expiry and save times apart as on a live node (``--same-times`` keeps
restart_read's shared ones), and the cyclic collector set as ``secondns serve`` sets it (zones
frozen, threshold 50,000).
"first" is the first rendering of a fresh registry (what the first scrape after a start pays),
best of --repeat fresh registries ("very_first": the process's first rendering of all);
"steady" is a rendering after a fraction of the zones changed since the previous one (a zone's
check counters, its last attempt and next refresh move, as a 60 s scrape interval sees at 20 SOA
checks a second); "unchanged" renders again with nothing changed.  Best of --repeat for the
latter two.  In process, no sockets: run under ``flock /tmp/bench.lock``.

    python bench/metrics_scrape.py --zones 10000 [--profile FILE]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from prometheus_client.exposition import choose_encoder
from restart_read import live_zones

from secondns.ops.metrics import SecondnsCollector, build_registry, encode
from secondns.serve.stats import ServingStats


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zones", type=int, default=10000)
    ap.add_argument("--changed", type=int, default=1200, help="zones changed between scrapes")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--accept", default="", help="the Accept header the scraper sends")
    ap.add_argument("--same-times", action="store_true", help="restart_read's shared timestamps")
    ap.add_argument("--profile", type=Path, help="write a cProfile of the first rendering here")
    args = ap.parse_args()
    zones = live_zones(args.zones)
    if not args.same_times:
        rnd = random.Random(2)
        for z in zones:
            for attribute in ("last_attempt", "next_refresh", "expire_at", "last_save"):
                setattr(z, attribute, getattr(z, attribute) + rnd.random() * 100)
    gc.collect()
    gc.freeze()  # as cli._cmd_serve does once the zones are loaded
    gc.set_threshold(50_000, 20, 100)
    def fresh() -> Any:
        return build_registry(SecondnsCollector(ServingStats(), lambda: zones, per_zone=True))

    encoder = choose_encoder(args.accept)[0]
    load = os.getloadavg()[0]
    profiler = cProfile.Profile() if args.profile else None
    first = first_once = float("inf")
    for attempt in range(args.repeat):  # each a fresh registry: nothing kept from a scrape before
        registry = fresh()
        t = time.process_time()
        if profiler is not None and attempt == 0:
            profiler.enable()
        body = encode(registry, encoder)
        if profiler is not None and attempt == 0:
            profiler.disable()
            profiler.dump_stats(str(args.profile))
        elapsed = time.process_time() - t
        first_once = elapsed if attempt == 0 else first_once
        first = min(first, elapsed)
    steady = unchanged = float("inf")
    offset = 0
    for _ in range(args.repeat):
        for i in range(args.changed):
            z = zones[(offset + i) % len(zones)]
            z.last_attempt = (z.last_attempt or 0.0) + 60.0
            z.next_refresh = (z.next_refresh or 0.0) + 60.0
            z.primaries["127.0.0.1#5301"].checks["success"] += 1
        offset += args.changed
        t = time.process_time()
        body = encode(registry, encoder)
        steady = min(steady, time.process_time() - t)
        t = time.process_time()
        again = encode(registry, encoder)
        unchanged = min(unchanged, time.process_time() - t)
        assert again.count(b"\n") == body.count(b"\n")
    print(json.dumps({"zones": args.zones, "first_cpu_seconds": round(first, 3),
                      "very_first_cpu_seconds": round(first_once, 3),
                      "steady_cpu_seconds": round(steady, 3), "unchanged_cpu_seconds": round(unchanged, 3),
                      "bytes": len(body), "lines": body.count(b"\n"), "loadavg_start": load,
                      "loadavg_end": os.getloadavg()[0]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
