"""Interoperability with real primaries: BIND 9, Knot DNS and NSD, every exchange under TSIG.

Each primary and secondns share one hmac-sha256 key; the primary notifies secondns (signed) and
allows transfers only with the key.  For every primary:

* AXFR: the first transfer is a full one and the copy holds exactly the primary's records;
* TSIG: the primary's signed NOTIFY is accepted and starts the refresh;
* IXFR: a change of three records reloaded on the primary arrives as a true IXFR (BIND with
  ``ixfr-from-differences``, Knot with ``zonefile-load: difference``); NSD 4.6 keeps no IXFR
  history of its own, so a bump there only has to arrive, whatever the reply's form;
* fallback: a change the primary will not send incrementally (BIND: larger than its
  ``max-ixfr-ratio``; Knot: journal purged) arrives as an AXFR-style reply, in one transfer, and
  the copy matches the primary record for record;
* wrong key: with another secret configured the primary's rejection (BADSIG) shows in the status
  and the served copy stays as it was.

Besides: our own signing (``tsig.sign_request`` + ``tsig.StreamVerifier`` over a plain socket)
against BIND in both directions, and NOTIFYs signed by dnspython sent to secondns.

secondns serves no AXFR, so "the copy equals the primary" means: the primary's AXFR (listed by
``dig -y``) as a set of records equals, RRset by RRset, what secondns answers for the same names
and types, and secondns's record count equals the primary's (no extra records).

Results collect into an interop matrix printed when the module finishes and written to
``<pytest basetemp>/interop_matrix.json``.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
from peers import LOOPBACK, Bind, Knot, Nsd, Secondns, TsigKey, ZoneSpec, dig, free_port, require_binary
from prometheus_client.parser import text_string_to_metric_families

from secondns import names, rrtypes
from secondns.config import TsigKey as SecondnsKey
from secondns.transfer import tsig
from secondns.transfer.xfrin import AxfrConsumer, make_query
from secondns.zone import Zone

pytestmark = pytest.mark.integration

ZONE = "example.com"
ORIGIN = "example.com."
KEY_NAME = "xfr-key"
HOSTS = 200  # BIND's max-ixfr-ratio is relative to the zone: big enough that 3 records are small
WAIT = 15.0  # seconds; every wait below is bounded by this
STATUS_POLL = 0.1

PRIMARIES = ("bind", "knot", "nsd")
INCREMENTAL = ("bind", "knot")
PRIMARY_OPTIONS: dict[str, list[str]] = {
    # A reload computes the difference and journals it, so IXFR has something to send; a
    # difference above 20% of the zone is answered AXFR-style.
    "bind": ["ixfr-from-differences yes;", "max-ixfr-ratio 20%;"],
    "knot": ["zonefile-load: difference", "journal-content: changes"],
    "nsd": [],
}
COLUMNS = ("AXFR", "IXFR", "TSIG", "fallback", "wrong-key")

RecordKey = tuple[str, int, int, bytes]
"""(owner lowercased, type, TTL, canonical rdata): one record as both sides are compared."""


# --------------------------------------------------------------------------------------------------
# the interop matrix


@dataclass
class Matrix:
    """Outcome per (peer, column): pass (with a note), FAIL, skip; printed at module end."""

    cells: dict[str, dict[str, str]] = field(default_factory=dict)

    @contextlib.contextmanager
    def cell(self, row: str, column: str) -> Iterator[dict[str, str]]:
        """Record the outcome of the block; put a short ``note`` in the yielded dict."""
        note: dict[str, str] = {}
        outcome = "FAIL"
        try:
            yield note
            outcome = "pass" + (f" ({note['note']})" if "note" in note else "")
        except pytest.skip.Exception:
            outcome = "skip"
            raise
        finally:
            self._merge(row, column, outcome)

    def _merge(self, row: str, column: str, outcome: str) -> None:
        """Several tests may feed one cell: any FAIL wins, passes keep every note."""
        cells = self.cells.setdefault(row, {})
        before = cells.get(column)
        if before is None or before == "skip" or outcome == "FAIL":
            cells[column] = outcome
        elif before.startswith("pass") and outcome.startswith("pass ("):
            notes = before[len("pass ("):-1] + ", " if before != "pass" else ""
            cells[column] = f"pass ({notes}{outcome[len('pass ('):-1]})"

    def render(self) -> str:
        rows = list(self.cells)
        width = [max([len("primary"), *map(len, rows)])]
        width += [max([len(c), *(len(self.cells[r].get(c, "n/a")) for r in rows)]) for c in COLUMNS]
        lines = ["  ".join(h.ljust(w) for h, w in zip(("primary", *COLUMNS), width, strict=True)).rstrip()]
        lines.append("  ".join("-" * w for w in width))
        for row in rows:
            values = [row, *(self.cells[row].get(c, "n/a") for c in COLUMNS)]
            lines.append("  ".join(v.ljust(w) for v, w in zip(values, width, strict=True)).rstrip())
        return "\n".join(lines)


@pytest.fixture(scope="module")
def matrix(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Matrix]:
    result = Matrix()
    yield result
    if not result.cells:
        return
    path = tmp_path_factory.getbasetemp() / "interop_matrix.json"
    path.write_text(json.dumps({"columns": COLUMNS, "rows": result.cells}, indent=2) + "\n")
    text = f"\ninterop matrix (TSIG hmac-sha256; also in {path}):\n{result.render()}\n"
    capture = request.config.pluginmanager.getplugin("capturemanager")
    if capture is None:
        print(text)
        return
    with capture.global_and_fixture_disabled():
        print(text)


# --------------------------------------------------------------------------------------------------
# zone data


def host_records(count: int = HOSTS) -> dict[str, str]:
    """Owner -> record line: an A/AAAA/MX/TXT mix, one record per name, no delegations."""
    out = {}
    for i in range(count):
        name = f"h{i}"
        kind = i % 4
        if kind == 0:
            out[name] = f"{name} IN A 198.51.100.{i % 250}"
        elif kind == 1:
            out[name] = f"{name} IN AAAA 2001:db8::{i:x}"
        elif kind == 2:
            out[name] = f"{name} IN MX 10 mail{i}.{ORIGIN}"
        else:
            out[name] = f'{name} IN TXT "record {i}"'
    return out


def zone_text(serial: int, hosts: dict[str, str]) -> str:
    """SOA timers of seconds (REFRESH 2, RETRY 1), so a missed NOTIFY still converges quickly."""
    head = [
        f"$ORIGIN {ORIGIN}",
        "$TTL 300",
        f"@ IN SOA ns1.{ORIGIN} hostmaster.{ORIGIN} {serial} 2 1 3600 60",
        f"@ IN NS ns1.{ORIGIN}",
        f"@ IN NS ns2.{ORIGIN}",
        "ns1 IN A 192.0.2.1",
        "ns2 IN A 192.0.2.2",
    ]
    return "\n".join([*head, *hosts.values()]) + "\n"


def small_change(hosts: dict[str, str]) -> dict[str, str]:
    """Three records: h0's address changes, h1 goes, "new" appears."""
    out = dict(hosts)
    out["h0"] = "h0 IN A 203.0.113.1"
    del out["h1"]
    out["new"] = 'new IN TXT "added in version 2"'
    return out


SMALL_CHANGE_QUESTIONS = (("h0", "A"), ("h1", "AAAA"), ("new", "TXT"))


def large_change(hosts: dict[str, str]) -> dict[str, str]:
    """Every A and TXT record rewritten: half the zone, far above BIND's 20% IXFR ratio."""
    out = {}
    for name, line in hosts.items():
        if " IN A " in line:
            line = line.replace("198.51.100.", "203.0.113.")
        elif " IN TXT " in line:
            line = line.replace('"record', '"rewritten')
        out[name] = line
    return out


# --------------------------------------------------------------------------------------------------
# observing both sides


def status(sec: Secondns) -> dict[str, Any]:
    with urllib.request.urlopen(sec.http_url("/status"), timeout=5) as reply:
        zones: list[dict[str, Any]] = json.load(reply)["zones"]
    return next(z for z in zones if z["zone"] == ORIGIN)


def wait_status(sec: Secondns, ok: Callable[[dict[str, Any]], bool], what: str,
                timeout: float = WAIT) -> dict[str, Any]:
    """Poll GET /status until ``ok``; on timeout fail with the last status and the log tail."""
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError, StopIteration):
            last = status(sec)
            if ok(last):
                return last
        time.sleep(STATUS_POLL)
    raise AssertionError(f"secondns: {what} not seen within {timeout:g}s; last status:\n"
                         f"{json.dumps(last, indent=2)}\n{sec.log_tail()}")


def wait_until(check: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(STATUS_POLL)
    raise AssertionError(f"{what} not seen within {timeout:g}s")


def metric(sec: Secondns, sample: str, **labels: str) -> float:
    """One sample from GET /metrics (0 when absent)."""
    with urllib.request.urlopen(sec.http_url("/metrics"), timeout=5) as reply:
        text = reply.read().decode()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


def record_key(rrset: dns.rrset.RRset, rdata: Any) -> RecordKey:
    return (rrset.name.canonicalize().to_text(), int(rrset.rdtype), int(rrset.ttl), rdata.to_digestable())


def dig_axfr(port: int, key: TsigKey) -> set[RecordKey]:
    """The primary's zone as ``dig -y ... AXFR`` lists it, one SOA (an independent client)."""
    out = dig(port, ORIGIN, "AXFR", "-y", f"{key.algorithm}:{key.name}:{key.secret}", "+onesoa",
              timeout=5)
    records: set[RecordKey] = set()
    for line in out.text.splitlines():
        if not line.strip() or line.startswith(";"):
            continue
        owner, ttl, rdclass, rdtype, rdata = line.split(maxsplit=4)
        if rdtype == "TSIG":
            continue  # dig prints each message's signature among the records
        rrset = dns.rrset.from_text(owner, int(ttl), rdclass, rdtype, rdata)
        records.add(record_key(rrset, rrset[0]))
    assert records, f"dig AXFR of port {port} listed nothing:\n{out.text}"
    return records


def ask(port: int, qname: str, qtype: str | dns.rdatatype.RdataType) -> dns.message.Message:
    """One query without RD; repeated over TCP when truncated."""
    query = dns.message.make_query(qname, qtype, use_edns=0, payload=1232)
    query.flags &= ~dns.flags.RD
    reply = dns.query.udp(query, LOOPBACK, port=port, timeout=3)
    if reply.flags & dns.flags.TC:
        reply = dns.query.tcp(query, LOOPBACK, port=port, timeout=3)
    return reply


def served(port: int, questions: set[tuple[str, int]]) -> set[RecordKey]:
    """Every record ``port`` answers for the (name, type) questions: the listing rebuilt by query."""
    records: set[RecordKey] = set()
    for qname, qtype in sorted(questions):
        rdtype = dns.rdatatype.RdataType.make(qtype)
        reply = ask(port, qname, rdtype)
        assert reply.rcode() == dns.rcode.NOERROR, f"{qname} {rdtype.name}: {reply}"
        for rrset in reply.answer:
            records.update(record_key(rrset, rd) for rd in rrset)
    return records


def answers(port: int, qname: str, qtype: str) -> tuple[str, set[str]]:
    reply = ask(port, qname, qtype)
    return dns.rcode.to_text(reply.rcode()), {rd.to_text() for rrset in reply.answer for rd in rrset}


# --------------------------------------------------------------------------------------------------
# a primary with secondns as its secondary


@dataclass
class Pair:
    kind: str
    primary: Bind | Knot | Nsd
    secondns: Secondns
    key: TsigKey
    hosts: dict[str, str]

    def publish(self, serial: int, hosts: dict[str, str], *, reload: bool = True) -> None:
        """New zone file on the primary, reloaded and served (secondns hears by NOTIFY or refresh)."""
        self.hosts = hosts
        self.primary.write_zone(ZONE, zone_text(serial, hosts))
        if reload:
            self.primary.reload(ZONE)
            self.primary.wait_serial(ZONE, serial, timeout=WAIT)

    def assert_consistent(self) -> None:
        """secondns holds exactly the primary's records."""
        listing = dig_axfr(self.primary.port, self.key)
        questions = {(owner, rtype) for owner, rtype, _, _ in listing}
        assert served(self.secondns.port, questions) == listing
        assert status(self.secondns)["records"] == len(listing)


def secondns_zone(primary_port: int) -> dict[str, Any]:
    return {
        "primaries": [f"{LOOPBACK}:{primary_port}"],
        "key": KEY_NAME,
        "transfer": "ixfr",
        "refresh-min": 1,
        "retry-min": 1,
        "retry-max": 2,
    }


def keys_section(key: TsigKey) -> dict[str, Any]:
    return {key.name: {"algorithm": key.algorithm, "secret": key.secret}}


@pytest.fixture
def make_pair(request: pytest.FixtureRequest) -> Callable[[str], Pair]:
    """``make_pair(kind)``: the primary (notifying secondns, signed), secondns holding serial 1."""

    def make(kind: str) -> Pair:
        require_binary("dig")
        key = TsigKey.generate(KEY_NAME)
        port = free_port()  # secondns's, known before the primary starts so it can notify it
        hosts = host_records()
        spec = ZoneSpec(ZONE, zone_text(1, hosts), options=PRIMARY_OPTIONS[kind], notify=[port],
                        key=key.name)
        primary = request.getfixturevalue(f"{kind}_factory")([spec], keys=[key])
        sec: Secondns = request.getfixturevalue("secondns_factory")(
            {ORIGIN: secondns_zone(primary.port)}, port=port, start=False)
        sec.config["keys"] = keys_section(key)
        sec.start()
        wait_status(sec, lambda z: z["serial"] == 1, "the first transfer (serial 1)")
        return Pair(kind, primary, sec, key, hosts)

    return make


# --------------------------------------------------------------------------------------------------
# per primary: AXFR, TSIG, IXFR, fallback, wrong key


@pytest.mark.parametrize("kind", PRIMARIES)
def test_first_transfer_is_an_axfr_equal_to_the_primary(make_pair: Callable[[str], Pair], matrix: Matrix,
                                                        kind: str) -> None:
    with matrix.cell(kind, "AXFR") as note:
        pair = make_pair(kind)
        last = status(pair.secondns)["last_transfer"]
        assert (last["type"], last["result"], last["serial"]) == ("axfr", "success", 1)
        pair.assert_consistent()
        note["note"] = f"{status(pair.secondns)['records']} rr"


@pytest.mark.parametrize("kind", PRIMARIES)
def test_signed_notify_from_the_primary_is_accepted(make_pair: Callable[[str], Pair], matrix: Matrix,
                                                    kind: str) -> None:
    with matrix.cell(kind, "TSIG"):
        pair = make_pair(kind)
        sec = pair.secondns
        accepted = metric(sec, "secondns_notifies_total", zone=ORIGIN, result="accepted")
        pair.publish(2, small_change(pair.hosts))
        wait_until(lambda: metric(sec, "secondns_notifies_total", zone=ORIGIN, result="accepted")
                   > accepted, f"an accepted NOTIFY from {kind}")
        assert metric(sec, "secondns_notifies_total", zone=ORIGIN, result="refused") == 0
        wait_status(sec, lambda z: z["serial"] == 2, "serial 2")


@pytest.mark.parametrize("kind", INCREMENTAL)
def test_small_change_arrives_as_a_true_ixfr(make_pair: Callable[[str], Pair], matrix: Matrix,
                                             kind: str) -> None:
    with matrix.cell(kind, "IXFR"):
        pair = make_pair(kind)
        sec = pair.secondns
        ixfr_ok = metric(sec, "secondns_transfers_total", zone=ORIGIN, type="ixfr", result="success")
        pair.publish(2, small_change(pair.hosts))
        z = wait_status(sec, lambda z: z["serial"] == 2, "serial 2")
        assert (z["last_transfer"]["type"], z["last_transfer"]["result"]) == ("ixfr", "success")
        assert metric(sec, "secondns_transfers_total", zone=ORIGIN, type="ixfr",
                      result="success") == ixfr_ok + 1
        expected = {}
        for name, qtype in SMALL_CHANGE_QUESTIONS:
            qname = f"{name}.{ORIGIN}"
            expected[qname, qtype] = answers(pair.primary.port, qname, qtype)
            assert answers(sec.port, qname, qtype) == expected[qname, qtype], qname
        # The IXFR went to the journal, not a rewritten copy; a restart with the primary gone
        # must serve serial 2 at once from copy + journal (issue: "a restart needs no transfer").
        wait_until(lambda: sec.zone_path(ORIGIN).with_name(sec.zone_path(ORIGIN).name + ".journal").exists(),
                   "the IXFR journal on disk")
        pair.primary.stop()
        sec.restart()
        assert [rd.serial for rd in ask(sec.port, ORIGIN, "SOA").answer[0]] == [2]
        for (qname, qtype), want in expected.items():
            assert answers(sec.port, qname, qtype) == want, qname


def test_nsd_serial_bump_is_transferred(make_pair: Callable[[str], Pair], matrix: Matrix) -> None:
    """NSD 4.6 keeps no IXFR history: either form of reply is fine, the copy must match."""
    with matrix.cell("nsd", "IXFR") as note:
        pair = make_pair("nsd")
        pair.publish(2, small_change(pair.hosts))
        z = wait_status(pair.secondns, lambda z: z["serial"] == 2, "serial 2")
        assert z["last_transfer"]["result"] == "success"
        pair.assert_consistent()
        note["note"] = f"as {z['last_transfer']['type'].upper()}"


@pytest.mark.parametrize("kind", INCREMENTAL)
def test_change_the_primary_will_not_send_incrementally_arrives_whole(
        make_pair: Callable[[str], Pair], matrix: Matrix, kind: str) -> None:
    with matrix.cell(kind, "fallback") as note:
        pair = make_pair(kind)
        sec = pair.secondns
        if kind == "bind":
            pair.publish(2, large_change(pair.hosts))  # above max-ixfr-ratio
            why = "exceeds the maximum ratio"
        else:
            # Knot: the history is gone (journal purged, zone reloaded afresh) before the bump.
            assert isinstance(pair.primary, Knot)
            pair.publish(2, small_change(pair.hosts), reload=False)
            pair.primary.knotc("zone-purge", "-f", ORIGIN, "+expire", "+journal")
            pair.primary.knotc("reload")
            pair.primary.wait_serial(ZONE, 2, timeout=WAIT)
            why = "incomplete history"
        z = wait_status(sec, lambda z: z["serial"] == 2, "serial 2")
        assert (z["last_transfer"]["type"], z["last_transfer"]["result"]) == ("axfr", "success")
        # The AXFR-style reply to our IXFR is used as it is: no failed IXFR, no second transfer.
        assert metric(sec, "secondns_transfers_total", zone=ORIGIN, type="ixfr", result="failure") == 0
        assert metric(sec, "secondns_transfers_total", zone=ORIGIN, type="axfr", result="success") == 2
        assert why in pair.primary.log_text()
        pair.assert_consistent()
        note["note"] = "AXFR-style IXFR"


@pytest.mark.parametrize("kind", PRIMARIES)
def test_wrong_secret_is_rejected_and_the_copy_kept(make_pair: Callable[[str], Pair], matrix: Matrix,
                                                   kind: str) -> None:
    with matrix.cell(kind, "wrong-key") as note:
        pair = make_pair(kind)
        sec = pair.secondns
        sec.config["keys"] = keys_section(TsigKey.generate(KEY_NAME))  # same name, other secret
        sec.reload()
        wait_until(lambda: "reloaded: 0 added, 0 removed, 1 changed" in sec.log_text(),
                   "secondns reloading its configuration")
        before = status(sec)
        pair.publish(2, small_change(pair.hosts))
        z = wait_status(sec, lambda z: bool(re.search(r"rejected our TSIG: BAD(SIG|KEY)",
                                                      z["last_error"] or "")),
                        "the primary's TSIG rejection in last_error")
        assert (z["serial"], z["records"]) == (1, before["records"])
        assert [rd.serial for rd in ask(sec.port, ORIGIN, "SOA").answer[0]] == [1]
        assert answers(sec.port, f"new.{ORIGIN}", "TXT") == ("NXDOMAIN", set())
        note["note"] = re.search(r"BAD(SIG|KEY)", z["last_error"]).group(0)  # type: ignore[union-attr]


# --------------------------------------------------------------------------------------------------
# our TSIG code against BIND, over a plain socket


def _read_exact(sock: socket.socket, size: int, deadline: float) -> bytes:
    data = b""
    while len(data) < size:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("primary closed the connection mid-message")
        data += chunk
    return data


def raw_signed_axfr(port: int, key: SecondnsKey, timeout: float = 10.0) -> tuple[Zone, tsig.StreamVerifier]:
    """AXFR signed by ``tsig.sign_request``, every reply through ``tsig.StreamVerifier``."""
    origin = names.from_text(ORIGIN)
    msg_id = 0x5EC0
    request, mac = tsig.sign_request(make_query(origin, rrtypes.AXFR, msg_id), key)
    verifier = tsig.StreamVerifier(key, mac)
    consumer = AxfrConsumer(origin, msg_id, max_records=1_000_000, on_message=verifier.verify)
    deadline = time.monotonic() + timeout
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
        sock.sendall(len(request).to_bytes(2, "big") + request)
        done = False
        while not done:
            size = int.from_bytes(_read_exact(sock, 2, deadline), "big")
            done = consumer.feed(_read_exact(sock, size, deadline))
    verifier.finish()
    return consumer.result(), verifier


@pytest.fixture
def keyed_bind(bind_factory: Callable[..., Bind]) -> tuple[Bind, TsigKey]:
    """BIND serving a zone big enough for a multi-message AXFR, transfers only with the key."""
    require_binary("dig")
    key = TsigKey.generate(KEY_NAME)
    bind = bind_factory([ZoneSpec(ZONE, zone_text(1, host_records(4000)), key=key.name)], keys=[key])
    return bind, key


def ours(key: TsigKey) -> SecondnsKey:
    import base64

    return SecondnsKey(key.name, key.algorithm, base64.b64decode(key.secret))


def test_dig_signed_axfr_from_bind_works_and_unsigned_is_refused(keyed_bind: tuple[Bind, TsigKey]) -> None:
    """Baseline for the raw tests: the key and BIND's transfer ACL are as intended."""
    bind, key = keyed_bind
    assert len(dig_axfr(bind.port, key)) == 4000 + 5
    unsigned = dig(bind.port, ORIGIN, "AXFR", timeout=5)
    assert "Transfer failed" in unsigned.text


def test_bind_accepts_our_signed_axfr_and_its_signatures_verify(keyed_bind: tuple[Bind, TsigKey],
                                                                matrix: Matrix) -> None:
    with matrix.cell("tsig.py -> BIND (raw)", "TSIG") as note:
        bind, key = keyed_bind
        zone, verifier = raw_signed_axfr(bind.port, ours(key))
        assert zone.record_count == len(dig_axfr(bind.port, key))
        assert verifier.messages > 1 and verifier.signed >= 1  # a multi-message, signed stream
        assert "AXFR ended" in bind.log_text() and "TSIG xfr-key" in bind.log_text()
        note["note"] = f"{verifier.messages} msgs, {verifier.signed} signed"


def test_bind_rejects_our_axfr_signed_with_another_secret(keyed_bind: tuple[Bind, TsigKey],
                                                          matrix: Matrix) -> None:
    with matrix.cell("tsig.py -> BIND (raw)", "wrong-key") as note:
        bind, _ = keyed_bind
        with pytest.raises(tsig.TsigError) as err:
            raw_signed_axfr(bind.port, ours(TsigKey.generate(KEY_NAME)))
        assert err.value.remote and err.value.reason == "BADSIG"
        note["note"] = err.value.reason


# --------------------------------------------------------------------------------------------------
# NOTIFY signed by dnspython, sent to secondns


@pytest.fixture
def keyed_secondns(secondns_factory: Callable[..., Secondns]) -> tuple[Secondns, TsigKey]:
    """secondns with a keyed zone whose primary (127.0.0.1, the NOTIFY source) is not running."""
    key = TsigKey.generate(KEY_NAME)
    sec = secondns_factory({ORIGIN: secondns_zone(free_port())}, start=False)
    sec.config["keys"] = keys_section(key)
    sec.start()
    return sec, key


def notify(port: int, key: TsigKey | None, *, verify: bool) -> dns.message.Message:
    """Send a NOTIFY (signed with ``key`` when given); with ``verify``, dnspython checks the reply's TSIG."""
    msg = dns.message.make_query(ORIGIN, "SOA", use_edns=False)
    msg.flags = dns.flags.AA  # RFC 1996 3.7; before set_opcode, which keeps its bits in flags
    msg.set_opcode(dns.opcode.NOTIFY)
    if key is not None:
        msg.use_tsig(key.keyring(), keyname=key.name, algorithm=key.algorithm)
    wire = msg.to_wire()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(3)
        sock.sendto(wire, (LOOPBACK, port))
        data, _ = sock.recvfrom(65535)
    keyring: Any = key.keyring() if verify and key is not None else False
    return dns.message.from_wire(data, keyring=keyring, request_mac=msg.mac if key else b"")


def test_signed_notify_is_acknowledged_with_a_signature_dnspython_verifies(
        keyed_secondns: tuple[Secondns, TsigKey], matrix: Matrix) -> None:
    with matrix.cell("dnspython NOTIFY -> secondns", "TSIG"):
        sec, key = keyed_secondns
        reply = notify(sec.port, key, verify=True)  # raises unless the reply's MAC verifies
        assert reply.rcode() == dns.rcode.NOERROR
        assert reply.had_tsig and reply.opcode() == dns.opcode.NOTIFY


@pytest.mark.parametrize(("wrong", "error"), [("secret", "BADSIG"), ("name", "BADKEY")])
def test_notify_signed_with_a_wrong_key_gets_notauth(keyed_secondns: tuple[Secondns, TsigKey],
                                                     matrix: Matrix, wrong: str, error: str) -> None:
    with matrix.cell("dnspython NOTIFY -> secondns", "wrong-key") as note:
        sec, _ = keyed_secondns
        bad = TsigKey.generate(KEY_NAME if wrong == "secret" else "other-key")
        reply = notify(sec.port, bad, verify=False)
        assert reply.rcode() == dns.rcode.NOTAUTH
        assert reply.had_tsig and reply.tsig_error == getattr(dns.rcode, error)
        assert metric(sec, "secondns_notifies_total", zone=ORIGIN, result="refused") == 1
        note["note"] = error


def test_unsigned_notify_to_a_keyed_zone_is_refused(keyed_secondns: tuple[Secondns, TsigKey],
                                                    matrix: Matrix) -> None:
    """No TSIG at all is a policy failure, not a TSIG one: REFUSED, as BIND answers (tsig.error_response)."""
    with matrix.cell("dnspython NOTIFY -> secondns", "wrong-key") as note:
        sec, _ = keyed_secondns
        reply = notify(sec.port, None, verify=False)
        assert reply.rcode() == dns.rcode.REFUSED
        assert not reply.had_tsig
        assert metric(sec, "secondns_notifies_total", zone=ORIGIN, result="refused") == 1
        note["note"] = "unsigned: REFUSED"

