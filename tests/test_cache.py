"""The answer cache after incremental changes: every answer an IXFR alters is forgotten.

Queries go through the cache exactly as the UDP protocol does (cache first, then the
responder), and changes go through ``diff.apply_steps`` and ``Registry.swap`` with the
invalidation set the refresh machine computes.
"""

from __future__ import annotations

import dns.message
import dns.rdatatype
import dns.rrset
from zonetools import responder_for, zone_from_text

from secondns.diff import VersionStep, apply_steps, invalidated_names
from secondns.registry import Registry
from secondns.responder import UDP, Responder, ServeSettings
from secondns.stats import ServingStats
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


def ask(responder: Responder, name: str, qtype: str = "A") -> dns.message.Message:
    query = dns.message.make_query(name, qtype)
    query.id, query.flags = 7, 0
    wire = query.to_wire()
    tail = responder.caches[UDP].map.get(wire[2:])
    reply = wire[:2] + tail if tail is not None else responder.respond(wire, UDP, ("127.0.0.1", 1))
    assert reply is not None
    return dns.message.from_wire(reply)


def test_changed_name_is_answered_afresh_and_others_stay_cached() -> None:
    zone = zone_from_text(BASE + "www A 192.0.2.2\nmail A 192.0.2.3\n", "example.com.")
    r = responder_for(zone)
    ask(r, "www.example.com.")
    ask(r, "mail.example.com.")
    ixfr(r, zone, [SOA.format(1), "www.example.com. 300 IN A 192.0.2.2"],
         [SOA.format(2), "www.example.com. 300 IN A 192.0.2.99"])
    assert ask(r, "www.example.com.").answer[0][0].to_text() == "192.0.2.99"
    mail = dns.message.make_query("mail.example.com.", "A")
    mail.id, mail.flags = 7, 0
    assert mail.to_wire()[2:] in r.caches[UDP].map  # untouched by the change: still cached


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


def test_a_flood_of_random_names_does_not_grow_the_dependency_index() -> None:
    zone = zone_from_text(BASE, "example.com.")
    r = responder_for(zone, settings=ServeSettings(cache_entries=1000))
    cache = r.caches[UDP]
    for i in range(20_000):
        ask(r, f"r{i}.example.com.")
    assert len(cache.map) <= 1000
    assert sum(len(keys) for by_name in cache._deps.values() for keys in by_name.values()) <= 4 * 1000


def test_a_full_cache_drops_its_oldest_half_not_everything() -> None:
    zone = zone_from_text(BASE + "".join(f"h{i} A 192.0.2.{i % 250}\n" for i in range(300)),
                          "example.com.")
    r = responder_for(zone, settings=ServeSettings(cache_entries=200))
    for i in range(200):
        ask(r, f"h{i}.example.com.")
    cache = r.caches[UDP].map
    assert len(cache) == 200
    ask(r, "h250.example.com.")  # one more: the oldest half goes, the newest stays
    assert len(cache) == 101
    newest = dns.message.make_query("h199.example.com.", "A")
    newest.id, newest.flags = 7, 0
    oldest = dns.message.make_query("h0.example.com.", "A")
    oldest.id, oldest.flags = 7, 0
    assert newest.to_wire()[2:] in cache and oldest.to_wire()[2:] not in cache
