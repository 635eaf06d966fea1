"""No exception leaves the query path (issue 10, item 1): a bug met while answering one message
costs that message a SERVFAIL, counted in secondns_internal_errors_total{where} and logged at most
once a second, never the reply (UDP) or the connection (TCP).

The query of death here is the one the issue reproduced: an MX record with empty rdata in a
served node, which makes the encoder raise IndexError.  It is put into the zone snapshot directly,
below any ingest validation, because serving must survive whatever reaches it.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.tsigkeyring
import pytest
from peers import Secondns, query, wait_for
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from zonetools import responder_for, zone_from_text

from secondns import rrtypes
from secondns.names import from_text
from secondns.ops.metrics import SecondnsCollector
from secondns.serve import responder as responder_module
from secondns.serve.responder import TCP, UDP, Responder
from secondns.serve.server import TCPFactory, TCPServer, UDPServer
from secondns.serve.stats import IN_NOTIFY, IN_QUERY, IN_TCP, IN_TSIG, IN_UDP, INTERNAL_ERROR_PLACES
from secondns.transfer import tsig
from secondns.zone import Zone, encode_record

ZONE = """$TTL 300
@ IN SOA ns1 host 1 3600 600 86400 300
  IN NS ns1
ns1 IN A 192.0.2.1
www IN A 192.0.2.2
mail IN A 192.0.2.3
"""


def zone_with_query_of_death() -> Zone:
    """example.com. whose ``mail`` node holds an MX with RDLENGTH 0 next to its A record."""
    zone = zone_from_text(ZONE, "example.com.")
    owner = from_text("mail.example.com.")
    node = zone.get(owner)
    assert node
    # Straight into the snapshot, as a transfer or zone file that slipped through would leave it.
    zone._names[owner] = node + encode_record(rrtypes.MX, 300, b"")
    return zone


@pytest.fixture
def responder() -> Responder:
    return responder_for(zone_with_query_of_death())


def wire(qname: str, qtype: str, msg_id: int = 4321, edns: int = -1) -> bytes:
    msg = dns.message.make_query(qname, qtype, use_edns=edns)
    msg.id = msg_id
    return msg.to_wire()


def errors(resp: Responder) -> dict[str, int]:
    return dict(zip(INTERNAL_ERROR_PLACES, resp.stats.internal_errors, strict=True))


def test_query_of_death_is_answered_servfail_with_the_question(responder: Responder) -> None:
    for transport in (UDP, TCP):
        out = responder.respond(wire("MAIL.example.com.", "MX"), transport, ("127.0.0.1", 1))
        assert out is not None
        reply = dns.message.from_wire(out)
        assert reply.id == 4321 and reply.rcode() == dns.rcode.SERVFAIL
        assert reply.flags & dns.flags.QR and reply.flags & dns.flags.RD
        assert not reply.flags & dns.flags.AA
        assert [q.to_text() for q in reply.question] == ["MAIL.example.com. IN MX"]
        assert not reply.answer and not reply.authority
    assert errors(responder)["query"] == 2
    assert responder.stats.rcodes[dns.rcode.SERVFAIL] == 2
    # Other names of the zone are unaffected.
    ok = dns.message.from_wire(responder.respond(wire("www.example.com.", "A"), UDP, ("", 0)) or b"")
    assert ok.rcode() == dns.rcode.NOERROR and ok.answer


def test_servfail_of_an_internal_error_is_not_cached(responder: Responder) -> None:
    data = wire("mail.example.com.", "MX", edns=0)
    for _ in range(3):
        out = responder.respond(data, UDP, ("127.0.0.1", 1))
        assert out is not None
        reply = dns.message.from_wire(out)
        assert reply.rcode() == dns.rcode.SERVFAIL and reply.edns == 0  # OPT echoed
    assert len(responder.cache) == 0
    assert errors(responder)["query"] == 3  # every try reached the answer path again


def test_exception_while_parsing_answers_header_only_servfail(
        responder: Responder, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(data: bytes) -> Any:
        raise struct.error("bug in the parser")

    monkeypatch.setattr(responder_module, "parse_query", broken)
    out = responder.respond(wire("www.example.com.", "A", msg_id=77), UDP, ("127.0.0.1", 1))
    assert out is not None and len(out) == 12
    reply = dns.message.from_wire(out)
    assert reply.id == 77 and reply.rcode() == dns.rcode.SERVFAIL and not reply.question
    assert errors(responder)["query"] == 1


def test_notify_handler_that_raises_is_answered_servfail(responder: Responder) -> None:
    def handler(q: Any, addr: Any) -> Any:
        raise KeyError("bug in the NOTIFY handler")

    responder.notify_handler = handler
    msg = dns.message.make_query("example.com.", "SOA")
    msg.set_opcode(dns.opcode.NOTIFY)
    out = responder.respond(msg.to_wire(), UDP, ("127.0.0.1", 1))
    assert out is not None
    reply = dns.message.from_wire(out)
    assert reply.rcode() == dns.rcode.SERVFAIL and reply.opcode() == dns.opcode.NOTIFY
    assert errors(responder)["notify"] == 1 and errors(responder)["query"] == 0


@pytest.mark.parametrize("where", ["verify_request", "sign_response"])
def test_tsig_path_that_raises_is_answered_servfail(
        responder: Responder, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ValueError(f"bug in {where}")

    monkeypatch.setattr(tsig, where, broken)
    if where == "sign_response":
        monkeypatch.setattr(tsig, "verify_request",
                            lambda raw, keys, peer: type("V", (), {"key": None, "mac": b""})())
    msg = dns.message.make_query("www.example.com.", "A")
    msg.use_tsig(dns.tsigkeyring.from_text({"k.": "c2VjcmV0c2VjcmV0c2VjcmV0"}), keyname="k.")
    out = responder.respond(msg.to_wire(), UDP, ("127.0.0.1", 1))
    assert out is not None
    assert out[3] & 0xF == dns.rcode.SERVFAIL
    assert errors(responder)["tsig"] == 1


def udp_server(resp: Responder) -> tuple[UDPServer, list[bytes]]:
    server = UDPServer(resp)
    sent: list[bytes] = []
    server._sendto = lambda data, addr: sent.append(data)
    return server, sent


@pytest.mark.parametrize("sampled", [False, True], ids=["plain", "timed-sample"])
def test_udp_server_sends_servfail_for_the_query_of_death(responder: Responder, sampled: bool) -> None:
    server, sent = udp_server(responder)
    if sampled:
        responder.stats.udp_queries = 255  # the next one takes the timed path (stats.SAMPLE_EVERY)
    server.datagramReceived(wire("mail.example.com.", "MX"), ("127.0.0.1", 5353))
    assert len(sent) == 1 and dns.message.from_wire(sent[0]).rcode() == dns.rcode.SERVFAIL
    assert errors(responder)["query"] == 1


def test_udp_server_catches_what_the_responder_does_not(
        responder: Responder, monkeypatch: pytest.MonkeyPatch) -> None:
    server, sent = udp_server(responder)

    def broken(data: bytes, transport: int, addr: Any) -> bytes:
        raise RuntimeError("bug below the protocol")

    monkeypatch.setattr(responder, "respond", broken)
    server.datagramReceived(wire("www.example.com.", "A", msg_id=9), ("127.0.0.1", 5353))
    assert len(sent) == 1
    reply = dns.message.from_wire(sent[0])
    assert reply.id == 9 and reply.rcode() == dns.rcode.SERVFAIL
    assert responder.stats.internal_errors[IN_UDP] == 1


def framed(data: bytes) -> bytes:
    return struct.pack("!H", len(data)) + data


def tcp_connection(resp: Responder) -> tuple[TCPServer, StringTransport]:
    factory = TCPFactory(resp, Clock(), idle_timeout=30, max_connections=10)
    proto = factory.buildProtocol(None)
    transport = StringTransport()
    proto.makeConnection(transport)
    return proto, transport


def replies(transport: StringTransport) -> list[dns.message.Message]:
    data = transport.value()
    out = []
    pos = 0
    while pos < len(data):  # bounded by the bytes written
        (length,) = struct.unpack_from("!H", data, pos)
        out.append(dns.message.from_wire(data[pos + 2:pos + 2 + length]))
        pos += 2 + length
    return out


def test_tcp_connection_survives_the_query_of_death_and_answers_what_follows(
        responder: Responder) -> None:
    proto, transport = tcp_connection(responder)
    pipelined = (framed(wire("www.example.com.", "A", 1)) + framed(wire("mail.example.com.", "MX", 2))
                 + framed(wire("mail.example.com.", "A", 3)))
    proto.dataReceived(pipelined)
    got = replies(transport)
    assert [(r.id, r.rcode()) for r in got] == [
        (1, dns.rcode.NOERROR), (2, dns.rcode.SERVFAIL), (3, dns.rcode.NOERROR)]
    assert not transport.disconnecting
    transport.clear()
    proto.dataReceived(framed(wire("mail.example.com.", "MX", 4)) + framed(wire("www.example.com.", "A", 5)))
    assert [(r.id, r.rcode()) for r in replies(transport)] == [
        (4, dns.rcode.SERVFAIL), (5, dns.rcode.NOERROR)]
    assert not transport.disconnecting
    assert errors(responder)["query"] == 2


def test_tcp_server_catches_what_the_responder_does_not(
        responder: Responder, monkeypatch: pytest.MonkeyPatch) -> None:
    proto, transport = tcp_connection(responder)
    real = responder.respond
    calls = 0

    def flaky(data: bytes, transport_kind: int, addr: Any) -> bytes | None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("bug below the protocol")
        return real(data, transport_kind, addr)

    monkeypatch.setattr(responder, "respond", flaky)
    proto.dataReceived(framed(wire("www.example.com.", "A", 1)) + framed(wire("www.example.com.", "A", 2)))
    assert [(r.id, r.rcode()) for r in replies(transport)] == [
        (1, dns.rcode.SERVFAIL), (2, dns.rcode.NOERROR)]
    assert not transport.disconnecting
    assert responder.stats.internal_errors[IN_TCP] == 1


def test_internal_errors_are_logged_at_most_once_a_second(
        responder: Responder, caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    responder.clock = lambda: now[0]
    data = wire("mail.example.com.", "MX")
    with caplog.at_level(logging.ERROR, logger="secondns"):
        for _ in range(50):
            responder.respond(data, UDP, ("127.0.0.1", 1))
            now[0] += 0.01  # 50 errors in half a second
        first = [r for r in caplog.records if "internal error" in r.getMessage()]
        now[0] += 1.0
        responder.respond(data, UDP, ("127.0.0.1", 1))
    logged = [r for r in caplog.records if "internal error" in r.getMessage()]
    assert len(first) == 1 and len(logged) == 2
    assert first[0].exc_info is not None and first[0].exc_info[0] is IndexError  # the traceback
    assert "where=query" in logged[1].getMessage() and "49 more" in logged[1].getMessage()
    assert errors(responder)["query"] == 51


def test_metrics_export_every_place_from_zero(responder: Responder) -> None:
    def scrape() -> dict[str, float]:
        collector = SecondnsCollector(responder.stats, lambda: [])
        family = next(f for f in collector.collect() if f.name == "secondns_internal_errors")
        return {s.labels["where"]: s.value for s in family.samples if s.name.endswith("_total")}

    assert scrape() == {"udp": 0, "tcp": 0, "query": 0, "notify": 0, "tsig": 0}
    responder.respond(wire("mail.example.com.", "MX"), UDP, ("127.0.0.1", 1))
    assert scrape() == {"udp": 0, "tcp": 0, "query": 1, "notify": 0, "tsig": 0}
    assert (IN_UDP, IN_TCP, IN_QUERY, IN_NOTIFY, IN_TSIG) == (0, 1, 2, 3, 4)


# -- the real server process

# The live server runs the product unchanged except for one wrap, made in the test's own
# command line: answers for names under "death." raise, as a query of death would.  This does
# not depend on what ingest accepts (a zone file or transfer with a bad record may be rejected).
_INJECT = """
import sys
import secondns.serve.responder as r
_real = r.answer_query
def answer_query(zone, qname, *args, **kwargs):
    if qname.endswith(b"\\x05death\\x07example\\x03com\\x00"):
        raise IndexError("query of death (injected by the test)")
    return _real(zone, qname, *args, **kwargs)
r.answer_query = answer_query
from secondns.cli import main
sys.exit(main(sys.argv[1:]))
"""


class _QueryOfDeathSecondns(Secondns):
    def _command(self) -> list[str]:
        cmd = super()._command()
        assert cmd[1:3] == ["-m", "secondns"]
        return [cmd[0], "-c", _INJECT, *cmd[3:]]


LIVE_ZONE = ZONE + "death IN A 192.0.2.66\nx.death IN A 192.0.2.67\n"


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Secondns]:
    with _QueryOfDeathSecondns(tmp_path / "s", zone_files={"example.com": LIVE_ZONE},
                               internal_errors_expected=True) as sec:
        yield sec


@pytest.mark.integration
def test_live_server_answers_servfail_keeps_tcp_and_counts(live: Secondns) -> None:
    import socket

    assert live.internal_errors() == {p: 0 for p in INTERNAL_ERROR_PLACES}
    for _ in range(3):
        reply = query(live.port, "death.example.com.", "A")
        assert reply.rcode() == dns.rcode.SERVFAIL and reply.question
    with socket.create_connection(("127.0.0.1", live.port), timeout=3) as sock:
        data = b"".join(framed(wire(n, "A", i)) for i, n in enumerate(
            ["x.death.example.com.", "www.example.com.", "death.example.com.", "www.example.com."]))
        sock.sendall(data)
        buf = b""
        got = []
        while len(got) < 4:  # bounded by the socket timeout
            chunk = sock.recv(4096)
            assert chunk, "server closed the TCP connection"
            buf += chunk
            while len(buf) >= 2 and len(buf) >= 2 + struct.unpack_from("!H", buf)[0]:
                length = struct.unpack_from("!H", buf)[0]
                got.append(dns.message.from_wire(buf[2:2 + length]))
                buf = buf[2 + length:]
        assert [(r.id, r.rcode()) for r in got] == [
            (0, dns.rcode.SERVFAIL), (1, dns.rcode.NOERROR), (2, dns.rcode.SERVFAIL), (3, dns.rcode.NOERROR)]
    assert query(live.port, "www.example.com.", "A", tcp=True).answer
    want = {"udp": 0, "tcp": 0, "query": 5, "notify": 0, "tsig": 0}
    # /metrics is rendered at most once a second (httpapi.METRICS_CACHE_SECONDS): poll, bounded.
    wait_for("five internal errors counted", lambda: live.internal_errors() == want, timeout=5)
    assert live.internal_errors() == want
    log = live.log_text()
    assert 1 <= log.count("internal error answering a message") < 5  # rate-limited
    assert "IndexError: query of death (injected by the test)" in log


@pytest.mark.integration
@pytest.mark.parametrize(("http", "witness"), [(True, r"\{'query': 1\}, 1 logged"),
                                               (False, r"\(not scraped\), 1 logged")])
def test_stop_fails_a_test_whose_server_met_internal_errors(tmp_path: Path, http: bool, witness: str) -> None:
    sec = _QueryOfDeathSecondns(tmp_path / "s", zone_files={"example.com": LIVE_ZONE}, http=http).start()
    try:
        assert query(sec.port, "death.example.com.", "A").rcode() == dns.rcode.SERVFAIL
    except BaseException:
        sec.internal_errors_expected = True
        sec.stop()
        raise
    with pytest.raises(AssertionError, match=r"met internal errors: secondns_internal_errors_total " +
                       witness):
        sec.stop()
    assert not sec.running()
