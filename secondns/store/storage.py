"""The copy of each zone a secondary keeps on disk, and when it last heard from a primary.

A restart serves from this copy, so it must never be half written or
silently damaged:

* Writes are atomic: a temporary file in the same directory, fsync, rename
  over the old copy, fsync the directory (once for a copy's three files).  A
  crash (even ``kill -9``) at any point leaves either the previous copy or the
  new one; a leftover temporary file is removed the next time the zone is
  loaded.  The binary snapshot beside the copy is not fsynced: its digests
  reject a torn one, and the text copy is parsed instead.
* The copy is an ordinary zone file (``named-checkzone`` accepts it as is)
  framed by comment lines: a header naming the zone and serial, and a
  trailer with the record count and a SHA-256 of everything before it.  A
  copy whose trailer is missing or does not match is refused, never served.
* A zone file without the header is taken as hand-written and loaded with
  no checksum, so an operator can seed a zone by dropping a file in place.

The timestamps that expiry counts from (RFC 1035 4.3.5: a secondary stops
answering EXPIRE seconds after its last successful refresh) live in a small
JSON sidecar, so a refresh that finds the serial unchanged rewrites only
that, never the whole zone.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import itertools
import json
import logging
import marshal
import math
import os
import re
import secrets
import threading
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from secondns.errors import StorageError, ZoneError
from secondns.names import to_text as name_to_text
from secondns.store.zonefile import load_zone_text, zone_text_chunks
from secondns.zone import SHARD_ABOVE, ShardedNames, Zone

log = logging.getLogger("secondns.storage")

MAGIC = "; secondns zone copy"
HEADER = MAGIC + " v1"
_HEADER_LINES = 4
_TRAILER_RE = re.compile(rb"; end records=([0-9]+) sha256=([0-9a-f]{64})\n")
_SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789-_.")
_UNSAFE_RE = re.compile(r"[^a-z0-9_.-]")  # _SAFE's complement, for names already lowercased
_META_VERSION = 1
_SNAP_MAGIC = "secondns-snapshot-v3"
# Formats read: 3 is written; 2 (names in slices, the rest in the head) is still read, so a
# restart after an upgrade uses the snapshot the previous version wrote.
_SNAP_FORMATS = {"secondns-snapshot-v2": 2, _SNAP_MAGIC: 3}
# Entries (names, child counts, index owners) per marshal call in a snapshot: marshal holds
# the GIL for a whole call, so one call over a 1M-name dict stalled the reactor thread ~200 ms
# (issue 11); 20k names took 17 ms (1M-record zone, quiet machine), so 5k: ~4 ms.  Readers
# accept any slice size.
_SNAP_CHUNK = 5_000


@dataclass
class CopyMeta:
    """What a restart needs besides the records: when the zone was last confirmed, and by whom.

    ``last_refresh`` is the UNIX time of the last successful SOA check or
    transfer; expiry counts from it across restarts.  ``expire_at`` is the
    absolute expiry time when a primary told us one (RFC 7314 EDNS EXPIRE).
    """

    serial: int
    last_refresh: float | None
    expire_at: float | None
    primary: str | None
    saved: float


def zone_path(directory: Path, zone_name: str) -> Path:
    """``<directory>/<name without the trailing dot>.zone``; the root zone is ``root.zone``.

    ASCII letters are lowercased (names compare case-insensitively, RFC 4343)
    and every byte outside ``[a-z0-9._-]`` is written ``%XX``, so no zone name
    can reach outside the directory or collide with another zone's file.
    """
    return (directory if isinstance(directory, Path) else Path(directory)) / zone_file_name(zone_name)


def zone_file_name(zone_name: str) -> str:
    """The name of the zone's file in the storage directory (see zone_path), as a string."""
    text = zone_name[:-1] if zone_name.endswith(".") else zone_name
    if not text:
        return "root.zone"
    if text.isascii():
        # The usual name needs no escape: one C-level lower() and scan instead of a loop per
        # byte (a 10,000-zone restart asked for each zone's path five times, ~6 us each).
        lowered = text.lower()
        if _UNSAFE_RE.search(lowered) is None and lowered != "root":
            return f"{lowered}.zone"
    out = []
    for byte in text.encode("utf-8"):
        if 0x41 <= byte <= 0x5A:
            byte += 0x20
        out.append(chr(byte) if byte in _SAFE else f"%{byte:02X}")
    stem = "".join(out)
    if stem == "root":  # a zone literally named "root." must not take the root zone's file
        stem = "%72oot"
    return f"{stem}.zone"


def meta_path(directory: Path, zone_name: str) -> Path:
    """The JSON sidecar: ``<zone file>.meta``."""
    path = zone_path(directory, zone_name)
    return path.with_name(path.name + ".meta")


def _temp_name(final: Path) -> Path:
    # Hidden, and never ending in ".zone": no zone's own file can look like this.
    return final.with_name(f".{final.name}.tmp-{secrets.token_hex(8)}")


def _temp_pattern(zone_file: Path) -> re.Pattern[str]:
    return re.compile(r"\." + re.escape(zone_file.name) + r"(?:\.meta|\.snap)?\.tmp-[0-9a-f]{16}")


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def fsync_dir(directory: Path) -> None:
    """Make the rename itself durable: on POSIX the directory entry lives in the directory."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(final: Path, chunks: Iterable[bytes], sync: bool = True, sync_dir: bool = True
                  ) -> None:
    """Write *final* through a temporary file and a rename.

    *sync* False skips the file's fsync (a file checked by digest when read, which a crash may
    leave torn: the binary snapshot); *sync_dir* False leaves the directory's fsync to the
    caller, who makes several renames durable with one (save_zone).
    """
    tmp = _temp_name(final)
    try:
        try:
            with open(tmp, "xb") as f:
                for chunk in chunks:
                    f.write(chunk)
                f.flush()
                if sync:
                    os.fsync(f.fileno())
            os.replace(tmp, final)
        except BaseException:
            _unlink_quietly(tmp)
            raise
        if sync_dir:
            fsync_dir(final.parent)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise StorageError(f"cannot write {final}: {reason}") from exc


def _iso(when: float) -> str:
    return datetime.datetime.fromtimestamp(when, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _copy_chunks(zone: Zone, meta: CopyMeta, sums: list[str] | None = None) -> Iterator[bytes]:
    """Header, records and trailer; the trailer's digest covers every byte before it.

    The digest is also appended to *sums*, so the binary snapshot can name
    the text copy it was made alongside.
    """
    digest = hashlib.sha256()
    header = (f"{HEADER}\n; zone {name_to_text(zone.origin)}\n; serial {zone.serial}\n"
              f"; saved {_iso(meta.saved)}\n").encode("ascii")
    digest.update(header)
    yield header
    count = 0
    for text in zone_text_chunks(zone):
        chunk = text.encode("ascii")
        count += chunk.count(b"\n")
        digest.update(chunk)
        yield chunk
    if sums is not None:
        sums.append(digest.hexdigest())
    yield f"; end records={count} sha256={digest.hexdigest()}\n".encode("ascii")


def save_zone(directory: Path, name: str, zone: Zone, meta: CopyMeta) -> Path:
    """Replace the zone's copy on disk atomically, then its sidecar; returns the copy's path.

    On failure (disk full, permissions) the previous copy is left as it was
    and StorageError names the file and the reason.
    """
    directory = Path(directory)
    final = zone_path(directory, name)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create {directory}: {exc.strerror or exc}") from exc
    sums: list[str] = []
    # One directory fsync makes the three renames durable.  A crash before it may keep any
    # subset of them, each harmless: a sidecar for another serial is ignored (load_zone), a
    # snapshot naming another text copy's digest is ignored (_load_snapshot).  Three fsyncs
    # of the directory per zone were a third of the storage thread's time at 10,000 zones.
    _atomic_write(final, _copy_chunks(zone, meta, sums), sync_dir=False)
    _save_snapshot(snapshot_path(directory, name), zone, sums[0], sync_dir=False)
    save_meta(directory, name, meta, sync_dir=False)
    try:
        fsync_dir(directory)
    except OSError as exc:
        raise StorageError(f"cannot write {directory}: {exc.strerror or exc}") from exc
    return final


def copy_digest(directory: Path, zone_name: str) -> str:
    """The SHA-256 in the copy's trailer ("-" for a hand-written file or none at all).

    Journal entries name the copy they apply to with it, so entries written
    for one copy are never replayed onto another of the same serial.
    """
    path = zone_path(Path(directory), zone_name)
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 200))
            tail = fh.read()
    except OSError:
        return "-"
    match = _TRAILER_RE.search(tail)
    return match[2].decode("ascii") if match else "-"


def copy_serial(directory: Path, zone_name: str) -> int | None:
    """The serial in the header of the copy secondns wrote; None for none or a hand-written one.

    Read from the first few hundred bytes, so an IXFR can check that the
    journal continues the copy without parsing the whole zone.
    """
    path = zone_path(Path(directory), zone_name)
    try:
        with open(path, "rb") as fh:
            head = fh.read(1024)
    except OSError:
        return None
    lines = head.split(b"\n", _HEADER_LINES)
    if len(lines) <= _HEADER_LINES - 1 or lines[0] != HEADER.encode("ascii"):
        return None
    serial = lines[2].removeprefix(b"; serial ")
    return int(serial) if serial != lines[2] and serial.isdigit() else None


def snapshot_path(directory: Path, zone_name: str) -> Path:
    """``<zone file>.snap``: the binary snapshot beside the text copy."""
    final = zone_path(Path(directory), zone_name)
    return final.with_name(final.name + ".snap")


def _save_snapshot(path: Path, zone: Zone, text_digest: str, sync_dir: bool = True) -> None:
    """Write the snapshot that lets a restart skip parsing the text copy.

    It names the text copy's digest, so it is used only while it describes
    exactly that copy; a failure to write it is logged, never fatal, since
    the text copy alone is complete.
    """
    # A zone with an IXFR's delta (a journal fold) is marshalled from a folded copy made for
    # it alone, let go a shard at a time, not in one decref holding the GIL for ~86 ms per 1M
    # names in this thread, which stalls the reactor thread too (issue 11).
    with zone.folded_once() as folded:
        payload = b"".join(_snapshot_chunks(folded.to_state()))
    header = f"{_SNAP_MAGIC} {text_digest} {hashlib.sha256(payload).hexdigest()}\n".encode("ascii")
    try:
        # Not fsynced: its digest rejects a copy a crash tore, and the text copy is parsed.
        _atomic_write(path, [header, payload], sync=False, sync_dir=sync_dir)
    except StorageError as exc:
        log.warning("%s (the text copy is intact; the next start parses it)", exc)
        _unlink_quietly(path)


def _dict_slices(mapping: Any) -> Iterator[bytes]:
    """*mapping*'s items as marshalled dicts of at most ``_SNAP_CHUNK`` entries each."""
    items = iter(mapping.items())
    for _ in range(0, len(mapping), _SNAP_CHUNK):
        yield marshal.dumps(dict(itertools.islice(items, _SNAP_CHUNK)))


def _snapshot_chunks(state: tuple[Any, ...]) -> Iterator[bytes]:
    """Format 3: a head with every large part replaced by its size, then the parts in slices.

    marshal holds the GIL for a whole call, so each slice is its own call and the thread
    writing a large zone lets the reactor thread run between them.  Format 2 sliced only the
    names; its head still marshalled the child counts (30k interior names in a 1M-record
    zone: ~10 ms in one call) and a signed zone's NSEC/NSEC3 index (two lists of every
    owner) whole.  Here the names, the child counts and the index's (key, owner) lists go in
    slices, in that order.
    """
    names, children, index = state[2], state[8], state[9]
    head_index = None if index is None else (index[0], len(index[1]), index[3])
    yield marshal.dumps((*state[:2], len(names), *state[3:8], len(children), head_index,
                         *state[10:]))
    yield from _dict_slices(names)
    yield from _dict_slices(children)
    if index is not None:
        keys, owners = index[1], index[2]
        for i in range(0, len(keys), _SNAP_CHUNK):
            yield marshal.dumps((keys[i:i + _SNAP_CHUNK], owners[i:i + _SNAP_CHUNK]))


def _read_dict(stream: io.BytesIO, total: int, into: Any) -> Any:
    """Dict slices from *stream* into *into* until *total* entries, whatever slice size."""
    loaded = 0
    while loaded < total:
        part = marshal.load(stream)
        if type(part) is not dict or not part:
            raise ValueError("snapshot slice is not a dict")
        loaded += len(part)
        into.update(part)
    if loaded != total or len(into) != total:
        raise ValueError("snapshot slices do not add up")
    return into


def _read_index(stream: io.BytesIO, head: Any) -> Any:
    """The NSEC/NSEC3 index of format 3's head (kind, count, params) from its slices."""
    if head is None:
        return None
    if type(head) is not tuple or len(head) != 3 or type(head[1]) is not int:
        raise ValueError("snapshot index header is not an index")
    kind, total, params = head
    keys: list[bytes] = []
    owners: list[bytes] = []
    while len(keys) < total:
        part = marshal.load(stream)
        if (type(part) is not tuple or len(part) != 2 or type(part[0]) is not list
                or type(part[1]) is not list or len(part[0]) != len(part[1]) or not part[0]):
            raise ValueError("snapshot index slice is not a pair of lists")
        keys += part[0]
        owners += part[1]
    if len(keys) != total:
        raise ValueError("snapshot index does not add up")
    return (kind, keys, owners, params)


def _snapshot_state(payload: bytes, version: int = 3) -> tuple[Any, ...]:
    """The inverse of ``_snapshot_chunks`` (*version* 2: the names alone in slices).

    ValueError when the slices do not add up.
    """
    stream = io.BytesIO(payload)
    head = marshal.load(stream)
    if type(head) is not tuple or len(head) < 10 or type(head[2]) is not int:
        raise ValueError("snapshot header is not a state")
    # Slices are read until the count is reached, whatever slice size wrote them.  A large
    # zone is loaded sharded (zone.ShardedNames), so no dict of it ever needs a long resize.
    total: int = head[2]
    names = _read_dict(stream, total, ShardedNames.empty() if total > SHARD_ABOVE else {})
    children, index = head[8], head[9]
    if version >= 3:
        if type(children) is not int:
            raise ValueError("snapshot header is not a format 3 state")
        children = _read_dict(stream, children, {})
        index = _read_index(stream, index)
    if stream.read(1):
        raise ValueError("snapshot has data past its last slice")
    return (*head[:2], names, *head[3:8], children, index, *head[10:])


def _load_snapshot(path: Path, text_digest: str, origin: bytes) -> Zone | None:
    """The snapshot made with the text copy of *text_digest*, or None to parse the text."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    end = data.find(b"\n")
    parts = data[:end].decode("ascii", "replace").split() if end > 0 else []
    version = _SNAP_FORMATS.get(parts[0]) if len(parts) == 3 else None
    if version is None or parts[1] != text_digest:
        return None
    payload = data[end + 1:]
    if hashlib.sha256(payload).hexdigest() != parts[2]:
        log.warning("%s: snapshot checksum mismatch; parsing the text copy", path)
        return None
    try:
        zone = Zone.from_state(_snapshot_state(payload, version))
    except (ValueError, EOFError, TypeError, ZoneError) as exc:
        log.warning("%s: snapshot unreadable (%s); parsing the text copy", path, exc)
        return None
    return zone if zone.origin == origin else None


def save_meta(directory: Path, name: str, meta: CopyMeta, sync_dir: bool = True) -> None:
    """Rewrite only the sidecar: a refresh that found the serial unchanged."""
    directory = Path(directory)
    body = dict(asdict(meta), version=_META_VERSION)
    data = (json.dumps(body, sort_keys=True) + "\n").encode("ascii")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create {directory}: {exc.strerror or exc}") from exc
    _atomic_write(meta_path(directory, name), [data], sync_dir=sync_dir)


def _opt_time(body: dict[str, Any], key: str) -> float | None:
    value = body[key]
    if value is None:
        return None
    if type(value) not in (int, float) or not math.isfinite(value):
        raise ValueError(f"{key} is not a time")
    return float(value)


def load_meta(directory: Path, name: str) -> CopyMeta | None:
    """The sidecar, or None when it is missing or unreadable (logged: never fatal)."""
    return _read_meta(meta_path(Path(directory), name))


def _read_meta(path: Path | str) -> CopyMeta | None:
    try:
        body = json.loads(_read_file(path))
        if not isinstance(body, dict) or body.get("version") != _META_VERSION:
            raise ValueError("not a version 1 sidecar")
        serial = body["serial"]
        if type(serial) is not int or not 0 <= serial <= 0xFFFFFFFF:
            raise ValueError("bad serial")
        primary = body["primary"]
        if primary is not None and not isinstance(primary, str):
            raise ValueError("bad primary")
        saved = _opt_time(body, "saved")
        if saved is None:
            raise ValueError("bad saved time")
        return CopyMeta(serial=serial, last_refresh=_opt_time(body, "last_refresh"),
                        expire_at=_opt_time(body, "expire_at"), primary=primary, saved=saved)
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("%s: cannot read zone metadata: %s", path, exc.strerror or exc)
    except (ValueError, KeyError) as exc:  # JSONDecodeError is a ValueError
        log.warning("%s: ignoring corrupt zone metadata: %s", path, exc)
    return None


# A leftover of _atomic_write: ".<zone file>[.meta|.snap].tmp-<16 hex>".  Zone files all end in
# ".zone", so the greedy group is the zone file's name whatever dots the zone name has.
_ANY_TEMP_RE = re.compile(r"\.(.*\.zone)(?:\.meta|\.snap)?\.tmp-[0-9a-f]{16}")


class Leftovers:
    """One scan of the storage directory: the files it holds, and leftovers of interrupted writes.

    Start-up hands each zone its own leftovers from this one listing:
    scanning the directory once per zone made a restart with N zones cost
    N directory listings of N files each (quadratic; getdents64 was 93% of
    a 10,000-zone restart).  The same listing says which of a zone's files
    exist, so a restart opens only those (``listed``): a small zone has a
    copy, a snapshot and a sidecar, and asking for its journal too (then
    reading the copy's digest again for it) made five opens of three files.
    Nothing else writes a zone's files before its copy is loaded, so the
    listing stays true for as long as it is used.
    """

    def __init__(self, directory: Path, by_file: dict[str, list[str]],
                 files: frozenset[str] | None = None) -> None:
        self.directory = Path(directory)
        self.by_file = by_file
        self.files = files  # None: not listed, every file may exist

    @classmethod
    def scan(cls, directory: Path) -> Leftovers:
        by_file: dict[str, list[str]] = {}
        files: list[str] = []
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    files.append(entry.name)
                    if entry.name.startswith("."):
                        match = _ANY_TEMP_RE.fullmatch(entry.name)
                        if match:
                            by_file.setdefault(match[1], []).append(entry.name)
        except FileNotFoundError:
            pass  # no directory yet: nothing in it (it is created by the first save)
        except OSError:
            return cls(directory, by_file)  # unreadable: assume any file may exist
        return cls(directory, by_file, frozenset(files))

    def listed(self, file_name: str) -> bool:
        """False only when the scan saw the directory and no *file_name* in it."""
        return self.files is None or file_name in self.files

    def clean(self, name: str, final: Path | None = None) -> int:
        """Remove the zone's leftovers found by the scan; returns how many."""
        final = final if final is not None else zone_path(self.directory, name)
        found = self.by_file.pop(final.name, [])
        for file_name in found:
            path = final.with_name(file_name)
            log.info("%s: removing leftover of an interrupted write", path)
            _unlink_quietly(path)
        return len(found)


class ScanOnce:
    """A Leftovers scan of the directory made the first time one is asked for, then shared.

    For a batch of deletions queued at once (a catalog version removing thousands of members):
    one listing for all of them instead of one each (clean_temp_files), which made the batch
    quadratic in the directory's size.  The first deletion of the batch to run (in a writer
    thread) makes it, so it is made after every deletion of the batch was queued: it sees all
    the leftovers each would have seen with a listing of its own.  Leftovers are only ever
    made by a crash (_atomic_write removes its temporary file otherwise), so none appears
    for a zone between the scan and its deletion.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._scan: Leftovers | None = None

    def get(self) -> Leftovers:
        with self._lock:  # deletions of different zones run in different threads
            if self._scan is None:
                self._scan = Leftovers.scan(self.directory)
            return self._scan


def may_exist(leftovers: Leftovers | None, file_name: str) -> bool:
    """False only when a start-up listing (*leftovers*; None: none) shows no *file_name*."""
    return leftovers is None or leftovers.listed(file_name)


def clean_temp_files(directory: Path, name: str) -> int:
    """Remove temporary files left by interrupted writes of this zone; returns how many.

    One directory listing per call: for many zones at once use Leftovers.
    """
    final = zone_path(Path(directory), name)
    pattern = _temp_pattern(final)
    removed = 0
    try:
        entries = list(os.scandir(final.parent))
    except OSError:
        return 0
    for entry in entries:
        if pattern.fullmatch(entry.name):
            log.info("%s: removing leftover of an interrupted write", entry.path)
            _unlink_quietly(Path(entry.path))
            removed += 1
    return removed


def _read_file(path: Path | str) -> bytes:
    """Path.read_bytes for a Path or a string (a restart reads three files a zone)."""
    with open(path, "rb") as fh:
        return fh.read()


def _corrupt(path: Path, why: str) -> StorageError:
    return StorageError(f"{path}: corrupt or truncated copy ({why}); not served")


def _decode(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise StorageError(f"{path}:{line}: not valid UTF-8") from None


def _load_copy(path: Path, data: bytes, origin: bytes, leftovers: Leftovers | None = None) -> Zone:
    """Check a secondns copy's framing and checksum, then take its snapshot or parse it."""
    end = data.find(b"\n")
    if end < 0:
        raise _corrupt(path, "no complete header")
    first = data[:end]
    if first != HEADER.encode("ascii"):
        raise StorageError(f"{path}: unsupported zone copy format {first.decode('ascii', 'replace')!r}")
    if not data.endswith(b"\n"):
        raise _corrupt(path, "no trailer")
    start = data.rfind(b"\n", 0, len(data) - 1) + 1
    trailer = _TRAILER_RE.fullmatch(data, start)
    if trailer is None:
        raise _corrupt(path, "no trailer")
    body = data[:start]
    if hashlib.sha256(body).hexdigest() != trailer[2].decode("ascii"):
        raise _corrupt(path, "checksum mismatch")
    snapshot = (_load_snapshot(path.with_name(f"{path.name}.snap"), trailer[2].decode("ascii"), origin)
                if may_exist(leftovers, f"{path.name}.snap") else None)
    header_serial = body[:body.find(b"\n; saved ")].rsplit(b"; serial ", 1)[-1]
    if snapshot is not None and str(snapshot.serial).encode("ascii") == header_serial:
        return snapshot
    text = _decode(path, body)
    lines = text.split("\n", _HEADER_LINES)
    if len(lines) <= _HEADER_LINES or text.count("\n") - _HEADER_LINES != int(trailer[1]):
        raise _corrupt(path, "record count mismatch")
    zone_line, serial_line = lines[1], lines[2]
    want = name_to_text(origin)
    if zone_line.lower() != f"; zone {want}".lower():
        raise StorageError(f"{path}: copy is of {zone_line[7:]!r}, not {want}")
    try:
        zone = load_zone_text(text, origin, path=str(path))
    except ZoneError as exc:
        raise StorageError(str(exc)) from exc
    if serial_line != f"; serial {zone.serial}":
        raise StorageError(f"{path}: header says {serial_line[2:]!r} but the SOA has {zone.serial}")
    return zone


def load_zone(directory: Path, name: str, origin: bytes,
              leftovers: Leftovers | None = None) -> tuple[Zone, CopyMeta | None] | None:
    """The zone's copy and sidecar; None when there is no copy.

    StorageError when the copy is corrupt, truncated or does not parse.  A
    sidecar for another serial (a crash between writing the copy and the
    sidecar) is ignored: its timestamps were about a different version.
    """
    directory = Path(directory)
    file_name = zone_file_name(name)
    path = directory / file_name
    if leftovers is not None:
        leftovers.clean(name, path)
        if not leftovers.listed(file_name):
            return None
    else:
        clean_temp_files(directory, name)
    try:
        data = _read_file(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if data.startswith(MAGIC.encode("ascii")):
        zone = _load_copy(path, data, origin, leftovers)
    else:
        try:
            zone = load_zone_text(_decode(path, data), origin, path=str(path))
        except ZoneError as exc:
            raise StorageError(str(exc)) from exc
    # A string: no Path to build.
    meta = _read_meta(f"{path}.meta") if may_exist(leftovers, f"{file_name}.meta") else None
    if meta is not None and meta.serial != zone.serial:
        log.info("%s: metadata is for serial %d, copy has %d; ignoring it", path, meta.serial,
                 zone.serial)
        meta = None
    if meta is None and data.startswith(MAGIC.encode("ascii")):
        # A copy we wrote whose sidecar is gone (crash between the two writes): the copy's
        # own save time is a safe lower bound for the last good refresh, so expiry is not
        # restarted from now (RFC 1034 4.3.5).
        saved = _saved_time(data)
        if saved is not None:
            meta = CopyMeta(zone.serial, saved, None, None, saved)
    return zone, meta


def _saved_time(data: bytes) -> float | None:
    start = data.find(b"\n; saved ")
    if start < 0:
        return None
    end = data.find(b"\n", start + 1)
    try:
        when = datetime.datetime.strptime(data[start + 9:end].decode("ascii").strip(),
                                          "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return None
    return when.replace(tzinfo=datetime.UTC).timestamp()


__all__ = [
    "CopyMeta",
    "Leftovers",
    "clean_temp_files",
    "copy_digest",
    "copy_serial",
    "fsync_dir",
    "load_meta",
    "load_zone",
    "may_exist",
    "meta_path",
    "save_meta",
    "save_zone",
    "zone_file_name",
    "zone_path",
]
