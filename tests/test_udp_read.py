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

from secondns.serve.reactor import DirectReadReactor
from secondns.serve.responder import Responder
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
