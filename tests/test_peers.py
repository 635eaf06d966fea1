"""Smoke tests for the peer fixtures: if these fail, every interop test after them is meaningless.

Each peer must come up on loopback, answer SOA to two independent clients (dnspython and dig),
serve a bumped serial after a reload, and transfer to the others with TSIG and NOTIFY, because
that is what the IXFR/TSIG interop tests will lean on.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

import dns.rcode
import dns.rdatatype
import pytest
from peers import (
    LOOPBACK,
    Bind,
    Peer,
    PeerError,
    TsigKey,
    ZoneSpec,
    dig,
    free_port,
    query,
    soa_serial,
    soa_zone_text,
    transfer,
    wait_for,
)

ZONE = "example.com"
PEER_FACTORIES = ["bind_factory", "knot_factory", "nsd_factory"]


def test_free_port_is_free_for_udp_and_tcp() -> None:
    port = free_port()
    with (
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp,
    ):
        tcp.bind((LOOPBACK, port))
        udp.bind((LOOPBACK, port))


def test_zone_spec_rejects_a_primary_without_data() -> None:
    with pytest.raises(ValueError, match="needs data"):
        ZoneSpec("example.com").validate()


def test_zone_spec_accepts_the_tuple_form() -> None:
    spec = ZoneSpec.coerce(("example.com", "text", "primary", ["ixfr-from-differences yes;"]))
    assert spec.origin == "example.com."
    assert spec.options == ["ixfr-from-differences yes;"]


def _start(request: pytest.FixtureRequest, factory: str, *args: Any, **kwargs: Any) -> Any:
    make: Callable[..., Peer] = request.getfixturevalue(factory)
    return make(*args, **kwargs)


@pytest.mark.integration
@pytest.mark.parametrize("factory", PEER_FACTORIES)
def test_peer_answers_soa_over_udp_and_tcp(request: pytest.FixtureRequest, factory: str) -> None:
    peer = _start(request, factory, [(ZONE, soa_zone_text(ZONE, 7))])
    for tcp in (False, True):
        reply = query(peer.port, ZONE, "SOA", tcp=tcp)
        assert reply.rcode() == dns.rcode.NOERROR
        assert reply.answer[0].rdtype == dns.rdatatype.SOA
        assert reply.answer[0][0].serial == 7


@pytest.mark.integration
@pytest.mark.parametrize("factory", PEER_FACTORIES)
def test_peer_answers_dig(request: pytest.FixtureRequest, factory: str) -> None:
    peer = _start(request, factory, [(ZONE, soa_zone_text(ZONE, 7))])
    soa = dig(peer.port, f"{ZONE}.", "SOA")
    assert soa.status == "NOERROR", soa.text
    assert any("SOA" in line and " 7 " in line for line in soa.answer), soa.text
    nx = dig(peer.port, f"nothing.{ZONE}.", "A", "+tcp")
    assert nx.status == "NXDOMAIN", nx.text


@pytest.mark.integration
@pytest.mark.parametrize("factory", PEER_FACTORIES)
def test_peer_serves_bumped_serial_after_reload(request: pytest.FixtureRequest, factory: str) -> None:
    peer = _start(request, factory, [(ZONE, soa_zone_text(ZONE, 1))])
    peer.write_zone(ZONE, soa_zone_text(ZONE, 2, records="new IN A 192.0.2.9\n"))
    peer.reload(ZONE)
    peer.wait_serial(ZONE, 2)
    assert query(peer.port, f"new.{ZONE}", "A").rcode() == dns.rcode.NOERROR
    assert "2" in dig(peer.port, f"{ZONE}.", "SOA", "+short").text.split()


@pytest.mark.integration
@pytest.mark.parametrize("factory", PEER_FACTORIES)
def test_peer_stops_by_pid_and_restarts(request: pytest.FixtureRequest, factory: str) -> None:
    peer = _start(request, factory, [(ZONE, soa_zone_text(ZONE, 3))])
    pid = peer.pid
    peer.stop()
    assert not peer.running()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    peer.restart()
    assert soa_serial(peer.port, ZONE) == 3


@pytest.mark.integration
def test_bind_rndc_talks_to_its_own_instance(bind_factory: Callable[..., Bind]) -> None:
    bind = bind_factory([(ZONE, soa_zone_text(ZONE, 1))])
    assert "server is up and running" in bind.rndc("status")
    assert "named" in bind.log_text()


@pytest.mark.integration
def test_start_failure_reports_the_log(bind_factory: Callable[..., Bind]) -> None:
    with pytest.raises(PeerError, match=r"exited|did not answer"):
        bind_factory([(ZONE, "this is not a zone file\n")], startup_timeout=5)


@pytest.mark.integration
@pytest.mark.parametrize("primary", PEER_FACTORIES)
def test_tsig_notify_and_ixfr_between_peers(request: pytest.FixtureRequest, primary: str) -> None:
    """A signed primary notifies the two other kinds of peer, which transfer the new serial."""
    key = TsigKey.generate("xfr-key")
    others = [f for f in PEER_FACTORIES if f != primary]
    ports = [free_port() for _ in others]
    options = {
        "bind_factory": ["ixfr-from-differences yes;"],
        "knot_factory": ["zonefile-load: difference"],
        "nsd_factory": [],
    }[primary]
    prim = _start(
        request,
        primary,
        [ZoneSpec(ZONE, soa_zone_text(ZONE, 10), options=options, notify=ports, key=key.name)],
        keys=[key],
    )
    secondaries = [
        _start(
            request,
            f,
            [ZoneSpec(ZONE, type="secondary", primaries=[prim.port], key=key.name)],
            keys=[key],
            port=port,
        )
        for f, port in zip(others, ports, strict=True)
    ]
    for sec in secondaries:
        sec.wait_serial(ZONE, 10)
    prim.write_zone(ZONE, soa_zone_text(ZONE, 11, records="new IN A 192.0.2.9\n"))
    prim.reload(ZONE)
    prim.wait_serial(ZONE, 11)
    for sec in secondaries:
        sec.wait_serial(ZONE, 11)
        # NSD's server processes are replaced after a transfer: for a moment an old one may
        # still answer from serial 10 while a new one already gives the SOA of 11.
        wait_for(f"new.{ZONE} A from {sec}", lambda sec=sec: query(sec.port, f"new.{ZONE}", "A").answer,
                 timeout=5)
    assert transfer(prim.port, ZONE, key=key)
    with pytest.raises(Exception, match=r"REFUSED|NOTAUTH|EOF|closed"):
        transfer(prim.port, ZONE)


@pytest.mark.integration
def test_secondns_serves_a_zone_file(secondns_factory: Callable[..., Any]) -> None:
    """Needs ``python -m secondns serve``; fails until the server exists."""
    server = secondns_factory(zone_files={ZONE: soa_zone_text(ZONE, 5)})
    assert soa_serial(server.port, ZONE) == 5
    assert soa_serial(server.port, ZONE, tcp=True) == 5
    assert dig(server.port, f"{ZONE}.", "SOA").status == "NOERROR"
    assert dig(server.port, f"nothing.{ZONE}.", "A").status == "NXDOMAIN"
    server.kill9()
    assert not server.running()
