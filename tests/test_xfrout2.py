"""Transfer-out, the rest of issue 13: IXFR over UDP in worker mode, NOTIFY out to IPv6
targets, and the TSIG of NOTIFY answers checked (RFC 8945 5.3)."""

from __future__ import annotations

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
from peers import Bind, Secondns, TsigKey, ZoneSpec, free_port, require_binary, soa_serial, soa_zone_text

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
