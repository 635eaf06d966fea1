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
