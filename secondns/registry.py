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

# The name the answer cache files answers under when they read no name of their zone
# (``AnswerCache.put``): SERVFAIL for a zone not serving is all such a zone can answer.
NO_NAME = b""
NOT_SERVING_ANSWERS = frozenset({NO_NAME})

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
        # Every proper ancestor of a registered origin, with how many origins lie below it:
        # a zone that is not in here has no configured zone beneath it.
        self._above: dict[bytes, int] = {}
        # Told of every version that stops being served (replaced or removed), so a large one
        # is freed in slices (reaper.Reaper) instead of in one long decref on the reactor.
        self.retire: Callable[[Zone], None] | None = None

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
            for ancestor in _ancestors(origin):
                self._above[ancestor] = self._above.get(ancestor, 0) + 1
            self._changed(None)
        return entry

    def remove(self, origin: bytes) -> None:
        """Stop serving a zone: its names are REFUSED from now on."""
        entry = self._zones.pop(origin, None)
        if entry is not None:
            if entry.snapshot is not None and self.retire is not None:
                self.retire(entry.snapshot)
            for ancestor in _ancestors(origin):
                left = self._above[ancestor] - 1
                if left:
                    self._above[ancestor] = left
                else:
                    del self._above[ancestor]
            self._changed(None)

    def swap(self, origin: bytes, snapshot: Zone, changed: frozenset[bytes] | None = None) -> None:
        """Atomically replace a zone's snapshot and clear its expiry.

        *changed* names the owners an incremental change touched; without it
        every cached answer of the zone is forgotten.
        """
        entry = self._zones[origin]
        was_serving = entry.serving
        old = entry.snapshot
        entry.snapshot = snapshot
        entry.expired = False
        if was_serving:
            self._changed(origin, changed)
        else:
            self._serving_changed(origin, started=True)
        if old is not None and old is not snapshot and self.retire is not None:
            self.retire(old)

    def set_expired(self, origin: bytes, expired: bool) -> None:
        """Mark a zone expired (SERVFAIL, RFC 1034 4.3.5) or alive again."""
        entry = self._zones[origin]
        if entry.expired != expired:
            was_serving = entry.serving
            entry.expired = expired
            if was_serving != entry.serving:
                self._serving_changed(origin, started=entry.serving)

    def _serving_changed(self, origin: bytes, started: bool) -> None:
        """A zone started or stopped serving: forget what depends on that.

        Its own answers change (SERVFAIL or data), and so do the DS answers at
        the apex of any configured zone below it, which the parent gives while
        it serves (RFC 4035 3.1.4.1): then everything is forgotten, as the
        cache knows answers by zone, not by parent.  A zone with no zone below
        it (all of a provider's 10,000) forgets only its own: clearing the
        whole cache each time one of them loads left start-up with no hits.

        A zone that *starts* serving forgets only its SERVFAILs, which read no
        name (``NOT_SERVING_ANSWERS``): they are all it answered since it
        last stopped (that forgot the rest), and naming them spares a pass
        over every cached answer.  That pass, once per zone loaded, made
        start-up quadratic: ~2 ms per zone with 10,000 cached answers, about
        20 CPU seconds for 10,000 zones (bench/README.md, "Many zones").
        """
        if origin in self._above:
            self._changed(None)
        else:
            self._changed(origin, NOT_SERVING_ANSWERS if started else None)

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


def _ancestors(origin: bytes) -> Iterator[bytes]:
    """The proper ancestors of a wire-format name, root included (b"\\x00")."""
    pos = 0
    while origin[pos]:
        pos += origin[pos] + 1
        yield origin[pos:]
