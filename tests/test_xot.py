"""Zone transfer over TLS (XoT, RFC 9103) with real peers on loopback.

A CA and server certificates are made for each test (cryptography).  BIND 9.18 is the XoT
primary of secondns (strict verification, then an IXFR; opportunistic), a wrong CA or name
fails the check (counted, in /status, the old zone still served), BIND is the secondary of
secondns over TLS, and kdig and dnspython query our TLS listener (ALPN "dot", TLS 1.3).
The primaries are given only by their TLS port, where nothing answers plain DNS, so every
serial secondns serves proves that its SOA checks and transfers went over TLS.
"""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import re
import socket
import ssl
import subprocess
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from peers import (
    LOOPBACK,
    Bind,
    Secondns,
    ZoneSpec,
    free_port,
    require_binary,
    soa_serial,
    soa_zone_text,
    wait_for,
    zone_status,
)

from secondns.config import TlsPrimary, parse_config
from secondns.errors import ConfigError

pytestmark = pytest.mark.integration

ZONE = "xot.test."
NAME = "primary.xot.test"  # the name in the server certificates
WAIT = 20.0


# --------------------------------------------------------------------------------------------------
# a small PKI


@dataclass
class Pki:
    ca: Path
    cert: Path
    key: Path


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def make_pki(directory: Path, label: str = "ca", names: tuple[str, ...] = (NAME,)) -> Pki:
    """A CA and a server certificate it signs for *names* and 127.0.0.1 (EC P-256)."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(f"test {label}")
    ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(hours=1))
               .not_valid_after(now + datetime.timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                              critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
               .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    sans.append(x509.IPAddress(ipaddress.ip_address(LOOPBACK)))
    cert = (x509.CertificateBuilder().subject_name(_name(names[0])).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    pki = Pki(directory / f"{label}.pem", directory / f"{label}-server.pem",
              directory / f"{label}-server.key")
    pki.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    pki.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pki.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return pki


# --------------------------------------------------------------------------------------------------
# helpers


def _zone(serial: int, hosts: int = 3) -> str:
    records = "".join(f"h{i} IN A 10.0.0.{i}\n" for i in range(hosts))
    return soa_zone_text(ZONE, serial, records=records)


def _bind_xot_primary(bind_factory: Callable[..., Bind], pki: Pki, serial: int = 1) -> tuple[Bind, int]:
    """BIND 9.18 serving ZONE on plain DNS and on a TLS listener (XoT), ixfr-from-differences."""
    tls_port = free_port()
    bind = bind_factory(
        [ZoneSpec(ZONE, _zone(serial), options=["ixfr-from-differences yes;"])],
        conf=[f'tls xot {{ cert-file "{pki.cert}"; key-file "{pki.key}"; }};'],
        options=[f"listen-on port {tls_port} tls xot {{ {LOOPBACK}; }};"])
    return bind, tls_port


def _metrics(sec: Secondns) -> str:
    with urllib.request.urlopen(sec.http_url("/metrics"), timeout=5) as resp:
        return str(resp.read().decode())


def _xot_failures(sec: Secondns, reason: str) -> int:
    total = 0
    for m in re.finditer(r'^secondns_xot_failures_total\{([^}]*)\} (\S+)$', _metrics(sec), re.MULTILINE):
        if f'reason="{reason}"' in m.group(1):
            total += int(float(m.group(2)))
    return total


def _refresh(sec: Secondns) -> None:
    assert sec.http_port is not None
    conn = http.client.HTTPConnection(LOOPBACK, sec.http_port, timeout=5)
    try:
        conn.request("POST", f"/control/refresh/{ZONE}", body=b"")
        status = conn.getresponse().status
    finally:
        conn.close()
    assert status == 202, status


def _served(sec: Secondns) -> int | None:
    try:
        return soa_serial(sec.port, ZONE, timeout=1.0)
    except Exception:
        return None


def _strict(pki: Pki, port: int, name: str = NAME) -> dict[str, Any]:
    return {"address": f"{LOOPBACK}:{port}", "tls": {"ca": str(pki.ca), "name": name}}


def _client_context(pki: Pki, alpn: list[str] | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    if alpn is not None:
        ctx.set_alpn_protocols(alpn)
    return ctx


@pytest.fixture(scope="module", autouse=True)
def _peers_installed() -> None:
    require_binary("named")


# --------------------------------------------------------------------------------------------------
# 1, 2: BIND 9.18 as XoT primary


def test_strict_xot_from_bind_then_ixfr(tmp_path: Path, bind_factory: Callable[..., Bind],
                                        secondns_factory: Callable[..., Secondns]) -> None:
    pki = make_pki(tmp_path / "pki")
    bind, tls_port = _bind_xot_primary(bind_factory, pki)
    sec = secondns_factory({ZONE: {"primaries": [_strict(pki, tls_port)], "transfer": "ixfr"}},
                           ready_zones=[ZONE])
    assert sec.wait_serial(ZONE, 1, timeout=WAIT) is None
    status = zone_status(sec, ZONE)
    primary = status["primaries"][f"{LOOPBACK}:{tls_port}"]
    assert primary["serial"] == 1 and primary["reachable"] is True, status
    assert (status["last_transfer"]["type"], status["last_transfer"]["result"]) == ("axfr", "success"), status
    # A change at the primary arrives as an IXFR, still over TLS.
    bind.write_zone(ZONE, _zone(2, hosts=4))
    bind.reload(ZONE)
    bind.wait_serial(ZONE, 2)
    _refresh(sec)
    sec.wait_serial(ZONE, 2, timeout=WAIT)
    status = zone_status(sec, ZONE)
    assert (status["last_transfer"]["type"], status["last_transfer"]["result"]) == ("ixfr", "success"), status
    reply = dns.query.udp(dns.message.make_query(f"h3.{ZONE}", "A"), LOOPBACK, port=sec.port, timeout=2)
    assert [rd.to_text() for rrset in reply.answer for rd in rrset] == ["10.0.0.3"]
    assert _xot_failures(sec, "certificate") == 0 and _xot_failures(sec, "name") == 0


def test_opportunistic_xot_from_bind(tmp_path: Path, bind_factory: Callable[..., Bind],
                                     secondns_factory: Callable[..., Secondns]) -> None:
    pki = make_pki(tmp_path / "pki", names=("somewhere.else.test",))  # nothing is verified
    _bind, tls_port = _bind_xot_primary(bind_factory, pki, serial=5)
    sec = secondns_factory({ZONE: {"primaries": [{"address": f"{LOOPBACK}:{tls_port}",
                                                  "tls": "opportunistic"}]}}, ready_zones=[])
    sec.wait_serial(ZONE, 5, timeout=WAIT)
    assert zone_status(sec, ZONE)["primaries"][f"{LOOPBACK}:{tls_port}"]["reachable"] is True


# --------------------------------------------------------------------------------------------------
# 3: a wrong CA or a wrong name fails, counted and shown, while the last good zone is served


def test_wrong_ca_and_wrong_name_fail_counted_and_old_zone_served(
        tmp_path: Path, bind_factory: Callable[..., Bind], secondns_factory: Callable[..., Secondns]) -> None:
    pki = make_pki(tmp_path / "pki")
    other = make_pki(tmp_path / "other", label="other")
    bind, tls_port = _bind_xot_primary(bind_factory, pki)
    sec = secondns_factory({ZONE: {"primaries": [_strict(pki, tls_port)]}}, ready_zones=[])
    sec.wait_serial(ZONE, 1, timeout=WAIT)
    bind.write_zone(ZONE, _zone(2))
    bind.reload(ZONE)
    bind.wait_serial(ZONE, 2)
    key = f"{LOOPBACK}:{tls_port}"

    for primary, reason, words in ((_strict(other, tls_port), "certificate", "does not verify"),
                                   (_strict(pki, tls_port, "wrong.xot.test"), "name", "not valid for")):
        sec.zones[ZONE]["primaries"] = [primary]
        sec.reload()
        wait_for("the reload", lambda: "reconfigured" in sec.log_text().split("reload:")[-1], WAIT)
        before = _xot_failures(sec, reason)
        _refresh(sec)

        def failed(reason: str = reason, before: int = before) -> bool:
            return _xot_failures(sec, reason) > before
        wait_for(f"a counted {reason} failure", failed, WAIT)
        status = zone_status(sec, ZONE)
        error = status["primaries"][key]["error"] or ""
        assert words in error and "TLS" in error, status
        assert words in (status["last_error"] or ""), status
        assert status["state"] == "stale", status
        assert _served(sec) == 1  # the last good copy, not the primary's serial 2

    # Back to the right CA and name: the same primary transfers again.
    sec.zones[ZONE]["primaries"] = [_strict(pki, tls_port)]
    sec.reload()
    wait_for("the reload", lambda: sec.log_text().count("reconfigured") >= 3, WAIT)
    _refresh(sec)
    sec.wait_serial(ZONE, 2, timeout=WAIT)


def test_tls_to_a_plain_dns_port_fails_as_handshake(bind_factory: Callable[..., Bind],
                                                    secondns_factory: Callable[..., Secondns]) -> None:
    """A primary that does not speak TLS on that port: counted as a handshake failure."""
    bind = bind_factory([ZoneSpec(ZONE, _zone(1))])
    sec = secondns_factory({ZONE: {"primaries": [{"address": f"{LOOPBACK}:{bind.port}",
                                                  "tls": "opportunistic"}]}}, ready_zones=[])
    wait_for("a counted handshake failure", lambda: _xot_failures(sec, "handshake") >= 1, WAIT)
    status = zone_status(sec, ZONE)
    assert "TLS handshake" in (status["primaries"][f"{LOOPBACK}:{bind.port}"]["error"] or ""), status
    assert _served(sec) is None  # nothing was transferred in clear


# --------------------------------------------------------------------------------------------------
# 4: BIND 9.18 as the secondary of secondns over TLS


def test_bind_transfers_from_secondns_over_tls(tmp_path: Path, bind_factory: Callable[..., Bind],
                                               secondns_factory: Callable[..., Secondns]) -> None:
    pki = make_pki(tmp_path / "pki")
    tls_port = free_port()
    sec = secondns_factory({ZONE: {"allow-transfer": ["127.0.0.1/32"]}}, zone_files={ZONE: _zone(9, 50)},
                           server={"tls": {"listen": [f"{LOOPBACK}:{tls_port}"], "certificate": str(pki.cert),
                                           "key": str(pki.key)}})
    # BIND 9.18 verifies the primary when the tls block has ca-file and remote-hostname.
    bind = bind_factory([ZoneSpec(ZONE, type="secondary", primaries=[tls_port], tls="tosec")],
                        conf=[f'tls tosec {{ ca-file "{pki.ca}"; remote-hostname "{NAME}"; }};'])
    bind.wait_serial(ZONE, 9, timeout=WAIT)
    reply = dns.query.udp(dns.message.make_query(f"h42.{ZONE}", "A"), LOOPBACK, port=bind.port, timeout=2)
    assert [rd.to_text() for rrset in reply.answer for rd in rrset] == ["10.0.0.42"]
    text = _metrics(sec)
    # BIND really verifies: the same secondary with a name the certificate lacks gets nothing.
    wrong = bind_factory([ZoneSpec(ZONE, type="secondary", primaries=[tls_port], tls="tosec")],
                         conf=[f'tls tosec {{ ca-file "{pki.ca}"; remote-hostname "wrong.xot.test"; }};'])
    wait_for("BIND's verification failure",
             lambda: "TLS peer certificate verification failed" in wrong.log_text(), WAIT)
    assert soa_serial(wrong.port, ZONE, timeout=1.0) is None
    samples = [line for line in text.splitlines() if line.startswith("secondns_transfers_out_total{")
               and 'type="axfr"' in line and 'result="ok"' in line]
    assert samples and float(samples[0].split()[-1]) >= 1, text


def test_transfer_over_tls_needs_alpn_dot(tmp_path: Path, secondns_factory: Callable[..., Secondns]) -> None:
    """RFC 9103 7.1: a transfer on a TLS connection without ALPN "dot" is refused; queries are not."""
    pki = make_pki(tmp_path / "pki")
    tls_port = free_port()
    secondns_factory({ZONE: {"allow-transfer": ["127.0.0.1/32"]}}, zone_files={ZONE: _zone(3)},
                           server={"tls": {"listen": [f"{LOOPBACK}:{tls_port}"], "certificate": str(pki.cert),
                                           "key": str(pki.key)}})

    def ask(alpn: list[str] | None, qtype: str) -> list[dns.message.Message]:
        with socket.create_connection((LOOPBACK, tls_port), timeout=5) as raw, \
                _client_context(pki, alpn).wrap_socket(raw, server_hostname=NAME) as sock:
            wire = dns.message.make_query(ZONE, qtype).to_wire()
            sock.sendall(len(wire).to_bytes(2, "big") + wire)
            out: list[dns.message.Message] = []
            soas = 0
            for _ in range(10):  # the AXFR ends at its second SOA (RFC 5936 2.2)
                length = int.from_bytes(_read(sock, 2), "big")
                out.append(dns.message.from_wire(_read(sock, length), one_rr_per_rrset=True))
                soas += sum(1 for r in out[-1].answer if r.rdtype == dns.rdatatype.SOA)
                if qtype != "AXFR" or out[-1].rcode() != dns.rcode.NOERROR or soas >= 2:
                    break
            return out

    assert ask(None, "AXFR")[0].rcode() == dns.rcode.REFUSED
    with pytest.raises(ssl.SSLError):  # ALPN offered without "dot": no common protocol
        ask(["h2"], "SOA")
    assert ask(None, "SOA")[0].rcode() == dns.rcode.NOERROR
    axfr = ask(["dot"], "AXFR")
    assert axfr[0].rcode() == dns.rcode.NOERROR
    names = {r.name.to_text() for m in axfr for r in m.answer}
    assert f"h2.{ZONE}" in names


def _read(sock: ssl.SSLSocket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError("connection closed")
        data += chunk
    return data


# --------------------------------------------------------------------------------------------------
# 5: queries on the TLS listener (kdig, dnspython), ALPN "dot", TLS 1.3; also with workers


@pytest.mark.parametrize("workers", [1, 2])
def test_queries_on_the_tls_listener(tmp_path: Path, secondns_factory: Callable[..., Secondns],
                                     workers: int) -> None:
    kdig = require_binary("kdig")
    pki = make_pki(tmp_path / "pki")
    tls_port = free_port()
    secondns_factory(zone_files={ZONE: _zone(4)},
                           server={"workers": workers,
                                   "tls": {"listen": [f"{LOOPBACK}:{tls_port}"], "certificate": str(pki.cert),
                                           "key": str(pki.key)}})
    with socket.create_connection((LOOPBACK, tls_port), timeout=5) as raw, \
            _client_context(pki, ["dot"]).wrap_socket(raw, server_hostname=NAME) as sock:
        assert sock.selected_alpn_protocol() == "dot"
        assert sock.version() == "TLSv1.3"
        reply = dns.query.tls(dns.message.make_query(f"h1.{ZONE}", "A"), LOOPBACK, port=tls_port, sock=sock,
                              timeout=5)
    assert [rd.to_text() for rrset in reply.answer for rd in rrset] == ["10.0.0.1"]
    out = subprocess.run([kdig, "@" + LOOPBACK, "-p", str(tls_port), f"+tls-ca={pki.ca}",
                          f"+tls-hostname={NAME}", "+short", ZONE, "SOA"],
                         capture_output=True, text=True, timeout=20, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.split()[2] == "4", out.stdout
    # A client that does not trust our CA gets no answer (kdig strict profile).
    bad = make_pki(tmp_path / "bad", label="bad")
    out = subprocess.run([kdig, "@" + LOOPBACK, "-p", str(tls_port), f"+tls-ca={bad.ca}",
                          f"+tls-hostname={NAME}", "+short", "+retry=0", ZONE, "SOA"],
                         capture_output=True, text=True, timeout=20, check=False)
    assert "4" not in out.stdout.split()[2:3], out.stdout


# --------------------------------------------------------------------------------------------------
# configuration errors name file, line and key


def _error(text: str, tmp_path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, str(tmp_path / "s.yaml"), base_dir=tmp_path)
    return str(info.value)


def test_config_errors_name_file_line_and_key(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    other = make_pki(tmp_path / "other", label="other")
    f = str(tmp_path / "s.yaml")
    msg = _error(f"server:\n  tls:\n    listen: ['127.0.0.1:8853']\n    certificate: missing.pem\n"
                 f"    key: {pki.key}\n", tmp_path)
    assert f"{f}:4: server.tls.certificate: cannot read" in msg and "missing.pem" in msg, msg
    msg = _error(f"server:\n  tls:\n    listen: ['127.0.0.1:8853']\n    certificate: {pki.cert}\n"
                 f"    key: {other.key}\n", tmp_path)
    assert f"{f}:5: server.tls.key: " in msg and "not the private key of the certificate" in msg, msg
    msg = _error(f"server:\n  tls:\n    listen: ['127.0.0.1:8853']\n    certificate: {pki.key}\n"
                 f"    key: {pki.key}\n", tmp_path)
    assert f"{f}:4: server.tls.certificate: " in msg and "no PEM certificate" in msg, msg
    msg = _error("server:\n  tls:\n    listen: ['127.0.0.1:8853']\n", tmp_path)
    assert f"{f}:2: server.tls: needs certificate, key" in msg, msg
    msg = _error("zones:\n  ex.:\n    primaries:\n      - address: 192.0.2.1\n        tls: sometimes\n",
                 tmp_path)
    assert f"{f}:5: zones.ex..primaries[0].tls: expected opportunistic or a mapping" in msg, msg
    msg = _error(f"zones:\n  ex.:\n    primaries:\n      - address: 192.0.2.1\n        tls:\n"
                 f"          ca: {pki.ca}\n", tmp_path)
    assert f"{f}:5: zones.ex..primaries[0].tls: needs name" in msg, msg
    msg = _error(f"zones:\n  ex.:\n    primaries:\n      - address: 192.0.2.1\n        tls:\n"
                 f"          ca: {pki.key}\n          name: {NAME}\n", tmp_path)
    assert f"{f}:6: zones.ex..primaries[0].tls.ca: " in msg and "no PEM certificate" in msg, msg
    config = parse_config(f"zones:\n  ex.:\n    primaries:\n      - 192.0.2.1\n"
                          f"      - {{address: 192.0.2.2, tls: opportunistic}}\n"
                          f"      - {{address: '192.0.2.3:8853', tls: {{ca: {pki.ca}, name: {NAME}}}}}\n",
                          f, base_dir=tmp_path)
    plain, opportunistic, strict = config.zones["ex."].primaries
    assert [str(p) for p in (plain, opportunistic, strict)] == [
        "192.0.2.1:53", "192.0.2.2:853", "192.0.2.3:8853"]
    assert not isinstance(plain, TlsPrimary)
    assert isinstance(opportunistic, TlsPrimary) and not opportunistic.tls.strict
    assert isinstance(strict, TlsPrimary) and strict.tls.strict and strict.tls.name == NAME
