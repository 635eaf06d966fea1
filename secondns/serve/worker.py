"""A serving worker: ``python -m secondns.serve.worker --slot N`` started by the main process.

It answers queries on the sockets it inherits (fd 3 and up: UDP then TCP for each listen
address, bound with SO_REUSEPORT by the main process) and does nothing else.  Its channel to
the main process is stdin (messages in) and stdout (messages out); when that closes, the main
process is gone and the worker exits, so it never outlives it.  Zones arrive as images and
deltas (``handoff``); NOTIFY is forwarded to the main process, which owns the refresh state.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet import protocol, task

from secondns import rrtypes
from secondns.config import RateLimitConfig, TsigKey
from secondns.reaper import Reaper
from secondns.registry import Registry
from secondns.serve import steering
from secondns.serve.channel import Decoder, encode
from secondns.serve.handoff import Message, WorkerZones
from secondns.serve.responder import UDP, Responder, ServeSettings
from secondns.serve.server import TCPFactory, TCPLimits, TCPServer, UDPServer
from secondns.serve.stats import ServingStats
from secondns.serve.xfrhandoff import worker_side
from secondns.transfer import tsig
from secondns.transfer.xfrout import is_transfer

log = logging.getLogger("secondns.worker")

STATS_EVERY = 1.0  # seconds between counter snapshots sent to the main process
_MAX_PENDING_NOTIFIES = 1000
_OPCODE_MASK = 0x78
_NOTIFY_BITS = 4 << 3  # RFC 1996: opcode 4, in the header's third octet


def stats_snapshot(stats: ServingStats) -> tuple[Any, ...]:
    """Every counter, in ``__slots__`` order (``workers.add_snapshot`` reads it back)."""
    return tuple(getattr(stats, name) for name in ServingStats.__slots__)


class _Forwarding:
    """The responder as a listener sees it: NOTIFY, and IXFR over UDP, go to the main process;
    the rest is local.

    Only cache misses get here (neither is ever cached: an IXFR request carries the client's
    SOA in its authority section, which ``wire.cache_key`` never keys), so the checks cost
    nothing on hits.  RFC 1995 2 lets an IXFR be answered over UDP; its ACL, TSIG keys, journal
    and in-memory history live in the main process, which answers it exactly as in
    single-process mode (docs/architecture.md, "Transfer-out").
    """

    def __init__(self, responder: Responder, forward: Callable[[bytes, int, tuple[str, int]], None]) -> None:
        self.inner = responder
        self.stats = responder.stats
        self.caches = responder.caches
        self.settings = responder.settings
        self.cookies_on = responder.cookies_on
        self.cookie_answer = responder.cookie_answer  # cache hits of cookie queries
        self.cookie_state = responder.cookie_state
        self.rrl = responder.rrl  # this worker's own rate-limit table (serve/rrl.py)
        self.slip = responder.slip
        self.nxdomain_account = responder.nxdomain_account  # NXDOMAIN only: nothing to forward
        self._forward = forward

    def respond(self, data: bytes, transport: int, addr: tuple[str, int]) -> bytes | None:
        if len(data) >= 12 and not data[2] & 0x80 and data[2] & _OPCODE_MASK == _NOTIFY_BITS:
            self._forward(data, transport, addr)
            return None
        if transport == UDP and is_transfer(data) and _qtype(data) == rrtypes.IXFR:
            self._forward(data, transport, addr)  # RFC 1995 2 (AXFR over UDP stays FORMERR here)
            return None
        return self.inner.respond(data, transport, addr)

    def respond_limited(self, data: bytes, transport: int, addr: tuple[str, int]) -> bytes | None:
        if len(data) >= 12 and not data[2] & 0x80 and data[2] & _OPCODE_MASK == _NOTIFY_BITS:
            self._forward(data, transport, addr)
            return None
        return self.inner.respond_limited(data, transport, addr)


def _qtype(message: bytes) -> int:
    """QTYPE of a message ``is_transfer`` accepted (its question name is uncompressed and whole)."""
    pos = 12
    while message[pos]:  # bounded: is_transfer walked the same labels to their end
        pos += message[pos] + 1
    return message[pos + 1] << 8 | message[pos + 2]


class WorkerUDPServer(UDPServer):
    """UDPServer whose NOTIFYs are answered by the main process."""

    def __init__(self, responder: Responder, worker: Worker) -> None:
        super().__init__(responder)
        self.responder = _Forwarding(  # type: ignore[assignment]
            responder, lambda data, kind, addr: worker.forward(data, kind, addr, self._reply(addr)))

    def _reply(self, addr: Any) -> Callable[[bytes], None]:
        return lambda response: self._send(response, addr)


class WorkerTCPServer(TCPServer):
    """TCPServer that tells its factory which connection is answering (for forwarded NOTIFYs)."""

    def _drain(self) -> None:
        self.factory.current = self
        super()._drain()


class WorkerTCPFactory(TCPFactory):
    def __init__(self, responder: Responder, worker: Worker, clock: Any, idle_timeout: float,
                 max_connections: int, *, limits: TCPLimits | None = None) -> None:
        super().__init__(responder, clock, idle_timeout, max_connections, limits=limits)
        self.current: TCPServer | None = None
        self.responder = _Forwarding(  # type: ignore[assignment]
            responder, lambda data, kind, addr: worker.forward(data, kind, addr, self._reply()))

    def _reply(self) -> Callable[[bytes], None]:
        conn = self.current

        def send(response: bytes) -> None:
            transport: Any = conn.transport if conn is not None else None
            if transport is not None and transport.connected:
                transport.write(len(response).to_bytes(2, "big") + response)
        return send

    def buildProtocol(self, addr: Any) -> TCPServer:
        return WorkerTCPServer(self)


class Worker(protocol.Protocol):
    """The worker's end of the channel, and everything the worker serves with."""

    def __init__(self, reactor: Any, slot: int) -> None:
        self.reactor = reactor
        self.slot = slot
        self.stats = ServingStats()
        self.registry = Registry()
        self.zones = WorkerZones(self.registry)
        self.responder: Responder | None = None
        self.ports: list[Any] = []
        self._decoder = Decoder(self._message)
        self._pending: dict[int, Callable[[bytes], None]] = {}
        self._next_id = 0
        self._stats_loop: task.LoopingCall | None = None
        self._stopping = False

    # -- channel

    def dataReceived(self, data: bytes) -> None:
        self._decoder.feed(data)

    def connectionLost(self, reason: Any = None) -> None:
        """The main process is gone (or told us to stop): exit, never serve on unsupervised."""
        self.stop()

    def stop(self) -> None:
        if self.reactor.running and not self._stopping:
            self._stopping = True
            self.reactor.stop()

    def send(self, message: Message) -> None:
        transport: Any = self.transport
        transport.write(encode(message))

    def _message(self, message: Message) -> None:
        try:
            self._handle(message)
        except Exception:  # one bad message must not stop the worker serving what it has
            log.exception("worker %d: channel message %r failed", self.slot, message[0])

    def _handle(self, message: Message) -> None:
        kind = message[0]
        if kind == "hello":
            self._hello(*message[1:])
        elif kind == "keys":
            if self.responder is not None:
                self.responder.keys = _keyring(message[1])
        elif kind == "sync":
            self.send(("ready", os.getpid()))
        elif kind == "ping":  # everything sent before it is applied (WorkerPool.served)
            self.send(("pong", message[1]))
        elif kind == "reply":
            callback = self._pending.pop(message[1], None)
            if callback is not None and message[2] is not None:
                callback(message[2])
        else:
            self.zones.apply(message)

    # -- set-up

    def _hello(self, settings: dict[str, Any], listen: Sequence[tuple[str, int]],
               keys: Sequence[tuple[str, str, bytes]]) -> None:
        self.responder = Responder(self.registry, ServeSettings(
            udp_max_payload=settings["udp_max_payload"], identity=settings["identity"],
            version=settings["version"], cache_bytes=settings["answer_cache_size"],
            cookie_secrets=tuple(settings["cookie_secrets"]),
            rate_limit=RateLimitConfig.from_plain(settings.get("rate_limit"))), self.stats)
        self.responder.keys = _keyring(keys)
        # A zone's cached answers, dropped when its new image arrives, are freed a slice per
        # turn: freeing 100k of them at once was a 15-45 ms stall of this worker (issue 11).
        self.responder.cache.discard = Reaper(self.reactor).discard
        # AXFR/IXFR connections go to the main process (serve.xfrhandoff)
        handoff = worker_side(settings.get("xfr_fd"))
        fd = 3
        # One count for all listen addresses; the main process divided the total (tcp_limits).
        limits = TCPLimits(settings["tcp_max_connections"], settings["tcp_idle_timeout"],
                           max_per_client=settings.get("tcp_max_connections_per_client"),
                           initial_timeout=settings.get("tcp_initial_timeout"),
                           lifetime=settings.get("tcp_max_connection_duration"))
        priority = bool(settings.get("udp_priority"))  # serve/steering.py: a second UDP socket
        responder = self.responder
        for host, _port in listen:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            # the reactor holds its own duplicates of the inherited sockets (closed by adopt)
            normal = socket.socket(family, socket.SOCK_DGRAM, fileno=fd)
            prio = socket.socket(family, socket.SOCK_DGRAM, fileno=fd + 1) if priority else None
            self.ports += steering.adopt(self.reactor, family, normal, prio,
                                         lambda: WorkerUDPServer(responder, self))
            fd += 2 if priority else 1
            factory = WorkerTCPFactory(self.responder, self, self.reactor, settings["tcp_idle_timeout"],
                                       settings["tcp_max_connections"], limits=limits)
            factory.xfr = handoff
            tcp = self.reactor.adoptStreamPort(fd, family, factory)
            os.close(fd)
            self.ports.append(tcp)
            fd += 1
        from secondns.app import drop_privileges

        drop_privileges(settings["user"])
        self._stats_loop = task.LoopingCall(self._push_stats)
        self._stats_loop.clock = self.reactor
        self._stats_loop.start(STATS_EVERY, now=False)

    def _push_stats(self) -> None:
        entries = sum(len(c) for c in self.responder.caches) if self.responder is not None else 0
        self.send(("stats", stats_snapshot(self.stats), entries))

    # -- NOTIFY (answered by the main process: RFC 1996 ACLs, TSIG and refresh live there)

    def forward(self, data: bytes, kind: int, addr: tuple[str, int], reply: Callable[[bytes], None]) -> None:
        if len(self._pending) >= _MAX_PENDING_NOTIFIES:
            self._pending.pop(next(iter(self._pending)))
        self._next_id += 1
        self._pending[self._next_id] = reply
        self.send(("notify", self._next_id, data, addr[0], addr[1], kind))


def _keyring(keys: Sequence[tuple[str, str, bytes]]) -> Any:
    return tsig.keyring({name: TsigKey(name, algorithm, secret) for name, algorithm, secret in keys})


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="secondns-worker")
    parser.add_argument("--slot", type=int, required=True)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--log-format", default="text")
    args = parser.parse_args(argv)
    from secondns.ops.logsetup import setup_logging

    setup_logging(args.log_level, args.log_format)
    from secondns.serve.reactor import install

    install()  # UDP reads straight from the poll loop (serve/reactor.py)
    from twisted.internet import reactor as _reactor
    from twisted.internet import stdio

    reactor: Any = _reactor
    worker = Worker(reactor, args.slot)
    stdio.StandardIO(worker, reactor=reactor)  # type: ignore[no-untyped-call]
    # SIGHUP is for the main process (reload arrives over the channel); SIGINT from a terminal
    # reaches the whole process group, and the main process stops us by closing the channel.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: reactor.callFromThread(worker.stop))
    gc.set_threshold(50_000, 20, 100)
    # Diagnosis only: SECONDNS_WORKER_PROFILE=DIR writes DIR/worker-SLOT-PID.prof (cProfile of
    # the whole run) when the worker exits (bench/README.md, "Workers").
    profile_dir = os.environ.get("SECONDNS_WORKER_PROFILE")
    if profile_dir:
        import cProfile

        profiler = cProfile.Profile()
        profiler.runcall(reactor.run, installSignalHandlers=False)
        profiler.dump_stats(os.path.join(profile_dir, f"worker-{args.slot}-{os.getpid()}.prof"))
    else:
        reactor.run(installSignalHandlers=False)
    log.debug("worker %d exits", args.slot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
