"""ISC's EDNS compliance checks (``genreport`` from ednscomp), against secondns and BIND 9.18.

Each check sends the query genreport sends, to a live secondns and a live ``named`` serving the
same zone, and asserts both what genreport calls compliant and that our reply matches BIND's on
rcode, header flags, opcode, question count, EDNS version, EDNS flags, payload size and the
options echoed.  Three option differences are allowed, because secondns does not implement
these options in answers and RFC 6891 6.1.2 has a responder ignore options it does not
implement: COOKIE (BIND returns a server cookie, RFC 7873), ECS (BIND echoes the client subnet,
RFC 7871) and EXPIRE (BIND, primary for the zone, returns the SOA expire, RFC 7314).  NSID is
compared: BIND is given the same server-id as secondns's identity.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype
import pytest
from peers import Bind, Secondns, ZoneSpec, soa_zone_text

pytestmark = pytest.mark.integration

ZONE = "genreport.test."
IDENTITY = "secondns-test"
COOKIE, ECS, NSID, EXPIRE = 10, 8, 3, 9
IGNORED_OPTIONS = {COOKIE, ECS, EXPIRE}  # see the module docstring
CLIENT_COOKIE = bytes.fromhex("0102030405060708")


@dataclass(frozen=True)
class Reply:
    """What genreport looks at in a reply, comparable between two servers."""

    rcode: int  # extended (BADVERS is 16)
    flags: int  # the 16 header flag bits minus the rcode and opcode
    opcode: int
    qdcount: int
    ancount: int
    edns: int  # -1 without OPT
    ednsflags: int  # the 16 flag bits of the OPT TTL (DO and the rest)
    payload: int
    options: frozenset[int]  # option codes echoed, COOKIE and ECS left out

    @classmethod
    def parse(cls, wire: bytes) -> tuple[Reply, dns.message.Message]:
        msg = dns.message.from_wire(wire)
        _, flags, qd, an, _, _ = struct.unpack_from("!HHHHHH", wire)
        codes = frozenset(int(o.otype) for o in msg.options) - IGNORED_OPTIONS
        reply = cls(msg.rcode(), flags & 0x87F0, msg.opcode(), qd, an, msg.edns,
                    msg.ednsflags & 0xFFFF if msg.edns >= 0 else 0,
                    msg.payload if msg.edns >= 0 else 0, codes)
        return reply, msg


def exchange(port: int, wire: bytes, tcp: bool) -> bytes:
    """One message and its reply, with no client-side validation (the reply may lack a question)."""
    if tcp:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
            sock.sendall(struct.pack("!H", len(wire)) + wire)
            data = b""
            while len(data) < 2 or len(data) < 2 + struct.unpack_from("!H", data)[0]:  # bounded: timeout
                chunk = sock.recv(65535)
                if not chunk:
                    raise ConnectionError("connection closed before the reply")
                data += chunk
            return data[2:2 + struct.unpack_from("!H", data)[0]]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(3)
        sock.sendto(wire, ("127.0.0.1", port))
        return sock.recv(65535)


def query(qtype: str | int = "SOA", *, edns: int = -1, payload: int = 4096, ednsflags: int = 0,
          do: bool = False, options: list[dns.edns.Option] | None = None, opcode: int = 0,
          header_flags: int = 0) -> bytes:
    msg = dns.message.make_query(ZONE, qtype, use_edns=edns, payload=payload, ednsflags=ednsflags,
                                 want_dnssec=do, options=options)
    msg.flags &= ~dns.flags.RD  # genreport queries an authoritative without RD
    msg.flags |= header_flags
    msg.id = 4242
    if opcode:
        msg.set_opcode(opcode)
    return msg.to_wire()


def opt(code: int, data: bytes = b"") -> dns.edns.Option:
    return dns.edns.GenericOption(code, data)


def compliant_plain(r: Reply, m: dns.message.Message) -> None:
    assert r.rcode == dns.rcode.NOERROR and r.flags & dns.flags.AA and r.ancount == 1 and r.edns == -1


def compliant_edns(r: Reply, m: dns.message.Message) -> None:
    assert r.rcode == dns.rcode.NOERROR and r.flags & dns.flags.AA and r.ancount == 1
    assert r.edns == 0 and r.ednsflags == 0 and not r.options


def compliant_badvers(r: Reply, m: dns.message.Message) -> None:
    # RFC 6891 6.1.3: BADVERS, with the highest version we speak, and nothing unknown echoed.
    assert r.rcode == dns.rcode.BADVERS and r.edns == 0 and r.ancount == 0
    assert r.ednsflags == 0 and not r.options


def compliant_do(r: Reply, m: dns.message.Message) -> None:
    assert r.rcode == dns.rcode.NOERROR and r.edns == 0 and r.ednsflags == dns.flags.DO


def compliant_edns_with_nsid(r: Reply, m: dns.message.Message) -> None:
    assert r.rcode == dns.rcode.NOERROR and r.edns == 0 and r.ednsflags == 0
    assert r.options == {NSID}
    assert next(o for o in m.options if o.otype == NSID).to_wire() == IDENTITY.encode()


def compliant_notimp(r: Reply, m: dns.message.Message) -> None:
    assert r.rcode == dns.rcode.NOTIMP and r.opcode == 15 and r.qdcount == 0 and r.ancount == 0
    assert not r.flags & (dns.flags.AA | dns.flags.RD | dns.flags.CD | dns.flags.AD)


def compliant_notimp_edns(r: Reply, m: dns.message.Message) -> None:
    compliant_notimp(r, m)
    assert r.edns == 0


def compliant_nodata(r: Reply, m: dns.message.Message) -> None:
    assert r.rcode == dns.rcode.NOERROR and r.flags & dns.flags.AA and r.ancount == 0
    assert [rr.rdtype for rr in m.authority] == [dns.rdatatype.SOA]


def compliant_nodata_edns(r: Reply, m: dns.message.Message) -> None:
    compliant_nodata(r, m)
    assert r.edns == 0 and r.ednsflags == 0 and not r.flags & dns.flags.TC


def compliant_zflag(r: Reply, m: dns.message.Message) -> None:
    compliant_edns(r, m)
    assert not r.flags & 0x0040  # RFC 1035 4.1.1: Z must be zero in all responses


Check = tuple[bytes, bool, Callable[[Reply, dns.message.Message], None]]

# name -> (query, over TCP, what genreport accepts)
CHECKS: dict[str, Check] = {
    "dns": (query(), False, compliant_plain),
    "aa": (query(), False, compliant_plain),
    "edns": (query(edns=0), False, compliant_edns),
    "edns1": (query(edns=1), False, compliant_badvers),
    "edns@512": (query("DNSKEY", edns=0, payload=512), False, compliant_nodata_edns),
    "ednsopt": (query(edns=0, options=[opt(100)]), False, compliant_edns),
    "edns1opt": (query(edns=1, options=[opt(100)]), False, compliant_badvers),
    "do": (query(edns=0, do=True), False, compliant_do),
    "ednsflags": (query(edns=0, ednsflags=0x80), False, compliant_edns),  # unknown flag: cleared
    "edns1flags": (query(edns=1, ednsflags=0x80, options=[opt(100)]), False, compliant_badvers),
    "optlist": (query(edns=0, options=[opt(NSID), opt(ECS, bytes.fromhex("00011800c00002")), opt(EXPIRE),
                                       opt(COOKIE, CLIENT_COOKIE)]),
                False, compliant_edns_with_nsid),
    "nsid": (query(edns=0, options=[opt(NSID)]), False, compliant_edns_with_nsid),
    "docookie": (query(edns=0, options=[opt(COOKIE, CLIENT_COOKIE)]), False, compliant_edns),
    "zflag": (query(edns=0, header_flags=0x0040), False, compliant_zflag),
    "opcode": (query(opcode=15), False, compliant_notimp),
    "opcodeflg": (query(opcode=15, header_flags=dns.flags.RD | dns.flags.CD | dns.flags.AD), False,
                  compliant_notimp),
    "opcode+edns": (query(edns=0, opcode=15), False, compliant_notimp_edns),
    "type666": (query(666), False, compliant_nodata),
    "type666+edns": (query(666, edns=0), False, compliant_nodata),
    "tcp": (query(), True, compliant_plain),
    "ednstcp": (query(edns=0), True, compliant_edns),
    "edns512tcp": (query("DNSKEY", edns=0, payload=512), True, compliant_nodata_edns),
    "opcodetcp": (query(opcode=15), True, compliant_notimp),
}


@dataclass
class Servers:
    bind: Bind
    ours: Secondns


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    base: Path = tmp_path_factory.mktemp("genreport")
    text = soa_zone_text(ZONE)
    with Bind(base / "bind", [ZoneSpec(ZONE, text)], options=[f'server-id "{IDENTITY}";']) as bind, \
            Secondns(base / "ours", zone_files={ZONE: text}, identity=IDENTITY, http=True) as ours:
        yield Servers(bind, ours)


@pytest.mark.parametrize("name", list(CHECKS))
def test_genreport_check_is_compliant_and_matches_bind(servers: Servers, name: str) -> None:
    wire, tcp, compliant = CHECKS[name]
    theirs, their_msg = Reply.parse(exchange(servers.bind.port, wire, tcp))
    ours, our_msg = Reply.parse(exchange(servers.ours.port, wire, tcp))
    compliant(theirs, their_msg)  # the reference passes genreport's check itself
    compliant(ours, our_msg)
    assert ours == theirs, f"{name}:\n  bind: {theirs}\n  ours: {ours}"


def test_options_left_out_of_the_comparison_are_the_ones_bind_returns(servers: Servers) -> None:
    """Keep the allowance honest: BIND returns COOKIE, ECS and EXPIRE; we return COOKIE (RFC 7873)
    and EXPIRE (RFC 7314) too, never ECS (an authoritative server without ECS support omits it,
    RFC 7871 7.2.1); COOKIE and EXPIRE values differ per server, so they stay out of the comparison."""
    wire = query(edns=0, options=[opt(ECS, bytes.fromhex("00011800c00002")), opt(COOKIE, CLIENT_COOKIE),
                                  opt(EXPIRE)])
    theirs = dns.message.from_wire(exchange(servers.bind.port, wire, False))
    ours = dns.message.from_wire(exchange(servers.ours.port, wire, False))
    assert {int(o.otype) for o in theirs.options} == IGNORED_OPTIONS
    assert {int(o.otype) for o in ours.options} == {COOKIE, EXPIRE}
