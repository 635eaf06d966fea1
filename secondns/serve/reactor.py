"""The epoll reactor, with UDP listeners' read events dispatched directly.

Twisted's ``EPollReactor.doPoll`` wraps every event in ``log.callWithLogger`` (a log context
pushed and popped: a dict, a context call and a ``logPrefix`` lookup) and ``_doReadOrWrite``
(``fileno()``, the disconnect and write checks) before ``doRead`` is reached.  When queries
arrive one datagram per wake-up, which is the common case below full load, that wrapping is a
fixed cost per query of the same order as answering it from the cache.  Here a listener that
asked for it (``read_directly``) has its read method called straight from the poll loop when
the event is a plain EPOLLIN; every other event (errors, hang-ups, writes, other descriptors)
takes the base class's path unchanged.

The direct path keeps the reactor's guarantee that application code cannot stop it: an
exception is caught and logged.  Unlike the base path it does not disconnect the listener,
because a UDP listener that stops reading is an outage, and its read loop already handles
every error it knows (serve/server.py ``UDPServer._read``).

``install`` must run before anything imports ``twisted.internet.reactor``; ``secondns serve``
and the worker entry point call it first (docs/architecture.md, "Reactor").
"""

from __future__ import annotations

import errno
import logging
import select
import sys
from collections.abc import Callable
from typing import Any

from twisted.internet.epollreactor import EPollReactor
from twisted.python import log as twisted_log

log = logging.getLogger("secondns")

_EPOLLIN = select.EPOLLIN


class DirectReadReactor(EPollReactor):
    """EPollReactor whose registered readers' EPOLLIN events skip the per-event wrapping."""

    def __init__(self) -> None:
        # Set first: the base class adds its waker through addReader.
        # fd -> read method, for registered readers currently reading (the poll loop's lookup)
        self._direct: dict[int, Callable[[], None]] = {}
        # reader -> (read method, its fd while it is reading or None)
        self._wanted: dict[Any, tuple[Callable[[], None], int | None]] = {}
        super().__init__()  # type: ignore[no-untyped-call]

    def read_directly(self, reader: Any, read: Callable[[], None]) -> None:
        """Call *read* (instead of ``reader.doRead`` through the logging wrapper) whenever
        *reader*'s descriptor is readable; effective from now if it is reading, else from its
        ``addReader``, and undone by ``removeReader``."""
        fd = reader.fileno()
        reading = fd in self._reads
        self._wanted[reader] = (read, fd if reading else None)
        if reading:
            self._direct[fd] = read

    def addReader(self, reader: Any) -> None:
        super().addReader(reader)  # type: ignore[no-untyped-call]
        wanted = self._wanted.get(reader)
        if wanted is not None:
            fd = reader.fileno()
            self._wanted[reader] = (wanted[0], fd)
            self._direct[fd] = wanted[0]

    def removeReader(self, reader: Any) -> None:
        self._undirect(reader)
        super().removeReader(reader)  # type: ignore[no-untyped-call]

    def removeAll(self) -> list[Any]:
        for reader in list(self._wanted):
            self._undirect(reader)
        return super().removeAll()  # type: ignore[no-untyped-call, no-any-return]

    def _undirect(self, reader: Any) -> None:
        """Forget *reader*'s fd (it may be closed and reused by another descriptor next)."""
        wanted = self._wanted.get(reader)
        if wanted is not None and wanted[1] is not None:
            self._direct.pop(wanted[1], None)
            self._wanted[reader] = (wanted[0], None)

    def stop_reading_directly(self, reader: Any) -> None:
        """Undo ``read_directly`` (a listener that stops listening)."""
        self._undirect(reader)
        self._wanted.pop(reader, None)

    def doPoll(self, timeout: float | None) -> None:
        """EPollReactor.doPoll, with direct readers' plain EPOLLIN events called straight."""
        if timeout is None:
            timeout = -1  # wait indefinitely
        try:
            events = self._poller.poll(timeout, len(self._selectables))
        except OSError as err:
            if err.errno == errno.EINTR:
                return
            raise
        direct = self._direct
        selectables = self._selectables
        drdw = self._doReadOrWrite
        call_with_logger = twisted_log.callWithLogger
        for fd, event in events:
            if event == _EPOLLIN:
                read = direct.get(fd)
                if read is not None:
                    try:
                        read()
                    except Exception:
                        log.exception("reading descriptor %d failed; still listening", fd)
                    continue
            selectable = selectables.get(fd)
            if selectable is not None:
                call_with_logger(selectable, drdw, selectable, fd, event)  # type: ignore[no-untyped-call]

    doIteration = doPoll


def install() -> DirectReadReactor | None:
    """Install DirectReadReactor as Twisted's global reactor; None (and nothing done) when a
    reactor is already installed, e.g. by a test runner that imported it first."""
    if "twisted.internet.reactor" in sys.modules:
        return None
    from twisted.internet.main import installReactor

    reactor = DirectReadReactor()
    installReactor(reactor)  # type: ignore[no-untyped-call]
    return reactor
