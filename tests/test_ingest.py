"""Ingest checks rdata for its type: a transfer or a zone file with a record that cannot be served fails.

Before these checks an MX with RDLENGTH 0 (or ``MX \\# 3 000A05`` in a zone file) was stored, saved
and then made every query touching it raise in the encoder.  Transfers are built here byte by byte,
since dnspython will not render such records; ``max-records`` is checked at its exact boundary.
"""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest
from peers import require_binary

from secondns import names, rrtypes
from secondns.errors import TransferError, ZoneError, ZoneFileError
from secondns.store.zonefile import load_zone_text, parse_zone_text
from secondns.transfer.xfrin import AxfrConsumer, IxfrConsumer, parse_message
from secondns.zone import Zone, ZoneBuilder

ORIGIN = names.from_text("example.com.")
ID = 777
AXFR_FLAGS = 0x8400  # QR, AA


def n(text: str) -> bytes:
    return names.from_text(text, ORIGIN)


def soa_rdata(serial: int) -> bytes:
    return n("ns1") + n("hostmaster") + struct.pack("!5I", serial, 3600, 600, 86400, 300)


def rr(owner: bytes, rtype: int, rdata: bytes, ttl: int = 300) -> bytes:
    return owner + struct.pack("!HHIH", rtype, 1, ttl, len(rdata)) + rdata


def wire(records: list[bytes], *, qtype: int = rrtypes.AXFR, question: bool = True) -> bytes:
    head = struct.pack("!6H", ID, AXFR_FLAGS, 1 if question else 0, len(records), 0, 0)
    q = ORIGIN + struct.pack("!HH", qtype, 1) if question else b""
    return head + q + b"".join(records)


def soa_rr(serial: int = 10) -> bytes:
    return rr(ORIGIN, rrtypes.SOA, soa_rdata(serial))


GOOD = [rr(ORIGIN, rrtypes.NS, n("ns1")), rr(n("ns1"), rrtypes.A, bytes([192, 0, 2, 1]))]


# --------------------------------------------------------------------------
# check_rdata, type by type

VALID = [
    (rrtypes.A, b"\xc0\x00\x02\x01"),
    (rrtypes.AAAA, bytes(16)),
    (rrtypes.NS, n("ns1")),
    (rrtypes.CNAME, b"\x00"),
    (rrtypes.DNAME, n("target")),
    (rrtypes.MX, b"\x00\x0a" + n("mail")),
    (rrtypes.SRV, b"\x00\x01\x00\x02\x00\x35" + n("srv")),
    (rrtypes.SOA, soa_rdata(1)),
    (rrtypes.RP, n("m") + n("t")),
    (rrtypes.PX, b"\x00\x01" + n("a") + n("b")),
    (rrtypes.NAPTR, b"\x00\x01\x00\x02\x01u\x07E2U+sip\x00" + n("x")),
    (rrtypes.TXT, b"\x00"),
    (rrtypes.TXT, b"\x02hi\x03you"),
    (rrtypes.HINFO, b"\x03cpu\x02os"),
    (rrtypes.RRSIG, b"\x00\x01\x08\x02" + bytes(14) + ORIGIN + b"\x01"),
    (rrtypes.NSEC, n("next") + b"\x00\x01\x40"),
    (rrtypes.NSEC3, b"\x01\x00\x00\x0a\x00\x14" + bytes(20) + b"\x00\x01\x40"),
    (rrtypes.NSEC3, b"\x07\x00\x00\x0a\x00\x01\xaa"),  # unknown hash algorithm: any length
    (rrtypes.NSEC3PARAM, b"\x01\x00\x00\x0a\x02\xab\xcd"),
    (rrtypes.DS, b"\x00\x01\x08\x02" + bytes(32)),
    (rrtypes.CDS, b"\x00\x00\x00\x00\x00"),  # delete (RFC 8078 4)
    (rrtypes.DS, b"\x00\x01\x08\x07\x01"),  # unknown digest type: any length
    (rrtypes.DS, b"\x00\x01\x08\x00\x01"),  # digest type 0, reserved (RFC 3658 2.4): BIND takes it
    (rrtypes.CDS, b"\x00\x01\x08\x00" + bytes(32)),  # and in CDS with any digest
    (rrtypes.DNSKEY, b"\x01\x01\x03\x08\x01"),
    (rrtypes.CAA, b"\x00\x05issueca.example"),
    (rrtypes.ZONEMD, b"\x00\x00\x00\x01\x01\x01" + bytes(48)),
    (rrtypes.ZONEMD, b"\x00\x00\x00\x01\x01\x02" + bytes(64)),
    (rrtypes.ZONEMD, b"\x00\x00\x00\x01\x00\x01" + bytes(48)),  # scheme 0 (RFC 8976 5.2)
    (rrtypes.ZONEMD, b"\x00\x00\x00\x01\x01\x00" + bytes(48)),  # hash algorithm 0 (5.3)
    (rrtypes.ZONEMD, b"\x00\x00\x00\x01\x00\x00" + bytes(12)),  # unknown: at least 12 octets
    (rrtypes.SVCB, b"\x00\x01" + n("svc") + b"\x00\x01\x00\x03\x02h2"),
    (rrtypes.SVCB, b"\x00\x00" + n("svc")),
    (rrtypes.SVCB, b"\x00\x00" + n("svc") + b"\x00\x03\x00\x02\x01\xbb"),  # AliasMode, parameters
    (rrtypes.HTTPS, b"\x00\x00" + n("svc") + b"\x00\x01\x00\x03\x02h2"),
    (rrtypes.SVCB, b"\x00\x01" + n("svc") + b"\x00\x01\x00\x03\x02h2\x00\x02\x00\x00"),
    (rrtypes.SVCB, b"\x00\x01" + n("svc") + b"\xff\xff\x00\x02ab"),  # key65535 (RFC 9460 14.3.2)
    (rrtypes.SVCB, b"\x00\x01" + n("svc") + b"\xff\xff\x00\x00"),
    (rrtypes.HTTPS, b"\x00\x01" + n("svc") + b"\x00\x05\x00\x03abc"),  # ech: content not checked
    (rrtypes.HTTPS, b"\x00\x01" + n("svc") + b"\x00\x05\x00\x00"),
    (rrtypes.HTTPS, b"\x00\x01" + n("svc") + b"\x00\x08\x00\x02ab"),  # ohttp with a value
    (rrtypes.HTTPS, b"\x00\x01" + n("svc") + b"\x00\x08\x00\x00"),
    (rrtypes.SVCB, b"\x00\x01" + n("svc") + b"\x00\x09\x00\x02ab"),  # a key nobody defined
    (rrtypes.URI, b"\x00\x01\x00\x01"),  # empty target
    (rrtypes.URI, b"\x00\x01\x00\x01https://example.com/"),
    (rrtypes.TLSA, b"\x03\x01\x01\x00"),
    (rrtypes.CAA, b"\x00\x05issue"),
    (65280, b""),  # an unknown type is opaque (RFC 3597)
    (rrtypes.NULL, b""),
]

INVALID = [
    (rrtypes.A, b"\x01\x02\x03", "3 octets, 4 expected"),
    (rrtypes.AAAA, bytes(4), "4 octets, 16 expected"),
    (rrtypes.NS, b"", "empty rdata"),
    (rrtypes.CNAME, b"\x03abc", "malformed or truncated"),
    (rrtypes.CNAME, n("a") + b"\x01", "1 octets after the last field"),
    (rrtypes.PTR, b"\xc0\x0c", "malformed or truncated"),  # a compression pointer
    (rrtypes.MX, b"", "0 octets is too short"),
    (rrtypes.MX, b"\x00\x0a\x05", "malformed or truncated"),  # MX \# 3 000A05
    (rrtypes.SRV, b"\x00\x01\x00\x02\x00\x35", "too short"),
    (rrtypes.SOA, n("ns1") + n("h") + bytes(19), "20 expected"),
    (rrtypes.SOA, b"", "malformed or truncated"),
    (rrtypes.NAPTR, b"\x00\x01\x00\x02\x05u", "too short"),
    (rrtypes.TXT, b"", "empty rdata"),
    (rrtypes.TXT, b"\x05abc", "runs past"),
    (rrtypes.HINFO, b"\x03cpu", "two character-strings"),
    (rrtypes.RRSIG, bytes(18), "too short"),
    (rrtypes.RRSIG, bytes(18) + b"\xc0\x0c", "signer"),
    (rrtypes.NSEC, b"\xc0\x0c\x00\x01\x40", "next domain name"),
    (rrtypes.NSEC, n("next") + b"\x00\x00", "type bitmap"),
    (rrtypes.NSEC3, b"\x01\x00\x00\x0a\x05\xaa", "salt"),
    (rrtypes.NSEC3PARAM, b"\x01\x00\x00\x0a\x02\xab", "salt length"),
    (rrtypes.DS, b"\x00\x01\x08\x02" + bytes(31), "digest of 31 octets"),
    (rrtypes.DNSKEY, b"\x01\x01\x03", "at least 4"),
    (rrtypes.CAA, b"\x00\x00value", "tag"),
    (rrtypes.ZONEMD, b"\x00\x00\x00\x01\x01\x01" + bytes(47), "47 octets"),
    (rrtypes.ZONEMD, b"\x00\x00\x00\x01\x01\x07" + bytes(11), "at least 12"),
    (rrtypes.ZONEMD, b"\x00\x00\x00\x01\x00\x00" + bytes(11), "at least 12"),
    (rrtypes.ZONEMD, b"\x00\x00\x00\x01\x01\x01" + bytes(49), "49 octets for hash algorithm 1"),
    (rrtypes.ZONEMD, b"\x00\x00\x00\x01\x01\x02" + bytes(63), "63 octets for hash algorithm 2"),
    (rrtypes.DS, b"\x00\x01\x08\x00", "4 octets is too short"),
    (rrtypes.DS, b"\x00\x01\x08\x07", "4 octets is too short"),
    (rrtypes.CDS, b"\x00\x00\x00\x00", "4 octets is too short"),
    (rrtypes.SSHFP, b"\x01\x02" + bytes(20), "20 octets for fingerprint type 2"),
    (rrtypes.WKS, bytes(4), "5 to 8197"),
    (rrtypes.NSEC, n("next") + b"\x00\x02\x40\x00", "type bitmap"),
    (rrtypes.SVCB, b"\x00\x01" + n("svc") + b"\x00\x01\x00\x05h2", "past the rdata"),
    (65280, bytes(65536), "longer than 65535"),
    (rrtypes.OPT, b"", "meta type"),
    (rrtypes.TSIG, bytes(30), "meta type"),
    (200, b"\x01", "meta type"),
    (0, b"", "meta type"),
    (rrtypes.CAA, b"\x00\x03is-ue", "letters and digits"),
    (rrtypes.URI, b"\x00\x01\x00", "at least 4"),
    (rrtypes.URI, b"", "at least 4"),
    (rrtypes.SVCB, b"\x00\x01" + n("svc") + b"\x00\x01\x00\x03\x02h2\x00\x02\x00\x01a", "key2"),
    (rrtypes.SVCB, b"\x00\x01" + n("svc") + b"\x00\x02\x00\x00", "no-default-alpn without alpn"),
    (rrtypes.SVCB, b"\x00\x01" + n("svc") + b"\x00\x03\x00\x03\x01\xbb\x00", "port"),
    (rrtypes.SVCB, b"\x00\x00" + n("svc") + b"\x00\x03\x00\x03\x01\xbb\x00", "port"),  # AliasMode too
    (rrtypes.SVCB, b"\x00\x01" + n("svc") + b"\x00\x01\x00\x00", "alpn"),
    (rrtypes.SVCB, b"\x00\x01" + n("svc") + b"\x00\x00\x00\x00", "mandatory"),
    (rrtypes.SVCB, b"\x00\x01" + n("svc") + b"\x00\x03\x00\x02\x01\xbb\x00\x01\x00\x03\x02h2", "increasing"),
    (rrtypes.HTTPS, b"\x00\x01\x00\x00\x04\x00\x03\x01\x02\x03", "4-octet addresses"),
    (rrtypes.HTTPS, b"\x00\x01\x00\x00\x00\x00\x02\x00\x04\x00\x03\x00\x02\x01\xbb", "mandatory"),
]


# Accepted here though BIND 9.18 refuses them: the server stores and serves them without harm, and
# accepting more than BIND never stalls a zone (see the policy in rrtypes).  Listed so that the
# differential test below shows the gap stays what it is.
LOOSER_THAN_BIND = [
    (rrtypes.RRSIG, b"\x00\x01\x08\x02" + bytes(14) + ORIGIN),  # empty signature
    (rrtypes.NSEC, n("next")),  # empty type bitmap
    (rrtypes.NSEC3, b"\x01\x00\x00\x0a\x00\x01\xaa" + b"\x00\x01\x40"),  # SHA-1 hash of 1 octet
    (rrtypes.DNSKEY, b"\x01\x01\x03\x08"),  # no public key
    (rrtypes.TLSA, b"\x03\x01\x01"),  # no association data
    (rrtypes.CERT, b"\x00\x01\x00\x00\x01"),  # no certificate
    (rrtypes.SVCB, b"\x00\x01" + n("svc") + b"\x00\x01\x00\x01\x00"),  # alpn of an empty id
]


@pytest.mark.parametrize(("rtype", "rdata"), VALID + LOOSER_THAN_BIND)
def test_valid_rdata_passes(rtype: int, rdata: bytes) -> None:
    assert rrtypes.check_rdata(rtype, rdata) is None


@pytest.mark.parametrize(("rtype", "rdata", "why"), INVALID)
def test_invalid_rdata_is_refused_with_a_reason(rtype: int, rdata: bytes, why: str) -> None:
    reason = rrtypes.check_rdata(rtype, rdata)
    assert reason is not None and why in reason


def named_checkzone_takes(tmp_path: Path, rtype: int, rdata: bytes) -> tuple[bool, str]:
    """Whether BIND's named-checkzone loads a zone holding *rdata* in the RFC 3597 generic form.

    The generic form makes BIND parse the bytes with its fromwire code, as its xfrin does.  Zone
    checks that are not about rdata (check-names, MX and NS targets with no address) are off, and
    a refusal counts only when BIND blames the record's line.
    """
    record = f"TYPE{rtype} \\# {len(rdata)} {rdata.hex()}"
    apex_soa = f"@ {record}" if rtype == rrtypes.SOA else "@ SOA ns1 hostmaster 1 3600 600 86400 300"
    lines = ["$ORIGIN example.com.", "$TTL 300", apex_soa, "@ NS ns1", "ns1 A 192.0.2.1"]
    if rtype != rrtypes.SOA:
        lines.append(f"x {record}")
    path = tmp_path / f"t{rtype}.zone"
    path.write_text("\n".join(lines) + "\n")
    proc = subprocess.run([require_binary("named-checkzone"), "-i", "none", "-k", "ignore", "example.com",
                           str(path)], capture_output=True, text=True, timeout=60)
    out = proc.stdout + proc.stderr
    if proc.returncode == 0:
        return True, out
    assert f"{path}:{len(lines) if rtype != rrtypes.SOA else 3}:" in out, out
    return False, out


def test_every_rdata_refused_here_is_refused_by_bind_too(tmp_path: Path) -> None:
    """The differential check of the policy in rrtypes: a refusal BIND would not make stalls the zone.

    Over every case of the lists above, check_rdata's verdict is compared with named-checkzone's:
    nothing refused here may be taken by BIND.  The lists are held to BIND too: the VALID cases
    are taken by it, the INVALID and LOOSER_THAN_BIND ones refused (else they belong to VALID).
    """
    wrong = []
    cases = [(t, r, "invalid") for t, r, _ in INVALID] + [(t, r, "valid") for t, r in VALID]
    cases += [(t, r, "looser") for t, r in LOOSER_THAN_BIND]
    for rtype, rdata, listed in cases:
        what = f"{rrtypes.type_name(rtype)} {rdata.hex()[:80]}"
        why = rrtypes.check_rdata(rtype, rdata)
        bind_takes, out = named_checkzone_takes(tmp_path, rtype, rdata)
        if why is not None and bind_takes:
            wrong.append(f"refused here ({why}), BIND takes it: {what}")
        elif listed == "valid" and not bind_takes:
            wrong.append(f"listed VALID, BIND refuses it: {what}: {out.splitlines()[0]}")
        elif listed != "valid" and bind_takes:
            wrong.append(f"listed {listed.upper()}, BIND takes it (move it to VALID): {what}")
    assert not wrong, "\n".join(wrong)


def test_every_type_with_names_inside_is_checked() -> None:
    assert set(rrtypes.NAME_LAYOUT) <= set(rrtypes.RDATA_CHECKS)


# --------------------------------------------------------------------------
# AXFR and IXFR


@pytest.mark.parametrize(("record", "why"), ids=lambda v: v[:16] if isinstance(v, str) else "rr", argvalues=[
    (rr(n("mail"), rrtypes.MX, b""), r"mail\.example\.com\. MX: rdata of 0 octets holds no domain name"),
    (rr(n("www"), rrtypes.CNAME, b"\x07garbage\xff\xfe"), r"www\.example\.com\. CNAME: "),
    (rr(n("www"), rrtypes.NS, b""), r"www\.example\.com\. NS: empty rdata"),
    (rr(n("www"), rrtypes.NS, n("ns1") + b"\x00"), r"www\.example\.com\. NS: 1 octets after the domain name"),
    (rr(n("p"), rrtypes.PTR, b"\x00\x05"), r"p\.example\.com\. PTR: 1 octets after"),
    (rr(n("m"), rrtypes.MX, b"\x00\x0a"), r"m\.example\.com\. MX: rdata of 2 octets holds no domain name"),
    (rr(n("s"), rrtypes.SRV, b""), r"s\.example\.com\. SRV: "),
    (rr(n("h"), rrtypes.A, b"\x01\x02\x03"), r"h\.example\.com\. A: rdata of 3 octets, 4 expected"),
    (rr(n("t"), rrtypes.TXT, b""), r"t\.example\.com\. TXT: empty rdata"),
    (rr(n("d"), rrtypes.DNAME, b"\xc0\x0c"), r"d\.example\.com\. DNAME: "),
    (rr(n("r"), rrtypes.RRSIG, bytes(10)), r"r\.example\.com\. RRSIG: "),
])
def test_axfr_with_an_invalid_record_fails_naming_owner_type_and_reason(record: bytes, why: str) -> None:
    c = AxfrConsumer(ORIGIN, ID, max_records=100)
    assert not c.feed(wire([soa_rr(), *GOOD]))
    with pytest.raises(TransferError, match=rf"invalid record in message 2: {why}"):
        c.feed(wire([record, soa_rr()], question=False))


def test_axfr_opening_soa_with_no_rdata_fails() -> None:
    c = AxfrConsumer(ORIGIN, ID, max_records=100)
    with pytest.raises(TransferError, match=r"invalid record in message 1: example\.com\. SOA: "):
        c.feed(wire([rr(ORIGIN, rrtypes.SOA, b""), *GOOD, soa_rr()]))


def test_axfr_of_valid_records_still_passes() -> None:
    c = AxfrConsumer(ORIGIN, ID, max_records=100)
    assert c.feed(wire([soa_rr(), *GOOD, rr(n("m"), rrtypes.MX, b"\x00\x0a" + n("ns1")), soa_rr()]))
    assert c.result().record_count == 4


def test_ixfr_adding_an_invalid_record_fails() -> None:
    c = IxfrConsumer(ORIGIN, ID, 9, max_records=100)
    records = [soa_rr(10), soa_rr(9), soa_rr(10), rr(n("mail"), rrtypes.MX, b""), soa_rr(10)]
    with pytest.raises(TransferError, match=r"mail\.example\.com\. MX: "):
        c.feed(wire(records, qtype=rrtypes.IXFR))


def test_soa_probe_parse_stays_lenient() -> None:
    """Only what is stored is checked: a plain parse (SOA probes) keeps its old behaviour."""
    msg = parse_message(wire([soa_rr(), rr(n("mail"), rrtypes.MX, b"")]))
    assert msg.answer[1][4] == b""


# --------------------------------------------------------------------------
# max-records counts the zone as served


def zone_stream(total: int) -> list[bytes]:
    """An AXFR of a zone of *total* records (SOA included), four records per message."""
    body = [rr(ORIGIN, rrtypes.NS, n("ns1"))]
    body += [rr(n(f"h{i}"), rrtypes.A, bytes([192, 0, 2, i % 256])) for i in range(total - 2)]
    records = [soa_rr(), *body, soa_rr()]
    return [wire(records[i:i + 4], question=i == 0) for i in range(0, len(records), 4)]


@pytest.mark.parametrize("limit", [2, 7, 8, 50])
def test_zone_of_exactly_max_records_transfers(limit: int) -> None:
    c = AxfrConsumer(ORIGIN, ID, max_records=limit)
    done = False
    for message in zone_stream(limit):
        done = c.feed(message)
    assert done
    assert c.result().record_count == limit


@pytest.mark.parametrize("limit", [2, 7, 8, 50])
def test_zone_of_max_records_plus_one_fails(limit: int) -> None:
    c = AxfrConsumer(ORIGIN, ID, max_records=limit)
    with pytest.raises(TransferError, match=f"exceeds the limit of {limit} records"):
        for message in zone_stream(limit + 1):
            c.feed(message)


def test_ixfr_full_zone_of_exactly_max_records_transfers() -> None:
    records = [soa_rr(10), rr(ORIGIN, rrtypes.NS, n("ns1")), rr(n("ns1"), rrtypes.A, bytes(4)), soa_rr(10)]
    c = IxfrConsumer(ORIGIN, ID, 9, max_records=3)
    assert c.feed(wire(records, qtype=rrtypes.IXFR))
    assert c.result().record_count == 3
    c = IxfrConsumer(ORIGIN, ID, 9, max_records=2)
    with pytest.raises(TransferError, match="exceeds the limit of 2 records"):
        c.feed(wire(records, qtype=rrtypes.IXFR))


# --------------------------------------------------------------------------
# zone files


ZONE_HEAD = "$ORIGIN example.com.\n$TTL 300\n@ SOA ns1 hostmaster 1 3600 600 86400 300\n@ NS ns1\n"


@pytest.mark.parametrize(("line", "why"), [
    ("mail MX \\# 3 000A05", "invalid MX rdata: malformed or truncated domain name"),
    ("mail MX \\# 0", "invalid MX rdata: rdata of 0 octets is too short"),
    ("www CNAME \\# 0", "invalid CNAME rdata: empty rdata"),
    ("www NS \\# 2 0100", "invalid NS rdata: malformed or truncated"),
    ("p PTR \\# 3 00C00C", "invalid PTR rdata: 2 octets after the last field"),
    ("h A \\# 3 010203", "invalid A rdata: rdata of 3 octets, 4 expected"),
    ("t TXT \\# 0", "invalid TXT rdata: empty rdata"),
    ("s SRV \\# 6 000100020035", "invalid SRV rdata: rdata of 6 octets is too short"),
    ("@ SOA \\# 1 00", "invalid SOA rdata"),
    ("d DS \\# 5 0001080201", "invalid DS rdata: digest of 1 octets for digest type 2"),
    ("t TXT ( " + '"xx" ' * 22000 + ")", "invalid TXT rdata: rdata of 66000 octets is longer than 65535"),
], ids=lambda value: value[:20] if isinstance(value, str) else None)
def test_zone_file_with_an_invalid_record_fails_with_file_and_line(line: str, why: str) -> None:
    text = ZONE_HEAD + "ns1 A 192.0.2.1\n" + line + "\n"
    with pytest.raises(ZoneFileError, match=rf"^zones/example\.zone:6: .*{why}") as info:
        load_zone_text(text, ORIGIN, path="zones/example.zone")
    assert info.value.line == 6


@pytest.mark.parametrize("line", ["mail MX \\# 3 000A05", "www CNAME \\# 0", "h A \\# 3 010203",
                                  "s SRV \\# 7 00010002003501", "t TXT \\# 2 0561"])
def test_bind_refuses_the_same_generic_records(tmp_path: Path, line: str) -> None:
    """named-checkzone is the reference: what it refuses, the reader refuses too."""
    path = tmp_path / "example.zone"
    path.write_text(ZONE_HEAD + "ns1 A 192.0.2.1\n" + line + "\n")
    proc = subprocess.run([require_binary("named-checkzone"), "example.com", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0, proc.stdout
    with pytest.raises(ZoneFileError, match=rf"^{path}:6: invalid "):
        load_zone_text(path.read_text(), ORIGIN, path=str(path))
    # And both take the same line once its rdata is valid: the check is not a blanket refusal.
    good = tmp_path / "good.zone"
    good.write_text(ZONE_HEAD + "ns1 A 192.0.2.1\nmail MX \\# 7 000A 03 6e7331 00\n")
    assert subprocess.run([require_binary("named-checkzone"), "example.com", str(good)],
                          capture_output=True, timeout=60).returncode == 0
    load_zone_text(good.read_text(), ORIGIN, path=str(good))


def test_fast_path_checks_what_its_converters_can_get_wrong() -> None:
    # A canonical line takes the fast path; the ZONEMD converter checks the digest length of the
    # hash algorithms it knows only, so an 11-octet digest of algorithm 0 converts but is not
    # valid rdata (RFC 8976 2.2.4: at least 12 octets).
    line = "example.com.\t300\tIN\tZONEMD\t1 0 0 " + "00" * 11
    with pytest.raises(ZoneFileError, match=r"^z:1: invalid ZONEMD rdata: digest of 11 octets, at least 12"):
        list(parse_zone_text(line, ORIGIN, path="z"))


def test_fast_path_line_too_long_for_rdlength_fails() -> None:
    # One canonical line (the fast path): 300 strings of 255 octets do not fit RDLENGTH.
    line = "t.example.com.\t300\tIN\tTXT\t" + " ".join(['"' + "x" * 255 + '"'] * 300)
    with pytest.raises(ZoneFileError, match=r"^z:1: invalid TXT rdata: rdata of 76800 octets"):
        list(parse_zone_text(line, ORIGIN, path="z"))


def test_generic_form_of_valid_rdata_still_loads() -> None:
    text = ZONE_HEAD + "mail MX \\# 7 000A 03 6e7331 00\nx TYPE65280 \\# 0\nns1 A \\# 4 C0000201\n"
    zone = load_zone_text(text, ORIGIN)
    assert zone.rrsets(n("mail")) == {rrtypes.MX: [(300, b"\x00\x0a\x03ns1\x00")]}


def test_snapshot_of_the_previous_format_is_refused() -> None:
    """A snapshot written before ingest checks may hold bad records: the text copy is parsed instead."""
    b = ZoneBuilder(ORIGIN)
    b.add(ORIGIN, rrtypes.SOA, 300, soa_rdata(1))
    state = b.build().to_state()
    assert Zone.from_state(state).serial == 1
    with pytest.raises(ZoneError, match="unknown snapshot format"):
        Zone.from_state((1, *state[1:]))
