"""Many zones, no sockets: pacing caps, transient back-off, start-up spread, one storage scan.

Everything runs on task.Clock and counts work (probes sent, transfers running, directory
listings), never wall time, so nothing here can be flaky on a busy machine.
"""

from __future__ import annotations

import builtins
import collections
import io
import logging
import os
import time
from pathlib import Path
from typing import Any

import pytest
from test_refresh import FakeClient, MemStore, make_zone
from twisted.internet import defer, task

from secondns.app import Application
from secondns.config import Config, Endpoint, ZoneConfig, parse_config
from secondns.diff import VersionStep
from secondns.errors import TransferError, TransientError
from secondns.names import from_text
from secondns.registry import Registry
from secondns.store import journal, storage
from secondns.store.storage import CopyMeta
from secondns.store.zonefile import load_zone_text, parse_zone_text
from secondns.transfer.pacing import Pacer
from secondns.transfer.refresh import BACKOFF_FIRST, CHECKING, IDLE, TRANSFERRING, Refresher
from secondns.transfer.xfrin import SoaProbeResult

P1 = Endpoint("127.0.0.1", 5301)
NOW = time.time()


class HeldClient(FakeClient):
    """Transfers stay open until the test fires them, so concurrency can be counted."""

    def __init__(self) -> None:
        super().__init__()
        self.open: list[defer.Deferred[Any]] = []
        self.probe_times: list[float] = []
        self.clock: task.Clock | None = None

    def soa_query(self, primary: Endpoint, zc: ZoneConfig) -> Any:
        assert self.clock is not None
        self.probe_times.append(self.clock.seconds())
        return super().soa_query(primary, zc)

    def transfer(self, primary: Endpoint, zc: ZoneConfig, current: Any, kind: str) -> Any:
        self.transfers.append((primary, kind))
        d: defer.Deferred[Any] = defer.Deferred()
        self.open.append(d)
        return d


def zones(n: int) -> list[ZoneConfig]:
    return [ZoneConfig(f"z{i}.test.", from_text(f"z{i}.test."), primaries=(P1,), refresh_min=1,
                       retry_min=1, expire_min=1) for i in range(n)]


def machines(n: int, pacer_kw: dict[str, Any], client: FakeClient | None = None,
             spread: float = 0.0, rand: Any = None) -> tuple[task.Clock, Pacer, FakeClient,
                                                              list[Refresher]]:
    clock = task.Clock()
    clock.advance(1_000_000)
    pacer = Pacer(clock, **pacer_kw)
    client = client or FakeClient()
    if isinstance(client, HeldClient):
        client.clock = clock
    registry = Registry()
    refs = []
    for i, zc in enumerate(zones(n)):
        registry.add(zc.origin)
        draw = (i + 0.5) / n  # distinct per zone, as random.random would be
        ref = Refresher(zc, registry, client, MemStore(), clock, rand=rand or (lambda d=draw: d),
                        wallclock=clock.seconds, pacer=pacer, first_check_spread=spread)
        refs.append(ref)
    return clock, pacer, client, refs


def test_soa_checks_are_capped_at_the_configured_rate() -> None:
    client = HeldClient()
    client.serials[P1] = 1
    clock, _pacer, _, refs = machines(100, {"soa_queries_per_second": 20.0}, client)
    for ref in refs:
        ref.start(None)
    clock.advance(0)
    assert len(client.probe_times) == 20  # one second's burst
    assert sum(r.status.phase == CHECKING for r in refs) == 80  # the rest wait in their phase
    for _ in range(10):
        clock.advance(0.5)
    assert len(client.probe_times) == 100
    # Never more than 20 in any one-second window after the burst.
    times = client.probe_times[20:]
    for t in times:
        assert sum(1 for u in times if t <= u < t + 1.0) <= 21


def test_transfers_in_caps_concurrent_transfers_and_a_slot_frees_the_next() -> None:
    client = HeldClient()
    client.serials[P1] = 1
    clock, pacer, _, refs = machines(25, {"transfers_in": 10}, client)
    for ref in refs:
        ref.start(None)
    clock.advance(0)
    assert len(client.open) == 10
    assert pacer.transfers_running == 10
    assert sum(r.status.phase == TRANSFERRING for r in refs) == 25  # 15 wait for a slot
    client.open[0].errback(TransferError("broken"))
    clock.advance(0)
    assert len(client.open) == 11 and pacer.transfers_running == 10
    for _ in range(5):  # fail whatever is open; each failure lets a waiting zone in
        for d in client.open:
            if not d.called:
                d.errback(TransferError("broken"))
        clock.advance(0)
    assert len(client.open) == 25
    assert pacer.transfers_running == 0


def test_a_stopped_zone_waiting_for_a_slot_gives_it_back() -> None:
    client = HeldClient()
    client.serials[P1] = 1
    clock, pacer, _, refs = machines(2, {"transfers_in": 1}, client)
    for ref in refs:
        ref.start(None)
    clock.advance(0)
    refs[1].stop()
    client.open[0].errback(TransferError("broken"))
    clock.advance(0)
    assert len(client.open) == 1  # the stopped zone never transferred
    assert pacer.transfers_running == 0


def test_first_checks_after_start_are_spread() -> None:
    client = HeldClient()
    client.serials[P1] = 1
    clock, _, _, refs = machines(10, {}, client, spread=5.0)
    for ref in refs:
        ref.start(None)
    clock.advance(0)
    assert client.probe_times == []  # nobody probes at t=0
    for _ in range(10):
        clock.advance(0.5)
    assert len(client.probe_times) == 10
    assert len(set(client.probe_times)) >= 9  # spread over the window, not in lockstep


def one(client: FakeClient, rand: float = 1.0) -> tuple[task.Clock, Refresher]:
    clock = task.Clock()
    clock.advance(1_000_000)
    registry = Registry()
    origin = from_text("example.com.")
    registry.add(origin)
    registry.swap(origin, make_zone(5, refresh=100, retry=600, expire=100000))
    zc = ZoneConfig("example.com.", origin, primaries=(P1,), refresh_min=1, retry_min=1, expire_min=1)
    ref = Refresher(zc, registry, client, MemStore(), clock, rand=lambda: rand,
                    wallclock=clock.seconds)
    ref.start(CopyMeta(5, clock.seconds(), None, None, clock.seconds()))
    clock.advance(0)
    return clock, ref


def test_transient_failure_backs_off_doubling_and_bounded_by_retry() -> None:
    client = FakeClient()
    client.serials[P1] = TransientError("no answer from the primary")
    clock, ref = one(client)
    assert len(client.probes) == 1
    waits = []
    for _ in range(10):
        assert ref._timer is not None
        delay = ref._timer.getTime() - clock.seconds()
        waits.append(delay)
        clock.advance(delay)
    assert waits[:4] == [BACKOFF_FIRST, 2 * BACKOFF_FIRST, 4 * BACKOFF_FIRST, 8 * BACKOFF_FIRST]
    assert max(waits) == 600.0  # RETRY bounds it
    client.serials[P1] = 5
    clock.advance(600)
    assert ref.status.phase == IDLE and ref.status.last_error is None
    client.serials[P1] = TransientError("no answer from the primary")
    clock.advance(ref._timer.getTime() - clock.seconds())
    assert ref._timer.getTime() - clock.seconds() == BACKOFF_FIRST  # a success resets it


def test_servfail_from_the_primary_is_transient() -> None:
    client = FakeClient()
    client.answers[P1] = SoaProbeResult(2, None, None, False, None, False)
    clock, ref = one(client)
    assert ref._timer.getTime() - clock.seconds() == BACKOFF_FIRST


def test_a_permanent_failure_still_waits_retry() -> None:
    client = FakeClient()
    client.serials[P1] = TransferError("TSIG BADKEY")
    clock, ref = one(client)
    assert ref._timer.getTime() - clock.seconds() == 600.0


def test_backoff_is_jittered_so_zones_that_failed_together_retry_apart() -> None:
    delays = set()
    for rand in (0.0, 0.3, 0.7, 1.0):
        client = FakeClient()
        client.serials[P1] = TransientError("refused")
        clock, ref = one(client, rand)
        delays.add(ref._timer.getTime() - clock.seconds())
    assert len(delays) == 4 and min(delays) >= BACKOFF_FIRST / 2 and max(delays) <= BACKOFF_FIRST


# -- start-up: one scan of the storage directory, however many zones


def write_copies(directory: Path, n: int) -> str:
    zone_yaml = "\n".join(f"  z{i}.test: {{primaries: ['127.0.0.1:5301']}}" for i in range(n))
    directory.mkdir(exist_ok=True)
    for i in range(n):
        name = f"z{i}.test."
        (directory / f"z{i}.test.zone").write_text(
            f"$ORIGIN {name}\n$TTL 300\n@ IN SOA ns1 host 7 100 20 1000 60\n  IN NS ns1\n"
            "ns1 IN A 192.0.2.1\n")
    # A leftover of an interrupted write of zone 0, which start-up must remove.
    (directory / ".z0.test.zone.tmp-0123456789abcdef").write_text("partial")
    return (f"server: {{storage: {directory}, http: null, workers: 1, listen: ['127.0.0.1:5399']}}\n"
            f"zones:\n{zone_yaml}\n")


class NoNetReactor(task.Clock):
    def listenUDP(self, *a: Any, **k: Any) -> Any:
        return _Port()

    def listenTCP(self, *a: Any, **k: Any) -> Any:
        return _Port()

    def addSystemEventTrigger(self, *a: Any, **k: Any) -> None:
        pass

    def getThreadPool(self) -> Any:
        return _InlinePool()


class _Port:
    def stopListening(self) -> None:
        pass


class _InlinePool:
    """Runs 'thread' work inline: deferToThreadPool then calls back through callFromThread."""

    def callInThreadWithCallback(self, onResult: Any, f: Any, *a: Any, **k: Any) -> None:
        try:
            result = f(*a, **k)
        except BaseException as exc:  # pragma: no cover - surfaced by the test
            onResult(False, exc)
        else:
            onResult(True, result)


def start_app(tmp_path: Path, n: int, monkeypatch: pytest.MonkeyPatch) -> tuple[Application, int]:
    return start_config(parse_config(write_copies(tmp_path / "zones", n), str(tmp_path / "c.yaml")),
                        n, monkeypatch)


def start_config(config: Config, n: int, monkeypatch: pytest.MonkeyPatch) -> tuple[Application, int]:
    """Start an Application on *config* without sockets, until every copy is loaded."""
    reactor = NoNetReactor()
    reactor.callFromThread = lambda f, *a, **k: f(*a, **k)  # type: ignore[attr-defined]
    scans = []
    real = os.scandir

    def counting(path: Any = ".") -> Any:
        scans.append(path)
        return real(path)

    monkeypatch.setattr(storage.os, "scandir", counting)
    app = Application(config, reactor, client=FakeClient())
    app.start()
    for _ in range(n):  # each chunk schedules the next on a fresh turn: bounded
        if app.loaded_all.called:
            break
        reactor.advance(0)
    assert app.loaded_all.called
    return app, len(scans)


@pytest.mark.parametrize("n", [50, 400])
def test_start_up_lists_the_storage_directory_once_whatever_the_zone_count(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    # Review finding (issue 14): clean_temp_files listed the whole directory once per zone, so
    # a restart did N listings of N files.  Counted, not timed: the guard cannot be flaky.
    app, scans = start_app(tmp_path, n, monkeypatch)
    assert scans == 1
    assert all(app.registry.get(zc.origin).serving for zc in app.config.zones.values())  # type: ignore[union-attr]
    assert not (tmp_path / "zones" / ".z0.test.zone.tmp-0123456789abcdef").exists()
    assert app.loading_progress() is None


def saved_copies(directory: Path, n: int) -> str:
    """As write_copies, but copies as secondns saves them: copy, snapshot and sidecar each."""
    zone_yaml = "\n".join(f"  z{i}.test: {{primaries: ['127.0.0.1:5301']}}" for i in range(n))
    for i in range(n):
        name = f"z{i}.test."
        zone = load_zone_text("$TTL 300\n@ IN SOA ns1 host 7 100 20 1000 60\n  IN NS ns1\n"
                              "ns1 IN A 192.0.2.1\n", from_text(name))
        storage.save_zone(directory, name, zone, CopyMeta(7, NOW, None, None, NOW))
    return (f"server: {{storage: {directory}, http: null, workers: 1, listen: ['127.0.0.1:5399']}}\n"
            f"zones:\n{zone_yaml}\n")


def soa_step(name: str, old: int, new: int) -> VersionStep:
    def soa(serial: int) -> Any:
        return list(parse_zone_text(f"@ 300 IN SOA ns1 host {serial} 100 20 1000 60",
                                    from_text(name)))
    return VersionStep(old, new, soa(old), soa(new))


def count_opens(monkeypatch: pytest.MonkeyPatch, directory: Path) -> list[str]:
    """Every open (Python's and os.open) of a file in *directory*, by file name, from now on."""
    opened: list[str] = []
    real_open, real_os_open = io.open, os.open

    def note(path: Any) -> None:
        if isinstance(path, (str, Path)) and Path(path).parent == directory:
            opened.append(Path(path).name)

    def counting_open(file: Any, *a: Any, **k: Any) -> Any:
        note(file)
        return real_open(file, *a, **k)

    def counting_os_open(path: Any, *a: Any, **k: Any) -> Any:
        note(path)
        return real_os_open(path, *a, **k)

    monkeypatch.setattr(io, "open", counting_open)  # what pathlib's read_bytes opens with
    monkeypatch.setattr(builtins, "open", counting_open)
    monkeypatch.setattr(os, "open", counting_os_open)
    return opened


def saved_with_a_journal(tmp_path: Path, n: int) -> Config:
    """*n* saved copies (serial 7) in tmp_path/zones, z0's with a journal to serial 8."""
    directory = tmp_path / "zones"
    text = saved_copies(directory, n)
    journal.append(directory, "z0.test.", [soa_step("z0.test.", 7, 8)], copy_serial=7)
    return parse_config(text, str(tmp_path / "c.yaml"))


def test_restart_opens_only_the_files_the_start_up_listing_shows(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Issue 14: a restart opened five files per zone (copy, snapshot, sidecar, a journal that
    # was not there, and the copy again for the journal's digest): three exist.  Counted.
    n = 40
    config = saved_with_a_journal(tmp_path, n)
    opened = count_opens(monkeypatch, tmp_path / "zones")
    app, _ = start_config(config, n, monkeypatch)
    by_zone = collections.Counter(name.split(".zone")[0] for name in opened)
    # z0 with its journal: also the journal, the copy for its digest, the sidecar after replay.
    assert by_zone == {f"z{i}.test": (6 if i == 0 else 3) for i in range(n)}, by_zone
    assert not any(name.endswith(".journal") for name in opened if not name.startswith("z0."))
    serials = {zc.name: app.registry.get(zc.origin).snapshot.serial  # type: ignore[union-attr]
               for zc in app.config.zones.values()}
    assert serials == {f"z{i}.test.": 8 if i == 0 else 7 for i in range(n)}  # the journal replayed


def test_a_cold_start_opens_no_zone_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = tmp_path / "zones"
    directory.mkdir()
    zone_yaml = "\n".join(f"  z{i}.test: {{primaries: ['127.0.0.1:5301']}}" for i in range(20))
    config = parse_config(f"server: {{storage: {directory}, http: null, workers: 1, "
                          f"listen: ['127.0.0.1:5399']}}\nzones:\n{zone_yaml}\n", str(tmp_path / "c.yaml"))
    opened = count_opens(monkeypatch, directory)
    app, scans = start_config(config, 20, monkeypatch)
    assert opened == [] and scans == 1 and app.loading_progress() is None


def test_a_full_save_removes_only_journals_the_listing_or_an_append_showed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = tmp_path / "zones"
    app, _ = start_config(saved_with_a_journal(tmp_path, 3), 3, monkeypatch)
    removed: list[str] = []
    real_reset = journal.reset
    monkeypatch.setattr(journal, "reset", lambda d, name: (removed.append(name), real_reset(d, name)))
    monkeypatch.setattr("secondns.app.threads.deferToThread", lambda f, *a, **k: defer.succeed(f(*a, **k)))
    zcs = {zc.name: zc for zc in app.config.zones.values()}
    for name in ("z0.test.", "z1.test."):
        zone = app.registry.get(zcs[name].origin).snapshot  # type: ignore[union-attr]
        app.store.save_zone(zcs[name], zone, CopyMeta(zone.serial, 1e9, None, None, 1e9))
    assert removed == ["z0.test."] and not journal.journal_path(directory, "z0.test.").exists()
    # An IXFR journals z2; its next full save removes that journal.
    zone = app.registry.get(zcs["z2.test."].origin).snapshot  # type: ignore[union-attr]
    app.store.save_diff(zcs["z2.test."], [soa_step("z2.test.", 7, 8)], zone,
                        CopyMeta(8, NOW, None, None, NOW))
    assert journal.journal_path(directory, "z2.test.").exists()
    app.store.save_zone(zcs["z2.test."], zone, CopyMeta(7, NOW, None, None, NOW))
    assert removed == ["z0.test.", "z2.test."] and not journal.journal_path(directory, "z2.test.").exists()


def test_zones_are_served_before_all_of_them_are_loaded(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    config = parse_config(write_copies(tmp_path / "zones", 300), str(tmp_path / "c.yaml"))
    reactor = NoNetReactor()
    reactor.callFromThread = lambda f, *a, **k: f(*a, **k)  # type: ignore[attr-defined]
    monkeypatch.setattr("secondns.app.LOAD_BUDGET", 0.0)  # nothing loads before the listeners
    app = Application(config, reactor, client=FakeClient())
    app.start()
    served = sum(1 for e in app.registry if e.serving)
    assert 0 < served < 300  # the first chunk is served, the rest still loading
    progress = app.loading_progress()
    assert progress is not None and f"{served} of 300" in progress
    assert not app.loaded_all.called
    for _ in range(20):
        reactor.advance(0)
    assert app.loaded_all.called and sum(1 for e in app.registry if e.serving) == 300


def test_pacing_settings_parse_with_bind_defaults() -> None:
    default = parse_config("zones: {}")
    assert (default.server.transfers_in, default.server.soa_queries_per_second) == (10, 20.0)
    assert default.server.metrics.per_zone is True
    c = parse_config("server: {transfers-in: 3, soa-queries-per-second: 50, metrics: {per-zone: false}}")
    assert (c.server.transfers_in, c.server.soa_queries_per_second, c.server.metrics.per_zone) == (
        3, 50.0, False)


def test_a_transfer_connection_logs_no_factory_start_or_stop() -> None:
    # Twisted's Factory logs "Starting factory"/"Stopping factory" per connection by default:
    # two log events per transfer (and per SOA check over TCP), 20,000 a round at 10k zones.
    from twisted.logger import globalLogPublisher

    from secondns.transfer import client

    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        factory = client._ExchangeFactory(None)  # type: ignore[arg-type]
        factory.doStart()
        factory.doStop()
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert not [e for e in events if "factory" in str(e.get("log_format", e.get("format", "")))]


def test_a_cold_start_reports_zones_without_a_copy_in_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    # Issue 14: a cold start of 10k zones logged 10k identical warnings; an operator wants one
    # line with the count (and each zone at debug, for whoever looks for one).
    text = write_copies(tmp_path / "zones", 200)
    for i in range(0, 200, 2):  # half the zones have no copy yet
        (tmp_path / "zones" / f"z{i}.test.zone").unlink()
    caplog.set_level(logging.DEBUG, logger="secondns")
    app, _ = start_config(parse_config(text, str(tmp_path / "c.yaml")), 200, monkeypatch)
    warnings = [r.getMessage() for r in caplog.records
                if r.levelno == logging.WARNING and "no copy on disk" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith("100 zones have no copy on disk yet (z0.test.")
    debug = [r for r in caplog.records if r.levelno == logging.DEBUG and "no copy on disk" in r.getMessage()]
    assert len(debug) == 100
    assert sum(1 for e in app.registry if e.serving) == 100
