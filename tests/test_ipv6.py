"""IPv6 on ::1: a listener answering over UDP and TCP, a primary reached over IPv6, NOTIFY from ::1."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import dns.message
import dns.opcode
import dns.query
import dns.rcode
import pytest
from badprimary import BadPrimary
from peers import Secondns, free_port

pytestmark = pytest.mark.integration
ZONE = "v6.test."


def _ask(port: int, qname: str, qtype: str, tcp: bool = False) -> dns.message.Message:
    query = dns.message.make_query(qname, qtype)
    send = dns.query.tcp if tcp else dns.query.udp
    return send(query, "::1", port=port, timeout=2)


def test_zone_from_an_ipv6_primary_is_served_on_an_ipv6_listener(tmp_path: Path) -> None:
    port = free_port()
    with BadPrimary(ZONE, serial=3, host="::1") as primary, \
            Secondns(tmp_path / "sec", {ZONE: {"primaries": [f"[::1]:{primary.port}"], "refresh-min": 1}},
                     server={"listen": [f"127.0.0.1:{port}", f"[::1]:{port}"]}, port=port,
                     ready_zones=[]) as sec:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            reply = _ask(sec.port, ZONE, "SOA")
            if reply.answer:
                break
            time.sleep(0.1)
        assert reply.answer and reply.answer[0][0].serial == 3, sec.log_tail()
        assert primary.axfr_requests == 1  # the transfer itself went over IPv6
        assert _ask(sec.port, f"www.{ZONE}", "A", tcp=True).answer

        # NOTIFY from ::1, the primary's address: accepted, and serial 4 is fetched.
        primary.serial = 4
        notify = dns.message.make_query(ZONE, "SOA")
        notify.set_opcode(dns.opcode.NOTIFY)
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
            reply = dns.query.udp(notify, "::1", port=sec.port, timeout=2, sock=sock)
        assert reply.rcode() == dns.rcode.NOERROR
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _ask(sec.port, ZONE, "SOA").answer[0][0].serial != 4:
            time.sleep(0.05)
        assert _ask(sec.port, ZONE, "SOA").answer[0][0].serial == 4
