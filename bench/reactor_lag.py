"""Longest reactor turn of a single-process secondns (``workers: 1``) during a big AXFR.

Issue 11 asks that no reactor turn exceed 50 ms in single-process mode.  This runs secondns's
``Application`` in this process on the real reactor, next to a probe (a 5 ms LoopingCall) that
records how late each tick fires: a tick late by T means the reactor could not answer a query
for T.  The secondary transfers a generated zone (default 1M records) from a BIND primary,
then writes its copy; the run ends 10 s after the zone is served.  Work done in threads
counts too whenever it holds the GIL (a long C call such as marshal.dumps does).

    python bench/reactor_lag.py --records 1000000
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))

import genzone  # noqa: E402
from peers import Bind, ZoneSpec, free_port  # noqa: E402

ORIGIN = "bench.test."
TICK = 0.005


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    from twisted.internet import reactor as _reactor
    from twisted.internet import task

    from secondns.app import Application
    from secondns.config import parse_config

    reactor: Any = _reactor
    with tempfile.TemporaryDirectory(prefix="reactor-lag-") as tmp:
        work = Path(tmp)
        gen = genzone.generate(ORIGIN, args.records, 1)
        zone_file = work / "big.zone"
        zone_file.write_text(gen.text)
        records = gen.records
        # The generator's strings are this script's, not secondns's: left alive, they would
        # lengthen every full garbage collection the probe measures.
        del gen
        with Bind(work / "primary", [ZoneSpec(ORIGIN, zone_file)], startup_timeout=600) as bind:
            conf = (f"server:\n  listen: ['127.0.0.1:{free_port()}']\n  http: null\n  workers: 1\n"
                    f"  storage: {work / 'storage'}\nzones:\n  {ORIGIN}:\n"
                    f"    primaries: ['127.0.0.1:{bind.port}']\n")
            (work / "storage").mkdir()
            app = Application(parse_config(conf, str(work / "c.yaml")), reactor)
            lags: list[tuple[float, float]] = []
            last = [time.perf_counter()]
            start = time.perf_counter()
            served_at: list[float] = []

            def tick() -> None:
                now = time.perf_counter()
                lags.append((now - start, now - last[0] - TICK))
                last[0] = now
                entry = app.registry.get(app.config.zones[ORIGIN].origin)
                if not served_at and entry is not None and entry.snapshot is not None:
                    served_at.append(now - start)
                    reactor.callLater(10, reactor.stop)
                if now - start > 900:
                    reactor.stop()

            probe = task.LoopingCall(tick)

            def boot() -> None:
                import gc

                app.start()
                gc.collect()  # as `secondns serve` does after start (cli._cmd_serve)
                gc.freeze()
                gc.set_threshold(50_000, 20, 100)
            reactor.callWhenRunning(boot)
            reactor.callWhenRunning(probe.start, TICK)
            reactor.run()
    worst = sorted(lags, key=lambda x: -x[1])[:10]
    out = {"records": records, "served_after_s": round(served_at[0], 2) if served_at else None,
           "ticks": len(lags), "longest_turn_ms": round(worst[0][1] * 1000, 1) if worst else None,
           "turns_over_50ms": sum(1 for _t, lag in lags if lag > 0.05),
           "worst": [(round(t, 2), round(lag * 1000, 1)) for t, lag in worst]}
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
