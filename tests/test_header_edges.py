"""Header and question edge cases answered as BIND 9.18 answers them (issue 10, item 8).

Every expected value here was measured against ``named`` 9.18 with dnspython (the same
messages, a zone of the same shape); tests/test_genreport.py keeps comparing the two live.
"""

from __future__ import annotations

import struct

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import pytest
from zonetools import responder_for, zone_from_text

from secondns.serve.responder import UDP, Responder

ZONE = """$TTL 300
@ IN SOA ns1 host 1 3600 600 86400 300
  IN NS ns1
ns1 IN A 192.0.2.1
www IN A 192.0.2.2
"""
QR = 0x8000
OPT_RR = b"\x00" + struct.pack("!HHIH", 41, 1232, 0, 0)


@pytest.fixture(scope="module")
def responder() -> Responder:
    return responder_for(zone_from_text(ZONE, "example.com."))


def header(resp: bytes) -> tuple[int, int, tuple[int, ...]]:
    """(rcode, flags without rcode, (qd, an, ns, ar))."""
    _, flags, *counts = struct.unpack_from("!HHHHHH", resp)
    return flags & 0xF, flags & 0xFFF0, tuple(counts)


def send(responder: Responder, data: bytes) -> bytes:
    resp = responder.respond(data, UDP, ("127.0.0.1", 1))
    assert resp is not None
    return resp


def message(opcode: int = 0, *, qtype: str | int = "A", qname: str = "www.example.com.",
            rdclass: int = 1, edns: int = -1, do: bool = False, cd: bool = False) -> bytes:
    msg = dns.message.make_query(qname, qtype, rdclass, use_edns=edns, want_dnssec=do)
    if cd:
        msg.flags |= dns.flags.CD | dns.flags.AD
    msg.set_opcode(opcode)
    return msg.to_wire()


def with_counts(data: bytes, qd: int | None = None, an: int | None = None, ns: int | None = None) -> bytes:
    out = bytearray(data)
    for value, at in ((qd, 4), (an, 6), (ns, 8)):
        if value is not None:
            struct.pack_into("!H", out, at, value)
    return bytes(out)


UNKNOWN_OPCODES = [1, 2, 3, 6, 7, 15]


@pytest.mark.parametrize("opcode", UNKNOWN_OPCODES)
def test_unknown_opcode_is_notimp_with_the_bare_header(responder: Responder, opcode: int) -> None:
    op = opcode << 11
    plain = message(opcode)
    # RD, CD and AD are not echoed; no question; OPT echoed (with DO) when the query had one.
    assert header(send(responder, plain)) == (dns.rcode.NOTIMP, QR | op, (0, 0, 0, 0))
    out = send(responder, message(opcode, edns=0, do=True, cd=True))
    assert header(out) == (dns.rcode.NOTIMP, QR | op, (0, 0, 0, 1))
    assert dns.message.from_wire(out).ednsflags & dns.flags.DO
    # Not FORMERR even when a QUERY with the same body would be: no question, trailing bytes.
    assert header(send(responder, with_counts(plain, qd=0)[:12])) == (dns.rcode.NOTIMP, QR | op, (0, 0, 0, 0))
    assert header(send(responder, plain + b"\x01\x02")) == (dns.rcode.NOTIMP, QR | op, (0, 0, 0, 0))


@pytest.mark.parametrize("opcode", [15, 6])
def test_unknown_opcode_that_does_not_parse_is_formerr_without_question(
        responder: Responder, opcode: int) -> None:
    plain = message(opcode)
    two_questions = with_counts(plain, qd=2) + plain[12:]
    assert header(send(responder, two_questions)) == (dns.rcode.FORMERR, QR | opcode << 11, (0, 0, 0, 0))
    opt_in_authority = with_counts(plain, ns=1) + OPT_RR
    assert header(send(responder, opt_in_authority)) == (dns.rcode.FORMERR, QR | opcode << 11, (0, 0, 0, 0))


def test_unknown_opcode_with_edns1_is_badvers_first(responder: Responder) -> None:
    out = send(responder, message(15, edns=1))
    assert header(out) == (0, QR | 15 << 11, (0, 0, 0, 1))
    reply = dns.message.from_wire(out)
    assert reply.rcode() == dns.rcode.BADVERS and reply.edns == 0


@pytest.mark.parametrize("section", ["answer", "authority"])
@pytest.mark.parametrize("edns", [-1, 0])
def test_opt_outside_the_additional_section_is_formerr(responder: Responder, section: str, edns: int) -> None:
    # RFC 6891 6.1.1; BIND echoes the question and RD, and no OPT (even with one in additional).
    plain = message(edns=edns, do=True)
    qend = 12 + len(b"\x03www\x07example\x03com\x00") + 4
    counted = with_counts(plain, an=1) if section == "answer" else with_counts(plain, ns=1)
    data = counted[:qend] + OPT_RR + plain[qend:]
    out = send(responder, data)
    assert header(out) == (dns.rcode.FORMERR, QR | dns.flags.RD, (1, 0, 0, 0))
    assert out[12:qend] == plain[12:qend]


@pytest.mark.parametrize("qtype", [128, 129, 200, 248])
@pytest.mark.parametrize("qname", ["www.example.com.", "nope.example.com.", "www.example.org."])
def test_unknown_meta_qtype_is_formerr_not_nodata(responder: Responder, qtype: int, qname: str) -> None:
    # RFC 6895 3.1: 128-255 are meta and query TYPEs, never data; BIND 9.18 says FORMERR,
    # without AA, echoing RD, CD, the question and OPT.
    out = send(responder, message(qtype=qtype, qname=qname, edns=0, cd=True))
    assert header(out) == (dns.rcode.FORMERR, QR | dns.flags.RD | dns.flags.CD, (1, 0, 0, 1))
    assert dns.message.from_wire(out).question[0].rdtype == qtype


def test_unknown_meta_qtype_in_chaos_is_formerr(responder: Responder) -> None:
    assert header(send(responder, message(qtype=200, rdclass=3)))[0] == dns.rcode.FORMERR


@pytest.mark.parametrize(("qclass", "rcode"), [(128, dns.rcode.NOTIMP), (200, dns.rcode.NOTIMP),
                                                (253, dns.rcode.NOTIMP), (254, dns.rcode.FORMERR),
                                                (255, dns.rcode.FORMERR)])
def test_meta_qclass_answered_as_bind(responder: Responder, qclass: int, rcode: int) -> None:
    assert header(send(responder, message(rdclass=qclass))) == (rcode, QR | dns.flags.RD, (1, 0, 0, 0))


def test_data_types_and_known_meta_types_unchanged(responder: Responder) -> None:
    for qtype, rcode, aa in ((666, dns.rcode.NOERROR, True), (65535, dns.rcode.NOERROR, True),
                             (255, dns.rcode.NOERROR, True), (253, dns.rcode.NOTIMP, False),
                             (250, dns.rcode.FORMERR, False), (249, dns.rcode.FORMERR, False)):
        got_rcode, flags, _ = header(send(responder, message(qtype=qtype)))
        assert (got_rcode, bool(flags & dns.flags.AA)) == (rcode, aa), qtype


def test_notify_formerr_does_not_echo_rd(responder: Responder) -> None:
    data = with_counts(message(dns.opcode.NOTIFY, qtype="SOA", qname="example.com."), qd=0)[:12]
    assert header(send(responder, data)) == (dns.rcode.FORMERR, QR | dns.opcode.NOTIFY << 11, (0, 0, 0, 0))
