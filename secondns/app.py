"""Assembles a running server from a Config: registry, listeners, zone loading.

The one place that knows every part; each part only knows its own inputs.
"""

from __future__ import annotations

import logging
from typing import Any

from .config import Config
from .errors import StorageError, ZoneError
from .registry import Registry
from .responder import Responder, ServeSettings
from .server import TCPFactory, UDPServer
from .stats import ServingStats
from . import storage

log = logging.getLogger("secondns")


class Application:
    """Owns the registry, the responder and the listening ports."""

    def __init__(self, config: Config, reactor: Any) -> None:
        self.config = config
        self.reactor = reactor
        self.registry = Registry()
        self.stats = ServingStats()
        srv = config.server
        self.responder = Responder(self.registry, ServeSettings(
            udp_max_payload=srv.udp_max_payload, identity=srv.identity, version=srv.version),
            self.stats)
        self.ports: list[Any] = []

    def load_zones(self) -> None:
        """Serve every configured zone from its copy on disk, when there is one.

        A zone without a usable copy stays in the registry with no snapshot,
        so its names get SERVFAIL (not REFUSED) until a transfer fills it.
        """
        directory = self.config.server.storage
        for zc in self.config.zones.values():
            self.registry.add(zc.origin)
            try:
                loaded = storage.load_zone(directory, zc.name, zc.origin)
            except (StorageError, ZoneError) as exc:
                log.error("zone %s: copy on disk not served: %s", zc.name, exc)
                continue
            if loaded is None:
                log.warning("zone %s: no copy on disk yet; SERVFAIL until transferred", zc.name)
                continue
            zone, _meta = loaded
            self.registry.swap(zc.origin, zone)
            log.info("zone %s: serving serial %d from disk (%d records)", zc.name, zone.serial,
                     zone.record_count)

    def listen(self) -> None:
        """Bind UDP and TCP on every configured address."""
        srv = self.config.server
        for ep in srv.listen:
            udp = self.reactor.listenUDP(ep.port, UDPServer(self.responder), interface=ep.host)
            factory = TCPFactory(self.responder, self.reactor, srv.tcp_idle_timeout,
                                 srv.tcp_max_connections)
            tcp = self.reactor.listenTCP(ep.port, factory, interface=ep.host, backlog=128)
            self.ports += [udp, tcp]
            log.info("listening on %s (UDP and TCP)", ep)

    def start(self) -> None:
        """Load zones, then listen: queries are never answered from an empty registry."""
        self.load_zones()
        self.listen()
