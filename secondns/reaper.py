"""Frees replaced zone versions a slice per reactor turn (issue 11).

When the last reference to a large version goes, CPython frees every name and node blob in
that one decref: a single C call, holding the GIL, of ~86 ms for a 1M-record zone, on the
reactor thread (the registry swap, the refresher letting go) or on whichever thread happened
to drop it, which blocks the reactor just the same.  So the registry hands every version it
replaces or removes to the ``Reaper``, which keeps it until nothing else refers to it (a
transfer-out or a query may still be reading it) and then empties its big dicts in slices
of ``SLICE`` names, one slice per reactor turn, before letting them go.

A base shared with a newer version (an IXFR's ``Zone.derive``) is referred to by that
version too, so it is never emptied here: only the old ``Zone`` object is dropped.  The same
goes for a signed version's NSEC/NSEC3 index (``dnssec.DenialIndex``): its two lists of every
owner (~40 ms to free for 1M owners, the NSEC3 hashes being objects of their own) are cut
down a slice per turn unless a newer version still uses the same index.
"""

from __future__ import annotations

import sys
from typing import Any

from secondns.zone import ShardedNames, Zone

SLICE = 5_000  # names freed per reactor turn (~0.5 ms)
POLL = 0.5  # seconds between looks at versions still referred to elsewhere
SMALL = 20_000  # a version with fewer names is dropped at once: freeing it is short


class Reaper:
    """Holds retired versions until they are unreferenced, then frees them in slices."""

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self._held: list[Zone] = []
        self._work: list[dict[Any, Any] | list[Any]] = []  # dicts and lists only we refer to
        self._call: Any = None

    def retire(self, zone: Zone) -> None:
        """*zone* is no longer served; free it once nothing else needs it."""
        if zone.base_size + zone.delta_size < SMALL:
            return
        self._held.append(zone)
        self._schedule()

    def discard(self, container: dict[Any, Any] | list[Any]) -> None:
        """Free *container* (which nothing else refers to any more) a slice per reactor turn.

        For the answer cache's entries dropped when a zone is replaced whole (``AnswerCache.
        discard``): the cache lets go of them at once, and they are freed here.
        """
        if len(container) <= SLICE:
            return  # short to free: the caller's reference goes, and with it the container
        self._work.append(container)
        self._schedule()

    @property
    def pending(self) -> int:
        """Versions and dicts not freed yet (tests, /status)."""
        return len(self._held) + len(self._work)

    def _schedule(self) -> None:
        if self._call is not None and self._call.active():
            return
        self._call = self.clock.callLater(0 if self._work else POLL, self._step)

    def _step(self) -> None:
        self._call = None
        if self._work:
            self._free_slice()
        else:
            self._collect()
        if self._work or self._held:
            self._schedule()

    def _collect(self) -> None:
        held = self._held
        for i in range(len(held) - 1, -1, -1):
            # 2: the list's reference and getrefcount's argument.  Anyone else still holds it.
            if sys.getrefcount(held[i]) == 2:
                zone = held.pop(i)
                self._take(zone)
                del zone

    def _take(self, zone: Zone) -> None:
        """Move the zone's big dicts that no other version shares into the work list."""
        for attr in ("_names", "_delta", "_children", "_child_delta"):
            value = getattr(zone, attr)
            # 3: the zone's slot, ``value`` and getrefcount's argument.
            if value is None or sys.getrefcount(value) != 3:
                continue
            if type(value) is ShardedNames:
                self._work += [shard for shard in value.shards if shard]
            elif type(value) is dict and len(value) > SLICE:
                self._work.append(value)
        denial = zone.denial
        # 3: the zone's slot, ``denial`` and getrefcount's argument.  A newer version whose
        # change left the chain alone keeps the very same index: then it is not ours to empty.
        if denial is not None and sys.getrefcount(denial) == 3:
            for attr in ("keys", "names", "_cache"):  # the cache of NSEC3 hashes is shared too
                part: Any = getattr(denial, attr, None)
                if type(part) in (list, dict) and len(part) > SLICE and sys.getrefcount(part) == 3:
                    self._work.append(part)

    def _free_slice(self) -> None:
        d = self._work[-1]
        if isinstance(d, list):
            del d[-SLICE:]  # the tail: nothing moves, SLICE decrefs
        else:
            popitem = d.popitem
            for _ in range(min(SLICE, len(d))):
                popitem()
        if not d:
            self._work.pop()
