"""Catalog reconciliation in the Application, without sockets: static catalogs on disk, new
versions swapped in as a refresher would, and a fake store that records deletions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet import defer, task

from secondns.app import Application
from secondns.config import load_config
from secondns.names import ROOT, from_text
from secondns.store.zonefile import load_zone_text

MEMBER = """$TTL 300
@ IN SOA ns1 host 1 3600 600 86400 300
  IN NS ns1
ns1 IN A 192.0.2.1
"""


def catalog(name: str, serial: int, body: str, version: str = "2") -> str:
    return f"""$ORIGIN {name}.
@ 0 IN SOA invalid. invalid. {serial} 3600 600 86400 0
@ 0 IN NS invalid.
version 0 IN TXT "{version}"
{body}
"""


class FakeStore:
    def __init__(self) -> None:
        self.deleted: list[str] = []

    def delete_zone(self, name: str, scan: Any = None) -> defer.Deferred[Any]:
        self.deleted.append(name)
        return defer.succeed(None)

    def after(self, name: str) -> defer.Deferred[Any]:
        return defer.succeed(None)

    def in_order(self, key: str, work: Any) -> defer.Deferred[Any]:
        return defer.maybeDeferred(work)

    def save_zone(self, *args: Any) -> None:
        return None

    def save_meta(self, *args: Any) -> None:
        return None

    def save_diff(self, *args: Any) -> None:
        return None


def _app(tmp_path: Path, zones: str, files: dict[str, str]) -> tuple[Application, FakeStore]:
    for name, text in files.items():
        (tmp_path / f"{name}.zone").write_text(text)
    conf = tmp_path / "secondns.yaml"
    conf.write_text(f"server: {{storage: ., http: null}}\nzones:\n{zones}")
    app = Application(load_config(conf), task.Clock())
    store = FakeStore()
    app.store = store
    for zc in app.config.zones.values():
        app.start_zone(zc)
    return app, store


def _swap(app: Application, name: str, text: str) -> None:
    origin = from_text(name + ".", ROOT)
    app.catalogs.registry.swap(origin, load_zone_text(text, origin))


def _served(app: Application, name: str) -> bool:
    entry = app.registry.get(from_text(name + ".", ROOT))
    return entry is not None and entry.serving


def test_catalog_is_not_served_and_broken_version_keeps_members(tmp_path: Path) -> None:
    app, store = _app(tmp_path, "  cat1.invalid: {catalog: true}\n", {
        "cat1.invalid": catalog("cat1.invalid", 1, "a.zones 0 IN PTR m.example."),
        "m.example": MEMBER})
    assert _served(app, "m.example")
    assert app.registry.get(from_text("cat1.invalid.", ROOT)) is None  # REFUSED: not ours to serve
    _swap(app, "cat1.invalid", catalog("cat1.invalid", 2, "", version="3"))
    assert _served(app, "m.example") and store.deleted == []
    st = app.refreshers[from_text("cat1.invalid.", ROOT)].status
    assert st.catalog_members == 1 and "rejected" in (st.catalog_error or "")
    _swap(app, "cat1.invalid", catalog("cat1.invalid", 3, ""))
    assert not _served(app, "m.example") and store.deleted == ["m.example."]


def test_coo_hands_a_member_to_the_other_catalog(tmp_path: Path) -> None:
    app, store = _app(tmp_path, "  cat1.invalid: {catalog: true}\n  cat2.invalid: {catalog: true}\n", {
        "cat1.invalid": catalog("cat1.invalid", 1, "a.zones 0 IN PTR m.example."),
        "cat2.invalid": catalog("cat2.invalid", 1, "b.zones 0 IN PTR m.example."),
        "m.example": MEMBER})
    m = from_text("m.example.", ROOT)
    cat1, cat2 = from_text("cat1.invalid.", ROOT), from_text("cat2.invalid.", ROOT)
    assert app.catalogs.owner[m] == cat1  # first come; cat2's entry is a clash, not a takeover
    assert "no coo" in (app.refreshers[cat2].status.catalog_error or "")
    _swap(app, "cat1.invalid", catalog("cat1.invalid", 2,
                                       "a.zones 0 IN PTR m.example.\ncoo.a.zones 0 IN PTR cat2.invalid."))
    assert app.catalogs.owner[m] == cat2
    assert store.deleted == ["m.example."]  # RFC 9432 5.6: unique ids differ, so the state is reset
    assert app.refreshers[m].status.catalog == "cat2.invalid."


def test_hand_configuration_wins_and_takes_over_on_reload(tmp_path: Path) -> None:
    app, store = _app(tmp_path, "  cat1.invalid: {catalog: true}\n", {
        "cat1.invalid": catalog("cat1.invalid", 1, "a.zones 0 IN PTR m.example."),
        "m.example": MEMBER})
    m = from_text("m.example.", ROOT)
    assert app.refreshers[m].status.catalog == "cat1.invalid."
    conf = tmp_path / "secondns.yaml"
    conf.write_text(conf.read_text() + "  m.example: {refresh-max: 55}\n")
    code, _ = app.reload()
    assert code == 200 and _served(app, "m.example")
    assert app.refreshers[m].status.catalog is None and app.refreshers[m].zc.refresh_max == 55
    _swap(app, "cat1.invalid", catalog("cat1.invalid", 2, ""))  # the catalog drops it: kept (5.3)
    assert _served(app, "m.example") and store.deleted == []


def test_catalog_groups_are_checked_like_zones_with_file_and_line() -> None:
    from secondns.config import InvalidConfig, parse_config

    text = """defaults: {refresh-min: 20}
catalog-groups:
  gold: {refresh-max: 300, transfer: axfr}
  bad:
    refresh-max: 10
    catalog: true
    tranfser: axfr
zones:
  cat.invalid: {catalog: yes please}
"""
    try:
        parse_config(text, "c.yaml")
    except InvalidConfig as exc:
        problems = exc.problems
    else:
        raise AssertionError("accepted")
    assert problems == [
        "c.yaml:5: catalog-groups.bad.refresh-max: refresh-min (20) is greater than refresh-max (10)",
        "c.yaml:6: catalog-groups.bad: unknown key 'catalog'",
        "c.yaml:7: catalog-groups.bad: unknown key 'tranfser' (did you mean 'transfer'?)",
        "c.yaml:9: zones.cat.invalid.catalog: expected true or false, got string 'yes please'",
    ], problems
    good = parse_config(text.split("  bad:")[0] + "zones:\n  cat.invalid: {catalog: true}\n")
    assert good.catalog_groups == {"gold": {"refresh_max": 300, "transfer": "axfr"}}
    assert good.defaults == {"refresh_min": 20} and good.zones["cat.invalid."].catalog


def test_restart_on_a_rejected_catalog_version_serves_the_last_good_members(tmp_path: Path) -> None:
    app, _ = _app(tmp_path, "  cat1.invalid: {catalog: true}\n", {
        "cat1.invalid": catalog("cat1.invalid", 1, "a.zones 0 IN PTR m.example.\n"
                                "b.zones 0 IN PTR n.example.\ngroup.b.zones 0 IN TXT \"g\""),
        "m.example": MEMBER, "n.example": MEMBER})
    assert _served(app, "m.example") and _served(app, "n.example")
    # The primary's next version is rejected, and it is what the copy on disk now holds.
    (tmp_path / "cat1.invalid.zone").write_text(catalog("cat1.invalid", 2, "", version="1"))
    again, store = _app(tmp_path, "  cat1.invalid: {catalog: true}\n", {})
    assert _served(again, "m.example") and _served(again, "n.example") and store.deleted == []
    assert again.catalogs.owned[from_text("cat1.invalid.", ROOT)][from_text("n.example.", ROOT)].group == "g"


def test_a_catalog_gaining_primaries_keeps_its_members(tmp_path: Path) -> None:
    app, store = _app(tmp_path, "  cat1.invalid: {catalog: true}\n", {
        "cat1.invalid": catalog("cat1.invalid", 1, "a.zones 0 IN PTR m.example."),
        "m.example": MEMBER})
    conf = tmp_path / "secondns.yaml"
    conf.write_text(conf.read_text().replace("{catalog: true}", "{catalog: true, primaries: [192.0.2.1]}"))
    code, _ = app.reload()
    assert code == 200 and _served(app, "m.example") and store.deleted == []
    m = from_text("m.example.", ROOT)
    assert [str(p) for p in app.refreshers[m].zc.primaries] == ["192.0.2.1:53"]  # inherited anew


def _ixfr(app: Application, name: str, text: str) -> None:
    """Swap in a new catalog version as an IXFR would: with the names it changed."""
    from secondns.diff import replaced_names

    origin = from_text(name + ".", ROOT)
    entry = app.catalogs.registry.get(origin)
    assert entry is not None and entry.snapshot is not None
    new = load_zone_text(text, origin)
    changed = replaced_names(entry.snapshot, new)
    assert changed is not None
    app.catalogs.registry.swap(origin, new, changed)


def test_catalog_ixfrs_act_on_the_members_they_touch(tmp_path: Path, monkeypatch: Any) -> None:
    """Issue 14 leftover: an IXFR of a catalog re-reads only the member nodes it touched (never
    the whole catalog), and members are added, removed, regrouped and reset as with a whole
    parse; a member another catalog let go is taken at this one's next version."""
    from secondns.provision import catalog as catalog_module

    groups = "catalog-groups: {gold: {refresh-max: 300}}\n"
    app, store = _app(tmp_path, "  cat1.invalid: {catalog: true}\n  cat2.invalid: {catalog: true}\n"
                      + groups, {
        "cat1.invalid": catalog("cat1.invalid", 1,
                                "a.zones 0 IN PTR m.example.\nb.zones 0 IN PTR n.example."),
        "cat2.invalid": catalog("cat2.invalid", 1, "c.zones 0 IN PTR n.example."),
        **{f"{z}.example": MEMBER for z in "mnpq"}})
    cat1, cat2 = from_text("cat1.invalid.", ROOT), from_text("cat2.invalid.", ROOT)
    m, n = from_text("m.example.", ROOT), from_text("n.example.", ROOT)
    assert app.catalogs.owner[n] == cat1 and "no coo" in (app.refreshers[cat2].status.catalog_error or "")

    def refuse(*args: object) -> None:
        raise AssertionError("an IXFR re-read the whole catalog")

    monkeypatch.setattr(catalog_module, "_parse_whole", refuse)
    # n leaves cat1, p joins, m gets a group.
    _ixfr(app, "cat1.invalid", catalog("cat1.invalid", 2, "a.zones 0 IN PTR m.example.\n"
                                       "group.a.zones 0 IN TXT gold\nd.zones 0 IN PTR p.example."))
    assert not _served(app, "n.example") and _served(app, "p.example") and store.deleted == ["n.example."]
    assert app.catalogs.owned[cat1][m].group == "gold" and app.refreshers[m].zc.refresh_max == 300
    # cat2's next version (another member) picks up n, which it listed all along.
    _ixfr(app, "cat2.invalid", catalog("cat2.invalid", 2, "c.zones 0 IN PTR n.example.\n"
                                       "e.zones 0 IN PTR q.example."))
    assert app.catalogs.owner[n] == cat2 and _served(app, "n.example") and _served(app, "q.example")
    assert app.refreshers[cat2].status.catalog_error is None
    # A new unique id for m is a reset (RFC 9432 5.4): its copy is deleted, then it is served anew.
    _ixfr(app, "cat1.invalid", catalog("cat1.invalid", 3, "a2.zones 0 IN PTR m.example.\n"
                                       "d.zones 0 IN PTR p.example."))
    assert store.deleted == ["n.example.", "m.example."] and app.catalogs.owned[cat1][m].unique_id == "a2"
    assert app.catalogs.owned[cat1][m].group is None and _served(app, "m.example")
    assert app.refreshers[cat1].status.catalog_members == 2


def test_members_a_catalog_transfer_adds_without_a_copy_are_reported_in_one_line(
        tmp_path: Path, caplog: Any) -> None:
    """Issue 14: a catalog's first transfer adding 10k members logged 10k identical 'no copy on
    disk yet' warnings; one line with the count and the first names, each zone at debug."""
    import logging
    import re

    app, _ = _app(tmp_path, "  cat1.invalid: {catalog: true, primaries: [192.0.2.1]}\n",
                  {"m0.example": MEMBER})
    caplog.clear()  # the catalog's own line: it has no copy either
    caplog.set_level(logging.DEBUG, logger="secondns")
    body = "\n".join(f"m{i}.zones 0 IN PTR m{i}.example." for i in range(40))
    _swap(app, "cat1.invalid", catalog("cat1.invalid", 1, body))  # as its first transfer would
    assert all(_served(app, f"m{i}.example") == (i == 0) for i in range(40))  # m0 from its copy
    warnings = [r.getMessage() for r in caplog.records
                if r.levelno == logging.WARNING and "no copy on disk" in r.getMessage()]
    assert len(warnings) == 1, warnings
    shown = re.fullmatch(r"catalog cat1\.invalid\.: 39 zones have no copy on disk yet \((.*), \.\.\.\); "
                         r"SERVFAIL for each until its first transfer", warnings[0])
    assert shown is not None, warnings
    names = shown[1].split(", ")
    assert len(names) == 5 and set(names) <= {f"m{i}.example." for i in range(1, 40)}
    debug = [r for r in caplog.records if r.levelno == logging.DEBUG and "no copy on disk" in r.getMessage()]
    assert len(debug) == 39
    caplog.clear()  # a later version adding one member: the usual line, and no summary left open
    _swap(app, "cat1.invalid", catalog("cat1.invalid", 2, body + "\nx.zones 0 IN PTR x.example."))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["catalog cat1.invalid.: zone x.example.: no copy on disk yet; SERVFAIL until "
                        "the first transfer"], warnings
    assert app._no_copy is None


def test_a_version_removing_many_members_lists_the_storage_directory_once(
        tmp_path: Path, monkeypatch: Any) -> None:
    """Issue 14: each removed member's deletion listed the whole storage directory for its
    leftovers (storage.clean_temp_files), so a version removing N members made N listings of
    the directory (quadratic).  Counted, not timed."""
    import os

    from secondns.store import storage

    n = 60
    for i in range(n):
        (tmp_path / f"m{i}.example.zone").write_text(MEMBER)
    (tmp_path / ".m7.example.zone.tmp-0123456789abcdef").write_text("partial")  # a crash's
    (tmp_path / ".keep.example.zone.tmp-0123456789abcdef").write_text("partial")  # not a member
    body = "\n".join(f"m{i}.zones 0 IN PTR m{i}.example." for i in range(n))
    (tmp_path / "cat1.invalid.zone").write_text(catalog("cat1.invalid", 1, body))
    conf = tmp_path / "secondns.yaml"
    conf.write_text("server: {storage: ., http: null}\nzones:\n  cat1.invalid: {catalog: true}\n")
    app = Application(load_config(conf), task.Clock())
    # The writer thread inline, so the deletions are done when the swap returns.
    monkeypatch.setattr("secondns.app.threads.deferToThread",
                        lambda f, *a, **k: defer.maybeDeferred(f, *a, **k))
    for zc in app.config.zones.values():
        app.start_zone(zc)
    assert all(_served(app, f"m{i}.example") for i in range(n))
    scans: list[Any] = []
    real = os.scandir

    def counting(path: Any = ".") -> Any:
        scans.append(path)
        return real(path)

    monkeypatch.setattr(storage.os, "scandir", counting)
    _swap(app, "cat1.invalid", catalog("cat1.invalid", 2, ""))
    assert not any(_served(app, f"m{i}.example") for i in range(n))
    assert len(scans) == 1, len(scans)
    left = sorted(p.name for p in tmp_path.iterdir() if "example" in p.name)
    assert left == [".keep.example.zone.tmp-0123456789abcdef"], left  # m7's leftover gone too
