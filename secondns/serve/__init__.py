"""Answering queries: everything on the query path, in the main process or in N workers.

``server`` (UDP/TCP protocols), ``responder`` (message in, bytes out, never raises),
``answer`` (RFC 1034 4.3.2 over an immutable snapshot), ``cookies`` (RFC 7873/9018),
``stats`` (plain-integer counters).  For several cores the main process hands zones to worker
processes: ``workers`` supervises them, ``handoff`` turns registry changes into channel
messages, ``image`` is the shared memory-mapped zone form, ``channel`` the framing,
``xfrhandoff`` passes AXFR/IXFR connections back to the main process, and ``worker`` is the
worker process itself.  See docs/architecture.md.
"""
