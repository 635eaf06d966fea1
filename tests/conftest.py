"""Shared fixtures: factories that start real peer servers and always stop them.

A factory rather than a ready-made server, because interop tests need several peers wired to one
another (a primary notifying two secondaries on ports known before either starts) and each test
knows its own zones.  Teardown stops every server a factory started, by PID, even on failure.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peers import Bind, Knot, Nsd, Peer, Secondns

P = TypeVar("P", bound=Peer)


def pytest_configure(config: pytest.Config) -> None:
    """Register the markers here too, so running a single file from elsewhere never warns."""
    config.addinivalue_line("markers", "integration: starts real peer servers on loopback")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")


def _factory(cls: type[P], tmp_path: Path, prefix: str) -> Iterator[Callable[..., P]]:
    """Yield ``make(*args, start=True, **kwargs)``; each peer gets its own ``tmp_path/<prefix>N``."""
    made: list[P] = []

    def make(*args: Any, start: bool = True, **kwargs: Any) -> P:
        peer = cls(tmp_path / f"{prefix}{len(made)}", *args, **kwargs)
        made.append(peer)
        if start:
            peer.start()
        return peer

    yield make
    # Stop in reverse order: secondaries before the primaries they may still be polling.  Every
    # peer is stopped even when one's stop fails (Secondns.stop fails on internal errors).
    failures: list[BaseException] = []
    for peer in reversed(made):
        try:
            peer.stop()
        except Exception as exc:
            failures.append(exc)
    if failures:
        raise failures[0]


@pytest.fixture
def bind_factory(tmp_path: Path) -> Iterator[Callable[..., Bind]]:
    """``bind_factory(zones, *, keys=(), notify="explicit", workers=1, options=(), conf=(), port=None,
    cpus=None, start=True) -> Bind``"""
    yield from _factory(Bind, tmp_path, "bind")


@pytest.fixture
def knot_factory(tmp_path: Path) -> Iterator[Callable[..., Knot]]:
    """``knot_factory(zones, *, keys=(), workers=1, options=(), port=None, start=True) -> Knot``"""
    yield from _factory(Knot, tmp_path, "knot")


@pytest.fixture
def nsd_factory(tmp_path: Path) -> Iterator[Callable[..., Nsd]]:
    """``nsd_factory(zones, *, keys=(), workers=1, options=(), port=None, start=True) -> Nsd``"""
    yield from _factory(Nsd, tmp_path, "nsd")


@pytest.fixture
def secondns_factory(tmp_path: Path) -> Iterator[Callable[..., Secondns]]:
    """``secondns_factory(zones=None, *, zone_files=None, defaults=None, server=None, http=True,
    ready_zones=None, port=None, http_port=None, start=True) -> Secondns``"""
    yield from _factory(Secondns, tmp_path, "secondns")
