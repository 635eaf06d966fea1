"""Test helpers: zones built through dnspython, an independent implementation.

Zones in these tests never go through secondns's own zone file parser, so a
bug there cannot hide a bug in answering (and vice versa).
"""

from __future__ import annotations

import dns.message
import dns.name
import dns.rdatatype
import dns.zone

from secondns.names import from_text
from secondns.registry import Registry
from secondns.serve.responder import TCP, UDP, Responder, ServeSettings
from secondns.serve.stats import ServingStats
from secondns.zone import Zone, ZoneBuilder


def zone_from_text(text: str, origin: str) -> Zone:
    """Parse *text* with dnspython and build a secondns Zone from its wire rdata."""
    dzone = dns.zone.from_text(text, origin=origin, relativize=False, check_origin=True)
    builder = ZoneBuilder(from_text(origin))
    for name, node in dzone.nodes.items():
        owner = name.to_wire()
        for rdataset in node.rdatasets:
            for rdata in rdataset:
                builder.add(owner, rdataset.rdtype, rdataset.ttl, rdata.to_wire())
    return builder.build()


def responder_for(*zones: Zone, settings: ServeSettings | None = None) -> Responder:
    """A Responder serving *zones*, as the server would hold it."""
    registry = Registry()
    for zone in zones:
        registry.add(zone.origin)
        registry.swap(zone.origin, zone)
    return Responder(registry, settings or ServeSettings(), ServingStats())


def ask(responder: Responder, qname: str, qtype: str = "A", *, tcp: bool = False,
        edns: int = -1, do: bool = False, payload: int = 1232, rdclass: str = "IN",
        nsid: bool = False) -> dns.message.Message:
    """Send one query through the responder and parse the answer with dnspython."""
    options = [dns.edns.GenericOption(dns.edns.NSID, b"")] if nsid else None
    query = dns.message.make_query(qname, qtype, rdclass, use_edns=edns, want_dnssec=do,
                                   payload=payload, options=options)
    query.flags &= ~dns.flags.RD
    wire = responder.respond(query.to_wire(), TCP if tcp else UDP, ("127.0.0.1", 5300))
    assert wire is not None
    return dns.message.from_wire(wire)


def rrs(section: list[dns.rrset.RRset]) -> list[str]:
    """A section as sorted text lines, for compact assertions."""
    lines = []
    for rrset in section:
        for line in rrset.to_text().splitlines():
            lines.append(line)
    return sorted(lines)
