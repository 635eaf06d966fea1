"""The answer cache after incremental changes: every answer an IXFR alters is forgotten.

Queries go through the cache exactly as the UDP protocol does (cache first, then the
responder), and changes go through ``diff.apply_steps`` and ``Registry.swap`` with the
invalidation set the refresh machine computes.
"""

from __future__ import annotations

import random
import tracemalloc

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from zonetools import responder_for, zone_from_text

from secondns.diff import VersionStep, apply_steps, invalidated_names, replaced_names
from secondns.registry import Registry
from secondns.serve.responder import TCP, UDP, AnswerCache, Responder, ServeSettings
from secondns.serve.stats import ServingStats
from secondns.wire import KEY_FLAGS, cache_key
from secondns.zone import Zone

SOA = "example.com. 300 IN SOA ns1.example.com. host.example.com. {} 3600 600 86400 300"
BASE = "$TTL 300\n@ SOA ns1 host 1 3600 600 86400 300\n@ NS ns1\nns1 A 192.0.2.1\n"


def rec(line: str) -> tuple[bytes, int, int, bytes]:
    owner, ttl, rdclass, rdtype, rdata = line.split(None, 4)
    rrset = dns.rrset.from_text(owner, int(ttl), rdclass, rdtype, rdata)
    return rrset.name.to_wire(), rrset.rdtype, rrset.ttl, next(iter(rrset)).to_wire()


def ixfr(responder: Responder, zone: Zone, deleted: list[str], added: list[str]) -> Zone:
    step = VersionStep(zone.serial, zone.serial + 1, [rec(x) for x in deleted], [rec(x) for x in added])
    new = apply_steps(zone, [step])
    responder.registry.swap(zone.origin, new, invalidated_names(zone, new, [step]))
    return new


def cached(responder: Responder, wire: bytes, transport: int = UDP) -> bytes | None:
    """The cache hit the listener would send for *wire*, as server.UDPServer builds it."""
    key = cache_key(wire, transport == TCP, responder.settings.udp_max_payload)
    entry = responder.cache.get(key) if key is not None else None
    if entry is None or key is None:
        return None
    return wire[:2] + entry[0] + wire[12:len(key) + 12 - KEY_FLAGS] + entry[1]


def through(responder: Responder, wire: bytes, transport: int = UDP) -> bytes:
    """Cache first, then the responder, as the listeners do."""
    reply = cached(responder, wire, transport)
    if reply is None:
        reply = responder.respond(wire, transport, ("127.0.0.1", 1))
    assert reply is not None
    return reply


def ask(responder: Responder, name: str, qtype: str = "A") -> dns.message.Message:
    query = dns.message.make_query(name, qtype)
    query.id, query.flags = 7, 0
    return dns.message.from_wire(through(responder, query.to_wire()))


def is_cached(responder: Responder, name: str, qtype: str = "A") -> bool:
    query = dns.message.make_query(name, qtype)
    query.id, query.flags = 7, 0
    key = cache_key(query.to_wire(), False, responder.settings.udp_max_payload)
    return key is not None and key in responder.cache


def test_changed_name_is_answered_afresh_and_others_stay_cached() -> None:
    zone = zone_from_text(BASE + "www A 192.0.2.2\nmail A 192.0.2.3\n", "example.com.")
    r = responder_for(zone)
    ask(r, "www.example.com.")
    ask(r, "mail.example.com.")
    ixfr(r, zone, [SOA.format(1), "www.example.com. 300 IN A 192.0.2.2"],
         [SOA.format(2), "www.example.com. 300 IN A 192.0.2.99"])
    assert ask(r, "www.example.com.").answer[0][0].to_text() == "192.0.2.99"
    assert is_cached(r, "mail.example.com.")  # untouched by the change: still cached


def test_a_small_zones_axfr_forgets_only_what_it_changed() -> None:
    """A whole new version (AXFR) of a small zone is compared node by node (issue 14: 10,000
    zones changing at once each paid a pass over the whole cache); what changed is answered
    afresh, a name it added is no longer NXDOMAIN, the rest stays cached."""
    old = zone_from_text(BASE + "www A 192.0.2.2\nmail A 192.0.2.3\nold.sub A 192.0.2.4\n",
                         "example.com.")
    r = responder_for(old)
    for name in ("www", "mail", "new.sub", "old.sub", "sub", "gone"):
        ask(r, f"{name}.example.com.")
    new = zone_from_text(BASE.replace(" 1 3600", " 2 3600") + "www A 192.0.2.99\nmail A 192.0.2.3\n"
                         "new.sub A 192.0.2.5\n", "example.com.")
    changed = replaced_names(old, new)
    assert changed is not None
    r.registry.swap(old.origin, new, changed)
    assert is_cached(r, "mail.example.com.")  # the same records: still cached
    assert ask(r, "www.example.com.").answer[0][0].to_text() == "192.0.2.99"
    assert ask(r, "new.sub.example.com.").answer[0][0].to_text() == "192.0.2.5"
    assert ask(r, "old.sub.example.com.").rcode() == dns.rcode.NXDOMAIN
    gone = ask(r, "gone.example.com.")  # NXDOMAIN before and after, with the new SOA
    assert gone.rcode() == dns.rcode.NXDOMAIN and gone.authority[0][0].serial == 2
    # A large zone is not compared on the reactor, nor one that gains its first delegation.
    assert replaced_names(old, new, max_records=3) is None
    cut = zone_from_text(BASE + "www A 192.0.2.2\nkid NS ns1.kid\nns1.kid A 192.0.2.7\n", "example.com.")
    assert replaced_names(old, cut) is None


def test_a_repeated_request_skips_the_key_and_still_sees_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The UDP listener remembers the key of requests that hit (the octets after the ID): a
    repeat costs no cache_key, and an IXFR still gets through since the key is probed again."""
    from secondns.serve import server as server_module

    zone = zone_from_text(BASE + "www A 192.0.2.2\n", "example.com.")
    r = responder_for(zone)
    udp = server_module.UDPServer(r)
    sent: list[bytes] = []
    udp._sendto = lambda data, addr: sent.append(data)
    keyed = []
    real = server_module.cache_key

    def counting(d: bytes, tcp: bool, udp_max: int) -> bytes | None:
        keyed.append(d)
        return real(d, tcp, udp_max)

    monkeypatch.setattr(server_module, "cache_key", counting)

    def query(qid: int) -> dns.message.Message:
        q = dns.message.make_query("www.example.com.", "A", use_edns=0)
        q.id = qid
        udp.datagramReceived(q.to_wire(), ("127.0.0.1", 5300))
        reply = dns.message.from_wire(sent[-1])
        assert reply.id == qid
        return reply

    for qid in range(1, 6):
        assert query(qid).answer[0][0].to_text() == "192.0.2.2"
    assert len(keyed) == 2  # the miss and the first hit; the repeats went by the exact octets
    ixfr(r, zone, [SOA.format(1), "www.example.com. 300 IN A 192.0.2.2"],
         [SOA.format(2), "www.example.com. 300 IN A 192.0.2.99"])
    assert query(9).answer[0][0].to_text() == "192.0.2.99"
    assert query(10).answer[0][0].to_text() == "192.0.2.99"
    monkeypatch.setattr(server_module, "_RECENT_MAX", 3)
    for i in range(10):  # bounded: no more once full
        query(100 + i)
        q = dns.message.make_query(f"n{i}.example.com.", "A", use_edns=0)
        udp.datagramReceived(q.to_wire(), ("127.0.0.1", 5300))
        udp.datagramReceived(q.to_wire(), ("127.0.0.1", 5300))
        assert len(udp.recent) <= 3
    assert udp.recent
    r.stats.udp_queries = (1 << 20) - 1  # the next query is the sampled one that renews it
    query(200)
    assert not udp.recent


def test_wildcard_answer_forgotten_when_its_name_becomes_an_empty_non_terminal() -> None:
    zone = zone_from_text(BASE + 'sub TXT "x"\n*.sub A 192.0.2.9\n', "example.com.")
    r = responder_for(zone)
    assert ask(r, "x.sub.example.com.").answer
    assert ask(r, "y.x.sub.example.com.").answer
    ixfr(r, zone, [SOA.format(1)], [SOA.format(2), 'a.x.sub.example.com. 300 IN TXT "y"'])
    assert not ask(r, "x.sub.example.com.").answer  # RFC 4592 2.2.2: x.sub exists now: NODATA
    assert ask(r, "y.x.sub.example.com.").rcode() == 3  # and below it: NXDOMAIN


def test_answer_forgotten_when_the_first_delegation_appears_above_it() -> None:
    zone = zone_from_text(BASE + "host.dept A 192.0.2.5\n", "example.com.")
    r = responder_for(zone)
    assert ask(r, "host.dept.example.com.").answer
    ixfr(r, zone, [SOA.format(1)], [SOA.format(2), "dept.example.com. 300 IN NS ns.elsewhere.net."])
    reply = ask(r, "host.dept.example.com.")
    assert not reply.answer and reply.authority[0].rdtype == dns.rdatatype.NS  # a referral


def test_answer_forgotten_when_the_first_dname_appears_above_it() -> None:
    zone = zone_from_text(BASE + "host.dept A 192.0.2.5\n", "example.com.")
    r = responder_for(zone)
    ask(r, "host.dept.example.com.")
    ixfr(r, zone, [SOA.format(1)], [SOA.format(2), "dept.example.com. 300 IN DNAME other.net."])
    assert ask(r, "host.dept.example.com.").answer[0].rdtype == dns.rdatatype.DNAME


def test_ds_answered_by_the_child_is_forgotten_when_the_parent_starts_serving() -> None:
    parent = zone_from_text(BASE + "child NS ns1.child\nchild DS 12345 8 2 " + "ab" * 32
                            + "\nns1.child A 192.0.2.2\n", "example.com.")
    child = zone_from_text(BASE, "child.example.com.")
    registry = Registry()
    r = Responder(registry, ServeSettings(), ServingStats())
    registry.add(parent.origin)
    registry.add(child.origin)
    registry.swap(child.origin, child)
    assert not ask(r, "child.example.com.", "DS").answer  # only the child serves: NODATA
    registry.swap(parent.origin, parent)
    assert ask(r, "child.example.com.", "DS").answer  # RFC 4035 3.1.4.1: the parent's DS


def test_a_zone_starting_to_serve_keeps_other_zones_cached_answers() -> None:
    """10,000 zones loading one by one must not flush the cache 10,000 times (issue 14)."""
    zones = [zone_from_text(BASE, f"z{i}.example.") for i in range(3)]
    registry = Registry()
    r = Responder(registry, ServeSettings(), ServingStats())
    for z in zones:
        registry.add(z.origin)
    registry.swap(zones[0].origin, zones[0])
    assert ask(r, "ns1.z0.example.").answer
    assert ask(r, "ns1.z1.example.").rcode() == dns.rcode.SERVFAIL  # not loaded yet
    assert ask(r, "ns1.z2.example.").rcode() == dns.rcode.SERVFAIL
    registry.swap(zones[1].origin, zones[1])
    assert is_cached(r, "ns1.z0.example.")  # an unrelated zone's answer stays
    assert is_cached(r, "ns1.z2.example.")  # and so does another loading zone's SERVFAIL
    assert not is_cached(r, "ns1.z1.example.")  # the zone's own SERVFAIL is gone
    assert ask(r, "ns1.z1.example.").answer
    registry.set_expired(zones[0].origin, True)
    assert is_cached(r, "ns1.z2.example.") and not is_cached(r, "ns1.z0.example.")
    assert ask(r, "ns1.z0.example.").rcode() == dns.rcode.SERVFAIL
    # Alive again (a check succeeded): its SERVFAIL goes, the others' answers stay.
    registry.set_expired(zones[0].origin, False)
    assert not is_cached(r, "ns1.z0.example.") and is_cached(r, "ns1.z2.example.")
    assert ask(r, "ns1.z0.example.").answer


def test_ds_answered_by_the_parent_is_forgotten_when_the_parent_expires() -> None:
    parent = zone_from_text(BASE + "child NS ns1.child\nchild DS 12345 8 2 " + "ab" * 32
                            + "\nns1.child A 192.0.2.2\n", "example.com.")
    child = zone_from_text(BASE, "child.example.com.")
    registry = Registry()
    r = Responder(registry, ServeSettings(), ServingStats())
    registry.add(child.origin)  # the child first: the parent learns of it when added
    registry.add(parent.origin)
    registry.swap(child.origin, child)
    registry.swap(parent.origin, parent)
    assert ask(r, "child.example.com.", "DS").answer
    registry.set_expired(parent.origin, True)
    assert not ask(r, "child.example.com.", "DS").answer  # the child answers: NODATA
    registry.remove(child.origin)
    registry.add(child.origin)  # counts kept right across remove and add
    registry.swap(child.origin, child)
    registry.set_expired(parent.origin, False)
    assert ask(r, "child.example.com.", "DS").answer


def test_a_flood_of_random_names_does_not_grow_the_dependency_index() -> None:
    zone = zone_from_text(BASE, "example.com.")
    r = responder_for(zone, settings=ServeSettings(cache_bytes=200_000))
    cache = r.cache
    for i in range(20_000):
        ask(r, f"r{i}.example.com.")
    assert cache.size <= 200_000
    indexed = sum(len(keys) if isinstance(keys, set) else 1
                  for by_name in cache._deps.values() for keys in by_name.values())
    assert indexed <= len(cache) * 3  # NXDOMAIN reads a few names; evicted keys are pruned


class _CountingCache(AnswerCache):
    __slots__ = ("dropped",)

    def __init__(self, max_bytes: int) -> None:
        super().__init__(max_bytes)
        self.dropped: list[bytes] = []

    def _drop(self, key: bytes) -> None:
        self.dropped.append(key)
        super()._drop(key)


def test_a_zone_replaced_whole_is_forgotten_without_dropping_entry_by_entry() -> None:
    # Issue 11: a new zone version (AXFR, a worker's new image) used to be forgotten one
    # cached answer at a time through the dependency index, ~170 ms for 100k answers in a
    # worker while its queries waited; the whole zone is filtered out in one pass instead.
    cache = _CountingCache(1 << 20)
    dropped = cache.dropped
    response = bytes(40)
    for i in range(300):
        cache.put(b"a%d" % i, response, 20, b"\x01a\x00", [b"n%d" % i, b"shared"])
        cache.put(b"b%d" % i, response, 20, b"\x01b\x00", [b"m%d" % i])
    for i in range(0, 300, 2):
        assert cache.get(b"a%d" % i) is not None  # some promoted to protected
        assert cache.get(b"b%d" % i) is not None
    b_size = sum(e[4] for e in cache.protected.values() if e[2] == b"\x01b\x00")
    segments = (cache.protected, cache.probation)
    cache.forget(b"\x01a\x00")
    assert dropped == []
    # filtered in place: UDPServer's hit path holds ``protected`` (a rebound dict kept serving
    # a loading zone's SERVFAIL after it loaded, found when merging with the registry change)
    assert (cache.protected, cache.probation) == segments
    assert cache.protected is segments[0] and cache.probation is segments[1]
    assert len(cache) == 300 and all(b"b%d" % i in cache for i in range(300))
    assert not any(b"a%d" % i in cache for i in range(300))
    assert b"\x01a\x00" not in cache._deps
    assert cache._protected_size == b_size
    assert cache.size == sum(e[4] for d in (cache.protected, cache.probation) for e in d.values())
    cache.forget(b"\x01b\x00", [b"m3"])  # by name, as after an IXFR: still entry by entry
    assert dropped == [b"b3"] and b"b3" not in cache and len(cache) == 299
    cache.forget(b"\x01b\x00")  # the last zone cached: everything goes
    assert len(cache) == 0 and cache.size == 0 and cache._protected_size == 0


def test_a_zone_replaced_whole_hands_its_answers_over_to_be_freed_in_slices() -> None:
    # Issue 11: freeing 100k cached answers inside the forget (the segments' clear) was a
    # 15-45 ms stall of a worker's reactor when the zone's new image arrived.  With
    # ``discard`` set the entries are handed over still alive (the reaper frees them a slice
    # per turn), and none of them can be answered from any more.
    from twisted.internet import task

    from secondns.reaper import SLICE, Reaper

    handed: list[object] = []
    cache = AnswerCache(64 << 20)
    cache.discard = handed.append
    response = bytes(40)
    for i in range(300):
        cache.put(b"a%d" % i, response, 20, b"\x01a\x00", [b"n%d" % i])
        cache.put(b"b%d" % i, response, 20, b"\x01b\x00", [b"m%d" % i])
    for i in range(0, 300, 2):
        assert cache.get(b"a%d" % i) is not None and cache.get(b"b%d" % i) is not None
    protected = cache.protected
    cache.forget(b"\x01a\x00")  # another zone is cached: filtered
    assert not any(b"a%d" % i in cache for i in range(300)) and len(cache) == 300
    entries = [e for c in handed if isinstance(c, list) for e in c]
    assert len(entries) == 300 and all(e[2] == b"\x01a\x00" for e in entries)
    assert any(isinstance(c, dict) and b"n7" in c for c in handed)  # its dependency index
    handed.clear()
    cache.forget(b"\x01b\x00")  # the last zone: cleared
    assert len(cache) == 0 and cache.size == 0 and cache.protected is protected
    assert sum(len(c) for c in handed if isinstance(c, list)) == 300
    # The reaper frees big ones a slice per turn, and lets small ones go at once.
    clock = task.Clock()
    reaper = Reaper(clock)
    reaper.discard(list(range(3 * SLICE)))
    reaper.discard([1, 2, 3])
    assert [len(c) for c in reaper._work] == [3 * SLICE]
    reaper._step()
    assert [len(c) for c in reaper._work] == [2 * SLICE]  # one slice in a turn
    clock.advance(0)
    assert reaper.pending == 0


# --- a cache that cannot be used against the server (issue 12) -----------------------------

HOT = "$TTL 300\n@ SOA ns1 host 1 3600 600 86400 300\n@ NS ns1\nns1 A 192.0.2.1\n" \
      "www A 192.0.2.2\nalias CNAME www\nsub NS ns.sub\nns.sub A 192.0.2.7\n"


def query_wire(name: str, qtype: str = "A", *, qid: int = 7, edns: int = -1, payload: int = 1232,
               options: list[dns.edns.Option] | None = None) -> bytes:
    query = dns.message.make_query(name, qtype, use_edns=edns, payload=payload, options=options)
    query.id, query.flags = qid, 0
    return query.to_wire(max_size=65535)


def random_case(name: str, rng: random.Random) -> str:
    return "".join(c.upper() if rng.random() < 0.5 else c for c in name)


def test_a_hot_answer_survives_a_random_subdomain_flood_100x_the_cache() -> None:
    r = responder_for(zone_from_text(HOT, "example.com."), settings=ServeSettings(cache_bytes=100_000))
    hot = query_wire("www.example.com.")
    through(r, hot)
    through(r, hot)  # asked twice: a hot answer
    flood = 0
    i = 0
    while flood < 100 * 100_000:  # octets of one-off NXDOMAIN answers: 100 caches' worth
        reply = through(r, query_wire(f"x{i}.example.com."))
        flood += len(reply)
        i += 1
    assert cached(r, hot) is not None


def test_a_0x20_resolver_hits_the_cache_and_sees_its_own_case() -> None:
    r = responder_for(zone_from_text(HOT, "example.com."))
    fresh = responder_for(zone_from_text(HOT, "example.com."))
    rng = random.Random(1)
    names = ["www.example.com.", "alias.example.com.", "nope.example.com.", "host.sub.example.com."]
    hits = 0
    total = 0
    for turn in range(250):
        for name in names:
            asked = random_case(name, rng)
            wire = query_wire(asked, qid=turn)
            reply = cached(r, wire)
            if reply is not None:
                hits += 1
                # Patched octets are what a fresh answer to this very query would be.
                fresh.cache.clear()
                assert reply == fresh.respond(wire, UDP, ("127.0.0.1", 1))
            else:
                reply = through(r, wire)
            total += 1
            msg = dns.message.from_wire(reply)
            assert msg.id == turn
            assert msg.question[0].name.to_text() == asked  # the client's case, octet for octet
            for rrset in msg.answer:
                if rrset.name == dns.name.from_text(name):
                    assert rrset.name.to_text() == asked  # owners compressed to it, as BIND's
    assert hits / total >= 0.95


def test_padding_and_the_payload_within_its_class_do_not_change_the_key() -> None:
    r = responder_for(zone_from_text(HOT, "example.com."))
    plain = query_wire("www.example.com.", edns=0)
    through(r, plain)
    padded = query_wire("www.example.com.", edns=0, options=[dns.edns.GenericOption(12, bytes(400))])
    bigger = query_wire("www.example.com.", edns=0, payload=4096)  # same class once capped at 1232
    for wire in (padded, bigger):
        assert cached(r, wire) is not None


def test_the_byte_bound_holds_with_padded_8k_queries() -> None:
    r = responder_for(zone_from_text(HOT, "example.com."), settings=ServeSettings(cache_bytes=1 << 20))
    pad = [dns.edns.GenericOption(12, bytes(8000))]
    wires = [query_wire(f"p{i}.example.com.", edns=0, payload=4096, options=pad) for i in range(4000)]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for wire in wires:
        through(r, wire)
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert len(r.cache) > 100  # the answers are cached...
    assert grown <= 1.25 * (1 << 20)  # ...within the bound, Python's own overheads included


def test_an_answer_cut_for_one_payload_is_not_served_to_another_in_its_class() -> None:
    txt = "".join(f'big TXT "{i:03d}' + "x" * 90 + '"\n' for i in range(9))  # ~900 octets
    r = responder_for(zone_from_text(HOT + txt, "example.com."))
    fits = dns.message.from_wire(through(r, query_wire("big.example.com.", "TXT", edns=0, payload=1100)))
    assert not fits.flags & dns.flags.TC
    cut = dns.message.from_wire(through(r, query_wire("big.example.com.", "TXT", edns=0, payload=600)))
    assert cut.flags & dns.flags.TC  # RFC 2181 9: the RRset did not fit in 600


def test_tcp_and_udp_answers_are_kept_apart() -> None:
    zone = zone_from_text(HOT + "www AAAA 2001:db8::1\nwww TXT \"t\"\n", "example.com.")
    r = responder_for(zone)
    full = dns.message.from_wire(through(r, query_wire("www.example.com.", "ANY"), TCP))
    minimal = dns.message.from_wire(through(r, query_wire("www.example.com.", "ANY"), UDP))
    assert len(full.answer) > len(minimal.answer)  # RFC 8482: minimal ANY over UDP only


def test_a_truncated_opt_record_is_formerr_not_an_internal_error() -> None:
    """cache_key runs before any parse: a message cut inside its OPT record must fall through to
    the responder (FORMERR), not raise (SERVFAIL, counted as an internal error)."""
    from secondns.serve.server import UDPServer
    from secondns.serve.stats import IN_UDP

    r = responder_for(zone_from_text(BASE, "example.com."))
    udp = UDPServer(r)
    sent: list[bytes] = []
    udp._sendto = lambda data, addr: sent.append(data)
    wire = dns.message.make_query("ns1.example.com.", "A", use_edns=0).to_wire()
    for cut in range(1, 9):  # bounded: into the OPT record's 11 fixed octets
        udp.datagramReceived(wire[:-cut], ("127.0.0.1", 5300))
        assert sent[-1][3] & 0xF == 1, cut  # RFC 1035 4.1.1 FORMERR
    assert r.stats.internal_errors[IN_UDP] == 0
