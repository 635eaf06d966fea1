"""IXFR (RFC 1995) from wire to zone, and the journal that keeps it on disk; no network.

Reply streams are built with dnspython, an independent implementation: a response to an IXFR
query whose answer RRsets are added in RFC 1995 order, split over several messages the way a
primary splits them over TCP.  An applied change is compared with the zone rebuilt from scratch
from the final record set, so ``diff.apply_steps`` is checked against ``ZoneBuilder``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import dns.message
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest

from secondns import names, rrtypes
from secondns.diff import VersionStep, apply_steps
from secondns.errors import TransferError
from secondns.store import journal
from secondns.transfer.xfrin import IxfrConsumer
from secondns.zone import Zone, ZoneBuilder

ORIGIN_TEXT = "example.com."
ORIGIN = names.from_text(ORIGIN_TEXT)
ZONE_NAME = ORIGIN_TEXT
ID = 0x1995
SOA_RDATA = "ns1.example.com. hostmaster.example.com. {serial} 3600 600 86400 300"
Rec = tuple[bytes, int, int, bytes]

# Version 1, then two changes: 1 -> 2 renumbers www and adds an AAAA; 2 -> 3 drops the TXT,
# moves the MX and adds a name two labels down (an empty non-terminal appears).
V1 = [
    "example.com. 3600 IN NS ns1.example.com.",
    "example.com. 3600 IN NS ns2.example.com.",
    "ns1.example.com. 3600 IN A 192.0.2.1",
    "ns2.example.com. 3600 IN A 192.0.2.2",
    "www.example.com. 300 IN A 192.0.2.80",
    "example.com. 300 IN MX 10 mail.example.com.",
    "mail.example.com. 300 IN A 192.0.2.25",
    'txt.example.com. 300 IN TXT "v=spf1 -all"',
]
STEP_1_2 = (["www.example.com. 300 IN A 192.0.2.80"],
            ["www.example.com. 300 IN A 192.0.2.81", "www.example.com. 300 IN AAAA 2001:db8::81"])
STEP_2_3 = (['txt.example.com. 300 IN TXT "v=spf1 -all"', "example.com. 300 IN MX 10 mail.example.com."],
            ["example.com. 300 IN MX 20 mx2.example.com.", "host.deep.example.com. 300 IN A 192.0.2.99"])


# --------------------------------------------------------------------------------------------------
# building streams with dnspython


def rrset(line: str) -> dns.rrset.RRset:
    """One record from 'owner ttl class type rdata'."""
    owner, ttl, rdclass, rdtype, rdata = line.split(maxsplit=4)
    return dns.rrset.from_text(owner, int(ttl), rdclass, rdtype, rdata)


def soa(serial: int) -> dns.rrset.RRset:
    return rrset(f"{ORIGIN_TEXT} 3600 IN SOA " + SOA_RDATA.format(serial=serial))


def ixfr_query(our_serial: int) -> dns.message.Message:
    """The query a secondary at *our_serial* sends (RFC 1995 3: its SOA in the authority section)."""
    query = dns.message.make_query(ORIGIN_TEXT, dns.rdatatype.IXFR, use_edns=False)
    query.id = ID
    query.authority.append(soa(our_serial))
    return query


def stream(records: Sequence[dns.rrset.RRset], per_message: int, our_serial: int = 1) -> list[bytes]:
    """The reply split over messages of *per_message* records; later messages omit the question."""
    query = ixfr_query(our_serial)
    out = []
    for start in range(0, len(records), per_message):
        response = dns.message.make_response(query)
        if start:
            response.question = []  # RFC 5936 2.2.1: only the first message must echo it
        response.answer.extend(records[start:start + per_message])
        out.append(response.to_wire())
    return out


def diff_sequence(old: int, new: int, deleted: Sequence[str], added: Sequence[str]) -> list[dns.rrset.RRset]:
    """RFC 1995 4: old SOA, deletions, new SOA, additions."""
    return [soa(old), *map(rrset, deleted), soa(new), *map(rrset, added)]


def feed_all(consumer: IxfrConsumer, messages: Iterable[bytes]) -> list[bool]:
    return [consumer.feed(message) for message in messages]


def consumer(our_serial: int = 1) -> IxfrConsumer:
    return IxfrConsumer(ORIGIN, ID, our_serial, max_records=10_000)


# --------------------------------------------------------------------------------------------------
# zones and records


def to_rec(line: str) -> Rec:
    rs = rrset(line)
    owner = rs.name.to_wire()
    assert owner is not None
    return owner, int(rs.rdtype), rs.ttl, rs[0].to_wire()


def build(serial: int, lines: Iterable[str]) -> Zone:
    builder = ZoneBuilder(ORIGIN)
    for owner, rtype, ttl, rdata in [to_rec(f"{ORIGIN_TEXT} 3600 IN SOA " + SOA_RDATA.format(serial=serial)),
                                     *map(to_rec, lines)]:
        builder.add(owner, rtype, ttl, rdata)
    return builder.build()


def content(zone: Zone) -> set[Rec]:
    return {(owner.lower(), rtype, ttl, rdata) for owner, rtype, ttl, rdata in zone.records()}


def apply_text(lines: list[str], deleted: Sequence[str], added: Sequence[str]) -> list[str]:
    gone = set(deleted)
    return [line for line in lines if line not in gone] + list(added)


def v3_lines() -> list[str]:
    return apply_text(apply_text(V1, *STEP_1_2), *STEP_2_3)


def two_step_stream() -> list[dns.rrset.RRset]:
    return [soa(3), *diff_sequence(1, 2, *STEP_1_2), *diff_sequence(2, 3, *STEP_2_3), soa(3)]


# --------------------------------------------------------------------------------------------------
# IxfrConsumer


def test_lone_soa_of_our_version_means_up_to_date() -> None:
    ixfr = consumer(our_serial=7)
    assert feed_all(ixfr, stream([soa(7)], per_message=1, our_serial=7)) == [True]
    assert ixfr.up_to_date
    assert not ixfr.incremental
    assert ixfr.steps == []


def test_two_version_steps_are_parsed_in_order() -> None:
    ixfr = consumer()
    assert feed_all(ixfr, stream(two_step_stream(), per_message=3)) == [False] * 4 + [True]
    assert ixfr.incremental
    assert [(s.from_serial, s.to_serial) for s in ixfr.steps] == [(1, 2), (2, 3)]
    # Each step carries its SOAs first, then exactly the records of the diff sequence.
    for step, (deleted, added), old, new in zip(ixfr.steps, (STEP_1_2, STEP_2_3), (1, 2), (2, 3),
                                                strict=True):
        assert step.deleted[0][1] == rrtypes.SOA and step.added[0][1] == rrtypes.SOA
        assert step.deleted[1:] == [to_rec(line) for line in deleted]
        assert step.added[1:] == [to_rec(line) for line in added]
        assert (step.from_serial, step.to_serial) == (old, new)


def test_applied_steps_equal_the_zone_rebuilt_from_the_final_records() -> None:
    ixfr = consumer()
    feed_all(ixfr, stream(two_step_stream(), per_message=4))
    applied = apply_steps(build(1, V1), ixfr.steps)
    rebuilt = build(3, v3_lines())
    assert applied.serial == 3
    assert content(applied) == content(rebuilt)
    assert applied.record_count == rebuilt.record_count
    assert len(applied) == len(rebuilt)  # the empty non-terminal deep.example.com. included
    assert b"\x04deep\x07example\x03com\x00" in applied


def test_axfr_style_reply_yields_a_full_zone() -> None:
    records = [soa(5), *map(rrset, V1), soa(5)]
    ixfr = consumer()
    assert feed_all(ixfr, stream(records, per_message=4)) == [False, False, True]
    assert ixfr.full is not None
    assert not ixfr.incremental and not ixfr.up_to_date
    assert content(ixfr.result()) == content(build(5, V1))


def test_version_gap_between_steps_is_a_transfer_error() -> None:
    # 1 -> 2, then a step claiming to start at 4: version 2 -> 4 is missing.
    records = [soa(5), *diff_sequence(1, 2, *STEP_1_2), *diff_sequence(4, 5, *STEP_2_3), soa(5)]
    ixfr = consumer()
    with pytest.raises(TransferError, match="version gap"):
        feed_all(ixfr, stream(records, per_message=2))


def test_stream_starting_from_another_version_is_a_transfer_error() -> None:
    records = [soa(3), *diff_sequence(2, 3, *STEP_2_3), soa(3)]
    with pytest.raises(TransferError, match="starts from serial 2"):
        feed_all(consumer(our_serial=1), stream(records, per_message=10))


def test_first_record_not_soa_is_a_transfer_error() -> None:
    records = [rrset(V1[0]), soa(2), *diff_sequence(1, 2, *STEP_1_2), soa(2)]
    with pytest.raises(TransferError, match="not the zone's SOA"):
        feed_all(consumer(), stream(records, per_message=10))


# --------------------------------------------------------------------------------------------------
# journal


def steps_of_three() -> list[VersionStep]:
    """Changes 1 -> 2 -> 3 -> 4 as the IXFR consumer would hand them over (SOAs included)."""
    changes = [STEP_1_2, STEP_2_3,
               (["host.deep.example.com. 300 IN A 192.0.2.99"], ["new.example.com. 60 IN A 192.0.2.100"])]
    out = []
    for serial, (deleted, added) in enumerate(changes, start=1):
        soa_old = to_rec(soa(serial).to_text())
        soa_new = to_rec(soa(serial + 1).to_text())
        out.append(VersionStep(serial, serial + 1, [soa_old, *map(to_rec, deleted)],
                               [soa_new, *map(to_rec, added)]))
    return out


def journal_file(tmp_path: Path) -> Path:
    return journal.journal_path(tmp_path, ZONE_NAME)


def entry_offsets(data: bytes) -> list[int]:
    """Where each entry's '; diff' header starts."""
    offsets = []
    pos = data.find(b"; diff ")
    while pos >= 0:
        offsets.append(pos)
        pos = data.find(b"; diff ", pos + 1)
    return offsets


def test_journal_read_from_the_first_serial_returns_every_step(tmp_path: Path) -> None:
    steps = steps_of_three()
    journal.append(tmp_path, ZONE_NAME, steps)
    assert journal.read(tmp_path, ZONE_NAME, ORIGIN, 1) == steps


def test_journal_read_from_a_middle_serial_returns_the_tail(tmp_path: Path) -> None:
    steps = steps_of_three()
    for step in steps:  # one append per IXFR, as the server does
        journal.append(tmp_path, ZONE_NAME, [step])
    assert journal.read(tmp_path, ZONE_NAME, ORIGIN, 2) == steps[1:]


def test_journal_torn_tail_drops_only_the_last_entry(tmp_path: Path) -> None:
    steps = steps_of_three()
    journal.append(tmp_path, ZONE_NAME, steps)
    path = journal_file(tmp_path)
    size = path.stat().st_size
    last = entry_offsets(path.read_bytes())[2]
    os.truncate(path, last + (size - last) // 2)  # a crash half-way through the third append
    assert journal.read(tmp_path, ZONE_NAME, ORIGIN, 1) == steps[:2]


def test_journal_flipped_byte_in_entry_two_stops_replay_after_entry_one(tmp_path: Path) -> None:
    steps = steps_of_three()
    journal.append(tmp_path, ZONE_NAME, steps)
    path = journal_file(tmp_path)
    data = bytearray(path.read_bytes())
    second = entry_offsets(bytes(data))[1]
    target = data.index(b"192.0.2.", second)  # inside a record line of entry 2, not its trailer
    data[target] ^= 0x01  # '1' -> '0': still a valid address, so only the checksum can notice
    path.write_bytes(bytes(data))
    assert journal.read(tmp_path, ZONE_NAME, ORIGIN, 1) == steps[:1]


def test_journal_record_lines_are_zone_file_records(tmp_path: Path) -> None:
    steps = steps_of_three()
    journal.append(tmp_path, ZONE_NAME, steps)
    lines = journal_file(tmp_path).read_text().splitlines()
    records = [line[2:] for line in lines if line[:2] in ("- ", "+ ")]
    assert all(line.startswith(";") for line in lines if line[:2] not in ("- ", "+ "))
    written = [rec for step in steps for rec in (*step.deleted, *step.added)]
    assert len(records) == len(written)
    for text, (owner, rtype, ttl, rdata) in zip(records, written, strict=True):
        # dnspython reads each line on its own: owner, TTL, class, type, rdata in master format.
        name, ttl_text, rdclass, type_text, rdata_text = text.split(maxsplit=4)
        parsed = dns.rrset.from_text(name, int(ttl_text), rdclass, type_text, rdata_text)
        assert parsed.name == dns.name.from_wire(owner, 0)[0]
        assert (parsed.rdtype, parsed.rdclass, parsed.ttl) == (rtype, dns.rdataclass.IN, ttl)
        assert parsed[0].to_wire() == rdata


def test_ttl_with_the_top_bit_set_becomes_zero_as_in_axfr() -> None:
    # Review finding: IXFR kept TTL 0x80000001 in memory while journal replay read 0;
    # RFC 2181 8 says such a TTL means zero, and AXFR already applied that.
    big = rrset("www.example.com. 300 IN A 192.0.2.9")
    big.ttl = 0x80000001
    records = [soa(2), *diff_sequence(1, 2, [], []), ]
    records.insert(3, big)  # an addition in the only step: old SOA, new SOA, www A
    records.append(soa(2))
    c = consumer()
    assert feed_all(c, stream(records, per_message=10))[-1]
    added = [r for r in c.steps[0].added if r[1] == rrtypes.A]
    assert [ttl for _o, _t, ttl, _rd in added] == [0]


def test_journal_entries_of_another_copy_are_not_replayed(tmp_path: Path) -> None:
    # Review finding: entries were matched to the copy by serial alone.  After a retransfer
    # replaced the copy with another one of the same serial, the old entries would be replayed
    # onto it.  Entries now name the copy (its checksum) they continue.
    from secondns.store import storage

    zone = build(1, v3_lines()).folded()
    meta = storage.CopyMeta(1, 1.0, None, None, 1.0)
    storage.save_zone(tmp_path, ZONE_NAME, zone, meta)
    steps = steps_of_three()
    journal.append(tmp_path, ZONE_NAME, steps)
    assert journal.read(tmp_path, ZONE_NAME, ORIGIN, 1) == steps
    # Another copy at the same serial (say an operator's retransfer), the journal left behind.
    storage.save_zone(tmp_path, ZONE_NAME, zone, storage.CopyMeta(1, 2.0, None, None, 2.0))
    assert journal.read(tmp_path, ZONE_NAME, ORIGIN, 1) == []


class _Unwalkable(dict[bytes, bytes]):
    """A base whose walk fails: stands for a 1M-name zone that must not be walked."""

    def items(self) -> object:  # type: ignore[override]
        raise AssertionError("the zone's names were walked")


def test_zone_truthiness_does_not_walk_the_names() -> None:
    # refresh tests ``if self.zone`` on the reactor: without Zone.__bool__ that fell back to
    # __len__, an O(names) walk (100 ms for 1M records, issue 11).
    zone = build(1, V1)
    big = Zone(ORIGIN, _Unwalkable(zone._names), zone.soa, zone.n_cuts, zone.n_dnames,
               zone.record_count, zone._children)
    assert bool(big)
    with pytest.raises(AssertionError, match="walked"):
        len(big)
