"""The ``secondns`` command as an operator types it: every verb, run as a subprocess.

``check-config`` and ``--help`` work on files alone.  ``status``, ``refresh``, ``retransfer`` and
the failures of the control channel talk to a real secondns (and, where a transfer is involved, a
real BIND primary) on loopback; what a verb did is read back from the server's metrics, never from
the verb's own output alone.  ``dump`` is checked by BIND's ``named-checkzone``.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import peers
import pytest
from peers import REPO_ROOT, Bind, Secondns, free_port, require_binary, soa_zone_text
from prometheus_client.parser import text_string_to_metric_families

ZONE = "example.com"
VERBS = ("serve", "check-config", "status", "refresh", "retransfer", "reload", "dump")
WAIT = 15.0  # bound on every poll for an effect of a verb


def secondns_cli(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run ``python -m secondns ARGS`` from the source tree; bounded by ``timeout``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, "-m", "secondns", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=REPO_ROOT, check=False)


def metric(sec: Secondns, sample: str, **labels: str) -> float:
    """Sum of the samples called ``sample`` whose labels include ``labels``."""
    with urllib.request.urlopen(sec.http_url("/metrics"), timeout=5) as resp:
        text = resp.read().decode()
    return sum(s.value for fam in text_string_to_metric_families(text) for s in fam.samples
               if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()))


def wait_for(what: str, check: Callable[[], Any], timeout: float = WAIT) -> Any:
    return peers.wait_for(what, check, timeout)


def status_rows(stdout: str) -> list[dict[str, str]]:
    """The table of ``secondns status``: columns are separated by two or more spaces."""
    lines = stdout.splitlines()
    header = re.split(r"\s{2,}", lines[0].strip())
    return [dict(zip(header, re.split(r"\s{2,}", line.strip()), strict=True)) for line in lines[1:]]


@pytest.fixture
def primary_and_secondary(bind_factory: Callable[..., Bind],
                          secondns_factory: Callable[..., Secondns]) -> tuple[Bind, Secondns]:
    """BIND serving ZONE at serial 3 and a secondns that has transferred it."""
    extra = """\
        @       IN MX  10 mail
        mail    IN A   192.0.2.25
        mail    IN AAAA 2001:db8::25
        txt     IN TXT "v=spf1 -all" "second string"
        alias   IN CNAME www
        """
    bind = bind_factory([(ZONE, soa_zone_text(ZONE, 3, records=extra))])
    sec = secondns_factory({ZONE: {"primaries": [f"127.0.0.1:{bind.port}"]}}, ready_zones=[ZONE])
    return bind, sec


# --------------------------------------------------------------------------------------------------
# files only


def test_help_lists_every_verb() -> None:
    out = secondns_cli("--help")
    assert out.returncode == 0, out.stderr
    for verb in VERBS:
        assert re.search(rf"^\s+{verb}\s", out.stdout, re.MULTILINE), f"{verb} missing:\n{out.stdout}"


def test_check_config_accepts_a_valid_file(tmp_path: Path) -> None:
    conf = tmp_path / "secondns.yaml"
    conf.write_text(f'server:\n  listen: ["127.0.0.1:5353"]\nzones:\n  {ZONE}: {{}}\n')
    out = secondns_cli("check-config", "-c", str(conf))
    assert (out.returncode, out.stdout.strip()) == (0, f"{conf}: OK (1 zones)"), out.stderr


def test_check_config_rejects_a_bad_file_with_exit_2_and_file_line(tmp_path: Path) -> None:
    conf = tmp_path / "secondns.yaml"
    conf.write_text(textwrap.dedent(f"""\
        server:
          listen: ["127.0.0.1:5353"]
        zones:
          {ZONE}:
            primaries: ["ns1.example.net"]
        """))
    out = secondns_cli("check-config", "-c", str(conf))
    assert out.returncode == 2
    assert f"{conf}:5: zones.{ZONE}.primaries[0]: 'ns1.example.net' is not an IP address" in out.stderr


def test_a_verb_without_a_running_server_fails_in_one_line(tmp_path: Path) -> None:
    conf = tmp_path / "secondns.yaml"
    conf.write_text(f'server:\n  http: "127.0.0.1:{free_port()}"\nzones:\n  {ZONE}: {{}}\n')
    out = secondns_cli("status", "-c", str(conf))
    assert out.returncode != 0
    assert out.stdout == ""
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("secondns: cannot reach secondns at http://127.0.0.1:")


def test_serve_on_a_port_in_use_fails_in_one_line(tmp_path: Path) -> None:
    conf = tmp_path / "secondns.yaml"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        conf.write_text(f'server:\n  listen: ["127.0.0.1:{port}"]\n  http: null\nzones: {{}}\n')
        out = secondns_cli("serve", "-c", str(conf))
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("secondns:")]
    assert errors == [f"secondns: cannot listen on 127.0.0.1 port {port}: [Errno 98] Address already in use"]


# --------------------------------------------------------------------------------------------------
# against a running server


@pytest.mark.integration
def test_status_shows_the_zone_serial_and_state(secondns_factory: Callable[..., Secondns]) -> None:
    sec = secondns_factory(zone_files={ZONE: soa_zone_text(ZONE, 5)})
    out = secondns_cli("status", "-c", str(sec.conf_path))
    assert out.returncode == 0, out.stderr
    rows = status_rows(out.stdout)
    assert [(r["ZONE"], r["STATE"], r["SERIAL"], r["PRIMARY SERIAL"]) for r in rows] == [
        (f"{ZONE}.", "fresh", "5", "static")]


@pytest.mark.integration
def test_status_shows_the_primary_serial_of_a_transferred_zone(
        primary_and_secondary: tuple[Bind, Secondns]) -> None:
    _, sec = primary_and_secondary
    out = secondns_cli("status", "-c", str(sec.conf_path))
    assert out.returncode == 0, out.stderr
    row = status_rows(out.stdout)[0]
    cells = (row["ZONE"], row["STATE"], row["SERIAL"], row["PRIMARY SERIAL"])
    assert cells == (f"{ZONE}.", "fresh", "3", "3")


@pytest.mark.integration
def test_refresh_runs_one_soa_check(primary_and_secondary: tuple[Bind, Secondns]) -> None:
    _, sec = primary_and_secondary
    checks = "secondns_soa_checks_total"
    before = wait_for("the first SOA check", lambda: metric(sec, checks, zone=f"{ZONE}.", result="success"))
    out = secondns_cli("refresh", ZONE, "-c", str(sec.conf_path))
    assert (out.returncode, out.stdout.strip()) == (0, f"zone {ZONE}.: SOA check started"), out.stderr
    wait_for("secondns_soa_checks_total to go up by one",
             lambda: metric(sec, checks, zone=f"{ZONE}.", result="success") == before + 1)


@pytest.mark.integration
def test_retransfer_runs_one_axfr(primary_and_secondary: tuple[Bind, Secondns]) -> None:
    _, sec = primary_and_secondary
    axfrs = "secondns_transfers_total"
    assert metric(sec, axfrs, zone=f"{ZONE}.", type="axfr", result="success") == 1
    out = secondns_cli("retransfer", ZONE, "-c", str(sec.conf_path))
    assert out.returncode == 0, out.stderr
    wait_for("a second successful AXFR",
             lambda: metric(sec, axfrs, zone=f"{ZONE}.", type="axfr", result="success") == 2)


@pytest.mark.integration
@pytest.mark.parametrize("verb", ["refresh", "retransfer"])
def test_an_unknown_zone_fails_in_one_line(secondns_factory: Callable[..., Secondns], verb: str) -> None:
    sec = secondns_factory(zone_files={ZONE: soa_zone_text(ZONE, 5)})
    out = secondns_cli(verb, "nosuch.example", "-c", str(sec.conf_path))
    assert out.returncode != 0
    assert out.stderr.splitlines() == ["secondns: zone nosuch.example. is not configured (HTTP 404)"]


@pytest.mark.integration
def test_dump_prints_a_zone_file_named_checkzone_accepts(
        primary_and_secondary: tuple[Bind, Secondns], tmp_path: Path) -> None:
    checkzone = require_binary("named-checkzone")
    _, sec = primary_and_secondary
    wait_for("the copy on disk", sec.zone_path(ZONE).exists)
    out = secondns_cli("dump", ZONE, "-c", str(sec.conf_path))
    assert out.returncode == 0, out.stderr
    dumped = tmp_path / "dumped.zone"
    dumped.write_text(out.stdout)
    check = subprocess.run([checkzone, f"{ZONE}.", str(dumped)], capture_output=True, text=True,
                           timeout=30, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "loaded serial 3" in check.stdout
