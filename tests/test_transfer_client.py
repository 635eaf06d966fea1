"""The Twisted transfer client against dead primaries: every call must end, never hang.

Each case runs the real reactor in a subprocess with a hard timeout, so a
Deferred that never fires fails the test instead of stalling the suite.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from peers import free_port

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import sys, time
    from twisted.internet import reactor
    from secondns.config import Endpoint, ZoneConfig
    from secondns.names import from_text
    from secondns.transfer.client import TwistedTransferClient

    port, what = int(sys.argv[1]), sys.argv[2]
    zc = ZoneConfig("example.com.", from_text("example.com."),
                    primaries=(Endpoint("127.0.0.1", port),), transfer_timeout=5, transfer_idle_timeout=2)
    client = TwistedTransferClient(reactor, udp_timeout=0.5, udp_tries=2, connect_timeout=2)
    start = time.monotonic()

    def done(result):
        print(f"{type(getattr(result, 'value', result)).__name__}: {getattr(result, 'value', result)}")
        print(f"elapsed {time.monotonic() - start:.2f}")
        reactor.stop()

    def go():
        d = client.soa_query(zc.primaries[0], zc) if what == "soa" else \\
            client.transfer(zc.primaries[0], zc, None, "axfr")
        d.addBoth(done)

    reactor.callWhenRunning(go)
    reactor.run()
""")


def run_script(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a client script in a fresh interpreter (a reactor of its own), output captured."""
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                          timeout=30, cwd=ROOT, env={"PYTHONPATH": str(ROOT)})


def run(what: str) -> str:
    port = free_port()  # nothing listens there
    proc = run_script(SCRIPT, str(port), what)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_soa_probe_to_a_closed_udp_port_fails_at_once_as_refused() -> None:
    # The ICMP port unreachable ends the probe at once (Twisted stops the port on the socket
    # error without calling connectionRefused; _UdpProbe.stopProtocol turns that into a
    # refusal), well before the first 0.5 s retry timer, so the next primary is tried at once.
    out = run("soa")
    assert "refused the connection" in out, out
    elapsed = float(out.rsplit("elapsed ", 1)[1])
    assert elapsed < 0.4, out


def test_axfr_from_a_closed_tcp_port_fails_as_unreachable() -> None:
    out = run("axfr")
    assert out.startswith("ConnectFailed:"), out
    assert "connection refused" in out


SPOOF_SCRIPT = textwrap.dedent("""
    import socket, threading
    import dns.message, dns.rrset, dns.tsig, dns.name
    from twisted.internet import reactor
    from secondns.config import Endpoint, ZoneConfig, TsigKey
    from secondns.names import from_text
    from secondns.transfer.client import TwistedTransferClient

    SECRET = b"0123456789abcdef0123456789abcdef"
    ring = {dns.name.from_text("k."): dns.tsig.Key("k.", SECRET, "hmac-sha256")}
    srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind(("127.0.0.1", 0))

    def serve():
        while True:
            data, addr = srv.recvfrom(4096)
            query = dns.message.from_wire(data, keyring=ring)
            # An off-path answer with another ID first, then the genuine signed one.
            stray = dns.message.make_response(dns.message.make_query("example.com.", "SOA"))
            stray.id = (query.id + 1) & 0xFFFF
            srv.sendto(stray.to_wire(), addr)
            real = dns.message.make_response(query)
            real.answer.append(dns.rrset.from_text("example.com.", 300, "IN", "SOA",
                                                   "ns1.example.com. h.example.com. 7 1 1 1 1"))
            srv.sendto(real.to_wire(), addr)

    threading.Thread(target=serve, daemon=True).start()
    key = TsigKey("k", "hmac-sha256", SECRET)
    zc = ZoneConfig("example.com.", from_text("example.com."),
                    primaries=(Endpoint("127.0.0.1", srv.getsockname()[1]),), key=key)
    d = TwistedTransferClient(reactor, udp_timeout=1, udp_tries=1).soa_query(zc.primaries[0], zc)
    d.addBoth(lambda r: (print(type(getattr(r, "value", r)).__name__, getattr(r, "serial", None)),
                         reactor.stop()))
    reactor.run()
""")


def test_stray_datagram_with_another_id_does_not_fail_a_signed_probe() -> None:
    # Review finding: with TSIG, the stray reply was TSIG-checked before its ID, failing the
    # probe (TSIG UNSIGNED) instead of being ignored as RFC 5452 9.1 wants.
    proc = run_script(SPOOF_SCRIPT)
    assert proc.stdout.strip() == "SoaProbeResult 7", proc.stdout + proc.stderr


SHARED_SCRIPT = textwrap.dedent("""
    import socket, threading
    import dns.message, dns.rrset
    from twisted.internet import defer, reactor
    from secondns.config import Endpoint, ZoneConfig
    from secondns.names import from_text
    from secondns.transfer.client import TwistedTransferClient

    srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind(("127.0.0.1", 0))
    N = 200

    def serve():
        pending = []
        while True:
            data, addr = srv.recvfrom(4096)
            pending.append((data, addr))
            if len(pending) < 20:
                continue
            # Answer in reverse order: replies must be matched by ID and question, not order.
            for data, addr in reversed(pending):
                q = dns.message.from_wire(data)
                name = q.question[0].name.to_text()
                serial = int(name.split(".")[0][1:])
                r = dns.message.make_response(q)
                r.flags |= dns.flags.AA
                r.answer.append(dns.rrset.from_text(name, 300, "IN", "SOA",
                                                    f"ns1.{name} h.{name} {serial} 1 1 1 1"))
                srv.sendto(r.to_wire(), addr)
            pending = []

    threading.Thread(target=serve, daemon=True).start()
    primary = Endpoint("127.0.0.1", srv.getsockname()[1])
    client = TwistedTransferClient(reactor, udp_timeout=2, udp_tries=1)
    zcs = [ZoneConfig(f"z{i}.test.", from_text(f"z{i}.test."), primaries=(primary,)) for i in range(N)]

    def go():
        ds = [client.soa_query(primary, zc) for zc in zcs]
        print("sockets", client.udp.opened)
        def done(results):
            ok = sum(1 for i, (good, r) in enumerate(results) if good and r.serial == i)
            print("matched", ok, "of", N)
            reactor.stop()
        defer.DeferredList(ds, consumeErrors=True).addCallback(done)

    reactor.callWhenRunning(go)
    reactor.run()
""")


def test_concurrent_soa_probes_share_one_socket_and_get_their_own_answers() -> None:
    # Issue 14: one socket per probe ran 10,000 zones out of file descriptors.
    proc = run_script(SHARED_SCRIPT)
    assert proc.stdout.split("\n")[:2] == ["sockets 1", "matched 200 of 200"], proc.stdout + proc.stderr


PACED_SCRIPT = textwrap.dedent("""
    import socket, threading
    import dns.flags, dns.message, dns.rrset
    from twisted.internet import defer, reactor, task
    from secondns.config import Endpoint, ZoneConfig
    from secondns.names import from_text
    from secondns.transfer import client as client_module
    from secondns.transfer.client import TwistedTransferClient

    client_module._SoaSocket.LINGER = 0.5
    srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind(("127.0.0.1", 0))
    ports = set()

    def serve():
        while True:
            data, addr = srv.recvfrom(4096)
            ports.add(addr[1])
            q = dns.message.from_wire(data)
            name = q.question[0].name.to_text()
            r = dns.message.make_response(q)
            r.flags |= dns.flags.AA
            r.answer.append(dns.rrset.from_text(name, 300, "IN", "SOA", f"ns1.{name} h.{name} 1 1 1 1 1"))
            srv.sendto(r.to_wire(), addr)

    threading.Thread(target=serve, daemon=True).start()
    primary = Endpoint("127.0.0.1", srv.getsockname()[1])
    client = TwistedTransferClient(reactor, udp_timeout=2, udp_tries=1)
    zc = ZoneConfig("z.test.", from_text("z.test."), primaries=(primary,))

    @defer.inlineCallbacks
    def go():
        for _ in range(10):  # paced: each probe answered before the next, 50 ms apart
            yield client.soa_query(primary, zc)
            yield task.deferLater(reactor, 0.05, lambda: None)
        print("paced", client.udp.opened, len(ports))
        yield task.deferLater(reactor, 1.0, lambda: None)  # idle past LINGER
        yield client.soa_query(primary, zc)
        print("after idle", client.udp.opened, len(ports))
        reactor.stop()

    reactor.callWhenRunning(go)
    reactor.run()
""")


def test_paced_soa_probes_reuse_the_socket_until_it_idles() -> None:
    # Issue 14: at 20 checks a second each probe found the socket idle and bound a new one
    # (~0.8 ms of socket calls each); the source port still changes after LINGER idle.
    proc = run_script(PACED_SCRIPT)
    assert proc.stdout.split("\n")[:2] == ["paced 1 1", "after idle 2 2"], proc.stdout + proc.stderr
