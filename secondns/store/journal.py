"""The IXFR journal on disk: changes appended after each IXFR, replayed at start.

Rewriting a million-record copy for a ten-record IXFR would make every
change cost the size of the zone, so received changes are appended to
``<zone>.zone.journal`` instead and folded into the full copy from time to
time (``needs_fold``).  Each entry is readable text framed by a header and a
checksum trailer::

    ; diff 2024010101 2024010102 base=<sha256 of the copy it continues>
    ; time 2024-01-01T12:00:00Z
    - www.example.com.  300  IN  A  192.0.2.1
    + www.example.com.  300  IN  A  192.0.2.2
    ; end sha256=<hex of the entry's bytes before this line>

A crash mid-append leaves a torn last entry; its trailer is missing or does
not match, so it is dropped and the last complete version is served.  The
next append cuts the damage off first, so later entries are never written
behind it where replay cannot reach them.
"""

from __future__ import annotations

import datetime
import errno
import hashlib
import logging
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from secondns.diff import VersionStep
from secondns.errors import StorageError, ZoneError
from secondns.store.storage import copy_digest, fsync_dir, zone_file_name, zone_path
from secondns.store.zonefile import format_record, parse_zone_text

log = logging.getLogger("secondns.journal")

_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
FOLD_BYTES = 1 << 20  # fold once the journal passes this and a quarter of the copy


def journal_path(directory: Path, name: str) -> Path:
    """``<zone file>.journal`` beside the zone's copy."""
    return Path(directory) / journal_file_name(name)


def journal_file_name(name: str) -> str:
    """The journal's file name alone (what a listing of the storage directory shows)."""
    return zone_file_name(name) + ".journal"


def _stamp(when: float) -> str:
    # Whole seconds, rounded down: a freshness time may only ever be read back earlier.
    return datetime.datetime.fromtimestamp(math.floor(when), datetime.UTC).strftime(_TIME_FORMAT)


def _entry(step: VersionStep, base: str, when: float | None, expire_at: float | None) -> bytes:
    lines = [f"; diff {step.from_serial} {step.to_serial} base={base}\n"]
    if when is not None:
        # When a primary last vouched for this version, so a restart that finds the sidecar
        # behind the journal (a crash between the two writes) still counts expiry from it
        # (RFC 1034 4.3.5).  A comment line: older readers skip it.
        stamp = f"; time {_stamp(when)}"
        if expire_at is not None:
            stamp += f" expire-at {_stamp(expire_at)}"
        lines.append(stamp + "\n")
    lines += [f"- {format_record(*rec)}\n" for rec in step.deleted]
    lines += [f"+ {format_record(*rec)}\n" for rec in step.added]
    body = "".join(lines).encode("utf-8")
    return body + f"; end sha256={hashlib.sha256(body).hexdigest()}\n".encode("ascii")


class JournalGap(StorageError):
    """The journal does not end at the version the new changes start from.

    An earlier append failed (disk full, I/O error) or was never made, so
    appending would leave entries that replay can never reach: the caller
    folds the zone into a fresh full copy instead.
    """


@dataclass(frozen=True)
class _Frame:
    """One checksummed entry: where it lies in the file and what its header says."""

    start: int
    end: int  # just past its trailer line
    body: bytes
    from_serial: int
    to_serial: int
    base: str


def _frames(data: bytes, path: Path) -> Iterator[_Frame]:
    """The journal's complete entries in order, up to the first torn or corrupt one."""
    pos = 0
    while pos < len(data):
        end = data.find(b"\n; end sha256=", pos)
        if end < 0:
            log.warning("%s: torn entry at byte %d dropped (crash during append?)", path, pos)
            return
        body = data[pos:end + 1]
        trailer_end = data.find(b"\n", end + 1)
        trailer = data[end + 1:trailer_end + 1] if trailer_end >= 0 else b""
        expected = f"; end sha256={hashlib.sha256(body).hexdigest()}\n".encode("ascii")
        if trailer != expected:
            log.warning("%s: entry at byte %d fails its checksum; replay stops there", path, pos)
            return
        header = body[:body.find(b"\n")].decode("ascii", "replace").split()
        try:
            if len(header) != 5 or header[:2] != [";", "diff"] or not header[4].startswith("base="):
                raise ValueError("bad entry header")
            frame = _Frame(pos, trailer_end + 1, body, int(header[2]), int(header[3]), header[4][5:])
        except ValueError as exc:
            log.warning("%s: entry at byte %d unreadable (%s); replay stops there", path, pos, exc)
            return
        yield frame
        pos = frame.end


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror or exc}") from exc


def append(directory: Path, name: str, steps: Sequence[VersionStep], *, copy_serial: int | None = None,
           when: float | None = None, expire_at: float | None = None) -> int:
    """Append steps durably (fsync); returns the journal's new size in bytes.

    Each entry names the full copy it continues (``storage.copy_digest``)
    and, when given, the time a primary vouched for it (*when*, *expire_at*).

    Whatever follows the last entry that replay would use is cut off first:
    a torn tail left by a crash, or the partial entry of a failed append.
    Appending behind such damage would hide every later entry from
    ``read``, which stops at the first bad entry, so each restart would go
    back to an older serial.  With *copy_serial* (the serial of the full
    copy) the cut is at the end of the chain replay follows from that copy,
    and JournalGap is raised when the steps do not continue that chain.
    """
    path = journal_path(directory, name)
    base = copy_digest(directory, name)
    old = _read_bytes(path)
    keep = 0
    serial = copy_serial
    for frame in _frames(old, path):
        if copy_serial is None:
            keep = frame.end
        elif frame.base == base and frame.from_serial == serial:
            serial, keep = frame.to_serial, frame.end
    if serial is not None and steps and steps[0].from_serial != serial:
        raise JournalGap(f"{path} ends at serial {serial}, the new changes start from "
                         f"{steps[0].from_serial}")
    if keep < len(old):
        log.warning("%s: cutting %d bytes after the last good entry before appending", path,
                    len(old) - keep)
    data = b"".join(_entry(step, base, when, expire_at) for step in steps)
    try:
        size = _write_at(path, keep, data)
        if not old:
            fsync_dir(path.parent)  # a new journal's directory entry must last too
    except OSError as exc:
        raise StorageError(f"cannot append to {path}: {exc.strerror or exc}") from exc
    return size


def _write_at(path: Path, keep: int, data: bytes) -> int:
    """Cut the file to *keep* bytes, write *data* there, fsync (data and length); the new size.

    Plain ``os.pwrite`` on the descriptor: no buffer that a later close could
    flush behind the cut made after a failure.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        try:
            os.ftruncate(fd, keep)
            view = memoryview(data)
            offset = keep
            while view:  # bounded: every pass writes at least one byte or raises
                written = os.pwrite(fd, view, offset)
                if written <= 0:
                    raise OSError(errno.EIO, "short write")
                view = view[written:]
                offset += written
            os.fsync(fd)
        except OSError:
            # Best effort: leave no partial entry behind (the next append cuts it anyway).
            try:
                os.ftruncate(fd, keep)
            except OSError:
                pass
            raise
        return keep + len(data)
    finally:
        os.close(fd)


def reset(directory: Path, name: str) -> None:
    """Drop the journal: the full copy now holds everything (call after save_zone)."""
    try:
        journal_path(directory, name).unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise StorageError(f"cannot remove {journal_path(directory, name)}: {exc.strerror or exc}") from exc


def needs_fold(directory: Path, name: str, journal_size: int) -> bool:
    """True when replaying the journal would cost more than rewriting the copy is worth."""
    if journal_size < FOLD_BYTES:
        return False
    try:
        copy_size = zone_path(Path(directory), name).stat().st_size
    except OSError:
        return True
    return journal_size * 4 >= copy_size


@dataclass(frozen=True)
class Replay:
    """The entries that continue the full copy, and the newest freshness time they carry."""

    steps: list[VersionStep]
    last_refresh: float | None = None  # when a primary last vouched for the final version
    expire_at: float | None = None  # RFC 7314 EDNS EXPIRE it then gave, as a UNIX time


def read(directory: Path, name: str, origin: bytes, from_serial: int) -> list[VersionStep]:
    """Complete entries that continue from *from_serial*, in order (see ``replay``)."""
    return replay(directory, name, origin, from_serial).steps


def replay(directory: Path, name: str, origin: bytes, from_serial: int) -> Replay:
    """Complete entries that continue from *from_serial*, in order, with their times.

    Entries for older versions (already in the full copy) are skipped; a torn
    or corrupt entry ends the replay there, with a warning.
    """
    path = journal_path(directory, name)
    data = _read_bytes(path)
    if not data:
        return Replay([])  # no journal (or an empty one): no need to read the copy's digest
    steps: list[VersionStep] = []
    serial = from_serial
    base = copy_digest(directory, name)
    last_refresh: float | None = None
    expire_at: float | None = None
    for frame in _frames(data, path):
        if frame.base != base or frame.from_serial != serial:
            continue  # written for another copy, or already folded into this one
        try:
            step, when, until = _parse(frame.body.decode("utf-8"), origin, str(path))
        except (ZoneError, ValueError) as exc:
            log.warning("%s: entry at byte %d unreadable (%s); replay stops there", path,
                        frame.start, exc)
            break
        steps.append(step)
        serial = step.to_serial
        if when is not None:
            last_refresh, expire_at = when, until
    return Replay(steps, last_refresh, expire_at)


def _parse(text: str, origin: bytes, path: str) -> tuple[VersionStep, float | None, float | None]:
    header, _, rest = text.partition("\n")
    parts = header.split()
    if len(parts) != 5 or parts[:2] != [";", "diff"] or not parts[4].startswith("base="):
        raise ValueError("bad entry header")
    lines = rest.splitlines()
    deleted = [line[2:] for line in lines if line.startswith("- ")]
    added = [line[2:] for line in lines if line.startswith("+ ")]
    step = VersionStep(int(parts[2]), int(parts[3]),
                       list(parse_zone_text("\n".join(deleted), origin, path=path)),
                       list(parse_zone_text("\n".join(added), origin, path=path)))
    when = until = None
    stamp = next((line.split() for line in lines if line.startswith("; time ")), None)
    if stamp is not None:
        when = _unstamp(stamp[2])
        if len(stamp) == 5 and stamp[3] == "expire-at":
            until = _unstamp(stamp[4])
    return step, when, until


def _unstamp(text: str) -> float:
    when = datetime.datetime.strptime(text, _TIME_FORMAT).replace(tzinfo=datetime.UTC)
    return when.timestamp()
