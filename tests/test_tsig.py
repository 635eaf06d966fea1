"""TSIG (RFC 8945) against an independent implementation: dnspython's dns.tsig.

Whatever we sign, dnspython verifies; whatever dnspython signs (single
responses, multi-message streams, streams signed only every third message),
we verify.  Every failure test also checks that the secret appears nowhere
in the exception.
"""

from __future__ import annotations

import base64
import dataclasses
import hmac
import struct
import time
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.rrset
import dns.tsig
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secondns import names, rrtypes
from secondns.config import TsigKey
from secondns.errors import TransferError
from secondns.transfer.tsig import (
    ALGORITHMS,
    BADKEY,
    BADSIG,
    BADTIME,
    MAX_UNSIGNED,
    StreamVerifier,
    TsigError,
    VerifiedRequest,
    error_response,
    keyring,
    parse_tsig_rdata,
    sign_request,
    sign_response,
    unsigned_error_tsig,
    verify_request,
    verify_response,
)
from secondns.transfer.xfrin import AxfrConsumer, make_query, parse_message

ORIGIN_TEXT = "example.com."
ORIGIN = names.from_text(ORIGIN_TEXT)
SECRET = b"TopSecret-0123456789-abcdefghij!"
KEY = TsigKey("xfr-key", "hmac-sha256", SECRET)
NOW = 1_700_000_000
SOA_TEXT = "ns1.example.com. hostmaster.example.com. 2024010101 7200 3600 1209600 300"


def secret_forms(secret: bytes) -> list[str]:
    return [secret.decode("latin-1"), base64.b64encode(secret).decode(), secret.hex(), repr(secret)]


def assert_no_secret(exc: BaseException, secret: bytes = SECRET) -> None:
    text = str(exc) + repr(exc) + repr(getattr(exc, "request", None))
    for form in secret_forms(secret):
        assert form not in text


def dns_key(key: TsigKey) -> dns.tsig.Key:
    """The same key as dnspython sees it."""
    return dns.tsig.Key(key.name + ".", key.secret, names.to_text(ALGORITHMS[key.algorithm].wire))


@pytest.fixture
def frozen_dnspython(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    """Fix the clock dnspython signs and verifies with."""

    def freeze(at: int) -> None:
        monkeypatch.setattr(dns.message, "time", SimpleNamespace(time=lambda: float(at)))

    freeze(NOW)
    return freeze


def signed_query(key: TsigKey = KEY, qtype: int = rrtypes.SOA, msg_id: int = 4242,
                 now: float = NOW) -> tuple[bytes, bytes]:
    return sign_request(make_query(ORIGIN, qtype, msg_id, edns=False), key, now=now)


def rrset(text: str) -> dns.rrset.RRset:
    owner, ttl, cls, rtype, rdata = text.split(maxsplit=4)
    return dns.rrset.from_text(owner, int(ttl), cls, rtype, rdata)


def dnspython_query(wire: bytes, key: TsigKey = KEY) -> dns.message.Message:
    """Our signed request as the primary (dnspython) receives and verifies it."""
    return dns.message.from_wire(wire, keyring={dns.name.from_text(key.name + "."): dns_key(key)})


def response_to(query: dns.message.Message, records: list[str], *, signed: bool,
                first: bool) -> dns.message.Message:
    """One response message; *signed* ones inherit the query's TSIG key via make_response."""
    r = dns.message.make_response(query)
    r.flags |= dns.flags.AA
    if not signed:
        r.tsig = None
    if not first:
        r.question = []
    for rec in records:
        r.answer.append(rrset(rec))
    return r


def dnspython_stream(query: dns.message.Message, chunks: list[list[str]],
                     signed: Callable[[int], bool]) -> list[bytes]:
    """An AXFR stream signed the RFC 8945 5.3.1 way by dnspython.

    Unsigned messages are fed into dnspython's running TSIG context by hand,
    which is what its (multi=True) verifier does on receipt.
    """
    out: list[bytes] = []
    ctx = None
    for i, chunk in enumerate(chunks):
        r = response_to(query, chunk, signed=signed(i), first=i == 0)
        if signed(i):
            wire = r.to_wire(multi=True, tsig_ctx=ctx)
            ctx = r.tsig_ctx
        else:
            wire = r.to_wire()
            assert ctx is not None
            ctx.update(wire)
        out.append(wire)
    return out


def zone_chunks(n: int) -> list[list[str]]:
    """*n* messages of an AXFR: SOA, some A records, SOA."""
    recs = [f"{ORIGIN_TEXT} 3600 IN SOA {SOA_TEXT}", f"{ORIGIN_TEXT} 3600 IN NS ns1.{ORIGIN_TEXT}"]
    recs += [f"h{i}.{ORIGIN_TEXT} 300 IN A 192.0.2.{i % 250 + 1}" for i in range(3 * n)]
    per = len(recs) // n + 1
    chunks = [recs[i * per:(i + 1) * per] for i in range(n)]
    chunks[-1].append(f"{ORIGIN_TEXT} 3600 IN SOA {SOA_TEXT}")
    assert all(chunks)
    return chunks


def verify_all(wires: list[bytes], request_mac: bytes, key: TsigKey = KEY,
               now: float = NOW) -> StreamVerifier:
    verifier = StreamVerifier(key, request_mac, now_fn=lambda: now)
    for wire in wires:
        verifier.verify(wire, parse_message(wire))
    verifier.finish()
    return verifier


def dnspython_accepts_stream(wires: list[bytes], query: dns.message.Message) -> None:
    """Fixture sanity: dnspython's own multi-message verifier accepts the stream."""
    ctx = None
    for wire in wires:
        m = dns.message.from_wire(wire, keyring=query.keyring, request_mac=query.mac,
                                  tsig_ctx=ctx, multi=True)
        ctx = m.tsig_ctx


def replace_tsig(wire: bytes, **changes: Any) -> bytes:
    """*wire* with fields of its TSIG RR replaced (MAC left as is unless given)."""
    msg = parse_message(wire)
    assert msg.tsig is not None
    rr = parse_tsig_rdata(msg.tsig.name, msg.tsig.rdata)
    return wire[:msg.tsig.offset] + dataclasses.replace(rr, **changes).to_wire()


def rfc_response_mac(wire: bytes, request_mac: bytes, secret: bytes = SECRET) -> bytes:
    """HMAC-SHA256 of a signed response computed straight from RFC 8945 4.3.1/4.3.3.

    dnspython refuses to verify a response whose TSIG error is set, so the
    BADTIME answer's MAC is checked against this spelled-out digest instead.
    """
    msg = parse_message(wire)
    assert msg.tsig is not None
    rdata = msg.tsig.rdata
    alg_end = names.read_name(rdata, 0)[1]
    mac_size = struct.unpack_from("!H", rdata, alg_end + 8)[0]
    after_mac = alg_end + 10 + mac_size
    original_id = rdata[after_mac:after_mac + 2]
    arcount = struct.unpack_from("!H", wire, 10)[0] - 1
    body = original_id + wire[2:10] + struct.pack("!H", arcount) + wire[12:msg.tsig.offset]
    variables = (msg.tsig.name.lower() + struct.pack("!HI", 255, 0) + rdata[:alg_end].lower()
                 + rdata[alg_end:alg_end + 8] + rdata[after_mac + 2:])
    prefix = struct.pack("!H", len(request_mac)) + request_mac
    return hmac.new(secret, prefix + body + variables, "sha256").digest()


def raises_tsig(reason: str, fn: Callable[[], object], match: str | None = None,
                secret: bytes = SECRET) -> TsigError:
    with pytest.raises(TsigError, match=match) as info:
        fn()
    assert info.value.reason == reason
    assert isinstance(info.value, TransferError)
    assert_no_secret(info.value, secret)
    return info.value


# --------------------------------------------------------------------------
# Our requests, dnspython verifies


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_signed_request_verifies_with_dnspython(algorithm: str, frozen_dnspython: object) -> None:
    key = TsigKey("xfr-key", algorithm, SECRET)
    wire, mac = signed_query(key)
    q = dnspython_query(wire, key)
    assert q.had_tsig
    assert q.mac == mac
    assert len(mac) == ALGORITHMS[algorithm].size
    assert q.keyalgorithm == dns.name.from_text(names.to_text(ALGORITHMS[algorithm].wire))


def test_signed_request_keeps_the_message_and_bumps_arcount() -> None:
    unsigned = make_query(ORIGIN, rrtypes.AXFR, 7)
    wire, _mac = sign_request(unsigned, KEY, now=NOW)
    assert wire.startswith(unsigned[:10])
    assert struct.unpack_from("!H", wire, 10)[0] == struct.unpack_from("!H", unsigned, 10)[0] + 1
    msg = parse_message(wire)
    assert msg.tsig is not None and msg.tsig.offset == len(unsigned)
    assert msg.tsig.name == names.from_text("xfr-key.")
    rr = parse_tsig_rdata(msg.tsig.name, msg.tsig.rdata)
    assert (rr.time_signed, rr.fudge, rr.original_id, rr.error) == (NOW, 300, 7, 0)
    assert rr.algorithm == names.from_text("hmac-sha256.")


def test_md5_uses_its_historic_algorithm_name() -> None:
    wire, _ = signed_query(TsigKey("k", "hmac-md5", SECRET))
    msg = parse_message(wire)
    assert msg.tsig is not None
    assert msg.tsig.rdata.startswith(names.from_text("hmac-md5.sig-alg.reg.int."))


def test_unknown_algorithm_is_a_value_error_without_the_secret() -> None:
    with pytest.raises(ValueError, match="unsupported algorithm 'hmac-sha3'") as info:
        signed_query(TsigKey("k", "hmac-sha3", SECRET))
    assert_no_secret(info.value)


# --------------------------------------------------------------------------
# dnspython's responses, we verify


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_dnspython_signed_response_verifies(algorithm: str, frozen_dnspython: object) -> None:
    key = TsigKey("xfr-key", algorithm, SECRET)
    wire, mac = signed_query(key)
    r = response_to(dnspython_query(wire, key), [f"{ORIGIN_TEXT} 3600 IN SOA {SOA_TEXT}"],
                    signed=True, first=True)
    v = verify_all([r.to_wire()], mac, key)
    assert (v.messages, v.signed) == (1, 1)


def test_verify_response_checks_a_lone_reply(frozen_dnspython: object) -> None:
    wire, mac = signed_query()
    r = response_to(dnspython_query(wire), [f"{ORIGIN_TEXT} 3600 IN SOA {SOA_TEXT}"], signed=True, first=True)
    verify_response(r.to_wire(), KEY, mac, now=NOW)
    raises_tsig("BADSIG", lambda: verify_response(r.to_wire(), KEY, b"\x00" * 32, now=NOW))


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_fully_signed_stream_verifies(algorithm: str, frozen_dnspython: object) -> None:
    key = TsigKey("xfr-key", algorithm, SECRET)
    wire, mac = signed_query(key, rrtypes.AXFR)
    q = dnspython_query(wire, key)
    wires = dnspython_stream(q, zone_chunks(5), lambda i: True)
    dnspython_accepts_stream(wires, q)
    v = verify_all(wires, mac, key)
    assert (v.messages, v.signed) == (5, 5)


def test_stream_signed_every_third_message_verifies(frozen_dnspython: object) -> None:
    wire, mac = signed_query(qtype=rrtypes.AXFR)
    q = dnspython_query(wire)
    wires = dnspython_stream(q, zone_chunks(7), lambda i: i % 3 == 0)
    dnspython_accepts_stream(wires, q)
    assert [parse_message(w).tsig is not None for w in wires] == [True, False, False] * 2 + [True]
    v = verify_all(wires, mac)
    assert (v.messages, v.signed) == (7, 3)


def test_verifier_drives_an_axfr_consumer(frozen_dnspython: object) -> None:
    wire, mac = signed_query(qtype=rrtypes.AXFR)
    wires = dnspython_stream(dnspython_query(wire), zone_chunks(4), lambda i: i != 1)
    verifier = StreamVerifier(KEY, mac, now_fn=lambda: NOW)
    consumer = AxfrConsumer(ORIGIN, 4242, max_records=10_000, on_message=verifier.verify)
    assert [consumer.feed(w) for w in wires] == [False, False, False, True]
    verifier.finish()
    assert consumer.result() is not None


def test_truncated_mac_at_the_floor_is_accepted(frozen_dnspython: object) -> None:
    wire, mac = signed_query()
    r = response_to(dnspython_query(wire), [f"{ORIGIN_TEXT} 3600 IN SOA {SOA_TEXT}"], signed=True, first=True)
    full = r.to_wire()
    full_mac = r.mac
    assert full_mac is not None
    # RFC 8945 5.2.2.1: HMAC-SHA256 may be truncated to max(10, 32/2) = 16 octets.
    verify_all([replace_tsig(full, mac=full_mac[:16])], mac)
    raises_tsig("FORMERR", lambda: verify_all([replace_tsig(full, mac=full_mac[:15])], mac),
                match="MAC of 15 octets; accepted are 16..32")


# --------------------------------------------------------------------------
# Client-side failures


def soa_response(frozen: Callable[[int], None] | None = None, *, at: int = NOW,
                 key: TsigKey = KEY) -> tuple[bytes, bytes]:
    """(dnspython's signed SOA response, our request MAC), signed at time *at*."""
    wire, mac = signed_query()
    q = dnspython_query(wire)
    if frozen is not None:
        frozen(at)
    r = response_to(q, [f"{ORIGIN_TEXT} 3600 IN SOA {SOA_TEXT}"], signed=False, first=True)
    r.use_tsig(dns_key(key))
    r.request_mac = mac
    return r.to_wire(), mac


def test_tampered_byte_is_badsig(frozen_dnspython: object) -> None:
    resp, mac = soa_response()
    msg = parse_message(resp)
    assert msg.tsig is not None
    # The SOA's TTL (after owner pointer 2, type 2, class 2): still parses, no longer verifies.
    ttl_at = resp.index(b"\xc0\x0c\x00\x06\x00\x01") + 9
    tampered = resp[:ttl_at] + bytes([resp[ttl_at] ^ 1]) + resp[ttl_at + 1:]
    raises_tsig("BADSIG", lambda: verify_all([tampered], mac), match="TSIG BADSIG: MAC does not verify")


def test_wrong_secret_is_badsig(frozen_dnspython: object) -> None:
    other = TsigKey("xfr-key", "hmac-sha256", b"another-secret-another-secret!!!")
    resp, mac = soa_response(key=other)
    err = raises_tsig("BADSIG", lambda: verify_all([resp], mac))
    assert_no_secret(err, other.secret)


def test_other_key_name_is_badkey(frozen_dnspython: object) -> None:
    resp, mac = soa_response(key=TsigKey("other", "hmac-sha256", SECRET))
    raises_tsig("BADKEY", lambda: verify_all([resp], mac),
                match=r"^TSIG BADKEY: response signed with key 'other\.' \(expected 'xfr-key\.'\)$")


def test_key_name_comparison_ignores_case(frozen_dnspython: object) -> None:
    resp, mac = soa_response(key=TsigKey("XFR-Key", "hmac-sha256", SECRET))
    verify_all([resp], mac)


def test_other_algorithm_is_badkey(frozen_dnspython: object) -> None:
    resp, mac = soa_response(key=TsigKey("xfr-key", "hmac-sha512", SECRET))
    raises_tsig("BADKEY", lambda: verify_all([resp], mac),
                match=r"algorithm 'hmac-sha512\.' \(expected 'hmac-sha256\.'\)")


@pytest.mark.parametrize(("skew", "text"), [(412, "412 s ahead of"), (-301, "301 s behind")])
def test_clock_skew_beyond_fudge_is_badtime(skew: int, text: str,
                                            frozen_dnspython: Callable[[int], None]) -> None:
    resp, mac = soa_response(frozen_dnspython, at=NOW + skew)
    raises_tsig("BADTIME", lambda: verify_all([resp], mac),
                match=rf"^TSIG BADTIME: primary's clock is {text} ours \(fudge 300\)$")


def test_clock_skew_within_fudge_is_accepted(frozen_dnspython: Callable[[int], None]) -> None:
    resp, mac = soa_response(frozen_dnspython, at=NOW - 300)
    verify_all([resp], mac)


def test_badtime_is_checked_after_the_mac(frozen_dnspython: Callable[[int], None]) -> None:
    """RFC 8945 5.2: a forged message must not learn our clock; BADSIG wins."""
    resp, _mac = soa_response(frozen_dnspython, at=NOW + 1000)
    raises_tsig("BADSIG", lambda: verify_all([resp], b"\x01" * 32))


def test_unsigned_first_message_is_rejected(frozen_dnspython: object) -> None:
    wire, mac = signed_query()
    r = response_to(dnspython_query(wire), [f"{ORIGIN_TEXT} 3600 IN SOA {SOA_TEXT}"],
                    signed=False, first=True)
    raises_tsig("UNSIGNED", lambda: verify_all([r.to_wire()], mac),
                match="TSIG UNSIGNED: the primary's response is not signed")


def test_unsigned_notauth_mentions_the_rcode(frozen_dnspython: object) -> None:
    wire, mac = signed_query()
    r = response_to(dnspython_query(wire), [], signed=False, first=True)
    r.set_rcode(dns.rcode.NOTAUTH)
    raises_tsig("UNSIGNED", lambda: verify_all([r.to_wire()], mac), match=r"\(it answered NOTAUTH\)")


def test_unsigned_last_message_fails_finish(frozen_dnspython: object) -> None:
    wire, mac = signed_query(qtype=rrtypes.AXFR)
    wires = dnspython_stream(dnspython_query(wire), zone_chunks(4), lambda i: i < 2)
    verifier = StreamVerifier(KEY, mac, now_fn=lambda: NOW)
    for w in wires:
        verifier.verify(w, parse_message(w))
    raises_tsig("UNSIGNED", verifier.finish, match="the last 2 message")


def test_finish_without_messages_fails() -> None:
    raises_tsig("UNSIGNED", StreamVerifier(KEY, b"m" * 32).finish)


def test_more_than_99_unsigned_messages_in_a_row_fail(frozen_dnspython: object) -> None:
    wire, mac = signed_query(qtype=rrtypes.AXFR)
    q = dnspython_query(wire)
    wires = dnspython_stream(q, [[f"h{i}.{ORIGIN_TEXT} 300 IN A 192.0.2.1"] for i in range(MAX_UNSIGNED + 2)],
                             lambda i: i == 0)
    verifier = StreamVerifier(KEY, mac, now_fn=lambda: NOW)
    for w in wires[:-1]:
        verifier.verify(w, parse_message(w))
    raises_tsig("UNSIGNED", lambda: verifier.verify(wires[-1], parse_message(wires[-1])),
                match="more than 99 unsigned messages")


def test_unsigned_message_tampered_in_a_stream_fails_at_next_signature(frozen_dnspython: object) -> None:
    wire, mac = signed_query(qtype=rrtypes.AXFR)
    wires = dnspython_stream(dnspython_query(wire), zone_chunks(4), lambda i: i != 1)
    wires[1] = wires[1][:-1] + bytes([wires[1][-1] ^ 1])  # last octet of an A record's address
    raises_tsig("BADSIG", lambda: verify_all(wires, mac), match="on message 3")


def test_reordered_stream_is_badsig(frozen_dnspython: object) -> None:
    wire, mac = signed_query(qtype=rrtypes.AXFR)
    wires = dnspython_stream(dnspython_query(wire), zone_chunks(3), lambda i: True)
    raises_tsig("BADSIG", lambda: verify_all([wires[0], wires[2], wires[1]], mac))


def test_tsig_class_must_be_any(frozen_dnspython: object) -> None:
    resp, mac = soa_response()
    msg = parse_message(resp)
    assert msg.tsig is not None
    at = msg.tsig.offset + len(msg.tsig.name) + 2
    bad = resp[:at] + b"\x00\x01" + resp[at + 2:]
    raises_tsig("FORMERR", lambda: verify_all([bad], mac), match="class 1 and TTL 0")


@pytest.mark.parametrize(("error", "name"), [(BADKEY, "BADKEY"), (BADSIG, "BADSIG")])
def test_primary_rejecting_our_tsig_is_reported(error: int, name: str) -> None:
    _wire, mac = signed_query()
    reply = unsigned_error_tsig(make_query(ORIGIN, rrtypes.SOA, 4242, edns=False),
                                names.from_text("xfr-key."), names.from_text("hmac-sha256."), error, now=NOW)
    err = raises_tsig(name, lambda: verify_all([reply], mac), match=f"^primary rejected our TSIG: {name}$")
    assert err.remote


def test_primary_badtime_reports_its_clock(frozen_dnspython: object) -> None:
    wire, mac = signed_query()
    q = dnspython_query(wire)
    r = dns.message.make_response(q, tsig_error=BADTIME)
    r.use_tsig(dns_key(KEY), tsig_error=BADTIME, other_data=struct.pack("!HI", 0, NOW - 600))
    r.request_mac = mac
    err = raises_tsig("BADTIME", lambda: verify_all([r.to_wire()], mac),
                      match=r"^primary rejected our TSIG: BADTIME \(primary's clock is 600 s behind ours\)$")
    assert err.remote


# --------------------------------------------------------------------------
# Server side: a signed NOTIFY from the primary


def dnspython_notify(key: TsigKey = KEY, msg_id: int = 99) -> dns.message.Message:
    n = dns.message.make_query(ORIGIN_TEXT, "SOA")
    n.id = msg_id
    n.set_opcode(dns.opcode.NOTIFY)
    n.flags = dns.flags.Flag(n.flags | dns.flags.AA) & ~dns.flags.RD
    n.answer.append(rrset(f"{ORIGIN_TEXT} 3600 IN SOA {SOA_TEXT}"))
    n.use_tsig(dns_key(key))
    return n


def notify_ack(request: bytes) -> bytes:
    """Our unsigned NOTIFY response: the header with QR|AA set and the question (RFC 1996 4.7)."""
    msg = parse_message(request)
    assert msg.question is not None
    flags = 0x8000 | (4 << 11) | 0x0400
    return struct.pack("!6H", msg.id, flags, 1, 0, 0, 0) + msg.question[0] + struct.pack(
        "!HH", msg.question[1], msg.question[2])


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_signed_notify_verifies_and_our_answer_verifies_in_dnspython(algorithm: str,
                                                                     frozen_dnspython: object) -> None:
    key = TsigKey("xfr-key", algorithm, SECRET)
    n = dnspython_notify(key)
    wire = n.to_wire()
    verified = verify_request(wire, key, now=NOW)
    assert verified.key is key and verified.mac == n.mac and verified.original_id == 99
    answer = sign_response(notify_ack(wire), key, verified.mac, now=NOW)
    reply = dns.message.from_wire(answer, keyring=n.keyring, request_mac=n.mac)
    assert reply.had_tsig and reply.tsig_error == 0


def test_verify_request_finds_the_key_in_a_keyring(frozen_dnspython: object) -> None:
    keys = keyring([TsigKey("a-key", "hmac-sha1", b"x" * 20), TsigKey("XFR-KEY", "hmac-sha256", SECRET)])
    verified = verify_request(dnspython_notify().to_wire(), keys, now=NOW)
    assert verified.key.name == "XFR-KEY"


def test_our_signed_request_verifies_with_our_verifier() -> None:
    wire, mac = signed_query(now=NOW)
    assert verify_request(wire, KEY, now=NOW + 10).mac == mac


def test_notify_with_unknown_key_is_badkey_answered_unsigned(frozen_dnspython: object) -> None:
    stranger = TsigKey("stranger", "hmac-sha256", b"s" * 32)
    n = dnspython_notify(stranger)
    wire = n.to_wire()
    err = raises_tsig("BADKEY", lambda: verify_request(wire, keyring([KEY]), now=NOW),
                      match=r"^TSIG BADKEY: request signed with unknown key 'stranger\.'$")
    answer = error_response(notify_ack(wire), err, now=NOW)
    assert answer[3] & 0xF == dns.rcode.NOTAUTH
    tsig = parse_message(answer).tsig
    assert tsig is not None and parse_tsig_rdata(tsig.name, tsig.rdata).mac == b""
    with pytest.raises(dns.tsig.PeerBadKey):
        dns.message.from_wire(answer, keyring=n.keyring, request_mac=n.mac)


def test_notify_with_other_expected_key_is_badkey(frozen_dnspython: object) -> None:
    wire = dnspython_notify(TsigKey("other", "hmac-sha256", SECRET)).to_wire()
    raises_tsig("BADKEY", lambda: verify_request(wire, KEY, now=NOW),
                match=r"key 'other\.' \(expected 'xfr-key\.'\)")


def test_tampered_notify_is_badsig_answered_unsigned(frozen_dnspython: object) -> None:
    n = dnspython_notify()
    wire = bytearray(n.to_wire())
    wire[3] ^= 0x10  # CD bit: the header is covered by the MAC like everything else
    err = raises_tsig("BADSIG", lambda: verify_request(bytes(wire), KEY, now=NOW))
    answer = error_response(notify_ack(bytes(wire)), err, now=NOW)
    assert answer[3] & 0xF == dns.rcode.NOTAUTH
    with pytest.raises(dns.tsig.PeerBadSignature):
        dns.message.from_wire(answer, keyring=n.keyring, request_mac=n.mac)


def test_notify_with_skewed_clock_is_badtime_answered_signed(
        frozen_dnspython: Callable[[int], None]) -> None:
    frozen_dnspython(NOW - 412)
    n = dnspython_notify()
    wire = n.to_wire()
    request_mac = n.mac
    assert request_mac is not None
    err = raises_tsig("BADTIME", lambda: verify_request(wire, KEY, now=NOW),
                      match=r"^TSIG BADTIME: sender's clock is 412 s behind ours \(fudge 300\)$")
    assert isinstance(err.request, VerifiedRequest)
    assert "secret=<hidden>" in repr(err.request)
    answer = error_response(notify_ack(wire), err, now=NOW)
    assert answer[3] & 0xF == dns.rcode.NOTAUTH
    tsig = parse_message(answer).tsig
    assert tsig is not None
    rr = parse_tsig_rdata(tsig.name, tsig.rdata)
    # RFC 8945 5.2.3: the request's Time Signed, our clock in Other Data, and a real MAC.
    assert (rr.error, rr.time_signed, rr.other) == (BADTIME, NOW - 412, struct.pack("!HI", 0, NOW))
    assert rr.mac == rfc_response_mac(answer, request_mac)
    with pytest.raises(dns.tsig.PeerBadTime):
        dns.message.from_wire(answer, keyring=n.keyring, request_mac=n.mac)
    # Our own client side reads the primary's clock from it.
    client_err = raises_tsig("BADTIME", lambda: verify_all([answer], request_mac, now=NOW - 412))
    assert "412 s ahead of ours" in str(client_err)


def test_unsigned_notify_is_unsigned_and_refused() -> None:
    wire = make_query(ORIGIN, rrtypes.SOA, 5, opcode=4, edns=False)
    err = raises_tsig("UNSIGNED", lambda: verify_request(wire, KEY, now=NOW), match="request is not signed")
    assert error_response(notify_ack(wire), err)[3] & 0xF == dns.rcode.REFUSED


def test_garbled_tsig_rdata_is_formerr(frozen_dnspython: object) -> None:
    wire = dnspython_notify().to_wire()
    msg = parse_message(wire)
    assert msg.tsig is not None
    # Cut the RDLENGTH by one: the RR no longer matches its declared fields.
    rdlen_at = msg.tsig.offset + len(msg.tsig.name) + 8
    (rdlen,) = struct.unpack_from("!H", wire, rdlen_at)
    bad = wire[:rdlen_at] + struct.pack("!H", rdlen - 1) + wire[rdlen_at + 2:-1]
    err = raises_tsig("FORMERR", lambda: verify_request(bad, KEY, now=NOW))
    assert error_response(notify_ack(wire), err)[3] & 0xF == dns.rcode.FORMERR


def test_error_response_refuses_remote_errors() -> None:
    with pytest.raises(ValueError):
        error_response(b"\x00" * 12, TsigError("BADKEY", "primary rejected our TSIG: BADKEY", remote=True))


# --------------------------------------------------------------------------
# Properties


def _flip_positions(wire: bytes) -> Iterator[int]:
    """Every octet whose change must be detected: all but the ID (RFC 8945 4.3.3 digests the
    Original ID instead) and the TSIG owner/algorithm names (digested lowercased)."""
    msg = parse_message(wire)
    assert msg.tsig is not None
    start = msg.tsig.offset
    names_end = start + len(msg.tsig.name)
    alg_start = names_end + 10
    alg_end = alg_start + names.read_name(msg.tsig.rdata, 0)[1]
    for i in range(2, len(wire)):
        if not (start <= i < names_end or alg_start <= i < alg_end):
            yield i


@settings(max_examples=60, deadline=None)
@given(alg=st.sampled_from(sorted(ALGORITHMS)), msg_id=st.integers(0, 0xFFFF),
       label=st.from_regex(r"[a-z0-9]{1,20}", fullmatch=True), when=st.integers(0, 2**40),
       fudge=st.integers(0, 0xFFFF), secret=st.binary(min_size=1, max_size=64),
       data=st.data())
def test_any_altered_octet_fails_verification(alg: str, msg_id: int, label: str, when: int, fudge: int,
                                              secret: bytes, data: st.DataObject) -> None:
    key = TsigKey("k", alg, secret)
    wire, mac = sign_request(make_query(names.from_text(label + ".example."), rrtypes.SOA, msg_id), key,
                             now=when, fudge=fudge)
    assert verify_request(wire, key, now=when).mac == mac
    pos = data.draw(st.sampled_from(list(_flip_positions(wire))))
    delta = data.draw(st.integers(1, 255))
    bad = wire[:pos] + bytes([wire[pos] ^ delta]) + wire[pos + 1:]
    with pytest.raises(TsigError):
        verify_request(bad, key, now=when)


def test_request_id_rewrite_is_tolerated() -> None:
    """RFC 8945 4.3.3: a forwarder may change the ID; the Original ID is what is digested."""
    wire, _ = signed_query(msg_id=1)
    verify_request(b"\x12\x34" + wire[2:], KEY, now=NOW)


def test_repr_of_verifier_hides_the_secret() -> None:
    v = StreamVerifier(KEY, b"m" * 32)
    for form in secret_forms(SECRET):
        assert form not in repr(v)
    assert time.time() > NOW
