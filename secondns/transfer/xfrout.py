"""Transfer-out: AXFR (RFC 5936) and IXFR (RFC 1995) to downstream secondaries.

A transfer is a generator of response messages.  The TCP connection pulls
one message at a time as its transport drains (server.TCPServer is a push
producer paused by Twisted when the write buffer fills), so a 1M-record zone
never sits in memory as wire data and no reactor turn builds more than one
64 KiB message.  The generator holds the snapshot it started from, so the
stream is one version from first SOA to last, whatever is swapped in
meanwhile (RFC 5936 2.2: never a half-swapped zone).

Access is per zone, ``allow-transfer`` (docs/configuration.md); a zone
without it refuses every transfer, as before transfer-out existed.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from secondns import rrtypes
from secondns.config import ServerConfig, TransferAcl, TsigKey, ZoneConfig, source_address
from secondns.diff import VersionStep
from secondns.errors import StorageError, WireError, ZoneError
from secondns.names import read_name
from secondns.registry import Registry
from secondns.serial import serial_gt
from secondns.store import journal, storage
from secondns.transfer import tsig
from secondns.wire import (
    AA,
    EDNS_EXPIRE,
    FORMERR,
    NOERROR,
    NOTAUTH,
    QR,
    REFUSED,
    SERVFAIL,
    FormatError,
    Query,
    ResponseWriter,
    error_response,
    opt_record,
    parse_query,
)
from secondns.zone import Zone, decode_node

log = logging.getLogger("secondns")

MAX_MESSAGE = 65535  # RFC 5936 2.2: each message of the stream is one TCP DNS message
_TSIG_ROOM = 200  # as responder._TSIG_ROOM: key name, algorithm name, SHA-512 MAC
_RR_FIXED = struct.Struct("!HHIH")
# In-memory IXFR history per zone (``TransferOut.remember``); older changes come from the journal.
HISTORY_RECORDS = 100_000
HISTORY_STEPS = 1000

RRset = tuple[bytes, int, Sequence[tuple[int, bytes]]]


def is_transfer(message: bytes) -> bool:
    """True for a QUERY whose single question asks AXFR or IXFR (cheap: no parse)."""
    n = len(message)
    if n < 17 or message[2] & 0xF8 or message[4:6] != b"\x00\x01":  # QR, opcode QUERY, QDCOUNT 1
        return False
    pos = 12
    while pos < n:
        length = message[pos]
        if length == 0:
            break
        if length >= 0x40:
            return False  # the question name is never compressed
        pos += length + 1
    return pos + 4 < n + 1 and message[pos + 1] == 0 and message[pos + 2] in (rrtypes.IXFR, rrtypes.AXFR)



def acl_allows(acl: Sequence[TransferAcl], host: str, key: TsigKey | None) -> bool:
    """True when one entry matches: its address (if set) holds *host* and its key (if set)
    is the key the request was signed with (verified before this is asked)."""
    src = source_address(host)
    for entry in acl:
        if entry.network is not None and (src is None or src not in entry.network):
            continue
        if entry.key is not None and (key is None or tsig.key_name_wire(key).lower()
                                      != tsig.key_name_wire(entry.key).lower()
                                      or key.secret != entry.key.secret):
            continue
        return True
    return False


def client_serial(q: Query) -> int | None:
    """The serial of the SOA in an IXFR request's authority section (RFC 1995 3), or None."""
    raw = q.raw
    ancount, nscount = struct.unpack_from("!HH", raw, 6)
    if ancount or not nscount:
        return None
    try:
        _owner, pos = read_name(raw, 12 + len(q.question))
        rtype, _rclass, _ttl, rdlen = _RR_FIXED.unpack_from(raw, pos)
        pos += 10
        if rtype != rrtypes.SOA or pos + rdlen > len(raw):
            return None
        # The SOA's names may be compressed against the question; only the counters matter.
        rdata = raw[pos:pos + rdlen]
        return int(struct.unpack_from("!I", rdata, rdlen - 20)[0]) if rdlen >= 22 else None
    except (WireError, struct.error):
        return None


def axfr_rrsets(zone: Zone) -> Iterator[RRset]:
    """The whole zone as RRsets, SOA first and last (RFC 5936 2.2)."""
    origin = zone.origin
    soa: RRset = (origin, rrtypes.SOA, ((zone.soa.ttl, zone.soa.rdata),))
    yield soa
    for name, blob in zone.nodes():
        for rtype, records in decode_node(blob).items():
            if rtype == rrtypes.SOA and name == origin:
                continue
            yield name, rtype, records
    yield soa


def _grouped(records: Iterable[tuple[bytes, int, int, bytes]]) -> Iterator[RRset]:
    owner_type: tuple[bytes, int] | None = None
    batch: list[tuple[int, bytes]] = []
    for owner, rtype, ttl, rdata in records:
        if rtype == rrtypes.SOA:
            continue
        if owner_type != (owner, rtype):
            if owner_type is not None and batch:
                yield owner_type[0], owner_type[1], batch
            owner_type, batch = (owner, rtype), []
        batch.append((ttl, rdata))
    if owner_type is not None and batch:
        yield owner_type[0], owner_type[1], batch


def ixfr_rrsets(zone: Zone, steps: Sequence[VersionStep]) -> Iterator[RRset]:
    """RFC 1995 4: current SOA, then per step old SOA, deletions, new SOA, additions, then
    the current SOA again.  The steps' own SOA records (in deleted/added) delimit them."""
    origin = zone.origin
    current: RRset = (origin, rrtypes.SOA, ((zone.soa.ttl, zone.soa.rdata),))
    yield current
    for step in steps:
        old = [(ttl, rd) for o, t, ttl, rd in step.deleted if t == rrtypes.SOA and o.lower() == origin]
        new = [(ttl, rd) for o, t, ttl, rd in step.added if t == rrtypes.SOA and o.lower() == origin]
        yield origin, rrtypes.SOA, old[:1]
        yield from _grouped(step.deleted)
        yield origin, rrtypes.SOA, new[:1]
        yield from _grouped(step.added)
    yield current


def pack(rrsets: Iterable[RRset], query_id: int, flags: int, question: bytes, qname_lower: bytes,
         opt: bytes | None, reserve: int, limit: int = MAX_MESSAGE) -> Iterator[bytes]:
    """Pack RRsets into as few messages of at most *limit* octets as they fit in, compressed.

    The question goes in the first message only (RFC 5936 2.2.1 allows it in
    the others); an RRset too big for one message is split across several.
    """
    room = (len(opt) if opt else 0) + reserve

    def writer(first: bool) -> ResponseWriter:
        return ResponseWriter(query_id, flags, question if first else b"",
                              qname_lower if first else b"", limit, room)

    def done(w: ResponseWriter) -> bytes:
        if opt is not None:
            w.add_raw_additional(opt)
        return w.finish(NOERROR)

    w = writer(True)
    count = 0
    for rrset in rrsets:
        if w.add_rrsets(0, (rrset,), False):
            count += 1
            continue
        if count:
            yield done(w)
            w, count = writer(False), 0
            if w.add_rrsets(0, (rrset,), False):
                count += 1
                continue
        owner, rtype, records = rrset
        for record in records:  # one RRset larger than a message: record by record
            one = ((owner, rtype, (record,)),)
            if not w.add_rrsets(0, one, False):
                if not count:
                    raise WireError("a record does not fit in a 64 KiB message")
                yield done(w)
                w, count = writer(False), 0
                if not w.add_rrsets(0, one, False):
                    raise WireError("a record does not fit in a 64 KiB message")
            count += 1
    yield done(w)


def pack_zone(zone: Zone, query_id: int, flags: int, question: bytes, opt: bytes | None,
              reserve: int, limit: int = MAX_MESSAGE) -> Iterator[bytes]:
    """AXFR messages straight from the node blobs (RFC 5936 2.2), as ``pack(axfr_rrsets(zone))``
    gives them but without decoding nodes into RRset lists: the hot loop of a 1M-record AXFR.

    Owner names are compressed (RFC 1035 4.1.4) against what the message holds, each record of
    a node pointing at the node's first owner; rdata names only for RFC 1035 types (RFC 3597 4).
    Records of one RRset may straddle two messages, which RFC 5936 2.2 allows.
    """
    origin = zone.origin
    room = limit - (len(opt) if opt else 0) - reserve
    compressible = rrtypes.COMPRESSIBLE
    split = rrtypes.split_rdata
    pack_u16 = struct.Struct("!H").pack
    fixed = struct.Struct("!HHIH").pack
    unpack = struct.Struct("!HIH").unpack_from
    soa_blob = struct.pack("!HIH", rrtypes.SOA, zone.soa.ttl, len(zone.soa.rdata)) + zone.soa.rdata
    buf = bytearray()
    ptrs: dict[bytes, int] = {}
    count = 0
    first = True

    def start() -> None:
        nonlocal buf, ptrs, count
        q = question if first else b""
        buf = bytearray(struct.pack("!HHHHHH", query_id, flags, 1 if q else 0, 0, 0, 0)) + q
        ptrs = {}
        count = 0
        if q:
            _remember_name(ptrs, q[:-4].lower(), 12)

    def finish() -> bytes:
        nonlocal first
        first = False
        if opt is not None:
            buf.extend(opt)
        struct.pack_into("!HHH", buf, 6, count, 0, 1 if opt is not None else 0)
        return bytes(buf)

    def name(value: bytes) -> None:
        pos = 0
        at = len(buf)
        while value[pos]:
            target = ptrs.get(value[pos:])
            if target is not None:
                buf.extend(value[:pos])
                buf.extend(pack_u16(0xC000 | target))
                _remember_name(ptrs, value, at, pos)
                return
            pos += value[pos] + 1
        buf.extend(value)
        _remember_name(ptrs, value, at)

    def nodes() -> Iterator[tuple[bytes, bytes]]:
        yield origin, soa_blob
        yield from zone.nodes()
        yield origin, soa_blob

    start()
    for owner, blob in nodes():
        skip_soa = owner == origin and blob is not soa_blob  # the apex SOA goes first and last
        pos = 0
        end = len(blob)
        owner_at = -1
        while pos < end:
            rtype, ttl, rdlen = unpack(blob, pos)
            rdata = blob[pos + 8:pos + 8 + rdlen]
            pos += 8 + rdlen
            if skip_soa and rtype == rrtypes.SOA:
                continue
            for _attempt in (0, 1):
                mark = len(buf)
                n_ptrs = len(ptrs)
                if owner_at >= 0:
                    buf.extend(pack_u16(0xC000 | owner_at))
                else:
                    name(owner)
                if rtype in compressible:
                    buf.extend(fixed(rtype, 1, ttl, 0))
                    len_at = len(buf) - 2
                    for is_name, piece in split(rtype, rdata):
                        if is_name:
                            name(piece)
                        else:
                            buf.extend(piece)
                    struct.pack_into("!H", buf, len_at, len(buf) - len_at - 2)
                else:
                    buf.extend(fixed(rtype, 1, ttl, rdlen))
                    buf.extend(rdata)
                if len(buf) <= room:
                    if owner_at < 0 and mark < 0x4000 and buf[mark] < 0xC0:
                        owner_at = mark
                    count += 1
                    break
                del buf[mark:]
                if len(ptrs) != n_ptrs:
                    ptrs = {k: v for k, v in ptrs.items() if v < mark}
                if not count:
                    raise WireError("a record does not fit in a 64 KiB message")
                yield finish()
                start()
                owner_at = -1
    yield finish()


def _remember_name(ptrs: dict[bytes, int], lower: bytes, offset: int, stop: int = -1) -> None:
    """Record the suffixes of a name written at *offset* (up to *stop*, where a pointer follows)."""
    pos = 0
    while lower[pos] and offset + pos < 0x4000 and (stop < 0 or pos < stop):
        suffix = lower[pos:]
        if suffix not in ptrs:
            ptrs[suffix] = offset + pos
        pos += lower[pos] + 1


def _signed(messages: Iterable[bytes], key: TsigKey, request_mac: bytes) -> Iterator[bytes]:
    prior = request_mac
    first = True
    for message in messages:
        signed, prior = tsig.sign_stream_message(message, key, prior, first)
        first = False
        yield signed


class TransferOut:
    """Decides and streams transfers out; counts them for /metrics.

    Lives in the process that runs transfers (docs/architecture.md "Transfer-out").
    """

    def __init__(self, registry: Registry, zone_config: Callable[[bytes], ZoneConfig | None],
                 keys: Callable[[], Mapping[bytes, TsigKey]], server: ServerConfig) -> None:
        self.registry = registry
        self.zone_config = zone_config
        self.keys = keys
        self.server = server
        self.storage = Path(server.storage)
        self.active = 0
        self.active_by_client: dict[str, int] = {}
        # (zone, type, result) -> count; bounded by zones x 2 x a handful of results.
        self.counts: dict[tuple[str, str, str], int] = {}
        self.bytes_out: dict[str, int] = {}
        self.history: dict[bytes, list[VersionStep]] = {}  # recent IXFR steps (remember)
        self.expire_remaining: Callable[[bytes], int | None] = lambda origin: None

    @property
    def idle_timeout(self) -> float:
        """Seconds a downstream may leave the stream unread before it is dropped."""
        return self.server.transfer_out_idle_timeout

    def _count(self, zone: str, kind: str, result: str) -> None:
        key = (zone, kind, result)
        self.counts[key] = self.counts.get(key, 0) + 1

    # -- entry points

    def tcp(self, message: bytes, addr: tuple[str, int], conn: Any = None,
            rest: bytes = b"") -> Iterator[bytes]:
        """The messages answering an AXFR/IXFR received over TCP (one, for a refusal).

        *conn* and *rest* (what follows in the connection's buffer) are for the worker's
        hand-off (serve.xfrhandoff); here the connection answers *rest* after the stream.
        """
        response, stream = self._decide(message, addr, tcp=True)
        if stream is not None:
            return stream
        return iter((response,) if response is not None else ())

    def udp(self, message: bytes, addr: tuple[str, int], payload: int) -> bytes | None:
        """RFC 1995 2: an IXFR over UDP gets the whole answer if it fits in one datagram,
        else the current SOA alone (the client then retries over TCP)."""
        response, _stream = self._decide(message, addr, tcp=False, udp_payload=payload)
        return response

    # -- the decision

    def _decide(self, message: bytes, addr: tuple[str, int], tcp: bool,
                udp_payload: int = 512) -> tuple[bytes | None, Iterator[bytes] | None]:
        try:
            q = parse_query(message)
        except FormatError as exc:
            return error_response(message, FORMERR, exc.query), None
        kind = "axfr" if q.qtype == rrtypes.AXFR else "ixfr"
        options: list[tuple[int, bytes]] = []
        if q.expire:  # RFC 7314 2: our copy's remaining expire time, so a chain never stretches it
            remaining = self.expire_remaining(q.qname_lower)
            if remaining is not None:
                options.append((EDNS_EXPIRE, remaining.to_bytes(4, "big")))
        opt = opt_record(self.server.udp_max_payload, 0, q.do, options) if q.edns else None
        verified: tsig.VerifiedRequest | None = None
        if q.tsig_offset >= 0:
            try:
                verified = tsig.verify_request(q.raw, self.keys(), peer=addr[0])
            except tsig.TsigError as exc:
                plain = error_response(q.raw, NOTAUTH, q)
                name = self._zone_name(q)
                self._count(name, kind, "badkey" if exc.reason in ("BADKEY", "BADSIG") else "notauth")
                log.warning("%s of %s from %s refused: %s", kind.upper(), name, addr[0], exc)
                return (tsig.error_response(plain, exc) if plain is not None else None), None

        def answer(rcode: int) -> bytes | None:
            response = error_response(q.raw, rcode, q, opt)
            if response is not None and verified is not None:
                response = tsig.sign_response(response, verified.key, verified.mac)
            return response

        entry = self.registry.get(q.qname_lower) if q.qclass == rrtypes.CLASS_IN else None
        zc = self.zone_config(q.qname_lower) if entry is not None else None
        if entry is None or zc is None or not zc.allow_transfer:
            # Not a zone we serve, or one without transfer-out: refused, as BIND without
            # allow-transfer (RFC 5936 5.1 leaves the policy to the operator).
            return answer(REFUSED), None
        key = verified.key if verified is not None else None
        if not acl_allows(zc.allow_transfer, addr[0], key):
            self._count(zc.name, kind, "refused")
            log.warning("%s of %s from %s refused by allow-transfer%s", kind.upper(), zc.name, addr[0],
                        f" (key {key.name})" if key else " (unsigned)")
            return answer(REFUSED), None
        zone = entry.snapshot
        if zone is None or entry.expired:
            self._count(zc.name, kind, "servfail")
            return answer(SERVFAIL), None  # RFC 5936 2.2.1: we cannot vouch for the data
        flags = QR | AA | (q.flags & 0x0100)
        question = q.question
        reserve = _TSIG_ROOM if verified is not None else 0
        rrsets: Iterable[RRset]
        if kind == "ixfr":
            serial = client_serial(q)
            if serial is None:
                self._count(zc.name, kind, "formerr")
                return answer(FORMERR), None  # RFC 1995 3: the request carries the client's SOA
            if not serial_gt(zone.serial, serial):
                # RFC 1995 2: the client is current: the one SOA says so.
                rrsets, style = (((zone.origin, rrtypes.SOA, ((zone.soa.ttl, zone.soa.rdata),)),),
                                 "current")
            else:
                steps = self._journal_steps(zc, zone, serial)
                if steps is not None:
                    rrsets, style = ixfr_rrsets(zone, steps), "incremental"
                else:
                    rrsets, style = axfr_rrsets(zone), "full"  # RFC 1995 4: AXFR-style
        else:
            rrsets, style = axfr_rrsets(zone), "full"
        if not tcp:
            return self._udp_answer(zc, zone, q, rrsets, flags, opt, reserve, verified, udp_payload), None
        client = addr[0]
        if self.active >= self.server.transfers_out or \
                self.active_by_client.get(client, 0) >= self.server.transfers_out_per_client:
            self._count(zc.name, kind, "limit")
            log.warning("%s of %s from %s refused: transfers-out limit reached", kind.upper(), zc.name,
                        client)
            return answer(REFUSED), None
        if style == "full":
            messages = pack_zone(zone, q.id, flags, question, opt, reserve)
        else:
            messages = pack(rrsets, q.id, flags, question, q.qname_lower, opt, reserve)
        if verified is not None:
            messages = _signed(messages, verified.key, verified.mac)
        log.info("%s of %s serial %d to %s (%s)", kind.upper(), zc.name, zone.serial, client, style)
        return None, self._stream(messages, zc.name, kind, client)

    def _udp_answer(self, zc: ZoneConfig, zone: Zone, q: Query, rrsets: Iterable[RRset], flags: int,
                    opt: bytes | None, reserve: int, verified: tsig.VerifiedRequest | None,
                    payload: int) -> bytes:
        limit = min(payload, self.server.udp_max_payload) if q.edns else 512
        messages = pack(rrsets, q.id, flags, q.question, q.qname_lower, opt, reserve, limit)
        first = next(messages)
        if next(messages, None) is not None:
            soa = ((zone.origin, rrtypes.SOA, ((zone.soa.ttl, zone.soa.rdata),)),)
            first = next(pack(soa, q.id, flags, q.question, q.qname_lower, opt, reserve, limit))
        if verified is not None:
            first = tsig.sign_response(first, verified.key, verified.mac)
        self._count(zc.name, "ixfr", "udp")
        return first

    def remember(self, origin: bytes, steps: Sequence[VersionStep], serial: int) -> None:
        """Keep an IXFR's steps in memory as it is applied, so the NOTIFY it triggers is
        answered incrementally without waiting for, or parsing, the journal."""
        if not steps:
            return
        history = self.history.setdefault(origin, [])
        if history and history[-1].to_serial != steps[0].from_serial:
            history.clear()
        history.extend(steps)
        size = sum(len(st.deleted) + len(st.added) for st in history)
        while history and (size > HISTORY_RECORDS or len(history) > HISTORY_STEPS):
            old = history.pop(0)
            size -= len(old.deleted) + len(old.added)

    def forget(self, origin: bytes) -> None:
        """A full copy replaced the zone: older steps may not lead to it."""
        self.history.pop(origin, None)

    def _journal_steps(self, zc: ZoneConfig, zone: Zone, serial: int) -> list[VersionStep] | None:
        """The steps from *serial* to the served version (memory, else the journal), or None."""
        history = self.history.get(zc.origin, [])
        for i, step in enumerate(history):
            if step.from_serial == serial and history[-1].to_serial == zone.serial:
                return list(history[i:])
        try:
            base = storage.copy_serial(self.storage, zc.name)
            if base is None:
                return None
            steps = journal.read(self.storage, zc.name, zc.origin, base)
        except (StorageError, ZoneError, OSError) as exc:
            log.warning("zone %s: journal unreadable for IXFR out (%s); sending the whole zone",
                        zc.name, exc)
            return None
        for i, step in enumerate(steps):
            if step.from_serial == serial:
                tail = steps[i:]
                return tail if tail[-1].to_serial == zone.serial else None
        return None

    def _stream(self, messages: Iterator[bytes], zone: str, kind: str, client: str) -> Iterator[bytes]:
        """Hold a transfer slot while the stream runs; count how it ended."""
        self.active += 1
        self.active_by_client[client] = self.active_by_client.get(client, 0) + 1
        result = "aborted"
        sent = 0
        try:
            for message in messages:
                sent += len(message) + 2
                yield message
            result = "ok"
        except WireError as exc:
            log.error("%s of %s to %s failed: %s", kind.upper(), zone, client, exc)
            result = "failed"
        finally:
            self.active -= 1
            left = self.active_by_client.get(client, 1) - 1
            if left:
                self.active_by_client[client] = left
            else:
                self.active_by_client.pop(client, None)
            self._count(zone, kind, result)
            self.bytes_out[zone] = self.bytes_out.get(zone, 0) + sent

    def _zone_name(self, q: Query) -> str:
        zc = self.zone_config(q.qname_lower)
        return zc.name if zc is not None else "-"

    def collector(self) -> Collector:
        """``secondns_transfers_out_*`` for the metrics registry."""
        return _Collector(self)


class _Collector(Collector):
    def __init__(self, out: TransferOut) -> None:
        self.out = out

    def collect(self) -> Iterator[Any]:
        total = CounterMetricFamily("secondns_transfers_out", "Transfers out (AXFR/IXFR) by how they ended.",
                                    labels=["zone", "type", "result"])
        for (zone, kind, result), value in sorted(self.out.counts.items()):
            total.add_metric([zone, kind, result], value)
        sent = CounterMetricFamily("secondns_transfer_out_bytes", "Octets sent in transfers out.",
                                   labels=["zone"])
        for zone, value in sorted(self.out.bytes_out.items()):
            sent.add_metric([zone], value)
        active = GaugeMetricFamily("secondns_transfers_out_active", "Transfers out in progress.")
        active.add_metric([], self.out.active)
        yield total
        yield sent
        yield active
