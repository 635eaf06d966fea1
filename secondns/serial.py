"""RFC 1982 serial number arithmetic for 32-bit SOA serials.

SOA serials wrap around, so "newer" is not ``>``: a serial is newer when it
lies less than half the number space ahead.  The refresh logic and IXFR
decide whether to transfer with these functions, never with plain integer
comparison.
"""

from __future__ import annotations

from typing import Literal

SERIAL_BITS = 32
_MOD = 1 << SERIAL_BITS
_HALF = 1 << (SERIAL_BITS - 1)
_MASK = _MOD - 1
MAX_ADD = _HALF - 1  # RFC 1982 3.1: the largest n that may be added


def _check(value: int) -> None:
    if not 0 <= value <= _MASK:
        raise ValueError(f"serial {value} outside 0..{_MASK}")


def serial_cmp(a: int, b: int) -> Literal[-1, 0, 1] | None:
    """-1, 0 or 1 as *a* is older than, equal to or newer than *b*.

    None when the two are exactly 2^31 apart: RFC 1982 3.2 leaves that
    comparison undefined, and callers must not guess (a primary whose serial
    jumped by exactly half the space is neither newer nor older).
    """
    _check(a)
    _check(b)
    if a == b:
        return 0
    diff = (a - b) & _MASK
    if diff == _HALF:
        return None
    # RFC 1982 3.2: a > b when (a - b) mod 2^32 lies in 1 .. 2^31 - 1.
    return 1 if diff < _HALF else -1


def serial_gt(a: int, b: int) -> bool:
    """True when *a* is newer than *b*; False also when undefined (RFC 1982 3.2)."""
    return serial_cmp(a, b) == 1


def serial_lt(a: int, b: int) -> bool:
    """True when *a* is older than *b*; False also when undefined (RFC 1982 3.2)."""
    return serial_cmp(a, b) == -1


def serial_add(s: int, n: int) -> int:
    """*s* + *n* modulo 2^32; RFC 1982 3.1 only defines 0 <= n <= 2^31 - 1."""
    _check(s)
    if not 0 <= n <= MAX_ADD:
        raise ValueError(f"serial increment {n} outside 0..{MAX_ADD} (RFC 1982 3.1)")
    return (s + n) & _MASK
