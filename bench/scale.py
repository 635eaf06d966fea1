"""Many small zones: secondns vs BIND 9 as secondaries of the same BIND primary, same run.

For N zones (default 1,000): time from start until every zone answers its SOA with the
primary's serial (cold, then restarted from disk), RSS and CPU seconds of the process at that
moment, the time until every zone serves a new serial after all change at once (the primary
reloads every zone and NOTIFYs both secondaries), and for secondns the /metrics scrape time and
size.  Loopback only; every server is stopped by PID.

    python bench/scale.py --zones 1000
    python bench/scale.py --zones 10000 --json bench/out/scale-10k.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import dns.exception
import dns.rcode
import dns.rdatatype
from peers import Bind, Peer, Secondns, ZoneSpec, free_port, query, soa_zone_text

SERIAL = 2024061501


def names(n: int) -> list[str]:
    return [f"z{i:05d}.scale.test." for i in range(n)]


def proc_stats(pid: int) -> tuple[float, int]:
    """(CPU seconds user+system, RSS KiB) of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    return ticks / os.sysconf("SC_CLK_TCK"), rss


def served(port: int, name: str, serial: int) -> bool:
    try:
        reply = query(port, name, "SOA", timeout=1.0)
    except (dns.exception.DNSException, OSError):
        return False
    soa = [r for r in reply.answer if r.rdtype == dns.rdatatype.SOA]
    return reply.rcode() == dns.rcode.NOERROR and bool(soa) and soa[0][0].serial == serial


def wait_all(peer: Peer, zones: list[str], serial: int, started: float, timeout: float
             ) -> dict[str, Any]:
    """Poll the zones not yet served until none is left; the figures when the last one is."""
    left = list(zones)
    first: float | None = None
    deadline = started + timeout
    while left and time.monotonic() < deadline:
        left = [z for z in left if not served(peer.port, z, serial)]
        if first is None and len(left) < len(zones):
            first = time.monotonic() - started
        if left:
            time.sleep(0.2)
    elapsed = time.monotonic() - started
    assert peer.pid is not None
    cpu, rss = proc_stats(peer.pid)
    return {"seconds": round(elapsed, 1), "first_zone_seconds": round(first or elapsed, 1),
            "unserved": len(left), "cpu_seconds": round(cpu, 1), "rss_mib": round(rss / 1024, 1)}


def wait_both(peers: dict[str, Peer], zones: list[str], serial: int, started: float, timeout: float,
              cpu_before: dict[str, float]) -> dict[str, dict[str, Any]]:
    """wait_all for several peers in one loop, so neither's figure waits on the other's polling."""
    left = {label: list(zones) for label in peers}
    out: dict[str, dict[str, Any]] = {}
    deadline = started + timeout
    while any(left.values()) and time.monotonic() < deadline:
        for label, peer in peers.items():
            if not left[label]:
                continue
            left[label] = [z for z in left[label] if not served(peer.port, z, serial)]
            if not left[label]:
                assert peer.pid is not None
                cpu, rss = proc_stats(peer.pid)
                out[label] = {"seconds": round(time.monotonic() - started, 1), "unserved": 0,
                              "cpu_seconds_in_phase": round(cpu - cpu_before[label], 1),
                              "rss_mib": round(rss / 1024, 1)}
        if any(left.values()):
            time.sleep(0.2)
    for label in peers:
        out.setdefault(label, {"seconds": round(time.monotonic() - started, 1),
                               "unserved": len(left[label])})
    return out


def scrape(sec: Secondns) -> dict[str, Any]:
    out = {}
    for path in ("/metrics", "/status?limit=100000"):
        t = time.monotonic()
        with urllib.request.urlopen(sec.http_url(path), timeout=60) as resp:
            body = resp.read()
        out[path] = {"seconds": round(time.monotonic() - t, 3), "bytes": len(body),
                     "samples": body.count(b"\n") if path == "/metrics" else None}
    return out


def change_all(primary: Bind, zones: list[str], serial: int) -> float:
    for z in zones:
        primary.write_zone(z, soa_zone_text(z.rstrip("."), serial))
    t = time.monotonic()
    primary.rndc("reload", timeout=120)
    return t


def secondaries(workdir: Path, zones: list[str], primary: Bind, sec_port: int, bind_port: int,
                per_zone: bool) -> tuple[Secondns, Bind]:
    """secondns and BIND as secondaries of ``primary`` for every zone, not started."""
    sec = Secondns(workdir / "secondns", {z: {"primaries": [f"127.0.0.1:{primary.port}"]} for z in zones},
                   port=sec_port, ready_zones=[], startup_timeout=120,
                   server={"log-level": "warning", "metrics": {"per-zone": per_zone}})
    bind = Bind(workdir / "bind-secondary",
                [ZoneSpec(z, type="secondary", primaries=[primary.port]) for z in zones],
                port=bind_port, startup_timeout=600)
    bind._ready_zones = lambda: []  # type: ignore[method-assign]
    return sec, bind


def run(n: int, workdir: Path, per_zone: bool, change: bool = True, notify_rate: int | None = None
        ) -> dict[str, Any]:
    zones = names(n)
    sec_port, bind_port = free_port(), free_port()
    notify = [("127.0.0.1", sec_port), ("127.0.0.1", bind_port)]
    # BIND's notify-rate (default 20 a second) paces the all-changed phase: 2 NOTIFYs per zone.
    options = [f"notify-rate {notify_rate};"] if notify_rate else []
    primary = Bind(workdir / "primary", [ZoneSpec(z, soa_zone_text(z.rstrip("."), SERIAL), notify=notify)
                                         for z in zones], startup_timeout=600, options=options)
    primary._ready_zones = lambda: [zones[-1]]  # type: ignore[method-assign]
    results: dict[str, Any] = {"zones": n, "primary_notify_rate": notify_rate or 20,
                               "loadavg_start": [round(x, 2) for x in os.getloadavg()]}
    t = time.monotonic()
    primary.start()
    results["primary_start_seconds"] = round(time.monotonic() - t, 1)
    try:
        sec, bind = secondaries(workdir, zones, primary, sec_port, bind_port, per_zone)
        for label, peer in (("secondns", sec), ("bind", bind)):
            row: dict[str, Any] = {}
            t = time.monotonic()
            peer.start()
            row["cold"] = wait_all(peer, zones, SERIAL, t, 1800)
            peer.stop()
            t = time.monotonic()
            peer.start()
            row["restart"] = wait_all(peer, zones, SERIAL, t, 1800)
            results[label] = row
            if label == "secondns":
                row["scrape"] = scrape(sec)
                peer.stop()  # one secondary at a time for the start figures
        if not change:
            bind.stop()
            return results
        results["cold_phases_loadavg"] = [round(x, 2) for x in os.getloadavg()]
        # Both running now (BIND is; start secondns again) for the all-change figure.
        sec.start()
        wait_all(sec, zones, SERIAL, time.monotonic(), 1800)
        peers: dict[str, Peer] = {"secondns": sec, "bind": bind}
        before = {label: proc_stats(peer.pid)[0] for label, peer in peers.items()  # type: ignore[arg-type]
                  }
        t = change_all(primary, zones, SERIAL + 1)
        for label, row in wait_both(peers, zones, SERIAL + 1, t, 3600, before).items():
            results[label]["all_changed"] = row
        sec.stop()
        bind.stop()
    finally:
        primary.stop()
        results["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    return results


def restart_only(n: int, workdir: Path, per_zone: bool) -> dict[str, Any]:
    """Restart both secondaries from the copies an earlier run (``--workdir``) left on disk.

    The restart and scrape figures again, without the 20 minutes of cold starts before them;
    the copies hold SERIAL + 1 when that run had its all-changed phase, else SERIAL.
    """
    zones = names(n)
    sec_port, bind_port = free_port(), free_port()
    first = workdir / "primary" / "zones" / ZoneSpec(zones[0]).filename  # as the primary wrote it
    serial = SERIAL + 1 if first.exists() and f" {SERIAL + 1} " in first.read_text() else SERIAL
    primary = Bind(workdir / "primary", [ZoneSpec(z, soa_zone_text(z.rstrip("."), serial)) for z in zones],
                   startup_timeout=600)
    primary._ready_zones = lambda: [zones[-1]]  # type: ignore[method-assign]
    results: dict[str, Any] = {"zones": n, "restart_only": True, "serial": serial,
                               "loadavg_start": [round(x, 2) for x in os.getloadavg()]}
    primary.start()
    try:
        sec, bind = secondaries(workdir, zones, primary, sec_port, bind_port, per_zone)
        for label, peer in (("secondns", sec), ("bind", bind)):
            t = time.monotonic()
            peer.start()
            row: dict[str, Any] = {"restart": wait_all(peer, zones, serial, t, 1800)}
            if label == "secondns":
                row["scrape"] = scrape(sec)
            peer.stop()
            results[label] = row
    finally:
        primary.stop()
        results["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zones", type=int, default=1000)
    ap.add_argument("--per-zone", choices=("on", "off"), default="on",
                    help="secondns server.metrics.per-zone")
    ap.add_argument("--no-change", action="store_true",
                    help="skip the all-zones-change phase (at 10k zones it is the primary's notify-rate)")
    ap.add_argument("--primary-notify-rate", type=int,
                    help="the primary's notify-rate (BIND's default 20); 40 lets each of the two "
                         "secondaries get NOTIFYs at its own 20 SOA checks a second")
    ap.add_argument("--restart-only", action="store_true",
                    help="only restart both secondaries from the copies left in --workdir by an "
                         "earlier run (restart and scrape figures)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--workdir", type=Path)
    args = ap.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="secondns-scale-"))
    workdir.mkdir(parents=True, exist_ok=True)
    if args.restart_only:
        if not args.workdir:
            ap.error("--restart-only needs the --workdir of an earlier run")
        results = restart_only(args.zones, workdir, args.per_zone == "on")
    else:
        results = run(args.zones, workdir, args.per_zone == "on", not args.no_change,
                      args.primary_notify_rate)
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
