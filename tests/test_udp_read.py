"""The UDP listener's read path: lone-datagram reads, the reactor's direct dispatch, and the
memo of whole responses (serve/server.py ``UDPServer``, serve/reactor.py)."""

from __future__ import annotations

import errno
import logging
import socket
from collections import deque
from typing import Any

import dns.edns
import dns.message
import dns.rcode
import pytest
from zonetools import responder_for, zone_from_text

from secondns.serve import server as server_module
from secondns.serve.reactor import DirectReadReactor
from secondns.serve.responder import UDP, Responder, ServeSettings
from secondns.serve.server import UDPServer

BASE = "$TTL 300\n@ SOA ns1 host 1 3600 600 86400 300\n@ NS ns1\nns1 A 192.0.2.1\nwww A 192.0.2.2\n"
CLIENT = ("127.0.0.1", 5300)


def query(name: str = "www.example.com.", qid: int = 1, **kwargs: Any) -> bytes:
    q = dns.message.make_query(name, "A", **kwargs)
    q.id = qid
    return q.to_wire()


class FakeSocket:
    """recvfrom from a queue, EAGAIN when it is empty; counts the calls."""

    def __init__(self) -> None:
        self.queue: deque[bytes] = deque()
        self.calls = 0

    def recvfrom(self, size: int) -> tuple[bytes, tuple[str, int]]:
        self.calls += 1
        if not self.queue:
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
        return self.queue.popleft(), CLIENT


def listener(responder: Responder) -> tuple[UDPServer, FakeSocket, list[bytes]]:
    udp = UDPServer(responder)
    sock = FakeSocket()
    sent: list[bytes] = []
    udp._recvfrom = sock.recvfrom
    udp._sendto = lambda data, addr: sent.append(data)
    return udp, sock, sent


def example() -> Responder:
    return responder_for(zone_from_text(BASE, "example.com."))


# -- lone-datagram reads


def test_a_lone_datagram_costs_one_recvfrom_not_two() -> None:
    """After a turn that found one datagram, a turn reads one and returns: no recvfrom that
    ends in EAGAIN (epoll is level-triggered: another datagram wakes the reactor again)."""
    udp, sock, sent = listener(example())
    sock.queue.append(query(qid=1))
    udp._read()  # batch mode: the datagram, then EAGAIN
    assert sock.calls == 2 and len(sent) == 1
    for qid in range(2, 12):
        sock.calls = 0
        sock.queue.append(query(qid=qid))
        udp._read()
        assert sock.calls == 1, f"turn {qid}"
        assert dns.message.from_wire(sent[-1]).id == qid
    assert len(sent) == 11


def test_queued_datagrams_in_lone_mode_are_all_answered_and_end_the_mode() -> None:
    udp, sock, sent = listener(example())
    sock.queue.append(query(qid=1))
    udp._read()  # -> lone mode
    sock.queue.extend(query(qid=i) for i in range(100, 140))
    turns = 0
    while sock.queue and turns < 100:  # bounded: each turn reads one at least
        udp._read()
        turns += 1
    assert not sock.queue
    assert turns <= server_module._LONE_PROBE  # the probe turn read the rest at once
    assert sorted(dns.message.from_wire(m).id for m in sent[1:]) == list(range(100, 140))
    sock.queue.extend(query(qid=i) for i in range(200, 205))
    sock.calls = 0
    udp._read()  # batch mode again: all five in one turn, then EAGAIN
    assert sock.calls == 6 and not sock.queue


def test_lone_mode_probes_for_a_queue_regularly() -> None:
    """Each _LONE_PROBE turns one looks for a second datagram (and finds none here: still lone)."""
    udp, sock, sent = listener(example())
    calls = []
    for qid in range(1, 3 * server_module._LONE_PROBE):
        sock.calls = 0
        sock.queue.append(query(qid=qid))
        udp._read()
        calls.append(sock.calls)
    assert calls.count(2) == 3  # the first (batch) turn and two probes
    assert len(sent) == len(calls)


# -- direct dispatch from the poll loop


@pytest.fixture
def reactor() -> Any:
    r = DirectReadReactor()
    yield r
    for selectable in r.removeAll():
        selectable.connectionLost(None)
    r._poller.close()
    r.waker.connectionLost(None)


def exchange(reactor: Any, port: int, wire: bytes, turns: int = 20) -> bytes:
    """Send *wire* to the listener and run the reactor's poll loop until the reply arrives."""
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.setblocking(False)
    try:
        client.sendto(wire, ("127.0.0.1", port))
        for _ in range(turns):  # bounded
            reactor.doPoll(0.2)
            try:
                return client.recv(4096)
            except BlockingIOError:
                continue
    finally:
        client.close()
    raise AssertionError("no reply")


def test_a_listeners_datagram_is_read_from_the_poll_loop_directly(reactor: Any,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from twisted.python import log as twisted_log

    udp = UDPServer(example())
    port = reactor.listenUDP(0, udp, interface="127.0.0.1")
    wrapped: list[Any] = []
    real = twisted_log.callWithLogger

    def counting(logger: Any, func: Any, *args: Any, **kw: Any) -> Any:
        wrapped.append(logger)
        return real(logger, func, *args, **kw)

    monkeypatch.setattr(twisted_log, "callWithLogger", counting)
    for qid in (7, 8):
        reply = dns.message.from_wire(exchange(reactor, port.getHost().port, query(qid=qid)))
        assert reply.id == qid and reply.answer[0][0].to_text() == "192.0.2.2"
    assert port not in wrapped  # never through the logging wrapper
    port.stopListening()
    assert not reactor._direct  # at once: its descriptor may be reused
    reactor.runUntilCurrent()  # connectionLost, then stopProtocol
    assert not reactor._wanted


def test_an_exception_on_the_direct_path_is_logged_and_the_listener_keeps_answering(
        reactor: Any, caplog: pytest.LogCaptureFixture) -> None:
    udp = UDPServer(example())
    port = reactor.listenUDP(0, udp, interface="127.0.0.1")
    real = udp._recvfrom
    failures = [OSError(errno.EIO, "injected")]

    def failing(size: int) -> Any:
        if failures:
            raise failures.pop()
        return real(size)

    udp._recvfrom = failing
    with caplog.at_level(logging.ERROR, logger="secondns"):
        reply = dns.message.from_wire(exchange(reactor, port.getHost().port, query(qid=9)))
    assert reply.id == 9 and reply.rcode() == dns.rcode.NOERROR
    assert any("still listening" in r.getMessage() for r in caplog.records)
    assert port.connected  # not disconnected, as Twisted's own path would have done


# -- the memo of whole responses


def test_a_repeat_is_answered_from_the_memo_with_its_own_id_and_case(monkeypatch: pytest.MonkeyPatch) -> None:
    r = example()
    udp, _, sent = listener(r)
    fresh = example()
    keyed: list[bytes] = []
    real = server_module.cache_key
    monkeypatch.setattr(server_module, "cache_key", lambda d, tcp, m: keyed.append(d) or real(d, tcp, m))
    names = ["www.example.com.", "www.example.com.", "WwW.eXample.com.", "WwW.eXample.com.",
             "www.example.com.", "WwW.eXample.com."]
    for qid, name in enumerate(names, start=1):
        wire = query(name, qid=qid, use_edns=0)
        udp.datagramReceived(wire, CLIENT)
        assert sent[-1] == fresh.respond(wire, UDP, CLIENT)  # octet for octet
        assert dns.message.from_wire(sent[-1]).question[0].name.to_text() == name
    assert len(keyed) == 4  # per case (the key says whether there is upper case): the miss, the first hit
    assert len(udp.recent) == 2
    assert udp.recent[query("WwW.eXample.com.", qid=0, use_edns=0)[2:]] == sent[-1][2:]  # whole response
    assert sum(r.stats.rcodes) == 6


def test_the_memo_is_emptied_when_the_zone_is_replaced() -> None:
    r = example()
    udp, _, sent = listener(r)
    for qid in (1, 2, 3):
        udp.datagramReceived(query(qid=qid), CLIENT)
    assert udp.recent
    text = BASE.replace(" 1 3600", " 2 3600").replace("192.0.2.2", "192.0.2.99")
    new = zone_from_text(text, "example.com.")
    r.registry.swap(new.origin, new, None)  # a whole new version (AXFR)
    assert not udp.recent
    udp.datagramReceived(query(qid=4), CLIENT)
    udp.datagramReceived(query(qid=5), CLIENT)
    assert dns.message.from_wire(sent[-1]).answer[0][0].to_text() == "192.0.2.99"
    assert udp.recent
    r.cache.clear()
    assert not udp.recent
    udp.stopProtocol()
    assert r.cache.memos == []


def test_cookie_and_rrl_hits_are_not_answered_from_the_memo() -> None:
    """A server cookie is per client and RRL accounts each response: such hits memo the key
    only, so every answer still gets its own cookie and its RRL verdict."""
    cookie = dns.edns.GenericOption(dns.edns.COOKIE, bytes.fromhex("0102030405060708"))
    r = responder_for(zone_from_text(BASE, "example.com."),
                      settings=ServeSettings(cookie_secrets=(b"k" * 16,)))
    udp, _, sent = listener(r)
    for qid in (1, 2, 3):
        udp.datagramReceived(query(qid=qid, use_edns=0, options=[cookie]), CLIENT)
    assert not udp.recent and udp.recent_keys
    opts = dns.message.from_wire(sent[-1]).options
    assert any(o.otype == dns.edns.COOKIE and len(o.to_wire()) == 24 for o in opts)


def test_a_transport_without_a_reactor_is_read_as_before() -> None:
    """startProtocol's direct-dispatch request is a no-op for a transport with no reactor (a
    test's fake) or a reactor without ``read_directly`` (any other Twisted reactor)."""
    from types import SimpleNamespace

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        udp = UDPServer(example())
        udp.transport = SimpleNamespace(socket=sock, maxPacketSize=8192)  # type: ignore[assignment]
        udp.startProtocol()
        assert udp._direct_ports == []
        udp.transport.reactor = object()  # type: ignore[attr-defined]
        udp.startProtocol()
        assert udp._direct_ports == []
    finally:
        sock.close()
