"""From request bytes to response bytes: dispatch, zone choice, caching.

The network layer calls ``Responder.respond`` for every message it could not
answer from ``AnswerCache`` by itself.  The cache is keyed by the case-folded
question and the flags the answer depends on (``wire.cache_key``), so a hit
costs a find, a lower, one dict probe and four concatenations; anything whose
answer depends on more (the source address, a TSIG signature, a NOTIFY) is
never cached.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from secondns import rrtypes
from secondns.config import RateLimitConfig, TsigKey
from secondns.names import MAX_NAME, from_text
from secondns.registry import Registry
from secondns.serve import cookies, rrl
from secondns.serve.answer import Answer, answer_query, plain_nxdomain
from secondns.serve.stats import IN_NOTIFY, IN_QUERY, IN_TSIG, INTERNAL_ERROR_PLACES, ServingStats
from secondns.transfer import tsig
from secondns.wire import (
    AA,
    BADVERS,
    CD,
    EDNS_COOKIE,
    EDNS_EXPIRE,
    EDNS_NSID,
    FORMERR,
    KEY_COOKIE,
    KEY_FLAGS,
    KEY_PAYLOAD,
    KEY_PAYLOAD_BIG,
    NOERROR,
    NOTAUTH,
    NOTIMP,
    NXDOMAIN,
    OPCODE_NOTIFY,
    OPCODE_QUERY,
    OPCODE_UPDATE,
    QR,
    RD,
    REFUSED,
    SERVFAIL,
    FormatError,
    Query,
    ResponseWriter,
    cache_key,
    error_response,
    opt_record,
    parse_query,
)

UDP = 0
TCP = 1

log = logging.getLogger("secondns")

# Room kept for the TSIG record of a signed answer (RFC 8945 5.3: the signed reply must fit):
# key and algorithm names up to ~60 octets each, a SHA-512 MAC, fixed fields.
_TSIG_ROOM = 200

Finaliser = Callable[[bytes], bytes]
NotifyHandler = Callable[[Query, tuple[str, int]], tuple[int, Finaliser | None]]
"""Takes a parsed NOTIFY and its source; returns the rcode to answer with and an
optional finaliser for the encoded answer (TSIG signing, RFC 8945 5.3)."""

# Opcodes whose error answers echo the question (the others get the bare header, as BIND's).
_ECHO_QUESTION = (OPCODE_QUERY, OPCODE_NOTIFY, OPCODE_UPDATE)

_CHAOS_IDENTITY = frozenset({from_text("id.server."), from_text("hostname.bind.")})
_CHAOS_VERSION = frozenset({from_text("version.bind."), from_text("version.server.")})


@dataclass(frozen=True)
class ServeSettings:
    """The server-wide knobs the answer path needs."""

    udp_max_payload: int = 1232
    identity: str | None = None
    version: str | None = None
    cache_bytes: int = 64 << 20  # server.answer-cache-size, per serving process
    # RFC 9018 server-cookie secrets, current first; empty: COOKIE options are ignored.
    cookie_secrets: tuple[bytes, ...] = ()
    rate_limit: RateLimitConfig | None = None  # server.rate-limit (serve/rrl.py)


_ENTRY_OVERHEAD = 350  # octets of Python objects per entry (key, tuple, dict slot), measured with
# tracemalloc by tests/test_cache.py
_COOKIE_MEMO_MAX = 65536  # (client, COOKIE option) pairs remembered; cleared when full
_COOKIE_ANSWER_LEN = cookies.CLIENT_COOKIE_LEN + cookies.SERVER_COOKIE_LEN
_UNDECIDED = -1  # Responder._verdict before an RRL verdict is taken
_NX_ACCOUNTS_MAX = 4096  # zones whose NXDOMAIN account is remembered; cleared when full
_DEP_OVERHEAD = 150  # per name in the dependency index (a dict slot; a set for names shared)

Entry = tuple[bytes, bytes, bytes | None, tuple[bytes, ...], int, bytes]
"""An answer-cache entry, see AnswerCache."""


class AnswerCache:
    """Responses by question (``wire.cache_key``), bounded in octets, forgettable by name.

    An entry is ``(head, tail, zone, deps, size, account)``: the response's header after the
    ID (``head``), everything after the question (``tail``) and its response-rate-limiting
    account (``rrl.account``).  A hit sends the client's ID
    and question between them, so the client sees its own qname case in the question and
    in every owner compressed to it (0xC00C), as BIND answers a 0x20-randomised resolver.

    Eviction is a segmented FIFO: new entries go to ``probation``; a second request moves
    one to ``protected`` (at most 80% of the octets), whose oldest entries fall back to
    probation when it is full and return on their next hit.  A flood of one-off names
    (a random-subdomain attack) only churns probation, so what is asked repeatedly stays.
    A hit in protected costs one dict probe and no bookkeeping.  Both segments are
    OrderedDicts: taking the oldest entry of a plain dict that entries keep leaving from the
    front (``next(iter(d))``) scans the deleted slots before it, up to the whole table until the
    next resize; under a random-subdomain flood through a full cache that was ~35 us per
    answer stored (bench/README.md, "An attack in a bottle").

    Each entry remembers the zone names its answer read (``Answer.deps``), so an IXFR
    forgets only the responses that depend on a name it changed; the index is pruned as
    entries leave, so it is bounded with the cache.

    ``memos`` are the UDP listeners' memos of whole responses (serve/server.py
    ``UDPServer.recent``): emptied whenever anything is forgotten or cleared, since they hold
    answers without their dependencies.
    """

    __slots__ = ("_deps", "_max", "_max_protected", "_protected_size", "discard", "memos",
                 "probation", "protected", "size")

    def __init__(self, max_bytes: int) -> None:
        self.protected: OrderedDict[bytes, Entry] = OrderedDict()
        self.probation: OrderedDict[bytes, Entry] = OrderedDict()
        # zone -> name -> the key reading it, or a set of them when several do (most names are
        # read by one answer: a bare key saves the set)
        self._deps: dict[bytes | None, dict[bytes, bytes | set[bytes]]] = {}
        self._max = max_bytes
        self._max_protected = max_bytes * 4 // 5
        self._protected_size = 0
        self.size = 0  # octets accounted: key, head, tail and the fixed overheads
        # Given what a whole-zone forget dropped (lists and dicts still holding the entries),
        # to free them a slice per reactor turn (reaper.Reaper.discard); None: freed at once.
        self.discard: Callable[[list[Any] | dict[Any, Any]], None] | None = None
        self.memos: list[dict[bytes, bytes]] = []

    def get(self, key: bytes) -> Entry | None:
        """The entry for *key*; a probation entry asked again is promoted."""
        entry = self.protected.get(key)
        if entry is not None:
            return entry
        entry = self.probation.pop(key, None)
        if entry is None:
            return None
        self.protected[key] = entry
        self._protected_size += entry[4]
        while self._protected_size > self._max_protected:
            old, demoted = self.protected.popitem(last=False)
            self._protected_size -= demoted[4]
            self.probation[old] = demoted
        return entry

    def put(self, key: bytes, response: bytes, qend: int, zone: bytes | None,
            deps: Iterable[bytes] = (), account: bytes = rrl.UNLIMITED_ACCOUNT) -> None:
        """Remember *response* (question ends at *qend*) from *zone* (None: no zone), that read
        the names *deps*."""
        if key in self.protected or key in self.probation:
            return
        names = tuple(deps) or (b"",)
        size = len(key) + len(response) + len(account) + _ENTRY_OVERHEAD + _DEP_OVERHEAD * len(names)
        if size > self._max // 8:
            return  # one answer must not push out a good part of the cache
        self.size += size
        while self.size > self._max:
            victim = next(iter(self.probation or self.protected))
            self._drop(victim)
        self.probation[key] = (response[2:12], response[qend:], zone, names, size, account)
        by_name = self._deps.setdefault(zone, {})
        for name in names:
            keys = by_name.get(name)
            if keys is None:
                by_name[name] = key
            elif isinstance(keys, set):
                keys.add(key)
            elif keys != key:
                by_name[name] = {keys, key}

    def _drop(self, key: bytes) -> None:
        entry = self.probation.pop(key, None)
        if entry is None:
            entry = self.protected.pop(key, None)
            if entry is None:
                return
            self._protected_size -= entry[4]
        self.size -= entry[4]
        by_name = self._deps.get(entry[2])
        if by_name is None:
            return
        for name in entry[3]:
            keys = by_name.get(name)
            if keys is None:
                continue
            if isinstance(keys, set):
                keys.discard(key)
                if not keys:
                    del by_name[name]
            elif keys == key:
                del by_name[name]

    def forget(self, zone: bytes | None, names: Iterable[bytes] | None = None) -> None:
        """Drop what a zone answered (all of it, or what read one of *names*)."""
        for memo in self.memos:
            memo.clear()  # a zone's change may make any memo entry stale: all go (refilled by hits)
        if zone is None:
            self.clear()
            return
        by_name = self._deps.get(zone)
        if by_name is None:
            return
        if names is None:
            self._forget_zone(zone)
            return
        for name in names:
            keys = by_name.get(name)
            if keys is not None:
                for key in list(keys) if isinstance(keys, set) else (keys,):
                    self._drop(key)

    def _forget_zone(self, zone: bytes) -> None:
        """Drop every answer of *zone* (a new version swapped in whole, e.g. after an AXFR).

        Filtering the two dicts once is about ten times faster than dropping entry by entry
        through the dependency index: a worker with 100k cached answers of a zone spent
        ~170 ms in that loop when the zone's new image arrived, and queries waited (issue 11).
        """
        deps = self._deps.pop(zone)
        if len(self._deps) == 0:
            self._keep(deps)
            self.clear()
            return
        # In place: the UDP listener's hit path holds a reference to ``protected``.
        for segment in (self.protected, self.probation):
            kept = [(k, e) for k, e in segment.items() if e[2] != zone]
            if self.discard is not None:
                self.discard([e for e in dict.values(segment) if e[2] == zone])
            segment.clear()
            segment.update(kept)
        self._keep(deps)
        self._protected_size = sum(e[4] for e in self.protected.values())
        self.size = self._protected_size + sum(e[4] for e in self.probation.values())

    def _keep(self, container: dict[Any, Any]) -> None:
        if self.discard is not None:
            self.discard(container)

    def clear(self) -> None:
        """Drop everything.

        With ``discard`` set, the entries are handed over in lists first, so the segments'
        ``clear`` only drops references: freeing 100k cached answers in it took 15-45 ms of a
        worker's reactor turn when a new version of the zone arrived (issue 11), while
        listing them (``dict.values``: the table, not the OrderedDict's links) is a few ms.
        """
        for memo in self.memos:
            memo.clear()
        if self.discard is not None:
            for segment in (self.protected, self.probation):
                if segment:
                    self.discard(list(dict.values(segment)))
            if self._deps:
                self.discard(self._deps)
                self._deps = {}
        self.protected.clear()
        self.probation.clear()
        self._deps.clear()
        self._protected_size = 0
        self.size = 0

    def __contains__(self, key: bytes) -> bool:
        return key in self.protected or key in self.probation

    def __len__(self) -> int:
        return len(self.protected) + len(self.probation)


class Responder:
    """Answers requests from the registry's zones; counts what it answers."""

    def __init__(self, registry: Registry, settings: ServeSettings, stats: ServingStats) -> None:
        self.registry = registry
        self.settings = settings
        self.stats = stats
        # One cache for both transports (the key says which); ``caches`` for the listeners' sums.
        self.cache = AnswerCache(settings.cache_bytes)
        self.caches = (self.cache,)
        self._dropped = False  # set by _render: the last answer left out an RRset
        self._cookie: bytes | None = None  # COOKIE option data for the answer being built
        self.wall: Callable[[], float] = time.time  # server-cookie timestamps (RFC 9018 4.3)
        # (client address, COOKIE option) -> (the option to answer with, wall time it is good
        # until): a known client costs a dict probe, not a SipHash (see cookie_answer).
        self._cookie_memo: dict[tuple[str, bytes], tuple[bytes, float, bool]] = {}
        self.cookies_on = bool(settings.cookie_secrets)
        self.notify_handler: NotifyHandler | None = None
        self.xfr_out: Any = None  # xfrout.TransferOut, for IXFR over UDP (RFC 1995 2)
        # RFC 7314: seconds left before a zone's copy expires (None: do not say); set by the app.
        self.expire_remaining: Callable[[bytes], int | None] | None = None
        # TSIG keys by wire name, for signed queries (RFC 8945); set by the application.
        self.keys: Mapping[bytes, TsigKey] = {}
        registry.subscribe(self._forget)
        self._identity_txt = _txt(settings.identity) if settings.identity else None
        self.clock: Callable[[], float] = time.monotonic  # for the internal-error log rate limit
        self._error_logged_at = -1e9
        self._errors_unlogged = 0
        self._version_txt = _txt(settings.version) if settings.version else None
        # Response rate limiting (serve/rrl.py), None when off or when it limits nothing.
        self.rrl: rrl.RateLimiter | None = None
        if settings.rate_limit is not None:
            limiter = rrl.RateLimiter(settings.rate_limit, stats)
            if limiter.limits_anything:
                self.rrl = limiter
        self._account = rrl.UNLIMITED_ACCOUNT  # the last answer's RRL account (RRL on only)
        self._query_seen: Query | None = None  # the last query parsed (RRL on only)
        self._limit_host: str | None = None  # the client of the query respond_limited is answering
        self._verdict = _UNDECIDED  # its RRL verdict, once _query has taken it
        self._nx_accounts: dict[bytes, bytes] = {}  # zone origin -> its NXDOMAIN account
        # The OPT record of a slipped response, without and with DO (RFC 6891 6.1.2).
        self._slip_opts = (opt_record(settings.udp_max_payload, 0, False),
                           opt_record(settings.udp_max_payload, 0, True))

    def _forget(self, origin: bytes | None, names: frozenset[bytes] | None) -> None:
        for cache in self.caches:
            cache.forget(origin, names)

    def respond(self, data: bytes, transport: int, addr: tuple[str, int]) -> bytes | None:
        """The response to *data*, or None when nothing must be sent (RFC 1035 4.1.1: QR set).

        Never raises: a bug met while answering one message costs that message a
        SERVFAIL, not the reply (UDP) or the connection (TCP), see ``internal_error``.
        """
        if len(data) < 12 or data[2] & 0x80:
            self.stats.dropped += 1
            return None
        query: Query | None = None
        where = IN_QUERY
        self._cookie = None
        self._query_seen = None
        try:  # free on the no-exception path (CPython 3.11 zero-cost try)
            try:
                query = parse_query(data)
                if self.rrl is not None:
                    self._query_seen = query
                if query.cookie is not None and self.cookies_on:
                    self._cookie = self.cookie_answer(query.cookie, addr[0])
            except FormatError as exc:
                bad = exc.query
                echo = bad if bad is not None and bad.opcode in _ECHO_QUESTION else None
                return self._count(error_response(data, FORMERR, echo, self._opt_for(bad)))
            opcode = query.opcode
            if query.edns_version > 0 and query.edns:
                return self._badvers(query)
            if opcode == OPCODE_QUERY:
                if query.qtype == rrtypes.IXFR and transport == UDP and self.xfr_out is not None:
                    return self._count(self.xfr_out.udp(data, addr, query.payload))  # RFC 1995 2
                if query.tsig_offset >= 0:
                    return self._signed_query(query, transport)
                return self._query(query, transport)
            if opcode == OPCODE_NOTIFY:
                if self.notify_handler is None:
                    return self._count(error_response(data, NOTIMP, query, self._opt_for(query)))
                where = IN_NOTIFY
                rcode, finalise = self.notify_handler(query, addr)
                response = self._notify_response(query, rcode)
                return self._count(finalise(response) if finalise is not None else response)
            if opcode == OPCODE_UPDATE:
                return self._count(error_response(data, self._update_rcode(query), query,
                                                  self._opt_for(query)))
            # RFC 1035 4.1.1: an opcode we do not implement; BIND 9.18 answers the bare header
            # (and OPT), whatever the question says.
            return self._count(error_response(data, NOTIMP, None, self._opt_for(query)))
        except Exception:
            return self.internal_error(data, where, query)

    def respond_limited(self, data: bytes, transport: int, addr: tuple[str, int]) -> bytes | None:
        """``respond`` for a UDP listener with response rate limiting on (serve/rrl.py): the
        response, None when it is dropped, or the slipped (truncated) form of it.

        An IN-class query is decided in ``_query`` as soon as its answer's kind and account
        are known, before the response is rendered or cached: under a flood nearly every
        response is dropped or slipped, and rendering (and caching) what is never sent was
        most of the cost of a random-subdomain query (bench/README.md, "An attack in a
        bottle").  The rest (errors, CHAOS, NOTIFY, IXFR) is decided on the rendered response.
        """
        limiter = self.rrl
        assert limiter is not None
        self._account = rrl.UNLIMITED_ACCOUNT
        self._verdict = _UNDECIDED
        self._limit_host = addr[0]
        try:
            response = self.respond(data, transport, addr)  # sets _query_seen
        finally:
            self._limit_host = None
        verdict = self._verdict
        q = self._query_seen
        if verdict != _UNDECIDED:  # decided by _query, before rendering
            if verdict == rrl.OK:
                return response
            if verdict == rrl.DROP or q is None:
                return None
            return self.slip(data[:4], q.question, self._account[0] == rrl.NXDOMAIN_KIND, q.edns, q.do,
                             self._cookie)
        if response is None:
            return None
        acct = self._account
        if acct == rrl.UNLIMITED_ACCOUNT:
            rcode = response[3] & 0xF
            if rcode in (NOERROR, NXDOMAIN):
                return response
            if q is not None and q.opcode == OPCODE_QUERY and q.qclass != rrtypes.CLASS_IN:
                return response  # CHAOS and the like: BIND's _bind view has no rate-limit
            acct = rrl.ERROR_ACCOUNT  # ns/client.c ns_client_error: errors are limited too
        if self._cookie_exempt(q, addr[0]):
            return response
        verdict = limiter.check(addr[0], acct)
        if verdict == rrl.OK:
            return response
        self.stats.rcodes[response[3] & 0xF] -= 1  # counted as sent by respond
        if response[2] & 0x02:
            self.stats.truncated -= 1
        if verdict == rrl.DROP or q is None:
            return None
        return self.slip(data[:4], q.question, acct[0] == rrl.NXDOMAIN_KIND, q.edns, q.do, self._cookie)

    def nxdomain_account(self, key: bytes) -> bytes | None:
        """The RRL account of the question in cache key *key* (``wire.cache_key``) when its
        answer is certainly a plain NXDOMAIN (``answer.plain_nxdomain``), else None.

        The account of an NXDOMAIN is its zone (rrl.c make_key), so the UDP listener can take
        the verdict on a random-subdomain query from this alone and drop or slip it without
        parsing or answering it; a question this says nothing about takes ``respond_limited``.
        The qname's labels are checked here as ``parse_query`` would (cache_key only finds the
        first zero octet): a name it would reject is left to it.
        """
        qname = key[:-6]
        if key[-4:-2] != b"\x00\x01" or len(qname) > MAX_NAME:
            return None  # RFC 1035 2.3.4; only class IN is rate limited by zone
        qtype = key[-6] << 8 | key[-5]
        if 128 <= qtype < 255 or qtype == rrtypes.OPT:
            return None  # meta types: FORMERR, NOTIMP, REFUSED (_meta_rcode)
        pos = 0
        end = len(qname) - 1
        while pos < end:
            length = qname[pos]
            if not 0 < length < 64:
                return None
            pos += length + 1
        if pos != end:
            return None
        entry = self.registry.find(qname)
        if entry is None or entry.expired or entry.snapshot is None or entry.origin == qname:
            return None
        if not plain_nxdomain(entry.snapshot, qname):
            return None
        acct = self._nx_accounts.get(entry.origin)
        if acct is None:
            if len(self._nx_accounts) >= _NX_ACCOUNTS_MAX:
                self._nx_accounts.clear()
            acct = self._nx_accounts[entry.origin] = rrl.account(rrl.NXDOMAIN_KIND, entry.origin)
        return acct

    def _cookie_exempt(self, q: Query | None, host: str) -> bool:
        """query.c: a query with a valid server cookie is never limited (the memo entry was
        made by ``respond`` when it parsed the query)."""
        if q is None or q.cookie is None or not self.cookies_on:
            return False
        state = self._cookie_memo.get((host, q.cookie))
        return state is not None and state[2]

    def slip(self, header: bytes, question: bytes, nxdomain: bool, edns: bool, do: bool,
             cookie: bytes | None) -> bytes:
        """The slipped form of a limited response (counted): TC, or BADCOOKIE with *cookie*
        (the COOKIE option to answer with) when the client sent one (rrl.badcookie_response)."""
        udp_max = self.settings.udp_max_payload
        if cookie is not None and self.cookies_on:
            response = rrl.badcookie_response(
                header, question, opt_record(udp_max, rrl.BADCOOKIE_EXT, do, [(EDNS_COOKIE, cookie)]))
            self.stats.rcodes[rrl.BADCOOKIE] += 1
            return response
        self.stats.rcodes[NXDOMAIN if nxdomain else NOERROR] += 1
        self.stats.truncated += 1
        return rrl.slip_response(header, question, nxdomain, self._slip_opts[do] if edns else None)

    def internal_error(self, data: bytes, where: int, query: Query | None = None) -> bytes | None:
        """Count, log (rate-limited) and answer SERVFAIL for an exception raised answering *data*.

        Call it from the ``except`` block, so the traceback is the one being handled.
        A flood of queries hitting the same bug must not turn into a flood of
        tracebacks, so at most one is logged a second, with the number left out.
        The SERVFAIL is never cached: the next identical query tries again.
        """
        self.stats.internal_errors[where] += 1
        now = self.clock()
        if now - self._error_logged_at >= 1.0:
            log.error("internal error answering a message (where=%s; %d more since the last report "
                      "not logged): answered SERVFAIL", INTERNAL_ERROR_PLACES[where],
                      self._errors_unlogged, exc_info=True)
            self._error_logged_at = now
            self._errors_unlogged = 0
        else:
            self._errors_unlogged += 1
        if len(data) < 12:
            return None
        try:
            response = error_response(data, SERVFAIL, query, self._opt_for(query))
        except Exception:
            # Header only: the ID and opcode, QR set (RFC 1035 4.1.1).
            response = data[:2] + bytes([0x80 | (data[2] & 0x78), SERVFAIL]) + bytes(8)
        return self._count(response)

    def _count(self, response: bytes | None) -> bytes | None:
        if response is not None:
            self.stats.rcodes[response[3] & 0xF] += 1
        return response

    def _opt_for(self, query: Query | None) -> bytes | None:
        if query is None or not query.edns:
            return None
        if self._cookie is not None:
            return opt_record(self.settings.udp_max_payload, 0, query.do, [(EDNS_COOKIE, self._cookie)])
        return opt_record(self.settings.udp_max_payload, 0, query.do)

    def cookie_answer(self, option: bytes, host: str) -> bytes | None:
        """The COOKIE option data to answer *option* from *host* with (RFC 7873 5.2.3-5.2.5), or
        None when *host* is not an IP address.

        Memoised per (host, option) until the answer must change: an echoed server cookie when
        it reaches half an hour (RFC 9018 4.3), a new one likewise, since a server may keep
        handing out a cookie it made (RFC 9018 4.3) and the client's next query then carries
        it and is checked afresh.  So a resolver sending its cookie on every query costs one
        dict probe, not a SipHash, per query.
        """
        hit = self._cookie_memo.get((host, option))
        if hit is not None and self.wall() < hit[1]:
            return hit[0]
        state = self.cookie_state(option, host)
        return None if state is None else state[0]

    def cookie_state(self, option: bytes, host: str) -> tuple[bytes, float, bool] | None:
        """``cookie_answer``'s memo entry: the option to answer with, the wall time it is good
        until, and whether *option* holds a valid server cookie (which exempts the query from
        rate limiting, serve/rrl.py); None when *host* is not an IP address."""
        now = self.wall()
        memo = self._cookie_memo
        hit = memo.get((host, option))
        if hit is not None and now < hit[1]:
            return hit
        try:
            ip = cookies.client_ip(host)
        except ValueError:
            return None
        state = self._server_cookie(option, ip, int(now))
        if len(memo) >= _COOKIE_MEMO_MAX:
            memo.clear()
        memo[(host, option)] = state
        return state

    def _server_cookie(self, option: bytes, ip: bytes, now: int) -> tuple[bytes, float, bool]:
        """The COOKIE option to answer with, until when, and whether the client's server cookie
        is valid: the client's own when its server cookie is ours and fresh, else its client
        cookie with a new server cookie.

        A missing or invalid server cookie gets a normal answer with a new one (5.2.3-5.2.4,
        as BIND does without require-server-cookie), so BADCOOKIE is never sent.
        """
        client = option[:8]
        server = option[8:]
        secrets = self.settings.cookie_secrets
        if len(server) == cookies.SERVER_COOKIE_LEN:
            age = (now - int.from_bytes(server[4:8], "big")) & 0xFFFFFFFF
            if age < cookies.REFRESH_AGE and cookies.valid(secrets[:1], client, server, ip, now):
                # RFC 9018 4.3: ours, current secret, under half an hour old: echoed
                return option, now - age + cookies.REFRESH_AGE, True
            if cookies.valid(secrets, client, server, ip, now):
                # valid (an older secret, or over half an hour old): replaced, and valid until
                # it is an hour old (RFC 9018 4.3)
                until = min(now + cookies.REFRESH_AGE, now - age + cookies.MAX_AGE)
                return client + cookies.server_cookie(secrets[0], client, ip, now), until, True
        return client + cookies.server_cookie(secrets[0], client, ip, now), now + cookies.REFRESH_AGE, False

    def _signed_query(self, q: Query, transport: int) -> bytes | None:
        """RFC 8945 5.2-5.3: verify a signed query and sign its answer, or answer the TSIG error.

        Signed answers are never cached: each carries its own time and MAC.
        """
        try:
            try:
                verified = tsig.verify_request(q.raw, self.keys, peer="client")
            except tsig.TsigError as exc:
                plain = error_response(q.raw, NOTAUTH, q)
                return self._count(tsig.error_response(plain, exc) if plain is not None else None)
        except Exception:
            return self.internal_error(q.raw, IN_TSIG, q)
        response = self._query(q, transport, reserve=_TSIG_ROOM)
        if response is None:
            return None
        try:
            return tsig.sign_response(response, verified.key, verified.mac)
        except Exception:
            return self.internal_error(q.raw, IN_TSIG, q)

    def _badvers(self, q: Query) -> bytes | None:
        """RFC 6891 6.1.3: BADVERS, answered with the version we speak (0), before the opcode
        is looked at (as BIND 9.18: an unknown opcode gets BADVERS, without the question)."""
        opt = opt_record(self.settings.udp_max_payload, BADVERS >> 4, q.do)
        response = error_response(q.raw, NOERROR, q if q.opcode in _ECHO_QUESTION else None, opt)
        self.stats.rcodes[BADVERS] += 1
        self._account = rrl.ERROR_ACCOUNT  # ns_client_error limits BADVERS as an error
        return response

    def _update_rcode(self, q: Query) -> int:
        """RFC 2136 3.1: UPDATE is not accepted by a secondary; rcodes as BIND 9.18 gives them
        without ``allow-update-forwarding``."""
        if q.qtype != rrtypes.SOA:
            return FORMERR  # RFC 2136 3.1.1: the zone section's ZTYPE must be SOA
        entry = self.registry.get(q.qname_lower)
        if entry is None:
            return NOTAUTH  # RFC 2136 3.1.2: not a zone we are authoritative for
        return REFUSED

    def _query(self, q: Query, transport: int, reserve: int = 0) -> bytes | None:
        qtype = q.qtype
        qclass = q.qclass
        # RFC 6895 3.1-3.2: 128-255 are meta/query TYPEs and CLASSes, never data (ANY aside).
        if 128 <= qtype < 255 or qtype == rrtypes.OPT or 128 <= qclass < 256:
            return self._count(error_response(q.raw, _meta_rcode(qtype, qclass, transport), q,
                                              self._opt_for(q)))
        zone_key: bytes | None = None
        if qclass == rrtypes.CLASS_IN:
            entry = self.registry.find(q.qname_lower)
            if entry is not None and qtype == rrtypes.DS and entry.origin == q.qname_lower \
                    and q.qname_lower != b"\x00":
                # RFC 4035 3.1.4.1: DS lives in the parent; prefer it when we serve it.
                parent_entry = self.registry.find(q.qname_lower[q.qname_lower[0] + 1:])
                if parent_entry is not None and parent_entry.serving:
                    entry = parent_entry
            if entry is None:
                ans = _refused()
            elif entry.snapshot is None or entry.expired:
                ans = _servfail()
                zone_key = entry.origin
            else:
                zone_key = entry.origin
                ans = answer_query(entry.snapshot, q.qname_lower, qtype,
                                   minimal_any=transport == UDP, dnssec_ok=q.do)
        elif q.qclass == rrtypes.CLASS_CH:
            ans = self._chaos(q)
        else:
            ans = _refused()
        account = rrl.UNLIMITED_ACCOUNT
        if self.rrl is not None and qclass == rrtypes.CLASS_IN:
            account = self._account = _rrl_account(q, ans, zone_key)
            host = self._limit_host
            if host is not None:  # a UDP query through respond_limited: decide before rendering
                self._limit_host = None
                verdict = rrl.OK if self._cookie_exempt(q, host) else self.rrl.check(host, account)
                self._verdict = verdict
                if verdict != rrl.OK:
                    return None  # dropped or slipped by respond_limited: nothing rendered or cached
        response = self._render(q, ans, transport, reserve, zone_key)
        rcode = response[3] & 0xF
        self.stats.rcodes[rcode] += 1
        if response[2] & 0x02:
            self.stats.truncated += 1
        elif q.tsig_offset < 0 and not q.expire:  # an EXPIRE answer holds a clock reading
            self._store(q, response, transport, zone_key, ans.deps, account)
        return response

    def _store(self, q: Query, response: bytes, transport: int, zone: bytes | None,
               deps: Iterable[bytes], account: bytes = rrl.UNLIMITED_ACCOUNT) -> None:
        """Cache *response* when every query with its key gets these very octets."""
        umax = self.settings.udp_max_payload
        key = cache_key(q.raw, transport == TCP, umax)
        lower = q.qname_lower
        if key is None or len(key) != len(lower) + 4 + KEY_FLAGS or not key.startswith(lower):
            return  # not a plain query, or a zero octet inside a label (see cache_key)
        if transport == UDP and q.edns and q.payload > 512:
            # The class holds several limits: the answer is the same for all of them only if
            # nothing was left out and it fits the smallest.
            lo = 1232 if key[-1] & KEY_PAYLOAD == KEY_PAYLOAD_BIG else min(513, umax)
            hi = umax if lo == 1232 else min(1231, umax)
            if lo != hi and (self._dropped or len(response) > lo):
                return
        if key[-2] & (KEY_COOKIE >> 8) and self.cookies_on:
            # The listener appends each client's own COOKIE data (RFC 7873 5.2): the last
            # option of the OPT record, itself the last record (see _render).
            cookie = self._cookie
            if cookie is None or len(cookie) != _COOKIE_ANSWER_LEN or not response.endswith(cookie):
                return
            response = response[:-_COOKIE_ANSWER_LEN]
        self.cache.put(key, response, 12 + len(q.question), zone, deps, account)

    def _render(self, q: Query, ans: Answer, transport: int, reserve: int = 0,
                zone: bytes | None = None) -> bytes:
        flags = QR | (q.flags & (RD | CD)) | (AA if ans.aa else 0)
        opt = None
        if q.edns:
            options = []
            if q.nsid and self.settings.identity:
                options.append((EDNS_NSID, self.settings.identity.encode()))  # RFC 5001 2.3
            if q.expire and zone is not None and q.qtype == rrtypes.SOA and ans.aa \
                    and self.expire_remaining is not None:
                # RFC 7314 2: the SOA answer carries our copy's remaining expire time, as BIND's
                remaining = self.expire_remaining(zone)
                if remaining is not None:
                    options.append((EDNS_EXPIRE, remaining.to_bytes(4, "big")))
            if self._cookie is not None:
                options.append((EDNS_COOKIE, self._cookie))  # RFC 7873 5.2
            opt = opt_record(self.settings.udp_max_payload, 0, q.do, options)
        if transport == UDP:
            limit = min(q.payload, self.settings.udp_max_payload) if q.edns else 512
        else:
            limit = 65535
        writer = ResponseWriter(q.id, flags, q.question, q.qname_lower, limit,
                                (len(opt) if opt else 0) + reserve,
                                q.qclass if q.qclass == rrtypes.CLASS_CH else 1,
                                question_suffixes=q.qname == q.qname_lower)
        additional = ans.additional
        if writer.add_rrsets(0, ans.answer, True) and writer.add_rrsets(1, ans.authority, True) \
                and additional and (ans.glue or transport != UDP or not q.edns or q.payload > 512):
            # BIND 9.18 answers UDP clients with a 512-octet EDNS buffer minimally: glue only.
            required = ans.required
            if not required:
                writer.add_rrsets(2, additional, False)
            elif writer.add_rrsets(2, additional[:required], True):  # RFC 9471 3.1: TC if it does not fit
                writer.add_rrsets(2, additional[required:], False)
        if opt is not None:
            writer.add_raw_additional(opt)
        self._dropped = writer.dropped
        return writer.finish(ans.rcode)

    def _chaos(self, q: Query) -> Answer:
        """CHAOS-class identity queries (BIND's and RFC 4892's names); all else REFUSED."""
        name = q.qname_lower
        txt = None
        if name in _CHAOS_IDENTITY:
            txt = self._identity_txt
        elif name in _CHAOS_VERSION:
            txt = self._version_txt
        if txt is None or q.qtype not in (rrtypes.TXT, rrtypes.ANY):
            return _refused()
        ans = Answer()
        ans.answer.append((name, rrtypes.TXT, [(0, txt)]))
        return ans

    def _notify_response(self, q: Query, rcode: int) -> bytes:
        """RFC 1996 4.7: echo the question with QR and AA set."""
        flags = QR | (OPCODE_NOTIFY << 11) | (AA if rcode == NOERROR else 0)
        writer = ResponseWriter(q.id, flags, q.question, q.qname_lower)
        opt = self._opt_for(q)
        if opt is not None:
            writer.add_raw_additional(opt)
        return writer.finish(rcode)


def _meta_rcode(qtype: int, qclass: int, transport: int) -> int:
    """Questions that are not data lookups, answered as BIND answers them.

    AXFR only exists over TCP (RFC 5936 4.2: FORMERR over UDP); transfer-out
    is not offered, so AXFR/IXFR over TCP are REFUSED.  MAILA/MAILB are
    obsolete (NOTIMP); OPT, TSIG, TKEY, other meta-TYPEs (RFC 6895 3.1) and
    QCLASS ANY or NONE are FORMERR; other meta-CLASSes are NOTIMP.
    """
    if qclass == rrtypes.CLASS_ANY or qclass == rrtypes.CLASS_NONE:
        return FORMERR
    if qclass >= 128:
        return NOTIMP
    if qtype == rrtypes.AXFR:
        return FORMERR if transport == UDP else REFUSED
    if qtype == rrtypes.IXFR:
        return REFUSED
    if qtype in (rrtypes.MAILA, rrtypes.MAILB):
        return NOTIMP
    return FORMERR


def _rrl_account(q: Query, ans: Answer, zone: bytes | None) -> bytes:
    """The RRL account of an IN-class answer, as BIND's query.c query_checkrrl chooses its
    name: the first step of a CNAME chain decides the kind (so a chain ending in NXDOMAIN is
    a positive answer for the qname); NXDOMAIN counts by the zone ("Use the database origin
    name to rate limit NXDOMAIN"), a referral by the delegation."""
    rcode = ans.rcode
    if ans.answer:
        if rcode in (NOERROR, NXDOMAIN):
            return rrl.account(rrl.RESPONSE, ans.wildcard or q.qname_lower, q.qtype)
        return rrl.ERROR_ACCOUNT
    if rcode == NXDOMAIN:
        return rrl.account(rrl.NXDOMAIN_KIND, zone or b"\x00")
    if rcode != NOERROR:
        return rrl.ERROR_ACCOUNT
    if not ans.aa and ans.authority and ans.authority[0][1] == rrtypes.NS:
        return rrl.account(rrl.REFERRAL, ans.authority[0][0])
    return rrl.account(rrl.NODATA, ans.wildcard or q.qname_lower)


def _refused() -> Answer:
    ans = Answer()
    ans.aa = False
    ans.rcode = REFUSED
    return ans


def _servfail() -> Answer:
    ans = Answer()
    ans.aa = False
    ans.rcode = SERVFAIL
    return ans


def _txt(text: str) -> bytes:
    """TXT rdata: character-strings of at most 255 octets (RFC 1035 3.3.14)."""
    raw = text.encode()
    chunks = [raw[i:i + 255] for i in range(0, len(raw), 255)] or [b""]
    return b"".join(bytes([len(c)]) + c for c in chunks)
