"""Serving pre-signed zones: RRSIGs and authenticated denial (RFC 4035 3.1, RFC 5155 7.2).

secondns never signs; it returns what the primary signed.  Two things make
that fast:

* a ``DenialIndex`` per signed snapshot: NSEC owners in canonical order
  (RFC 4034 6.1) or NSEC3 owner hashes, sorted, so the record covering a
  name is one bisect (O(log n)).  It is built with the zone (off the reactor)
  and updated by IXFR with the names that changed, never rebuilt;
* NSEC3 hashes of query names cached per index (bounded), since the same
  closest enclosers and wildcards are hashed again and again.

The answer engine records which proof an outcome needs (``Proof``); this
module turns those into NSEC/NSEC3 RRsets with their signatures.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from secondns import rrtypes
from secondns.errors import ZoneError
from secondns.names import WILDCARD_LABEL, label_offsets, parent
from secondns.zone import RRsetMap, Zone, ZoneView, blob_has_type

_B32_STD = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_B32_HEX = b"0123456789ABCDEFGHIJKLMNOPQRSTUV"
_TO_HEX = bytes.maketrans(_B32_STD, _B32_HEX)
_FROM_HEX = bytes.maketrans(_B32_HEX + _B32_HEX.lower(), _B32_STD + _B32_STD)
HASH_CACHE_MAX = 65536
OPT_OUT = 0x01  # NSEC3 flags (RFC 5155 3.1.2.1)


# RFC 9276 3.2: validators may treat NSEC3 with more iterations as insecure (and 3.1: use 0).
ITERATIONS_WARN = 100


def iterations_warning(zone: Any, previous: Any = None) -> str | None:
    """The RFC 9276 warning for a zone version, or None; None too when *previous* (the version
    it replaces) already had the same NSEC3 parameters, so each IXFR does not repeat it.

    Each unknown name costs iterations+1 SHA-1 (~0.4 us each here: ~40 us at 100, 2 ms at
    2500), once per name thanks to the bounded cache in ``DenialIndex.key_of``.
    """
    denial = getattr(zone, "denial", None)
    if denial is None or denial.kind != "nsec3" or denial.params is None:
        return None
    iterations = denial.params.iterations
    if iterations <= ITERATIONS_WARN:
        return None
    old = getattr(previous, "denial", None)
    if old is not None and old.params == denial.params:
        return None
    return (f"NSEC3 with {iterations} iterations (RFC 9276 3.2: more than {ITERATIONS_WARN}; "
            "validators may treat its denials as insecure or SERVFAIL; use 0); serving anyway")


def canonical_key(name: bytes) -> bytes:
    """A bytes key whose order is RFC 4034 6.1 canonical order for lowercased names.

    Labels right to left, each followed by 0x00 0x00 (a NUL inside a label is
    escaped as 0x00 0x01), so a name sorts right after its ancestors.
    """
    offsets = label_offsets(name)
    parts = []
    for off in reversed(offsets[:-1]):
        label = name[off + 1:off + 1 + name[off]]
        if b"\x00" in label:
            label = label.replace(b"\x00", b"\x00\x01")
        parts.append(label + b"\x00\x00")
    return b"".join(parts)


def nsec3_hash(name: bytes, salt: bytes, iterations: int) -> bytes:
    """RFC 5155 5: IH(salt, x, k), SHA-1, over the lowercased wire name."""
    digest = hashlib.sha1(name.lower() + salt).digest()
    for _ in range(iterations):
        digest = hashlib.sha1(digest + salt).digest()
    return digest


def b32hex_decode(label: bytes) -> bytes | None:
    """The hash an NSEC3 owner label spells (RFC 4648 base32hex, no padding)."""
    try:
        text = label.translate(_FROM_HEX)
        return base64.b32decode(text + b"=" * (-len(text) % 8))
    except (ValueError, TypeError):
        return None


def b32hex_encode(digest: bytes) -> bytes:
    """The NSEC3 owner label for a hash, lowercase as BIND writes it."""
    return base64.b32encode(digest).rstrip(b"=").translate(_TO_HEX).lower()


@dataclass(frozen=True)
class Nsec3Params:
    """From NSEC3PARAM at the apex (RFC 5155 4)."""

    algorithm: int
    iterations: int
    salt: bytes

    @classmethod
    def from_rdata(cls, rdata: bytes) -> Nsec3Params:
        """Parse NSEC3PARAM rdata; ZoneError when it is too short to be one."""
        if len(rdata) < 5 or len(rdata) < 5 + rdata[4]:
            raise ZoneError("malformed NSEC3PARAM record at the zone apex")
        algorithm, _flags, iterations, salt_len = struct.unpack_from("!BBHB", rdata)
        return cls(algorithm, iterations, rdata[5:5 + salt_len])


class DenialIndex:
    """Sorted keys of the records that prove non-existence, with their owner names.

    For NSEC the keys are canonical keys of NSEC owners; for NSEC3 the raw
    hashes of NSEC3 owners.  ``derive`` gives the index of a changed zone by
    copying two lists and inserting/removing the changed owners.
    """

    __slots__ = ("_cache", "keys", "kind", "names", "params")

    def __init__(self, kind: str, pairs: Iterable[tuple[bytes, bytes]],
                 params: Nsec3Params | None = None, presorted: bool = False) -> None:
        items = list(pairs) if presorted else sorted(pairs)
        self.kind = kind
        self.keys = [k for k, _ in items]
        self.names = [n for _, n in items]
        self.params = params
        self._cache: dict[bytes, bytes] = {}

    def __len__(self) -> int:
        return len(self.keys)

    def key_of(self, name: bytes) -> bytes:
        """The index key of a query-side name (hashing for NSEC3, cached)."""
        if self.kind == "nsec":
            return canonical_key(name)
        cache = self._cache
        digest = cache.get(name)
        if digest is None:
            assert self.params is not None
            digest = nsec3_hash(name, self.params.salt, self.params.iterations)
            if len(cache) >= HASH_CACHE_MAX:
                cache.clear()
            cache[name] = digest
        return digest

    def find(self, name: bytes) -> tuple[bytes | None, bytes | None]:
        """(owner whose record matches *name*, owner whose record covers it)."""
        if not self.keys:
            return None, None
        key = self.key_of(name)
        i = bisect.bisect_right(self.keys, key) - 1
        if i >= 0 and self.keys[i] == key:
            return self.names[i], None
        return None, self.names[i]  # i == -1 wraps to the last record (the chain is circular)

    def derive(self, removed: Iterable[bytes], added: Iterable[tuple[bytes, bytes]],
               params: Nsec3Params | None) -> DenialIndex:
        """A new index with *removed* keys gone and *added* (key, owner) pairs in."""
        new = DenialIndex.__new__(DenialIndex)
        new.kind = self.kind
        new.params = params if params is not None else self.params
        if new.params != self.params:
            raise ValueError("NSEC3 parameters changed")
        new.keys = list(self.keys)
        new.names = list(self.names)
        new._cache = self._cache if new.params == self.params else {}
        for key in removed:
            i = bisect.bisect_left(new.keys, key)
            if i < len(new.keys) and new.keys[i] == key:
                del new.keys[i]
                del new.names[i]
        for key, owner in added:
            i = bisect.bisect_left(new.keys, key)
            if i < len(new.keys) and new.keys[i] == key:
                new.names[i] = owner
            else:
                new.keys.insert(i, key)
                new.names.insert(i, owner)
        return new


def index_key(kind: str, owner: bytes) -> bytes | None:
    """The index key of a zone owner holding NSEC (canonical key) or NSEC3 (hash)."""
    if kind == "nsec":
        return canonical_key(owner)
    return b32hex_decode(owner[1:1 + owner[0]])


def build_index(zone: Zone) -> DenialIndex | None:
    """Scan a freshly built zone once; None when it is not signed with NSEC or NSEC3."""
    apex = zone.rrsets(zone.origin) or {}
    if rrtypes.NSEC3PARAM in apex:
        params = Nsec3Params.from_rdata(apex[rrtypes.NSEC3PARAM][0][1])
        pairs = []
        for name, blob in zone.nodes():
            if blob_has_type(blob, rrtypes.NSEC3):
                digest = index_key("nsec3", name)
                if digest is not None:
                    pairs.append((digest, name))
        return DenialIndex("nsec3", pairs, params)
    if rrtypes.NSEC in apex:
        return DenialIndex("nsec", ((canonical_key(name), name) for name, blob in zone.nodes()
                                    if blob_has_type(blob, rrtypes.NSEC)))
    return None


# -- proofs an answer may need ------------------------------------------------

NXDOMAIN_PROOF = "nxdomain"  # (qname, closest encloser)
NODATA_PROOF = "nodata"  # (qname,)
WILDCARD_NODATA_PROOF = "wildcard-nodata"  # (qname, closest encloser)
WILDCARD_ANSWER_PROOF = "wildcard-answer"  # (qname, closest encloser)
UNSIGNED_REFERRAL_PROOF = "referral"  # (cut,)

Proof = tuple[str, bytes, bytes]


def signatures(rrsets: RRsetMap | None, rtype: int, ttl: int | None = None) -> list[tuple[int, bytes]]:
    """RRSIG records at a node covering *rtype* (RFC 4034 3.1: type covered first)."""
    if not rrsets:
        return []
    sigs = rrsets.get(rrtypes.RRSIG)
    if not sigs:
        return []
    covered = struct.pack("!H", rtype)
    return [(ttl if ttl is not None else t, rd) for t, rd in sigs if rd[:2] == covered]


RRsetList = list[tuple[bytes, int, list[tuple[int, bytes]]]]


def _denial_rrsets(zone: ZoneView, owner: bytes, rtype: int) -> RRsetList:
    rrsets = zone.rrsets(owner) or {}
    records = rrsets.get(rtype)
    if not records:
        return []
    out: RRsetList = [(owner, rtype, records)]
    sigs = signatures(rrsets, rtype)
    if sigs:
        out.append((owner, rrtypes.RRSIG, sigs))
    return out


def proof_rrsets(zone: ZoneView, index: DenialIndex, proof: Proof) -> RRsetList:
    """The NSEC/NSEC3 RRsets (with RRSIGs) for one proof, in the order peers send them."""
    kind, name, closest = proof
    owners: list[bytes] = []
    rtype = rrtypes.NSEC if index.kind == "nsec" else rrtypes.NSEC3

    def add(owner: bytes | None) -> None:
        if owner is not None and owner not in owners:
            owners.append(owner)

    if index.kind == "nsec":
        if kind == NXDOMAIN_PROOF:
            add(_nsec_for(index, name))  # RFC 4035 3.1.3.2: no exact match
            add(_nsec_for(index, WILDCARD_LABEL + closest))  # no wildcard
        elif kind in (NODATA_PROOF, UNSIGNED_REFERRAL_PROOF):
            add(_nsec_for(index, name))  # RFC 4035 3.1.3.1, 3.1.4.1
        elif kind == WILDCARD_NODATA_PROOF:
            add(_nsec_for(index, name))  # RFC 4035 3.1.3.4
            add(_nsec_for(index, WILDCARD_LABEL + closest))
        elif kind == WILDCARD_ANSWER_PROOF:
            add(_nsec_for(index, name))  # RFC 4035 3.1.3.3
    else:
        if kind == NXDOMAIN_PROOF:
            _closest_encloser_proof(index, name, closest, add)  # RFC 5155 7.2.2
            add(_nsec3_for(index, WILDCARD_LABEL + closest))
        elif kind == NODATA_PROOF:
            match, _cover = index.find(name)
            if match is not None:
                add(match)  # RFC 5155 7.2.3
            else:
                _closest_provable(index, name, add)  # 7.2.4: DS NODATA under opt-out
        elif kind == UNSIGNED_REFERRAL_PROOF:
            match, _cover = index.find(name)
            if match is not None:
                add(match)  # RFC 5155 7.2.7
            else:
                _closest_provable(index, name, add)  # opt-out span covers the delegation
        elif kind == WILDCARD_NODATA_PROOF:
            _closest_encloser_proof(index, name, closest, add)  # RFC 5155 7.2.5
            add(index.find(WILDCARD_LABEL + closest)[0])
        elif kind == WILDCARD_ANSWER_PROOF:
            add(_nsec3_for(index, _next_closer(name, closest)))  # RFC 5155 7.2.6
    out: RRsetList = []
    for owner in owners:
        out += _denial_rrsets(zone, owner, rtype)
    return out


def _nsec_for(index: DenialIndex, name: bytes) -> bytes | None:
    match, cover = index.find(name)
    return match if match is not None else cover


def _nsec3_for(index: DenialIndex, name: bytes) -> bytes | None:
    match, cover = index.find(name)
    return match if match is not None else cover


def _next_closer(name: bytes, closest: bytes) -> bytes:
    """RFC 5155 1.3: the name one label longer than the closest encloser, toward *name*."""
    pos = 0
    while len(name) - pos > len(closest):
        nxt = pos + name[pos] + 1
        if len(name) - nxt == len(closest):
            return name[pos:]
        pos = nxt
    return name


Adder = Callable[[bytes | None], None]


def _closest_encloser_proof(index: DenialIndex, name: bytes, closest: bytes, add: Adder) -> None:
    """RFC 5155 7.2.1: NSEC3 matching the closest encloser, NSEC3 covering the next closer name."""
    add(index.find(closest)[0])
    add(_nsec3_for(index, _next_closer(name, closest)))


def _closest_provable(index: DenialIndex, name: bytes, add: Adder) -> None:
    """RFC 5155 7.2.4/7.2.7 under opt-out: closest provable encloser and next closer."""
    candidate = name
    prev = name
    while True:
        match, _ = index.find(candidate)
        if match is not None:
            add(match)
            if candidate != name:
                add(_nsec3_for(index, prev))
            return
        if candidate == b"\x00":
            return
        prev = candidate
        candidate = parent(candidate)




# -- signature freshness ------------------------------------------------------

SIG_BUCKET = 3600  # seconds: expirations are counted per hour, floor-rounded


def sig_expirations(blob: bytes) -> list[int]:
    """RRSIG expiration times in a node blob (RFC 4034 3.1.5: offset 8 of the rdata)."""
    out = []
    pos = 0
    end = len(blob)
    while pos < end:
        rtype, _ttl, rdlen = struct.unpack_from("!HIH", blob, pos)
        if rtype == rrtypes.RRSIG and rdlen >= 12:
            out.append(struct.unpack_from("!I", blob, pos + 8 + 8)[0])
        pos += 8 + rdlen
    return out


def expiry_buckets(zone: Zone) -> dict[int, int]:
    """How many RRSIGs expire in each hour; the earliest key is the zone's signature expiry.

    Counting per hour keeps this small (a validity period spans weeks, not
    millions of distinct seconds) and lets IXFR update it by the records it
    changes; the metric is therefore up to an hour early, never late.
    """
    buckets: dict[int, int] = {}
    for _name, blob in zone.nodes():
        for when in sig_expirations(blob):
            hour = when // SIG_BUCKET
            buckets[hour] = buckets.get(hour, 0) + 1
    return buckets


def earliest_expiry(buckets: dict[int, int] | None) -> float | None:
    """UNIX time of the earliest signature expiry bucket, or None for an unsigned zone."""
    if not buckets:
        return None
    return float(min(buckets) * SIG_BUCKET)
