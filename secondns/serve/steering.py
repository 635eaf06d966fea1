"""Priority for clients with a server cookie: a second UDP socket per listener, chosen in the kernel.

Under a flood the UDP socket's receive buffer fills and the kernel drops what arrives, real
resolvers' queries as much as the attack's, before secondns sees any of them.  A query that
carries a server cookie (RFC 7873 4; RFC 9018's are 16 octets) comes from a client that got
one from us, so its source address is real and, once the cookie checks, RRL never limits it.
So every UDP listener is two sockets in one SO_REUSEPORT group: *normal* and *priority*, and a
classic-BPF program attached with SO_ATTACH_REUSEPORT_CBPF picks the socket for each datagram:

- a datagram that ends with a COOKIE option of 24 octets (8 client + 16 server), with a
  non-zero ARCOUNT, goes to the priority socket.  The OPT record is the last one a resolver
  sends (it precedes only a TSIG, which a resolver does not put on queries), and COOKIE is
  the option BIND, Unbound, Knot Resolver and PowerDNS Recursor put last, so looking at the
  datagram's last 28 octets is enough; a query it misses is served from the normal socket,
  as before.  The server still checks the cookie: a forged one wins a place on the priority
  socket, not an exemption from RRL (docs/operations.md, "Under a flood");
- everything else goes to the normal socket.

With ``server.workers: N`` each worker has its own pair; the group's sockets are in bind order
(worker 0 normal, worker 0 priority, worker 1 normal, ...), and the program sends a datagram to
worker ``hash(question) % N``: the first 16 octets after the header, the start of the QNAME,
case-folded.  One question then always reaches one worker, so each worker's answer cache
holds 1/N of the questions instead of every one of them (N workers fill their caches with N
times fewer misses, in N times less memory), and clients spread over the workers by what they
ask: hashing the source instead split dnsperf's 4 sockets 3:1 over two workers (bench/README
"Workers").  A datagram shorter than that (a root question without EDNS) is hashed by source
address and port.  With ``server.rate-limit`` on, the hash is of the source's RRL prefix alone (its
``ipv4-prefix-length`` / ``ipv6-prefix-length`` network, no port): one client prefix is then
always on one worker, so the workers' own RRL tables together account as one table would
(a spoofed victim is limited once, not once per worker), at the price of one prefix's
traffic never spreading over workers.  The program returns an index into the group; the
kernel falls back to its own hash when an index is out of range, so a group still being bound
never loses a datagram.

The server reads the priority socket at the start of each turn of the normal one (``pair``),
and the priority socket is a listener of its own besides, so it is read in quiet times too.
Counted: ``ServingStats.udp_priority`` (the priority socket's datagrams), exported as
``secondns_udp_queries_total{socket="priority"}``; ``normal`` is the rest of the UDP queries.

Where the kernel refuses the program (not Linux, or a kernel without cBPF reuseport support,
before 4.5), ``supported`` says so once in the log and the listener is one socket as before.
"""

from __future__ import annotations

import ctypes
import logging
import socket
import struct
import sys
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IReactorSocket

log = logging.getLogger("secondns")

# <asm-generic/socket.h>; Python's socket module does not name it.
SO_ATTACH_REUSEPORT_CBPF = getattr(socket, "SO_ATTACH_REUSEPORT_CBPF", 51)

# Classic BPF (<linux/filter.h>, <linux/bpf_common.h>).
_LD, _LDX, _ST, _ALU, _JMP, _RET, _MISC = 0x00, 0x01, 0x02, 0x04, 0x05, 0x06, 0x07
_W, _H, _B = 0x00, 0x08, 0x10
_ABS, _IND, _MEM, _LEN, _MSH = 0x20, 0x40, 0x60, 0x80, 0xA0
_ADD, _SUB, _MUL, _OR, _AND, _LSH, _RSH, _MOD, _XOR = 0x00, 0x10, 0x20, 0x40, 0x50, 0x60, 0x70, 0x90, 0xA0
_JA, _JEQ, _JGE = 0x00, 0x10, 0x30
_K, _X, _A = 0x00, 0x08, 0x10
_TAX = 0x00
_NET = -0x100000  # SKF_NET_OFF: loads relative to the IP header (the program sees the UDP payload)

_COOKIE_OPTION = 28  # option code, length, 8 client + 16 server octets (RFC 7873 4, RFC 9018)
_COOKIE_HEAD = 0x000A0018  # code 10, length 24
_MIN_COOKIE_QUERY = 12 + 5 + 11 + _COOKIE_OPTION  # header, root question, OPT RR, the option
_GOLDEN = 0x9E3779B1  # Knuth's multiplicative hash constant (2**32 / phi)
_QUESTION_WORDS = 4  # octets 12-27: where a QNAME differs from its neighbours in a zone

Insn = tuple[int, int | str, int | str, int | str]  # code, jt, jf, k (offsets or labels)


def program(workers: int, prefixes: tuple[int, int] | None = None) -> list[tuple[int, int, int, int]]:
    """The steering program for *workers* pairs of sockets: returns the socket's index in the
    group, ``2 * worker + (1 if the datagram carries a server cookie else 0)``, the worker a
    hash of the question (``_question_hash``).

    *prefixes* (RRL's IPv4 and IPv6 prefix lengths, when ``server.rate-limit`` is on): the
    worker is a hash of the source address's prefix alone, without the port or the question, so every query
    of one RRL account's client prefix reaches one worker and the workers' separate RRL tables
    account exactly as one shared table (BIND's): with the port in the hash, a reflection
    attack from random source ports would be limited once per worker."""
    code: list[Insn | str] = []
    if workers > 1:
        code += _worker_hash(workers, prefixes)
    else:
        code.append((_LD | _W | 0x00, 0, 0, 0))  # A = 0 (BPF_LD | BPF_IMM)
    code += [
        (_ST, 0, 0, 0),
        # ARCOUNT 0: no OPT record, so no cookie
        (_LD | _H | _ABS, 0, 0, 10),
        (_JMP | _JEQ | _K, "normal", 0, 0),
        # the last 28 octets: code 10, length 24 (RFC 7873 4)
        (_LD | _W | _LEN, 0, 0, 0),
        (_JMP | _JGE | _K, 0, "normal", _MIN_COOKIE_QUERY),
        (_ALU | _SUB | _K, 0, 0, _COOKIE_OPTION),
        (_MISC | _TAX, 0, 0, 0),
        (_LD | _W | _IND, 0, 0, 0),
        (_JMP | _JEQ | _K, 0, "normal", _COOKIE_HEAD),
        (_LD | _MEM, 0, 0, 0),
        (_ALU | _ADD | _K, 0, 0, 1),
        (_RET | _A, 0, 0, 0),
        "normal",
        (_LD | _MEM, 0, 0, 0),
        (_RET | _A, 0, 0, 0),
    ]
    return _assemble(code)


def _mask(prefix: int, word: int) -> int:
    """The netmask's 32-bit *word* (0 = most significant) for a *prefix*-bit network."""
    bits = max(0, min(32, prefix - 32 * word))
    return (0xFFFFFFFF << (32 - bits)) & 0xFFFFFFFF


def _worker_hash(workers: int, prefixes: tuple[int, int] | None) -> list[Insn | str]:
    """Leave ``2 * (hash(source) % workers)`` in A; the source is address and port, or with
    *prefixes* the address's network alone (M[1] holds the port, or 0)."""
    v4_mask = 0xFFFFFFFF if prefixes is None else _mask(prefixes[0], 0)
    v6_masks = [0xFFFFFFFF] * 4 if prefixes is None else [_mask(prefixes[1], w) for w in range(4)]

    def port(load: Insn) -> list[Insn | str]:
        if prefixes is not None:
            return [(_LD | _W | 0x00, 0, 0, 0), (_ST, 0, 0, 1)]  # M[1] = 0: no port
        return [load, (_ST, 0, 0, 1)]

    code: list[Insn | str] = []
    if prefixes is None:
        code += _question_hash(workers)
    code += [
        # A = 2 * (hash(source) % workers)
        (_LD | _B | _ABS, 0, 0, _NET & 0xFFFFFFFF),  # version and IHL
        (_ALU | _RSH | _K, 0, 0, 4),
        (_JMP | _JEQ | _K, "v6", 0, 6),
        (_LDX | _B | _MSH, 0, 0, _NET & 0xFFFFFFFF),  # X = IPv4 header length
        *port((_LD | _H | _IND, 0, 0, _NET & 0xFFFFFFFF)),  # UDP source port
        (_LD | _W | _ABS, 0, 0, (_NET + 12) & 0xFFFFFFFF),  # IPv4 source
        (_ALU | _AND | _K, 0, 0, v4_mask),
        (_JMP | _JA, 0, 0, "mix"),
        "v6",
        *port((_LD | _H | _ABS, 0, 0, (_NET + 40) & 0xFFFFFFFF)),  # UDP port (no ext. headers)
        # IPv6 source: its four words, masked, xored (X holds the running value)
        (_LD | _W | 0x00, 0, 0, 0),
    ]
    for word, mask in enumerate(v6_masks):
        if mask:
            code += [(_MISC | _TAX, 0, 0, 0),
                     (_LD | _W | _ABS, 0, 0, (_NET + 8 + 4 * word) & 0xFFFFFFFF),
                     (_ALU | _AND | _K, 0, 0, mask),
                     (_ALU | _XOR | _X, 0, 0, 0)]
    code += [
        "mix",
        (_LDX | _MEM, 0, 0, 1),
        (_ALU | _XOR | _X, 0, 0, 0),
        (_ALU | _MUL | _K, 0, 0, _GOLDEN),
        (_ALU | _RSH | _K, 0, 0, 16),
        (_ALU | _MOD | _K, 0, 0, workers),
        (_ALU | _LSH | _K, 0, 0, 1),
        "hashed",
    ]
    return code


def _question_hash(workers: int) -> list[Insn | str]:
    """Leave ``2 * (hash(question) % workers)`` in A and jump to ``hashed``, for a datagram
    long enough to hold a header and _QUESTION_WORDS words after it; a shorter one falls
    through to the source hash.

    The words are the start of the question's QNAME (RFC 1035 4.1.2), each ORed with 0x20 in
    every octet, so a name asked in mixed case (the 0x20 bits of draft-vixie-dnsext-dns0x20)
    reaches the worker that has it cached in any case.  Past a short name the words run into
    QTYPE, QCLASS and the OPT record; that only moves a question to another worker, and an
    answer is always right on any worker."""
    code: list[Insn | str] = [
        (_LD | _W | _LEN, 0, 0, 0),
        (_JMP | _JGE | _K, 0, "source", 12 + 4 * _QUESTION_WORDS),
        (_LD | _W | 0x00, 0, 0, 0),  # A = 0
    ]
    for word in range(_QUESTION_WORDS):
        code += [
            (_MISC | _TAX, 0, 0, 0),  # X = running hash
            (_LD | _W | _ABS, 0, 0, 12 + 4 * word),
            (_ALU | _OR | _K, 0, 0, 0x20202020),
            (_ALU | _XOR | _X, 0, 0, 0),
            (_ALU | _MUL | _K, 0, 0, _GOLDEN),
        ]
    code += [
        (_ALU | _RSH | _K, 0, 0, 16),
        (_ALU | _MOD | _K, 0, 0, workers),
        (_ALU | _LSH | _K, 0, 0, 1),
        (_JMP | _JA, 0, 0, "hashed"),
        "source",
    ]
    return code


def _assemble(code: Sequence[Insn | str]) -> list[tuple[int, int, int, int]]:
    """Resolve labels: a jump's jt/jf (and JA's k) count instructions after the jump."""
    labels: dict[str, int] = {}
    pos = 0
    for item in code:
        if isinstance(item, str):
            labels[item] = pos
        else:
            pos += 1
    out: list[tuple[int, int, int, int]] = []
    for item in code:
        if isinstance(item, str):
            continue
        op, jt, jf, k = item
        here = len(out) + 1

        def rel(target: int | str, here: int = here) -> int:
            return labels[target] - here if isinstance(target, str) else target

        out.append((op, rel(jt), rel(jf), rel(k)))
    return out


def attach(sock: socket.socket, workers: int, prefixes: tuple[int, int] | None = None) -> None:
    """Attach the steering program for *workers* pairs (see ``program`` for *prefixes*) to
    *sock*'s reuseport group.

    Raises OSError where the kernel refuses it.
    """
    insns = program(workers, prefixes)
    filters = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *i) for i in insns))
    # struct sock_fprog: unsigned short len; struct sock_filter *filter (native alignment)
    fprog = struct.pack("HP", len(insns), ctypes.addressof(filters))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)


_support: bool | None = None


def supported() -> bool:
    """Whether this kernel takes the program (tried once on an unbound socket; a refusal is
    logged once, and listeners are then one socket each, as without steering)."""
    global _support
    if _support is None:
        _support = False
        if sys.platform.startswith("linux"):
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                    attach(probe, 2)
                _support = True
            except OSError as exc:
                log.warning("UDP priority for cookie clients off: the kernel refused the steering"
                            " program (%s)", exc)
        else:
            log.warning("UDP priority for cookie clients off: needs Linux's SO_ATTACH_REUSEPORT_CBPF")
    return _support


def bind_udp(host: str, port: int) -> socket.socket:
    """A non-blocking UDP socket bound to (host, port) in its SO_REUSEPORT group."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise CannotListenError(host, port, exc) from exc  # type: ignore[no-untyped-call]
    sock.setblocking(False)
    return sock


def pair(normal: Any, priority: Any) -> None:
    """Make *normal* (a server.UDPServer) read *priority*'s socket first in each of its batched
    turns, and count *priority*'s datagrams in ``udp_priority``.  Call before either starts.

    Only batched turns: a turn in lone-datagram mode (server.py ``_read``) means no flood is
    queued, so the priority socket's own poll event serves it as soon, and probing it there
    would cost every lone query a recvfrom that fails with EAGAIN."""
    normal.read_first = priority._read
    received: Callable[[bytes, Any], None] = priority.datagramReceived
    stats = priority.stats

    def counted(datagram: bytes, addr: Any) -> None:
        stats.udp_priority += 1
        received(datagram, addr)

    # An instance attribute shadows the method: the read loop looks self.datagramReceived up
    # once per turn.
    priority.datagramReceived = counted


def listen(reactor: Any, host: str, port: int, protocol: Callable[[], Any]) -> list[Any]:
    """The UDP ports of one listen address in single-process mode: a normal and a priority
    socket when ``supported`` and the reactor can adopt sockets, else one, as
    ``reactor.listenUDP`` binds it."""
    if not supported() or not IReactorSocket.providedBy(reactor):
        return [reactor.listenUDP(port, protocol(), interface=host)]
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    normal_sock = bind_udp(host, port)
    try:
        attach(normal_sock, 1)
    except OSError as exc:  # taken by the probe, refused here: one socket, as without steering
        normal_sock.close()
        log.warning("UDP priority for cookie clients off on %s: %s", host, exc)
        return [reactor.listenUDP(port, protocol(), interface=host)]
    try:
        priority_sock = bind_udp(host, normal_sock.getsockname()[1])
    except CannotListenError:
        normal_sock.close()
        raise
    return adopt(reactor, family, normal_sock, priority_sock, protocol)


def adopt(reactor: Any, family: int, normal_sock: socket.socket, priority_sock: socket.socket | None,
          protocol: Callable[[], Any]) -> list[Any]:
    """Hand bound sockets to the reactor with their protocols (paired when there are two);
    the reactor keeps duplicates, the sockets passed in are closed."""
    normal = protocol()
    ports = []
    try:
        if priority_sock is not None:
            priority = protocol()
            pair(normal, priority)
            ports.append(reactor.adoptDatagramPort(priority_sock.fileno(), family, priority))
        ports.insert(0, reactor.adoptDatagramPort(normal_sock.fileno(), family, normal))
    finally:
        normal_sock.close()
        if priority_sock is not None:
            priority_sock.close()
    return ports
