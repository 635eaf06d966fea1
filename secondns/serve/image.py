"""A zone version as one memory-mapped file every worker reads in place.

Why a file and not a copy per worker: a worker that unmarshalled its own dict of node blobs
would cost a full private copy of every zone (N workers, N copies).  Mapped read-only, the
pages are the kernel's page cache, shared by every worker, and a worker's private memory for
a zone is only what the answer path allocates.  No parsing either: opening an image is an
mmap and a header read, whatever the zone's size.

Layout (little endian)::

    magic "SNSIMG01" | u64 slots | u64 table offset | u64 extras offset | u64 extras length
    table: slots x u64 record offsets (0: empty slot), open addressing on crc32(name)
    records: u32 blob length | u8 name length | name | blob
    extras: marshal of (origin, SOA ttl, SOA rdata, cuts, dnames, record count, denial index,
            number of names)

The name hash is zlib.crc32, not ``hash()``: it must be the same in every process
(``hash`` of bytes is salted per process).  Slots are at least twice the names, so a lookup
probes ~1.5 slots.  The file is written beside its final name and renamed, so a worker never
maps a half-written image.
"""

from __future__ import annotations

import marshal
import mmap
import os
import struct
import zlib
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

from secondns.errors import ZoneError
from secondns.zone import SOA, Zone

MAGIC = b"SNSIMG01"
_HEADER = struct.Struct("<8sQQQQ")
_REC = struct.Struct("<IB")
_CHUNK = 1 << 20


def denial_state(zone: Zone) -> Any:
    """The denial index as plain data (as ``Zone.to_state`` writes it)."""
    denial = zone.denial
    if denial is None:
        return None
    params = denial.params
    return (denial.kind, denial.keys, denial.names,
            None if params is None else (params.algorithm, params.iterations, params.salt))


def denial_from_state(state: Any) -> Any:
    """The inverse of ``denial_state``."""
    if state is None:
        return None
    from secondns.dnssec import DenialIndex, Nsec3Params

    kind, keys, owners, params = state
    return DenialIndex(kind, zip(keys, owners, strict=True),
                       None if params is None else Nsec3Params(*params), presorted=True)


def write_image(path: Path, zone: Zone) -> int:
    """Write *zone* (folded) as an image at *path*, atomically; returns the file size.

    Runs in a thread of the main process: O(zone), never on a worker.
    """
    # A copy folded for this write alone is emptied a shard at a time, not freed in one
    # decref holding the GIL (~86 ms per 1M names) while the reactor thread waits.
    with zone.folded_once() as folded:
        return _write_folded(path, folded)


def _write_folded(path: Path, zone: Zone) -> int:
    """``write_image`` of a zone without a delta."""
    slots = 8
    while slots < 2 * zone.base_size + 1:
        slots <<= 1
    mask = slots - 1
    table = array("Q", bytes(8 * slots))
    table_off = _HEADER.size
    offset = table_off + 8 * slots
    tmp = path.with_name(f".{path.name}.tmp")
    pack = _REC.pack
    crc32 = zlib.crc32
    with open(tmp, "wb") as f:
        f.write(bytes(table_off + 8 * slots))  # header and table, filled in at the end
        chunk: list[bytes] = []
        size = 0
        for name, blob in zone._items():  # a folded zone: every name, non-terminals too
            i = crc32(name) & mask
            while table[i]:
                i = (i + 1) & mask
            table[i] = offset
            rec = pack(len(blob), len(name)) + name + blob
            chunk.append(rec)
            size += len(rec)
            offset += len(rec)
            if size >= _CHUNK:
                f.write(b"".join(chunk))
                chunk.clear()
                size = 0
        f.write(b"".join(chunk))
        extras = marshal.dumps((zone.origin, zone.soa.ttl, zone.soa.rdata, zone.n_cuts, zone.n_dnames,
                                zone.record_count, denial_state(zone), zone.base_size))
        f.write(extras)
        f.seek(0)
        f.write(_HEADER.pack(MAGIC, slots, table_off, offset, len(extras)))
        f.write(table.tobytes())
    os.replace(tmp, path)
    return offset + len(extras)


class ImageMap:
    """The node-blob mapping of ``Zone`` (``get`` and iteration) over a mapped image."""

    __slots__ = ("_len", "_mask", "_mm", "_table", "extras")

    def __init__(self, path: Path) -> None:
        with open(path, "rb") as f:
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        if len(mm) < _HEADER.size:
            raise ZoneError(f"{path}: not a zone image")
        magic, slots, table_off, extras_off, extras_len = _HEADER.unpack_from(mm, 0)
        if magic != MAGIC or extras_off + extras_len > len(mm):
            raise ZoneError(f"{path}: not a zone image")
        self._mm = mm
        self._mask = slots - 1
        self._table = memoryview(mm)[table_off:table_off + 8 * slots].cast("Q")
        self.extras: tuple[Any, ...] = marshal.loads(mm[extras_off:extras_off + extras_len])
        self._len: int = self.extras[-1] if len(self.extras) == 8 else 0

    def get(self, name: bytes, default: bytes | None = None) -> bytes | None:
        """The blob of *name*, read from the mapping (one small copy)."""
        mm = self._mm
        table = self._table
        mask = self._mask
        i = zlib.crc32(name) & mask
        while True:
            off = table[i]
            if not off:
                return default
            blen, nlen = _REC.unpack_from(mm, off)
            start = off + 5
            if nlen == len(name) and mm[start:start + nlen] == name:
                start += nlen
                return mm[start:start + blen]
            i = (i + 1) & mask

    def __contains__(self, name: bytes) -> bool:
        return self.get(name) is not None

    def __getitem__(self, name: bytes) -> bytes:
        blob = self.get(name)
        if blob is None:
            raise KeyError(name)
        return blob

    def keys(self) -> Iterator[bytes]:
        """Every name (``dict(image)`` uses this with ``__getitem__``: a fold copies the image)."""
        return (name for name, _blob in self.items())

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """Every (name, blob), in table order."""
        mm = self._mm
        for off in self._table:
            if off:
                blen, nlen = _REC.unpack_from(mm, off)
                start = off + 5
                yield mm[start:start + nlen], mm[start + nlen:start + nlen + blen]

    def __len__(self) -> int:
        return self._len


def open_image(path: Path, like: Zone | None = None) -> Zone:
    """The zone version stored at *path*; ZoneError when it is not an image.

    With *like* (the version the image was written from, in the main process) the result
    takes that version's child counts, denial index and signature buckets instead of
    rebuilding them: the main process then holds the zone as the workers do, mapped, and
    its own dict copy can be freed.
    """
    names = ImageMap(path)
    try:
        origin, soa_ttl, soa_rdata, n_cuts, n_dnames, count, denial, _n = names.extras
    except ValueError:
        raise ZoneError(f"{path}: bad image extras")
    # Zone only calls get/items/keys/len on its base mapping: the image stands in for the dict.
    base = cast(dict[bytes, bytes], names)
    if like is not None:
        zone = Zone(origin, base, like.soa, n_cuts, n_dnames, count, like._children, denial=like.denial)
        zone.sig_hours = like.sig_hours
        return zone
    return Zone(origin, base, SOA.from_rdata(soa_ttl, soa_rdata), n_cuts, n_dnames, count, {},
                denial=denial_from_state(denial))
