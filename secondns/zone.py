"""The in-memory zone: one immutable snapshot per zone version.

Layout, chosen for memory (a 1M-record zone must stay near BIND's RSS) and
for a dict-probe lookup:

* ``names`` maps each owner name (lowercased wire form) to a *node blob*:
  the node's records concatenated as ``type(2) ttl(4) rdlength(2) rdata``,
  RRsets contiguous, record order within an RRset as received.  Rdata is kept
  byte for byte, names in it uncompressed, so unknown types (RFC 3597) survive.
* A zone of more than ``SHARD_ABOVE`` names holds them in ``ShardedNames`` (64 dicts by
  hash), so no single dict of it ever needs a long resize (issue 11).
* Empty non-terminals are present with an empty blob, so "does this name
  exist" (RFC 4592 2.2.2) is a plain membership test.
* ``cuts`` and ``dnames`` hold the owners of delegation NS RRsets and DNAME
  RRsets, precomputed once so the per-query walk of RFC 1034 4.3.2 step 3b
  costs nothing for zones without them.

A snapshot is never mutated after ``ZoneBuilder.build`` returns it; a new
version is a new snapshot swapped into the registry.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from secondns import rrtypes
from secondns.errors import ZoneError
from secondns.names import is_subdomain, parent, to_text

_REC_HDR = struct.Struct("!HIH")  # type, ttl, rdlength
# Snapshot format of to_state.  2: written by code that validates rdata at ingest
# (rrtypes.check_rdata); a version-1 snapshot may hold records that do not encode,
# so it is refused and the text copy is parsed, and checked, instead.
_STATE_VERSION = 2


@dataclass(frozen=True, slots=True)
class SOA:
    """The fields of the apex SOA that timers and negative answers need."""

    ttl: int
    rdata: bytes
    serial: int
    refresh: int
    retry: int
    expire: int
    minimum: int

    @classmethod
    def from_rdata(cls, ttl: int, rdata: bytes) -> SOA:
        """Parse the five counters that follow MNAME and RNAME (RFC 1035 3.3.13)."""
        pos = _skip_name(rdata, 0)
        pos = _skip_name(rdata, pos)
        if len(rdata) != pos + 20:
            raise ZoneError("malformed SOA rdata")
        serial, refresh, retry, expire, minimum = struct.unpack_from("!5I", rdata, pos)
        return cls(ttl, rdata, serial, refresh, retry, expire, minimum)

    @property
    def negative_ttl(self) -> int:
        """RFC 2308 3: the TTL of the SOA in a negative answer."""
        return min(self.ttl, self.minimum)


def _skip_name(buf: bytes, pos: int) -> int:
    while True:
        if pos >= len(buf):
            raise ZoneError("name runs past the end of rdata")
        length = buf[pos]
        if length == 0:
            return pos + 1
        if length > 63:
            raise ZoneError("compressed or bad label in rdata")
        pos += length + 1


def encode_record(rtype: int, ttl: int, rdata: bytes) -> bytes:
    """One record in node-blob form."""
    return _REC_HDR.pack(rtype, ttl, len(rdata)) + rdata


def iter_records(blob: bytes) -> Iterator[tuple[int, int, bytes]]:
    """Yield (type, ttl, rdata) for every record of a node blob, in order."""
    pos = 0
    end = len(blob)
    unpack = _REC_HDR.unpack_from
    while pos < end:
        rtype, ttl, rdlen = unpack(blob, pos)
        pos += 8
        yield rtype, ttl, blob[pos:pos + rdlen]
        pos += rdlen


RRsetMap = dict[int, list[tuple[int, bytes]]]


def decode_node(blob: bytes) -> RRsetMap:
    """A node blob as {type: [(ttl, rdata), ...]} with RRset order kept."""
    out: RRsetMap = {}
    for rtype, ttl, rdata in iter_records(blob):
        lst = out.get(rtype)
        if lst is None:
            out[rtype] = [(ttl, rdata)]
        else:
            lst.append((ttl, rdata))
    return out


def node_types(blob: bytes) -> set[int]:
    """The RR types present at a node (cheap: no rdata slicing)."""
    types = set()
    pos = 0
    end = len(blob)
    unpack = _REC_HDR.unpack_from
    while pos < end:
        rtype, _ttl, rdlen = unpack(blob, pos)
        types.add(rtype)
        pos += 8 + rdlen
    return types


_MISSING = object()

# A zone's names are held in SHARDS dicts, chosen by the name's hash, once there are more than
# SHARD_ABOVE of them (issue 11).  One dict of a million names doubles its table in a single C
# call that holds the GIL (38 ms at 699k names, 66 ms at 1.4M): on the reactor thread while an
# AXFR is parsed there (workers: 1), or in the thread that builds, copies or frees it, which
# blocks the reactor all the same.  64 shards keep every such step below ~5 ms up to ~5M names.
SHARDS = 64
_SHARD_MASK = SHARDS - 1
SHARD_ABOVE = 100_000


class ShardedNames:
    """The name -> node blob mapping of a large zone, as SHARDS dicts keyed by ``hash(name)``.

    Stands in for the dict in ``Zone`` (which only calls get, items, keys, len, iteration and,
    when folding, copy and item assignment).  A bytes object caches its hash, so the extra
    cost of a lookup is the ``hash`` call and one index (~60 ns); only answer-cache misses
    pay it.
    """

    __slots__ = ("shards",)

    def __init__(self, shards: list[dict[bytes, bytes]]) -> None:
        self.shards = shards

    def get(self, name: bytes, default: Any = None) -> Any:
        return self.shards[hash(name) & _SHARD_MASK].get(name, default)

    def __getitem__(self, name: bytes) -> bytes:
        return self.shards[hash(name) & _SHARD_MASK][name]

    def __contains__(self, name: object) -> bool:
        return name in self.shards[hash(name) & _SHARD_MASK]

    def __setitem__(self, name: bytes, blob: bytes) -> None:
        self.shards[hash(name) & _SHARD_MASK][name] = blob

    def pop(self, name: bytes, default: Any = None) -> Any:
        return self.shards[hash(name) & _SHARD_MASK].pop(name, default)

    @classmethod
    def empty(cls) -> ShardedNames:
        return cls([{} for _ in range(SHARDS)])

    def update(self, names: dict[bytes, bytes]) -> None:
        """Each name into its shard (a snapshot slice read back)."""
        shards = self.shards
        for name, blob in names.items():
            shards[hash(name) & _SHARD_MASK][name] = blob

    def __len__(self) -> int:
        return sum(map(len, self.shards))

    def __iter__(self) -> Iterator[bytes]:
        for shard in self.shards:
            yield from shard

    def keys(self) -> Iterator[bytes]:
        return iter(self)

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        for shard in self.shards:
            yield from shard.items()

    def copy(self) -> ShardedNames:
        """Shard by shard (a fold): each copy is one short C call."""
        return ShardedNames([dict(shard) for shard in self.shards])


def _copy_names(base: Any) -> Any:
    """A fresh, mutable copy of a version's base names (a fold).

    Sharded stays sharded (a shard per C call).  A large base that is neither (a zone image
    mapped in the main process, ``serve.image.ImageMap``) is copied into shards too: one dict
    of a million names doubles its table in single C calls of 38-66 ms (issue 11).
    """
    if type(base) is ShardedNames:
        return base.copy()
    if type(base) is not dict and len(base) > SHARD_ABOVE:
        names = ShardedNames.empty()
        for name, blob in base.items():
            names[name] = blob
        return names
    return dict(base)


def empty_in_slices(mapping: Any, size: int = 5_000) -> None:
    """Empty a dict (or each shard of a ``ShardedNames``) at most *size* entries per C call.

    ``dict.clear`` or a last decref frees every entry in one call that holds the GIL; a loop
    of ``popitem`` lets another thread (the reactor) run between entries.
    """
    dicts = mapping.shards if type(mapping) is ShardedNames else [mapping]
    for d in dicts:
        if len(d) <= size:
            d.clear()
            continue
        popitem = d.popitem
        for _ in range(len(d)):
            popitem()


def blob_has_type(blob: bytes, rtype: int) -> bool:
    """True when a node blob holds a record of *rtype* (no rdata is sliced)."""
    pos = 0
    end = len(blob)
    unpack = _REC_HDR.unpack_from
    while pos < end:
        rt, _ttl, rdlen = unpack(blob, pos)
        if rt == rtype:
            return True
        pos += 8 + rdlen
    return False


class Zone:
    """An immutable zone snapshot; see the module docstring for the layout.

    A version made by ``apply`` (IXFR) shares its predecessor's ``base`` dicts
    and keeps only what changed in ``delta`` dicts (None marks a deletion), so
    applying a change costs the size of the change, not of the zone.  Once the
    delta grows past a fraction of the base it is folded in (``folded``).
    ``children`` counts the direct children of every interior name: it is how
    a deletion knows whether a name that lost its last record must stay as an
    empty non-terminal.
    """

    __slots__ = (
        "_child_delta",
        "_children",
        "_delta",
        "_names",
        "denial",
        "n_cuts",
        "n_dnames",
        "origin",
        "record_count",
        "sig_hours",
        "soa",
    )

    def __init__(self, origin: bytes, names: dict[bytes, bytes], soa: SOA, n_cuts: int, n_dnames: int,
                 record_count: int, children: dict[bytes, int],
                 delta: dict[bytes, bytes | None] | None = None,
                 child_delta: dict[bytes, int] | None = None, denial: Any = None) -> None:
        self.origin = origin
        # dnssec.DenialIndex for zones signed with NSEC or NSEC3, else None.
        self.denial = denial
        # RRSIG expirations per hour (dnssec.expiry_buckets), None when unsigned.
        self.sig_hours: dict[int, int] | None = None
        self._names = names
        self._delta = delta
        self._children = children
        self._child_delta = child_delta
        self.soa = soa
        self.n_cuts = n_cuts
        self.n_dnames = n_dnames
        self.record_count = record_count

    @property
    def serial(self) -> int:
        """The SOA serial of this version."""
        return self.soa.serial

    @property
    def base_size(self) -> int:
        """Names in the shared base (cheap; the delta is not counted)."""
        return len(self._names)

    @property
    def delta_size(self) -> int:
        """Names changed since the last fold (0 for a freshly built zone)."""
        return len(self._delta) if self._delta else 0

    def get(self, name: bytes) -> bytes | None:
        """The node blob of a lowercased name; b"" for an empty non-terminal."""
        delta = self._delta
        if delta:
            value = delta.get(name, _MISSING)
            if value is not _MISSING:
                return value  # type: ignore[return-value]
        return self._names.get(name)

    def __contains__(self, name: bytes) -> bool:
        return self.get(name) is not None

    def child_count(self, name: bytes) -> int:
        """How many names lie directly below *name*."""
        delta = self._child_delta
        if delta and name in delta:
            return delta[name]
        return self._children.get(name, 0)

    def has_type(self, name: bytes, rtype: int) -> bool:
        """True when *name* owns an RRset of *rtype*."""
        blob = self.get(name)
        return bool(blob) and blob_has_type(blob, rtype)  # type: ignore[arg-type]

    def rrsets(self, name: bytes) -> RRsetMap | None:
        """Decoded RRsets at *name*, or None when the name does not exist."""
        blob = self.get(name)
        if blob is None:
            return None
        return decode_node(blob)

    def _items(self) -> Iterator[tuple[bytes, bytes]]:
        delta = self._delta
        if not delta:
            yield from self._names.items()
            return
        for name, blob in self._names.items():
            if name not in delta:
                yield name, blob
        for name, value in delta.items():
            if value is not None:
                yield name, value

    def __bool__(self) -> bool:
        """Always true: a zone has its apex.

        Without it ``if zone`` would fall back to ``__len__``, which walks every name: 100 ms on
        the reactor for a 1M-record zone (refresh's ``serial if self.zone else 0``, issue 11).
        """
        return True

    def __len__(self) -> int:
        """Number of names, empty non-terminals included."""
        return sum(1 for _ in self._items())

    def nodes(self) -> Iterator[tuple[bytes, bytes]]:
        """(name, blob) pairs with records, apex first, otherwise in no particular order."""
        origin = self.origin
        yield origin, self.get(origin) or b""
        for name, blob in self._items():
            if name != origin and blob:
                yield name, blob

    def records(self) -> Iterator[tuple[bytes, int, int, bytes]]:
        """Every record as (owner, type, ttl, rdata), the apex SOA first.

        This is the order AXFR and the on-disk copy use (RFC 5936 2.2).
        """
        soa_rec = (self.origin, rrtypes.SOA, self.soa.ttl, self.soa.rdata)
        yield soa_rec
        for name, blob in self.nodes():
            for rtype, ttl, rdata in iter_records(blob):
                if rtype == rrtypes.SOA and name == self.origin:
                    continue
                yield name, rtype, ttl, rdata

    def folded(self) -> Zone:
        """The same version with its delta merged into fresh base dicts (O(zone size))."""
        if not self._delta and not self._child_delta:
            return self
        names = _copy_names(self._names)
        for name, value in (self._delta or {}).items():
            if value is None:
                names.pop(name, None)
            else:
                names[name] = value
        children = dict(self._children)
        for name, count in (self._child_delta or {}).items():
            if count:
                children[name] = count
            else:
                children.pop(name, None)
        zone = Zone(self.origin, names, self.soa, self.n_cuts, self.n_dnames, self.record_count,
                    children, denial=self.denial)
        zone.sig_hours = self.sig_hours
        return zone

    @contextlib.contextmanager
    def folded_once(self) -> Iterator[Zone]:
        """``folded`` for one use (writing an image or a snapshot): a copy made for it is
        emptied by ``release`` afterwards instead of being freed in one decref."""
        folded = self.folded()
        try:
            yield folded
        finally:
            if folded is not self:
                folded.release()

    def release(self) -> None:
        """Empty this version's names and child counts a shard or a slice per C call.

        Only for a version nothing else reads and whose dicts are its own (a folded copy made
        for one write): freeing a 1M-name version in its last decref is one C call holding the
        GIL for ~86 ms, in whichever thread drops it, so the reactor thread waits (issue 11).
        Here each shard's ``clear`` is short and a thread gives the GIL up between them.
        """
        empty_in_slices(self._names)
        empty_in_slices(self._children)

    def to_state(self) -> tuple[Any, ...]:
        """Plain data (dicts of bytes and ints) for a fast binary snapshot (storage.py)."""
        zone = self.folded()
        denial = zone.denial
        index = None if denial is None else (denial.kind, denial.keys, denial.names,
                                             None if denial.params is None else
                                             (denial.params.algorithm, denial.params.iterations,
                                              denial.params.salt))
        # A base mapped from a zone image (serve.image) is copied into a dict for marshal.
        # A sharded base goes as it is: storage marshals the names in slices of its items().
        names = zone._names if type(zone._names) in (dict, ShardedNames) else dict(zone._names.items())
        return (_STATE_VERSION, zone.origin, names, zone.soa.ttl, zone.soa.rdata, zone.n_cuts,
                zone.n_dnames, zone.record_count, zone._children, index, zone.sig_hours)

    @classmethod
    def from_state(cls, state: tuple[Any, ...]) -> Zone:
        """The inverse of ``to_state``; ZoneError when the state is not one we wrote."""
        if not state or state[0] != _STATE_VERSION or len(state) != 11:
            raise ZoneError("unknown snapshot format")
        (_v, origin, names, soa_ttl, soa_rdata, n_cuts, n_dnames, count, children, index,
         sig_hours) = state
        zone = cls(origin, names, SOA.from_rdata(soa_ttl, soa_rdata), n_cuts, n_dnames, count, children)
        if index is not None:
            from secondns.dnssec import DenialIndex, Nsec3Params

            kind, keys, owners, params = index
            zone.denial = DenialIndex(kind, zip(keys, owners, strict=True),
                                      None if params is None else Nsec3Params(*params), presorted=True)
        zone.sig_hours = sig_hours
        return zone

    def derive(self, changes: dict[bytes, bytes | None], child_changes: dict[bytes, int], soa: SOA,
               n_cuts: int, n_dnames: int, record_count: int, denial: Any = None) -> Zone:
        """A new version sharing this one's base; used by ``diff.apply_ixfr``."""
        delta = dict(self._delta) if self._delta else {}
        delta.update(changes)
        child_delta = dict(self._child_delta) if self._child_delta else {}
        child_delta.update(child_changes)
        return Zone(self.origin, self._names, soa, n_cuts, n_dnames, record_count, self._children,
                    delta, child_delta, denial)

    def __repr__(self) -> str:
        return f"<Zone {to_text(self.origin)} serial={self.serial} records={self.record_count}>"


class ZoneBuilder:
    """Collects records off to the side and freezes them into a Zone.

    Used by the zone file loader, the on-disk copy loader and AXFR; nothing
    can observe a half-built zone because only ``build`` returns one.

    A name's records wait as one ``bytes`` (a single record) or one
    ``bytearray`` (several, wire records back to back), never as a list:
    neither is a container the cyclic collector tracks, so the pending dict
    stays untracked too, and a million-record AXFR adds nothing for the
    collector to walk.  With lists, every young collection during the
    transfer traversed the lists made since the last one and, while it was
    young, the dict of every name (20-60 ms turns on the reactor, issue 11).
    """

    __slots__ = ("_cuts", "_dnames", "_pending", "_soa", "ignored", "origin")
    # _cuts/_dnames are sets of owners: an RRset of several records counts once.  The pending
    # records are sharded as ShardedNames is (by hash(owner)), so that no dict the reactor
    # thread adds to while it parses an AXFR grows past a short resize (issue 11).

    def __init__(self, origin: bytes) -> None:
        self.origin = origin.lower()
        self._pending: list[dict[bytes, bytes | bytearray]] = [{} for _ in range(SHARDS)]
        self._cuts: set[bytes] = set()
        self._dnames: set[bytes] = set()
        self._soa: SOA | None = None
        self.ignored = 0  # records outside the origin, counted not stored

    def add(self, owner: bytes, rtype: int, ttl: int, rdata: bytes) -> bool:
        """Add one record; False (and counted) when it lies outside the zone."""
        owner = owner.lower()
        shards = self._pending
        pending = shards[hash(owner) & _SHARD_MASK]
        cur = pending.get(owner)
        # Only a new owner needs checking, and one whose parent is the origin or already
        # in the zone is inside it without the label walk of is_subdomain (AXFR hot loop).
        if cur is None:
            up = owner[owner[0] + 1:]
            if (up != self.origin and up not in shards[hash(up) & _SHARD_MASK]
                    and not is_subdomain(owner, self.origin)):
                self.ignored += 1
                return False
        if rtype == rrtypes.SOA:
            if owner != self.origin:
                raise ZoneError(f"SOA record at {to_text(owner)}, not at the zone apex")
            soa = SOA.from_rdata(ttl, rdata)
            if self._soa is not None and self._soa.rdata != rdata:
                raise ZoneError("more than one SOA record at the zone apex")
            self._soa = soa
        elif rtype == rrtypes.NS and owner != self.origin:
            self._cuts.add(owner)
        elif rtype == rrtypes.DNAME:
            self._dnames.add(owner)
        rec = _REC_HDR.pack(rtype, ttl, len(rdata)) + rdata
        if cur is None:
            pending[owner] = rec
        elif type(cur) is bytes:
            pending[owner] = bytearray(cur) + rec
        else:
            cur += rec  # a bytearray: extended in place
        return True

    def add_many(self, records: Iterable[tuple[bytes, int, int, bytes]]) -> None:
        """Add (owner, type, ttl, rdata) tuples."""
        for owner, rtype, ttl, rdata in records:
            self.add(owner, rtype, ttl, rdata)

    def build(self) -> Zone:
        """Freeze the collected records; raises ZoneError when there is no SOA."""
        if self._soa is None:
            raise ZoneError(f"zone {to_text(self.origin)} has no SOA record at its apex")
        shards: list[dict[bytes, bytes]] = self._pending  # type: ignore[assignment]
        count = 0
        for shard in shards:
            for owner, cur in shard.items():
                if type(cur) is bytes:
                    count += 1
                else:
                    blob, n = _merge(_split(cur))
                    shard[owner] = blob  # the same key: the dict does not grow
                    count += n
        sharded = ShardedNames(shards)
        children = _add_empty_non_terminals(sharded, self.origin)
        names: Any = sharded
        if len(sharded) <= SHARD_ABOVE:  # small: one plain dict, the fastest lookup
            names = {}
            for shard in shards:
                names.update(shard)
        zone = Zone(self.origin, names, self._soa, len(self._cuts), len(self._dnames), count, children)
        from secondns.dnssec import build_index, expiry_buckets  # dnssec builds on this module

        zone.denial = build_index(zone)
        if zone.denial is not None:
            zone.sig_hours = expiry_buckets(zone)
        self._pending = [{} for _ in range(SHARDS)]
        return zone


def _split(buf: bytes | bytearray) -> list[bytes]:
    """The wire records (type, TTL, rdlength, rdata) held back to back in ``buf``."""
    out: list[bytes] = []
    pos = 0
    end = len(buf)
    while pos < end:
        nxt = pos + 8 + ((buf[pos + 6] << 8) | buf[pos + 7])
        out.append(bytes(buf[pos:nxt]))
        pos = nxt
    return out


def _merge(recs: list[bytes]) -> tuple[bytes, int]:
    """Group a node's records into contiguous RRsets, dropping duplicates (RFC 2181 5).

    Every record of an RRset gets the RRset's first TTL, as BIND does: RFC
    2181 5.2 forbids serving one RRset with different TTLs.
    """
    groups: dict[int, list[bytes]] = {}
    seen: set[bytes] = set()
    for rec in recs:
        key = rec[:2] + rec[6:]  # type and rdata: the TTL does not make a record distinct
        if key in seen:
            continue
        seen.add(key)
        rtype = (rec[0] << 8) | rec[1]
        group = groups.get(rtype)
        if group is None:
            groups[rtype] = [rec]
        elif rtype == rrtypes.RRSIG:
            group.append(rec)  # each RRSIG keeps the TTL of the RRset it covers (RFC 4034 3)
        else:
            first_ttl = group[0][2:6]
            group.append(rec if rec[2:6] == first_ttl else rec[:2] + first_ttl + rec[6:])
    ordered = [r for group in groups.values() for r in group]
    return b"".join(ordered), len(ordered)


def _add_empty_non_terminals(names: ShardedNames, origin: bytes) -> dict[bytes, int]:
    """Insert every missing ancestor up to the origin with an empty blob.

    Returns the direct-child count of every interior name, which IXFR needs
    to tell an empty non-terminal from a name to delete (see Zone).
    """
    children: dict[bytes, int] = {}
    ents: set[bytes] = set()
    for owner in names:
        name = owner
        while name != origin:
            up = parent(name)
            children[up] = children.get(up, 0) + 1
            if up in names or up in ents:
                break  # that name's own link upwards is counted on its own turn
            ents.add(up)
            name = up
    for name in ents:
        names[name] = b""
    return children


class ZoneView:
    """Reads of one snapshot that remember every name looked at.

    The answer engine reads through a view so each cached response knows the
    names it depends on; an IXFR then forgets only the responses that read a
    name it changed (see responder.AnswerCache).  The record of reads doubles
    as a memo: one answer asks for the same name several times.
    """

    __slots__ = ("denial", "deps", "n_cuts", "n_dnames", "origin", "soa", "zone")

    def __init__(self, zone: Zone) -> None:
        self.zone = zone
        self.deps: dict[bytes, bytes | None] = {}
        self.origin = zone.origin
        self.soa = zone.soa
        self.n_cuts = zone.n_cuts
        self.n_dnames = zone.n_dnames
        self.denial = zone.denial

    def get(self, name: bytes) -> bytes | None:
        """Zone.get, recorded (and memoised for the rest of this answer)."""
        deps = self.deps
        if name in deps:
            return deps[name]
        blob = deps[name] = self.zone.get(name)
        return blob

    def rrsets(self, name: bytes) -> RRsetMap | None:
        """Zone.rrsets, recorded."""
        blob = self.get(name)
        return decode_node(blob) if blob is not None else None

    def has_type(self, name: bytes, rtype: int) -> bool:
        """Zone.has_type, recorded."""
        blob = self.get(name)
        return bool(blob) and blob_has_type(blob, rtype)  # type: ignore[arg-type]
