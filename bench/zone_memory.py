"""Memory per small zone, and /metrics rendering time and size, for N zones in one process.

Each zone is the 7-record zone tests/peers.py's soa_zone_text writes; the Application is the
real one (registry, refresh machine, status) on a task.Clock with no sockets, started the way
``secondns serve`` starts, and every copy is loaded before RSS is read.

    python bench/zone_memory.py --zones 10000
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from peers import soa_zone_text
from prometheus_client import generate_latest
from twisted.internet import task

from secondns.app import Application
from secondns.config import parse_config
from secondns.ops.metrics import SecondnsCollector, build_registry, encode


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class _Reactor(task.Clock):
    def listenUDP(self, *a: Any, **k: Any) -> Any:
        return self

    def listenTCP(self, *a: Any, **k: Any) -> Any:
        return self

    def stopListening(self) -> None:
        pass

    def addSystemEventTrigger(self, *a: Any, **k: Any) -> None:
        pass

    def callFromThread(self, f: Any, *a: Any, **k: Any) -> None:
        f(*a, **k)

    def getThreadPool(self) -> Any:
        return self

    def callInThreadWithCallback(self, on_result: Any, f: Any, *a: Any, **k: Any) -> None:
        on_result(True, f(*a, **k))


class _NoClient:
    def soa_query(self, *a: Any) -> Any:
        raise OSError("no network in this benchmark")

    def transfer(self, *a: Any) -> Any:
        raise OSError("no network in this benchmark")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--zones", type=int, default=10000)
    n = ap.parse_args().zones
    work = Path(tempfile.mkdtemp(prefix="secondns-zmem-"))
    storage = work / "zones"
    storage.mkdir()
    lines = []
    for i in range(n):
        name = f"z{i:05d}.scale.test"
        (storage / f"{name}.zone").write_text(soa_zone_text(name, 1))
        lines.append(f"  {name}: {{primaries: ['127.0.0.1:5399']}}")
    config = parse_config(f"server: {{storage: {storage}, http: null}}\nzones:\n" + "\n".join(lines),
                          str(work / "c.yaml"))
    gc.collect()
    before = rss_kib()
    reactor = _Reactor()
    app = Application(config, reactor, client=_NoClient())  # type: ignore[arg-type]
    app.start()
    for _ in range(n):
        if app.loaded_all.called:
            break
        reactor.advance(0)
    gc.collect()
    after = rss_kib()
    served = sum(1 for e in app.registry if e.serving)
    print(f"{n} zones ({served} served): RSS {before / 1024:.1f} -> {after / 1024:.1f} MiB, "
          f"{(after - before) / n:.1f} KiB per zone")
    for per_zone in (True, False):
        collector = SecondnsCollector(app.stats, app.zone_statuses, per_zone=per_zone)
        registry = build_registry(collector)
        t = time.perf_counter()
        text = encode(registry, generate_latest)
        took = time.perf_counter() - t
        print(f"/metrics per-zone {'on ' if per_zone else 'off'}: {took:.3f} s to render, "
              f"{len(text) / 1e6:.2f} MB, {text.count(bytes([10]))} lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
