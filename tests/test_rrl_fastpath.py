"""Response rate limiting decided before answering: the UDP listener's NXDOMAIN shortcut.

``UDPServer`` takes the RRL verdict on a question whose answer is certainly NXDOMAIN from its
zone's account (``Responder.nxdomain_account``, ``answer.plain_nxdomain``) and answers only
what may be sent.  These tests check that the shortcut never says NXDOMAIN where the full
answer is something else, and that the listener sends byte for byte what the full path
(``Responder.respond_limited``) sends, while what it drops is neither answered nor cached.
"""

from __future__ import annotations

import random
from typing import Any

import dns.flags
import dns.message
import dns.rcode

from secondns.config import RateLimitConfig
from secondns.names import from_text
from secondns.serve.answer import answer_query, plain_nxdomain
from secondns.serve.responder import UDP, ServeSettings
from secondns.serve.server import UDPServer
from secondns.wire import NXDOMAIN
from tests.zonetools import responder_for, zone_from_text

ZONE = """$TTL 300
@ SOA ns1 host 1 3600 600 86400 300
@ NS ns1
ns1 A 192.0.2.1
www A 192.0.2.2
a.b.c A 192.0.2.3
*.wild A 192.0.2.4
sub NS ns.sub
ns.sub A 192.0.2.5
"""

NAMES = ["nope", "www", "x.www", "b.c", "c", "x.c", "x.b.c", "q.a.b.c", "wild", "x.wild", "y.x.wild",
         "sub", "x.sub", "ns.sub", "y.ns.sub", "ns1", "deep.down.nope", "*.wild", "x.*.wild"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_plain_nxdomain_only_where_the_answer_is_nxdomain() -> None:
    zone = zone_from_text(ZONE, "example.")
    said = {}
    for text in NAMES:
        qname = from_text(text + ".example.")
        for qtype in (1, 16, 28, 43, 255):
            ans = answer_query(zone, qname, qtype, minimal_any=True)
            if plain_nxdomain(zone, qname):
                assert ans.rcode == NXDOMAIN and not ans.answer, (text, qtype)
        said[text] = plain_nxdomain(zone, qname)
    # It does say so for the names a random-subdomain flood asks, at any depth.
    assert said["nope"] and said["x.www"] and said["x.c"] and said["deep.down.nope"] and said["q.a.b.c"]
    # ...and never below a cut (a referral), under a wildcard or for names that exist.
    assert not any(said[n] for n in ("x.sub", "y.ns.sub", "x.wild", "y.x.wild", "www", "c", "b.c"))


def test_plain_nxdomain_leaves_dname_zones_to_the_full_answer() -> None:
    dname = zone_from_text(ZONE + "red DNAME example.net.\n", "example.")
    assert not plain_nxdomain(dname, from_text("nope.example."))


def _responder(rate: int, slip: int) -> tuple[Any, Clock]:
    config = RateLimitConfig(responses_per_second=rate, nxdomains_per_second=rate, errors_per_second=rate,
                             window=5, slip=slip)
    responder = responder_for(zone_from_text(ZONE, "example."),
                              settings=ServeSettings(rate_limit=config, cookie_secrets=(bytes(range(16)),)))
    clock = Clock()
    assert responder.rrl is not None
    responder.rrl.clock = clock
    return responder, clock


def _flood(seed: int, count: int) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        label = f"{rng.getrandbits(32):08x}"
        suffix = rng.choice(["", ".deeper", ".c"])
        qtype = rng.choice(["A", "AAAA", "TXT"])
        query = dns.message.make_query(f"{label}{suffix}.example.", qtype, use_edns=rng.choice([-1, 0]),
                                       want_dnssec=rng.random() < 0.3, payload=1232)
        query.id = i
        out.append(query.to_wire())
    return out


def test_listener_sends_what_the_full_path_sends_and_caches_nothing_dropped() -> None:
    fast, fast_clock = _responder(rate=5, slip=3)
    full, full_clock = _responder(rate=5, slip=3)
    server = UDPServer(fast)
    sent: list[bytes] = []
    server._sendto = lambda data, addr: sent.append(data)
    addr = ("192.0.2.77", 5300)
    expected: list[bytes] = []
    for second in range(3):
        fast_clock.now = full_clock.now = 1000.0 + second
        for wire in _flood(second, 40):
            server.datagramReceived(wire, addr)
            response = full.respond_limited(wire, UDP, addr)
            if response is not None:
                expected.append(response)
    assert sent == expected
    assert fast.stats.rrl_dropped == full.stats.rrl_dropped > 0
    assert fast.stats.rrl_slipped == full.stats.rrl_slipped > 0
    assert fast.stats.rcodes == full.stats.rcodes and fast.stats.truncated == full.stats.truncated
    answered = [dns.message.from_wire(r) for r in sent]
    full_answers = [m for m in answered if not m.flags & dns.flags.TC]
    assert all(m.rcode() == dns.rcode.NXDOMAIN for m in full_answers)
    # Only the answers that were sent in full are cached: a dropped or slipped flood query
    # must not push other answers out of the cache.
    assert len(fast.cache) == len(full_answers)
