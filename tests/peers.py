"""Real DNS servers on loopback for integration tests and benchmarks.

Interoperability is the point of a secondary: the only convincing test of an AXFR/IXFR/NOTIFY/TSIG
path is a real primary (BIND 9, Knot, NSD) on the other end, and the only convincing test of our
own server is the process a user would run.  Every class here starts one such process in its own
directory, with a generated config, on 127.0.0.1 and a free port, waits (bounded) until it
answers, and stops it by PID.  Nothing goes through systemd and nothing listens beyond loopback.

The module is plain (no pytest fixtures) so ``bench/`` can reuse it; the fixtures live in
``conftest.py``.  Only ``require_binary`` touches pytest, to skip locally but fail in CI.
"""

from __future__ import annotations

import atexit
import base64
import collections
import contextlib
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.tsigkeyring
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
# Debian puts daemons in /usr/sbin, which a non-root PATH often lacks.
_EXTRA_BIN_DIRS = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")
_START_TIMEOUT = 20.0
_STOP_TIMEOUT = 10.0
# sun_path is 108 bytes on Linux; pytest's tmp_path can be longer than that.
_MAX_UNIX_PATH = 100

Endpoint = tuple[str, int]


class PeerError(RuntimeError):
    """A peer server failed to start, answer, reload or stop; the message carries its log tail."""


# --------------------------------------------------------------------------------------------------
# ports and binaries


def _port_pool() -> range | None:
    """The ports this process picks servers' ports from, or None to let the kernel pick.

    A port the kernel hands out (bind to 0) lies in the ephemeral range, where every outgoing
    query and transfer of every test process also takes its source port: with two pytest-xdist
    processes a port picked and released here was now and then taken by such a socket before
    the server bound it ("Address already in use").  Below the ephemeral range nobody else
    takes ports, and each xdist process (``PYTEST_XDIST_WORKER`` = gwN) gets its own slice, so
    two processes never pick the same one.
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    index = int(worker[2:]) + 1 if worker.startswith("gw") and worker[2:].isdigit() else 0
    first = 10000 + 2000 * index
    if first + 2000 > low:
        return None
    return range(first, first + 2000)


_PORTS = _port_pool()
_rng = random.Random(secrets.randbits(64))  # not the global one: hypothesis seeds that


# The ports free_port gave out last, never given again while here: far fewer than a slice.
_HANDED_OUT: collections.deque[int] = collections.deque(maxlen=256)


def free_port(host: str = LOOPBACK, attempts: int = 50) -> int:
    """Return a port free for both UDP and TCP on ``host``.

    DNS servers bind both transports on one port, so a port free for TCP only is not enough.
    The port comes from this process's slice below the ephemeral range (``_port_pool``), else
    from the kernel; a few retries cover a port in use.  Another process may still grab the port
    before the server binds it, which the start-up wait reports as a failed start rather than
    hanging.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(attempts):
        with socket.socket(family, socket.SOCK_STREAM) as tcp:
            try:
                tcp.bind((host, _rng.choice(_PORTS) if _PORTS is not None else 0))
            except OSError:
                continue
            port = int(tcp.getsockname()[1])
            if port in _HANDED_OUT:
                # Free now, but given to a server that may not have bound it yet: a test that
                # asks for two ports before starting either got the same one twice
                # ("Address already in use" at the second server's start).
                continue
            with socket.socket(family, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((host, port))
                except OSError:
                    continue
                _HANDED_OUT.append(port)
                return port
    raise PeerError(f"no port free for both UDP and TCP on {host} after {attempts} attempts")


def find_binary(name: str) -> str | None:
    """Path of ``name`` from PATH or the usual sbin/bin directories, or None.

    Separate from ``require_binary`` so benchmarks can check without pytest's skip machinery.
    """
    found = shutil.which(name)
    if found:
        return found
    for directory in _EXTRA_BIN_DIRS:
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def require_binary(name: str) -> str:
    """Path of ``name``; skip the test when it is missing, but fail in CI.

    CI installs every peer, so a missing binary there means a broken install that a skip would
    silently hide; on a developer machine a missing peer is just an uncovered test.
    """
    import pytest

    path = find_binary(name)
    if path is not None:
        return path
    reason = f"{name} not found in PATH or {', '.join(_EXTRA_BIN_DIRS)}"
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: peers must be installed)", pytrace=False)
    pytest.skip(reason)


def _binary(name: str) -> str:
    """``require_binary`` under pytest; outside it (benchmarks) a plain PeerError."""
    if "pytest" in sys.modules:
        return require_binary(name)
    path = find_binary(name)
    if path is None:
        raise PeerError(f"{name} not found in PATH or {', '.join(_EXTRA_BIN_DIRS)}")
    return path


# --------------------------------------------------------------------------------------------------
# zones and keys


@dataclass(frozen=True)
class TsigKey:
    """A TSIG key shared between peers; ``secret`` is base64 as every config format wants it."""

    name: str
    secret: str
    algorithm: str = "hmac-sha256"

    @classmethod
    def generate(cls, name: str, algorithm: str = "hmac-sha256", size: int = 32) -> TsigKey:
        """A fresh random key, so tests never share secrets by accident."""
        return cls(name, base64.b64encode(secrets.token_bytes(size)).decode("ascii"), algorithm)

    def keyring(self) -> dict[dns.name.Name, dns.tsig.Key]:
        """The dnspython keyring holding just this key."""
        key = dns.tsig.Key(self.name, self.secret, self.algorithm)
        return {key.name: key}


def _endpoint(value: int | Endpoint) -> Endpoint:
    """Accept a bare port as shorthand for 127.0.0.1, the only address tests use."""
    if isinstance(value, int):
        return (LOOPBACK, value)
    return (str(value[0]), int(value[1]))


@dataclass(frozen=True)
class ZoneSpec:
    """One zone a peer serves, in terms every peer can express.

    The first four fields match the tuple form ``(name, data, type, options)`` that the peer
    classes also accept.  ``data`` is zone-file text (``str``) or a file (``Path``) that is copied
    into the peer's directory, so reload tests can rewrite it without touching the original.
    ``options`` are raw lines put inside the zone's block verbatim and are therefore specific
    to one server (e.g. BIND's ``ixfr-from-differences yes;`` or Knot's ``zonefile-load:
    difference``).  ``key`` names the TSIG key that transfers, notifies and primaries of this
    zone must use; without it, loopback is trusted.  ``tls`` names a BIND ``tls`` block
    (given with ``Bind(conf=...)``) that the zone's primaries are reached through (XoT).
    """

    name: str
    data: str | Path | None = None
    type: Literal["primary", "secondary"] = "primary"
    options: Sequence[str] = ()
    primaries: Sequence[int | Endpoint] = ()
    notify: Sequence[int | Endpoint] = ()
    key: str | None = None
    tls: str | None = None

    @classmethod
    def coerce(cls, value: ZoneSpec | Sequence[Any]) -> ZoneSpec:
        """Accept a ZoneSpec or the short tuple form."""
        if isinstance(value, ZoneSpec):
            return value
        return cls(*value)

    @property
    def origin(self) -> str:
        """The zone name with exactly one trailing dot (what every config format accepts)."""
        return self.name.rstrip(".") + "."

    @property
    def filename(self) -> str:
        """File name for the zone in a peer's directory; the root zone gets a readable name."""
        return (self.name.rstrip(".") or "root") + ".zone"

    def primary_endpoints(self) -> list[Endpoint]:
        return [_endpoint(p) for p in self.primaries]

    def notify_endpoints(self) -> list[Endpoint]:
        return [_endpoint(p) for p in self.notify]

    def validate(self) -> None:
        """Fail early with a clear message rather than let a server reject its config."""
        if self.type not in ("primary", "secondary"):
            raise ValueError(f"zone {self.name}: type must be primary or secondary, not {self.type!r}")
        if self.type == "primary" and self.data is None:
            raise ValueError(f"zone {self.name}: a primary zone needs data (zone text or a Path)")
        if self.type == "secondary" and not self.primaries:
            raise ValueError(f"zone {self.name}: a secondary zone needs primaries")


def soa_zone_text(origin: str, serial: int = 1, *, records: str = "", ttl: int = 300) -> str:
    """A small valid zone: SOA, two in-zone NS with glue, one A at ``www``.

    Every peer needs a zone that passes its semantic checks (Knot and NSD insist on apex NS and
    glue), and reload tests only need to change ``serial``.
    """
    o = origin.rstrip(".") + "."
    body = f"""\
        $ORIGIN {o}
        $TTL {ttl}
        @       IN SOA ns1.{o} hostmaster.{o} {serial} 3600 600 86400 300
        @       IN NS  ns1.{o}
        @       IN NS  ns2.{o}
        ns1     IN A   192.0.2.1
        ns2     IN A   192.0.2.2
        www     IN A   192.0.2.80
        """
    return textwrap.dedent(body) + textwrap.dedent(records)


# --------------------------------------------------------------------------------------------------
# client helpers


def query(
    server_port: int,
    qname: str,
    qtype: str | dns.rdatatype.RdataType = "SOA",
    *,
    tcp: bool = False,
    edns: int = 0,
    do: bool = False,
    payload: int = 1232,
    timeout: float = 2.0,
    host: str = LOOPBACK,
    key: TsigKey | None = None,
    rd: bool = False,
) -> dns.message.Message:
    """Send one query and return the parsed reply (raises dns.exception.Timeout on no answer).

    ``edns=-1`` sends no OPT record; ``rd`` defaults off because we talk to authoritatives.
    """
    msg = dns.message.make_query(qname, qtype, use_edns=edns, want_dnssec=do, payload=payload)
    if not rd:
        msg.flags &= ~dns.flags.RD
    if key is not None:
        msg.use_tsig(key.keyring(), keyname=key.name, algorithm=key.algorithm)
    if tcp:
        return dns.query.tcp(msg, host, timeout=timeout, port=server_port)
    return dns.query.udp(msg, host, timeout=timeout, port=server_port)


def soa_serial(server_port: int, zone: str, *, tcp: bool = False, timeout: float = 2.0) -> int | None:
    """Serial of the SOA a server answers for ``zone``, or None if it answers without one."""
    reply = query(server_port, zone, "SOA", tcp=tcp, timeout=timeout)
    for rrset in reply.answer:
        if rrset.rdtype == dns.rdatatype.SOA:
            return int(rrset[0].serial)
    return None


def transfer(
    server_port: int,
    zone: str,
    *,
    rdtype: str = "AXFR",
    serial: int = 0,
    key: TsigKey | None = None,
    timeout: float = 10.0,
    host: str = LOOPBACK,
) -> list[dns.message.Message]:
    """All messages of one AXFR/IXFR from a peer, TSIG-verified by dnspython when ``key`` is given."""
    kwargs: dict[str, Any] = {}
    if key is not None:
        kwargs = {"keyring": key.keyring(), "keyname": key.name, "keyalgorithm": key.algorithm}
    return list(
        dns.query.xfr(
            host,
            zone,
            rdtype=rdtype,
            serial=serial,
            port=server_port,
            timeout=timeout,
            lifetime=timeout,
            **kwargs,
        )
    )


@dataclass(frozen=True)
class DigResult:
    """What dig said: the header status, the answer-section lines, and the full text."""

    status: str
    answer: list[str]
    text: str


_DIG_STATUS = re.compile(r"->>HEADER<<- opcode: \w+, status: (\w+)")


def dig(server_port: int, qname: str, qtype: str = "SOA", *args: str, timeout: int = 2) -> DigResult:
    """Run dig against a peer: an independent client, so we never test dnspython against itself.

    ``args`` are extra dig options such as ``+tcp`` or ``+dnssec``.
    """
    exe = _binary("dig")
    cmd = [
        exe,
        f"@{LOOPBACK}",
        "-p",
        str(server_port),
        "+norec",
        f"+time={timeout}",
        "+tries=1",
        *args,
        qname,
        qtype,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout * 3 + 5, check=False)
    match = _DIG_STATUS.search(out.stdout)
    status = match.group(1) if match else f"NO-REPLY(rc={out.returncode})"
    answer: list[str] = []
    in_answer = False
    for line in out.stdout.splitlines():
        if line.startswith(";; ANSWER SECTION:"):
            in_answer = True
        elif in_answer and (not line.strip() or line.startswith(";;")):
            in_answer = False
        elif in_answer:
            answer.append(line)
    return DigResult(status, answer, out.stdout + out.stderr)


# --------------------------------------------------------------------------------------------------
# the process wrapper shared by every peer

_RUNNING: weakref.WeakSet[Peer] = weakref.WeakSet()


@atexit.register
def _stop_leftovers() -> None:
    """Stop peers a crashed test or an interrupted benchmark left running, by their own PID."""
    for peer in list(_RUNNING):
        with contextlib.suppress(Exception):
            peer.stop()


def _short_dir(workdir: Path, name: str) -> Path:
    """A directory for a unix socket: ``workdir`` if the path fits in sun_path, else a short tmp dir."""
    if len(str(workdir / name)) <= _MAX_UNIX_PATH:
        return workdir
    return Path(tempfile.mkdtemp(prefix="peer-"))


class Peer:
    """Common life cycle: write config, start, wait for answers, stop by PID, show the log.

    Subclasses provide ``_write_config`` and ``_command`` and say which zones must answer an SOA
    before the server counts as up.
    """

    binary = ""
    log_name = "server.log"

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        cpus: str | None = None,
        startup_timeout: float = _START_TIMEOUT,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port if port is not None else free_port()
        self.cpus = cpus
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.workdir / self.log_name
        self.started_at = 0.0
        self.ready_seconds = 0.0

    # -- hooks
    def _write_config(self) -> None:
        raise NotImplementedError

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _ready_zones(self) -> list[str]:
        """Zones that must answer SOA (NOERROR, with an SOA) before start() returns."""
        return []

    def _env(self) -> dict[str, str] | None:
        return None

    def _cwd(self) -> Path:
        return self.workdir

    # -- life cycle
    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> Self:
        """Start the process and return once it answers; raise PeerError with the log otherwise."""
        if self.running():
            return self
        self._write_config()
        cmd = self._command()
        if self.cpus is not None:
            # taskset execs the server, so the PID we hold is still the server's own.
            cmd = [_binary("taskset"), "-c", self.cpus, *cmd]
        with self.log_path.open("ab") as log:
            log.write(f"\n=== start {time.strftime('%H:%M:%S')}: {' '.join(cmd)}\n".encode())
            log.flush()
            self.started_at = time.monotonic()
            self.proc = subprocess.Popen(
                cmd,
                cwd=self._cwd(),
                env=self._env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the terminal must not reach it half-way
            )
        _RUNNING.add(self)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        self.ready_seconds = time.monotonic() - self.started_at
        return self

    def _answers(self) -> bool:
        """True when every ready zone answers with its SOA; True at any UDP reply if none are listed."""
        zones = self._ready_zones()
        try:
            if not zones:
                query(self.port, ".", "SOA", timeout=0.3)
                return True
            for zone in zones:
                reply = query(self.port, zone, "SOA", timeout=0.3)
                if reply.rcode() != dns.rcode.NOERROR:
                    return False
                if not any(r.rdtype == dns.rdatatype.SOA for r in reply.answer):
                    return False
        except (dns.exception.DNSException, OSError):
            return False
        return True

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise PeerError(
                    f"{self.binary} exited with {self.proc.returncode} before answering\n{self.log_tail()}"
                )
            if self._answers():
                return
            time.sleep(0.05)
        raise PeerError(
            f"{self.binary} on port {self.port} did not answer SOA for {self._ready_zones() or 'anything'}"
            f" within {self.startup_timeout:.0f}s\n{self.log_tail()}"
        )

    def stop(self, timeout: float = _STOP_TIMEOUT) -> int | None:
        """SIGTERM by PID, SIGKILL if it has not exited after ``timeout``; return the exit status."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(timeout=timeout)
        _RUNNING.discard(self)
        return proc.returncode

    def kill9(self) -> None:
        """SIGKILL without warning: crash-consistency tests need the server to get no chance to tidy up."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=_STOP_TIMEOUT)
        _RUNNING.discard(self)

    def restart(self) -> Self:
        """Stop and start again on the same port with the same config and on-disk state."""
        self.stop()
        return self.start()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        tail = self.log_text().splitlines()[-lines:]
        return f"--- last {len(tail)} lines of {self.log_path} ---\n" + "\n".join(tail)

    def rss_kib(self) -> int | None:
        """Resident set size from /proc (Linux), for the benchmark's memory column."""
        if self.pid is None:
            return None
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return None
        match = re.search(r"^VmRSS:\s+(\d+)\s+kB", status, re.MULTILINE)
        return int(match.group(1)) if match else None

    def wait_serial(self, zone: str, serial: int, timeout: float = 10.0) -> None:
        """Wait (bounded) until ``zone`` answers with ``serial``: reloads and transfers are async."""
        deadline = time.monotonic() + timeout
        seen: int | None = None
        while time.monotonic() < deadline:
            with contextlib.suppress(dns.exception.DNSException, OSError):
                seen = soa_serial(self.port, zone, timeout=0.5)
                if seen == serial:
                    return
            time.sleep(0.05)
        raise PeerError(f"{zone} still at serial {seen}, not {serial}, after {timeout}s\n{self.log_tail()}")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} port={self.port} pid={self.pid} dir={self.workdir}>"


class _ZonePeer(Peer):
    """A peer configured from ZoneSpecs and TSIG keys (BIND, Knot, NSD)."""

    def __init__(
        self,
        workdir: Path,
        zones: Sequence[ZoneSpec | Sequence[Any]],
        *,
        keys: Sequence[TsigKey] = (),
        port: int | None = None,
        cpus: str | None = None,
        startup_timeout: float = _START_TIMEOUT,
    ) -> None:
        super().__init__(workdir, port=port, cpus=cpus, startup_timeout=startup_timeout)
        self.zones = [ZoneSpec.coerce(z) for z in zones]
        self.keys = list(keys)
        known = {k.name for k in self.keys}
        for zone in self.zones:
            zone.validate()
            if zone.key is not None and zone.key not in known:
                raise ValueError(f"zone {zone.name}: key {zone.key!r} is not among keys={sorted(known)}")
        self.zone_dir = self.workdir / "zones"
        self.zone_dir.mkdir(exist_ok=True)
        for zone in self.zones:
            if zone.type == "primary":
                self._install_zone(zone)

    def _install_zone(self, zone: ZoneSpec) -> None:
        dest = self.zone_path(zone.name)
        if isinstance(zone.data, Path):
            shutil.copyfile(zone.data, dest)
        elif zone.data is not None:
            dest.write_text(zone.data)

    def zone_spec(self, name: str) -> ZoneSpec:
        want = name.rstrip(".").lower()
        for zone in self.zones:
            if zone.name.rstrip(".").lower() == want:
                return zone
        raise KeyError(name)

    def zone_path(self, name: str) -> Path:
        """The zone file this peer loads (primary) or writes after a transfer (secondary)."""
        return self.zone_dir / self.zone_spec(name).filename

    def write_zone(self, name: str, text: str) -> None:
        """Replace a primary zone's file; call ``reload(name)`` afterwards to serve it."""
        self.zone_path(name).write_text(text)

    def _ready_zones(self) -> list[str]:
        return [z.origin for z in self.zones if z.type == "primary"]

    def key(self, name: str | None) -> TsigKey | None:
        if name is None:
            return None
        return next(k for k in self.keys if k.name == name)

    def reload(self, zone: str | None = None) -> None:
        raise NotImplementedError

    def _control(self, cmd: list[str], what: str, timeout: float = 15.0) -> str:
        """Run a control tool; failures raise with both outputs and the server's log tail."""
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise PeerError(f"{what} timed out after {timeout}s: {cmd}\n{self.log_tail()}") from exc
        if out.returncode != 0:
            raise PeerError(
                f"{what} failed ({out.returncode}): {' '.join(cmd)}\n"
                f"{out.stdout}{out.stderr}\n{self.log_tail()}"
            )
        return out.stdout


# --------------------------------------------------------------------------------------------------
# BIND 9


def _bind_addr_list(endpoints: Sequence[Endpoint], key: str | None, tls: str | None = None) -> str:
    suffix = (f' key "{key}"' if key else "") + (f' tls "{tls}"' if tls else "")
    return " ".join(f"{host} port {port}{suffix};" for host, port in endpoints)


class Bind(_ZonePeer):
    """BIND 9 ``named -g`` (foreground, logging to our log file) with its own rndc channel.

    ``notify`` is the global BIND setting: ``explicit`` (default) notifies only the zone's
    ``notify`` targets (as ``also-notify``), never the NS names in test zones, which point nowhere.
    ``options`` are extra raw lines for the ``options { }`` block, ``conf`` raw top-level
    statements (e.g. a ``tls`` block).
    """

    binary = "named"
    log_name = "named.log"

    def __init__(
        self,
        workdir: Path,
        zones: Sequence[ZoneSpec | Sequence[Any]],
        *,
        keys: Sequence[TsigKey] = (),
        notify: Literal["yes", "no", "explicit"] = "explicit",
        workers: int = 1,
        options: Sequence[str] = (),
        conf: Sequence[str] = (),
        port: int | None = None,
        cpus: str | None = None,
        startup_timeout: float = _START_TIMEOUT,
    ) -> None:
        super().__init__(workdir, zones, keys=keys, port=port, cpus=cpus, startup_timeout=startup_timeout)
        self.notify = notify
        self.workers = workers
        self.options = list(options)
        self.conf = list(conf)
        self.rndc_port = free_port()
        self.rndc_key = TsigKey.generate("rndc-key")
        self.conf_path = self.workdir / "named.conf"
        self.rndc_conf_path = self.workdir / "rndc.conf"

    def _key_clauses(self) -> str:
        return "".join(
            f'key "{k.name}" {{ algorithm {k.algorithm}; secret "{k.secret}"; }};\n'
            for k in [self.rndc_key, *self.keys]
        )

    def _zone_clause(self, zone: ZoneSpec) -> str:
        lines = [f"type {zone.type};", f'file "{self.zone_path(zone.name)}";']
        transfer_acl = f'key "{zone.key}";' if zone.key else "127.0.0.0/8; ::1;"
        lines.append(f"allow-transfer {{ {transfer_acl} }};")
        if zone.type == "secondary":
            lines.append(f"primaries {{ {_bind_addr_list(zone.primary_endpoints(), zone.key, zone.tls)} }};")
            lines.append(f"allow-notify {{ {transfer_acl} }};")
        if zone.notify:
            lines.append(f"also-notify {{ {_bind_addr_list(zone.notify_endpoints(), zone.key)} }};")
        lines.extend(zone.options)
        body = "\n    ".join(lines)
        return f'zone "{zone.origin}" {{\n    {body}\n}};\n'

    def _write_config(self) -> None:
        d = self.workdir
        extra = "\n    ".join(self.options)
        conf = f"""\
{self._key_clauses()}
{"".join(line + chr(10) for line in self.conf)}
controls {{
    inet {LOOPBACK} port {self.rndc_port} allow {{ {LOOPBACK}; }} keys {{ "{self.rndc_key.name}"; }};
}};
options {{
    directory "{d}";
    pid-file "{d}/named.pid";
    session-keyfile "{d}/session.key";
    managed-keys-directory "{d}";
    dump-file "{d}/cache_dump.db";
    statistics-file "{d}/named.stats";
    listen-on port {self.port} {{ {LOOPBACK}; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    notify {self.notify};
    // Positive answers carry no authority NS, as Knot sends them (and as secondns does), so
    // answers compare section for section; the additional section still gets NS/MX target
    // addresses.  NSD 4.6 does add the apex NS: compare with it accordingly.
    minimal-responses no-auth;
    // RFC 8482: answer ANY with one RRset instead of the whole node.
    minimal-any yes;
    {extra}
}};
{"".join(self._zone_clause(z) for z in self.zones)}"""
        self.conf_path.write_text(conf)
        self.rndc_conf_path.write_text(
            f'key "{self.rndc_key.name}" {{ algorithm {self.rndc_key.algorithm}; '
            f'secret "{self.rndc_key.secret}"; }};\n'
            f'options {{ default-key "{self.rndc_key.name}"; default-server {LOOPBACK}; '
            f"default-port {self.rndc_port}; }};\n"
        )

    def _command(self) -> list[str]:
        return [_binary("named"), "-g", "-4", "-c", str(self.conf_path), "-n", str(self.workers)]

    def rndc(self, *args: str, timeout: float = 15.0) -> str:
        """Run ``rndc`` against this instance only (its own key and port); return stdout."""
        cmd = [_binary("rndc"), "-c", str(self.rndc_conf_path), *args]
        return self._control(cmd, f"rndc {' '.join(args)}", timeout)

    def reload(self, zone: str | None = None) -> None:
        """Reload one zone (or all) from disk; the new serial is served asynchronously after this."""
        if zone is None:
            self.rndc("reload")
        else:
            self.rndc("reload", self.zone_spec(zone).origin)


# --------------------------------------------------------------------------------------------------
# Knot DNS


class _DaemonPeer(_ZonePeer):
    """Knot and NSD: configured from a file, controlled over a unix socket, ``workers`` threads."""

    conf_name = ""  # "knot" -> knot.conf and knot.sock in the work directory

    def __init__(
        self,
        workdir: Path,
        zones: Sequence[ZoneSpec | Sequence[Any]],
        *,
        keys: Sequence[TsigKey] = (),
        workers: int = 1,
        options: Sequence[str] = (),
        port: int | None = None,
        cpus: str | None = None,
        startup_timeout: float = _START_TIMEOUT,
    ) -> None:
        super().__init__(workdir, zones, keys=keys, port=port, cpus=cpus, startup_timeout=startup_timeout)
        self.workers = workers
        self.options = list(options)
        self.conf_path = self.workdir / f"{self.conf_name}.conf"
        self.socket_path = _short_dir(self.workdir, f"{self.conf_name}.sock") / f"{self.conf_name}.sock"


class Knot(_DaemonPeer):
    """Knot DNS ``knotd`` in the foreground, controlled through ``knotc`` on a unix socket.

    Zone ``options`` are raw YAML lines for the zone's entry (e.g. ``"zonefile-load: difference"``
    so a reload produces an IXFR-able change, as BIND's ``ixfr-from-differences``); ``options``
    are raw lines for the ``server:`` section.
    """

    binary = "knotd"
    log_name = "knotd.log"
    conf_name = "knot"


    def _write_config(self) -> None:
        d = self.workdir
        remotes: list[str] = []
        acls: list[str] = []
        zone_entries: list[str] = []
        for i, zone in enumerate(self.zones):
            key_line = f"\n      key: {zone.key}" if zone.key else ""
            addr_line = "" if zone.key else '\n      address: [127.0.0.0/8, "::1"]'
            actions = "[transfer, notify]" if zone.type == "secondary" else "transfer"
            acls.append(f"    - id: acl{i}{addr_line}{key_line}\n      action: {actions}")
            entry = [
                f"    - domain: {zone.origin}",
                f"      file: {self.zone_path(zone.name)}",
                f"      acl: acl{i}",
            ]
            if zone.type == "secondary":
                ids = []
                for j, (host, port) in enumerate(zone.primary_endpoints()):
                    ids.append(f"primary{i}_{j}")
                    remotes.append(f"    - id: primary{i}_{j}\n      address: {host}@{port}{key_line}")
                entry.append(f"      master: [{', '.join(ids)}]")
            if zone.notify:
                ids = []
                for j, (host, port) in enumerate(zone.notify_endpoints()):
                    ids.append(f"notify{i}_{j}")
                    remotes.append(f"    - id: notify{i}_{j}\n      address: {host}@{port}{key_line}")
                entry.append(f"      notify: [{', '.join(ids)}]")
            entry.extend(f"      {opt}" for opt in zone.options)
            zone_entries.append("\n".join(entry))
        keys = "".join(
            f"    - id: {k.name}\n      algorithm: {k.algorithm}\n      secret: {k.secret}\n"
            for k in self.keys
        )
        conf = f"""\
server:
    rundir: "{d}"
    pidfile: "{d}/knot.pid"
    listen: {LOOPBACK}@{self.port}
    udp-workers: {self.workers}
    tcp-workers: {self.workers}
    background-workers: 1
{"".join(f"    {opt}{chr(10)}" for opt in self.options)}
control:
    listen: "{self.socket_path}"

database:
    storage: "{d}"

log:
  - target: stderr
    any: info

{"key:" + chr(10) + keys if keys else ""}
{"remote:" + chr(10) + chr(10).join(remotes) if remotes else ""}

acl:
{chr(10).join(acls) if acls else "    []"}

template:
  - id: default
    storage: "{self.zone_dir}"
    # Secondaries: write the zone file right after each transfer, so tests can read it.
    zonefile-sync: 0

zone:
{chr(10).join(zone_entries)}
"""
        # Parse our own output once: a YAML slip otherwise shows up as an opaque knotd error.
        yaml.safe_load(conf)
        self.conf_path.write_text(conf)

    def _command(self) -> list[str]:
        return [_binary("knotd"), "-c", str(self.conf_path)]

    def knotc(self, *args: str, timeout: float = 15.0) -> str:
        """Run ``knotc`` against this instance's control socket; return stdout."""
        cmd = [
            _binary("knotc"),
            "-c",
            str(self.conf_path),
            "-s",
            str(self.socket_path),
            "-t",
            str(int(timeout)),
            *args,
        ]
        return self._control(cmd, f"knotc {' '.join(args)}", timeout + 5)

    def reload(self, zone: str | None = None) -> None:
        """Reload one zone from its file (or every zone and the config)."""
        if zone is None:
            self.knotc("reload")
        else:
            self.knotc("zone-reload", self.zone_spec(zone).origin)


# --------------------------------------------------------------------------------------------------
# NSD


class Nsd(_DaemonPeer):
    """NSD in the foreground (``-d``), no chroot, no privilege drop, control over a unix socket.

    Zone ``options`` are raw ``nsd.conf`` lines for the zone's clause; ``options`` are raw lines
    for ``server:``.  NSD (4.6 default ``minimal-responses: no``) puts the apex NS in the
    authority section of positive answers, unlike Knot and our BIND config.
    """

    binary = "nsd"
    log_name = "nsd.log"
    conf_name = "nsd"


    def _write_config(self) -> None:
        d = self.workdir
        keys = "".join(
            f'key:\n    name: "{k.name}"\n    algorithm: {k.algorithm}\n    secret: "{k.secret}"\n'
            for k in self.keys
        )
        zones = []
        for zone in self.zones:
            key = zone.key or "NOKEY"
            lines = [f'name: "{zone.origin}"', f'zonefile: "{self.zone_path(zone.name)}"']
            if zone.key:
                lines.append(f"provide-xfr: 127.0.0.0/8 {key}")
            else:
                lines += ["provide-xfr: 127.0.0.0/8 NOKEY", "provide-xfr: ::1 NOKEY"]
            for host, port in zone.primary_endpoints():
                lines.append(f"request-xfr: {host}@{port} {key}")
                lines.append(f"allow-notify: {host} {key}")
            for host, port in zone.notify_endpoints():
                lines.append(f"notify: {host}@{port} {key}")
            lines.extend(zone.options)
            zones.append("zone:\n    " + "\n    ".join(lines) + "\n")
        conf = f"""\
server:
    ip-address: {LOOPBACK}@{self.port}
    port: {self.port}
    do-ip6: no
    server-count: {self.workers}
    username: ""
    chroot: ""
    zonesdir: "{d}"
    database: ""
    zonelistfile: "{d}/zone.list"
    xfrdfile: "{d}/xfrd.state"
    xfrdir: "{d}"
    pidfile: "{d}/nsd.pid"
    verbosity: 1
    hide-version: no
    # Debian's NSD rate-limits every source to 200 qps by default; all our traffic comes from
    # 127.0.0.1, so RRL would drop or truncate test bursts and cripple the benchmark.
    rrl-ratelimit: 0
    rrl-whitelist-ratelimit: 0
{"".join(f"    {opt}{chr(10)}" for opt in self.options)}
remote-control:
    control-enable: yes
    control-interface: "{self.socket_path}"

{keys}
{"".join(zones)}"""
        self.conf_path.write_text(conf)

    def _command(self) -> list[str]:
        return [_binary("nsd"), "-d", "-c", str(self.conf_path)]

    def nsd_control(self, *args: str, timeout: float = 15.0) -> str:
        """Run ``nsd-control`` against this instance's control socket; return stdout."""
        cmd = [_binary("nsd-control"), "-c", str(self.conf_path), *args]
        return self._control(cmd, f"nsd-control {' '.join(args)}", timeout)

    def reload(self, zone: str | None = None) -> None:
        """Re-read one zone file (or all); NSD serves the new contents after its reload finishes."""
        if zone is None:
            self.nsd_control("reload")
        else:
            self.nsd_control("reload", self.zone_spec(zone).origin)


# --------------------------------------------------------------------------------------------------
# secondns itself


_INTERNAL_ERRORS_SAMPLE = re.compile(r'^secondns_internal_errors_total\{where="([^"]*)"\} (\S+)$',
                                     re.MULTILINE)
_INTERNAL_ERROR_LOG = "internal error answering a message"


class Secondns(Peer):
    """Our server as a user runs it: ``python -m secondns serve -c FILE`` in a subprocess.

    The YAML config is built from the arguments: one UDP/TCP listener and the HTTP endpoint on
    free loopback ports, storage in the work directory.  ``zone_files`` maps zone names to text
    written to ``<storage>/<name>.zone`` before start, which is how a zone without primaries is
    served.  Start-up waits for an SOA answer for ``ready_zones`` (default: the zones given file
    text), or for any UDP reply when there are none, since a zone still transferring may answer
    SERVFAIL.
    """

    binary = "secondns"
    log_name = "secondns.log"

    def __init__(
        self,
        workdir: Path,
        zones: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        zone_files: Mapping[str, str | Path] | None = None,
        defaults: Mapping[str, Any] | None = None,
        server: Mapping[str, Any] | None = None,
        http: bool = True,
        identity: str = "secondns-test",
        ready_zones: Sequence[str] | None = None,
        extra_args: Sequence[str] = (),
        port: int | None = None,
        http_port: int | None = None,
        cpus: str | None = None,
        startup_timeout: float = _START_TIMEOUT,
        internal_errors_expected: bool = False,
    ) -> None:
        super().__init__(workdir, port=port, cpus=cpus, startup_timeout=startup_timeout)
        # Only a test that provokes internal errors on purpose may set this (see stop()).
        self.internal_errors_expected = internal_errors_expected
        self.http_port: int | None = (http_port or free_port()) if http else None
        self.storage = self.workdir / "storage"
        self.storage.mkdir(exist_ok=True)
        self.conf_path = self.workdir / "secondns.yaml"
        self.extra_args = list(extra_args)
        zone_files = dict(zone_files or {})
        self.zones: dict[str, dict[str, Any]] = {name: dict(opts) for name, opts in (zones or {}).items()}
        for name in zone_files:
            self.zones.setdefault(name, {})
        self.config: dict[str, Any] = {
            "server": {
                "listen": [f"{LOOPBACK}:{self.port}"],
                "http": f"{LOOPBACK}:{self.http_port}" if self.http_port else None,
                "storage": str(self.storage),
                "identity": identity,
                "workers": 1,  # the single-process mode, unless a test asks for workers
                **dict(server or {}),
            },
            "zones": self.zones,
            "defaults": dict(defaults or {}),
        }
        for name, data in zone_files.items():
            self.write_zone(name, data)
        self.ready = list(ready_zones) if ready_zones is not None else list(zone_files)

    def zone_path(self, name: str) -> Path:
        """Where secondns reads (and after a transfer, stores) the zone ``name``."""
        return self.storage / f"{name.rstrip('.')}.zone"

    def write_zone(self, name: str, data: str | Path) -> None:
        if isinstance(data, Path):
            shutil.copyfile(data, self.zone_path(name))
        else:
            self.zone_path(name).write_text(data)

    def _ready_zones(self) -> list[str]:
        return [z.rstrip(".") + "." for z in self.ready]

    def _write_config(self) -> None:
        self.conf_path.write_text(yaml.safe_dump(self.config, sort_keys=False))

    def _command(self) -> list[str]:
        return [sys.executable, "-m", "secondns", "serve", "-c", str(self.conf_path), *self.extra_args]

    def _cwd(self) -> Path:
        return REPO_ROOT

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def http_url(self, path: str = "/metrics") -> str:
        if self.http_port is None:
            raise PeerError("this Secondns was started with http=False")
        configured = self.config["server"].get("http")  # a test may move it off 127.0.0.1
        address = configured if isinstance(configured, str) else f"{LOOPBACK}:{self.http_port}"
        return f"http://{address}{path}"

    def internal_errors(self) -> dict[str, int]:
        """``secondns_internal_errors_total`` by ``where``, scraped from /metrics (needs http)."""
        import urllib.request

        with urllib.request.urlopen(self.http_url("/metrics"), timeout=5) as resp:
            text = resp.read().decode()
        found = {m.group(1): int(float(m.group(2))) for m in _INTERNAL_ERRORS_SAMPLE.finditer(text)}
        if not found:
            raise AssertionError(f"/metrics has no secondns_internal_errors_total samples:\n{text[:3000]}")
        return found

    def stop(self, timeout: float = _STOP_TIMEOUT) -> int | None:
        """Stop, then fail if the server met an internal error (an exception while answering).

        Every live test thereby also checks that nothing it sent made the query path raise,
        which the client alone cannot see (the server answers SERVFAIL).  The counter is read
        from /metrics while the server still runs; with http off, or if it already exited, the
        server's log is the witness (the first error of every second is logged).
        """
        counts: dict[str, int] = {}
        missing: AssertionError | None = None
        if not self.internal_errors_expected and self.running() and self.http_port is not None:
            try:
                counts = {k: v for k, v in self.internal_errors().items() if v}
            except OSError:
                pass  # HTTP unreachable (a test may have broken it on purpose): the log still tells
            except AssertionError as exc:
                missing = exc  # raised once the process is stopped
        status = super().stop(timeout)
        if not self.internal_errors_expected:
            logged = self.log_text().count(_INTERNAL_ERROR_LOG)
            if counts or logged:
                raise AssertionError(
                    f"secondns on port {self.port} met internal errors: "
                    f"secondns_internal_errors_total {counts or '(not scraped)'}, "
                    f"{logged} logged \"{_INTERNAL_ERROR_LOG}\" lines\n{self.log_tail(60)}")
            if missing is not None:
                raise missing
        return status

    def reload(self) -> None:
        """Rewrite the config from ``self.config`` and send SIGHUP, the conventional reload signal."""
        if self.proc is None or self.proc.poll() is not None:
            raise PeerError("secondns is not running")
        self._write_config()
        self.proc.send_signal(signal.SIGHUP)


def iter_peer_classes() -> Iterator[tuple[str, type[_ZonePeer]]]:
    """The third-party peers, by binary name, for tests parametrized over all of them."""
    yield "named", Bind
    yield "knotd", Knot
    yield "nsd", Nsd


__all__ = [
    "LOOPBACK",
    "REPO_ROOT",
    "Bind",
    "DigResult",
    "Endpoint",
    "Knot",
    "Nsd",
    "Peer",
    "PeerError",
    "Secondns",
    "TsigKey",
    "ZoneSpec",
    "dig",
    "find_binary",
    "free_port",
    "iter_peer_classes",
    "query",
    "require_binary",
    "soa_serial",
    "soa_zone_text",
    "transfer",
]


def zone_status(sec: Secondns, zone: str) -> dict[str, Any]:
    """One zone's entry in secondns's GET /status."""
    import json
    import urllib.request

    with urllib.request.urlopen(sec.http_url("/status"), timeout=5) as resp:
        body = json.load(resp)
    want = zone.rstrip(".") + "."
    return next(z for z in body["zones"] if z["zone"] == want)


def wait_for(what: str, check: Callable[[], Any], timeout: float, interval: float = 0.05) -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)
