"""secondns against BIND 9 on DNSSEC-signed zones, question by question.

Three zones signed by dnssec-signzone (``signing.STANDARD_ZONES``: NSEC; NSEC3 with salt and
iterations; the same with opt-out) are served by BIND (``peers.Bind``: a plain primary with
``minimal-responses no-auth;`` and ``dnssec-validation no;``; it serves the pre-signed data as
it is, never re-signs) and by secondns from the same files.  The questions: every owner (empty
non-terminals and NSEC3 owners included) x the types a validator asks for, over UDP with EDNS
1232 and DO and over TCP with DO; missing names, names under the wildcards (answer and NODATA),
below empty non-terminals, below the signed and unsigned delegations and below the DNAME; a
512-octet DO sample for truncation; and a sample without DO, where no DNSSEC record may appear
unless the question asks for its type.

A reply is compared as rcode, AA, TC, the DO bit echoed, and each section as a *set* of RRsets
(owner, type, TTL and rdata of every record; RRSIGs grouped by the type they cover, so each
RRSIG RRset is compared whole).  Signatures are the signer's, so their rdata must match octet for
octet.  A difference passes only when one entry of ``JUSTIFIED`` explains it; each says why the
difference is legitimate.  Counts per zone (compared, identical, justified) are printed
(``pytest -s``) and written to ``dnssec-differential.json`` in pytest's base temporary directory.
"""

from __future__ import annotations

import json
import socket
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rrset
import dns.zone
import pytest
from peers import LOOPBACK, Bind, Secondns, ZoneSpec, require_binary
from signing import SignedZone, make_standard_zones

pytestmark = pytest.mark.integration

TIMEOUT = 3.0
IDENTICAL = "identical"
UNJUSTIFIED = "UNJUSTIFIED"


# --------------------------------------------------------------------------------------------------
# probes and normalised replies


@dataclass(frozen=True)
class Way:
    """How a question is sent."""

    name: str
    tcp: bool
    edns: int  # -1: no OPT record
    payload: int
    do: bool


UDP_DO = Way("udp+do", tcp=False, edns=0, payload=1232, do=True)
TCP_DO = Way("tcp+do", tcp=True, edns=0, payload=1232, do=True)
UDP512_DO = Way("udp512+do", tcp=False, edns=0, payload=512, do=True)
UDP_NO_DO = Way("udp", tcp=False, edns=0, payload=1232, do=False)
UDP_NO_EDNS = Way("udp-no-edns", tcp=False, edns=-1, payload=512, do=False)


@dataclass(frozen=True)
class Probe:
    qname: str
    qtype: str
    way: Way
    why: str

    def message(self) -> dns.message.Message:
        msg = dns.message.make_query(self.qname, self.qtype, use_edns=self.way.edns,
                                     payload=self.way.payload, want_dnssec=self.way.do)
        msg.flags &= ~dns.flags.RD
        return msg

    def send(self, port: int, msg: dns.message.Message) -> Reply:
        """The normalised reply; a lost UDP datagram is retried once."""
        if self.way.tcp:
            reply = dns.query.tcp(msg, LOOPBACK, timeout=TIMEOUT, port=port, one_rr_per_rrset=True)
            return normalise(reply, 0)
        for attempt in (1, 2):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.settimeout(TIMEOUT)
                sock.sendto(msg.to_wire(), (LOOPBACK, port))
                try:
                    wire = sock.recv(65535)
                except TimeoutError:
                    if attempt == 2:
                        raise
                    continue
            # one record per RRset, so every record keeps its own TTL
            return normalise(dns.message.from_wire(wire, one_rr_per_rrset=True), len(wire))
        raise AssertionError("unreachable")

    def __str__(self) -> str:
        return f"{self.qname} {self.qtype} over {self.way.name} ({self.why})"


@dataclass(frozen=True, order=True)
class RRsetView:
    """Owner (lowercased), type, the covered type for RRSIGs, and the records as (TTL, rdata)."""

    name: str
    rdtype: int
    covers: int
    records: frozenset[tuple[int, str]]

    def __str__(self) -> str:
        kind = dns.rdatatype.to_text(self.rdtype)
        if self.covers:
            kind += f"({dns.rdatatype.to_text(self.covers)})"
        recs = " | ".join(f"{ttl} {text[:60]}" for ttl, text in sorted(self.records))
        return f"{self.name} {kind} [{recs}]"


Section = frozenset[RRsetView]


@dataclass(frozen=True)
class Reply:
    rcode: int
    aa: bool
    tc: bool
    do: bool
    answer: Section
    authority: Section
    additional: Section
    size: int = field(default=0, compare=False)  # octets on the wire (UDP; 0 over TCP)

    def describe(self) -> str:
        flags = " ".join(f for f, on in (("AA", self.aa), ("TC", self.tc), ("DO", self.do)) if on)
        lines = [f"{dns.rcode.to_text(self.rcode)} {flags}"]
        for section in ("answer", "authority", "additional"):
            for rrset in sorted(getattr(self, section)):
                lines.append(f"  {section[:4]}: {rrset}")
        return "\n".join(lines)

    def dnssec_types(self) -> set[int]:
        return {r.rdtype for s in (self.answer, self.authority, self.additional) for r in s
                if r.rdtype in _DNSSEC_TYPES}


_DNSSEC_TYPES = frozenset({dns.rdatatype.RRSIG, dns.rdatatype.NSEC, dns.rdatatype.NSEC3,
                           dns.rdatatype.DNSKEY, dns.rdatatype.DS, dns.rdatatype.NSEC3PARAM})


def _section(rrsets: list[dns.rrset.RRset]) -> Section:
    groups: dict[tuple[str, int, int], set[tuple[int, str]]] = {}
    for rr in rrsets:
        covers = int(rr[0].type_covered) if rr.rdtype == dns.rdatatype.RRSIG else 0
        key = (rr.name.to_text().lower(), int(rr.rdtype), covers)
        groups.setdefault(key, set()).update((rr.ttl, rd.to_text()) for rd in rr)
    return frozenset(RRsetView(n, t, c, frozenset(recs)) for (n, t, c), recs in groups.items())


def normalise(msg: dns.message.Message, size: int) -> Reply:
    return Reply(
        rcode=msg.rcode(),
        aa=bool(msg.flags & dns.flags.AA),
        tc=bool(msg.flags & dns.flags.TC),
        do=bool(msg.ednsflags & dns.flags.DO),
        answer=_section(msg.answer),
        authority=_section(msg.authority),
        additional=_section(msg.additional),
        size=size,
    )


# --------------------------------------------------------------------------------------------------
# the questions

# Relative names outside the zone's owners, each there for one rule.
SPECIAL: dict[str, str] = {
    "nx": "NXDOMAIN",
    "0": "NXDOMAIN, sorts before most owners",
    "zzzz": "NXDOMAIN, sorts after every owner (chain wraps)",
    "nx.www": "NXDOMAIN below an existing leaf",
    "x.nx": "NXDOMAIN two labels below the closest encloser",
    "x.w": "wildcard answer / NODATA",
    "a.b.w": "wildcard, two labels",
    "x.host.w": "below an existing name beside the wildcard: NXDOMAIN (RFC 4592 2.2.1)",
    "x.cw": "wildcard CNAME",
    "x.b.c": "below an empty non-terminal: NXDOMAIN",
    "x.c": "below an empty non-terminal, one level up",
    "host.secure": "below the signed delegation",
    "a.b.secure": "two labels below the signed delegation",
    "ns.secure": "glue of the signed delegation",
    "host.insecure": "below an unsigned delegation",
    "ns.insecure": "glue of an unsigned delegation",
    "host.remote": "below an unsigned delegation without glue",
    "www.dn": "DNAME, target exists",
    "nx.dn": "DNAME, target missing",
    "a.b.dn": "DNAME, two labels below",
}
OWNER_TYPES = ("A", "AAAA", "TXT", "MX", "NS", "SOA", "DS", "CNAME", "DNSKEY", "RRSIG", "DNAME")
SPECIAL_TYPES = ("A", "TXT", "AAAA", "DS", "NS", "MX")
NO_DO_TYPES = ("A", "TXT", "DNSKEY", "RRSIG", "DS", "NS")
TRUNCATION_NAMES = ("big", "mid", "www", "@", "nx", "x.w")


def _owners(zone: SignedZone) -> list[str]:
    """Every owner name and empty non-terminal, apex first (NSEC3 owners included)."""
    dzone = dns.zone.from_file(str(zone.path), origin=zone.origin, relativize=False)
    origin = dns.name.from_text(zone.origin)
    names: set[dns.name.Name] = set()
    for name in dzone.nodes:
        while name != origin and name not in names:
            names.add(name)
            name = name.parent()
    return [zone.origin, *(n.to_text() for n in sorted(names))]


def probes_for(zone: SignedZone) -> list[Probe]:
    denial_types = ("NSEC",) if zone.kind == "nsec" else ("NSEC3", "NSEC3PARAM")
    probes: list[Probe] = []
    for owner in _owners(zone):
        for qtype in (*OWNER_TYPES, *denial_types):
            for way in (UDP_DO, TCP_DO):
                probes.append(Probe(owner, qtype, way, "owner"))
        for qtype in NO_DO_TYPES:
            probes.append(Probe(owner, qtype, UDP_NO_DO, "owner, no DO"))
    for rel, why in SPECIAL.items():
        for qtype in (*SPECIAL_TYPES, *denial_types):
            for way in (UDP_DO, TCP_DO):
                probes.append(Probe(zone.fqdn(rel), qtype, way, why))
        for qtype in ("A", "DS"):
            probes.append(Probe(zone.fqdn(rel), qtype, UDP_NO_DO, f"{why}, no DO"))
    for rel in TRUNCATION_NAMES:
        for qtype in ("TXT", "A", "DNSKEY", "MX"):
            for way in (UDP512_DO, UDP_NO_EDNS):
                probes.append(Probe(zone.fqdn(rel), qtype, way, "truncation"))
    return probes


# --------------------------------------------------------------------------------------------------
# justified differences


@dataclass(frozen=True)
class Pair:
    """Both replies to one probe; ``bind_tcp`` is BIND's reply over TCP, fetched when BIND
    truncated and secondns did not."""

    probe: Probe
    bind: Reply
    ours: Reply
    bind_tcp: Reply | None = None


@dataclass(frozen=True)
class Justification:
    key: str
    reason: str
    applies: Callable[[Pair], bool]


def _same_header(bind: Reply, ours: Reply) -> bool:
    return (bind.rcode, bind.aa, bind.tc, bind.do) == (ours.rcode, ours.aa, ours.tc, ours.do)


def _same_except(bind: Reply, ours: Reply, *sections: str) -> bool:
    kept = [s for s in ("answer", "authority", "additional") if s not in sections]
    return _same_header(bind, ours) and all(getattr(bind, s) == getattr(ours, s) for s in kept)


def _truncated(p: Pair) -> bool:
    return p.bind.tc and p.ours.tc and _same_header(p.bind, p.ours)


def _fits_where_bind_truncates(p: Pair) -> bool:
    if not p.bind.tc or p.ours.tc or p.bind_tcp is None or p.ours.size > p.probe.way.payload:
        return False
    return replace(p.ours, tc=False) == replace(p.bind_tcp, tc=False)


def _rrsig_query_in_full(p: Pair) -> bool:
    if p.probe.qtype != "RRSIG" or p.probe.way.tcp or not _same_except(p.bind, p.ours, "answer"):
        return False
    owner = p.probe.qname.lower()
    every = all(r.name == owner and r.rdtype == dns.rdatatype.RRSIG for r in p.ours.answer)
    return every and len(p.bind.answer) == 1 and p.bind.answer < p.ours.answer


def _nsec_at_cut_referred(p: Pair) -> bool:
    if p.probe.qtype != "NSEC" or p.ours.aa or p.ours.answer:
        return False
    cut = p.probe.qname.lower()
    ns = [r for r in p.ours.authority if r.rdtype == dns.rdatatype.NS]
    answered = {(r.name, r.rdtype, r.covers) for r in p.bind.answer}
    return (p.bind.aa and len(ns) == 1 and ns[0].name == cut
            and answered == {(cut, dns.rdatatype.NSEC, 0), (cut, dns.rdatatype.RRSIG, dns.rdatatype.NSEC)})


def _soa_nxdomain_ttl(p: Pair) -> bool:
    if p.probe.qtype != "SOA" or p.bind.rcode != dns.rcode.NXDOMAIN:
        return False
    if not _same_except(p.bind, p.ours, "authority"):
        return False
    mine = {r for r in p.ours.authority if dns.rdatatype.SOA in (r.rdtype, r.covers)}
    zeroed = {replace(r, records=frozenset((0, text) for _ttl, text in r.records)) for r in mine}
    return p.bind.authority == (p.ours.authority - mine) | zeroed


JUSTIFIED: tuple[Justification, ...] = (
    Justification(
        "truncated reply contents",
        "RFC 2181 9: 'Where TC is set, the partial RRSet that would not completely fit may be "
        "left in the response.  When a DNS client receives a reply with TC set, it should ignore "
        "that response, and query again'.  BIND fills the space with what fits; secondns sends "
        "whole RRsets only, each with its RRSIG (RFC 4035 3.1.1).  The same questions over TCP "
        "are compared in full.",
        _truncated,
    ),
    Justification(
        "complete reply where BIND truncates",
        "The whole reply fits the client's 512-octet EDNS buffer (measured: at most the payload), "
        "so secondns sends it, equal to BIND's own untruncated (TCP) reply.  BIND sets TC on it "
        "because its renderer keeps room in reserve (for EDNS options and TSIG) that this query "
        "does not use.  RFC 2181 9: 'The TC bit should be set in responses only when an RRSet is "
        "required as a part of the response, but could not be included in its entirety.'",
        _fits_where_bind_truncates,
    ),
    Justification(
        "RRSIG query over UDP answered in full",
        "RFC 1034 4.3.2 step 3a: 'copy all RRs which match QTYPE into the answer section'; no RFC "
        "limits an answer to QTYPE=RRSIG (RFC 4035 3.1 says nothing; RFC 8482 is about ANY "
        "only), so secondns returns every RRSIG at the name.  BIND applies its minimal-any "
        "('minimal-any yes;' in peers.Bind) to RRSIG queries over UDP too and returns one "
        "RRSIG RRset.  Over TCP both answer in full, and the two are compared there; BIND's "
        "UDP answer is a subset of ours.",
        _rrsig_query_in_full,
    ),
    Justification(
        "NSEC query at a delegation point is referred",
        "RFC 1034 4.3.2 step 3b: 'If a match would take us out of the authoritative data, we have "
        "a referral.'  RFC 4035 3.1.4.1 makes "
        "an exception for DS alone, the one type that lives only on the parent side.  The NSEC "
        "type exists on both sides of a cut (the child's apex has its own), so secondns refers "
        "the client to the child; BIND answers the parent-side NSEC authoritatively.  The "
        "parent's NSEC still appears wherever it proves something (DS NODATA, insecure "
        "referrals), which is compared here too.",
        _nsec_at_cut_referred,
    ),
    Justification(
        "SOA of an NXDOMAIN reply to an SOA query",
        "RFC 2308 3: 'The TTL of this record is set from the minimum of the MINIMUM field of the "
        "SOA record and the TTL of the SOA itself', which secondns sends, its RRSIG with the same "
        "TTL ('The TTL SIG record associated with the SOA record should also be trimmed').  BIND "
        "(query.c) sends TTL 0 on both when the question itself is an SOA query (here: SOA at an "
        "NSEC3 owner name, which does not exist, RFC 5155 7.2.9), so resolvers do not cache the "
        "SOA as an answer; no RFC asks for that.  Only the TTLs of the SOA and its RRSIG differ.",
        _soa_nxdomain_ttl,
    ),
)


def classify(pair: Pair) -> str:
    if pair.bind == pair.ours:
        return IDENTICAL
    keys = [j.key for j in JUSTIFIED if j.applies(pair)]
    if len(keys) == 1:
        return keys[0]
    return UNJUSTIFIED


# --------------------------------------------------------------------------------------------------
# the run


@dataclass(frozen=True)
class Outcome:
    pair: Pair
    category: str

    @property
    def probe(self) -> Probe:
        return self.pair.probe

    @property
    def ours(self) -> Reply:
        return self.pair.ours

    def describe(self) -> str:
        bind = self.pair.bind.describe().replace("\n", "\n        ")
        ours = self.ours.describe().replace("\n", "\n        ")
        return f"{self.probe}: {self.category}\n  BIND: {bind}\n  ours: {ours}"


@dataclass
class ZoneRun:
    zone: SignedZone
    outcomes: list[Outcome] = field(default_factory=list)

    def counts(self) -> dict[str, object]:
        cats = Counter(o.category for o in self.outcomes)
        return {
            "queries_compared": len(self.outcomes),
            "identical": cats[IDENTICAL],
            "justified": {j.key: cats[j.key] for j in JUSTIFIED if cats[j.key]},
            "unjustified": cats[UNJUSTIFIED],
            "by_way": dict(Counter(o.probe.way.name for o in self.outcomes)),
        }


def _run(zone: SignedZone, bind: Bind, ours: Secondns) -> ZoneRun:
    run = ZoneRun(zone)
    for probe in probes_for(zone):
        msg = probe.message()
        pair = Pair(probe, probe.send(bind.port, msg), probe.send(ours.port, msg))
        if pair.bind.tc and not pair.ours.tc:
            tcp = Probe(probe.qname, probe.qtype, replace(probe.way, tcp=True), probe.why)
            pair = replace(pair, bind_tcp=tcp.send(bind.port, msg))
        run.outcomes.append(Outcome(pair, classify(pair)))
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ZoneRun]]:
    require_binary("named")
    base = tmp_path_factory.mktemp("dnssec-diff")
    zones = make_standard_zones(base / "signed")
    bind = Bind(base / "bind", [ZoneSpec(z.name, z.path) for z in zones.values()])
    ours = Secondns(base / "secondns", zone_files={z.name: z.path for z in zones.values()}, http=False)
    with bind, ours:
        runs = {kind: _run(zone, bind, ours) for kind, zone in zones.items()}
    report = {kind: run.counts() for kind, run in runs.items()}
    path = tmp_path_factory.getbasetemp() / "dnssec-differential.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nDNSSEC differential test against BIND ({path}):\n{json.dumps(report, indent=2)}")
    yield runs


# --------------------------------------------------------------------------------------------------
# the tests


def _unjustified(run: ZoneRun) -> str:
    bad = [o for o in run.outcomes if o.category == UNJUSTIFIED]
    shown = "\n".join(o.describe() for o in bad[:20])
    more = f"\n... and {len(bad) - 20} more" if len(bad) > 20 else ""
    return f"{len(bad)} of {len(run.outcomes)} replies differ from BIND without justification:\n{shown}{more}"


@pytest.mark.parametrize("label", ["nsec", "nsec3", "optout"])
def test_signed_zone_answers_match_bind(runs: dict[str, ZoneRun], label: str) -> None:
    run = runs[label]
    assert all(o.category != UNJUSTIFIED for o in run.outcomes), _unjustified(run)


def test_every_justification_is_still_needed(runs: dict[str, ZoneRun]) -> None:
    used = {o.category for run in runs.values() for o in run.outcomes}
    stale = [j.key for j in JUSTIFIED if j.key not in used]
    assert not stale, f"no difference needs these justifications any more; delete them: {stale}"


def test_without_do_no_dnssec_record_is_added(runs: dict[str, ZoneRun]) -> None:
    # RFC 3225 3 and RFC 4035 3: without DO, DNSSEC RRs appear only when the question asks
    # for that very type (a DS or DNSKEY query, an RRSIG query).
    bad = []
    for run in runs.values():
        for o in run.outcomes:
            if o.probe.way.do:
                continue
            asked = {dns.rdatatype.from_text(o.probe.qtype)}
            extra = o.ours.dnssec_types() - asked
            if extra:
                bad.append(f"{o.probe}: {sorted(dns.rdatatype.to_text(t) for t in extra)}")
    assert not bad, "\n".join(bad[:20])


def _unpaired(probe: Probe, reply: Reply) -> list[str]:
    """RRSIGs without the RRset they cover, and answer RRsets without their RRSIG."""
    out = []
    for label in ("answer", "authority", "additional"):
        if label == "answer" and probe.qtype == "RRSIG":
            continue  # the RRSIGs are the answer
        section: Section = getattr(reply, label)
        data = {(r.name, r.rdtype) for r in section if r.rdtype != dns.rdatatype.RRSIG}
        sigs = {(r.name, r.covers) for r in section if r.rdtype == dns.rdatatype.RRSIG}
        out += [f"{probe}: {label} has RRSIG({dns.rdatatype.to_text(t)}) of {n} alone"
                for n, t in sigs - data]
        if label != "answer":
            continue
        dnames = [r.name for r in section if r.rdtype == dns.rdatatype.DNAME]
        for name, rdtype in data - sigs:
            # RFC 6672 5.1: the CNAME synthesised from a DNAME is not signed.
            if not (rdtype == dns.rdatatype.CNAME and any(name.endswith("." + d) for d in dnames)):
                out.append(f"{probe}: answer {name} {dns.rdatatype.to_text(rdtype)} has no RRSIG")
    return out


def test_every_rrsig_travels_with_the_rrset_it_covers(runs: dict[str, ZoneRun]) -> None:
    # RFC 4035 3.1.1 and 3.1.3: signed data and its RRSIGs go together, truncated replies
    # included (wire.ResponseWriter drops an RRset and its RRSIG as one).
    bad = [line for run in runs.values() for o in run.outcomes if o.probe.way.do
           for line in _unpaired(o.probe, o.ours)]
    assert not bad, "\n".join(bad[:20])


def test_questions_cover_both_transports_and_mostly_draw_signed_replies(runs: dict[str, ZoneRun]) -> None:
    for run in runs.values():
        ways = Counter(o.probe.way for o in run.outcomes)
        assert ways[UDP_DO] >= 300 and ways[TCP_DO] >= 300, ways
        signed_answers = sum(bool(o.ours.dnssec_types()) for o in run.outcomes if o.probe.way.do)
        assert signed_answers >= 0.9 * sum(o.probe.way.do for o in run.outcomes)
