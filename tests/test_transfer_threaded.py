"""Transfers parsed in the reactor's thread pool (``server.workers`` > 1, issue 11).

With serving workers the main process parses AXFR/IXFR messages in its niced pool threads,
so a big transfer does not take the CPU from the workers.  The stream must come out exactly
as when the reactor thread parses it: in order, complete, with the same errors, also when
the primary closes the connection right after the last message (still queued for parsing)
and when more messages queue up than the socket is allowed to run ahead (it is paused).

Each case runs the real reactor in a subprocess against ``BadPrimary``, as
tests/test_transfer_client.py does.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from badprimary import BadPrimary

ROOT = Path(__file__).resolve().parents[1]
ORIGIN = "threaded.test."

SCRIPT = textwrap.dedent("""
    import json, sys, threading
    from twisted.internet import reactor
    from secondns.config import Endpoint, ZoneConfig
    from secondns.names import from_text
    from secondns.transfer import xfrin
    from secondns.transfer.client import TwistedTransferClient, _ThreadedExchange

    port, threaded = int(sys.argv[1]), sys.argv[2] == "1"
    _ThreadedExchange.MAX_QUEUED = 4  # BadPrimary sends 5 records a message: many pauses
    feeds = {"reactor": 0, "other": 0}
    feed = xfrin._InboundStream.feed

    def counting_feed(self, message):
        on_reactor = threading.current_thread() is threading.main_thread()
        feeds["reactor" if on_reactor else "other"] += 1
        return feed(self, message)
    xfrin._InboundStream.feed = counting_feed
    zc = ZoneConfig("threaded.test.", from_text("threaded.test."),
                    primaries=(Endpoint("127.0.0.1", port),), transfer_timeout=20,
                    transfer_idle_timeout=10)
    client = TwistedTransferClient(reactor, connect_timeout=2, parse_in_thread=threaded)
    out = {}

    def done(result):
        value = getattr(result, "value", result)
        if hasattr(value, "zone"):
            out["records"] = value.records
            out["served"] = value.zone.record_count
        else:
            out["error"] = f"{type(value).__name__}: {value}"
        out["feeds"] = feeds
        print(json.dumps(out))
        reactor.stop()

    reactor.callWhenRunning(lambda: client.transfer(zc.primaries[0], zc, None, "axfr").addBoth(done))
    reactor.run()
""")


def transfer(primary: BadPrimary, threaded: bool) -> dict[str, object]:
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(primary.port), "1" if threaded else "0"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env={"PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}"})
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("script", ["oversize", "good-close"])
def test_a_stream_parsed_in_threads_equals_the_reactor_parse(script: str) -> None:
    with BadPrimary(ORIGIN, axfr=script, oversize_records=400) as primary:  # type: ignore[arg-type]
        threaded = transfer(primary, True)
        inline = transfer(primary, False)
    assert "error" not in threaded, threaded
    assert threaded["records"] == inline["records"] and threaded["served"] == inline["served"]
    assert threaded["served"] == 19 + 400  # the zone's 19 records (SOA once), the extra ones
    feeds = threaded["feeds"]
    assert isinstance(feeds, dict) and feeds["reactor"] == 0 and feeds["other"] > 80
    assert inline["feeds"] == {"reactor": feeds["other"], "other": 0}


@pytest.mark.parametrize(("script", "kind"), [
    ("notauth", "TransferError"), ("truncated", "TransientError"), ("closing-serial", "TransferError"),
])
def test_a_failing_stream_fails_the_same_in_threads(script: str, kind: str) -> None:
    with BadPrimary(ORIGIN, axfr=script) as primary:  # type: ignore[arg-type]
        threaded = transfer(primary, True)
        inline = transfer(primary, False)
    assert str(threaded.get("error", "")).startswith(f"{kind}: "), threaded
    assert threaded["error"] == inline["error"]
