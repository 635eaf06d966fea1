"""Generate a large, realistic-looking zone and a dnsperf query file for it.

The serving benchmark needs the same zone in every server and a query mix that exercises every
answer path, not just the cheapest one: plain answers of several types, CNAME chains that are
followed inside the zone, a wildcard, referrals below delegations (with glue), NXDOMAIN (which
needs the SOA, and the closest encloser in DNSSEC zones) and NODATA.  Everything is derived from
one seed so two runs, or two machines, benchmark exactly the same data.

    python bench/genzone.py --origin bench.test. --records 100000 --zone z.zone --queries q.txt
"""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass, field
from pathlib import Path

# Share of owner names by kind; the rest of the record budget goes to the names' RRs.
_KINDS = (
    ("A", 0.38),
    ("AAAA", 0.18),
    ("MX", 0.08),
    ("TXT", 0.14),
    ("CNAME", 0.12),
    ("DELEG", 0.04),
    ("MULTI", 0.06),  # one name with A, AAAA and TXT: NODATA for MX on it is realistic
)
_OTHER_TYPES = ("A", "AAAA", "MX", "TXT", "SRV", "CAA", "NS", "DS")


@dataclass
class Generated:
    """The zone text, the record count actually written, and what queries may ask for."""

    text: str
    records: int
    answers: list[tuple[str, str]] = field(default_factory=list)  # (name, type) with data
    nodata: list[tuple[str, str]] = field(default_factory=list)  # (name, type) name exists, type not
    referrals: list[tuple[str, str]] = field(default_factory=list)  # names at/below a delegation


def _label(rng: random.Random, i: int) -> str:
    """Owner labels of mixed shape and length, some two labels deep (empty non-terminals)."""
    base = f"{rng.choice(('www', 'mail', 'api', 'cdn', 'host', 'srv', 'db', 'app'))}{i}"
    if rng.random() < 0.15:
        return f"{base}.grp{i % 97}"
    return base


def generate(origin: str, records: int = 100_000, seed: int = 1) -> Generated:
    """Build a zone of about ``records`` RRs under ``origin`` (deterministic for a given seed)."""
    origin = origin.rstrip(".") + "."
    rng = random.Random(seed)
    out: list[str] = [
        f"$ORIGIN {origin}",
        "$TTL 3600",
        f"@ IN SOA ns1.{origin} hostmaster.{origin} 2024010101 7200 900 1209600 300",
        f"@ IN NS ns1.{origin}",
        f"@ IN NS ns2.{origin}",
        "@ IN MX 10 mail0",
        '@ IN TXT "v=spf1 -all"',
        "ns1 IN A 192.0.2.1",
        "ns1 IN AAAA 2001:db8::1",
        "ns2 IN A 192.0.2.2",
        "ns2 IN AAAA 2001:db8::2",
        "mail0 IN A 192.0.2.25",
        "*.wild IN A 192.0.2.200",
        '*.wild IN TXT "wildcard"',
    ]
    gen = Generated(text="", records=len(out) - 2)
    gen.answers += [(origin, "SOA"), (origin, "NS"), (origin, "MX"), (f"ns1.{origin}", "A")]
    gen.nodata += [(origin, "AAAA"), (f"ns1.{origin}", "MX")]
    hosts: list[str] = ["mail0"]
    kinds = [k for k, _ in _KINDS]
    weights = [w for _, w in _KINDS]
    i = 0
    while gen.records < records:
        i += 1
        kind = rng.choices(kinds, weights)[0]
        name = _label(rng, i)
        fqdn = f"{name}.{origin}"
        if kind == "A":
            out.append(f"{name} IN A 10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")
            gen.records += 1
            hosts.append(name)
        elif kind == "AAAA":
            out.append(f"{name} IN AAAA 2001:db8:{i >> 16:x}::{i & 0xFFFF:x}")
            gen.records += 1
            hosts.append(name)
        elif kind == "MX":
            target = rng.choice(hosts)
            out.append(f"{name} IN MX 10 {target}")
            out.append(f"{name} IN MX 20 mail0")
            gen.records += 2
        elif kind == "TXT":
            out.append(f'{name} IN TXT "bench record {i}" "seed {seed}"')
            gen.records += 1
        elif kind == "CNAME":
            out.append(f"{name} IN CNAME {rng.choice(hosts)}")
            gen.records += 1
            kind = "A"  # what a resolver asks for; the answer follows the CNAME in-zone
        elif kind == "DELEG":
            name = f"d{i}"
            fqdn = f"{name}.{origin}"
            out.append(f"{name} IN NS ns1.{name}")
            out.append(f"{name} IN NS ns2.{name}")
            out.append(f"ns1.{name} IN A 198.51.100.{i % 250 + 1}")
            out.append(f"ns2.{name} IN AAAA 2001:db8:ffff::{i & 0xFFFF:x}")
            gen.records += 4
            gen.referrals += [(fqdn, "A"), (f"www.{fqdn}", "A"), (f"x.y.{fqdn}", "AAAA")]
            continue
        else:  # MULTI
            out.append(f"{name} IN A 10.200.{i >> 8 & 255}.{i & 255}")
            out.append(f"{name} IN AAAA 2001:db8:200::{i & 0xFFFF:x}")
            out.append(f'{name} IN TXT "multi {i}"')
            gen.records += 3
            hosts.append(name)
            gen.nodata.append((fqdn, "MX"))
            kind = rng.choice(("A", "AAAA", "TXT"))
        gen.answers.append((fqdn, kind))
        gen.nodata.append((fqdn, rng.choice([t for t in _OTHER_TYPES if t != kind])))
    for j in range(50):
        gen.answers.append((f"w{j}.wild.{origin}", rng.choice(("A", "TXT"))))
    gen.text = "\n".join(out) + "\n"
    return gen


def queries(gen: Generated, origin: str, count: int = 100_000, seed: int = 1) -> list[str]:
    """dnsperf lines ``name type``: ~78% answers, ~10% NXDOMAIN, ~8% NODATA, ~4% referrals."""
    origin = origin.rstrip(".") + "."
    rng = random.Random(seed + 1)
    lines: list[str] = []
    for n in range(count):
        r = rng.random()
        if r < 0.78:
            name, qtype = rng.choice(gen.answers)
        elif r < 0.88:
            name, qtype = f"nx{n}-{rng.randrange(1 << 30):x}.{origin}", rng.choice(("A", "AAAA"))
        elif r < 0.96:
            name, qtype = rng.choice(gen.nodata)
        else:
            name, qtype = rng.choice(gen.referrals) if gen.referrals else (origin, "NS")
        lines.append(f"{name} {qtype}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--origin", default="bench.test.")
    parser.add_argument("--records", type=int, default=100_000, help="resource records (about)")
    parser.add_argument("--queries-count", type=int, default=100_000, help="lines in the query file")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--zone", type=Path, required=True, help="zone file to write")
    parser.add_argument("--queries", type=Path, help="dnsperf query file to write")
    args = parser.parse_args(argv)
    gen = generate(args.origin, args.records, args.seed)
    args.zone.write_text(gen.text)
    if args.queries is not None:
        lines = queries(gen, args.origin, args.queries_count, args.seed)
        args.queries.write_text("\n".join(lines) + "\n")
    print(f"{args.zone}: {gen.records} records; queries: {args.queries_count if args.queries else 0}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
