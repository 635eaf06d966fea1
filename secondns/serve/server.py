"""Twisted protocols for DNS over UDP and TCP: frame, look up the cache, hand on.

These stay thin (as in Twisted Names): framing and the answer-cache fast
path live here, everything else in ``Responder``.  The UDP fast path sends
with the socket's own ``sendto``: Twisted's ``Port.write`` re-validates the
address string on every call, which costs more than the whole cache hit.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

from twisted.internet import protocol
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer  # type: ignore[import-untyped]

from secondns.serve import rrl
from secondns.serve.responder import TCP, UDP, Entry, Responder
from secondns.serve.stats import (
    CLOSED_IDLE,
    CLOSED_INITIAL,
    CLOSED_LIFETIME,
    CLOSED_SLOW_READER,
    IN_TCP,
    IN_UDP,
    REFUSED_PER_CLIENT,
    REFUSED_TOTAL,
    SAMPLE_EVERY,
)
from secondns.transfer.xfrout import is_transfer
from secondns.wire import KEY_DO, KEY_EDNS, KEY_FLAGS, cache_key, cookie_option

log = logging.getLogger("secondns")

_SAMPLE_MASK = SAMPLE_EVERY - 1
_QEND = 12 - KEY_FLAGS  # the question ends at len(key) + _QEND
_RECENT_MAX = 16384  # exact requests remembered per UDP listener, in each of its two memos
_RECENT_OCTETS = 4 << 20  # ...and octets of requests and responses in the memo of responses
_MEMO_OVERHEAD = 100  # octets of Python objects per memo entry (two bytes objects, a dict slot)
_RENEW_MASK = (1 << 20) - 1  # ...emptied once per 2**20 queries (a multiple of SAMPLE_EVERY)
_READ_BATCH = 256  # datagrams read per reactor turn: under a flood, other sockets (TCP, the
# priority UDP socket) and timers get a turn every ~2 ms of flood, not every ~15 ms
# recvfrom errors that end a turn, as Twisted's _sockErrReadIgnore and _sockErrReadRefuse (an
# ICMP error for a datagram we sent: a spoofed source's port unreachable).
_READ_STOP = frozenset((errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR, errno.ECONNREFUSED))
# Turns a listener in lone-datagram mode reads one datagram without looking for a second; then
# one turn reads as many as are queued, and finding more than one ends the mode (see _read).
_LONE_PROBE = 16
_DROPPABLE = (errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS, errno.ECONNREFUSED, errno.EPERM)


class UDPServer(protocol.DatagramProtocol):
    """One per UDP listen address."""

    def __init__(self, responder: Responder) -> None:
        self.responder = responder
        self.stats = responder.stats
        self.cache = responder.caches[0]
        self.protected = self.cache.protected
        self.udp_max = responder.settings.udp_max_payload
        self.cookies_on = responder.cookies_on
        self._cookie_answer = responder.cookie_answer
        self.rrl = responder.rrl  # response rate limiting (serve/rrl.py); None: off
        # NXDOMAIN responses are limited: a miss may be decided from its zone's account.
        self._nx_limited = self.rrl is not None and self.rrl.rates[rrl.NXDOMAIN_KIND] > 0
        # Recent hits: the octets after the ID -> the response after its ID.  The response is a
        # function of those octets and the zone data alone (no cookie, no RRL), so a repeat is
        # one dict probe; the cache empties it whenever it forgets anything (AnswerCache.memos).
        # When full it is left as it is until the sampled path renews it: clearing it whenever
        # it filled cost more than it saved (bench/cache_hit.py).
        self.recent: dict[bytes, bytes] = {}
        self._recent_octets = 0
        self.cache.memos.append(self.recent)
        # Hits whose response differs per client (a server cookie) or that RRL accounts: the
        # octets after the ID -> their cache key.  Never wrong (the key is a function of them).
        self.recent_keys: dict[bytes, bytes] = {}
        self._direct_ports: list[Any] = []  # ports the reactor reads directly (_direct_dispatch)
        # Another listener's read, run first in each batched turn: the priority socket of
        # serve/steering.py, so clients with a server cookie are read before a queued flood.
        self.read_first: Callable[[], None] | None = None
        self._lone = False  # lone-datagram mode (see _read)
        self._lone_turns = 0
        self._sendto: Any = None
        self._recvfrom: Any = None
        self._max_datagram = 8192  # Twisted's listenUDP default maxPacketSize
        self._v6 = False

    def startProtocol(self) -> None:
        transport: Any = self.transport
        sock = transport.socket
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        self._sendto = sock.sendto
        # Our own read loop instead of Twisted's udp.Port.doRead (the reactor still calls it).
        transport.doRead = self._read
        self._recvfrom = sock.recvfrom
        self._max_datagram = transport.maxPacketSize
        self._v6 = sock.family == socket.AF_INET6
        self._direct_dispatch(transport)

    def stopProtocol(self) -> None:
        memos = self.cache.memos
        memos[:] = [memo for memo in memos if memo is not self.recent]  # by identity, not value
        for port in self._direct_ports:  # self.transport is None by now (DatagramProtocol.doStop)
            port.reactor.stop_reading_directly(port)
        self._direct_ports.clear()

    def _direct_dispatch(self, transport: Any) -> None:
        """Have the reactor call ``_read`` straight from its poll loop, without Twisted's
        per-event log context (serve/reactor.py), when it is that reactor (a test's fake
        transport may have none)."""
        read_directly = getattr(getattr(transport, "reactor", None), "read_directly", None)
        if read_directly is not None:
            read_directly(transport, self._read)
            self._direct_ports.append(transport)

    def _read(self) -> None:
        """udp.Port.doRead, leaner: per datagram one recvfrom and one call, no byte count, no
        attribute lookups; at most _READ_BATCH datagrams a turn, so TCP and timers still get
        theirs under a flood (Twisted stops after 256 KiB, ~5,000 small queries).

        Lone-datagram mode: when a turn found one datagram (the usual case below full load),
        the next turns read one and return, without the recvfrom that would only fail with
        EAGAIN (an OSError raised and caught: about a microsecond).  epoll is level-triggered,
        so a second datagram already queued wakes us again at once; every _LONE_PROBE turns
        one reads all that is queued, and more than one ends the mode.
        """
        if self._lone:
            turns = self._lone_turns + 1
            if turns < _LONE_PROBE:
                self._lone_turns = turns
                self._read_one()
                return
            self._lone = False
        if self.read_first is not None:
            self.read_first()
        recvfrom = self._recvfrom
        received = self.datagramReceived
        size = self._max_datagram
        v6 = self._v6
        for n in range(_READ_BATCH):
            try:
                data, addr = recvfrom(size)
            except OSError as exc:
                if exc.errno in _READ_STOP:
                    if n <= 1:
                        self._lone = True
                        self._lone_turns = 0
                    return
                raise
            if v6:
                addr = addr[:2]  # as Twisted: (host, port), no flow info or scope
            try:  # datagramReceived answers its own errors; this keeps the listener alive
                received(data, addr)
            except Exception:
                log.exception("UDP datagram from %s not handled", addr[0])

    def _read_one(self) -> None:
        """One datagram, answered (lone-datagram mode, see _read)."""
        try:
            data, addr = self._recvfrom(self._max_datagram)
        except OSError as exc:
            if exc.errno in _READ_STOP:
                return
            raise
        if self._v6:
            addr = addr[:2]
        try:
            self.datagramReceived(data, addr)
        except Exception:
            log.exception("UDP datagram from %s not handled", addr[0])

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        stats = self.stats
        n = stats.udp_queries + 1
        stats.udp_queries = n
        try:  # zero-cost in CPython 3.11 unless something raises
            if not n & _SAMPLE_MASK:
                self._timed(datagram, addr)
                return
            # A client repeating a query (or many sending the same one): the response to the
            # same octets after the ID, with this query's ID (RFC 1035 4.1.1).
            tail = datagram[2:]
            rest = self.recent.get(tail)
            if rest is not None:
                stats.rcodes[rest[1] & 0xF] += 1
                self._send(datagram[:2] + rest, addr)
                return
            # The key depends on nothing but the octets after the ID: such a repeat whose
            # response is not in ``recent`` skips cache_key.
            key: bytes | None = self.recent_keys.get(tail)
            entry: Entry | None
            if key is None:
                key = cache_key(datagram, False, self.udp_max)
                entry = None if key is None else self.protected.get(key) or self.cache.get(key)
                if entry is not None and key is not None:
                    self._remember(datagram, key, entry)  # only hits: one-off names add nothing
            else:
                entry = self.protected.get(key) or self.cache.get(key)
            if entry is not None and key is not None:
                if self.rrl is not None:
                    self._hit_limited(datagram, key, entry, addr)
                    return
                # The client's ID and question between the cached header and tail.
                qend = len(key) + _QEND
                if not (key[-2] and self.cookies_on):
                    stats.rcodes[entry[0][1] & 0xF] += 1
                    self._send(datagram[:2] + entry[0] + datagram[12:qend] + entry[1], addr)
                    return
                # RFC 7873 5.2: this client's own COOKIE data ends the OPT record.
                cookie = self._cookie_answer(cookie_option(datagram, qend), addr[0])
                if cookie is not None:
                    stats.rcodes[entry[0][1] & 0xF] += 1
                    self._send(datagram[:2] + entry[0] + datagram[12:qend] + entry[1] + cookie, addr)
                    return
            if self.rrl is None:
                response = self.responder.respond(datagram, UDP, addr)
            elif self._nx_limited and key is not None and not (key[-2] and self.cookies_on):
                self._miss_limited(datagram, key, addr)
                return
            else:
                response = self.responder.respond_limited(datagram, UDP, addr)
            if response is not None:
                self._send(response, addr)
        except Exception:
            # Twisted would log and swallow it, leaving the client without an answer.
            self._internal_error(datagram, addr)

    def _remember(self, datagram: bytes, key: bytes, entry: Entry) -> None:
        """Memo a hit: its whole response after the ID in ``recent`` when that is the same for
        every client (no server cookie, no RRL), else its key in ``recent_keys``; both bounded."""
        if self.rrl is None and not (key[-2] and self.cookies_on):
            recent = self.recent
            n = len(recent)
            if n >= _RECENT_MAX:
                return  # full: checked first, as every hit of a name not in it comes here
            if not n:
                self._recent_octets = 0  # emptied by the cache or the sampled path
            rest = entry[0] + datagram[12:len(key) + _QEND] + entry[1]
            octets = self._recent_octets + len(datagram) + len(rest) + _MEMO_OVERHEAD
            if octets <= _RECENT_OCTETS:
                recent[datagram[2:]] = rest
                self._recent_octets = octets
        elif len(self.recent_keys) < _RECENT_MAX:
            self.recent_keys[datagram[2:]] = key

    def _miss_limited(self, datagram: bytes, key: bytes, addr: Any) -> None:
        """A cache miss without a server cookie, response rate limiting on.

        A question whose answer is certainly NXDOMAIN (``Responder.nxdomain_account``: a
        random-subdomain flood) is decided from its zone's account before anything is parsed
        or answered: a dropped one costs the key, a few dict probes and the RRL check, a
        slipped one also the truncated response (bench/README.md, "An attack in a bottle").
        Only when it may be sent is it answered in full (``respond``: no second debit).
        """
        responder = self.responder
        acct = responder.nxdomain_account(key)
        if acct is None:
            response = responder.respond_limited(datagram, UDP, addr)
        else:
            limiter: Any = self.rrl
            verdict = limiter.check(addr[0], acct)
            if verdict == rrl.OK:
                response = responder.respond(datagram, UDP, addr)
            elif verdict == rrl.SLIP:
                flags = key[-1]
                response = responder.slip(datagram[:4], datagram[12:len(key) + _QEND], True,
                                          bool(flags & KEY_EDNS), bool(flags & KEY_DO), None)
            else:
                return
        if response is not None:
            self._send(response, addr)

    def _hit_limited(self, datagram: bytes, key: bytes, entry: Entry, addr: Any) -> None:
        """A cache hit with response rate limiting on: sent, dropped or slipped as its account
        allows (serve/rrl.py); a query with a valid server cookie is never limited."""
        qend = len(key) + _QEND
        host = addr[0]
        limiter: Any = self.rrl
        responder = self.responder
        cookie = b""
        if key[-2] and self.cookies_on:
            state = responder.cookie_state(cookie_option(datagram, qend), host)
            if state is None:  # not an IP address: the responder decides
                response = responder.respond_limited(datagram, UDP, addr)
                if response is not None:
                    self._send(response, addr)
                return
            cookie = state[0]
            verdict = rrl.OK if state[2] else limiter.check(host, entry[5])
        else:
            verdict = limiter.check(host, entry[5])
        if verdict == rrl.OK:
            self.stats.rcodes[entry[0][1] & 0xF] += 1
            self._send(datagram[:2] + entry[0] + datagram[12:qend] + entry[1] + cookie, addr)
        elif verdict == rrl.SLIP:
            flags = key[-1]
            self._send(responder.slip(datagram[:4], datagram[12:qend], entry[5][0] == rrl.NXDOMAIN_KIND,
                                      bool(flags & KEY_EDNS), bool(flags & KEY_DO), cookie or None), addr)

    def _internal_error(self, datagram: bytes, addr: Any) -> None:
        response = self.responder.internal_error(datagram, IN_UDP)
        if response is not None:
            with contextlib.suppress(OSError):  # the send itself may be what failed
                self._sendto(response, addr)

    def _timed(self, datagram: bytes, addr: Any) -> None:
        """The sampled query: full path, timed (see stats.SAMPLE_EVERY)."""
        start = time.perf_counter()
        if not self.stats.udp_queries & _RENEW_MASK:
            self.recent.clear()  # make room for what is asked now
            self.recent_keys.clear()
        key = cache_key(datagram, False, self.udp_max)
        entry = self.cache.get(key) if key is not None else None
        if self.rrl is not None:
            if entry is not None and key is not None:
                self._hit_limited(datagram, key, entry, addr)
            else:
                response = self.responder.respond_limited(datagram, UDP, addr)
                if response is not None:
                    self._send(response, addr)
            self.stats.observe_latency(time.perf_counter() - start)
            return
        response = hit(self.responder, datagram, key, entry, addr[0]) if entry is not None else None
        if response is None:
            response = self.responder.respond(datagram, UDP, addr)
        if response is not None:
            self._send(response, addr)
        self.stats.observe_latency(time.perf_counter() - start)

    def _send(self, data: bytes, addr: Any) -> None:
        try:
            self._sendto(data, addr)
        except OSError as exc:
            # A full send buffer or an ICMP error from a spoofed source: drop, as UDP may.
            if exc.errno not in _DROPPABLE:
                raise
            self.stats.send_errors += 1


def hit(responder: Responder, message: bytes, key: bytes | None, entry: Entry, host: str) -> bytes | None:
    """The answer to *message* from its cache *entry* (counted), or None to ask the responder.

    The client's ID and question go between the cached header and tail, and for a cookie
    entry this client's own COOKIE data after the tail (RFC 7873 5.2).
    """
    if key is None:
        return None
    qend = len(key) + _QEND
    response = message[:2] + entry[0] + message[12:qend] + entry[1]
    if key[-2] and responder.cookies_on:
        cookie = responder.cookie_answer(cookie_option(message, qend), host)
        if cookie is None:
            return None
        response += cookie
    responder.stats.rcodes[entry[0][1] & 0xF] += 1
    return response


class TCPLimits:
    """One process's TCP connection limits and counts, shared by all its listeners.

    Shared so that ``tcp-max-connections`` bounds the process, not each listen address, and
    one client cannot get N connections per address.  In worker mode each worker has its own
    (docs/configuration.md, "TCP limits": the total is divided among workers, the
    per-client limit is not).
    """

    __slots__ = ("idle_timeout", "initial_timeout", "lifetime", "max_connections",
                 "max_per_client", "open", "per_client")

    def __init__(self, max_connections: int, idle_timeout: float, *, max_per_client: int | None = None,
                 initial_timeout: float | None = None, lifetime: float | None = None) -> None:
        self.max_connections = max_connections
        self.max_per_client = max_connections if max_per_client is None else max_per_client
        self.idle_timeout = idle_timeout
        self.initial_timeout = idle_timeout if initial_timeout is None else initial_timeout
        self.lifetime = lifetime  # None: connections may live as long as they are busy
        self.open = 0
        self.per_client: dict[str, int] = {}  # client address -> its open connections


def per_process(limit: int, processes: int) -> int:
    """A limit of the whole server as each of *processes* enforces it (rounded up, so the
    sum never falls below *limit*)."""
    return max(1, -(-limit // max(1, processes)))


def tcp_limits(srv: Any, processes: int) -> TCPLimits:
    """The limits one of *processes* serving processes enforces, from a config.ServerConfig.

    The total bounds the machine's descriptors and buffers, so it is divided among the
    processes (as Knot divides tcp-max-clients among its TCP workers).  The per-client limit
    is not: SO_REUSEPORT spreads one client's connections by a hash of the 4-tuple, so a
    divided limit would refuse a legitimate client well below its configured number when a
    few of its connections land on one worker; the cost is that one address may hold up to
    *processes* times the limit (docs/configuration.md, "TCP limits").
    """
    return TCPLimits(per_process(srv.tcp_max_connections, processes), srv.tcp_idle_timeout,
                     max_per_client=srv.tcp_max_connections_per_client,
                     initial_timeout=srv.tcp_initial_timeout, lifetime=srv.tcp_max_connection_duration)


def client_key(host: str) -> str:
    """The address a per-client limit counts: IPv4-mapped IPv6 (dual-stack sockets) as IPv4,
    so one client is one client whichever socket it reached."""
    if host.startswith("::ffff:") and "." in host:
        return host[7:]
    return host


@implementer(IPushProducer)
class TCPServer(protocol.Protocol):
    """RFC 7766: length-prefixed messages, several per connection, answered in order.

    The connection is its own push producer: when the kernel and Twisted's
    write buffer fill (a client that sends queries but never reads answers),
    Twisted pauses it and it stops reading and answering, so memory stays
    bounded; if it is still paused when the idle timer fires, the connection
    is aborted (a graceful close would wait for the buffer to drain, for ever).
    One timer serves the initial timeout (accept to the first complete message,
    BIND's tcp-initial-timeout) and then the idle one; it restarts only on
    complete messages, so a client trickling bytes cannot hold a connection
    open.  A second timer ends the connection after the lifetime limit, except
    during a transfer out, which finishes first (xfrout's own idle timeout cuts
    a stalled downstream).
    """

    def __init__(self, factory: TCPFactory) -> None:
        self.factory = factory
        self._buf = bytearray()
        self._idle: Any = None  # IDelayedCall (zope interfaces do not type-check)
        self._life: Any = None
        self._addr: tuple[str, int] = ("", 0)
        self._client = ""  # the per-client key
        self._counted = False  # counted in the limits (not refused)
        self._paused = False
        self._draining = False
        self._answered = False  # a complete message arrived: the idle timeout applies
        self._expired = False  # the lifetime ended during a transfer out
        self._closing = False
        self._stream: Any = None  # a transfer out in progress (xfrout.TransferOut.tcp)

    def connectionMade(self) -> None:
        factory = self.factory
        limits = factory.limits
        stats = factory.responder.stats
        stats.tcp_connections += 1
        transport: Any = self.transport
        peer = transport.getPeer()
        self._addr = (getattr(peer, "host", ""), getattr(peer, "port", 0))
        client = client_key(self._addr[0])
        # Refused connections are closed at once and never counted as open: a client over its
        # limit costs an accept and nothing more, and cannot starve the others.
        if limits.open >= limits.max_connections:
            stats.tcp_refused[REFUSED_TOTAL] += 1
            transport.abortConnection()
            return
        held = limits.per_client.get(client, 0)
        if held >= limits.max_per_client:
            stats.tcp_refused[REFUSED_PER_CLIENT] += 1
            transport.abortConnection()
            return
        limits.open += 1
        limits.per_client[client] = held + 1
        self._client = client
        self._counted = True
        transport.registerProducer(self, True)
        self._idle = factory.clock.callLater(limits.initial_timeout, self._timeout)
        if limits.lifetime is not None:
            self._life = factory.clock.callLater(limits.lifetime, self._lifetime_over)

    def _arm(self) -> None:
        if self._closing:
            return
        timeout = self.factory.limits.idle_timeout if self._stream is None else self.factory.xfr.idle_timeout
        if self._idle is not None and self._idle.active():
            self._idle.reset(timeout)
        else:
            self._idle = self.factory.clock.callLater(timeout, self._timeout)

    def _timeout(self) -> None:
        if self._stream is not None or self._paused:
            # A client that stopped reading (answers or a transfer): loseConnection would wait
            # for the write buffer to drain, which it never does, so the connection is cut.
            self._close(CLOSED_SLOW_READER)
        else:
            self._close(CLOSED_IDLE if self._answered else CLOSED_INITIAL)

    def _lifetime_over(self) -> None:
        if self._stream is not None:
            self._expired = True  # closed when the transfer ends (_pump)
            return
        self._close(CLOSED_LIFETIME)

    def _close(self, reason: int, grace: float | None = None) -> None:
        """End the connection because of a limit, counted by *reason* (stats.CLOSED_*); a
        graceful close still pending after *grace* seconds (default: the idle timeout) is cut."""
        if self._closing:
            return
        self._closing = True
        self.factory.responder.stats.tcp_closed[reason] += 1
        transport: Any = self.transport
        if reason == CLOSED_SLOW_READER:
            transport.abortConnection()
            return
        # RFC 7766 6.2.3: the server may close; what is written is flushed first.  Without a
        # producer, Twisted closes once the buffer drains (with one, it would resume it instead);
        # a client that never reads those last answers is cut after one more idle period.
        transport.unregisterProducer()
        transport.loseConnection()
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        grace = self.factory.limits.idle_timeout if grace is None else grace
        self._idle = self.factory.clock.callLater(grace, transport.abortConnection)

    def dataReceived(self, data: bytes) -> None:
        self._buf += data
        self._drain()

    def _drain(self) -> None:
        """Answer every complete message buffered, unless the client stopped reading."""
        if self._draining or self._stream is not None or self._closing:
            return  # RFC 7766 6.2.1.1 allows pipelining, answered after the transfer in progress
        self._draining = True
        buf = self._buf
        responder = self.factory.responder
        cache = responder.caches[0]
        udp_max = responder.settings.udp_max_payload
        stats = responder.stats
        transport: Any = self.transport
        pos = 0
        answered = False
        xfr = self.factory.xfr
        try:
            while not self._paused and self._stream is None and len(buf) - pos >= 2:
                length = (buf[pos] << 8) | buf[pos + 1]
                if len(buf) - pos - 2 < length:
                    break
                message = bytes(buf[pos + 2:pos + 2 + length])
                pos += 2 + length
                answered = True
                stats.tcp_queries += 1
                if xfr is not None and is_transfer(message):
                    self._stream = xfr.tcp(message, self._addr, self, bytes(buf[pos:]))
                    self.factory.clock.callLater(0, self._pump)
                    break
                try:  # per message: one that raises must not cost the connection (RFC 7766 6.2.1)
                    key = cache_key(message, True, udp_max)
                    entry = cache.get(key) if key is not None else None
                    response = hit(responder, message, key, entry, self._addr[0]) \
                        if entry is not None else None
                    if response is None:
                        response = responder.respond(message, TCP, self._addr)
                except Exception:
                    response = responder.internal_error(message, IN_TCP)
                if response is not None:
                    transport.write(len(response).to_bytes(2, "big") + response)
        finally:
            del buf[:pos]
            self._draining = False
        if answered:
            self._answered = True
            self._arm()

    def _pump(self) -> None:
        """Write the transfer's next messages until the transport pushes back (pauseProducing)
        or a turn's budget is spent, so queries on other connections never wait long."""
        stream = self._stream
        if stream is None or self._paused:
            return
        transport: Any = self.transport
        deadline = time.perf_counter() + 0.02
        try:
            for message in stream:
                transport.write(len(message).to_bytes(2, "big") + message)
                self._arm()
                if self._paused or self._stream is None:
                    return
                if time.perf_counter() > deadline:
                    self.factory.clock.callLater(0, self._pump)
                    return
        except Exception:
            # A bug met mid-stream: the client sees the connection close, never a torn zone.
            self.factory.responder.internal_error(b"", IN_TCP)
            self._stream = None
            transport.loseConnection()
            return
        self._stream = None
        if self._expired:
            # The downstream reads the transfer's last messages at its own pace: it gets as long
            # as a transfer may stall before the close turns into an abort.
            self._close(CLOSED_LIFETIME, self.factory.xfr.idle_timeout)
            return
        self._arm()
        self._drain()

    # IPushProducer: Twisted calls these as the write buffer fills and drains.

    def pauseProducing(self) -> None:
        self._paused = True
        transport: Any = self.transport
        transport.pauseProducing()  # stop reading from the socket

    def resumeProducing(self) -> None:
        self._paused = False
        transport: Any = self.transport
        transport.resumeProducing()
        # what was read before the pause, or the rest of a transfer
        self.factory.clock.callLater(0, self._drain if self._stream is None else self._pump)

    def stopProducing(self) -> None:
        self._paused = True

    def connectionLost(self, reason: Any = None) -> None:
        if self._counted:
            self._counted = False
            limits = self.factory.limits
            limits.open -= 1
            held = limits.per_client.pop(self._client, 1) - 1
            if held > 0:
                limits.per_client[self._client] = held
        if self._stream is not None:
            self._stream.close()  # frees its transfer slot (xfrout.TransferOut._stream)
            self._stream = None
        for timer in (self._idle, self._life):
            if timer is not None and timer.active():
                timer.cancel()
        self._idle = self._life = None


class TCPFactory(protocol.Factory):
    """Shares the responder and limits among a listener's connections.

    Pass *limits* to share them with the process's other listeners; without it the factory
    has its own, with the total as the only per-client bound and no lifetime limit.
    """

    def __init__(self, responder: Responder, clock: Any, idle_timeout: float,
                 max_connections: int, *, limits: TCPLimits | None = None) -> None:
        self.responder = responder
        self.clock = clock
        self.limits = limits if limits is not None else TCPLimits(max_connections, idle_timeout)
        self.xfr: Any = None  # xfrout.TransferOut where transfers out are served on this listener

    def buildProtocol(self, addr: Any) -> TCPServer:
        return TCPServer(self)
