"""In-process cost of one UDP answer-cache hit: ``UDPServer.datagramReceived`` under timeit.

No sockets: the protocol's ``sendto`` is replaced by a no-op, so the figure is the Python
work per hit (key, probe, patch), with and without a DNS cookie (RFC 7873) in the query.

    PYTHONPATH=. python bench/cache_hit.py [--number 200000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import sys
import timeit
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))

import dns.edns  # noqa: E402
import dns.message  # noqa: E402
from zonetools import responder_for, zone_from_text  # noqa: E402

from secondns.serve.responder import ServeSettings  # noqa: E402
from secondns.serve.server import UDPServer  # noqa: E402

ZONE = "$TTL 300\n@ SOA ns1 host 1 3600 600 86400 300\n@ NS ns1\nns1 A 192.0.2.1\nwww A 192.0.2.2\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--number", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    responder = responder_for(zone_from_text(ZONE, "example.com."),
                              settings=ServeSettings(cookie_secrets=(bytes(range(16)),)))
    server = UDPServer(responder)
    server._sendto = lambda data, addr: None
    addr: Any = ("127.0.0.1", 5300)
    cases = {
        "plain (no EDNS)": dns.message.make_query("www.example.com.", "A", use_edns=False),
        "EDNS 1232": dns.message.make_query("www.example.com.", "A", use_edns=0, payload=1232),
        "EDNS + client cookie": dns.message.make_query(
            "www.example.com.", "A", use_edns=0, payload=1232,
            options=[dns.edns.GenericOption(dns.edns.COOKIE, bytes(range(1, 9)))]),
    }
    for label, query in cases.items():
        wire = query.to_wire()
        server.datagramReceived(wire, addr)  # miss: fills the cache
        server.datagramReceived(wire, addr)  # promoted to protected
        before = responder.stats.udp_queries
        best = min(timeit.repeat(lambda: server.datagramReceived(wire, addr),  # noqa: B023
                                 number=args.number, repeat=args.repeat))
        assert responder.stats.udp_queries - before == args.number * args.repeat
        print(f"{label:24} {best / args.number * 1e6:6.2f} us per query")
    # Many distinct questions in turn (as dnsperf cycling a 100k query file): every query a
    # cache hit, but each repeat comes too late for the listener's exact-request memo.
    wires = [dns.message.make_query(f"n{i}.example.com.", "A", use_edns=0, payload=1232).to_wire()
             for i in range(50_000)]
    for wire in wires * 2:
        server.datagramReceived(wire, addr)

    def cycle() -> None:
        for wire in wires:
            server.datagramReceived(wire, addr)
    best = min(timeit.repeat(cycle, number=max(1, args.number // len(wires)), repeat=args.repeat))
    per = best / (max(1, args.number // len(wires)) * len(wires))
    print(f"{'50k names in turn':24} {per * 1e6:6.2f} us per query")


if __name__ == "__main__":
    main()
