"""DNS server cookies (RFC 7873, interoperable form of RFC 9018): SipHash-2-4 and the checks.

Used by ``Responder.cookie_answer``.  Pure Python because hashlib has
no SipHash; one server cookie costs ~22 us on the reference VM (timeit, 2 busy cores), many
times a whole cached answer, so the serving side memoises its answer per (client, option) and
re-uses a server cookie until it is half an hour old (RFC 9018 4.3); a flood of queries with
made-up cookies still costs that much each until RRL exists.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Sequence

_M = 0xFFFFFFFFFFFFFFFF
_KEY = struct.Struct("<QQ")
_OUT = struct.Struct("<Q")

VERSION = 1  # RFC 9018 4.1
CLIENT_COOKIE_LEN = 8  # RFC 7873 4
SERVER_COOKIE_LEN = 16  # RFC 9018 4: version, reserved, timestamp, hash
MAX_AGE = 3600  # RFC 9018 4.3: older server cookies are not accepted...
MAX_FUTURE = 300  # ...nor those from more than 5 minutes ahead
REFRESH_AGE = 1800  # RFC 9018 4.3: a cookie older than half an hour is replaced in the answer


def _sipround(v0: int, v1: int, v2: int, v3: int) -> tuple[int, int, int, int]:
    """One SipRound: the add-rotate-xor network on the four 64-bit state words."""
    v0 = (v0 + v1) & _M
    v1 = ((v1 << 13) | (v1 >> 51)) & _M ^ v0
    v0 = ((v0 << 32) | (v0 >> 32)) & _M
    v2 = (v2 + v3) & _M
    v3 = ((v3 << 16) | (v3 >> 48)) & _M ^ v2
    v0 = (v0 + v3) & _M
    v3 = ((v3 << 21) | (v3 >> 43)) & _M ^ v0
    v2 = (v2 + v1) & _M
    v1 = ((v1 << 17) | (v1 >> 47)) & _M ^ v2
    v2 = ((v2 << 32) | (v2 >> 32)) & _M
    return v0, v1, v2, v3


def siphash24(key: bytes, data: bytes) -> bytes:
    """SipHash-2-4 (Aumasson and Bernstein, 2012) of *data* under the 16-octet *key*, 8 octets
    little-endian as the reference implementation outputs it."""
    k0, k1 = _KEY.unpack(key)
    v0 = k0 ^ 0x736F6D6570736575
    v1 = k1 ^ 0x646F72616E646F6D
    v2 = k0 ^ 0x6C7967656E657261
    v3 = k1 ^ 0x7465646279746573
    n = len(data)
    whole = n - n % 8
    words = list(struct.unpack_from(f"<{n // 8}Q", data))
    # The last word: the remaining octets, zero-padded, with n mod 256 in the top octet.
    words.append(int.from_bytes(data[whole:] + bytes(7 - (n - whole)) + bytes((n & 0xFF,)), "little"))
    for m in words:
        v3 ^= m
        for _ in range(2):
            v0, v1, v2, v3 = _sipround(v0, v1, v2, v3)
        v0 ^= m
    v2 ^= 0xFF
    for _ in range(4):
        v0, v1, v2, v3 = _sipround(v0, v1, v2, v3)
    return _OUT.pack(v0 ^ v1 ^ v2 ^ v3)


def client_ip(host: str) -> bytes:
    """The Client-IP input of RFC 9018 4.4: 4 or 16 octets."""
    return ipaddress.ip_address(host).packed


def server_cookie(secret: bytes, client_cookie: bytes, ip: bytes, timestamp: int) -> bytes:
    """RFC 9018 4.4: Version | Reserved | Timestamp | SipHash-2-4(Client Cookie | Version |
    Reserved | Timestamp | Client-IP) under the 16-octet *secret*."""
    head = bytes((VERSION, 0, 0, 0)) + (timestamp & 0xFFFFFFFF).to_bytes(4, "big")
    return head + siphash24(secret, client_cookie + head + ip)


def valid(secrets: Sequence[bytes], client_cookie: bytes, cookie: bytes, ip: bytes, now: int) -> bool:
    """Whether *cookie* (the server part a client sent back) is one we made for this client
    with any of *secrets* (current first, then old ones kept during a rotation), and is neither
    older than an hour nor more than five minutes ahead (RFC 9018 4.3; serial arithmetic on
    the 32-bit timestamp, RFC 1982)."""
    if len(cookie) != SERVER_COOKIE_LEN or cookie[0] != VERSION or cookie[1:4] != b"\x00\x00\x00":
        return False
    timestamp = int.from_bytes(cookie[4:8], "big")
    age = (now - timestamp) & 0xFFFFFFFF
    if age >= 0x80000000:
        age -= 0x100000000
    if age > MAX_AGE or age < -MAX_FUTURE:
        return False
    data = client_cookie + cookie[:8] + ip
    mac = cookie[8:]
    return any(siphash24(secret, data) == mac for secret in secrets)
