"""Serving counters as plain integers.

The query path only does ``counter += 1`` on attributes and list slots; the
metrics module turns these into Prometheus families at scrape time (a custom
collector), so no label lookup or lock happens per query.
"""

from __future__ import annotations

# Upper bounds (seconds) of the sampled query-latency histogram.
LATENCY_BUCKETS = (0.00002, 0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05)
SAMPLE_EVERY = 256  # one query in this many is timed (must be a power of two)

# Where an exception escaped while answering one message: the label of
# secondns_internal_errors_total, and the index into ServingStats.internal_errors.
# "udp"/"tcp": the network layer (framing, cache, send); "query": answering a
# QUERY; "notify": the NOTIFY handler; "tsig": verifying or signing a TSIG.
INTERNAL_ERROR_PLACES = ("udp", "tcp", "query", "notify", "tsig")
IN_UDP, IN_TCP, IN_QUERY, IN_NOTIFY, IN_TSIG = range(len(INTERNAL_ERROR_PLACES))

# Why a new TCP connection was closed at once (server.TCPLimits): the label of
# secondns_tcp_refused_total, and the index into ServingStats.tcp_refused.
TCP_REFUSED_REASONS = ("per-client", "total")
REFUSED_PER_CLIENT, REFUSED_TOTAL = range(len(TCP_REFUSED_REASONS))
# Why the server closed an accepted TCP connection: secondns_tcp_closed_total{reason},
# ServingStats.tcp_closed.  "slow-reader": it stopped reading our answers (or a transfer).
TCP_CLOSE_REASONS = ("initial-timeout", "idle-timeout", "lifetime", "slow-reader")
CLOSED_INITIAL, CLOSED_IDLE, CLOSED_LIFETIME, CLOSED_SLOW_READER = range(len(TCP_CLOSE_REASONS))
# RRL account kinds in serve/rrl.py order (RESPONSE..ERROR): secondns_rrl_limited_total{kind}.
RRL_KINDS = ("response", "nodata", "nxdomain", "referral", "error")


class ServingStats:
    """Counters the network and answer layers bump; read by the metrics collector."""

    __slots__ = ("dropped", "internal_errors", "latency_buckets", "latency_count", "latency_sum",
                 "rcodes", "rrl_by_kind", "rrl_dropped", "rrl_slipped", "send_errors", "tcp_closed",
                 "tcp_connections", "tcp_queries", "tcp_refused", "truncated", "udp_priority",
                 "udp_queries")

    def __init__(self) -> None:
        self.udp_queries = 0
        self.udp_priority = 0  # of udp_queries, those read from the priority socket (serve/steering.py)
        self.tcp_queries = 0
        self.tcp_connections = 0
        self.tcp_refused = [0] * len(TCP_REFUSED_REASONS)  # by REFUSED_* reason
        self.tcp_closed = [0] * len(TCP_CLOSE_REASONS)  # by CLOSED_* reason
        self.rcodes = [0] * 24  # indexed by the full (extended) rcode
        self.truncated = 0
        self.dropped = 0  # messages too short or responses: no answer sent
        self.send_errors = 0
        # Response rate limiting (serve/rrl.py): UDP responses dropped and sent slipped (TC or
        # BADCOOKIE); in log-only mode, those that would have been.
        self.rrl_dropped = 0
        self.rrl_slipped = 0
        # ...the same by account kind: [2 * kind] dropped, [2 * kind + 1] slipped (RRL_KINDS)
        self.rrl_by_kind = [0] * (2 * len(RRL_KINDS))
        self.internal_errors = [0] * len(INTERNAL_ERROR_PLACES)  # by IN_* place
        self.latency_buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_count = 0
        self.latency_sum = 0.0

    def observe_latency(self, seconds: float) -> None:
        """Record one sampled query's processing time."""
        self.latency_count += 1
        self.latency_sum += seconds
        for i, bound in enumerate(LATENCY_BUCKETS):
            if seconds <= bound:
                self.latency_buckets[i] += 1
                return
        self.latency_buckets[-1] += 1
