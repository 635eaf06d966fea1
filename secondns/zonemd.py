"""ZONEMD (RFC 8976): verify a transferred zone's digest before it is served.

Only the SIMPLE scheme with SHA-384 or SHA-512 exists; a ZONEMD record with
anything else cannot be verified and counts as absent (RFC 8976 4).  The
digest covers every record of the zone (glue included) in canonical form and
order (RFC 4034 6.1-6.3, with RFC 6840 5.1's correction: names inside NSEC
rdata keep their case), except the apex ZONEMD RRset and its RRSIGs.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from secondns import rrtypes
from secondns.dnssec import canonical_key
from secondns.zone import Zone

SCHEME_SIMPLE = 1
HASHES = {1: "sha384", 2: "sha512"}

# RFC 4034 6.2 item 3 as corrected by RFC 6840 5.1 (NSEC removed).
_LOWERCASE_NAMES = (rrtypes.NAME_LAYOUT.keys() - {rrtypes.NSEC}) | {rrtypes.NAPTR}


@dataclass(frozen=True)
class Zonemd:
    """One ZONEMD record (RFC 8976 2.2)."""

    serial: int
    scheme: int
    algorithm: int
    digest: bytes

    @classmethod
    def from_rdata(cls, rdata: bytes) -> Zonemd:
        serial, scheme, algorithm = struct.unpack_from("!IBB", rdata)
        return cls(serial, scheme, algorithm, rdata[6:])

    @property
    def supported(self) -> bool:
        return self.scheme == SCHEME_SIMPLE and self.algorithm in HASHES


def _canonical_rdata(rtype: int, rdata: bytes) -> bytes:
    """RFC 4034 6.2: lowercase the domain names embedded in well-known types."""
    if rtype not in _LOWERCASE_NAMES:
        return rdata
    if rtype == rrtypes.NAPTR:
        pos = 4
        for _ in range(3):  # flags, services, regexp character-strings
            pos += 1 + rdata[pos]
        return rdata[:pos] + rdata[pos:].lower()
    return b"".join(piece.lower() if is_name else piece
                    for is_name, piece in rrtypes.split_rdata(rtype, rdata))


def digest(zone: Zone, algorithm: int) -> bytes:
    """The SIMPLE-scheme digest of *zone* (RFC 8976 3.3)."""
    h = hashlib.new(HASHES[algorithm])
    origin = zone.origin
    covered_zonemd = struct.pack("!H", rrtypes.ZONEMD)
    by_owner = sorted(((canonical_key(name), name, blob) for name, blob in zone.nodes()),
                      key=lambda item: item[0])
    for _key, name, _blob in by_owner:
        rrsets = zone.rrsets(name) or {}
        for rtype in sorted(rrsets):
            records = rrsets[rtype]
            if name == origin and rtype == rrtypes.ZONEMD:
                continue
            if name == origin and rtype == rrtypes.RRSIG:
                records = [(t, rd) for t, rd in records if rd[:2] != covered_zonemd]
            # RFC 4034 6.3: records sorted by canonical rdata, duplicates removed.
            seen = sorted({_canonical_rdata(rtype, rd): ttl for ttl, rd in records}.items())
            prefix = name + struct.pack("!HH", rtype, rrtypes.CLASS_IN)
            for rdata, ttl in seen:
                h.update(prefix + struct.pack("!IH", ttl, len(rdata)) + rdata)
    return h.digest()


def check(zone: Zone, mode: str) -> str | None:
    """None when the zone may be served under *mode* (verify|ignore|require), else the reason."""
    if mode == "ignore":
        return None
    apex = zone.rrsets(zone.origin) or {}
    records = [Zonemd.from_rdata(rd) for _ttl, rd in apex.get(rrtypes.ZONEMD, []) if len(rd) >= 6]
    supported = [r for r in records if r.supported]
    if not supported:
        # RFC 8976 4: none we can compute (or none at all): verification is not possible.
        if mode == "require":
            what = "no ZONEMD record" if not records else "no ZONEMD record that can be verified"
            return f"{what} (zonemd: require)"
        return None
    usable = [r for r in supported if r.serial == zone.serial]
    if not usable:
        # RFC 8976 4: the ZONEMD serial must match the SOA serial, or verification fails.
        return (f"ZONEMD serial {supported[0].serial} does not match the SOA serial {zone.serial}: "
                "the digest is stale")
    for record in usable:
        if digest(zone, record.algorithm) == record.digest:
            return None
    return "ZONEMD digest mismatch: the zone does not match the digest its primary published"
