"""Transfer-out benchmark (issue 13): secondns as a primary, next to BIND 9 serving the same zone.

1. AXFR out: a BIND primary serves the generated zone; secondns transfers it from BIND (so it
   has a copy and a journal), then the same client (``dig axfr``, output discarded) transfers
   it from each server in turn; time and the server's peak RSS (VmHWM).  Target: <= 1.5x BIND.
2. IXFR out of a 10-record change: the primary changes 10 records, secondns gets the IXFR, and
   a dnspython client asks secondns for IXFR from the previous serial: time of the whole
   answer (median of 20).  Target: <= 10 ms.
3. Chain latency: BIND primary -> secondns -> BIND secondary, secondns NOTIFYing the bottom;
   20 changes at the top, each a dynamic update (RFC 2136, TSIG-signed, ``update-policy``) so
   the top applies it in memory instead of re-reading a 1M-record file per change (``rndc
   reload`` did, and that was most of the 9 s measured before).  Split by hop: update sent ->
   top answered NOERROR (change committed at the top) -> secondns serving the new serial ->
   the bottom BIND serving it; median and max of each and of the total.  Target: < 1 s total.

    python bench/xfrout.py                     # 1M records
    python bench/xfrout.py --records 200000 --json out.json
    python bench/xfrout.py --records 20000 --parts chain    # while developing
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

import dns.message  # noqa: E402
import dns.query  # noqa: E402
import dns.rcode  # noqa: E402
import dns.rrset  # noqa: E402
import dns.update  # noqa: E402
import genzone  # noqa: E402
from peers import Bind, Secondns, TsigKey, ZoneSpec, find_binary, free_port, soa_serial  # noqa: E402

ORIGIN = "bench.test."


def peak_rss_mib(pid: int | None) -> float | None:
    if pid is None:
        return None
    m = re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(m.group(1)) / 1024 if m else None


def wait_serial(port: int, serial: int, timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            if soa_serial(port, ORIGIN, timeout=0.5) == serial:
                return time.monotonic() - start
        except Exception:
            pass
        time.sleep(0.005)
    raise TimeoutError(f"serial {serial} not served on port {port} within {timeout:.0f} s")


def dig_axfr(port: int) -> tuple[float, str]:
    dig = find_binary("dig") or "dig"
    start = time.monotonic()
    out = subprocess.run([dig, "@127.0.0.1", "-p", str(port), ORIGIN, "AXFR", "+time=60", "+tries=1"],
                         capture_output=True, text=True, timeout=600, check=True).stdout
    elapsed = time.monotonic() - start
    m = re.search(r"XFR size: (\d+) records \(messages (\d+), bytes (\d+)\)", out)
    return elapsed, m.group(0) if m else "no XFR size line: failed?"


def update(port: int, key: TsigKey, adds: list[tuple[str, str]]) -> None:
    """One RFC 2136 UPDATE adding A records, TSIG-signed; returns when the top committed it."""
    msg = dns.update.UpdateMessage(ORIGIN, keyring=key.keyring(), keyname=key.name,
                                   keyalgorithm=key.algorithm)
    for name, address in adds:
        msg.replace(name, 300, "A", address)
    r = dns.query.tcp(msg, "127.0.0.1", port=port, timeout=30)
    if r.rcode() != dns.rcode.NOERROR:
        raise RuntimeError(f"UPDATE answered {dns.rcode.to_text(r.rcode())}")


def wait_hops(ports: list[int], serial: int, timeout: float) -> list[float]:
    """Poll each server in turn until each serves *serial*; the monotonic time each was seen."""
    seen: list[float | None] = [None] * len(ports)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for i, port in enumerate(ports):
            if seen[i] is None:
                try:
                    if soa_serial(port, ORIGIN, timeout=0.5) == serial:
                        seen[i] = time.monotonic()
                except Exception:
                    pass
        if all(t is not None for t in seen):
            return [t for t in seen if t is not None]
        time.sleep(0.002)
    raise TimeoutError(f"serial {serial} not served on ports {ports} within {timeout:.0f} s: {seen}")


_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def log_events(text: str, serial: int) -> dict[str, float]:
    """Wall-clock times secondns logged for *serial*: NOTIFY from the top accepted (the last one
    before the IXFR that brought it), IXFR in finished, our NOTIFY acknowledged, the bottom's
    IXFR request arriving."""
    import datetime

    out: dict[str, float] = {}
    last_notify: float | None = None
    for line in text.splitlines():
        m = _LOG_TIME.match(line)
        if m is None:
            continue
        t = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        if "NOTIFY from" in line and "accepted" in line:
            last_notify = t
        elif f"finished: serial {serial}," in line and "notify_in" not in out:
            if last_notify is not None:
                out["notify_in"] = last_notify
            out["ixfr_in_done"] = t
        elif f"NOTIFY of serial {serial} to" in line and "answered ok" in line:
            out.setdefault("notify_out_ok", t)
        elif f"IXFR of {ORIGIN} serial {serial} to" in line:
            out.setdefault("bottom_ixfr", t)
    return out


def stats(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 3), "max": round(max(values), 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--parts", default="axfr,ixfr,chain", help="comma-separated: axfr, ixfr, chain")
    parser.add_argument("--workers", default="auto", help="secondns server.workers")
    parser.add_argument("--gap", type=float, default=1.0, help="seconds between chain changes")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    result: dict[str, Any] = {"records": args.records, "workers": args.workers}
    key = TsigKey.generate("update-key")
    with tempfile.TemporaryDirectory(prefix="secondns-xfrout-") as tmp:
        work = Path(tmp)
        text = genzone.generate(ORIGIN, args.records).text
        serial = int(text.split("SOA", 1)[1].split()[2].strip("()"))
        mid_port, bottom_port = free_port(), free_port()
        # notify-delay 0: BIND's default holds a NOTIFY 5 s, which would be the whole chain figure.
        # update-policy: changes arrive as dynamic updates, applied in memory (serial + 1 each).
        top_options = ["notify-delay 0;", f'update-policy {{ grant "{key.name}" zonesub ANY; }};']
        top = Bind(work / "top", [ZoneSpec(ORIGIN, text, options=top_options, notify=[mid_port])],
                   keys=[key], startup_timeout=300)
        with top:
            mid = Secondns(work / "mid", {ORIGIN: {
                "primaries": [f"127.0.0.1:{top.port}"], "allow-transfer": ["127.0.0.1"],
                "notify": [f"127.0.0.1:{bottom_port}"], "max-records": 50_000_000,
                "transfer-timeout": 1200}}, ready_zones=[], port=mid_port, startup_timeout=60,
                server={"workers": int(args.workers) if args.workers.isdigit() else args.workers})
            with mid:
                wait_serial(mid.port, serial, args.timeout)
                time.sleep(2)  # the copy on disk
                if "axfr" in parts:
                    rows = []
                    for name, peer in (("secondns", mid), ("bind", top)):
                        before = peak_rss_mib(peer.pid)
                        elapsed, size = dig_axfr(peer.port)
                        rows.append({"server": name, "axfr_s": round(elapsed, 2), "xfr": size,
                                     "rss_before_mib": before, "peak_rss_mib": peak_rss_mib(peer.pid)})
                    result["axfr"] = rows
                # IXFR out of a 10-record change
                extra = [(f"ixfr-bench-{i}", f"192.0.2.{i}") for i in range(10)]
                new = serial + 1
                update(top.port, key, extra)
                wait_serial(mid.port, new, args.timeout)
                if "ixfr" in parts:
                    times = []
                    for _ in range(20):
                        q = dns.message.make_query(ORIGIN, "IXFR")
                        q.authority.append(dns.rrset.from_text(ORIGIN, 0, "IN", "SOA",
                                                               f"a. b. {serial} 1 1 1 1"))
                        start = time.perf_counter()
                        r = dns.query.tcp(q, "127.0.0.1", port=mid.port, timeout=10, one_rr_per_rrset=True)
                        times.append(time.perf_counter() - start)
                        assert sum(len(rr) for rr in r.answer) == 10 + 4, r  # 4 SOAs, 10 added
                    result["ixfr_10_ms"] = {"median": round(statistics.median(times) * 1000, 2),
                                            "max": round(max(times) * 1000, 2)}
                if "chain" not in parts:
                    return report(args, result)
                bottom = Bind(work / "bottom", [ZoneSpec(ORIGIN, type="secondary", primaries=[mid.port])],
                              port=bottom_port, startup_timeout=300)
                with bottom:
                    wait_serial(bottom.port, new, args.timeout)
                    time.sleep(1)
                    top_s, mid_s, bottom_s, total = [], [], [], []
                    walls: list[tuple[int, float]] = []
                    for i in range(args.changes):
                        new += 1
                        start = time.monotonic()
                        update(top.port, key, [("chain", f"192.0.2.{i}")])
                        committed = time.monotonic()
                        walls.append((new, time.time()))
                        try:
                            at_mid, at_bottom = wait_hops([mid.port, bottom.port], new, 60)
                        except TimeoutError:
                            print(mid.log_tail(), bottom.log_tail(), sep="\n", file=sys.stderr)
                            raise
                        top_s.append(committed - start)
                        mid_s.append(at_mid - committed)
                        bottom_s.append(at_bottom - at_mid)
                        total.append(at_bottom - start)
                        time.sleep(args.gap)  # changes apart, as real ones are
                    result["chain_s"] = {"total": stats(total), "update_at_top": stats(top_s),
                                         "top_to_secondns": stats(mid_s),
                                         "secondns_to_bottom": stats(bottom_s),
                                         "all_total": [round(t, 3) for t in total]}
                    # Finer split from secondns' own log (wall clock, ms): where each hop's time goes.
                    text = mid.log_text()
                    fine: dict[str, list[float]] = {}
                    for serial_n, wall in walls:
                        ev = log_events(text, serial_n)
                        marks = [("top_notify_delay", wall, ev.get("notify_in")),
                                 ("secondns_notify_in_to_ixfr_done", ev.get("notify_in"),
                                  ev.get("ixfr_in_done")),
                                 ("secondns_ixfr_done_to_notify_acked", ev.get("ixfr_in_done"),
                                  ev.get("notify_out_ok")),
                                 ("bottom_notify_acked_to_its_ixfr", ev.get("notify_out_ok"),
                                  ev.get("bottom_ixfr"))]
                        for name, a_t, b_t in marks:
                            if a_t is not None and b_t is not None:
                                fine.setdefault(name, []).append(b_t - a_t)
                    result["chain_log_split_s"] = {name: stats(v) | {"n": len(v)} for name, v in fine.items()}
    return report(args, result)


def report(args: argparse.Namespace, result: dict[str, Any]) -> int:
    if "axfr" in result:
        ours, bind = result["axfr"]
        print(f"AXFR out of {args.records} records: secondns {ours['axfr_s']} s ({ours['xfr']}), "
              f"BIND {bind['axfr_s']} s ({bind['xfr']}): {ours['axfr_s'] / bind['axfr_s']:.2f}x BIND")
        print(f"  peak RSS: secondns {ours['peak_rss_mib']:.1f} MiB, BIND {bind['peak_rss_mib']:.1f} MiB")
    if "ixfr_10_ms" in result:
        print(f"IXFR out of a 10-record change: median {result['ixfr_10_ms']['median']} ms, "
              f"max {result['ixfr_10_ms']['max']} ms")
    if "chain_s" in result:
        c = result["chain_s"]
        print(f"chain latency over {args.changes} changes ({args.records} records, workers "
              f"{args.workers}): total median {c['total']['median']} s, max {c['total']['max']} s")
        for hop in ("update_at_top", "top_to_secondns", "secondns_to_bottom"):
            print(f"  {hop}: median {c[hop]['median']} s, max {c[hop]['max']} s")
        for hop, v in result.get("chain_log_split_s", {}).items():
            print(f"    {hop} (secondns log, ms clock, {v['n']} changes): median {v['median']} s, "
                  f"max {v['max']} s")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
