"""Transfer-in over the network: SOA probes (UDP, TCP on truncation) and AXFR.

This is the Twisted side of ``xfrin``: it owns sockets, framing and time
limits, and hands every message to the sans-IO consumers.  Building the
final snapshot of a large zone runs in a worker thread, so the reactor keeps
answering queries while a million-record zone is frozen.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, protocol, threads
from twisted.internet.error import ConnectionRefusedError as TxConnectionRefused

from . import rrtypes
from .config import Endpoint, ZoneConfig
from .errors import ResponseMismatch, TransferError
from .names import to_text
from .refresh import TransferOutcome
from .xfrin import AxfrConsumer, SoaProbeResult, make_query, parse_soa_response
from .zone import Zone

log = logging.getLogger("secondns.transfer")

MessageHandler = Callable[[bytes], bool]
"""Takes one DNS message; returns True when the exchange is complete."""


def _new_id() -> int:
    # RFC 5452 9.2: unpredictable IDs make spoofed answers harder to land.
    return secrets.randbits(16)


class _UdpProbe(protocol.DatagramProtocol):
    """One SOA query over UDP with retries; answers with another ID are ignored."""

    def __init__(self, request: bytes, primary: Endpoint, handle: Callable[[bytes], Any],
                 d: defer.Deferred[Any], clock: Any, timeout: float, tries: int) -> None:
        self.request = request
        self.primary = primary
        self.handle = handle
        self.d = d
        self.clock = clock
        self.timeout = timeout
        self.tries = tries
        self._timer: Any = None
        self._done = False

    def startProtocol(self) -> None:
        transport: Any = self.transport
        transport.connect(self.primary.host, self.primary.port)
        self._send()

    def _send(self) -> None:
        self.tries -= 1
        transport: Any = self.transport
        transport.write(self.request)
        self._timer = self.clock.callLater(self.timeout, self._timed_out)

    def _timed_out(self) -> None:
        self._timer = None
        if self.tries > 0:
            self._send()
        else:
            self._finish(TransferError(f"no answer from {self.primary}"))

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        try:
            result = self.handle(datagram)
        except ResponseMismatch:
            return  # RFC 5452: not our answer; keep waiting for the real one
        except TransferError as exc:
            self._finish(exc)
            return
        except Exception as exc:
            self._finish(TransferError(f"bad answer: {exc}"))
            return
        self._finish(result)

    def connectionRefused(self) -> None:
        self._finish(TransferError(f"{self.primary} refused the connection (port unreachable)"))

    def _finish(self, result: Any) -> None:
        if self._done:
            return
        self._done = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        transport: Any = self.transport
        transport.stopListening()
        if isinstance(result, Exception):
            self.d.errback(result)
        else:
            self.d.callback(result)


class _TcpExchange(protocol.Protocol):
    """Send one framed request (RFC 7766 8), feed framed replies to a handler."""

    def __init__(self, request: bytes, handle: MessageHandler, d: defer.Deferred[None], clock: Any,
                 idle_timeout: float, total_timeout: float, peer: Endpoint) -> None:
        self.request = request
        self.handle = handle
        self.d = d
        self.clock = clock
        self.idle_timeout = idle_timeout
        self.peer = peer
        self._buf = b""
        self._done = False
        self._idle: Any = None
        self._total: Any = clock.callLater(total_timeout, self._abort,
                                          f"transfer took longer than {total_timeout:g} s")

    def connectionMade(self) -> None:
        transport: Any = self.transport
        transport.write(len(self.request).to_bytes(2, "big") + self.request)
        self._idle = self.clock.callLater(self.idle_timeout, self._abort,
                                          f"no data from {self.peer} for {self.idle_timeout:g} s")

    def dataReceived(self, data: bytes) -> None:
        if self._done:
            return
        if self._idle is not None and self._idle.active():
            self._idle.reset(self.idle_timeout)
        buf = self._buf + data
        while len(buf) >= 2 and not self._done:
            length = (buf[0] << 8) | buf[1]
            if len(buf) < 2 + length:
                break
            message = buf[2:2 + length]
            buf = buf[2 + length:]
            try:
                complete = self.handle(message)
            except Exception as exc:
                self._finish(exc if isinstance(exc, TransferError) else TransferError(str(exc)))
                return
            if complete:
                self._finish(None)
                return
        self._buf = buf

    def _abort(self, reason: str) -> None:
        self._finish(TransferError(reason))

    def connectionLost(self, reason: Any = None) -> None:
        self._finish(TransferError(f"{self.peer} closed the connection before the transfer completed"))

    def _finish(self, error: Exception | None) -> None:
        if self._done:
            return
        self._done = True
        for timer in (self._idle, self._total):
            if timer is not None and timer.active():
                timer.cancel()
        transport: Any = self.transport
        if transport is not None:
            transport.abortConnection() if error is not None else transport.loseConnection()
        if error is not None:
            self.d.errback(error)
        else:
            self.d.callback(None)


class _ExchangeFactory(protocol.ClientFactory):
    def __init__(self, exchange: _TcpExchange) -> None:
        self.exchange = exchange

    def buildProtocol(self, addr: Any) -> _TcpExchange:
        return self.exchange

    def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
        exc = reason.value
        why = "connection refused" if isinstance(exc, TxConnectionRefused) else str(exc).splitlines()[0]
        self.exchange._finish(TransferError(f"cannot connect to {self.exchange.peer}: {why}"))


class TwistedTransferClient:
    """Implements refresh.TransferClient with the reactor."""

    def __init__(self, reactor: Any, *, udp_timeout: float = 2.0, udp_tries: int = 3,
                 connect_timeout: float = 10.0) -> None:
        self.reactor = reactor
        self.udp_timeout = udp_timeout
        self.udp_tries = udp_tries
        self.connect_timeout = connect_timeout

    def _tcp(self, primary: Endpoint, request: bytes, handle: MessageHandler, idle: float,
             total: float) -> defer.Deferred[None]:
        d: defer.Deferred[None] = defer.Deferred()
        exchange = _TcpExchange(request, handle, d, self.reactor, idle, total, primary)
        self.reactor.connectTCP(primary.host, primary.port, _ExchangeFactory(exchange),
                                timeout=self.connect_timeout)
        return d

    def _check_key(self, zc: ZoneConfig) -> None:
        if zc.key is not None:
            raise TransferError("TSIG keys are not supported yet: remove `key` from the zone")

    def soa_query(self, primary: Endpoint, zc: ZoneConfig) -> defer.Deferred[SoaProbeResult]:
        """RFC 1034 4.3.5: ask the primary for its SOA; over TCP when truncated."""
        try:
            self._check_key(zc)
        except TransferError as exc:
            return defer.fail(exc)
        msg_id = _new_id()
        request = make_query(zc.origin, rrtypes.SOA, msg_id)
        d: defer.Deferred[SoaProbeResult] = defer.Deferred()

        def handle(data: bytes) -> SoaProbeResult:
            return parse_soa_response(data, msg_id, zc.origin)

        probe = _UdpProbe(request, primary, handle, d, self.reactor, self.udp_timeout, self.udp_tries)
        self.reactor.listenUDP(0, probe, interface="::" if primary.family == 10 else "")

        def maybe_tcp(result: SoaProbeResult) -> Any:
            if not result.truncated:
                return result
            return self._soa_over_tcp(primary, zc)

        d.addCallback(maybe_tcp)
        return d

    def _soa_over_tcp(self, primary: Endpoint, zc: ZoneConfig) -> defer.Deferred[SoaProbeResult]:
        msg_id = _new_id()
        request = make_query(zc.origin, rrtypes.SOA, msg_id)
        box: list[SoaProbeResult] = []

        def handle(data: bytes) -> bool:
            box.append(parse_soa_response(data, msg_id, zc.origin))
            return True

        d = self._tcp(primary, request, handle, self.udp_timeout * self.udp_tries,
                      self.udp_timeout * self.udp_tries)
        return d.addCallback(lambda _: box[0])

    def transfer(self, primary: Endpoint, zc: ZoneConfig, current: Zone | None,
                 kind: str) -> defer.Deferred[TransferOutcome]:
        """Transfer the zone; IXFR is not offered yet, so every transfer is an AXFR."""
        try:
            self._check_key(zc)
        except TransferError as exc:
            return defer.fail(exc)
        return self._axfr(primary, zc)

    def _axfr(self, primary: Endpoint, zc: ZoneConfig) -> defer.Deferred[TransferOutcome]:
        msg_id = _new_id()
        request = make_query(zc.origin, rrtypes.AXFR, msg_id)
        consumer = AxfrConsumer(zc.origin, msg_id, max_records=zc.max_records)
        d = self._tcp(primary, request, consumer.feed, zc.transfer_idle_timeout, zc.transfer_timeout)

        def build(_: None) -> defer.Deferred[Zone]:
            # Freezing a large zone takes a while: keep it off the reactor thread.
            result: defer.Deferred[Zone] = threads.deferToThread(consumer.result)
            return result

        def outcome(zone: Zone) -> TransferOutcome:
            ignored = consumer.ignored_out_of_zone + consumer.ignored_class
            if ignored:
                log.warning(
                    "zone %s: AXFR from %s carried %d out-of-zone and %d non-IN records, ignored",
                    to_text(zc.origin), primary, consumer.ignored_out_of_zone, consumer.ignored_class)
            return TransferOutcome(zone, "axfr", consumer.bytes, consumer.messages, consumer.records,
                                   consumer.expire_option, ignored)

        d2: defer.Deferred[Any] = d.addCallback(build)
        d2.addCallback(outcome)
        return d2
