"""Longest reactor turn of a single-process secondns (``workers: 1``) during a big AXFR.

Issue 11 asks that no reactor turn exceed 50 ms in single-process mode.  This runs secondns's
``Application`` in this process on the real reactor, next to a probe (a 5 ms LoopingCall) that
records how late each tick fires: a tick late by T means the reactor could not answer a query
for T.  The secondary transfers a generated zone (default 1M records) from a BIND primary,
then writes its copy; the run ends 10 s after the zone is served (``--retransfer``: 10 s after
that, a second full AXFR replaces the served version, and the run ends 10 s after it is served).
Work done in threads counts too whenever it holds the GIL (a long C call such as marshal.dumps
does).  Each of the worst turns is put down to a ``cause`` from the CPU used inside it
(``reactor``: the reactor thread worked; ``thread``: a pool thread held the GIL; ``machine``:
the process was off the CPU, i.e. other processes or the hypervisor), so a long turn the
machine caused is told apart from our own; ``--sample`` adds the stacks the long turns were in.

    python bench/reactor_lag.py --records 1000000 --retransfer
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import sys
import tempfile
import threading
import time
import traceback
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
DIAG: list[Any] = []
sched_log: list[Any] = []


def _threads_sched() -> dict[str, tuple[int, int]]:
    """{thread name: (CPU ns, run-queue wait ns)} of this process's threads."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    out = {}
    for task_dir in Path("/proc/self/task").iterdir():
        try:
            cpu, wait, _n = (int(x) for x in (task_dir / "schedstat").read_text().split())
        except (OSError, ValueError):
            continue
        tid = int(task_dir.name)
        out[names.get(tid, f"tid{tid}")] = (cpu, wait)
    # The machine's CPU time since boot (ns as /proc/stat's USER_HZ ticks x 1e7): user+nice,
    # system+irq+softirq, idle+iowait, steal; whether the cores ran something else, nothing,
    # or were taken by the hypervisor while the turn was late.
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    for key, value in (("cpu:user", f[0] + f[1]), ("cpu:sys", f[2] + f[5] + f[6]),
                       ("cpu:idle", f[3] + f[4]), ("cpu:steal", f[7])):
        out[key] = (value * 10_000_000, 0)
    return out


def _watch_gc(start: float) -> list[tuple[float, int, float, str]]:
    """Every cyclic collection: (start s, generation, duration s, thread), via gc.callbacks."""
    log: list[tuple[float, int, float, str]] = []
    began: dict[int, float] = {}

    def callback(phase: str, info: dict[str, Any]) -> None:
        now = time.perf_counter()
        ident = threading.get_ident()
        if phase == "start":
            if DIAG and info["generation"] == 0:
                objs = gc.get_objects(0)
                big = max(objs, key=lambda o: len(o) if isinstance(o, dict | list | set) else 0)
                sample = next(iter(big.items()))[:2] if isinstance(big, dict) and big else None
                others = {str(k): " < ".join(f"{Path(f.filename).name}:{f.lineno}:{f.name}"
                                             for f in reversed(traceback.extract_stack(fr)[-5:]))
                          for k, fr in sys._current_frames().items() if k != ident}
                DIAG.append((now - start, len(objs), type(big).__name__, len(big),
                             repr(sample)[:80], others))
                del objs, big
            began[ident] = time.perf_counter()
        elif ident in began:
            t0 = began.pop(ident)
            name = "reactor" if ident == threading.main_thread().ident else "thread"
            log.append((t0 - start, info["generation"], now - t0, name))
    gc.callbacks.append(callback)
    return log


def _sample(main_ident: int, last: list[float], start: float, samples: list[tuple[float, str]],
            stop: threading.Event) -> None:
    """While the probe's next tick is overdue, note what the reactor thread is running."""
    while not stop.wait(0.002):
        now = time.perf_counter()
        if now - last[0] < TICK + 0.015:
            continue
        me = threading.get_ident()
        for ident, frame in sys._current_frames().items():
            if ident == me:
                continue
            stack = traceback.extract_stack(frame)[-6:]
            if ident != main_ident and stack and stack[-1].name in ("wait", "get"):
                continue  # an idle pool thread
            where = " < ".join(f"{Path(f.filename).name}:{f.lineno}:{f.name}" for f in reversed(stack))
            samples.append((now - start, ("" if ident == main_ident else "[pool] ") + where))


def _explain(t: float, lag: float, gc_log: list[tuple[float, int, float, str]],
             samples: list[tuple[float, str]]) -> dict[str, Any]:
    """One late tick (it fired at t, lag late): the collections and stack samples inside it."""
    begin = t - lag - TICK
    gcs = [(round(g_t, 3), gen, round(d * 1000, 1), thread) for g_t, gen, d, thread in gc_log
           if g_t + d >= begin and g_t <= t]
    stacks = collections.Counter(where for s_t, where in samples if begin <= s_t <= t)
    return {"at_s": round(t, 2), "late_ms": round(lag * 1000, 1),
            "gc": gcs, "gc_ms": round(sum(g[2] for g in gcs), 1), "stacks": stacks.most_common(3)}


def cause(lag: float, reactor_cpu: float, process_cpu: float) -> str:
    """Whose the late turn was, from the CPU used inside it (all in seconds).

    ``reactor``: the reactor thread ran for most of it (our own work on the reactor);
    ``thread``: the process ran but the reactor thread did not, i.e. a pool thread held the GIL
    (our own work too); ``machine``: the process was mostly off the CPU, descheduled for other
    processes (the primary, other jobs) or stolen by the hypervisor.  Judged against the turn's
    length (the tick period plus how late it fired).
    """
    turn = lag + TICK
    if reactor_cpu >= 0.5 * turn:
        return "reactor"
    if process_cpu >= 0.5 * turn:
        return "thread"
    return "machine"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--retransfer", action="store_true",
                        help="10 s after the first transfer, transfer the zone again (AXFR) while "
                             "the first version is served, so the old version is dropped too")
    parser.add_argument("--sample", action="store_true",
                        help="sample the reactor thread's stack from a second thread while a turn "
                             "is late (the sampler competes for the GIL: diagnosis, not the figure)")
    parser.add_argument("--schedstat", action="store_true",
                        help="for each turn over 30 ms, every thread's CPU and run-queue wait "
                             "inside it (/proc/self/task/*/schedstat): descheduled, or waiting "
                             "for the GIL while another thread ran.  Diagnosis only: each file "
                             "read in the probe gives up the GIL and waits up to 5 ms to get it "
                             "back from a busy thread, so it lengthens the turns it measures")
    args = parser.parse_args(argv)
    from twisted.internet import reactor as _reactor
    from twisted.internet import task

    from secondns.app import Application
    from secondns.config import parse_config

    reactor: Any = _reactor
    load_start = Path("/proc/loadavg").read_text().split()[0]
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
            cpus: list[tuple[float, float]] = []
            last_cpu = [time.thread_time(), time.process_time()]
            last = [time.perf_counter()]
            start = time.perf_counter()
            served_at: list[float] = []
            versions: list[Any] = []
            wanted = 2 if args.retransfer else 1

            def tick() -> None:
                now = time.perf_counter()
                lags.append((now - start, now - last[0] - TICK))
                last[0] = now
                # CPU of the reactor thread and of the whole process since the last tick
                # (clock_gettime: no system call that gives up the GIL, so it perturbs nothing):
                # a late turn with little of either was the process off the CPU, one with
                # process CPU but little reactor CPU was another thread holding the GIL.
                thread_cpu, proc_cpu = time.thread_time(), time.process_time()
                cpus.append((thread_cpu - last_cpu[0], proc_cpu - last_cpu[1]))
                last_cpu[:] = [thread_cpu, proc_cpu]
                if args.schedstat:
                    snap = _threads_sched()
                    if lags[-1][1] > 0.03 and sched_prev:
                        sched_log.append((round(now - start, 3), round(lags[-1][1] * 1000, 1), {
                            name: (round((c - sched_prev[0].get(name, (0, 0))[0]) / 1e6, 1),
                                   round((w - sched_prev[0].get(name, (0, 0))[1]) / 1e6, 1))
                            for name, (c, w) in snap.items()}))
                    sched_prev[:] = [snap]
                entry = app.registry.get(app.config.zones[ORIGIN].origin)
                snapshot = entry.snapshot if entry is not None else None
                if snapshot is not None and (not versions or snapshot is not versions[-1]):
                    versions.append(snapshot)
                    served_at.append(now - start)
                    if len(versions) < wanted:  # the first copy written, then a full re-transfer
                        reactor.callLater(10, app.control, "retransfer", ORIGIN)
                    else:
                        reactor.callLater(10, reactor.stop)
                if now - start > 900:
                    reactor.stop()

            sched_prev: list[dict[str, tuple[int, int]]] = []
            probe = task.LoopingCall(tick)
            gc_log = _watch_gc(start)
            samples: list[tuple[float, str]] = []
            stop_sampler = threading.Event()
            if args.sample:
                DIAG.append("on")
                threading.Thread(target=_sample, args=(threading.get_ident(), last, start, samples,
                                                       stop_sampler), daemon=True).start()

            def boot() -> None:
                import gc

                app.start()
                gc.collect()  # as `secondns serve` does after start (cli._cmd_serve)
                gc.freeze()
                gc.set_threshold(50_000, 20, 100)
            reactor.callWhenRunning(boot)
            reactor.callWhenRunning(probe.start, TICK)
            reactor.run()
            stop_sampler.set()
    cpu_at = {t: c for (t, _lag), c in zip(lags, cpus, strict=True)}
    long_causes = collections.Counter(cause(lag, *cpu_at[t]) for t, lag in lags if lag > 0.05)
    worst = sorted(lags, key=lambda x: -x[1])[:10]
    phases = {}
    if args.retransfer and len(served_at) > 1:
        # The re-transfer is asked for 10 s after the first version is served.
        split = served_at[0] + 10
        phases = {"first_longest_turn_ms": round(max(lag for t, lag in lags if t < split) * 1000, 1),
                  "retransfer_longest_turn_ms": round(max(lag for t, lag in lags if t >= split) * 1000, 1)}
    out = {"records": records, "served_after_s": [round(t, 2) for t in served_at], **phases,
           "ticks": len(lags), "longest_turn_ms": round(worst[0][1] * 1000, 1) if worst else None,
           "turns_over_50ms": sum(1 for _t, lag in lags if lag > 0.05),
           "turns_over_50ms_by_cause": dict(long_causes),
           "loadavg_start_end": [load_start, Path("/proc/loadavg").read_text().split()[0]],
           "worst": [{**_explain(t, lag, gc_log, samples),
                      "reactor_cpu_ms": round(cpu_at[t][0] * 1000, 1),
                      "process_cpu_ms": round(cpu_at[t][1] * 1000, 1),
                      "cause": cause(lag, *cpu_at[t])} for t, lag in worst],
           "gc_pauses_over_10ms": [(round(t, 2), gen, round(d * 1000, 1), thread)
                                   for t, gen, d, thread in gc_log if d > 0.01]}
    if sched_log:
        out["sched_over_30ms"] = sched_log
    if DIAG:
        out["gen0_diag"] = [d for d in DIAG[1:] if d[3] > 10_000]
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
