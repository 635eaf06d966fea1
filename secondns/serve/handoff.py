"""Zone hand-off: registry changes in the main process become messages every worker applies.

Main side: ``PublishingRegistry`` is the main process's registry; every change that alters
what is answered (add, remove, swap, expiry) goes to ``Publisher``, which turns it into a
message, in order per zone:

* a new base version (AXFR, a fold, a load from disk) is written as a zone image
  (``image.write_image``, in a thread) and announced as ``full`` with its path;
* an IXFR on top of the announced base is sent as a ``delta``: the new blobs of the names it
  changed, applied in each worker as a delta layer (``Zone.derive``), so the cost is the size
  of the change, never of the zone;
* expiry and removal are one small message each.

Worker side: ``WorkerZones.apply`` builds the new version completely, then swaps it into the
worker's registry in one reference assignment: a worker never answers from half a version.

Messages are also kept as the per-zone state a (re)started worker replays first.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet import defer, threads

from secondns.errors import ZoneError
from secondns.names import to_text
from secondns.registry import Registry, ZoneEntry
from secondns.serve.image import denial_from_state, denial_state, open_image, write_image
from secondns.store.storage import zone_path
from secondns.zone import SOA, Zone

log = logging.getLogger("secondns.handoff")

Message = tuple[Any, ...]
_UNLINK_AFTER = 30.0  # seconds an old image stays on disk for a worker still replaying it


class PublishingRegistry(Registry):
    """The main process's registry when workers serve: tells the publisher about each change."""

    def __init__(self) -> None:
        super().__init__()
        self.publisher: Publisher | None = None

    def add(self, origin: bytes) -> ZoneEntry:
        new = self.get(origin) is None
        entry = super().add(origin)
        if new and self.publisher is not None:
            self.publisher.added(origin)
        return entry

    def remove(self, origin: bytes) -> None:
        present = self.get(origin) is not None
        super().remove(origin)
        if present and self.publisher is not None:
            self.publisher.removed(origin)

    def swap(self, origin: bytes, snapshot: Zone, changed: frozenset[bytes] | None = None) -> None:
        was_expired = self._expired(origin)
        super().swap(origin, snapshot, changed)
        if self.publisher is not None:
            self.publisher.swapped(origin, snapshot, changed)
            if was_expired:
                self.publisher.expired(origin, False)

    def set_expired(self, origin: bytes, expired: bool) -> None:
        before = self._expired(origin)
        super().set_expired(origin, expired)
        if before != expired and self.publisher is not None:
            self.publisher.expired(origin, expired)

    def _expired(self, origin: bytes) -> bool:
        entry = self.get(origin)
        return entry is not None and entry.expired


@dataclass
class _ZoneState:
    """What has been announced for one zone: replayed to a worker that (re)starts."""

    full: Message | None = None
    version: Zone | None = None  # the last version announced (base image plus its delta)
    gen: int = 0
    expired: bool = False


class Publisher:
    """Orders, writes and announces zone versions (main process)."""

    def __init__(self, directory: Path, broadcast: Callable[[Message], None], clock: Any) -> None:
        self.directory = directory
        self._broadcast = broadcast
        self._clock = clock
        self._chains: dict[bytes, defer.Deferred[Any]] = {}
        self._state: dict[bytes, _ZoneState] = {}
        self._base: dict[bytes, tuple[Any, int]] = {}  # origin -> (base names dict, image gen)
        self._gen = 0
        self.images_written = 0
        self.last_image_seconds = 0.0
        self._registry: Registry | None = None

    def start(self, registry: Registry) -> None:
        """Announce every zone the registry holds (called once privileges are dropped)."""
        self._registry = registry
        self.directory.mkdir(mode=0o700, exist_ok=True)
        for stale in self.directory.glob("*.img"):
            stale.unlink(missing_ok=True)
        for stale in self.directory.glob(".*.tmp"):
            stale.unlink(missing_ok=True)
        for entry in registry:
            self.added(entry.origin)
            if entry.snapshot is not None:
                self.swapped(entry.origin, entry.snapshot, None)
            if entry.expired:
                self.expired(entry.origin, True)

    # -- events from the registry (reactor thread)

    def added(self, origin: bytes) -> None:
        def run() -> None:
            self._state[origin] = _ZoneState()
            self._broadcast(("add", origin))
        self._enqueue(origin, run)

    def removed(self, origin: bytes) -> None:
        self._base.pop(origin, None)

        def run() -> None:
            state = self._state.pop(origin, None)
            self._broadcast(("remove", origin))
            if state is not None and state.full is not None:
                self._unlink_later(state.full[2])
        self._enqueue(origin, run)

    def expired(self, origin: bytes, flag: bool) -> None:
        def run() -> None:
            state = self._state.get(origin)
            if state is not None:
                state.expired = flag
            self._broadcast(("expired", origin, flag))
        self._enqueue(origin, run)

    def swapped(self, origin: bytes, zone: Zone, changed: frozenset[bytes] | None) -> None:
        base = self._base.get(origin)
        if base is not None and zone._names is base[0]:
            self._delta(origin, zone, base[1], changed)
        else:
            self._full(origin, zone)

    def _full(self, origin: bytes, zone: Zone) -> None:
        self._gen += 1
        gen = self._gen
        self._base[origin] = (zone._names, gen)
        path = self.directory / f"{zone_path(Path(), to_text(origin)).stem}-{gen}.img"

        def run() -> defer.Deferred[Any] | None:
            if self._base.get(origin, (None, 0))[1] != gen:
                return None  # a newer version is queued behind this one: skip the write
            started = self._clock.seconds()
            d: defer.Deferred[Any] = threads.deferToThread(write_image, path, zone)

            def announce(_size: int) -> None:
                self.images_written += 1
                self.last_image_seconds = self._clock.seconds() - started
                state = self._state.get(origin)
                if state is None:  # removed meanwhile
                    self._unlink_later(str(path))
                    return
                if state.full is not None:
                    self._unlink_later(state.full[2])
                message = ("full", origin, str(path), gen)
                state.full, state.version, state.gen = message, zone, gen
                self._broadcast(message)
                self._map_in_main(origin, zone, path, gen, state)
            return d.addCallback(announce)
        self._enqueue(origin, run)

    def _delta(self, origin: bytes, zone: Zone, gen: int, changed: frozenset[bytes] | None) -> None:
        def run() -> None:
            state = self._state.get(origin)
            if state is None or state.gen != gen or self._base.get(origin, (None, 0))[1] != gen:
                return  # superseded by a newer base on its way
            if changed is None:
                message = delta_message(origin, gen, zone, None)
            else:
                message = delta_message(origin, gen, zone, changed)
            state.version = zone
            self._broadcast(message)
        self._enqueue(origin, run)

    def _map_in_main(self, origin: bytes, zone: Zone, path: Path, gen: int, state: _ZoneState) -> None:
        """Serve the main process's own copy from the image too, freeing its dict form.

        The same version with the same answers, so the registry entry is replaced in place
        without telling listeners.  Only when nothing newer came in meanwhile: a version
        derived from the dict form keeps it until its next fold.
        """
        entry = self._registry.get(origin) if self._registry is not None else None
        if entry is None or entry.snapshot is not zone or zone.delta_size \
                or self._base.get(origin, (None, 0))[1] != gen:
            return
        try:
            mapped = open_image(path, like=zone)
        except (OSError, ValueError, ZoneError) as exc:
            log.warning("zone %s: main process keeps its own copy: %s", to_text(origin), exc)
            return
        entry.snapshot = mapped
        state.version = mapped
        self._base[origin] = (mapped._names, gen)
        # The dict form is no longer served: freed a slice per turn by the reaper, not in the
        # last decref on this reactor (~86 ms per 1M names, issue 11).
        if self._registry is not None and self._registry.retire is not None:
            self._registry.retire(zone)

    # -- ordering

    def _enqueue(self, origin: bytes, work: Callable[[], Any]) -> None:
        """Run *work* after every earlier event of the same zone (other zones do not wait)."""
        d = self._chains.get(origin)
        if d is None:
            d = defer.succeed(None)
            self._chains[origin] = d

        def step(_: Any) -> Any:
            return work()

        def failed(failure: Any) -> None:
            log.error("zone %s: hand-off to the workers failed: %s", to_text(origin),
                      failure.getErrorMessage())
        d.addCallback(step)
        d.addErrback(failed)

    def idle(self) -> defer.Deferred[Any]:
        """Fires once every event queued so far has been announced."""
        waits = []
        for d in self._chains.values():
            w: defer.Deferred[Any] = defer.Deferred()

            def fire(result: Any, w: defer.Deferred[Any] = w) -> Any:
                w.callback(None)
                return result
            d.addBoth(fire)
            waits.append(w)
        return defer.DeferredList(waits)

    def zone_idle(self, origin: bytes) -> defer.Deferred[None]:
        """Fires once every event of *origin* queued so far has been announced (broadcast)."""
        d = self._chains.get(origin)
        w: defer.Deferred[None] = defer.Deferred()
        if d is None:
            w.callback(None)
            return w

        def fire(result: Any) -> Any:
            w.callback(None)
            return result
        d.addBoth(fire)
        return w

    def replay(self) -> list[Message]:
        """Messages that bring a new worker to the announced state of every zone."""
        out: list[Message] = []
        for origin, state in self._state.items():
            out.append(("add", origin))
            if state.full is not None and state.version is not None:
                out.append(state.full)
                if state.version.delta_size:
                    out.append(delta_message(origin, state.gen, state.version, None))
            if state.expired:
                out.append(("expired", origin, True))
        return out

    def _unlink_later(self, path: str) -> None:
        def unlink() -> None:
            try:
                os.unlink(path)
            except OSError:
                pass
        self._clock.callLater(_UNLINK_AFTER, unlink)


def delta_message(origin: bytes, gen: int, zone: Zone, changed: frozenset[bytes] | None) -> Message:
    """``delta``: on top of the worker's current version (*changed* given), or of the base."""
    # Without *changed*: the whole delta layer, applied to the base image.
    changes = dict(zone._delta or {}) if changed is None else {name: zone.get(name) for name in changed}
    return ("delta", origin, gen, changes, changed is None, zone.soa.ttl, zone.soa.rdata, zone.n_cuts,
            zone.n_dnames, zone.record_count, denial_state(zone),
            None if changed is None else frozenset(changed))


class WorkerZones:
    """The worker side: applies hand-off messages to the worker's registry."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._bases: dict[bytes, tuple[int, Zone]] = {}  # origin -> (image gen, base version)

    def apply(self, message: Message) -> None:
        kind, origin = message[0], message[1]
        registry = self.registry
        if kind == "add":
            registry.add(origin)
        elif kind == "remove":
            self._bases.pop(origin, None)
            registry.remove(origin)
        elif kind == "expired":
            if registry.get(origin) is not None:
                registry.set_expired(origin, message[2])
        elif kind == "full":
            try:
                zone = open_image(Path(message[2]))
            except (OSError, ValueError, ZoneError) as exc:
                log.error("zone %s: image %s not served: %s", to_text(origin), message[2], exc)
                return
            self._bases[origin] = (message[3], zone)
            registry.add(origin)
            registry.swap(origin, zone)
            log.debug("zone %s: serial %d mapped from %s", to_text(origin), zone.serial, message[2])
        elif kind == "delta":
            self._apply_delta(message)
        else:
            log.warning("unknown hand-off message %r", kind)

    def _apply_delta(self, message: Message) -> None:
        (_k, origin, gen, changes, on_base, soa_ttl, soa_rdata, n_cuts, n_dnames, count, denial,
         changed) = message
        base = self._bases.get(origin)
        entry = self.registry.get(origin)
        if base is None or base[0] != gen or entry is None:
            return  # a newer base is announced next
        below = base[1] if on_base or entry.snapshot is None else entry.snapshot
        zone = below.derive(changes, {}, SOA.from_rdata(soa_ttl, soa_rdata), n_cuts, n_dnames, count,
                            denial_from_state(denial))
        self.registry.swap(origin, zone, changed)
        # bench/workers.py times the hand-off from this line and the main process's swap.
        log.debug("zone %s: serial %d applied (%d names changed)", to_text(origin), zone.serial,
                  len(changes))
