"""Transfer-out benchmark (issue 13): secondns as a primary, next to BIND 9 serving the same zone.

1. AXFR out: a BIND primary serves the generated zone; secondns transfers it from BIND (so it
   has a copy and a journal), then the same client (``dig axfr``, output discarded) transfers
   it from each server in turn; time and the server's peak RSS (VmHWM).  Target: <= 1.5x BIND.
2. IXFR out of a 10-record change: the primary changes 10 records, secondns gets the IXFR, and
   a dnspython client asks secondns for IXFR from the previous serial: time of the whole
   answer (median of 20).  Target: <= 10 ms.
3. Chain latency: BIND primary -> secondns -> BIND secondary, secondns NOTIFYing the bottom;
   20 changes at the top, time from ``rndc reload`` to the bottom serving the new serial:
   median and max.  Target: < 1 s.

    python bench/xfrout.py                     # 1M records
    python bench/xfrout.py --records 200000 --json out.json
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
import dns.rrset  # noqa: E402
import genzone  # noqa: E402
from peers import Bind, Secondns, ZoneSpec, find_binary, free_port, soa_serial  # noqa: E402

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


def with_serial(text: str, serial: int, extra: str = "") -> str:
    head, _, rest = text.partition("SOA")
    fields = rest.split(None, 3)
    return f"{head}SOA {fields[0]} {fields[1]} {serial} {fields[3]}" + extra


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    result: dict[str, Any] = {"records": args.records}
    with tempfile.TemporaryDirectory(prefix="secondns-xfrout-") as tmp:
        work = Path(tmp)
        text = genzone.generate(ORIGIN, args.records).text
        serial = int(text.split("SOA", 1)[1].split()[2].strip("()"))
        mid_port, bottom_port = free_port(), free_port()
        # notify-delay 0: BIND's default holds a NOTIFY 5 s, which would be the whole chain figure
        top_options = ["ixfr-from-differences yes;", "notify-delay 0;"]
        top = Bind(work / "top", [ZoneSpec(ORIGIN, text, options=top_options, notify=[mid_port])],
                   startup_timeout=300)
        with top:
            mid = Secondns(work / "mid", {ORIGIN: {
                "primaries": [f"127.0.0.1:{top.port}"], "allow-transfer": ["127.0.0.1"],
                "notify": [f"127.0.0.1:{bottom_port}"], "max-records": 50_000_000,
                "transfer-timeout": 1200}}, ready_zones=[], port=mid_port, startup_timeout=60)
            with mid:
                wait_serial(mid.port, serial, args.timeout)
                time.sleep(2)  # the copy on disk
                rows = []
                for name, peer in (("secondns", mid), ("bind", top)):
                    before = peak_rss_mib(peer.pid)
                    elapsed, size = dig_axfr(peer.port)
                    rows.append({"server": name, "axfr_s": round(elapsed, 2), "xfr": size,
                                 "rss_before_mib": before, "peak_rss_mib": peak_rss_mib(peer.pid)})
                result["axfr"] = rows
                # IXFR out of a 10-record change
                extra = "".join(f"ixfr-bench-{i} 300 IN A 192.0.2.{i}\n" for i in range(10))
                new = serial + 1
                top.write_zone(ORIGIN, with_serial(text, new, extra))
                top.reload(ORIGIN)
                wait_serial(mid.port, new, args.timeout)
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
                # chain latency
                bottom = Bind(work / "bottom", [ZoneSpec(ORIGIN, type="secondary", primaries=[mid.port])],
                              port=bottom_port, startup_timeout=300)
                with bottom:
                    wait_serial(bottom.port, new, args.timeout)
                    lat = []
                    for i in range(args.changes):
                        new += 1
                        change = extra + f"chain 300 IN A 192.0.2.{i}\n"
                        top.write_zone(ORIGIN, with_serial(text, new, change))
                        start = time.monotonic()
                        top.reload(ORIGIN)
                        wait_serial(bottom.port, new, 60)
                        lat.append(time.monotonic() - start)
                    result["chain_s"] = {"median": round(statistics.median(lat), 3),
                                         "max": round(max(lat), 3)}
    ours, bind = result["axfr"]
    print(f"AXFR out of {args.records} records: secondns {ours['axfr_s']} s ({ours['xfr']}), "
          f"BIND {bind['axfr_s']} s ({bind['xfr']}): {ours['axfr_s'] / bind['axfr_s']:.2f}x BIND")
    print(f"  peak RSS: secondns {ours['peak_rss_mib']:.1f} MiB, BIND {bind['peak_rss_mib']:.1f} MiB")
    print(f"IXFR out of a 10-record change: median {result['ixfr_10_ms']['median']} ms, "
          f"max {result['ixfr_10_ms']['max']} ms")
    print(f"chain latency over {args.changes} changes: median {result['chain_s']['median']} s, "
          f"max {result['chain_s']['max']} s")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
