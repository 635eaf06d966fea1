"""The pipe between the main process and a worker: length-prefixed marshal messages.

Each message is a tuple whose first item names it.  marshal, not pickle or JSON: both ends
are this program, so no object from the pipe can be anything but plain data (marshal builds
no classes), and bytes (zone deltas, DNS messages) travel without any encoding step.

Main to worker: ``hello`` (settings, keys, listeners), ``add``/``remove`` (zone origin),
``full`` (origin, image path), ``delta`` (origin, changed node blobs), ``expired`` (origin,
flag), ``keys``, ``sync`` (answered ``ready`` once everything before it is applied),
``reply`` (the answer to a forwarded message), ``ping`` (answered ``pong`` with its token once
everything before it is applied).
Worker to main: ``ready``, ``pong``, ``stats`` (counter snapshot), ``notify`` (a NOTIFY, or an IXFR over
UDP, for the main process's responder to answer).
"""

from __future__ import annotations

import marshal
import struct
from collections.abc import Callable
from typing import Any

_LEN = struct.Struct("!I")
MAX_MESSAGE = 1 << 31  # a delta of a huge signed zone is large, but never this large


def encode(message: tuple[Any, ...]) -> bytes:
    """One framed message."""
    body = marshal.dumps(message)
    return _LEN.pack(len(body)) + body


class Decoder:
    """Reassembles framed messages from a byte stream and hands each to *deliver*."""

    def __init__(self, deliver: Callable[[tuple[Any, ...]], None]) -> None:
        self._buf = bytearray()
        self._deliver = deliver

    def feed(self, data: bytes) -> None:
        """Add bytes from the pipe; delivers every complete message in order."""
        buf = self._buf
        buf += data
        pos = 0
        try:
            while len(buf) - pos >= 4:
                (length,) = _LEN.unpack_from(buf, pos)
                if length > MAX_MESSAGE:
                    raise ValueError(f"channel message of {length} bytes")
                if len(buf) - pos - 4 < length:
                    break
                message = marshal.loads(bytes(buf[pos + 4:pos + 4 + length]))
                pos += 4 + length
                self._deliver(message)
        finally:
            del buf[:pos]
