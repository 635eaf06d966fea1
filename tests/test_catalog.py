"""Catalog zones (RFC 9432) live: a hand-written catalog served by BIND 9, consumed by secondns.

Every change reaches secondns as BIND sends it after ``rndc reload`` with
``ixfr-from-differences``: an IXFR of the catalog.  Each step is checked from outside, with
dnspython queries against secondns (member served, removed member REFUSED, the catalog itself
REFUSED, new data after a reset) and with its /status.
"""

from __future__ import annotations

import urllib.request
from pathlib import Path

import dns.name
import dns.rcode
import dns.rdatatype
import pytest
from peers import (
    Bind,
    Knot,
    Secondns,
    TsigKey,
    ZoneSpec,
    free_port,
    query,
    soa_serial,
    transfer,
    wait_for,
    zone_status,
)

pytestmark = pytest.mark.integration

CATZ = "catalog.invalid"
WAIT = 20.0
# A small catalog: any change is a large share of it, and must still go as an IXFR.
KEY = TsigKey.generate("catalog-key")
IXFR = ["ixfr-from-differences yes;", "max-ixfr-ratio unlimited;"]


def catalog_text(serial: int, members: str, version: str = "2") -> str:
    return f"""$ORIGIN {CATZ}.
$TTL 0
@ IN SOA invalid. invalid. {serial} 3600 600 86400 0
@ IN NS invalid.
version IN TXT "{version}"
{members}
"""


def member_text(origin: str, serial: int, extra: str = "") -> str:
    return f"""$ORIGIN {origin}.
$TTL 300
@ IN SOA ns1.{origin}. hostmaster.{origin}. {serial} 3600 600 86400 300
@ IN NS ns1.{origin}.
ns1 IN A 192.0.2.1
www IN A 192.0.2.10
{extra}
"""


def rcode(port: int, name: str, qtype: str = "SOA") -> int:
    return query(port, name, qtype).rcode()


def serves(port: int, name: str) -> bool:
    reply = query(port, name, "SOA")
    return reply.rcode() == dns.rcode.NOERROR and bool(reply.answer)


def a_records(port: int, name: str) -> set[str]:
    reply = query(port, name, "A")
    return {rd.to_text() for rrset in reply.answer if rrset.rdtype == dns.rdatatype.A for rd in rrset}


def test_bind_catalog_members_added_removed_regrouped_reset_and_restarted(tmp_path: Path) -> None:
    sec_port = free_port()
    members = ("example.com", "example.net", "example.org")
    v1 = "a1.zones IN PTR example.com.\nb2.zones IN PTR example.net.\ngroup.b2.zones IN TXT \"gold\""
    zones = [ZoneSpec(CATZ, catalog_text(1, v1), options=IXFR, notify=[sec_port])]
    zones += [ZoneSpec(m, member_text(m, 1), notify=[sec_port]) for m in members]
    with Bind(tmp_path / "bind", zones) as bind:
        catalog = {f"{CATZ}.": {"catalog": True, "primaries": [f"127.0.0.1:{bind.port}"]}}
        sec = Secondns(tmp_path / "sec", catalog, port=sec_port, ready_zones=[])
        sec.config["catalog-groups"] = {"gold": {"refresh-max": 77}}
        with sec:
            port = sec.port
            wait_for("members served", lambda: serves(port, "example.com") and serves(port, "example.net"),
                     WAIT)
            assert rcode(port, "example.org") == dns.rcode.REFUSED  # not (yet) a member
            assert rcode(port, CATZ) == dns.rcode.REFUSED  # the catalog itself is not served
            assert rcode(port, f"version.{CATZ}", "TXT") == dns.rcode.REFUSED
            cat = zone_status(sec, CATZ)
            assert cat["catalog_zone"]["members"] == 2 and cat["serial"] == 1
            net = zone_status(sec, "example.net")
            assert net["catalog"] == f"{CATZ}." and net["timers"]["refresh"] == 77  # group gold
            assert zone_status(sec, "example.com")["timers"]["refresh"] == 3600  # no group
            with urllib.request.urlopen(sec.http_url("/metrics"), timeout=5) as resp:
                metrics = resp.read().decode()
            assert f'secondns_catalog_members{{catalog="{CATZ}."}} 2.0' in metrics
            assert sec.zone_path("example.net").exists()

            # v2: example.org added, example.net removed, example.com re-grouped into gold.
            v2 = ("a1.zones IN PTR example.com.\ngroup.a1.zones IN TXT \"gold\"\n"
                  "c3.zones IN PTR example.org.")
            bind.write_zone(CATZ, catalog_text(2, v2))
            bind.reload(CATZ)
            wait_for("example.org served", lambda: serves(port, "example.org"), WAIT)
            wait_for("example.net gone", lambda: rcode(port, "example.net") == dns.rcode.REFUSED, WAIT)
            cat = zone_status(sec, CATZ)
            assert cat["last_transfer"]["type"] == "ixfr" and cat["serial"] == 2
            assert cat["catalog_zone"]["members"] == 2
            wait_for("example.net copy deleted", lambda: not sec.zone_path("example.net").exists(), WAIT)
            wait_for("example.com regrouped",
                     lambda: zone_status(sec, "example.com")["timers"]["refresh"] == 77, WAIT)

            # v3: example.com reset (new unique id). BIND's copy changed under the same serial,
            # so only a reset (data dropped, transferred anew) can show the new record.
            bind.write_zone("example.com", member_text("example.com", 1, "new IN A 192.0.2.99"))
            bind.reload("example.com")
            assert a_records(port, "new.example.com") == set()
            v3 = ("a9.zones IN PTR example.com.\ngroup.a9.zones IN TXT \"gold\"\n"
                  "c3.zones IN PTR example.org.")
            bind.write_zone(CATZ, catalog_text(3, v3))
            bind.reload(CATZ)
            wait_for("example.com reset and re-transferred",
                     lambda: a_records(port, "new.example.com") == {"192.0.2.99"}, WAIT)
            assert zone_status(sec, "example.com")["last_transfer"]["type"] == "axfr"

            # v4: an unsupported schema version is not processed: the members stay served.
            bind.write_zone(CATZ, catalog_text(4, "", version="3"))
            bind.reload(CATZ)
            wait_for("catalog serial 4 seen", lambda: zone_status(sec, CATZ)["serial"] == 4, WAIT)
            cat = zone_status(sec, CATZ)
            assert "rejected" in (cat["catalog_zone"]["problems"] or "")
            assert cat["catalog_zone"]["members"] == 2
            assert serves(port, "example.com") and serves(port, "example.org")

            # v5 back to a valid catalog listing both: nothing reset, nothing lost.
            bind.write_zone(CATZ, catalog_text(5, v3))
            bind.reload(CATZ)
            wait_for("catalog serial 5", lambda: zone_status(sec, CATZ)["serial"] == 5, WAIT)
            assert zone_status(sec, CATZ)["catalog_zone"]["problems"] is None
        # Restart with the primary down: members come from their copies at once.
    down = {f"{CATZ}.": {"catalog": True, "primaries": [f"127.0.0.1:{free_port()}"]}}
    sec = Secondns(tmp_path / "sec", down, port=sec_port, ready_zones=["example.com", "example.org"])
    sec.config["catalog-groups"] = {"gold": {"refresh-max": 77}}
    with sec:
        assert serves(sec.port, "example.com") and serves(sec.port, "example.org")
        assert a_records(sec.port, "new.example.com") == {"192.0.2.99"}
        assert rcode(sec.port, "example.net") == dns.rcode.REFUSED
        assert zone_status(sec, "example.org")["catalog"] == f"{CATZ}."
        assert zone_status(sec, CATZ)["catalog_zone"]["members"] == 2


class CatalogKnot(Knot):
    """Knot answers no queries for a catalog it generates: wait for the member zones only."""

    def _ready_zones(self) -> list[str]:
        return [z for z in super()._ready_zones() if z != f"{CATZ}."]


def knot_member(name: str, group: str | None, notify: int) -> ZoneSpec:
    options = ["catalog-role: member", f"catalog-zone: {CATZ}."]
    if group is not None:
        options.append(f"catalog-group: {group}")
    return ZoneSpec(name, member_text(name, 1), options=options, notify=[notify], key=KEY.name)


def test_knot_generated_catalog(tmp_path: Path) -> None:
    """Knot 3.2 ``catalog-role: generate``: members follow Knot's configuration; a member also
    configured by hand in secondns keeps the hand settings and is not the catalog's."""
    sec_port = free_port()
    catalog = ZoneSpec(CATZ, catalog_text(1, ""), options=["catalog-role: generate"], notify=[sec_port],
                       key=KEY.name)
    zones = [catalog, knot_member("example.com", "gold", sec_port),
             knot_member("example.net", None, sec_port)]
    # Knot answers queries for a catalog it generates only over TCP to a client its ACL names
    # (membership.CatalogClient): the key makes secondns such a client.
    with CatalogKnot(tmp_path / "knot", zones, keys=[KEY]) as knot:
        primary = [f"127.0.0.1:{knot.port}"]
        sec = Secondns(tmp_path / "sec", {
            f"{CATZ}.": {"catalog": True, "primaries": primary, "key": KEY.name},
            "example.net.": {"primaries": primary, "refresh-max": 55, "key": KEY.name},
        }, port=sec_port, ready_zones=[])
        sec.config["keys"] = {KEY.name: {"algorithm": KEY.algorithm, "secret": KEY.secret}}
        sec.config["catalog-groups"] = {"gold": {"refresh-max": 77}, "silver": {"refresh-max": 66}}
        with sec:
            port = sec.port
            wait_for("members served", lambda: serves(port, "example.com") and serves(port, "example.net"),
                     WAIT)
            assert rcode(port, CATZ) == dns.rcode.REFUSED
            com = zone_status(sec, "example.com")
            assert com["catalog"] == f"{CATZ}." and com["timers"]["refresh"] == 77
            net = zone_status(sec, "example.net")
            assert "catalog" not in net and net["timers"]["refresh"] == 55  # the hand configuration
            cat = zone_status(sec, CATZ)
            assert cat["catalog_zone"]["members"] == 1
            assert "example.net." in cat["catalog_zone"]["problems"]
            serial = cat["serial"]

            # Knot's configuration changes: example.org added (group silver), example.com removed.
            org = knot_member("example.org", "silver", sec_port)
            knot.zones[:] = [catalog, org, knot_member("example.net", None, sec_port)]
            knot.zone_path("example.org").write_text(member_text("example.org", 1))
            knot._write_config()
            knot.knotc("reload")
            wait_for("example.org served", lambda: serves(port, "example.org"), WAIT)
            wait_for("example.com gone", lambda: rcode(port, "example.com") == dns.rcode.REFUSED, WAIT)
            assert zone_status(sec, "example.org")["timers"]["refresh"] == 66
            cat = zone_status(sec, CATZ)
            assert cat["serial"] != serial and cat["catalog_zone"]["members"] == 1
            assert cat["last_transfer"]["type"] == "ixfr"  # Knot journals its generated catalog
            wait_for("example.com copy deleted", lambda: not sec.zone_path("example.com").exists(), WAIT)
            assert serves(port, "example.net")  # hand-configured: untouched

            # Re-grouped: example.org moves to gold.
            knot.zones[1] = knot_member("example.org", "gold", sec_port)
            knot._write_config()
            knot.knotc("reload")
            wait_for("example.org regrouped",
                     lambda: zone_status(sec, "example.org")["timers"]["refresh"] == 77, WAIT)


def knot_catalog_serial(knot: Knot) -> int | None:
    """Serial of the catalog Knot generates (it answers only over TCP, signed: see CatalogClient)."""
    reply = query(knot.port, CATZ, "SOA", tcp=True, key=KEY)
    return next((int(rrset[0].serial) for rrset in reply.answer if rrset.rdtype == dns.rdatatype.SOA),
                None)


def knot_member_ids(knot: Knot) -> dict[str, str]:
    """Member zone -> the unique-N label (RFC 9432 4.1) of the catalog Knot generates now."""
    origin = dns.name.from_text(CATZ)
    zones = dns.name.from_text("zones", origin)
    ids = {}
    for message in transfer(knot.port, CATZ, key=KEY):  # dnspython relativizes the names
        for rrset in message.answer:
            owner = rrset.name.derelativize(origin)
            if rrset.rdtype == dns.rdatatype.PTR and owner.parent() == zones:
                ids[rrset[0].target.derelativize(origin).to_text().rstrip(".")] = owner.labels[0].decode()
    return ids


def knot_consumer(workdir: Path, knot: Knot, port: int, ready: list[str]) -> Secondns:
    """secondns consuming the catalog Knot generates, signed with KEY (see CatalogClient)."""
    sec = Secondns(workdir, {f"{CATZ}.": {"catalog": True, "primaries": [f"127.0.0.1:{knot.port}"],
                                          "key": KEY.name}}, port=port, ready_zones=ready)
    sec.config["keys"] = {KEY.name: {"algorithm": KEY.algorithm, "secret": KEY.secret}}
    return sec


def test_knot_member_reset_while_the_consumer_was_down(tmp_path: Path) -> None:
    """Knot 3.2 salts the unique ids it generates: a member removed from its configuration and
    added back while secondns was stopped comes back under a new unique-N.  secondns starts from
    its copies (the catalog's and the member's), then sees the new id in the catalog's transfer:
    that is a reset (RFC 9432 5.4), the member's data dropped and transferred anew.  Knot's copy
    of the member changed meanwhile under the same serial, so only a reset serves the new record;
    the other member keeps its id and is left alone."""
    sec_port = free_port()
    catalog = ZoneSpec(CATZ, catalog_text(1, ""), options=["catalog-role: generate"], notify=[sec_port],
                       key=KEY.name)
    com, net = knot_member("example.com", None, sec_port), knot_member("example.net", None, sec_port)
    with CatalogKnot(tmp_path / "knot", [catalog, com, net], keys=[KEY]) as knot:
        with knot_consumer(tmp_path / "sec", knot, sec_port, []) as sec:
            wait_for("members served",
                     lambda: serves(sec_port, "example.com") and serves(sec_port, "example.net"), WAIT)
            wait_for("member copies saved",
                     lambda: sec.zone_path("example.com").exists() and sec.zone_path("example.net").exists(),
                     WAIT)
            before = knot_member_ids(knot)
            assert set(before) == {"example.com", "example.net"}
            assert zone_status(sec, "example.com")["last_transfer"]["type"] == "axfr"

        # secondns is down: example.com leaves Knot's configuration, then comes back with new data
        # under the same serial.
        serial = knot_catalog_serial(knot)
        knot.zones[:] = [catalog, net]
        knot._write_config()
        knot.knotc("reload")
        wait_for("example.com out of Knot's catalog", lambda: "example.com" not in knot_member_ids(knot),
                 WAIT)
        assert knot_catalog_serial(knot) != serial
        knot.zones[:] = [catalog, com, net]
        knot.zone_path("example.com").write_text(member_text("example.com", 1, "new IN A 192.0.2.99"))
        knot._write_config()
        knot.knotc("reload")
        wait_for("example.com back in Knot's catalog", lambda: "example.com" in knot_member_ids(knot), WAIT)
        after = knot_member_ids(knot)
        assert after["example.com"] != before["example.com"]  # Knot's salt: a new unique-N
        assert after["example.net"] == before["example.net"]
        wait_for("Knot serves the new data",
                 lambda: a_records(knot.port, "new.example.com") == {"192.0.2.99"}, WAIT)
        assert soa_serial(knot.port, "example.com") == 1  # the same serial: no refresh would see it

        # secondns again, from its copies first, then the catalog's new version: a reset.
        with knot_consumer(tmp_path / "sec", knot, sec_port, ["example.com", "example.net"]) as sec:
            port = sec.port
            wait_for("example.com reset and re-transferred",
                     lambda: a_records(port, "new.example.com") == {"192.0.2.99"}, WAIT)
            assert zone_status(sec, "example.com")["last_transfer"]["type"] == "axfr"
            assert zone_status(sec, "example.com")["catalog"] == f"{CATZ}."
            wait_for("catalog at Knot's serial",
                     lambda: zone_status(sec, CATZ)["serial"] == knot_catalog_serial(knot), WAIT)
            log = sec.log_text()
            ids = f"{before['example.com']} -> {after['example.com']}"
            assert f"member example.com. reset (unique id {ids})" in log
            assert "member example.net. reset" not in log
            assert serves(port, "example.net")
            assert zone_status(sec, CATZ)["catalog_zone"]["members"] == 2
