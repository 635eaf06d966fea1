"""Catalog zones in the running server: the served zones follow their catalogs (RFC 9432 5).

A catalog zone is transferred by an ordinary Refresher, but into a private
``CatalogRegistry`` the responder never looks at, so queries for it are
REFUSED as for a zone we do not have (RFC 9432 6 recommends limiting who can
query a catalog; BIND does the same with ``allow-query { none; }``).  Every
version swapped in there is parsed (catalog.py) and reconciled with the
served zones: members added are started, removed ones stopped and their
copies deleted (RFC 9432 5.3), a changed unique-N is a reset (5.4, 5.5),
and a ``coo`` hands a member to another catalog (5.6).

Settings of a member, lowest first: ``defaults``, the catalog zone's
``primaries`` and ``key``, then its ``catalog-groups`` template.  A zone
also configured by hand keeps its hand configuration and is not touched
by any catalog (RFC 9432 5.2: the clashing new instance is ignored).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

from prometheus_client.core import GaugeMetricFamily
from twisted.internet import defer

from secondns.config import Config, ZoneConfig
from secondns.errors import SecondnsError
from secondns.names import ROOT, from_text, to_text
from secondns.provision.catalog import Catalog, Member, parse
from secondns.registry import Registry
from secondns.store import journal, storage
from secondns.store.storage import CopyMeta
from secondns.transfer.refresh import Refresher, Timers
from secondns.zone import Zone

log = logging.getLogger("secondns.catalog")


class CatalogRegistry(Registry):
    """Holds catalog zones' snapshots away from the responder, and reports each new version."""

    def __init__(self, on_swap: Callable[[bytes, Zone, frozenset[bytes] | None], None]) -> None:
        super().__init__()
        self.on_swap = on_swap

    def swap(self, origin: bytes, snapshot: Zone, changed: frozenset[bytes] | None = None) -> None:
        """*changed*: the names an IXFR touched (None: a whole new version), for an incremental
        parse (catalog.parse)."""
        super().swap(origin, snapshot, changed)
        self.on_swap(origin, snapshot, changed)


class Host(Protocol):
    """What the application offers the catalogs (app.Application)."""

    config: Config
    refreshers: dict[bytes, Refresher]
    store: Any

    def start_zone(self, zc: ZoneConfig) -> None: ...

    def stop_zone(self, origin: bytes) -> None: ...

    def load_zone(self, zc: ZoneConfig, registry: Registry | None = None) -> CopyMeta | None: ...

    def no_copy_summary(self, source: str) -> AbstractContextManager[None]: ...


class CatalogCollector:
    """``secondns_catalog_members{catalog}``: members each catalog zone provides (one series per
    catalog, never per member, so it stays small whatever the catalogs hold)."""

    def __init__(self, catalogs: Catalogs) -> None:
        self.catalogs = catalogs

    def collect(self) -> Iterator[Any]:
        members = GaugeMetricFamily("secondns_catalog_members",
                                    "Member zones served from each catalog zone (RFC 9432).",
                                    labels=["catalog"])
        ignored = GaugeMetricFamily("secondns_catalog_ignored_entries",
                                    "Entries of the catalog's last version not acted on (malformed, "
                                    "clashing), and 1 per rejected version.", labels=["catalog"])
        for origin in self.catalogs.host.refreshers:
            refresher = self.catalogs.host.refreshers[origin]
            if not refresher.zc.catalog:
                continue
            name = refresher.zc.name
            members.add_metric([name], len(self.catalogs.owned.get(origin, {})))
            cat = self.catalogs.parsed.get(origin)
            count = 0 if cat is None else cat.error_count + (0 if cat.valid else 1)
            ignored.add_metric([name], count + len(self.catalogs.problems.get(origin, {})))
        yield members
        yield ignored


class CatalogClient:
    """The transfer client a catalog zone's refresher uses: SOA checks go over TCP.

    Knot 3.2 answers queries for a catalog it generates only as it answers transfers: over TCP,
    to a client its transfer ACL allows (measured with dig: UDP and unsigned TCP are REFUSED,
    TSIG-signed TCP answers).  A transfer is TCP anyway, so this costs one connection per check.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def soa_query(self, primary: Any, zc: ZoneConfig) -> Any:
        over_tcp = getattr(self.inner, "_soa_over_tcp", None)
        return over_tcp(primary, zc) if over_tcp is not None else self.inner.soa_query(primary, zc)

    def transfer(self, primary: Any, zc: ZoneConfig, current: Zone | None, kind: str) -> Any:
        return self.inner.transfer(primary, zc, current, kind)


def delete_copies(directory: Any, name: str, scan: storage.ScanOnce | None = None) -> None:
    """Every file a zone leaves in the storage directory: copy, sidecar, snapshot, journal, temporaries.

    *scan*: the listing a batch of deletions shares for the temporaries (None: one of its own).
    """
    for path in (storage.zone_path(directory, name), storage.meta_path(directory, name),
                 storage.snapshot_path(directory, name), journal.journal_path(directory, name)):
        try:
            path.unlink()
        except FileNotFoundError:
            pass
    if scan is None:
        storage.clean_temp_files(directory, name)
        return
    leftovers = scan.get()
    if leftovers.files is None:  # the shared listing failed: try this zone's own
        storage.clean_temp_files(directory, name)
    else:
        leftovers.clean(name)


def members_path(directory: Any, name: str) -> Path:
    """``<catalog zone file>.members``: the last member list acted on, for a restart."""
    path = storage.zone_path(Path(directory), name)
    return path.with_name(path.name + ".members")


def save_members(directory: Any, name: str, serial: int, members: dict[bytes, Member]) -> None:
    """Atomically (temporary file, fsync, rename) record the members a catalog version gave.

    A restart whose copy of the catalog is a rejected version still knows what to serve.
    """
    path = members_path(directory, name)
    body = {"serial": serial, "members": [[m.name, m.unique_id, m.group,
                                           None if m.coo is None else to_text(m.coo)]
                                          for m in members.values()]}
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(body, f, separators=(",", ":"))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    storage.fsync_dir(path.parent)


def load_members(directory: Any, name: str) -> dict[bytes, Member] | None:
    """The list ``save_members`` wrote, or None when there is none or it cannot be read."""
    path = members_path(directory, name)
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
        out = {}
        for text, uid, group, coo in body["members"]:
            origin = from_text(text, ROOT).lower()
            out[origin] = Member(origin, uid, group, None if coo is None else from_text(coo, ROOT).lower())
        return out
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, SecondnsError) as exc:
        log.error("%s: member list not readable, ignored: %s", path, exc)
        return None


def member_config(config: Config, catalog: ZoneConfig, member: Member) -> tuple[ZoneConfig, str | None]:
    """The member's settings, and why its group was not applied (None when it was, or has none)."""
    settings: dict[str, Any] = {**config.defaults, "primaries": catalog.primaries, "key": catalog.key}
    problem = None
    if member.group is not None:
        template = config.catalog_groups.get(member.group)
        if template is None:
            problem = f"group {member.group!r} is not under catalog-groups; catalog settings used"
        else:
            settings.update(template)
    settings.pop("catalog", None)
    return ZoneConfig(member.name, member.origin, **settings), problem


class Catalogs:
    """Members of every catalog zone, kept in step with the catalogs' versions."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.registry = CatalogRegistry(self._swapped)
        self.parsed: dict[bytes, Catalog] = {}  # last parse of each catalog (valid or not)
        self.listed: dict[bytes, dict[bytes, Member]] = {}  # last valid member list of each catalog
        self.owned: dict[bytes, dict[bytes, Member]] = {}  # members each catalog configured
        self.owner: dict[bytes, bytes] = {}  # member origin -> catalog origin
        self.problems: dict[bytes, dict[bytes, str]] = {}  # per catalog: member -> why not served
        self._generation: dict[bytes, int] = {}  # guards a restart after a reset's deletion
        self._scan: storage.ScanOnce | None = None  # the deletions of one batch share a listing

    # -- hooks from the application

    def started(self, refresher: Refresher) -> None:
        """A catalog zone's refresher exists: show its member count in its status."""
        self._show(refresher.zc.origin)

    def dropped(self, origin: bytes) -> None:
        """A catalog zone left the configuration: its members go with it (RFC 9432 5.3)."""
        self.registry.remove(origin)
        self.parsed.pop(origin, None)
        self.listed.pop(origin, None)
        self.problems.pop(origin, None)
        path = members_path(self.host.config.server.storage, to_text(origin))

        def unlink() -> None:
            try:
                path.unlink()
            except OSError:
                pass

        self._in_order(to_text(origin), unlink)  # behind a member list still being written
        with self._deleting():
            for member in list(self.owned.pop(origin, {}).values()):
                self._remove(origin, member, delete=True)

    def release(self, hand: set[bytes]) -> None:
        """Before a reload starts hand-configured zones: members now configured by hand leave
        their catalog, copies kept (the hand zone continues from them)."""
        for cat, owned in self.owned.items():
            for origin in [o for o in owned if o in hand]:
                self._remove(cat, owned.pop(origin), delete=False)

    def reconcile_all(self) -> None:
        """After a reload: groups, defaults or the catalogs' own settings may have changed."""
        for origin in list(self.listed):
            if origin not in {zc.origin for zc in self.host.config.zones.values() if zc.catalog}:
                self.dropped(origin)
                continue
            self._apply(origin)

    # -- versions

    def _swapped(self, origin: bytes, zone: Zone, changed: frozenset[bytes] | None = None) -> None:
        # An IXFR re-reads only the member nodes it touched, and only their members are acted
        # on (with those this catalog could not serve, which may have become servable).
        before = self.parsed.get(origin) if origin in self.listed else None
        cat = parse(zone, self.owned.get(origin), before, changed)
        self.parsed[origin] = cat
        name = to_text(origin)
        if not cat.valid:
            # RFC 9432 5.1: a broken catalog is ignored for catalog processing: members stay.
            # At start (nothing acted on yet) they are the ones the last good version gave.
            if origin not in self.listed:
                saved = load_members(self.host.config.server.storage, name)
                if saved is not None:
                    self.listed[origin] = saved
                    self._apply(origin)
            log.error("catalog %s: serial %d rejected, members kept as they were: %s", name, cat.serial,
                      cat.reason)
            self._show(origin)
            return
        if cat.error_count:
            log.warning("catalog %s: serial %d: %d entries ignored (first: %s)", name, cat.serial,
                        cat.error_count, cat.errors[0])
        self.listed[origin] = cat.members
        self._apply(origin, cat.changed)
        if cat.changed is None or cat.changed:
            # In the writer thread: 0.34 s for 100,000 members (docs/configuration.md).  The
            # dict is this version's own (parse makes a new one), so nothing changes it meanwhile.
            directory, serial, members = self.host.config.server.storage, cat.serial, cat.members
            self._in_order(name, lambda: save_members(directory, name, serial, members))
        # A coo pointing at another catalog may let that one take over members it lists (5.6).
        with_coo = (cat.members.values() if cat.changed is None
                    else [cat.members[t] for t in cat.changed if t in cat.members])
        for target in {m.coo for m in with_coo if m.coo is not None}:
            if target in self.listed and target != origin:
                self._apply(target)

    def _catalog_zc(self, origin: bytes) -> ZoneConfig | None:
        zc = self.host.config.zones.get(to_text(origin))
        return zc if zc is not None and zc.catalog else None

    def _apply(self, origin: bytes, only: frozenset[bytes] | None = None) -> None:
        """Make the served members of catalog *origin* what its last valid version lists.

        *only*: the member zones whose entries changed (an incremental parse); the members
        this catalog could not serve are looked at again too (another catalog may have let
        one go).  None: every member.
        """
        catalog_zc = self._catalog_zc(origin)
        if catalog_zc is None:
            return
        # The members this version adds without a copy: one warning for all (issue 14).
        with self.host.no_copy_summary(f"catalog {catalog_zc.name}: "), self._deleting():
            self._apply_members(origin, catalog_zc, only)
        self._show(origin)

    @contextlib.contextmanager
    def _deleting(self) -> Iterator[None]:
        """The members removed inside the block share one listing of the storage directory
        for their leftovers (storage.ScanOnce): a version removing N of N members listed the
        directory N times.  Each deletion still runs behind its own zone's writes."""
        if self._scan is not None:  # inside another batch: theirs
            yield
            return
        self._scan = storage.ScanOnce(self.host.config.server.storage)
        try:
            yield
        finally:
            self._scan = None

    def _apply_members(self, origin: bytes, catalog_zc: ZoneConfig, only: frozenset[bytes] | None
                       ) -> None:
        listed = self.listed.get(origin, {})
        owned = self.owned.setdefault(origin, {})
        hand = {zc.origin for zc in self.host.config.zones.values()}
        if only is None:
            problems: dict[bytes, str] = {}
            self.problems[origin] = problems
            gone = [o for o in owned if o not in listed]
            todo: Iterable[Member] = listed.values()
        else:
            problems = self.problems.setdefault(origin, {})
            look = sorted(set(only) | set(problems))  # sorted: the same order every run
            for member_origin in look:
                problems.pop(member_origin, None)
            gone = [o for o in look if o in owned and o not in listed]
            todo = [listed[o] for o in look if o in listed]
        for member_origin in gone:
            log.info("catalog %s: member %s removed", catalog_zc.name, to_text(member_origin))
            self._remove(origin, owned.pop(member_origin), delete=True)
        for member in todo:
            if member.origin in hand:
                problems[member.origin] = "configured by hand: the hand configuration is kept"
                continue
            other = self.owner.get(member.origin)
            if other is not None and other != origin:
                old = self.listed.get(other, {}).get(member.origin)
                if old is None or old.coo != origin:
                    problems[member.origin] = f"member of catalog {to_text(other)} (no coo to this one)"
                    continue
                # RFC 9432 5.6: the new owner takes it; its state is reset unless the unique-N
                # label is the same in both catalogs.
                log.info("catalog %s: member %s taken over from %s (coo)", catalog_zc.name,
                         member.name, to_text(other))
                previous = self.owned[other].pop(member.origin)
                reset = previous.unique_id != member.unique_id
                self._remove(other, previous, delete=reset)
                self._add(origin, catalog_zc, member, after_reset=reset)
                continue
            current = owned.get(member.origin)
            if current is None:
                log.info("catalog %s: member %s added", catalog_zc.name, member.name)
                self._add(origin, catalog_zc, member)
            elif current.unique_id != member.unique_id:
                # RFC 9432 5.4: a new unique-N is a removal with all state, then an addition.
                log.info("catalog %s: member %s reset (unique id %s -> %s)", catalog_zc.name, member.name,
                         current.unique_id, member.unique_id)
                self._remove(origin, current, delete=True)
                self._add(origin, catalog_zc, member, after_reset=True)
            else:
                owned[member.origin] = member
                self._reconfigure(origin, catalog_zc, member)

    def _in_order(self, name: str, work: Callable[[], None]) -> None:
        """Run a write of catalog *name*'s member list behind the ones queued before it."""
        d: defer.Deferred[Any] = self.host.store.in_order(name + " members", work)

        def failed(failure: Any) -> None:
            log.error("catalog %s: member list not saved: %s", name, failure.getErrorMessage())

        d.addErrback(failed)

    # -- members

    def _add(self, origin: bytes, catalog_zc: ZoneConfig, member: Member, after_reset: bool = False) -> None:
        zc, problem = member_config(self.host.config, catalog_zc, member)
        if problem:
            self.problems.setdefault(origin, {})[member.origin] = problem
        self.owned.setdefault(origin, {})[member.origin] = member
        self.owner[member.origin] = origin
        generation = self._generation.get(member.origin, 0) + 1
        self._generation[member.origin] = generation
        if not after_reset:
            self._start(origin, zc)
            return
        # The deletion queued by _remove runs behind any write in progress; start once it is done,
        # so the new member never loads the data it is meant to drop.
        d: defer.Deferred[Any] = self.host.store.after(zc.name)

        def start(_: Any) -> None:
            if self._generation.get(member.origin) == generation and self.owner.get(member.origin) == origin:
                self._start(origin, zc)

        d.addBoth(start)

    def _start(self, origin: bytes, zc: ZoneConfig) -> None:
        self.host.start_zone(zc)
        refresher = self.host.refreshers.get(zc.origin)
        if refresher is not None:
            refresher.status.catalog = to_text(origin)

    def _reconfigure(self, origin: bytes, catalog_zc: ZoneConfig, member: Member) -> None:
        zc, problem = member_config(self.host.config, catalog_zc, member)
        if problem:
            self.problems.setdefault(origin, {})[member.origin] = problem
        refresher = self.host.refreshers.get(member.origin)
        if refresher is None or refresher.zc == zc:
            return
        if refresher.zc.static != zc.static:
            self.host.stop_zone(member.origin)
            self._start(origin, zc)
        else:
            refresher.reconfigure(zc)
            zone = refresher.zone
            if zone is not None:  # the clamps apply from the next check; show them now
                timers = Timers.for_zone(zone.soa, zc)
                st = refresher.status
                st.refresh, st.retry, st.expire = timers.refresh, timers.retry, timers.expire

    def _remove(self, origin: bytes, member: Member, delete: bool) -> None:
        if self.owner.get(member.origin) == origin:
            del self.owner[member.origin]
        self._generation[member.origin] = self._generation.get(member.origin, 0) + 1
        self.host.stop_zone(member.origin)
        if delete:
            self.host.store.delete_zone(member.name, self._scan)

    # -- status

    def _show(self, origin: bytes) -> None:
        refresher = self.host.refreshers.get(origin)
        if refresher is None:
            return
        st = refresher.status
        st.catalog_members = len(self.owned.get(origin, {}))
        cat = self.parsed.get(origin)
        notes = []
        if cat is not None and not cat.valid:
            notes.append(f"serial {cat.serial} rejected, members kept: {cat.reason}")
        if cat is not None and cat.error_count:
            notes.append(f"{cat.error_count} entries ignored: " + "; ".join(cat.errors[:5]))
        problems = self.problems.get(origin, {})
        if problems:
            shown = "; ".join(f"{to_text(o)}: {why}" for o, why in list(problems.items())[:5])
            notes.append(f"{len(problems)} members not served from this catalog: {shown}")
        st.catalog_error = " | ".join(notes) or None
