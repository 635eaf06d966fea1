"""Transfer-out, the rest of issue 13: IXFR over UDP in worker mode, NOTIFY out to IPv6
targets, and the TSIG of NOTIFY answers checked (RFC 8945 5.3)."""

from __future__ import annotations

import re
import socket
import threading
import time
import urllib.request
from pathlib import Path

import dns.flags
import dns.message
import dns.opcode
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rrset
import dns.tsig
import pytest
from peers import Bind, Secondns, TsigKey, ZoneSpec, free_port, require_binary, soa_serial, soa_zone_text

pytestmark = pytest.mark.integration
WAIT = 20.0


def _wait(pred: object, what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _keys_config(*keys: TsigKey) -> dict[str, dict[str, str]]:
    return {k.name: {"algorithm": k.algorithm, "secret": k.secret} for k in keys}


def _ixfr_query(zone: str, serial: int, key: TsigKey | None = None) -> dns.message.Message:
    q = dns.message.make_query(zone, "IXFR")
    q.authority.append(dns.rrset.from_text(zone, 0, "IN", "SOA", f"ns1.{zone} h.{zone} {serial} 1 1 1 1"))
    if key is not None:
        q.use_tsig(key.keyring(), keyname=key.name, algorithm=key.algorithm)
    return q


def _udp_from(q: dns.message.Message, source: str, port: int) -> dns.message.Message:
    """One UDP exchange from a fresh socket (a new source port: SO_REUSEPORT spreads these
    over the workers)."""
    return dns.query.udp(q, "127.0.0.1", port=port, timeout=5, source=source, one_rr_per_rrset=True)


def _answer_types_serials(r: dns.message.Message) -> list[tuple[str, str]]:
    return [(dns.rdatatype.to_text(rrset.rdtype), rd.to_text().split()[2] if rrset.rdtype == dns.rdatatype.SOA
             else rd.to_text()) for rrset in r.answer for rd in rrset]


def test_ixfr_over_udp_in_worker_mode_is_answered_as_rfc1995_allows(tmp_path: Path) -> None:
    """workers: 2: an IXFR over UDP is answered as in single-process mode (RFC 1995 2, 4):
    the differences when they fit in the datagram, else the current SOA alone; allow-transfer
    and TSIG as over TCP (an address outside the ACL, or an unsigned request where a key is
    required, is REFUSED).  Before: every IXFR over UDP to a worker was REFUSED."""
    require_binary("named")
    good = TsigKey.generate("xfr-key")
    records = "".join(f"n{i} IN A 10.1.{i // 256}.{i % 256}\n" for i in range(3000))
    port = free_port()
    top = Bind(tmp_path / "top", [ZoneSpec("ux.", soa_zone_text("ux.", 1, records=records),
                                           options=["ixfr-from-differences yes;"], notify=[port])])
    with top:
        s = Secondns(tmp_path / "s", zones={
            "ux.": {"primaries": [f"127.0.0.1:{top.port}"], "allow-transfer": ["127.0.0.1"]},
            "signed.": {"allow-transfer": [{"key": "xfr-key"}]},
        }, zone_files={"signed.": soa_zone_text("signed.", 3)}, server={"workers": 2},
            ready_zones=["signed."], port=port)
        s.config["keys"] = _keys_config(good)
        with s:
            _wait(lambda: soa_serial(s.port, "ux.") == 1, "serial 1")
            top.write_zone("ux.", soa_zone_text("ux.", 2, records=records + "new IN A 10.9.9.9\n"))
            top.reload("ux.")
            _wait(lambda: soa_serial(s.port, "ux.") == 2, "serial 2 by IXFR")
            for _ in range(8):  # fresh sockets: both workers get some
                # the differences fit: RFC 1995 4 incremental answer in one datagram
                r = _udp_from(_ixfr_query("ux.", 1), "127.0.0.1", s.port)
                assert r.rcode() == dns.rcode.NOERROR, r
                assert _answer_types_serials(r) == [("SOA", "2"), ("SOA", "1"), ("SOA", "2"),
                                                    ("A", "10.9.9.9"), ("SOA", "2")], r
                # current: the one SOA
                r = _udp_from(_ixfr_query("ux.", 2), "127.0.0.1", s.port)
                assert r.rcode() == dns.rcode.NOERROR and _answer_types_serials(r) == [("SOA", "2")], r
                # unknown serial: AXFR-style is 3000 records, too big: the SOA alone (client uses TCP)
                r = _udp_from(_ixfr_query("ux.", 0), "127.0.0.1", s.port)
                assert r.rcode() == dns.rcode.NOERROR and _answer_types_serials(r) == [("SOA", "2")], r
                assert not r.flags & dns.flags.TC
                # outside allow-transfer (127.0.0.2 is loopback too, not in the ACL)
                r = _udp_from(_ixfr_query("ux.", 1), "127.0.0.2", s.port)
                assert r.rcode() == dns.rcode.REFUSED and not r.answer, r
                # a key-only zone: signed request answered and signed; unsigned refused
                r = _udp_from(_ixfr_query("signed.", 3, good), "127.0.0.2", s.port)  # dnspython verifies
                assert r.rcode() == dns.rcode.NOERROR and r.had_tsig
                assert _answer_types_serials(r) == [("SOA", "3")]
                r = _udp_from(_ixfr_query("signed.", 3), "127.0.0.1", s.port)
                assert r.rcode() == dns.rcode.REFUSED, r
                # AXFR over UDP stays FORMERR (RFC 5936 4.2), answered by the worker
                r = _udp_from(dns.message.make_query("ux.", "AXFR"), "127.0.0.1", s.port)
                assert r.rcode() == dns.rcode.FORMERR, r
            assert soa_serial(s.port, "ux.") == 2  # queries still served by the workers
            metrics = urllib.request.urlopen(s.http_url("/metrics"), timeout=5).read().decode()
            udp = [line for line in metrics.splitlines()
                   if line.startswith("secondns_transfers_out_total") and 'result="udp"' in line]
            assert any('zone="ux."' in line and line.endswith(" 24.0") for line in udp), udp


# -- NOTIFY out: IPv6 targets, TSIG of the answers


class _Bind6(Bind):
    """BIND listening on ::1 as well as 127.0.0.1 (the fixture's BIND is IPv4 only, ``-4``)."""

    def _write_config(self) -> None:
        super()._write_config()
        conf = self.conf_path.read_text()
        self.conf_path.write_text(conf.replace("listen-on-v6 { none; };",
                                               f"listen-on-v6 port {self.port} {{ ::1; }};"))

    def _command(self) -> list[str]:
        return [arg for arg in super()._command() if arg != "-4"]


def _metric_lines(s: Secondns, name: str) -> list[str]:
    metrics = urllib.request.urlopen(s.http_url("/metrics"), timeout=5).read().decode()
    return [line for line in metrics.splitlines() if line.startswith(name)]


def _count(lines: list[str], *labels: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if all(label in line for label in labels))


def test_notify_out_to_an_ipv6_secondary_signed_and_its_signed_answer_verified(tmp_path: Path) -> None:
    """``notify: ["[::1]:PORT"]`` reaches a BIND secondary listening on ::1 (before: sent on the
    IPv4 socket, whose write raised InvalidAddressError: secondns exited at start); with ``notify-key`` BIND's
    answer is signed (RFC 8945 5.3) and verifies, so it counts as ``ok`` and not ``badsig``."""
    require_binary("named")
    key = TsigKey.generate("notify-key")
    mid_port, bottom_port = free_port(), free_port()
    zone_v = soa_zone_text("v6n.", 1, records="a IN A 192.0.2.1\n")
    s = Secondns(tmp_path / "mid", zones={"v6n.": {
        "allow-transfer": [{"key": key.name}], "notify": [f"[::1]:{bottom_port}"],
        "notify-key": key.name}}, zone_files={"v6n.": zone_v}, port=mid_port)
    s.config["keys"] = _keys_config(key)
    bottom = _Bind6(tmp_path / "bottom", [ZoneSpec("v6n.", type="secondary", primaries=[mid_port],
                                                   key=key.name)], keys=[key], port=bottom_port)
    with bottom, s:
        # our NOTIFY at load (BIND has no copy yet: it also polls at start, so look for the
        # NOTIFY itself in its log, from ::1, signed)
        _wait(lambda: "notify from ::1#" in bottom.log_text(), "BIND to get our NOTIFY over IPv6")
        _wait(lambda: soa_serial(bottom.port, "v6n.") == 1, "BIND secondary to load serial 1")
        _wait(lambda: _count(_metric_lines(s, "secondns_notifies_out_total"), 'result="ok"') == 1,
              "the NOTIFY to be acknowledged")
        lines = _metric_lines(s, "secondns_notifies_out_total")
        assert _count(lines, 'result="badsig"') == 0 and _count(lines, 'result="timeout"') == 0, lines
        log = s.log_text()
        assert f"NOTIFY of serial 1 to [::1]:{bottom_port} answered ok" in log, log[-3000:]
        assert "not sent" not in log, log[-3000:]
        assert re.search(r"::1#\d+/key notify-key: received notify for zone 'v6n'", bottom.log_text())


class _FakeDownstream:
    """A downstream that answers each NOTIFY as told by ``answers`` (one per NOTIFY received):
    "unsigned", "wrongkey" (signed with another secret) or "good" (signed with the key)."""

    def __init__(self, key: TsigKey, answers: list[str]) -> None:
        self.key = key
        self.answers = list(answers)
        self.received: list[float] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _FakeDownstream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            self.received.append(time.monotonic())
            q = dns.message.from_wire(data, keyring=self.key.keyring())  # verifies our TSIG
            how = self.answers.pop(0) if self.answers else "none"
            if how == "none":
                continue
            r = dns.message.make_response(q)
            if how == "unsigned":
                r.tsig = None  # type: ignore[assignment]
            elif how == "wrongkey":
                other = TsigKey(self.key.name, TsigKey.generate("x").secret, self.key.algorithm)
                r.use_tsig(other.keyring(), keyname=other.name, algorithm=other.algorithm)
                r.request_mac = q.mac
            self.sock.sendto(r.to_wire(), addr)


def test_notify_out_answer_must_carry_a_valid_tsig_when_signed(tmp_path: Path) -> None:
    """RFC 8945 5.3: the answer to a signed NOTIFY is signed; an unsigned or badly signed one is
    no acknowledgement (anyone on the path could forge it): counted ``badsig``, retried, and the
    good signed answer to the third try ends it.  Before: the unsigned answer counted ``ok``."""
    key = TsigKey.generate("notify-key")
    with _FakeDownstream(key, ["unsigned", "wrongkey", "good"]) as down:
        s = Secondns(tmp_path / "s", zones={"fk.": {"notify": [f"127.0.0.1:{down.port}"],
                                                    "notify-key": key.name}},
                     zone_files={"fk.": soa_zone_text("fk.", 4)})
        s.config["keys"] = _keys_config(key)
        with s:
            _wait(lambda: _count(_metric_lines(s, "secondns_notifies_out_total"), 'result="ok"') == 1,
                  "the good answer to be taken", timeout=15)
            lines = _metric_lines(s, "secondns_notifies_out_total")
            assert _count(lines, 'zone="fk."', 'result="badsig"') == 2, lines
            assert len(down.received) == 3, down.received  # retried after each bad answer
            assert down.received[1] - down.received[0] >= 0.9  # on the back-off timer (1 s, 2 s)
            assert down.received[2] - down.received[1] >= 1.9
            log = s.log_text()
            assert "answer to the NOTIFY of serial 4 from" in log and "not signed" in log, log[-3000:]
            assert "BADSIG" in log, log[-3000:]
            time.sleep(1.5)
            assert len(down.received) == 3  # acknowledged: no more tries


class _EagerDownstream:
    """A downstream that, the moment a NOTIFY arrives, asks secondns for the SOA from several
    source ports (so both workers answer some), as BIND does at once, then acknowledges."""

    def __init__(self, upstream_port: int, zone: str, askers: int = 6) -> None:
        self.upstream_port = upstream_port
        self.query = dns.message.make_query(zone, "SOA").to_wire()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.askers = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(askers)]
        for asker in self.askers:
            asker.bind(("127.0.0.1", 0))
            asker.settimeout(2)
        self.seen: list[tuple[int, list[int]]] = []  # (notified serial, serials answered at once)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _EagerDownstream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        for s in (self.sock, *self.askers):
            s.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            for asker in self.askers:  # before anything else: the race is the point
                asker.sendto(self.query, ("127.0.0.1", self.upstream_port))
            notify = dns.message.from_wire(data)
            answered = []
            for asker in self.askers:
                try:
                    reply = dns.message.from_wire(asker.recvfrom(65535)[0])
                    answered.append(int(reply.answer[0][0].serial) if reply.answer else -1)
                except (TimeoutError, IndexError):
                    answered.append(-2)
            self.seen.append((int(notify.answer[0][0].serial), answered))
            self.sock.sendto(dns.message.make_response(notify).to_wire(), addr)


def test_notify_out_in_worker_mode_waits_until_every_worker_serves_the_serial(tmp_path: Path) -> None:
    """workers: 2: a downstream that asks for the SOA the moment our NOTIFY arrives (BIND does)
    gets the notified serial from every worker.  Before, the NOTIFY left as the main process
    swapped the version in, before the workers had it: the downstream could read the old serial,
    conclude it was up to date (RFC 1996 3.11) and wait for REFRESH (bench/xfrout.py's chain
    stalled so on its first change)."""
    import dns.update

    require_binary("named")
    key = TsigKey.generate("update-key")
    records = "".join(f"n{i} IN A 10.1.{i // 256}.{i % 256}\n" for i in range(2000))
    mid_port = free_port()
    top = Bind(tmp_path / "top", [ZoneSpec("eg.", soa_zone_text("eg.", 1, records=records), options=[
        "notify-delay 0;", f'update-policy {{ grant "{key.name}" zonesub ANY; }};'], notify=[mid_port])],
        keys=[key])
    with top, _EagerDownstream(mid_port, "eg.") as down:
        s = Secondns(tmp_path / "s", zones={"eg.": {
            "primaries": [f"127.0.0.1:{top.port}"], "notify": [f"127.0.0.1:{down.port}"]}},
            server={"workers": 2}, ready_zones=[], port=mid_port)
        with s:
            _wait(lambda: len(down.seen) >= 1, "the NOTIFY of the first version")
            for i in range(8):
                upd = dns.update.UpdateMessage("eg.", keyring=key.keyring(), keyname=key.name,
                                               keyalgorithm=key.algorithm)
                upd.replace("chain", 300, "A", f"192.0.2.{i}")
                assert dns.query.tcp(upd, "127.0.0.1", port=top.port, timeout=10).rcode() == 0
                _wait(lambda i=i: len(down.seen) >= 2 + i, f"the NOTIFY of change {i}")  # type: ignore[misc]
                time.sleep(0.6)  # BIND holds a NOTIFY for changes closer together
            late = [(serial, answered) for serial, answered in down.seen if set(answered) != {serial}]
            assert not late, down.seen
            assert [serial for serial, _ in down.seen][-8:] == list(range(2, 10)), down.seen
