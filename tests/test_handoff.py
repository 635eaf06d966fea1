"""The worker hand-off form, in process: zone images and the messages workers apply.

A worker answers from a memory-mapped image (plus delta layers), never from the dicts the
main process built; these tests hold that what it answers is byte for byte what the main
process would answer from the same version, for every name and type of the test zones
(signed ones included: the NSEC/NSEC3 index travels in the image).
"""

from __future__ import annotations

import marshal
from pathlib import Path

import dns.rdatatype
import pytest
from zonetools import responder_for, zone_from_text

from secondns import names
from secondns.diff import VersionStep, apply_steps, invalidated_names
from secondns.registry import Registry
from secondns.serve.channel import Decoder, encode
from secondns.serve.handoff import WorkerZones, delta_message
from secondns.serve.image import open_image, write_image
from secondns.serve.responder import UDP, Responder, ServeSettings
from secondns.serve.stats import ServingStats
from secondns.zone import Zone, encode_record

DATA = Path(__file__).parent / "data"
ORIGIN = "example.com."
TYPES = ("A", "AAAA", "MX", "TXT", "NS", "SOA", "CNAME", "DS", "NSEC", "ANY", "SRV", "DNSKEY")


def alltypes() -> Zone:
    from secondns.store.zonefile import load_zone_text

    return load_zone_text((DATA / "alltypes.zone").read_text(), names.from_text(ORIGIN))


def questions(zone: Zone) -> list[tuple[bytes, int]]:
    owners = [name for name, _blob in zone._items()]
    extra = [names.from_text(f"nope.{names.to_text(zone.origin)}"),
             names.from_text(f"a.b.nope.{names.to_text(zone.origin)}")]
    return [(n, int(dns.rdatatype.from_text(t))) for n in owners + extra for t in TYPES]


def wire_query(qname: bytes, qtype: int, do: bool) -> bytes:
    import dns.message
    import dns.name

    q = dns.message.make_query(dns.name.from_wire(qname, 0)[0], qtype, use_edns=0, want_dnssec=do)
    q.id = 4242
    return q.to_wire()


def same_answers(a: Responder, b: Responder, zone: Zone) -> int:
    n = 0
    for qname, qtype in questions(zone):
        for do in (False, True):
            data = wire_query(qname, qtype, do)
            assert a.respond(data, UDP, ("127.0.0.1", 1)) == b.respond(data, UDP, ("127.0.0.1", 1)), \
                (names.to_text(qname), qtype, do)
            n += 1
    return n


def image_zone(zone: Zone, tmp_path: Path) -> Zone:
    path = tmp_path / "z.img"
    write_image(path, zone)
    return open_image(path)


def test_image_holds_every_name_and_nothing_else(tmp_path: Path) -> None:
    zone = alltypes()
    mapped = image_zone(zone, tmp_path)
    assert (mapped.origin, mapped.soa, mapped.serial, mapped.record_count) == (
        zone.origin, zone.soa, zone.serial, zone.record_count)
    assert (mapped.n_cuts, mapped.n_dnames) == (zone.n_cuts, zone.n_dnames)
    items = dict(zone._items())
    assert dict(mapped._items()) == items
    for name, blob in items.items():
        assert mapped.get(name) == blob
    assert mapped.get(names.from_text(f"missing.{ORIGIN}")) is None


def test_a_worker_answers_from_the_image_as_the_main_process_does(tmp_path: Path) -> None:
    zone = alltypes()
    assert same_answers(responder_for(zone), responder_for(image_zone(zone, tmp_path)), zone) > 500


def test_signed_zones_keep_their_denial_index(tmp_path: Path) -> None:
    signing = pytest.importorskip("signing")
    signing.require_signing_tools()
    for label, (origin, spec) in signing.STANDARD_ZONES.items():
        signed = signing.make_signed_zone(tmp_path / label, origin, nsec3=spec)
        zone = zone_from_text(signed.path.read_text(), origin)
        assert zone.denial is not None
        mapped = image_zone(zone, tmp_path / label)
        assert mapped.denial is not None and mapped.denial.kind == zone.denial.kind
        same_answers(responder_for(zone), responder_for(mapped), zone)


def _worker(tmp_path: Path, zone: Zone) -> tuple[WorkerZones, Responder]:
    path = tmp_path / "base.img"
    write_image(path, zone)
    registry = Registry()
    responder = Responder(registry, ServeSettings(), ServingStats())
    zones = WorkerZones(registry)
    for message in (("add", zone.origin), ("full", zone.origin, str(path), 1)):
        zones.apply(marshal.loads(marshal.dumps(message)))  # as the channel carries it
    return zones, responder


def _ixfr(zone: Zone, serial: int, added: list[tuple[str, str, bytes]], deleted: list[tuple[str, str, bytes]]
          ) -> tuple[Zone, frozenset[bytes] | None]:
    def rec(owner: str, rtype: str, rdata: bytes) -> tuple[bytes, int, int, bytes]:
        return names.from_text(owner), int(dns.rdatatype.from_text(rtype)), 300, rdata

    soa_rdata = zone.soa.rdata[:-20] + serial.to_bytes(4, "big") + zone.soa.rdata[-16:]
    step = VersionStep(zone.serial, serial,
                       [(zone.origin, 6, zone.soa.ttl, zone.soa.rdata), *(rec(*d) for d in deleted)],
                       [(zone.origin, 6, zone.soa.ttl, soa_rdata), *(rec(*a) for a in added)])
    new = apply_steps(zone, [step])
    return new, invalidated_names(zone, new, [step])


def test_deltas_expiry_and_removal_reach_the_worker(tmp_path: Path) -> None:
    zone = alltypes()
    zones, responder = _worker(tmp_path, zone)
    q = wire_query(names.from_text(f"new.{ORIGIN}"), 1, False)
    main_before = responder_for(zone).respond(q, UDP, ("127.0.0.1", 1))
    assert responder.respond(q, UDP, ("127.0.0.1", 1)) == main_before  # NXDOMAIN, now cached
    v2, changed = _ixfr(zone, zone.serial + 1, [(f"new.{ORIGIN}", "A", b"\xc0\x00\x02\x07")], [])
    zones.apply(marshal.loads(marshal.dumps(delta_message(zone.origin, 1, v2, changed))))
    v3, changed3 = _ixfr(v2, v2.serial + 1, [(f"deep.er.{ORIGIN}", "A", b"\xc0\x00\x02\x08")],
                         [(f"new.{ORIGIN}", "A", b"\xc0\x00\x02\x07")])
    zones.apply(marshal.loads(marshal.dumps(delta_message(zone.origin, 1, v3, changed3))))
    served = responder.registry.get(zone.origin)
    assert served is not None and served.snapshot is not None and served.snapshot.serial == v3.serial
    same_answers(responder_for(v3), responder, v3)
    # A worker that starts now gets the base image and the whole delta layer in one message.
    late, late_responder = _worker(tmp_path, zone)
    late.apply(marshal.loads(marshal.dumps(delta_message(zone.origin, 1, v3, None))))
    same_answers(responder_for(v3), late_responder, v3)
    # A delta for an older base (a newer image is on its way) is not applied.
    zones.apply(delta_message(zone.origin, 0, v2, changed))
    assert served.snapshot.serial == v3.serial

    soa_q = wire_query(zone.origin, 6, False)
    zones.apply(("expired", zone.origin, True))
    assert responder.respond(soa_q, UDP, ("127.0.0.1", 1))[3] & 0xF == 2  # type: ignore[index]
    zones.apply(("expired", zone.origin, False))
    assert responder.respond(soa_q, UDP, ("127.0.0.1", 1))[3] & 0xF == 0  # type: ignore[index]
    zones.apply(("remove", zone.origin))
    assert responder.respond(soa_q, UDP, ("127.0.0.1", 1))[3] & 0xF == 5  # type: ignore[index]


def test_the_main_process_applies_ixfr_and_folds_on_a_mapped_zone(tmp_path: Path) -> None:
    zone = alltypes()
    path = tmp_path / "main.img"
    write_image(path, zone)
    mapped = open_image(path, like=zone)
    assert mapped.base_size == zone.base_size
    on_dict, _ = _ixfr(zone, zone.serial + 1, [(f"x.y.{ORIGIN}", "TXT", b"\x02hi")], [])
    on_map, _ = _ixfr(mapped, zone.serial + 1, [(f"x.y.{ORIGIN}", "TXT", b"\x02hi")], [])
    same_answers(responder_for(on_dict), responder_for(on_map), on_dict)
    assert dict(on_map.folded()._items()) == dict(on_dict.folded()._items())
    state = mapped.to_state()  # the binary snapshot on disk: plain dicts, marshal-able
    assert Zone.from_state(marshal.loads(marshal.dumps(state))).get(zone.origin) == zone.get(zone.origin)


def test_channel_frames_survive_any_split() -> None:
    messages = [("add", b"\x03com\x00"), ("delta", b"x", 1, {b"a": encode_record(1, 5, b"1234"), b"b": None}),
                ("sync",)]
    stream = b"".join(encode(m) for m in messages)
    for cut in range(1, 16):
        got: list[tuple[object, ...]] = []
        dec = Decoder(got.append)
        for i in range(0, len(stream), cut):
            dec.feed(stream[i:i + cut])
        assert got == messages


def test_main_process_pool_threads_run_idle_and_the_reactor_thread_does_not(tmp_path: Path) -> None:
    # Issue 11: with workers, the main process's parsing, building and writing must not take
    # CPU from the workers; only its pool threads are SCHED_IDLE (workers are spawned from the
    # reactor thread and inherit its policy, which they could never leave again).
    import os
    import threading
    from types import SimpleNamespace

    from twisted.python.threadpool import ThreadPool

    from secondns.serve import workers

    pool = ThreadPool(1, 1)
    reactor = SimpleNamespace(getThreadPool=lambda: pool)
    server = SimpleNamespace(workers=2, storage=tmp_path, listen=())
    workers.WorkerPool(SimpleNamespace(reactor=reactor, config=SimpleNamespace(server=server)))
    seen: list[int] = []
    done = threading.Event()

    def probe() -> None:
        seen.append(os.sched_getscheduler(0))
        done.set()
    pool.start()
    try:
        pool.callInThread(probe)
        assert done.wait(10)
    finally:
        pool.stop()
    assert seen == [os.SCHED_IDLE] != [os.sched_getscheduler(0)]


def test_an_image_of_a_version_with_a_delta_frees_its_folded_copy_shard_by_shard(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # write_image folds a version with an IXFR's delta into a copy of its own; dropped in one
    # decref, a 1M-name copy held the GIL ~86 ms in the main process's thread (issue 11).
    zone = alltypes()
    changed, _ = _ixfr(zone, zone.serial + 1, [(f"x.y.{ORIGIN}", "TXT", b"\x02hi")], [])
    assert changed.delta_size
    released: list[int] = []
    real_release = Zone.release

    def release(self: Zone) -> None:
        assert self is not changed and self._names is not zone._names
        real_release(self)
        released.append(len(self._names))
    monkeypatch.setattr(Zone, "release", release)
    mapped = image_zone(changed, tmp_path)
    assert released == [0]
    assert dict(mapped._items()) == dict(changed.folded()._items())
    write_image(tmp_path / "plain.img", zone)  # nothing to fold: nothing copied or freed
    assert released == [0]


def test_a_fold_of_a_large_mapped_zone_copies_into_shards(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # dict(image) of 1M names resizes its table in single C calls of 38-66 ms (issue 11).
    import secondns.zone as zone_module
    from secondns.zone import ShardedNames

    zone = alltypes()
    monkeypatch.setattr(zone_module, "SHARD_ABOVE", 10)
    mapped = image_zone(zone, tmp_path)
    assert mapped.base_size > 10
    changed, _ = _ixfr(mapped, zone.serial + 1, [(f"x.y.{ORIGIN}", "TXT", b"\x02hi")], [])
    folded = changed.folded()
    assert type(folded._names) is ShardedNames
    on_dict, _ = _ixfr(zone, zone.serial + 1, [(f"x.y.{ORIGIN}", "TXT", b"\x02hi")], [])
    assert dict(folded._items()) == dict(on_dict.folded()._items())
