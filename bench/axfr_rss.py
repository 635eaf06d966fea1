"""Transfer benchmark: AXFR time, peak memory and restart time, secondns next to BIND 9.

One BIND primary serves a generated zone (default 100k and 1M records).  For each size, a
secondary follows it -- first secondns, then BIND as a secondary of the same primary, never both
at once -- and the script records:

* AXFR time: from the secondary's start to the first answer carrying the primary's serial
  (includes process start; secondns also logs its own transfer duration, shown separately);
* peak RSS (VmHWM) of the secondary after the transfer and the copy on disk are done;
* restart time: stop the secondary, stop the primary, start the secondary again and time until it
  answers from its copy on disk; RSS after that start.

Targets in the issue: AXFR of 1M records within 2x BIND's time, peak RSS within 2x BIND's; serving
from the copy on disk within 3x BIND's start time, RSS within 1.5x BIND's.

    python bench/axfr_rss.py                       # 100k and 1M
    python bench/axfr_rss.py --sizes 100000 --json out.json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

import genzone  # noqa: E402
from peers import Bind, Peer, Secondns, ZoneSpec, soa_serial  # noqa: E402

ORIGIN = "bench.test."


def peak_rss_mib(pid: int | None) -> float | None:
    """VmHWM: the most memory the process ever had resident."""
    if pid is None:
        return None
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    m = re.search(r"VmHWM:\s+(\d+) kB", text)
    return int(m.group(1)) / 1024 if m else None


def rss_mib(pid: int | None) -> float | None:
    if pid is None:
        return None
    m = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(m.group(1)) / 1024 if m else None


def wait_serial(port: int, serial: int, timeout: float) -> float:
    """Seconds until the server at *port* answers SOA with *serial* (bounded)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            if soa_serial(port, ORIGIN, timeout=0.5) == serial:
                return time.monotonic() - start
        except Exception:
            pass
        time.sleep(0.02)
    raise TimeoutError(f"serial {serial} not served on port {port} within {timeout:.0f} s")


def secondary(kind: str, workdir: Path, primary_port: int) -> Peer:
    if kind == "secondns":
        return Secondns(workdir, {ORIGIN: {"primaries": [f"127.0.0.1:{primary_port}"],
                                           "max-records": 50_000_000, "transfer-timeout": 600}},
                        ready_zones=[], startup_timeout=60)
    return Bind(workdir, [ZoneSpec(ORIGIN, type="secondary", primaries=[primary_port])],
                startup_timeout=60)


def run_size(records: int, work: Path, timeout: float) -> list[dict[str, Any]]:
    gen = genzone.generate(ORIGIN, records)
    zone_file = work / f"zone-{records}.txt"
    zone_file.write_text(gen.text)
    serial = int(gen.text.split("SOA", 1)[1].split()[2].strip("()"))
    rows = []
    with Bind(work / f"primary-{records}", [ZoneSpec(ORIGIN, zone_file)], startup_timeout=120) as prim:
        for kind in ("secondns", "bind"):
            sec = secondary(kind, work / f"{kind}-{records}", prim.port)
            sec.start()
            axfr_s = wait_serial(sec.port, serial, timeout) + (sec.ready_seconds or 0.0)
            time.sleep(3 if records >= 1_000_000 else 1)  # let the copy on disk be written
            peak = peak_rss_mib(sec.pid)
            own = None
            if kind == "secondns":
                m = re.search(r"AXFR from \S+ finished: .* ([0-9.]+) s", sec.log_text())
                own = float(m.group(1)) if m else None
            sec.stop()
            # Restart: the serial is already on disk, so the time to the first answer carrying it
            # is the load-from-disk time (the primary is up but has nothing new to give).
            sec.start()
            start_s = wait_serial(sec.port, serial, timeout) + (sec.ready_seconds or 0.0)
            rows.append({"records": records, "server": kind, "axfr_s": round(axfr_s, 2),
                         "axfr_own_s": own, "peak_rss_mib": peak and round(peak, 1),
                         "restart_s": round(start_s, 2),
                         "rss_after_restart_mib": round(rss_mib(sec.pid) or 0, 1)})
            sec.stop()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="secondns-axfr-") as tmp:
        for size in (int(s) for s in args.sizes.split(",")):
            rows += run_size(size, Path(tmp), args.timeout)
    print(f"{'records':>9} {'server':9} {'AXFR s':>7} {'(own)':>6} {'peak MiB':>9} {'restart s':>9} "
          f"{'RSS MiB':>8}")
    for r in rows:
        print(f"{r['records']:>9} {r['server']:9} {r['axfr_s']:>7} {r['axfr_own_s'] or '':>6} "
              f"{r['peak_rss_mib']:>9} {r['restart_s']:>9} {r['rss_after_restart_mib']:>8}")
    for size in sorted({r["records"] for r in rows}):
        ours = next(r for r in rows if r["records"] == size and r["server"] == "secondns")
        bind = next(r for r in rows if r["records"] == size and r["server"] == "bind")
        print(f"{size}: AXFR {ours['axfr_s'] / bind['axfr_s']:.2f}x BIND, peak RSS "
              f"{ours['peak_rss_mib'] / bind['peak_rss_mib']:.2f}x, restart "
              f"{ours['restart_s'] / bind['restart_s']:.2f}x, RSS after restart "
              f"{ours['rss_after_restart_mib'] / bind['rss_after_restart_mib']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
