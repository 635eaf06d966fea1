"""Per-client TCP limits and timeouts on the running server (issue 12, docs/configuration.md
"TCP limits"): one address holding hundreds of connections cannot starve another, the total
limit, the initial / idle / lifetime timeouts, a transfer out outliving the lifetime, a client
that never reads, and the limits with workers.

Client sockets are judged by the kernel's own view (TCP_INFO's state): a refused connection
is reset by the server at once (CLOSE), a closed one gets a FIN (CLOSE_WAIT), one the server
keeps is ESTABLISHED, so held connections need never read or send to be counted.
"""

from __future__ import annotations

import re
import socket
import struct
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
from peers import LOOPBACK, Secondns, dig, free_port, wait_for

pytestmark = pytest.mark.integration

BIG = "".join(f'big IN TXT "{i:04d} {"x" * 240}"\n' for i in range(16))  # ~4 KB answer
ZONE = """$TTL 300
@ IN SOA ns1 host 1 3600 600 86400 300
  IN NS ns1
ns1 IN A 192.0.2.1
www IN A 192.0.2.2
""" + BIG

ESTABLISHED, CLOSE, CLOSE_WAIT = 1, 7, 8  # linux/tcp_states.h
ATTACKER, CLIENT = "127.0.0.5", "127.0.0.6"


def framed(qname: str, qtype: str = "A", msg_id: int = 1) -> bytes:
    msg = dns.message.make_query(qname, qtype)
    msg.id = msg_id
    wire = msg.to_wire()
    return struct.pack("!H", len(wire)) + wire


def state(sock: socket.socket) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]


def connect(sec: Secondns, source: str, *, rcvbuf: int | None = None,
            refusable: bool = False) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(5)
    sock.bind((source, 0))
    try:
        sock.connect((LOOPBACK, sec.port))
    except ConnectionResetError:
        if not refusable:
            raise
        # The server accepted and reset it before connect(2) returned: refused (state CLOSE).
    return sock


def hold(stack: ExitStack, sec: Secondns, source: str, count: int) -> list[socket.socket]:
    """*count* connections from *source*, each with one query sent and never read."""
    socks = []
    for i in range(count):  # bounded
        sock = stack.enter_context(connect(sec, source, refusable=True))
        try:
            sock.sendall(framed("www.example.com.", msg_id=i))
        except OSError:
            pass  # already reset: refused
        socks.append(sock)
    return socks


def established(socks: list[socket.socket]) -> int:
    return sum(state(s) == ESTABLISHED for s in socks)


def metric(sec: Secondns, name: str) -> dict[str, int]:
    with urllib.request.urlopen(sec.http_url("/metrics"), timeout=5) as resp:
        text = resp.read().decode()
    return {m.group(1): int(float(m.group(2)))
            for m in re.finditer(rf'^{name}{{reason="([a-z-]+)"}} (\S+)$', text, re.M)}


def answered_from(sec: Secondns, source: str, timeout: float = 2.0) -> float:
    """Seconds a TCP query from *source* took (dnspython); raises when it gets no answer."""
    start = time.monotonic()
    reply = dns.query.tcp(dns.message.make_query("www.example.com.", "A"), LOOPBACK, port=sec.port,
                          source=source, timeout=timeout)
    assert reply.rcode() == dns.rcode.NOERROR and reply.answer
    return time.monotonic() - start


def refused_from(sec: Secondns, source: str) -> bool:
    try:
        answered_from(sec, source)
    except (OSError, EOFError, dns.exception.DNSException):
        return True
    return False


def closed_within(sock: socket.socket, seconds: float) -> float:
    """Seconds until the server ended the connection (EOF or reset), reading what it sends."""
    start = time.monotonic()
    sock.settimeout(seconds)
    try:
        for _ in range(10000):  # bounded
            if not sock.recv(65536):
                break
    except (ConnectionResetError, TimeoutError):
        pass
    return time.monotonic() - start


@pytest.fixture
def base(tmp_path: Path) -> Path:
    return tmp_path


def test_one_address_holding_hundreds_of_connections_cannot_starve_another(base: Path) -> None:
    # The default per-client limit (100) with a total (150) the attacker could otherwise fill.
    with Secondns(base / "s", zone_files={"example.com": ZONE},
                  server={"tcp-max-connections": 150, "tcp-idle-timeout": 30}) as sec, ExitStack() as stack:
        attacker = hold(stack, sec, ATTACKER, 300)
        wait_for("the attacker's connections over 100 to be reset",
                 lambda: established(attacker) == 100 and all(state(s) == CLOSE for s in attacker
                                                               if state(s) != ESTABLISHED), 15)
        assert wait_for("the per-client refusals counted",
                        lambda: metric(sec, "secondns_tcp_refused_total").get("per-client") == 200, 5)
        assert metric(sec, "secondns_tcp_refused_total")["total"] == 0
        # Another client is answered at once, by dnspython and by dig, and the attacker is not.
        assert max(answered_from(sec, CLIENT) for _ in range(5)) < 1.0
        result = dig(sec.port, "www.example.com", "A", "+tcp", "-b", CLIENT)
        assert result.status == "NOERROR" and result.answer, result.text
        assert refused_from(sec, ATTACKER)
        assert established(attacker) == 100


def test_the_total_limit_counts_every_client_and_frees_on_close(base: Path) -> None:
    with Secondns(base / "s", zone_files={"example.com": ZONE},
                  server={"tcp-max-connections": 30, "tcp-max-connections-per-client": 20,
                          "tcp-idle-timeout": 30}) as sec, ExitStack() as stack:
        first = hold(stack, sec, ATTACKER, 25)
        wait_for("20 of 25 kept", lambda: established(first) == 20, 10)
        second = hold(stack, sec, CLIENT, 25)
        wait_for("10 more kept, to the total of 30", lambda: established(second) == 10, 10)
        assert refused_from(sec, "127.0.0.7")
        assert wait_for("the refusals counted", lambda: metric(sec, "secondns_tcp_refused_total")
                        == {"per-client": 5, "total": 16}, 5)
        for sock in first:
            sock.close()
        wait_for("the closed connections freed", lambda: not refused_from(sec, "127.0.0.7"), 5)
        assert established(second) == 10


def test_initial_timeout_then_idle_timeout(base: Path) -> None:
    with Secondns(base / "s", zone_files={"example.com": ZONE},
                  server={"tcp-initial-timeout": 1, "tcp-idle-timeout": 2.5}) as sec:
        # Nothing sent, or only part of a message: closed after the initial timeout.
        with connect(sec, CLIENT) as silent, connect(sec, CLIENT) as partial:
            partial.sendall(framed("www.example.com.")[:5])
            assert 0.7 < closed_within(silent, 5) < 2.2
            wait_for("the partial message's connection closed", lambda: state(partial) == CLOSE_WAIT, 1)
        # After a complete message the idle timeout applies, not the initial one.
        with connect(sec, CLIENT) as sock:
            sock.sendall(framed("www.example.com."))
            assert sock.recv(65536)
            answered = time.monotonic()
            time.sleep(1.6)
            assert state(sock) == ESTABLISHED
            closed_within(sock, 5)
            assert 2.2 < time.monotonic() - answered < 4.0
        closed = metric(sec, "secondns_tcp_closed_total")
        assert (closed["initial-timeout"], closed["idle-timeout"]) == (2, 1), closed


def test_lifetime_ends_a_busy_connection(base: Path) -> None:
    with Secondns(base / "s", zone_files={"example.com": ZONE},
                  server={"tcp-max-connection-duration": 2, "tcp-idle-timeout": 1.5}) as sec:
        with connect(sec, CLIENT) as sock:
            start = time.monotonic()
            answers = 0
            sock.settimeout(2)
            try:
                for i in range(40):  # a query every 0.25 s keeps it from ever being idle
                    sock.sendall(framed("www.example.com.", msg_id=i))
                    if not sock.recv(65536):
                        break
                    answers += 1
                    time.sleep(0.25)
            except OSError:
                pass
            elapsed = time.monotonic() - start
        assert 1.8 < elapsed < 3.5 and answers >= 5, (elapsed, answers)
        assert metric(sec, "secondns_tcp_closed_total")["lifetime"] == 1


def big_zone(records: int) -> str:
    return "$TTL 300\n@ IN SOA ns1 host 1 3600 600 86400 300\n  IN NS ns1\nns1 IN A 192.0.2.1\n" + "".join(
        f'r{i} IN TXT "{i:06d} {"y" * 200}"\n' for i in range(records))


def test_a_transfer_out_outlives_the_lifetime_and_the_connection_ends_after_it(base: Path) -> None:
    records = 40000  # ~9 MB: more than the kernel buffers on both ends hold
    with Secondns(base / "s", zone_files={"big.test": big_zone(records)},
                  zones={"big.test": {"allow-transfer": ["127.0.0.0/8"]}},
                  server={"tcp-max-connection-duration": 1, "tcp-idle-timeout": 1,
                          "tcp-initial-timeout": 1}, startup_timeout=120) as sec:
        with connect(sec, CLIENT, rcvbuf=16384) as sock:
            sock.sendall(framed("big.test.", "AXFR"))
            data = bytearray()
            start = time.monotonic()
            mid_transfer_checked = False
            sock.settimeout(10)
            for _ in range(100000):  # a slow reader: ~2 MB/s, so the transfer takes seconds
                chunk = sock.recv(16384)
                if not chunk:
                    break
                data += chunk
                if not mid_transfer_checked and time.monotonic() - start > 1.5:
                    mid_transfer_checked = True
                    # Past the lifetime the server is still streaming, not yet closed.
                    assert metric(sec, "secondns_tcp_closed_total")["lifetime"] == 0
                    assert "secondns_transfers_out_active 1.0" in urllib.request.urlopen(
                        sec.http_url("/metrics"), timeout=5).read().decode()
                time.sleep(0.01)
            elapsed = time.monotonic() - start
        assert mid_transfer_checked, f"the transfer took only {elapsed:.2f} s"
        rrs = 0
        pos = 0
        last: dns.message.Message | None = None
        while pos < len(data):
            (length,) = struct.unpack("!H", data[pos:pos + 2])
            last = dns.message.from_wire(bytes(data[pos + 2:pos + 2 + length]))
            rrs += sum(len(r) for r in last.answer)
            pos += 2 + length
        assert pos == len(data) and last is not None
        assert rrs == records + 4  # SOA, NS, A, the TXTs, SOA
        assert last.answer[-1].rdtype == dns.rdatatype.SOA
        assert metric(sec, "secondns_tcp_closed_total")["lifetime"] == 1


def test_a_client_that_never_reads_is_cut(base: Path) -> None:
    with Secondns(base / "s", zone_files={"example.com": ZONE},
                  server={"tcp-idle-timeout": 1, "tcp-initial-timeout": 1}) as sec:
        with connect(sec, CLIENT, rcvbuf=4096) as sock:
            sock.setblocking(False)
            query = framed("big.example.com.", "TXT") * 50
            sent = 0
            for _ in range(2000):  # ~4 KB answers, asked until the server stops reading
                try:
                    sent += sock.send(query)
                except BlockingIOError:
                    break
            assert sent > 100000
            wait_for("the server to reset the connection", lambda: state(sock) == CLOSE, 6)
        assert metric(sec, "secondns_tcp_closed_total")["slow-reader"] == 1


def test_limits_with_two_workers(base: Path) -> None:
    # Per worker: 10 per client (not divided), 40 / 2 = 20 in total.
    with Secondns(base / "s", zone_files={"example.com": ZONE},
                  server={"workers": 2, "tcp-max-connections": 40, "tcp-max-connections-per-client": 10,
                          "tcp-idle-timeout": 30}) as sec, ExitStack() as stack:
        # Sockets still in the accept queue look ESTABLISHED too: done when every one is
        # either reset or accounted for by the (summed, once a second) refusal counter.
        def settled(socks: list[socket.socket], reason: str) -> bool:
            refused = metric(sec, "secondns_tcp_refused_total").get(reason)
            return all(state(s) in (ESTABLISHED, CLOSE) for s in socks) \
                and refused == len(socks) - established(socks)

        attacker = hold(stack, sec, ATTACKER, 200)
        wait_for("every attacker connection accepted or refused",
                 lambda: established(attacker) <= 20 and settled(attacker, "per-client"), 10)
        held = established(attacker)
        assert 10 <= held <= 20, held  # 10 per worker, never divided below it
        assert max(answered_from(sec, CLIENT) for _ in range(5)) < 1.0
        result = dig(sec.port, "www.example.com", "A", "+tcp", "-b", CLIENT)
        assert result.status == "NOERROR" and result.answer, result.text
        others = [s for i in range(7, 13) for s in hold(stack, sec, f"127.0.0.{i}", 10)]
        wait_for("every connection accepted or refused", lambda: settled(others, "total"), 10)
        total = held + established(others)
        assert 30 <= total <= 40, total


def test_one_client_is_one_count_over_every_listener_and_as_ipv4_mapped_ipv6(base: Path) -> None:
    from secondns.serve.server import client_key, per_process

    assert client_key("::ffff:192.0.2.7") == "192.0.2.7" and client_key("2001:db8::7") == "2001:db8::7"
    assert [per_process(1000, n) for n in (1, 2, 3, 2000)] == [1000, 500, 334, 1]
    port = free_port()
    dual = next(p for p in (free_port() for _ in range(5)) if p != port)
    # A dual-stack listener on [::] sees 127.0.0.5 as ::ffff:127.0.0.5.
    with Secondns(base / "s", zone_files={"example.com": ZONE}, port=port,
                  server={"listen": [f"127.0.0.1:{port}", f"[::]:{dual}"],
                          "tcp-max-connections-per-client": 3, "tcp-idle-timeout": 30}) as sec, \
            ExitStack() as stack:
        socks = hold(stack, sec, ATTACKER, 2)
        for i in range(3):  # bounded
            sock = stack.enter_context(socket.socket(socket.AF_INET6, socket.SOCK_STREAM))
            sock.settimeout(5)
            sock.bind((f"::ffff:{ATTACKER}", 0))
            try:
                sock.connect(("::ffff:127.0.0.1", dual))
                sock.sendall(framed("www.example.com.", msg_id=i))
            except ConnectionResetError:
                pass
            socks.append(sock)
        wait_for("one of the five reset", lambda: [state(s) for s in socks].count(CLOSE) == 2
                 and established(socks) == 3, 10)
        assert state(socks[0]) == state(socks[1]) == ESTABLISHED
        assert wait_for("the refusal counted",
                        lambda: metric(sec, "secondns_tcp_refused_total").get("per-client") == 2, 5)


class _SlowTransfer:
    """TCPFactory.xfr for the unit test: a transfer of *count* messages."""

    idle_timeout = 30.0

    def __init__(self, count: int) -> None:
        self.count = count

    def tcp(self, message: bytes, addr: tuple[str, int], conn: object = None,
            rest: bytes = b"") -> Iterator[bytes]:
        return (b"\0" * 100 for _ in range(self.count))


def test_lifetime_waits_for_the_transfer_and_the_counts_are_freed() -> None:
    """The same rules on a fake clock and transport: the lifetime expiring while a transfer is
    paused by a slow reader closes the connection only once the transfer is written."""
    from twisted.internet.address import IPv6Address
    from twisted.internet.task import Clock
    from twisted.internet.testing import StringTransport
    from zonetools import responder_for

    from secondns.serve.server import TCPFactory, TCPLimits

    clock = Clock()
    limits = TCPLimits(10, 5.0, max_per_client=2, initial_timeout=1.0, lifetime=20.0)
    factory = TCPFactory(responder_for(), clock, 5.0, 10, limits=limits)
    factory.xfr = _SlowTransfer(50)
    conns = []
    for _ in range(3):  # the third is over the per-client limit
        proto = factory.buildProtocol(None)
        transport = StringTransport(peerAddress=IPv6Address("TCP", "::ffff:192.0.2.9", 5300))
        proto.makeConnection(transport)
        conns.append((proto, transport))
    assert limits.open == 2 and limits.per_client == {"192.0.2.9": 2}
    assert conns[2][1].disconnected and factory.responder.stats.tcp_refused == [1, 0]
    conns[2][0].connectionLost()
    assert limits.open == 2  # a refused connection was never counted

    proto, transport = conns[0]
    proto.dataReceived(framed("example.com.", "AXFR"))
    proto.pauseProducing()  # the downstream stopped reading before the first message
    clock.advance(0)
    clock.advance(25)  # past the lifetime, within the transfer's idle timeout
    assert not transport.disconnecting and transport.value() == b""
    proto.resumeProducing()
    clock.advance(0)
    assert len(transport.value()) == 50 * 102  # the whole transfer, then the close
    assert transport.disconnecting and not transport.disconnected
    proto.connectionLost()
    # The other connection never sent a complete message: closed at 1 s by the initial timeout.
    other, other_transport = conns[1]
    assert other_transport.disconnecting
    other.connectionLost()
    assert factory.responder.stats.tcp_closed == [1, 0, 1, 0]  # initial, idle, lifetime, slow
    assert limits.open == 0 and limits.per_client == {}


@pytest.fixture(autouse=True)
def _many_sockets() -> Iterator[None]:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2048:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(2048, hard), hard))
    yield


def test_the_keys_parse_with_documented_defaults_and_reject_bad_values() -> None:
    from secondns.config import InvalidConfig, parse_config

    srv = parse_config("zones: {}\n", "t.yaml").server
    assert (srv.tcp_initial_timeout, srv.tcp_max_connections_per_client, srv.tcp_max_connection_duration) \
        == (5.0, 100, 120.0)
    with pytest.raises(InvalidConfig) as exc:
        parse_config("server:\n  tcp-initial-timeout: 0\n  tcp-max-connections-per-client: 0\n"
                     "  tcp-max-connection-duration: yes\nzones: {}\n", "t.yaml")
    assert str(exc.value).splitlines() == [
        "t.yaml:2: server.tcp-initial-timeout: must be greater than 0, got 0",
        "t.yaml:3: server.tcp-max-connections-per-client: must be >= 1, got 0",
        "t.yaml:4: server.tcp-max-connection-duration: expected a number of seconds, got boolean true",
    ]
