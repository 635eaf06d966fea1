"""Transfer-out in worker mode: a worker hands an AXFR/IXFR TCP connection to the main process.

Workers have neither the journal nor the configuration, and a transfer must never make
queries wait, so the worker that reads an AXFR/IXFR question passes the connection's file
descriptor to the main process (SCM_RIGHTS over a SOCK_SEQPACKET socket pair, one per worker
process, inherited like the listen sockets) with the bytes already read: the transfer
message and whatever the client pipelined after it.  The main process adopts the socket
(``reactor.adoptStreamConnection``) into a TCPServer of its own that serves transfers
(xfrout.TransferOut) and replays those bytes into it; the worker forgets the connection
without shutting it down.  See docs/architecture.md, "Transfer-out".
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from typing import Any

from twisted.internet.interfaces import IReadDescriptor
from zope.interface import implementer  # type: ignore[import-untyped]

from secondns.serve.server import TCPFactory, TCPLimits, TCPServer

log = logging.getLogger("secondns")

# The transfer question (<= 64 KiB) and what the client pipelined after it; more is dropped
# (such a client retries its later queries on another connection).
MAX_HANDOFF = 2 * 65537


class WorkerSide:
    """In the worker: ``TCPFactory.xfr``, passing transfer connections on."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.idle_timeout = 30.0  # unused: the connection never streams here

    def tcp(self, message: bytes, addr: tuple[str, int], conn: TCPServer | None = None,
            rest: bytes = b"") -> Iterator[bytes]:
        transport: Any = conn.transport if conn is not None else None
        if transport is None:
            return iter(())
        data = (len(message).to_bytes(2, "big") + message + rest)[:MAX_HANDOFF]
        try:
            socket.send_fds(self.sock, [data], [transport.fileno()])
        except OSError as exc:
            log.warning("transfer request from %s: hand-off to the main process failed: %s", addr[0], exc)
            transport.loseConnection()
            return iter(())
        # The main process holds the connection now: close our descriptor without shutdown(2),
        # which would end the connection for both (twisted.internet.tcp.Connection._closeSocket).
        transport._shouldShutdown = False
        transport.stopReading()
        transport.loseConnection()
        conn._buf.clear()  # type: ignore[union-attr]  # answered by the main process
        return iter(())


class _AdoptingFactory(TCPFactory):
    """Builds the main process's TCPServer for an adopted connection and remembers it."""

    last: TCPServer | None = None

    def buildProtocol(self, addr: Any) -> TCPServer:
        self.last = TCPServer(self)
        return self.last

    def take(self) -> TCPServer | None:
        """The protocol built by the last adoption, forgotten here."""
        last, self.last = self.last, None
        return last


@implementer(IReadDescriptor)
class _Receiver:
    """The main process's end of one worker's hand-off socket."""

    def __init__(self, main: MainSide, sock: socket.socket) -> None:
        self.main = main
        self.sock = sock

    def fileno(self) -> int:
        return self.sock.fileno()

    def logPrefix(self) -> str:
        return "xfr-handoff"

    def doRead(self) -> Any:
        for _ in range(64):  # bounded per reactor turn; the reactor calls again if more is ready
            try:
                data, fds, _flags, _addr = socket.recv_fds(self.sock, MAX_HANDOFF, 4)
            except BlockingIOError:
                return None
            except OSError:
                return self._closed()
            if not data and not fds:
                return self._closed()  # the worker is gone
            for extra in fds[1:]:
                os.close(extra)
            if fds:
                self.main.adopt(fds[0], data)
        return None

    def _closed(self) -> None:
        self.main.reactor.removeReader(self)
        self.sock.close()

    def connectionLost(self, reason: Any) -> None:
        self.sock.close()


class MainSide:
    """In the main process: socket pairs for the workers, adoption of what they pass."""

    def __init__(self, reactor: Any, factory_args: tuple[Any, ...], xfr: Any,
                 limits: TCPLimits | None = None) -> None:
        self.reactor = reactor
        # The main process's own limits: a worker's count ends with the hand-off.
        self.factory = _AdoptingFactory(*factory_args, limits=limits)
        self.factory.xfr = xfr
        self.adopted = 0

    def pair(self) -> socket.socket:
        """A new socket pair; the returned end goes to one worker process (inheritable)."""
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        mine.setblocking(False)
        theirs.set_inheritable(True)
        self.reactor.addReader(_Receiver(self, mine))
        return theirs

    def adopt(self, fd: int, data: bytes) -> None:
        try:
            probe = socket.socket(fileno=fd)
            family = probe.family
            probe.detach()
        except OSError:
            os.close(fd)
            return
        try:
            self.factory.take()
            self.reactor.adoptStreamConnection(fd, family, self.factory)
        except Exception:
            log.exception("adopting a transfer connection from a worker failed")
            return
        finally:
            os.close(fd)  # the reactor holds its own duplicate
        proto = self.factory.take()
        if proto is not None and data:
            self.adopted += 1
            proto.dataReceived(data)


def worker_side(fd: int | None) -> WorkerSide | None:
    """The worker's end, from the fd number the main process gave in ``hello``."""
    if fd is None:
        return None
    return WorkerSide(socket.socket(fileno=fd))

