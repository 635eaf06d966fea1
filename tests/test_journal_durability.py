"""The IXFR journal after damage, and the expiry clock after a replay (issue 10 items 2 and 4).

Everything goes through the server's own code paths: ``app.DiskStore`` writes (its worker
thread replaced by a direct call, so no reactor runs) and ``app.read_copy`` reads back what a
restart would serve.  Damage is made the way it happens: a crash tears the last entry, a full
disk fails an append half-way, ``kill -9`` lands between the journal append and the sidecar.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_ixfr_unit import ORIGIN, V1, ZONE_NAME, build, steps_of_three
from test_refresh import FakeClient, MemStore
from twisted.internet import defer, task, threads

from secondns.app import DiskStore, read_copy
from secondns.config import Endpoint, ZoneConfig
from secondns.diff import VersionStep, apply_steps
from secondns.registry import Registry
from secondns.store import journal, storage
from secondns.store.storage import CopyMeta
from secondns.store.zonefile import zone_text_chunks
from secondns.transfer.refresh import Refresher
from secondns.zone import Zone

EXPIRE = 86400  # the SOA EXPIRE of test_ixfr_unit's zone
ZC = ZoneConfig(ZONE_NAME, ORIGIN, primaries=(Endpoint("127.0.0.1", 5301),))


@pytest.fixture(autouse=True)
def no_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """DiskStore's writes run in the calling thread: the test sees their result at once."""
    monkeypatch.setattr(threads, "deferToThread",
                        lambda f, *a, **kw: defer.maybeDeferred(f, *a, **kw))


def versions() -> list[Zone]:
    """Serials 1 to 4 of the zone, each from the previous one by one step."""
    out = [build(1, V1).folded()]
    for step in steps_of_three():
        out.append(apply_steps(out[-1], [step]).folded())
    return out


def meta(serial: int, when: float) -> CopyMeta:
    return CopyMeta(serial, when, None, "127.0.0.1#5301", when)


def save(d: defer.Deferred[Any] | None) -> str | None:
    """Run a store call; the failure's message, or None when it worked."""
    box: list[str | None] = []
    assert d is not None
    d.addCallbacks(lambda _: box.append(None), lambda f: box.append(str(f.value)))
    return box[0]


def jpath(tmp_path: Path) -> Path:
    return journal.journal_path(tmp_path, ZONE_NAME)


def served(tmp_path: Path) -> tuple[int, CopyMeta | None]:
    loaded = read_copy(tmp_path, ZC)
    assert loaded is not None
    return loaded[0].serial, loaded[1]


# -- item 2: nothing is appended behind damage


def test_appends_after_a_torn_tail_are_replayed(tmp_path: Path) -> None:
    zones, steps = versions(), steps_of_three()
    store = DiskStore(tmp_path)
    now = time.time()
    assert save(store.save_zone(ZC, zones[0], meta(1, now))) is None
    assert save(store.save_diff(ZC, steps[:1], zones[1], meta(2, now))) is None
    # A crash half-way through the next append: a header and part of a record, no trailer.
    with open(jpath(tmp_path), "ab") as fh:
        fh.write(b"; diff 2 3 base=" + storage.copy_digest(tmp_path, ZONE_NAME).encode()
                 + b"\n+ www.example.com. 300 IN A 192.0")
    assert served(tmp_path)[0] == 2  # the torn entry is dropped, the good one kept
    # The server restarts at 2; the primary sends 2 -> 3 and then 3 -> 4 as two IXFRs.
    assert save(store.save_diff(ZC, steps[1:2], zones[2], meta(3, now))) is None
    assert save(store.save_diff(ZC, steps[2:3], zones[3], meta(4, now))) is None
    serial, m = served(tmp_path)
    assert serial == 4
    assert m is not None and m.serial == 4
    assert b"192.0\n" not in jpath(tmp_path).read_bytes()  # the torn bytes are gone
    loaded = read_copy(tmp_path, ZC)
    assert loaded is not None and sorted(loaded[0].records()) == sorted(zones[3].records())


def test_garbage_after_the_last_entry_is_cut_before_appending(tmp_path: Path) -> None:
    zones, steps = versions(), steps_of_three()
    store = DiskStore(tmp_path)
    now = time.time()
    save(store.save_zone(ZC, zones[0], meta(1, now)))
    save(store.save_diff(ZC, steps[:1], zones[1], meta(2, now)))
    with open(jpath(tmp_path), "ab") as fh:
        fh.write(bytes(range(256)))  # not even text
    assert save(store.save_diff(ZC, steps[1:2], zones[2], meta(3, now))) is None
    assert served(tmp_path)[0] == 3


def _fail_writes_half_way(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The next journal write stores half its bytes, then fails with ENOSPC (a full disk).

    Both ways a journal can be written are covered: a buffered file object from ``open``
    (the append before issue 10) and ``os.pwrite`` on a descriptor (after it).
    """
    armed = [1]
    real_pwrite = os.pwrite

    def pwrite(fd: int, data: Any, offset: int) -> int:
        if armed and armed.pop():
            real_pwrite(fd, bytes(data[:len(data) // 2]), offset)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_pwrite(fd, data, offset)

    class HalfFile:
        def __init__(self, path: Any, mode: str) -> None:
            self.fh = open(path, mode)  # noqa: SIM115 - closed in __exit__

        def __enter__(self) -> HalfFile:
            return self

        def __exit__(self, *exc: object) -> None:
            self.fh.close()

        def write(self, data: bytes) -> int:
            if armed and armed.pop():
                self.fh.write(data[:len(data) // 2])
                self.fh.flush()
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.fh.write(data)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.fh, name)

    monkeypatch.setattr(os, "pwrite", pwrite)
    monkeypatch.setattr(journal, "open", HalfFile, raising=False)
    return armed


def test_a_failed_append_then_a_good_one_serves_the_newest_serial(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    zones, steps = versions(), steps_of_three()
    store = DiskStore(tmp_path)
    now = time.time()
    save(store.save_zone(ZC, zones[0], meta(1, now)))
    save(store.save_diff(ZC, steps[:1], zones[1], meta(2, now)))
    armed = _fail_writes_half_way(monkeypatch)
    error = save(store.save_diff(ZC, steps[1:2], zones[2], meta(3, now)))
    assert error is not None and "No space left" in error
    assert not armed  # the failure really happened inside the write
    monkeypatch.undo()
    monkeypatch.setattr(threads, "deferToThread",
                        lambda f, *a, **kw: defer.maybeDeferred(f, *a, **kw))
    # The refresher still serves 3 from memory; the next IXFR brings 3 -> 4.
    assert save(store.save_diff(ZC, steps[2:3], zones[3], meta(4, now))) is None
    serial, m = served(tmp_path)
    assert serial == 4
    assert m is not None and m.serial == 4
    loaded = read_copy(tmp_path, ZC)
    assert loaded is not None and sorted(loaded[0].records()) == sorted(zones[3].records())


def test_a_failed_append_leaves_no_partial_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    zones, steps = versions(), steps_of_three()
    store = DiskStore(tmp_path)
    now = time.time()
    save(store.save_zone(ZC, zones[0], meta(1, now)))
    save(store.save_diff(ZC, steps[:1], zones[1], meta(2, now)))
    before = jpath(tmp_path).read_bytes()
    _fail_writes_half_way(monkeypatch)
    assert save(store.save_diff(ZC, steps[1:2], zones[2], meta(3, now))) is not None
    assert jpath(tmp_path).read_bytes() == before


def test_a_journal_behind_the_change_is_folded_into_a_full_copy(tmp_path: Path) -> None:
    # An append that failed before writing anything (say EACCES): the journal ends at 2, the
    # next change starts from 3.  Appending it would write an entry no replay can reach.
    zones, steps = versions(), steps_of_three()
    store = DiskStore(tmp_path)
    now = time.time()
    save(store.save_zone(ZC, zones[0], meta(1, now)))
    save(store.save_diff(ZC, steps[:1], zones[1], meta(2, now)))
    assert save(store.save_diff(ZC, steps[2:3], zones[3], meta(4, now))) is None
    assert served(tmp_path)[0] == 4
    assert storage.copy_serial(tmp_path, ZONE_NAME) == 4  # a fresh full copy
    assert not jpath(tmp_path).exists()


def test_journal_gap_is_reported_by_append(tmp_path: Path) -> None:
    zones, steps = versions(), steps_of_three()
    storage.save_zone(tmp_path, ZONE_NAME, zones[0], meta(1, 1.0))
    journal.append(tmp_path, ZONE_NAME, steps[:1], copy_serial=1)
    with pytest.raises(journal.JournalGap, match="ends at serial 2"):
        journal.append(tmp_path, ZONE_NAME, steps[2:3], copy_serial=1)
    journal.append(tmp_path, ZONE_NAME, steps[1:3], copy_serial=1)
    assert journal.read(tmp_path, ZONE_NAME, ORIGIN, 1) == steps


# -- item 4: expiry is anchored at the last proof of freshness on disk, never at "now"


def _crash_before_sidecar(tmp_path: Path, copy_time: float, ixfr_time: float,
                          append: Callable[[DiskStore, list[VersionStep], Zone, CopyMeta], Any]) -> None:
    """The copy at serial 1, then an IXFR to 2 whose sidecar write never happened (kill -9)."""
    zones, steps = versions(), steps_of_three()
    store = DiskStore(tmp_path)
    save(store.save_zone(ZC, zones[0], meta(1, copy_time)))
    sidecar = storage.meta_path(tmp_path, ZONE_NAME).read_bytes()
    append(store, steps[:1], zones[1], meta(2, ixfr_time))
    storage.meta_path(tmp_path, ZONE_NAME).write_bytes(sidecar)  # as it was before the append


def _expired_at_start(zone_meta: CopyMeta | None, zone: Zone) -> bool:
    registry = Registry()
    registry.add(ORIGIN)
    registry.swap(ORIGIN, zone)
    ref = Refresher(ZC, registry, FakeClient(), MemStore(), task.Clock())
    ref.start(zone_meta)
    return ref.status.expired


def test_sidecar_behind_the_journal_counts_expiry_from_the_entry(tmp_path: Path) -> None:
    now = time.time()
    copy_time, ixfr_time = now - 3 * EXPIRE, now - EXPIRE - 600  # down for longer than EXPIRE
    _crash_before_sidecar(tmp_path, copy_time, ixfr_time,
                          lambda s, st, z, m: save(s.save_diff(ZC, st, z, m)))
    loaded = read_copy(tmp_path, ZC)
    assert loaded is not None
    zone, m = loaded
    assert zone.serial == 2
    assert m is not None, "no freshness time: expiry would restart from now"
    assert copy_time <= m.last_refresh <= ixfr_time  # type: ignore[operator]
    assert m.last_refresh > ixfr_time - 1  # the entry's own time (whole seconds), not the copy's
    assert _expired_at_start(m, zone)


def test_entry_without_a_time_falls_back_to_the_copy(tmp_path: Path) -> None:
    # A journal written before entries carried their time: the copy's sidecar still bounds it.
    now = time.time()
    copy_time = now - 2 * EXPIRE
    _crash_before_sidecar(tmp_path, copy_time, now,
                          lambda s, st, z, m: journal.append(tmp_path, ZONE_NAME, st))
    loaded = read_copy(tmp_path, ZC)
    assert loaded is not None
    zone, m = loaded
    assert zone.serial == 2
    assert m is not None and m.last_refresh == copy_time
    assert _expired_at_start(m, zone)


def test_no_sidecar_at_all_uses_the_newest_time_on_disk(tmp_path: Path) -> None:
    now = time.time()
    copy_time, ixfr_time = now - 3 * EXPIRE, now - 100
    _crash_before_sidecar(tmp_path, copy_time, ixfr_time,
                          lambda s, st, z, m: save(s.save_diff(ZC, st, z, m)))
    storage.meta_path(tmp_path, ZONE_NAME).unlink()
    loaded = read_copy(tmp_path, ZC)
    assert loaded is not None
    zone, m = loaded
    assert m is not None and ixfr_time - 1 < m.last_refresh <= ixfr_time  # type: ignore[operator]
    assert not _expired_at_start(m, zone)  # recent enough: served, expiring EXPIRE after it


def test_edns_expire_recorded_in_the_entry_is_kept(tmp_path: Path) -> None:
    now = time.time()
    zones, steps = versions(), steps_of_three()
    store = DiskStore(tmp_path)
    save(store.save_zone(ZC, zones[0], meta(1, now - 500)))
    sidecar = storage.meta_path(tmp_path, ZONE_NAME).read_bytes()
    save(store.save_diff(ZC, steps[:1], zones[1], CopyMeta(2, now - 100, now - 50, None, now - 100)))
    storage.meta_path(tmp_path, ZONE_NAME).write_bytes(sidecar)
    loaded = read_copy(tmp_path, ZC)
    assert loaded is not None
    zone, m = loaded
    assert m is not None and m.expire_at is not None and now - 51 < m.expire_at <= now - 50
    assert _expired_at_start(m, zone)  # RFC 7314: the primary's shorter expiry still applies


def test_an_ixfr_onto_a_hand_written_file_writes_a_full_copy(tmp_path: Path) -> None:
    # No copy of our own to continue (an operator seeded the zone): fold at once, so the journal
    # never depends on a file whose serial cannot be read without parsing it.
    zones, steps = versions(), steps_of_three()
    storage.zone_path(tmp_path, ZONE_NAME).write_text("".join(zone_text_chunks(zones[0])))
    assert storage.copy_serial(tmp_path, ZONE_NAME) is None
    assert served(tmp_path)[0] == 1
    store = DiskStore(tmp_path)
    assert save(store.save_diff(ZC, steps[:1], zones[1], meta(2, time.time()))) is None
    assert storage.copy_serial(tmp_path, ZONE_NAME) == 2
    assert not jpath(tmp_path).exists()
    assert served(tmp_path)[0] == 2
