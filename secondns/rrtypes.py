"""RR type codes, mnemonics, and where domain names sit inside rdata.

Knowing where names sit lets the encoder compress them (only for the RFC 1035
types, RFC 3597 4) and the transfer parser decompress them (RFC 1035 types
and the ones RFC 3597 4 lists as SHOULD); every other type is opaque bytes,
kept byte for byte.  The same knowledge lets ``check_rdata`` refuse, at
ingest, rdata that the encoder and the answer code could not walk.
"""

from __future__ import annotations

from collections.abc import Callable

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


# --------------------------------------------------------------------------
# Rdata validation at ingest
#
# Policy: refuse no rdata that BIND 9.18 accepts (its fromwire code, which
# named-checkzone runs on RFC 3597 generic rdata and xfrin on every record).
# A refused record fails the whole transfer, and the zone then stalls on its
# old copy until it expires (RFC 1034 4.3.5), while the primary and every
# BIND secondary serve it.  So reserved values the RFCs only say not to use
# (DS digest type 0, ZONEMD scheme and hash algorithm 0, SVCB key65535) and
# values whose content BIND leaves alone (ech, ohttp, SVCB parameters in
# AliasMode, an empty URI target) pass; what is left is structure the server
# must walk (names, lengths, strings) and the few rules BIND enforces too.
# dnspython refuses several of those that pass (DS digest type 0, ZONEMD
# scheme 0, AliasMode parameters, a malformed ech, an ohttp with a value, an
# empty URI target) in a response, as it does when BIND serves them: that is
# the client's rule.
# Accepting some rdata BIND refuses (an empty RRSIG signature, say) is
# harmless, and left as it is.  tests/test_ingest.py checks every refusal
# here against named-checkzone.

MAX_RDATA = 0xFFFF  # RFC 1035 3.2.1: RDLENGTH is 16 bits

Checker = Callable[[bytes], "str | None"]
"""Why the rdata is invalid for the type, or None."""


def _name_end(rdata: bytes, pos: int) -> int:
    """Offset just past the uncompressed wire name at *pos*, or -1 when there is none.

    RFC 1035 3.1: labels of at most 63 octets ending in the root label, 255
    octets in all.  A compression pointer (or an extended label type, RFC
    6891 5) is refused: stored rdata is uncompressed (RFC 3597 4, RFC 4034
    3.1.7 and 4.1.1 forbid compression in RRSIG signers and NSEC names).
    """
    start = pos
    end = len(rdata)
    while pos < end:
        length = rdata[pos]
        if length == 0:
            pos += 1
            return pos if pos - start <= 255 else -1
        if length > 63:
            return -1
        pos += length + 1
    return -1


def _names(rdata: bytes, pos: int, count: int) -> str | None:
    """*count* names from *pos* that end exactly at the end of the rdata."""
    for _ in range(count):
        pos = _name_end(rdata, pos)
        if pos < 0:
            return "malformed or truncated domain name"
    return None if pos == len(rdata) else f"{len(rdata) - pos} octets after the last field"


def _strings(rdata: bytes, pos: int) -> int:
    """Offset past the run of character-strings (RFC 1035 3.3) from *pos* to the end; -1 if one overruns."""
    end = len(rdata)
    while pos < end:
        pos += rdata[pos] + 1
    return pos if pos == end else -1


def _skip_strings(rdata: bytes, pos: int, count: int) -> int:
    for _ in range(count):
        if pos >= len(rdata):
            return -1
        pos += rdata[pos] + 1
    return pos if pos <= len(rdata) else -1


def _bitmap_ok(rdata: bytes, pos: int) -> bool:
    """RFC 4034 4.1.2 type bitmap: windows in increasing order, 1 to 32 octets, the last non-zero."""
    end = len(rdata)
    last = -1
    while pos < end:
        if pos + 2 > end:
            return False
        window, length = rdata[pos], rdata[pos + 1]
        if window <= last or not 1 <= length <= 32 or pos + 2 + length > end:
            return False
        if not rdata[pos + 1 + length]:
            return False  # trailing zero octets must be omitted
        last = window
        pos += 2 + length
    return True


def _check_name(rdata: bytes) -> str | None:
    return _names(rdata, 0, 1) if rdata else "empty rdata, a domain name expected"


def _check_two_names(rdata: bytes) -> str | None:
    return _names(rdata, 0, 2) if rdata else "empty rdata, two domain names expected"


def _check_pref_name(rdata: bytes) -> str | None:
    # MX (RFC 1035 3.3.9), AFSDB (RFC 1183 1), RT (RFC 1183 3.3), KX (RFC 2230)
    return _names(rdata, 2, 1) if len(rdata) >= 3 else f"rdata of {len(rdata)} octets is too short"


def _check_px(rdata: bytes) -> str | None:
    # RFC 2163 4: preference, MAP822, MAPX400
    return _names(rdata, 2, 2) if len(rdata) >= 4 else f"rdata of {len(rdata)} octets is too short"


def _check_srv(rdata: bytes) -> str | None:
    # RFC 2782: priority, weight, port, target
    return _names(rdata, 6, 1) if len(rdata) >= 7 else f"rdata of {len(rdata)} octets is too short"


def _check_soa(rdata: bytes) -> str | None:
    # RFC 1035 3.3.13: MNAME, RNAME, five 32-bit counters
    pos = _name_end(rdata, 0)
    if pos >= 0:
        pos = _name_end(rdata, pos)
    if pos < 0:
        return "malformed or truncated domain name"
    if len(rdata) != pos + 20:
        return f"{len(rdata) - pos} octets after the names, 20 expected"
    return None


def _check_naptr(rdata: bytes) -> str | None:
    # RFC 3403 4.1: order, preference, flags, services, regexp, replacement
    pos = _skip_strings(rdata, 4, 3) if len(rdata) >= 4 else -1
    if pos < 0:
        return "rdata too short for order, preference and three character-strings"
    return _names(rdata, pos, 1)


def _check_sig(rdata: bytes) -> str | None:
    # RFC 4034 3.1 (and RFC 2535 4.1 for SIG): 18 octets of fields, signer, signature
    if len(rdata) < 19:
        return f"rdata of {len(rdata)} octets is too short"
    return None if _name_end(rdata, 18) >= 0 else "malformed, compressed or truncated signer name"


def _check_nsec(rdata: bytes) -> str | None:
    # RFC 4034 4.1: next domain name (uncompressed), type bitmap
    pos = _name_end(rdata, 0)
    if pos < 0:
        return "malformed, compressed or truncated next domain name"
    return None if _bitmap_ok(rdata, pos) else "malformed type bitmap"


def _check_nxt(rdata: bytes) -> str | None:
    # RFC 2535 5.2: next domain name, then a bitmap kept opaque
    return None if _name_end(rdata, 0) >= 0 else "malformed or truncated next domain name"


def _check_nsec3(rdata: bytes) -> str | None:
    # RFC 5155 3.2: algorithm, flags, iterations, salt, next hashed owner, type bitmap
    if len(rdata) < 5:
        return f"rdata of {len(rdata)} octets is too short"
    pos = 5 + rdata[4]
    if pos >= len(rdata):
        return "salt runs past the rdata or no hash length"
    length = rdata[pos]
    if not length or pos + 1 + length > len(rdata):
        return "next hashed owner name empty or past the rdata"
    return None if _bitmap_ok(rdata, pos + 1 + length) else "malformed type bitmap"


def _check_nsec3param(rdata: bytes) -> str | None:
    # RFC 5155 4.2: algorithm, flags, iterations, salt
    if len(rdata) < 5 or len(rdata) != 5 + rdata[4]:
        return "rdata length does not match the salt length"
    return None


def _check_strings(rdata: bytes) -> str | None:
    # TXT (RFC 1035 3.3.14), SPF (RFC 7208 3): one or more character-strings
    if not rdata:
        return "empty rdata, at least one character-string expected"
    return None if _strings(rdata, 0) >= 0 else "character-string runs past the rdata"


def _check_hinfo(rdata: bytes) -> str | None:
    # RFC 1035 3.3.2: CPU and OS, two character-strings
    pos = _skip_strings(rdata, 0, 2)
    return None if pos == len(rdata) else "rdata is not exactly two character-strings"


def _check_ds(rdata: bytes) -> str | None:
    # RFC 4034 5.1; digest lengths of RFC 4034 5.1.4, RFC 4509 2.2, RFC 5933 2, RFC 6605 2,
    # as BIND's fromwire checks them, and at least one octet of digest for any other type.
    # Digest type 0 (reserved, RFC 3658 2.4; the CDS delete record of RFC 8078 4) passes:
    # BIND takes it, in DS and CDS alike, with a digest of any length.
    if len(rdata) < 5:
        return f"rdata of {len(rdata)} octets is too short"
    return _digest_length(rdata, 4, _DS_DIGEST_LEN, "digest type")


def _digest_length(rdata: bytes, start: int, table: dict[int, int], what: str) -> str | None:
    kind = rdata[start - 1]
    want = table.get(kind)
    if want is not None and len(rdata) != start + want:
        return f"digest of {len(rdata) - start} octets for {what} {kind}, {want} expected"
    return None


def _check_sshfp(rdata: bytes) -> str | None:
    # RFC 4255 3.1; SHA-1 fingerprints are 20 octets, SHA-256 32 (RFC 6594 3.2)
    if len(rdata) < 2:
        return f"rdata of {len(rdata)} octets is too short"
    return _digest_length(rdata, 2, _SSHFP_LEN, "fingerprint type")


def _check_wks(rdata: bytes) -> str | None:
    # RFC 1035 3.4.2: address, protocol, a bitmap of at most 65536 ports
    if not 5 <= len(rdata) <= 5 + 8192:
        return f"rdata of {len(rdata)} octets, 5 to 8197 expected"
    return None


def _check_zonemd(rdata: bytes) -> str | None:
    # RFC 8976 2.2: serial, scheme, hash algorithm, digest (SHA-384: 48, SHA-512: 64).
    # Scheme and hash algorithm 0 are reserved (RFC 8976 5.2, 5.3) but BIND takes them: a
    # verifier treats them as unsupported (RFC 8976 4), which is no reason to refuse the zone.
    if len(rdata) < 7:
        return f"rdata of {len(rdata)} octets is too short"
    if len(rdata) < 18:
        return f"digest of {len(rdata) - 6} octets, at least 12 expected (RFC 8976 2.2.4)"
    return _digest_length(rdata, 6, _ZONEMD_DIGEST_LEN, "hash algorithm")


def _check_caa(rdata: bytes) -> str | None:
    # RFC 8659 4.1: flags, tag length (at least 1), tag of letters and digits, value
    if len(rdata) < 2 or not rdata[1] or 2 + rdata[1] > len(rdata):
        return "tag empty or past the rdata"
    tag = rdata[2:2 + rdata[1]]
    return None if tag.isascii() and tag.isalnum() else "tag is not letters and digits"


def _check_svcb(rdata: bytes) -> str | None:
    # RFC 9460 2.2: priority, target (uncompressed), then key/length/value parameters
    if len(rdata) < 3:
        return f"rdata of {len(rdata)} octets is too short"
    pos = _name_end(rdata, 2)
    if pos < 0:
        return "malformed, compressed or truncated target name"
    end = len(rdata)
    # AliasMode (priority 0) with parameters: RFC 9460 2.4.2 says clients ignore them; BIND
    # checks them as in ServiceMode, and so does this.
    params: dict[int, bytes] = {}
    last = -1
    while pos < end:
        if pos + 4 > end:
            return "parameter header runs past the rdata"
        key = (rdata[pos] << 8) | rdata[pos + 1]
        stop = pos + 4 + ((rdata[pos + 2] << 8) | rdata[pos + 3])
        if stop > end:
            return "parameter value runs past the rdata"
        if key <= last:
            return "parameter keys not in strictly increasing order (RFC 9460 2.2)"
        why = _svc_param(key, rdata[pos + 4:stop])
        if why is not None:
            return why
        params[key] = rdata[pos + 4:stop]
        last = key
        pos = stop
    mandatory = params.get(0)
    if mandatory is not None and any(((mandatory[i] << 8) | mandatory[i + 1]) not in params
                                     for i in range(0, len(mandatory), 2)):
        return "a mandatory key is missing (RFC 9460 8)"
    if 2 in params and 1 not in params:
        return "no-default-alpn without alpn (RFC 9460 7.1.1)"
    return None


def _svc_param(key: int, value: bytes) -> str | None:
    """RFC 9460 7 and 8: the wire form of the keys it defines, as far as BIND 9.18 checks it.

    ech (key5) is opaque to BIND, ohttp (key8, RFC 9540) and key65535 are unknown keys to it:
    any value passes.  no-default-alpn (key2) must be empty, port 2 octets, alpn not empty.
    """
    n = len(value)
    if key == 0:  # mandatory: a non-empty, strictly increasing list of other keys
        keys = [(value[i] << 8) | value[i + 1] for i in range(0, n - 1, 2)]
        if not n or n % 2 or 0 in keys or keys != sorted(set(keys)):
            return "malformed mandatory parameter"
    elif key == 1:  # alpn: one or more character-strings
        if not n or _strings(value, 0) < 0:
            return "malformed alpn parameter"
    elif key == 2:  # no-default-alpn: empty
        if n:
            return "parameter key2 (no-default-alpn) must be empty"
    elif key == 3:
        if n != 2:
            return "port parameter is not 2 octets"
    elif key == 4 or key == 6:  # ipv4hint, ipv6hint: one or more addresses
        size = 4 if key == 4 else 16
        if not n or n % size:
            return f"key{key} is not a list of {size}-octet addresses"
    return None


def _min_length(n: int) -> Checker:
    def check(rdata: bytes) -> str | None:
        return None if len(rdata) >= n else f"rdata of {len(rdata)} octets, at least {n} expected"
    return check


def _exact_length(n: int) -> Checker:
    def check(rdata: bytes) -> str | None:
        return None if len(rdata) == n else f"rdata of {len(rdata)} octets, {n} expected"
    return check


_DS_DIGEST_LEN = {1: 20, 2: 32, 3: 32, 4: 48}
_ZONEMD_DIGEST_LEN = {1: 48, 2: 64}
_SSHFP_LEN = {1: 20, 2: 32}

# Every type whose layout secondns knows; anything else is opaque (RFC 3597) and accepted.
# The rules are the structure BIND's fromwire checks, and no more (see the policy above).
RDATA_CHECKS: dict[int, Checker] = {
    A: _exact_length(4), AAAA: _exact_length(16),
    NS: _check_name, MD: _check_name, MF: _check_name, CNAME: _check_name, MB: _check_name,
    MG: _check_name, MR: _check_name, PTR: _check_name, DNAME: _check_name,
    SOA: _check_soa, MINFO: _check_two_names, RP: _check_two_names,
    MX: _check_pref_name, AFSDB: _check_pref_name, RT: _check_pref_name, KX: _check_pref_name,
    PX: _check_px, SRV: _check_srv, NAPTR: _check_naptr,
    SIG: _check_sig, RRSIG: _check_sig, NSEC: _check_nsec, NXT: _check_nxt,
    NSEC3: _check_nsec3, NSEC3PARAM: _check_nsec3param,
    TXT: _check_strings, SPF: _check_strings, HINFO: _check_hinfo,
    WKS: _check_wks,
    KEY: _min_length(4), DNSKEY: _min_length(4), CDNSKEY: _min_length(4),  # RFC 4034 2.1
    DS: _check_ds, CDS: _check_ds, ZONEMD: _check_zonemd, SSHFP: _check_sshfp,
    TLSA: _min_length(3),  # RFC 6698 2.1; BIND serves data of any length for any matching type
    CERT: _min_length(5),  # RFC 4398 2
    URI: _min_length(4),  # RFC 7553 4.5 wants a target; BIND takes an empty one
    CAA: _check_caa, SVCB: _check_svcb, HTTPS: _check_svcb,
}




def _meta(rdata: bytes) -> str | None:
    return "a meta type, never zone data (RFC 6895 3.1)"


# Type 0, OPT and the Q and meta types 128-255 (TKEY, TSIG, IXFR, AXFR, ANY, ...) are
# not data: BIND's xfrin and zone loader refuse them too.
for _code in (0, OPT, *range(128, 256)):
    RDATA_CHECKS[_code] = _meta
del _code


def check_rdata(rtype: int, rdata: bytes) -> str | None:
    """Why *rdata* is not valid for *rtype*, or None when it is (or the type is opaque to us).

    Names must be uncompressed wire names ending where the layout says, and
    nothing may trail the last field: what passes can be encoded, compressed
    and read back by every part of the server, which assumes exactly that.
    """
    if len(rdata) > MAX_RDATA:
        return f"rdata of {len(rdata)} octets is longer than 65535"
    check = RDATA_CHECKS.get(rtype)
    return None if check is None else check(rdata)
