"""RR type codes, mnemonics, and where domain names sit inside rdata.

Knowing where names sit lets the encoder compress them (only for the RFC 1035
types, RFC 3597 4) and the transfer parser decompress them (RFC 1035 types
and the ones RFC 3597 4 lists as SHOULD); every other type is opaque bytes,
kept byte for byte.
"""

from __future__ import annotations

A = 1
NS = 2
MD = 3
MF = 4
CNAME = 5
SOA = 6
MB = 7
MG = 8
MR = 9
NULL = 10
WKS = 11
PTR = 12
HINFO = 13
MINFO = 14
MX = 15
TXT = 16
RP = 17
AFSDB = 18
RT = 21
SIG = 24
KEY = 25
PX = 26
AAAA = 28
NXT = 30
SRV = 33
NAPTR = 35
KX = 36
CERT = 37
DNAME = 39
OPT = 41
DS = 43
SSHFP = 44
RRSIG = 46
NSEC = 47
DNSKEY = 48
NSEC3 = 50
NSEC3PARAM = 51
TLSA = 52
CDS = 59
CDNSKEY = 60
ZONEMD = 63
SVCB = 64
HTTPS = 65
SPF = 99
TKEY = 249
TSIG = 250
IXFR = 251
AXFR = 252
MAILB = 253
MAILA = 254
ANY = 255
URI = 256
CAA = 257

CLASS_IN = 1
CLASS_CH = 3
CLASS_HS = 4
CLASS_NONE = 254
CLASS_ANY = 255

_NAMES = {
    A: "A", NS: "NS", MD: "MD", MF: "MF", CNAME: "CNAME", SOA: "SOA", MB: "MB", MG: "MG",
    MR: "MR", NULL: "NULL", WKS: "WKS", PTR: "PTR", HINFO: "HINFO", MINFO: "MINFO", MX: "MX",
    TXT: "TXT", RP: "RP", AFSDB: "AFSDB", RT: "RT", SIG: "SIG", KEY: "KEY", PX: "PX", AAAA: "AAAA",
    NXT: "NXT", SRV: "SRV", NAPTR: "NAPTR", KX: "KX", CERT: "CERT", DNAME: "DNAME", OPT: "OPT",
    DS: "DS", SSHFP: "SSHFP", RRSIG: "RRSIG", NSEC: "NSEC", DNSKEY: "DNSKEY", NSEC3: "NSEC3",
    NSEC3PARAM: "NSEC3PARAM", TLSA: "TLSA", CDS: "CDS", CDNSKEY: "CDNSKEY", ZONEMD: "ZONEMD",
    SVCB: "SVCB", HTTPS: "HTTPS", SPF: "SPF", TKEY: "TKEY", TSIG: "TSIG", IXFR: "IXFR",
    AXFR: "AXFR", MAILB: "MAILB", MAILA: "MAILA", ANY: "ANY", URI: "URI", CAA: "CAA",
}
_CODES = {v: k for k, v in _NAMES.items()}

# Layout of names in rdata: a tuple of fields, each either an int (that many
# opaque octets) or "N" (a domain name).  Trailing opaque data is implied.
NAME_LAYOUT: dict[int, tuple[int | str, ...]] = {
    NS: ("N",), MD: ("N",), MF: ("N",), CNAME: ("N",), MB: ("N",), MG: ("N",), MR: ("N",),
    PTR: ("N",), DNAME: ("N",), SOA: ("N", "N"), MINFO: ("N", "N"), MX: (2, "N"),
    RP: ("N", "N"), AFSDB: (2, "N"), RT: (2, "N"), PX: (2, "N", "N"), KX: (2, "N"),
    SRV: (6, "N"), NSEC: ("N",), RRSIG: (18, "N"), SIG: (18, "N"), NXT: ("N",),
}

# RFC 3597 4: senders compress only the RFC 1035 types.
COMPRESSIBLE = frozenset({NS, MD, MF, CNAME, SOA, MB, MG, MR, PTR, MINFO, MX})
# RFC 3597 4: receivers decompress these (and the RFC 1035 ones).
DECOMPRESSIBLE = COMPRESSIBLE | frozenset({RP, AFSDB, RT, SIG, PX, NXT, SRV, KX})
# NAPTR (RFC 3403) is also on RFC 3597's list; its name follows variable
# fields, handled by the transfer parser separately.

# Types whose targets get additional-section address processing (RFC 1034 3.6.2, RFC 2782).
ADDITIONAL_TARGET = {NS: 0, MX: 2, SRV: 6}

# DNSSEC types that are left out of answers unless the DO bit is set or asked for by type.
DNSSEC_TYPES = frozenset({RRSIG, NSEC, NSEC3})

# Query types that are not data types (RFC 6895 3.1).
META_QTYPES = frozenset({OPT, TKEY, TSIG, IXFR, AXFR, MAILB, MAILA})


def split_rdata(rtype: int, rdata: bytes) -> list[tuple[bool, bytes]]:
    """The rdata of a NAME_LAYOUT type as (is_name, piece) pairs, in order, opaque tail last.

    Names are uncompressed (as stored); callers compress them (wire) or
    lowercase them (canonical form for ZONEMD, RFC 4034 6.2).
    """
    pieces: list[tuple[bool, bytes]] = []
    pos = 0
    for field in NAME_LAYOUT[rtype]:
        if field == "N":
            end = pos
            while rdata[end] != 0:
                end += rdata[end] + 1
            end += 1
            pieces.append((True, rdata[pos:end]))
            pos = end
        else:
            width = int(field)
            pieces.append((False, rdata[pos:pos + width]))
            pos += width
    if pos < len(rdata):
        pieces.append((False, rdata[pos:]))
    return pieces


def type_name(rtype: int) -> str:
    """Mnemonic, or the RFC 3597 generic form TYPEnnn."""
    return _NAMES.get(rtype) or f"TYPE{rtype}"


def type_code(text: str) -> int:
    """Mnemonic or TYPEnnn to the numeric type; raises ValueError if unknown."""
    upper = text.upper()
    code = _CODES.get(upper)
    if code is not None:
        return code
    if upper.startswith("TYPE") and upper[4:].isdigit():
        value = int(upper[4:])
        if value <= 0xFFFF:
            return value
    raise ValueError(f"unknown RR type {text!r}")


def class_code(text: str) -> int:
    """Class mnemonic or CLASSnnn to its number; raises ValueError if unknown."""
    upper = text.upper()
    table = {"IN": CLASS_IN, "CH": CLASS_CH, "CHAOS": CLASS_CH, "HS": CLASS_HS,
             "NONE": CLASS_NONE, "ANY": CLASS_ANY}
    if upper in table:
        return table[upper]
    if upper.startswith("CLASS") and upper[5:].isdigit():
        return int(upper[5:])
    raise ValueError(f"unknown class {text!r}")


def is_class(text: str) -> bool:
    """True when *text* is a class mnemonic (used to parse zone file lines)."""
    try:
        class_code(text)
    except ValueError:
        return False
    return True
