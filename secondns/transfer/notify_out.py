"""NOTIFY out (RFC 1996): tell downstream secondaries that a new version is served.

Sent to the zone's explicit ``notify`` targets (as BIND's ``also-notify``) whenever the
served serial of the zone changes, including the first version loaded; signed with
``notify-key`` when set (RFC 8945).  Each target is retried with doubling timeouts until it
answers, at most ``MAX_TRIES`` times (RFC 1996 3.6 leaves the interval to us; BIND retries
a handful of times).  A newer version replaces a NOTIFY still being retried.

Targets may be IPv4 or IPv6: one socket per address family, the IPv6 one opened at start
when the host has IPv6.  A signed NOTIFY is acknowledged only by an answer whose TSIG
verifies against our request's MAC (RFC 8945 5.3: a signed request gets a signed response);
an unsigned or badly signed answer could come from anyone on the path, so it is counted
(``badsig``) and the NOTIFY is retried as if unanswered.
"""

from __future__ import annotations

import ipaddress
import logging
import random
import socket
import struct
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector
from twisted.internet import error, protocol

from secondns import rrtypes
from secondns.config import Endpoint, TsigKey, ZoneConfig
from secondns.errors import WireError
from secondns.registry import Registry
from secondns.transfer import tsig
from secondns.wire import AA, OPCODE_NOTIFY, ResponseWriter

log = logging.getLogger("secondns")

MAX_TRIES = 5
FIRST_TIMEOUT = 1.0  # seconds; doubled after each unanswered try (1, 2, 4, 8, 16)


def notify_message(msg_id: int, origin: bytes, soa_ttl: int, soa_rdata: bytes) -> bytes:
    """RFC 1996 3.7: opcode NOTIFY, AA, the zone's SOA as question and in the answer section."""
    question = origin + struct.pack("!HH", rrtypes.SOA, rrtypes.CLASS_IN)
    writer = ResponseWriter(msg_id, (OPCODE_NOTIFY << 11) | AA, question, origin)
    writer.add_rrsets(0, ((origin, rrtypes.SOA, ((soa_ttl, soa_rdata),)),), True)
    return writer.finish(0)


class _Pending:
    __slots__ = ("call", "key", "mac", "message", "serial", "target", "tries", "zone")

    def __init__(self, zone: str, target: Endpoint, serial: int, message: bytes,
                 key: TsigKey | None = None, mac: bytes = b"") -> None:
        self.zone = zone
        self.target = target
        self.serial = serial
        self.message = message
        self.key = key  # notify-key: the answer must be signed with it (RFC 8945 5.3)
        self.mac = mac  # our request's MAC, which the answer's MAC covers (RFC 8945 4.3.1)
        self.tries = 0
        self.call: Any = None


def _same_address(a: str, b: str) -> bool:
    """Address equality as addresses, not strings (``::1`` and ``0::1`` are one host)."""
    if a == b:
        return True
    try:
        return ipaddress.ip_address(a.split("%", 1)[0]) == ipaddress.ip_address(b.split("%", 1)[0])
    except ValueError:
        return False


class _Socket6(protocol.DatagramProtocol):
    """The IPv6 socket: sends what the sender gives it, hands answers back."""

    def __init__(self, sender: NotifySender) -> None:
        self.sender = sender

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.sender.datagramReceived(datagram, addr)


class NotifySender(protocol.DatagramProtocol):
    """One UDP socket per address family for every NOTIFY out (this protocol is the IPv4
    one, ``socket6`` the IPv6 one); answers matched by ID and source."""

    def __init__(self, registry: Registry, zone_config: Callable[[bytes], ZoneConfig | None],
                 clock: Any) -> None:
        self.registry = registry
        self.zone_config = zone_config
        self.clock = clock
        self.sent_serial: dict[bytes, int] = {}
        self.pending: dict[int, _Pending] = {}
        self.by_target: dict[tuple[bytes, Endpoint], int] = {}
        # (zone, result) -> count: result is ok, timeout, badsig, or the rcode's name.
        self.counts: dict[tuple[str, str], int] = {}
        # Zones with notify targets: a change to "every zone" (None) looks at these only, so
        # loading 10k zones without targets costs nothing here.
        self.watch: set[bytes] = set()
        self.socket6: _Socket6 | None = None  # opened by start() when the host has IPv6
        # Worker mode: fires once every worker serves the origin's current version
        # (WorkerPool.served); the NOTIFY waits for it, or the downstream's SOA query could
        # reach a worker still serving the old serial and conclude it is up to date.
        self.gate: Callable[[bytes], Any] | None = None
        registry.subscribe(self._changed)

    def configure(self, zones: Iterable[ZoneConfig]) -> None:
        """The zones to watch, from the configuration (start and reload)."""
        self.watch = {zc.origin for zc in zones if zc.notify}
        if self.transport is not None:  # a reload: zones that gained targets are notified now
            for origin in list(self.watch):
                self.check(origin)

    def _count(self, zone: str, result: str) -> None:
        self.counts[(zone, result)] = self.counts.get((zone, result), 0) + 1

    def _changed(self, origin: bytes | None, _names: frozenset[bytes] | None) -> None:
        if origin is None:
            for o in list(self.watch):
                self.check(o)
        elif origin in self.watch:
            self.check(origin)

    def check(self, origin: bytes) -> None:
        """Notify the zone's targets if its served serial is not the one last notified."""
        zc = self.zone_config(origin)
        entry = self.registry.get(origin)
        if zc is None or not zc.notify or entry is None or entry.snapshot is None or entry.expired:
            return
        zone = entry.snapshot
        if self.sent_serial.get(origin) == zone.serial or self.transport is None:
            return
        self.sent_serial[origin] = zone.serial
        if self.gate is None:
            self._notify(origin, zone.serial)
        else:
            self.gate(origin).addCallback(lambda _: self._notify(origin, zone.serial))

    def _notify(self, origin: bytes, serial: int) -> None:
        """Send the NOTIFYs of *serial*, unless another version is served by now (its own
        ``check`` sends those)."""
        zc = self.zone_config(origin)
        entry = self.registry.get(origin)
        if zc is None or not zc.notify or entry is None or entry.snapshot is None or entry.expired:
            return
        zone = entry.snapshot
        if zone.serial != serial or self.sent_serial.get(origin) != serial:
            return
        for target in zc.notify:
            old = self.by_target.pop((origin, target), None)
            if old is not None:
                self._drop(old)
            msg_id = random.randrange(0x10000)
            while msg_id in self.pending:
                msg_id = random.randrange(0x10000)
            message = notify_message(msg_id, origin, zone.soa.ttl, zone.soa.rdata)
            mac = b""
            if zc.notify_key is not None:
                message, mac = tsig.sign_request(message, zc.notify_key)
            p = _Pending(zc.name, target, zone.serial, message, zc.notify_key, mac)
            self.pending[msg_id] = p
            self.by_target[(origin, target)] = msg_id
            self._send(msg_id)

    def _drop(self, msg_id: int) -> None:
        p = self.pending.pop(msg_id, None)
        if p is not None and p.call is not None and p.call.active():
            p.call.cancel()

    def _send(self, msg_id: int) -> None:
        p = self.pending.get(msg_id)
        if p is None:
            return
        if p.tries >= MAX_TRIES:
            self._finish(msg_id, "timeout")
            log.warning("zone %s: NOTIFY of serial %d to %s unanswered after %d tries", p.zone,
                        p.serial, p.target, MAX_TRIES)
            return
        transport: Any = self.transport
        if p.target.family == socket.AF_INET6:
            transport = self.socket6.transport if self.socket6 is not None else None
        try:
            if transport is None:
                raise OSError("no IPv6 socket (the host has no IPv6)")
            transport.write(p.message, (p.target.host, p.target.port))
        except (OSError, error.InvalidAddressError) as exc:  # never fatal: retried on the timer
            log.warning("zone %s: NOTIFY to %s not sent: %s", p.zone, p.target, exc)
        p.call = self.clock.callLater(FIRST_TIMEOUT * (2 ** p.tries), self._send, msg_id)
        p.tries += 1

    def _finish(self, msg_id: int, result: str) -> None:
        p = self.pending.pop(msg_id, None)
        if p is None:
            return
        if p.call is not None and p.call.active():
            p.call.cancel()
        for key, value in list(self.by_target.items()):
            if value == msg_id:
                del self.by_target[key]
        self._count(p.zone, result)

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        if len(datagram) < 12 or not datagram[2] & 0x80 or (datagram[2] >> 3) & 0xF != OPCODE_NOTIFY:
            return
        (msg_id,) = struct.unpack_from("!H", datagram)
        p = self.pending.get(msg_id)
        if p is None or addr[1] != p.target.port or not _same_address(addr[0], p.target.host):
            return  # RFC 1996 4.8: a response from where we did not send is ignored
        if p.key is not None:
            try:
                tsig.verify_response(datagram, p.key, p.mac, peer=f"NOTIFY target {p.target}")
            except (tsig.TsigError, WireError) as exc:
                # RFC 8945 5.3: not an acknowledgement; the retry timer stays armed.
                self._count(p.zone, "badsig")
                log.warning("zone %s: answer to the NOTIFY of serial %d from %s ignored: %s", p.zone,
                            p.serial, p.target, exc)
                return
        rcode = datagram[3] & 0xF
        result = "ok" if rcode == 0 else {1: "formerr", 2: "servfail", 4: "notimp", 5: "refused",
                                          9: "notauth"}.get(rcode, f"rcode{rcode}")
        log.info("zone %s: NOTIFY of serial %d to %s answered %s", p.zone, p.serial, p.target, result)
        self._finish(msg_id, result)

    def start(self, reactor: Any) -> None:
        """Open the socket and notify every zone's current version (as BIND does at load)."""
        reactor.listenUDP(0, self, interface="0.0.0.0")
        if socket.has_ipv6:
            try:
                v6 = _Socket6(self)
                reactor.listenUDP(0, v6, interface="::")
                self.socket6 = v6
            except Exception as exc:  # CannotListenError: no IPv6 on this host
                log.warning("NOTIFY out: no IPv6 socket (%s); IPv6 targets are not notified", exc)
        for origin in list(self.watch):
            self.check(origin)

    def collector(self) -> Collector:
        """``secondns_notifies_out_total{zone,result}``."""
        return _Collector(self)


class _Collector(Collector):
    def __init__(self, sender: NotifySender) -> None:
        self.sender = sender

    def collect(self) -> Iterator[Any]:
        family = CounterMetricFamily("secondns_notifies_out", "NOTIFY messages sent, by outcome.",
                                     labels=["zone", "result"])
        for (zone, result), value in sorted(self.sender.counts.items()):
            family.add_metric([zone, result], value)
        yield family
