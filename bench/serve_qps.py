"""Serving benchmark: dnsperf against secondns and BIND 9 (optionally NSD, Knot) on one zone.

The issue's target is secondns >= 0.9x BIND's QPS with both serving the same generated 100k-record
zone.  For a fair comparison each server runs alone, pinned to one core (``taskset -c 0``), BIND
with one worker (``-n 1``), while dnsperf runs pinned to the other core; servers are started one
after the other, never side by side.  Besides QPS the table shows lost queries (a server that
drops queries looks fast), the rcode mix (a server that answers REFUSED looks fast too), start
time (process start to the first SOA answer, i.e. zone load) and RSS after loading.

    python bench/serve_qps.py                     # secondns vs BIND, 10 s each
    python bench/serve_qps.py --only bind         # just BIND (e.g. to check the machine)
    python bench/serve_qps.py --peers nsd,knot --json out.json
    python bench/serve_qps.py --workers 2 --server-cpu '' --client-cpu ''   # 2 workers vs named -n 2

``--rrl`` adds, right after plain secondns, secondns with response rate limiting on and no
client over its limit (``secondns-rrl``: every rate 1000/s, BIND's maximum, except NXDOMAIN,
whose one zone-wide account the single dnsperf source would exceed, at 0 = not accounted) and
with every kind accounted in log-only mode (``secondns-rrl-log``: the NXDOMAIN account goes
"over" but is still answered), and prints their QPS relative to plain secondns in the same run.
The RRL counters each ended with are printed too (``secondns-rrl`` must end with none).

``--soa-only`` asks nothing but the zone's SOA, paced (dnsperf ``-Q``, default 3000 q/s): at
that rate each datagram arrives alone, one per reactor wake-up, so what the rows compare is the
fixed cost of a wake-up and a cache hit (issue 14: ~80% of the CPU at 10k zones answers single
SOA queries).  QPS then only says whether the offered rate was served; **CPU us/q** is the figure.

Every row has **CPU us/q**: user+system CPU time of the server's processes (the server and its
descendants, from ``/proc/PID/stat``) consumed during the measured run, divided by the queries
completed.  It is measured for every server in the same run, so ``secondns/BIND CPU per query``
compares like with like, also when neither is saturated.

``--workers N`` runs secondns with ``server.workers: N`` and BIND with ``-n N``; the memory
column is then the PSS summed over the server's processes (``tree_pss_kib``), which counts
pages the workers share (the mapped zone images) once, not once per process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

import genzone  # noqa: E402
from peers import Bind, Knot, Nsd, Peer, PeerError, Secondns, ZoneSpec, find_binary  # noqa: E402

SERVERS = ("secondns", "bind", "nsd", "knot", "secondns-rrl", "secondns-rrl-log")
# --rrl: server.rate-limit for the two RRL variants (see the module docstring).
RRL_CONFIGS: dict[str, dict[str, Any]] = {
    "secondns-rrl": {"responses-per-second": 1000, "nxdomains-per-second": 0},
    "secondns-rrl-log": {"responses-per-second": 1000, "log-only": True},
}
# How much the rcode mix may differ from BIND's before the row is flagged (percentage points).
_RCODE_TOLERANCE = 2.0


@dataclass
class Result:
    """One server's run; ``error`` is set instead of figures when it did not start or dnsperf failed."""

    server: str
    qps: float | None = None
    lost_pct: float | None = None
    completed: int | None = None
    avg_latency_ms: float | None = None
    rss_kib: int | None = None
    pss_kib: int | None = None  # summed over the server process and its children
    cpu_us_per_query: float | None = None  # user+sys of the server's processes / queries completed
    start_s: float | None = None
    rcodes: dict[str, float] = field(default_factory=dict)
    scrapes: int | None = None  # /metrics GETs served during the run (--scrape)
    rrl: dict[str, int] | None = None  # secondns_rrl_responses_total by action after the run (--rrl)
    warning: str | None = None
    error: str | None = None


def parse_dnsperf(text: str) -> dict[str, Any]:
    """Pull QPS, completion, loss, latency and the rcode mix (percent) out of dnsperf's summary."""

    def num(pattern: str) -> float | None:
        m = re.search(pattern, text)
        return float(m.group(1)) if m else None

    rcodes: dict[str, float] = {}
    m = re.search(r"Response codes:\s*(.+)", text)
    if m:
        for code, pct in re.findall(r"([A-Z]+) \d+ \(([\d.]+)%\)", m.group(1)):
            rcodes[code] = float(pct)
    completed = num(r"Queries completed:\s+(\d+)")
    latency = num(r"Average Latency \(s\):\s+([\d.]+)")
    return {
        "qps": num(r"Queries per second:\s+([\d.]+)"),
        "lost_pct": num(r"Queries lost:\s+\d+ \(([\d.]+)%\)"),
        "completed": int(completed) if completed is not None else None,
        "avg_latency_ms": latency * 1000 if latency is not None else None,
        "rcodes": rcodes,
    }


def run_dnsperf(port: int, queries: Path, args: argparse.Namespace) -> str:
    """One bounded dnsperf run against 127.0.0.1:port; returns its combined output."""
    dnsperf = find_binary("dnsperf")
    if dnsperf is None:
        raise PeerError("dnsperf not found")
    cmd = [
        dnsperf,
        "-s",
        "127.0.0.1",
        "-p",
        str(port),
        "-d",
        str(queries),
        "-l",
        str(args.seconds),
        "-c",
        str(args.clients),
        "-T",
        str(args.threads),
        "-q",
        str(args.outstanding),
    ]
    if args.qps_limit:
        cmd += ["-Q", str(args.qps_limit)]
    if args.client_cpu is not None:
        cmd = [find_binary("taskset") or "taskset", "-c", args.client_cpu, *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.seconds + 60, check=False)
    if out.returncode != 0:
        raise PeerError(f"dnsperf failed ({out.returncode}): {' '.join(cmd)}\n{out.stdout}{out.stderr}")
    return out.stdout + out.stderr


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def tree_pss_kib(pid: int | None) -> int | None:
    """PSS (smaps_rollup) of *pid* and all its descendants: shared pages counted once in total."""
    if pid is None:
        return None
    total = 0
    todo = [pid]
    seen: set[int] = set()
    while todo and len(seen) < 1000:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            text = Path(f"/proc/{p}/smaps_rollup").read_text()
        except OSError:
            continue
        m = re.search(r"^Pss:\s+(\d+) kB", text, re.MULTILINE)
        total += int(m.group(1)) if m else 0
        todo += _children(p)
    return total


def _tree_pids(pid: int) -> list[int]:
    """*pid* and its descendants (bounded walk of /proc/PID/task/*/children)."""
    pids: list[int] = []
    todo = [pid]
    while todo and len(pids) < 1000:
        p = todo.pop()
        if p in pids:
            continue
        pids.append(p)
        todo += _children(p)
    return pids


def tree_cpu_ticks(pid: int | None) -> dict[int, int]:
    """utime+stime (clock ticks) of *pid* and each descendant, by PID, from /proc/PID/stat."""
    ticks: dict[int, int] = {}
    if pid is None:
        return ticks
    for p in _tree_pids(pid):
        try:
            text = Path(f"/proc/{p}/stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()  # the command name may hold spaces
        ticks[p] = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return ticks


def cpu_seconds_between(before: dict[int, int], after: dict[int, int]) -> float:
    """CPU seconds the processes of *after* used since *before* (a process new since: all of it)."""
    hz = os.sysconf("SC_CLK_TCK")
    return sum(t - before.get(p, 0) for p, t in after.items()) / hz


def make_server(name: str, workdir: Path, origin: str, zone_file: Path, args: argparse.Namespace) -> Peer:
    """A server of kind ``name`` serving ``zone_file``, one core, one worker, not yet started."""
    common: dict[str, Any] = {"cpus": args.server_cpu, "startup_timeout": args.startup_timeout}
    zones = [ZoneSpec(origin, zone_file)]
    if name == "bind":
        return Bind(workdir, zones, workers=args.workers, **common)
    if name == "knot":
        return Knot(workdir, zones, workers=1, **common)
    if name == "nsd":
        return Nsd(workdir, zones, workers=1, **common)
    if name.startswith("secondns"):
        # The HTTP listener is on, as in a real deployment (and for --scrape).
        server: dict[str, Any] = {"workers": args.workers}
        if name in RRL_CONFIGS:
            server["rate-limit"] = RRL_CONFIGS[name]
        return Secondns(workdir, zone_files={origin: zone_file}, http=True, server=server, **common)
    raise ValueError(f"unknown server {name!r}; choose from {', '.join(SERVERS)}")


def bench_one(
    name: str, workdir: Path, origin: str, zone_file: Path, queries: Path, args: argparse.Namespace
) -> Result:
    """Start one server, measure it, stop it: servers never share the machine during a run."""
    result = Result(name)
    try:
        server = make_server(name, workdir / name, origin, zone_file, args)
        with server:
            result.start_s = round(server.ready_seconds, 3)
            time.sleep(0.5)  # let post-load allocations settle before reading RSS
            result.rss_kib = server.rss_kib()
            if name.startswith("secondns") and args.workers > 1:
                # READY (first answer) comes once every worker serves; their stats settle after.
                time.sleep(1.0)
            result.pss_kib = tree_pss_kib(server.pid)
            if args.warmup:
                warm = argparse.Namespace(**{**vars(args), "seconds": args.warmup})
                run_dnsperf(server.port, queries, warm)
            scraper = Scraper(server, args.scrape) if args.scrape and name == "secondns" else None
            ticks = tree_cpu_ticks(server.pid)
            text = run_dnsperf(server.port, queries, args)
            cpu_s = cpu_seconds_between(ticks, tree_cpu_ticks(server.pid))
            if scraper is not None:
                result.scrapes = scraper.stop()
            if name in RRL_CONFIGS:
                result.rrl = rrl_counters(server)
            if not server.running():
                raise PeerError(f"{name} died during the run\n{server.log_tail()}")
        if args.verbose:
            print(text, file=sys.stderr)
        for key, value in parse_dnsperf(text).items():
            setattr(result, key, value)
        if result.completed:
            result.cpu_us_per_query = round(cpu_s * 1e6 / result.completed, 2)
        if result.qps is None:
            result.error = f"could not parse dnsperf output:\n{text}"
    except (PeerError, OSError, subprocess.SubprocessError, ValueError) as exc:
        result.error = str(exc)
    return result


def rrl_counters(server: Peer) -> dict[str, int]:
    """secondns_rrl_responses_total by action, from /metrics (after a second, so that
    worker counters have been pushed to the main process)."""
    import urllib.request

    time.sleep(1.2)
    with urllib.request.urlopen(f"http://127.0.0.1:{getattr(server, 'http_port', 0)}/metrics",
                                timeout=5) as resp:
        text = resp.read().decode()
    return {m.group(1): int(float(m.group(2)))
            for m in re.finditer(r'secondns_rrl_responses_total\{action="(\w+)"\} (\S+)', text)}


class Scraper:
    """GET /metrics every *interval* seconds in a thread while dnsperf runs (issue: scrape cost)."""

    def __init__(self, server: Peer, interval: float) -> None:
        import threading
        import urllib.request

        self._stop = threading.Event()
        url = f"http://127.0.0.1:{getattr(server, 'http_port', 0)}/metrics"
        self.count = 0

        self.errors = 0

        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    with urllib.request.urlopen(url, timeout=5) as resp:
                        resp.read()
                    self.count += 1
                except OSError:
                    self.errors += 1

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(timeout=10)
        if self.errors:
            raise OSError(f"{self.errors} scrapes of /metrics failed")
        return self.count


def flag_rcode_mismatch(results: list[Result]) -> None:
    """Mark servers whose rcode mix differs from BIND's: their QPS is not for the same work."""
    ref = next((r for r in results if r.server == "bind" and r.rcodes), None)
    if ref is None:
        return
    for r in results:
        if r is ref or not r.rcodes:
            continue
        codes = set(ref.rcodes) | set(r.rcodes)
        worst = max(abs(ref.rcodes.get(c, 0.0) - r.rcodes.get(c, 0.0)) for c in codes)
        if worst > _RCODE_TOLERANCE:
            r.warning = f"rcode mix differs from BIND by {worst:.1f} points: {r.rcodes} vs {ref.rcodes}"


def table(results: list[Result]) -> str:
    head = (f"{'server':<16} {'QPS':>10} {'lost %':>7} {'lat ms':>7} {'start s':>8} {'RSS MiB':>8}"
            f" {'PSS MiB':>8} {'CPU us/q':>8}  rcodes")
    rows = [head, "-" * len(head)]
    for r in results:
        if r.error:
            rows.append(f"{r.server:<16} ERROR: {r.error.splitlines()[0]}")
            continue
        rcodes = " ".join(f"{k}={v:g}%" for k, v in sorted(r.rcodes.items()))
        rss = f"{r.rss_kib / 1024:.1f}" if r.rss_kib else "?"
        pss = f"{r.pss_kib / 1024:.1f}" if r.pss_kib else "?"
        cpu = f"{r.cpu_us_per_query:.1f}" if r.cpu_us_per_query is not None else "?"
        rows.append(
            f"{r.server:<16} {r.qps or 0:>10.0f} {r.lost_pct or 0:>7.2f} {r.avg_latency_ms or 0:>7.3f}"
            f" {r.start_s or 0:>8.2f} {rss:>8} {pss:>8} {cpu:>8}  {rcodes}"
        )
        if r.warning:
            rows.append(f"{'':<16} WARNING: {r.warning}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", help="comma-separated servers to run instead of secondns,bind")
    parser.add_argument("--peers", default="", help="extra servers to add: nsd,knot")
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--queries-count", type=int, default=100_000)
    parser.add_argument("--origin", default="bench.test.")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--seconds", type=int, default=10, help="dnsperf -l per server")
    parser.add_argument("--warmup", type=int, default=0, help="seconds of unmeasured dnsperf first")
    parser.add_argument("--scrape", type=float, default=0,
                        help="scrape secondns's /metrics every this many seconds during the run")
    parser.add_argument("--workers", type=int, default=1,
                        help="secondns server.workers and BIND -n (default 1: one process, one thread)")
    parser.add_argument("--clients", type=int, default=4, help="dnsperf -c")
    parser.add_argument("--threads", type=int, default=1, help="dnsperf -T")
    parser.add_argument("--outstanding", type=int, default=100, help="dnsperf -q")
    parser.add_argument("--qps-limit", type=int, default=0, help="dnsperf -Q (0: unlimited)")
    parser.add_argument("--soa-only", action="store_true",
                        help="ask only the zone's SOA, paced (-Q, default 3000): one datagram per wake-up")
    parser.add_argument("--server-cpu", default="0", help="taskset -c for servers ('' to not pin)")
    parser.add_argument("--client-cpu", default="1", help="taskset -c for dnsperf ('' to not pin)")
    parser.add_argument("--startup-timeout", type=float, default=120.0, help="seconds to wait for a load")
    parser.add_argument("--workdir", type=Path, help="keep zone, configs and logs here")
    parser.add_argument("--json", type=Path, help="also write results as JSON to this file")
    parser.add_argument("--rrl", action="store_true",
                        help="also run secondns with response rate limiting (see above)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print dnsperf's full output")
    args = parser.parse_args(argv)
    args.server_cpu = args.server_cpu or None
    args.client_cpu = args.client_cpu or None
    if (args.server_cpu or args.client_cpu) and (os.cpu_count() or 1) < 2:
        print("warning: fewer than 2 CPUs; not pinning", file=sys.stderr)
        args.server_cpu = args.client_cpu = None

    if args.soa_only and not args.qps_limit:
        args.qps_limit = 3000

    servers = args.only.split(",") if args.only else ["secondns", "bind"]
    servers += [p for p in args.peers.split(",") if p and p not in servers]
    if args.rrl:
        at = servers.index("secondns") + 1 if "secondns" in servers else 0
        servers[at:at] = [s for s in RRL_CONFIGS if s not in servers]
    unknown = [s for s in servers if s not in SERVERS]
    if unknown:
        parser.error(f"unknown servers {unknown}; choose from {', '.join(SERVERS)}")

    with tempfile.TemporaryDirectory(prefix="serve-qps-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        gen = genzone.generate(args.origin, args.records, args.seed)
        zone_file = workdir / "bench.zone"
        zone_file.write_text(gen.text)
        queries = workdir / "queries.txt"
        asked = [f"{args.origin} SOA"] if args.soa_only else \
            genzone.queries(gen, args.origin, args.queries_count, args.seed)
        queries.write_text("\n".join(asked) + "\n")
        paced = f" (SOA only, -Q {args.qps_limit})" if args.soa_only else ""
        print(
            f"zone {args.origin}: {gen.records} records; {args.queries_count} queries; {args.seconds}s per"
            f" server{paced}; servers on cpu {args.server_cpu}, dnsperf on cpu {args.client_cpu},"
            f" -c {args.clients}",
            file=sys.stderr,
        )
        results = []
        for name in servers:
            print(f"running {name} ...", file=sys.stderr)
            results.append(bench_one(name, workdir, args.origin, zone_file, queries, args))

    flag_rcode_mismatch(results)
    print(table(results))
    by_name = {r.server: r for r in results}
    ratio = None
    sec, bind = by_name.get("secondns"), by_name.get("bind")
    if sec and bind and sec.qps and bind.qps:
        ratio = sec.qps / bind.qps
        verdict = "meets" if ratio >= 0.9 else "below"
        print(f"\nsecondns/BIND QPS ratio: {ratio:.3f} ({verdict} the 0.9 target)")
    cpu_ratio = None
    if sec and bind and sec.cpu_us_per_query and bind.cpu_us_per_query:
        cpu_ratio = sec.cpu_us_per_query / bind.cpu_us_per_query
        print(f"secondns/BIND CPU per query: {cpu_ratio:.3f} ({sec.cpu_us_per_query:.1f} vs"
              f" {bind.cpu_us_per_query:.1f} us)")
    rrl_ratios: dict[str, float] = {}
    for variant in RRL_CONFIGS:
        r = by_name.get(variant)
        if sec and sec.qps and r and r.qps:
            rrl_ratios[variant] = r.qps / sec.qps
            print(f"{variant}/secondns QPS ratio: {rrl_ratios[variant]:.3f}; RRL counters {r.rrl}")
    if args.json:
        report = {
            "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": {"host": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version()},
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "records": gen.records,
            "results": [asdict(r) for r in results],
            "ratio_secondns_bind": ratio,
            "ratio_rrl_secondns": rrl_ratios,
            "ratio_cpu_per_query_secondns_bind": cpu_ratio,
            "loadavg": Path("/proc/loadavg").read_text().split()[:3],
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
