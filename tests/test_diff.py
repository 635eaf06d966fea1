"""IXFR application: incremental result must equal a zone rebuilt from scratch."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secondns import rrtypes
from secondns.diff import DiffError, VersionStep, apply_steps
from secondns.names import from_text
from secondns.zone import Zone, ZoneBuilder, decode_node

ORIGIN = from_text("example.com.")
NAMES = [from_text(n) for n in (
    "a.example.com.", "b.a.example.com.", "c.b.a.example.com.", "x.y.z.example.com.",
    "y.z.example.com.", "deleg.example.com.", "ns.deleg.example.com.", "d.example.com.")]
TYPES = [rrtypes.A, rrtypes.TXT, rrtypes.NS, rrtypes.DNAME]


def soa(serial: int) -> bytes:
    names = from_text("ns.example.com.") + from_text("h.example.com.")
    return names + struct.pack("!5I", serial, 60, 30, 600, 30)


def rdata(rtype: int, i: int) -> bytes:
    if rtype == rrtypes.A:
        return bytes([192, 0, 2, i])
    if rtype == rrtypes.TXT:
        return bytes([1, 65 + i])
    return from_text(f"t{i}.example.net.")


def build(serial: int, records: set[tuple[bytes, int, bytes]]) -> Zone:
    b = ZoneBuilder(ORIGIN)
    b.add(ORIGIN, rrtypes.SOA, 300, soa(serial))
    for owner, rtype, rd in sorted(records):
        b.add(owner, rtype, 300, rd)
    return b.build()


def snapshot(zone: Zone) -> dict[bytes, dict[int, list[tuple[int, bytes]]]]:
    names = set(zone._names) | set(zone._delta or {})
    out = {}
    for name in names:
        blob = zone.get(name)
        if blob is not None:
            out[name] = {t: sorted(r) for t, r in decode_node(blob).items()}
    return out


def children(zone: Zone) -> dict[bytes, int]:
    names = set(zone._children) | set(zone._child_delta or {})
    return {n: zone.child_count(n) for n in names if zone.child_count(n)}


record = st.tuples(st.sampled_from(NAMES), st.sampled_from(TYPES), st.integers(0, 3)).map(
    lambda t: (t[0], t[1], rdata(t[1], t[2])))


@settings(max_examples=300, deadline=None)
@given(st.sets(record, max_size=12), st.lists(st.tuples(st.sets(record, max_size=6),
                                                         st.sets(record, max_size=6)), max_size=4))
def test_incremental_equals_rebuilt(start: set[tuple[bytes, int, bytes]],
                                    changes: list[tuple[set[tuple[bytes, int, bytes]],
                                                        set[tuple[bytes, int, bytes]]]]) -> None:
    zone = build(1, start)
    current = set(start)
    steps = []
    serial = 1
    for dels, adds in changes:
        dels = dels & current  # a valid IXFR only deletes what exists
        current = (current - dels) | adds
        deleted = [(ORIGIN, rrtypes.SOA, 300, soa(serial)), *((o, t, 300, r) for o, t, r in dels)]
        added = [(ORIGIN, rrtypes.SOA, 300, soa(serial + 1)), *((o, t, 300, r) for o, t, r in adds)]
        step = VersionStep(serial, serial + 1, deleted, added)
        steps.append(step)
        serial += 1
    result = apply_steps(zone, steps)
    expected = build(serial, current)
    assert snapshot(result) == snapshot(expected)
    assert children(result) == children(expected)
    assert result.serial == expected.serial
    assert result.record_count == expected.record_count
    assert (result.n_cuts, result.n_dnames) == (expected.n_cuts, expected.n_dnames)
    assert snapshot(result.folded()) == snapshot(expected)
    assert snapshot(zone) == snapshot(build(1, start))  # the old version is untouched


def test_deleting_missing_record_fails() -> None:
    zone = build(1, {(NAMES[0], rrtypes.A, rdata(rrtypes.A, 1))})
    missing = (NAMES[0], rrtypes.A, 300, rdata(rrtypes.A, 2))
    step = VersionStep(1, 2, [(ORIGIN, rrtypes.SOA, 300, soa(1)), missing],
                       [(ORIGIN, rrtypes.SOA, 300, soa(2))])
    with pytest.raises(DiffError, match="not there"):
        apply_steps(zone, [step])


def test_version_gap_fails() -> None:
    zone = build(5, set())
    step = VersionStep(4, 6, [], [(ORIGIN, rrtypes.SOA, 300, soa(6))])
    with pytest.raises(DiffError, match="version gap"):
        apply_steps(zone, [step])


def test_step_without_new_soa_fails() -> None:
    zone = build(1, set())
    with pytest.raises(DiffError, match="does not add that SOA"):
        apply_steps(zone, [VersionStep(1, 2, [], [])])


def test_names_compared_case_insensitively_in_rdata() -> None:
    zone = build(1, {(NAMES[0], rrtypes.NS, from_text("NS1.Example.NET."))})
    step = VersionStep(1, 2, [(NAMES[0], rrtypes.NS, 300, from_text("ns1.example.net."))],
                       [(ORIGIN, rrtypes.SOA, 300, soa(2))])
    result = apply_steps(zone, [step])
    assert result.get(NAMES[0]) is None


def test_small_change_shares_the_base() -> None:
    records = {(from_text(f"h{i}.example.com."), rrtypes.A, bytes([10, 0, i // 256, i % 256]))
               for i in range(5000)}
    zone = build(1, records)
    new_name = from_text("new.example.com.")
    step = VersionStep(1, 2, [], [(ORIGIN, rrtypes.SOA, 300, soa(2)),
                                  (new_name, rrtypes.A, 300, b"\x01\x02\x03\x04")])
    result = apply_steps(zone, [step])
    assert result._names is zone._names  # nothing was copied
    assert result.delta_size <= 3
    assert result.get(new_name) is not None and zone.get(new_name) is None


def test_empty_non_terminal_touched_and_emptied_again_is_unlinked_once() -> None:
    # Found by hypothesis: deleg.example.com was an empty non-terminal above ns.deleg; a change
    # removes ns.deleg, adds then deletes a record at deleg.  deleg goes, and the apex's child
    # count must drop by one, not two.
    ns_deleg, deleg = NAMES[6], NAMES[5]
    a = rdata(rrtypes.A, 0)
    zone = build(1, {(ns_deleg, rrtypes.A, a)})
    steps = [VersionStep(1, 2, [(ORIGIN, rrtypes.SOA, 300, soa(1)), (ns_deleg, rrtypes.A, 300, a)],
                         [(ORIGIN, rrtypes.SOA, 300, soa(2)), (deleg, rrtypes.A, 300, a)]),
             VersionStep(2, 3, [(ORIGIN, rrtypes.SOA, 300, soa(2)), (deleg, rrtypes.A, 300, a)],
                         [(ORIGIN, rrtypes.SOA, 300, soa(3))])]
    result = apply_steps(zone, steps)
    assert children(result) == children(build(3, set())) == {}
    assert result.get(deleg) is None and result.get(ns_deleg) is None


def test_binary_fields_of_name_bearing_types_compare_octet_for_octet() -> None:
    # Review finding: lowercasing all MX rdata made preference 65 ("A") equal 97 ("a").
    mail = from_text("mail.example.com.")
    mx65, mx97 = b"\x00\x41" + mail, b"\x00\x61" + mail
    zone = build(1, {(NAMES[0], rrtypes.MX, mx65)})
    add97 = VersionStep(1, 2, [(ORIGIN, rrtypes.SOA, 300, soa(1))],
                        [(ORIGIN, rrtypes.SOA, 300, soa(2)), (NAMES[0], rrtypes.MX, 300, mx97)])
    result = apply_steps(zone, [add97])
    assert sorted(rd for _t, rd in decode_node(result.get(NAMES[0]) or b"")[rrtypes.MX]) == [mx65, mx97]
    del97 = VersionStep(1, 2, [(ORIGIN, rrtypes.SOA, 300, soa(1)), (NAMES[0], rrtypes.MX, 300, mx97)],
                        [(ORIGIN, rrtypes.SOA, 300, soa(2))])
    with pytest.raises(DiffError, match="not there"):
        apply_steps(zone, [del97])
