"""A validating resolver (Unbound) checks what secondns serves from signed zones.

The differential test (test_dnssec_diff.py) shows secondns answers as BIND does; this one shows
the answers *validate*.  secondns serves the zones of ``signing.STANDARD_ZONES`` (NSEC, NSEC3,
NSEC3 with opt-out); Unbound, configured with each zone's KSK DS as its trust anchor and secondns as
the only server for the zones (``stub-zone``), resolves a matrix of questions (RD=1, DO=1) and
the AD bit tells the outcome:

* secure (NOERROR or NXDOMAIN with AD): positive answers, NXDOMAIN and NODATA proofs, wildcard
  answers and wildcard NODATA, CNAME/DNAME chains, the DS of the signed delegation, and the
  absence of a DS at the unsigned delegations, proven by NSEC or by the delegation's own NSEC3;
* insecure (no AD, not SERVFAIL): in the opt-out zone, every proof that rests on an NSEC3
  *covering* a name (NXDOMAIN, wildcard expansion, the missing DS of an unsigned delegation):
  an opt-out span may hide unsigned delegations, so it proves no more than insecurity
  (RFC 5155 9.2; BIND serves exactly the same records, see test_dnssec_diff.py);
* bogus (SERVFAIL): an RRSIG corrupted in a copy of the zone, which shows the check can fail.

Names below the delegations are never asked: their servers (192.0.2.x) are not ours, and
``outgoing-interface: 127.0.0.1`` keeps Unbound from sending anything off loopback anyway.
The DS question is what decides a delegation's security, so it is the one asked.
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
from peers import LOOPBACK, Peer, Secondns, require_binary
from signing import SignedZone, make_standard_zones, tamper

pytestmark = pytest.mark.integration

TIMEOUT = 5.0
SECURE = "secure"
INSECURE = "insecure"
BOGUS = "bogus"


class Unbound(Peer):
    """``unbound -d`` validating with the given trust anchors, stub zones pointing at loopback ports."""

    binary = "unbound"
    log_name = "unbound.log"

    def __init__(self, workdir: Path, anchors: Sequence[str], stubs: Mapping[str, int], *,
                 port: int | None = None) -> None:
        super().__init__(workdir, port=port)
        self.anchors = list(anchors)
        self.stubs = dict(stubs)
        self.conf_path = self.workdir / "unbound.conf"

    def _write_config(self) -> None:
        d = self.workdir
        anchors = "".join(f'    trust-anchor: "{a}"\n' for a in self.anchors)
        stubs = "".join(
            f'stub-zone:\n    name: "{zone}"\n    stub-addr: {LOOPBACK}@{port}\n'
            for zone, port in self.stubs.items()
        )
        conf = f"""\
server:
    interface: {LOOPBACK}
    port: {self.port}
    outgoing-interface: {LOOPBACK}
    do-ip6: no
    access-control: 127.0.0.0/8 allow
    do-not-query-localhost: no
    username: ""
    chroot: ""
    directory: "{d}"
    pidfile: "{d}/unbound.pid"
    logfile: "{self.log_path}"
    use-syslog: no
    verbosity: 1
    val-log-level: 2
    module-config: "validator iterator"
    num-threads: 1
    so-reuseport: no
    trust-anchor-signaling: no
    root-key-sentinel: no
    # Every answer from secondns, none synthesised from NSEC records cached earlier (RFC 8198).
    aggressive-nsec: no
{anchors}
{stubs}
remote-control:
    control-enable: no
"""
        self.conf_path.write_text(textwrap.dedent(conf))

    def _command(self) -> list[str]:
        return [require_binary("unbound"), "-d", "-c", str(self.conf_path)]

    def _answers(self) -> bool:
        try:
            reply = resolve(self.port, next(iter(self.stubs)), "SOA", timeout=0.5)
        except (dns.exception.DNSException, OSError):
            return False
        return reply.rcode() == dns.rcode.NOERROR


def resolve(port: int, qname: str, qtype: str, *, timeout: float = TIMEOUT) -> dns.message.Message:
    """A stub resolver's question: RD and DO set, over UDP then TCP if truncated."""
    msg = dns.message.make_query(qname, qtype, want_dnssec=True, payload=1232)
    reply, _tcp = dns.query.udp_with_fallback(msg, LOOPBACK, timeout=timeout, port=port)
    return reply


def security(reply: dns.message.Message) -> str:
    if reply.rcode() == dns.rcode.SERVFAIL:
        return BOGUS
    return SECURE if reply.flags & dns.flags.AD else INSECURE


# --------------------------------------------------------------------------------------------------
# the matrix


@dataclass(frozen=True)
class Case:
    kind: str  # what the question exercises
    name: str  # relative to the zone
    qtype: str
    rcode: str
    # The proof rests on an NSEC3 covering a name (the next closer name, or the delegation):
    # with opt-out that NSEC3 cannot exclude an unsigned delegation in its span, so a
    # validator may only call the answer insecure (RFC 5155 9.2; Unbound's "nc has optout").
    opt_out_insecure: bool = False


CASES: tuple[Case, ...] = (
    Case("existing", "@", "SOA", "NOERROR"),
    Case("existing", "@", "DNSKEY", "NOERROR"),
    Case("existing", "@", "NS", "NOERROR"),
    Case("existing", "@", "MX", "NOERROR"),
    Case("existing", "www", "A", "NOERROR"),
    Case("existing", "www", "AAAA", "NOERROR"),
    Case("existing", "mail2", "A", "NOERROR"),
    Case("existing", "a.b.c", "TXT", "NOERROR"),
    Case("existing", "alias", "A", "NOERROR"),
    Case("existing", "alias", "CNAME", "NOERROR"),
    Case("existing", "chain", "AAAA", "NOERROR"),
    Case("existing", "big", "TXT", "NOERROR"),  # truncated over UDP: Unbound retries over TCP
    Case("existing", "mid", "TXT", "NOERROR"),
    Case("existing", "dn", "DNAME", "NOERROR"),
    Case("existing", "www.dn", "A", "NOERROR"),  # DNAME, synthesised CNAME, target
    Case("nxdomain", "nx", "A", "NXDOMAIN", opt_out_insecure=True),
    Case("nxdomain", "0", "A", "NXDOMAIN", opt_out_insecure=True),
    Case("nxdomain", "zzzz", "TXT", "NXDOMAIN", opt_out_insecure=True),
    Case("nxdomain", "nx.www", "A", "NXDOMAIN", opt_out_insecure=True),
    Case("nxdomain", "x.b.c", "A", "NXDOMAIN", opt_out_insecure=True),
    Case("nxdomain", "x.host.w", "A", "NXDOMAIN", opt_out_insecure=True),
    Case("nxdomain", "nx.dn", "A", "NXDOMAIN", opt_out_insecure=True),  # after the DNAME
    Case("nodata", "www", "MX", "NOERROR"),
    Case("nodata", "@", "TXT", "NOERROR"),
    Case("nodata", "mail2", "AAAA", "NOERROR"),
    Case("nodata", "b.c", "A", "NOERROR"),  # empty non-terminal
    Case("nodata", "c", "TXT", "NOERROR"),  # empty non-terminal
    Case("nodata", "host.w", "TXT", "NOERROR"),
    Case("wildcard", "x.w", "A", "NOERROR", opt_out_insecure=True),
    Case("wildcard", "a.b.w", "TXT", "NOERROR", opt_out_insecure=True),
    Case("wildcard", "x.w", "AAAA", "NOERROR", opt_out_insecure=True),  # wildcard NODATA
    Case("wildcard", "x.cw", "A", "NOERROR", opt_out_insecure=True),  # wildcard CNAME
    Case("delegation", "secure", "DS", "NOERROR"),
    Case("delegation", "insecure", "DS", "NOERROR", opt_out_insecure=True),
    Case("delegation", "remote", "DS", "NOERROR", opt_out_insecure=True),
)


def expected_status(case: Case, zone: SignedZone) -> str:
    opt_out = zone.nsec3 is not None and zone.nsec3.opt_out
    return INSECURE if opt_out and case.opt_out_insecure else SECURE


@dataclass(frozen=True)
class Row:
    zone: str
    case: Case
    expected: str
    rcode: str
    status: str
    answer_types: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return (self.rcode, self.status) == (self.case.rcode, self.expected)

    def __str__(self) -> str:
        mark = "ok " if self.ok else "BAD"
        want = f"{self.case.rcode} {self.expected}"
        got = f"{self.rcode} {self.status}"
        return (f"{mark} {self.zone:<14} {self.case.kind:<10} {self.case.name + ' ' + self.case.qtype:<16} "
                f"expected {want:<18} got {got:<18} answer {' '.join(self.answer_types) or '-'}")


def _row(port: int, zone: SignedZone, case: Case) -> Row:
    reply = resolve(port, zone.fqdn(case.name), case.qtype)
    types = tuple(dns.rdatatype.to_text(r.rdtype) for r in reply.answer)
    return Row(zone.name, case, expected_status(case, zone), dns.rcode.to_text(reply.rcode()),
               security(reply), types)


@dataclass(frozen=True)
class Setup:
    zones: dict[str, SignedZone]
    rows: list[Row]
    base: Path


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    require_binary("unbound")
    base = tmp_path_factory.mktemp("dnssec-validate")
    zones = make_standard_zones(base / "signed")
    ours = Secondns(base / "secondns", zone_files={z.name: z.path for z in zones.values()}, http=False)
    with ours:
        unbound = Unbound(base / "unbound", [z.trust_anchor for z in zones.values()],
                          {z.origin: ours.port for z in zones.values()})
        with unbound:
            started = time.monotonic()
            rows = [_row(unbound.port, zone, case) for zone in zones.values() for case in CASES]
            elapsed = time.monotonic() - started
    print(f"\nUnbound validating secondns ({len(rows)} questions, {elapsed:.1f}s):")
    print("\n".join(str(row) for row in rows))
    yield Setup(zones, rows, base)


def _bad(setup: Setup, kind: str) -> list[str]:
    return [str(row) for row in setup.rows if row.case.kind == kind and not row.ok]


# --------------------------------------------------------------------------------------------------
# the tests


def test_positive_answers_validate(setup: Setup) -> None:
    assert not _bad(setup, "existing"), "\n".join(_bad(setup, "existing"))


def test_nxdomain_proofs_validate(setup: Setup) -> None:
    assert not _bad(setup, "nxdomain"), "\n".join(_bad(setup, "nxdomain"))


def test_nodata_proofs_validate(setup: Setup) -> None:
    assert not _bad(setup, "nodata"), "\n".join(_bad(setup, "nodata"))


def test_wildcard_answers_and_wildcard_nodata_validate(setup: Setup) -> None:
    assert not _bad(setup, "wildcard"), "\n".join(_bad(setup, "wildcard"))


def test_delegation_ds_and_its_absence_validate(setup: Setup) -> None:
    # The signed child's DS validates; an unsigned child's missing DS is proven by NSEC or by
    # the NSEC3 matching the delegation (secure), or by an opt-out span (insecure, never bogus).
    assert not _bad(setup, "delegation"), "\n".join(_bad(setup, "delegation"))


def test_no_question_fails_validation(setup: Setup) -> None:
    # SERVFAIL would mean a proof or signature that does not verify: never acceptable.
    assert not [str(r) for r in setup.rows if r.status == BOGUS]


def test_nsec3_proofs_without_opt_out_are_secure(setup: Setup) -> None:
    # Without opt-out every NSEC3 proof is conclusive, so nothing may come out insecure: this is
    # what shows the NSEC3 closest-encloser, wildcard and NODATA proofs are complete.
    rows = [r for r in setup.rows if r.zone == setup.zones["nsec3"].name]
    assert rows and all(r.status == SECURE for r in rows), [str(r) for r in rows if r.status != SECURE]


def test_a_corrupted_signature_is_bogus(setup: Setup) -> None:
    # The same NSEC zone with one character of the www A RRSIG changed: Unbound must refuse the
    # answer (SERVFAIL) and log the signature failure, while other names still validate.
    good = setup.zones["nsec"]
    bad = tamper(good, setup.base / "tampered.zone", "www", "A")
    ours = Secondns(setup.base / "secondns-tampered", zone_files={bad.name: bad.path}, http=False)
    with ours:
        unbound = Unbound(setup.base / "unbound-tampered", [bad.trust_anchor], {bad.origin: ours.port})
        with unbound:
            www = resolve(unbound.port, bad.fqdn("www"), "A")
            mail = resolve(unbound.port, bad.fqdn("mail"), "A")
            log = unbound.log_text()
    assert security(www) == BOGUS
    assert security(mail) == SECURE
    assert "validation failure" in log and "www.nsec.example." in log
