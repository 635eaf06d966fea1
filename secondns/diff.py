"""Applying incremental changes (IXFR, RFC 1995; journal replay) to a zone snapshot.

A change is a sequence of version steps, each a set of deletions then a set
of additions, exactly as an IXFR stream and the on-disk journal carry them.
Everything is checked before anything is visible: a deletion of a record
that is not there, a version gap or a missing SOA raises DiffError and the
caller keeps the old snapshot (and falls back to AXFR).  Only the names the
change touches are decoded and re-encoded; the result shares everything else
with its predecessor (``Zone.derive``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from secondns import rrtypes
from secondns.errors import ZoneError
from secondns.names import is_subdomain, parent, to_text
from secondns.serial import serial_gt
from secondns.zone import SOA, RRsetMap, Zone, decode_node, encode_record

Rec = tuple[bytes, int, int, bytes]
"""(owner, type, ttl, rdata) with the owner in wire form."""

# Fold the delta into the base once it holds this share of the zone's names.
FOLD_FRACTION = 8
FOLD_MINIMUM = 4096


class DiffError(ZoneError):
    """The change does not apply to this version; fall back to a full transfer."""


@dataclass
class VersionStep:
    """One RFC 1995 difference sequence: from_serial -> to_serial."""

    from_serial: int
    to_serial: int
    deleted: list[Rec] = field(default_factory=list)
    added: list[Rec] = field(default_factory=list)


def invalidated_names(old: Zone, new: Zone, steps: Sequence[VersionStep]) -> frozenset[bytes] | None:
    """Names whose cached answers a change may have altered; None means the whole zone.

    Every owner the change touches, and each of its ancestors up to the apex:
    an ancestor may have become (or stopped being) an empty non-terminal,
    which turns a wildcard answer into NODATA or NXDOMAIN (RFC 4592 2.2.2).
    A zone that gains its first delegation or DNAME has answers that never
    looked at ancestors at all (the walk for cuts is skipped without them),
    so it is forgotten whole.
    """
    if not (old.n_cuts or old.n_dnames) and (new.n_cuts or new.n_dnames):
        return None
    origin = new.origin
    names: set[bytes] = set()
    for step in steps:
        for owner, _t, _ttl, _rd in (*step.deleted, *step.added):
            name = owner.lower()
            while name not in names:
                names.add(name)
                if name == origin or len(name) <= len(origin):
                    break
                name = parent(name)
    return frozenset(names)


# A whole new version (AXFR) of a zone with at most this many records is compared node by
# node, so only the answers it changed are forgotten (see replaced_names).
REPLACED_NAMES_MAX_RECORDS = 512


def replaced_names(old: Zone, new: Zone, max_records: int = REPLACED_NAMES_MAX_RECORDS
                   ) -> frozenset[bytes] | None:
    """What ``invalidated_names`` gives for an IXFR, for a whole new version of a small zone.

    Every owner whose records differ between the two versions, with its
    ancestors up to the apex (for the same reasons as an IXFR's owners).
    Forgetting a zone whole is one pass over every cached answer of every
    zone: with 10,000 small zones all changing at once (a provider's bulk
    re-signing, bench/scale.py), each AXFR paid ~2 ms for it, while comparing
    a small zone costs microseconds.  A large zone (more than *max_records*
    on either side) is not compared on the reactor: None, forget it whole.
    """
    if old.record_count > max_records or new.record_count > max_records or old.origin != new.origin:
        return None
    if not (old.n_cuts or old.n_dnames) and (new.n_cuts or new.n_dnames):
        return None  # as in invalidated_names: answers that never walked for cuts
    before = dict(old.nodes())
    origin = new.origin
    names: set[bytes] = set()
    for name, blob in new.nodes():
        if before.pop(name, None) != blob:
            _add_with_ancestors(names, name, origin)
    for name in before:  # owners gone in the new version
        _add_with_ancestors(names, name, origin)
    return frozenset(names)


def _add_with_ancestors(names: set[bytes], name: bytes, origin: bytes) -> None:
    while name not in names:
        names.add(name)
        if name == origin or len(name) <= len(origin):
            break
        name = parent(name)


def _rdata_key(rtype: int, rdata: bytes) -> bytes:
    """Rdata compared as DNS compares it: the names inside case-insensitively (RFC 4343),
    every other field (MX preference, SRV port, signatures) octet for octet."""
    if rtype not in rrtypes.NAME_LAYOUT:
        return rdata
    try:
        return b"".join(piece.lower() if is_name else piece
                        for is_name, piece in rrtypes.split_rdata(rtype, rdata))
    except IndexError:
        return rdata  # malformed names: compare as opaque bytes


class _Work:
    """Nodes touched by a change, decoded once, re-encoded once."""

    def __init__(self, zone: Zone) -> None:
        self.zone = zone
        self.nodes: dict[bytes, RRsetMap] = {}
        self.existed: dict[bytes, bool] = {}
        self.records = zone.record_count

    def node(self, name: bytes) -> RRsetMap:
        got = self.nodes.get(name)
        if got is None:
            blob = self.zone.get(name)
            self.existed[name] = bool(blob)
            got = decode_node(blob) if blob else {}
            self.nodes[name] = got
        return got

    def delete(self, owner: bytes, rtype: int, rdata: bytes) -> None:
        node = self.node(owner)
        records = node.get(rtype)
        key = _rdata_key(rtype, rdata)
        if records:
            for i, (_ttl, have) in enumerate(records):
                if _rdata_key(rtype, have) == key:
                    del records[i]
                    if not records:
                        del node[rtype]
                    self.records -= 1
                    return
        raise DiffError(f"deletion of a record that is not there: {to_text(owner)} "
                        f"{rrtypes.type_name(rtype)}")

    def add(self, owner: bytes, rtype: int, ttl: int, rdata: bytes) -> None:
        node = self.node(owner)
        records = node.setdefault(rtype, [])
        key = _rdata_key(rtype, rdata)
        for i, (_ttl, have) in enumerate(records):
            if _rdata_key(rtype, have) == key:
                records[i] = (ttl, rdata)  # RFC 1995 leaves this open: treat as a TTL change
                return
        records.append((ttl, rdata))
        self.records += 1


def apply_steps(zone: Zone, steps: Sequence[VersionStep]) -> Zone:
    """The zone after every step, or DiffError (the zone itself is never modified)."""
    if not steps:
        return zone
    origin = zone.origin
    work = _Work(zone)
    serial = zone.serial
    for step in steps:
        if step.from_serial != serial:
            raise DiffError(f"version gap: the change starts at serial {step.from_serial}, "
                            f"we have {serial}")
        if not serial_gt(step.to_serial, step.from_serial):
            raise DiffError(f"step {step.from_serial} -> {step.to_serial} does not move forward")
        for owner, rtype, _ttl, rdata in step.deleted:
            owner = owner.lower()
            if rtype == rrtypes.SOA:
                continue  # the SOA is replaced as a whole below
            if not is_subdomain(owner, origin):
                raise DiffError(f"deletion outside the zone: {to_text(owner)}")
            work.delete(owner, rtype, rdata)
        new_soa: SOA | None = None
        for owner, rtype, ttl, rdata in step.added:
            owner = owner.lower()
            if not is_subdomain(owner, origin):
                raise DiffError(f"addition outside the zone: {to_text(owner)}")
            if rtype == rrtypes.SOA:
                if owner != origin:
                    raise DiffError(f"SOA added at {to_text(owner)}, not at the apex")
                new_soa = SOA.from_rdata(ttl, rdata)
                continue
            work.add(owner, rtype, ttl, rdata)
        if new_soa is None or new_soa.serial != step.to_serial:
            raise DiffError(f"step to serial {step.to_serial} does not add that SOA")
        work.node(origin)[rrtypes.SOA] = [(new_soa.ttl, new_soa.rdata)]
        serial = step.to_serial
    assert new_soa is not None
    return _freeze(zone, work, new_soa)


def _encode(node: RRsetMap) -> bytes:
    """Re-encode a node; an RRset takes the TTL of its first record (RFC 2181 5.2).

    RRSIGs are the exception: each keeps the TTL of the RRset it covers (RFC 4034 3).
    """
    return b"".join(encode_record(rtype, ttl if rtype == rrtypes.RRSIG else recs[0][0], rdata)
                    for rtype, recs in node.items() for ttl, rdata in recs)


def _freeze(zone: Zone, work: _Work, soa: SOA) -> Zone:
    """Turn touched nodes into delta entries, keeping empty non-terminals exact."""
    origin = zone.origin
    changes: dict[bytes, bytes | None] = {}
    child_changes: dict[bytes, int] = {}
    n_cuts, n_dnames = zone.n_cuts, zone.n_dnames

    def children(name: bytes) -> int:
        if name in child_changes:
            return child_changes[name]
        return zone.child_count(name)

    def current(name: bytes) -> bytes | None:
        if name in changes:
            return changes[name]
        return zone.get(name)

    for name, node in work.nodes.items():
        before = zone.get(name)
        had_ns = bool(before) and name != origin and zone.has_type(name, rrtypes.NS)
        had_dname = bool(before) and zone.has_type(name, rrtypes.DNAME)
        has_ns = name != origin and rrtypes.NS in node
        has_dname = rrtypes.DNAME in node
        n_cuts += int(has_ns) - int(had_ns)
        n_dnames += int(has_dname) - int(had_dname)
        blob = _encode(node)
        if blob:
            # current(), not before: a new child processed earlier may have created
            # this name as an empty non-terminal and linked it already.
            if current(name) is None:
                _link(name, origin, changes, child_changes, current, children)
            changes[name] = blob
        elif name == origin:
            raise DiffError("the change empties the zone apex")
        elif current(name) is not None:
            # current(), not before: removing a child may already have removed this name
            # as a childless empty non-terminal; unlinking it twice would miscount its parent.
            if children(name) > 0:
                changes[name] = b""  # still an empty non-terminal
            else:
                _unlink(name, origin, changes, child_changes, current, children)
    denial = _derive_denial(zone, work, changes)
    derived = zone.derive(changes, child_changes, soa, n_cuts, n_dnames, work.records,
                          None if denial is _LATER else denial)
    if denial is _LATER:
        from secondns.dnssec import build_index, expiry_buckets

        derived.denial = build_index(derived)
        derived.sig_hours = expiry_buckets(derived) if derived.denial is not None else None
    else:
        derived.sig_hours = _derive_sig_hours(zone, changes)
    if derived.delta_size >= max(FOLD_MINIMUM, zone.base_size // FOLD_FRACTION):
        return derived.folded()
    return derived




def _derive_denial(zone: Zone, work: _Work, changes: dict[bytes, bytes | None]) -> object:
    """Keep the NSEC/NSEC3 index in step with the change, by the owners that changed.

    A change of signing scheme or NSEC3 parameters (a re-signed zone) is rare
    and rebuilds the index from the new version instead.
    """
    from secondns import dnssec

    old = zone.denial
    apex = work.nodes.get(zone.origin)
    if apex is not None:
        new_params = apex.get(rrtypes.NSEC3PARAM)
        old_apex = zone.rrsets(zone.origin) or {}
        scheme_changed = (bool(new_params) != (rrtypes.NSEC3PARAM in old_apex)
                          or (rrtypes.NSEC in apex) != (rrtypes.NSEC in old_apex)
                          or (new_params or None) != (old_apex.get(rrtypes.NSEC3PARAM) or None))
        if scheme_changed or old is None:
            return _LATER
    if old is None:
        return None
    kind = old.kind
    rtype = rrtypes.NSEC if kind == "nsec" else rrtypes.NSEC3
    removed: list[bytes] = []
    added: list[tuple[bytes, bytes]] = []
    for name, node in work.nodes.items():
        key = dnssec.index_key(kind, name)
        if key is None:
            continue
        had = zone.has_type(name, rtype)
        has = rtype in node
        if had and not has:
            removed.append(key)
        elif has and not had:
            added.append((key, name))
    return old.derive(removed, added, None)


_LATER = object()  # rebuild the index once the new version exists


def _derive_sig_hours(zone: Zone, changes: dict[bytes, bytes | None]) -> dict[int, int] | None:
    """Signature expiry buckets moved by the RRSIGs the change removed and added."""
    from secondns.dnssec import SIG_BUCKET, sig_expirations

    if zone.sig_hours is None:
        return None
    hours = dict(zone.sig_hours)
    for name, blob in changes.items():
        for when in sig_expirations(zone.get(name) or b""):
            hour = when // SIG_BUCKET
            left = hours.get(hour, 0) - 1
            if left > 0:
                hours[hour] = left
            else:
                hours.pop(hour, None)
        for when in sig_expirations(blob or b""):
            hour = when // SIG_BUCKET
            hours[hour] = hours.get(hour, 0) + 1
    return hours


def _link(name: bytes, origin: bytes, changes: dict[bytes, bytes | None],
          child_changes: dict[bytes, int], get: Callable[[bytes], bytes | None],
          count: Callable[[bytes], int]) -> None:
    """A new name: count it under its parent, creating empty non-terminals as needed."""
    while name != origin:
        up = parent(name)
        child_changes[up] = count(up) + 1
        if get(up) is not None:
            return
        changes[up] = b""
        name = up


def _unlink(name: bytes, origin: bytes, changes: dict[bytes, bytes | None],
            child_changes: dict[bytes, int], get: Callable[[bytes], bytes | None],
            count: Callable[[bytes], int]) -> None:
    """A name gone: drop it, and every empty non-terminal it leaves childless."""
    changes[name] = None
    while name != origin:
        up = parent(name)
        remaining = count(up) - 1
        child_changes[up] = remaining
        if up == origin or remaining > 0 or get(up) != b"":
            return
        changes[up] = None
        name = up
