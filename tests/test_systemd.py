"""The shipped systemd files: the unit verifies, its sandbox scores at most 2.0, and secondns lives in it.

No test runs systemd itself (tests never go through systemd).  Instead: ``systemd-analyze verify``
and ``systemd-analyze security --offline`` on the unit; ``systemd-sysusers``/``systemd-tmpfiles``
with ``--root`` on a scratch tree; and a real secondns run under ``strace`` (start, transfer,
NOTIFY + IXFR, queries, reloads, control, watchdog, SIGTERM) whose every system call and socket
family must be allowed by the unit's ``SystemCallFilter=``/``RestrictAddressFamilies=``, which
systemd enforces with EPERM (``SystemCallErrorNumber=``): a failure nothing else would show.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from peers import (
    REPO_ROOT,
    Bind,
    Secondns,
    ZoneSpec,
    free_port,
    query,
    require_binary,
    soa_zone_text,
)

from secondns.config import parse_config

UNIT = REPO_ROOT / "systemd" / "secondns.service"
SYSUSERS = REPO_ROOT / "systemd" / "secondns.sysusers"
TMPFILES = REPO_ROOT / "systemd" / "secondns.tmpfiles"
INSTALL_DOC = REPO_ROOT / "docs" / "install.md"
MAX_EXPOSURE = 2.0
ZONE = "example.com"


def unit_settings(path: Path = UNIT) -> dict[str, list[str]]:
    """``Key=value`` lines of a unit file; a key may repeat, so each maps to its values in order."""
    settings: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def analyze(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    exe = require_binary("systemd-analyze")
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=60, cwd=cwd, check=False)


@pytest.fixture
def unit_with_stub_binary(tmp_path: Path) -> Path:
    """The unit with its secondns path pointing at an executable stub, as verify wants it to exist."""
    stub = tmp_path / "bin" / "secondns"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    unit = tmp_path / "secondns.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/secondns", str(stub)))
    return unit


# --------------------------------------------------------------------------------------------------
# the unit file


def test_unit_passes_systemd_analyze_verify(unit_with_stub_binary: Path) -> None:
    out = analyze("verify", str(unit_with_stub_binary), cwd=unit_with_stub_binary.parent)
    ours = [line for line in (out.stdout + out.stderr).splitlines() if "secondns" in line]
    assert out.returncode == 0 and ours == [], out.stdout + out.stderr


def test_unit_sandbox_exposure_is_at_most_2(unit_with_stub_binary: Path) -> None:
    out = analyze("security", "--offline=yes", "--no-pager", str(unit_with_stub_binary),
                  cwd=unit_with_stub_binary.parent)
    match = re.search(r"Overall exposure level for secondns\.service: (\d+\.\d+)", out.stdout)
    assert match, out.stdout + out.stderr
    score = float(match.group(1))
    print(f"\nsystemd-analyze security: overall exposure {score}")
    assert score <= MAX_EXPOSURE, out.stdout


def test_unit_waits_for_ready_and_watches_the_process() -> None:
    s = unit_settings()
    assert (s["Type"], s["NotifyAccess"], s["WatchdogSec"]) == (["notify"], ["main"], ["30"])


def test_unit_reload_sends_sighup() -> None:
    assert unit_settings()["ExecReload"] == ["/bin/kill -HUP $MAINPID"]


def test_unit_runs_unprivileged_with_only_the_bind_capability() -> None:
    s = unit_settings()
    assert (s["User"], s["Group"]) == (["secondns"], ["secondns"])
    assert s["AmbientCapabilities"] == s["CapabilityBoundingSet"] == ["CAP_NET_BIND_SERVICE"]


def test_unit_leaves_proc_stat_readable_for_process_metrics() -> None:
    """prometheus-client exports no process_* metric at all when /proc/stat is hidden."""
    assert "pid" not in unit_settings().get("ProcSubset", [])


def test_documented_config_stores_zones_in_the_units_state_directory() -> None:
    s = unit_settings()
    config_path = "/etc/secondns/secondns.yaml"
    assert s["ExecStart"] == [f"/usr/local/bin/secondns serve -c {config_path}"]
    assert (s["StateDirectory"], s["ConfigurationDirectory"]) == (["secondns"], ["secondns"])
    block = re.search(r"```yaml\n(# /etc/secondns/secondns.yaml\n.*?)```", INSTALL_DOC.read_text(), re.DOTALL)
    assert block, "docs/install.md lost its /etc/secondns/secondns.yaml example"
    config = parse_config(block.group(1), config_path)
    assert config.server.storage == Path("/var/lib/secondns")


# --------------------------------------------------------------------------------------------------
# sysusers and tmpfiles, applied to a scratch root


@pytest.fixture
def scratch_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    return root


def sysusers(root: Path) -> None:
    exe = require_binary("systemd-sysusers")
    out = subprocess.run([exe, f"--root={root}", str(SYSUSERS)], capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.returncode == 0, out.stderr


def test_sysusers_creates_a_system_user_without_a_shell(scratch_root: Path) -> None:
    sysusers(scratch_root)
    entry = next(line.split(":") for line in (scratch_root / "etc" / "passwd").read_text().splitlines()
                 if line.startswith("secondns:"))
    uid, home, shell = int(entry[2]), entry[5], entry[6]
    assert uid < 1000 and home == "/var/lib/secondns" and shell == "/usr/sbin/nologin"


def test_tmpfiles_creates_the_config_and_state_directories(scratch_root: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("systemd-tmpfiles needs root to give the directories their owners")
    exe = require_binary("systemd-tmpfiles")
    sysusers(scratch_root)
    out = subprocess.run([exe, f"--root={scratch_root}", "--create", str(TMPFILES)], capture_output=True,
                         text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    uid = int(next(line.split(":")[2] for line in (scratch_root / "etc" / "passwd").read_text().splitlines()
                   if line.startswith("secondns:")))
    etc, state = (scratch_root / "etc" / "secondns").stat(), (scratch_root / "var/lib/secondns").stat()
    assert (etc.st_uid, etc.st_gid, etc.st_mode & 0o7777) == (0, uid, 0o750)
    assert (state.st_uid, state.st_gid, state.st_mode & 0o7777) == (uid, uid, 0o750)


# --------------------------------------------------------------------------------------------------
# secondns inside the sandbox's limits


def _pr_set_mdwe_supported() -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(66, 0, 0, 0, 0) >= 0)  # PR_GET_MDWE: Linux 6.3 and later


_MDWE_WRAPPER = """\
import ctypes, os, sys
if ctypes.CDLL(None, use_errno=True).prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, REFUSE_EXEC_GAIN
    raise SystemExit("PR_SET_MDWE failed")
os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
"""


class _MdweSecondns(Secondns):
    """secondns exec'd with write-or-execute memory enforced, as MemoryDenyWriteExecute=yes does."""

    def _command(self) -> list[str]:
        wrapper = self.workdir / "mdwe.py"
        wrapper.write_text(_MDWE_WRAPPER)
        return [sys.executable, str(wrapper), *super()._command()[1:]]


@pytest.mark.integration
def test_secondns_serves_with_memory_deny_write_execute(tmp_path: Path) -> None:
    if not _pr_set_mdwe_supported():
        pytest.skip("PR_SET_MDWE needs Linux 6.3 or later")
    with _MdweSecondns(tmp_path / "sec", zone_files={ZONE: soa_zone_text(ZONE, 4)}) as sec:
        assert query(sec.port, ZONE, "SOA").answer[0][0].serial == 4
        assert sec.running()


def _syscall_groups() -> dict[str, list[str]]:
    """Every group ``systemd-analyze syscall-filter`` knows, with its members as listed."""
    out = analyze("syscall-filter", "--no-pager")
    groups: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in out.stdout.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), [])
        elif not line.startswith(" ") or line.strip().startswith("#"):
            current = None if not line.startswith(" ") else current
        elif current is not None and line.strip():
            current.append(line.strip())
    return groups


def _expand(names: list[str], groups: dict[str, list[str]]) -> set[str]:
    out: set[str] = set()
    for name in names:
        out |= _expand(groups[name], groups) if name.startswith("@") else {name}
    return out


def allowed_syscalls() -> set[str]:
    """What the unit's SystemCallFilter= lines leave allowed, applied in order as systemd does.

    The first line is an allow list; then a ``~`` line takes its calls away and a plain line
    adds its calls back (systemd.exec(5)).
    """
    groups = _syscall_groups()
    allow: set[str] = set()
    for value in unit_settings()["SystemCallFilter"]:
        calls = _expand(value.lstrip("~").split(), groups)
        if value.startswith("~"):
            allow -= calls
        else:
            allow |= calls
    return allow


def test_the_unit_lets_transfer_threads_go_idle_but_not_realtime() -> None:
    # Issue 11: with workers the main process's transfer threads run at SCHED_IDLE
    # (serve.workers.lower_thread_priority); ~@resources alone refused it with EPERM.
    allowed = allowed_syscalls()
    assert "sched_setscheduler" in allowed
    assert not {"setpriority", "sched_setattr", "setrlimit"} & allowed  # the rest stays denied
    assert unit_settings()["RestrictRealtime"] == ["yes"]


@dataclass
class Trace:
    syscalls: set[str]
    families: set[str]
    log: str


class _TracedSecondns(Secondns):
    """secondns under ``strace -f``; signals go to the traced server, not to strace."""

    def __init__(self, *args: Any, trace: Path, notify: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.trace = trace
        self.notify = notify

    def _command(self) -> list[str]:
        return [require_binary("strace"), "-f", "-qq", "-o", str(self.trace), *super()._command()]

    def _env(self) -> dict[str, str]:
        env = super()._env()
        env.update(NOTIFY_SOCKET=self.notify, WATCHDOG_USEC="200000")
        env.pop("WATCHDOG_PID", None)
        return env

    def server_pid(self) -> int | None:
        """The traced secondns (strace's one child), or None once it has gone."""
        if not self.running():
            return None
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
        return int(children[0]) if children else None

    def signal(self, sig: int) -> None:
        pid = self.server_pid()
        assert pid is not None, "the traced secondns is not running"
        os.kill(pid, sig)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM to secondns itself; strace exits with it."""
        pid = self.server_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                assert self.proc is not None
                self.proc.wait(timeout=timeout)
        return super().stop(timeout)


def _cli(conf: Path, *args: str) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    out = subprocess.run([sys.executable, "-m", "secondns", *args, "-c", str(conf)], capture_output=True,
                         text=True, timeout=30, env=env, cwd=REPO_ROOT, check=False)
    assert out.returncode == 0, out.stderr


def _wait(what: str, check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def traced_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trace]:
    """One secondns life under strace: everything a systemd-run secondns does, then SIGTERM."""
    require_binary("strace")
    require_binary("named")
    base = tmp_path_factory.mktemp("traced")
    notify_dir = tempfile.mkdtemp(prefix="sdn-")
    notify_path = os.path.join(notify_dir, "notify")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    sec_port = free_port()
    spec = ZoneSpec(ZONE, soa_zone_text(ZONE, 1), options=["ixfr-from-differences yes;"], notify=[sec_port])
    bind = Bind(base / "bind", [spec])
    sec = _TracedSecondns(base / "sec", {ZONE: {"primaries": [f"127.0.0.1:{bind.port}"]}}, port=sec_port,
                          ready_zones=[ZONE], trace=base / "strace.log", notify=notify_path,
                          startup_timeout=60)
    try:
        bind.start()
        sec.start()
        bind.write_zone(ZONE, soa_zone_text(ZONE, 2, records="new IN A 192.0.2.9\n"))
        bind.reload(ZONE)
        sec.wait_serial(ZONE, 2, timeout=20)  # NOTIFY, then IXFR and a journal append
        query(sec.port, f"www.{ZONE}", "A", tcp=True)
        query(sec.port, f"nothing.{ZONE}", "A")
        with urllib.request.urlopen(sec.http_url("/metrics"), timeout=5) as resp:
            resp.read()
        _cli(sec.conf_path, "status")
        _cli(sec.conf_path, "reload")
        _cli(sec.conf_path, "retransfer", ZONE)
        _wait("the retransfer", lambda: len(re.findall(r"AXFR from \S+ finished", sec.log_text())) >= 2)
        sec.signal(signal.SIGHUP)
        _wait("the SIGHUP reload", lambda: sec.log_text().count("reloaded:") >= 2)
        sec.signal(signal.SIGTERM)
        assert sec.proc is not None
        assert sec.proc.wait(timeout=20) == 0, sec.log_tail()
        text = (base / "strace.log").read_text()
    finally:
        sec.stop()
        bind.stop()
        notify.close()
        shutil.rmtree(notify_dir, ignore_errors=True)
    syscalls = set(re.findall(r"^\d+\s+(?:<\.\.\. )?([a-z_0-9]+)[( ]", text, re.MULTILINE))
    families = set(re.findall(r"\bsocket\((AF_\w+)", text))
    yield Trace(syscalls, families, text)


@pytest.mark.integration
@pytest.mark.slow
def test_every_system_call_secondns_makes_is_allowed_by_the_unit(traced_run: Trace) -> None:
    denied = traced_run.syscalls - allowed_syscalls()
    assert denied == set(), f"the unit's SystemCallFilter= would answer EPERM to: {sorted(denied)}"


@pytest.mark.integration
@pytest.mark.slow
def test_every_socket_secondns_opens_is_allowed_by_the_unit(traced_run: Trace) -> None:
    allowed = set(unit_settings()["RestrictAddressFamilies"][0].split())
    assert traced_run.families and traced_run.families <= allowed, sorted(traced_run.families)


@pytest.mark.integration
@pytest.mark.slow
def test_no_memory_secondns_maps_is_writable_and_executable(traced_run: Trace) -> None:
    """systemd 252's MemoryDenyWriteExecute= (seccomp) refuses W+X mappings and any mprotect to exec."""
    calls = re.findall(r"^\d+\s+(?:mmap|mprotect|pkey_mprotect)\(.*$", traced_run.log, re.MULTILINE)
    refused = [c for c in calls if "PROT_EXEC" in c and ("PROT_WRITE" in c or "mprotect(" in c)]
    assert calls and refused == [], refused[:5]
