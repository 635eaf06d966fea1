"""Transfer-out (issue 13): secondns as the primary of dnspython, dig and BIND 9 secondaries.

AXFR of a served zone (compared record for record with the zone file), IXFR from the journal
after an IXFR from an upstream BIND primary (BIND primary -> secondns -> BIND secondary), TSIG
on the stream, and refusals: an address outside allow-transfer, a wrong key, an unsigned request
where a key is required, a zone without allow-transfer (today's REFUSED).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.zone
import pytest
from peers import Bind, Secondns, TsigKey, ZoneSpec, dig, free_port, require_binary, soa_serial, soa_zone_text

from secondns.errors import ConfigError
from secondns.store.journal import journal_path

WAIT = 20.0


def _zone(serial: int, extra: int = 0) -> str:
    records = "".join(f"h{i} IN A 10.0.{i // 256}.{i % 256}\n" for i in range(extra))
    return soa_zone_text("ex.", serial, records=records)


def _records(messages: list[dns.message.Message]) -> list[tuple[str, str, str]]:
    out = []
    for m in messages:
        for rrset in m.answer:
            for rd in rrset:
                out.append((rrset.name.to_text().lower(), dns.rdatatype.to_text(rrset.rdtype), rd.to_text()))
    return out


def _wait(pred: object, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _keys_config(*keys: TsigKey) -> dict[str, dict[str, str]]:
    return {k.name: {"algorithm": k.algorithm, "secret": k.secret} for k in keys}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Secondns, TsigKey, TsigKey]]:
    """secondns serving three static zones: open to loopback, key-only, and without an ACL."""
    require_binary("dig")
    good = TsigKey.generate("xfr-key")
    other = TsigKey.generate("other-key")
    s = Secondns(tmp_path / "s", zones={
        "ex.": {"allow-transfer": ["127.0.0.0/8"]},
        "signed.": {"allow-transfer": [{"key": "xfr-key"}]},
        "closed.": {},
        "far.": {"allow-transfer": ["192.0.2.0/24", {"address": "127.0.0.1", "key": "xfr-key"}]},
    }, zone_files={"ex.": _zone(7, 6000), "signed.": soa_zone_text("signed.", 3),
                   "closed.": soa_zone_text("closed.", 4), "far.": soa_zone_text("far.", 5)})
    s.config["keys"] = _keys_config(good, other)
    with s:
        yield s, good, other


def _xfr(port: int, zone: str, key: TsigKey | None = None, rdtype: str = "AXFR",
         serial: int = 0) -> list[dns.message.Message]:
    kwargs = {}
    if key is not None:
        kwargs = {"keyring": key.keyring(), "keyname": key.name, "keyalgorithm": key.algorithm}
    return list(dns.query.xfr("127.0.0.1", zone, rdtype=rdtype, serial=serial, port=port, timeout=10,
                              relativize=False, lifetime=20, **kwargs))


def test_axfr_streams_the_zone_in_many_compressed_messages(served: tuple[Secondns, TsigKey, TsigKey]) -> None:
    s, _good, _other = served
    messages = _xfr(s.port, "ex.")
    got = _records(messages)
    assert got[0][1] == "SOA" and got[-1][1] == "SOA" and got[0] == got[-1]  # RFC 5936 2.2
    expected = dns.zone.from_text(_zone(7, 6000), "ex.", relativize=False)
    want = sorted((n.to_text().lower(), dns.rdatatype.to_text(rds.rdtype), rd.to_text())
                  for n, rds in expected.iterate_rdatasets() for rd in rds)
    assert sorted(got[:-1]) == want
    assert len(messages) > 1  # 6000 records of ~21 octets do not fit one 64 KiB message
    assert all(len(m.to_wire()) <= 65535 for m in messages)
    # dig, an independent client, agrees
    out = dig(s.port, "ex.", "AXFR", timeout=10)
    assert "Transfer failed" not in out.text
    assert f"XFR size: {len(got)} records (messages {len(messages)}," in out.text, out.text


def test_axfr_signed_stream_verifies(served: tuple[Secondns, TsigKey, TsigKey]) -> None:
    s, good, _other = served
    messages = _xfr(s.port, "signed.", key=good)  # dnspython verifies every message's TSIG
    assert all(m.had_tsig for m in messages)
    assert _records(messages)[0][1] == "SOA"
    out = dig(s.port, "signed.", "AXFR", "-y", f"hmac-sha256:{good.name}:{good.secret}", timeout=10)
    assert "Transfer failed" not in out.text and "TSIG error" not in out.text
    assert "XFR size: 7 records (messages 1," in out.text, out.text


def _rcode(port: int, zone: str, key: TsigKey | None = None) -> int:
    q = dns.message.make_query(zone, "AXFR")
    if key is not None:
        q.use_tsig(key.keyring(), keyname=key.name, algorithm=key.algorithm)
    try:
        r = dns.query.tcp(q, "127.0.0.1", port=port, timeout=5)
    except dns.message.UnknownTSIGKey:
        return -1
    return r.rcode()


def test_refusals(served: tuple[Secondns, TsigKey, TsigKey]) -> None:
    s, good, other = served
    assert _rcode(s.port, "closed.") == dns.rcode.REFUSED  # no allow-transfer: as before
    assert _rcode(s.port, "signed.") == dns.rcode.REFUSED  # unsigned where a key is required
    assert _rcode(s.port, "signed.", other) == dns.rcode.REFUSED  # a valid key, not the one allowed
    assert _rcode(s.port, "far.") == dns.rcode.REFUSED  # our address is outside 192.0.2.0/24
    assert _rcode(s.port, "far.", good) == dns.rcode.NOERROR  # address and key both match
    wrong = TsigKey("xfr-key", other.secret)  # the right name, the wrong secret: BADSIG
    q = dns.message.make_query("signed.", "AXFR")
    q.use_tsig(wrong.keyring(), keyname=wrong.name)
    with pytest.raises(dns.exception.DNSException):
        dns.query.tcp(q, "127.0.0.1", port=s.port, timeout=5)
    out = dig(s.port, "closed.", "AXFR", timeout=5)
    assert "Transfer failed" in out.text
    import urllib.request

    metrics = urllib.request.urlopen(s.http_url("/metrics"), timeout=5).read().decode()
    assert 'secondns_transfers_out_total{result="refused",type="axfr",zone="signed."} 2.0' in metrics \
        or 'secondns_transfers_out_total{zone="signed.",type="axfr",result="refused"} 2.0' in metrics, \
        [line for line in metrics.splitlines() if "transfers_out" in line]


def test_ixfr_when_current_is_one_soa_and_unknown_serial_is_axfr_style(
        served: tuple[Secondns, TsigKey, TsigKey]) -> None:
    s, _good, _other = served
    current = _xfr(s.port, "ex.", rdtype="IXFR", serial=7)
    assert [r[1] for r in _records(current)] == ["SOA"]
    full = _xfr(s.port, "ex.", rdtype="IXFR", serial=3)  # not in any journal: AXFR-style
    assert len(_records(full)) == 6000 + 6 + 1
    # over UDP (RFC 1995 2): current -> the SOA; otherwise too large -> the SOA alone
    q = dns.message.make_query("ex.", "IXFR")
    q.authority.append(dns.rrset.from_text("ex.", 0, "IN", "SOA", "ns1.ex. h.ex. 3 1 1 1 1"))
    r = dns.query.udp(q, "127.0.0.1", port=s.port, timeout=5)
    assert r.rcode() == dns.rcode.NOERROR and [rr.rdtype for rr in r.answer] == [dns.rdatatype.SOA]


def test_chain_bind_primary_secondns_bind_secondary(tmp_path: Path) -> None:
    """A change at the top reaches the bottom: BIND NOTIFYs us, we transfer, we NOTIFY the
    BIND secondary below (RFC 1996, SOA in the answer section), it transfers from us."""
    import urllib.request

    require_binary("named")
    records = "".join(f"n{i} IN A 10.1.0.{i}\n" for i in range(50))
    mid_port, bottom_port = free_port(), free_port()
    top = Bind(tmp_path / "top", [ZoneSpec("ch.", soa_zone_text("ch.", 1, records=records),
                                           options=["ixfr-from-differences yes;"], notify=[mid_port])])
    with top:
        mid = Secondns(tmp_path / "mid", zones={"ch.": {
            "primaries": [f"127.0.0.1:{top.port}"], "allow-transfer": ["127.0.0.1"],
            "notify": [f"127.0.0.1:{bottom_port}"]}}, ready_zones=[], port=mid_port)
        with mid:
            _wait(lambda: soa_serial(mid.port, "ch.") == 1, "secondns to load serial 1")
            bottom = Bind(tmp_path / "bottom", [ZoneSpec("ch.", type="secondary", primaries=[mid.port])],
                          port=bottom_port)
            with bottom:
                _wait(lambda: soa_serial(bottom.port, "ch.") == 1, "BIND secondary to load serial 1")
                top.write_zone("ch.", soa_zone_text("ch.", 2, records=records + "new IN A 10.9.9.9\n"))
                top.reload("ch.")
                _wait(lambda: soa_serial(mid.port, "ch.") == 2, "secondns to get serial 2 (NOTIFY)")
                # no rndc refresh: only our NOTIFY tells the bottom (its SOA REFRESH is an hour)
                _wait(lambda: soa_serial(bottom.port, "ch.") == 2, "BIND secondary to get serial 2")
                r = dns.query.udp(dns.message.make_query("new.ch.", "A"), "127.0.0.1", port=bottom.port,
                                  timeout=2)
                assert r.answer and r.answer[0][0].to_text() == "10.9.9.9"
                assert re.search(r"zone ch/IN: notify from 127\.0\.0\.1#\d+: serial 2", bottom.log_text())
                mine = mid.log_text()
                assert "NOTIFY of serial 2 to 127.0.0.1:" in mine and "answered ok" in mine, mine[-3000:]
                metrics = urllib.request.urlopen(mid.http_url("/metrics"), timeout=5).read().decode()
                assert any(line.startswith("secondns_notifies_out_total") and 'result="ok"' in line
                           for line in metrics.splitlines()), metrics[-2000:]
                # RFC 7314: our copy's remaining expire time (SOA EXPIRE 86400 at the top, just
                # refreshed), in an SOA answer and in the transfer, so the chain never stretches it
                remaining = _expire_option(mid.port, "ch.")
                assert remaining is not None and 86400 - 120 <= remaining <= 86400, remaining
                remaining = _expire_option(mid.port, "ch.", "AXFR")
                assert remaining is not None and 86400 - 120 <= remaining <= 86400, remaining


def _expire_option(port: int, zone: str, qtype: str = "SOA") -> int | None:
    import dns.edns

    q = dns.message.make_query(zone, qtype, use_edns=0,
                               options=[dns.edns.GenericOption(dns.edns.OptionType.EXPIRE, b"")])
    if qtype == "SOA":
        r = dns.query.udp(q, "127.0.0.1", port=port, timeout=2)
    else:
        r = dns.query.tcp(q, "127.0.0.1", port=port, timeout=5)  # the first message
    assert r.rcode() == dns.rcode.NOERROR and r.answer
    for opt in r.options:
        if opt.otype == dns.edns.OptionType.EXPIRE:
            return int.from_bytes(opt.to_wire(), "big") if hasattr(opt, "to_wire") else None
    return None


def test_edns_expire_of_a_static_zone_is_its_soa_expire(served: tuple[Secondns, TsigKey, TsigKey]) -> None:
    s, _good, _other = served
    assert _expire_option(s.port, "closed.") == 86400  # as a BIND primary answers
    # asked twice: never a cached answer without the option, nor an option in a plain answer
    assert _expire_option(s.port, "closed.") == 86400
    plain = dns.query.udp(dns.message.make_query("closed.", "SOA", use_edns=0), "127.0.0.1", port=s.port,
                          timeout=2)
    assert not plain.options


# -- unit tests


def test_is_transfer_detects_axfr_and_ixfr_only() -> None:
    from secondns.transfer.xfrout import is_transfer

    assert is_transfer(dns.message.make_query("ex.", "AXFR").to_wire())
    assert is_transfer(dns.message.make_query("a.ex.", "IXFR").to_wire())
    assert not is_transfer(dns.message.make_query("ex.", "SOA").to_wire())
    notify = dns.message.make_query("ex.", "AXFR")
    notify.set_opcode(dns.opcode.NOTIFY)
    assert not is_transfer(notify.to_wire())


def test_acl_address_and_key() -> None:
    import ipaddress

    from secondns.config import TransferAcl
    from secondns.config import TsigKey as CfgKey
    from secondns.transfer.xfrout import acl_allows

    key = CfgKey("k", "hmac-sha256", b"s" * 32)
    other = CfgKey("o", "hmac-sha256", b"t" * 32)
    acl = (TransferAcl(ipaddress.ip_network("10.0.0.0/8")), TransferAcl(None, key))
    assert acl_allows(acl, "10.1.2.3", None)
    assert acl_allows(acl, "::ffff:10.1.2.3", None)
    assert not acl_allows(acl, "192.0.2.1", None)
    assert acl_allows(acl, "192.0.2.1", key)
    assert not acl_allows(acl, "192.0.2.1", other)
    both = (TransferAcl(ipaddress.ip_network("10.0.0.0/8"), key),)
    assert not acl_allows(both, "10.1.2.3", None) and not acl_allows(both, "11.0.0.1", key)
    assert acl_allows(both, "10.1.2.3", key)


def test_config_errors_name_file_line_key(tmp_path: Path) -> None:
    from secondns.config import load_config

    conf = tmp_path / "c.yaml"
    conf.write_text("zones:\n  ex.:\n    allow-transfer:\n      - 10.0.0.1/8\n      - {key: nokey}\n"
                    "      - {adress: 1.2.3.4}\n      - 5\n")
    with pytest.raises(ConfigError) as info:
        load_config(conf)
    text = str(info.value)
    assert f"{conf}:4: zones.ex..allow-transfer[0]" in text and "host bits" in text
    assert ":5:" in text and "'nokey' is not defined" in text
    assert ":6:" in text and "unknown key 'adress'" in text
    assert ":7:" in text


@pytest.mark.parametrize("peer", ["bind", "knot", "nsd"])
def test_real_secondaries_transfer_from_us_with_tsig(tmp_path: Path, peer: str) -> None:
    """BIND 9, Knot and NSD as TSIG-signed secondaries of secondns: AXFR, then IXFR after a change."""
    from peers import Knot, Nsd

    binary = {"bind": "named", "knot": "knotd", "nsd": "nsd"}[peer]
    require_binary(binary)
    key = TsigKey.generate("down-key")
    mid_port = free_port()
    records = "".join(f"r{i} IN TXT \"record {i}\"\n" for i in range(200))
    top = Bind(tmp_path / "top", [ZoneSpec("tx.", soa_zone_text("tx.", 10, records=records),
                                           options=["ixfr-from-differences yes;"], notify=[mid_port])])
    with top:
        mid = Secondns(tmp_path / "mid", zones={"tx.": {
            "primaries": [f"127.0.0.1:{top.port}"], "allow-transfer": [{"key": "down-key"}]}},
            ready_zones=[], port=mid_port)
        mid.config["keys"] = _keys_config(key)
        with mid:
            _wait(lambda: soa_serial(mid.port, "tx.") == 10, "secondns to load serial 10")
            cls = {"bind": Bind, "knot": Knot, "nsd": Nsd}[peer]
            down = cls(tmp_path / "down", [ZoneSpec("tx.", type="secondary", primaries=[mid.port],
                                                    key="down-key")], keys=[key])
            with down:
                _wait(lambda: soa_serial(down.port, "tx.") == 10, f"{peer} to load serial 10")
                top.write_zone("tx.", soa_zone_text("tx.", 11, records=records + "z IN A 10.0.0.1\n"))
                top.reload("tx.")
                _wait(lambda: soa_serial(mid.port, "tx.") == 11, "secondns to get serial 11 (NOTIFY)")
                jnl = journal_path(mid.storage, "tx.")
                _wait(lambda: jnl.exists() and "; diff 10 11 " in jnl.read_text(), "the journal entry")
                _poke(peer, down)
                _wait(lambda: soa_serial(down.port, "tx.") == 11, f"{peer} to get serial 11")
                r = dns.query.udp(dns.message.make_query("z.tx.", "A"), "127.0.0.1", port=down.port,
                                  timeout=2)
                assert r.answer and r.answer[0][0].to_text() == "10.0.0.1"
                log = mid.log_text()
                assert "AXFR of tx. serial 10 to 127.0.0.1 (full)" in log or \
                    "IXFR of tx. serial 10 to 127.0.0.1 (full)" in log, log[-3000:]
                assert "IXFR of tx. serial 11 to 127.0.0.1 (incremental)" in log, log[-3000:]


def _poke(peer: str, down: object) -> None:
    """Ask the secondary to check its primary now (secondns does not send NOTIFY yet)."""
    if peer == "bind":
        down.rndc("refresh", "tx.")  # type: ignore[attr-defined]
    elif peer == "knot":
        down.knotc("zone-refresh", "tx.")  # type: ignore[attr-defined]
    else:
        down.nsd_control("transfer", "tx.")  # type: ignore[attr-defined]


def test_worker_mode_hands_transfers_to_the_main_process(tmp_path: Path) -> None:
    """workers: 2: every AXFR/IXFR, whichever worker's socket took the connection, is streamed
    by the main process (the only one with the journal and allow-transfer), TSIG included."""
    require_binary("dig")
    good = TsigKey.generate("xfr-key")
    s = Secondns(tmp_path / "s", zones={
        "ex.": {"allow-transfer": ["127.0.0.1"]},
        "signed.": {"allow-transfer": [{"key": "xfr-key"}]},
    }, zone_files={"ex.": _zone(7, 6000), "signed.": soa_zone_text("signed.", 3)},
        server={"workers": 2})
    s.config["keys"] = _keys_config(good)
    with s:
        for _ in range(12):  # fresh connections: SO_REUSEPORT spreads them over both workers
            messages = _xfr(s.port, "ex.")
            assert len(_records(messages)) == 6000 + 6 + 1 and len(messages) > 1
            assert [r[1] for r in _records(_xfr(s.port, "ex.", rdtype="IXFR", serial=7))] == ["SOA"]
            assert _records(_xfr(s.port, "signed.", key=good))[0][1] == "SOA"
            assert _rcode(s.port, "signed.") == dns.rcode.REFUSED
        # queries still answered by the workers meanwhile and after
        assert soa_serial(s.port, "ex.") == 7
        log = s.log_text()
        assert log.count("AXFR of ex. serial 7 to 127.0.0.1 (full)") == 12, log[-3000:]


def test_limits_and_slow_reader(tmp_path: Path) -> None:
    """A downstream that stops reading holds its slot only until transfer-out-idle-timeout; a
    second transfer from it meanwhile is refused (per-client limit); queries never wait."""
    import socket

    s = Secondns(tmp_path / "s", zones={"big.": {"allow-transfer": ["127.0.0.1"]}},
                 zone_files={"big.": soa_zone_text("big.", 1, records="".join(
                     f"h{i} IN TXT \"{'x' * 60} {i}\"\n" for i in range(40000)))},
                 server={"transfers-out-per-client": 1, "transfer-out-idle-timeout": 2})
    with s:
        stalled = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(("127.0.0.1", s.port))
        wire = dns.message.make_query("big.", "AXFR").to_wire()
        stalled.sendall(len(wire).to_bytes(2, "big") + wire)
        time.sleep(0.5)  # the stream starts and fills the buffers
        started = time.monotonic()
        assert _rcode(s.port, "big.") == dns.rcode.REFUSED  # the per-client limit
        for _ in range(20):  # the stalled stream does not hold up the reactor
            assert soa_serial(s.port, "big.") == 1
        assert time.monotonic() - started < 2.0
        # after the idle timeout (2 s) the stalled connection is cut and its slot freed: a new
        # transfer from the same client succeeds while we still have not read a byte
        time.sleep(3.5)
        messages = _xfr(s.port, "big.")
        assert len(_records(messages)) == 40000 + 6 + 1
        stalled.settimeout(5)
        with pytest.raises((ConnectionResetError, OSError)):
            for _ in range(10000):  # bounded: the buffered part of the stream, then the reset
                if not stalled.recv(65536):
                    raise OSError("closed")
        stalled.close()
        import urllib.request

        metrics = urllib.request.urlopen(s.http_url("/metrics"), timeout=5).read().decode()
        assert [line for line in metrics.splitlines() if line.startswith("secondns_transfers_out_total")
                and 'result="aborted"' in line and line.endswith(" 1.0")], metrics[-2000:]
        log = s.log_text()
        assert "transfers-out limit reached" in log


def test_ixfr_from_memory_before_the_journal_is_written(tmp_path: Path) -> None:
    """The IXFR a NOTIFY triggers may arrive before the journal write (a thread) lands: the
    steps applied are kept in memory, so the answer is incremental all the same, and it is the
    snapshot taken at the request, whatever is swapped in while it streams."""
    import ipaddress

    from secondns.config import ServerConfig, TransferAcl, ZoneConfig
    from secondns.diff import VersionStep, apply_steps
    from secondns.registry import Registry
    from secondns.store.zonefile import parse_zone_text
    from secondns.transfer.xfrout import TransferOut
    from secondns.zone import ZoneBuilder

    origin = b"\x02ex\x00"
    builder = ZoneBuilder(origin)
    builder.add_many(parse_zone_text(_zone(1, 3), origin))
    v1 = builder.build()
    soa1 = next(r for r in v1.records() if r[1] == 6)
    v2_soa = next(iter(parse_zone_text(_zone(2, 0), origin)))
    added = (b"\x03new\x02ex\x00", 1, 300, bytes([10, 9, 9, 9]))
    step = VersionStep(1, 2, [soa1], [v2_soa, added])
    v2 = apply_steps(v1, [step])
    registry = Registry()
    registry.add(origin)
    registry.swap(origin, v2)
    zc = ZoneConfig("ex.", origin, allow_transfer=(TransferAcl(ipaddress.ip_network("127.0.0.1/32")),))
    out = TransferOut(registry, lambda o: zc if o == origin else None, lambda: {},
                      ServerConfig(storage=tmp_path))  # no copy, no journal on disk
    out.remember(origin, [step], 2)
    q = dns.message.make_query("ex.", "IXFR")
    q.authority.append(dns.rrset.from_text("ex.", 0, "IN", "SOA", "ns1.ex. h.ex. 1 1 1 1 1"))
    stream = out.tcp(q.to_wire(), ("127.0.0.1", 5353))
    first = next(stream)
    registry.swap(origin, v1)  # something else is served now; the stream keeps its version
    rest = list(stream)
    msgs = [dns.message.from_wire(m, one_rr_per_rrset=True) for m in (first, *rest)]
    got = [(rr.name.to_text(), dns.rdatatype.to_text(rr.rdtype), rd.to_text())
           for m in msgs for rr in m.answer for rd in rr]
    assert [g[1] for g in got] == ["SOA", "SOA", "SOA", "A", "SOA"], got
    assert got[3] == ("new.ex.", "A", "10.9.9.9")
    assert [int(g[2].split()[2]) for g in got if g[1] == "SOA"] == [2, 1, 2, 2]
    assert out.counts[("ex.", "ixfr", "ok")] == 1
    registry.swap(origin, v2)
    out.forget(origin)  # a full copy replaces the zone: AXFR-style from then on
    stream = out.tcp(q.to_wire(), ("127.0.0.1", 5353))
    full = [rr for m in stream for rr in dns.message.from_wire(m, one_rr_per_rrset=True).answer]
    assert len(full) == 9 + 1 + 1  # AXFR-style: the zone, SOA again at the end


def test_ixfr_out_after_restart_comes_from_the_journal(tmp_path: Path) -> None:
    """After a restart the changes since the full copy are replayed from the journal, and an IXFR
    from an older serial is answered incrementally from them."""
    require_binary("named")
    mid_port = free_port()
    top = Bind(tmp_path / "top", [ZoneSpec("jr.", soa_zone_text("jr.", 1),
                                           options=["ixfr-from-differences yes;"], notify=[mid_port])])
    with top:
        mid = Secondns(tmp_path / "mid", zones={"jr.": {
            "primaries": [f"127.0.0.1:{top.port}"], "allow-transfer": ["127.0.0.1"]}},
            ready_zones=[], port=mid_port)
        with mid:
            _wait(lambda: soa_serial(mid.port, "jr.") == 1, "serial 1")
            for serial in (2, 3):
                text = soa_zone_text("jr.", serial, records=f"s{serial} IN A 10.0.0.{serial}\n")
                top.write_zone("jr.", text)
                top.reload("jr.")
                _wait(lambda s=serial: soa_serial(mid.port, "jr.") == s, f"serial {serial}")
            jnl = journal_path(mid.storage, "jr.")
            _wait(lambda: jnl.exists() and "; diff 2 3 " in jnl.read_text(), "the journal entries")
        with mid:  # restarted: nothing in memory but what the journal replays
            _wait(lambda: soa_serial(mid.port, "jr.") == 3, "serial 3 from disk")
            messages = [dns.message.from_wire(m.to_wire(), one_rr_per_rrset=True)
                        for m in _xfr(mid.port, "jr.", rdtype="IXFR", serial=1)]
            got = [(rr.name.to_text(), dns.rdatatype.to_text(rr.rdtype)) for m in messages for rr in m.answer]
            assert got == [("jr.", "SOA"), ("jr.", "SOA"), ("jr.", "SOA"), ("s2.jr.", "A"),
                           ("jr.", "SOA"), ("s2.jr.", "A"), ("jr.", "SOA"), ("s3.jr.", "A"),
                           ("jr.", "SOA")], got
            assert "IXFR of jr. serial 3 to 127.0.0.1 (incremental)" in mid.log_text()


def test_blob_encoder_matches_the_rrset_encoder() -> None:
    """pack_zone (AXFR from node blobs) carries exactly the records pack(axfr_rrsets) does, in
    messages of at most 64 KiB, SOA first and last, on a zone with every kind of name in rdata."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    import genzone

    from secondns.names import from_text
    from secondns.store.zonefile import parse_zone_text
    from secondns.transfer.xfrout import axfr_rrsets, pack, pack_zone
    from secondns.zone import ZoneBuilder

    origin = from_text("bench.test.")
    builder = ZoneBuilder(origin)
    builder.add_many(parse_zone_text(genzone.generate("bench.test.", 20000).text, origin))
    zone = builder.build()
    question = dns.message.make_query("bench.test.", "AXFR").to_wire()[12:]

    def records(messages: list[bytes]) -> list[str]:
        assert all(len(m) <= 65535 for m in messages) and len(messages) > 1
        out = []
        for m in messages:
            msg = dns.message.from_wire(m, one_rr_per_rrset=True)
            out += [f"{rr.name} {rr.ttl} {dns.rdatatype.to_text(rr.rdtype)} {rr[0]}" for rr in msg.answer]
        return out

    ref = records(list(pack(axfr_rrsets(zone), 7, 0x8400, question, origin, None, 0)))
    got = records(list(pack_zone(zone, 7, 0x8400, question, None, 0)))
    assert got[0] == ref[0] == got[-1] and " SOA " in got[0]
    assert sorted(got) == sorted(ref) and len(got) == zone.record_count + 1


def test_notify_out_retries_with_back_off_at_most_five_times() -> None:
    """RFC 1996 3.6 (retry until answered), here 1, 2, 4, 8, 16 s then given up; an answer from
    the target stops the retries; the SOA is in the answer section (RFC 1996 3.7)."""
    from twisted.internet.task import Clock

    from secondns.config import Endpoint, ZoneConfig
    from secondns.registry import Registry
    from secondns.store.zonefile import parse_zone_text
    from secondns.transfer.notify_out import NotifySender
    from secondns.zone import ZoneBuilder

    origin = b"\x02ex\x00"
    builder = ZoneBuilder(origin)
    builder.add_many(parse_zone_text(_zone(5), origin))
    registry = Registry()
    registry.add(origin)
    target = Endpoint("127.0.0.9", 5300)
    zc = ZoneConfig("ex.", origin, notify=(target,))
    clock = Clock()
    sender = NotifySender(registry, lambda o: zc if o == origin else None, clock)
    sent: list[tuple[bytes, tuple[str, int]]] = []

    class Transport:
        def write(self, data: bytes, addr: tuple[str, int]) -> None:
            sent.append((data, addr))

    sender.transport = Transport()  # type: ignore[assignment]
    sender.configure([zc])
    registry.swap(origin, builder.build())
    assert len(sent) == 1 and sent[0][1] == ("127.0.0.9", 5300)
    msg = dns.message.from_wire(sent[0][0])
    assert msg.opcode() == dns.opcode.NOTIFY and msg.answer[0][0].serial == 5
    for step, total in ((1, 2), (2, 3), (4, 4), (8, 5), (16, 5), (100, 5)):
        clock.advance(step)
        assert len(sent) == total, (step, len(sent))
    assert sender.counts == {("ex.", "timeout"): 1}
    # a new version: answered after the second try, then no more retries
    builder = ZoneBuilder(origin)
    builder.add_many(parse_zone_text(_zone(6), origin))
    registry.swap(origin, builder.build())
    clock.advance(1)
    assert len(sent) == 7
    reply = dns.message.make_response(dns.message.from_wire(sent[-1][0]))
    sender.datagramReceived(reply.to_wire(), ("127.0.0.8", 5300))  # not the target: ignored
    sender.datagramReceived(reply.to_wire(), ("127.0.0.9", 5300))
    clock.advance(100)
    assert len(sent) == 7 and sender.counts[("ex.", "ok")] == 1
