"""The zone registry: the only mutable shared state in secondns.

Each configured zone has one ``ZoneEntry`` whose ``snapshot`` is replaced
whole (an atomic reference swap: the reactor thread never sees a half-built
zone).  Whoever changes what a zone answers calls the registry, which tells
its listeners (the answer caches) to forget that zone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from secondns.names import to_text
from secondns.zone import Zone

Listener = Callable[[bytes | None, frozenset[bytes] | None], None]
"""Called with a zone origin whose answers changed (None: every zone) and, when
known, the names that changed (None: any name may have)."""


class ZoneEntry:
    """What the query path needs to know about one configured zone."""

    __slots__ = ("expired", "name", "origin", "snapshot")

    def __init__(self, origin: bytes) -> None:
        self.origin = origin
        self.name = to_text(origin)
        self.snapshot: Zone | None = None
        self.expired = False

    @property
    def serving(self) -> bool:
        """True when queries get data; False means SERVFAIL (not loaded or expired)."""
        return self.snapshot is not None and not self.expired


class Registry:
    """Zones by origin, with deepest-match lookup for a query name."""

    def __init__(self) -> None:
        self._zones: dict[bytes, ZoneEntry] = {}
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        """Register a callback told about every change to what is answered."""
        self._listeners.append(listener)

    def _changed(self, origin: bytes | None, names: frozenset[bytes] | None = None) -> None:
        for listener in self._listeners:
            listener(origin, names)

    def add(self, origin: bytes) -> ZoneEntry:
        """Start serving a zone (SERVFAIL until a snapshot is swapped in)."""
        entry = self._zones.get(origin)
        if entry is None:
            entry = ZoneEntry(origin)
            self._zones[origin] = entry
            self._changed(None)
        return entry

    def remove(self, origin: bytes) -> None:
        """Stop serving a zone: its names are REFUSED from now on."""
        if self._zones.pop(origin, None) is not None:
            self._changed(None)

    def swap(self, origin: bytes, snapshot: Zone, changed: frozenset[bytes] | None = None) -> None:
        """Atomically replace a zone's snapshot and clear its expiry.

        *changed* names the owners an incremental change touched; without it
        every cached answer of the zone is forgotten.
        """
        entry = self._zones[origin]
        was_serving = entry.serving
        entry.snapshot = snapshot
        entry.expired = False
        if was_serving:
            self._changed(origin, changed)
        else:
            # A zone starting to serve changes other zones' answers too: a DS query at the
            # apex of a child zone now belongs to this parent (RFC 4035 3.1.4.1).
            self._changed(None)

    def set_expired(self, origin: bytes, expired: bool) -> None:
        """Mark a zone expired (SERVFAIL, RFC 1034 4.3.5) or alive again."""
        entry = self._zones[origin]
        if entry.expired != expired:
            entry.expired = expired
            self._changed(None)  # as for swap: DS answers of child zones depend on it too

    def get(self, origin: bytes) -> ZoneEntry | None:
        """The entry for an exact origin."""
        return self._zones.get(origin)

    def find(self, qname: bytes) -> ZoneEntry | None:
        """The deepest configured zone containing *qname* (lowercased wire)."""
        zones = self._zones
        pos = 0
        while True:
            entry = zones.get(qname[pos:])
            if entry is not None:
                return entry
            length = qname[pos]
            if length == 0:
                return None
            pos += length + 1

    def __iter__(self) -> Iterator[ZoneEntry]:
        return iter(list(self._zones.values()))

    def __len__(self) -> int:
        return len(self._zones)
