"""A scripted, misbehaving primary on loopback: honest SOA answers, AXFR streams as a test says.

Real primaries (BIND, Knot, NSD) never send a broken transfer on purpose, so the failure paths of
the transfer client (stream cut short, closing SOA of another serial, wrong message ID, an error
RCODE half-way, garbage, a stalled connection, too many records) need a server that does exactly
what it is told.  ``BadPrimary`` answers SOA queries over UDP and TCP with its current ``serial``
(or with ``soa_rcode``), and answers every AXFR with the stream named by ``axfr``.  Both can be
changed between transfers, so one instance serves a whole test module.  It is an AXFR-only
primary: IXFR gets NOTIMP, so a secondary that tries IXFR first must fall back to the script.

Each server runs in daemon threads with short socket timeouts; ``stop()`` ends them (bounded) and
closes every connection, including one a stalled script is holding open.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Literal, Self

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.zone
from peers import LOOPBACK, free_port

AxfrScript = Literal[
    "good",  # SOA, records, SOA, in several messages
    "good-close",  # as "good" with ``oversize_records`` extra records, then the connection is closed
    "truncated",  # the first message, then the connection is closed
    "closing-serial",  # the closing SOA carries serial + 1
    "wrong-id",  # the second message has another message ID
    "notauth",  # the second message has RCODE NOTAUTH
    "garbage",  # the second message is a framed run of garbage octets
    "stall",  # the first message, then silence on an open connection
    "oversize",  # a well-formed stream with ``oversize_records`` extra records
    "refused",  # AXFR answered REFUSED
    "empty-mx",  # the second message also carries mail.<zone> MX with RDLENGTH 0
    "bad-cname",  # the second message also carries alias.<zone> CNAME: a name, then garbage
]

# Records dnspython will not render, appended raw (owner, type, rdata) to the second message.
_RAW_RECORDS = {
    "empty-mx": ("mail", dns.rdatatype.MX, b""),
    "bad-cname": ("alias", dns.rdatatype.CNAME, b"\x03www\x00garbage\xff"),
}

_POLL = 0.1  # socket timeout: how quickly the threads notice stop()
_STOP_TIMEOUT = 5.0
RECORDS_PER_MESSAGE = 5  # small, so every stream of a test zone spans several messages


def bad_primary_zone(origin: str, serial: int) -> str:
    """The zone a BadPrimary serves: long timers, so a failed transfer is not retried by itself."""
    o = origin.rstrip(".") + "."
    hosts = "".join(f"host{i} IN A 192.0.2.{10 + i}\n" for i in range(12))
    return (
        f"$ORIGIN {o}\n$TTL 300\n"
        f"@ IN SOA ns1.{o} hostmaster.{o} {serial} 3600 3600 1209600 300\n"
        f"@ IN NS ns1.{o}\n@ IN NS ns2.{o}\n"
        "ns1 IN A 192.0.2.1\nns2 IN A 192.0.2.2\nwww IN A 192.0.2.80\n"
        'www IN TXT "served by the scripted primary"\n' + hosts
    )


class BadPrimary:
    """A UDP+TCP DNS server for one zone whose AXFR answers follow a script."""

    def __init__(
        self,
        origin: str,
        *,
        serial: int = 1,
        axfr: AxfrScript = "good",
        soa_rcode: dns.rcode.Rcode | None = None,
        zone_text: Callable[[str, int], str] = bad_primary_zone,
        oversize_records: int = 500,
        port: int | None = None,
        host: str = LOOPBACK,
    ) -> None:
        self.origin = dns.name.from_text(origin)
        self.host = host  # "::1" for an IPv6 primary
        self.family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.serial = serial
        self.axfr: AxfrScript = axfr
        self.soa_rcode = soa_rcode
        self.zone_text = zone_text
        self.oversize_records = oversize_records
        self.port = port if port is not None else free_port()
        self.axfr_requests = 0
        self.ixfr_requests = 0
        self.soa_requests = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None

    # -- life cycle

    def start(self) -> Self:
        self._stop.clear()
        udp = socket.socket(self.family, socket.SOCK_DGRAM)
        udp.bind((self.host, self.port))
        udp.settimeout(_POLL)
        tcp = socket.socket(self.family, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.bind((self.host, self.port))
        tcp.listen(16)
        tcp.settimeout(_POLL)
        self._udp, self._tcp = udp, tcp
        self._spawn(self._serve_udp, "badprimary-udp")
        self._spawn(self._serve_tcp, "badprimary-tcp")
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + _STOP_TIMEOUT
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        for sock in (self._udp, self._tcp):
            if sock is not None:
                sock.close()
        self._udp = self._tcp = None
        self._threads = [t for t in self._threads if t.is_alive()]

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _spawn(self, target: Callable[..., None], name: str, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    # -- the zone

    def zone(self) -> dns.zone.Zone:
        return dns.zone.from_text(self.zone_text(self.origin.to_text(), self.serial), origin=self.origin,
                                  relativize=False)

    def soa_rrset(self, serial: int | None = None) -> dns.rrset.RRset:
        soa = self.zone().find_rrset(self.origin, dns.rdatatype.SOA)
        if serial is not None:
            soa = dns.rrset.from_rdata(soa.name, soa.ttl, soa[0].replace(serial=serial))
        return soa

    def _body(self) -> list[dns.rrset.RRset]:
        """Every RRset but the SOA, one record per RRset so messages split anywhere."""
        out: list[dns.rrset.RRset] = []
        for name, rdataset in self.zone().iterate_rdatasets():
            if rdataset.rdtype == dns.rdatatype.SOA:
                continue
            out.extend(dns.rrset.from_rdata(name, rdataset.ttl, rd) for rd in rdataset)
        return out

    def _oversize(self) -> list[dns.rrset.RRset]:
        return [
            dns.rrset.from_text(f"bulk{i}.{self.origin}", 300, "IN", "A", f"198.51.100.{i % 250}")
            for i in range(self.oversize_records)
        ]

    # -- UDP

    def _serve_udp(self) -> None:
        assert self._udp is not None
        sock = self._udp
        while not self._stop.is_set():
            try:
                data, addr = sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            reply = self._answer_plain(data)
            if reply is not None:
                with contextlib.suppress(OSError):
                    sock.sendto(reply, addr)

    def _answer_plain(self, data: bytes) -> bytes | None:
        """An SOA answer (or ``soa_rcode``), NOTIMP for IXFR, REFUSED for anything else."""
        try:
            query = dns.message.from_wire(data)
        except dns.exception.DNSException:
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        q = query.question[0] if query.question else None
        if q is not None and q.rdtype == dns.rdatatype.IXFR:
            self.ixfr_requests += 1
            response.set_rcode(dns.rcode.NOTIMP)
        elif q is None or q.name != self.origin or q.rdtype != dns.rdatatype.SOA:
            response.set_rcode(dns.rcode.REFUSED)
        elif self.soa_rcode is not None:
            response.set_rcode(self.soa_rcode)
        else:
            self.soa_requests += 1
            response.answer.append(self.soa_rrset())
        return response.to_wire()

    # -- TCP

    def _serve_tcp(self) -> None:
        assert self._tcp is not None
        listener = self._tcp
        while not self._stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(_POLL)
            with self._lock:
                self._conns.add(conn)
            self._spawn(self._serve_conn, "badprimary-conn", conn)

    def _read_exact(self, conn: socket.socket, n: int) -> bytes | None:
        buf = b""
        while len(buf) < n and not self._stop.is_set():
            try:
                chunk = conn.recv(n - len(buf))
            except TimeoutError:
                continue
            except OSError:
                return None
            if not chunk:
                return None
            buf += chunk
        return buf if len(buf) == n else None

    def _serve_conn(self, conn: socket.socket) -> None:
        try:
            while not self._stop.is_set():
                head = self._read_exact(conn, 2)
                if head is None:
                    return
                data = self._read_exact(conn, int.from_bytes(head, "big"))
                if data is None:
                    return
                try:
                    query = dns.message.from_wire(data)
                except dns.exception.DNSException:
                    return
                if query.question and query.question[0].rdtype == dns.rdatatype.AXFR:
                    self.axfr_requests += 1
                    if not self._run_script(conn, query):
                        return
                else:
                    reply = self._answer_plain(data)
                    if reply is None or not self._send(conn, reply):
                        return
        finally:
            with self._lock:
                self._conns.discard(conn)
            with contextlib.suppress(OSError):
                conn.close()

    def _send(self, conn: socket.socket, wire: bytes) -> bool:
        try:
            conn.sendall(len(wire).to_bytes(2, "big") + wire)
        except OSError:
            return False
        return True

    def _messages(self, query: dns.message.Message, rrsets: list[dns.rrset.RRset]) -> Iterator[bytes]:
        for start in range(0, len(rrsets), RECORDS_PER_MESSAGE):
            response = dns.message.make_response(query)
            response.flags |= dns.flags.AA
            response.answer = rrsets[start:start + RECORDS_PER_MESSAGE]
            yield response.to_wire()

    def _run_script(self, conn: socket.socket, query: dns.message.Message) -> bool:
        """Send the AXFR stream the script names; False when the connection must close now."""
        script = self.axfr
        if script == "refused":
            response = dns.message.make_response(query)
            response.set_rcode(dns.rcode.REFUSED)
            return self._send(conn, response.to_wire())
        soa = self.soa_rrset()
        body = self._body()
        closing = self.soa_rrset(self.serial + 1) if script == "closing-serial" else soa
        if script in ("oversize", "good-close"):
            body += self._oversize()
        messages = list(self._messages(query, [soa, *body, closing]))
        if script in ("truncated", "stall"):
            self._send(conn, messages[0])
            if script == "stall":
                # Hold the connection open and say nothing until the client gives up (or stop()).
                self._read_exact(conn, 1 << 16)
            return False
        if script == "wrong-id":
            wire = bytearray(messages[1])
            wire[0:2] = ((query.id + 1) & 0xFFFF).to_bytes(2, "big")
            messages[1] = bytes(wire)
        elif script == "notauth":
            response = dns.message.make_response(query)
            response.set_rcode(dns.rcode.NOTAUTH)
            messages[1] = response.to_wire()
        elif script == "garbage":
            messages[1] = bytes(range(256)) * 2
        elif script in _RAW_RECORDS:
            label, rdtype, rdata = _RAW_RECORDS[script]
            owner = dns.name.Name((label.encode(), *self.origin.labels)).to_wire()
            assert owner is not None
            second = dns.message.make_response(query)
            second.use_edns(False)  # no additional section: the record goes at the end of the answer
            second.answer = [soa, *body][RECORDS_PER_MESSAGE:2 * RECORDS_PER_MESSAGE]
            messages[1] = _append_answer(second.to_wire(), owner, rdtype, rdata)
        return all(self._send(conn, wire) for wire in messages) and script != "good-close"


def _append_answer(wire: bytes, owner: bytes, rdtype: int, rdata: bytes) -> bytes:
    """*wire* with one more answer record, written by hand (a message with no authority/additional)."""
    ancount = int.from_bytes(wire[6:8], "big") + 1
    record = owner + rdtype.to_bytes(2, "big") + b"\x00\x01" + (300).to_bytes(4, "big")
    return wire[:6] + ancount.to_bytes(2, "big") + wire[8:] + record + len(rdata).to_bytes(2, "big") + rdata


__all__ = ["RECORDS_PER_MESSAGE", "AxfrScript", "BadPrimary", "bad_primary_zone"]
