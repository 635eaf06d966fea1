"""Replaced zone versions are freed in slices, never while something still reads them (issue 11).

Freeing a 1M-record version in its last decref is one C call of ~86 ms holding the GIL; the
registry hands replaced versions to ``reaper.Reaper`` instead.
"""

from __future__ import annotations

from twisted.internet import task

from secondns import names, rrtypes
from secondns.reaper import POLL, SLICE, SMALL, Reaper
from secondns.registry import Registry
from secondns.zone import SHARD_ABOVE, ShardedNames, Zone, ZoneBuilder

ORIGIN = names.from_text("example.com.")
SOA_RDATA = (names.from_text("ns1", ORIGIN) + names.from_text("host", ORIGIN)
             + bytes.fromhex("00000001 00000e10 00000384 00093a80 0000012c"))


def big_zone(hosts: int = SMALL + 2 * SLICE) -> Zone:
    builder = ZoneBuilder(ORIGIN)
    builder.add(ORIGIN, rrtypes.SOA, 300, SOA_RDATA)
    for i in range(hosts):
        builder.add(names.from_text(f"h{i}", ORIGIN), rrtypes.A, 300, bytes((10, 0, i >> 8 & 255, i & 255)))
    return builder.build()


def test_an_unreferenced_version_is_freed_one_slice_per_turn() -> None:
    zone = big_zone()
    size = len(zone._names)
    assert type(zone._names) is dict and size > 2 * SLICE
    reaper = Reaper(task.Clock())
    reaper.retire(zone)
    del zone
    reaper._step()  # nothing else holds the version: its base dict is taken, not freed yet
    assert [len(d) for d in reaper._work] == [size]
    reaper._step()
    assert [len(d) for d in reaper._work] == [size - SLICE]  # one slice in a turn, not all
    while reaper.pending:
        reaper._step()


def test_a_version_still_referenced_is_left_alone_until_it_is_not() -> None:
    clock = task.Clock()
    zone = big_zone()
    reaper = Reaper(clock)
    reaper.retire(zone)
    for _ in range(5):
        clock.advance(POLL)
    assert reaper.pending == 1 and not reaper._work
    assert zone.get(names.from_text("h7", ORIGIN))  # still whole and readable
    del zone
    clock.advance(POLL)
    assert reaper.pending == 0


def test_a_dict_referenced_elsewhere_is_not_emptied() -> None:
    clock = task.Clock()
    zone = big_zone()
    base = zone._names
    size = len(base)
    reaper = Reaper(clock)
    reaper.retire(zone)
    del zone
    clock.advance(POLL)
    assert reaper.pending == 0 and len(base) == size


def test_a_base_shared_with_a_newer_version_is_never_emptied() -> None:
    clock = task.Clock()
    old = big_zone()
    new = old.derive({}, {}, old.soa, old.n_cuts, old.n_dnames, old.record_count)  # an IXFR's version
    reaper = Reaper(clock)
    reaper.retire(old)
    size = len(old._names)
    del old
    clock.advance(POLL)
    assert reaper.pending == 0
    assert len(new._names) == size and new.get(names.from_text("h7", ORIGIN))


def test_a_sharded_version_is_freed_shard_by_shard() -> None:
    zone = big_zone(SHARD_ABOVE + 1000)
    sharded = zone._names
    assert type(sharded) is ShardedNames
    shards = list(sharded.shards)
    clock = task.Clock()
    reaper = Reaper(clock)
    reaper.retire(zone)
    del zone, sharded
    clock.advance(POLL)
    assert reaper.pending == 0 and not any(shards)


def test_the_registry_retires_what_it_stops_serving() -> None:
    retired: list[Zone] = []
    registry = Registry()
    registry.retire = retired.append
    registry.add(ORIGIN)
    first, second = big_zone(10), big_zone(11)
    registry.swap(ORIGIN, first)
    assert retired == []
    registry.swap(ORIGIN, second)
    assert retired == [first]
    registry.remove(ORIGIN)
    assert retired == [first, second]


def signed_zone(hosts: int = SMALL + 2 * SLICE) -> Zone:
    """A big zone with an NSEC-style index of every owner (the records need not be signed)."""
    from secondns.dnssec import DenialIndex

    zone = big_zone(hosts)
    zone.denial = DenialIndex("nsec", ((b"k" + name, name) for name, _ in zone.nodes()))
    return zone


def test_a_signed_version_frees_its_denial_index_a_slice_per_turn() -> None:
    # The index's two lists of every owner were freed in one go with the Zone object: for a
    # 1M-owner NSEC3 zone a ~40 ms C call on the reactor (issue 11).
    zone = signed_zone()
    ids = {id(zone.denial.keys), id(zone.denial.names)}  # no reference: the reaper checks counts
    size = len(zone.denial)
    assert size > 2 * SLICE
    reaper = Reaper(task.Clock())
    reaper.retire(zone)
    del zone
    reaper._step()  # taken: the names dict and both index lists
    assert {id(d) for d in reaper._work if type(d) is list} == ids
    assert [len(d) for d in reaper._work if type(d) is list] == [size, size]

    def left() -> int:
        return sum(len(d) for d in reaper._work if type(d) is list)
    while left():
        before = left()
        reaper._step()
        assert before - left() <= SLICE  # one slice in a turn, not all
    while reaper.pending:
        reaper._step()


def test_a_denial_index_kept_by_a_newer_version_is_not_emptied() -> None:
    clock = task.Clock()
    old = signed_zone()
    new = old.derive({}, {}, old.soa, old.n_cuts, old.n_dnames, old.record_count, denial=old.denial)
    size = len(old.denial)
    reaper = Reaper(clock)
    reaper.retire(old)
    del old
    clock.advance(POLL)
    assert reaper.pending == 0 and len(new.denial.keys) == len(new.denial.names) == size
