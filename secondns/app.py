"""Assembles a running server from a Config: registry, listeners, refreshers, storage.

The one place that knows every part; each part only knows its own inputs.
Start order matters: zones are loaded from disk before the listeners open,
so the first query is already answered from the last good copy.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from typing import Any

from twisted.internet import defer, task, threads

from . import dnssec, journal, rrtypes, sdnotify, storage, tsig
from .config import Config, Endpoint, ZoneConfig, load_config
from .diff import VersionStep, apply_steps
from .errors import ConfigError, StorageError, ZoneError
from .httpapi import StatusSite
from .metrics import SecondnsCollector, build_registry
from .refresh import Refresher, TransferClient, ZoneStatus
from .registry import Registry
from .responder import Finaliser, Responder, ServeSettings
from .server import TCPFactory, UDPServer
from .stats import ServingStats
from .storage import CopyMeta
from .transfer import TwistedTransferClient
from .wire import FORMERR, NOERROR, NOTAUTH, REFUSED, Query
from .zone import Zone

log = logging.getLogger("secondns")


class DiskStore:
    """refresh.ZoneStore on the storage directory; writes run in a worker thread.

    Saves of one zone are serialised, so an older copy can never land after
    a newer one, and ``drain`` lets shutdown wait for the write in progress.
    """

    def __init__(self, directory: Any) -> None:
        self.directory = directory
        self._locks: dict[str, defer.DeferredLock] = {}
        self._pending: set[defer.Deferred[Any]] = set()

    def save_zone(self, zc: ZoneConfig, zone: Zone, meta: CopyMeta) -> defer.Deferred[Any]:
        directory = self.directory

        def write() -> None:
            storage.save_zone(directory, zc.name, zone, meta)
            journal.reset(directory, zc.name)  # the full copy now holds every change

        return self._serialised(zc, write)

    def save_meta(self, zc: ZoneConfig, meta: CopyMeta) -> None:
        storage.save_meta(self.directory, zc.name, meta)

    def save_diff(self, zc: ZoneConfig, steps: list[VersionStep], zone: Zone,
                  meta: CopyMeta) -> defer.Deferred[Any]:
        """Append an IXFR to the journal; fold it into a full copy once it grows large.

        Also folds when the journal cannot carry the change: no copy of our
        own to continue (none yet, or a hand-written file), or an earlier
        save that failed left the journal behind the version the change
        starts from.  Appending then would write an entry no restart replays.
        """
        directory = self.directory

        def fold() -> None:
            storage.save_zone(directory, zc.name, zone, meta)
            journal.reset(directory, zc.name)

        def write() -> None:
            base_serial = storage.copy_serial(directory, zc.name)
            if base_serial is None:
                fold()
                return
            try:
                size = journal.append(directory, zc.name, steps, copy_serial=base_serial,
                                      when=meta.last_refresh, expire_at=meta.expire_at)
            except journal.JournalGap as exc:
                log.warning("zone %s: %s; writing a full copy instead", zc.name, exc)
                fold()
                return
            storage.save_meta(directory, zc.name, meta)
            if journal.needs_fold(directory, zc.name, size):
                fold()

        return self._serialised(zc, write)

    def _serialised(self, zc: ZoneConfig, work: Any) -> defer.Deferred[Any]:
        lock = self._locks.setdefault(zc.name, defer.DeferredLock())
        d: defer.Deferred[Any] = lock.run(threads.deferToThread, work)
        self._pending.add(d)

        def done(result: Any) -> Any:
            self._pending.discard(d)
            return result

        d.addBoth(done)
        return d

    def drain(self) -> defer.Deferred[Any]:
        """Fires when every write in progress has finished (for graceful shutdown)."""
        return defer.DeferredList(list(self._pending), consumeErrors=True)


class Application:
    """Owns the registry, the responder, the refreshers and the listening ports."""

    def __init__(self, config: Config, reactor: Any, client: TransferClient | None = None) -> None:
        self.config = config
        self.reactor = reactor
        # server.workers > 1: worker processes answer queries (docs/architecture.md "Workers").
        self.workers: Any = None
        if config.server.workers > 1:
            from .serve.handoff import PublishingRegistry
            from .serve.workers import WorkerPool

            self.registry: Registry = PublishingRegistry()
        else:
            self.registry = Registry()
        self.stats = ServingStats()
        srv = config.server
        # RFC 9018 server-cookie secrets (current first), shared with every worker; random at
        # each start unless server.cookies.secret-file gives them.
        self.cookie_secrets: tuple[bytes, ...] = srv.cookie_secrets or (os.urandom(16),)
        self.responder = Responder(self.registry, ServeSettings(
            udp_max_payload=srv.udp_max_payload, identity=srv.identity, version=srv.version,
            cache_bytes=srv.answer_cache_size, cookie_secrets=self.cookie_secrets), self.stats)
        self.responder.notify_handler = self.on_notify
        self.responder.keys = tsig.keyring(config.keys)
        self.client = client or TwistedTransferClient(reactor)
        self.store = DiskStore(srv.storage)
        self.refreshers: dict[bytes, Refresher] = {}
        self.notifies_unknown_zone = 0
        self.ports: list[Any] = []
        self._watchdog: task.LoopingCall | None = None
        if config.server.workers > 1:
            self.workers = WorkerPool(self)

    # -- zones

    def load_zone(self, zc: ZoneConfig) -> CopyMeta | None:
        """Serve a zone from its copy on disk, when there is a good one.

        A zone without a usable copy stays in the registry with no snapshot,
        so its names get SERVFAIL (not REFUSED) until a transfer fills it.
        """
        self.registry.add(zc.origin)
        try:
            loaded = read_copy(self.config.server.storage, zc)
        except (StorageError, ZoneError, OSError) as exc:
            log.error("zone %s: copy on disk not served, will transfer afresh: %s", zc.name, exc)
            return None
        except Exception:  # one bad zone must never keep the others from being served
            log.exception("zone %s: copy on disk could not be loaded; will transfer afresh", zc.name)
            return None
        if loaded is None:
            if zc.static:
                log.error("zone %s: no primaries and no zone file in %s: SERVFAIL", zc.name,
                          self.config.server.storage)
            else:
                log.warning("zone %s: no copy on disk yet; SERVFAIL until the first transfer", zc.name)
            return None
        zone, meta = loaded
        self.registry.swap(zc.origin, zone)
        log.info("zone %s: serving serial %d from disk (%d records)", zc.name, zone.serial,
                 zone.record_count)
        warning = dnssec.iterations_warning(zone)
        if warning is not None:
            log.warning("zone %s: %s", zc.name, warning)
        return meta

    def start_zone(self, zc: ZoneConfig) -> None:
        """Load from disk and start the zone's refresh machine."""
        meta = self.load_zone(zc)
        refresher = Refresher(zc, self.registry, self.client, self.store, self.reactor)
        self.refreshers[zc.origin] = refresher
        refresher.start(meta)

    def stop_zone(self, origin: bytes) -> None:
        """Stop a zone's timers and stop serving it."""
        refresher = self.refreshers.pop(origin, None)
        if refresher is not None:
            refresher.stop()
        self.registry.remove(origin)

    # -- NOTIFY (RFC 1996)

    def on_notify(self, query: Query, addr: tuple[str, int]) -> tuple[int, Finaliser | None]:
        """RFC 1996 3.10: accept a NOTIFY from the zone's primaries or allow-notify sources only,
        signed with the zone's key when it has one (RFC 8945)."""
        refresher = self.refreshers.get(query.qname_lower)
        if refresher is None:
            self.notifies_unknown_zone += 1
            log.warning("NOTIFY from %s for %s: not a zone we serve", addr[0], query.qname.decode(
                "ascii", "replace"))
            return NOTAUTH, None
        zc = refresher.zc
        if query.qtype != rrtypes.SOA:
            return FORMERR, None
        source = _source_primary(zc, addr[0])
        if source is None and not _in_acl(zc, addr[0]):
            refresher.status.notifies["refused"] += 1
            log.warning("zone %s: NOTIFY from %s refused: not a primary or allow-notify source",
                        zc.name, addr[0])
            return REFUSED, None
        finalise: Finaliser | None = None
        if zc.key is not None:
            key = zc.key
            try:
                verified = tsig.verify_request(query.raw, key, peer=addr[0])
            except tsig.TsigError as exc:
                refresher.status.notifies["refused"] += 1
                refresher.status.last_error = f"NOTIFY from {addr[0]}: {exc}"
                log.warning("zone %s: NOTIFY from %s refused: %s", zc.name, addr[0], exc)
                error = exc  # the except variable is unbound once the block ends
                return NOTAUTH, lambda response: tsig.error_response(response, error)
            mac = verified.mac

            def finalise(response: bytes) -> bytes:
                return tsig.sign_response(response, key, mac)

        refresher.status.notifies["accepted"] += 1
        log.info("zone %s: NOTIFY from %s accepted", zc.name, addr[0])
        refresher.notify(source)
        return NOERROR, finalise

    # -- operations

    def zone_statuses(self) -> list[ZoneStatus]:
        """Status of every configured zone, in configuration order."""
        return [r.status for r in self.refreshers.values()]

    def control(self, action: str, zone: str | None) -> tuple[int, str]:
        """Control actions from the HTTP listener (secondns refresh/retransfer/reload)."""
        if action == "reload":
            return self.reload()
        if action not in ("refresh", "retransfer"):
            return 404, f"unknown action {action!r}"
        if not zone:
            return 400, f"{action} needs a zone name"
        name = zone.lower().rstrip(".") + "."
        refresher = next((r for r in self.refreshers.values() if r.zc.name == name), None)
        if refresher is None:
            return 404, f"zone {name} is not configured"
        if refresher.zc.static:
            return 409, f"zone {name} has no primaries"
        if action == "refresh":
            refresher.refresh_now()
            return 202, f"zone {name}: SOA check started"
        refresher.retransfer()
        return 202, f"zone {name}: full transfer (AXFR) started"

    def reload(self) -> tuple[int, str]:
        """Re-read the configuration; an invalid one is rejected and the old one kept running."""
        try:
            new = load_config(self.config.path)
        except ConfigError as exc:
            log.error("reload rejected, old configuration still in force:\n%s", exc)
            return 400, f"reload rejected: {exc}"
        old_zones = {zc.origin: zc for zc in self.config.zones.values()}
        new_zones = {zc.origin: zc for zc in new.zones.values()}
        if new.server != self.config.server:
            log.warning("reload: changes under `server:` take effect only after a restart")
        removed = [o for o in old_zones if o not in new_zones]
        added = [zc for o, zc in new_zones.items() if o not in old_zones]
        changed = [zc for o, zc in new_zones.items() if o in old_zones and old_zones[o] != zc]
        for origin in removed:
            log.info("reload: zone %s removed", old_zones[origin].name)
            self.stop_zone(origin)
        for zc in changed:
            if zc.static != old_zones[zc.origin].static:  # primaries all removed, or first added:
                log.info("reload: zone %s restarted from its copy on disk", zc.name)  # timers anew
                self.stop_zone(zc.origin)
                self.start_zone(zc)
                continue
            log.info("reload: zone %s reconfigured (applies from its next check)", zc.name)
            self.refreshers[zc.origin].reconfigure(zc)
        for zc in added:
            log.info("reload: zone %s added", zc.name)
            self.start_zone(zc)
        self.config = Config(new.path, self.config.server, new.keys, new.zones)
        self.responder.keys = tsig.keyring(new.keys)
        if self.workers is not None:
            self.workers.keys_changed()
        message = f"reloaded: {len(added)} added, {len(removed)} removed, {len(changed)} changed"
        log.info("%s", message)
        return 200, message

    # -- network

    def listen(self) -> None:
        """Bind UDP and TCP on every configured address."""
        srv = self.config.server
        for ep in srv.listen if self.workers is None else ():
            udp = self.reactor.listenUDP(ep.port, UDPServer(self.responder), interface=ep.host)
            factory = TCPFactory(self.responder, self.reactor, srv.tcp_idle_timeout,
                                 srv.tcp_max_connections)
            tcp = self.reactor.listenTCP(ep.port, factory, interface=ep.host, backlog=128)
            self.ports += [udp, tcp]
            log.info("listening on %s (UDP and TCP)", ep)
        if self.workers is not None:
            self.workers.bind()
        if srv.http is not None:
            stats = self.stats if self.workers is None else self.workers.total
            collector = SecondnsCollector(stats, self.zone_statuses, self._gauges,
                                          lambda: self.notifies_unknown_zone)
            metrics = build_registry(collector)
            if self.workers is not None:
                metrics.register(self.workers.collector())
            site = StatusSite(metrics, self.zone_statuses, self,
                              lambda: self.config.server.control_token,
                              trust_loopback=srv.http.host in ("127.0.0.1", "::1"))
            self.ports.append(self.reactor.listenTCP(srv.http.port, site.site, interface=srv.http.host))
            log.info("HTTP (metrics, status, control) on %s", srv.http)

    def _gauges(self) -> dict[str, tuple[str, float]]:
        entries = float(sum(len(c) for c in self.responder.caches))
        if self.workers is not None:
            entries += self.workers.cache_entries()
        doc = "Responses held in the UDP and TCP answer caches."
        return {"secondns_answer_cache_entries": (doc, entries)}

    def start(self) -> None:
        """Load zones, then listen, then drop privileges and tell systemd we are ready.

        Queries are never answered from an empty registry: the copies on disk
        are loaded before the first socket opens.
        """
        for zc in self.config.zones.values():
            self.start_zone(zc)
        self.listen()
        drop_privileges(self.config.server.user)
        self.reactor.addSystemEventTrigger("before", "shutdown", self.shutdown)
        if self.workers is None:
            self._ready()
        else:  # READY once every worker serves the loaded zones
            self.workers.start().addCallback(lambda _: self._ready())

    def _ready(self) -> None:
        workers = f" with {self.workers.count} workers" if self.workers is not None else ""
        sdnotify.notify(f"READY=1\nSTATUS=serving {len(self.refreshers)} zones{workers}")
        interval = sdnotify.watchdog_interval()
        if interval:
            self._watchdog = task.LoopingCall(sdnotify.notify, "WATCHDOG=1")
            self._watchdog.clock = self.reactor
            self._watchdog.start(interval)

    def on_sighup(self) -> None:
        """SIGHUP: reload, as systemd's ExecReload and rndc-style tooling expect."""
        sdnotify.notify("RELOADING=1")
        self.reload()
        sdnotify.notify("READY=1")

    def shutdown(self) -> defer.Deferred[Any]:
        """Stop timers and listeners, then wait for the disk write in progress."""
        sdnotify.notify("STOPPING=1")
        for origin in list(self.refreshers):
            self.refreshers[origin].stop()
        for port in self.ports:
            port.stopListening()
        log.info("shutting down")
        if self.workers is not None:
            return defer.DeferredList([self.store.drain(), self.workers.stop()])
        return self.store.drain()


def read_copy(directory: Any, zc: ZoneConfig) -> tuple[Zone, CopyMeta | None] | None:
    """The zone as last saved: the full copy plus the journal's complete entries.

    A journal that cannot be replayed is logged and skipped: the full copy is
    still a consistent (older) version.
    """
    loaded = storage.load_zone(directory, zc.name, zc.origin)
    if loaded is None:
        return None
    zone, meta = loaded
    try:
        replay = journal.replay(directory, zc.name, zc.origin, zone.serial)
        if replay.steps:
            zone = apply_steps(zone, replay.steps).folded()
            log.info("zone %s: replayed %d journal entries up to serial %d", zc.name,
                     len(replay.steps), zone.serial)
            sidecar = storage.load_meta(directory, zc.name)
            if sidecar is not None and sidecar.serial == zone.serial:
                meta = sidecar
            else:
                meta = _replayed_meta(zone.serial, meta, replay)
    except (StorageError, ZoneError) as exc:
        log.error("zone %s: journal not replayed, using the full copy: %s", zc.name, exc)
    return zone, meta


def _replayed_meta(serial: int, copy_meta: CopyMeta | None, replay: journal.Replay) -> CopyMeta | None:
    """Freshness of a replayed version whose sidecar is behind (a crash between the two writes).

    RFC 1034 4.3.5: expiry counts from the last successful refresh, so it
    is anchored at the newest proof of freshness on disk, never later: the
    time the last replayed entry records, or what the full copy carries
    (its sidecar, or its own save time).  None only when neither records
    a time (a hand-written file and an old journal).
    """
    candidates: list[tuple[float, float | None]] = []
    if copy_meta is not None and copy_meta.last_refresh is not None:
        candidates.append((copy_meta.last_refresh, copy_meta.expire_at))
    if replay.last_refresh is not None:
        candidates.append((replay.last_refresh, replay.expire_at))
    if not candidates:
        return None
    last_refresh, expire_at = max(candidates, key=lambda c: c[0])
    return CopyMeta(serial, last_refresh, expire_at, None, last_refresh)


def drop_privileges(user: str | None) -> None:
    """Become *user* once the (possibly privileged) ports are bound; no-op unless root."""
    if not user or os.geteuid() != 0:
        return
    import pwd

    entry = pwd.getpwnam(user)
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
    log.info("running as user %s (uid %d)", user, entry.pw_uid)


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The source address, with IPv4-mapped IPv6 (dual-stack sockets) unmapped."""
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _source_primary(zc: ZoneConfig, host: str) -> Endpoint | None:
    src = _address(host)
    if src is None:
        return None
    for primary in zc.primaries:
        if ipaddress.ip_address(primary.host) == src:
            return primary
    return None


def _in_acl(zc: ZoneConfig, host: str) -> bool:
    src = _address(host)
    if src is None:
        return False
    return any(src in net for net in zc.allow_notify)
