"""Query answering: a pure function of (question, zone snapshot) to sections.

This is RFC 1034 4.3.2 for an authoritative-only server, with the later
rules layered in: negative answers (RFC 2308), wildcards (RFC 4592), DNAME
(RFC 6672), minimal ANY (RFC 8482), CNAME chains (RFC 6604 for the rcode),
and for DO queries on signed zones the RRSIGs and denial proofs of
RFC 4035 3.1 / RFC 5155 7.2 (see dnssec.py).  Nothing here does I/O or
touches the registry; the caller picks the zone.  One function per outcome
(referral, negative, positive), as NSD and Knot do.
"""

from __future__ import annotations

from collections.abc import Collection

from secondns import dnssec, rrtypes
from secondns.names import MAX_NAME, WILDCARD_LABEL, is_subdomain, label_offsets, parent
from secondns.wire import NOERROR, NXDOMAIN, YXDOMAIN, RRsetOut
from secondns.zone import SOA, RRsetMap, Zone, ZoneView, blob_has_type, decode_node

MAX_CHAIN = 16  # CNAME/DNAME hops followed inside one zone before giving up
# BIND 9.18 DNS_RDATASET_MAXADDITIONAL: a larger NS/MX/SRV RRset gets no additional processing.
MAX_ADDITIONAL = 13
_NSEC3_ONLY = frozenset({rrtypes.NSEC3, rrtypes.RRSIG})


class Answer:
    """Sections of a response, before encoding.

    An RRSIG RRset directly after the RRset it covers is kept with it when
    the response is truncated (wire.ResponseWriter).  In a referral the
    additional section holds glue only, in-domain glue first: that part must
    fit or the response is truncated (RFC 9471 3.1); the rest may be left out.
    """

    __slots__ = ("aa", "additional", "answer", "authority", "deps", "glue", "proofs", "rcode", "required",
                 "signed", "wildcard")

    def __init__(self, signed: bool = False) -> None:
        self.rcode = NOERROR
        self.aa = True
        self.answer: list[RRsetOut] = []
        self.authority: list[RRsetOut] = []
        self.additional: list[RRsetOut] = []
        self.glue = False  # the additional section is a referral's glue
        self.required = 0  # its first *required* RRsets are in-domain glue (RFC 9471 3.1)
        self.signed = signed  # DO set and the zone is signed: add RRSIGs and proofs
        self.proofs: list[dnssec.Proof] = []
        self.deps: Collection[bytes] = ()  # zone names this answer read
        # The wildcard's parent when the qname itself was answered from a wildcard: response
        # rate limiting accounts such answers by it (BIND rrl.c make_key), see serve/rrl.py.
        self.wildcard: bytes | None = None


def _put(ans: Answer, section: list[RRsetOut], owner: bytes, rtype: int,
         records: list[tuple[int, bytes]], node: RRsetMap | None, sig_ttl: int | None = None) -> None:
    """Append an RRset, and its signatures from *node* when the client set DO."""
    section.append((owner, rtype, records))
    if ans.signed and node is not None:
        sigs = dnssec.signatures(node, rtype, sig_ttl)
        if sigs:
            section.append((owner, rrtypes.RRSIG, sigs))


def _negative_soa(zone: ZoneView, ans: Answer) -> None:
    soa: SOA = zone.soa
    zone.get(zone.origin)  # recorded: every new serial changes this SOA
    # RFC 2308 3: the SOA in a negative answer carries min(TTL, MINIMUM); its RRSIG too.
    ttl = soa.negative_ttl
    apex = zone.rrsets(zone.origin) if ans.signed else None
    _put(ans, ans.authority, zone.origin, rrtypes.SOA, [(ttl, soa.rdata)], apex, ttl)


def _proof(zone: ZoneView, ans: Answer, kind: str, name: bytes, closest: bytes) -> None:
    if ans.signed:
        ans.proofs.append((kind, name, closest))


def _exists(zone: ZoneView, name: bytes) -> bool:
    """Name existence as clients see it: NSEC3 owners live in a tree of their own (RFC 5155 7.2)."""
    blob = zone.get(name)
    if blob is None:
        return False
    if zone.denial is None or zone.denial.kind != "nsec3":
        return True
    nsec3_owner = (bool(blob) and zone.denial is not None and zone.denial.kind == "nsec3"
                   and blob_has_type(blob, rrtypes.NSEC3) and set(decode_node(blob)) <= _NSEC3_ONLY)
    return not nsec3_owner


def _below_origin(name: bytes, origin: bytes) -> list[bytes]:
    """*name* and its ancestors strictly below *origin*, top-down (RFC 1034 4.3.2 step 3b order)."""
    stop = len(name) - len(origin)
    out = []
    pos = 0
    while pos < stop:
        out.append(name[pos:])
        pos += name[pos] + 1
    out.reverse()
    return out


def find_cut(zone: ZoneView, qname: bytes, qtype: int) -> tuple[bytes, bool] | None:
    """RFC 1034 4.3.2 step 3b and RFC 6672 3.2: the first cut or DNAME above *qname*.

    Returns (owner, is_dname).  A DS query at a cut is answered from the
    parent side (RFC 4035 3.1.4.1), so the cut at *qname* itself is skipped.
    Zones without delegations or DNAMEs skip the walk entirely.
    """
    cuts = zone.n_cuts
    dnames = zone.n_dnames
    if dnames and qname != zone.origin and zone.has_type(zone.origin, rrtypes.DNAME):
        return zone.origin, True  # RFC 6672 2.3: a DNAME at the apex redirects everything below
    for name in _below_origin(qname, zone.origin):
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


def _under_cut(zone: ZoneView, name: bytes) -> bool:
    """True when *name* is at or below a delegation (occluded, i.e. glue)."""
    if not zone.n_cuts:
        return False
    return any(zone.has_type(anc, rrtypes.NS) for anc in _below_origin(name, zone.origin))


def answer_query(snapshot: Zone, qname: bytes, qtype: int, *, minimal_any: bool,
                 dnssec_ok: bool = False) -> Answer:
    """Answer *qname*/*qtype* (qname lowercased) from *snapshot*.

    *dnssec_ok* is the DO bit (RFC 3225): only then are RRSIGs and denial
    records added for signed zones.  ``Answer.deps`` lists every name read.
    """
    zone = ZoneView(snapshot)
    ans = Answer(dnssec_ok and zone.denial is not None)
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
    _add_additional(zone, ans, qtype)
    if ans.proofs and zone.denial is not None:
        for proof in ans.proofs:
            for rrset in dnssec.proof_rrsets(zone, zone.denial, proof):
                if rrset not in ans.authority:
                    ans.authority.append(rrset)
    ans.deps = zone.deps.keys()
    return ans


def plain_nxdomain(snapshot: Zone, qname: bytes) -> bool:
    """True when ``answer_query(snapshot, qname, ...)`` is certainly an NXDOMAIN with no
    answer, whatever the (data) qtype: no DNAME or cut on the way down, no wildcard at the
    closest encloser (RFC 1034 4.3.2, RFC 4592 3.3.1).  False means "do the full lookup",
    not "exists".

    Response rate limiting knows a random-subdomain query's account (the zone) from this
    alone, so a response it drops costs no answer (serve/server.py ``UDPServer``).  Signed
    zones and zones with DNAMEs always take the full path (NSEC3 owners do not exist for
    clients, DNAMEs redirect); *qname* (lowercased, strictly below the origin, its labels
    checked by the caller) is walked top-down as ``find_cut`` walks it.
    """
    if snapshot.denial is not None or snapshot.n_dnames:
        return False
    cuts = snapshot.n_cuts
    stop = len(qname) - len(snapshot.origin)
    get = snapshot.get
    closest = snapshot.origin
    # The ancestors strictly below the origin, top-down: start offsets of each suffix.
    for pos in reversed([p for p in label_offsets(qname) if p < stop]):
        name = qname[pos:]
        blob = get(name)
        if blob is None:
            return get(WILDCARD_LABEL + closest) is None
        if cuts and blob and blob_has_type(blob, rrtypes.NS):
            return False  # a referral (or a DS query at the cut)
        closest = name
    return False  # the name exists


def _closest_encloser(zone: ZoneView, name: bytes) -> bytes:
    closest = parent(name)
    while not _exists(zone, closest):
        closest = parent(closest)
    return closest


def _step(zone: ZoneView, ans: Answer, name: bytes, qtype: int, minimal_any: bool) -> bytes | None:
    """Resolve one name of a chain; return the next name to follow, if any."""
    if zone.n_cuts or zone.n_dnames:
        hit = find_cut(zone, name, qtype)
        if hit is not None:
            owner, is_dname = hit
            if is_dname:
                nxt = _dname(zone, ans, name, owner)
                # RFC 1034 4.3.2 step 3a: the synthesised CNAME answers a CNAME query.
                return None if qtype == rrtypes.CNAME else nxt
            _referral(zone, ans, owner)
            return None
    wildcard = False
    closest = name
    if _exists(zone, name):
        blob = zone.get(name) or b""
    else:
        closest = _closest_encloser(zone, name)
        wild = zone.get(WILDCARD_LABEL + closest)  # RFC 4592 3.3.1
        if wild is None:
            ans.rcode = NXDOMAIN
            _negative_soa(zone, ans)
            _proof(zone, ans, dnssec.NXDOMAIN_PROOF, name, closest)
            return None
        blob = wild
        wildcard = True
        if not ans.answer:
            ans.wildcard = closest  # the first name of the chain
    rrsets = decode_node(blob)
    if qtype == rrtypes.ANY:
        _any(zone, ans, name, rrsets, minimal_any, wildcard, closest)
        return None
    records = rrsets.get(qtype)
    if records is not None:
        _put(ans, ans.answer, name, qtype, records, rrsets)
        if wildcard:
            _proof(zone, ans, dnssec.WILDCARD_ANSWER_PROOF, name, closest)
        return None
    cname = rrsets.get(rrtypes.CNAME)
    if cname is not None and qtype != rrtypes.CNAME:
        _put(ans, ans.answer, name, rrtypes.CNAME, cname, rrsets)
        if wildcard:
            _proof(zone, ans, dnssec.WILDCARD_ANSWER_PROOF, name, closest)
        return cname[0][1].lower()
    _nodata(zone, ans, name, wildcard, closest)
    return None


def _any(zone: ZoneView, ans: Answer, name: bytes, rrsets: RRsetMap, minimal: bool, wildcard: bool,
         closest: bytes) -> None:
    """RFC 8482 4.2: over UDP one RRset stands for all of them."""
    for rtype, records in rrsets.items():
        if rtype in rrtypes.DNSSEC_TYPES:
            continue
        _put(ans, ans.answer, name, rtype, records, rrsets)
        if minimal:
            break
    if not ans.answer:
        _nodata(zone, ans, name, wildcard, closest)
    elif wildcard:
        _proof(zone, ans, dnssec.WILDCARD_ANSWER_PROOF, name, closest)


def _nodata(zone: ZoneView, ans: Answer, name: bytes, wildcard: bool, closest: bytes) -> None:
    _negative_soa(zone, ans)
    if wildcard:
        _proof(zone, ans, dnssec.WILDCARD_NODATA_PROOF, name, closest)
    else:
        _proof(zone, ans, dnssec.NODATA_PROOF, name, name)


def _referral(zone: ZoneView, ans: Answer, cut: bytes) -> None:
    """RFC 1034 4.3.2 step 3b: not authoritative; NS in authority, glue in additional.

    Signed zones add the DS RRset and its RRSIG, or the proof that there is
    no DS (RFC 4035 3.1.4).
    """
    rrsets = zone.rrsets(cut) or {}
    ans.aa = bool(ans.answer)  # a chain that ran into a delegation: the answer so far is ours
    ns = rrsets.get(rrtypes.NS, [])
    ans.authority.append((cut, rrtypes.NS, ns))
    _add_glue(zone, ans, cut, ns)
    if not ans.signed:
        return
    ds = rrsets.get(rrtypes.DS)
    if ds:
        _put(ans, ans.authority, cut, rrtypes.DS, ds, rrsets)
    else:
        _proof(zone, ans, dnssec.UNSIGNED_REFERRAL_PROOF, cut, cut)


def _dname(zone: ZoneView, ans: Answer, name: bytes, owner: bytes) -> bytes | None:
    """RFC 6672 3.2: answer the DNAME and a CNAME synthesised from it (unsigned, 3.4)."""
    node = zone.rrsets(owner) or {}
    records = node.get(rrtypes.DNAME, [])
    if not records:
        return None
    ttl, target = records[0]
    _put(ans, ans.answer, owner, rrtypes.DNAME, records, node)
    new_name = name[:len(name) - len(owner)] + target
    if len(new_name) > MAX_NAME:
        ans.rcode = YXDOMAIN  # RFC 6672 2.2
        return None
    ans.answer.append((name, rrtypes.CNAME, [(ttl, new_name)]))
    return new_name.lower()


def _add_glue(zone: ZoneView, ans: Answer, cut: bytes, ns: list[tuple[int, bytes]]) -> None:
    """RFC 1034 4.3.2 step 3b as RFC 9471 3 refines it: the glue of the delegation's NS names.

    Glue for in-domain names (at or below the cut) is required (RFC 9471 3.1)
    and goes first; sibling glue (below another cut of this zone) is optional
    (3.2).  As in BIND 9.18 (the zone database's glue lookup), only glue is
    added: an NS name with authoritative addresses in this zone, or in
    another zone, gets none.  Addresses before AAAA, as BIND renders them.
    """
    required: list[RRsetOut] = []
    required_v6: list[RRsetOut] = []
    sibling: list[RRsetOut] = []
    sibling_v6: list[RRsetOut] = []
    seen: set[bytes] = set()
    for _ttl, rdata in ns:
        target = rdata.lower()
        if target in seen or not is_subdomain(target, zone.origin):
            continue
        seen.add(target)
        if not _under_cut(zone, target):
            continue  # authoritative data, not glue
        blob = zone.get(target)
        if not blob:
            continue
        rrsets = decode_node(blob)
        in_domain = is_subdomain(target, cut)
        v4 = rrsets.get(rrtypes.A)
        if v4:
            (required if in_domain else sibling).append((target, rrtypes.A, v4))
        v6 = rrsets.get(rrtypes.AAAA)
        if v6:
            (required_v6 if in_domain else sibling_v6).append((target, rrtypes.AAAA, v6))
    ans.glue = True
    ans.required = len(required) + len(required_v6)
    ans.additional = required + required_v6 + sibling + sibling_v6


def _add_additional(zone: ZoneView, ans: Answer, qtype: int) -> None:
    """RFC 1034 3.6.2 / RFC 2782: addresses of the NS, MX and SRV targets in the answer.

    The additional section is optional (RFC 2181 9); what goes in follows
    BIND 9.18 (ns/query.c): nothing for ANY, nothing for an RRset of more
    than MAX_ADDITIONAL records, and only this zone's authoritative data,
    wildcards included: no glue outside a referral, no other zone.
    """
    if qtype == rrtypes.ANY or ans.glue:
        return
    done: set[tuple[bytes, int]] | None = None
    v4: list[RRsetOut] = []
    v6: list[RRsetOut] = []
    for _owner, rtype, records in ans.answer:
        offset = rrtypes.ADDITIONAL_TARGET.get(rtype)
        if offset is None or len(records) > MAX_ADDITIONAL:
            continue
        if done is None:
            # RFC 1034 4.3.2 step 6 adds what "may be useful": not what the answer already holds.
            done = {(owner, t) for owner, t, _r in ans.answer}
        for _ttl, rdata in records:
            _add_addresses(zone, ans, rdata[offset:].lower(), done, v4, v6)
    if v4 or v6:
        ans.additional = v4 + v6


def _add_addresses(zone: ZoneView, ans: Answer, target: bytes, done: set[tuple[bytes, int]],
                   v4: list[RRsetOut], v6: list[RRsetOut]) -> None:
    """The A and AAAA RRsets (with RRSIGs for DO) that a lookup of *target* in this zone returns."""
    if not is_subdomain(target, zone.origin):
        return
    if (zone.n_cuts or zone.n_dnames) and find_cut(zone, target, rrtypes.A) is not None:
        return  # below a cut (glue outside a referral) or a DNAME
    blob = zone.get(target)
    if blob is None:
        if target == zone.origin:
            return
        blob = zone.get(WILDCARD_LABEL + _closest_encloser(zone, target))  # RFC 4592 3.3.1
    if not blob:
        return
    rrsets = decode_node(blob)
    for rtype, out in ((rrtypes.A, v4), (rrtypes.AAAA, v6)):
        addrs = rrsets.get(rtype)
        if addrs and (target, rtype) not in done:
            done.add((target, rtype))
            _put(ans, out, target, rtype, addrs, rrsets)
