"""Serving on several cores: the main process hands zones to N worker processes.

``workers`` (main process) supervises them, ``handoff`` turns registry changes into channel
messages, ``image`` is the shared memory-mapped zone form, ``channel`` the framing, and
``worker`` the worker process itself.  See docs/architecture.md, "Workers".
"""
