"""Assembles a running server from a Config: registry, listeners, refreshers, storage.

The one place that knows every part; each part only knows its own inputs.
Start order matters: every zone is registered (SERVFAIL, not REFUSED, until
its copy is in) and as many copies as load within a short budget are loaded
before the listeners open, so a small configuration answers its first query
from the last good copy; the rest load in chunks afterwards, each zone
served as soon as its copy is in, while the reactor keeps answering.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

from twisted.internet import defer, task, threads

from secondns import dnssec, rrtypes
from secondns.config import Config, Endpoint, ZoneConfig, load_config, source_address
from secondns.diff import VersionStep, apply_steps
from secondns.errors import ConfigError, StorageError, ZoneError
from secondns.ops import sdnotify
from secondns.ops.httpapi import StatusSite
from secondns.ops.metrics import SecondnsCollector, build_registry
from secondns.provision import membership
from secondns.reaper import Reaper
from secondns.registry import Registry
from secondns.serve import steering
from secondns.serve.responder import Finaliser, Responder, ServeSettings
from secondns.serve.server import TCPFactory, UDPServer, tcp_limits
from secondns.serve.stats import ServingStats
from secondns.store import journal, storage
from secondns.store.storage import CopyMeta
from secondns.transfer import tls, tsig
from secondns.transfer.client import TwistedTransferClient
from secondns.transfer.notify_out import NotifySender
from secondns.transfer.pacing import Pacer
from secondns.transfer.refresh import STARTUP_SPREAD, Refresher, TransferClient, ZoneStatus
from secondns.transfer.xfrout import TransferOut
from secondns.wire import FORMERR, NOERROR, NOTAUTH, REFUSED, Query
from secondns.zone import Zone

log = logging.getLogger("secondns")

# What _read_copy_safely read: the copy, None for none on disk, False for an unusable one.
Loaded = tuple[Zone, CopyMeta | None] | bool | None

# Start-up loading: copies are read in a worker thread LOAD_CHUNK zones at a time, and the
# reactor applies each chunk in one short turn; before the listeners open, copies load on
# the reactor itself for at most LOAD_BUDGET seconds.
LOAD_CHUNK = 64
LOAD_BUDGET = 0.05
NO_COPY_SHOWN = 5  # names the start-up summary of zones without a copy lists
NO_COPY = "zone %s: no copy on disk yet; SERVFAIL until the first transfer"
# systemd: each loaded chunk extends the start timeout by this much (EXTEND_TIMEOUT_USEC).
LOAD_EXTEND_USEC = 30_000_000


class DiskStore:
    """refresh.ZoneStore on the storage directory; writes run in a worker thread.

    Saves of one zone are serialised, so an older copy can never land after
    a newer one, and ``drain`` lets shutdown wait for the write in progress.
    """

    def __init__(self, directory: Any) -> None:
        self.directory = directory
        self._locks: dict[str, defer.DeferredLock] = {}
        self._pending: set[defer.Deferred[Any]] = set()
        # Told of every change as it is saved (xfrout keeps recent IXFR steps in memory).
        self.on_diff: Any = None
        self.on_full: Any = None
        # Journal file names that may exist: what a directory listing showed, plus every append
        # since.  None (no listing yet, or an unreadable one): any zone may have a journal.
        self.journals: set[str] | None = None

    def listed(self, listing: storage.Leftovers) -> None:
        """Learn which journals exist from a listing of the storage directory (start-up, reload)."""
        if listing.files is None:
            self.journals = None
        else:
            found = {name for name in listing.files if name.endswith(".zone.journal")}
            if self.journals is not None:
                self.journals.update(found)  # in place: a writer thread may be adding to it
            elif not self._locks:  # no write yet whose journal the set could miss
                self.journals = found

    def save_zone(self, zc: ZoneConfig, zone: Zone, meta: CopyMeta) -> defer.Deferred[Any]:
        directory = self.directory
        if self.on_full is not None:
            self.on_full(zc.origin)

        def write() -> None:
            storage.save_zone(directory, zc.name, zone, meta)
            self._reset_journal(zc.name)  # the full copy now holds every change

        return self._serialised(zc, write)

    def _reset_journal(self, name: str) -> None:
        """Remove the zone's journal, unless the listing and our appends say it has none.

        Most zones never get an IXFR, and each full save of them tried an unlink that could
        only fail.  A journal missed here would be harmless: its entries name the digest of
        an older copy, so neither replay nor the next append uses them.
        """
        journals = self.journals
        if journals is None:
            journal.reset(self.directory, name)
            return
        file_name = journal.journal_file_name(name)
        if file_name in journals:
            journal.reset(self.directory, name)
            journals.discard(file_name)

    def save_meta(self, zc: ZoneConfig, meta: CopyMeta) -> defer.Deferred[Any]:
        # In the thread too: two fsyncs per unchanged-serial check blocked the reactor.
        directory = self.directory
        return self._serialised(zc, lambda: storage.save_meta(directory, zc.name, meta))

    def save_diff(self, zc: ZoneConfig, steps: list[VersionStep], zone: Zone,
                  meta: CopyMeta) -> defer.Deferred[Any]:
        """Append an IXFR to the journal; fold it into a full copy once it grows large.

        Also folds when the journal cannot carry the change: no copy of our
        own to continue (none yet, or a hand-written file), or an earlier
        save that failed left the journal behind the version the change
        starts from.  Appending then would write an entry no restart replays.
        """
        directory = self.directory
        if self.on_diff is not None:
            self.on_diff(zc.origin, steps, zone.serial)

        def fold() -> None:
            storage.save_zone(directory, zc.name, zone, meta)
            self._reset_journal(zc.name)

        def write() -> None:
            base_serial = storage.copy_serial(directory, zc.name)
            if base_serial is None:
                fold()
                return
            if self.journals is not None:  # before the append: a failed one may leave a file
                self.journals.add(journal.journal_file_name(zc.name))
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

    def delete_zone(self, name: str, scan: storage.ScanOnce | None = None) -> defer.Deferred[Any]:
        """Remove every file of a zone (a catalog member removed or reset), behind its writes.

        *scan*: the directory listing a batch of deletions shares (membership.delete_copies).
        """
        directory = self.directory
        return self._serialised_name(name, lambda: membership.delete_copies(directory, name, scan))

    def in_order(self, key: str, work: Any) -> defer.Deferred[Any]:
        """Run *work* in the writer thread behind what was queued under *key* (catalogs' lists)."""
        return self._serialised_name(key, work)

    def after(self, name: str) -> defer.Deferred[Any]:
        """Fires once the writes (and deletions) of *name* queued so far are done."""
        lock = self._locks.setdefault(name, defer.DeferredLock())
        d: defer.Deferred[Any] = lock.run(lambda: None)
        return d

    def _serialised(self, zc: ZoneConfig, work: Any) -> defer.Deferred[Any]:
        return self._serialised_name(zc.name, work)

    def _serialised_name(self, name: str, work: Any) -> defer.Deferred[Any]:
        lock = self._locks.setdefault(name, defer.DeferredLock())
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
            from secondns.serve.handoff import PublishingRegistry
            from secondns.serve.workers import WorkerPool

            self.registry: Registry = PublishingRegistry()
        else:
            self.registry = Registry()
        # Replaced versions are freed in slices on the reactor, not in one long decref (issue 11).
        self.reaper = Reaper(reactor)
        self.registry.retire = self.reaper.retire
        self.stats = ServingStats()
        srv = config.server
        # RFC 9018 server-cookie secrets (current first), shared with every worker; random at
        # each start unless server.cookies.secret-file gives them.
        self.cookie_secrets: tuple[bytes, ...] = srv.cookie_secrets or (os.urandom(16),)
        self.responder = Responder(self.registry, ServeSettings(
            udp_max_payload=srv.udp_max_payload, identity=srv.identity, version=srv.version,
            cache_bytes=srv.answer_cache_size, cookie_secrets=self.cookie_secrets,
            rate_limit=srv.rate_limit), self.stats)
        self.responder.notify_handler = self.on_notify
        self.responder.cache.discard = self.reaper.discard  # a zone's answers freed in slices
        self.responder.keys = tsig.keyring(config.keys)
        # With workers, transfers are parsed in the niced pool threads (client._ThreadedExchange).
        self.client = client or TwistedTransferClient(reactor, parse_in_thread=config.server.workers > 1)
        self.store = DiskStore(srv.storage)
        self.pacer = Pacer(reactor, srv.transfers_in, srv.soa_queries_per_second)
        self.refreshers: dict[bytes, Refresher] = {}
        self.unloaded: set[bytes] = set()  # configured zones whose copy is not read yet
        self.loaded_all: defer.Deferred[None] = defer.Deferred()
        # Zones found without a copy while start() loads: one summary line, not one per zone
        # (a cold start of 10k catalog members would log 10k identical warnings).
        self._no_copy: list[str] | None = None
        self.notifies_unknown_zone = 0
        self.ports: list[Any] = []
        self.catalogs = membership.Catalogs(self)
        self._watchdog: task.LoopingCall | None = None
        self._stopping = False
        if config.server.workers > 1:
            self.workers = WorkerPool(self)
        # Transfer-out runs here, never in a serving worker (docs/architecture.md "Transfer-out").
        self.xfr_out = TransferOut(self.registry, self._zone_config, lambda: self.responder.keys, srv)
        self.responder.xfr_out = self.xfr_out
        self.responder.expire_remaining = self.expire_remaining
        self.store.on_diff = self.xfr_out.remember
        self.store.on_full = self.xfr_out.forget
        self.notifier = NotifySender(self.registry, self._zone_config, reactor)
        if self.workers is not None:  # NOTIFY once every worker serves the version (serve.workers)
            self.notifier.gate = self.workers.served
        self.xfr_out.expire_remaining = self.expire_remaining
        # One count for every TCP and TLS listener of this process and the connections workers
        # hand over (docs/configuration.md, "TCP limits").
        self.tcp_limits = tcp_limits(srv, 1)
        self.xfr_handoff: Any = None
        if self.workers is not None:  # workers pass AXFR/IXFR connections here (serve.xfrhandoff)
            from secondns.serve.xfrhandoff import MainSide

            self.xfr_handoff = MainSide(reactor, (self.responder, reactor, srv.tcp_idle_timeout,
                                                  srv.tcp_max_connections), self.xfr_out,
                                        limits=self.tcp_limits)

    def expire_remaining(self, origin: bytes) -> int | None:
        """RFC 7314 2: seconds until our copy expires; a static zone (a primary, to its
        downstreams) gives its SOA EXPIRE field, as BIND's primaries do."""
        refresher = self.refreshers.get(origin)
        entry = self.registry.get(origin)
        if refresher is None or entry is None or entry.snapshot is None:
            return None
        if refresher.zc.static:
            return entry.snapshot.soa.expire
        expire_at = refresher.status.expire_at
        if expire_at is None:
            return None
        return max(0, min(0xFFFFFFFF, int(expire_at - time.time())))

    def _zone_config(self, origin: bytes) -> ZoneConfig | None:
        refresher = self.refreshers.get(origin)
        return refresher.zc if refresher is not None else None

    # -- zones

    def load_zone(self, zc: ZoneConfig, registry: Registry | None = None,
                  leftovers: storage.Leftovers | None = None) -> CopyMeta | None:
        """Serve a zone from its copy on disk, when there is a good one.

        A zone without a usable copy stays in the registry with no snapshot,
        so its names get SERVFAIL (not REFUSED) until a transfer fills it.
        A catalog zone goes to *registry*, the catalogs' own, never queried.
        """
        registry = registry if registry is not None else self.registry
        registry.add(zc.origin)
        return self._serve_copy(zc, _read_copy_safely(self.config.server.storage, zc, leftovers,
                                                        self.xfr_out.remember),
                                registry)

    def _serve_copy(self, zc: ZoneConfig, loaded: Loaded, registry: Registry | None = None
                    ) -> CopyMeta | None:
        """Swap in a copy read by _read_copy_safely (False: unreadable, already logged)."""
        if not isinstance(loaded, tuple):
            if loaded is not None:
                return None  # unusable, logged when read
            if zc.static:
                log.error("zone %s: no primaries and no zone file in %s: SERVFAIL", zc.name,
                          self.config.server.storage)
            else:
                if self._no_copy is not None:  # start-up: summed up in one line by _report_no_copy
                    self._no_copy.append(zc.name)
                log.log(logging.WARNING if self._no_copy is None else logging.DEBUG, NO_COPY, zc.name)
            return None
        zone, meta = loaded
        (registry if registry is not None else self.registry).swap(zc.origin, zone)
        self.unloaded.discard(zc.origin)
        log.info("zone %s: serving serial %d from disk (%d records)", zc.name, zone.serial,
                 zone.record_count)
        warning = dnssec.iterations_warning(zone)
        if warning is not None:
            log.warning("zone %s: %s", zc.name, warning)
        return meta

    def start_zone(self, zc: ZoneConfig, leftovers: storage.Leftovers | None = None) -> None:
        """Load from disk and start the zone's refresh machine."""
        registry = self._registry_for(zc)
        meta = self.load_zone(zc, registry, leftovers)
        refresher = self._refresher(zc, registry)
        self.refreshers[zc.origin] = refresher
        if zc.catalog:
            self.catalogs.started(refresher)
        refresher.start(meta)

    def _listed(self, listing: storage.Leftovers) -> None:
        """Hand a listing of the storage directory to the store (tests may swap in another)."""
        if isinstance(self.store, DiskStore):
            self.store.listed(listing)

    def _registry_for(self, zc: ZoneConfig) -> Registry:
        """Catalog zones live in the catalogs' own registry, which no query reads (RFC 9432)."""
        return self.catalogs.registry if zc.catalog else self.registry

    def _refresher(self, zc: ZoneConfig, registry: Registry) -> Refresher:
        client = membership.CatalogClient(self.client) if zc.catalog else self.client
        return Refresher(zc, registry, client, self.store, self.reactor, pacer=self.pacer,
                         first_check_spread=STARTUP_SPREAD)

    def _start_loaded(self, zc: ZoneConfig, loaded: Loaded) -> None:
        """Serve a copy read at start-up and start the (already registered) zone's machine."""
        refresher = self.refreshers.get(zc.origin)
        if refresher is None or zc.origin not in self.unloaded:
            return
        meta = self._serve_copy(zc, loaded, self._registry_for(zc))
        self.unloaded.discard(zc.origin)
        refresher.start(meta)

    def stop_zone(self, origin: bytes, keep_members: bool = False) -> None:
        """Stop a zone's timers and stop serving it; a catalog's members go too, unless kept
        (the same catalog restarting with new settings)."""
        refresher = self.refreshers.pop(origin, None)
        if refresher is not None:
            refresher.stop()
            if refresher.zc.catalog and not keep_members:
                self.catalogs.dropped(origin)
        self.registry.remove(origin)

    # -- NOTIFY (RFC 1996)

    def on_notify(self, query: Query, addr: tuple[str, int]) -> tuple[int, Finaliser | None]:
        """RFC 1996 3.10: accept a NOTIFY from the zone's primaries or allow-notify sources only,
        signed with the zone's key when it has one (RFC 8945)."""
        refresher = self.refreshers.get(query.qname_lower)
        if refresher is not None and query.qname_lower in self.unloaded:
            # Still loading its copy: its first check comes right after, so acknowledge and
            # let that check find the new serial (RFC 1996 3.7: a NOTIFY is only a hint).
            return NOERROR, None
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
        if refresher.zc.origin in self.unloaded:
            return 409, f"zone {name}: copy on disk still loading; its first check follows"
        if action == "refresh":
            refresher.refresh_now()
            return 202, f"zone {name}: SOA check started"
        refresher.retransfer()
        return 202, f"zone {name}: full transfer (AXFR) started"

    def reload(self) -> tuple[int, str]:
        """Re-read the configuration; an invalid one is rejected and the old one kept running."""
        if self.unloaded:
            message = f"reload refused: {len(self.unloaded)} zone copies still loading; retry later"
            log.warning("%s", message)
            return 409, message
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
        self.catalogs.release(set(new_zones))  # hand configuration wins over a catalog's
        for origin in removed:
            log.info("reload: zone %s removed", old_zones[origin].name)
            self.stop_zone(origin)
        for zc in changed:
            old = old_zones[zc.origin]
            if zc.static != old.static or zc.catalog != old.catalog:  # primaries all removed, or first added:
                log.info("reload: zone %s restarted from its copy on disk", zc.name)  # timers anew
                self.stop_zone(zc.origin, keep_members=zc.catalog and old.catalog)
                self.start_zone(zc)
                continue
            log.info("reload: zone %s reconfigured (applies from its next check)", zc.name)
            self.refreshers[zc.origin].reconfigure(zc)
        leftovers = storage.Leftovers.scan(self.config.server.storage) if added else None
        if leftovers is not None:
            self._listed(leftovers)
        for zc in added:  # one directory listing for all of them, as at start-up
            log.info("reload: zone %s added", zc.name)
            self.start_zone(zc, leftovers)
        self.config = Config(new.path, self.config.server, new.keys, new.zones, new.defaults,
                             new.catalog_groups)
        self.responder.keys = tsig.keyring(new.keys)
        self.notifier.configure(new.zones.values())
        if self.workers is not None:
            self.workers.keys_changed()
        self.catalogs.reconcile_all()
        message = f"reloaded: {len(added)} added, {len(removed)} removed, {len(changed)} changed"
        log.info("%s", message)
        return 200, message

    # -- network

    def listen(self) -> None:
        """Bind UDP and TCP on every configured address."""
        srv = self.config.server
        for ep in srv.listen if self.workers is None else ():
            udp = steering.listen(self.reactor, ep.host, ep.port, lambda: UDPServer(self.responder))
            factory = TCPFactory(self.responder, self.reactor, srv.tcp_idle_timeout,
                                 srv.tcp_max_connections, limits=self.tcp_limits)
            factory.xfr = self.xfr_out
            tcp = self.reactor.listenTCP(ep.port, factory, interface=ep.host, backlog=128)
            self.ports += [*udp, tcp]
            log.info("listening on %s (UDP and TCP)", ep)
        if self.workers is not None:
            self.workers.bind()
        if srv.tls is not None:
            # Here even with workers: transfers out run in this process (docs/architecture.md).
            self.ports += tls.listen(self.reactor, srv.tls, self._tls_factory)
        if srv.http is not None:
            stats = self.stats if self.workers is None else self.workers.total
            collector = SecondnsCollector(stats, self.zone_statuses, self._gauges,
                                          lambda: self.notifies_unknown_zone,
                                          per_zone=srv.metrics.per_zone,
                                          rrl=srv.rate_limit is not None)
            metrics = build_registry(collector)
            metrics.register(self.xfr_out.collector())
            metrics.register(self.notifier.collector())
            if self.workers is not None:
                metrics.register(self.workers.collector())
            metrics.register(membership.CatalogCollector(self.catalogs))
            tls_failures = getattr(self.client, "tls_failures", None)
            if tls_failures is not None:
                metrics.register(tls_failures.collector())
            site = StatusSite(metrics, self.zone_statuses, self,
                              lambda: self.config.server.control_token,
                              trust_loopback=srv.http.host in ("127.0.0.1", "::1"),
                              loading=self.loading_progress, renderer=self._in_thread)
            self.ports.append(self.reactor.listenTCP(srv.http.port, site.site, interface=srv.http.host))
            log.info("HTTP (metrics, status, control) on %s", srv.http)

    def _tls_factory(self) -> TCPFactory:
        srv = self.config.server
        factory = TCPFactory(self.responder, self.reactor, srv.tcp_idle_timeout, srv.tcp_max_connections,
                             limits=self.tcp_limits)
        factory.xfr = self.xfr_out
        return factory

    def _in_thread(self, render: Any) -> defer.Deferred[bytes]:
        """Run a /metrics rendering in the reactor's thread pool, off the serving path."""
        d: defer.Deferred[bytes] = threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(),
                                                             render)
        return d

    def _gauges(self) -> dict[str, tuple[str, float]]:
        entries = float(sum(len(c) for c in self.responder.caches))
        if self.workers is not None:
            entries += self.workers.cache_entries()
        doc = "Responses held in the UDP and TCP answer caches."
        return {"secondns_answer_cache_entries": (doc, entries)}

    def loading_progress(self) -> str | None:
        """Why the node is not ready yet because of start-up loading, or None once loaded."""
        if not self.unloaded:
            return None
        total = len(self.config.zones)
        return f"loading zone copies from disk: {total - len(self.unloaded)} of {total} loaded"

    def start(self) -> None:
        """Register every zone, load what fits a short budget, listen, load the rest in chunks.

        READY=1 goes to systemd once every copy on disk is loaded (each zone
        is served as soon as its own copy is in); until then each chunk sends
        EXTEND_TIMEOUT_USEC and a STATUS= line, so a large configuration does
        not hit TimeoutStartSec while it is visibly making progress.
        """
        zones = list(self.config.zones.values())
        directory = self.config.server.storage
        leftovers = storage.Leftovers.scan(directory)  # one directory listing for every zone
        self._listed(leftovers)
        self._no_copy = []
        for zc in zones:
            registry = self._registry_for(zc)
            registry.add(zc.origin)
            refresher = self._refresher(zc, registry)
            self.refreshers[zc.origin] = refresher
            self.unloaded.add(zc.origin)
            if zc.catalog:
                self.catalogs.started(refresher)
        deadline = time.monotonic() + LOAD_BUDGET
        first = 0
        while first < len(zones) and time.monotonic() < deadline:
            zc = zones[first]
            self._start_loaded(zc, _read_copy_safely(directory, zc, leftovers, self.xfr_out.remember))
            first += 1
        self.listen()
        self.notifier.configure(self.config.zones.values())
        self.notifier.start(self.reactor)
        drop_privileges(self.config.server.user)
        self.reactor.addSystemEventTrigger("before", "shutdown", self.shutdown)
        waits: list[defer.Deferred[Any]] = [self.loaded_all]
        if self.workers is not None:  # READY once every worker serves, too
            waits.append(self.workers.start())
        defer.gatherResults(waits).addCallback(self._ready)
        self._load_chunk(zones, first, leftovers)
        self._start_watchdog()

    def _load_chunk(self, zones: Sequence[ZoneConfig], first: int, leftovers: storage.Leftovers) -> None:
        """Read the next LOAD_CHUNK copies in a worker thread, then serve them in one turn."""
        if first >= len(zones) or self._stopping:
            self._report_no_copy()
            if not self.loaded_all.called:
                self.loaded_all.callback(None)
            return
        chunk = zones[first:first + LOAD_CHUNK]
        directory = self.config.server.storage
        remember = self.xfr_out.remember
        sdnotify.notify(f"EXTEND_TIMEOUT_USEC={LOAD_EXTEND_USEC}\n"
                        f"STATUS=loading zone copies: {first} of {len(zones)}")

        def read() -> list[Loaded]:
            return [_read_copy_safely(directory, zc, leftovers, remember) for zc in chunk]

        def apply(results: list[Loaded]) -> None:
            for zc, loaded in zip(chunk, results, strict=True):
                self._start_loaded(zc, loaded)
            self.reactor.callLater(0, self._load_chunk, zones, first + len(chunk), leftovers)

        def failed(failure: Any) -> None:  # _read_copy_safely catches everything: a bug
            log.error("loading zone copies failed: %s", failure.getTraceback())
            for zc in chunk:
                self._start_loaded(zc, False)
            self.reactor.callLater(0, self._load_chunk, zones, first + len(chunk), leftovers)

        threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(), read).addCallbacks(
            apply, failed)

    def _report_no_copy(self, source: str = "") -> None:
        """The zones found without a copy on disk since _no_copy was set (start-up, or a
        catalog's batch of members), in one warning (each at debug); *source* prefixes it."""
        names, self._no_copy = self._no_copy or [], None
        if len(names) == 1:
            log.warning(source + NO_COPY, names[0])
        elif names:
            shown = ", ".join(names[:NO_COPY_SHOWN]) + (", ..." if len(names) > NO_COPY_SHOWN else "")
            log.warning("%s%d zones have no copy on disk yet (%s); SERVFAIL for each until its "
                        "first transfer", source, len(names), shown)

    @contextlib.contextmanager
    def no_copy_summary(self, source: str) -> Iterator[None]:
        """Sum up the zones started without a copy inside the block in one warning.

        A catalog's first transfer starts every member it lists at once (issue 14: 10k
        members, 10k identical warnings).  Inside start-up's own summary (a catalog loaded
        from disk) the names join that one instead.
        """
        if self._no_copy is not None:
            yield
            return
        self._no_copy = []
        try:
            yield
        finally:
            self._report_no_copy(source)

    def _ready(self, _: Any) -> None:
        log.info("all %d zone copies loaded", len(self.refreshers))
        workers = f" with {self.workers.count} workers" if self.workers is not None else ""
        sdnotify.notify(f"READY=1\nSTATUS=serving {len(self.refreshers)} zones{workers}")

    def _start_watchdog(self) -> None:
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
        self._stopping = True
        self.pacer.stop()
        for origin in list(self.refreshers):
            self.refreshers[origin].stop()
        for port in self.ports:
            port.stopListening()
        log.info("shutting down")
        if self.workers is not None:
            return defer.DeferredList([self.store.drain(), self.workers.stop()])
        return self.store.drain()


def _read_copy_safely(directory: Any, zc: ZoneConfig, leftovers: storage.Leftovers | None = None,
                      on_steps: Any = None) -> Loaded:
    """read_copy that logs instead of raising: False when the copy exists but is unusable.

    Thread-safe (touches only the zone's own files), so start-up runs it in workers.
    """
    try:
        return read_copy(directory, zc, leftovers, on_steps)
    except (StorageError, ZoneError, OSError) as exc:
        log.error("zone %s: copy on disk not served, will transfer afresh: %s", zc.name, exc)
    except Exception:  # one bad zone must never keep the others from being served
        log.exception("zone %s: copy on disk could not be loaded; will transfer afresh", zc.name)
    return False


def read_copy(directory: Any, zc: ZoneConfig, leftovers: storage.Leftovers | None = None,
              on_steps: Any = None) -> tuple[Zone, CopyMeta | None] | None:
    """The zone as last saved: the full copy plus the journal's complete entries.

    A journal that cannot be replayed is logged and skipped: the full copy is
    still a consistent (older) version.
    """
    loaded = storage.load_zone(directory, zc.name, zc.origin, leftovers)
    if loaded is None:
        return None
    zone, meta = loaded
    if not storage.may_exist(leftovers, journal.journal_file_name(zc.name)):
        return zone, meta  # the start-up listing shows no journal: nothing to open
    try:
        replay = journal.replay(directory, zc.name, zc.origin, zone.serial)
        if replay.steps:
            zone = apply_steps(zone, replay.steps).folded()
            if on_steps is not None:  # IXFR out answers from these without re-reading the journal
                on_steps(zc.origin, replay.steps, zone.serial)
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



def _source_primary(zc: ZoneConfig, host: str) -> Endpoint | None:
    src = source_address(host)
    if src is None:
        return None
    for primary in zc.primaries:
        if ipaddress.ip_address(primary.host) == src:
            return primary
    return None


def _in_acl(zc: ZoneConfig, host: str) -> bool:
    src = source_address(host)
    if src is None:
        return False
    return any(src in net for net in zc.allow_notify)
