"""In-process cost of one UDP answer-cache miss, over the serving benchmark's zone and questions.

The zone of ``serve_qps.py`` (``genzone.py``, 100k records by default) is built, written as
a zone image and mapped as a worker maps it; every question of the dnsperf query file is then
sent through ``UDPServer.datagramReceived`` with an empty answer cache (each pass starts
from a cleared cache, so every distinct question misses once and repeats hit).  No sockets:
``sendto`` is a no-op.  The figure is the Python work of a miss: parse, ``answer_query``,
render, store.

    PYTHONPATH=. python bench/cache_miss.py [--records 100000] [--repeat 3] [--profile FILE]
"""

from __future__ import annotations

import argparse
import cProfile
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import dns.message  # noqa: E402
import genzone  # noqa: E402

from secondns.names import from_text  # noqa: E402
from secondns.registry import Registry  # noqa: E402
from secondns.serve.image import open_image, write_image  # noqa: E402
from secondns.serve.responder import Responder, ServeSettings  # noqa: E402
from secondns.serve.server import UDPServer  # noqa: E402
from secondns.serve.stats import ServingStats  # noqa: E402
from secondns.store.zonefile import load_zone_text  # noqa: E402

ORIGIN = "bench.test."


def build(records: int, directory: Path) -> tuple[Any, list[bytes]]:
    gen = genzone.generate(ORIGIN, records)
    zone = load_zone_text(gen.text, from_text(ORIGIN))
    path = directory / "bench.img"
    write_image(path, zone)
    mapped = open_image(path)
    wires = []
    for line in genzone.queries(gen, ORIGIN):
        name, qtype = line.split()
        wires.append(dns.message.make_query(name, qtype, use_edns=0, payload=1232).to_wire())
    return mapped, wires


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", help="write a cProfile of one pass to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        zone, wires = build(args.records, Path(tmp))
        registry = Registry()
        registry.add(zone.origin)
        registry.swap(zone.origin, zone)
        responder = Responder(registry, ServeSettings(cache_bytes=512 << 20), ServingStats())
        server = UDPServer(responder)
        server._sendto = lambda data, addr: None
        addr: Any = ("127.0.0.1", 5300)
        distinct = len(set(w[2:] for w in wires))

        def one_pass() -> float:
            responder.caches[0].clear()
            started = time.perf_counter()
            for wire in wires:
                server.datagramReceived(wire, addr)
            return time.perf_counter() - started

        def hits() -> float:
            started = time.perf_counter()
            for wire in wires:
                server.datagramReceived(wire, addr)
            return time.perf_counter() - started
        best_miss = min(one_pass() for _ in range(args.repeat))
        best_hit = min(hits() for _ in range(args.repeat))
        n = len(wires)
        miss_us = (best_miss - best_hit * (n - distinct) / n) / distinct * 1e6
        print(f"{n} queries, {distinct} distinct; all hits {best_hit / n * 1e6:.2f} us/q; "
              f"cold pass {best_miss / n * 1e6:.2f} us/q; one miss ~{miss_us:.2f} us")
        if args.profile:
            responder.caches[0].clear()
            prof = cProfile.Profile()
            prof.enable()
            for wire in wires:
                server.datagramReceived(wire, addr)
            prof.disable()
            prof.dump_stats(args.profile)


if __name__ == "__main__":
    main()
