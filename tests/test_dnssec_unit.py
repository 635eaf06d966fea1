"""The denial index and NSEC3 hashing (secondns/dnssec.py) against independent references; no network.

dnspython is the reference for the two primitives: ``dns.name.Name`` comparison is RFC 4034 6.1
canonical order, and ``dns.dnssec.nsec3_hash`` is RFC 5155 5.  dnssec-signzone is the reference for
whole zones: the NSEC chain it writes *is* canonical order, and its NSEC3 chain is the sorted
hash order, so an index built from its output must list the owners in the chain's order.  Zones
are read through dnspython (``zonetools.zone_from_text``), never through secondns's parser.

IXFR keeps the index current by the names that changed (``DenialIndex.derive``): two versions
of a zone signed by dnssec-signzone, the second a re-signing of an edit of the first, give the
record difference an IXFR carries; applying it must give the index of the second version.
"""

from __future__ import annotations

import base64
import types
from pathlib import Path

import dns.dnssec
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.zone
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from signing import STANDARD_ZONES, SignedZone, make_standard_zones, resign
from zonetools import zone_from_text

from secondns import dnssec, rrtypes
from secondns.diff import VersionStep, apply_steps
from secondns.dnssec import DenialIndex, b32hex_decode, b32hex_encode, build_index, canonical_key
from secondns.names import to_text
from secondns.zone import Zone, decode_node

Rec = tuple[bytes, int, int, bytes]

# Labels of arbitrary octets (lowercase: the index holds lowercased names), escapes and NULs included.
_label = st.binary(min_size=1, max_size=8).map(bytes.lower)
_names = st.lists(_label, min_size=0, max_size=4).map(lambda labels: dns.name.Name([*labels, b""]))


def _wire(name: dns.name.Name) -> bytes:
    return name.to_wire()


# --------------------------------------------------------------------------------------------------
# canonical order and the NSEC index


@settings(max_examples=300, deadline=None)
@given(st.lists(_names, min_size=2, max_size=30, unique=True))
def test_canonical_key_sorts_names_as_dnspython_does(names: list[dns.name.Name]) -> None:
    ours = sorted(names, key=lambda n: canonical_key(_wire(n)))
    assert ours == sorted(names)


@settings(max_examples=200, deadline=None)
@given(st.lists(_names, min_size=1, max_size=20, unique=True), _names)
def test_nsec_index_finds_the_canonical_predecessor_of_a_missing_name(
    owners: list[dns.name.Name], probe: dns.name.Name
) -> None:
    index = DenialIndex("nsec", ((canonical_key(_wire(n)), _wire(n)) for n in owners))
    ordered = sorted(owners)
    if probe in owners:
        expected: tuple[bytes | None, bytes | None] = (_wire(probe), None)
    else:
        before = [n for n in ordered if n < probe]
        # RFC 4034 4.1.1: the chain is circular; below the first owner the last one covers.
        expected = (None, _wire(before[-1] if before else ordered[-1]))
    assert index.find(_wire(probe)) == expected


# --------------------------------------------------------------------------------------------------
# NSEC3 hashing and base32hex


@settings(max_examples=200, deadline=None)
@given(_names, st.binary(max_size=8), st.integers(min_value=0, max_value=20))
def test_nsec3_hash_matches_dnspython(name: dns.name.Name, salt: bytes, iterations: int) -> None:
    ours = b32hex_encode(dnssec.nsec3_hash(_wire(name), salt, iterations))
    assert ours.decode().upper() == dns.dnssec.nsec3_hash(name, salt, iterations, 1)


def test_nsec3_hash_ignores_the_case_of_the_name() -> None:
    name = dns.name.from_text("WwW.NSEC3.Example.")
    ours = dnssec.nsec3_hash(_wire(name), b"\xaa\xbb", 3)
    assert ours == dnssec.nsec3_hash(_wire(name).lower(), b"\xaa\xbb", 3)


@given(st.binary(min_size=1, max_size=40))
def test_b32hex_round_trips_and_matches_the_standard_alphabet(digest: bytes) -> None:
    label = b32hex_encode(digest)
    assert label == base64.b32hexencode(digest).rstrip(b"=").lower()
    assert b32hex_decode(label) == digest
    assert b32hex_decode(label.upper()) == digest


def test_b32hex_decode_rejects_letters_outside_base32hex() -> None:
    assert b32hex_decode(b"zzzz") is None


# --------------------------------------------------------------------------------------------------
# indexes of zones signed by dnssec-signzone


ZONES = list(STANDARD_ZONES)


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SignedZone]:
    return make_standard_zones(tmp_path_factory.mktemp("dnssec-unit"))


def _load(zone: SignedZone, path: Path | None = None) -> dns.zone.Zone:
    text = (path or zone.path).read_text()
    return dns.zone.from_text(text, origin=zone.origin, relativize=False)


def _chain(dzone: dns.zone.Zone, kind: str) -> list[bytes]:
    """Owners in the order the signer chained them: follow next-name fields from the apex's record."""
    rdtype = dns.rdatatype.NSEC if kind == "nsec" else dns.rdatatype.NSEC3
    records = {name: rds[0] for name, node in dzone.nodes.items()
               if (rds := node.get_rdataset(dns.rdataclass.IN, rdtype)) is not None}
    origin = dzone.origin
    assert origin is not None
    if kind == "nsec":
        start = origin
        follow = {name: rd.next for name, rd in records.items()}
    else:
        start = min(records)  # the chain is circular: start from the lowest hash
        follow = {name: dns.name.Name([base64.b32hexencode(rd.next).rstrip(b"=").lower(), *origin.labels])
                  for name, rd in records.items()}
    out = [start]
    while (nxt := follow[out[-1]]) != start:
        out.append(nxt)
        assert len(out) <= len(records), "the chain does not close"
    assert len(out) == len(records), "the chain skips records"
    return [n.canonicalize().to_wire() for n in out]


@pytest.mark.parametrize("label", ZONES)
def test_index_lists_owners_in_the_signers_chain_order(signed: dict[str, SignedZone], label: str) -> None:
    zone = signed[label]
    index = build_index(zone_from_text(zone.text, zone.origin))
    assert index is not None and index.kind == zone.kind
    assert index.names == _chain(_load(zone), zone.kind)


def test_nsec3_index_carries_the_zones_parameters(signed: dict[str, SignedZone]) -> None:
    zone = signed["optout"]
    index = build_index(zone_from_text(zone.text, zone.origin))
    assert index is not None and index.params is not None
    spec = zone.nsec3
    assert spec is not None
    assert (index.params.salt.hex().upper(), index.params.iterations) == (spec.salt, spec.iterations)


def _rrsig_ttl_mismatches(zone: Zone) -> list[str]:
    """RRSIGs whose TTL is not the TTL of the RRset they cover (RFC 4034 3), as text."""
    bad = []
    for name, blob in zone.nodes():
        node = decode_node(blob)
        for ttl, rdata in node.get(rrtypes.RRSIG, []):
            covered = int.from_bytes(rdata[:2], "big")
            want = {t for t, _rd in node.get(covered, [])}
            if want != {ttl}:
                bad.append(f"{to_text(name)} RRSIG({rrtypes.type_name(covered)}) TTL {ttl}, RRset {want}")
    return bad


@pytest.mark.parametrize("label", ZONES)
def test_loaded_zone_keeps_each_rrsig_at_the_ttl_of_the_rrset_it_covers(
    signed: dict[str, SignedZone], label: str
) -> None:
    # RFC 4034 3: "The TTL value of an RRSIG RR MUST match the TTL value of the RRset it covers.
    # This is an exception to the [RFC2181] rules for TTL values of individual RRs within a
    # RRset".  The signer gives NSEC/NSEC3 the SOA MINIMUM (120) and other RRsets 300, so the
    # RRSIGs at one name carry both TTLs; each must keep its own.
    zone = signed[label]
    assert _rrsig_ttl_mismatches(zone_from_text(zone.text, zone.origin)) == []


# --------------------------------------------------------------------------------------------------
# IXFR keeps the index current


def _records(dzone: dns.zone.Zone) -> set[Rec]:
    return {(name.to_wire(), rdata.rdtype, ttl, rdata.to_wire())
            for name, ttl, rdata in dzone.iterate_rdatas()}


def _edit(zone: SignedZone, out: Path) -> SignedZone:
    """Version 2: two names go (one under an empty non-terminal chain), three come (one a new
    unsigned delegation, one two labels below a new empty non-terminal)."""
    return resign(
        zone, out, serial=2,
        remove=[zone.fqdn("a.b.c"), zone.fqdn("host.w")],
        add=[f"{zone.fqdn('new')} 300 IN A 192.0.2.200",
             f"{zone.fqdn('x.y.z')} 300 IN TXT \"new ent\"",
             f"{zone.fqdn('del2')} 300 IN NS ns.example.net."],
    )


@pytest.fixture(scope="module")
def versions(signed: dict[str, SignedZone], tmp_path_factory: pytest.TempPathFactory
             ) -> dict[str, tuple[SignedZone, SignedZone, VersionStep]]:
    """Per zone: version 1, version 2 and the IXFR step between them (deletions, additions)."""
    base = tmp_path_factory.mktemp("dnssec-ixfr")
    out = {}
    for label, v1 in signed.items():
        v2 = _edit(v1, base / f"{label}-v2.signed")
        before, after = _records(_load(v1)), _records(_load(v2))
        step = VersionStep(1, 2, sorted(before - after), sorted(after - before))
        out[label] = (v1, v2, step)
    return out


@pytest.mark.parametrize("label", ZONES)
def test_the_edit_changes_denial_records_and_keeps_other_signatures(
    versions: dict[str, tuple[SignedZone, SignedZone, VersionStep]], label: str
) -> None:
    # The IXFR tests below mean something only if the step is small and touches the chain.
    v1, _v2, step = versions[label]
    rdtype = dns.rdatatype.NSEC if v1.kind == "nsec" else dns.rdatatype.NSEC3
    assert any(rec[1] == rdtype for rec in step.deleted) and any(rec[1] == rdtype for rec in step.added)
    assert len(step.deleted) + len(step.added) < 60


@pytest.mark.parametrize("label", ZONES)
def test_ixfr_leaves_the_index_of_the_new_version(
    versions: dict[str, tuple[SignedZone, SignedZone, VersionStep]], label: str
) -> None:
    v1, v2, step = versions[label]
    applied = apply_steps(zone_from_text(v1.text, v1.origin), [step])
    rebuilt = build_index(zone_from_text(v2.text, v2.origin))
    assert applied.denial is not None and rebuilt is not None
    assert (applied.denial.kind, applied.denial.params) == (rebuilt.kind, rebuilt.params)
    assert applied.denial.keys == rebuilt.keys
    assert applied.denial.names == rebuilt.names


@pytest.mark.parametrize("label", ZONES)
def test_ixfr_keeps_each_rrsig_at_the_ttl_of_the_rrset_it_covers(
    versions: dict[str, tuple[SignedZone, SignedZone, VersionStep]], label: str
) -> None:
    v1, _v2, step = versions[label]
    applied = apply_steps(zone_from_text(v1.text, v1.origin), [step])
    assert _rrsig_ttl_mismatches(applied) == []


@pytest.mark.parametrize("label", ZONES)
def test_ixfr_updates_the_index_without_rebuilding_it(
    versions: dict[str, tuple[SignedZone, SignedZone, VersionStep]], label: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    v1, _v2, step = versions[label]
    old = zone_from_text(v1.text, v1.origin)

    def no_rebuild(zone: object) -> None:
        raise AssertionError("the index was rebuilt from the whole zone")

    monkeypatch.setattr(dnssec, "build_index", no_rebuild)
    applied = apply_steps(old, [step])
    assert applied.denial is not None and old.denial is not None
    assert applied.denial.keys is not old.denial.keys
    assert len(old.denial) != len(applied.denial) or old.denial.keys != applied.denial.keys


def test_rfc9276_warning_above_100_iterations_once_per_parameter_change() -> None:
    def version(iterations: int) -> types.SimpleNamespace:
        params = dnssec.Nsec3Params(1, iterations, b"\xaa")
        return types.SimpleNamespace(denial=dnssec.DenialIndex("nsec3", [], params))
    assert dnssec.iterations_warning(version(100)) is None  # RFC 9276 3.2: up to 100 is tolerated
    warning = dnssec.iterations_warning(version(150))
    assert warning is not None and "150 iterations" in warning and "RFC 9276" in warning
    assert dnssec.iterations_warning(version(150), version(150)) is None  # an IXFR: said already
    assert dnssec.iterations_warning(version(150), version(10)) is not None
    assert dnssec.iterations_warning(types.SimpleNamespace(denial=None)) is None  # unsigned
