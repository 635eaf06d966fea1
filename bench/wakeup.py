"""In-process cost of one lone datagram: a reactor turn that reads, answers and sends one query.

A client socket sends one SOA query, the reactor runs one main-loop turn (``runUntilCurrent``,
``timeout``, ``doIteration``: epoll, dispatch, ``UDPServer._read``, the cache hit, ``sendto``),
the client reads the answer; repeated in lockstep, so every turn finds exactly one datagram, as
at low and moderate query rates.  The figure is process CPU time per query (both ends' Python
and system calls, the same client work for any tree), far steadier on a shared machine than
the end-to-end ``serve_qps.py --soa-only`` figure, which is dominated by the kernel waking a
sleeping process.  Runs whatever tree ``PYTHONPATH`` names (with or without serve/reactor.py):

    PYTHONPATH=. python bench/wakeup.py [--number 20000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import dns.message  # noqa: E402
from zonetools import responder_for, zone_from_text  # noqa: E402

from secondns.serve.server import UDPServer  # noqa: E402

ZONE = "$TTL 300\n@ SOA ns1 host 1 3600 600 86400 300\n@ NS ns1\nns1 A 192.0.2.1\n"


def make_reactor() -> tuple[Any, str]:
    try:
        from secondns.serve.reactor import DirectReadReactor
    except ImportError:
        from twisted.internet.epollreactor import EPollReactor

        return EPollReactor(), "EPollReactor"  # type: ignore[no-untyped-call]
    return DirectReadReactor(), "DirectReadReactor"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--number", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    reactor, kind = make_reactor()
    reactor.callLater(3600, lambda: None)  # a pending timer, as a server always has
    port = reactor.listenUDP(0, UDPServer(responder_for(zone_from_text(ZONE, "example.com."))),
                             interface="127.0.0.1")
    reactor._started = reactor.running = True  # turns by hand, as mainLoop runs them
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.connect(("127.0.0.1", port.getHost().port))
    client.settimeout(2)
    wire = dns.message.make_query("example.com.", "SOA").to_wire()

    def turn() -> None:
        reactor.runUntilCurrent()
        reactor.doIteration(reactor.timeout())

    for _ in range(1000):  # warm: the cache and the listener's memo hold the answer
        client.send(wire)
        turn()
        client.recv(4096)
    best = float("inf")
    for _ in range(args.repeat):
        start = time.process_time()
        for _ in range(args.number):
            client.send(wire)
            turn()
            client.recv(4096)
        best = min(best, time.process_time() - start)
    client.close()
    port.stopListening()
    print(f"{kind}: {best / args.number * 1e6:.2f} us CPU per lone query (best of {args.repeat}"
          f" x {args.number}, client included)")


if __name__ == "__main__":
    main()
