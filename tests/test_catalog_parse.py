"""Unit tests of the RFC 9432 catalog parser (secondns/provision/catalog.py)."""

from __future__ import annotations

from secondns.names import ROOT, from_text
from secondns.provision import catalog
from secondns.store.zonefile import load_zone_text

CATZ = "catalog.invalid."
HEAD = f"""$ORIGIN {CATZ}
@ 0 IN SOA invalid. invalid. 1 3600 600 86400 0
@ 0 IN NS invalid.
"""


def _zone(body: str, version: str | None = 'version 0 IN TXT "2"\n') -> catalog.Catalog:
    text = HEAD + (version or "") + body
    return catalog.parse(load_zone_text(text, from_text(CATZ, ROOT)))


def _names(cat: catalog.Catalog) -> dict[str, str]:
    return {m.name: m.unique_id for m in cat.members.values()}


def test_members_groups_and_coo() -> None:
    cat = _zone("""
a1.zones 0 IN PTR example.com.
group.a1.zones 0 IN TXT "gold"
b2.zones 0 IN PTR Example.NET.
coo.b2.zones 0 IN PTR other.invalid.
""")
    assert cat.valid and cat.error_count == 0
    assert _names(cat) == {"example.com.": "a1", "example.net.": "b2"}
    com = cat.members[from_text("example.com.", ROOT)]
    net = cat.members[from_text("example.net.", ROOT)]
    assert com.group == "gold" and com.coo is None
    assert net.group is None and net.coo == from_text("other.invalid.", ROOT)


def test_version_missing_or_wrong_rejects_the_catalog() -> None:
    body = "a1.zones 0 IN PTR example.com.\n"
    for version in (None, 'version 0 IN TXT "1"\n', 'version 0 IN TXT "3"\n',
                    'version 0 IN TXT "2" "2"\n', 'version 0 IN TXT "2"\nversion 0 IN TXT "1"\n'):
        cat = _zone(body, version)
        assert not cat.valid, version
        assert cat.members == {} and cat.reason, version


def test_two_ptrs_in_one_member_node_ignore_that_member() -> None:
    cat = _zone("""
a1.zones 0 IN PTR example.com.
a1.zones 0 IN PTR example.org.
b2.zones 0 IN PTR example.net.
""")
    assert _names(cat) == {"example.net.": "b2"}
    assert cat.error_count == 1 and "2 PTR records" in cat.errors[0]


def test_one_zone_under_two_unique_ids_keeps_one() -> None:
    body = """
zz.zones 0 IN PTR example.com.
aa.zones 0 IN PTR example.com.
"""
    cat = _zone(body)
    assert _names(cat) == {"example.com.": "aa"} and cat.error_count == 1
    prev = {from_text("example.com.", ROOT): catalog.Member(from_text("example.com.", ROOT), "zz")}
    text = HEAD + 'version 0 IN TXT "2"\n' + body
    again = catalog.parse(load_zone_text(text, from_text(CATZ, ROOT)), prev)
    assert _names(again) == {"example.com.": "zz"}


def test_junk_is_ignored_and_bad_properties_reported() -> None:
    cat = _zone("""
a1.zones 0 IN PTR example.com.
a1.zones 0 IN TXT "not a property"
group.a1.zones 0 IN TXT "one" "two"
c3.zones 0 IN TXT "no ptr here"
deep.ext.a1.zones 0 IN TXT "unknown"
ext 0 IN TXT "custom extension"
zones 0 IN TXT "junk"
""")
    assert _names(cat) == {"example.com.": "a1"}
    assert cat.members[from_text("example.com.", ROOT)].group is None
    assert cat.error_count == 2
    assert any("group property" in e for e in cat.errors)
    assert any("c3" in e and "no PTR" in e for e in cat.errors)


def test_many_members_parse_in_bounded_time() -> None:
    import time

    lines = "".join(f"m{i}.zones 0 IN PTR z{i}.example.\ngroup.m{i}.zones 0 IN TXT \"g\"\n"
                    for i in range(20_000))
    zone = load_zone_text(HEAD + 'version 0 IN TXT "2"\n' + lines, from_text(CATZ, ROOT))
    started = time.process_time()
    cat = catalog.parse(zone)
    assert len(cat.members) == 20_000
    assert time.process_time() - started < 5.0  # generous: linear, ~0.1 s here


def _ptr(owner: str, target: str) -> tuple[bytes, int, int, bytes]:
    return from_text(owner, ROOT), 12, 0, from_text(target, ROOT)


def _txt(owner: str, text: str) -> tuple[bytes, int, int, bytes]:
    raw = text.encode()
    return from_text(owner, ROOT), 16, 0, bytes([len(raw)]) + raw


def test_an_ixfr_reparses_only_what_it_touched_and_agrees_with_a_whole_parse(monkeypatch) -> None:
    """Random IXFRs on a catalog (members added, removed, re-pointed, regrouped, coo, clashes,
    junk nodes): the incremental parse gives what a whole parse of each version gives, and
    never walks the whole zone."""
    import random

    from secondns.diff import VersionStep, apply_steps, invalidated_names

    rng = random.Random(14)
    body = "".join(f"m{i}.zones 0 IN PTR z{i}.example.\n" for i in range(40))
    zone = load_zone_text(HEAD + 'version 0 IN TXT "2"\n' + body, from_text(CATZ, ROOT))
    cat = catalog.parse(zone)
    whole = catalog._parse_whole
    owners = [f"m{i}.zones.{CATZ}" for i in range(60)]
    for serial in range(2, 60):
        present = {(o, t, ttl, rd) for o, t, ttl, rd in zone.records() if t != 6}
        deleted, added = [], []
        for _ in range(rng.randint(1, 4)):
            owner = rng.choice(owners)
            kind = rng.choice(("ptr", "group", "coo", "junk", "delete"))
            if kind == "delete":
                mine = [r for r in present if r[0] == from_text(owner, ROOT) and r not in deleted]
                deleted.extend(mine[:1])
                continue
            rec = {"ptr": _ptr(owner, f"z{rng.randrange(50)}.example."),
                   "group": _txt("group." + owner, rng.choice(("gold", "silver"))),
                   "coo": _ptr("coo." + owner, "other.invalid."),
                   "junk": _txt(owner, "not a ptr")}[kind]
            if rec not in present and rec not in added:
                added.append(rec)
        soa = zone.soa
        old_soa = (zone.origin, 6, soa.ttl, soa.rdata)
        new_rdata = soa.rdata[:-20] + serial.to_bytes(4, "big") + soa.rdata[-16:]
        step = VersionStep(zone.serial, serial, [old_soa, *deleted], [(zone.origin, 6, soa.ttl, new_rdata),
                                                                       *added])
        new = apply_steps(zone, [step])
        changed = invalidated_names(zone, new, [step])
        assert changed is not None

        def refuse(*args: object) -> None:
            raise AssertionError("an IXFR walked the whole catalog")

        monkeypatch.setattr(catalog, "_parse_whole", refuse)
        got = catalog.parse(new, cat.members, cat, changed)
        monkeypatch.setattr(catalog, "_parse_whole", whole)
        want = catalog.parse(new, cat.members)
        assert got.members == want.members, serial
        assert sorted(got.errors) == sorted(want.errors) and got.error_count == want.error_count, serial
        assert got.changed == frozenset(t for t in set(cat.members) | set(want.members)
                                        if cat.members.get(t) != want.members.get(t)), serial
        zone, cat = new, got
    assert catalog.parse(zone, None, cat, frozenset({b"\x07version" + zone.origin})).changed is None
