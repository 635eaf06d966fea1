"""``server.workers: 2``: two serving processes behind one address, live, with real clients.

Each test would pass with one process only by accident it cannot have: "both workers answered"
is read from the per-slot counters (``secondns_worker_queries_total{worker}``), and every
"all workers serve X" check sends many queries, each from a fresh socket and each for a
different name below the zone (``probe``): the kernel's steering program (serve/steering.py)
sends a query to the worker by a hash of its question, so one name would always reach one
worker; it checks both slots' counters moved.
"""

from __future__ import annotations

import os
import signal
import socket
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import dns.exception
import dns.rcode
import dns.rdatatype
import peers
import pytest
from peers import Bind, Secondns, TsigKey, ZoneSpec, query, soa_serial, soa_zone_text, zone_status
from prometheus_client.parser import text_string_to_metric_families
from test_ops import notifications, notify_socket  # noqa: F401  (notify_socket is a fixture)

pytestmark = pytest.mark.integration

ZONE = "example.com"
OTHER = "example.net"
WAIT = 20.0  # bound on every poll (worker start-up is ~1.5 s of imports on a loaded machine)
FRESH_QUERIES = 60  # queries for 60 different names, spread over the workers by question
WORKERS = {"workers": 2}


def samples(sec: Secondns) -> list[Any]:
    with urllib.request.urlopen(sec.http_url("/metrics"), timeout=5) as resp:
        text = resp.read().decode()
    return [s for fam in text_string_to_metric_families(text) for s in fam.samples]


def per_worker(sec: Secondns, name: str) -> dict[str, float]:
    return {s.labels["worker"]: s.value for s in samples(sec) if s.name == name}


def metric(sec: Secondns, name: str, **labels: str) -> float:
    return sum(s.value for s in samples(sec)
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def alive(pid: int) -> bool:
    """A running process (not gone, not a zombie waiting to be reaped)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return "zombie" not in f.read()
    except FileNotFoundError:
        return False


def wait_for(what: str, check: Callable[[], Any], timeout: float = WAIT) -> Any:
    return peers.wait_for(what, check, timeout, interval=0.1)


def probe(zone: str, i: int) -> str:
    """The *i*-th name of a sweep below *zone*: a different question, so it may reach another
    worker (no such name exists, so the answer is NXDOMAIN with the zone's SOA)."""
    return f"probe{i}.{zone}"


def serial_at(port: int, zone: str, i: int) -> int | None:
    """The serial of the SOA in the answer to ``probe(zone, i)``: the version that answered."""
    reply = query(port, probe(zone, i), "SOA")
    for rrset in reply.authority:
        if rrset.rdtype == dns.rdatatype.SOA:
            return int(rrset[0].serial)
    return None


def served_everywhere(sec: Secondns, check: Callable[[int], bool]) -> None:
    """*check(i)* (query ``i``, from a fresh socket, asking about ``probe(zone, i)``) holds for
    FRESH_QUERIES values of i, and both workers took part: their per-slot query counters both
    moved."""
    before = per_worker(sec, "secondns_worker_queries_total")
    for i in range(FRESH_QUERIES):
        assert check(i), f"query {i} from a fresh socket got the old answer"
    # Counters reach the main process once a second.
    wait_for("both workers' counters to move", lambda: all(
        v > before.get(k, 0) for k, v in per_worker(sec, "secondns_worker_queries_total").items()))


def test_two_workers_answer_on_one_address(secondns_factory: Callable[..., Secondns]) -> None:
    sec = secondns_factory(zone_files={ZONE: soa_zone_text(ZONE, 7)}, server=WORKERS)
    pids = per_worker(sec, "secondns_worker_pid")
    assert len(pids) == 2 and len(set(pids.values())) == 2 and sec.pid not in pids.values()
    for pid in pids.values():
        assert os.path.exists(f"/proc/{int(pid)}"), "worker pid is not a live process"
    for i in range(FRESH_QUERIES):
        assert serial_at(sec.port, ZONE, i) == 7
    assert soa_serial(sec.port, ZONE) == 7
    assert soa_serial(sec.port, ZONE, tcp=True) == 7
    assert query(sec.port, f"nope.{ZONE}", "A").rcode() == dns.rcode.NXDOMAIN
    assert query(sec.port, "not-ours.org", "A").rcode() == dns.rcode.REFUSED

    def counted() -> dict[str, float] | None:
        counts = per_worker(sec, "secondns_worker_queries_total")
        return counts if len(counts) == 2 and all(v > 0 for v in counts.values()) else None

    counts = wait_for("both workers to have answered", counted)
    total = FRESH_QUERIES + 4
    wait_for("the summed counters", lambda: metric(sec, "secondns_queries_total") >= total)
    assert sum(counts.values()) <= metric(sec, "secondns_queries_total")
    assert metric(sec, "secondns_worker_up") == 2
    assert metric(sec, "secondns_zone_images_written_total") == 1
    assert metric(sec, "secondns_responses_total", rcode="NXDOMAIN") >= FRESH_QUERIES + 1
    assert metric(sec, "secondns_responses_total", rcode="NOERROR") >= 2


def test_a_killed_worker_is_replaced_while_queries_are_answered(
        secondns_factory: Callable[..., Secondns]) -> None:
    sec = secondns_factory(zone_files={ZONE: soa_zone_text(ZONE, 3)}, server=WORKERS)
    pids = per_worker(sec, "secondns_worker_pid")
    victim = int(pids["0"])
    os.kill(victim, signal.SIGKILL)
    failures = 0
    answered = 0
    deadline = time.monotonic() + 60
    replaced: dict[str, float] = {}
    # Bounded loop: until the slot has a new worker and 200 more queries after that.
    while answered < 200 or not replaced:
        assert time.monotonic() < deadline, "the killed worker was not replaced in 60 s"
        try:
            # A query hashed to the dead slot waits in its socket (kept by the main process)
            # until the replacement reads it: late, not lost.
            reply = query(sec.port, probe(ZONE, answered + failures), "SOA", timeout=8.0)
            assert reply.rcode() == dns.rcode.NXDOMAIN and reply.authority[0][0].serial == 3
            answered += 1
        except dns.exception.Timeout:
            failures += 1
        if not replaced and answered % 20 == 0:
            now = per_worker(sec, "secondns_worker_pid")
            if now.get("0") not in (None, 0.0, float(victim)) and per_worker(sec, "secondns_worker_up")["0"]:
                replaced = now
    assert failures == 0, f"{failures} queries unanswered while a worker was restarted"
    assert replaced["1"] == pids["1"], "the other worker must keep serving, not be restarted"
    assert per_worker(sec, "secondns_worker_restarts_total") == {"0": 1.0, "1": 0.0}
    assert not alive(victim)
    served_everywhere(sec, lambda i: serial_at(sec.port, ZONE, i) == 3)


def test_ixfr_and_notify_reach_every_worker(bind_factory: Callable[..., Bind],
                                            secondns_factory: Callable[..., Secondns]) -> None:
    port = peers.free_port()
    spec = ZoneSpec(ZONE, soa_zone_text(ZONE, 1), options=["ixfr-from-differences yes;", "notify-delay 0;"],
                    notify=[port])
    bind = bind_factory([spec])
    sec = secondns_factory({ZONE: {"primaries": [f"127.0.0.1:{bind.port}"]}}, server=WORKERS, port=port,
                           ready_zones=[ZONE])
    wait_for("the first transfer", lambda: soa_serial(sec.port, ZONE) == 1)
    for serial in (2, 3, 4):
        extra = "".join(f"h{i} IN A 192.0.2.{i}\n" for i in range(serial)) + f"*.s{serial} IN A 192.0.2.99\n"
        bind.write_zone(ZONE, soa_zone_text(ZONE, serial, records=extra))
        bind.reload(ZONE)
        # The SOA refresh is 3600 s: only the NOTIFY (sent to the workers' port, answered by the
        # main process through a worker) makes secondns check so soon.
        wait_for(f"serial {serial}", lambda s=serial: zone_status(sec, ZONE)["serial"] == s)
        last = zone_status(sec, ZONE)["last_transfer"]
        assert (last["type"], last["result"]) == ("ixfr", "success")
        name = f"h{serial - 1}.{ZONE}"
        served_everywhere(sec, lambda i, s=serial: serial_at(sec.port, ZONE, i) == s)
        assert len(query(sec.port, name, "A").answer) == 1
        # data only the new version has, from every worker: names under its wildcard
        served_everywhere(sec, lambda i, s=serial: len(query(sec.port, f"p{i}.s{s}.{ZONE}", "A").answer) == 1)
    assert metric(sec, "secondns_notifies_total", result="accepted") >= 3


def test_a_zone_removed_on_reload_disappears_from_every_worker(
        secondns_factory: Callable[..., Secondns]) -> None:
    sec = secondns_factory(zone_files={ZONE: soa_zone_text(ZONE, 5), OTHER: soa_zone_text(OTHER, 6)},
                           server=WORKERS)
    served_everywhere(sec, lambda i: serial_at(sec.port, OTHER, i) == 6)
    del sec.zones[OTHER]
    sec.reload()
    wait_for("the removal", lambda: query(sec.port, OTHER).rcode() == dns.rcode.REFUSED)
    served_everywhere(sec, lambda i: query(sec.port, probe(OTHER, i)).rcode() == dns.rcode.REFUSED
                      and serial_at(sec.port, ZONE, i) == 5)


def test_a_zone_without_a_version_is_servfail_in_every_worker(
        secondns_factory: Callable[..., Secondns]) -> None:
    dead = peers.free_port()
    sec = secondns_factory({ZONE: {"primaries": [f"127.0.0.1:{dead}"]}}, server=WORKERS, ready_zones=[])
    wait_for("both workers up", lambda: metric(sec, "secondns_worker_up") == 2)
    served_everywhere(sec, lambda i: query(sec.port, probe(ZONE, i)).rcode() == dns.rcode.SERVFAIL)


def test_workers_exit_with_the_main_process(secondns_factory: Callable[..., Secondns]) -> None:
    sec = secondns_factory(zone_files={ZONE: soa_zone_text(ZONE, 1)}, server=WORKERS)
    pids = [int(p) for p in per_worker(sec, "secondns_worker_pid").values()]
    sec.kill9()  # no shutdown code runs: the closed channel is what tells the workers

    wait_for("the workers to exit", lambda: not any(alive(pid) for pid in pids))


def test_sigterm_stops_every_worker_and_a_restart_serves_again(
        secondns_factory: Callable[..., Secondns]) -> None:
    sec = secondns_factory(zone_files={ZONE: soa_zone_text(ZONE, 9)}, server=WORKERS)
    pids = [int(p) for p in per_worker(sec, "secondns_worker_pid").values()]
    assert sec.stop() == 0
    wait_for("the workers to exit", lambda: not any(alive(pid) for pid in pids))
    assert "Traceback" not in sec.log_text()
    sec.start()  # the same port: nothing of the old processes holds it
    served_everywhere(sec, lambda i: serial_at(sec.port, ZONE, i) == 9)


def test_signed_queries_are_answered_by_every_worker_with_keys_from_reload(
        secondns_factory: Callable[..., Secondns]) -> None:
    first, second = TsigKey.generate("first.key."), TsigKey.generate("second.key.")

    def keys(*ks: TsigKey) -> dict[str, Any]:
        return {k.name: {"algorithm": k.algorithm, "secret": k.secret} for k in ks}

    sec = secondns_factory(zone_files={ZONE: soa_zone_text(ZONE, 4)}, server=WORKERS, start=False)
    sec.config["keys"] = keys(first)
    sec.start()

    def signed_ok(key: TsigKey, i: int = 0) -> bool:
        reply = query(sec.port, probe(ZONE, i), "SOA", key=key)  # dnspython verifies the signed reply
        return reply.had_tsig and reply.rcode() == dns.rcode.NXDOMAIN and len(reply.authority) == 1

    def refused(key: TsigKey, i: int = 0) -> bool:
        try:
            return query(sec.port, probe(ZONE, i), "SOA", key=key).rcode() == dns.rcode.NOTAUTH
        except dns.exception.DNSException:  # dnspython raises on a BADKEY reply (RFC 8945 5.2.1)
            return True

    served_everywhere(sec, lambda i: signed_ok(first, i))
    served_everywhere(sec, lambda i: refused(second, i))
    sec.config["keys"] = keys(first, second)
    sec.reload()
    wait_for("the reloaded key", lambda: not refused(second))
    served_everywhere(sec, lambda i: signed_ok(second, i) and signed_ok(first, i))


def test_ready_is_notified_once_every_worker_serves(notify_socket: socket.socket,  # noqa: F811
                                                    secondns_factory: Callable[..., Secondns]) -> None:
    sec = secondns_factory(zone_files={ZONE: soa_zone_text(ZONE, 2)}, server=WORKERS)
    received = notifications(notify_socket, lambda r: any("READY=1" in m for m in r))
    # At READY both slots have reported ready (zones replayed, sockets adopted).
    assert per_worker(sec, "secondns_worker_up") == {"0": 1.0, "1": 1.0}
    ready = next(m for m in received if "READY=1" in m)
    assert "STATUS=serving 1 zones with 2 workers" in ready.splitlines()
