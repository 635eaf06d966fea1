"""Zone files: RFC 1035 5.1 master files as BIND reads them, and the canonical form secondns writes.

Records are ``(owner, type, ttl, rdata)`` tuples with the owner in wire form
(case preserved) and the rdata as uncompressed wire bytes, so what a primary
sent is what lands on disk and what comes back: ``rdata_to_text`` falls back
to the RFC 3597 generic form for anything it cannot render exactly, and the
parser accepts every generic form for every type.

The text-to-wire converters are written here rather than borrowed from dnslib
because loading the on-disk copy is on the restart path: a canonical file (one
absolute record per line, what ``write_zone`` produces) takes a fast path that
skips the general tokenizer and caches name conversions.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import datetime
import re
import socket
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TextIO

from secondns import rrtypes
from secondns.errors import NameError_, ZoneError, ZoneFileError
from secondns.names import from_text as name_from_text
from secondns.names import label_text
from secondns.names import to_text as name_to_text
from secondns.zone import Zone, ZoneBuilder

Record = tuple[bytes, int, int, bytes]

MAX_TTL = 0x7FFFFFFF  # RFC 2181 8
_INCLUDE_DEPTH = 16
_CACHE_LIMIT = 1 << 16

__all__ = [
    "MAX_TTL",
    "SUPPORTED_TYPES",
    "Record",
    "format_record",
    "load_zone_file",
    "load_zone_text",
    "parse_ttl",
    "parse_zone_text",
    "rdata_to_text",
    "write_zone",
    "zone_text_chunks",
]


class _Quoted(str):
    """A token written in double quotes: never a keyword, a TTL or ``\\#``."""

    __slots__ = ()


class _Names:
    """Text-to-wire name conversion against one origin, with a bounded cache.

    Most names in a zone file repeat (the owner of every record of an RRset,
    NS and MX targets), and a dict probe is far cheaper than re-encoding.
    """

    __slots__ = ("cache", "origin")

    def __init__(self, origin: bytes) -> None:
        self.origin = origin
        self.cache: dict[str, bytes] = {}

    def set_origin(self, origin: bytes) -> None:
        if origin != self.origin:
            self.origin = origin
            self.cache = {}

    def __call__(self, text: str) -> bytes:
        wire = self.cache.get(text)
        if wire is None:
            wire = self.uncached(text)
            if len(self.cache) >= _CACHE_LIMIT:
                self.cache.clear()
            self.cache[text] = wire
        return wire

    def uncached(self, text: str) -> bytes:
        """Convert without caching *text* itself, only its parent (owners rarely repeat)."""
        dot = text.find(".")
        if dot <= 0 or dot > 63 or "\\" in text:
            return name_from_text(text, self.origin)
        rest = text[dot + 1:]
        label = text[:dot].encode("utf-8")
        if len(label) > 63 or rest == "@" or rest[:1] == ".":
            # "@" is special only as a whole name; ".." is an empty label: leave both to names.
            return name_from_text(text, self.origin)
        wire = bytes((len(label),)) + label + (self(rest) if rest else b"\x00")
        if len(wire) > 255:
            return name_from_text(text, self.origin)  # raises with the usual message
        return wire


Converter = Callable[[Sequence[str], _Names], bytes]
Decoder = Callable[[bytes], str]


# ---------------------------------------------------------------------------
# Field parsers (text -> wire)


def _uint(tok: str, bits: int, what: str) -> int:
    if not (tok.isascii() and tok.isdigit()):
        raise ValueError(f"bad {what} {tok!r}: not a decimal number")
    value = int(tok)
    if value >> bits:
        raise ValueError(f"{what} {tok} out of range")
    return value


def _u8(tok: str, what: str) -> bytes:
    return bytes((_uint(tok, 8, what),))


def _u16(tok: str, what: str) -> bytes:
    return _uint(tok, 16, what).to_bytes(2, "big")


def _u32(tok: str, what: str) -> bytes:
    return _uint(tok, 32, what).to_bytes(4, "big")


_TTL_RE = re.compile(r"(?:[0-9]+[WwDdHhMmSs])+")
_TTL_PART_RE = re.compile(r"([0-9]+)([WwDdHhMmSs])")
_TTL_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_ttl(tok: str) -> int:
    """A TTL as BIND's ``dns_ttl_fromtext`` reads it: seconds, or units like ``1h30m`` or ``2W``.

    A bare number after units (``1h30``) is refused, as in BIND and dnspython.
    """
    if tok.isascii() and tok.isdigit():
        value = int(tok)
    elif _TTL_RE.fullmatch(tok):
        value = sum(int(n) * _TTL_UNITS[u.lower()] for n, u in _TTL_PART_RE.findall(tok))
    else:
        raise ValueError(f"bad TTL {tok!r}")
    if value > 0xFFFFFFFF:
        raise ValueError(f"TTL {tok} out of range")
    return value


def _limit_ttl(ttl: int) -> int:
    # RFC 2181 8: values with the top bit set are treated as zero (BIND does so, with a warning).
    return 0 if ttl > MAX_TTL else ttl


_ESC_RE = re.compile(rb"\\(?:([0-9]{3})|([^0-9])|(.?))", re.S)


def _unescape_sub(m: re.Match[bytes]) -> bytes:
    digits, char, _bad = m.groups()
    if digits is not None:
        value = int(digits)
        if value > 255:
            raise ValueError(f"bad escape \\{digits.decode()}")
        return bytes((value,))
    if char is not None:
        return char
    raise ValueError("bad escape: a backslash needs a character or three digits")


def _text_bytes(tok: str) -> bytes:
    """RFC 1035 5.1 escapes: ``\\X`` is X, ``\\DDD`` the octet with that decimal value."""
    raw = tok.encode("utf-8")
    if b"\\" not in raw:
        return raw
    return _ESC_RE.sub(_unescape_sub, raw)


def _cstring(tok: str) -> bytes:
    raw = _text_bytes(tok)
    if len(raw) > 255:
        raise ValueError("character-string longer than 255 octets")
    return bytes((len(raw),)) + raw


def _hex(args: Sequence[str], what: str) -> bytes:
    if not args:
        raise ValueError(f"missing {what}")
    try:
        return bytes.fromhex("".join(args))
    except ValueError:
        raise ValueError(f"bad hex in {what}")


def _b64(args: Sequence[str], what: str) -> bytes:
    if not args:
        raise ValueError(f"missing {what}")
    try:
        return base64.b64decode("".join(args), validate=True)
    except binascii.Error:
        raise ValueError(f"bad base64 in {what}")


def _b32hex(tok: str) -> bytes:
    # RFC 5155 3.3: base32hex (RFC 4648 7) without padding, case-insensitive.
    padded = tok.upper() + "=" * (-len(tok) % 8)
    try:
        return base64.b32hexdecode(padded)
    except (binascii.Error, ValueError):
        raise ValueError(f"bad base32hex {tok!r}")


def _count(args: Sequence[str], n: int, what: str) -> None:
    if len(args) != n:
        raise ValueError(f"{what} needs {n} fields, got {len(args)}")


def _at_least(args: Sequence[str], n: int, what: str) -> None:
    if len(args) < n:
        raise ValueError(f"{what} needs at least {n} fields, got {len(args)}")


_TYPE_BY_TEXT: dict[str, int] = {}  # exact spelling -> code, for types with a converter

# IANA mnemonics rrtypes does not list, so that type bitmaps, RRSIG "type covered" and
# generic records written by BIND (named-checkzone -D, named-compilezone) parse here.
_MORE_TYPES = {
    "X25": 19, "ISDN": 20, "NSAP": 22, "NSAP-PTR": 23, "GPOS": 27, "LOC": 29, "EID": 31,
    "NIMLOC": 32, "ATMA": 34, "A6": 38, "SINK": 40, "APL": 42, "IPSECKEY": 45, "DHCID": 49,
    "SMIMEA": 53, "HIP": 55, "NINFO": 56, "RKEY": 57, "TALINK": 58, "OPENPGPKEY": 61,
    "CSYNC": 62, "DSYNC": 66, "HHIT": 67, "BRID": 68, "UINFO": 100, "UID": 101, "GID": 102,
    "UNSPEC": 103, "NID": 104, "L32": 105, "L64": 106, "LP": 107, "EUI48": 108, "EUI64": 109,
    "NXNAME": 128, "AVC": 258, "DOA": 259, "AMTRELAY": 260, "RESINFO": 261, "WALLET": 262,
    "CLA": 263, "IPN": 264, "TA": 32768, "DLV": 32769, "KEYDATA": 65533,
}


def _type(tok: str) -> int:
    code = _TYPE_BY_TEXT.get(tok)
    if code is not None:
        return code
    try:
        return rrtypes.type_code(tok)  # case-insensitive, TYPEnnn (RFC 3597 5)
    except ValueError:
        code = _MORE_TYPES.get(tok.upper())
        if code is None:
            raise
        return code


_ALGORITHMS = {
    "RSAMD5": 1, "DH": 2, "DSA": 3, "ECC": 4, "RSASHA1": 5, "DSA-NSEC3-SHA1": 6, "NSEC3DSA": 6,
    "RSASHA1-NSEC3-SHA1": 7, "NSEC3RSASHA1": 7, "RSASHA256": 8, "RSASHA512": 10, "ECC-GOST": 12,
    "ECCGOST": 12, "ECDSAP256SHA256": 13, "ECDSAP384SHA384": 14, "ED25519": 15, "ED448": 16,
    "INDIRECT": 252, "PRIVATEDNS": 253, "PRIVATEOID": 254,
}
_DIGEST_TYPES = {"SHA-1": 1, "SHA1": 1, "SHA-256": 2, "SHA256": 2, "GOST": 3, "SHA-384": 4, "SHA384": 4}
# Digest lengths BIND insists on (RFC 4034 5.1.4, RFC 4509, RFC 5933, RFC 6605).
_DS_DIGEST_LEN = {1: 20, 2: 32, 3: 32, 4: 48}
_SSHFP_LEN = {1: 20, 2: 32}  # RFC 4255, RFC 6594
_ZONEMD_LEN = {1: 48, 2: 64}  # RFC 8976 2.2.4


def _mnemonic(tok: str, table: dict[str, int], what: str) -> bytes:
    code = table.get(tok.upper())
    if code is not None:
        return bytes((code,))
    return _u8(tok, what)


def _digest_ok(table: dict[int, int], kind: int, digest: bytes) -> bool:
    want = table.get(kind)
    return len(digest) == want if want is not None else len(digest) > 0


def _sig_time(tok: str) -> bytes:
    """RRSIG times (RFC 4034 3.2): YYYYMMDDHHmmSS in UTC or plain seconds, kept modulo 2**32."""
    if not (tok.isascii() and tok.isdigit()):
        raise ValueError(f"bad signature time {tok!r}")
    if len(tok) <= 10:  # BIND: ten digits or fewer is a number of seconds
        value = int(tok)
        if value > 0xFFFFFFFF:
            raise ValueError(f"signature time {tok} out of range")
        return value.to_bytes(4, "big")
    if len(tok) != 14:
        raise ValueError(f"bad signature time {tok!r}")
    try:
        when = datetime.datetime(int(tok[0:4]), int(tok[4:6]), int(tok[6:8]),
                                 int(tok[8:10]), int(tok[10:12]), int(tok[12:14]))
    except ValueError:
        raise ValueError(f"bad signature time {tok!r}")
    # Serial arithmetic (RFC 4034 3.1.5): BIND prints the date nearest to now, so dates
    # before 1970 and after 2106 both occur and wrap to the same 32-bit value.
    return (calendar.timegm(when.timetuple()) & 0xFFFFFFFF).to_bytes(4, "big")


def _bitmap(args: Sequence[str]) -> bytes:
    """RFC 4034 4.1.2 type bitmap: per 256-type window, the octets up to the last one in use."""
    out = bytearray()
    window = -1
    bits = bytearray()
    for code in sorted({_type(tok) for tok in args}):
        if code >> 8 != window:
            if bits:
                out += bytes((window, len(bits))) + bits
            window = code >> 8
            bits = bytearray()
        low = code & 0xFF
        idx = low >> 3
        if len(bits) <= idx:
            bits.extend(bytes(idx + 1 - len(bits)))
        bits[idx] |= 0x80 >> (low & 7)
    if bits:
        out += bytes((window, len(bits))) + bits
    return bytes(out)


def _salt(tok: str) -> bytes:
    # RFC 5155 3.3: "-" is the empty salt.
    if tok == "-":
        return b"\x00"
    salt = _hex([tok], "salt")
    if len(salt) > 255:
        raise ValueError("salt longer than 255 octets")
    return bytes((len(salt),)) + salt


# ---------------------------------------------------------------------------
# Per-type converters (text -> wire), each given the rdata tokens


def _from_a(args: Sequence[str], names: _Names) -> bytes:
    _count(args, 1, "A")
    try:
        return socket.inet_pton(socket.AF_INET, args[0])
    except OSError:
        raise ValueError(f"bad IPv4 address {args[0]!r}")


def _from_aaaa(args: Sequence[str], names: _Names) -> bytes:
    _count(args, 1, "AAAA")
    try:
        return socket.inet_pton(socket.AF_INET6, args[0])
    except OSError:
        raise ValueError(f"bad IPv6 address {args[0]!r}")


def _from_name(args: Sequence[str], names: _Names) -> bytes:
    _count(args, 1, "this type")
    return names(args[0])


def _from_pref_name(args: Sequence[str], names: _Names) -> bytes:
    # MX (RFC 1035 3.3.9), AFSDB (RFC 1183 1), KX (RFC 2230)
    _count(args, 2, "this type")
    pref = args[0]
    if pref.isdigit() and len(pref) < 5:
        return int(pref).to_bytes(2, "big") + names(args[1])
    return _u16(pref, "preference") + names(args[1])


def _from_two_names(args: Sequence[str], names: _Names) -> bytes:
    # RP (RFC 1183 2.2)
    _count(args, 2, "RP")
    return names(args[0]) + names(args[1])


def _from_soa(args: Sequence[str], names: _Names) -> bytes:
    # RFC 1035 3.3.13; BIND takes TTL units in the four timers.
    _count(args, 7, "SOA")
    timers = b"".join(parse_ttl(tok).to_bytes(4, "big") for tok in args[3:])
    return names(args[0]) + names(args[1]) + _u32(args[2], "serial") + timers


def _from_txt(args: Sequence[str], names: _Names) -> bytes:
    # RFC 1035 3.3.14: one or more character-strings.
    if not args:
        raise ValueError("TXT needs at least one string")
    out = []
    for tok in args:
        raw = tok.encode("utf-8")
        if b"\\" in raw or len(raw) > 255:
            out.append(_cstring(tok))
        else:
            out.append(bytes((len(raw),)))
            out.append(raw)
    return b"".join(out)


def _from_hinfo(args: Sequence[str], names: _Names) -> bytes:
    _count(args, 2, "HINFO")
    return _cstring(args[0]) + _cstring(args[1])


def _from_srv(args: Sequence[str], names: _Names) -> bytes:
    # RFC 2782
    _count(args, 4, "SRV")
    return (_u16(args[0], "priority") + _u16(args[1], "weight") + _u16(args[2], "port")
            + names(args[3]))


def _from_naptr(args: Sequence[str], names: _Names) -> bytes:
    # RFC 3403 4.1
    _count(args, 6, "NAPTR")
    return (_u16(args[0], "order") + _u16(args[1], "preference") + _cstring(args[2])
            + _cstring(args[3]) + _cstring(args[4]) + names(args[5]))


def _from_caa(args: Sequence[str], names: _Names) -> bytes:
    # RFC 8659 4.1: the tag is letters and digits; the value runs to the end of the rdata.
    _count(args, 3, "CAA")
    tag = args[1]
    if not (tag and tag.isascii() and tag.isalnum() and len(tag) <= 255):
        raise ValueError(f"bad CAA tag {tag!r}")
    return _u8(args[0], "flags") + bytes((len(tag),)) + tag.encode("ascii") + _text_bytes(args[2])


def _from_ds(args: Sequence[str], names: _Names) -> bytes:
    # RFC 4034 5.3; CDS is the same (RFC 7344 3.1).
    _at_least(args, 4, "DS")
    digest_type = _mnemonic(args[2], _DIGEST_TYPES, "digest type")
    digest = _hex(args[3:], "digest")
    if not _digest_ok(_DS_DIGEST_LEN, digest_type[0], digest):
        raise ValueError(f"digest of {len(digest)} octets does not fit digest type {digest_type[0]}")
    return _u16(args[0], "key tag") + _mnemonic(args[1], _ALGORITHMS, "algorithm") + digest_type + digest


def _from_dnskey(args: Sequence[str], names: _Names) -> bytes:
    # RFC 4034 2.2; CDNSKEY is the same (RFC 7344 3.2).
    _at_least(args, 4, "DNSKEY")
    return (_u16(args[0], "flags") + _u8(args[1], "protocol")
            + _mnemonic(args[2], _ALGORITHMS, "algorithm") + _b64(args[3:], "public key"))


def _from_rrsig(args: Sequence[str], names: _Names) -> bytes:
    # RFC 4034 3.2
    _at_least(args, 9, "RRSIG")
    return (_type(args[0]).to_bytes(2, "big") + _mnemonic(args[1], _ALGORITHMS, "algorithm")
            + _u8(args[2], "labels") + parse_ttl(args[3]).to_bytes(4, "big")
            + _sig_time(args[4]) + _sig_time(args[5]) + _u16(args[6], "key tag")
            + names(args[7]) + _b64(args[8:], "signature"))


def _from_nsec(args: Sequence[str], names: _Names) -> bytes:
    # RFC 4034 4.2
    _at_least(args, 1, "NSEC")
    return names(args[0]) + _bitmap(args[1:])


def _from_nsec3(args: Sequence[str], names: _Names) -> bytes:
    # RFC 5155 3.3
    _at_least(args, 5, "NSEC3")
    nxt = _b32hex(args[4])
    if not 0 < len(nxt) < 256:
        raise ValueError("bad next hashed owner name length")
    return (_u8(args[0], "hash algorithm") + _u8(args[1], "flags") + _u16(args[2], "iterations")
            + _salt(args[3]) + bytes((len(nxt),)) + nxt + _bitmap(args[5:]))


def _from_nsec3param(args: Sequence[str], names: _Names) -> bytes:
    # RFC 5155 4.3
    _count(args, 4, "NSEC3PARAM")
    return (_u8(args[0], "hash algorithm") + _u8(args[1], "flags") + _u16(args[2], "iterations")
            + _salt(args[3]))


def _from_sshfp(args: Sequence[str], names: _Names) -> bytes:
    # RFC 4255 3.2
    _at_least(args, 3, "SSHFP")
    fp_type = _uint(args[1], 8, "fingerprint type")
    fingerprint = _hex(args[2:], "fingerprint")
    if not _digest_ok(_SSHFP_LEN, fp_type, fingerprint):
        raise ValueError(f"fingerprint of {len(fingerprint)} octets does not fit type {fp_type}")
    return _u8(args[0], "algorithm") + bytes((fp_type,)) + fingerprint


def _from_tlsa(args: Sequence[str], names: _Names) -> bytes:
    # RFC 6698 2.2
    _at_least(args, 4, "TLSA")
    return (_u8(args[0], "usage") + _u8(args[1], "selector") + _u8(args[2], "matching type")
            + _hex(args[3:], "certificate association data"))


def _from_zonemd(args: Sequence[str], names: _Names) -> bytes:
    # RFC 8976 2.3
    _at_least(args, 4, "ZONEMD")
    hash_alg = _uint(args[2], 8, "hash algorithm")
    digest = _hex(args[3:], "digest")
    if not _digest_ok(_ZONEMD_LEN, hash_alg, digest):
        raise ValueError(f"digest of {len(digest)} octets does not fit hash algorithm {hash_alg}")
    return _u32(args[0], "serial") + _u8(args[1], "scheme") + bytes((hash_alg,)) + digest


def _from_uri(args: Sequence[str], names: _Names) -> bytes:
    # RFC 7553 4.5: the target is the rest of the rdata, no length octet.
    _count(args, 3, "URI")
    return _u16(args[0], "priority") + _u16(args[1], "weight") + _text_bytes(args[2])


_FROM_TEXT: dict[int, Converter] = {
    rrtypes.A: _from_a, rrtypes.AAAA: _from_aaaa,
    rrtypes.NS: _from_name, rrtypes.CNAME: _from_name, rrtypes.DNAME: _from_name,
    rrtypes.PTR: _from_name,
    rrtypes.MX: _from_pref_name, rrtypes.AFSDB: _from_pref_name, rrtypes.KX: _from_pref_name,
    rrtypes.RP: _from_two_names, rrtypes.SOA: _from_soa,
    rrtypes.TXT: _from_txt, rrtypes.SPF: _from_txt, rrtypes.HINFO: _from_hinfo,
    rrtypes.SRV: _from_srv, rrtypes.NAPTR: _from_naptr, rrtypes.CAA: _from_caa,
    rrtypes.DS: _from_ds, rrtypes.CDS: _from_ds,
    rrtypes.DNSKEY: _from_dnskey, rrtypes.CDNSKEY: _from_dnskey,
    rrtypes.RRSIG: _from_rrsig, rrtypes.NSEC: _from_nsec, rrtypes.NSEC3: _from_nsec3,
    rrtypes.NSEC3PARAM: _from_nsec3param, rrtypes.SSHFP: _from_sshfp, rrtypes.TLSA: _from_tlsa,
    rrtypes.ZONEMD: _from_zonemd, rrtypes.URI: _from_uri,
}
SUPPORTED_TYPES = frozenset(_FROM_TEXT)
# Types whose converter cannot build rdata that rrtypes.check_rdata refuses, except by
# making it too long: the canonical fast path (a million-record copy at every start)
# checks only the length for these.  test_any_bytes_round_trip_for_any_type holds
# the two in step.
_BUILT_VALID = frozenset({
    rrtypes.A, rrtypes.AAAA, rrtypes.NS, rrtypes.CNAME, rrtypes.DNAME, rrtypes.PTR, rrtypes.MX,
    rrtypes.AFSDB, rrtypes.KX, rrtypes.RP, rrtypes.SOA, rrtypes.SRV, rrtypes.TXT, rrtypes.SPF,
    rrtypes.HINFO, rrtypes.NAPTR,
})

for _code in _FROM_TEXT:
    _TYPE_BY_TEXT[rrtypes.type_name(_code)] = _code
del _code


def _generic_from_text(args: Sequence[str]) -> bytes:
    # RFC 3597 5: \# <length> <hex>, the hex in as many words as the writer liked.
    if not args:
        raise ValueError("generic rdata needs a length")
    length = _uint(args[0], 16, "generic rdata length")
    data = _hex(args[1:], "generic rdata") if len(args) > 1 else b""
    if len(data) != length:
        raise ValueError(f"generic rdata has {len(data)} octets, length says {length}")
    return data


def _rdata_from_text(rtype: int, args: Sequence[str], names: _Names) -> bytes:
    if args and args[0] == "\\#" and type(args[0]) is not _Quoted:
        rdata = _generic_from_text(args[1:])
    else:
        conv = _FROM_TEXT.get(rtype)
        if conv is None:
            raise ValueError(f"type {rrtypes.type_name(rtype)} is only accepted in the RFC 3597 "
                             "generic form: \\# <length> <hex>")
        rdata = conv(args, names)
    # RFC 3597 5: generic rdata of a known type must still be valid for that type
    # (BIND's named-checkzone refuses "MX \\# 3 000A05" too).
    why = rrtypes.check_rdata(rtype, rdata)
    if why is not None:
        raise ValueError(f"invalid {rrtypes.type_name(rtype)} rdata: {why}")
    return rdata


# ---------------------------------------------------------------------------
# Tokenizer and parser

# One token per match: a quoted string, a comment, a parenthesis, a word (escapes kept for
# the field parsers), or a stray character that starts nothing valid.
_TOKEN_RE = re.compile(r'"((?:[^"\\]|\\.)*)"|(;)|([()])|((?:[^\s"();\\]|\\.)+)|(\S)')
_SLOW_FIRST = frozenset(" \t;$()\"\r")


def _split_quoted(line: str) -> list[str] | None:
    """Tokens of a line whose quoted strings hold no escapes, parentheses or semicolons."""
    segs = line.split('"')
    if not len(segs) & 1:
        return None
    toks: list[str] = segs[0].split()
    for i in range(1, len(segs), 2):
        toks.append(_Quoted(segs[i]))
        toks.extend(segs[i + 1].split())
    return toks


class _Parser:
    """Parsing state that spans $INCLUDE files (BIND shares the TTL state with included files)."""

    __slots__ = ("default_ttl", "last_ttl", "line", "path")

    def __init__(self, default_ttl: int | None) -> None:
        self.default_ttl = default_ttl  # from $TTL
        self.last_ttl: int | None = None  # last explicit TTL, RFC 1035 semantics
        self.path = ""
        self.line = 0  # where the record last yielded came from

    def parse(self, text: str, origin: bytes, path: str, depth: int = 0) -> Iterator[Record]:
        names = _Names(origin)
        prev_owner: bytes | None = None
        prev_text = ""  # owner text of the last fast-path line, and its wire form
        prev_wire = b""
        nesting = 0  # parentheses open across lines
        toks: list[str] = []
        entry_line = 0
        entry_ws = False
        slow_first = _SLOW_FIRST
        type_by_text = _TYPE_BY_TEXT
        from_text = _FROM_TEXT
        built_valid = _BUILT_VALID
        max_rdata = rrtypes.MAX_RDATA
        self.path = path
        for lineno, line in enumerate(text.split("\n"), 1):
            if not line:
                continue
            try:
                if not nesting:
                    entry_line = lineno
                    # Fast path: "owner ttl IN TYPE rdata" with nothing that needs the tokenizer.
                    if (line[0] not in slow_first and "\\" not in line and ";" not in line
                            and "(" not in line and ")" not in line):
                        fast = _split_quoted(line) if '"' in line else line.split()
                        if fast is not None:
                            if len(fast) >= 4 and fast[2] == "IN" and fast[1].isdigit():
                                rtype = type_by_text.get(fast[3])
                                if rtype is not None:
                                    if fast[0] == prev_text:
                                        owner = prev_wire
                                    else:
                                        owner = names.uncached(fast[0])
                                        prev_text = fast[0]
                                        prev_wire = owner
                                    rdata = from_text[rtype](fast[4:], names)
                                    if rtype not in built_valid or len(rdata) > max_rdata:
                                        why = rrtypes.check_rdata(rtype, rdata)
                                        if why is not None:
                                            raise ValueError(f"invalid {fast[3]} rdata: {why}")
                                    ttl = int(fast[1])
                                    if ttl > MAX_TTL:
                                        ttl = _limit_ttl(ttl)
                                    self.last_ttl = ttl
                                    prev_owner = owner
                                    self.line = lineno
                                    yield owner, rtype, ttl, rdata
                                    continue
                            if fast:
                                record = self._record(fast, False, names, prev_owner)
                                prev_owner = record[0]
                                self.line = lineno
                                yield record
                            continue
                    entry_ws = line[0] in " \t"
                    toks = []
                for m in _TOKEN_RE.finditer(line):
                    quoted, comment, paren, word, stray = m.groups()
                    if word is not None:
                        toks.append(word)
                    elif quoted is not None:
                        toks.append(_Quoted(quoted))
                    elif paren is not None:
                        if paren == "(":
                            nesting += 1
                        elif nesting:
                            nesting -= 1
                        else:
                            raise ValueError("')' without '('")
                    elif comment is not None:
                        break
                    elif stray == '"':
                        raise ValueError("unterminated quoted string")
                    else:
                        raise ValueError(f"unexpected {stray!r}")
                if nesting or not toks:
                    continue
                first = toks[0]
                if not entry_ws and first.startswith("$") and type(first) is not _Quoted:
                    if first.upper() == "$INCLUDE":
                        inc_path, inc_origin = self._include_target(toks, names, path, depth)
                        yield from self._include(inc_path, inc_origin, depth)
                        self.path = path
                    else:
                        names.set_origin(self._directive(toks, names))
                        prev_text = ""  # a relative owner means something else now
                    continue
                record = self._record(toks, entry_ws, names, prev_owner)
                prev_owner = record[0]
                self.line = entry_line
                yield record
            except (ValueError, NameError_, OSError) as exc:
                raise ZoneFileError(str(exc), path, entry_line) from None
        if nesting:
            raise ZoneFileError("'(' never closed", path, entry_line)

    def _directive(self, toks: list[str], names: _Names) -> bytes:
        """$ORIGIN and $TTL (RFC 1035 5.1, RFC 2308 4); returns the origin from here on."""
        keyword = toks[0].upper()
        if keyword == "$ORIGIN":
            _count(toks[1:], 1, "$ORIGIN")
            return name_from_text(toks[1], names.origin)
        if keyword == "$TTL":
            _count(toks[1:], 1, "$TTL")
            self.default_ttl = _limit_ttl(parse_ttl(toks[1]))
            return names.origin
        if keyword == "$GENERATE":
            raise ValueError("$GENERATE is not supported")
        raise ValueError(f"unknown directive {toks[0]}")

    def _include_target(self, toks: list[str], names: _Names, path: str,
                        depth: int) -> tuple[Path, bytes]:
        # RFC 1035 5.1: $INCLUDE <file-name> [<domain-name>]; the origin reverts afterwards.
        if not 2 <= len(toks) <= 3:
            raise ValueError("$INCLUDE needs a file name and at most an origin")
        if not path:
            raise ValueError("$INCLUDE is only allowed in a zone file read from a path")
        if depth >= _INCLUDE_DEPTH:
            raise ValueError("$INCLUDE nested too deeply")
        target = Path(_text_bytes(toks[1]).decode("utf-8", "surrogateescape"))
        if not target.is_absolute():
            target = Path(path).parent / target
        origin = name_from_text(toks[2], names.origin) if len(toks) == 3 else names.origin
        return target, origin

    def _include(self, target: Path, origin: bytes, depth: int) -> Iterator[Record]:
        try:
            text = _read_text(target)
        except OSError as exc:
            raise ValueError(f"cannot read $INCLUDE file {target}: {exc.strerror}")
        yield from self.parse(text, origin, str(target), depth + 1)

    def _record(self, toks: list[str], blank_owner: bool, names: _Names,
                prev_owner: bytes | None) -> Record:
        i = 0
        if blank_owner:
            # RFC 1035 5.1: a blank owner means the previous one.
            if prev_owner is None:
                raise ValueError("line starts with blank but there is no previous owner name")
            owner = prev_owner
        else:
            owner = names(toks[0])
            i = 1
        n = len(toks)
        ttl: int | None = None
        seen_class = False
        # RFC 1035 5.1: TTL and class are optional and may come in either order.
        while i < n and type(toks[i]) is not _Quoted:
            tok = toks[i]
            if tok[:1].isdigit() and ttl is None:
                ttl = parse_ttl(tok)
            elif not seen_class and rrtypes.is_class(tok):
                if rrtypes.class_code(tok) != rrtypes.CLASS_IN:
                    raise ValueError(f"class {tok} is not supported: zone data must be class IN")
                seen_class = True
            else:
                break
            i += 1
        if i >= n:
            raise ValueError("missing RR type")
        rtype = _type(toks[i])
        rdata = _rdata_from_text(rtype, toks[i + 1:], names)
        if ttl is not None:
            ttl = _limit_ttl(ttl)
            self.last_ttl = ttl
        elif self.default_ttl is not None:
            ttl = self.default_ttl
        elif self.last_ttl is not None:
            ttl = self.last_ttl
        elif rtype == rrtypes.SOA and len(rdata) >= 20:
            # BIND: with no $TTL and no TTL yet, the SOA MINIMUM becomes the default.
            ttl = _limit_ttl(int.from_bytes(rdata[-4:], "big"))
            self.default_ttl = ttl
        else:
            raise ValueError("no TTL given and no $TTL or earlier TTL to default to")
        return owner, rtype, ttl, rdata


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ZoneFileError("not valid UTF-8", str(path), line) from None


def parse_zone_text(text: str, origin: bytes, *, path: str = "",
                    default_ttl: int | None = None) -> Iterator[Record]:
    """Parse master-file text into (owner, type, ttl, rdata) tuples, lazily.

    Follows BIND: $ORIGIN, $TTL (with units), $INCLUDE (relative to *path*'s
    directory), ``@``, relative names, blank owners, parentheses, quoted
    strings, TTL and class in either order, TYPEnnn and RFC 3597 ``\\#``
    rdata for any type.  TTL defaults are BIND's: an explicit TTL wins, else
    $TTL (or *default_ttl*), else the last explicit TTL (RFC 1035), else, for
    an SOA, its MINIMUM field, which then becomes the default; any other
    record with no TTL to fall back on is an error.  Generic rdata is taken
    as is, even for known types, as long as it is valid for its type
    (``rrtypes.check_rdata``), which every record secondns stores is.
    """
    return _Parser(default_ttl).parse(text, origin, path)


def load_zone_text(text: str, origin: bytes, *, path: str = "") -> Zone:
    """Build a Zone from master-file text; a record outside *origin* is an error."""
    parser = _Parser(None)
    builder = ZoneBuilder(origin)
    add = builder.add
    try:
        for owner, rtype, ttl, rdata in parser.parse(text, origin, path):
            if not add(owner, rtype, ttl, rdata):
                raise ZoneFileError(f"{name_to_text(owner)} is outside the zone {name_to_text(origin)}",
                                    parser.path, parser.line)
    except ZoneFileError:
        raise
    except ZoneError as exc:
        raise ZoneFileError(str(exc), parser.path, parser.line) from None
    try:
        return builder.build()
    except ZoneError as exc:
        raise ZoneFileError(str(exc), path) from None


def load_zone_file(path: str | Path, origin: bytes) -> Zone:
    """Read a zone file from disk into a Zone (see ``parse_zone_text`` for the syntax)."""
    try:
        text = _read_text(Path(path))
    except OSError as exc:
        raise ZoneFileError(f"cannot read: {exc.strerror}", str(path)) from None
    return load_zone_text(text, origin, path=str(path))


# ---------------------------------------------------------------------------
# Wire -> text


class _Malformed(Exception):
    """Rdata that has no exact type-specific text form; it is written generically."""


_NAME_TEXT: dict[bytes, str] = {b"\x00": "."}


def _name_text(name: bytes) -> str:
    """Absolute presentation form of a name already checked well formed, cached by suffix."""
    text = _NAME_TEXT.get(name)
    if text is None:
        length = name[0]
        if not length:
            return "."  # not from the cache: another thread may be clearing it
        rest = _name_text(name[length + 1:])
        label = label_text(name[1:length + 1])
        text = label + "." if rest == "." else label + "." + rest
        if len(_NAME_TEXT) >= _CACHE_LIMIT:
            _NAME_TEXT.clear()
            _NAME_TEXT[b"\x00"] = "."
        _NAME_TEXT[name] = text
    return text


def _owner_text(name: bytes) -> str:
    """Like ``_name_text`` but caching only the parent: owners rarely repeat once written."""
    length = name[0]
    if not length:
        return "."
    rest = _name_text(name[length + 1:])
    label = label_text(name[1:length + 1])
    return label + "." if rest == "." else label + "." + rest


def _read_name(rdata: bytes, pos: int) -> tuple[bytes, int]:
    start = pos
    end = len(rdata)
    while True:
        if pos >= end:
            raise _Malformed
        length = rdata[pos]
        if length == 0:
            pos += 1
            break
        if length > 63:
            raise _Malformed  # compression pointers never appear in stored rdata
        pos += length + 1
    if pos > end or pos - start > 255:
        raise _Malformed
    return rdata[start:pos], pos


def _whole_name(rdata: bytes, pos: int) -> str:
    name = rdata[pos:]
    text = _NAME_TEXT.get(name)
    if text is not None:
        return text
    name, end = _read_name(rdata, pos)
    if end != len(rdata):
        raise _Malformed
    return _name_text(name)


_TXT_PLAIN = bytes(c for c in range(0x20, 0x7F) if c not in b'"\\')


def _quote(data: bytes) -> str:
    if not data.translate(None, _TXT_PLAIN):
        return '"' + data.decode("ascii") + '"'
    out = ['"']
    for c in data:
        if c == 0x22 or c == 0x5C:
            out.append("\\" + chr(c))
        elif 0x20 <= c <= 0x7E:
            out.append(chr(c))
        else:
            out.append(f"\\{c:03d}")
    out.append('"')
    return "".join(out)


def _read_cstring(rdata: bytes, pos: int) -> tuple[str, int]:
    length = rdata[pos]
    end = pos + 1 + length
    if end > len(rdata):
        raise _Malformed
    return _quote(rdata[pos + 1:end]), end


def _hex_text(data: bytes) -> str:
    if not data:
        raise _Malformed
    return data.hex().upper()


def _b64_text(data: bytes) -> str:
    if not data:
        raise _Malformed
    return base64.b64encode(data).decode("ascii")


def _bitmap_text(data: bytes) -> str:
    """Type mnemonics of an RFC 4034 4.1.2 bitmap; anything not in canonical form is malformed."""
    types = []
    pos = 0
    end = len(data)
    last_window = -1
    while pos < end:
        if pos + 2 > end:
            raise _Malformed
        window, length = data[pos], data[pos + 1]
        bits = data[pos + 2:pos + 2 + length]
        if window <= last_window or not 1 <= length <= 32 or len(bits) != length or bits[-1] == 0:
            raise _Malformed
        last_window = window
        for i, octet in enumerate(bits):
            for bit in range(8):
                if octet & (0x80 >> bit):
                    types.append(rrtypes.type_name((window << 8) | (i << 3) | bit))
        pos += 2 + length
    return " ".join(types)


def _u16_at(rdata: bytes, pos: int) -> int:
    if pos + 2 > len(rdata):
        raise _Malformed
    return (rdata[pos] << 8) | rdata[pos + 1]


def _to_a(rdata: bytes) -> str:
    if len(rdata) != 4:
        raise _Malformed
    return socket.inet_ntop(socket.AF_INET, rdata)


def _to_aaaa(rdata: bytes) -> str:
    if len(rdata) != 16:
        raise _Malformed
    return socket.inet_ntop(socket.AF_INET6, rdata)


def _to_name(rdata: bytes) -> str:
    return _whole_name(rdata, 0)


def _to_pref_name(rdata: bytes) -> str:
    return f"{_u16_at(rdata, 0)} {_whole_name(rdata, 2)}"


def _to_two_names(rdata: bytes) -> str:
    first, pos = _read_name(rdata, 0)
    return f"{_name_text(first)} {_whole_name(rdata, pos)}"


def _to_soa(rdata: bytes) -> str:
    mname, pos = _read_name(rdata, 0)
    rname, pos = _read_name(rdata, pos)
    if len(rdata) != pos + 20:
        raise _Malformed
    counters = struct.unpack_from("!5I", rdata, pos)
    return f"{_name_text(mname)} {_name_text(rname)} " + " ".join(map(str, counters))


def _to_txt(rdata: bytes) -> str:
    if not rdata:
        raise _Malformed
    length = rdata[0]
    if length + 1 == len(rdata):
        return _quote(rdata[1:])
    parts = []
    pos = 0
    end = len(rdata)
    while pos < end:
        text, pos = _read_cstring(rdata, pos)
        parts.append(text)
    return " ".join(parts)


def _to_hinfo(rdata: bytes) -> str:
    cpu, pos = _read_cstring(rdata, 0)
    os_, pos = _read_cstring(rdata, pos)
    if pos != len(rdata):
        raise _Malformed
    return f"{cpu} {os_}"


def _to_srv(rdata: bytes) -> str:
    if len(rdata) < 7:
        raise _Malformed
    prio, weight, port = struct.unpack_from("!3H", rdata)
    return f"{prio} {weight} {port} {_whole_name(rdata, 6)}"


def _to_naptr(rdata: bytes) -> str:
    if len(rdata) < 4:
        raise _Malformed
    order, pref = struct.unpack_from("!2H", rdata)
    flags, pos = _read_cstring(rdata, 4)
    services, pos = _read_cstring(rdata, pos)
    regexp, pos = _read_cstring(rdata, pos)
    return f"{order} {pref} {flags} {services} {regexp} {_whole_name(rdata, pos)}"


def _to_caa(rdata: bytes) -> str:
    if len(rdata) < 2:
        raise _Malformed
    tag_end = 2 + rdata[1]
    tag = rdata[2:tag_end]
    if len(tag) != rdata[1] or not tag or not (tag.isascii() and tag.isalnum()):
        raise _Malformed
    return f"{rdata[0]} {tag.decode('ascii')} {_quote(rdata[tag_end:])}"


def _to_ds(rdata: bytes) -> str:
    if len(rdata) < 5 or not _digest_ok(_DS_DIGEST_LEN, rdata[3], rdata[4:]):
        raise _Malformed
    return f"{_u16_at(rdata, 0)} {rdata[2]} {rdata[3]} {_hex_text(rdata[4:])}"


def _to_dnskey(rdata: bytes) -> str:
    if len(rdata) < 5:
        raise _Malformed
    return f"{_u16_at(rdata, 0)} {rdata[2]} {rdata[3]} {_b64_text(rdata[4:])}"


def _to_rrsig(rdata: bytes) -> str:
    if len(rdata) < 19:
        raise _Malformed
    covered, alg, labels, orig_ttl, expire, incept, tag = struct.unpack_from("!HBBIIIH", rdata)
    signer, pos = _read_name(rdata, 18)
    return (f"{rrtypes.type_name(covered)} {alg} {labels} {orig_ttl} "
            f"{time.strftime('%Y%m%d%H%M%S', time.gmtime(expire))} "
            f"{time.strftime('%Y%m%d%H%M%S', time.gmtime(incept))} {tag} "
            f"{_name_text(signer)} {_b64_text(rdata[pos:])}")


def _to_nsec(rdata: bytes) -> str:
    nxt, pos = _read_name(rdata, 0)
    types = _bitmap_text(rdata[pos:])
    return f"{_name_text(nxt)} {types}" if types else _name_text(nxt)


def _salt_text(rdata: bytes, pos: int) -> tuple[str, int]:
    length = rdata[pos]
    end = pos + 1 + length
    if end > len(rdata):
        raise _Malformed
    return (rdata[pos + 1:end].hex().upper() if length else "-"), end


def _to_nsec3(rdata: bytes) -> str:
    if len(rdata) < 5:
        raise _Malformed
    salt, pos = _salt_text(rdata, 4)
    length = rdata[pos]
    nxt = rdata[pos + 1:pos + 1 + length]
    if not length or len(nxt) != length:
        raise _Malformed
    head = (f"{rdata[0]} {rdata[1]} {_u16_at(rdata, 2)} {salt} "
            f"{base64.b32hexencode(nxt).decode('ascii').rstrip('=')}")
    types = _bitmap_text(rdata[pos + 1 + length:])
    return f"{head} {types}" if types else head


def _to_nsec3param(rdata: bytes) -> str:
    if len(rdata) < 5:
        raise _Malformed
    salt, pos = _salt_text(rdata, 4)
    if pos != len(rdata):
        raise _Malformed
    return f"{rdata[0]} {rdata[1]} {_u16_at(rdata, 2)} {salt}"


def _to_sshfp(rdata: bytes) -> str:
    if len(rdata) < 3 or not _digest_ok(_SSHFP_LEN, rdata[1], rdata[2:]):
        raise _Malformed
    return f"{rdata[0]} {rdata[1]} {_hex_text(rdata[2:])}"


def _to_tlsa(rdata: bytes) -> str:
    if len(rdata) < 4:
        raise _Malformed
    return f"{rdata[0]} {rdata[1]} {rdata[2]} {_hex_text(rdata[3:])}"


def _to_zonemd(rdata: bytes) -> str:
    if len(rdata) < 7 or not _digest_ok(_ZONEMD_LEN, rdata[5], rdata[6:]):
        raise _Malformed
    serial = struct.unpack_from("!I", rdata)[0]
    return f"{serial} {rdata[4]} {rdata[5]} {_hex_text(rdata[6:])}"


def _to_uri(rdata: bytes) -> str:
    if len(rdata) < 4:  # RFC 7553 4.5 wants a target; BIND takes an empty one (rrtypes)
        raise _Malformed
    prio, weight = struct.unpack_from("!2H", rdata)
    return f"{prio} {weight} {_quote(rdata[4:])}"


_TO_TEXT: dict[int, Decoder] = {
    rrtypes.A: _to_a, rrtypes.AAAA: _to_aaaa,
    rrtypes.NS: _to_name, rrtypes.CNAME: _to_name, rrtypes.DNAME: _to_name, rrtypes.PTR: _to_name,
    rrtypes.MX: _to_pref_name, rrtypes.AFSDB: _to_pref_name, rrtypes.KX: _to_pref_name,
    rrtypes.RP: _to_two_names, rrtypes.SOA: _to_soa,
    rrtypes.TXT: _to_txt, rrtypes.SPF: _to_txt, rrtypes.HINFO: _to_hinfo,
    rrtypes.SRV: _to_srv, rrtypes.NAPTR: _to_naptr, rrtypes.CAA: _to_caa,
    rrtypes.DS: _to_ds, rrtypes.CDS: _to_ds, rrtypes.DNSKEY: _to_dnskey, rrtypes.CDNSKEY: _to_dnskey,
    rrtypes.RRSIG: _to_rrsig, rrtypes.NSEC: _to_nsec, rrtypes.NSEC3: _to_nsec3,
    rrtypes.NSEC3PARAM: _to_nsec3param, rrtypes.SSHFP: _to_sshfp, rrtypes.TLSA: _to_tlsa,
    rrtypes.ZONEMD: _to_zonemd, rrtypes.URI: _to_uri,
}
assert set(_TO_TEXT) == set(_FROM_TEXT)

_DECODE_ERRORS = (_Malformed, IndexError, ValueError, struct.error, OverflowError)


def _generic_text(rdata: bytes) -> str:
    # RFC 3597 5; long rdata in 64-digit words to keep tokens short.
    if not rdata:
        return "\\# 0"
    hexed = rdata.hex().upper()
    words = " ".join(hexed[i:i + 64] for i in range(0, len(hexed), 64))
    return f"\\# {len(rdata)} {words}"


def rdata_to_text(rtype: int, rdata: bytes) -> str:
    """Presentation form of rdata; the RFC 3597 generic form whenever the exact form is unknown.

    Exactness is the contract: ``parse(rdata_to_text(t, r)) == r`` for every
    type and every byte string, which is what lets the on-disk copy be a
    plain zone file.
    """
    decode = _TO_TEXT.get(rtype)
    if decode is not None:
        try:
            return decode(rdata)
        except _DECODE_ERRORS:
            pass
    return _generic_text(rdata)


def format_record(owner: bytes, rtype: int, ttl: int, rdata: bytes) -> str:
    """One canonical zone-file line (no newline): absolute owner, TTL, IN, type, rdata."""
    return (f"{name_to_text(owner)}\t{ttl}\tIN\t{rrtypes.type_name(rtype)}\t"
            f"{rdata_to_text(rtype, rdata)}")


def zone_text_chunks(zone: Zone, lines_per_chunk: int = 2048) -> Iterator[str]:
    """The canonical text of a zone in pieces of whole lines, SOA first.

    Callers that write large zones (the on-disk copy) stream these rather
    than hold the whole text; each chunk ends with a newline.
    """
    type_text = {code: rrtypes.type_name(code) for code in _TO_TEXT}
    to_text = _TO_TEXT
    generic = _generic_text
    lines: list[str] = []
    prev_owner = b""
    owner_text = ""
    for owner, rtype, ttl, rdata in zone.records():
        if owner is not prev_owner:
            owner_text = _owner_text(owner)
            prev_owner = owner
        decode = to_text.get(rtype)
        if decode is not None:
            try:
                text = decode(rdata)
            except _DECODE_ERRORS:
                text = generic(rdata)
            lines.append(f"{owner_text}\t{ttl}\tIN\t{type_text[rtype]}\t{text}")
        else:
            lines.append(f"{owner_text}\t{ttl}\tIN\t{rrtypes.type_name(rtype)}\t{generic(rdata)}")
        if len(lines) >= lines_per_chunk:
            lines.append("")
            yield "\n".join(lines)
            lines = []
    if lines:
        lines.append("")
        yield "\n".join(lines)


def write_zone(zone: Zone, out: TextIO) -> None:
    """Write every record of *zone* one per line, SOA first: the canonical on-disk form.

    Names are absolute and there are no directives, so the text means the
    same wherever it is included, and ``named-checkzone`` accepts it as long
    as the data itself is acceptable to BIND (rdata kept in the RFC 3597
    generic form because it does not decode is checked by BIND too).
    """
    for chunk in zone_text_chunks(zone):
        out.write(chunk)
