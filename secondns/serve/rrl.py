"""Response rate limiting (RRL) with BIND 9's semantics (lib/dns/rrl.c, ns/query.c, ns/client.c).

Spoofed UDP queries turn an authoritative server into an amplifier aimed at the spoofed
address.  RRL counts the responses each client prefix would get per *account*, and once an
account is over its rate, drops them, except every ``slip``-th one, which goes out truncated
(TC=1, the question only) so a real client behind that prefix retries over TCP.  Accounts
are BIND's (rrl.c make_key): the client prefix plus

- a positive answer: the qname and qtype (a wildcard's: its parent, so a flood of names
  matching one wildcard shares one account);
- NODATA: the qname (the wildcard's parent likewise);
- NXDOMAIN: the zone, and a referral: the delegation, not the qname, so a random-subdomain
  flood shares one account;
- errors (REFUSED, FORMERR, SERVFAIL, ...): the prefix alone.  They are never slipped,
  only dropped (ns/client.c ns_client_error: "Some error responses cannot be 'slipped'").

The account's balance earns its per-second rate each second, is capped at that rate and
cannot fall below ``-window * rate``; a response debits one and is limited while the
balance is negative (rrl.c debit_rrl_entry, quoted at each step below).  Only UDP is
limited (TCP proves the source address), and a query with a valid server cookie is not
(query.c: ``!HAVECOOKIE(client)``).  A client that sent a cookie gets BADCOOKIE with a
fresh server cookie instead of TC when slipped, as BIND 9.18 does, so its retry carries a
valid cookie and is exempt.

Each serving process (worker) keeps its own table: SO_REUSEPORT hashes a client's
4-tuple, so one client's queries reach one worker, but a prefix's clients may be spread
over several, each allowing the full rate (docs/configuration.md).

Per query: a prefix memo probe (a dict keyed by the address string), one table probe with
a tuple key, and integer arithmetic on a 4-slot list; no other allocation.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections import OrderedDict
from collections.abc import Callable

from secondns import names, rrtypes
from secondns.config import RateLimitConfig
from secondns.serve.stats import ServingStats
from secondns.wire import AA, NXDOMAIN, QR, TC

log = logging.getLogger("secondns.rrl")

OK, DROP, SLIP = 0, 1, 2
# Account kinds, the first octet of an account (rrl.h dns_rrl_rtype_t); UNLIMITED: a
# response RRL never limits (NOTIFY answers, CHAOS class, as BIND's _bind view).
RESPONSE, NODATA, NXDOMAIN_KIND, REFERRAL, ERROR, UNLIMITED = range(6)
UNLIMITED_ACCOUNT = bytes((UNLIMITED,))
ERROR_ACCOUNT = bytes((ERROR,))

_PREFIX_MEMO_MAX = 65536  # client addresses remembered with their prefix; cleared when full
_EVICT_PROBES = 8  # entries looked at for an idle one before the oldest is taken
_V6 = 1 << 128  # set in IPv6 prefixes so they never equal an IPv4 one
_KIND_TEXT = ("", "NODATA ", "NXDOMAIN ", "referral ", "error ", "")


def account(kind: int, name: bytes = b"", qtype: int = 0) -> bytes:
    """An account key (without the client prefix): kind, wire name, and for a positive
    answer the qtype (rrl.c make_key: referral and NODATA accounts have no qtype)."""
    if kind == RESPONSE:
        return bytes((kind,)) + name + qtype.to_bytes(2, "big")
    if kind in (ERROR, UNLIMITED):
        return bytes((kind,))
    return bytes((kind,)) + name


class RateLimiter:
    """One serving process's RRL table and settings.

    ``check`` returns OK, DROP or SLIP and counts the last two in ``stats`` (in log-only
    mode it counts what it would have done and returns OK).  Entries are
    ``[balance, last second, slip count, logged]`` in an OrderedDict kept in least-recently
    used order at one-second grain; the table never holds more than ``max-table-size``
    entries, so a random-source flood costs bounded memory (rrl.c get_entry recycles the
    oldest entry likewise).
    """

    __slots__ = ("_log_second", "_mask4", "_mask6", "_prefixes", "_unlogged", "clock", "config",
                 "exempt", "log_only", "max_entries", "rates", "slip", "stats", "table", "window")

    def __init__(self, config: RateLimitConfig, stats: ServingStats,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.stats = stats
        self.clock = clock
        # Indexed by kind (RESPONSE..UNLIMITED); 0 = not limited, as BIND.
        self.rates = (config.rate("responses"), config.rate("nodata"), config.rate("nxdomains"),
                      config.rate("referrals"), config.rate("errors"), 0)
        self.window = config.window
        self.slip = config.slip
        self.log_only = config.log_only
        self.max_entries = config.max_table_size
        self.exempt = config.exempt
        self._mask4 = (0xFFFFFFFF << (32 - config.ipv4_prefix_length)) & 0xFFFFFFFF
        self._mask6 = ((1 << 128) - 1) ^ ((1 << (128 - config.ipv6_prefix_length)) - 1)
        self._prefixes: dict[str, int | None] = {}
        self.table: OrderedDict[tuple[int, bytes], list[int]] = OrderedDict()
        self._log_second = -1
        self._unlogged = 0

    @property
    def limits_anything(self) -> bool:
        return any(self.rates)

    def _prefix(self, host: str) -> int | None:
        """The client's prefix as an integer, or None when it is exempt (or not an address)."""
        prefixes = self._prefixes
        if len(prefixes) >= _PREFIX_MEMO_MAX:
            prefixes.clear()
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            prefixes[host] = None
            return None
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped  # a dual-stack socket's IPv4 client
        prefix: int | None
        if any(addr in network for network in self.exempt):
            prefix = None  # rrl.c dns_rrl: exempt-clients are never limited
        elif isinstance(addr, ipaddress.IPv4Address):
            prefix = int(addr) & self._mask4
        else:
            prefix = (int(addr) & self._mask6) | _V6
        prefixes[host] = prefix
        return prefix

    def check(self, host: str, acct: bytes) -> int:
        """Debit *acct* for a UDP response to *host*: OK (send it), DROP or SLIP."""
        kind = acct[0]
        rate = self.rates[kind]
        if not rate:
            return OK  # rrl.c debit_rrl_entry: "if (rate == 0) return OK"
        prefixes = self._prefixes
        prefix = prefixes.get(host, -1)
        if prefix == -1:
            prefix = self._prefix(host)
        if prefix is None:
            return OK
        now = int(self.clock())
        key = (prefix, acct)
        table = self.table
        e = table.get(key)
        if e is None:
            # A new account starts as one older than the window: credited its rate, debited one
            # (rrl.c get_entry leaves ts_valid false, debit_rrl_entry then resets it); rate >= 1.
            if len(table) >= self.max_entries:
                self._evict(now)
            table[key] = [rate - 1, now, 0, 0]
            return OK
        age = now - e[1]
        if age > 0:
            # rrl.c: "Treat entries older than the window as if they were just created";
            # otherwise "Credit tokens earned during elapsed time", at most one second's worth.
            if age > self.window:
                e[0] = rate
                e[2] = 0
            else:
                balance = e[0] + rate * age
                if balance > rate:
                    balance = rate
                    e[2] = 0
                e[0] = balance
            e[1] = now
            table.move_to_end(key)  # least-recently used order, at one-second grain
        # rrl.c: "Debit the entry for this response": sent while the balance stays >= 0.
        balance = e[0] - 1
        if balance >= 0:
            e[0] = balance
            return OK
        low = -self.window * rate
        e[0] = low if balance < low else balance  # the debt is bounded by the window
        verdict = DROP
        slip = self.slip
        if slip and kind != ERROR:
            # rrl.c: "if (e->slip_cnt++ == 0) ... return SLIP": the first limited response
            # and then every slip-th one slips; ns/client.c never slips an error.
            count = e[2]
            e[2] = count + 1
            if count == 0:
                verdict = SLIP
            if e[2] >= slip:
                e[2] = 0
        if not e[3]:
            self._log_start(key, e, now)
        stats = self.stats
        if verdict == DROP:
            stats.rrl_dropped += 1
            stats.rrl_by_kind[2 * kind] += 1
        else:
            stats.rrl_slipped += 1
            stats.rrl_by_kind[2 * kind + 1] += 1
        return OK if self.log_only else verdict

    def _evict(self, now: int) -> None:
        """Make room: the least-recently used entry that is idle and back in credit, as rrl.c
        get_entry ("Keep currently penalized and logged entries"), else the oldest."""
        table = self.table
        if now - table[next(iter(table))][1] <= 1:
            table.popitem(last=False)  # the oldest was used within a second: so were all others
            return
        victim = None
        for probes, (key, e) in enumerate(table.items()):
            age = now - e[1]
            if age <= 1 or probes >= _EVICT_PROBES:
                break
            rate = self.rates[key[1][0]]
            if not e[3] and min(e[0] + age * rate, rate) > 0:
                victim = key
                break
        if victim is None:
            table.popitem(last=False)
        else:
            del table[victim]

    def _log_start(self, key: tuple[int, bytes], e: list[int], now: int) -> None:
        """BIND's "limit responses to 127.0.0.0/24 for example.com IN A", at most one a second."""
        if now == self._log_second:
            self._unlogged += 1
            return
        self._log_second = now
        e[3] = 1
        prefix, acct = key
        kind = acct[0]
        if prefix & _V6:
            net = f"{ipaddress.IPv6Address(prefix ^ _V6)}/{self.config.ipv6_prefix_length}"
        else:
            net = f"{ipaddress.IPv4Address(prefix)}/{self.config.ipv4_prefix_length}"
        what = ""
        if kind == RESPONSE:
            qtype = int.from_bytes(acct[-2:], "big")
            what = f" for {names.to_text(acct[1:-2]).rstrip('.') or '.'} IN {rrtypes.type_name(qtype)}"
        elif kind in (NODATA, REFERRAL):
            what = f" for {names.to_text(acct[1:]).rstrip('.') or '.'} IN"
        elif kind == NXDOMAIN_KIND:
            what = f" for {names.to_text(acct[1:]).rstrip('.') or '.'}"
        more = f" ({self._unlogged} more accounts not logged)" if self._unlogged else ""
        self._unlogged = 0
        log.warning("%slimit %sresponses to %s%s%s", "would " if self.log_only else "",
                    _KIND_TEXT[kind], net, what, more)


def slip_response(header: bytes, question: bytes, nxdomain: bool, opt: bytes | None) -> bytes:
    """A slipped response: the query's ID and RD/CD, QR, AA and TC set, the question and the
    OPT record only (BIND 9.18 sends AA=1 and keeps NXDOMAIN; ns/client.c stops rendering
    after the question when TC is set for rate limiting)."""
    flags = QR | AA | TC | (int.from_bytes(header[2:4], "big") & 0x0110)  # RD | CD
    if nxdomain:
        flags |= NXDOMAIN
    counts = b"\x00\x01\x00\x00\x00\x00\x00\x01" if opt else b"\x00\x01\x00\x00\x00\x00\x00\x00"
    return header[:2] + flags.to_bytes(2, "big") + counts + question + (opt or b"")


def badcookie_response(header: bytes, question: bytes, opt: bytes) -> bytes:
    """A slipped response to a client that sent a cookie (BIND 9.18 query.c: "if
    (WANTCOOKIE(client))"): BADCOOKIE with a fresh server cookie in *opt*, AA clear, no TC
    (RFC 7873 5.2.3), so the retry carries a valid cookie and is not limited."""
    flags = QR | (int.from_bytes(header[2:4], "big") & 0x0110) | (BADCOOKIE & 0xF)
    return header[:2] + flags.to_bytes(2, "big") + b"\x00\x01\x00\x00\x00\x00\x00\x01" + question + opt


BADCOOKIE = 23  # RFC 7873 8: extended rcode; the high bits go in the OPT record
BADCOOKIE_EXT = BADCOOKIE >> 4
