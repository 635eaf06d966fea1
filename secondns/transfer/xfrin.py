"""Sans-IO messages exchanged with a primary: queries, SOA probes, AXFR.

Nothing here touches a socket or a clock.  The Twisted transfer code frames
TCP messages and hands each one to ``AxfrConsumer.feed``; the refresh logic
sends ``make_query`` output and reads the reply with ``parse_soa_response``.
That keeps every protocol rule testable with byte strings, as dnspython's
``dns/xfr.py`` does.

``parse_message`` is a lean wire parser rather than dnslib/dnspython objects
because an AXFR of a million records must cost about a microsecond per
record: a record is one tuple ``(owner, type, class, ttl, rdata)`` with the
owner case-preserved and names inside rdata decompressed (for the types
RFC 3597 4 lets a receiver decompress, plus NAPTR), so rdata can be stored
as-is.  There is deliberately no cap on compression pointers per message
(Twisted Names silently drops messages with more than 1000): pointers must
point backwards (RFC 1035 4.1.4), which already rules out loops, and decoded
names are cached per offset so shared suffixes are decoded once.

How IXFR (RFC 1995) slots in: ``_InboundStream`` holds everything that is
per *message* and shared by both transfer kinds (parse, hook for the TSIG
verifier, ID/QR/opcode/RCODE/TC/question checks, EDNS EXPIRE, counters);
a consumer only implements ``_consume(answer, first)`` over the answer
records.  An ``IxfrConsumer`` will subclass it with its own state machine
over the SOA-delimited difference sequences (RFC 1995 4), producing a diff
for ``Zone.apply`` instead of feeding a ZoneBuilder.  When the second record
of the stream is not an SOA the primary fell back to a full zone
(RFC 1995 4, "AXFR-style IXFR"); the IXFR consumer then hands the records
seen so far and every later message to an embedded ``AxfrConsumer``
created with ``qtype=IXFR``, so the question check still matches the query.
A lone SOA whose serial is not newer means "up to date" (RFC 1995 4).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from secondns import rrtypes
from secondns.diff import VersionStep
from secondns.errors import ResponseMismatch, TransferError, TransientError, WireError, ZoneError
from secondns.names import ROOT, read_name, to_text
from secondns.serial import serial_gt as serial_newer
from secondns.zone import SOA, Zone, ZoneBuilder

# (owner, type, class, ttl, rdata): owner case-preserved, rdata uncompressed.
Record = tuple[bytes, int, int, int, bytes]
# (qname, qtype, qclass)
Question = tuple[bytes, int, int]


class RdataError(WireError):
    """A record's rdata is not valid for its type (names the owner, the type and why)."""

EDNS_PAYLOAD = 1232  # DNS flag day 2020 recommendation; avoids IP fragmentation
OPTION_EXPIRE = 9  # RFC 7314 2

OPCODE_QUERY = 0
OPCODE_NOTIFY = 4  # RFC 1996

# Header flag bits (RFC 1035 4.1.1).
FLAG_QR = 0x8000
FLAG_AA = 0x0400
FLAG_TC = 0x0200
FLAG_RD = 0x0100

NOERROR = 0
SERVFAIL = 2
_RCODE_NAMES = {
    0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED",
    6: "YXDOMAIN", 7: "YXRRSET", 8: "NXRRSET", 9: "NOTAUTH", 10: "NOTZONE",
    16: "BADVERS", 23: "BADCOOKIE",
}

_HEADER = struct.Struct("!6H")
_RR = struct.Struct("!HHIH")  # type, class, ttl, rdlength
_QTAIL = struct.Struct("!HH")
_OPTION = struct.Struct("!HH")
_U32 = struct.Struct("!I")

# Types whose rdata names are decompressed on receipt (RFC 3597 4).  NAPTR
# (RFC 3403 4.1) has its name after variable-length strings: layout None.
_DECOMPRESS: dict[int, tuple[int | str, ...] | None] = {
    t: rrtypes.NAME_LAYOUT[t] for t in rrtypes.DECOMPRESSIBLE
}
_DECOMPRESS[rrtypes.NAPTR] = None
# Fast paths in the record loop: 1 = the rdata is one name, 2 = a 16-bit
# field then one name, 3 = anything else in _DECOMPRESS.
_DECOMPRESS_KIND: dict[int, int] = {
    t: 1 if layout == ("N",) else 2 if layout == (2, "N") else 3 for t, layout in _DECOMPRESS.items()
}


def rcode_text(rcode: int) -> str:
    """Mnemonic for an (extended) RCODE, for error messages and logs."""
    return _RCODE_NAMES.get(rcode) or f"RCODE{rcode}"


# --------------------------------------------------------------------------
# Building queries


def make_query(qname: bytes, qtype: int, msg_id: int, *,
               authority: list[tuple[bytes, int, int, bytes]] | None = None,
               edns: bool = True, expire_option: bool = True, opcode: int = OPCODE_QUERY) -> bytes:
    """An unsigned query to a primary.

    RD is clear: we ask the primary for its own authoritative data, not for
    recursion (RFC 5936 2.2.1 for AXFR, same for SOA and IXFR).  *authority*
    records are (owner, type, ttl, rdata), class IN; IXFR carries our current
    SOA there (RFC 1995 3).  With *edns* an OPT RR is added (RFC 6891 6.1.2)
    and, with *expire_option*, an empty EDNS EXPIRE option asking the primary
    for its remaining expire time (RFC 7314 3).  TSIG signing happens later
    through ``add_additional``: the TSIG RR must be the last one (RFC 8945 5.1).
    """
    if not 0 <= msg_id <= 0xFFFF:
        raise ValueError(f"message ID {msg_id} outside 0..65535")
    if not 0 <= opcode <= 15:
        raise ValueError(f"opcode {opcode} outside 0..15")
    auth = authority or []
    parts = [_HEADER.pack(msg_id, opcode << 11, 1, 0, len(auth), 1 if edns else 0),
             qname, _QTAIL.pack(qtype, rrtypes.CLASS_IN)]
    for owner, rtype, ttl, rdata in auth:
        # RFC 1035 4.1.4: the owner is usually the zone name, already at offset 12.
        parts.append(b"\xc0\x0c" if owner == qname else owner)
        parts.append(_RR.pack(rtype, rrtypes.CLASS_IN, ttl, len(rdata)))
        parts.append(rdata)
    if edns:
        options = _OPTION.pack(OPTION_EXPIRE, 0) if expire_option else b""
        # RFC 6891 6.1.2: owner root, CLASS = payload size, TTL = ext-rcode/version/flags = 0.
        parts.append(ROOT + _RR.pack(rrtypes.OPT, EDNS_PAYLOAD, 0, len(options)) + options)
    return b"".join(parts)


def add_additional(msg: bytes, rr_wire: bytes) -> bytes:
    """Append one wire-form RR to the additional section and bump ARCOUNT.

    The hook the TSIG signer uses: it signs the unsigned message, then
    appends its TSIG RR, which must come last (RFC 8945 5.1).
    """
    if len(msg) < 12:
        raise WireError(f"message of {len(msg)} octets is shorter than the 12-octet header")
    (arcount,) = struct.unpack_from("!H", msg, 10)
    if arcount == 0xFFFF:
        raise WireError("ARCOUNT is already 65535")
    return msg[:10] + struct.pack("!H", arcount + 1) + msg[12:] + rr_wire


# --------------------------------------------------------------------------
# Parsing


@dataclass(frozen=True, slots=True)
class Opt:
    """The OPT pseudo-RR (RFC 6891 6.1.3), decoded."""

    payload: int
    ext_rcode: int  # upper 8 bits of the 12-bit RCODE
    version: int
    do: bool
    options: list[tuple[int, bytes]]

    def option(self, code: int) -> bytes | None:
        """The data of the first option with *code*, or None."""
        for c, value in self.options:
            if c == code:
                return value
        return None


@dataclass(frozen=True, slots=True)
class TsigRecord:
    """The TSIG RR, kept raw for the verifier (RFC 8945 4.3.3).

    The MAC covers the message as it was before signing: ``data[:offset]``
    with ARCOUNT decreased by one.
    """

    offset: int  # where the TSIG RR starts in the message
    name: bytes  # key name, decompressed, case preserved
    rclass: int
    ttl: int
    rdata: bytes  # algorithm name is never compressed (RFC 8945 4.2)
    raw: bytes  # the RR exactly as received


@dataclass(frozen=True, slots=True)
class Message:
    """A decoded DNS message; OPT and TSIG are taken out of ``additional``."""

    id: int
    flags: int
    opcode: int
    rcode: int  # extended with the OPT bits (RFC 6891 6.1.3)
    question: Question | None
    answer: list[Record]
    authority: list[Record] = field(default_factory=list)
    additional: list[Record] = field(default_factory=list)
    opt: Opt | None = None
    tsig: TsigRecord | None = None

    @property
    def qr(self) -> bool:
        """True for a response."""
        return bool(self.flags & FLAG_QR)

    @property
    def aa(self) -> bool:
        """Authoritative answer."""
        return bool(self.flags & FLAG_AA)

    @property
    def tc(self) -> bool:
        """Truncated."""
        return bool(self.flags & FLAG_TC)


def parse_message(data: bytes, *, check_rdata: bool = False) -> Message:
    """Decode a whole message; any malformation raises WireError with the reason.

    Strict about structure (counts must match, no trailing octets, at most one
    question, one OPT owned by the root, TSIG only as the last record) because
    a lenient parse of a transfer stream could silently store garbage.  With
    *check_rdata* (transfers, whose records are stored and served) the rdata
    of every record of a known type must also be valid for that type
    (``rrtypes.check_rdata``); a record that is not raises RdataError.
    """
    end = len(data)
    if end < 12:
        raise WireError(f"message of {end} octets is shorter than the 12-octet header")
    msg_id, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(data, 0)
    cache: dict[int, bytes] = {}
    checks = rrtypes.RDATA_CHECKS if check_rdata else None
    pos = 12
    question: Question | None = None
    if qdcount > 1:
        # RFC 9619: QDCOUNT is at most one for the opcodes we handle.
        raise WireError(f"message has {qdcount} questions; at most one is allowed")
    if qdcount == 1:
        qname, pos = _read_name(data, pos, cache)
        if pos + 4 > end:
            raise WireError("question runs past the end of the message")
        qtype, qclass = _QTAIL.unpack_from(data, pos)
        pos += 4
        question = (qname, qtype, qclass)
    answer, pos = _read_records(data, pos, ancount, cache, "answer", checks)
    authority, pos = _read_records(data, pos, nscount, cache, "authority", checks)
    additional: list[Record] = []
    opt: Opt | None = None
    tsig: TsigRecord | None = None
    for i in range(arcount):
        start = pos
        recs, pos = _read_records(data, pos, 1, cache, "additional")
        rec = recs[0]
        rtype = rec[1]
        if rtype == rrtypes.OPT:
            if opt is not None:
                raise WireError("more than one OPT record (RFC 6891 6.1.1)")
            if rec[0] != ROOT:
                raise WireError("OPT record not owned by the root (RFC 6891 6.1.2)")
            opt = _parse_opt(rec[2], rec[3], rec[4])
        elif rtype == rrtypes.TSIG:
            if i != arcount - 1:
                raise WireError("TSIG record is not the last additional record (RFC 8945 5.1)")
            tsig = TsigRecord(start, rec[0], rec[2], rec[3], rec[4], data[start:pos])
        else:
            additional.append(rec)
    if pos != end:
        raise WireError(f"{end - pos} octets after the last record")
    rcode = flags & 0xF
    if opt is not None:
        rcode |= opt.ext_rcode << 4
    return Message(msg_id, flags, (flags >> 11) & 0xF, rcode, question,
                   answer, authority, additional, opt, tsig)


def _parse_opt(rclass: int, ttl: int, rdata: bytes) -> Opt:
    """RFC 6891 6.1.2/6.1.3: CLASS is the payload size, TTL packs ext-rcode, version, DO."""
    options: list[tuple[int, bytes]] = []
    pos = 0
    end = len(rdata)
    while pos < end:
        if pos + 4 > end:
            raise WireError("EDNS option header runs past the OPT rdata")
        code, length = _OPTION.unpack_from(rdata, pos)
        pos += 4
        if pos + length > end:
            raise WireError(f"EDNS option {code} runs past the OPT rdata")
        options.append((code, rdata[pos:pos + length]))
        pos += length
    return Opt(rclass, ttl >> 24, (ttl >> 16) & 0xFF, bool(ttl & 0x8000), options)


def _pointer_target(data: bytes, target: int, pos: int, cache: dict[int, bytes]) -> bytes:
    """Slow path of a compression pointer: decode its target once and cache it."""
    # RFC 1035 4.1.4 allows pointers to any prior occurrence; pointing
    # backwards only is what makes decoding terminate.
    if target >= pos:
        raise WireError("compression pointer does not point backwards")
    name = read_name(data, target)[0]
    cache[target] = name
    return name


def _read_name(data: bytes, pos: int, cache: dict[int, bytes]) -> tuple[bytes, int]:
    """Decode a possibly compressed name at *pos*; returns (name, offset past it).

    The labels in place are sliced in one piece and the pointer suffix comes
    from the per-message cache, so a name costs one slice and one concatenation.
    """
    end = len(data)
    start = pos
    while True:
        if pos >= end:
            raise WireError("name runs past the end of the message")
        b = data[pos]
        if b == 0:
            pos += 1
            name = data[start:pos]
            break
        if b < 64:
            pos += b + 1
            continue
        if b >= 0xC0:
            if pos + 1 >= end:
                raise WireError("truncated compression pointer")
            target = ((b & 0x3F) << 8) | data[pos + 1]
            suffix = cache.get(target)
            if suffix is None:
                suffix = _pointer_target(data, target, pos, cache)
            name = data[start:pos] + suffix
            pos += 2
            break
        # RFC 6891 5: extended label types are deprecated; 0x40/0x80 are unusable.
        raise WireError(f"unsupported label type 0x{b:02x}")
    if len(name) > 255:
        raise WireError("name longer than 255 octets (RFC 1035 2.3.4)")
    cache[start] = name
    return name, pos


def _read_records(data: bytes, pos: int, count: int, cache: dict[int, bytes], section: str,
                  checks: dict[int, rrtypes.Checker] | None = None) -> tuple[list[Record], int]:
    """The hot loop: *count* records from *pos*.

    Kept flat for speed (an AXFR of a million records spends most of its
    time here): the owner name is decoded inline, the common rdata layouts
    are special-cased, and each record costs one tuple.  With *checks*
    (``rrtypes.RDATA_CHECKS``) every record whose layout is known is
    validated as it is decoded; the name-only layouts need no second walk,
    since decompressing the name already proved it well formed.
    """
    out: list[Record] = []
    append = out.append
    end = len(data)
    unpack = _RR.unpack_from
    kinds = _DECOMPRESS_KIND
    get = cache.get
    for _ in range(count):
        if pos >= end:
            raise WireError(f"{section} section ends early: message holds fewer records than counted")
        start = pos
        b = data[pos]
        # Owner name (RFC 1035 4.1.4): labels in place, then the root label or a pointer.
        while 0 < b < 64:
            pos += b + 1
            if pos >= end:
                raise WireError("name runs past the end of the message")
            b = data[pos]
        if b >= 0xC0:
            if pos + 1 >= end:
                raise WireError("truncated compression pointer")
            target = ((b & 0x3F) << 8) | data[pos + 1]
            owner = get(target)
            if owner is None:
                owner = _pointer_target(data, target, pos, cache)
            if pos != start:
                owner = data[start:pos] + owner
                if len(owner) > 255:
                    raise WireError("name longer than 255 octets (RFC 1035 2.3.4)")
                cache[start] = owner
            pos += 2
        elif b == 0:
            pos += 1
            owner = data[start:pos]
            if pos - start > 255:
                raise WireError("name longer than 255 octets (RFC 1035 2.3.4)")
            cache[start] = owner
        else:
            # RFC 6891 5: extended label types are deprecated; 0x40/0x80 are unusable.
            raise WireError(f"unsupported label type 0x{b:02x}")
        if pos + 10 > end:
            raise WireError(f"{section} record header runs past the end of the message")
        rtype, rclass, ttl, rdlen = unpack(data, pos)
        pos += 10
        rend = pos + rdlen
        if rend > end:
            raise WireError(f"{section} record rdata runs past the end of the message")
        kind = kinds.get(rtype)
        if kind is None:
            rdata = data[pos:rend]
            if checks is not None:
                check = checks.get(rtype)
                if check is not None and (why := check(rdata)) is not None:
                    raise RdataError(_bad_record(owner, rtype, why))
        elif checks is not None:
            rdata = _checked_rdata(data, pos, rend, owner, rtype, kind, cache)
        elif not rdlen:
            rdata = b""
        elif kind == 1:  # a single name: NS, CNAME, PTR, ...
            rdata, p = _read_name(data, pos, cache)
            if p != rend:
                rdata = _check_rdata_tail(data, rdata, p, rend, rtype)
        elif kind == 2:  # 16-bit preference, then a name: MX, AFSDB, RT, KX
            name, p = _read_name(data, pos + 2, cache)
            rdata = data[pos:pos + 2] + name
            if p != rend:
                rdata = _check_rdata_tail(data, rdata, p, rend, rtype)
        else:
            rdata = _decompress_rdata(data, pos, rend, rtype, cache)
        append((owner, rtype, rclass, ttl, rdata))
        pos = rend
    return out, pos


def _checked_rdata(data: bytes, pos: int, rend: int, owner: bytes, rtype: int, kind: int,
                   cache: dict[int, bytes]) -> bytes:
    """Decompressed rdata of a type with names inside, valid for its type, or RdataError.

    For the name-only layouts (kinds 1 and 2) decompressing already proves
    the name well formed, so only its end is compared with the rdata's.
    """
    try:
        if kind == 1:
            if rend == pos:
                raise RdataError("empty rdata, a domain name expected")
            rdata, p = _read_name(data, pos, cache)
            if p != rend:
                raise RdataError(_tail_reason(p, rend))
            return rdata
        if kind == 2:
            if rend - pos < 3:
                raise RdataError(f"rdata of {rend - pos} octets holds no domain name")
            name, p = _read_name(data, pos + 2, cache)
            if p != rend:
                raise RdataError(_tail_reason(p, rend))
            return data[pos:pos + 2] + name
        rdata = _decompress_rdata(data, pos, rend, rtype, cache)
    except WireError as exc:
        raise RdataError(_bad_record(owner, rtype, str(exc))) from None
    why = rrtypes.check_rdata(rtype, rdata)
    if why is not None:
        raise RdataError(_bad_record(owner, rtype, why))
    return rdata


def _bad_record(owner: bytes, rtype: int, why: str) -> str:
    return f"{to_text(owner)} {rrtypes.type_name(rtype)}: {why}"


def _tail_reason(p: int, rend: int) -> str:
    if p > rend:
        return "domain name runs past the rdata"
    return f"{rend - p} octets after the domain name"


def _check_rdata_tail(data: bytes, rdata: bytes, p: int, rend: int, rtype: int) -> bytes:
    """A name that overran its rdata is an error; octets after it are kept opaque."""
    if p > rend:
        raise WireError(f"name in {rrtypes.type_name(rtype)} rdata runs past the rdata")
    return rdata + data[p:rend]


def _decompress_rdata(data: bytes, pos: int, rend: int, rtype: int, cache: dict[int, bytes]) -> bytes:
    """Rdata with every embedded name expanded, per rrtypes.NAME_LAYOUT (RFC 3597 4)."""
    layout = _DECOMPRESS[rtype]
    if layout is None:
        return _decompress_naptr(data, pos, rend, cache)
    parts: list[bytes] = []
    p = pos
    for item in layout:
        if item == "N":
            name, p = _read_name(data, p, cache)
            if p > rend:
                raise WireError(f"name in {rrtypes.type_name(rtype)} rdata runs past the rdata")
            parts.append(name)
        else:
            assert isinstance(item, int)
            q = p + item
            if q > rend:
                raise WireError(f"{rrtypes.type_name(rtype)} rdata is too short")
            parts.append(data[p:q])
            p = q
    if p < rend:
        parts.append(data[p:rend])
    return b"".join(parts)


def _decompress_naptr(data: bytes, pos: int, rend: int, cache: dict[int, bytes]) -> bytes:
    """RFC 3403 4.1: order(2) preference(2) flags services regexp (strings) replacement (name)."""
    p = pos + 4
    for _ in range(3):
        if p >= rend:
            raise WireError("NAPTR rdata is too short")
        p += data[p] + 1
    if p > rend:
        raise WireError("NAPTR character-string runs past the rdata")
    name, q = _read_name(data, p, cache)
    if q > rend:
        raise WireError("name in NAPTR rdata runs past the rdata")
    return data[pos:p] + name + data[q:rend]


def _expire_value(opt: Opt | None) -> int | None:
    """The EDNS EXPIRE value of a response, if it carries one (RFC 7314 2)."""
    if opt is None:
        return None
    value = opt.option(OPTION_EXPIRE)
    if value is None:
        return None
    if len(value) != 4:
        raise WireError(f"EDNS EXPIRE option of {len(value)} octets in a response, expected 4 (RFC 7314 2)")
    return int(_U32.unpack(value)[0])


def _question_text(question: Question) -> str:
    qname, qtype, qclass = question
    cls = "" if qclass == rrtypes.CLASS_IN else f" CLASS{qclass}"
    return f"{to_text(qname)}{cls} {rrtypes.type_name(qtype)}"


# --------------------------------------------------------------------------
# SOA probe (RFC 1034 4.3.5: the secondary polls the primary's SOA serial)


@dataclass(frozen=True, slots=True)
class SoaProbeResult:
    """What the refresh logic needs from an SOA query's reply.

    ``serial`` and ``soa`` are None when the reply carries no usable answer
    (non-NOERROR rcode, or TC set: retry over TCP, RFC 7766 5).
    """

    rcode: int
    serial: int | None
    soa: SOA | None
    truncated: bool
    expire: int | None
    authoritative: bool


def parse_soa_response(data: bytes, msg_id: int, qname: bytes) -> SoaProbeResult:
    """Validate and decode the reply to ``make_query(qname, SOA, msg_id)``.

    Raises WireError when the bytes do not decode and TransferError when the
    reply does not answer our query (wrong ID, not a response, question not
    echoed, no SOA for the zone); a different ID may be a spoofing attempt
    (RFC 5452 4), so the caller keeps waiting rather than trusting it.
    """
    msg = parse_message(data)
    if msg.id != msg_id:
        raise ResponseMismatch(f"reply ID {msg.id} does not match query ID {msg_id}")
    if not msg.qr:
        raise TransferError("QR bit clear: the message is a query, not a reply")
    if msg.opcode != OPCODE_QUERY:
        raise TransferError(f"reply has opcode {msg.opcode}, expected QUERY")
    want: Question = (qname, rrtypes.SOA, rrtypes.CLASS_IN)
    # Error replies (FORMERR, NOTIMP) may legitimately omit the question.
    if msg.question is not None or msg.rcode == NOERROR:
        _check_question(msg.question, want, "reply")
    expire = _expire_value(msg.opt)
    if msg.rcode != NOERROR or msg.tc:
        return SoaProbeResult(msg.rcode, None, None, msg.tc, expire, msg.aa)
    zone = qname.lower()
    for owner, rtype, rclass, ttl, rdata in msg.answer:
        if rtype == rrtypes.SOA and rclass == rrtypes.CLASS_IN and owner.lower() == zone:
            try:
                soa = SOA.from_rdata(ttl, rdata)
            except ZoneError as exc:
                raise TransferError(f"SOA of {to_text(qname)} in reply is malformed: {exc}") from exc
            return SoaProbeResult(msg.rcode, soa.serial, soa, False, expire, msg.aa)
    raise TransferError(f"reply holds no SOA record for {to_text(qname)} in its answer section "
                        f"({len(msg.answer)} answer records)")


def _check_question(got: Question | None, want: Question, what: str) -> None:
    """RFC 1035 4.1.2 / RFC 5936 2.2.1: the question is echoed, names compared case-insensitively."""
    if got is None:
        raise TransferError(f"{what} does not echo the question {_question_text(want)}")
    if got[1] != want[1] or got[2] != want[2] or got[0].lower() != want[0].lower():
        raise TransferError(f"{what} question {_question_text(got)} does not match the query "
                            f"{_question_text(want)}")


# --------------------------------------------------------------------------
# Zone transfer consumers

MessageHook = Callable[[bytes, Message], None]


class _InboundStream:
    """Per-message checks shared by AXFR and (later) IXFR consumers.

    Subclasses implement ``_consume``; see the module docstring.
    """

    def __init__(self, origin: bytes, msg_id: int, qtype: int, max_records: int,
                 on_message: MessageHook | None) -> None:
        self.origin = origin.lower()
        self.msg_id = msg_id
        self.qtype = qtype
        self.max_records = max_records
        self.on_message = on_message
        self.messages = 0
        self.bytes = 0
        self.records = 0
        self.expire_option: int | None = None
        self.done = False
        self._question: Question = (origin, qtype, rrtypes.CLASS_IN)

    def feed(self, message: bytes) -> bool:
        """Process one message; True once the transfer is complete.

        Every failure is a TransferError naming the reason; the caller then
        drops this consumer, so a failed transfer never reaches the registry.
        """
        if self.done:
            raise TransferError("message received after the transfer completed")
        number = self.messages + 1
        try:
            msg = parse_message(message, check_rdata=True)
        except RdataError as exc:
            # Storing it would make every query that touches it fail to encode.
            raise TransferError(f"invalid record in message {number}: {exc}") from exc
        except WireError as exc:
            raise TransferError(f"message {number} is malformed: {exc}") from exc
        if self.on_message is not None:
            self.on_message(message, msg)  # the TSIG verifier (RFC 8945 5.3.1) raises to abort
        self.messages = number
        self.bytes += len(message)
        self._check(msg, number == 1)
        self.records += len(msg.answer)
        # max-records bounds the zone as served: the closing SOA repeats the opening one
        # (RFC 5936 2.2, RFC 1995 4) and is not a record of the zone, so a stream may
        # carry one record more than the limit, and only if that one ends it.
        if self.records > self.max_records + 1:
            raise TransferError(f"transfer exceeds the limit of {self.max_records} records")
        self.done = self._consume(msg.answer, number == 1)
        if self.records > self.max_records and not self.done:
            raise TransferError(f"transfer exceeds the limit of {self.max_records} records")
        return self.done

    def _check(self, msg: Message, first: bool) -> None:
        if msg.id != self.msg_id:
            raise TransferError(f"message ID {msg.id} does not match query ID {self.msg_id}")
        if not msg.qr:
            raise TransferError("QR bit clear: the message is a query, not a response")
        if msg.opcode != OPCODE_QUERY:
            raise TransferError(f"response has opcode {msg.opcode}, expected QUERY")
        if msg.rcode != NOERROR:
            # RFC 5936 2.2.1: any error RCODE ends the transfer, whichever message carries it.
            # SERVFAIL is how BIND says its transfers-out quota is reached: worth a quick retry.
            error = TransientError if msg.rcode == SERVFAIL else TransferError
            raise error(f"primary answered {rcode_text(msg.rcode)}")
        if msg.tc:
            raise TransferError("TC bit set: transfer responses must not be truncated (RFC 5936 2.2.1)")
        # RFC 5936 2.2.1: the first message echoes the question; later ones may omit it.
        if first or msg.question is not None:
            _check_question(msg.question, self._question, "first response" if first else "response")
        if self.expire_option is None:
            try:
                self.expire_option = _expire_value(msg.opt)
            except WireError as exc:
                raise TransferError(str(exc)) from exc

    def _consume(self, answer: list[Record], first: bool) -> bool:
        raise NotImplementedError


class AxfrConsumer(_InboundStream):
    """RFC 5936 AXFR client state: SOA, the zone's records, the same SOA again.

    Records go straight into a ZoneBuilder as they arrive, so peak memory is
    the zone being built plus one message.  ``records`` counts every answer
    record received, both SOAs included; ``max_records`` limits it less the
    closing SOA, i.e. the records of the zone as it is served.
    """

    def __init__(self, origin: bytes, msg_id: int, *, max_records: int, qtype: int = rrtypes.AXFR,
                 on_message: MessageHook | None = None) -> None:
        super().__init__(origin, msg_id, qtype, max_records, on_message)
        self._builder = ZoneBuilder(origin)
        self._serial: int | None = None
        self._zone: Zone | None = None
        self.ignored_out_of_zone = 0
        self.ignored_class = 0

    @property
    def serial(self) -> int | None:
        """Serial of the opening SOA, once seen."""
        return self._serial

    def _consume(self, answer: list[Record], first: bool) -> bool:
        it = iter(answer)
        origin = self.origin
        if first:
            rec = next(it, None)
            if rec is None:
                raise TransferError("first response carries no records; expected the zone's SOA")
            self._open(rec)
        add = self._builder.add
        ignored_class = 0
        ignored_zone = 0
        try:
            for owner, rtype, rclass, ttl, rdata in it:
                if rclass != 1:  # RFC 5936 3: records of another class are not part of the zone
                    ignored_class += 1
                    continue
                if rtype == 6 and owner.lower() == origin:  # SOA at the apex closes the transfer
                    self._close(rdata)
                    extra = sum(1 for _ in it)
                    if extra:
                        raise TransferError(f"{extra} records after the closing SOA (RFC 5936 2.2)")
                    return True
                if ttl > 0x7FFFFFFF:  # RFC 2181 8: a TTL with the top bit set means zero
                    ttl = 0
                if not add(owner, rtype, ttl, rdata):
                    ignored_zone += 1  # RFC 5936 3: out-of-zone data is not zone content
        except ZoneError as exc:
            raise TransferError(f"bad zone data: {exc}") from exc
        finally:
            self.ignored_class += ignored_class
            self.ignored_out_of_zone += ignored_zone
        return False

    def _open(self, rec: Record) -> None:
        owner, rtype, rclass, ttl, rdata = rec
        if rtype != rrtypes.SOA or rclass != rrtypes.CLASS_IN or owner.lower() != self.origin:
            raise TransferError(f"first record is {rrtypes.type_name(rtype)} at {to_text(owner)}, "
                                f"not the SOA of {to_text(self.origin)} (RFC 5936 2.2)")
        try:
            soa = SOA.from_rdata(ttl, rdata)
            self._builder.add(owner, rtype, ttl, rdata)
        except ZoneError as exc:
            raise TransferError(f"opening SOA is malformed: {exc}") from exc
        self._serial = soa.serial

    def _close(self, rdata: bytes) -> None:
        try:
            serial = SOA.from_rdata(0, rdata).serial
        except ZoneError as exc:
            raise TransferError(f"closing SOA is malformed: {exc}") from exc
        if serial != self._serial:
            # RFC 5936 2.2: the zone changed mid-transfer or the stream is corrupt.
            raise TransferError(f"closing SOA serial {serial} differs from opening SOA serial {self._serial}")

    def result(self) -> Zone:
        """The transferred zone; only after ``feed`` returned True."""
        if self._zone is None:
            if not self.done:
                raise TransferError("transfer incomplete: the closing SOA has not arrived")
            try:
                self._zone = self._builder.build()
            except ZoneError as exc:
                raise TransferError(f"bad zone data: {exc}") from exc
        return self._zone


class IxfrConsumer(_InboundStream):
    """RFC 1995 4: an IXFR reply in any of its three forms.

    * a lone SOA whose serial is not newer than ours: up to date;
    * difference sequences: new SOA, then per version old SOA + deletions,
      new SOA + additions, ..., closing with the new SOA again;
    * a full zone ("AXFR-style"): new SOA followed by a non-SOA record.

    The result is either ``steps`` (for diff.apply_steps) or a full zone from
    the embedded AxfrConsumer; nothing is applied here.
    """

    def __init__(self, origin: bytes, msg_id: int, our_serial: int, *, max_records: int,
                 on_message: MessageHook | None = None) -> None:
        super().__init__(origin, msg_id, rrtypes.IXFR, max_records, on_message)
        self.our_serial = our_serial
        self.final_serial: int | None = None
        self.up_to_date = False
        self.steps: list[VersionStep] = []
        self.full: AxfrConsumer | None = None
        self._opening: Record | None = None
        self._mode = "start"  # start | second | del | add | full
        self._step: VersionStep | None = None
        self.ignored_class = 0
        self.ignored_out_of_zone = 0

    @property
    def incremental(self) -> bool:
        """True when the primary sent differences (not a full zone, not 'up to date')."""
        return self.done and self.full is None and not self.up_to_date

    def _consume(self, answer: list[Record], first: bool) -> bool:
        for index, rec in enumerate(answer):
            if self._mode == "full":
                assert self.full is not None
                return self._to_full(answer[index:])
            if self._record(rec):
                rest = len(answer) - index - 1
                if rest:
                    raise TransferError(f"{rest} records after the closing SOA (RFC 1995 4)")
                return True
        if self._mode == "second" and self.final_serial is not None and \
                not serial_newer(self.final_serial, self.our_serial):
            # A lone SOA that is not newer: we are up to date (RFC 1995 4).
            self.up_to_date = True
            return True
        return False

    def _soa_serial(self, rec: Record) -> int | None:
        owner, rtype, _rclass, ttl, rdata = rec
        if rtype != rrtypes.SOA or owner.lower() != self.origin:
            return None
        try:
            return SOA.from_rdata(ttl, rdata).serial
        except ZoneError as exc:
            raise TransferError(f"malformed SOA in IXFR: {exc}") from exc

    def _record(self, rec: Record) -> bool:
        """Advance the state machine by one record; True when the stream is complete."""
        serial = self._soa_serial(rec)
        mode = self._mode
        if mode == "start":
            if serial is None:
                raise TransferError("first record of the IXFR reply is not the zone's SOA (RFC 1995 4)")
            self.final_serial = serial
            self._opening = rec
            self._mode = "second"
            return False
        if mode == "second":
            if serial is None:
                # AXFR-style reply: hand the opening SOA and this record to a full consumer.
                self._mode = "full"
                self.full = AxfrConsumer(self.origin, self.msg_id, max_records=self.max_records,
                                         qtype=rrtypes.IXFR)
                assert self._opening is not None
                self.full._open(self._opening)
                self._to_full([rec])
                return False
            if serial == self.final_serial and serial != self.our_serial:
                raise TransferError("IXFR reply holds only SOA records of the new version")
            if serial != self.our_serial:
                raise TransferError(f"IXFR starts from serial {serial}, we asked from {self.our_serial}")
            self._begin_step(rec, serial)
            return False
        assert self._step is not None
        if serial is None:
            owner, rtype, rclass, ttl, rdata = rec
            if rclass != rrtypes.CLASS_IN:
                self.ignored_class += 1
                return False
            if ttl > 0x7FFFFFFF:
                ttl = 0  # RFC 2181 8, as for AXFR: what is served must equal what is replayed
            target = self._step.deleted if mode == "del" else self._step.added
            target.append((owner, rtype, ttl, rdata))
            return False
        if mode == "del":
            self._step.to_serial = serial
            self._step.added.append(rec[:2] + rec[3:])
            self._mode = "add"
            return False
        # mode == "add": an SOA ends the additions of this step.
        self.steps.append(self._step)
        if serial == self.final_serial and self._step.to_serial == serial:
            self._step = None
            return True
        if serial != self._step.to_serial:
            raise TransferError(f"IXFR version gap: a step ends at {self._step.to_serial}, "
                                f"the next starts at {serial}")
        self._begin_step(rec, serial)
        return False

    def _begin_step(self, rec: Record, serial: int) -> None:
        self._step = VersionStep(serial, serial, [rec[:2] + rec[3:]], [])
        self._mode = "del"

    def _to_full(self, records: list[Record]) -> bool:
        assert self.full is not None
        done = self.full._consume(records, False)
        self.full.done = done  # _consume bypasses feed(), which is what sets done; result() needs it
        self.ignored_out_of_zone = self.full.ignored_out_of_zone
        return done

    def result(self) -> Zone:
        """The full zone of an AXFR-style reply."""
        if self.full is None:
            raise TransferError("IXFR reply was incremental, not a full zone")
        return self.full.result()
