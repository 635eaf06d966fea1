"""The main process's side of ``server.workers > 1``: sockets, worker processes, supervision.

Sockets: for every worker slot and every ``listen`` address the main process binds one UDP
and one TCP socket with SO_REUSEPORT (and a second, priority, UDP socket where
serve/steering.py's program is taken), before privileges are dropped (port 53 needs them), and
keeps them for the life of the process.  A slot's worker inherits them as fds 3 and up; a
worker restarted after a crash gets the same sockets, needs no privilege, and queries the
kernel hashed to that slot meanwhile wait in the socket buffer instead of being lost.

Workers are ``python -m secondns.serve.worker`` processes (spawned, not forked: a fork of a
running reactor with threads is not safe).  A worker that dies is restarted with back-off
(0.1 s doubling to 10 s, reset once one has served for 10 s) while the others keep serving.
SIGTERM and shutdown close every channel, which is what makes a worker exit, so none outlive
the main process even when it is killed.

Counters: each worker pushes a snapshot of its ``ServingStats`` every second; ``total`` (what
the metrics collector reads) is the sum of the main process's own counters, the last snapshot
of every live worker and the final snapshots of the workers that died.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from twisted.internet import defer, protocol, task
from twisted.internet.error import CannotListenError

from secondns.config import Endpoint
from secondns.serve import steering
from secondns.serve.channel import Decoder, encode
from secondns.serve.handoff import Message, Publisher, PublishingRegistry
from secondns.serve.server import tcp_limits
from secondns.serve.stats import ServingStats

log = logging.getLogger("secondns.workers")

BACKOFF_FIRST = 0.1
BACKOFF_MAX = 10.0
STABLE_AFTER = 10.0  # a worker up this long has its back-off reset
SERVED_TIMEOUT = 2.0  # seconds served() waits for workers' pongs at most
STOP_GRACE = 5.0  # seconds a worker gets to exit at shutdown before SIGKILL
_SLOTS = ServingStats.__slots__
# The main process's pool threads (parsing AXFR/IXFR, building versions, zone images, ZONEMD,
# the copies on disk) run at SCHED_IDLE: on a machine with as many cores as workers, that work
# took CPU from the workers while a large AXFR was built (issue 11), and nice +10 still left
# it ~1/10 of a contended core (CFS weights 110 vs 1024); SCHED_IDLE threads get a core only
# when nothing else wants it.  Per thread (Linux scheduling attributes are a thread's): the
# reactor thread keeps the process's policy, since the workers it spawns inherit it and an
# unprivileged process can never leave SCHED_IDLE again.  Where sched_setscheduler is refused
# (not Linux, or a seccomp filter without it) the thread falls back to nice +10.
TRANSFER_THREAD_NICE = 10  # the fallback, added to the process's own value


def lower_thread_priority() -> str:
    """Put the calling thread at SCHED_IDLE (else nice +10); says which ("idle", "nice", "")."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        return "idle"
    except (OSError, AttributeError):
        pass
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid,
                       min(19, os.getpriority(os.PRIO_PROCESS, tid) + TRANSFER_THREAD_NICE))
        return "nice"
    except (OSError, AttributeError):
        return ""  # not permitted: the thread runs at the process's priority


class _NicedThread(threading.Thread):
    """A pool thread that lowers its own CPU priority before it runs anything."""

    def run(self) -> None:
        lower_thread_priority()
        super().run()


def add_snapshot(total: ServingStats, snapshot: tuple[Any, ...]) -> None:
    """Add a worker's counters (``worker.stats_snapshot``) into *total*."""
    for name, value in zip(_SLOTS, snapshot, strict=False):
        current = getattr(total, name)
        if isinstance(current, list):
            for i, x in enumerate(value[:len(current)]):
                current[i] += x
        else:
            setattr(total, name, current + value)


def _copy_into(total: ServingStats, source: ServingStats) -> None:
    for name in _SLOTS:
        value = getattr(source, name)
        setattr(total, name, list(value) if isinstance(value, list) else value)


def bind_slot(listen: tuple[Endpoint, ...], priority: bool = False) -> list[socket.socket]:
    """One slot's sockets: UDP (with *priority*, then the priority UDP socket of
    serve/steering.py) then TCP for each address, SO_REUSEPORT, listening."""
    out: list[socket.socket] = []
    try:
        for ep in listen:
            out.append(steering.bind_udp(ep.host, ep.port))
            if priority:
                out.append(steering.bind_udp(ep.host, ep.port))
            out.append(_bind_tcp(ep))
    except CannotListenError:
        for s in out:
            s.close()
        raise
    return out


def _bind_tcp(ep: Endpoint) -> socket.socket:
    """A non-blocking, listening TCP socket on *ep* in its SO_REUSEPORT group."""
    tcp = socket.socket(socket.AF_INET6 if ":" in ep.host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        tcp.bind((ep.host, ep.port))
        tcp.listen(128)
    except OSError as exc:
        tcp.close()
        raise CannotListenError(ep.host, ep.port, exc) from exc  # type: ignore[no-untyped-call]
    tcp.setblocking(False)
    return tcp


class Slot:
    """One worker position: its sockets, its current process and what it reported."""

    def __init__(self, index: int, sockets: list[socket.socket]) -> None:
        self.index = index
        self.sockets = sockets
        self.process: _WorkerProcess | None = None
        self.pid: int | None = None
        self.ready = False
        self.started_at = 0.0
        self.failures = 0
        self.restarts = 0
        self.snapshot: tuple[Any, ...] | None = None
        self.cache_entries = 0
        self.queries_before = 0  # queries answered by this slot's earlier (dead) workers
        self.restart_call: Any = None

    @property
    def queries(self) -> int:
        """UDP and TCP queries this slot's workers received since the server started."""
        now = 0
        if self.snapshot is not None:
            now = self.snapshot[_SLOTS.index("udp_queries")] + self.snapshot[_SLOTS.index("tcp_queries")]
        return self.queries_before + now


class _WorkerProcess(protocol.ProcessProtocol):
    def __init__(self, pool: WorkerPool, slot: Slot) -> None:
        self.pool = pool
        self.slot = slot
        self.alive = True
        self.decoder = Decoder(self._message)
        self.ended: defer.Deferred[None] = defer.Deferred()

    def connectionMade(self) -> None:
        self.pool._greet(self)

    def outReceived(self, data: bytes) -> None:
        try:
            self.decoder.feed(data)
        except (ValueError, EOFError, TypeError) as exc:
            log.error("worker %d: bad channel message (%s); restarting it", self.slot.index, exc)
            self.kill()

    def send(self, message: Message) -> None:
        if self.alive:
            transport: Any = self.transport
            transport.write(encode(message))

    def _message(self, message: Message) -> None:
        self.pool._on_message(self, message)

    def kill(self) -> None:
        transport: Any = self.transport
        try:
            transport.signalProcess("KILL")
        except Exception:  # already gone
            pass

    def processEnded(self, reason: Any) -> None:
        self.alive = False
        self.pool._ended(self, reason)
        self.ended.callback(None)


class WorkerPool:
    """Runs ``server.workers`` serving processes for an ``Application``."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.reactor = app.reactor
        srv = app.config.server
        self.count = srv.workers
        self.slots: list[Slot] = []
        self.priority = False  # each slot has a priority UDP socket per address (serve/steering.py)
        self.total = ServingStats()
        self._retired = ServingStats()
        self.publisher = Publisher(srv.storage / ".serve-images", self.broadcast, self.reactor)
        self.stopping = False
        self._ready: defer.Deferred[None] | None = None
        # served(): ping token -> (workers yet to answer, Deferred, timeout call)
        self._pings: dict[int, tuple[set[_WorkerProcess], defer.Deferred[None], Any]] = {}
        self._ping_seq = 0
        # Before the pool starts its first thread (the reactor starts it once running).
        get_pool = getattr(self.reactor, "getThreadPool", None)
        if get_pool is not None:
            get_pool().threadFactory = _NicedThread

    # -- start-up

    def bind(self) -> None:
        """Create every slot's sockets (needs the privileges for port 53)."""
        listen = self.app.config.server.listen
        self.priority = steering.supported()
        for i in range(self.count):
            self.slots.append(Slot(i, bind_slot(listen, self.priority)))
        if self.priority:
            # One program per address's group; its sockets are indexed in bind order:
            # slot 0 normal, slot 0 priority, slot 1 normal, ...
            for n, ep in enumerate(listen):
                try:
                    steering.attach(self.slots[0].sockets[3 * n], self.count, self._rrl_prefixes())
                except OSError as exc:  # the kernel then hashes over all sockets: all are read
                    log.warning("UDP priority for cookie clients off on %s: %s", ep, exc)
        log.info("listening on %s (UDP and TCP) with %d workers", ", ".join(map(str, listen)), self.count)

    def _rrl_prefixes(self) -> tuple[int, int] | None:
        """RRL's client prefix lengths for steering.program (None: RRL off, hash the port too)."""
        rl = self.app.config.server.rate_limit
        return None if rl is None else (rl.ipv4_prefix_length, rl.ipv6_prefix_length)

    def start(self) -> defer.Deferred[None]:
        """Write the loaded zones' images, start the workers; fires once every one serves."""
        registry = self.app.registry
        # From now on (privileges dropped) every change is announced; what is loaded so far is
        # announced by Publisher.start.
        if isinstance(registry, PublishingRegistry):
            registry.publisher = self.publisher
        self.publisher.start(registry)
        self._ready = defer.Deferred()
        d = self.publisher.idle()
        d.addCallback(self._spawn_all)
        return self._ready

    def _spawn_all(self, _: Any = None) -> None:
        for slot in self.slots:
            self._spawn(slot)

    def _spawn(self, slot: Slot) -> None:
        if self.stopping:
            return
        slot.restart_call = None
        srv = self.app.config.server
        child_fds: dict[int, Any] = {0: "w", 1: "r", 2: 2}
        for n, sock in enumerate(slot.sockets):
            child_fds[3 + n] = sock.fileno()
        xfr = getattr(self.app, "xfr_handoff", None)
        xfr_end = xfr.pair() if xfr is not None else None  # serve.xfrhandoff: transfers out
        if xfr_end is not None:
            child_fds[3 + len(slot.sockets)] = xfr_end.fileno()
        env = {k: v for k, v in os.environ.items()
               if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID")}
        level = logging.getLevelName(logging.getLogger().level).lower()
        args = [sys.executable, "-m", "secondns.serve.worker", "--slot", str(slot.index),
                "--log-level", level if level in ("debug", "info", "warning", "error") else "info",
                "--log-format", srv.log_format]
        proc = _WorkerProcess(self, slot)
        slot.process = proc
        slot.ready = False
        slot.started_at = self.reactor.seconds()
        transport = self.reactor.spawnProcess(proc, sys.executable, args, env=env, childFDs=child_fds)
        if xfr_end is not None:
            xfr_end.close()  # the child has its copy
        slot.pid = transport.pid
        log.info("worker %d started (pid %s)", slot.index, slot.pid)

    def _greet(self, proc: _WorkerProcess) -> None:
        """Settings, keys and every zone's announced state, then ``sync`` (answered ``ready``)."""
        srv = self.app.config.server
        settings = {"udp_max_payload": srv.udp_max_payload, "identity": srv.identity,
                    "udp_priority": self.priority,
                    "version": srv.version, "user": srv.user,
                    "answer_cache_size": srv.answer_cache_size,
                    "cookie_secrets": list(self.app.cookie_secrets),
                    "rate_limit": srv.rate_limit.to_plain() if srv.rate_limit else None}  # own table each
        # Each worker's TCP limits (server.tcp_limits: the total divided among the workers).
        limits = tcp_limits(srv, self.count)
        settings.update({"tcp_idle_timeout": limits.idle_timeout,
                         "tcp_max_connections": limits.max_connections,
                         "tcp_max_connections_per_client": limits.max_per_client,
                         "tcp_initial_timeout": limits.initial_timeout,
                         "tcp_max_connection_duration": limits.lifetime})
        if getattr(self.app, "xfr_handoff", None) is not None:
            settings["xfr_fd"] = 3 + len(proc.slot.sockets)
        listen = [(ep.host, ep.port) for ep in srv.listen]
        proc.send(("hello", settings, listen, self._keys()))
        for message in self.publisher.replay():
            proc.send(message)
        proc.send(("sync",))

    def _keys(self) -> list[tuple[str, str, bytes]]:
        return [(k.name, k.algorithm, k.secret) for k in self.app.config.keys.values()]

    # -- messages

    def broadcast(self, message: Message) -> None:
        """Send to every live worker (a worker started later gets it in its replay)."""
        data = encode(message)
        for slot in self.slots:
            proc = slot.process
            if proc is not None and proc.alive:
                transport: Any = proc.transport
                transport.write(data)

    def keys_changed(self) -> None:
        """After a reload: the TSIG keys workers verify signed queries with."""
        self.broadcast(("keys", self._keys()))

    def _on_message(self, proc: _WorkerProcess, message: Message) -> None:
        slot = proc.slot
        if slot.process is not proc:
            return
        kind = message[0]
        if kind == "stats":
            slot.snapshot = message[1]
            slot.cache_entries = message[2]
            self._sum()
        elif kind == "notify":
            _k, req, data, host, port, transport = message
            response = self.app.responder.respond(data, transport, (host, port))
            proc.send(("reply", req, response))
        elif kind == "pong":
            self._ponged(proc, message[1])
        elif kind == "ready":
            slot.ready = True
            log.info("worker %d (pid %d) serving", slot.index, message[1])
            if self._ready is not None and all(s.ready for s in self.slots):
                ready, self._ready = self._ready, None
                ready.callback(None)

    def served(self, origin: bytes) -> defer.Deferred[None]:
        """Fires once every live worker serves what the main process serves of *origin* now.

        For NOTIFY out: a downstream told of a new serial asks for the SOA at once, and a
        worker still serving the old one would tell it "up to date" (RFC 1996 3.11: it then
        waits for REFRESH, hours).  The version is announced through the zone's publisher
        chain (a full image is written in a thread first); a ``ping`` sent after that is
        answered ``pong`` by a worker once it has applied everything before it (the channel
        is ordered).  Called from a registry listener, before ``PublishingRegistry.swap`` has
        queued the version: so it looks at the chain one reactor turn later.  Bounded: fires
        after ``SERVED_TIMEOUT`` whatever a stuck worker does, and a worker that exits no
        longer counts (its replacement starts from the announced state).
        """
        done: defer.Deferred[None] = defer.Deferred()

        def ping(_: Any) -> None:
            self._ping_seq += 1
            token = self._ping_seq
            waiting = {slot.process for slot in self.slots
                       if slot.process is not None and slot.process.alive}
            if not waiting:
                done.callback(None)
                return
            timer = self.reactor.callLater(SERVED_TIMEOUT, self._pong_timeout, token)
            self._pings[token] = (waiting, done, timer)
            for proc in list(waiting):
                proc.send(("ping", token))

        later: defer.Deferred[None] = task.deferLater(self.reactor, 0, lambda: None)
        later.addCallback(lambda _: self.publisher.zone_idle(origin))
        later.addCallback(ping)
        return done

    def _ponged(self, proc: _WorkerProcess, token: int | None) -> None:
        """*proc* answered ping *token* (None: it exited, so it answers none of them)."""
        for key in [token] if token is not None else list(self._pings):
            entry = self._pings.get(key)
            if entry is None:
                continue
            waiting, done, timer = entry
            waiting.discard(proc)
            if not waiting:
                del self._pings[key]
                if timer.active():
                    timer.cancel()
                done.callback(None)

    def _pong_timeout(self, token: int) -> None:
        entry = self._pings.pop(token, None)
        if entry is not None:
            log.warning("%d worker(s) did not confirm a zone version within %.0f s", len(entry[0]),
                        SERVED_TIMEOUT)
            entry[1].callback(None)

    def _sum(self) -> None:
        total = self.total
        _copy_into(total, self._retired)
        add_snapshot(total, tuple(getattr(self.app.stats, name) for name in _SLOTS))
        for slot in self.slots:
            if slot.snapshot is not None:
                add_snapshot(total, slot.snapshot)

    # -- supervision

    def _ended(self, proc: _WorkerProcess, reason: Any) -> None:
        self._ponged(proc, None)
        slot = proc.slot
        if slot.process is not proc:
            return
        if slot.snapshot is not None:
            add_snapshot(self._retired, slot.snapshot)
            slot.queries_before = slot.queries
            slot.snapshot = None
        slot.process = None
        slot.ready = False
        slot.cache_entries = 0
        self._sum()
        if self.stopping:
            return
        uptime = self.reactor.seconds() - slot.started_at
        if uptime >= STABLE_AFTER:
            slot.failures = 0
        delay = min(BACKOFF_MAX, BACKOFF_FIRST * (2 ** slot.failures))
        slot.failures += 1
        slot.restarts += 1
        log.error("worker %d (pid %s) ended (%s); restarting it in %.1f s", slot.index, slot.pid,
                  reason.getErrorMessage() if hasattr(reason, "getErrorMessage") else reason, delay)
        slot.pid = None
        slot.restart_call = self.reactor.callLater(delay, self._spawn, slot)

    def stop(self) -> defer.Deferred[Any]:
        """Close every channel (workers exit on it); SIGKILL what is left after STOP_GRACE."""
        self.stopping = True
        waits = []
        for slot in self.slots:
            if slot.restart_call is not None and slot.restart_call.active():
                slot.restart_call.cancel()
            proc = slot.process
            if proc is not None and proc.alive:
                transport: Any = proc.transport
                transport.closeStdin()
                waits.append(proc.ended)
                self.reactor.callLater(STOP_GRACE, lambda p=proc: p.alive and p.kill())
        return defer.DeferredList(waits)

    # -- monitoring

    def cache_entries(self) -> int:
        return sum(slot.cache_entries for slot in self.slots)

    def collector(self) -> Collector:
        return _WorkerCollector(self)


class _WorkerCollector(Collector):
    """``secondns_worker_*``: one series per slot (bounded by ``server.workers``)."""

    def __init__(self, pool: WorkerPool) -> None:
        self.pool = pool

    def collect(self) -> Iterator[Any]:
        up = GaugeMetricFamily("secondns_worker_up", "1 when the worker in this slot serves.",
                               labels=["worker"])
        pid = GaugeMetricFamily("secondns_worker_pid", "Process id of the worker in this slot.",
                                labels=["worker"])
        restarts = CounterMetricFamily("secondns_worker_restarts", "Times this slot's worker was restarted.",
                                       labels=["worker"])
        queries = CounterMetricFamily("secondns_worker_queries", "DNS requests received by this slot.",
                                      labels=["worker"])
        for slot in self.pool.slots:
            label = [str(slot.index)]
            up.add_metric(label, 1.0 if slot.ready else 0.0)
            pid.add_metric(label, float(slot.pid or 0))
            restarts.add_metric(label, slot.restarts)
            queries.add_metric(label, slot.queries)
        yield from (up, pid, restarts, queries)
        publisher = self.pool.publisher
        yield CounterMetricFamily("secondns_zone_images_written", "Zone images written for the workers.",
                                  value=publisher.images_written)
        yield GaugeMetricFamily("secondns_zone_image_write_seconds",
                                "Time the last zone image took to write (in a thread).",
                                value=publisher.last_image_seconds)
