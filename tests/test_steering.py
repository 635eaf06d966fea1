"""UDP priority for clients with a server cookie (serve/steering.py).

The kernel picks the socket with the classic-BPF program, so these tests use real sockets on
127.0.0.1: a query ending with a 24-octet COOKIE option reaches the priority socket, any other
the normal one; with N pairs a client's queries stay on one pair; and a flood waiting on the
normal socket does not delay a priority query, which is read at the start of the turn.
"""

from __future__ import annotations

import collections
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import dns.edns
import dns.message
import dns.query
import pytest
from peers import LOOPBACK, Secondns
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.interfaces import IReactorSocket
from zonetools import responder_for, zone_from_text
from zope.interface import implementer  # type: ignore[import-untyped]

from secondns.serve import steering
from secondns.serve.responder import ServeSettings
from secondns.serve.server import _READ_BATCH, UDPServer

ZONE = "$TTL 300\n@ SOA ns1 host 1 3600 600 86400 300\n@ NS ns1\nns1 A 192.0.2.1\nwww A 192.0.2.2\n"
CLIENT = bytes.fromhex("0102030405060708")

pytestmark = pytest.mark.skipif(not steering.supported(), reason="the kernel refuses the steering program")


def query(cookie: bytes | None, name: str = "www.example.com.", qid: int = 1) -> bytes:
    options = [dns.edns.GenericOption(dns.edns.COOKIE, cookie)] if cookie is not None else []
    msg = dns.message.make_query(name, "A", use_edns=0 if cookie is not None else False, options=options)
    msg.id = qid
    return msg.to_wire()


def group(pairs: int, host: str = LOOPBACK, prefixes: tuple[int, int] | None = None) -> list[socket.socket]:
    """2 * pairs sockets in one reuseport group on *host*, the program attached."""
    socks = [steering.bind_udp(host, 0)]
    port = socks[0].getsockname()[1]
    socks += [steering.bind_udp(host, port) for _ in range(2 * pairs - 1)]
    steering.attach(socks[0], pairs, prefixes)
    return socks


def drain(socks: list[socket.socket]) -> dict[int, list[bytes]]:
    time.sleep(0.05)
    got: dict[int, list[bytes]] = collections.defaultdict(list)
    for i, s in enumerate(socks):
        while True:
            try:
                got[i].append(s.recv(4096))
            except BlockingIOError:
                break
    return got


@pytest.fixture
def client() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
        c.bind((LOOPBACK, 0))
        c.settimeout(2)
        yield c


def _v6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.parametrize("host", [LOOPBACK, pytest.param("::1", marks=pytest.mark.skipif(
    not _v6(), reason="no IPv6 loopback"))])
def test_a_server_cookie_query_reaches_the_priority_socket_and_others_the_normal_one(host: str) -> None:
    socks = group(1, host)
    client = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    try:
        port = socks[0].getsockname()[1]
        server_cookie = query(CLIENT + bytes(range(16)), qid=1)
        client_only = query(CLIENT, qid=2)
        plain = query(None, qid=3)
        no_edns = dns.message.make_query("www.example.com.", "A", use_edns=False).to_wire()
        short = b"\x00\x05"
        other_length = query(CLIENT + bytes(range(24)), qid=4)  # a 32-octet server cookie
        for data in (server_cookie, client_only, plain, no_edns, short, other_length):
            client.sendto(data, (host, port))
        got = drain(socks)
        assert got[1] == [server_cookie]
        assert got[0] == [client_only, plain, no_edns, short, other_length]
    finally:
        client.close()
        for s in socks:
            s.close()


def test_with_pairs_a_question_reaches_one_pair_from_any_client_in_any_case() -> None:
    # Without RRL the worker is a hash of the question: each worker's answer cache then holds
    # its share of the questions instead of all of them, and clients spread over workers by
    # what they ask, not by how many sockets they happen to use (dnsperf's 4 split 3:1).
    socks = group(3)
    try:
        port = socks[0].getsockname()[1]
        clients = []
        for n in range(20):
            c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            c.bind((f"127.0.{n // 10}.{n % 10 + 1}", 0))
            clients.append(c)
        names = [f"host{i}.example.com." for i in range(30)]
        sent: dict[int, str] = {}
        for n, c in enumerate(clients):
            for i, name in enumerate(names):
                qid = 30 * n + i
                sent[qid] = name
                # every other client asks in 0x20 mixed case
                asked = name.upper() if n % 2 else name
                c.sendto(query(CLIENT + bytes(16) if (n + i) % 3 == 0 else None, asked, qid),
                         (LOOPBACK, port))
        got = drain(socks)
        pair_of: dict[str, set[int]] = collections.defaultdict(set)
        for index, datagrams in got.items():
            for data in datagrams:
                cookie = len(data) > 50
                assert index % 2 == cookie  # priority sockets at odd indexes
                pair_of[sent[int.from_bytes(data[:2], "big")]].add(index // 2)
        assert sum(len(d) for d in got.values()) == 600
        assert all(len(pairs) == 1 for pairs in pair_of.values())  # one question: one pair
        assert len({next(iter(p)) for p in pair_of.values()}) == 3  # and every pair got questions
        for c in clients:
            c.close()
    finally:
        for s in socks:
            s.close()


def test_a_datagram_too_short_for_the_question_hash_is_steered_by_its_source() -> None:
    socks = group(3)
    clients = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(40)]
    try:
        port = socks[0].getsockname()[1]
        short = dns.message.make_query(".", "NS", use_edns=False).to_wire()  # 17 octets
        assert len(short) < 12 + 4 * steering._QUESTION_WORDS
        for n, c in enumerate(clients):
            c.bind((f"127.0.9.{n + 1}", 0))
            c.sendto(short, (LOOPBACK, port))
        got = drain(socks)
        assert sum(len(d) for d in got.values()) == 40
        assert len([i for i, d in got.items() if d]) == 3  # the one question spread by source
    finally:
        for s in socks + clients:
            s.close()


def _pairs_of(sources: list[tuple[str, int]], prefixes: tuple[int, int] | None,
              names: int = 1) -> dict[str, set[int]]:
    """Send plain queries from each (address, count of source ports), each source port asking
    one of *names* questions in turn, and return, per address, the pairs (workers) its
    queries reached."""
    socks = group(3, prefixes=prefixes)
    clients: list[socket.socket] = []
    try:
        port = socks[0].getsockname()[1]
        sent: dict[int, str] = {}
        for address, ports in sources:
            for _ in range(ports):
                c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                c.bind((address, 0))
                clients.append(c)
                sent[len(sent)] = address
                qid = len(sent) - 1
                c.sendto(query(None, f"host{qid % names}.example.com.", qid), (LOOPBACK, port))
        reached: dict[str, set[int]] = collections.defaultdict(set)
        got = drain(socks)
        for index, datagrams in got.items():
            for data in datagrams:
                reached[sent[int.from_bytes(data[:2], "big")]].add(index // 2)
        assert sum(len(d) for d in got.values()) == len(sent)
        return reached
    finally:
        for s in socks + clients:
            s.close()


def test_with_rrl_one_client_prefix_stays_on_one_worker_whatever_its_ports() -> None:
    # RRL accounts per client prefix (server.rate-limit ipv4-prefix-length 24): a spoofed
    # victim's queries, from random source ports, must all reach the worker holding its account.
    one_address = [("127.0.0.1", 30)]
    one_prefix = [(f"127.7.7.{n}", 1) for n in range(1, 31)]
    prefixes = [(f"127.{n}.{n % 7}.1", 1) for n in range(60)]
    # (each source asks one of 30 questions: with RRL the question must not matter)
    pinned = _pairs_of(one_address + one_prefix + prefixes, (24, 56), names=30)
    assert len(pinned["127.0.0.1"]) == 1
    assert len(set().union(*(pinned[a] for a, _ in one_prefix))) == 1
    assert len(set().union(*(pinned[a] for a, _ in prefixes))) == 3  # prefixes still spread
    # Without RRL the question is hashed: one address asking many questions uses every worker.
    spread = _pairs_of(one_address + one_prefix, None, names=30)
    assert len(spread["127.0.0.1"]) == 3
    assert len(set().union(*(spread[a] for a, _ in one_prefix))) == 3


def test_the_prefix_masks_of_the_program() -> None:
    assert steering._mask(24, 0) == 0xFFFFFF00
    assert [steering._mask(56, w) for w in range(4)] == [0xFFFFFFFF, 0xFFFFFF00, 0, 0]
    assert steering._mask(0, 0) == 0 and steering._mask(128, 3) == 0xFFFFFFFF


def _listener(sock: socket.socket, protocol: UDPServer) -> None:
    """Start *protocol* on *sock* as adoptDatagramPort would, without a reactor."""
    protocol.transport = SimpleNamespace(socket=sock, maxPacketSize=8192, reactor=None)  # type: ignore[assignment]
    protocol.startProtocol()


def test_a_flood_on_the_normal_socket_does_not_delay_a_priority_query(client: socket.socket) -> None:
    responder = responder_for(zone_from_text(ZONE, "example.com."),
                              settings=ServeSettings(cookie_secrets=(bytes(range(16)),)))
    socks = group(1)
    try:
        port = socks[0].getsockname()[1]
        normal, priority = UDPServer(responder), UDPServer(responder)
        steering.pair(normal, priority)
        _listener(socks[0], normal)
        _listener(socks[1], priority)
        # A server cookie to send back, from a first (normal) query.
        client.sendto(query(CLIENT), (LOOPBACK, port))
        time.sleep(0.05)
        normal._read_one()  # one datagram, leaving the listener in batching mode, as in a flood
        first = dns.message.from_wire(client.recv(4096))
        cookie = next(o.to_wire() for o in first.options if o.otype == dns.edns.COOKIE)
        assert len(cookie) == 24
        # The flood: several turns' worth of one-off names, waiting on the normal socket.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as flooder:
            flooder.bind(("127.0.0.9", 0))
            for n in range(4 * _READ_BATCH):
                flooder.sendto(query(None, f"x{n}.example.com.", n), (LOOPBACK, port))
            client.sendto(query(cookie, qid=4242), (LOOPBACK, port))
            time.sleep(0.1)
            normal._read()  # one turn of the normal socket
            reply = dns.message.from_wire(client.recv(4096))
            assert reply.id == 4242 and reply.answer
            assert responder.stats.udp_priority == 1
            assert responder.stats.udp_queries == 1 + 1 + _READ_BATCH  # the rest still waits
            # Lone-datagram turns do not probe the priority socket (its own poll event does).
            normal._lone = True
            probes: list[int] = []
            normal.read_first = lambda: probes.append(1)
            normal._read()
            assert probes == [] and responder.stats.udp_queries == 2 + _READ_BATCH + 1
    finally:
        for s in socks:
            s.close()


def _metric(sec: Secondns, sample: str, **labels: str) -> float:
    with urllib.request.urlopen(sec.http_url("/metrics"), timeout=5) as resp:
        text = resp.read().decode()
    return sum(s.value for fam in text_string_to_metric_families(text) for s in fam.samples
               if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()))


def _cookie_rounds(port: int, rounds: int) -> None:
    cookie: bytes = CLIENT
    for qid in range(rounds):
        reply: Any = dns.query.udp(dns.message.from_wire(query(cookie, qid=qid)), LOOPBACK, port=port,
                                   timeout=3)
        assert reply.answer
        cookie = next(o.to_wire() for o in reply.options if o.otype == dns.edns.COOKIE)


@pytest.mark.integration
@pytest.mark.parametrize("workers", [1, 2])
def test_live_server_counts_queries_by_socket(tmp_path: Path, workers: int) -> None:
    with Secondns(tmp_path / "s", zone_files={"example.com": ZONE}, http=True,
                  server={"workers": workers}) as sec:
        _cookie_rounds(sec.port, 6)  # the first without a server cookie, five with one
        deadline = time.monotonic() + 5
        while True:  # workers push their counters once a second
            got = (_metric(sec, "secondns_udp_queries_total", socket="priority"),
                   _metric(sec, "secondns_udp_queries_total", socket="normal"))
            if (got[0] == 5 and got[1] >= 1) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        # nothing else sends a server cookie; the start-up checks and the first query do not
        assert got[0] == 5 and got[1] >= 1, got


@implementer(IReactorSocket)
class _Reactor:
    def __init__(self) -> None:
        self.plain: list[tuple[int, str]] = []
        self.adopted: list[int] = []

    def listenUDP(self, port: int, protocol: Any, interface: str) -> str:
        self.plain.append((port, interface))
        return "plain"

    def adoptDatagramPort(self, fd: int, family: int, protocol: Any) -> str:
        self.adopted.append(fd)
        return "adopted"


def test_listen_is_one_plain_socket_where_the_kernel_refuses_the_program(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    def refuse(sock: socket.socket, workers: int) -> None:
        raise OSError(92, "Protocol not available")

    monkeypatch.setattr(steering, "attach", refuse)
    monkeypatch.setattr(steering, "_support", None)
    reactor = _Reactor()
    for _ in range(2):
        assert steering.listen(reactor, LOOPBACK, 5353, lambda: None) == ["plain"]
    assert reactor.plain == [(5353, LOOPBACK)] * 2 and not reactor.adopted
    assert caplog.text.count("UDP priority for cookie clients off") == 1  # logged once


def test_listen_is_a_pair_where_the_kernel_takes_it() -> None:
    reactor = _Reactor()
    made: list[UDPServer] = []
    responder = responder_for(zone_from_text(ZONE, "example.com."))

    def protocol() -> UDPServer:
        made.append(UDPServer(responder))
        return made[-1]

    assert steering.listen(reactor, LOOPBACK, 0, protocol) == ["adopted", "adopted"]
    assert len(made) == 2 and made[0].read_first is not None  # the normal one reads the priority one first
