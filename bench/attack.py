"""An attack in a bottle (issue 12): legitimate resolvers keep being answered while flooded.

Everything is on loopback.  One generated zone is served by secondns and then by BIND 9 (never
both at once), each with the same response rate limiting (RRL) settings when it has them, and
each goes through the same three phases with the same load:

1. ``0x20``: a resolver on 127.0.0.3 asks a few hot names with randomised qname case
   (draft-vixie-dnsext-dns0x20) at a fixed rate, alone.  secondns's answer-cache hit rate is
   1 - (growth of ``secondns_answer_cache_entries``) / queries: nothing else runs and the cache
   is far from full (so no evictions hide misses).  BIND has no answer cache: n/a.
2. ``quiet``: the legitimate clients alone, the baseline.
3. ``attack``: the legitimate clients, the 0x20 resolver again, and at full speed (bounded by
   ``--attack-seconds``) a random-subdomain flood from 127.8.0.1 and an amplification attack:
   TXT and ANY queries for a name with a ~1 KB TXT RRset, "spoofed" from ``--victims`` victim
   addresses 127.9.N.1 (each its own /24, outside the clients' 127.0.0.0/24).  What the victims'
   sockets receive is what the server sent to victims; amplification = octets received by
   victims / octets of attack queries (DNS payloads, IP and UDP headers not counted), per
   octet offered and per octet the server received (counted by each server: ``amp_intake``).

The legitimate clients (127.0.0.2) behave like a validating resolver at a fixed rate
(``--legit-qps``): a realistic mix (genzone.py's: ~78% names with data, 10% NXDOMAIN, 8% NODATA,
4% referrals), EDNS 1232 with a DNS cookie (RFC 7873: the server cookie of the last response is
sent back, retries included; a BADCOOKIE answer is asked again at once with its fresh cookie),
a UDP retry after 0.3 and 0.6 s, and TCP when the answer has TC=1.  A query counts as
answered when an answer arrives within 1 s of its first transmission; latency is measured from
that first transmission (retries and TCP included).

Load generators are separate processes (this file with ``--role``), pinned to ``--client-cpu``;
the server is pinned to ``--server-cpu`` (``workers: 1``, ``named -n 1``; see ``--workers``).

    flock /tmp/bench.lock python3 bench/attack.py                 # secondns, then BIND
    flock /tmp/bench.lock python3 bench/attack.py --only bind --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import re
import selectors
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

ORIGIN = "bench.test."
AMP_NAME = "amp." + ORIGIN
HOT_NAMES = ("www", "mail", "api", "cdn", "login", "static", "img", "shop", "blog", "news")
SERVER_ADDR = "127.0.0.1"
LEGIT_ADDR = "127.0.0.2"
X20_ADDR = "127.0.0.3"
FLOOD_ADDR = "127.8.0.1"

# RRL settings for both servers, BIND's names (ARM "Response Rate Limiting").
RRL = {
    "responses-per-second": 10,
    "nxdomains-per-second": 10,
    "errors-per-second": 10,
    "referrals-per-second": 10,
    "window": 5,
    "slip": 2,
    "ipv4-prefix-length": 24,
    "ipv6-prefix-length": 56,
}

_TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "MX": 15, "TXT": 16, "AAAA": 28, "SRV": 33,
          "DS": 43, "CAA": 257, "ANY": 255}
_COOKIE = 10  # RFC 7873 4: the EDNS option code
_BADCOOKIE_LOW = 23 & 0x0F  # RFC 7873 8: rcode 23, its low four bits in the header


# ------------------------------------------------------------------------------------------------
# Wire helpers (load generators build packets by hand: dnspython per query would cost more CPU
# than the server under test gets).

def qname_wire(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\x00"


def opt_rr(payload: int = 1232, cookie: bytes = b"", do: bool = False) -> bytes:
    """An OPT RR (RFC 6891 6.1.2), with a COOKIE option when *cookie* is given."""
    rdata = struct.pack("!HH", _COOKIE, len(cookie)) + cookie if cookie else b""
    return b"\x00" + struct.pack("!HHBBHH", 41, payload, 0, 0, 0x8000 if do else 0, len(rdata)) + rdata


def query_body(name: str, qtype: str, edns: bool = True) -> bytes:
    """Everything after the ID up to the end of the question; ARCOUNT 1 when *edns*."""
    return struct.pack("!HHHHH", 0, 1, 0, 0, 1 if edns else 0) + qname_wire(name) + struct.pack(
        "!HH", _TYPES[qtype], 1)


def server_cookie(resp: bytes, client_cookie: bytes) -> bytes | None:
    """The server cookie echoed after our client cookie (RFC 7873 5.3), or None."""
    pos = resp.rfind(client_cookie)
    if pos < 4 or resp[pos - 4:pos - 2] != b"\x00\x0a":
        return None
    length = int.from_bytes(resp[pos - 2:pos], "big")
    return resp[pos + 8:pos + length] if 16 <= length <= 40 else None


def percentile(values: list[float], pct: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * pct / 100))]


# ------------------------------------------------------------------------------------------------
# Roles (each runs in its own process, prints one JSON object on stdout)

class Resolver:
    """A resolver at a fixed rate: UDP with cookie, retries at 0.3/0.6 s, TCP on TC=1, 1 s budget."""

    RETRIES = (0.3, 0.6)
    BUDGET = 1.0

    def __init__(self, spec: dict[str, Any]) -> None:
        self.server = (spec["server"], spec["port"])
        self.source = spec["source"]
        self.rate = float(spec["qps"])
        self.seconds = float(spec["seconds"])
        self.x20 = bool(spec.get("x20"))
        self.use_cookie = bool(spec.get("cookie", True))
        self.bodies = [query_body(n, t) for n, t in spec["queries"]]
        self.names = spec["queries"]
        self.client_cookie = os.urandom(8)
        self.opt = opt_rr(cookie=self.client_cookie if self.use_cookie else b"")
        self.sel = selectors.DefaultSelector()
        self.socks: list[socket.socket] = []
        for _ in range(int(spec.get("sockets", 4))):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((self.source, 0))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            s.setblocking(False)
            self.sel.register(s, selectors.EVENT_READ, ("udp", len(self.socks)))
            self.socks.append(s)
        self.next_id = [random.randrange(65536) for _ in self.socks]
        # (sock, id) -> [first sent, query index, packet, tcp?]
        self.pending: dict[tuple[int, int], list[Any]] = {}
        self.due: list[list[tuple[float, tuple[int, int]]]] = [[] for _ in range(len(self.RETRIES) + 1)]
        self.due_pos = [0] * len(self.due)
        self.latencies: list[float] = []
        # Only queries first sent inside the window count (the attack's span, wall clock).
        window = spec.get("window") or (0.0, float("inf"))
        offset = time.time() - time.monotonic()
        self.window = (window[0] - offset, window[1] - offset)
        self.issued = 0  # every query, for the rate
        self.sent = self.answered = self.late = self.tc = self.tcp_answers = self.retries = 0
        self.tcp_failures = 0
        self.badcookie = 0
        # every message sent by qtype, UDP and TCP, retries included (BIND's intake by qtype
        # is its "Incoming Queries": see amp_intake)
        self.by_type: dict[str, int] = {}
        self.rcodes: dict[int, int] = {}
        self.rng = random.Random()

    def packet(self, idx: int, qid: int) -> bytes:
        """The query up to its question; the OPT record is added at each transmission, so a
        retry carries the latest server cookie, as a resolver's does."""
        body = self.bodies[idx]
        if self.x20:
            name = self.names[idx][0]
            mixed = "".join(c.upper() if self.rng.random() < 0.5 else c for c in name)
            body = body[:10] + qname_wire(mixed) + body[-4:]
        return qid.to_bytes(2, "big") + body

    def send_new(self, now: float) -> None:
        idx = self.issued % len(self.bodies)
        s = self.issued % len(self.socks)
        qid = self.next_id[s] = (self.next_id[s] + 1) & 0xFFFF
        pkt = self.packet(idx, qid)
        key = (s, qid)
        counted = self.window[0] <= now < self.window[1]
        self.pending[key] = [now, idx, pkt, False, counted]
        self.issued += 1
        self.sent += counted
        self.by_type[self.names[idx][1]] = self.by_type.get(self.names[idx][1], 0) + 1
        self._udp(s, pkt)
        self.due[0].append((now + self.RETRIES[0], key))

    def _udp(self, s: int, pkt: bytes) -> None:
        try:
            self.socks[s].sendto(pkt + self.opt, self.server)
        except (BlockingIOError, OSError):
            pass  # a full send buffer is a lost packet, as on a real network

    def answer(self, key: tuple[int, int], resp: bytes, now: float, via_tcp: bool) -> None:
        entry = self.pending.get(key)
        if entry is None:
            return
        if self.use_cookie:
            cookie = server_cookie(resp, self.client_cookie)
            if cookie is not None:
                self.opt = opt_rr(cookie=self.client_cookie + cookie)
        if not via_tcp and resp[2] & 0x02:  # TC=1: RFC 7766 5, retry over TCP
            self.tc += entry[4]
            if not entry[3]:
                entry[3] = True
                self.tcp_query(key, entry[2])
            return
        if not via_tcp and self.use_cookie and resp[3] & 0x0F == _BADCOOKIE_LOW and not entry[3]:
            # RFC 7873 5.3: BADCOOKIE carries a fresh server cookie; ask again with it at once
            self.badcookie += entry[4]
            self.by_type[self.names[entry[1]][1]] += 1
            self._udp(key[0], entry[2])
            return
        del self.pending[key]
        if not entry[4]:
            return
        elapsed = now - entry[0]
        if elapsed > self.BUDGET:
            self.late += 1
            return
        self.answered += 1
        self.tcp_answers += via_tcp
        self.latencies.append(elapsed)
        rcode = resp[3] & 0x0F
        self.rcodes[rcode] = self.rcodes.get(rcode, 0) + 1

    def tcp_query(self, key: tuple[int, int], pkt: bytes) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.bind((self.source, 0))
            s.connect_ex(self.server)
        except OSError:
            s.close()
            self.tcp_failures += 1
            return
        pkt += self.opt
        self.by_type[self.names[self.pending[key][1]][1]] += 1
        state = {"key": key, "out": len(pkt).to_bytes(2, "big") + pkt, "in": b""}
        self.sel.register(s, selectors.EVENT_WRITE, ("tcp", (s, state)))

    def tcp_event(self, s: socket.socket, state: dict[str, Any], mask: int, now: float) -> None:
        try:
            if mask & selectors.EVENT_WRITE and state["out"]:
                n = s.send(state["out"])
                state["out"] = state["out"][n:]
                if not state["out"]:
                    self.sel.modify(s, selectors.EVENT_READ, ("tcp", (s, state)))
                return
            data = s.recv(65535)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if data:
            state["in"] += data
            buf = state["in"]
            if len(buf) < 2 or len(buf) < 2 + int.from_bytes(buf[:2], "big"):
                return
            self.answer(state["key"], buf[2:2 + int.from_bytes(buf[:2], "big")], now, True)
        else:
            self.tcp_failures += 1
        self.sel.unregister(s)
        s.close()

    def timeouts(self, now: float) -> None:
        for level, queue in enumerate(self.due):
            pos = self.due_pos[level]
            while pos < len(queue) and queue[pos][0] <= now:
                key = queue[pos][1]
                pos += 1
                entry = self.pending.get(key)
                if entry is None:
                    continue
                if level < len(self.RETRIES):
                    if not entry[3]:  # a TCP retry in flight has its own budget
                        self.retries += entry[4]
                        self.by_type[self.names[entry[1]][1]] += 1
                        self._udp(key[0], entry[2])
                    nxt = self.RETRIES[level + 1] if level + 1 < len(self.RETRIES) else self.BUDGET
                    self.due[level + 1].append((entry[0] + nxt, key))
                else:
                    del self.pending[key]  # unanswered within the budget
            if pos > 4096:
                del queue[:pos]
                pos = 0
            self.due_pos[level] = pos

    def run(self) -> dict[str, Any]:
        start = time.monotonic()
        stop_sending = start + self.seconds
        end = stop_sending + self.BUDGET + 0.1
        buf = bytearray(65535)
        while True:
            now = time.monotonic()
            if now >= end:
                break
            if now < stop_sending:
                target = int((now - start) * self.rate)
                burst = 0
                while self.issued < target and burst < 200:
                    self.send_new(now)
                    burst += 1
            self.timeouts(now)
            wait = 0.001 if now < stop_sending else 0.01
            for key, mask in self.sel.select(wait):
                kind, what = key.data
                if kind == "udp":
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    for _ in range(64):
                        try:
                            n = sock.recv_into(buf)
                        except (BlockingIOError, InterruptedError):
                            break
                        except OSError:
                            break  # ICMP port unreachable after the server died
                        if n >= 12:
                            self.answer((what, int.from_bytes(buf[:2], "big")), bytes(buf[:n]),
                                        time.monotonic(), False)
                else:
                    self.tcp_event(what[0], what[1], mask, time.monotonic())
        lat = self.latencies
        return {
            "sent": self.sent, "answered": self.answered, "late": self.late,
            "unanswered": self.sent - self.answered - self.late,
            "answer_rate": self.answered / self.sent if self.sent else None,
            "achieved_qps": self.issued / self.seconds,
            "p50_ms": (percentile(lat, 50) or 0) * 1000, "p99_ms": (percentile(lat, 99) or 0) * 1000,
            "max_ms": max(lat) * 1000 if lat else None,
            "tc": self.tc, "tcp_answers": self.tcp_answers, "tcp_failures": self.tcp_failures,
            "udp_retries": self.retries, "badcookie": self.badcookie, "sent_by_type": self.by_type,
            "rcodes": {str(k): v for k, v in sorted(self.rcodes.items())},
        }


def blast(spec: dict[str, Any]) -> dict[str, Any]:
    """Send at full speed (or ``qps``) for ``seconds`` from ``sources``, count what comes back.

    ``kind`` "random": random-subdomain flood (a fresh random label per query, so every query
    misses every cache); "amp": TXT and ANY for the amplification name, EDNS 1232, no cookie, as
    a reflection attack sends them.
    """
    server = (spec["server"], spec["port"])
    seconds = float(spec["seconds"])
    rate = float(spec.get("qps") or 0)
    socks = []
    for src in spec["sources"]:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((src, 0))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.setblocking(False)
        socks.append(s)
    poller = selectors.DefaultSelector()
    for i, s in enumerate(socks):
        poller.register(s, selectors.EVENT_READ, i)
    suffix = qname_wire(ORIGIN)
    edns = opt_rr()
    amp = [query_body(AMP_NAME, "TXT") + edns, query_body(AMP_NAME, "ANY") + edns]
    head = struct.pack("!HHHHH", 0, 1, 0, 0, 1)
    tail = struct.pack("!HH", 1, 1) + edns
    getrandbits = random.getrandbits
    sent = sent_bytes = recv = recv_bytes = tc = send_fail = 0
    buf = bytearray(65535)

    def drain(timeout: float) -> None:
        nonlocal recv, recv_bytes, tc
        for key, _ in poller.select(timeout):
            sock = socks[key.data]
            for _ in range(256):
                try:
                    n = sock.recv_into(buf)
                except (BlockingIOError, InterruptedError, OSError):
                    break
                recv += 1
                recv_bytes += n
                if n > 2 and buf[2] & 0x02:
                    tc += 1

    delay = float(spec.get("start_at", 0)) - time.time()
    if delay > 0:
        time.sleep(min(delay, 10.0))
    start = time.monotonic()
    stop = start + seconds
    nsock = len(socks)
    now = start
    while now < stop:
        for _ in range(64):
            qid = sent & 0xFFFF
            if spec["kind"] == "random":
                label = b"%08x" % getrandbits(32)
                pkt = qid.to_bytes(2, "big") + head + b"\x08" + label + suffix + tail
            else:
                pkt = qid.to_bytes(2, "big") + amp[sent & 1]
            try:
                socks[sent % nsock].sendto(pkt, server)
                sent_bytes += len(pkt)
            except (BlockingIOError, OSError):
                send_fail += 1
            sent += 1
        drain(0)
        now = time.monotonic()
        if rate and sent > (now - start) * rate:
            time.sleep(min(0.01, sent / rate - (now - start)))
            now = time.monotonic()
    elapsed = now - start
    settle = time.monotonic() + 1.0
    while time.monotonic() < settle:
        drain(0.05)
    return {"sent": sent, "sent_bytes": sent_bytes, "send_failures": send_fail, "received": recv,
            "received_bytes": recv_bytes, "receive_drops": own_drops(socks), "tc": tc,
            "offered_qps": sent / elapsed,
            "answered_qps": recv / elapsed,
            "amplification": recv_bytes / sent_bytes if sent_bytes else None}


def own_drops(socks: list[socket.socket]) -> int:
    """Datagrams the kernel dropped at these (IPv4) sockets' full receive buffers: what the
    server sent them that they never read (/proc/net/udp, last column)."""
    mine = set()
    for s in socks:
        host, port = s.getsockname()[:2]
        mine.add(f"{struct.unpack('<I', socket.inet_aton(host))[0]:08X}:{port:04X}")
    total = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1] in mine:
                total += int(fields[-1])
    return total


def role_main(role: str, spec: dict[str, Any]) -> None:
    if role == "resolver":
        print(json.dumps(Resolver(spec).run()))
    elif role == "blast":
        print(json.dumps(blast(spec)))
    else:
        raise SystemExit(f"unknown role {role}")


# ------------------------------------------------------------------------------------------------
# Orchestration

class Role:
    """One load generator process: this file with ``--role``, spec on stdin, JSON on stdout."""

    def __init__(self, role: str, spec: dict[str, Any], cpu: str | None) -> None:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--role", role]
        if cpu:
            cmd = ["taskset", "-c", cpu, *cmd]
        self.timeout = float(spec["seconds"]) + 30
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(spec))
        self.proc.stdin.close()
        self.proc.stdin = None  # communicate() must not flush it again

    def result(self) -> dict[str, Any]:
        try:
            out, err = self.proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate(timeout=10)
            raise RuntimeError("load generator timed out") from None
        if self.proc.returncode != 0:
            raise RuntimeError(f"load generator failed ({self.proc.returncode}): {err[-2000:]}")
        result: dict[str, Any] = json.loads(out)
        return result


def make_zone(records: int, seed: int) -> tuple[str, list[tuple[str, str]]]:
    """The genzone.py zone plus hot names and the amplification name; and the legitimate mix."""
    import genzone

    gen = genzone.generate(ORIGIN, records, seed)
    extra = [f"{h} IN A 192.0.2.{i + 10}" for i, h in enumerate(HOT_NAMES)]
    # ~1 KB of TXT: fits BIND's and secondns's default 1232-octet UDP responses untruncated.
    big = "x" * 250
    extra += [f'amp IN TXT "{i}{big}"' for i in range(4)]
    extra += ["amp IN A 192.0.2.99", "amp IN AAAA 2001:db8::99"]
    text = gen.text + "\n".join(extra) + "\n"
    mix = [tuple(line.split()) for line in genzone.queries(gen, ORIGIN, 100_000, seed)]
    return text, [(n, t) for n, t in mix]


def metrics(url: str) -> dict[str, float]:
    """secondns's /metrics as {sample name with labels: value}."""
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(r"^(secondns_[^ ]+) ([0-9.e+-]+|NaN)$", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def bind_counters(server: Any) -> dict[str, float]:
    """BIND's name server statistics (``rndc stats``, last dump): requests, RRL drops and slips."""
    server.rndc("stats")
    text = (server.workdir / "named.stats").read_text()
    last = text[text.rfind("+++ Statistics Dump +++"):]
    section = last[last.find("++ Name Server Statistics ++"):]
    section = section[:section.find("\n++ ", 5)]
    out: dict[str, float] = {}
    for m in re.finditer(r"^\s*(\d+) (.+)$", section, re.MULTILINE):
        if "rate limit" in m.group(2) or "requests received" in m.group(2):
            out[f"bind {m.group(2)}"] = float(m.group(1))
    # "Incoming Queries" by qtype: what named read and parsed, whatever it then answered
    incoming = last[last.find("++ Incoming Queries ++"):]
    incoming = incoming[:incoming.find("\n++ ", 5)]
    for m in re.finditer(r"^\s*(\d+) (TXT|ANY)$", incoming, re.MULTILINE):
        out[f"bind incoming {m.group(2)}"] = out.get(f"bind incoming {m.group(2)}", 0) + float(m.group(1))
    return out


def udp_drops(port: int) -> int:
    """Datagrams the kernel dropped at the server's full UDP sockets on ``port`` (the last
    column of /proc/net/udp and udp6): the part of the offered load the server never read."""
    total = 0
    for table_path in ("/proc/net/udp", "/proc/net/udp6"):
        with contextlib.suppress(OSError):
            for line in Path(table_path).read_text().splitlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port:
                    total += int(fields[-1])
    return total


def intake(attack: dict[str, Any], drops: int, resolver_datagrams: float) -> dict[str, Any]:
    """Amplification per octet the server took in, besides per octet offered.

    The kernel drops at a full socket without looking at the source, so every sender loses
    about the same share; the amplification queries the server read are then their octets
    offered times (1 - dropped / all datagrams offered).  Per octet offered, a server that
    reads less of the attack looks as if it amplified less, though its policy is the same.
    """
    amp = attack["amp"]
    offered = (attack["flood"]["sent"] - attack["flood"]["send_failures"]
               + amp["sent"] - amp["send_failures"] + resolver_datagrams)
    dropped_share = min(1.0, drops / offered) if offered else 0.0
    read_bytes = amp["sent_bytes"] * (1 - dropped_share)
    return {"socket_drops": drops, "datagrams_offered": round(offered),
            "dropped_share": round(dropped_share, 4),
            "amplification_per_octet_read": amp["received_bytes"] / read_bytes if read_bytes else None}


def amp_intake(name: str, attack: dict[str, Any]) -> dict[str, Any]:
    """Amplification per octet of the attack the server received (read from its socket).

    Counted, not estimated, each server by its own counters (every amplification query has
    the same length, so octets = queries read x that length):

    - secondns: every amplification query it read was answered, slipped or dropped by RRL
      as a ``response`` account (nothing else sent such queries unlimited: the resolvers'
      cookies exempt them), so read = datagrams the victims got (their own socket drops
      included) + ``secondns_rrl_limited_total{kind="response",action="dropped"}``;
    - BIND: its "Incoming Queries" statistics count every query named read by qtype; the
      attack's are the TXT and ANY ones less those the resolvers sent (every transmission,
      retries and TCP included; a resolver query lost at BIND's full socket is subtracted
      although never read, so this is a lower bound, off by those few).
    """
    amp, counters = attack["amp"], attack["server_counters"]
    size = amp["sent_bytes"] / amp["sent"] if amp["sent"] else 0
    if name == "bind":
        resolvers = sum(attack[r]["sent_by_type"].get(t, 0) for r in ("legit", "x20") for t in ("TXT", "ANY"))
        read = counters.get("bind incoming TXT", 0) + counters.get("bind incoming ANY", 0) - resolvers
        how = "BIND Incoming Queries TXT+ANY less the resolvers' TXT/ANY transmissions"
    else:
        dropped = sum(v for k, v in counters.items()
                      if k.startswith("secondns_rrl_limited_total") and 'kind="response"' in k
                      and 'action="dropped"' in k)
        read = amp["received"] + amp["receive_drops"] + dropped
        how = "datagrams the victims got (+ their socket drops) + RRL response drops"
    octets = read * size
    return {"queries_read": round(read), "share_read": read / amp["sent"] if amp["sent"] else None,
            "octets_read": round(octets), "method": how,
            "amplification_per_octet_received": amp["received_bytes"] / octets if octets > 0 else None}


def server_counters(server: Any) -> dict[str, float]:
    """The counters that say what the server did with the attack, from /metrics or rndc stats."""
    if not hasattr(server, "http_url"):
        return bind_counters(server)
    keep = ("rrl", "queries_total", "truncated", "dropped", "send_errors", "secondns_tcp_")
    return {k: v for k, v in metrics(server.http_url()).items() if any(w in k for w in keep)}


def rrl_supported() -> bool:
    """Whether this tree's secondns knows ``server.rate-limit`` (issue 12; absent on old code)."""
    return "rate-limit" in (HERE.parent / "secondns" / "config.py").read_text()


def start_server(name: str, workdir: Path, zone_text: str, args: argparse.Namespace) -> Any:
    from peers import Bind, Secondns, ZoneSpec

    zone_file = workdir / "bench.zone"
    zone_file.write_text(zone_text)
    common: dict[str, Any] = {"cpus": args.server_cpu, "startup_timeout": 120.0}
    if name == "bind":
        opts = []
        if args.rrl:
            body = " ".join(f"{k} {v};" for k, v in RRL.items())
            opts.append(f"rate-limit {{ {body} }};")
        return Bind(workdir / "bind", [ZoneSpec(ORIGIN, zone_file)], workers=args.workers,
                    options=opts, **common)
    server: dict[str, Any] = {"workers": args.workers}
    if args.rrl and rrl_supported():
        server["rate-limit"] = dict(RRL)
    return Secondns(workdir / "secondns", zone_files={ORIGIN: zone_file}, http=True, server=server,
                    **common)


def resolver_spec(port: int, source: str, qps: float, seconds: float, queries: list[tuple[str, str]],
                  x20: bool, cookie: bool) -> dict[str, Any]:
    return {"server": SERVER_ADDR, "port": port, "source": source, "qps": qps, "seconds": seconds,
            "queries": queries, "x20": x20, "cookie": cookie}


def cache_entries(server: Any, settle: float) -> float | None:
    if not hasattr(server, "http_url"):
        return None
    time.sleep(settle)  # workers push their counters once a second
    return metrics(server.http_url()).get("secondns_answer_cache_entries")


def run_server(name: str, workdir: Path, zone_text: str, mix: list[tuple[str, str]],
               args: argparse.Namespace) -> dict[str, Any]:
    res: dict[str, Any] = {"server": name}
    hot = [(f"{h}.{ORIGIN}", "A") for h in HOT_NAMES]
    cpu = args.client_cpu
    server = start_server(name, workdir, zone_text, args)
    res["rrl"] = bool(args.rrl and (name == "bind" or rrl_supported()))
    settle = 1.3 if args.workers > 1 else 0.0
    with server:
        port = server.port
        # 0. calibration: distinct questions, each a miss, must each add an entry, or the
        # cache-growth measure of misses below does not hold (e.g. uncached cookie queries)
        before = cache_entries(server, settle)
        distinct = list(dict.fromkeys(q for q in mix if not q[0].startswith("nx")))[:1000]
        cal = Role("resolver", resolver_spec(port, X20_ADDR, 1000, len(distinct) / 1000, distinct,
                                             False, True), cpu).result()
        after = cache_entries(server, settle)
        if before is not None and after is not None:
            res["cache_calibration"] = (after - before) / cal["sent"]
        # 1. the 0x20 resolver alone: cache growth = misses
        before = cache_entries(server, settle)
        x20 = Role("resolver", resolver_spec(port, X20_ADDR, args.x20_qps, args.x20_seconds, hot,
                                             True, True), cpu).result()
        after = cache_entries(server, settle)
        if before is not None and after is not None and x20["answered"]:
            x20["cache_hit_rate"] = 1 - (after - before) / x20["sent"]
            if res["cache_calibration"] < 0.95:
                x20["cache_hit_rate_unreliable"] = True
        res["x20"] = x20
        # 2. legitimate clients alone
        res["quiet"] = Role("resolver", resolver_spec(port, LEGIT_ADDR, args.legit_qps, args.quiet_seconds,
                                                      mix, False, args.cookies), cpu).result()
        # 3. attack
        m0 = server_counters(server)
        drops0 = udp_drops(port)
        secs = args.attack_seconds
        victims = [f"127.9.{i}.1" for i in range(args.victims)]
        # The resolvers run from before the attack starts to after it ends; only their queries
        # sent while the attackers send count.
        start_at = time.time() + 1.5
        window = (start_at, start_at + secs)
        legit = resolver_spec(port, LEGIT_ADDR, args.legit_qps, secs + 2.5, mix, False, args.cookies)
        x20 = resolver_spec(port, X20_ADDR, args.x20_qps, secs + 2.5, hot, True, True)
        roles = {"legit": Role("resolver", {**legit, "window": window}, cpu),
                 "x20": Role("resolver", {**x20, "window": window}, cpu)}
        roles["flood"] = Role("blast", {"server": SERVER_ADDR, "port": port, "seconds": secs,
                                        "sources": [FLOOD_ADDR], "kind": "random",
                                        "qps": args.flood_qps, "start_at": start_at}, cpu)
        roles["amp"] = Role("blast", {"server": SERVER_ADDR, "port": port, "seconds": secs,
                                      "sources": victims, "kind": "amp", "qps": args.amp_qps,
                                      "start_at": start_at}, cpu)
        attack = {k: r.result() for k, r in roles.items()}
        if not server.running():
            raise RuntimeError(f"{name} died during the attack\n{server.log_tail()}")
        time.sleep(settle)
        m1 = server_counters(server)
        # Resolvers send from 1.5 s before the attack to 1 s after (retries left out: few).
        attack["intake"] = intake(attack, udp_drops(port) - drops0,
                                  (args.legit_qps + args.x20_qps) * (secs + 2.5))
        attack["server_counters"] = {k: m1[k] - m0.get(k, 0) for k in m1 if m1[k] != m0.get(k, 0)}
        attack["amp_intake"] = amp_intake(name, attack)
        res["attack"] = attack
    return res


def fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def table(results: list[dict[str, Any]]) -> str:
    rows = []
    head = (f"{'server':<9} {'RRL':<4} {'quiet ans%':>10} {'p99 ms':>7} {'flood ans%':>10} {'p99 ms':>7}"
            f" {'TCP':>5} {'flood q/s off/ans':>18} {'amp q/s off/ans':>16} {'amp x off':>9} {'amp x rcv':>9}"
            f" {'0x20 hit%':>9}"
            f" {'0x20 ans%':>9}")
    rows += [head, "-" * len(head)]
    for r in results:
        if "error" in r:
            rows.append(f"{r['server']:<9} ERROR: {r['error'].splitlines()[0]}")
            continue
        q, a = r["quiet"], r["attack"]
        lg, fl, amp, x = a["legit"], a["flood"], a["amp"], a["x20"]
        hit = r["x20"].get("cache_hit_rate")
        rows.append(
            f"{r['server']:<9} {'on' if r['rrl'] else 'off':<4} {q['answer_rate'] * 100:>10.2f}"
            f" {q['p99_ms']:>7.1f} {lg['answer_rate'] * 100:>10.2f} {lg['p99_ms']:>7.1f}"
            f" {lg['tcp_answers']:>5} {fl['offered_qps']:>9.0f}/{fl['answered_qps']:<8.0f}"
            f" {amp['offered_qps']:>7.0f}/{amp['answered_qps']:<8.0f} {amp['amplification']:>9.3f}"
            f" {fmt(a['amp_intake']['amplification_per_octet_received'], '.3f'):>9}"
            f" {fmt(None if hit is None else hit * 100, '.2f'):>9} {x['answer_rate'] * 100:>9.2f}")
    return "\n".join(rows)


def verdicts(results: list[dict[str, Any]]) -> list[str]:
    out = []
    by = {r["server"]: r for r in results if "error" not in r}
    sec, bind = by.get("secondns"), by.get("bind")
    for r in by.values():
        rate = r["attack"]["legit"]["answer_rate"]
        out.append(f"{r['server']}: legitimate answer rate while flooded {rate * 100:.2f}%"
                   f" ({'meets' if rate >= 0.99 else 'below'} the 99% target)")
    if sec and bind:
        a, b = sec["attack"]["amp"]["amplification"], bind["attack"]["amp"]["amplification"]
        out.append(f"amplification per octet offered: secondns {a:.3f}x vs BIND {b:.3f}x"
                   f" (a server that reads less of the attack looks better here)")
        ea, eb = sec["attack"]["amp_intake"], bind["attack"]["amp_intake"]
        xa, xb = ea["amplification_per_octet_received"], eb["amplification_per_octet_received"]
        if xa is not None and xb is not None:
            out.append(f"amplification per octet received (counted): secondns {xa:.3f}x vs BIND {xb:.3f}x"
                       f" (read {ea['share_read'] * 100:.1f}% vs {eb['share_read'] * 100:.1f}% of the"
                       f" amplification queries; {'meets' if xa <= xb else 'above'} the <= BIND target)")
        ra = sec["attack"]["intake"]["amplification_per_octet_read"]
        rb = bind["attack"]["intake"]["amplification_per_octet_read"]
        if ra is not None and rb is not None:
            out.append(f"amplification per octet read, /proc estimate: secondns {ra:.2f}x"
                       f" vs BIND {rb:.2f}x"
                       f" (socket drops {sec['attack']['intake']['dropped_share'] * 100:.1f}% vs"
                       f" {bind['attack']['intake']['dropped_share'] * 100:.1f}% of datagrams;"
                       f" {'meets' if ra <= rb else 'above'} the <= BIND target)")
    if sec:
        hit = sec["x20"].get("cache_hit_rate")
        cal = sec.get("cache_calibration")
        if cal is not None:
            out.append(f"cache calibration: {cal * 100:.1f}% of distinct questions added an entry"
                       f" ({'the hit rate below holds' if cal >= 0.95 else 'HIT RATE UNRELIABLE'})")
        if hit is not None:
            out.append(f"secondns 0x20 cache hit rate {hit * 100:.2f}%"
                       f" ({'meets' if hit >= 0.95 else 'below'} the 95% target)")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--role", help=argparse.SUPPRESS)
    parser.add_argument("--only", default="secondns,bind", help="servers in order (secondns,bind)")
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--legit-qps", type=float, default=5000)
    parser.add_argument("--x20-qps", type=float, default=1000)
    parser.add_argument("--flood-qps", type=float, default=0, help="0: full speed")
    parser.add_argument("--amp-qps", type=float, default=0, help="0: full speed")
    parser.add_argument("--victims", type=int, default=32)
    parser.add_argument("--quiet-seconds", type=float, default=5)
    parser.add_argument("--x20-seconds", type=float, default=5)
    parser.add_argument("--attack-seconds", type=float, default=10)
    parser.add_argument("--no-rrl", dest="rrl", action="store_false", help="RRL off in both servers")
    parser.add_argument("--no-cookies", dest="cookies", action="store_false",
                        help="legitimate clients send no DNS cookie")
    parser.add_argument("--workers", type=int, default=1, help="secondns server.workers and named -n")
    parser.add_argument("--server-cpu", default="0", help="taskset -c for the server ('' to not pin)")
    parser.add_argument("--client-cpu", default="1", help="taskset -c for load generators ('' to not pin)")
    parser.add_argument("--workdir", type=Path, help="keep zone, configs and logs here")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    if args.role:
        role_main(args.role, json.load(sys.stdin))
        return 0
    args.server_cpu = args.server_cpu or None
    args.client_cpu = args.client_cpu or None
    zone_text, mix = make_zone(args.records, args.seed)
    results = []
    with tempfile.TemporaryDirectory(prefix="attack-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        for name in args.only.split(","):
            print(f"running {name} ...", file=sys.stderr)
            try:
                results.append(run_server(name, workdir, zone_text, mix, args))
            except Exception as exc:  # one server failing must not hide the other's row
                results.append({"server": name, "error": f"{type(exc).__name__}: {exc}"})
    print(table(results))
    for r in results:
        counters = r.get("attack", {}).get("server_counters")
        if counters:
            print(f"{r['server']} during the attack: "
                  + ", ".join(f"{k} +{v:.0f}" for k, v in sorted(counters.items())))
    for line in verdicts(results):
        print(line)
    if args.json:
        report = {
            "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": {"host": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version(),
                        "load": os.getloadavg()},
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "rrl_settings": RRL,
            "results": results,
            "verdicts": verdicts(results),
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
