"""Property: any zone the transfer client or the zone-file reader accepts can be served.

Zones are generated with random owners, types from the set secondns knows plus unknown ones,
and rdata that is either valid by construction or arbitrary bytes.  Whatever AXFR (fed through
``AxfrConsumer``) or the zone-file reader accepts must answer every (owner, type) question, and
a few names that do not exist, through ``Responder.respond`` over UDP and TCP, without an
exception, and every response must parse with dnspython, an independent implementation.
A live check serves an accepted zone file from a real secondns and queries it with dnspython.
"""

from __future__ import annotations

import struct
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from peers import LOOPBACK, Secondns
from zonetools import responder_for

from secondns import names, rrtypes
from secondns.errors import TransferError, ZoneFileError
from secondns.serve.responder import TCP, UDP, Responder
from secondns.store.zonefile import format_record, load_zone_text
from secondns.transfer.xfrin import AxfrConsumer
from secondns.zone import Zone

ORIGIN_TEXT = "prop.test."
ORIGIN = names.from_text(ORIGIN_TEXT)
ID = 4321
SOA = names.from_text("ns1.prop.test.") + names.from_text("h.prop.test.") + struct.pack(
    "!5I", 7, 3600, 600, 86400, 300)
APEX_NS = names.from_text("ns1.prop.test.")
NONEXISTENT = ["nothing.prop.test.", "deep.below.a.prop.test.", "x.*.prop.test.", "prop.test."]
# Unknown types (RFC 3597) and every type whose layout secondns knows but meta types.
UNKNOWN = [65280, 65534, 4000]  # not 262: dnspython 2.9 parses it as WALLET (TXT-like)
KNOWN = sorted(t for t in rrtypes.RDATA_CHECKS if rrtypes.RDATA_CHECKS[t](b"") !=
               "a meta type, never zone data (RFC 6895 3.1)" and t != rrtypes.TLSA)
# TLSA is left out: BIND and secondns serve data of any length for any matching type
# (RFC 6698 leaves it to the client), dnspython refuses to parse a mismatched one.

labels = st.sampled_from([b"a", b"b", b"www", b"mail", b"*", b"ns1", b"sub"])
owners = st.lists(labels, min_size=0, max_size=2).map(
    lambda ls: b"".join(bytes((len(label),)) + label for label in ls) + ORIGIN)
targets = st.one_of(owners, st.just(b"\x00"), st.just(names.from_text("elsewhere.example.")))
u16 = st.integers(0, 0xFFFF).map(lambda v: struct.pack("!H", v))
cstring = st.binary(max_size=12).map(lambda b: bytes((len(b),)) + b)


def _valid(rtype: int) -> st.SearchStrategy[bytes]:
    """Rdata valid by construction for the layouts with names, where bytes rarely are."""
    if rtype in (rrtypes.NS, rrtypes.CNAME, rrtypes.PTR, rrtypes.DNAME, rrtypes.MB, rrtypes.MG,
                 rrtypes.MR, rrtypes.MD, rrtypes.MF):
        return targets
    if rtype in (rrtypes.MX, rrtypes.AFSDB, rrtypes.RT, rrtypes.KX):
        return st.tuples(u16, targets).map(b"".join)
    if rtype == rrtypes.SRV:
        return st.tuples(u16, u16, u16, targets).map(b"".join)
    if rtype in (rrtypes.RP, rrtypes.MINFO):
        return st.tuples(targets, targets).map(b"".join)
    if rtype == rrtypes.PX:
        return st.tuples(u16, targets, targets).map(b"".join)
    if rtype == rrtypes.NXT:
        return st.tuples(targets, st.binary(max_size=4)).map(b"".join)
    if rtype == rrtypes.A:
        return st.binary(min_size=4, max_size=4)
    if rtype == rrtypes.AAAA:
        return st.binary(min_size=16, max_size=16)
    if rtype in (rrtypes.TXT, rrtypes.SPF):
        return st.lists(cstring, min_size=1, max_size=3).map(b"".join)
    if rtype == rrtypes.NAPTR:
        return st.tuples(u16, u16, cstring, cstring, cstring, targets).map(b"".join)
    if rtype in (rrtypes.RRSIG, rrtypes.SIG):
        return st.tuples(st.binary(min_size=18, max_size=18), targets, st.binary(max_size=8)).map(b"".join)
    if rtype == rrtypes.NSEC:
        return st.tuples(targets, st.sampled_from([b"", b"\x00\x01\x40", b"\x00\x06\x40\x01\x00\x00\x00\x03"])
                         ).map(b"".join)
    if rtype == rrtypes.HINFO:
        return st.tuples(cstring, cstring).map(b"".join)
    if rtype in (rrtypes.DS, rrtypes.CDS):
        return st.tuples(u16, st.sampled_from([b"\x08\x02" + bytes(32), b"\x0d\x04" + bytes(48),
                                              b"\x08\x09\x01\x02"])).map(b"".join)
    if rtype == rrtypes.CAA:
        return st.tuples(st.binary(min_size=1, max_size=1), st.sampled_from([b"\x05issue", b"\x05iodef"]),
                         st.binary(max_size=10)).map(b"".join)
    if rtype in (rrtypes.SVCB, rrtypes.HTTPS):
        return st.tuples(st.sampled_from([b"\x00\x00", b"\x00\x01"]), targets).map(b"".join)
    if rtype == rrtypes.NSEC3PARAM:
        return st.binary(max_size=4).map(lambda salt: b"\x01\x00\x00\x0a" + bytes((len(salt),)) + salt)
    if rtype == rrtypes.NSEC3:
        return st.binary(min_size=1, max_size=20).map(
            lambda h: b"\x01\x00\x00\x0a\x00" + bytes((len(h),)) + h + b"\x00\x01\x62")
    minimum = {rrtypes.SOA: 22, rrtypes.ZONEMD: 18, rrtypes.URI: 5, rrtypes.CERT: 5, rrtypes.WKS: 5,
               rrtypes.DNSKEY: 4, rrtypes.CDNSKEY: 4, rrtypes.KEY: 4, rrtypes.SSHFP: 2}.get(rtype, 0)
    return st.binary(min_size=minimum, max_size=minimum + 24)


valid_records = st.sampled_from(KNOWN).flatmap(lambda t: st.tuples(owners, st.just(t), _valid(t)))
any_records = st.tuples(owners, st.sampled_from(KNOWN + UNKNOWN), st.binary(max_size=24))
# Mostly records built to be valid, plus up to two of arbitrary bytes (usually refused), shuffled.
zones = st.tuples(st.lists(valid_records, max_size=12), st.lists(any_records, max_size=2)).flatmap(
    lambda parts: st.permutations(parts[0] + parts[1]))


def _rr(owner: bytes, rtype: int, rdata: bytes) -> bytes:
    return owner + struct.pack("!HHIH", rtype, 1, 300, len(rdata)) + rdata


def _axfr(body: list[tuple[bytes, int, bytes]]) -> Zone | None:
    """The zone AXFR accepts from *body* (between the two SOAs, in two messages), or None."""
    stream = [_rr(ORIGIN, rrtypes.SOA, SOA), _rr(ORIGIN, rrtypes.NS, APEX_NS)]
    stream += [_rr(o, t, r) for o, t, r in body]
    stream.append(_rr(ORIGIN, rrtypes.SOA, SOA))
    half = len(stream) // 2
    consumer = AxfrConsumer(ORIGIN, ID, max_records=1000)
    try:
        for i, part in enumerate((stream[:half], stream[half:])):
            q = ORIGIN + struct.pack("!HH", rrtypes.AXFR, 1) if i == 0 else b""
            consumer.feed(struct.pack("!6H", ID, 0x8400, 1 if i == 0 else 0, len(part), 0, 0) + q
                          + b"".join(part))
        return consumer.result()
    except TransferError:
        return None


def _zone_file(body: list[tuple[bytes, int, bytes]]) -> str:
    """The records as the on-disk copy writes them: type-specific text, else RFC 3597 generic."""
    lines = [format_record(ORIGIN, rrtypes.SOA, 300, SOA), format_record(ORIGIN, rrtypes.NS, 300, APEX_NS)]
    lines += [format_record(o, t, 300, r) for o, t, r in body]
    return "\n".join(lines) + "\n"


def _questions(zone: Zone) -> list[tuple[str, int]]:
    asked = {(names.to_text(owner), rtype) for owner, rtype, _ttl, _rdata in zone.records()}
    asked |= {(name, qtype) for name in NONEXISTENT for qtype in (rrtypes.A, rrtypes.ANY)}
    asked |= {(names.to_text(owner), rrtypes.ANY) for owner, _t, _l, _r in zone.records()}
    return sorted(asked)


def _dnspython_refuses_some_rdata(zone: Zone) -> bool:
    """Whether the zone holds rdata that BIND (and so secondns, see rrtypes) takes but dnspython
    will not parse even alone: DS digest type 0, ZONEMD scheme 0, SVCB parameters in AliasMode..."""
    for _owner, rtype, _ttl, rdata in zone.records():
        try:
            dns.rdata.from_wire(dns.rdataclass.IN, rtype, rdata, 0, len(rdata))
        except dns.exception.FormError:
            return True
    return False


def _ask_all(responder: Responder, zone: Zone) -> int:
    """Every question over UDP (no EDNS, and EDNS with DO) and TCP; each response parses.

    Unless the zone holds rdata dnspython refuses by itself: then a response that dnspython does
    not parse is still an answer to the query, its header checked.
    """
    asked = 0
    lenient = _dnspython_refuses_some_rdata(zone)
    for name, qtype in _questions(zone):
        for transport, edns, do in ((UDP, -1, False), (UDP, 0, True), (TCP, 0, False)):
            query = dns.message.make_query(name, qtype, use_edns=edns, want_dnssec=do, payload=1232)
            query.flags &= ~dns.flags.RD
            wire = responder.respond(query.to_wire(), transport, ("127.0.0.1", 5300))
            assert wire is not None, (name, qtype)
            try:
                reply = dns.message.from_wire(wire)
            except dns.exception.FormError:
                if not lenient:
                    raise
                assert struct.unpack_from("!H", wire)[0] == query.id and wire[2] & 0x80, (name, qtype)
                asked += 1
                continue
            assert reply.id == query.id
            asked += 1
    return asked


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(zones)
def test_what_axfr_accepts_is_served(body: list[tuple[bytes, int, bytes]]) -> None:
    zone = _axfr(body)
    if zone is not None:
        assert _ask_all(responder_for(zone), zone) > 0


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(zones)
def test_what_the_zone_file_reader_accepts_is_served(body: list[tuple[bytes, int, bytes]]) -> None:
    try:
        zone = load_zone_text(_zone_file(body), ORIGIN)
    except ZoneFileError:
        return
    assert _ask_all(responder_for(zone), zone) > 0


def test_both_readers_accept_the_same_records() -> None:
    """The two ingest paths agree, so the property above covers one rule, not two."""
    probe = [(ORIGIN, rrtypes.MX, b""), (ORIGIN, rrtypes.TXT, b"\x01a"),
             (names.from_text("a.prop.test."), 65280, b""), (ORIGIN, rrtypes.A, b"\x01")]
    for record in probe:
        via_axfr = _axfr([record]) is not None
        try:
            load_zone_text(_zone_file([record]), ORIGIN)
            via_file = True
        except ZoneFileError:
            via_file = False
        assert via_axfr == via_file == (rrtypes.check_rdata(record[1], record[2]) is None), record


# --------------------------------------------------------------------------
# live: a real secondns serving an accepted zone file, queried over UDP and TCP

LIVE_ZONE = """$ORIGIN prop.test.
$TTL 300
@ SOA ns1 hostmaster 7 3600 600 86400 300
@ NS ns1
@ MX 10 mail
@ TXT "v=spf1 -all" "second string"
ns1 A 192.0.2.1
mail A 192.0.2.25
mail AAAA 2001:db8::25
www CNAME mail
_sip._tcp SRV 10 20 5060 mail
*.wild A 192.0.2.99
ptr PTR mail.prop.test.
alias DNAME elsewhere.example.
gen TYPE65280 \\# 3 010203
gen2 MX \\# 7 000A 03 6e7331 00
sub NS ns.sub
ns.sub A 192.0.2.53
caa CAA 0 issue "ca.example"
hinfo HINFO "cpu" "os"
"""


@pytest.mark.integration
def test_live_server_answers_every_question_of_an_accepted_zone(tmp_path: Path) -> None:
    zone = load_zone_text(LIVE_ZONE, ORIGIN)  # the reader accepts it...
    questions = [*_questions(zone), ("x.wild.prop.test.", rrtypes.A), ("a.alias.prop.test.", rrtypes.A)]
    sec = Secondns(tmp_path, zone_files={"prop.test": LIVE_ZONE})
    sec.start()
    try:
        for name, qtype in questions:  # ...and the server answers every question, both ways
            query = dns.message.make_query(name, qtype, use_edns=0, payload=1232)
            query.flags &= ~dns.flags.RD
            udp = dns.query.udp(query, LOOPBACK, port=sec.port, timeout=3)
            tcp = dns.query.tcp(query, LOOPBACK, port=sec.port, timeout=3)
            assert udp.rcode() == tcp.rcode(), (name, qtype)
            if qtype != rrtypes.ANY:  # RFC 8482: ANY over UDP is answered with one RRset
                assert sorted(map(str, udp.answer)) == sorted(map(str, tcp.answer)), (name, qtype)
            if name.startswith("gen2"):
                assert dns.rdatatype.MX in {rrset.rdtype for rrset in udp.answer}
    finally:
        sec.stop()
