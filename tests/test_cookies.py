"""DNS cookies (RFC 7873, server cookies as RFC 9018): dnspython in process, dig and kdig live."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import dns.edns
import dns.message
import dns.rcode
import pytest
from peers import LOOPBACK, Secondns, dig
from zonetools import responder_for, zone_from_text

from secondns.serve import cookies
from secondns.serve.responder import UDP, Responder, ServeSettings

ZONE = "$TTL 300\n@ SOA ns1 host 1 3600 600 86400 300\n@ NS ns1\nns1 A 192.0.2.1\nwww A 192.0.2.2\n"
SECRET = bytes(range(16))
CLIENT = bytes.fromhex("0102030405060708")


def responder(secrets: tuple[bytes, ...] = (SECRET,)) -> Responder:
    r = responder_for(zone_from_text(ZONE, "example.com."), settings=ServeSettings(cookie_secrets=secrets))
    r.wall = lambda: 1_700_000_000.0
    return r


def ask(r: Responder, cookie: bytes | None, name: str = "www.example.com.") -> dns.message.Message:
    options = [dns.edns.GenericOption(dns.edns.COOKIE, cookie)] if cookie is not None else []
    query = dns.message.make_query(name, "A", use_edns=0, options=options)
    out = r.respond(query.to_wire(), UDP, ("127.0.0.1", 5300))
    assert out is not None
    return dns.message.from_wire(out)


def cookie_of(msg: dns.message.Message) -> bytes | None:
    for option in msg.options:
        if option.otype == dns.edns.COOKIE:
            return option.to_wire()
    return None


def test_client_cookie_gets_a_valid_server_cookie_which_is_then_accepted_and_echoed() -> None:
    r = responder()
    first = ask(r, CLIENT)
    got = cookie_of(first)
    assert first.rcode() == dns.rcode.NOERROR and first.answer
    assert got is not None and got[:8] == CLIENT and len(got) == 24
    assert cookies.valid([SECRET], CLIENT, got[8:], cookies.client_ip("127.0.0.1"), 1_700_000_000)
    second = ask(r, got)
    assert second.rcode() == dns.rcode.NOERROR and second.answer
    assert cookie_of(second) == got  # RFC 9018 4.3: fresh, so echoed


def test_a_bad_server_cookie_gets_a_normal_answer_and_a_new_cookie() -> None:
    r = responder()
    reply = ask(r, CLIENT + bytes(16))  # RFC 7873 5.2.4: not ours
    got = cookie_of(reply)
    assert reply.rcode() == dns.rcode.NOERROR and got is not None and got[8:] != bytes(16)
    assert cookies.valid([SECRET], CLIENT, got[8:], cookies.client_ip("127.0.0.1"), 1_700_000_000)


def test_an_old_secret_is_replaced_by_the_current_one() -> None:
    old = responder((bytes(16),))
    got = cookie_of(ask(old, CLIENT))
    assert got is not None
    reply = ask(responder((SECRET, bytes(16))), got)
    fresh = cookie_of(reply)
    assert fresh is not None and fresh != got
    assert cookies.valid([SECRET], CLIENT, fresh[8:], cookies.client_ip("127.0.0.1"), 1_700_000_000)


@pytest.mark.parametrize("length", [0, 5, 9, 15, 41])
def test_a_malformed_cookie_is_formerr(length: int) -> None:
    assert ask(responder(), bytes(length)).rcode() == dns.rcode.FORMERR  # RFC 7873 5.2.2


def test_a_cookie_query_is_not_answered_from_a_cached_cookieless_answer() -> None:
    r = responder()
    ask(r, None)
    ask(r, None)
    assert len(r.cache) == 1
    option = cookie_of(ask(r, CLIENT))
    assert option is not None
    # Its answer has an entry of its own, without the cookie made for that one client.
    assert len(r.cache) == 2
    entries = list(r.cache.probation.values()) + list(r.cache.protected.values())
    assert not any(option[8:] in entry[1] for entry in entries)


def test_without_secrets_the_option_is_ignored() -> None:
    assert cookie_of(ask(responder(()), CLIENT)) is None


# --- live, against independent clients ---------------------------------------------------------



@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secondns]:
    base: Path = tmp_path_factory.mktemp("cookies")
    with Secondns(base / "s", zone_files={"example.com": ZONE}) as sec:
        yield sec


_DIG_COOKIE = re.compile(r"; COOKIE: ([0-9a-f]+)(?: \((\w+)\))?")


@pytest.mark.integration
def test_dig_gets_a_good_cookie_and_its_second_query_is_accepted(server: Secondns) -> None:
    first = dig(server.port, "www.example.com", "A", "+cookie")
    match = _DIG_COOKIE.search(first.text)
    assert first.status == "NOERROR" and match is not None and match.group(2) == "good", first.text
    full = match.group(1)
    assert len(full) == 48
    second = dig(server.port, "www.example.com", "A", f"+cookie={full}")
    again = _DIG_COOKIE.search(second.text)
    assert second.status == "NOERROR" and second.answer and again is not None
    assert again.group(1) == full and again.group(2) == "good"  # accepted: echoed as it was


@pytest.mark.integration
def test_kdig_gets_a_cookie_and_its_second_query_is_accepted(server: Secondns) -> None:
    def kdig(*args: str) -> str:
        out = subprocess.run(["kdig", f"@{LOOPBACK}", "-p", str(server.port), "+norec", "+time=2",
                              "+retry=0", *args, "www.example.com", "A"],
                             capture_output=True, text=True, timeout=15, check=False)
        return out.stdout + out.stderr
    first = kdig("+cookie")
    match = re.search(r"COOKIE: ([0-9a-fA-F]+)", first)
    assert "NOERROR" in first and match is not None, first
    full = match.group(1).lower()
    assert len(full) == 48  # 8 octets of kdig's client cookie, 16 of our server cookie (RFC 9018)
    second = kdig(f"+cookie={full}")
    assert "NOERROR" in second and "192.0.2.2" in second
    assert full in second.lower()  # our fresh server cookie came back unchanged


@pytest.mark.integration
def test_workers_share_the_secret(tmp_path: Path) -> None:
    # SO_REUSEPORT spreads dig's queries (a new source port each) over the workers by 4-tuple;
    # a cookie made by one must be accepted, i.e. echoed, by every other.
    with Secondns(tmp_path / "s", zone_files={"example.com": ZONE}, server={"workers": 2}) as sec:
        first = _DIG_COOKIE.search(dig(sec.port, "www.example.com", "A", "+cookie").text)
        assert first is not None
        for _ in range(8):
            reply = dig(sec.port, "www.example.com", "A", f"+cookie={first.group(1)}")
            again = _DIG_COOKIE.search(reply.text)
            assert again is not None and again.group(1) == first.group(1), reply.text


@pytest.mark.integration
def test_two_servers_with_one_secret_file_accept_each_others_cookies(tmp_path: Path) -> None:
    # RFC 9018: several servers behind one address share the secret; the old line still counts.
    secret_file = tmp_path / "cookie.secret"
    secret_file.write_text("000102030405060708090a0b0c0d0e0f\nffeeddccbbaa99887766554433221100\n")
    settings = {"cookies": {"secret-file": str(secret_file)}}
    with Secondns(tmp_path / "a", zone_files={"example.com": ZONE}, server=settings) as a:
        made = _DIG_COOKIE.search(dig(a.port, "www.example.com", "A", "+cookie").text)
    assert made is not None
    full = bytes.fromhex(made.group(1))
    assert cookies.valid([bytes(range(16))], full[:8], full[8:], cookies.client_ip(LOOPBACK),
                         int.from_bytes(full[12:16], "big"))  # made with the file's first secret
    with Secondns(tmp_path / "b", zone_files={"example.com": ZONE}, server=settings) as b:
        again = _DIG_COOKIE.search(dig(b.port, "www.example.com", "A", f"+cookie={made.group(1)}").text)
    assert again is not None and again.group(1) == made.group(1)  # accepted by the other: echoed


def test_repeated_cookie_queries_are_cache_hits_each_with_its_own_clients_cookie() -> None:
    """Resolvers send a cookie on every query: those must still be answered from the cache
    (RFC 7873 5.2 only asks for the client's own COOKIE option in the answer)."""
    from secondns.serve.server import UDPServer

    r = responder()
    server = UDPServer(r)
    sent: list[bytes] = []
    server._sendto = lambda data, addr: sent.append(data)
    misses = []
    respond = r.respond

    def counting(data: bytes, transport: int, addr: tuple[str, int]) -> bytes | None:
        misses.append(data)
        return respond(data, transport, addr)

    r.respond = counting  # type: ignore[method-assign]
    clients = [(("127.0.0.1", 5300), CLIENT), (("127.0.0.7", 5301), bytes.fromhex("a1a2a3a4a5a6a7a8"))]
    for round_ in range(3):
        for addr, client in clients:
            name = "WwW.example.com." if round_ == 2 else "www.example.com."
            query = dns.message.make_query(name, "A", use_edns=0,
                                           options=[dns.edns.GenericOption(dns.edns.COOKIE, client)])
            server.datagramReceived(query.to_wire(), addr)
            reply = dns.message.from_wire(sent[-1])
            assert reply.id == query.id and reply.question[0].name.labels == query.question[0].name.labels
            assert [rr.to_text().lower() for rr in reply.answer] == ["www.example.com. 300 in a 192.0.2.2"]
            option = cookie_of(reply)
            assert option is not None and option[:8] == client
            ip = cookies.client_ip(addr[0])
            assert cookies.valid((SECRET,), client, option[8:], ip, 1_700_000_000)
            assert not cookies.valid((SECRET,), client, option[8:], cookies.client_ip("127.0.0.9"),
                                     1_700_000_000)
            # Its second query carries the server cookie, also answered from the cache.
            again = dns.message.make_query("www.example.com.", "A", use_edns=0,
                                           options=[dns.edns.GenericOption(dns.edns.COOKIE, option)])
            server.datagramReceived(again.to_wire(), addr)
            assert cookie_of(dns.message.from_wire(sent[-1])) == option  # echoed (RFC 9018 4.3)
    # The first cookie query of the lowercase and of the mixed-case question filled the cache.
    assert len(misses) == 2, len(misses)
    assert len(sent) == 12


def test_a_memoised_cookie_is_replaced_after_half_an_hour(monkeypatch: pytest.MonkeyPatch) -> None:
    hashes = []
    siphash = cookies.siphash24

    def counting(key: bytes, data: bytes) -> bytes:
        hashes.append(data)
        return siphash(key, data)

    monkeypatch.setattr(cookies, "siphash24", counting)
    r = responder()
    first = cookie_of(ask(r, CLIENT))
    assert first is not None
    assert len(hashes) == 1
    r.wall = lambda: 1_700_000_000.0 + 60
    assert cookie_of(ask(r, CLIENT)) == first  # reused (RFC 9018 4.3), not hashed again
    assert cookie_of(ask(r, first)) == first  # checked once...
    assert cookie_of(ask(r, first)) == first  # ...then known
    assert len(hashes) == 2
    r.wall = lambda: 1_700_000_000.0 + cookies.REFRESH_AGE
    second = cookie_of(ask(r, CLIENT))
    assert second is not None and second != first
    assert int.from_bytes(second[12:16], "big") == 1_700_000_000 + cookies.REFRESH_AGE
    # An echoed server cookie is echoed only while under half an hour old.
    r.wall = lambda: 1_700_000_000.0 + cookies.REFRESH_AGE - 1
    assert cookie_of(ask(r, first)) == first
    r.wall = lambda: 1_700_000_000.0 + cookies.REFRESH_AGE
    assert cookie_of(ask(r, first)) == second


def test_cookie_queries_over_tcp_are_cache_hits_with_the_clients_cookie() -> None:
    import struct

    from twisted.internet.task import Clock
    from twisted.internet.testing import StringTransport

    from secondns.serve.server import TCPFactory

    r = responder()
    misses = []
    respond = r.respond

    def counting(data: bytes, transport: int, addr: tuple[str, int]) -> bytes | None:
        misses.append(data)
        return respond(data, transport, addr)

    r.respond = counting  # type: ignore[method-assign]
    proto = TCPFactory(r, Clock(), idle_timeout=30, max_connections=10).buildProtocol(None)
    transport = StringTransport()
    proto.makeConnection(transport)
    clients = [CLIENT, bytes.fromhex("b1b2b3b4b5b6b7b8"), CLIENT]
    for client in clients:
        wire = dns.message.make_query("www.example.com.", "A", use_edns=0,
                                      options=[dns.edns.GenericOption(dns.edns.COOKIE, client)]).to_wire()
        proto.dataReceived(struct.pack("!H", len(wire)) + wire)
    data = transport.value()
    pos = 0
    ip = cookies.client_ip(transport.getPeer().host)
    for client in clients:  # bounded by the three replies written
        (length,) = struct.unpack_from("!H", data, pos)
        reply = dns.message.from_wire(data[pos + 2:pos + 2 + length])
        pos += 2 + length
        option = cookie_of(reply)
        assert option is not None and option[:8] == client
        assert cookies.valid((SECRET,), client, option[8:], ip, 1_700_000_000)
        assert [rr.to_text() for rr in reply.answer] == ["www.example.com. 300 IN A 192.0.2.2"]
    assert pos == len(data)
    assert len(misses) == 1
