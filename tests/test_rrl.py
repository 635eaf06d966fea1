"""Response rate limiting (secondns/serve/rrl.py) against BIND 9's algorithm and behaviour.

The unit tests script a sequence on a fake clock; each expected verdict cites the rule of
BIND's lib/dns/rrl.c (debit_rrl_entry) or ns/client.c it comes from.  The live tests burst
queries at a running secondns (one worker and two) and, where BIND is installed, at ``named``
with the same ``rate-limit`` options, and compare.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import socket
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import dns.edns
import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from secondns.config import RateLimitConfig, parse_config
from secondns.errors import ConfigError
from secondns.names import from_text
from secondns.serve import rrl
from secondns.serve.rrl import DROP, OK, SLIP, RateLimiter
from secondns.serve.stats import RRL_KINDS, ServingStats
from tests.peers import LOOPBACK, Bind, Secondns, ZoneSpec, find_binary, wait_for

WWW = rrl.account(rrl.RESPONSE, from_text("www.example."), 1)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limiter(**kw: Any) -> tuple[RateLimiter, Clock, ServingStats]:
    clock = Clock()
    stats = ServingStats()
    return RateLimiter(RateLimitConfig(**kw), stats, clock), clock, stats


def test_scripted_sequence_follows_bind_debit_rrl_entry() -> None:
    lim, clock, stats = limiter(responses_per_second=2, window=3, slip=2)
    seq = [lim.check("192.0.2.1", WWW) for _ in range(10)]
    assert seq == [
        OK,    # new entry: "Treat entries older than the window as if they were just created": balance 2 -> 1
        OK,    # "if (--e->responses >= 0) return OK": 1 -> 0
        SLIP,  # 0 -> -1, negative: limited; "if (e->slip_cnt++ == 0) ... return SLIP" (count 0 -> 1)
        DROP,  # -2; count 1 -> 2 >= slip: reset to 0, DROP
        SLIP,  # -3; count 0 again: SLIP
        DROP,  # -4
        SLIP,  # -5
        DROP,  # -6 = min = -window * rate
        SLIP,  # -7 clamped: "if (e->responses < min) e->responses = min" -> -6
        DROP,  # -6 (clamped)
    ]
    assert lim.table[(0xC0000200, WWW)][0] == -6  # the debt is bounded: -window * rate
    assert (stats.rrl_slipped, stats.rrl_dropped) == (4, 4)
    clock.now += 1  # "Credit tokens earned during elapsed time": -6 + 2 = -4, still in debt
    assert [lim.check("192.0.2.1", WWW) for _ in range(2)] == [SLIP, DROP]  # -5, -6
    clock.now += 3  # age 3 == window: credited 3 * 2 = 6 -> 0, not reset: first debit -1
    assert lim.check("192.0.2.1", WWW) == SLIP
    clock.now += 4  # age 4 > window: "Treat entries older than the window as ... just created"
    assert [lim.check("192.0.2.1", WWW) for _ in range(3)] == [OK, OK, SLIP]


def test_balance_capped_at_rate() -> None:
    lim, clock, _ = limiter(responses_per_second=3, window=15, slip=2)
    assert lim.check("192.0.2.1", WWW) == OK  # 3 -> 2
    clock.now += 2  # 2 + 2 * 3 = 8, capped: "if (e->responses > rate) e->responses = rate"
    assert [lim.check("192.0.2.1", WWW) for _ in range(4)] == [OK, OK, OK, SLIP]


@pytest.mark.parametrize(("slip", "expected"), [
    (0, [DROP] * 6),  # "slip != 0" is false: always dropped
    (1, [SLIP] * 6),  # slip_cnt reset at once: every limited response slips
    (3, [SLIP, DROP, DROP, SLIP, DROP, DROP]),
])
def test_slip_values(slip: int, expected: list[int]) -> None:
    lim, _, _ = limiter(responses_per_second=1, window=15, slip=slip)
    assert lim.check("192.0.2.1", WWW) == OK
    assert [lim.check("192.0.2.1", WWW) for _ in range(6)] == expected


def test_errors_are_never_slipped() -> None:
    # ns/client.c ns_client_error: "Some error responses cannot be 'slipped', so don't try".
    lim, _, stats = limiter(responses_per_second=2, slip=1)
    seq = [lim.check("192.0.2.1", rrl.ERROR_ACCOUNT) for _ in range(5)]
    assert seq == [OK, OK, DROP, DROP, DROP]
    assert (stats.rrl_dropped, stats.rrl_slipped) == (3, 0)


def test_limited_responses_are_also_counted_by_kind() -> None:
    lim, _, stats = limiter(responses_per_second=1, slip=2)
    nx = rrl.account(rrl.NXDOMAIN_KIND, from_text("example."))
    for acct in (WWW, nx, rrl.ERROR_ACCOUNT):
        for _ in range(5):  # OK, then SLIP DROP SLIP DROP (errors: DROP x 4)
            lim.check("192.0.2.1", acct)
    by_kind = dict(zip(RRL_KINDS, zip(stats.rrl_by_kind[::2], stats.rrl_by_kind[1::2], strict=True),
                       strict=True))
    assert by_kind == {"response": (2, 2), "nodata": (0, 0), "nxdomain": (2, 2), "referral": (0, 0),
                       "error": (4, 0)}
    assert sum(stats.rrl_by_kind[::2]) == stats.rrl_dropped
    assert sum(stats.rrl_by_kind[1::2]) == stats.rrl_slipped


def test_per_kind_rates_default_to_responses_and_zero_means_unlimited() -> None:
    lim, _, _ = limiter(responses_per_second=1, nxdomains_per_second=0)
    nx = rrl.account(rrl.NXDOMAIN_KIND, from_text("example."))
    assert all(lim.check("192.0.2.1", nx) == OK for _ in range(50))  # rate 0: never limited
    ref = rrl.account(rrl.REFERRAL, from_text("sub.example."))
    assert [lim.check("192.0.2.1", ref) for _ in range(2)] == [OK, SLIP]  # referrals: 1/s default
    assert lim.check("192.0.2.1", rrl.UNLIMITED_ACCOUNT) == OK


def test_prefixes_share_an_account_and_exempt_clients_are_not_limited() -> None:
    lim, _, _ = limiter(responses_per_second=1, ipv6_prefix_length=56,
                        exempt=(ipaddress.ip_network("192.0.2.77/32"),))
    assert lim.check("192.0.2.1", WWW) == OK
    assert lim.check("192.0.2.200", WWW) == SLIP  # same /24 (ipv4-prefix-length 24)
    assert lim.check("192.0.3.1", WWW) == OK  # another /24: another account
    assert all(lim.check("192.0.2.77", WWW) == OK for _ in range(20))  # exempt
    assert lim.check("2001:db8:0:1::1", WWW) == OK
    assert lim.check("2001:db8:0:ff::2", WWW) == SLIP  # same /56
    assert lim.check("2001:db8:0:100::1", WWW) == OK  # another /56
    assert lim.check("::ffff:192.0.2.9", WWW) == DROP  # IPv4-mapped: the IPv4 /24's account


def test_log_only_counts_but_sends(caplog: pytest.LogCaptureFixture) -> None:
    lim, _, stats = limiter(responses_per_second=1, log_only=True)
    with caplog.at_level(logging.WARNING, logger="secondns.rrl"):
        assert [lim.check("192.0.2.1", WWW) for _ in range(5)] == [OK] * 5
    assert (stats.rrl_slipped, stats.rrl_dropped) == (2, 2)
    assert "would limit responses to 192.0.2.0/24 for www.example IN A" in caplog.text


def test_limit_log_once_per_second(caplog: pytest.LogCaptureFixture) -> None:
    lim, clock, _ = limiter(responses_per_second=1)
    nx = rrl.account(rrl.NXDOMAIN_KIND, from_text("example."))
    with caplog.at_level(logging.WARNING, logger="secondns.rrl"):
        for _ in range(10):
            lim.check("192.0.2.1", WWW)
            lim.check("192.0.2.1", nx)
        clock.now += 1
        lim.check("192.0.2.1", nx)  # still limited; the account not yet logged gets its line now
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "limit responses to 192.0.2.0/24 for www.example IN A"
    assert lines[1].startswith("limit NXDOMAIN responses to 192.0.2.0/24 for example")
    assert len(lines) == 2


def test_table_bounded_under_random_sources() -> None:
    lim, clock, _ = limiter(responses_per_second=5, max_table_size=1000)
    for i in range(20000):
        lim.check(str(ipaddress.IPv4Address(0x0A000000 + (i << 8))), WWW)
        if i % 3000 == 0:
            clock.now += 2
    assert len(lim.table) <= 1000


def test_penalised_entry_kept_over_idle_one() -> None:
    lim, clock, _ = limiter(responses_per_second=1, max_table_size=3, window=15)
    for _ in range(5):
        lim.check("192.0.2.1", WWW)  # in debt
    lim.check("198.51.100.1", WWW)  # in credit after two seconds
    clock.now += 2
    lim.check("203.0.113.1", WWW)
    lim.check("10.1.1.1", WWW)  # table full: the idle, in-credit entry goes, not the debtor
    prefixes = {k[0] for k in lim.table}
    assert 0xC0000200 in prefixes and 0xC6336400 not in prefixes


def parse(text: str) -> Any:
    return parse_config(text, "f.yaml")


def test_config_defaults_and_errors() -> None:
    cfg = parse("server:\n  workers: 1\n  rate-limit:\n    responses-per-second: 10\n").server.rate_limit
    assert cfg is not None
    assert (cfg.window, cfg.slip, cfg.ipv4_prefix_length, cfg.ipv6_prefix_length, cfg.log_only,
            cfg.max_table_size) == (15, 2, 24, 56, False, 20000)
    assert cfg.rate("nxdomains") == cfg.rate("errors") == cfg.rate("referrals") == 10
    assert parse("server:\n  workers: 1\n").server.rate_limit is None
    with pytest.raises(ConfigError) as exc:
        parse("server:\n  workers: 1\n  rate-limit:\n    window: 0\n    slip: 11\n"
              "    exempt: [10.0.0.1/8]\n    all-per-second: 5\n")
    text = str(exc.value)
    assert "f.yaml:4: server.rate-limit.window: must be in 1..3600, got 0" in text
    assert "f.yaml:5: server.rate-limit.slip: must be in 0..10, got 11" in text
    assert "f.yaml:6: server.rate-limit.exempt[0]: '10.0.0.1/8' has host bits set" in text
    assert "f.yaml:7: server.rate-limit.all-per-second: not supported" in text
    assert RateLimitConfig.from_plain(cfg.to_plain()) == cfg


# --- live -----------------------------------------------------------------------------------

ZONE = """$TTL 300
@ SOA ns1 host 1 3600 600 86400 300
@ NS ns1
ns1 A 192.0.2.1
a1 A 192.0.2.11
a2 A 192.0.2.12
a3 A 192.0.2.13
a4 A 192.0.2.14
a5 A 192.0.2.15
a6 A 192.0.2.16
a7 A 192.0.2.17
*.wild TXT "wild"
sub NS ns.sub
ns.sub A 192.0.2.3
"""
RATE = 5
OPTIONS = {"responses-per-second": RATE, "window": 5, "slip": 2, "exempt": ["127.0.0.2"]}
BIND_OPTIONS = [f"rate-limit {{ responses-per-second {RATE}; window 5; slip 2; "
                "exempt-clients { 127.0.0.2; }; };"]
N = 20
# rrl.c: RATE answered, then the limited ones alternate slip, drop, starting with a slip.
EXPECTED = ["OK"] * RATE + ["TC", "--"] * ((N - RATE) // 2) + ["TC"] * ((N - RATE) % 2)


def _align(clock: Callable[[], float]) -> None:
    """Start just after a second ticks on *clock*, so a burst's credit is one second's."""
    frac = clock() % 1.0
    time.sleep(1.0 - frac + 0.01)


def burst(port: int, names: Sequence[str], qtype: str = "A", *, source: str = LOOPBACK,
          options: Sequence[Any] = (), clock: Callable[[], float] = time.monotonic) -> list[str]:
    """Send one query per name at once from one socket; OK, TC, BADCOOKIE or -- (no answer)
    per query, in sending order."""
    wires = []
    for i, name in enumerate(names):
        q = dns.message.make_query(name, qtype, use_edns=0, options=list(options))
        q.id = i + 1
        q.flags &= ~dns.flags.RD
        wires.append(q.to_wire())
    got: dict[int, dns.message.Message] = {}
    data_by_id: dict[int, bytes] = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        _align(clock)
        for wire in wires:
            sock.sendto(wire, (LOOPBACK, port))
        deadline = time.monotonic() + 0.8
        while len(got) < len(wires) and (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                data = sock.recv(4096)
            except TimeoutError:
                break
            msg = dns.message.from_wire(data)
            got[msg.id] = msg
            data_by_id[msg.id] = data
    out = []
    for i in range(len(wires)):
        r = got.get(i + 1)
        if r is None:
            out.append("--")
        elif r.rcode() == dns.rcode.BADCOOKIE:
            out.append("BADCOOKIE")
        elif r.flags & dns.flags.TC:
            # the question only, and the OPT record of an EDNS query
            assert len(r.question) == 1 and not r.answer and not r.authority and not r.additional, r
            assert r.edns == 0 and len(data_by_id[i + 1]) == len(wires[i]), r  # as long as the query
            assert r.flags & dns.flags.AA  # as BIND 9.18
            out.append("TC")
        else:
            out.append("OK")
    return out


def rrl_metrics(sec: Secondns) -> dict[str, int]:
    with urllib.request.urlopen(sec.http_url("/metrics"), timeout=5) as resp:
        text = resp.read().decode()
    return {m.group(1): int(float(m.group(2)))
            for m in re.finditer(r'secondns_rrl_responses_total\{action="(\w+)"\} (\S+)', text)}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secondns]:
    base = tmp_path_factory.mktemp("rrl")
    with Secondns(base / "sec", zone_files={"example.": ZONE},
                  server={"rate-limit": OPTIONS}) as sec:
        yield sec


def test_live_burst_answered_slipped_dropped(server: Secondns) -> None:
    before = rrl_metrics(server)
    assert set(before) == {"dropped", "slipped"}  # exported since rate-limit is configured
    assert burst(server.port, ["a1.example."] * N) == EXPECTED  # one miss, then cache hits
    after = rrl_metrics(server)
    assert after["slipped"] - before["slipped"] == EXPECTED.count("TC")
    assert after["dropped"] - before["dropped"] == EXPECTED.count("--")
    assert "limit responses to 127.0.0.0/24 for a1.example IN A" in server.log_text()


def test_live_random_subdomain_nxdomain_and_referrals_share_one_account(server: Secondns) -> None:
    nx = burst(server.port, [f"r{i}-{os.getpid()}.example." for i in range(N)])
    assert nx == EXPECTED  # NXDOMAIN accounted by the zone, not the qname
    ref = burst(server.port, [f"h{i}.sub.example." for i in range(N)])
    assert ref == EXPECTED  # referrals by the delegation
    wild = burst(server.port, [f"w{i}.wild.example." for i in range(N)], "TXT")
    assert wild == EXPECTED  # wildcard answers by the wildcard's parent


def test_live_errors_dropped_never_slipped(server: Secondns) -> None:
    out = burst(server.port, [f"x{i}.not-ours." for i in range(N)])  # REFUSED
    assert out == ["OK"] * RATE + ["--"] * (N - RATE)


def test_live_tcp_never_limited(server: Secondns) -> None:
    for _ in range(N):
        r = dns.query.tcp(dns.message.make_query("a2.example.", "A"), LOOPBACK, port=server.port,
                          timeout=5)
        assert r.answer and not r.flags & dns.flags.TC


def test_live_exempt_client_not_limited(server: Secondns) -> None:
    assert burst(server.port, ["a3.example."] * N, source="127.0.0.2") == ["OK"] * N


def test_live_valid_server_cookie_not_limited(server: Secondns) -> None:
    client = os.urandom(8)
    r = dns.query.udp(dns.message.make_query("ns1.example.", "A", use_edns=0,
                                             options=[dns.edns.GenericOption(10, client)]),
                      LOOPBACK, port=server.port, timeout=5)
    full = next(o for o in r.options if o.otype == 10).to_wire()
    assert len(full) == 24
    cookie = [dns.edns.GenericOption(10, full)]
    assert burst(server.port, ["a4.example."] * N, options=cookie) == ["OK"] * N
    # Only a client cookie: slipped as BADCOOKIE with a fresh server cookie (BIND 9.18).
    out = burst(server.port, ["a5.example."] * N, options=[dns.edns.GenericOption(10, client)])
    assert out == [("BADCOOKIE" if v == "TC" else v) for v in EXPECTED]
    with urllib.request.urlopen(server.http_url("/metrics"), timeout=5) as resp:
        assert f'secondns_responses_total{{rcode="BADCOOKIE"}} {out.count("BADCOOKIE")}.0' \
            in resp.read().decode()


def test_live_two_workers(tmp_path: Path) -> None:
    with Secondns(tmp_path / "sec", zone_files={"example.": ZONE},
                  server={"rate-limit": OPTIONS, "workers": 2}) as sec:
        # One socket: SO_REUSEPORT sends one 4-tuple to one worker, whose table limits it.
        assert burst(sec.port, ["a6.example."] * N) == EXPECTED
        want = {"slipped": EXPECTED.count("TC"), "dropped": EXPECTED.count("--")}
        wait_for("worker RRL counters summed in /metrics", lambda: rrl_metrics(sec) == want, 10)


@pytest.mark.skipif(find_binary("named") is None, reason="BIND named not installed")
def test_differential_against_bind(tmp_path: Path) -> None:
    """The same burst at named with the same rate-limit options gets the same verdicts."""
    with Bind(tmp_path / "bind", [ZoneSpec("example.", ZONE)], options=BIND_OPTIONS) as bind, \
            Secondns(tmp_path / "sec", zone_files={"example.": ZONE},
                     server={"rate-limit": OPTIONS}) as server:
        cases: list[tuple[list[str], str]] = [
            (["a7.example."] * N, "A"),
            ([f"n{i}.example." for i in range(N)], "A"),
            ([f"s{i}.sub.example." for i in range(N)], "A"),
            ([f"y{i}.wild.example." for i in range(N)], "TXT"),
            ([f"e{i}.elsewhere." for i in range(N)], "A"),
        ]
        for names, qtype in cases:
            theirs = burst(bind.port, names, qtype, clock=time.time)
            ours = burst(server.port, names, qtype)
            assert ours == theirs, (names[0], qtype)
