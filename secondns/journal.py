"""The IXFR journal on disk: changes appended after each IXFR, replayed at start.

Rewriting a million-record copy for a ten-record IXFR would make every
change cost the size of the zone, so received changes are appended to
``<zone>.zone.journal`` instead and folded into the full copy from time to
time (``needs_fold``).  Each entry is readable text framed by a header and a
checksum trailer::

    ; diff 2024010101 2024010102
    - www.example.com.  300  IN  A  192.0.2.1
    + www.example.com.  300  IN  A  192.0.2.2
    ; end sha256=<hex of the entry's bytes before this line>

A crash mid-append leaves a torn last entry; its trailer is missing or does
not match, so it is dropped and the last complete version is served.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from .diff import VersionStep
from .errors import StorageError, ZoneError
from .storage import copy_digest, zone_path
from .zonefile import format_record, parse_zone_text

log = logging.getLogger("secondns.journal")

FOLD_BYTES = 1 << 20  # fold once the journal passes this and a quarter of the copy


def journal_path(directory: Path, name: str) -> Path:
    """``<zone file>.journal`` beside the zone's copy."""
    zone_file = zone_path(Path(directory), name)
    return zone_file.with_name(zone_file.name + ".journal")


def _entry(step: VersionStep, base: str) -> bytes:
    lines = [f"; diff {step.from_serial} {step.to_serial} base={base}\n"]
    lines += [f"- {format_record(*rec)}\n" for rec in step.deleted]
    lines += [f"+ {format_record(*rec)}\n" for rec in step.added]
    body = "".join(lines).encode("utf-8")
    return body + f"; end sha256={hashlib.sha256(body).hexdigest()}\n".encode("ascii")


def append(directory: Path, name: str, steps: Sequence[VersionStep]) -> int:
    """Append steps durably (fsync); returns the journal's new size in bytes.

    Each entry names the full copy it continues (``storage.copy_digest``).
    """
    path = journal_path(directory, name)
    base = copy_digest(directory, name)
    data = b"".join(_entry(step, base) for step in steps)
    try:
        with open(path, "ab") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
            return fh.tell()
    except OSError as exc:
        raise StorageError(f"cannot append to {path}: {exc.strerror or exc}") from exc


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


def read(directory: Path, name: str, origin: bytes, from_serial: int) -> list[VersionStep]:
    """Complete entries that continue from *from_serial*, in order.

    Entries for older versions (already in the full copy) are skipped; a torn
    or corrupt entry ends the replay there, with a warning.
    """
    path = journal_path(directory, name)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror or exc}") from exc
    steps: list[VersionStep] = []
    serial = from_serial
    base = copy_digest(directory, name)
    pos = 0
    while pos < len(data):
        end = data.find(b"\n; end sha256=", pos)
        if end < 0:
            log.warning("%s: torn entry at byte %d dropped (crash during append?)", path, pos)
            break
        body = data[pos:end + 1]
        trailer_end = data.find(b"\n", end + 1)
        trailer = data[end + 1:trailer_end + 1] if trailer_end >= 0 else b""
        expected = f"; end sha256={hashlib.sha256(body).hexdigest()}\n".encode("ascii")
        if trailer != expected:
            log.warning("%s: entry at byte %d fails its checksum; replay stops there", path, pos)
            break
        pos = trailer_end + 1
        try:
            step, entry_base = _parse(body.decode("utf-8"), origin, str(path))
        except (ZoneError, ValueError) as exc:
            log.warning("%s: entry at byte %d unreadable (%s); replay stops there", path, pos, exc)
            break
        if entry_base != base or step.from_serial != serial:
            continue  # written for another copy, or already folded into this one
        steps.append(step)
        serial = step.to_serial
    return steps


def _parse(text: str, origin: bytes, path: str) -> tuple[VersionStep, str]:
    header, _, rest = text.partition("\n")
    parts = header.split()
    if len(parts) != 5 or parts[:2] != [";", "diff"] or not parts[4].startswith("base="):
        raise ValueError("bad entry header")
    deleted = [line[2:] for line in rest.splitlines() if line.startswith("- ")]
    added = [line[2:] for line in rest.splitlines() if line.startswith("+ ")]
    step = VersionStep(int(parts[2]), int(parts[3]),
                       list(parse_zone_text("\n".join(deleted), origin, path=path)),
                       list(parse_zone_text("\n".join(added), origin, path=path)))
    return step, parts[4][5:]
