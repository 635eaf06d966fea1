"""The on-disk zone copy: atomic, checksummed, and readable by BIND."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from peers import require_binary

from secondns import names, rrtypes
from secondns.errors import StorageError
from secondns.store import storage
from secondns.store.storage import CopyMeta, load_meta, load_zone, meta_path, save_meta, save_zone, zone_path
from secondns.zone import Zone, ZoneBuilder

ROOT_DIR = Path(__file__).resolve().parents[1]
NAME = "example.com."
ORIGIN = names.from_text(NAME)


def make_zone(serial: int, hosts: int = 20, origin: bytes = ORIGIN) -> Zone:
    builder = ZoneBuilder(origin)
    ns = names.from_text("ns1", origin)
    builder.add(origin, rrtypes.SOA, 3600,
                ns + names.from_text("hostmaster", origin) + serial.to_bytes(4, "big")
                + bytes.fromhex("00000e10 00000384 00093a80 0000012c"))
    builder.add(origin, rrtypes.NS, 3600, ns)
    builder.add(ns, rrtypes.A, 3600, b"\xc0\x00\x02\x01")
    for i in range(hosts):
        owner = names.from_text(f"h{i}", origin)
        builder.add(owner, rrtypes.A, 300, bytes((10, 0, i >> 8 & 255, i & 255)))
        builder.add(owner, rrtypes.TXT, 300, b"\x0bhello world\x04a;b\"")
    builder.add(names.from_text("odd", origin), 65280, 60, b"\x00\xff")
    return builder.build()


def meta_for(zone: Zone, **kw: Any) -> CopyMeta:
    values: dict[str, Any] = dict(serial=zone.serial, last_refresh=1_700_000_000.5,
                                  expire_at=1_700_600_000.0, primary="192.0.2.1#53",
                                  saved=1_700_000_001.0)
    values.update(kw)
    return CopyMeta(**values)


def records(zone: Zone) -> list[tuple[bytes, int, int, bytes]]:
    return sorted(zone.records())


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".tmp-" in p.name)


def named_checkzone() -> str:
    """The named-checkzone binary (peers.require_binary: a failure under CI, a skip elsewhere)."""
    return require_binary("named-checkzone")


# --- naming -------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "file"), [
    ("example.com.", "example.com.zone"),
    ("Example.COM.", "example.com.zone"),
    (".", "root.zone"),
    ("root.", "%72oot.zone"),
    ("a/b.example.", "a%2Fb.example.zone"),
    ("..", "..zone"),
    ("x%y.", "x%25y.zone"),
    ("caf\u00e9.", "caf%C3%A9.zone"),
    # The fast path for ASCII names must escape and lowercase exactly as the byte loop does.
    ("ROOT.", "%72oot.zone"),
    ("Root.Example.", "root.example.zone"),
    ("a b\\c.", "a%20b%5Cc.zone"),
    ("x\x7f~*.", "x%7F%7E%2A.zone"),
    ("\u212a.", "%E2%84%AA.zone"),  # KELVIN SIGN: str.lower() would make it "k"
])
def test_zone_path_is_safe_and_unique(tmp_path: Path, name: str, file: str) -> None:
    assert zone_path(tmp_path, name) == tmp_path / file
    assert meta_path(tmp_path, name) == tmp_path / (file + ".meta")


# --- round trip ---------------------------------------------------------------------------


def test_round_trip(tmp_path: Path) -> None:
    zone = make_zone(7)
    path = save_zone(tmp_path / "new-dir", NAME, zone, meta_for(zone))
    assert path == tmp_path / "new-dir" / "example.com.zone"
    loaded = load_zone(tmp_path / "new-dir", NAME, ORIGIN)
    assert loaded is not None
    again, meta = loaded
    assert records(again) == records(zone)
    assert meta == meta_for(zone)


def test_copy_format_has_header_and_trailer(tmp_path: Path) -> None:
    zone = make_zone(7)
    text = save_zone(tmp_path, NAME, zone, meta_for(zone)).read_text()
    lines = text.splitlines()
    assert lines[:4] == ["; secondns zone copy v1", "; zone example.com.", "; serial 7",
                         "; saved 2023-11-14T22:13:21Z"]
    assert lines[4].startswith("example.com.\t3600\tIN\tSOA\t")
    assert lines[-1].startswith(f"; end records={zone.record_count} sha256=")
    assert len(lines) == zone.record_count + 5


def test_missing_copy_is_none(tmp_path: Path) -> None:
    assert load_zone(tmp_path, NAME, ORIGIN) is None
    assert load_zone(tmp_path / "absent", NAME, ORIGIN) is None


def test_save_meta_rewrites_only_the_sidecar(tmp_path: Path) -> None:
    zone = make_zone(7)
    path = save_zone(tmp_path, NAME, zone, meta_for(zone))
    before = path.stat()
    save_meta(tmp_path, NAME, meta_for(zone, last_refresh=1_800_000_000.0))
    after = path.stat()
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)
    loaded = load_zone(tmp_path, NAME, ORIGIN)
    assert loaded is not None and loaded[1] is not None
    assert loaded[1].last_refresh == 1_800_000_000.0


def _from_copy_header(zone: Zone) -> CopyMeta:
    """What load_zone falls back to when the sidecar is unusable: the copy's own save time
    (meta_for saves at 1_700_000_001.0), a lower bound of the last good refresh."""
    return CopyMeta(zone.serial, 1_700_000_001.0, None, None, 1_700_000_001.0)


def test_sidecar_for_another_serial_is_ignored(tmp_path: Path) -> None:
    zone = make_zone(7)
    save_zone(tmp_path, NAME, zone, meta_for(zone))
    save_meta(tmp_path, NAME, meta_for(zone, serial=6))
    loaded = load_zone(tmp_path, NAME, ORIGIN)
    # Not the sidecar's timestamps (another version's), but not "unknown" either: expiry must
    # not restart from now after a crash between the two writes (review finding).
    assert loaded is not None and loaded[1] == _from_copy_header(zone)


@pytest.mark.parametrize("content", [b"", b"{", b"[]", b'{"version": 1}', b'{"version": 2}',
                                     b'{"version":1,"serial":true,"last_refresh":null,'
                                     b'"expire_at":null,"primary":null,"saved":1}'])
def test_corrupt_sidecar_is_none_not_fatal(tmp_path: Path, content: bytes,
                                           caplog: pytest.LogCaptureFixture) -> None:
    zone = make_zone(7)
    save_zone(tmp_path, NAME, zone, meta_for(zone))
    meta_path(tmp_path, NAME).write_bytes(content)
    assert load_meta(tmp_path, NAME) is None
    loaded = load_zone(tmp_path, NAME, ORIGIN)
    assert loaded is not None and loaded[1] == _from_copy_header(zone)
    assert "corrupt zone metadata" in caplog.text


def test_hand_written_file_has_no_metadata(tmp_path: Path) -> None:
    (tmp_path / "example.com.zone").write_text(
        "$TTL 300\n@ IN SOA ns1 host 3 3600 600 86400 300\n  IN NS ns1\nns1 IN A 192.0.2.1\n")
    loaded = load_zone(tmp_path, NAME, ORIGIN)
    assert loaded is not None and loaded[1] is None  # its age is unknown: counted from the start


def test_sidecar_is_json(tmp_path: Path) -> None:
    zone = make_zone(7)
    save_zone(tmp_path, NAME, zone, meta_for(zone, expire_at=None, primary=None))
    body = json.loads(meta_path(tmp_path, NAME).read_text())
    assert body == {"version": 1, "serial": 7, "last_refresh": 1_700_000_000.5, "expire_at": None,
                    "primary": None, "saved": 1_700_000_001.0}


# --- damage is detected ---------------------------------------------------------------------


def test_truncated_copy_is_refused(tmp_path: Path) -> None:
    zone = make_zone(7)
    path = save_zone(tmp_path, NAME, zone, meta_for(zone))
    data = path.read_bytes()
    for cut in [0, 10, 21, 23, 24, 30, len(data) // 3, len(data) // 2, len(data) - 80, len(data) - 1]:
        path.write_bytes(data[:cut])
        if cut < len("; secondns zone copy"):
            # Too short to carry the header: a (broken) hand-written file, refused all the same.
            with pytest.raises(StorageError):
                load_zone(tmp_path, NAME, ORIGIN)
            continue
        with pytest.raises(StorageError, match=rf"^{path}: corrupt or truncated copy"):
            load_zone(tmp_path, NAME, ORIGIN)


def test_flipped_byte_is_refused(tmp_path: Path) -> None:
    zone = make_zone(7)
    path = save_zone(tmp_path, NAME, zone, meta_for(zone))
    data = path.read_bytes()
    rng = random.Random(5)
    for offset in [len("; secondns zone copy v1\n") + 3, len(data) // 2, len(data) - 70,
                   *rng.sample(range(30, len(data) - 2), 10)]:
        damaged = bytearray(data)
        damaged[offset] ^= 0x01
        path.write_bytes(bytes(damaged))
        with pytest.raises(StorageError, match="corrupt or truncated copy"):
            load_zone(tmp_path, NAME, ORIGIN)


def test_appended_data_is_refused(tmp_path: Path) -> None:
    zone = make_zone(7)
    path = save_zone(tmp_path, NAME, zone, meta_for(zone))
    with path.open("ab") as f:
        f.write(b"extra.example.com.\t1\tIN\tA\t192.0.2.9\n")
    with pytest.raises(StorageError, match="corrupt or truncated copy"):
        load_zone(tmp_path, NAME, ORIGIN)


def test_copy_of_another_zone_is_refused(tmp_path: Path) -> None:
    other = names.from_text("example.org.")
    zone = make_zone(7, origin=other)
    path = save_zone(tmp_path, "example.org.", zone, meta_for(zone))
    os.replace(path, zone_path(tmp_path, NAME))
    with pytest.raises(StorageError, match="copy is of"):
        load_zone(tmp_path, NAME, ORIGIN)


def test_hand_written_file_is_accepted_without_checksum(tmp_path: Path) -> None:
    (tmp_path / "example.com.zone").write_text(
        "$TTL 1h\n@ SOA ns1 hostmaster ( 42 1h 15m 1w 5m )\n  NS ns1\nns1 A 192.0.2.1\n")
    loaded = load_zone(tmp_path, NAME, ORIGIN)
    assert loaded is not None
    assert loaded[0].serial == 42 and loaded[1] is None


def test_broken_hand_written_file_is_a_storage_error_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "example.com.zone"
    path.write_text("$TTL 1h\n@ SOA ns1 hostmaster 42 1h 15m 1w 5m\nns1 A 192.0.2.300\n")
    with pytest.raises(StorageError, match=rf"^{path}:3: "):
        load_zone(tmp_path, NAME, ORIGIN)


# --- crashes and failures ------------------------------------------------------------------


def test_leftover_temp_file_is_ignored_and_cleaned(tmp_path: Path) -> None:
    zone = make_zone(7)
    path = save_zone(tmp_path, NAME, zone, meta_for(zone))
    half = path.read_bytes()[:100]
    (tmp_path / ".example.com.zone.tmp-0123456789abcdef").write_bytes(half)
    (tmp_path / ".example.com.zone.meta.tmp-fedcba9876543210").write_bytes(b"{")
    unrelated = tmp_path / ".example.com.zone.x.zone.tmp-0123456789abcdef"  # another zone's
    unrelated.write_bytes(b"")
    loaded = load_zone(tmp_path, NAME, ORIGIN)
    assert loaded is not None and loaded[0].serial == 7 and loaded[1] is not None
    assert leftovers(tmp_path) == [unrelated.name]


class _FullDisk:
    """A file whose second write fails as a full disk would."""

    def __init__(self, f: Any) -> None:
        self.f = f
        self.writes = 0

    def write(self, data: bytes) -> int:
        self.writes += 1
        if self.writes > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return int(self.f.write(data))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.f, name)

    def __enter__(self) -> _FullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.f.close()


def test_disk_full_leaves_the_old_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = make_zone(7)
    path = save_zone(tmp_path, NAME, old, meta_for(old))
    real_open = open
    monkeypatch.setattr(storage, "open", lambda *a, **k: _FullDisk(real_open(*a, **k)), raising=False)
    new = make_zone(8, hosts=200)
    with pytest.raises(StorageError, match=rf"^cannot write {path}: No space left on device"):
        save_zone(tmp_path, NAME, new, meta_for(new))
    monkeypatch.undo()
    assert leftovers(tmp_path) == []
    loaded = load_zone(tmp_path, NAME, ORIGIN)
    assert loaded is not None
    assert records(loaded[0]) == records(old)
    assert loaded[1] == meta_for(old)


def test_failed_fsync_leaves_the_old_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = make_zone(7)
    save_zone(tmp_path, NAME, old, meta_for(old))

    def fail(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(storage.os, "fsync", fail)
    new = make_zone(8)
    with pytest.raises(StorageError, match="Input/output error"):
        save_zone(tmp_path, NAME, new, meta_for(new))
    monkeypatch.undo()
    assert leftovers(tmp_path) == []
    loaded = load_zone(tmp_path, NAME, ORIGIN)
    assert loaded is not None and loaded[0].serial == 7


def test_a_saved_copy_is_durable_with_one_directory_fsync(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The copy and its sidecar are fsynced before their renames, and the directory after the
    last rename: one directory fsync for the three files (issue 14), the snapshot unsynced."""
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        target = os.readlink(f"/proc/self/fd/{fd}")
        events.append("fsync-dir" if os.path.isdir(target) else "fsync " + target.rsplit(".tmp-", 1)[0][-5:])
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        events.append("rename " + str(dst)[-5:])
        real_replace(src, dst)

    monkeypatch.setattr(storage.os, "fsync", fsync)
    monkeypatch.setattr(storage.os, "replace", replace)
    zone = make_zone(9)
    save_zone(tmp_path, NAME, zone, meta_for(zone))
    assert events == ["fsync .zone", "rename .zone", "rename .snap", "fsync .meta", "rename .meta",
                      "fsync-dir"]


_WRITER = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from test_storage import make_zone, meta_for, NAME
from secondns.store.storage import save_zone
zones = [make_zone(1, hosts=6000), make_zone(2, hosts=9000)]
directory = Path(sys.argv[1])
save_zone(directory, NAME, zones[0], meta_for(zones[0]))
print("ready", flush=True)
i = 1
while True:
    zone = zones[i % 2]
    save_zone(directory, NAME, zone, meta_for(zone))
    i += 1
"""


def test_sigkill_mid_write_leaves_a_loadable_copy(tmp_path: Path) -> None:
    expected = {z.serial: records(z) for z in (make_zone(1, hosts=6000), make_zone(2, hosts=9000))}
    env = dict(os.environ, PYTHONPATH=str(ROOT_DIR))
    rng = random.Random(11)
    deadline = time.monotonic() + 2.0
    rounds = 0
    while rounds < 3 or time.monotonic() < deadline:
        directory = tmp_path / f"round{rounds}"
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(directory),
                                 str(Path(__file__).parent)],
                                stdout=subprocess.PIPE, env=env, cwd=ROOT_DIR)
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline() == b"ready\n"
            time.sleep(rng.uniform(0.0, 0.3))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        loaded = load_zone(directory, NAME, ORIGIN)
        assert loaded is not None
        zone, meta = loaded
        assert records(zone) == expected[zone.serial]
        assert meta is None or meta.serial == zone.serial
        assert leftovers(directory) == []
        rounds += 1


def test_named_checkzone_accepts_a_saved_copy(tmp_path: Path) -> None:
    from secondns.store.zonefile import load_zone_file

    zone = load_zone_file(Path(__file__).parent / "data" / "alltypes.zone", ORIGIN)
    path = save_zone(tmp_path, NAME, zone, meta_for(zone))
    proc = subprocess.run([named_checkzone(), "example.com", str(path)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    loaded = load_zone(tmp_path, NAME, ORIGIN)
    assert loaded is not None and records(loaded[0]) == records(zone)


# -- binary snapshot beside the text copy ------------------------------------------------------


def _snapshot_zone() -> Zone:
    from zonetools import zone_from_text

    return zone_from_text("""
$TTL 300
@ IN SOA ns1 host 7 3600 600 86400 300
  IN NS ns1
ns1 IN A 192.0.2.1
a.b IN TXT "x"
""", "example.com.")


def test_restart_uses_the_snapshot_and_it_equals_the_text_copy(tmp_path: Path) -> None:
    from secondns.store.storage import snapshot_path

    zone = _snapshot_zone()
    storage.save_zone(tmp_path, "example.com.", zone, CopyMeta(7, 1.0, None, None, 1.0))
    assert snapshot_path(tmp_path, "example.com.").exists()
    loaded = storage.load_zone(tmp_path, "example.com.", zone.origin)
    assert loaded is not None
    got = loaded[0]
    assert sorted(got.records()) == sorted(zone.records())
    assert got.get(b"\x01b\x07example\x03com\x00") == b""  # empty non-terminal survives
    assert got.child_count(zone.origin) == zone.child_count(zone.origin)


def test_snapshot_of_another_copy_is_ignored(tmp_path: Path) -> None:
    from zonetools import zone_from_text

    from secondns.store.storage import snapshot_path

    old = _snapshot_zone()
    storage.save_zone(tmp_path, "example.com.", old, CopyMeta(7, 1.0, None, None, 1.0))
    stale = snapshot_path(tmp_path, "example.com.").read_bytes()
    new = zone_from_text("$TTL 300\n@ IN SOA ns1 host 8 3600 600 86400 300\n  IN NS ns1\n"
                         "ns1 IN A 192.0.2.99\n", "example.com.")
    storage.save_zone(tmp_path, "example.com.", new, CopyMeta(8, 2.0, None, None, 2.0))
    # A crash between writing the text copy and its snapshot leaves the old snapshot behind:
    # it names the old copy's digest, so the new text copy is parsed instead.
    snapshot_path(tmp_path, "example.com.").write_bytes(stale)
    loaded = storage.load_zone(tmp_path, "example.com.", new.origin)
    assert loaded is not None and loaded[0].serial == 8
    assert sorted(loaded[0].records()) == sorted(new.records())


def test_corrupt_snapshot_falls_back_to_the_text_copy(tmp_path: Path) -> None:
    from secondns.store.storage import snapshot_path

    zone = _snapshot_zone()
    storage.save_zone(tmp_path, "example.com.", zone, CopyMeta(7, 1.0, None, None, 1.0))
    snap = snapshot_path(tmp_path, "example.com.")
    data = bytearray(snap.read_bytes())
    data[-3] ^= 0xFF
    snap.write_bytes(bytes(data))
    loaded = storage.load_zone(tmp_path, "example.com.", zone.origin)
    assert loaded is not None and sorted(loaded[0].records()) == sorted(zone.records())


def test_snapshot_is_marshalled_in_slices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # One marshal call holds the GIL throughout: over a 1M-name dict it stalled the reactor
    # ~200 ms while the copy was saved in a thread (issue 11), so names go in slices.
    import marshal as real_marshal

    from secondns.store.storage import snapshot_path

    sizes: list[int] = []

    class Recording:
        load = staticmethod(real_marshal.load)
        loads = staticmethod(real_marshal.loads)

        @staticmethod
        def dumps(value: object) -> bytes:
            parts = value if isinstance(value, tuple) else (value,)
            sizes.append(max((len(v) for v in parts if isinstance(v, dict)), default=0))
            return real_marshal.dumps(value)

    monkeypatch.setattr(storage, "_SNAP_CHUNK", 2, raising=False)
    monkeypatch.setattr(storage, "marshal", Recording)
    zone = _snapshot_zone()
    storage.save_zone(tmp_path, "example.com.", zone, CopyMeta(7, 1.0, None, None, 1.0))
    assert snapshot_path(tmp_path, "example.com.").exists()
    assert sizes and max(sizes) <= 2, sizes

    def no_text(*_a: object, **_k: object) -> None:
        raise AssertionError("the text copy was parsed: the snapshot did not load")
    monkeypatch.setattr(storage, "load_zone_text", no_text)
    loaded = storage.load_zone(tmp_path, "example.com.", zone.origin)
    assert loaded is not None
    assert sorted(loaded[0].records()) == sorted(zone.records())
    assert loaded[0].get(b"\x01b\x07example\x03com\x00") == b""


def test_a_large_zone_is_sharded_and_its_snapshot_loads_sharded(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # Issue 11: one dict of every name doubles its table in one C call (38 ms at 699k names),
    # on the reactor while an AXFR is parsed or in a thread that blocks it all the same.
    # Large zones keep their names in shards, built so and loaded back so.
    import secondns.zone as zone_module
    from secondns.zone import ShardedNames

    monkeypatch.setattr(zone_module, "SHARD_ABOVE", 50)
    monkeypatch.setattr(storage, "SHARD_ABOVE", 50)
    zone = make_zone(7, hosts=200)
    assert type(zone._names) is ShardedNames and len(zone._names) == 203
    small = make_zone(7, hosts=20)
    assert type(small._names) is dict
    save_zone(tmp_path, NAME, zone, CopyMeta(7, 1.0, None, None, 1.0))

    def no_text(*_a: object, **_k: object) -> None:
        raise AssertionError("the text copy was parsed: the snapshot did not load")
    monkeypatch.setattr(storage, "load_zone_text", no_text)
    loaded = load_zone(tmp_path, NAME, ORIGIN)
    assert loaded is not None
    got = loaded[0]
    assert type(got._names) is ShardedNames
    assert sorted(got.records()) == sorted(zone.records())
    assert got.get(names.from_text("h150", ORIGIN)) == zone.get(names.from_text("h150", ORIGIN))
    assert got.folded() is got and type(got.folded()._names) is ShardedNames


def test_a_snapshot_written_in_other_slices_still_loads(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # The slice size is the writer's choice (20k names before, 5k now): readers count names.
    zone = make_zone(7, hosts=100)
    monkeypatch.setattr(storage, "_SNAP_CHUNK", 7)
    save_zone(tmp_path, NAME, zone, CopyMeta(7, 1.0, None, None, 1.0))
    monkeypatch.setattr(storage, "_SNAP_CHUNK", 30)

    def no_text(*_a: object, **_k: object) -> None:
        raise AssertionError("the text copy was parsed: the snapshot did not load")
    monkeypatch.setattr(storage, "load_zone_text", no_text)
    loaded = load_zone(tmp_path, NAME, ORIGIN)
    assert loaded is not None and sorted(loaded[0].records()) == sorted(zone.records())


def _nested_zone(hosts: int = 60, parents: int = 30) -> Zone:
    """A zone with many interior names (child counts) and an NSEC-style index of its owners."""
    from secondns.dnssec import DenialIndex

    builder = ZoneBuilder(ORIGIN)
    ns = names.from_text("ns1", ORIGIN)
    builder.add(ORIGIN, rrtypes.SOA, 3600, ns + names.from_text("hostmaster", ORIGIN)
                + bytes.fromhex("00000007 00000e10 00000384 00093a80 0000012c"))
    builder.add(ORIGIN, rrtypes.NS, 3600, ns)
    for i in range(hosts):
        builder.add(names.from_text(f"h{i}.p{i % parents}", ORIGIN), rrtypes.A, 300,
                    bytes((10, 0, 0, i & 255)))
    zone = builder.build()
    zone.denial = DenialIndex("nsec", ((b"k" + n, n) for n, _ in zone.nodes()))
    return zone


def _no_text(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_text(*_a: object, **_k: object) -> None:
        raise AssertionError("the text copy was parsed: the snapshot did not load")
    monkeypatch.setattr(storage, "load_zone_text", no_text)


def test_no_marshal_call_of_a_snapshot_holds_more_than_a_slice(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # Format 2 sliced the names but marshalled the child counts (30k interior names in a
    # 1M-record zone, ~10 ms in one call) and a signed zone's index (two lists of every
    # owner) whole in its head (issue 11).  Format 3 slices every large part.
    import marshal as real_marshal

    largest: list[int] = []

    def biggest(value: object) -> int:
        if isinstance(value, dict | list):
            return len(value)
        if isinstance(value, tuple):
            return max((biggest(v) for v in value), default=0)
        return 0

    class Recording:
        load = staticmethod(real_marshal.load)
        loads = staticmethod(real_marshal.loads)

        @staticmethod
        def dumps(value: object) -> bytes:
            largest.append(biggest(value))
            return real_marshal.dumps(value)

    zone = _nested_zone()
    assert len(zone._children) > 30 and len(zone.denial) > 60
    monkeypatch.setattr(storage, "_SNAP_CHUNK", 7)
    monkeypatch.setattr(storage, "marshal", Recording)
    save_zone(tmp_path, NAME, zone, meta_for(zone))
    assert largest and max(largest) <= 7, largest
    _no_text(monkeypatch)
    loaded = load_zone(tmp_path, NAME, ORIGIN)
    assert loaded is not None
    got = loaded[0]
    assert records(got) == records(zone)
    assert got._children == zone._children
    assert got.denial.keys == zone.denial.keys and got.denial.names == zone.denial.names


def test_a_format_2_snapshot_still_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # What the previous release wrote: names in slices, child counts and index in the head.
    import hashlib
    import marshal

    zone = _nested_zone()
    save_zone(tmp_path, NAME, zone, meta_for(zone))
    snap = storage.snapshot_path(tmp_path, NAME)
    text_digest = snap.read_bytes().split(b"\n", 1)[0].split()[1].decode("ascii")
    state = zone.to_state()
    items = list(state[2].items())
    payload = marshal.dumps((*state[:2], len(items), *state[3:])) + b"".join(
        marshal.dumps(dict(items[i:i + 10])) for i in range(0, len(items), 10))
    snap.write_bytes(f"secondns-snapshot-v2 {text_digest} {hashlib.sha256(payload).hexdigest()}\n"
                     .encode("ascii") + payload)
    _no_text(monkeypatch)
    loaded = load_zone(tmp_path, NAME, ORIGIN)
    assert loaded is not None
    assert records(loaded[0]) == records(zone) and loaded[0]._children == zone._children
    assert loaded[0].denial.names == zone.denial.names


def test_a_journal_fold_frees_its_folded_copy_shard_by_shard(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # Saving a version with an IXFR's delta marshals a folded copy made for that write alone;
    # dropped in one decref, a 1M-name copy held the GIL ~86 ms in the writer thread (issue 11).
    base = make_zone(7, hosts=100)
    owner = names.from_text("h3", ORIGIN)
    changed = base.derive({owner: encode_record_a()}, {}, make_zone(8, hosts=0).soa, base.n_cuts,
                          base.n_dnames, base.record_count)
    released: list[tuple[int, int]] = []
    real_release = Zone.release

    def release(self: Zone) -> None:
        assert self is not changed and self._names is not base._names  # never a shared base
        real_release(self)
        released.append((len(self._names), len(self._children)))
    monkeypatch.setattr(Zone, "release", release)
    save_zone(tmp_path, NAME, changed, meta_for(changed))
    assert released == [(0, 0)]
    assert base.get(owner) is not None and changed.get(owner) == encode_record_a()
    _no_text(monkeypatch)
    loaded = load_zone(tmp_path, NAME, ORIGIN)
    assert loaded is not None and records(loaded[0]) == records(changed)
    released.clear()
    save_zone(tmp_path, NAME, base, meta_for(base))  # no delta: nothing copied, nothing freed
    assert released == []


def encode_record_a() -> bytes:
    from secondns.zone import encode_record

    return encode_record(rrtypes.A, 300, b"\xc0\x00\x02\x63")
