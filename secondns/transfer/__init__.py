"""Zone transfers and the per-zone refresh state machine (main process only).

``refresh`` (SOA refresh/retry/expire timers, RFC 1996 NOTIFY in), ``pacing`` (caps on SOA
checks and transfers in), ``xfrin`` (sans-IO AXFR/IXFR consumers), ``client`` (their Twisted
side: sockets, framing, time limits), ``tsig`` (RFC 8945), ``xfrout`` (AXFR/IXFR out with
ACLs) and ``notify_out`` (NOTIFY to the next tier).
"""
