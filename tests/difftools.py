"""Differential testing against BIND 9: probes, normalised replies, and the probe generator.

A *probe* is one question sent one way (UDP without EDNS, UDP with EDNS, TCP, ...).  The same
message goes to BIND and to secondns; each reply becomes a ``View``, a normal form that keeps
everything a client may rely on and drops only what carries no meaning:

* the message ID (random per query);
* the order of records inside an RRset: BIND rotates RRsets (``rrset-order`` cyclic, and this
  Debian build lacks ``--enable-fixed-rrset``), and RFC 2181 5 makes an RRset unordered;
* the order of RRsets inside the authority and additional sections (no meaning there; the answer
  section keeps its order, which a CNAME/DNAME chain depends on);
* the case of owner names (RFC 4343: DNS names compare case-insensitively).  The question section
  is compared byte for byte, since both servers echo it;
* EDNS option values: only option codes are compared.  Neither server is sent a COOKIE or NSID
  option, so neither should answer with one; the codes catch an unexpected option.

Records are parsed one per RRset (dnspython would otherwise merge an RRset's TTLs into the lowest),
so a response whose RRset mixes TTLs is seen as sent.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.zone
from peers import LOOPBACK

TIMEOUT = 3.0


@dataclass(frozen=True)
class Transport:
    """How a probe is sent: TCP or UDP, with or without EDNS (``edns=-1``), which payload."""

    name: str
    tcp: bool
    edns: int = 0
    payload: int = 1232


UDP_PLAIN = Transport("udp", tcp=False, edns=-1)
UDP_EDNS = Transport("udp+edns", tcp=False)
TCP_EDNS = Transport("tcp+edns", tcp=True)
TCP_PLAIN = Transport("tcp", tcp=True, edns=-1)
UDP_EDNS512 = Transport("udp+edns512", tcp=False, payload=512)
UDP_EDNS_V1 = Transport("udp+ednsv1", tcp=False, edns=1)
TRANSPORTS = (UDP_PLAIN, UDP_EDNS, TCP_EDNS)


@dataclass(frozen=True)
class Probe:
    """One question and one way of sending it; ``why`` says what the probe is there to exercise."""

    qname: str
    qtype: str
    transport: Transport
    why: str = "owner"

    def message(self) -> dns.message.Message:
        msg = dns.message.make_query(
            self.qname, self.qtype, use_edns=self.transport.edns, payload=self.transport.payload
        )
        msg.flags &= ~dns.flags.RD
        return msg

    def send(self, port: int, msg: dns.message.Message) -> dns.message.Message:
        """The reply to ``msg``, one record per RRset; a lost UDP datagram is retried once."""
        if self.transport.tcp:
            return dns.query.tcp(msg, LOOPBACK, timeout=TIMEOUT, port=port, one_rr_per_rrset=True)
        try:
            return dns.query.udp(msg, LOOPBACK, timeout=TIMEOUT, port=port, one_rr_per_rrset=True)
        except dns.exception.Timeout:
            return dns.query.udp(msg, LOOPBACK, timeout=TIMEOUT, port=port, one_rr_per_rrset=True)

    def __str__(self) -> str:
        return f"{self.qname} {self.qtype} over {self.transport.name} ({self.why})"


Record = tuple[str, int]  # (rdata text, ttl)


@dataclass(frozen=True)
class RRsetView:
    """An RRset with its owner lowercased and its records (rdata, TTL) sorted."""

    name: str
    rdclass: dns.rdataclass.RdataClass
    rdtype: dns.rdatatype.RdataType
    records: tuple[Record, ...]

    def __str__(self) -> str:
        recs = " | ".join(f"{ttl} {text}" for text, ttl in self.records)
        return f"{self.name} {dns.rdatatype.to_text(self.rdtype)} [{recs}]"


@dataclass(frozen=True)
class View:
    """What a reply means, in a form two servers' replies can be compared by ``==``."""

    question: tuple[str, ...]  # case kept
    opcode: dns.opcode.Opcode
    rcode: dns.rcode.Rcode  # the full 12-bit rcode, EDNS extension included
    flags: frozenset[str]
    edns: int  # -1: no OPT record
    payload: int
    ednsflags: int
    options: tuple[int, ...]  # option codes only: values such as COOKIE differ per server
    answer: tuple[RRsetView, ...]
    authority: tuple[RRsetView, ...]
    additional: tuple[RRsetView, ...]

    @property
    def tc(self) -> bool:
        return "TC" in self.flags

    @property
    def aa(self) -> bool:
        return "AA" in self.flags

    def without(self, *fields: str) -> dict[str, object]:
        """This view as a dict minus ``fields``, for "identical except ..." predicates."""
        out = {f: getattr(self, f) for f in self.__dataclass_fields__}
        for field in fields:
            out.pop(field)
        return out

    def describe(self) -> str:
        head = (
            f"{dns.rcode.to_text(self.rcode)} flags={' '.join(sorted(self.flags))} "
            f"edns={self.edns} payload={self.payload} options={list(self.options)}"
        )
        lines = [head]
        for section in ("answer", "authority", "additional"):
            for rrset in getattr(self, section):
                lines.append(f"  {section[:4]}: {rrset}")
        return "\n".join(lines)


# RFC 1035 types whose rdata names a server may compress, and so may re-case (RFC 4343 4.1).
COMPRESSIBLE = frozenset(
    dns.rdatatype.from_text(t)
    for t in ("NS", "MD", "MF", "CNAME", "SOA", "MB", "MG", "MR", "PTR", "MINFO", "MX")
)


def fold_case(view: View) -> View:
    """``view`` with the names inside compressible rdata lowercased (owners already are)."""

    def fold(section: tuple[RRsetView, ...]) -> tuple[RRsetView, ...]:
        out = []
        for rrset in section:
            if rrset.rdtype in COMPRESSIBLE:
                rrset = replace(rrset, records=tuple(sorted((t.lower(), ttl) for t, ttl in rrset.records)))
            out.append(rrset)
        return tuple(out)

    return replace(view, answer=fold(view.answer), authority=fold(view.authority),
                   additional=fold(view.additional))


def _group(section: Iterable[dns.rrset.RRset], ordered: bool) -> tuple[RRsetView, ...]:
    """Regroup one-RR-per-RRset records into RRsets, in order of first appearance."""
    groups: dict[tuple[str, dns.rdataclass.RdataClass, dns.rdatatype.RdataType], list[Record]] = {}
    for rr in section:
        key = (rr.name.to_text().lower(), rr.rdclass, rr.rdtype)
        groups.setdefault(key, []).extend((rd.to_text(), rr.ttl) for rd in rr)
    views = [RRsetView(n, c, t, tuple(sorted(recs))) for (n, c, t), recs in groups.items()]
    if not ordered:
        views.sort(key=lambda v: (v.name, v.rdtype, v.records))
    return tuple(views)


def view(msg: dns.message.Message) -> View:
    """Normalise a reply parsed with ``one_rr_per_rrset=True``."""
    return View(
        question=tuple(f"{q.name.to_text()} {dns.rdatatype.to_text(q.rdtype)}" for q in msg.question),
        opcode=msg.opcode(),
        rcode=msg.rcode(),
        flags=frozenset(dns.flags.to_text(msg.flags).split()),
        edns=msg.edns,
        payload=msg.payload if msg.edns >= 0 else 0,
        ednsflags=msg.ednsflags & 0xFFFF if msg.edns >= 0 else 0,
        options=tuple(sorted(int(o.otype) for o in msg.options)),
        answer=_group(msg.answer, ordered=True),
        authority=_group(msg.authority, ordered=False),
        additional=_group(msg.additional, ordered=False),
    )


# --------------------------------------------------------------------------------------------------
# zones and probe generation


@dataclass(frozen=True)
class ZoneData:
    """A zone file as dnspython reads it: the independent view of what the zone holds."""

    origin: str
    path: Path
    zone: dns.zone.Zone

    @classmethod
    def load(cls, path: Path) -> ZoneData:
        origin = path.name.removesuffix(".zone") + "."
        zone = dns.zone.from_file(str(path), origin=origin, relativize=False, check_origin=True)
        return cls(origin, path, zone)

    def owners(self) -> list[dns.name.Name]:
        """Every owner name and every empty non-terminal above one, apex first."""
        origin = dns.name.from_text(self.origin)
        names: set[dns.name.Name] = set()
        for name in self.zone.nodes:
            while name != origin and name not in names:
                names.add(name)
                name = name.parent()
        return [origin, *sorted(names - {origin})]

    def node_types(self, name: dns.name.Name) -> list[str]:
        node = self.zone.get_node(name)
        if node is None:
            return []
        return [dns.rdatatype.to_text(rds.rdtype) for rds in node.rdatasets]


QTYPES = ("A", "AAAA", "MX", "NS", "TXT", "SOA", "CNAME", "DS", "ANY", "SRV", "DNAME", "TYPE65280")
# Owners that only repeat a pattern (twenty MX targets, ten glue names) get one transport, not three.
_REPETITIVE_SUFFIXES = (".manymx.tricky.example.", ".bigdeleg.tricky.example.")


def randomise_case(name: str, rng: random.Random) -> str:
    """The same name with each letter's case flipped at random (never all unchanged)."""
    for _ in range(10):
        out = "".join(c.swapcase() if c.isalpha() and rng.random() < 0.5 else c for c in name)
        if out != name:
            return out
    return name.upper()


def _label_sibling(name: dns.name.Name, prefix: str) -> str:
    """``name`` with ``prefix`` put before its first label (a ``*`` label becomes ``prefix`` + w)."""
    first = name.labels[0].decode().strip("*") or "w"
    rest = [label.decode() for label in name.labels[1:-1]]
    return ".".join([prefix + first, *rest]) + "."


def probes_for_zone(data: ZoneData, rng: random.Random) -> Iterator[Probe]:
    """Every owner x every qtype x every transport, plus missing siblings/children and case variants."""
    for owner in data.owners():
        text = owner.to_text()
        transports = (UDP_EDNS,) if text.endswith(_REPETITIVE_SUFFIXES) else TRANSPORTS
        for qtype in QTYPES:
            for transport in transports:
                yield Probe(text, qtype, transport, "owner")
        for qtype in ("A", "TXT", "SOA"):
            yield Probe(_label_sibling(owner, "nx-"), qtype, UDP_EDNS, "missing sibling")
        for qtype in ("A", "TXT"):
            yield Probe(f"nx.{text}", qtype, UDP_EDNS, "missing child")
        varied = randomise_case(text, rng)
        for qtype in ("A", "ANY", *data.node_types(owner)[:2]):
            yield Probe(varied, qtype, UDP_EDNS, "case variant")


# Names not in any zone file, each chosen for one rule; qualified against tricky.example.
SPECIAL_NAMES: dict[str, str] = {
    "x.w": "wildcard match",
    "a.b.w": "wildcard match, two labels",
    "x.sub.w": "below an existing name under a wildcard's parent (RFC 4592 2.2.1: NXDOMAIN)",
    "q.cw": "wildcard CNAME",
    "q.cwo": "wildcard CNAME to a missing name in another zone",
    "q.wc": "wildcard CNAME to a wildcard",
    "q.w2": "wildcard that is an empty non-terminal",
    "x.a.*.w2": "below an owner below a wildcard",
    "q.dnw": "wildcard owning a DNAME",
    "x.q.dnw": "below a wildcard owning a DNAME",
    "x.dn": "below a DNAME, target in another zone",
    "a.b.dn": "two labels below a DNAME",
    "x.a-much-longer-target-name.dn": "DNAME target that exists in another zone",
    "x.indn": "DNAME into this zone's wildcard",
    "sub.indn": "DNAME onto an existing name",
    "x.dn2": "DNAME into a delegation",
    "ns.dn2": "DNAME onto glue",
    "x.dnself": "DNAME to the apex",
    "x.x.dnself": "DNAME to the apex, twice",
    "host.sub": "below a cut",
    "a.b.sub": "two labels below a cut",
    "ns.sub": "glue",
    "mx.sub": "occluded name",
    "ns.sib2": "glue of a sibling delegation",
    "x.nods": "below a cut without glue",
    "deep.er": "cut below an empty non-terminal",
    "x.deep.er": "below a cut below an empty non-terminal",
    "x.b.c": "below an empty non-terminal",
    "nothere": "missing name that a CNAME points to",
    "x.child": "name in the child zone (its wildcard)",
    "nx.www.child": "missing name below the child's leaf",
    "x.bigdeleg": "referral whose in-domain glue does not fit 512 octets (RFC 9471 3.1)",
    "x.authns": "referral to an in-zone NS name that is not glue",
}
OUT_OF_ZONE = ("example.", "xtricky.example.", "www.example.net.", ".", "tricky.example.net.")


def dname_overflow_name() -> str:
    """A name that fits in 255 octets below ``dn`` but not after DNAME substitution (RFC 6672 2.2).

    ``dn`` redirects to a target 22 octets longer than itself; a 251-octet name becomes 273.
    """
    suffix = "dn.tricky.example."
    room = 250 - len(suffix)  # presentation length of the labels before the suffix, dots included
    labels: list[str] = []
    while room > 0:
        size = min(63, room - 1)
        labels.append("a" * size)
        room -= size + 1
    return ".".join(labels) + "." + suffix


def special_probes() -> Iterator[Probe]:
    for rel, why in SPECIAL_NAMES.items():
        name = f"{rel}.tricky.example."
        for qtype in ("A", "TXT", "ANY", "MX", "NS", "DS", "CNAME", "DNAME"):
            for transport in TRANSPORTS:
                yield Probe(name, qtype, transport, why)
    for name in OUT_OF_ZONE:
        for qtype in ("A", "SOA", "NS"):
            yield Probe(name, qtype, UDP_EDNS, "outside every zone")
    for qtype in ("A", "TXT", "DNAME"):
        for transport in TRANSPORTS:
            yield Probe(dname_overflow_name(), qtype, transport, "DNAME substitution overflows")
    # Truncation and EDNS edge cases on the names built for them.
    for name in ("big", "huge", "manymx", "tricky.example.", "www", "nothere", "host.sub", "x.bigdeleg",
                 "wmx", "mx13.manymx"):
        qname = name if name.endswith(".") else f"{name}.tricky.example."
        for qtype in ("TXT", "MX", "ANY", "A"):
            for transport in (UDP_EDNS512, UDP_EDNS_V1, TCP_PLAIN):
                yield Probe(qname, qtype, transport, "transport edge")


def all_probes(zone_files: Iterable[Path], seed: int = 4592) -> list[Probe]:
    rng = random.Random(seed)
    probes: list[Probe] = []
    for path in zone_files:
        probes.extend(probes_for_zone(ZoneData.load(path), rng))
    probes.extend(special_probes())
    seen: set[Probe] = set()
    unique = []
    for probe in probes:
        if probe not in seen:
            seen.add(probe)
            unique.append(probe)
    return unique
