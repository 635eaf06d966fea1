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
from twisted.internet.interfaces import IHandshakeListener
from zope.interface import implementer  # type: ignore[import-untyped]

from secondns import rrtypes, zonemd
from secondns.config import Endpoint, TlsPrimary, ZoneConfig
from secondns.diff import apply_steps
from secondns.errors import ResponseMismatch, TransferError, TransientError, ZoneError
from secondns.names import to_text
from secondns.transfer import tls, tsig
from secondns.transfer.refresh import TransferOutcome
from secondns.transfer.xfrin import (
    AxfrConsumer,
    IxfrConsumer,
    Message,
    SoaProbeResult,
    _InboundStream,
    make_query,
    parse_soa_response,
)
from secondns.zone import Zone

log = logging.getLogger("secondns.transfer")

class ConnectFailed(TransientError):
    """The primary could not be reached at all: try the next one, do not fall back."""


MessageHandler = Callable[[bytes], bool]
"""Takes one DNS message; returns True when the exchange is complete."""


def _new_id() -> int:
    # RFC 5452 9.2: unpredictable IDs make spoofed answers harder to land.
    return secrets.randbits(16)


def _question_key(data: bytes) -> bytes | None:
    """The question of a reply (lowercased name, type, class) for matching; None when absent.

    RFC 5452 9.1: an answer is accepted only when ID *and* question match a
    query in flight; the name is compared case-insensitively (RFC 4343).
    """
    if len(data) < 12 or data[4:6] == b"\0\0":
        return None
    pos = 12
    end = len(data)
    for _ in range(128):  # at most 127 labels fit in 255 octets (RFC 1035 2.3.4)
        if pos >= end:
            return None
        length = data[pos]
        if length == 0:
            break
        if length > 63:
            return None  # a compression pointer in the question: not a reply to our query
        pos += length + 1
    else:
        return None
    if pos + 5 > end:
        return None
    return data[12:pos + 1].lower() + data[pos + 1:pos + 5]


class _Probe:
    """One SOA query in flight on a shared socket, with its own retries and timer."""

    def __init__(self, sock: _SoaSocket, msg_id: int, question: bytes, request: bytes,
                 handle: Callable[[bytes], Any], d: defer.Deferred[Any], clock: Any,
                 timeout: float, tries: int) -> None:
        self.sock = sock
        self.msg_id = msg_id
        self.question = question
        self.request = request
        self.handle = handle
        self.d = d
        self.clock = clock
        self.timeout = timeout
        self.tries = tries
        self._timer: Any = None
        self.done = False

    def send(self) -> None:
        self.tries -= 1
        self._timer = self.clock.callLater(self.timeout, self._timed_out)
        self.sock.write(self.request)  # may call connectionRefused at once, which finishes us

    def _timed_out(self) -> None:
        self._timer = None
        if self.done:
            return
        if self.tries > 0:
            self.send()
        else:
            self.finish(TransientError(f"no answer from {self.sock.primary}"))

    def received(self, datagram: bytes) -> None:
        try:
            result = self.handle(datagram)
        except ResponseMismatch:
            return  # RFC 5452: not our answer; keep waiting for the real one
        except TransferError as exc:
            self.finish(exc)
            return
        except Exception as exc:
            self.finish(TransferError(f"bad answer: {exc}"))
            return
        self.finish(result)

    def finish(self, result: Any) -> None:
        if self.done:
            return
        self.done = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self.sock.forget(self)
        if isinstance(result, Exception):
            self.d.errback(result)
        else:
            self.d.callback(result)


class _SoaSocket(protocol.DatagramProtocol):
    """A connected UDP socket to one primary, shared by every SOA probe sent to it.

    One socket per primary instead of one per probe: 10,000 zones checking
    the same primary need one file descriptor, not 10,000.  Replies are
    matched to probes by ID and question (RFC 5452 9.1); the socket being
    connected means the kernel only delivers datagrams from the primary's
    address and port, and reports an ICMP port unreachable as a refusal.
    The source port changes (RFC 5452 9.2) whenever the socket has been idle
    for ``LINGER`` seconds or has carried ``ROTATE_AFTER`` queries: it is
    closed and a fresh one bound.  Closing it as soon as it went idle meant a
    socket per probe when checks are paced (20 a second, each answered in a
    millisecond): socket, bind, connect and two epoll calls cost ~0.8 ms each
    time, about 8 CPU seconds for 10,000 zones.
    """

    ROTATE_AFTER = 256
    LINGER = 2.0

    def __init__(self, pool: _SoaSockets, primary: Endpoint) -> None:
        self.pool = pool
        self.primary = primary
        self.pending: dict[tuple[int, bytes], _Probe] = {}
        self.sent = 0
        self.closing = False
        self._linger: Any = None

    def startProtocol(self) -> None:
        transport: Any = self.transport
        transport.connect(self.primary.host, self.primary.port)

    @property
    def retiring(self) -> bool:
        return self.closing or self.sent >= self.ROTATE_AFTER

    def add(self, probe: _Probe) -> None:
        self.pending[(probe.msg_id, probe.question)] = probe
        self.sent += 1
        self._cancel_linger()

    def in_use(self, msg_id: int, question: bytes) -> bool:
        return (msg_id, question) in self.pending

    def write(self, data: bytes) -> None:
        transport: Any = self.transport
        if transport is not None and not self.closing:
            transport.write(data)

    def forget(self, probe: _Probe) -> None:
        key = (probe.msg_id, probe.question)
        if self.pending.get(key) is probe:
            del self.pending[key]
        if not self.pending:
            # Idle: close it soon, so the next burst of checks comes from a new source port.
            if self.retiring:
                self.close()
            elif self._linger is None:
                self._linger = self.pool.reactor.callLater(self.LINGER, self._lingered)

    def _cancel_linger(self) -> None:
        if self._linger is not None:
            if self._linger.active():
                self._linger.cancel()
            self._linger = None

    def _lingered(self) -> None:
        self._linger = None
        if not self.pending:
            self.close()

    def close(self) -> None:
        if self.closing:
            return
        self.closing = True
        self._cancel_linger()
        self.pool.discard(self)
        transport: Any = self.transport
        if transport is not None:
            transport.stopListening()

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        if len(datagram) < 12:
            return
        msg_id = int.from_bytes(datagram[:2], "big")
        question = _question_key(datagram)
        probe = self.pending.get((msg_id, question)) if question is not None else None
        if probe is None and question is None:
            # An error answer may carry no question (RFC 1035 leaves it optional for
            # FORMERR and the like): match it by ID alone, the question check then fails it.
            probe = next((p for (i, _), p in self.pending.items() if i == msg_id), None)
        if probe is None:
            self.pool.stray += 1  # RFC 5452: not an answer to anything we asked; ignored
            return
        probe.received(datagram)

    def connectionRefused(self) -> None:
        self._fail_all(TransientError(f"{self.primary} refused the connection (port unreachable)"))

    def stopProtocol(self) -> None:
        # epoll reports a queued ICMP port unreachable as EPOLLERR, and Twisted then stops the port
        # without calling connectionRefused: without this the probes' Deferreds would never fire.
        self.pool.discard(self)
        self.closing = True
        self._fail_all(TransientError(f"{self.primary} refused the connection (port unreachable)"))

    def _fail_all(self, error: Exception) -> None:
        for probe in list(self.pending.values()):
            probe.finish(error)


class _SoaSockets:
    """The shared SOA sockets, at most one in use per primary."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.sockets: dict[Endpoint, _SoaSocket] = {}
        self.stray = 0  # datagrams that matched no probe in flight
        self.opened = 0  # sockets bound so far (tests count them)

    def get(self, primary: Endpoint) -> _SoaSocket:
        sock = self.sockets.get(primary)
        if sock is None or sock.retiring:
            sock = _SoaSocket(self, primary)
            self.reactor.listenUDP(0, sock, interface="::" if primary.family == 10 else "")
            self.opened += 1
            self.sockets[primary] = sock
        return sock

    def discard(self, sock: _SoaSocket) -> None:
        if self.sockets.get(sock.primary) is sock:
            del self.sockets[sock.primary]


@implementer(IHandshakeListener)
class _TcpExchange(protocol.Protocol):
    """Send one framed request (RFC 7766 8), feed framed replies to a handler.

    Inside TLS (*tls_config* set, XoT) the request waits in the TLS layer until the handshake
    is done; a connection lost before that is reported as the TLS failure it was.
    """

    tls_config: Any = None  # config.PrimaryTls when the exchange runs over TLS
    _handshake_done = False

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

    def _messages(self, data: bytes) -> list[bytes]:
        """The complete messages *data* finishes (RFC 1035 4.2.2 length prefixes); the rest is
        kept for the next read.  Any data counts as activity for the idle timeout."""
        if self._idle is not None and self._idle.active():
            self._idle.reset(self.idle_timeout)
        buf = self._buf + data
        messages = []
        while len(buf) >= 2:
            length = (buf[0] << 8) | buf[1]
            if len(buf) < 2 + length:
                break
            messages.append(buf[2:2 + length])
            buf = buf[2 + length:]
        self._buf = buf
        return messages

    def dataReceived(self, data: bytes) -> None:
        if self._done:
            return
        for message in self._messages(data):
            try:
                complete = self.handle(message)
            except Exception as exc:
                self._finish(exc if isinstance(exc, TransferError) else TransferError(str(exc)))
                return
            if complete:
                self._finish(None)
                return

    def _abort(self, reason: str) -> None:
        if self.tls_config is not None and not self._handshake_done:
            self._finish(tls.TlsFailed(f"TLS handshake with {self.peer} not completed: {reason}",
                                       "handshake"))
            return
        self._finish(TransientError(reason))

    def handshakeCompleted(self) -> None:
        self._handshake_done = True
        problem = tls.check_alpn(self.transport, self.peer)
        if problem is not None:
            self._finish(problem)

    def connectionLost(self, reason: Any = None) -> None:
        if self.tls_config is not None and not self._handshake_done:
            self._finish(tls.handshake_failure(reason, self.transport, self.peer, self.tls_config))
            return
        # BIND closes the connection when its tcp-clients quota is reached: transient.
        self._finish(TransientError(f"{self.peer} closed the connection before the transfer completed"))

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


class _ThreadedExchange(_TcpExchange):
    """A transfer whose messages are parsed in the reactor's (niced) thread pool.

    With serving workers (``server.workers`` > 1) the main process answers no queries, and a
    large AXFR parsed on its reactor thread is a nice-0 CPU hog beside the workers on a
    machine with few cores: they waited in the run queue and the p99 latency during a 1M
    AXFR rose 40x (issue 11).  The pool threads run at SCHED_IDLE (serve.workers), so the kernel
    gives the workers the CPU first.  One batch at a time keeps the messages in order; past
    ``MAX_QUEUED`` waiting messages the socket is paused (TCP flow control to the primary).
    In single-process mode the reactor thread parses, as a thread would only add GIL waits.
    """

    MAX_QUEUED = 32

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._queue: list[bytes] = []
        self._busy = False
        self._paused = False
        self._lost: str | None = None  # the connection closed while messages were still queued

    def dataReceived(self, data: bytes) -> None:
        if self._done:
            return
        self._queue += self._messages(data)
        if len(self._queue) >= self.MAX_QUEUED and not self._paused:
            self._paused = True
            transport: Any = self.transport
            transport.pauseProducing()
        self._next_batch()

    def _next_batch(self) -> None:
        if self._busy or self._done:
            return
        if not self._queue:
            if self._lost is not None:
                self._finish(TransientError(self._lost))
            return
        batch, self._queue = self._queue, []
        self._busy = True
        if self._paused:
            self._paused = False
            transport: Any = self.transport
            if transport is not None:
                transport.resumeProducing()
        d = threads.deferToThreadPool(self.clock, self.clock.getThreadPool(), self._feed, batch)
        d.addCallbacks(self._fed, self._failed)

    def _feed(self, batch: list[bytes]) -> bool:
        return any(self.handle(message) for message in batch)  # stops at the closing message

    def _fed(self, complete: bool) -> None:
        self._busy = False
        if complete:
            self._finish(None)
        else:
            self._next_batch()

    def _failed(self, failure: Any) -> None:
        self._busy = False
        exc = failure.value
        self._finish(exc if isinstance(exc, TransferError) else TransferError(str(exc)))

    def connectionLost(self, reason: Any = None) -> None:
        lost = f"{self.peer} closed the connection before the transfer completed"
        if self._busy or self._queue:
            self._lost = lost  # decided once the queued messages are parsed
            return
        self._finish(TransientError(lost))


class _ExchangeFactory(protocol.ClientFactory):
    """One connection's factory.  Quiet: Twisted's default logs "Starting factory" and
    "Stopping factory" for each, two log events (~8 us) per transfer or TCP SOA check,
    noise at 10,000 zones."""

    noisy = False

    def __init__(self, exchange: _TcpExchange) -> None:
        self.exchange = exchange

    def buildProtocol(self, addr: Any) -> _TcpExchange:
        return self.exchange

    def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
        exc = reason.value
        why = "connection refused" if isinstance(exc, TxConnectionRefused) else str(exc).splitlines()[0]
        self.exchange._finish(ConnectFailed(f"cannot connect to {self.exchange.peer}: {why}"))


class _Signer:
    """Signs one request with the zone's key and verifies the replies (RFC 8945)."""

    def __init__(self, zc: ZoneConfig) -> None:
        self.key = zc.key
        self.verifier: tsig.StreamVerifier | None = None
        self.request_mac = b""

    def sign(self, request: bytes) -> bytes:
        if self.key is None:
            return request
        signed, self.request_mac = tsig.sign_request(request, self.key)
        self.verifier = tsig.StreamVerifier(self.key, self.request_mac)
        return signed

    def check_single(self, reply: bytes) -> None:
        """Verify a one-message reply (SOA probe)."""
        if self.key is not None:
            tsig.verify_response(reply, self.key, self.request_mac)

    def on_message(self, raw: bytes, msg: Message) -> None:
        if self.verifier is not None:
            self.verifier.verify(raw, msg)

    def finish(self) -> None:
        if self.verifier is not None:
            self.verifier.finish()  # RFC 8945 5.3.1: the last message must be signed


class TwistedTransferClient:
    """Implements refresh.TransferClient with the reactor."""

    def __init__(self, reactor: Any, *, udp_timeout: float = 2.0, udp_tries: int = 3,
                 connect_timeout: float = 10.0, parse_in_thread: bool = False) -> None:
        self.reactor = reactor
        self.parse_in_thread = parse_in_thread  # see _ThreadedExchange
        self.udp_timeout = udp_timeout
        self.udp_tries = udp_tries
        self.connect_timeout = connect_timeout
        self.udp = _SoaSockets(reactor)
        self.tls_failures = tls.Failures()

    def _tcp(self, primary: Endpoint, request: bytes, handle: MessageHandler, idle: float,
             total: float, threaded: bool = False) -> defer.Deferred[None]:
        d: defer.Deferred[None] = defer.Deferred()
        kind = _ThreadedExchange if threaded else _TcpExchange
        exchange = kind(request, handle, d, self.reactor, idle, total, primary)
        factory: Any = _ExchangeFactory(exchange)
        if isinstance(primary, TlsPrimary):  # RFC 9103: XoT, a TLS connection per exchange
            exchange.tls_config = primary.tls
            d.addErrback(self.tls_failures.count, primary)
            try:
                factory = tls.client_factory(factory, primary.tls)
            except tls.TlsFailed as exc:
                exchange._finish(exc)  # also cancels its timers
                return d
        self.reactor.connectTCP(primary.host, primary.port, factory, timeout=self.connect_timeout)
        return d

    # -- SOA probe

    def soa_query(self, primary: Endpoint, zc: ZoneConfig) -> defer.Deferred[SoaProbeResult]:
        """RFC 1034 4.3.5: ask the primary for its SOA; over TCP when truncated.

        A TLS primary is asked over TLS, never in clear over UDP, as BIND does for a primary
        with a `tls` transport (lib/dns/zone.c, get_request_transport_type).
        """
        if isinstance(primary, TlsPrimary):
            return self._soa_over_tcp(primary, zc)
        sock = self.udp.get(primary)
        question = zc.origin.lower() + rrtypes.SOA.to_bytes(2, "big") + b"\0\1"
        msg_id = _new_id()
        for _ in range(16):  # another probe of the same zone in flight may hold this ID
            if not sock.in_use(msg_id, question):
                break
            msg_id = _new_id()
        else:
            raise TransferError(f"no free query ID for {zc.name} towards {primary}")
        signer = _Signer(zc)
        request = signer.sign(make_query(zc.origin, rrtypes.SOA, msg_id))
        d: defer.Deferred[SoaProbeResult] = defer.Deferred()

        def handle(data: bytes) -> SoaProbeResult:
            # ID and question were matched first (_SoaSocket, RFC 5452 9.1), so a stray or
            # spoofed datagram is ignored, never allowed to fail the probe through a TSIG error.
            signer.check_single(data)
            return parse_soa_response(data, msg_id, zc.origin)

        probe = _Probe(sock, msg_id, question, request, handle, d, self.reactor, self.udp_timeout,
                       self.udp_tries)
        sock.add(probe)
        probe.send()

        def maybe_tcp(result: SoaProbeResult) -> Any:
            if not result.truncated:
                return result
            return self._soa_over_tcp(primary, zc)

        d.addCallback(maybe_tcp)
        return d

    def _soa_over_tcp(self, primary: Endpoint, zc: ZoneConfig) -> defer.Deferred[SoaProbeResult]:
        msg_id = _new_id()
        signer = _Signer(zc)
        request = signer.sign(make_query(zc.origin, rrtypes.SOA, msg_id))
        box: list[SoaProbeResult] = []

        def handle(data: bytes) -> bool:
            signer.check_single(data)
            box.append(parse_soa_response(data, msg_id, zc.origin))
            return True

        d = self._tcp(primary, request, handle, self.udp_timeout * self.udp_tries,
                      self.udp_timeout * self.udp_tries)
        return d.addCallback(lambda _: box[0])

    # -- transfers

    def transfer(self, primary: Endpoint, zc: ZoneConfig, current: Zone | None,
                 kind: str) -> defer.Deferred[TransferOutcome]:
        """IXFR when asked and we have a version to start from, else AXFR.

        An IXFR the primary refuses, or whose changes do not apply, is retried
        at once as an AXFR from the same primary (RFC 1995 4); unreachable
        primaries and TSIG failures are not, since AXFR would fail the same way.
        """
        if kind != "ixfr" or current is None:
            return self._axfr(primary, zc)
        d = self._ixfr(primary, zc, current)

        def fallback(failure: Any) -> Any:
            exc = failure.value
            if isinstance(exc, ConnectFailed | tsig.TsigError | tls.TlsFailed):
                return failure
            reason = str(exc)
            log.warning("zone %s: IXFR from %s failed (%s); falling back to AXFR", zc.name, primary,
                        reason)
            d2 = self._axfr(primary, zc)
            d2.addCallbacks(lambda outcome: TransferOutcome(
                outcome.zone, outcome.kind, outcome.bytes, outcome.messages, outcome.records,
                outcome.expire, outcome.ignored, fallback=reason), _fallback_failed,
                errbackArgs=(reason,))
            return d2

        d.addErrback(fallback)
        return d

    def _stream(self, primary: Endpoint, zc: ZoneConfig, request: bytes, consumer: _InboundStream,
                signer: _Signer) -> defer.Deferred[None]:
        def handle(message: bytes) -> bool:
            done = consumer.feed(message)
            if done:
                signer.finish()
            return done

        return self._tcp(primary, request, handle, zc.transfer_idle_timeout, zc.transfer_timeout,
                         threaded=self.parse_in_thread)

    def _axfr(self, primary: Endpoint, zc: ZoneConfig) -> defer.Deferred[TransferOutcome]:
        msg_id = _new_id()
        signer = _Signer(zc)
        request = signer.sign(make_query(zc.origin, rrtypes.AXFR, msg_id))
        consumer = AxfrConsumer(zc.origin, msg_id, max_records=zc.max_records,
                                on_message=signer.on_message)
        d = self._stream(primary, zc, request, consumer, signer)

        def build(_: None) -> defer.Deferred[Zone]:
            # Freezing a large zone takes a while: keep it off the reactor thread.
            result: defer.Deferred[Zone] = threads.deferToThread(_checked, consumer.result, zc)
            return result

        def outcome(zone: Zone) -> TransferOutcome:
            _log_ignored(zc, primary, consumer.ignored_out_of_zone, consumer.ignored_class)
            return TransferOutcome(zone, "axfr", consumer.bytes, consumer.messages, consumer.records,
                                   consumer.expire_option,
                                   consumer.ignored_out_of_zone + consumer.ignored_class)

        d2: defer.Deferred[Any] = d.addCallback(build)
        d2.addCallback(outcome)
        return d2

    def _ixfr(self, primary: Endpoint, zc: ZoneConfig, current: Zone) -> defer.Deferred[TransferOutcome]:
        msg_id = _new_id()
        signer = _Signer(zc)
        soa = current.soa
        # RFC 1995 3: our version goes in the authority section.
        request = signer.sign(make_query(zc.origin, rrtypes.IXFR, msg_id,
                                         authority=[(zc.origin, rrtypes.SOA, soa.ttl, soa.rdata)]))
        consumer = IxfrConsumer(zc.origin, msg_id, current.serial, max_records=zc.max_records,
                                on_message=signer.on_message)
        d = self._stream(primary, zc, request, consumer, signer)

        def finish(_: None) -> Any:
            if consumer.up_to_date:
                return TransferOutcome(current, "ixfr", consumer.bytes, consumer.messages,
                                       consumer.records, consumer.expire_option, up_to_date=True,
                                       primary_serial=consumer.final_serial)
            if consumer.full is not None:
                full = consumer.full

                def whole(zone: Zone) -> TransferOutcome:
                    return TransferOutcome(zone, "axfr", consumer.bytes, consumer.messages,
                                           consumer.records, consumer.expire_option,
                                           full.ignored_out_of_zone + full.ignored_class)
                zd: defer.Deferred[Zone] = threads.deferToThread(_checked, consumer.result, zc)
                return zd.addCallback(whole)
            steps = consumer.steps

            def applied(zone: Zone) -> TransferOutcome:
                return TransferOutcome(zone, "ixfr", consumer.bytes, consumer.messages,
                                       consumer.records, consumer.expire_option, steps=steps)

            def bad_diff(failure: Any) -> Any:
                if isinstance(failure.value, ZoneError):
                    raise TransferError(f"IXFR does not apply: {failure.value}")
                return failure

            ad: defer.Deferred[Zone] = threads.deferToThread(
                _checked, lambda: apply_steps(current, steps), zc)
            return ad.addCallbacks(applied, bad_diff)

        d2: defer.Deferred[Any] = d.addCallback(finish)
        return d2


class FallbackFailed(TransferError):
    """The IXFR failed and so did the AXFR tried after it: both reasons, both counted."""

    def __init__(self, ixfr_reason: str, axfr_reason: str, transient: bool = False) -> None:
        super().__init__(axfr_reason)
        self.ixfr_reason = ixfr_reason
        self.transient = transient  # the AXFR's failure was (refresh retries it sooner)


def _fallback_failed(failure: Any, ixfr_reason: str) -> None:
    raise FallbackFailed(ixfr_reason, str(failure.value), isinstance(failure.value, TransientError))


def _checked(make: Callable[[], Zone], zc: ZoneConfig) -> Zone:
    """Build the new version and verify its ZONEMD (RFC 8976) before anyone can serve it."""
    zone = make()
    problem = zonemd.check(zone, zc.zonemd)
    if problem is not None:
        raise ZonemdError(problem)
    return zone


class ZonemdError(TransferError):
    """The transferred zone fails its ZONEMD check; it is not served (RFC 8976 4)."""


def _log_ignored(zc: ZoneConfig, primary: Endpoint, out_of_zone: int, other_class: int) -> None:
    if out_of_zone or other_class:
        log.warning("zone %s: transfer from %s carried %d out-of-zone and %d non-IN records, ignored",
                    to_text(zc.origin), primary, out_of_zone, other_class)
