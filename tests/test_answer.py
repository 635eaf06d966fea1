"""The lookup rules of RFC 1034 4.3.2 and later RFCs, one behaviour per test."""

from __future__ import annotations

import dns.flags
import dns.rcode
import pytest
from zonetools import ask, responder_for, rrs, zone_from_text

from secondns.serve.responder import Responder

ZONE = """
$TTL 3600
@       IN SOA ns1 hostmaster 2024010101 7200 900 1209600 300
        IN NS  ns1
        IN NS  ns2.example.net.
        IN MX  10 mail
ns1     IN A   192.0.2.1
mail    IN A   192.0.2.2
        IN AAAA 2001:db8::2
www     IN A   192.0.2.3
        IN A   192.0.2.4
alias   IN CNAME www
chain1  IN CNAME chain2
chain2  IN CNAME www
loop1   IN CNAME loop2
loop2   IN CNAME loop1
dangling IN CNAME nothere
out     IN CNAME www.example.org.
a.b.c   IN TXT "deep"
*.wild  IN A   192.0.2.10
*.wild  IN TXT "wild"
*.cwild IN CNAME www
sub     IN NS  ns.sub
        IN NS  ns.elsewhere.net.
        IN DS  12345 8 2 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
ns.sub  IN A   192.0.2.20
dn      IN DNAME target.example.org.
indn    IN DNAME www.example.com.
_sip._tcp IN SRV 0 5 5060 mail
unk     IN TYPE65280 \\# 4 0a0b0c0d
"""


@pytest.fixture(scope="module")
def responder() -> Responder:
    return responder_for(zone_from_text(ZONE, "example.com."))


def test_positive_answer_is_authoritative(responder: Responder) -> None:
    r = ask(responder, "www.example.com.")
    assert r.rcode() == dns.rcode.NOERROR
    assert r.flags & dns.flags.AA
    assert not r.flags & dns.flags.RA
    assert rrs(r.answer) == ["www.example.com. 3600 IN A 192.0.2.3", "www.example.com. 3600 IN A 192.0.2.4"]
    assert r.authority == []


def test_rrset_order_is_kept(responder: Responder) -> None:
    r = ask(responder, "www.example.com.")
    assert [rd.to_text() for rd in r.answer[0]] == ["192.0.2.3", "192.0.2.4"]


def test_nxdomain_has_soa_with_negative_ttl(responder: Responder) -> None:
    r = ask(responder, "nope.example.com.")
    assert r.rcode() == dns.rcode.NXDOMAIN
    assert r.flags & dns.flags.AA
    assert len(r.authority) == 1
    soa = r.authority[0]
    assert soa.rdtype == dns.rdatatype.SOA
    assert soa.ttl == 300  # RFC 2308: min(SOA TTL 3600, MINIMUM 300)


def test_nodata_has_soa(responder: Responder) -> None:
    r = ask(responder, "www.example.com.", "AAAA")
    assert r.rcode() == dns.rcode.NOERROR
    assert r.answer == []
    assert r.authority[0].rdtype == dns.rdatatype.SOA


def test_empty_non_terminal_is_nodata(responder: Responder) -> None:
    for name in ("b.c.example.com.", "c.example.com."):
        r = ask(responder, name)
        assert r.rcode() == dns.rcode.NOERROR, name
        assert r.answer == []


def test_name_below_leaf_is_nxdomain(responder: Responder) -> None:
    assert ask(responder, "x.www.example.com.").rcode() == dns.rcode.NXDOMAIN


def test_cname_chain_followed(responder: Responder) -> None:
    r = ask(responder, "chain1.example.com.")
    types = [(rr.name.to_text(), dns.rdatatype.to_text(rr.rdtype)) for rr in r.answer]
    assert types == [("chain1.example.com.", "CNAME"), ("chain2.example.com.", "CNAME"),
                     ("www.example.com.", "A")]


def test_cname_loop_terminates(responder: Responder) -> None:
    r = ask(responder, "loop1.example.com.")
    assert r.rcode() == dns.rcode.NOERROR
    assert len(r.answer) == 2


def test_cname_to_missing_name_is_nxdomain(responder: Responder) -> None:
    r = ask(responder, "dangling.example.com.")
    assert r.rcode() == dns.rcode.NXDOMAIN  # RFC 6604: rcode of the last name
    assert r.answer[0].rdtype == dns.rdatatype.CNAME


def test_cname_out_of_zone_stops(responder: Responder) -> None:
    r = ask(responder, "out.example.com.")
    assert rrs(r.answer) == ["out.example.com. 3600 IN CNAME www.example.org."]


def test_cname_query_returns_cname_only(responder: Responder) -> None:
    r = ask(responder, "alias.example.com.", "CNAME")
    assert rrs(r.answer) == ["alias.example.com. 3600 IN CNAME www.example.com."]


def test_wildcard_synthesis(responder: Responder) -> None:
    r = ask(responder, "anything.wild.example.com.")
    assert rrs(r.answer) == ["anything.wild.example.com. 3600 IN A 192.0.2.10"]
    assert r.flags & dns.flags.AA


def test_wildcard_nodata(responder: Responder) -> None:
    r = ask(responder, "x.wild.example.com.", "MX")
    assert r.rcode() == dns.rcode.NOERROR and r.answer == []


def test_wildcard_not_used_below_existing_name(responder: Responder) -> None:
    # RFC 4592 2.2.1: closest encloser is a.b.c (exists), no *.a.b.c: NXDOMAIN
    assert ask(responder, "x.a.b.c.example.com.").rcode() == dns.rcode.NXDOMAIN


def test_wildcard_multiple_labels(responder: Responder) -> None:
    r = ask(responder, "a.b.wild.example.com.", "TXT")
    assert rrs(r.answer) == ['a.b.wild.example.com. 3600 IN TXT "wild"']


def test_wildcard_cname_is_followed(responder: Responder) -> None:
    r = ask(responder, "q.cwild.example.com.")
    assert [rr.rdtype for rr in r.answer] == [dns.rdatatype.CNAME, dns.rdatatype.A]
    assert r.answer[0].name.to_text() == "q.cwild.example.com."


def test_referral_below_cut(responder: Responder) -> None:
    r = ask(responder, "host.sub.example.com.")
    assert r.rcode() == dns.rcode.NOERROR
    assert not r.flags & dns.flags.AA
    assert r.answer == []
    assert rrs(r.authority) == ["sub.example.com. 3600 IN NS ns.elsewhere.net.",
                                "sub.example.com. 3600 IN NS ns.sub.example.com."]
    assert rrs(r.additional) == ["ns.sub.example.com. 3600 IN A 192.0.2.20"]


def test_referral_at_cut(responder: Responder) -> None:
    r = ask(responder, "sub.example.com.", "NS")
    assert not r.flags & dns.flags.AA and r.answer == []
    assert r.authority[0].rdtype == dns.rdatatype.NS


def test_ds_at_cut_answered_from_parent(responder: Responder) -> None:
    r = ask(responder, "sub.example.com.", "DS")
    assert r.flags & dns.flags.AA
    assert r.answer[0].rdtype == dns.rdatatype.DS


def test_glue_is_not_authoritative_data(responder: Responder) -> None:
    r = ask(responder, "ns.sub.example.com.")
    assert not r.flags & dns.flags.AA
    assert r.authority[0].rdtype == dns.rdatatype.NS


def test_dname_synthesis(responder: Responder) -> None:
    r = ask(responder, "x.y.dn.example.com.")
    assert rrs(r.answer) == ["dn.example.com. 3600 IN DNAME target.example.org.",
                             "x.y.dn.example.com. 3600 IN CNAME x.y.target.example.org."]


def test_dname_owner_itself_is_not_redirected(responder: Responder) -> None:
    r = ask(responder, "dn.example.com.", "DNAME")
    assert rrs(r.answer) == ["dn.example.com. 3600 IN DNAME target.example.org."]


def test_dname_into_zone_is_followed(responder: Responder) -> None:
    r = ask(responder, "a.indn.example.com.")
    assert [rr.rdtype for rr in r.answer] == [dns.rdatatype.DNAME, dns.rdatatype.CNAME]
    assert r.rcode() == dns.rcode.NXDOMAIN  # a.www.example.com does not exist


def test_dname_too_long_is_yxdomain() -> None:
    label = "a" * 63
    long_target = f"{label}.{label}.{label}.example.org."
    zone = zone_from_text(ZONE + f"long IN DNAME {long_target}\n", "example.com.")
    qname = f"{'b' * 50}.{'c' * 20}.long.example.com."
    assert ask(responder_for(zone), qname).rcode() == dns.rcode.YXDOMAIN


def test_mx_target_address_in_additional(responder: Responder) -> None:
    r = ask(responder, "example.com.", "MX")
    assert rrs(r.additional) == ["mail.example.com. 3600 IN A 192.0.2.2",
                                 "mail.example.com. 3600 IN AAAA 2001:db8::2"]


def test_srv_target_address_in_additional(responder: Responder) -> None:
    r = ask(responder, "_sip._tcp.example.com.", "SRV")
    assert "mail.example.com. 3600 IN A 192.0.2.2" in rrs(r.additional)


def test_ns_at_apex_has_glue(responder: Responder) -> None:
    r = ask(responder, "example.com.", "NS")
    assert r.flags & dns.flags.AA
    assert rrs(r.additional) == ["ns1.example.com. 3600 IN A 192.0.2.1"]


def test_unknown_type_served_byte_for_byte(responder: Responder) -> None:
    r = ask(responder, "unk.example.com.", "TYPE65280")
    assert r.answer[0][0].to_wire() == bytes.fromhex("0a0b0c0d")


def test_any_over_udp_is_minimal(responder: Responder) -> None:
    r = ask(responder, "mail.example.com.", "ANY")
    assert len(r.answer) == 1  # RFC 8482 4.2


def test_any_over_tcp_is_complete(responder: Responder) -> None:
    r = ask(responder, "mail.example.com.", "ANY", tcp=True)
    assert sorted(dns.rdatatype.to_text(rr.rdtype) for rr in r.answer) == ["A", "AAAA"]


def test_name_outside_zones_refused(responder: Responder) -> None:
    r = ask(responder, "www.example.org.")
    assert r.rcode() == dns.rcode.REFUSED
    assert not r.flags & dns.flags.AA


def test_qname_case_preserved_and_matched(responder: Responder) -> None:
    r = ask(responder, "WwW.ExAmPlE.cOm.")
    assert r.question[0].name.to_text() == "WwW.ExAmPlE.cOm."
    assert len(r.answer[0]) == 2


def test_case_variants_get_their_own_cached_question(responder: Responder) -> None:
    ask(responder, "www.example.com.")
    r = ask(responder, "WWW.EXAMPLE.COM.")
    assert r.question[0].name.to_text() == "WWW.EXAMPLE.COM."


def test_dname_at_the_apex_redirects_every_name_below() -> None:
    # Review finding: find_cut only looked strictly below the origin (RFC 6672 2.3 allows apex DNAME).
    zone = zone_from_text("""
$TTL 300
@ IN SOA ns1.example.net. host.example.net. 1 3600 600 86400 300
  IN NS ns1.example.net.
  IN DNAME example.net.
""", "example.org.")
    r = ask(responder_for(zone), "www.example.org.")
    assert r.rcode() == dns.rcode.NOERROR
    assert rrs(r.answer) == ["example.org. 300 IN DNAME example.net.",
                             "www.example.org. 300 IN CNAME www.example.net."]
    assert ask(responder_for(zone), "example.org.", "DNAME").answer  # the apex itself answers


# --------------------------------------------------------------------------------------------------
# glue in referrals (RFC 9471 3) and the additional section as BIND 9.18 fills it

_GLUE_ZONE = """
$TTL 3600
@        IN SOA ns1 hostmaster 1 7200 900 1209600 300
         IN NS  ns1
ns1      IN A   192.0.2.1
sib      IN NS  ns.sib
ns.sib   IN A   192.0.2.50
         IN AAAA 2001:db8::50
auth     IN NS  ns1
         IN NS  ns.auth
ns.auth  IN A   192.0.2.60
""" + "".join(
    f"big IN NS ns{i:02}.big\nns{i:02}.big IN A 192.0.2.{100 + i}\nns{i:02}.big IN AAAA 2001:db8::{100 + i}\n"
    for i in range(1, 11)
) + "".join(f"few IN NS ns{i:02}.sib\nns{i:02}.sib IN AAAA 2001:db8::{i}\n" for i in range(1, 13)) + """
few      IN NS  ns.few
ns.few   IN A   192.0.2.70
"""


@pytest.fixture(scope="module")
def glue_responder() -> Responder:
    return responder_for(zone_from_text(_GLUE_ZONE, "glue.example."))


def test_in_domain_glue_that_does_not_fit_sets_tc(glue_responder: Responder) -> None:
    # RFC 9471 3.1: ten in-domain NS names with A and AAAA glue do not fit in 512 octets; the
    # glue is required, so the referral says it is incomplete.  (BIND 9.18 sends part and no TC.)
    for kwargs in ({}, {"edns": 0, "payload": 512}):
        r = ask(glue_responder, "x.big.glue.example.", **kwargs)  # type: ignore[arg-type]
        assert r.flags & dns.flags.TC, kwargs
        assert len(r.authority[0]) == 10 and r.additional
    full = ask(glue_responder, "x.big.glue.example.", tcp=True)
    assert not full.flags & dns.flags.TC
    assert len(full.additional) == 20


def test_sibling_glue_that_does_not_fit_is_left_out_without_tc(glue_responder: Responder) -> None:
    # RFC 9471 3.2: sibling glue is optional; the in-domain glue (ns.few) goes first and fits.
    r = ask(glue_responder, "x.few.glue.example.")
    assert not r.flags & dns.flags.TC
    assert "ns.few.glue.example. 3600 IN A 192.0.2.70" in rrs(r.additional)
    assert 1 < len(r.additional) < 13
    assert len(ask(glue_responder, "x.few.glue.example.", tcp=True).additional) == 13


def test_referral_carries_glue_only(glue_responder: Responder) -> None:
    # BIND 9.18 adds the glue below cuts, not ns1's authoritative address (RFC 2181 9: optional).
    r = ask(glue_responder, "x.auth.glue.example.")
    assert rrs(r.additional) == ["ns.auth.glue.example. 3600 IN A 192.0.2.60"]


def test_referral_glue_kept_for_a_512_octet_edns_client(glue_responder: Responder) -> None:
    r = ask(glue_responder, "x.sib.glue.example.", edns=0, payload=512)
    assert rrs(r.additional) == ["ns.sib.glue.example. 3600 IN A 192.0.2.50",
                                 "ns.sib.glue.example. 3600 IN AAAA 2001:db8::50"]


def test_no_additional_for_a_512_octet_edns_client_over_udp(responder: Responder) -> None:
    # BIND 9.18 answers UDP queries with an EDNS buffer of 512 minimally; TCP and plain DNS not.
    assert ask(responder, "example.com.", "MX", edns=0, payload=512).additional == []
    assert len(ask(responder, "example.com.", "MX", edns=0, payload=512, tcp=True).additional) == 2
    assert len(ask(responder, "example.com.", "MX").additional) == 2


def test_no_additional_for_any(responder: Responder) -> None:
    # BIND 9.18 does no additional processing for ANY, over TCP either.
    r = ask(responder, "example.com.", "ANY", tcp=True)
    assert any(rr.rdtype == dns.rdatatype.MX for rr in r.answer)
    assert r.additional == []


def test_no_additional_for_more_than_thirteen_targets() -> None:
    # BIND 9.18 (DNS_RDATASET_MAXADDITIONAL): an RRset of more than 13 records adds nothing.
    lines = "".join(f"m{i:02} IN A 192.0.2.{i}\n" for i in range(14))
    for count, expected in ((13, 13), (14, 0)):
        mx = "".join(f"mx IN MX {i} m{i:02}\n" for i in range(count))
        zone = zone_from_text(ZONE + lines + mx, "example.com.")
        assert len(ask(responder_for(zone), "mx.example.com.", "MX", tcp=True).additional) == expected


def test_wildcard_target_address_in_additional() -> None:
    zone = zone_from_text(ZONE + "wmx IN MX 1 a.wild\n", "example.com.")
    r = ask(responder_for(zone), "wmx.example.com.", "MX")
    assert rrs(r.additional) == ["a.wild.example.com. 3600 IN A 192.0.2.10"]


def test_occluded_target_outside_a_referral_gets_no_address() -> None:
    # Outside a referral, data below a cut is not this zone's to give (BIND: no glue either).
    zone = zone_from_text(ZONE + "@ IN NS ns.sub\n", "example.com.")
    r = ask(responder_for(zone), "example.com.", "NS")
    assert rrs(r.additional) == ["ns1.example.com. 3600 IN A 192.0.2.1"]
