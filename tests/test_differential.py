"""secondns against BIND 9, question by question, on the same zone files.

BIND (``named``, as configured by ``peers.Bind``: ``minimal-responses no-auth; minimal-any yes;``)
serves the zones in ``tests/data/diff`` as a primary; secondns serves the same files.  Every probe
from ``difftools.all_probes`` (every owner x a dozen qtypes x UDP/UDP+EDNS/TCP+EDNS, missing
siblings and children, names below wildcards, DNAMEs and cuts, case variants, out-of-zone names,
truncation and EDNS edge cases) goes to both, and the normalised replies (``difftools.View``) are
compared.

A difference passes only when exactly one entry of ``JUSTIFIED`` explains it; each entry is a
predicate precise enough not to swallow other differences, and a justification citing the RFC or
the BIND behaviour behind it.  Differences that are bugs in secondns are not justified here: the
tests at the end of this file reproduce each one on its own.

BIND's configuration and its defaults: probes clear RD, as resolvers do.  BIND 9.18's default
``minimal-responses no-auth-recursive`` answers those like ``no-auth`` only when RD is set; with
the default and RD set, this run classifies every reply as it does here (measured on 2026-12-02:
0 unjustified of 5148).  Without RD the default also puts the zone's NS RRset in the authority
section of positive answers, and its addresses in the additional section (643 replies), which
no step of RFC 1034 4.3.2 asks for and secondns never does.  BIND's default ``minimal-any no``
would answer ANY over UDP in full (71 replies); secondns follows RFC 8482 4.2 there.

The additional section is BIND 9.18's (ns/query.c): addresses (and their RRSIGs for DO) of the
NS/MX/SRV targets in the answer that this zone holds as authoritative data, wildcards included;
nothing for ANY, for an RRset of more than 13 records, or for a UDP client with a 512-octet EDNS
buffer; in referrals, glue only.

Counts (queries compared, identical, justified per category) are printed (``pytest -s``) and
written to ``differential.json`` in pytest's base temporary directory.
"""

from __future__ import annotations

import functools
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import dns.message
import dns.rcode
import dns.rdatatype
import pytest
from difftools import (
    TCP_EDNS,
    TRANSPORTS,
    UDP_EDNS,
    UDP_PLAIN,
    Probe,
    RRsetView,
    View,
    ZoneData,
    all_probes,
    fold_case,
    view,
)
from peers import Bind, Secondns, ZoneSpec, require_binary

ZONE_DIR = Path(__file__).resolve().parent / "data" / "diff"
ZONE_FILES = sorted(ZONE_DIR.glob("*.zone"))
ZONES = [path.name.removesuffix(".zone") for path in ZONE_FILES]

IDENTICAL = "identical"
UNJUSTIFIED = "UNJUSTIFIED"
MIN_IDENTICAL_SHARE = 0.90


# --------------------------------------------------------------------------------------------------
# justified differences


@dataclass(frozen=True)
class Justification:
    """A legitimate difference: ``applies(probe, bind, ours)`` says whether it explains one reply pair."""

    key: str
    reason: str
    applies: Callable[[Probe, View, View], bool]


def _same_except(bind: View, ours: View, *fields: str) -> bool:
    return bind.without(*fields) == ours.without(*fields)


def _beyond_case(check: Callable[[Probe, View, View], bool]) -> Callable[[Probe, View, View], bool]:
    """Run ``check`` on case-folded views, and only when they still differ once folded.

    A reply pair that differs in rdata case *and* in something else is then explained by the
    something else alone, so no pair needs two entries.
    """

    def applies(probe: Probe, bind: View, ours: View) -> bool:
        bind, ours = fold_case(bind), fold_case(ours)
        return bind != ours and check(probe, bind, ours)

    return applies


def _targets(rrsets: tuple[RRsetView, ...]) -> set[str]:
    """Lowercased names that NS, MX and SRV rdata point at (their last field)."""
    kinds = {dns.rdatatype.NS, dns.rdatatype.MX, dns.rdatatype.SRV}
    return {text.split()[-1].lower() for r in rrsets if r.rdtype in kinds for text, _ttl in r.records}


@functools.cache
def _zone_addresses() -> frozenset[tuple[str, dns.rdatatype.RdataType]]:
    """(owner, A or AAAA) of every address RRset in the zone files, glue included."""
    out = set()
    for path in ZONE_FILES:
        for name, rdataset in ZoneData.load(path).zone.iterate_rdatasets():
            if rdataset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                out.add((name.to_text().lower(), rdataset.rdtype))
    return frozenset(out)


def _in_domain_glue_truncated(probe: Probe, bind: View, ours: View) -> bool:
    if not ours.tc or bind.tc or ours.flags != bind.flags | {"TC"} or ours.aa:
        return False
    if not _same_except(bind, ours, "flags", "additional"):
        return False
    cuts = [r for r in ours.authority if r.rdtype == dns.rdatatype.NS]
    if len(cuts) != 1:
        return False
    cut = cuts[0].name
    names = _targets((cuts[0],))
    in_domain = {n for n in names if n == cut or n.endswith("." + cut)}
    required = {(name, rdtype) for name, rdtype in _zone_addresses() if name in in_domain}
    sent_by_bind = {(r.name, r.rdtype) for r in bind.additional}
    addresses = {dns.rdatatype.A, dns.rdatatype.AAAA}
    only_glue = all(r.rdtype in addresses and r.name in names for r in ours.additional)
    return only_glue and bool(required - sent_by_bind)


def _truncated_contents(probe: Probe, bind: View, ours: View) -> bool:
    return bind.tc and ours.tc and _same_except(bind, ours, "answer", "authority", "additional")


def _cname_loop(probe: Probe, bind: View, ours: View) -> bool:
    if bind.rcode != dns.rcode.SERVFAIL or ours.rcode != dns.rcode.NOERROR or not ours.answer:
        return False
    last = ours.answer[-1]
    owners = {r.name for r in ours.answer}
    loops = last.rdtype == dns.rdatatype.CNAME and last.records[0][0].lower() in owners
    return loops and _same_except(bind, ours, "rcode", "options")


def _soa_nxdomain_ttl(probe: Probe, bind: View, ours: View) -> bool:
    if probe.qtype != "SOA" or bind.rcode != dns.rcode.NXDOMAIN or ours.rcode != dns.rcode.NXDOMAIN:
        return False
    if not _same_except(bind, ours, "authority") or len(bind.authority) != len(ours.authority):
        return False
    for theirs, mine in zip(bind.authority, ours.authority, strict=True):
        if theirs == mine:
            continue
        zeroed = replace(mine, records=tuple((text, 0) for text, _ttl in mine.records))
        if mine.rdtype != dns.rdatatype.SOA or theirs != zeroed:
            return False
    return True


def _dname_any_followed(probe: Probe, bind: View, ours: View) -> bool:
    if probe.qtype != "ANY" or len(bind.answer) < 2:
        return False
    dname, cname = bind.answer[-2:]
    synthesised = (
        dname.rdtype == dns.rdatatype.DNAME
        and cname.rdtype == dns.rdatatype.CNAME
        and cname.name == probe.qname.lower()
    )
    continued = ours.answer[: len(bind.answer)] == bind.answer
    return synthesised and continued and _same_except(
        bind, ours, "rcode", "answer", "authority", "additional"
    )


JUSTIFIED: tuple[Justification, ...] = (
    Justification(
        "truncated reply contents",
        "RFC 2181 9: 'Where TC is set, the partial RRSet that would not completely fit may be "
        "left in the response.  When a DNS client receives a reply with TC set, it should ignore "
        "that response, and query again'.  Without EDNS, BIND fills 512 octets with as many "
        "records as fit, a partial RRset included; secondns uses that 'may' the other way and "
        "never sends a partial RRset, so the answer is empty.  Header, rcode and EDNS agree; the "
        "same question over TCP is compared separately.",
        _beyond_case(_truncated_contents),
    ),
    Justification(
        "CNAME loop answered, not failed",
        "RFC 1034 4.3.2 step 3a: 'copy the CNAME RR into the answer section of the response, "
        "change QNAME to the canonical name in the CNAME RR, and go back to step 1'; once a name "
        "repeats, secondns stops and returns the chain with the rcode of the last name looked up "
        "(RFC 6604 2: that name exists, so NOERROR).  RFC 1034 3.6.2 wants 'CNAME loops "
        "signalled as an error' without saying how: the returned chain shows the loop to the "
        "resolver, while BIND answers SERVFAIL with an Extended DNS Error (RFC 8914).  Knot DNS 3 "
        "and NSD 4 answer exactly as secondns does (checked with this zone); the answer sections "
        "are identical.",
        _beyond_case(_cname_loop),
    ),
    Justification(
        "SOA of an NXDOMAIN reply to an SOA query",
        "RFC 2308 3: 'The TTL of this record is set from the minimum of the MINIMUM field of the "
        "SOA record and the TTL of the SOA itself, and indicates how long a resolver may cache the "
        "negative answer', which is what secondns sends.  BIND (ns/query.c, NXDOMAIN path) forces "
        "TTL 0 when the question itself is an SOA query, so that a stub resolver can probe for "
        "the zone containing an arbitrary name without the negative answer's SOA being cached; "
        "no RFC asks for that, and it would break the rule quoted.  Only that TTL differs.",
        _beyond_case(_soa_nxdomain_ttl),
    ),
    Justification(
        "referral truncated: in-domain glue does not fit",
        "RFC 9471 3.1: 'If message size constraints prevent the inclusion of all glue records for "
        "in-domain name servers, the server MUST set the TC (Truncated) flag'.  BIND 9.18 sends "
        "what fits without TC (it sets TC only when not even the first in-domain glue RRset "
        "fits); secondns sets TC, keeping the whole RRsets that fit (RFC 2181 9).  BIND's own "
        "reply is checked to lack in-domain glue that the zone holds; answer and authority are "
        "identical, and our additional section holds addresses of the referral's NS names only.",
        _beyond_case(_in_domain_glue_truncated),
    ),
    Justification(
        "ANY below a DNAME follows the synthesised CNAME",
        "RFC 6672 3.2 step 3c ends with 'Go back to step 1' for every QTYPE: after the DNAME and "
        "the synthesised CNAME, the lookup continues at the new name, and ANY there returns its "
        "data (or NXDOMAIN / a referral, RFC 6604).  BIND treats the synthesised CNAME as matching "
        "ANY and stops; Knot DNS 3 and NSD 4 continue as secondns does.  BIND's answer is a "
        "prefix of ours.",
        _beyond_case(_dname_any_followed),
    ),
)


def classify(probe: Probe, bind: View, ours: View) -> str:
    """IDENTICAL, the key of the one justification that applies, or UNJUSTIFIED."""
    if bind == ours:
        return IDENTICAL
    keys = [j.key for j in JUSTIFIED if j.applies(probe, bind, ours)]
    if len(keys) == 1:
        return keys[0]
    if keys:
        return f"{UNJUSTIFIED} (matches {len(keys)} justifications: {'; '.join(keys)})"
    return UNJUSTIFIED


# --------------------------------------------------------------------------------------------------
# servers and the comparison run


@dataclass(frozen=True)
class Outcome:
    probe: Probe
    bind: View
    ours: View
    category: str

    def describe(self) -> str:
        return (
            f"{self.probe}: {self.category}\n"
            f"  BIND: {_indent(self.bind.describe())}\n"
            f"  ours: {_indent(self.ours.describe())}"
        )


def _indent(text: str) -> str:
    return text.replace("\n", "\n        ")


@dataclass(frozen=True)
class Servers:
    bind: Bind
    ours: Secondns

    def ask(self, probe: Probe) -> tuple[View, View]:
        """The same message (same ID) to both servers; their normalised replies."""
        msg = probe.message()
        return view(probe.send(self.bind.port, msg)), view(probe.send(self.ours.port, msg))


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    require_binary("named")
    base = tmp_path_factory.mktemp("differential")
    bind = Bind(base / "bind", [ZoneSpec(name, path) for name, path in zip(ZONES, ZONE_FILES, strict=True)])
    ours = Secondns(base / "secondns", zone_files=dict(zip(ZONES, ZONE_FILES, strict=True)), http=False)
    with bind, ours:
        yield Servers(bind, ours)


@pytest.fixture(scope="module")
def outcomes(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> list[Outcome]:
    started = time.monotonic()
    results = []
    for probe in all_probes(ZONE_FILES):
        bind, ours = servers.ask(probe)
        results.append(Outcome(probe, bind, ours, classify(probe, bind, ours)))
    elapsed = time.monotonic() - started
    counts = Counter(o.category for o in results)
    report = {
        "queries_compared": len(results),
        "identical": counts[IDENTICAL],
        "justified": {j.key: counts[j.key] for j in JUSTIFIED},
        "unjustified": sum(n for key, n in counts.items() if key.startswith(UNJUSTIFIED)),
        "by_transport": dict(Counter(o.probe.transport.name for o in results)),
        "seconds": round(elapsed, 2),
    }
    path = tmp_path_factory.getbasetemp() / "differential.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\ndifferential test against BIND ({path}):\n{json.dumps(report, indent=2)}")
    return results


# --------------------------------------------------------------------------------------------------
# the differential tests


@pytest.mark.integration
def test_every_difference_from_bind_is_justified(outcomes: list[Outcome]) -> None:
    bad = [o for o in outcomes if o.category.startswith(UNJUSTIFIED)]
    shown = "\n".join(o.describe() for o in bad[:25])
    if len(bad) > 25:
        shown += f"\n... and {len(bad) - 25} more: {sorted({str(o.probe) for o in bad[25:]})}"
    assert not bad, f"{len(bad)} of {len(outcomes)} replies differ from BIND without justification:\n{shown}"


@pytest.mark.integration
def test_most_replies_are_identical_to_bind(outcomes: list[Outcome]) -> None:
    identical = sum(o.category == IDENTICAL for o in outcomes)
    assert identical >= MIN_IDENTICAL_SHARE * len(outcomes), f"{identical} of {len(outcomes)} identical"


@pytest.mark.integration
def test_every_justification_is_still_needed(outcomes: list[Outcome]) -> None:
    used = {o.category for o in outcomes}
    stale = [j.key for j in JUSTIFIED if j.key not in used]
    assert not stale, f"no difference needs these justifications any more; delete them: {stale}"


@pytest.mark.integration
def test_probes_cover_every_transport_and_thousands_of_questions(outcomes: list[Outcome]) -> None:
    transports = Counter(o.probe.transport for o in outcomes)
    assert all(transports[t] >= 500 for t in TRANSPORTS), transports
    assert 3000 <= len(outcomes) <= 10000


@pytest.mark.integration
def test_both_servers_echo_the_question_case(servers: Servers) -> None:
    probe = Probe("WwW.TrIcKy.ExAmPlE.", "A", UDP_EDNS, "question case")
    bind, ours = servers.ask(probe)
    assert bind.question == ours.question == ("WwW.TrIcKy.ExAmPlE. A",)


# --------------------------------------------------------------------------------------------------
# the classifier itself, offline: a justification must not swallow a real difference

_REPLY = """\
id 1
opcode QUERY
rcode NOERROR
flags QR AA
;QUESTION
{qname} IN A
;ANSWER
{qname} 3600 IN CNAME {target}
{target} 3600 IN A {address}
"""


def _reply(qname: str = "alias.tricky.example.", target: str = "www.tricky.example.",
           address: str = "192.0.2.80") -> View:
    text = _REPLY.format(qname=qname, target=target, address=address)
    return view(dns.message.from_text(text, one_rr_per_rrset=True))


def test_a_changed_address_is_not_justified() -> None:
    probe = Probe("alias.tricky.example.", "A", UDP_EDNS)
    assert classify(probe, _reply(), _reply(address="192.0.2.99")) == UNJUSTIFIED


def test_rdata_case_difference_is_not_justified() -> None:
    # secondns keeps the zone's case inside rdata, as BIND does: a re-cased target is a bug.
    probe = Probe("ALIAS.tricky.example.", "A", UDP_EDNS)
    bind = _reply(qname=probe.qname)
    ours = _reply(qname=probe.qname, target="WWW.tricky.example.")
    assert classify(probe, bind, ours) == UNJUSTIFIED


def test_rdata_case_with_another_difference_is_not_justified() -> None:
    probe = Probe("ALIAS.tricky.example.", "A", UDP_EDNS)
    bind = _reply(qname=probe.qname)
    ours = _reply(qname=probe.qname, target="WWW.tricky.example.", address="192.0.2.99")
    assert classify(probe, bind, ours) == UNJUSTIFIED


def _referral(tc: bool, glue: range) -> View:
    """A referral to bigdeleg carrying the A and AAAA glue of the NS names numbered in *glue*."""
    lines = ["id 1", "opcode QUERY", "rcode NOERROR", "flags QR" + (" TC" if tc else ""), ";QUESTION",
             "x.bigdeleg.tricky.example. IN A", ";AUTHORITY"]
    lines += [f"bigdeleg.tricky.example. 3600 IN NS ns{i:02}.bigdeleg.tricky.example." for i in range(1, 11)]
    lines.append(";ADDITIONAL")
    for i in glue:
        lines.append(f"ns{i:02}.bigdeleg.tricky.example. 3600 IN A 192.0.2.{170 + i}")
        lines.append(f"ns{i:02}.bigdeleg.tricky.example. 3600 IN AAAA 2001:db8::{170 + i}")
    return view(dns.message.from_text("\n".join(lines) + "\n", one_rr_per_rrset=True))


def test_tc_on_a_referral_is_justified_only_when_bind_left_in_domain_glue_out() -> None:
    probe = Probe("x.bigdeleg.tricky.example.", "A", UDP_PLAIN)
    ours = _referral(tc=True, glue=range(1, 9))
    assert classify(probe, _referral(tc=False, glue=range(1, 10)), ours) == (
        "referral truncated: in-domain glue does not fit")
    # BIND sent every in-domain glue record: TC on our side would be a bug.
    assert classify(probe, _referral(tc=False, glue=range(1, 11)), ours) == UNJUSTIFIED


# --------------------------------------------------------------------------------------------------
# bugs found by the differential run, each reproduced on its own (BIND's reply is the reference)


@pytest.mark.integration
def test_rrset_with_differing_ttls_in_the_zone_file_is_served_with_one_ttl(servers: Servers) -> None:
    # ttlmix has "60 A 192.0.2.9" then "120 A 192.0.2.10".  RFC 2181 5.2: the TTLs of an RRset
    # must be equal; BIND loads the RRset with the first (here also the lowest) TTL, 60.
    bind, ours = servers.ask(Probe("ttlmix.tricky.example.", "A", UDP_PLAIN, "RFC 2181 5.2"))
    assert {ttl for _text, ttl in bind.answer[0].records} == {60}
    assert ours.answer == bind.answer


@pytest.mark.integration
def test_cname_query_below_a_dname_is_answered_by_the_synthesised_cname(servers: Servers) -> None:
    # x.dnself.tricky.example CNAME: the synthesised CNAME x.dnself -> x.tricky.example matches
    # QTYPE CNAME, so it is the answer (RFC 1034 4.3.2 step 3a); x.tricky.example not existing
    # does not make the reply NXDOMAIN.  BIND, Knot and NSD answer NOERROR with DNAME + CNAME.
    bind, ours = servers.ask(Probe("x.dnself.tricky.example.", "CNAME", UDP_EDNS, "DNAME, QTYPE CNAME"))
    assert bind.rcode == dns.rcode.NOERROR and bind.authority == ()
    assert ours == bind


@pytest.mark.integration
def test_additional_section_does_not_repeat_an_answer_rrset(servers: Servers) -> None:
    # www has A records and "MX 0 www": ANY over TCP puts the A RRset in the answer, and the MX
    # target's address must not be copied again into the additional section.
    _bind, ours = servers.ask(Probe("www.tricky.example.", "ANY", TCP_EDNS, "additional duplicates"))
    assert not set(ours.additional) & set(ours.answer)
