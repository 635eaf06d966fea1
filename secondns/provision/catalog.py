"""Catalog zones (RFC 9432): the member list a catalog zone snapshot describes.

A pure function of one snapshot, so the same catalog always yields the same
members whatever order its records arrived in, and the parser can be tested
without a network.  What the application does with the list (start, stop,
reset member zones) lives in ``membership.py``.

Only schema version "2" is understood (RFC 9432 4.2).  A catalog that fails
the version check is not processed at all (RFC 9432 5.1: broken catalogs
MUST be ignored for catalog processing), so its caller keeps the members
it had.  Malformed member nodes are skipped one by one with a reason, never
the whole catalog: one bad entry must not unprovision ten thousand zones.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from secondns import rrtypes
from secondns.names import label_text, to_text
from secondns.zone import Zone, decode_node, iter_records

SUPPORTED_VERSION = b"2"
_PTR_TYPE = rrtypes.PTR.to_bytes(2, "big")
_TXT_TYPE = rrtypes.TXT.to_bytes(2, "big")
MAX_ERRORS = 100  # reasons kept for /status; the count of all of them is kept besides


@dataclass(frozen=True, slots=True)
class Member:
    """One member zone: its name (lowercased wire), the unique-N label, and its properties."""

    origin: bytes
    unique_id: str
    group: str | None = None
    coo: bytes | None = None  # RFC 9432 4.4.1: the catalog this member is moving to

    @property
    def name(self) -> str:
        return to_text(self.origin)


@dataclass
class Catalog:
    """The outcome of parsing one catalog version.

    ``valid`` False means the version check failed and ``members`` is empty:
    the caller must not act on it (RFC 9432 5.1).  ``changed`` names the
    member zones whose entry differs from the version *before* it was parsed
    against (None: any may, a whole parse); the rest is what an incremental
    parse needs of this version.
    """

    serial: int
    valid: bool
    members: dict[bytes, Member] = field(default_factory=dict)  # by member origin
    errors: list[str] = field(default_factory=list)
    error_count: int = 0
    reason: str | None = None  # why the whole catalog was rejected
    changed: frozenset[bytes] | None = None
    # Every well-formed member node by its unique-N label, the labels listing each zone (more
    # than one is a producer's mistake), and the reasons per node and per zone so listed.
    nodes: dict[bytes, Member] = field(default_factory=dict)
    listing: dict[bytes, tuple[bytes, ...]] = field(default_factory=dict)
    node_errors: dict[bytes, tuple[str, ...]] = field(default_factory=dict)
    tie_errors: dict[bytes, str] = field(default_factory=dict)

    def error(self, message: str) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(message)

    def _collect_errors(self) -> None:
        self.errors = []
        self.error_count = 0
        for reasons in self.node_errors.values():
            for reason in reasons:
                self.error(reason)
        for reason in self.tie_errors.values():
            self.error(reason)


def _label(name: bytes) -> bytes:
    return name[1:1 + name[0]]


def _txt_strings(rdata: bytes) -> list[bytes]:
    """The character-strings of a TXT rdata (RFC 1035 3.3.14); [] when malformed."""
    out = []
    pos = 0
    while pos < len(rdata):
        length = rdata[pos]
        if pos + 1 + length > len(rdata):
            return []
        out.append(rdata[pos + 1:pos + 1 + length])
        pos += 1 + length
    return out


def _single_name(rdata: bytes) -> bytes | None:
    """A PTR's target (uncompressed wire, as the zone keeps it), lowercased; None when malformed."""
    pos = 0
    while pos < len(rdata):
        length = rdata[pos]
        if length == 0:
            return rdata.lower() if pos + 1 == len(rdata) else None
        if length > 63:
            return None
        pos += length + 1
    return None


def _member_part(owner: bytes, zones_node: bytes) -> tuple[bytes, bytes | None] | None:
    """(unique-N, None) for a member node <unique-N>.zones.$CATZ, (unique-N, property) for
    <property>.<unique-N>.zones.$CATZ, None for any other name.

    Deeper names are properties this implementation does not know (RFC 9432 4.3: consumers
    ignore what they do not support).
    """
    cut = len(zones_node)
    if len(owner) <= cut or not owner.endswith(zones_node):
        return None
    stem_end = len(owner) - cut
    first = owner[0] + 1
    if first == stem_end:
        return owner[1:first], None
    if first + owner[first] + 1 == stem_end:
        return owner[first + 1:stem_end], owner[1:first]
    return None


def _add_node(cat: Catalog, unique: bytes, member: Member) -> None:
    """A well-formed member node; a zone listed under several is resolved by _resolve."""
    cat.nodes[unique] = member
    cat.listing[member.origin] = (*cat.listing.get(member.origin, ()), unique)


def parse(zone: Zone, previous: dict[bytes, Member] | None = None, before: Catalog | None = None,
          changed: frozenset[bytes] | None = None) -> Catalog:
    """Members of the catalog *zone*, with a reason for every entry skipped.

    *previous* (the members of the version before) only breaks ties: a
    zone listed under two unique-N labels keeps the label it already had,
    so a producer's mistake never resets a served zone (RFC 9432 5.2: the
    new instance of a clashing zone is ignored).

    With *before* (the parse of the version this one was changed from) and
    *changed* (the names the change touched, ancestors included, as
    ``diff.invalidated_names`` gives them for an IXFR), only the member
    nodes below those names are read again: a catalog of 10,000 members
    that gains one costs one node, not a walk of every node on the reactor.
    The outcome is the same as a whole parse's (tests/test_catalog_parse.py
    compares them).
    """
    origin = zone.origin
    if (before is None or changed is None or not before.valid
            or b"\x07version" + origin in changed):
        return _parse_whole(zone, previous)
    zones_node = b"\x05zones" + origin
    uniques: set[bytes] = set()
    for name in changed:
        part = _member_part(name, zones_node)
        if part is not None:  # deeper names: their ancestors are in *changed* too
            uniques.add(part[0])
    cat = Catalog(zone.serial, valid=True, members=dict(before.members), nodes=dict(before.nodes),
                  listing=dict(before.listing), node_errors=dict(before.node_errors),
                  tie_errors=dict(before.tie_errors))
    touched: set[bytes] = set()
    for unique in uniques:
        old = cat.nodes.pop(unique, None)
        cat.node_errors.pop(unique, None)
        if old is not None:
            touched.add(old.origin)
            left = tuple(u for u in cat.listing[old.origin] if u != unique)
            if left:
                cat.listing[old.origin] = left
            else:
                del cat.listing[old.origin]
        node = bytes([len(unique)]) + unique + zones_node
        blob = zone.get(node)
        if not blob:
            continue  # gone, or only properties below it (an empty non-terminal)
        member = _member_node(cat, origin, unique, blob, zone.get(b"\x05group" + node),
                              zone.get(b"\x03coo" + node))
        if member is not None:
            _add_node(cat, unique, member)
            touched.add(member.origin)
    for target in touched:
        _resolve(cat, target, previous or {})
    cat._collect_errors()
    cat.changed = frozenset(t for t in touched if before.members.get(t) != cat.members.get(t))
    return cat


def _parse_whole(zone: Zone, previous: dict[bytes, Member] | None) -> Catalog:
    origin = zone.origin
    cat = Catalog(zone.serial, valid=False)
    # RFC 9432 4.2: exactly one TXT RR at version.$CATZ, holding "2".
    version_node = zone.rrsets(b"\x07version" + origin)
    txts = (version_node or {}).get(rrtypes.TXT, [])
    if not txts:
        cat.reason = "no version property (TXT at version.<catalog>): not processed as a catalog"
        return cat
    if len(txts) > 1:
        cat.reason = "more than one version TXT record: not processed as a catalog"
        return cat
    strings = _txt_strings(txts[0][1])
    if strings != [SUPPORTED_VERSION]:
        shown = " ".join(repr(s.decode("ascii", "replace")) for s in strings)
        cat.reason = f"unsupported catalog schema version {shown or 'none'} (only \"2\"): not processed"
        return cat
    cat.valid = True
    zones_node = b"\x05zones" + origin
    # Walk every owner below zones.$CATZ once (bounded by the zone's own size), grouping
    # records by their member node <unique-N>.zones.$CATZ (RFC 9432 4.1, 4.3).
    blobs: dict[bytes, bytes] = {}
    props: dict[bytes, dict[bytes, bytes]] = {}  # raw node blobs, decoded only when used
    for owner, blob in zone.nodes():
        part = _member_part(owner, zones_node)
        if part is None:
            continue
        unique, prop = part
        if prop is None:
            blobs[unique] = blob
        else:
            props.setdefault(unique, {})[prop.lower()] = blob
    for unique, blob in blobs.items():
        member_props = props.get(unique, {})
        member = _member_node(cat, origin, unique, blob, member_props.get(b"group"),
                              member_props.get(b"coo"))
        if member is not None:
            _add_node(cat, unique, member)
    prev = previous or {}
    for target in cat.listing:
        _resolve(cat, target, prev)
    cat._collect_errors()
    return cat


def _member_node(cat: Catalog, origin: bytes, unique: bytes, blob: bytes, group_blob: bytes | None,
                 coo_blob: bytes | None) -> Member | None:
    """The member one node <unique-N>.zones.$CATZ names, or None (reasons in cat.node_errors)."""
    uid = label_text(unique)
    errors: list[str] = []
    if blob[:2] == _PTR_TYPE and len(blob) == 8 + ((blob[6] << 8) | blob[7]):
        targets = [blob[8:]]  # the usual node: one PTR record and nothing else
    else:
        targets = [rd for rtype, _ttl, rd in iter_records(blob) if rtype == rrtypes.PTR]
    member = None
    if not targets:
        errors.append(f"member node {uid}: no PTR record, ignored")
    elif len(targets) > 1:
        # RFC 9432 4.1: the PTR RRset of a member node holds exactly one record.
        errors.append(f"member node {uid}: {len(targets)} PTR records, ignored")
    else:
        target = _single_name(targets[0])
        if target is None:
            errors.append(f"member node {uid}: malformed PTR target, ignored")
        elif target == origin:
            errors.append(f"member node {uid}: names the catalog zone itself, ignored")
        else:
            member = Member(target, uid, _group(errors, target, group_blob), _coo(errors, target, coo_blob))
    if errors:
        cat.node_errors[unique] = tuple(errors)
    return member


def _group(errors: list[str], target: bytes, group_blob: bytes | None) -> str | None:
    group = None
    if group_blob is not None and group_blob[:2] == _TXT_TYPE and len(group_blob) > 8 and (
            len(group_blob) == 8 + ((group_blob[6] << 8) | group_blob[7]) == 9 + group_blob[8]):
        # The usual node: one TXT record with one string.
        group = group_blob[9:].decode("utf-8", "replace") or None
        if group is None:
            errors.append(f"member {to_text(target)}: empty group; served without a group")
    elif group_blob is not None:
        groups = decode_node(group_blob).get(rrtypes.TXT, [])
        values = [_txt_strings(rd) for _ttl, rd in groups]
        if len(values) == 1 and len(values[0]) == 1 and values[0][0]:
            group = values[0][0].decode("utf-8", "replace")
        elif groups:
            errors.append(f"member {to_text(target)}: group property needs one TXT record with one "
                          "string; served without a group")
    return group


def _coo(errors: list[str], target: bytes, coo_blob: bytes | None) -> bytes | None:
    coo = None
    if coo_blob is not None:
        coo_targets = decode_node(coo_blob).get(rrtypes.PTR, [])
        if len(coo_targets) == 1:
            coo = _single_name(coo_targets[0][1])
        if coo is None and coo_targets:
            errors.append(f"member {to_text(target)}: coo property needs one PTR record; ignored")
    return coo


def _resolve(cat: Catalog, target: bytes, prev: dict[bytes, Member]) -> None:
    """Which of the nodes listing *target* it is served from (RFC 9432 5.2 for a clash)."""
    cat.tie_errors.pop(target, None)
    uniques = cat.listing.get(target, ())
    if not uniques:
        cat.members.pop(target, None)
        return
    listed = [cat.nodes[u] for u in uniques]
    keep = listed[0]
    if len(listed) > 1:
        old = prev.get(target)
        found = next((m for m in listed if old is not None and m.unique_id == old.unique_id), None)
        keep = found if found is not None else min(listed, key=lambda m: m.unique_id)
        others = ", ".join(sorted(m.unique_id for m in listed if m is not keep))
        cat.tie_errors[target] = (f"member {to_text(target)} listed under several unique ids; kept "
                                  f"{keep.unique_id}, ignored {others}")
    cat.members[target] = keep
