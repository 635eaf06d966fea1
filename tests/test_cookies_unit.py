"""SipHash-2-4 and RFC 9018 server cookies against published vectors.

SipHash vectors: the reference implementation's (key 00..0f, message 00..n-1) and the paper's
15-octet example; the cookie vector is RFC 9018 Appendix A.1.
"""

from __future__ import annotations

from secondns.serve import cookies

KEY = bytes(range(16))
SECRET = bytes.fromhex("e5e973e5a6b2a43f48e7dc849e37bfcf")
CLIENT = bytes.fromhex("2464c4abcf10c957")
IP = cookies.client_ip("198.51.100.100")
STAMP = 1559731985


def test_siphash24_reference_vectors() -> None:
    assert cookies.siphash24(KEY, b"").hex() == "310e0edd47db6f72"
    assert cookies.siphash24(KEY, b"\x00").hex() == "fd67dc93c539f874"
    assert cookies.siphash24(KEY, bytes(range(2))).hex() == "5a4fa9d909806c0d"
    # The paper's example, a129ca6149be45e5 as a 64-bit number, little-endian on the wire.
    assert cookies.siphash24(KEY, bytes(range(15))).hex() == "e545be4961ca29a1"


def test_server_cookie_matches_rfc9018_appendix_a1() -> None:
    made = cookies.server_cookie(SECRET, CLIENT, IP, STAMP)
    assert made.hex() == "010000005cf79f111f8130c3eee29480"


def test_valid_accepts_ours_and_old_secrets_within_the_hour_only() -> None:
    made = cookies.server_cookie(SECRET, CLIENT, IP, STAMP)
    assert cookies.valid([SECRET], CLIENT, made, IP, STAMP + 3600)
    assert cookies.valid([bytes(16), SECRET], CLIENT, made, IP, STAMP)  # rotated: old secret second
    assert not cookies.valid([SECRET], CLIENT, made, IP, STAMP + 3601)  # RFC 9018 4.3: too old
    assert not cookies.valid([SECRET], CLIENT, made, IP, STAMP - 301)  # too far ahead
    assert not cookies.valid([bytes(16)], CLIENT, made, IP, STAMP)  # another secret
    assert not cookies.valid([SECRET], CLIENT, made, cookies.client_ip("198.51.100.101"), STAMP)
    assert not cookies.valid([SECRET], bytes(8), made, IP, STAMP)  # another client cookie
    assert not cookies.valid([SECRET], CLIENT, made[:15], IP, STAMP)


def test_the_timestamp_wraps_as_a_serial_number() -> None:
    made = cookies.server_cookie(SECRET, CLIENT, IP, 0xFFFFFF00)
    assert cookies.valid([SECRET], CLIENT, made, IP, 0x100)  # RFC 1982: 512 s later, wrapped
