"""IXFR versus AXFR: the cost of a 10-record change next to a full transfer of the same zone.

For zones of 10k, 100k and 1M records (an A/AAAA/MX/TXT mix, one or two records per name), the
transfer streams are built in memory as the wire messages a primary sends over TCP (64 KB
messages, owners and MX targets compressed against the question name), then timed in process:

* AXFR: ``AxfrConsumer.feed`` of every message plus ``result()`` (parse + ``ZoneBuilder``);
* IXFR apply: ``IxfrConsumer.feed`` of a one-message reply replacing 10 records (10 deletions,
  10 additions) plus ``diff.apply_steps`` on the zone the AXFR produced;
* fold: ``Zone.folded()`` of the changed version (what the journal fold and restart cost).

No sockets: the figures are the secondary's CPU work, not the network's.  Each figure is the
median of several runs (fewer for large zones).  Runs in under three minutes with 1M records.

    PYTHONPATH=. python bench/ixfr_apply.py [--sizes 10000,100000,1000000] [--json out.json]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from secondns import names, rrtypes
from secondns.diff import apply_steps
from secondns.transfer.xfrin import AxfrConsumer, IxfrConsumer
from secondns.zone import Zone

ORIGIN_TEXT = "bench.test."
ORIGIN = names.from_text(ORIGIN_TEXT)
MSG_ID = 0xBE4C
MAX_MESSAGE = 65_000  # RFC 1035 4.2.2: TCP messages up to 64 KB; primaries fill them
CHANGED = 10
OLD_SERIAL, NEW_SERIAL = 2024010101, 2024010102

_HEADER = struct.Struct("!6H")
_RR = struct.Struct("!HHIH")
_QUESTION_END = 12 + len(ORIGIN)
_PTR_ORIGIN = b"\xc0\x0c"  # the question name sits at offset 12

Rec = tuple[bytes, int, int, bytes]
"""(owner label(s) before the origin, type, ttl, rdata with names compressed)."""


# --------------------------------------------------------------------------------------------------
# the zone and its wire streams


def _soa_rdata(serial: int) -> bytes:
    return (b"\x03ns1" + _PTR_ORIGIN + b"\x0ahostmaster" + _PTR_ORIGIN
            + struct.pack("!5I", serial, 7200, 900, 1209600, 300))


def _record(i: int, variant: int = 0) -> Rec:
    """Record *i* of the zone; another *variant* changes its data, not its owner or type."""
    label = f"h{i}".encode()
    prefix = bytes([len(label)]) + label
    kind = i % 4
    if kind == 0:
        return prefix, rrtypes.A, 300, struct.pack("!I", 0xC6120000 + (i + variant * 7919) % 65536)
    if kind == 1:
        return prefix, rrtypes.AAAA, 300, b"\x20\x01\x0d\xb8" + struct.pack("!3I", 0, variant, i)
    if kind == 2:
        target = f"mx{(i + variant) % 100}".encode()
        return prefix, rrtypes.MX, 300, b"\x00\x0a" + bytes([len(target)]) + target + _PTR_ORIGIN
    text = f"record {i} v{variant}".encode()
    return prefix, rrtypes.TXT, 300, bytes([len(text)]) + text


def zone_records(count: int) -> list[Rec]:
    """``count`` records including the SOA and two apex NS (which also have addresses)."""
    apex: list[Rec] = [
        (b"", rrtypes.NS, 3600, b"\x03ns1" + _PTR_ORIGIN),
        (b"", rrtypes.NS, 3600, b"\x03ns2" + _PTR_ORIGIN),
        (b"\x03ns1", rrtypes.A, 3600, b"\xc0\x00\x02\x01"),
        (b"\x03ns2", rrtypes.A, 3600, b"\xc0\x00\x02\x02"),
    ]
    return apex + [_record(i) for i in range(count - len(apex) - 1)]


def _encode(rec: Rec) -> bytes:
    prefix, rtype, ttl, rdata = rec
    return prefix + _PTR_ORIGIN + _RR.pack(rtype, 1, ttl, len(rdata)) + rdata


def messages(records: list[Rec], qtype: int) -> list[bytes]:
    """The records as a reply stream to a *qtype* query, each message at most MAX_MESSAGE bytes.

    rdata names are compressed against offset 12 (the question), which is valid in every message
    since every message repeats the question.
    """
    question = ORIGIN + struct.pack("!HH", qtype, 1)
    out: list[bytes] = []
    body: list[bytes] = []
    size = _QUESTION_END + 4
    for rec in records:
        wire = _encode(rec)
        if size + len(wire) > MAX_MESSAGE and body:
            out.append(_HEADER.pack(MSG_ID, 0x8400, 1, len(body), 0, 0) + question + b"".join(body))
            body, size = [], _QUESTION_END + 4
        body.append(wire)
        size += len(wire)
    out.append(_HEADER.pack(MSG_ID, 0x8400, 1, len(body), 0, 0) + question + b"".join(body))
    return out


def axfr_stream(count: int) -> list[bytes]:
    soa: Rec = (b"", rrtypes.SOA, 3600, _soa_rdata(OLD_SERIAL))
    return messages([soa, *zone_records(count), soa], rrtypes.AXFR)


def ixfr_stream(count: int) -> list[bytes]:
    """RFC 1995 4: new SOA, old SOA, 10 deletions, new SOA, 10 additions, new SOA."""
    old: Rec = (b"", rrtypes.SOA, 3600, _soa_rdata(OLD_SERIAL))
    new: Rec = (b"", rrtypes.SOA, 3600, _soa_rdata(NEW_SERIAL))
    step = max(1, (count - 5) // CHANGED)  # spread over the zone, not one corner of it
    picked = [i * step for i in range(CHANGED)]
    deleted = [_record(i) for i in picked]
    added = [_record(i, variant=1) for i in picked]
    return messages([new, old, *deleted, new, *added, new], rrtypes.IXFR)


# --------------------------------------------------------------------------------------------------
# timing


def median_time(fn: Callable[[], Any], runs: int) -> tuple[float, Any]:
    """Median seconds over *runs* calls, and the last result."""
    times = []
    result: Any = None
    for _ in range(runs):
        result = None
        gc.collect()
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def do_axfr(stream: list[bytes]) -> Zone:
    consumer = AxfrConsumer(ORIGIN, MSG_ID, max_records=10_000_000)
    for message in stream:
        consumer.feed(message)
    return consumer.result()


def do_ixfr(zone: Zone, stream: list[bytes]) -> Zone:
    consumer = IxfrConsumer(ORIGIN, MSG_ID, zone.serial, max_records=10_000_000)
    for message in stream:
        consumer.feed(message)
    if not consumer.incremental:
        raise RuntimeError("the IXFR stream did not parse as an incremental reply")
    return apply_steps(zone, consumer.steps)


@dataclass
class Row:
    records: int
    messages: int
    axfr_s: float
    ixfr_apply_ms: float
    ratio: float
    fold_ms: float


def time_axfr(count: int, runs: int) -> tuple[int, float, Zone]:
    """(messages, median seconds, zone); the stream is freed on return, before the IXFR runs."""
    stream = axfr_stream(count)
    seconds, zone = median_time(lambda: do_axfr(stream), runs)
    if zone.record_count != count:
        raise RuntimeError(f"AXFR built {zone.record_count} records, expected {count}")
    return len(stream), seconds, zone


def measure(count: int) -> Row:
    axfr_runs = 5 if count <= 100_000 else 3
    n_messages, axfr_s, zone = time_axfr(count, axfr_runs)
    change = ixfr_stream(count)
    ixfr_s, changed = median_time(lambda: do_ixfr(zone, change), 51)
    if changed.serial != NEW_SERIAL or changed.record_count != count:
        raise RuntimeError(f"IXFR gave serial {changed.serial}, {changed.record_count} records")
    fold_s, _ = median_time(changed.folded, axfr_runs)
    return Row(count, n_messages, axfr_s, ixfr_s * 1000,
               axfr_s / ixfr_s, fold_s * 1000)


def table(rows: list[Row]) -> str:
    head = f"{'records':>10}  {'AXFR s':>8}  {'IXFR apply ms':>13}  {'AXFR/IXFR':>9}  {'fold ms':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r.records:>10,}  {r.axfr_s:>8.3f}  {r.ixfr_apply_ms:>13.3f}  {r.ratio:>8.0f}x"
                     f"  {r.fold_ms:>8.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000",
                        help="comma-separated zone sizes in records (default: %(default)s)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON to this file")
    args = parser.parse_args(argv)
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--sizes: not a list of integers: {args.sizes!r}")
    if any(s < 100 for s in sizes):
        parser.error("--sizes: zones need at least 100 records")
    print(f"IXFR of {CHANGED} replaced records vs AXFR, Python {sys.version.split()[0]}, "
          f"in process (no sockets)", flush=True)
    rows = []
    for count in sizes:
        rows.append(measure(count))
        print(f"  measured {count:,} records", file=sys.stderr, flush=True)
    print(table(rows))
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
