"""ZONEMD (RFC 8976): digests made by dnspython (an independent implementation) verify;
modified zones are rejected before they are served, by unit and over a real transfer."""

from __future__ import annotations

import json
import time
import urllib.request

import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.zone
import dns.zonetypes
import pytest
from peers import Bind, Secondns, query, require_binary, soa_serial

from secondns.names import from_text
from secondns.store.zonefile import load_zone_text
from secondns.zonemd import check, digest

ORIGIN = "md.test."
BODY = """$TTL 300
@ IN SOA ns1 host {serial} 3600 600 86400 300
  IN NS ns1
ns1 IN A 192.0.2.1
www IN A 192.0.2.{last}
mail IN MX 10 Mail.MD.test.
sub IN NS ns.sub
ns.sub IN A 192.0.2.9
"""


def with_zonemd(serial: int, last: int = 2, algorithm: int = 1, scheme: int = 1) -> str:
    """Zone text plus a ZONEMD computed by dnspython over it."""
    text = BODY.format(serial=serial, last=last)
    zone = dns.zone.from_text(text, origin=ORIGIN, relativize=False)
    hash_alg = dns.zonetypes.DigestHashAlgorithm(algorithm)
    md = zone.compute_digest(hash_alg, dns.zonetypes.DigestScheme(scheme))
    return text + f"@ IN ZONEMD {md.serial} {md.scheme} {md.hash_algorithm} {md.digest.hex()}\n"


def load(text: str):  # type: ignore[no-untyped-def]
    return load_zone_text(text, from_text(ORIGIN))


@pytest.mark.parametrize("algorithm", [1, 2])
def test_digest_made_by_dnspython_verifies(algorithm: int) -> None:
    assert check(load(with_zonemd(5, algorithm=algorithm)), "verify") is None


def test_modified_record_is_rejected() -> None:
    text = with_zonemd(5).replace("192.0.2.2", "192.0.2.66")
    assert "mismatch" in (check(load(text), "verify") or "")


def test_added_glue_is_covered_by_the_digest() -> None:
    # RFC 8976 3.3.1: occluded data (glue) is digested too.
    text = with_zonemd(5) + "extra.sub IN A 192.0.2.77\n"
    assert "mismatch" in (check(load(text), "verify") or "")


def test_digest_ignores_name_case_in_rdata() -> None:
    # RFC 4034 6.2: MX exchange is lowercased in canonical form; the zone writes "Mail.MD.test."
    text = with_zonemd(5)
    assert check(load(text.replace("Mail.MD.test.", "mail.md.test.")), "verify") is None


def test_zonemd_of_another_serial_fails_verification() -> None:
    # RFC 8976 4: the SOA serial must exactly match the ZONEMD serial (a stale digest).
    text = with_zonemd(5).replace("host 5 ", "host 6 ")  # SOA serial 6, ZONEMD says 5
    assert "does not match the SOA serial" in (check(load(text), "verify") or "")
    assert check(load(text), "ignore") is None


def test_unsupported_algorithm_is_treated_as_absent() -> None:
    text = BODY.format(serial=5, last=2) + "@ IN ZONEMD 5 1 240 " + "ab" * 48 + "\n"
    assert check(load(text), "verify") is None
    assert check(load(text), "require") is not None


def test_require_without_zonemd_is_refused() -> None:
    assert "no ZONEMD record" in (check(load(BODY.format(serial=5, last=2)), "require") or "")


def test_ignore_never_checks() -> None:
    text = with_zonemd(5).replace("192.0.2.2", "192.0.2.66")
    assert check(load(text), "ignore") is None


def test_digest_matches_dnspython_on_a_zone_without_zonemd() -> None:
    text = BODY.format(serial=9, last=3)
    theirs = dns.zone.from_text(text, origin=ORIGIN, relativize=False).compute_digest(
        dns.zonetypes.DigestHashAlgorithm.SHA512)
    assert digest(load(text), 2) == theirs.digest


# -- over a real transfer -------------------------------------------------------------------------


def _status(sec: Secondns) -> dict:  # type: ignore[type-arg]
    with urllib.request.urlopen(sec.http_url("/status"), timeout=5) as resp:
        return json.loads(resp.read())["zones"][0]  # type: ignore[no-any-return]


@pytest.mark.integration
def test_transfer_with_bad_zonemd_is_rejected_and_previous_zone_kept(tmp_path) -> None:  # type: ignore[no-untyped-def]
    require_binary("named")
    with Bind(tmp_path / "bind", [(ORIGIN.rstrip("."), with_zonemd(1), "primary", ["notify no;"])]) as prim, \
            Secondns(tmp_path / "sec", {ORIGIN: {"primaries": [f"127.0.0.1:{prim.port}"], "refresh-min": 1}},
                     ready_zones=[]) as sec:
        deadline = time.monotonic() + 15
        while soa_serial(sec.port, ORIGIN) != 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert soa_serial(sec.port, ORIGIN) == 1  # a good digest: served
        # Serial 2 with a record changed after digesting: the primary publishes a bad ZONEMD.
        bad = with_zonemd(2).replace("192.0.2.2", "192.0.2.66")
        prim.write_zone(ORIGIN.rstrip("."), bad)
        prim.reload(ORIGIN.rstrip("."))
        urllib.request.urlopen(urllib.request.Request(sec.http_url("/control/retransfer/md.test"),
                                                      method="POST", data=b""), timeout=5).read()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            status = _status(sec)
            if status["last_transfer"] and status["last_transfer"]["result"] == "failure":
                break
            time.sleep(0.1)
        assert "ZONEMD digest mismatch" in (status["last_transfer"]["error"] or "")
        assert soa_serial(sec.port, ORIGIN) == 1  # the previous zone is still served
        answer = query(sec.port, f"www.{ORIGIN}", "A").answer
        assert answer[0][0].to_text() == "192.0.2.2"
        assert "ZONEMD digest mismatch" in sec.log_text()
