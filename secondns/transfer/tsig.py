"""TSIG (RFC 8945): signing our requests, verifying what primaries send back.

Sans-IO like xfrin: bytes in, bytes out, the clock injected, so every rule
is testable against an independent implementation (dnspython) without a
network.  Only the standard library is used: a TSIG MAC is an HMAC over a
byte string that is easy to build by hand, and a crypto dependency would be
one more thing to keep patched on a server that holds shared secrets.

Three users:

* transfers and SOA probes: ``sign_request`` the query, then feed every
  response message to a ``StreamVerifier`` (the ``AxfrConsumer``
  ``on_message`` hook) and call ``finish()`` once the stream is complete;
* the NOTIFY path: ``verify_request`` a NOTIFY the primary signed, answer it
  through ``sign_response``; when verification fails, ``error_response``
  turns the TsigError into the answer RFC 8945 5.3.2 asks for.

MAC truncation (RFC 8945 5.2.2.1): a received MAC may be shorter than the
hash output down to max(10 octets, half the hash), the RFC's floor, so a
primary configured with a truncating policy still interoperates; a shorter
or longer MAC is FORMERR.  Everything we sign carries the full MAC.

Secrets never appear in a message, a repr or an exception: errors name the
key and algorithm only.
"""

from __future__ import annotations

import hmac
import struct
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from secondns import names, rrtypes
from secondns.config import TsigKey
from secondns.errors import NameError_, TransferError, WireError
from secondns.transfer.xfrin import Message, add_additional, parse_message, rcode_text

# TSIG error codes carried in the TSIG RR's Error field (RFC 8945 3).
BADSIG = 16
BADKEY = 17
BADTIME = 18
BADTRUNC = 22
_ERROR_NAMES = {BADSIG: "BADSIG", BADKEY: "BADKEY", BADTIME: "BADTIME", BADTRUNC: "BADTRUNC"}

# Header RCODEs used for TSIG failures (RFC 8945 5.2).
FORMERR = 1
REFUSED = 5
NOTAUTH = 9

CLASS_ANY = 255
DEFAULT_FUDGE = 300  # RFC 8945 10: 300 s is the recommended fudge
MAX_UNSIGNED = 99  # RFC 8945 5.3.1: at most 99 unsigned messages between signed ones

_RR = struct.Struct("!HHIH")  # type, class, ttl, rdlength
_U16 = struct.Struct("!H")
_TIMERS = struct.Struct("!HIH")  # 48-bit time signed, fudge (RFC 8945 4.3.3)
_CLASS_TTL = struct.Struct("!HI")


@dataclass(frozen=True, slots=True)
class Algorithm:
    """One HMAC algorithm: its config name, canonical wire name and hash."""

    name: str  # as written in the config, e.g. "hmac-sha256"
    wire: bytes  # canonical (lowercase) wire name, RFC 8945 6
    digestmod: str  # hashlib name
    size: int  # full MAC length in octets

    @property
    def min_mac(self) -> int:
        """Shortest truncated MAC accepted (RFC 8945 5.2.2.1)."""
        return max(10, self.size // 2)


def _algorithm(name: str, wire_text: str, digestmod: str, size: int) -> Algorithm:
    return Algorithm(name, names.from_text(wire_text), digestmod, size)


# RFC 8945 6: algorithm names; HMAC-MD5 keeps its historic long name.
ALGORITHMS: dict[str, Algorithm] = {
    a.name: a for a in (
        _algorithm("hmac-sha256", "hmac-sha256.", "sha256", 32),
        _algorithm("hmac-sha384", "hmac-sha384.", "sha384", 48),
        _algorithm("hmac-sha512", "hmac-sha512.", "sha512", 64),
        _algorithm("hmac-sha224", "hmac-sha224.", "sha224", 28),
        _algorithm("hmac-sha1", "hmac-sha1.", "sha1", 20),
        _algorithm("hmac-md5", "hmac-md5.sig-alg.reg.int.", "md5", 16),
    )
}
_BY_WIRE: dict[bytes, Algorithm] = {a.wire: a for a in ALGORITHMS.values()}


class TsigError(TransferError):
    """A TSIG check failed; ``reason`` says which (RFC 8945 5.2 / 5.3).

    ``reason`` is one of BADSIG, BADKEY, BADTIME, FORMERR, UNSIGNED, or the
    TSIG error name the peer sent when ``remote`` is True (the primary
    rejected *our* signature).  ``record`` is the TSIG RR that failed, when
    it could be decoded, and ``request`` the verified request for a BADTIME
    failure: enough for ``error_response`` to build the RFC 8945 5.3.2 reply.
    """

    def __init__(self, reason: str, message: str, *, remote: bool = False,
                 record: TsigRR | None = None, request: VerifiedRequest | None = None) -> None:
        self.reason = reason
        self.remote = remote
        self.record = record
        self.request = request
        super().__init__(message)


def _fail(reason: str, detail: str, record: TsigRR | None = None,
          request: VerifiedRequest | None = None) -> TsigError:
    return TsigError(reason, f"TSIG {reason}: {detail}", record=record, request=request)


@dataclass(frozen=True, slots=True)
class TsigRR:
    """A decoded TSIG RR (RFC 8945 4.2); names are wire form, case preserved."""

    key_name: bytes
    algorithm: bytes
    time_signed: int
    fudge: int
    mac: bytes
    original_id: int
    error: int
    other: bytes

    def rdata(self) -> bytes:
        """Encode the RDATA; the algorithm name is never compressed (RFC 8945 4.2)."""
        return b"".join((
            self.algorithm,
            _TIMERS.pack((self.time_signed >> 32) & 0xFFFF, self.time_signed & 0xFFFFFFFF, self.fudge),
            _U16.pack(len(self.mac)), self.mac,
            struct.pack("!HHH", self.original_id, self.error, len(self.other)), self.other,
        ))

    def to_wire(self) -> bytes:
        """The whole RR: owner = key name, CLASS ANY, TTL 0 (RFC 8945 4.2)."""
        rdata = self.rdata()
        return self.key_name + _RR.pack(rrtypes.TSIG, CLASS_ANY, 0, len(rdata)) + rdata


@dataclass(frozen=True, slots=True)
class VerifiedRequest:
    """A request whose TSIG verified: what signing the response needs (RFC 8945 5.3)."""

    key: TsigKey
    mac: bytes
    time_signed: int
    fudge: int
    original_id: int


# --------------------------------------------------------------------------
# Building blocks


def algorithm_of(key: TsigKey) -> Algorithm:
    """The Algorithm for a configured key; ValueError names an unknown one."""
    text = key.algorithm.lower().rstrip(".")
    if text == "hmac-md5.sig-alg.reg.int":
        text = "hmac-md5"
    alg = ALGORITHMS.get(text)
    if alg is None:
        raise ValueError(f"TSIG key {key.name!r}: unsupported algorithm {key.algorithm!r}")
    return alg


def key_name_wire(key: TsigKey) -> bytes:
    """The key's name as an absolute DNS name in wire form ("xfr-key" -> "xfr-key.")."""
    text = key.name if key.name.endswith(".") else key.name + "."
    try:
        return names.from_text(text)
    except NameError_ as exc:
        raise ValueError(f"TSIG key name {key.name!r} is not a valid DNS name: {exc}") from None


def _error_name(error: int) -> str:
    return _ERROR_NAMES.get(error) or rcode_text(error)


def _timers(time_signed: int, fudge: int) -> bytes:
    return _TIMERS.pack((time_signed >> 32) & 0xFFFF, time_signed & 0xFFFFFFFF, fudge)


def _variables(key_name: bytes, rr: TsigRR) -> bytes:
    """RFC 8945 4.3.3: the TSIG variables, names in canonical (lowercase) wire form."""
    return b"".join((
        key_name.lower(), _CLASS_TTL.pack(CLASS_ANY, 0), rr.algorithm.lower(),
        _timers(rr.time_signed, rr.fudge), struct.pack("!HH", rr.error, len(rr.other)), rr.other,
    ))


def _prior(mac: bytes) -> bytes:
    """RFC 8945 4.3.1/4.3.2: a request or prior MAC is digested with its 16-bit length."""
    return _U16.pack(len(mac)) + mac if mac else b""


def _without_tsig(raw: bytes, offset: int, original_id: int) -> bytes:
    """RFC 8945 4.3.3/5.4: the message as signed: TSIG removed, ARCOUNT - 1, original ID."""
    (arcount,) = _U16.unpack_from(raw, 10)
    return _U16.pack(original_id) + raw[2:10] + _U16.pack(arcount - 1) + raw[12:offset]


def parse_tsig_rdata(key_name: bytes, rdata: bytes) -> TsigRR:
    """Decode TSIG RDATA (RFC 8945 4.2); any malformation is a FORMERR TsigError."""
    try:
        algorithm, pos = names.read_name(rdata, 0)
    except WireError as exc:
        raise _fail("FORMERR", f"bad algorithm name in the TSIG record: {exc}") from None
    try:
        hi, lo, fudge, mac_size = struct.unpack_from("!HIHH", rdata, pos)
        pos += 10
        mac = rdata[pos:pos + mac_size]
        pos += mac_size
        original_id, error, other_len = struct.unpack_from("!HHH", rdata, pos)
    except struct.error:
        raise _fail("FORMERR", "TSIG record is truncated") from None
    pos += 6
    other = rdata[pos:pos + other_len]
    if len(mac) != mac_size or pos + other_len != len(rdata):
        raise _fail("FORMERR", "TSIG record length does not match its fields")
    return TsigRR(key_name, algorithm, (hi << 32) | lo, fudge, mac, original_id, error, other)


def _record_of(name: bytes, rclass: int, ttl: int, rdata: bytes) -> TsigRR:
    rr = parse_tsig_rdata(name, rdata)
    if rclass != CLASS_ANY or ttl != 0:
        # RFC 8945 4.2: CLASS MUST be ANY, TTL MUST be 0; neither is covered by the MAC.
        raise _fail("FORMERR", f"TSIG record has class {rclass} and TTL {ttl}, expected ANY and 0", rr)
    return rr


def _check_mac_length(rr: TsigRR, alg: Algorithm) -> None:
    """RFC 8945 5.2.2.1: longer than the hash or below the truncation floor is FORMERR."""
    n = len(rr.mac)
    if n > alg.size or n < alg.min_mac:
        raise _fail("FORMERR", f"{alg.name} MAC of {n} octets; accepted are {alg.min_mac}..{alg.size} "
                               "(RFC 8945 5.2.2.1)", rr)


def _mac_matches(computed: bytes, received: bytes) -> bool:
    """Constant-time comparison of the received (possibly truncated) MAC."""
    return hmac.compare_digest(computed[:len(received)], received)


def _skew_text(peer: str, skew: int, fudge: int | None = None) -> str:
    direction = "ahead of" if skew > 0 else "behind"
    tail = f" (fudge {fudge})" if fudge is not None else ""
    return f"{peer}'s clock is {abs(skew)} s {direction} ours{tail}"


def _check_time(rr: TsigRR, now: int, peer: str, request: VerifiedRequest | None = None) -> None:
    """RFC 8945 5.2.3: Time Signed must be within Fudge seconds of our clock."""
    skew = rr.time_signed - now
    if abs(skew) > rr.fudge:
        raise _fail("BADTIME", _skew_text(peer, skew, rr.fudge), rr, request)


def _name_text(name: bytes) -> str:
    try:
        return names.to_text(name)
    except (IndexError, NameError_):
        return repr(name)


# --------------------------------------------------------------------------
# Client side: our requests, the primary's responses


def sign_request(msg: bytes, key: TsigKey, *, now: float | None = None,
                 fudge: int = DEFAULT_FUDGE) -> tuple[bytes, bytes]:
    """Sign an unsigned request; returns (signed message, request MAC).

    The MAC covers the message exactly as given followed by the TSIG
    variables (RFC 8945 4.3.3), then the TSIG RR is appended as the last
    additional record (RFC 8945 5.1).  Keep the MAC: the responses' MACs
    chain from it (RFC 8945 4.3.1).
    """
    if len(msg) < 12:
        raise WireError(f"message of {len(msg)} octets is shorter than the 12-octet header")
    alg = algorithm_of(key)
    key_name = key_name_wire(key)
    signed_at = int(time.time() if now is None else now)
    (msg_id,) = _U16.unpack_from(msg, 0)
    rr = TsigRR(key_name, alg.wire, signed_at, fudge, b"", msg_id, 0, b"")
    mac = hmac.new(key.secret, msg + _variables(key_name, rr), alg.digestmod).digest()
    rr = TsigRR(key_name, alg.wire, signed_at, fudge, mac, msg_id, 0, b"")
    return add_additional(msg, rr.to_wire()), mac


class StreamVerifier:
    """Verifies the responses to one signed request (RFC 8945 5.3.1).

    Works for a lone SOA response and for every message of an AXFR/IXFR
    stream: pass ``verify`` as the ``AxfrConsumer`` ``on_message`` hook,
    and call ``finish()`` after the last message.  The first message must be
    signed; later ones may be unsigned, up to 99 in a row, and are covered
    by the next signed message's MAC.  The last one must be signed, which
    only ``finish()`` can tell.
    """

    def __init__(self, key: TsigKey, request_mac: bytes, *,
                 now_fn: Callable[[], float] = time.time, peer: str = "primary") -> None:
        self._key = key
        self._alg = algorithm_of(key)
        self._key_name = key_name_wire(key).lower()
        self._now_fn = now_fn
        self._peer = peer
        self._prior = request_mac
        self._digest: hmac.HMAC | None = None  # running digest after the first signed message
        self.messages = 0
        self.signed = 0
        self.unsigned_run = 0

    def __repr__(self) -> str:
        return (f"StreamVerifier(key={self._key.name!r}, algorithm={self._alg.name!r}, "
                f"messages={self.messages}, signed={self.signed})")

    def verify(self, raw: bytes, msg: Message) -> None:
        """Check one response; raises TsigError on the first failure."""
        self.messages += 1
        tsig = msg.tsig
        if tsig is None:
            self._unsigned(raw, msg)
            return
        rr = _record_of(tsig.name, tsig.rclass, tsig.ttl, tsig.rdata)
        if rr.error:
            raise self._rejected(rr)
        if tsig.name.lower() != self._key_name:
            raise _fail("BADKEY", f"response signed with key {_name_text(tsig.name)!r} "
                                  f"(expected {names.to_text(self._key_name)!r})", rr)
        if rr.algorithm.lower() != self._alg.wire:
            raise _fail("BADKEY", f"response signed with algorithm {_name_text(rr.algorithm)!r} "
                                  f"(expected {names.to_text(self._alg.wire)!r})", rr)
        _check_mac_length(rr, self._alg)
        body = _without_tsig(raw, tsig.offset, rr.original_id)
        digest = self._digest
        if digest is None:
            # RFC 8945 4.3.1: request MAC, the response, all the TSIG variables.
            digest = hmac.new(self._key.secret, _prior(self._prior), self._alg.digestmod)
            digest.update(body)
            digest.update(_variables(tsig.name, rr))
        else:
            # RFC 8945 4.3.2/5.3.1: prior MAC and unsigned messages already in; timers only.
            digest.update(body)
            digest.update(_timers(rr.time_signed, rr.fudge))
        if not _mac_matches(digest.digest(), rr.mac):
            where = "" if self.messages == 1 else f" on message {self.messages}"
            raise _fail("BADSIG", f"MAC does not verify{where} (wrong secret or altered message)", rr)
        _check_time(rr, int(self._now_fn()), self._peer)
        self._digest = hmac.new(self._key.secret, _prior(rr.mac), self._alg.digestmod)
        self._prior = rr.mac
        self.signed += 1
        self.unsigned_run = 0

    def _unsigned(self, raw: bytes, msg: Message) -> None:
        if self.messages == 1:
            answered = f" (it answered {rcode_text(msg.rcode)})" if msg.rcode else ""
            raise _fail("UNSIGNED", f"the {self._peer}'s response is not signed{answered}")
        self.unsigned_run += 1
        if self.unsigned_run > MAX_UNSIGNED:
            raise _fail("UNSIGNED", f"more than {MAX_UNSIGNED} unsigned messages in a row "
                                    "(RFC 8945 5.3.1)")
        assert self._digest is not None  # the first message was signed
        # RFC 8945 5.3.1: unsigned messages enter the next MAC whole, as received.
        self._digest.update(raw)

    def _rejected(self, rr: TsigRR) -> TsigError:
        """RFC 8945 5.3.2: the primary reports, in its TSIG RR, why it rejected ours."""
        name = _error_name(rr.error)
        detail = ""
        if rr.error == BADTIME and len(rr.other) == 6:
            # RFC 8945 5.2.3: Other Data carries the primary's clock.
            hi, lo = struct.unpack("!HI", rr.other)
            detail = f" ({_skew_text(self._peer, ((hi << 32) | lo) - int(self._now_fn()))})"
        return TsigError(name, f"{self._peer} rejected our TSIG: {name}{detail}", remote=True, record=rr)

    def finish(self) -> None:
        """Call after the last message: it must have been signed (RFC 8945 5.3.1)."""
        if self.messages == 0:
            raise _fail("UNSIGNED", f"no response from the {self._peer} was verified")
        if self.unsigned_run:
            raise _fail("UNSIGNED", f"the last {self.unsigned_run} message(s) of the stream are not "
                                    "signed (RFC 8945 5.3.1)")


def verify_response(raw: bytes, key: TsigKey, request_mac: bytes, *, now: float | None = None,
                    peer: str = "primary") -> None:
    """Verify a lone response (an SOA probe's reply): one StreamVerifier, one message.

    A malformed message raises WireError, as ``parse_soa_response`` would.
    """
    clock: Callable[[], float] = time.time if now is None else (lambda: now)
    verifier = StreamVerifier(key, request_mac, now_fn=clock, peer=peer)
    verifier.verify(raw, parse_message(raw))
    verifier.finish()


# --------------------------------------------------------------------------
# Server side: a NOTIFY the primary signed, and our answer to it


def keyring(keys: Mapping[str, TsigKey] | list[TsigKey]) -> dict[bytes, TsigKey]:
    """Keys by lowercased wire name, the form ``verify_request`` looks them up in."""
    values = list(keys.values()) if isinstance(keys, Mapping) else keys
    return {key_name_wire(k).lower(): k for k in values}


def _locate_tsig(raw: bytes) -> tuple[int, bytes, int, int, bytes] | None:
    """(offset, owner, class, ttl, rdata) of the TSIG RR, which must be last (RFC 8945 5.1)."""
    if len(raw) < 12:
        raise _fail("FORMERR", f"message of {len(raw)} octets is shorter than the 12-octet header")
    qdcount, ancount, nscount, arcount = struct.unpack_from("!4H", raw, 4)
    total = ancount + nscount + arcount
    pos = 12
    found: tuple[int, bytes, int, int, bytes] | None = None
    try:
        for _ in range(qdcount):
            pos = names.read_name(raw, pos)[1] + 4
            if pos > len(raw):
                raise WireError("question runs past the end of the message")
        for index in range(total):
            start = pos
            owner, pos = names.read_name(raw, pos)
            rtype, rclass, ttl, rdlen = _RR.unpack_from(raw, pos)
            pos += 10 + rdlen
            if pos > len(raw):
                raise WireError("record data runs past the end of the message")
            if rtype == rrtypes.TSIG:
                if index != total - 1 or index < ancount + nscount:
                    raise WireError("TSIG record is not the last additional record (RFC 8945 5.1)")
                found = (start, owner, rclass, ttl, raw[pos - rdlen:pos])
    except (WireError, struct.error) as exc:
        reason = str(exc) if isinstance(exc, WireError) else "record header runs past the end"
        raise _fail("FORMERR", f"malformed request: {reason}") from None
    if pos != len(raw):
        raise _fail("FORMERR", f"{len(raw) - pos} octets after the last record")
    return found


def verify_request(raw: bytes, keys: TsigKey | Mapping[bytes, TsigKey], *, now: float | None = None,
                   peer: str = "sender") -> VerifiedRequest:
    """Verify a signed request (a NOTIFY from a primary), in RFC 8945 5.2 order.

    *keys* is the one key this peer must use, or a ``keyring()`` of every
    acceptable key.  Checks run key (BADKEY), MAC (BADSIG), then time
    (BADTIME), so an unauthenticated sender learns nothing about our clock.
    A BADTIME error carries the VerifiedRequest: its answer is signed.
    """
    located = _locate_tsig(raw)
    if located is None:
        raise _fail("UNSIGNED", "request is not signed")
    offset, owner, rclass, ttl, rdata = located
    rr = _record_of(owner, rclass, ttl, rdata)
    lower = owner.lower()
    if isinstance(keys, TsigKey):
        key = keys
        expected = key_name_wire(keys).lower()
        if lower != expected:
            raise _fail("BADKEY", f"request signed with key {_name_text(owner)!r} "
                                  f"(expected {names.to_text(expected)!r})", rr)
    else:
        found = keys.get(lower)
        if found is None:
            raise _fail("BADKEY", f"request signed with unknown key {_name_text(owner)!r}", rr)
        key = found
    alg = algorithm_of(key)
    if rr.algorithm.lower() != alg.wire:
        raise _fail("BADKEY", f"request signed with algorithm {_name_text(rr.algorithm)!r} "
                              f"(key {_name_text(owner)!r} uses {names.to_text(alg.wire)!r})", rr)
    _check_mac_length(rr, alg)
    body = _without_tsig(raw, offset, rr.original_id)
    computed = hmac.new(key.secret, body + _variables(owner, rr), alg.digestmod).digest()
    if not _mac_matches(computed, rr.mac):
        raise _fail("BADSIG", "MAC does not verify (wrong secret or altered message)", rr)
    verified = VerifiedRequest(key, rr.mac, rr.time_signed, rr.fudge, rr.original_id)
    _check_time(rr, int(time.time() if now is None else now), peer, verified)
    return verified


def sign_response(response: bytes, key: TsigKey, request_mac: bytes, *, error: int = 0,
                  now: float | None = None, fudge: int = DEFAULT_FUDGE,
                  time_signed: int | None = None, other: bytes = b"") -> bytes:
    """Sign a response to a verified request (RFC 8945 4.3.1).

    The MAC covers the request MAC, so the response is bound to the
    request.  *time_signed* and *other* exist for the BADTIME answer
    (RFC 8945 5.2.3); ``error_response`` fills them in.
    """
    if len(response) < 12:
        raise WireError(f"message of {len(response)} octets is shorter than the 12-octet header")
    alg = algorithm_of(key)
    key_name = key_name_wire(key)
    signed_at = int(time.time() if now is None else now) if time_signed is None else time_signed
    (msg_id,) = _U16.unpack_from(response, 0)
    rr = TsigRR(key_name, alg.wire, signed_at, fudge, b"", msg_id, error, other)
    mac = hmac.new(key.secret, _prior(request_mac) + response + _variables(key_name, rr),
                   alg.digestmod).digest()
    rr = TsigRR(key_name, alg.wire, signed_at, fudge, mac, msg_id, error, other)
    return add_additional(response, rr.to_wire())


def sign_stream_message(message: bytes, key: TsigKey, prior_mac: bytes, first: bool, *,
                        now: float | None = None, fudge: int = DEFAULT_FUDGE) -> tuple[bytes, bytes]:
    """Sign one message of a multi-message answer (AXFR/IXFR out); returns (signed, its MAC).

    RFC 8945 5.3.1: the first message is signed as any response (request MAC,
    message, all TSIG variables); each later one digests the prior MAC, the
    message and the timers only.  We sign every message, which the RFC allows
    and which lets the client verify as it reads.
    """
    alg = algorithm_of(key)
    key_name = key_name_wire(key)
    signed_at = int(time.time() if now is None else now)
    (msg_id,) = _U16.unpack_from(message, 0)
    if first:
        variables = _variables(key_name, TsigRR(key_name, alg.wire, signed_at, fudge, b"", msg_id, 0, b""))
    else:
        variables = _timers(signed_at, fudge)
    mac = hmac.new(key.secret, _prior(prior_mac) + message + variables, alg.digestmod).digest()
    rr = TsigRR(key_name, alg.wire, signed_at, fudge, mac, msg_id, 0, b"")
    return add_additional(message, rr.to_wire()), mac


def unsigned_error_tsig(response: bytes, key_name: bytes, algorithm: bytes, error: int, *,
                        fudge: int = DEFAULT_FUDGE, now: float | None = None) -> bytes:
    """Append a TSIG RR with an empty MAC and *error* set (RFC 8945 5.3.2).

    The answer to BADKEY and BADSIG: it must not be signed, since we either
    lack the key or the request did not prove knowledge of it.
    """
    if len(response) < 12:
        raise WireError(f"message of {len(response)} octets is shorter than the 12-octet header")
    (msg_id,) = _U16.unpack_from(response, 0)
    signed_at = int(time.time() if now is None else now)
    rr = TsigRR(key_name, algorithm, signed_at, fudge, b"", msg_id, error, b"")
    return add_additional(response, rr.to_wire())


def _with_rcode(response: bytes, rcode: int) -> bytes:
    """Set the header RCODE (RFC 1035 4.1.1); TSIG failures fit in its four bits."""
    return response[:3] + bytes([(response[3] & 0xF0) | rcode]) + response[4:]


def error_response(response: bytes, err: TsigError, *, now: float | None = None) -> bytes:
    """Turn *response* (built for the request) into the answer to a failed ``verify_request``.

    RFC 8945 5.2/5.3.2: BADKEY and BADSIG answer NOTAUTH with an unsigned
    TSIG RR carrying the error; BADTIME answers NOTAUTH signed, with the
    request's Time Signed and our clock in Other Data so the sender can
    verify it and see the skew (RFC 8945 5.2.3); a malformed TSIG answers
    FORMERR without TSIG.  UNSIGNED (a key is required but the request has
    none) is policy, not protocol: REFUSED, as for any unauthorised NOTIFY.
    """
    if len(response) < 12:
        raise WireError(f"message of {len(response)} octets is shorter than the 12-octet header")
    if err.remote:
        raise ValueError("error_response is for errors in a request we received")
    if err.reason == "BADTIME" and err.request is not None:
        req = err.request
        clock = int(time.time() if now is None else now)
        other = struct.pack("!HI", (clock >> 32) & 0xFFFF, clock & 0xFFFFFFFF)
        return sign_response(_with_rcode(response, NOTAUTH), req.key, req.mac, error=BADTIME,
                             fudge=req.fudge, time_signed=req.time_signed, other=other)
    if err.reason in ("BADKEY", "BADSIG") and err.record is not None:
        code = BADKEY if err.reason == "BADKEY" else BADSIG
        rec = err.record
        return unsigned_error_tsig(_with_rcode(response, NOTAUTH), rec.key_name, rec.algorithm, code,
                                   fudge=rec.fudge, now=now)
    if err.reason == "UNSIGNED":
        return _with_rcode(response, REFUSED)
    return _with_rcode(response, FORMERR)
