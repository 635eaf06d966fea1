"""DNS message codec for the serving side: parse queries, encode responses.

Only what serving needs, written for the hot path: a query is parsed straight
from bytes into a slotted ``Query`` (no dnslib objects, see docs/architecture.md
for the measurements behind that), and a response is encoded into one
bytearray with name compression (RFC 1035 4.1.4) and whole-RRset truncation
(RFC 2181 9).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from secondns import rrtypes
from secondns.errors import WireError
from secondns.names import read_name

# Header flag bits (RFC 1035 4.1.1, RFC 4035 3.2 for AD/CD).
QR = 0x8000
AA = 0x0400
TC = 0x0200
RD = 0x0100
RA = 0x0080
AD = 0x0020
CD = 0x0010

OPCODE_QUERY = 0
OPCODE_NOTIFY = 4
OPCODE_UPDATE = 5
# Parsed in full; any other opcode (IQUERY, STATUS, DSO, unassigned) is answered NOTIMP.
_KNOWN_OPCODES = (OPCODE_QUERY, OPCODE_NOTIFY, OPCODE_UPDATE)

NOERROR = 0
FORMERR = 1
SERVFAIL = 2
NXDOMAIN = 3
NOTIMP = 4
REFUSED = 5
YXDOMAIN = 6
NOTAUTH = 9
BADVERS = 16  # extended rcode, RFC 6891 6.1.3

EDNS_NSID = 3  # RFC 5001
EDNS_EXPIRE = 9  # RFC 7314
EDNS_COOKIE = 10  # RFC 7873

_HDR = struct.Struct("!HHHHHH")
_U16 = struct.Struct("!H")
_RR_FIXED = struct.Struct("!HHIH")  # type, class, ttl, rdlength


class FormatError(WireError):
    """The query is malformed; answer FORMERR (with the question when known)."""

    def __init__(self, reason: str, query: Query | None = None) -> None:
        super().__init__(reason)
        self.query = query


class Query:
    """A parsed request; the question is kept as the raw bytes the client sent.

    Echoing ``question`` byte for byte preserves the qname's case in the
    response, and lets the encoder point owner names at offset 12.
    """

    __slots__ = ("additional", "cookie", "do", "edns", "edns_version", "expire", "flags", "id", "nsid",
                 "opcode", "payload", "qclass", "qname", "qname_lower", "qtype", "question", "raw",
                 "tsig_offset")

    def __init__(self) -> None:
        self.id = 0
        self.flags = 0
        self.opcode = 0
        self.qname = b""
        self.qname_lower = b""
        self.qtype = 0
        self.qclass = 0
        self.question = b""
        self.edns = False
        self.edns_version = 0
        self.payload = 512
        self.do = False
        self.nsid = False
        self.expire = False  # RFC 7314 EDNS EXPIRE asked
        self.cookie: bytes | None = None  # the COOKIE option's data (RFC 7873 4)
        self.raw = b""
        self.additional: list[tuple[bytes, int, int, int, bytes]] = []
        self.tsig_offset = -1


def parse_query(data: bytes) -> Query:
    """Parse a request message (QUERY or NOTIFY).

    Raises FormatError for anything RFC 1035/6891 calls malformed; the caller
    drops messages shorter than a header or with QR set before calling this.
    """
    if len(data) < 12:
        raise FormatError("message shorter than a DNS header")
    q = Query()
    q.raw = data
    msg_id, flags, qdcount, ancount, nscount, arcount = _HDR.unpack_from(data)
    q.id = msg_id
    q.flags = flags
    q.opcode = opcode = (flags >> 11) & 0xF
    known = opcode in _KNOWN_OPCODES
    pos = 12
    if qdcount != 1:
        # An opcode we do not implement is NOTIMP whatever its question count, unless
        # the message does not even parse (more than one question), as BIND 9.18 answers.
        if qdcount > 1 or known:
            raise FormatError(f"QDCOUNT is {qdcount}, not 1")
    else:
        try:
            qname, pos = read_name(data, 12)
        except WireError as exc:
            raise FormatError(f"bad question name: {exc}") from None
        if pos + 4 > len(data):
            raise FormatError("question truncated")
        q.qname = qname
        q.qname_lower = qname.lower()
        q.qtype, q.qclass = struct.unpack_from("!HH", data, pos)
        pos += 4
        q.question = data[12:pos]
        if pos - 4 - 12 != len(qname):
            # Anything a pointer in the first question could point at is the header.
            raise FormatError("compression pointer in the question name")
    # Answer and authority records: a QUERY carries none; NOTIFY may carry
    # the new SOA in the answer section (RFC 1996 3.7), which we skip.
    for _ in range(ancount + nscount):
        rr = _read_rr(data, pos, q)
        if rr[1] == rrtypes.OPT:
            raise FormatError("OPT record outside the additional section", q)  # RFC 6891 6.1.1
        pos = rr[5]
    seen_opt = False
    for index in range(arcount):
        start = pos
        owner, rtype, rclass, ttl, rdata, pos = _read_rr(data, pos, q)
        if rtype == rrtypes.OPT:
            if seen_opt:
                raise FormatError("more than one OPT record", q)  # RFC 6891 6.1.1
            if owner != b"\x00":
                raise FormatError("OPT record not owned by the root", q)
            seen_opt = True
            _parse_opt(q, rclass, ttl, rdata)
        elif rtype == rrtypes.TSIG:
            if index != arcount - 1:
                raise FormatError("TSIG record is not the last record", q)  # RFC 8945 5.1
            q.tsig_offset = start
            q.additional.append((owner, rtype, rclass, ttl, rdata))
        else:
            q.additional.append((owner, rtype, rclass, ttl, rdata))
    if pos != len(data) and known:
        raise FormatError("trailing bytes after the last record", q)
    return q


def _read_rr(data: bytes, pos: int, q: Query) -> tuple[bytes, int, int, int, bytes, int]:
    """One record at *pos*: (owner, type, class, ttl, rdata, position after it)."""
    try:
        owner, pos = read_name(data, pos)
    except WireError as exc:
        raise FormatError(f"bad record: {exc}", q) from None
    if pos + 10 > len(data):
        raise FormatError("record truncated", q)
    rtype, rclass, ttl, rdlen = _RR_FIXED.unpack_from(data, pos)
    pos += 10
    if pos + rdlen > len(data):
        raise FormatError("record data truncated", q)
    return owner, rtype, rclass, ttl, data[pos:pos + rdlen], pos + rdlen


def _parse_opt(q: Query, rclass: int, ttl: int, rdata: bytes) -> None:
    """RFC 6891 6.1.2-6.1.3: payload size, extended flags, options."""
    q.edns = True
    q.payload = max(rclass, 512)
    q.edns_version = (ttl >> 16) & 0xFF
    q.do = bool(ttl & 0x8000)
    pos = 0
    end = len(rdata)
    while pos < end:
        if pos + 4 > end:
            raise FormatError("EDNS option header truncated", q)
        code, length = struct.unpack_from("!HH", rdata, pos)
        pos += 4 + length
        if pos > end:
            raise FormatError("EDNS option data truncated", q)
        if code == EDNS_NSID:
            q.nsid = True
        elif code == EDNS_EXPIRE:
            q.expire = True
        elif code == EDNS_COOKIE:
            if length != 8 and not 16 <= length <= 40:
                raise FormatError("malformed COOKIE option", q)  # RFC 7873 5.2.2: FORMERR
            q.cookie = rdata[pos - length:pos]
        # Unknown options are ignored (RFC 6891 6.1.2).


def opt_record(payload: int, ext_rcode: int = 0, do: bool = False,
               options: Sequence[tuple[int, bytes]] = ()) -> bytes:
    """An OPT pseudo-RR in wire form (RFC 6891 6.1.2)."""
    rdata = b"".join(_U16.pack(code) + _U16.pack(len(val)) + val for code, val in options)
    ttl = (ext_rcode << 24) | (0x8000 if do else 0)
    return b"\x00" + _RR_FIXED.pack(rrtypes.OPT, payload, ttl, len(rdata)) + rdata


# Answer-cache key flags (the key's last octet, see ``cache_key``).
KEY_RD = 0x01
KEY_CD = 0x02
KEY_DO = 0x04
KEY_EDNS = 0x08
KEY_NSID = 0x10
KEY_PAYLOAD_MID = 0x20  # UDP, EDNS payload above 512 but an effective limit below 1232
KEY_PAYLOAD_BIG = 0x40  # UDP, effective limit 1232 or more
KEY_TCP = 0x60  # the payload does not matter over TCP
KEY_PAYLOAD = 0x60
KEY_MIXED = 0x80  # the qname has upper-case letters (0x20 randomisation)
KEY_COOKIE = 0x100  # a COOKIE option: the cached tail ends short of its data (see cookie_option)
_FLAG_OCTETS = tuple(i.to_bytes(2, "big") for i in range(512))
KEY_FLAGS = 2  # octets of flags ending the key: the question ends at len(key) + 12 - KEY_FLAGS
_OPT_FIXED = struct.Struct(">3sHxBBxH")  # owner+TYPE, CLASS (payload), ext-rcode, version, DO, rdlen
_ONE_QUESTION = b"\x00\x01\x00\x00\x00\x00\x00"  # QDCOUNT 1, ANCOUNT 0, NSCOUNT 0, ARCOUNT high octet


def cache_key(d: bytes, tcp: bool, udp_max: int) -> bytes | None:
    """The answer-cache key of a plain query, or None when it is not one the cache may answer.

    The key is the case-folded qname (RFC 4343), QTYPE, QCLASS and two octets of the flags the
    answer depends on: RD and CD (echoed), DO, EDNS present, NSID asked, the payload class
    and the transport, whether the qname has upper case (see ResponseWriter) and whether a
    COOKIE option is present.  Other EDNS options (padding), the payload within its class and
    the cookie's value do not change it, so neither 0x20 randomisation, padding nor per-client
    cookies can make every query a miss: the listener appends this client's COOKIE option data
    to a cookie entry (RFC 7873 5.2, see ``Responder.cookie_answer``).  Only QUERY messages
    with one question, no records but at most one well-formed OPT (version 0) qualify; the rest
    go to the responder, which parses them in full.  The qname end is the first zero octet: the
    responder checks, before storing, that it is the real end (a label may hold a zero octet),
    and a message whose first ``len(qname)`` octets equal a stored one up to case has the same
    label structure (length octets are below 0x40, unchanged by ``lower``).
    Costs no Python loop except over the EDNS options.
    """
    if d[4:11] != _ONE_QUESTION or d[2] & 0xF8:  # QDCOUNT 1, no answer or authority; QUERY
        return None
    z = d.find(0, 12)
    if z < 0:
        return None
    n = len(d)
    o = z + 5
    qname = d[12:z + 1]
    low = qname.lower()
    flags = (d[2] & 1) | ((d[3] & 0x10) >> 3) | (0 if low == qname else KEY_MIXED)
    ar = d[11]
    if ar == 0:
        if o != n:
            return None
    elif ar == 1:
        if n < o + 11:
            return None  # a truncated OPT record: the responder answers FORMERR
        # RFC 6891 6.1.2: owner root, TYPE 41, CLASS the payload, TTL ext-rcode/version/flags.
        head, payload, version, do, rdlength = _OPT_FIXED.unpack_from(d, o)
        if head != b"\x00\x00\x29" or version or rdlength != n - o - 11:
            return None
        flags |= KEY_DO | KEY_EDNS if do & 0x80 else KEY_EDNS
        p = o + 11
        while p < n:  # each turn advances by at least 4
            if p + 4 > n:
                return None
            length = d[p + 2] << 8 | d[p + 3]
            if not d[p]:
                code = d[p + 1]
                if code == EDNS_NSID:
                    flags |= KEY_NSID
                elif code == EDNS_COOKIE:
                    if flags & KEY_COOKIE or (length != 8 and not 16 <= length <= 40):
                        return None  # two, or malformed: the responder answers (RFC 7873 5.2.2)
                    flags |= KEY_COOKIE
                elif code == EDNS_EXPIRE:
                    return None  # RFC 7314 2: the answer carries a clock reading, never cached
            p += 4 + length
        if p != n:
            return None
        if not tcp and payload > 512:
            flags |= KEY_PAYLOAD_BIG if min(payload, udp_max) >= 1232 else KEY_PAYLOAD_MID
    else:
        return None
    if tcp:
        flags |= KEY_TCP
    return low + d[z + 1:o] + _FLAG_OCTETS[flags]


def cookie_option(d: bytes, qend: int) -> bytes:
    """The COOKIE option data of a query whose ``cache_key`` has KEY_COOKIE (so its OPT record,
    right after the question ending at *qend*, is well formed and holds one)."""
    p = qend + 11
    n = len(d)
    while p < n:  # cache_key checked the option lengths: each turn advances by at least 4
        length = d[p + 2] << 8 | d[p + 3]
        if not d[p] and d[p + 1] == EDNS_COOKIE:
            return d[p + 4:p + 4 + length]
        p += 4 + length
    return b""


RRsetOut = tuple[bytes, int, Sequence[tuple[int, bytes]]]
"""(owner wire name, type, [(ttl, rdata), ...]) as the encoder takes it."""


class ResponseWriter:
    """Encodes one response; sections must be added in order.

    ``limit`` is the most the message may hold; ``reserve`` is kept free for
    the OPT record, which RFC 6891 7 requires even in a truncated response.
    """

    __slots__ = ("_buf", "_class", "_counts", "_limit", "_ptrs", "_qname_lower", "dropped", "flags",
                 "truncated")

    def __init__(self, query_id: int, flags: int, question: bytes, qname_lower: bytes,
                 limit: int = 65535, reserve: int = 0, rclass: int = 1,
                 question_suffixes: bool = True) -> None:
        self._buf = bytearray(_HDR.pack(query_id, flags, 1 if question else 0, 0, 0, 0))
        self._buf += question
        self._counts = [0, 0, 0]
        self._limit = limit - reserve
        self.flags = flags
        self.truncated = False
        self.dropped = False  # an RRset (required or not) did not fit: the answer depends on the limit
        self._qname_lower = qname_lower
        self._class = rclass.to_bytes(2, "big")  # IN, or CH for the CHAOS identity answers
        # Compression targets: lowercased name suffix -> offset (RFC 1035 4.1.4).
        self._ptrs: dict[bytes, int] = {}
        if question and question_suffixes:
            # The name as the client wrote it.  Left out for a mixed-case question, so that the
            # message does not depend on the client's case except through the question itself and
            # the 0xC00C owners (the answer cache patches the question in, see AnswerCache).
            self._remember(question[:-4], 12)

    def _remember(self, name_lower: bytes, offset: int) -> None:
        ptrs = self._ptrs
        pos = 0
        while name_lower[pos] != 0 and offset + pos < 0x4000:
            suffix = name_lower[pos:]
            if suffix in ptrs:
                return
            ptrs[suffix] = offset + pos
            pos += name_lower[pos] + 1

    def _name(self, name: bytes, compress: bool = True) -> None:
        """Append a name, compressed against everything written before.

        Suffixes match case-sensitively (except the question, matched case-
        insensitively for owner names equal to it), so names inside rdata keep
        the case the zone gives them, as BIND's responses do.
        """
        buf = self._buf
        if not compress:
            buf += name
            return
        lower = name
        ptrs = self._ptrs
        pos = 0
        start = len(buf)
        while lower[pos] != 0:
            target = ptrs.get(lower[pos:])
            if target is not None:
                buf += name[:pos]
                buf += _U16.pack(0xC000 | target)
                self._remember_prefix(lower, pos, start)
                return
            pos += lower[pos] + 1
        buf += name
        self._remember(lower, start)

    def _remember_prefix(self, lower: bytes, stop: int, offset: int) -> None:
        """Record the suffixes of a partly compressed name that precede the pointer."""
        ptrs = self._ptrs
        pos = 0
        while pos < stop and offset + pos < 0x4000:
            suffix = lower[pos:]
            if suffix not in ptrs:
                ptrs[suffix] = offset + pos
            pos += lower[pos] + 1

    def _rdata(self, rtype: int, rdata: bytes) -> None:
        """Append rdlength+rdata, compressing names only for RFC 1035 types (RFC 3597 4)."""
        buf = self._buf
        if rtype not in rrtypes.COMPRESSIBLE:
            buf += _U16.pack(len(rdata))
            buf += rdata
            return
        len_at = len(buf)
        buf += b"\x00\x00"
        for is_name, piece in rrtypes.split_rdata(rtype, rdata):
            if is_name:
                self._name(piece)
            else:
                buf += piece
        _U16.pack_into(buf, len_at, len(buf) - len_at - 2)

    def add_rrsets(self, section: int, rrsets: Sequence[RRsetOut], required: bool) -> bool:
        """Append whole RRsets to section 0/1/2 (answer/authority/additional).

        Returns False when one did not fit: the partial RRset is rolled back,
        and TC is set when the RRset was *required* (RFC 2181 9: missing
        additional data does not make a response truncated).  An RRSIG RRset
        that does not fit takes the RRset it covers (just before it) with it,
        so signatures never travel without their data or the reverse.
        """
        buf = self._buf
        prev_mark = -1
        prev_count = 0
        prev_owner = b""
        for owner, rtype, records in rrsets:
            mark = len(buf)
            saved_ptrs = len(self._ptrs)
            for ttl, rdata in records:
                if owner == self._qname_lower:
                    buf += b"\xc0\x0c"
                else:
                    self._name(owner)
                buf += _U16.pack(rtype)
                buf += self._class
                buf += ttl.to_bytes(4, "big")
                self._rdata(rtype, rdata)
            if len(buf) > self._limit:
                if rtype == rrtypes.RRSIG and prev_mark >= 0 and prev_owner == owner:
                    mark = prev_mark  # RFC 4035 3.1.1: keep the pair whole
                    self._counts[section] -= prev_count
                del buf[mark:]
                self.dropped = True
                if len(self._ptrs) != saved_ptrs or mark == prev_mark:
                    self._ptrs = {k: v for k, v in self._ptrs.items() if v < mark}
                if required:
                    self.truncated = True
                    self.flags |= TC
                return False
            self._counts[section] += len(records)
            prev_mark, prev_count, prev_owner = mark, len(records), owner
        return True

    def add_raw_additional(self, rr_wire: bytes) -> None:
        """Append a pre-encoded record (OPT, TSIG) past the limit check."""
        self._buf += rr_wire
        self._counts[2] += 1

    def finish(self, rcode: int) -> bytes:
        """Patch flags and counts into the header and return the message."""
        buf = self._buf
        _U16.pack_into(buf, 2, (self.flags & ~0xF) | (rcode & 0xF))
        struct.pack_into("!HHH", buf, 6, *self._counts)
        return bytes(buf)


def error_response(data: bytes, rcode: int, query: Query | None = None,
                   opt: bytes | None = None) -> bytes | None:
    """A bare response with *rcode*, echoing the question when it parsed and *query* is given.

    Returns None when the message is too short to carry an ID.
    """
    if len(data) < 12:
        return None
    msg_id, flags = struct.unpack_from("!HH", data)
    # RD and CD are echoed for QUERY only (RFC 1035 4.1.1, RFC 4035 3.1.6), as BIND 9.18 does.
    out_flags = QR | (flags & (0x7800 | RD | CD) if flags & 0x7800 == 0 else flags & 0x7800)
    question = query.question if query is not None and query.question else b""
    writer = ResponseWriter(msg_id, out_flags, question, query.qname_lower if question and query else b"")
    if opt is not None:
        writer.add_raw_additional(opt)
    return writer.finish(rcode)
