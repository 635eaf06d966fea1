"""Operating a running secondns: reloads, the control channel's guard, systemd's notify protocol,
a stop in the middle of a transfer, and JSON logs.

Each test starts the server as a user (or systemd) would, ``python -m secondns serve -c FILE``, on
loopback; a BIND primary stands in where zones must transfer.  Signals go to the server's own PID.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dns.exception
import dns.rcode
import dns.rdatatype
import peers
import pytest
import yaml
from peers import REPO_ROOT, Bind, Secondns, free_port, query, soa_serial, soa_zone_text

from secondns.store import storage

pytestmark = pytest.mark.integration

ZONE = "a.test"
WAIT = 15.0  # bound on every poll for an effect
TOKEN = "ops-test-control-token-7c1e"


# --------------------------------------------------------------------------------------------------
# helpers


def secondns_cli(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run ``python -m secondns ARGS`` from the source tree; bounded by ``timeout``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, "-m", "secondns", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=REPO_ROOT, check=False)


def wait_for(what: str, check: Callable[[], Any], timeout: float = WAIT) -> Any:
    return peers.wait_for(what, check, timeout)


def rcode(sec: Secondns, name: str) -> int | None:
    """The rcode of an SOA query, or None on no answer."""
    try:
        return int(query(sec.port, name, "SOA", timeout=1.0).rcode())
    except (dns.exception.DNSException, OSError):
        return None


def write_config(sec: Secondns, config: dict[str, Any]) -> None:
    """Replace the server's config file atomically, so a reload never reads half of it."""
    tmp = sec.conf_path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(config, sort_keys=False))
    os.replace(tmp, sec.conf_path)


def sighup(sec: Secondns) -> None:
    assert sec.proc is not None and sec.proc.poll() is None, "secondns is not running"
    sec.proc.send_signal(signal.SIGHUP)


def zone_phase(sec: Secondns, zone: str) -> str | None:
    with urllib.request.urlopen(sec.http_url("/status"), timeout=5) as resp:
        body = json.load(resp)
    return next((z["phase"] for z in body["zones"] if z["zone"] == zone.rstrip(".") + "."), None)


def log_after_start(sec: Secondns) -> list[str]:
    """Lines the server wrote since its last start (the log file also holds the start marker)."""
    text = sec.log_text()
    return text[text.rindex("\n=== start "):].splitlines()[2:]


# --------------------------------------------------------------------------------------------------
# reload: SIGHUP and `secondns reload`


def test_sighup_adds_a_zone_that_then_transfers(bind_factory: Callable[..., Bind],
                                                secondns_factory: Callable[..., Secondns]) -> None:
    bind = bind_factory([(ZONE, soa_zone_text(ZONE, 1)), ("b.test", soa_zone_text("b.test", 7))])
    primary = {"primaries": [f"127.0.0.1:{bind.port}"]}
    sec = secondns_factory({ZONE: primary}, ready_zones=[ZONE])
    assert rcode(sec, "b.test") == dns.rcode.REFUSED
    sec.zones["b.test"] = primary
    sec.reload()
    sec.wait_serial("b.test", 7, timeout=WAIT)


def test_sighup_removing_a_zone_makes_its_names_refused(secondns_factory: Callable[..., Secondns]) -> None:
    sec = secondns_factory(zone_files={ZONE: soa_zone_text(ZONE, 1), "b.test": soa_zone_text("b.test", 2)})
    assert rcode(sec, "www.b.test") == dns.rcode.NOERROR
    del sec.zones["b.test"]
    sec.reload()
    wait_for("b.test to be REFUSED", lambda: rcode(sec, "www.b.test") == dns.rcode.REFUSED)
    assert soa_serial(sec.port, ZONE) == 1


def test_sighup_with_an_invalid_config_keeps_the_old_one(secondns_factory: Callable[..., Secondns]) -> None:
    sec = secondns_factory(zone_files={ZONE: soa_zone_text(ZONE, 1)})
    bad = {**sec.config, "zones": {**sec.zones, "b.test": {"primaries": ["ns1.example.net"]}}}
    write_config(sec, bad)
    lines = sec.conf_path.read_text().splitlines()
    line = 1 + next(i for i, text in enumerate(lines) if "ns1.example.net" in text)
    sighup(sec)
    wait_for("the reload to be rejected", lambda: "reload rejected" in sec.log_text())
    assert f"{sec.conf_path}:{line}: zones.b.test.primaries[0]: 'ns1.example.net'" in sec.log_text()
    assert sec.running()
    assert soa_serial(sec.port, ZONE) == 1
    assert rcode(sec, "b.test") == dns.rcode.REFUSED


def test_reload_verb_adds_a_zone(secondns_factory: Callable[..., Secondns]) -> None:
    sec = secondns_factory(zone_files={ZONE: soa_zone_text(ZONE, 1)})
    sec.write_zone("c.test", soa_zone_text("c.test", 9))
    sec.zones["c.test"] = {}
    write_config(sec, sec.config)
    out = secondns_cli("reload", "-c", str(sec.conf_path))
    assert (out.returncode, out.stdout.strip()) == (0, "reloaded: 1 added, 0 removed, 0 changed"), out.stderr
    sec.wait_serial("c.test", 9, timeout=WAIT)


def test_reload_making_a_zone_static_stops_its_expiry(secondns_factory: Callable[..., Secondns]) -> None:
    """Runbook, primary down for longer than EXPIRE: drop the zone's primaries and reload to keep serving."""
    dead = f"127.0.0.1:{free_port()}"  # nothing listens: every SOA check fails
    sec = secondns_factory({ZONE: {"primaries": [dead]}}, zone_files={ZONE: soa_zone_text(ZONE, 1)},
                           defaults={"expire-min": 1, "expire-max": 3, "retry-min": 1})
    sec.zones[ZONE] = {}
    sec.reload()
    wait_for("the reload", lambda: "reloaded: 0 added, 0 removed, 1 changed" in sec.log_text())
    deadline = time.monotonic() + 5  # past the 3 s EXPIRE counted from start
    while time.monotonic() < deadline:
        assert rcode(sec, ZONE) == dns.rcode.NOERROR, sec.log_tail()
        time.sleep(0.1)


def test_reload_giving_a_static_zone_primaries_transfers_it(
        bind_factory: Callable[..., Bind], secondns_factory: Callable[..., Secondns]) -> None:
    bind = bind_factory([(ZONE, soa_zone_text(ZONE, 5))])
    sec = secondns_factory(zone_files={ZONE: soa_zone_text(ZONE, 1)})
    sec.zones[ZONE] = {"primaries": [f"127.0.0.1:{bind.port}"]}
    sec.reload()
    sec.wait_serial(ZONE, 5, timeout=WAIT)


def test_queries_see_no_error_during_repeated_reloads(secondns_factory: Callable[..., Secondns]) -> None:
    """A UDP query loop (1 s timeout each); every 25th query SIGHUP flips a second zone in or out."""
    max_queries, every, deadline = 3000, 25, time.monotonic() + 90
    sec = secondns_factory(zone_files={ZONE: soa_zone_text(ZONE, 1),
                                       "flip.test": soa_zone_text("flip.test", 1)})
    with_flip = json.loads(json.dumps(sec.config))
    without_flip = {**with_flip, "zones": {ZONE: {}}}
    failures: list[str] = []
    count = sighups = 0
    while count < max_queries and time.monotonic() < deadline:
        if count % every == 0:
            write_config(sec, without_flip if sighups % 2 == 0 else with_flip)
            sighup(sec)  # the reload runs in the server while the next queries arrive
            sighups += 1
        count += 1
        try:
            reply = query(sec.port, f"www.{ZONE}", "A", timeout=1.0)
        except (dns.exception.DNSException, OSError) as exc:
            failures.append(f"query {count}: {type(exc).__name__}")
            continue
        if reply.rcode() != dns.rcode.NOERROR or not reply.answer:
            failures.append(f"query {count}: {dns.rcode.to_text(reply.rcode())}, "
                            f"{len(reply.answer)} answers")
    wait_for("the last reload", lambda: sum("reloaded:" in line for line in log_after_start(sec)) >= sighups)
    done = sum("reloaded:" in line for line in log_after_start(sec))
    print(f"\nreload loop: {count} queries, {len(failures)} failures, {sighups} SIGHUPs, {done} reloads done")
    assert failures == []
    assert count == max_queries


# --------------------------------------------------------------------------------------------------
# control channel on a listener that is not 127.0.0.1 (127.0.0.2 stands in for a public address)


@pytest.fixture
def exposed(secondns_factory: Callable[..., Secondns]) -> tuple[Secondns, int]:
    """secondns with its HTTP listener on 127.0.0.2 and a control token; returns (server, port)."""
    port = free_port("127.0.0.2")
    sec = secondns_factory(zone_files={ZONE: soa_zone_text(ZONE, 1)}, http_port=port,
                           server={"http": f"127.0.0.2:{port}", "control-token": TOKEN})
    return sec, port


def post_from_loopback(port: int, path: str, token: str | None) -> int:
    """POST to 127.0.0.2 from source address 127.0.0.1, a loopback client; return the HTTP status."""
    conn = http.client.HTTPConnection("127.0.0.2", port, timeout=5, source_address=("127.0.0.1", 0))
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        conn.request("POST", path, body=b"", headers=headers)
        return conn.getresponse().status
    finally:
        conn.close()


def test_control_on_an_exposed_listener_refuses_a_loopback_client_without_token(
        exposed: tuple[Secondns, int]) -> None:
    _, port = exposed
    assert post_from_loopback(port, "/control/reload", None) == 403


def test_control_on_an_exposed_listener_refuses_a_wrong_token(exposed: tuple[Secondns, int]) -> None:
    _, port = exposed
    assert post_from_loopback(port, "/control/reload", TOKEN + "x") == 403


def test_control_on_an_exposed_listener_accepts_the_token(exposed: tuple[Secondns, int]) -> None:
    sec, _ = exposed
    out = secondns_cli("reload", "-c", str(sec.conf_path))  # the CLI sends the token from the config
    assert (out.returncode, out.stdout.strip()) == (0, "reloaded: 0 added, 0 removed, 0 changed"), out.stderr


# --------------------------------------------------------------------------------------------------
# systemd notify protocol (sd_notify(3)), on a datagram socket of our own


@pytest.fixture
def notify_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """An AF_UNIX datagram socket named in NOTIFY_SOCKET for servers started after this."""
    directory = tempfile.mkdtemp(prefix="sdn-")  # short: sun_path holds 108 bytes
    path = os.path.join(directory, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    try:
        yield sock
    finally:
        sock.close()
        shutil.rmtree(directory, ignore_errors=True)


def notifications(sock: socket.socket, until: Callable[[list[str]], bool],
                  timeout: float = WAIT) -> list[str]:
    """Datagrams received until ``until(received)`` holds; bounded by ``timeout``."""
    received: list[str] = []
    deadline = time.monotonic() + timeout
    while not until(received):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out after {timeout:g} s; received {received}")
        sock.settimeout(left)
        with contextlib.suppress(TimeoutError):
            received.append(sock.recv(4096).decode())
    return received


def test_ready_is_notified_once_zones_are_loaded(notify_socket: socket.socket,
                                                 secondns_factory: Callable[..., Secondns]) -> None:
    secondns_factory(zone_files={ZONE: soa_zone_text(ZONE, 1)})
    received = notifications(notify_socket, lambda r: any("READY=1" in m for m in r))
    ready = next(m for m in received if "READY=1" in m)
    assert "STATUS=serving 1 zones" in ready.splitlines()


def test_watchdog_is_pinged_at_half_the_interval(notify_socket: socket.socket,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 secondns_factory: Callable[..., Secondns]) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # 0.2 s: a ping every 0.1 s
    secondns_factory(zone_files={ZONE: soa_zone_text(ZONE, 1)})
    started = time.monotonic()
    notifications(notify_socket, lambda r: sum(m == "WATCHDOG=1" for m in r) >= 10, timeout=10)
    assert time.monotonic() - started < 3


def test_sighup_is_notified_as_reloading_then_ready(notify_socket: socket.socket,
                                                    secondns_factory: Callable[..., Secondns]) -> None:
    sec = secondns_factory(zone_files={ZONE: soa_zone_text(ZONE, 1)})
    notifications(notify_socket, lambda r: any("READY=1" in m for m in r))
    sighup(sec)
    received = notifications(notify_socket, lambda r: "READY=1" in r)
    assert received == ["RELOADING=1", "READY=1"]


def test_a_notify_socket_nobody_reads_does_not_stall_serving(
        notify_socket: socket.socket, monkeypatch: pytest.MonkeyPatch,
        secondns_factory: Callable[..., Secondns]) -> None:
    """A stuck systemd must not stop DNS: pings that cannot be queued are dropped, never waited on."""
    monkeypatch.setenv("WATCHDOG_USEC", "2000")  # a ping every 1 ms fills the socket's queue at once
    sec = secondns_factory(zone_files={ZONE: soa_zone_text(ZONE, 1)})
    time.sleep(1)  # never reading notify_socket
    for _ in range(20):
        assert soa_serial(sec.port, ZONE, timeout=1.0) == 1


# --------------------------------------------------------------------------------------------------
# stopping in the middle of a transfer


def test_sigterm_during_a_transfer_keeps_the_copy_on_disk_whole(
        bind_factory: Callable[..., Bind], secondns_factory: Callable[..., Secondns]) -> None:
    big_records = 300_000
    bind = bind_factory([(ZONE, soa_zone_text(ZONE, 1))])
    sec = secondns_factory({ZONE: {"primaries": [f"127.0.0.1:{bind.port}"]}}, ready_zones=[ZONE])
    copy = sec.zone_path(ZONE)
    wait_for("the first copy on disk", lambda: copy.exists() and b"; end records=" in copy.read_bytes())
    before = copy.read_bytes()
    records = "".join(f"h{i} IN A 10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}\n" for i in range(big_records))
    bind.write_zone(ZONE, soa_zone_text(ZONE, 2, records=records))
    bind.reload(ZONE)
    bind.wait_serial(ZONE, 2, timeout=60)
    out = secondns_cli("refresh", ZONE, "-c", str(sec.conf_path))
    assert out.returncode == 0, out.stderr
    wait_for("the transfer to start", lambda: zone_phase(sec, ZONE) == "transferring")
    time.sleep(0.3)  # into the stream: the whole transfer takes about 2 s
    assert zone_phase(sec, ZONE) == "transferring"
    assert sec.proc is not None
    stopped = time.monotonic()
    sec.proc.send_signal(signal.SIGTERM)
    returncode = sec.proc.wait(timeout=10)
    took = time.monotonic() - stopped
    assert returncode == 0, sec.log_tail()
    assert took < 5, f"took {took:.1f} s to stop"
    after = copy.read_bytes()
    if after != before:  # then it must be the whole new copy, never a part of it
        loaded = storage.load_zone(sec.storage, f"{ZONE}.", f"{ZONE}.".encode())
        assert loaded is not None
        assert (loaded[0].serial, loaded[0].record_count) == (2, big_records + 6)


# --------------------------------------------------------------------------------------------------
# logs


def test_json_log_lines_parse_and_name_the_zone(secondns_factory: Callable[..., Secondns]) -> None:
    sec = secondns_factory(zone_files={ZONE: soa_zone_text(ZONE, 5)}, extra_args=["--log-format", "json"])
    sec.stop()
    entries = [json.loads(line) for line in log_after_start(sec) if line.strip()]
    assert all({"ts", "level", "msg"} <= entry.keys() for entry in entries), entries
    loaded = [e for e in entries if "serving serial 5 from disk" in e["msg"]]
    assert [e.get("zone") for e in loaded] == [f"{ZONE}."]
    assert any(e["msg"] == "shutting down" for e in entries)


@pytest.mark.integration
def test_started_as_root_it_drops_to_server_user_after_binding(tmp_path: Path) -> None:
    """server.user: bind as root, then run as that user; the zone copy is written as that user."""
    import os
    import pwd
    import tempfile

    if os.geteuid() != 0:
        pytest.skip("needs root to start as root and drop privileges (CI runs as root)")
    nobody = pwd.getpwnam("nobody")
    storage = Path(tempfile.mkdtemp(prefix="secondns-drop-"))  # outside pytest's 0700 tree
    storage.chmod(0o777)
    zone = "drop.test."
    try:
        _check_drop(tmp_path, storage, zone, nobody)
    finally:
        shutil.rmtree(storage, ignore_errors=True)


def _check_drop(tmp_path: Path, storage: Path, zone: str, nobody: Any) -> None:
    with Bind(tmp_path / "bind", [(zone, soa_zone_text(zone, 7))]) as prim, \
            Secondns(tmp_path / "sec", {zone: {"primaries": [f"127.0.0.1:{prim.port}"]}},
                     server={"user": "nobody", "storage": str(storage)}, ready_zones=[]) as sec:
        deadline = time.monotonic() + 15
        copy = storage / "drop.test.zone"
        while not copy.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert copy.exists(), sec.log_tail()
        status = Path(f"/proc/{sec.pid}/status").read_text()
        uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
        gids = next(line for line in status.splitlines() if line.startswith("Gid:")).split()[1:]
        groups = next(line for line in status.splitlines() if line.startswith("Groups:")).split()[1:]
        assert uids == [str(nobody.pw_uid)] * 4  # real, effective, saved, filesystem
        assert gids == [str(nobody.pw_gid)] * 4
        assert groups == []
        assert copy.stat().st_uid == nobody.pw_uid  # written after the drop
        assert query(sec.port, zone, "SOA").answer  # and still serving
