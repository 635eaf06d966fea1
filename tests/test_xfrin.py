"""Sans-IO transfer messages: queries, the lean parser, SOA probes, AXFR.

Valid messages and streams are built with dnspython, an independent
implementation that compresses names the way real primaries do.

Throughput: ``PYTHONPATH=. python tests/test_xfrin.py [records]`` prints microseconds per
record for parse_message alone and through AxfrConsumer into a ZoneBuilder.
"""

from __future__ import annotations

import gc
import struct
import sys
import time

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.renderer
import dns.rrset
import dns.tsig
import dns.tsigkeyring
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secondns import names, rrtypes
from secondns.errors import SecondnsError, TransferError, WireError
from secondns.transfer.xfrin import (
    OPTION_EXPIRE,
    AxfrConsumer,
    Message,
    MessageHook,
    add_additional,
    make_query,
    parse_message,
    parse_soa_response,
)
from secondns.zone import SHARDS

ORIGIN_TEXT = "example.com."
ORIGIN = names.from_text(ORIGIN_TEXT)
ID = 4242
SOA_TEXT = "ns1.example.com. hostmaster.example.com. {serial} 7200 3600 1209600 300"
QR_AA = dns.flags.QR | dns.flags.AA


def rrset(line: str) -> dns.rrset.RRset:
    """One record from 'owner ttl class type rdata'."""
    owner, ttl, cls, rtype, rdata = line.split(maxsplit=4)
    return dns.rrset.from_text(owner, int(ttl), cls, rtype, rdata)


def soa(serial: int = 2024010101, owner: str = ORIGIN_TEXT) -> dns.rrset.RRset:
    return rrset(f"{owner} 3600 IN SOA " + SOA_TEXT.format(serial=serial))


def body(count: int = 3) -> list[dns.rrset.RRset]:
    """Zone content between the SOAs: apex NS, then mixed records."""
    out = [rrset("example.com. 3600 IN NS ns1.example.com."),
           rrset("ns1.example.com. 3600 IN A 192.0.2.53")]
    for i in range(count):
        host = f"h{i}.example.com."
        kind = i % 5
        if kind == 0:
            out.append(rrset(f"{host} 300 IN A 192.0.2.{i % 256}"))
        elif kind == 1:
            out.append(rrset(f"{host} 300 IN AAAA 2001:db8::{i % 65536:x}"))
        elif kind == 2:
            out.append(rrset(f"sub{i}.example.com. 300 IN NS ns.sub{i}.example.com."))
        elif kind == 3:
            out.append(rrset(f"{host} 300 IN MX 10 mail{i % 100}.example.com."))
        else:
            out.append(rrset(f'{host} 300 IN TXT "v=spf1 -all" "record {i}"'))
    return out


def message(answer: list[dns.rrset.RRset], *, msg_id: int = ID, qname: str = ORIGIN_TEXT,
            qtype: str = "AXFR", question: bool = True, rcode: int = 0, flags: int = QR_AA,
            expire: int | None = None, opcode: int = 0) -> bytes:
    """One response message rendered by dnspython."""
    m = dns.message.Message(id=msg_id)
    m.flags = flags
    m.set_opcode(dns.opcode.Opcode(opcode))
    m.set_rcode(dns.rcode.Rcode(rcode))
    if question:
        m.find_rrset(m.question, dns.name.from_text(qname), dns.rdataclass.IN,
                     dns.rdatatype.from_text(qtype), create=True)
    m.answer.extend(answer)
    if expire is not None:
        option = dns.edns.GenericOption(OPTION_EXPIRE, struct.pack("!I", expire))
        m.use_edns(0, payload=1232, options=[option])
    return m.to_wire(max_size=65535)


def stream(records: list[dns.rrset.RRset], *, msg_id: int = ID, max_size: int = 65535,
           qtype: str = "AXFR") -> list[bytes]:
    """A multi-message transfer as a primary sends it: question in the first message only."""
    out: list[bytes] = []

    def fresh(first: bool) -> dns.renderer.Renderer:
        r = dns.renderer.Renderer(msg_id, QR_AA, max_size)
        if first:
            r.add_question(dns.name.from_text(ORIGIN_TEXT), dns.rdatatype.from_text(qtype),
                           dns.rdataclass.IN)
        return r

    def finish(r: dns.renderer.Renderer) -> None:
        r.write_header()
        out.append(r.get_wire())

    r = fresh(True)
    used = 0
    for rs in records:
        try:
            r.add_rrset(dns.renderer.ANSWER, rs)
            used += 1
        except dns.exception.TooBig:
            finish(r)
            r = fresh(False)
            r.add_rrset(dns.renderer.ANSWER, rs)
            used = 1
    if used:
        finish(r)
    return out


def axfr(count: int = 3, serial: int = 2024010101) -> list[dns.rrset.RRset]:
    return [soa(serial), *body(count), soa(serial)]


def dnspython_records(wires: list[bytes]) -> list[tuple[bytes, int, int, bytes]]:
    """(owner lowercased, type, ttl, uncompressed rdata) for every answer record, by dnspython."""
    out = []
    for wire in wires:
        m = dns.message.from_wire(wire, one_rr_per_rrset=True)
        for rs in m.answer:
            for rd in rs:
                out.append((rs.name.to_wire().lower(), rs.rdtype, rs.ttl, rd.to_wire()))
    return out


def consumer(max_records: int = 1_000_000, on_message: MessageHook | None = None) -> AxfrConsumer:
    return AxfrConsumer(ORIGIN, ID, max_records=max_records, on_message=on_message)


def feed_all(c: AxfrConsumer, wires: list[bytes]) -> bool:
    done = False
    for w in wires:
        done = c.feed(w)
    return done


# --------------------------------------------------------------------------
# make_query / add_additional


def test_query_has_one_question_and_rd_clear() -> None:
    m = dns.message.from_wire(make_query(ORIGIN, rrtypes.SOA, 77))
    assert m.id == 77
    assert not m.flags & dns.flags.RD
    assert not m.flags & dns.flags.QR
    assert m.opcode() == dns.opcode.QUERY
    assert [(q.name.to_text(), q.rdtype) for q in m.question] == [(ORIGIN_TEXT, dns.rdatatype.SOA)]


def test_query_carries_opt_with_empty_expire_option() -> None:
    m = dns.message.from_wire(make_query(ORIGIN, rrtypes.SOA, 1))
    assert m.edns == 0
    assert m.payload == 1232
    assert [(o.otype, o.to_wire()) for o in m.options] == [(OPTION_EXPIRE, b"")]


def test_query_without_expire_option_has_empty_opt() -> None:
    m = dns.message.from_wire(make_query(ORIGIN, rrtypes.SOA, 1, expire_option=False))
    assert m.edns == 0
    assert m.options == ()


def test_query_without_edns_has_no_opt() -> None:
    wire = make_query(ORIGIN, rrtypes.AXFR, 1, edns=False)
    assert dns.message.from_wire(wire).edns == -1
    assert struct.unpack_from("!H", wire, 10)[0] == 0


def test_ixfr_query_carries_our_soa_in_authority() -> None:
    rdata = soa(41)[0].to_wire()
    wire = make_query(ORIGIN, rrtypes.IXFR, 9, authority=[(ORIGIN, rrtypes.SOA, 3600, rdata)])
    m = dns.message.from_wire(wire)
    assert [(rs.name.to_text(), rs.rdtype, rs[0].serial) for rs in m.authority] == \
        [(ORIGIN_TEXT, dns.rdatatype.SOA, 41)]


def test_notify_query_uses_the_given_opcode() -> None:
    m = dns.message.from_wire(make_query(ORIGIN, rrtypes.SOA, 1, opcode=4))
    assert m.opcode() == dns.opcode.NOTIFY


def test_add_additional_appends_record_and_bumps_arcount() -> None:
    query = make_query(ORIGIN, rrtypes.AXFR, 5)
    extra = names.from_text("x.example.com.") + struct.pack("!HHIH4B", rrtypes.A, 1, 60, 4, 192, 0, 2, 1)
    m = dns.message.from_wire(add_additional(query, extra))
    assert [(rs.name.to_text(), rs[0].address) for rs in m.additional] == [("x.example.com.", "192.0.2.1")]
    assert m.edns == 0


def test_add_additional_rejects_short_message() -> None:
    with pytest.raises(WireError, match="shorter than the 12-octet header"):
        add_additional(b"\x00" * 5, b"")


# --------------------------------------------------------------------------
# parse_message


def test_parse_decompresses_owner_and_rdata_names() -> None:
    wire = message([soa(7), rrset("www.example.com. 60 IN MX 10 mail.example.com."),
                    rrset("_sip._tcp.example.com. 60 IN SRV 1 2 5060 sip.example.com.")])
    msg = parse_message(wire)
    assert b"\xc0" in wire  # dnspython did compress
    assert [(o, t, c, ttl, rd) for o, t, c, ttl, rd in msg.answer] == \
        [(o, t, 1, ttl, rd) for o, t, ttl, rd in dnspython_records([wire])]


def test_parse_decompresses_naptr_replacement() -> None:
    # dnspython rightly never compresses NAPTR; some old primaries did (RFC 3597 4).
    rs = rrset('example.com. 60 IN NAPTR 100 10 "S" "SIP+D2U" "" _sip._udp.example.com.')
    plain = rs[0].to_wire()
    compressed = plain[:-len(ORIGIN)] + b"\xc0\x0c"
    header = struct.pack("!6H", 1, 0x8400, 1, 1, 0, 0)
    wire = (header + ORIGIN + struct.pack("!HH", rrtypes.AXFR, 1) + b"\xc0\x0c"
            + struct.pack("!HHIH", rrtypes.NAPTR, 1, 60, len(compressed)) + compressed)
    (rec,) = parse_message(wire).answer
    assert rec[4] == plain


def test_parse_keeps_owner_case() -> None:
    msg = parse_message(message([rrset("WwW.Example.COM. 60 IN A 192.0.2.1")], question=False))
    assert msg.answer[0][0] == names.from_text("WwW.Example.COM.")


def test_parse_leaves_rdata_of_unlisted_types_opaque() -> None:
    # A TYPE65400 rdata that happens to look like a compression pointer stays as is (RFC 3597 4).
    wire = bytes(make_query(ORIGIN, rrtypes.SOA, 1, edns=False))
    record = b"\xc0\x0c" + struct.pack("!HHIH", 65400, 1, 0, 2) + b"\xc0\x0c"
    wire = wire[:6] + b"\x00\x01" + wire[8:] + record
    assert parse_message(wire).answer == [(ORIGIN, 65400, 1, 0, b"\xc0\x0c")]


def test_parse_reads_header_and_question() -> None:
    msg = parse_message(message([soa()], qtype="SOA"))
    assert (msg.id, msg.qr, msg.aa, msg.tc, msg.opcode, msg.rcode) == (ID, True, True, False, 0, 0)
    assert msg.question == (ORIGIN, rrtypes.SOA, 1)


def test_parse_reads_opt_fields() -> None:
    m = dns.message.make_query(ORIGIN_TEXT, "SOA", use_edns=0, want_dnssec=True, payload=4000,
                               options=[dns.edns.GenericOption(10, b"12345678")])
    msg = parse_message(m.to_wire())
    assert msg.opt is not None
    opt = msg.opt
    assert (opt.payload, opt.version, opt.do, opt.options) == (4000, 0, True, [(10, b"12345678")])
    assert msg.additional == []


def test_parse_combines_extended_rcode_from_opt() -> None:
    m = dns.message.make_response(dns.message.make_query(ORIGIN_TEXT, "SOA", use_edns=0))
    m.set_rcode(dns.rcode.BADVERS)
    assert parse_message(m.to_wire()).rcode == 16


def test_parse_extracts_tsig_as_last_additional_record() -> None:
    keyring = dns.tsigkeyring.from_text({"key.example.": "c2VjcmV0c2VjcmV0c2VjcmV0"})
    m = dns.message.make_query(ORIGIN_TEXT, "SOA", use_edns=0)
    m.use_tsig(keyring, keyname="key.example.")
    wire = m.to_wire()
    msg = parse_message(wire)
    assert msg.tsig is not None
    assert msg.tsig.name == names.from_text("key.example.")
    assert msg.tsig.raw == wire[msg.tsig.offset:]
    assert msg.tsig.rdata.startswith(names.from_text("hmac-sha256."))
    assert msg.opt is not None
    assert msg.additional == []


def test_parse_rejects_tsig_that_is_not_last() -> None:
    tsig_rr = names.from_text("k.") + struct.pack("!HHIH", rrtypes.TSIG, 255, 0, 0)
    wire = add_additional(add_additional(make_query(ORIGIN, 1, 1, edns=False), tsig_rr),
                          names.ROOT + struct.pack("!HHIH", rrtypes.OPT, 1232, 0, 0))
    with pytest.raises(WireError, match="TSIG record is not the last"):
        parse_message(wire)


def test_parse_rejects_two_opt_records() -> None:
    wire = add_additional(make_query(ORIGIN, 1, 1), names.ROOT + struct.pack("!HHIH", rrtypes.OPT, 512, 0, 0))
    with pytest.raises(WireError, match="more than one OPT"):
        parse_message(wire)


def test_parse_rejects_opt_not_owned_by_root() -> None:
    opt = ORIGIN + struct.pack("!HHIH", rrtypes.OPT, 512, 0, 0)
    wire = add_additional(make_query(ORIGIN, 1, 1, edns=False), opt)
    with pytest.raises(WireError, match="not owned by the root"):
        parse_message(wire)


def test_parse_rejects_trailing_octets() -> None:
    with pytest.raises(WireError, match="3 octets after the last record"):
        parse_message(message([soa()]) + b"abc")


def test_parse_rejects_short_header() -> None:
    with pytest.raises(WireError, match="shorter than the 12-octet header"):
        parse_message(b"\x00\x01\x80")


def test_parse_rejects_missing_records() -> None:
    wire = message([soa()])
    wire = wire[:6] + b"\x00\x02" + wire[8:]
    with pytest.raises(WireError, match="answer section ends early"):
        parse_message(wire)


def test_parse_rejects_rdata_past_the_end() -> None:
    with pytest.raises(WireError, match="rdata runs past the end"):
        parse_message(message([rrset("a.example.com. 60 IN A 192.0.2.1")])[:-1])


def test_parse_rejects_forward_compression_pointer() -> None:
    header = struct.pack("!6H", 1, 0x8000, 1, 0, 0, 0)
    with pytest.raises(WireError, match="does not point backwards"):
        parse_message(header + b"\xc0\x20" + b"\x00\x06\x00\x01" + b"\x00" * 20)


def test_parse_rejects_self_pointer() -> None:
    header = struct.pack("!6H", 1, 0x8000, 1, 0, 0, 0)
    with pytest.raises(WireError, match="does not point backwards"):
        parse_message(header + b"\xc0\x0c\x00\x06\x00\x01")


def test_parse_rejects_more_than_one_question() -> None:
    wire = make_query(ORIGIN, 6, 1, edns=False)
    wire = wire[:4] + b"\x00\x02" + wire[6:] + wire[12:]
    with pytest.raises(WireError, match="2 questions"):
        parse_message(wire)


def test_parse_rejects_name_in_rdata_running_past_rdata() -> None:
    wire = bytearray(message([rrset("example.com. 60 IN NS ns.example.com.")], question=False))
    # Shrink the NS rdlength by one: the name now ends past the rdata.
    owner_end = 12 + len(ORIGIN)
    (rdlen,) = struct.unpack_from("!H", wire, owner_end + 8)
    struct.pack_into("!H", wire, owner_end + 8, rdlen - 1)
    with pytest.raises(WireError, match="name in NS rdata runs past the rdata"):
        parse_message(bytes(wire))


def test_message_with_5000_compression_pointers_parses() -> None:
    # Twisted Names drops messages with more than 1000 pointers; we must not.
    header = struct.pack("!6H", 1, 0x8400, 1, 2500, 0, 0)
    question = ORIGIN + struct.pack("!HH", rrtypes.AXFR, 1)
    ns = b"\xc0\x0c" + struct.pack("!HHIH", rrtypes.NS, 1, 60, 2) + b"\xc0\x0c"
    wire = header + question + ns * 2500
    assert wire.count(b"\xc0\x0c") == 5000
    msg = parse_message(wire)
    assert len(msg.answer) == 2500
    assert msg.answer[-1] == (ORIGIN, rrtypes.NS, 1, 60, ORIGIN)


def test_long_pointer_chain_parses() -> None:
    # Each record's owner points at the previous record's owner: a 1000-long chain
    # (as long as 14-bit pointer offsets allow with 16-octet records).
    header = struct.pack("!6H", 1, 0x8400, 1, 1000, 0, 0)
    question = ORIGIN + struct.pack("!HH", rrtypes.AXFR, 1)
    parts = [header, question]
    pos = 12 + len(question)
    target = 12
    for _ in range(1000):
        parts.append(struct.pack("!HHHIH", 0xC000 | target, rrtypes.A, 1, 60, 4) + b"\x01" * 4)
        target = pos
        pos += 16
    msg = parse_message(b"".join(parts))
    assert {rec[0] for rec in msg.answer} == {ORIGIN}


_VALID = [
    message(axfr(20), expire=600),
    message([rrset('example.com. 60 IN NAPTR 100 10 "S" "SIP+D2U" "" _sip._udp.example.com.'),
             rrset("_sip._tcp.example.com. 60 IN SRV 1 2 5060 sip.example.com.")]),
    make_query(ORIGIN, rrtypes.IXFR, 3, authority=[(ORIGIN, rrtypes.SOA, 60, soa(1)[0].to_wire())]),
]


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_parse_of_random_bytes_raises_only_wire_error(data: bytes) -> None:
    try:
        parse_message(data)
    except WireError:
        pass


@settings(max_examples=1000, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_VALID), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1,
                                         max_size=6), st.integers(0, 10_000))
def test_parse_of_mutated_messages_raises_only_wire_error(base: bytes, edits: list[tuple[int, int]],
                                                          cut: int) -> None:
    data = bytearray(base)
    for where, value in edits:
        data[where % len(data)] = value
    data = data[:len(data) - cut % 8] if cut % 3 == 0 else data
    try:
        parse_message(bytes(data))
    except WireError:
        pass


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4))
def test_axfr_feed_of_mutated_stream_raises_only_transfer_error(edits: list[tuple[int, int]]) -> None:
    wires = [bytearray(w) for w in stream(axfr(60), max_size=512)]
    for where, value in edits:
        w = wires[where % len(wires)]
        w[where % len(w)] = value
    c = consumer()
    try:
        for w in wires:
            c.feed(bytes(w))
        if c.done:
            c.result()
    except TransferError:
        pass


# --------------------------------------------------------------------------
# SOA probe


def test_soa_probe_returns_serial_soa_and_expire() -> None:
    r = parse_soa_response(message([soa(99)], qtype="SOA", expire=86400), ID, ORIGIN)
    assert (r.rcode, r.serial, r.truncated, r.expire, r.authoritative) == (0, 99, False, 86400, True)
    assert r.soa is not None and r.soa.refresh == 7200


def test_soa_probe_compares_question_case_insensitively() -> None:
    r = parse_soa_response(message([soa(5, "EXAMPLE.com.")], qtype="SOA", qname="EXAMPLE.com."), ID, ORIGIN)
    assert r.serial == 5


def test_soa_probe_reports_non_authoritative_answer() -> None:
    r = parse_soa_response(message([soa(5)], qtype="SOA", flags=dns.flags.QR), ID, ORIGIN)
    assert not r.authoritative


def test_soa_probe_reports_truncation_without_serial() -> None:
    r = parse_soa_response(message([], qtype="SOA", flags=QR_AA | dns.flags.TC), ID, ORIGIN)
    assert (r.truncated, r.serial) == (True, None)


def test_soa_probe_reports_error_rcode_without_serial() -> None:
    r = parse_soa_response(message([], qtype="SOA", rcode=9), ID, ORIGIN)
    assert (r.rcode, r.serial, r.soa) == (9, None, None)


def test_soa_probe_rejects_wrong_id() -> None:
    with pytest.raises(TransferError, match="reply ID 4242 does not match query ID 1"):
        parse_soa_response(message([soa()], qtype="SOA"), 1, ORIGIN)


def test_soa_probe_rejects_message_without_qr() -> None:
    with pytest.raises(TransferError, match="QR bit clear"):
        parse_soa_response(message([soa()], qtype="SOA", flags=0), ID, ORIGIN)


def test_soa_probe_rejects_question_for_another_zone() -> None:
    reason = r"question example\.net\. SOA does not match the query example\.com\. SOA"
    with pytest.raises(TransferError, match=reason):
        parse_soa_response(message([soa()], qtype="SOA", qname="example.net."), ID, ORIGIN)


def test_soa_probe_rejects_missing_question() -> None:
    with pytest.raises(TransferError, match="does not echo the question"):
        parse_soa_response(message([soa()], qtype="SOA", question=False), ID, ORIGIN)


def test_soa_probe_rejects_answer_without_the_zone_soa() -> None:
    wire = message([soa(owner="sub.example.com.")], qtype="SOA")
    with pytest.raises(TransferError, match=r"no SOA record for example\.com\."):
        parse_soa_response(wire, ID, ORIGIN)


def test_soa_probe_rejects_malformed_expire_option() -> None:
    m = dns.message.from_wire(message([soa()], qtype="SOA"))
    m.use_edns(0, options=[dns.edns.GenericOption(OPTION_EXPIRE, b"\x00\x01")])
    with pytest.raises(WireError, match="EDNS EXPIRE option of 2 octets"):
        parse_soa_response(m.to_wire(), ID, ORIGIN)


# --------------------------------------------------------------------------
# AXFR consumer: valid streams


def test_axfr_multi_message_stream_matches_dnspython() -> None:
    records = axfr(3000)
    wires = stream(records, max_size=16384)
    assert len(wires) > 3
    c = consumer()
    assert feed_all(c, wires)
    zone = c.result()
    expected = dnspython_records(wires)
    assert c.records == len(expected) == len(records)
    assert set(zone.records()) == set(expected)
    assert zone.record_count == len(expected) - 1  # the closing SOA is not stored twice
    assert zone.serial == 2024010101


def test_axfr_leaves_nothing_for_the_cyclic_collector() -> None:
    # Issue 11: a name's pending records used to be a list, so a big AXFR kept adding tracked
    # objects and every young collection on the reactor walked them (and the dict of every
    # name while it was young): 20-60 ms turns at 1M records.  Bytes and bytearrays are not.
    rrsets = [soa()]
    for i in range(300):
        rrsets += [rrset(f"m{i}.example.com. 300 IN A 192.0.2.{i % 256}"),
                   rrset(f"m{i}.example.com. 300 IN A 192.0.2.{(i + 1) % 256}"),
                   rrset(f"m{i}.example.com. 300 IN A 192.0.2.{i % 256}"),  # duplicate (RFC 2181 5)
                   rrset(f"m{i}.example.com. 600 IN TXT \"t{i}\"")]
    wires = stream([*rrsets, soa()], max_size=4096)
    c = consumer()
    assert feed_all(c, wires)
    shards = c._builder._pending  # one list of shard dicts: a single tracked object
    assert len(shards) == SHARDS and sum(map(len, shards)) == 301
    assert not any(gc.is_tracked(pending) for pending in shards)
    assert not any(gc.is_tracked(v) for pending in shards for v in pending.values())
    zone = c.result()
    assert zone.record_count == 1 + 300 * 3
    assert set(zone.records()) == set(dnspython_records(wires))


def test_axfr_single_message_completes() -> None:
    c = consumer()
    assert c.feed(message(axfr(5)))
    assert c.result().record_count == 5 + 3


def test_axfr_feed_returns_false_until_closing_soa() -> None:
    wires = stream(axfr(400), max_size=2048)
    c = consumer()
    assert [c.feed(w) for w in wires] == [False] * (len(wires) - 1) + [True]


def test_axfr_counts_messages_bytes_and_records() -> None:
    wires = stream(axfr(400), max_size=2048)
    c = consumer()
    feed_all(c, wires)
    assert (c.messages, c.bytes, c.records) == (len(wires), sum(map(len, wires)), 400 + 4)


def test_axfr_ignores_and_counts_out_of_zone_records() -> None:
    c = consumer()
    c.feed(message([soa(), rrset("www.example.net. 60 IN A 192.0.2.1"),
                    rrset("example.com. 60 IN NS ns.example.net."), soa()]))
    assert c.ignored_out_of_zone == 1
    assert c.result().get(names.from_text("www.example.net.")) is None


def test_axfr_ignores_and_counts_non_in_records() -> None:
    c = consumer()
    c.feed(message([soa(), rrset('example.com. 60 CH TXT "chaos"'), soa()]))
    assert c.ignored_class == 1
    assert c.result().record_count == 1


def test_axfr_later_messages_may_omit_the_question() -> None:
    c = consumer()
    c.feed(message([soa(), *body(2)]))
    assert c.feed(message([soa()], question=False))


def test_axfr_later_messages_may_repeat_the_question() -> None:
    c = consumer()
    c.feed(message([soa(), *body(2)]))
    assert c.feed(message([soa()]))


def test_axfr_records_expire_option_from_first_message_carrying_one() -> None:
    c = consumer()
    c.feed(message([soa()]))
    c.feed(message(body(2), expire=500))
    c.feed(message([soa()], expire=900))
    assert c.expire_option == 500


def test_axfr_accepts_ixfr_question_for_axfr_style_reply() -> None:
    c = AxfrConsumer(ORIGIN, ID, max_records=100, qtype=rrtypes.IXFR)
    assert c.feed(message(axfr(3), qtype="IXFR"))
    assert c.serial == 2024010101


def test_axfr_treats_ttl_with_top_bit_set_as_zero() -> None:
    wire = bytearray(message([soa(), rrset("a.example.com. 60 IN A 192.0.2.1"), soa()]))
    at = wire.index(b"\x00\x00\x00\x3c\x00\x04\xc0\x00\x02\x01")
    wire[at:at + 4] = b"\x80\x00\x00\x00"
    c = consumer()
    c.feed(bytes(wire))
    blob = c.result().get(names.from_text("a.example.com."))
    assert blob is not None and struct.unpack_from("!I", blob, 2)[0] == 0


def test_axfr_calls_message_hook_before_processing() -> None:
    seen: list[tuple[int, int]] = []

    def hook(raw: bytes, msg: Message) -> None:
        seen.append((len(raw), len(msg.answer)))
        if len(seen) == 2:
            raise TransferError("TSIG verification failed")

    c = consumer(on_message=hook)
    wires = stream(axfr(400), max_size=2048)
    c.feed(wires[0])
    with pytest.raises(TransferError, match="TSIG verification failed"):
        c.feed(wires[1])
    assert seen[0][0] == len(wires[0])
    assert c.messages == 1


# --------------------------------------------------------------------------
# AXFR consumer: each failure, with its reason


def test_axfr_rejects_wrong_message_id() -> None:
    with pytest.raises(TransferError, match="message ID 7 does not match query ID 4242"):
        consumer().feed(message(axfr(), msg_id=7))


def test_axfr_rejects_message_without_qr() -> None:
    with pytest.raises(TransferError, match="QR bit clear"):
        consumer().feed(message(axfr(), flags=0))


def test_axfr_rejects_notauth_rcode() -> None:
    with pytest.raises(TransferError, match="primary answered NOTAUTH"):
        consumer().feed(message([], rcode=9))


def test_axfr_rejects_error_rcode_in_a_later_message() -> None:
    c = consumer()
    c.feed(message([soa(), *body(2)]))
    with pytest.raises(TransferError, match="primary answered SERVFAIL"):
        c.feed(message([], rcode=2, question=False))


def test_axfr_rejects_truncated_message() -> None:
    with pytest.raises(TransferError, match="TC bit set"):
        consumer().feed(message(axfr(), flags=QR_AA | dns.flags.TC))


def test_axfr_rejects_first_message_without_question() -> None:
    with pytest.raises(TransferError, match=r"first response does not echo the question example\.com\. AXFR"):
        consumer().feed(message(axfr(), question=False))


def test_axfr_rejects_question_for_another_zone() -> None:
    with pytest.raises(TransferError, match=r"question example\.org\. AXFR does not match the query"):
        consumer().feed(message(axfr(), qname="example.org."))


def test_axfr_rejects_later_question_of_another_type() -> None:
    c = consumer()
    c.feed(message([soa(), *body(2)]))
    with pytest.raises(TransferError, match=r"question example\.com\. IXFR does not match"):
        c.feed(message([soa()], qtype="IXFR"))


def test_axfr_rejects_first_record_that_is_not_the_soa() -> None:
    reason = r"first record is NS at example\.com\., not the SOA of example\.com\."
    with pytest.raises(TransferError, match=reason):
        consumer().feed(message([*body(1), soa()]))


def test_axfr_rejects_soa_of_another_zone_first() -> None:
    with pytest.raises(TransferError, match=r"first record is SOA at sub\.example\.com\., not the SOA"):
        consumer().feed(message([soa(owner="sub.example.com."), soa()]))


def test_axfr_rejects_empty_first_message() -> None:
    with pytest.raises(TransferError, match="first response carries no records"):
        consumer().feed(message([]))


def test_axfr_rejects_closing_soa_with_another_serial() -> None:
    with pytest.raises(TransferError, match="closing SOA serial 6 differs from opening SOA serial 5"):
        consumer().feed(message([soa(5), *body(2), soa(6)]))


def test_axfr_rejects_records_after_closing_soa() -> None:
    with pytest.raises(TransferError, match=r"2 records after the closing SOA"):
        consumer().feed(message([*axfr(2), *body(0)]))


def test_axfr_rejects_message_after_completion() -> None:
    c = consumer()
    c.feed(message(axfr()))
    with pytest.raises(TransferError, match="after the transfer completed"):
        c.feed(message(body(1), question=False))


def test_axfr_rejects_more_records_than_the_limit() -> None:
    c = consumer(max_records=50)
    with pytest.raises(TransferError, match="exceeds the limit of 50 records"):
        feed_all(c, stream(axfr(100), max_size=1024))


def test_axfr_rejects_malformed_message() -> None:
    with pytest.raises(TransferError, match=r"message 1 is malformed: .*shorter than the 12-octet header"):
        consumer().feed(b"\x00")


def test_axfr_rejects_soa_away_from_apex() -> None:
    with pytest.raises(TransferError, match=r"bad zone data: SOA record at sub\.example\.com\."):
        consumer().feed(message([soa(), soa(owner="sub.example.com."), soa()]))


def test_axfr_result_before_completion_fails() -> None:
    c = consumer()
    c.feed(message([soa(), *body(2)]))
    with pytest.raises(TransferError, match="transfer incomplete"):
        c.result()


def test_every_consumer_error_is_a_secondns_error() -> None:
    assert issubclass(TransferError, SecondnsError)


# --------------------------------------------------------------------------
# Throughput (not a test): PYTHONPATH=. python tests/test_xfrin.py [records]


def _bench(count: int) -> None:
    t0 = time.perf_counter()
    wires = stream(axfr(count))
    build = time.perf_counter() - t0
    total = count + 4
    print(f"{total} records in {len(wires)} messages ({sum(map(len, wires))} octets), built in {build:.1f}s")
    best_parse = best_axfr = float("inf")
    clock = time.process_time  # CPU time: steadier than wall time on a shared machine
    for _ in range(7):
        t0 = clock()
        for w in wires:
            parse_message(w)
        best_parse = min(best_parse, clock() - t0)
        c = AxfrConsumer(ORIGIN, ID, max_records=10 * total)
        t0 = clock()
        feed_all(c, wires)
        best_axfr = min(best_axfr, clock() - t0)
        t1 = clock()
        c.result()
        build_zone = clock() - t1
    print(f"parse_message:             {best_parse / total * 1e6:.2f} us/record")
    print(f"AxfrConsumer.feed:         {best_axfr / total * 1e6:.2f} us/record")
    print(f"ZoneBuilder.build (once):  {build_zone / total * 1e6:.2f} us/record")


if __name__ == "__main__":
    _bench(int(sys.argv[1]) if len(sys.argv) > 1 else 200_000)
