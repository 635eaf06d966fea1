"""Query answering: a pure function of (question, zone snapshot) to sections.

This is RFC 1034 4.3.2 for an authoritative-only server, with the later
rules layered in: negative answers (RFC 2308), wildcards (RFC 4592), DNAME
(RFC 6672), minimal ANY (RFC 8482) and CNAME chains (RFC 6604 for the rcode).
Nothing here does I/O or touches the registry; the caller picks the zone.
One function per outcome (referral, negative, positive), as NSD and Knot do.
"""

from __future__ import annotations

from . import rrtypes
from .names import MAX_NAME, WILDCARD_LABEL, ancestors, is_subdomain, parent
from .wire import NOERROR, NXDOMAIN, YXDOMAIN, RRsetOut
from .zone import SOA, Zone, blob_has_type, decode_node

MAX_CHAIN = 16  # CNAME/DNAME hops followed inside one zone before giving up


class Answer:
    """Sections of a response, before encoding."""

    __slots__ = ("aa", "additional", "answer", "authority", "rcode")

    def __init__(self) -> None:
        self.rcode = NOERROR
        self.aa = True
        self.answer: list[RRsetOut] = []
        self.authority: list[RRsetOut] = []
        self.additional: list[RRsetOut] = []


def _soa_rrset(zone: Zone) -> RRsetOut:
    soa: SOA = zone.soa
    # RFC 2308 3: the SOA in a negative answer carries min(TTL, MINIMUM).
    return (zone.origin, rrtypes.SOA, [(soa.negative_ttl, soa.rdata)])


def find_cut(zone: Zone, qname: bytes, qtype: int) -> tuple[bytes, bool] | None:
    """RFC 1034 4.3.2 step 3b and RFC 6672 3.2: the first cut or DNAME above *qname*.

    Returns (owner, is_dname).  A DS query at a cut is answered from the
    parent side (RFC 4035 3.1.4.1), so the cut at *qname* itself is skipped.
    Zones without delegations or DNAMEs skip the walk entirely.
    """
    cuts = zone.n_cuts
    dnames = zone.n_dnames
    for name in ancestors(qname, zone.origin):
        blob = zone.get(name)
        if blob is None:
            return None  # nothing exists below a missing name
        if not blob:
            continue  # empty non-terminal
        if cuts and blob_has_type(blob, rrtypes.NS):
            if name == qname and qtype == rrtypes.DS:
                return None
            return name, False
        if dnames and name != qname and blob_has_type(blob, rrtypes.DNAME):
            return name, True
    return None


def _under_cut(zone: Zone, name: bytes) -> bool:
    """True when *name* is at or below a delegation (occluded, i.e. glue)."""
    if not zone.n_cuts:
        return False
    return any(zone.has_type(anc, rrtypes.NS) for anc in ancestors(name, zone.origin))


def answer_query(zone: Zone, qname: bytes, qtype: int, *, minimal_any: bool) -> Answer:
    """Answer *qname*/*qtype* (qname lowercased) from *zone*."""
    ans = Answer()
    seen: set[bytes] = set()
    name = qname
    for _hop in range(MAX_CHAIN):
        seen.add(name)
        nxt = _step(zone, ans, name, qtype, minimal_any)
        if nxt is None:
            break
        if nxt in seen or not is_subdomain(nxt, zone.origin):
            break  # loop, or the chain leaves this zone: the client follows it
        name = nxt
    _add_additional(zone, ans)
    return ans


def _step(zone: Zone, ans: Answer, name: bytes, qtype: int, minimal_any: bool) -> bytes | None:
    """Resolve one name of a chain; return the next name to follow, if any."""
    if zone.n_cuts or zone.n_dnames:
        hit = find_cut(zone, name, qtype)
        if hit is not None:
            owner, is_dname = hit
            if is_dname:
                return _dname(zone, ans, name, owner)
            _referral(zone, ans, owner)
            return None
    blob = zone.get(name)
    if blob is None:
        closest = parent(name)
        while closest not in zone:
            closest = parent(closest)
        blob = zone.get(WILDCARD_LABEL + closest)  # RFC 4592 3.3.1
        if blob is None:
            ans.rcode = NXDOMAIN
            ans.authority.append(_soa_rrset(zone))
            return None
    rrsets = decode_node(blob)
    if qtype == rrtypes.ANY:
        _any(zone, ans, name, rrsets, minimal_any)
        return None
    records = rrsets.get(qtype)
    if records is not None:
        ans.answer.append((name, qtype, records))
        return None
    cname = rrsets.get(rrtypes.CNAME)
    if cname is not None and qtype != rrtypes.CNAME:
        ans.answer.append((name, rrtypes.CNAME, cname))
        return cname[0][1].lower()
    _nodata(zone, ans)
    return None


def _any(zone: Zone, ans: Answer, name: bytes, rrsets: dict[int, list[tuple[int, bytes]]],
         minimal: bool) -> None:
    """RFC 8482 4.2: over UDP one RRset stands for all of them."""
    if not rrsets:
        _nodata(zone, ans)
        return
    for rtype, records in rrsets.items():
        if rtype in rrtypes.DNSSEC_TYPES:
            continue
        ans.answer.append((name, rtype, records))
        if minimal:
            break
    if not ans.answer:
        _nodata(zone, ans)


def _nodata(zone: Zone, ans: Answer) -> None:
    ans.authority.append(_soa_rrset(zone))


def _referral(zone: Zone, ans: Answer, cut: bytes) -> None:
    """RFC 1034 4.3.2 step 3b: not authoritative; NS in authority, glue in additional."""
    rrsets = zone.rrsets(cut) or {}
    ans.aa = False
    if ans.answer:
        # A chain that ran into a delegation: the answer so far is still ours.
        ans.aa = True
    ans.authority.append((cut, rrtypes.NS, rrsets.get(rrtypes.NS, [])))


def _dname(zone: Zone, ans: Answer, name: bytes, owner: bytes) -> bytes | None:
    """RFC 6672 3.2: answer the DNAME and a CNAME synthesised from it."""
    records = (zone.rrsets(owner) or {}).get(rrtypes.DNAME, [])
    if not records:
        return None
    ttl, target = records[0]
    ans.answer.append((owner, rrtypes.DNAME, records))
    new_name = name[:len(name) - len(owner)] + target
    if len(new_name) > MAX_NAME:
        ans.rcode = YXDOMAIN  # RFC 6672 2.2
        return None
    ans.answer.append((name, rrtypes.CNAME, [(ttl, new_name)]))
    return new_name.lower()


def _add_additional(zone: Zone, ans: Answer) -> None:
    """RFC 1034 3.6.2 / RFC 2782: addresses of NS, MX and SRV targets in this zone."""
    targets: list[tuple[bytes, bool]] = []
    for section in (ans.answer, ans.authority):
        for _owner, rtype, records in section:
            offset = rrtypes.ADDITIONAL_TARGET.get(rtype)
            if offset is None:
                continue
            for _ttl, rdata in records:
                targets.append((rdata[offset:].lower(), rtype == rrtypes.NS))
    if not targets:
        return
    done: set[bytes] = set()
    for target, glue_ok in targets:
        if target in done or not is_subdomain(target, zone.origin):
            continue
        done.add(target)
        blob = zone.get(target)
        if not blob:
            continue
        if not glue_ok and _under_cut(zone, target):
            continue
        rrsets = decode_node(blob)
        for rtype in (rrtypes.A, rrtypes.AAAA):
            addrs = rrsets.get(rtype)
            if addrs:
                ans.additional.append((target, rtype, addrs))
