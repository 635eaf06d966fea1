"""Caps shared by every zone's refresh machine: SOA queries per second, transfers at a time.

With thousands of zones, checks that all come due together (start-up, the
end of a primary outage) would otherwise hit the primary at once: a stock
BIND primary serves 10 transfers at a time (``transfers-out``) and answers
the rest SERVFAIL, and every probe in flight holds a socket.  BIND's own
secondary paces itself the same way, with ``serial-query-rate`` (default
20 per second) and ``transfers-in`` (default 10); the settings take its
names, ``server.soa-queries-per-second`` and ``server.transfers-in``.

Waiting work is a plain FIFO: a zone keeps its place in its phase
(CHECKING while it waits for a query token, TRANSFERRING while it waits for
a transfer slot), so the refresh machine stays the only owner of phases.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

Release = Callable[[], None]


class Pacer:
    """A token bucket for SOA queries and a counting semaphore for transfers.

    ``soa_queries_per_second`` 0 and ``transfers_in`` 0 mean no limit (tests
    of one zone, and the unit tests of the machine).
    """

    def __init__(self, clock: Any, transfers_in: int = 0, soa_queries_per_second: float = 0.0) -> None:
        self.clock = clock
        self.transfers_in = transfers_in
        self.rate = float(soa_queries_per_second)
        self.burst = max(1.0, self.rate)  # at most one second's worth at once
        self._tokens = self.burst
        self._stamp = float(clock.seconds())
        self._soa_waiting: deque[Callable[[], None]] = deque()
        self._xfr_waiting: deque[Callable[[Release], None]] = deque()
        self._timer: Any = None
        self.transfers_running = 0
        self.soa_sent = 0  # SOA queries let through (tests and status count them)

    # -- SOA queries

    def soa_query(self, start: Callable[[], None]) -> None:
        """Call *start* once a query token is free (at once when one is)."""
        if self.rate <= 0:
            self.soa_sent += 1
            start()
            return
        self._soa_waiting.append(start)
        self._pump()

    @property
    def soa_queued(self) -> int:
        return len(self._soa_waiting)

    def _refill(self) -> None:
        now = float(self.clock.seconds())
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def _pump(self) -> None:
        self._refill()
        # Bounded: each turn spends a token, and there are at most burst of them.
        while self._soa_waiting and self._tokens >= 1.0:
            self._tokens -= 1.0
            start = self._soa_waiting.popleft()
            self.soa_sent += 1
            start()
        if self._soa_waiting and (self._timer is None or not self._timer.active()):
            delay = (1.0 - self._tokens) / self.rate
            self._timer = self.clock.callLater(max(delay, 0.001), self._tick)

    def _tick(self) -> None:
        self._timer = None
        self._pump()

    # -- transfers

    def transfer(self, start: Callable[[Release], None]) -> None:
        """Call *start(release)* once a transfer slot is free; *release* frees it (idempotent)."""
        if self.transfers_in <= 0:
            start(lambda: None)
            return
        self._xfr_waiting.append(start)
        self._next_transfers()

    @property
    def transfers_queued(self) -> int:
        return len(self._xfr_waiting)

    def _next_transfers(self) -> None:
        while self._xfr_waiting and self.transfers_running < self.transfers_in:
            start = self._xfr_waiting.popleft()
            self.transfers_running += 1
            start(self._releaser())

    def _releaser(self) -> Release:
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            self.transfers_running -= 1
            # Not from inside the finishing transfer's callback chain: the next one
            # starts on a fresh reactor turn, so a long queue never nests calls.
            self.clock.callLater(0, self._next_transfers)

        return release

    def stop(self) -> None:
        """Forget waiting work (shutdown)."""
        self._soa_waiting.clear()
        self._xfr_waiting.clear()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
