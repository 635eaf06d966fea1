"""The running server over real sockets: TCP framing and pipelining (RFC 7766), the idle
timeout, and hostile traffic that must never take it down."""

from __future__ import annotations

import random
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.rcode
import pytest
from peers import Secondns, query

BIG = "".join(f'big IN TXT "{i:04d} {"x" * 240}"\n' for i in range(16))  # ~4 KB answer
ZONE = """$TTL 300
@ IN SOA ns1 host 1 3600 600 86400 300
  IN NS ns1
ns1 IN A 192.0.2.1
www IN A 192.0.2.2
""" + BIG

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secondns]:
    base: Path = tmp_path_factory.mktemp("live")
    with Secondns(base / "s", zone_files={"example.com": ZONE},
                  server={"tcp-idle-timeout": 1}) as sec:
        yield sec


def framed(qname: str, qtype: str, msg_id: int) -> bytes:
    msg = dns.message.make_query(qname, qtype)
    msg.id = msg_id
    wire = msg.to_wire()
    return struct.pack("!H", len(wire)) + wire


def read_message(sock: socket.socket) -> dns.message.Message:
    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data

    (length,) = struct.unpack("!H", exactly(2))
    return dns.message.from_wire(exactly(length))


def test_pipelined_queries_in_one_segment_are_all_answered_in_order(server: Secondns) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=3) as sock:
        names = [("www.example.com.", "A"), ("nope.example.com.", "A"), ("example.com.", "SOA")]
        sock.sendall(b"".join(framed(n, t, 100 + i) for i, (n, t) in enumerate(names)))
        replies = [read_message(sock) for _ in names]
    assert [r.id for r in replies] == [100, 101, 102]
    assert [r.rcode() for r in replies] == [dns.rcode.NOERROR, dns.rcode.NXDOMAIN, dns.rcode.NOERROR]


def test_a_query_split_across_segments_is_reassembled(server: Secondns) -> None:
    data = framed("www.example.com.", "A", 7)
    with socket.create_connection(("127.0.0.1", server.port), timeout=3) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(data)):
            sock.send(data[i:i + 1])
            time.sleep(0.002)
        assert read_message(sock).answer


def test_idle_tcp_connection_is_closed_after_the_timeout(server: Secondns) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(framed("www.example.com.", "A", 1))
        read_message(sock)
        start = time.monotonic()
        assert sock.recv(1) == b""  # the server closes the idle connection
        assert 0.5 < time.monotonic() - start < 4


def test_hostile_traffic_never_takes_the_server_down(server: Secondns) -> None:
    rng = random.Random(7)
    valid = dns.message.make_query("www.example.com.", "A").to_wire()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for _ in range(2000):  # bounded: random bytes and mutated queries over UDP
            if rng.random() < 0.5:
                packet = rng.randbytes(rng.randint(0, 300))
            else:
                packet = bytearray(valid)
                for _ in range(rng.randint(1, 4)):
                    packet[rng.randrange(len(packet))] = rng.randrange(256)
                packet = bytes(packet)
            udp.sendto(packet, ("127.0.0.1", server.port))
    finally:
        udp.close()
    for _ in range(50):  # TCP: garbage lengths, truncated frames, abrupt closes
        with socket.create_connection(("127.0.0.1", server.port), timeout=3) as sock:
            sock.sendall(rng.randbytes(rng.randint(1, 200)))
    assert server.running()
    assert query(server.port, "www.example.com.", "A").answer
    assert query(server.port, "www.example.com.", "A", tcp=True).answer


def _rss_mib(pid: int | None) -> float:
    assert pid is not None
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_client_that_never_reads_cannot_grow_server_memory(server: Secondns) -> None:
    # Review finding: answers to pipelined queries piled up in the write buffer without limit
    # (3.4 GB in 20 s).  With backpressure the server stops reading from such a client.
    before = _rss_mib(server.pid)
    query_wire = dns.message.make_query("big.example.com.", "TXT").to_wire()
    burst = (struct.pack("!H", len(query_wire)) + query_wire) * 2000
    sent = 0
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.port))
        sock.settimeout(2)
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:  # bounded: stops when the server stops reading
            try:
                sock.sendall(burst)
            except (TimeoutError, OSError):
                break
            sent += 2000
        time.sleep(0.5)
        grown = _rss_mib(server.pid) - before
    assert sent >= 2000
    # Without backpressure each query queued a ~4 KB answer: 2000 of them alone are 8 MB.
    assert grown < 30, f"RSS grew {grown:.0f} MiB after {sent} unread queries"
    assert query(server.port, "www.example.com.", "A").answer  # and it still serves others
