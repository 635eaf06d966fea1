"""Zone file parsing and writing, checked against dnspython and BIND's named-checkzone."""

from __future__ import annotations

import io
import random
import re
import struct
import subprocess
from pathlib import Path

import dns.zone
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from peers import require_binary

from secondns import names, rrtypes
from secondns.errors import NameError_, ZoneFileError
from secondns.store.zonefile import (
    SUPPORTED_TYPES,
    _Names,
    _owner_text,
    format_record,
    load_zone_file,
    load_zone_text,
    parse_zone_text,
    rdata_to_text,
    write_zone,
)
from secondns.zone import Zone, ZoneBuilder

DATA = Path(__file__).parent / "data"
ALLTYPES = DATA / "alltypes.zone"
ORIGIN = names.from_text("example.com.")
OWNER = names.from_text("Host.Example.com.")


def parse(text: str, origin: bytes = ORIGIN, **kwargs: object) -> list[tuple[bytes, int, int, bytes]]:
    return list(parse_zone_text(text, origin, **kwargs))  # type: ignore[arg-type]


def one(text: str) -> tuple[bytes, int, int, bytes]:
    [record] = parse("$TTL 300\n" + text)
    return record


def named_checkzone() -> str:
    """The named-checkzone binary (peers.require_binary: a failure under CI, a skip elsewhere)."""
    return require_binary("named-checkzone")


def check_with_bind(path: Path, origin: str) -> None:
    proc = subprocess.run([named_checkzone(), origin, str(path)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- against dnspython ------------------------------------------------------------------


def test_every_type_matches_dnspython(monkeypatch: pytest.MonkeyPatch) -> None:
    ours = [(o.lower(), t, ttl, rd) for o, t, ttl, rd in
            parse(ALLTYPES.read_text(), path=str(ALLTYPES))]
    assert len(ours) == len(set(ours))
    theirs = dns.zone.from_file(str(ALLTYPES), origin="example.com.", relativize=False)
    expected = {(name.to_wire().lower(), rdata.rdtype, ttl, rdata.to_wire())
                for name, ttl, rdata in theirs.iterate_rdatas()}
    assert set(ours) == expected
    assert {t for _, t, _, _ in ours} >= SUPPORTED_TYPES


def test_owner_case_is_preserved() -> None:
    owners = {o for o, _, _, _ in parse(ALLTYPES.read_text())}
    assert names.from_text("Mail.example.com.") in owners
    assert names.from_text("mail.example.com.") in owners


# --- round trips ------------------------------------------------------------------------


def test_alltypes_round_trip_through_format_record() -> None:
    records = parse(ALLTYPES.read_text())
    text = "\n".join(format_record(*r) for r in records)
    assert parse(text) == records
    generic = [line for line in text.splitlines() if "\\#" in line]
    assert all("TYPE65280" in line for line in generic)  # everything else has its own form


def test_write_zone_is_accepted_by_bind_and_reloads(tmp_path: Path) -> None:
    zone = load_zone_file(ALLTYPES, ORIGIN)
    out = tmp_path / "example.com.zone"
    with out.open("w") as f:
        write_zone(zone, f)
    lines = out.read_text().splitlines()
    assert lines[0].startswith("example.com.\t3600\tIN\tSOA\t")
    assert len(lines) == zone.record_count
    check_with_bind(out, "example.com")
    again = load_zone_file(out, ORIGIN)
    assert sorted(again.records()) == sorted(zone.records())


def _odd_zone(seed: int, count: int) -> Zone:
    """Records of every converted type holding awkward bytes (escapes, high octets, odd names)."""
    rng = random.Random(seed)

    def blob(n: int) -> bytes:
        return bytes(rng.randrange(256) for _ in range(n))

    def name() -> bytes:
        labels = [rng.choice([blob(rng.randrange(1, 6)), b"a.b", b"x y", b"@", b"$", b"(", b'"', b";"])
                  for _ in range(rng.randrange(0, 3))]
        return b"".join(bytes((len(x),)) + x for x in labels) + names.from_text("example.net.")

    def cstr(n: int | None = None) -> bytes:
        return _cstr(blob(rng.randrange(0, 30) if n is None else n))

    def types() -> bytes:
        return _bitmap({rng.randrange(0, 0x10000) if rng.random() < 0.3 else rng.randrange(0, 300)
                        for _ in range(rng.randrange(1, 6))})

    # BIND also checks meaning (NAPTR regexps, RRSIG labels against the signer, NSEC3 hash
    # length), so those fields hold values it likes; everything else is arbitrary.
    makers = {
        rrtypes.TXT: lambda: b"".join(cstr() for _ in range(rng.randrange(1, 4))),
        rrtypes.SPF: cstr, rrtypes.HINFO: lambda: cstr() + cstr(),
        rrtypes.CAA: lambda: blob(1) + b"\x03iss" + blob(rng.randrange(0, 30)),
        rrtypes.NAPTR: lambda: blob(4) + cstr(0) + cstr() + cstr(0) + name(),
        rrtypes.URI: lambda: blob(4) + blob(rng.randrange(1, 30)),
        rrtypes.PTR: name, rrtypes.CNAME: name, rrtypes.DNAME: name, rrtypes.NS: name,
        rrtypes.RP: lambda: name() + name(),
        rrtypes.NSEC: lambda: name() + types(),
        rrtypes.NSEC3: lambda: b"\x01" + blob(3) + cstr(rng.randrange(0, 10)) + cstr(20) + types(),
        rrtypes.NSEC3PARAM: lambda: b"\x01" + blob(3) + cstr(rng.randrange(0, 10)),
        rrtypes.RRSIG: lambda: blob(2) + b"\x08\x09" + blob(14) + name() + blob(rng.randrange(1, 60)),
        rrtypes.DNSKEY: lambda: blob(2) + b"\x03" + bytes((rng.choice([8, 13, 200]),)) + blob(40),
        rrtypes.DS: lambda: blob(3) + b"\x02" + blob(32),
        rrtypes.SSHFP: lambda: blob(1) + b"\x02" + blob(32),
        rrtypes.TLSA: lambda: blob(3) + blob(rng.randrange(1, 40)),
        rrtypes.SRV: lambda: blob(6) + name(),
        rrtypes.AFSDB: lambda: blob(2) + name(), rrtypes.KX: lambda: blob(2) + name(),
        rrtypes.MX: lambda: blob(2) + name(),
        rrtypes.ZONEMD: lambda: blob(4) + b"\x01\x01" + blob(48),
        rrtypes.A: lambda: blob(4), rrtypes.AAAA: lambda: blob(16),
        65280: lambda: blob(rng.randrange(0, 100)),
    }
    builder = ZoneBuilder(ORIGIN)
    builder.add(ORIGIN, rrtypes.SOA, 3600, names.from_text("ns.example.net.") * 2 + blob(20))
    builder.add(ORIGIN, rrtypes.NS, 3600, names.from_text("ns.example.net."))
    kinds = sorted(makers)
    for i in range(count):
        rtype = kinds[i % len(kinds)]
        builder.add(names.from_text(f"n{i}", ORIGIN), rtype, 60, makers[rtype]())
    return builder.build()


def test_bind_reads_what_we_write_the_same_way(tmp_path: Path) -> None:
    """Write awkward records, let BIND re-print them (-D), and parse BIND's text back."""
    zone = _odd_zone(seed=3, count=600)
    ours = tmp_path / "ours.zone"
    with ours.open("w") as f:
        write_zone(zone, f)
    theirs = tmp_path / "theirs.zone"
    # -k ignore: the owner names are fine, but the odd rdata names are not host names.
    proc = subprocess.run([named_checkzone(), "-k", "ignore", "-i", "none", "-D", "-o", str(theirs),
                           "example.com", str(ours)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(load_zone_file(theirs, ORIGIN).records()) == sorted(zone.records())


def _label() -> st.SearchStrategy[bytes]:
    return st.binary(min_size=1, max_size=12) | st.sampled_from([b"*", b"a.b", b"@", b"$x", b"(", b"\\"])


wire_names = st.lists(_label(), max_size=4).map(
    lambda labels: b"".join(bytes((len(x),)) + x for x in labels) + b"\x00")


def _cstr(data: bytes) -> bytes:
    return bytes((len(data),)) + data


def _bitmap(types: set[int]) -> bytes:
    out = b""
    for window in sorted({t >> 8 for t in types}):
        bits = bytearray(32)
        for t in types:
            if t >> 8 == window:
                bits[(t & 0xFF) >> 3] |= 0x80 >> (t & 7)
        used = bytes(bits).rstrip(b"\x00")
        out += bytes((window, len(used))) + used
    return out


u16 = st.integers(0, 0xFFFF).map(lambda v: struct.pack("!H", v))
u32 = st.integers(0, 0xFFFFFFFF).map(lambda v: struct.pack("!I", v))
cstrings = st.binary(max_size=255).map(_cstr)
bitmaps = st.sets(st.integers(0, 0xFFFF), max_size=8).map(_bitmap)

well_formed = st.one_of(
    st.tuples(st.just(rrtypes.A), st.binary(min_size=4, max_size=4)),
    st.tuples(st.just(rrtypes.AAAA), st.binary(min_size=16, max_size=16)),
    st.tuples(st.just(rrtypes.MX), st.tuples(u16, wire_names).map(b"".join)),
    st.tuples(st.just(rrtypes.TXT), st.lists(cstrings, min_size=1, max_size=4).map(b"".join)),
    st.tuples(st.just(rrtypes.SOA), st.tuples(wire_names, wire_names, st.binary(min_size=20, max_size=20))
              .map(b"".join)),
    st.tuples(st.just(rrtypes.NSEC), st.tuples(wire_names, bitmaps).map(b"".join)),
    st.tuples(st.just(rrtypes.RRSIG), st.tuples(st.binary(min_size=18, max_size=18), wire_names,
                                                st.binary(min_size=1, max_size=80)).map(b"".join)),
    st.tuples(st.just(rrtypes.NSEC3), st.tuples(
        st.binary(min_size=4, max_size=4), st.binary(max_size=20).map(_cstr),
        st.binary(min_size=1, max_size=32).map(_cstr), bitmaps).map(b"".join)),
    st.tuples(st.just(rrtypes.CAA), st.tuples(
        st.binary(min_size=1, max_size=1),
        st.text("abcxyz019", min_size=1, max_size=15).map(lambda t: _cstr(t.encode())),
        st.binary(max_size=300)).map(b"".join)),
    st.tuples(st.just(rrtypes.NAPTR), st.tuples(u16, u16, cstrings, cstrings, cstrings, wire_names)
              .map(b"".join)),
    st.tuples(st.just(rrtypes.SRV), st.tuples(u16, u16, u16, wire_names).map(b"".join)),
    st.tuples(st.just(rrtypes.ZONEMD), st.tuples(u32, st.just(b"\x01\x01"),
                                                 st.binary(min_size=48, max_size=48)).map(b"".join)),
)


def _reparse(rtype: int, rdata: bytes, slow: bool) -> bytes:
    line = format_record(OWNER, rtype, 300, rdata)
    if slow:  # a comment sends the line through the general tokenizer
        line += " ; comment"
    [(owner, got_type, ttl, got)] = parse(line)
    assert (owner, got_type, ttl) == (OWNER, rtype, 300)
    return got


@settings(max_examples=400)
@given(well_formed, st.booleans())
def test_well_formed_rdata_has_its_own_text_and_round_trips(case: tuple[int, bytes], slow: bool) -> None:
    rtype, rdata = case
    assert not rdata_to_text(rtype, rdata).startswith("\\#")
    assert _reparse(rtype, rdata, slow) == rdata


@settings(max_examples=600)
@given(st.sampled_from([*sorted(SUPPORTED_TYPES), 65280, rrtypes.WKS, rrtypes.SVCB]),
       st.binary(max_size=120), st.booleans())
def test_any_bytes_round_trip_for_any_type(rtype: int, rdata: bytes, slow: bool) -> None:
    """Whatever is valid for its type round-trips; whatever is not is refused with file:line."""
    why = rrtypes.check_rdata(rtype, rdata)
    if why is None:
        assert _reparse(rtype, rdata, slow) == rdata
    else:
        with pytest.raises(ZoneFileError, match=re.escape(why)):
            _reparse(rtype, rdata, slow)


@given(wire_names)
def test_owner_text_matches_names_to_text(name: bytes) -> None:
    assert _owner_text(name) == names.to_text(name)


@given(st.text(alphabet="ab@.-*", min_size=1, max_size=12))
def test_cached_name_conversion_matches_names_from_text(text: str) -> None:
    try:
        expected: bytes | None = names.from_text(text, ORIGIN)
    except NameError_:
        expected = None
    try:
        got: bytes | None = _Names(ORIGIN)(text)
    except NameError_:
        got = None
    assert got == expected


def test_malformed_rdata_falls_back_to_generic() -> None:
    assert rdata_to_text(rrtypes.A, b"\x01\x02") == "\\# 2 0102"
    assert rdata_to_text(rrtypes.MX, b"\x00\x01\xc0\x0c") == "\\# 4 0001C00C"  # compressed name
    assert rdata_to_text(rrtypes.TXT, b"") == "\\# 0"
    assert rdata_to_text(rrtypes.NSEC, b"\x00\x00\x01\x00") == "\\# 4 00000100"  # zero octet at end
    assert rdata_to_text(rrtypes.DS, b"\x00\x01\x08\x02\xab") == "\\# 5 00010802AB"  # SHA-256 too short


def test_long_generic_rdata_is_split_into_words() -> None:
    text = rdata_to_text(65280, bytes(100))
    assert text.split()[:2] == ["\\#", "100"]
    assert all(len(word) <= 64 for word in text.split())


def test_rrsig_times_print_as_dates_and_accept_integers() -> None:
    rdata = one("@ RRSIG A 8 2 300 20240201000000 1704067200 1 example.com. AAAA")[3]
    assert rdata[8:16] == struct.pack("!II", 1706745600, 1704067200)
    assert "20240201000000 20240101000000" in rdata_to_text(rrtypes.RRSIG, rdata)


def test_rrsig_times_past_2106_wrap_modulo_2_32() -> None:
    rdata = one("@ RRSIG A 8 2 300 21060207062816 0 1 example.com. AAAA")[3]
    assert rdata[8:12] == b"\x00\x00\x00\x00"


# --- syntax -----------------------------------------------------------------------------


def test_blank_owner_continues_previous_owner() -> None:
    records = parse("$TTL 60\nwww A 192.0.2.1\n  AAAA ::1\n\t; comment only\n\tTXT x\n")
    assert [r[0] for r in records] == [names.from_text("www.example.com.")] * 3


def test_ttl_and_class_in_either_order_with_units() -> None:
    a = one("a 1h IN A 192.0.2.1")
    b = one("a IN 1H A 192.0.2.1")
    c = one("a 1w2d3h4m5s A 192.0.2.1")
    assert a[2] == b[2] == 3600
    assert c[2] == 604800 + 2 * 86400 + 3 * 3600 + 4 * 60 + 5


def test_ttl_above_2_31_is_zero_as_bind_does() -> None:
    assert one("a 2147483648 A 192.0.2.1")[2] == 0
    assert one("a 2147483647 A 192.0.2.1")[2] == 2147483647


def test_no_ttl_anywhere_takes_soa_minimum_then_keeps_it() -> None:
    records = parse("@ SOA ns h 1 2 3 4 77\nwww 99 A 192.0.2.1\nftp A 192.0.2.2\n")
    assert [r[2] for r in records] == [77, 99, 77]


def test_without_ttl_directive_last_explicit_ttl_is_used() -> None:
    records = parse("@ 500 SOA ns h 1 2 3 4 77\nwww A 192.0.2.1\nftp 20 A 192.0.2.2\nx A 192.0.2.3\n")
    assert [r[2] for r in records] == [500, 500, 20, 20]


def test_default_ttl_argument_acts_as_ttl_directive() -> None:
    assert parse("www A 192.0.2.1", default_ttl=42)[0][2] == 42


def test_origin_directive_is_relative_to_current_origin() -> None:
    records = parse("$TTL 1\n$ORIGIN sub\nwww A 192.0.2.1\n$ORIGIN other.test.\n@ A 192.0.2.2\n")
    assert records[0][0] == names.from_text("www.sub.example.com.")
    assert records[1][0] == names.from_text("other.test.")


def test_include_is_relative_to_the_including_file(tmp_path: Path) -> None:
    (tmp_path / "inc").mkdir()
    (tmp_path / "inc" / "hosts.inc").write_text("www A 192.0.2.1\n")
    main = tmp_path / "main.zone"
    main.write_text("$TTL 60\nmail A 192.0.2.9\n$INCLUDE inc/hosts.inc sub\n  AAAA ::1\n"
                    "$INCLUDE \"inc/hosts.inc\"\n")
    records = parse(main.read_text(), path=str(main))
    assert [names.to_text(r[0]) for r in records] == [
        "mail.example.com.", "www.sub.example.com.", "mail.example.com.", "www.example.com."]
    assert records[2][1] == rrtypes.AAAA  # the blank owner is the one from before the include


def test_include_error_names_the_included_file(tmp_path: Path) -> None:
    inc = tmp_path / "bad.inc"
    inc.write_text("\nwww A 192.0.2.300\n")
    main = tmp_path / "main.zone"
    main.write_text("$TTL 60\n$INCLUDE bad.inc\n")
    with pytest.raises(ZoneFileError, match=rf"^{inc}:2: "):
        parse(main.read_text(), path=str(main))


def test_include_without_a_path_is_refused() -> None:
    with pytest.raises(ZoneFileError, match="only allowed in a zone file read from a path"):
        parse("$INCLUDE other.zone\n")


def test_escaped_names_and_at_sign() -> None:
    record = one("a\\.b\\032c CNAME @")
    assert record[0] == b"\x05a.b c" + ORIGIN
    assert record[3] == ORIGIN


def test_at_sign_is_special_only_as_a_whole_name() -> None:
    assert one("a.@ A 192.0.2.1")[0] == b"\x01a\x01@" + ORIGIN
    assert one("x CNAME b.@")[3] == b"\x01b\x01@" + ORIGIN
    with pytest.raises(ZoneFileError, match="empty label"):
        one("a.. A 192.0.2.1")


def test_unknown_type_names_the_generic_form() -> None:
    with pytest.raises(ZoneFileError, match=r"line 2: .*generic form"):
        one("x WKS 192.0.2.1 6 25")


def test_generic_for_any_type_and_typennn() -> None:
    assert one("x TYPE65280 \\# 3 0102 03")[1:] == (65280, 300, b"\x01\x02\x03")
    assert one("x NULL \\# 0")[3] == b""
    assert one("x TYPE1 192.0.2.1")[1] == rrtypes.A


def test_ds_and_tlsa_hex_with_spaces_and_mnemonics() -> None:
    ds = one("x DS 1 RSASHA256 SHA-1 ( 0102030405 0607080910\n 11121314151617181920 )")[3]
    assert ds[:4] == b"\x00\x01\x08\x01" and len(ds) == 24
    tlsa = one("x TLSA 3 1 1 AB CD")[3]
    assert tlsa == b"\x03\x01\x01\xab\xcd"


def test_nsec3_empty_salt_and_empty_bitmap() -> None:
    rdata = one("x NSEC3 1 0 0 - 00000000")[3]
    assert rdata == b"\x01\x00\x00\x00\x00\x05" + bytes(5)
    assert rdata_to_text(rrtypes.NSEC3, rdata) == "1 0 0 - 00000000"


# --- errors name file and line ----------------------------------------------------------


@pytest.mark.parametrize(("text", "line", "message"), [
    ("$TTL 1\nwww A 192.0.2.256\n", 2, "bad IPv4 address"),
    ("$TTL 1\nwww FOO 1\n", 2, "unknown RR type"),
    ("$TTL 1\n@ SOA ns h (1 2 3\n4 5\n", 2, r"'\(' never closed"),
    ("$TTL 1\nwww TXT \"open\n", 2, "unterminated quoted string"),
    ("$TTL 1\n\nwww CH A 192.0.2.1\n", 3, "class CH is not supported"),
    ("$TTL 1\nx TYPE65280 \\# 3 0102\n", 2, "generic rdata has 2 octets, length says 3"),
    ("www A 192.0.2.1\n", 1, "no TTL"),
    ("$TTL 1\n  A 192.0.2.1\n", 2, "no previous owner"),
    ("$TTL 1\nwww MX 70000 mail\n", 2, "preference 70000 out of range"),
    ("$TTL 1\nwww TXT " + '"' + "x" * 256 + '"\n', 2, "longer than 255"),
    ("$TTL 1\n$GENERATE 1-3 h$ A 192.0.2.$\n", 2, r"\$GENERATE is not supported"),
    ("$TTL 1h30\n", 1, "bad TTL"),
    ("$TTL 1\nx DS 1 8 2 0102\n", 2, "does not fit digest type 2"),
    ("$TTL 1\nx NSEC3 1 0 0 - !!\n", 2, "bad base32hex"),
    ("$TTL 1\nx DNSKEY 257 3 8 not*base64\n", 2, "bad base64"),
    ("$TTL 1\nx A 192.0.2.1 )\n", 2, r"'\)' without '\('"),
])
def test_errors_name_file_and_line(text: str, line: int, message: str) -> None:
    with pytest.raises(ZoneFileError, match=rf"^zones/x\.zone:{line}: .*{message}") as info:
        parse(text, path="zones/x.zone")
    assert info.value.line == line
    assert info.value.path == "zones/x.zone"


def test_record_outside_origin_is_an_error_when_loading(tmp_path: Path) -> None:
    path = tmp_path / "z.zone"
    path.write_text("$TTL 1\n@ SOA ns h 1 2 3 4 5\n@ NS ns\nwww.example.net. A 192.0.2.1\n")
    with pytest.raises(ZoneFileError, match=rf"^{path}:4: www\.example\.net\. is outside"):
        load_zone_file(path, ORIGIN)


def test_missing_soa_and_missing_file_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ZoneFileError, match="no SOA"):
        load_zone_text("$TTL 1\nwww A 192.0.2.1\n", ORIGIN)
    with pytest.raises(ZoneFileError, match="cannot read"):
        load_zone_file(tmp_path / "absent.zone", ORIGIN)


def test_non_utf8_file_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "z.zone"
    path.write_bytes(b"$TTL 1\n@ SOA ns h 1 2 3 4 5\nx TXT \"\xff\"\n")
    with pytest.raises(ZoneFileError, match=rf"^{path}:3: not valid UTF-8"):
        load_zone_file(path, ORIGIN)


def test_write_zone_puts_soa_first_and_uses_absolute_names() -> None:
    builder = ZoneBuilder(ORIGIN)
    builder.add(names.from_text("www.example.com."), rrtypes.A, 60, b"\xc0\x00\x02\x01")
    builder.add(ORIGIN, rrtypes.SOA, 60, names.from_text("ns.example.com.") * 2 + bytes(20))
    out = io.StringIO()
    write_zone(builder.build(), out)
    assert out.getvalue().splitlines() == [
        "example.com.\t60\tIN\tSOA\tns.example.com. ns.example.com. 0 0 0 0 0",
        "www.example.com.\t60\tIN\tA\t192.0.2.1",
    ]
