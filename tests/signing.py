"""Signed zones for the DNSSEC tests, made by BIND's own tools (``dnssec-keygen``, ``dnssec-signzone``).

secondns never signs; it serves what a primary signed.  So the test zones are signed by the
signer real primaries use, never by our code or by dnspython, and one zone exercises every case
the serving side must prove or sign: a wildcard (answer, NODATA, a name below an existing
sibling), a wildcard CNAME, an empty non-terminal chain (``a.b.c`` only), a signed delegation
(a DS made from a real child key), unsigned delegations with and without glue, CNAME and DNAME
(into the zone), an MX with in-zone targets, a TXT RRset too large for 1232 octets and one too
large for 512 once signed, and an A RRset of several records.

Every zone gets its own ECDSAP256SHA256 KSK and ZSK (``-a ECDSAP256SHA256``, fast and small).
NSEC3 zones are signed with a salt and a few extra iterations (dnssec-signzone 9.18 refuses more
than 150, Unbound's default limit is 150 too; RFC 9276 recommends 0, but a non-zero count is what
exercises our iterated hashing), with or without opt-out (``-A``: unsigned delegations then get
no NSEC3 record of their own).  ``STANDARD_ZONES`` are the three the tests share: NSEC, NSEC3,
NSEC3 with opt-out.

``resign`` re-signs an edited copy of a signed zone.  dnssec-signzone keeps every signature
that is still valid and rebuilds only the NSEC/NSEC3 records the edit touches, so two versions
differ by exactly what an IXFR of that edit carries.
"""

from __future__ import annotations

import re
import subprocess
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from peers import require_binary

SIGNING_TOOLS = ("dnssec-keygen", "dnssec-signzone", "dnssec-dsfromkey")
ALGORITHM = "ECDSAP256SHA256"
NSEC3_SALT = "AABBCCDD"
NSEC3_ITERATIONS = 5
NEGATIVE_TTL = 120  # SOA MINIMUM, below the 300 s data TTL, so negative TTLs are visible
_TIMEOUT = 30.0
_KEY_NAME = re.compile(r"^K(?P<zone>.+)\+(?P<alg>\d{3})\+(?P<tag>\d{5})$")
BIG_TXT_STRINGS = 40  # 40 x 50 octets: over 1232 octets, signed or not
MID_TXT_STRINGS = 8  # 400 octets: fits 512 unsigned, not with its RRSIG


def require_signing_tools() -> None:
    """Skip (fail in CI) unless BIND's signing tools are installed."""
    for tool in SIGNING_TOOLS:
        require_binary(tool)


def _run(args: Sequence[str], cwd: Path) -> str:
    out = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=_TIMEOUT,
                         check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({out.returncode}):\n{out.stdout}{out.stderr}")
    return out.stdout


@dataclass(frozen=True)
class Key:
    """One DNSKEY made by dnssec-keygen: ``base`` is the file name without ``.key``/``.private``."""

    base: Path
    tag: int
    ksk: bool

    @property
    def dnskey(self) -> str:
        """The DNSKEY record as text (the ``.key`` file without its comments)."""
        lines = Path(f"{self.base}.key").read_text().splitlines()
        return next(line for line in lines if line and not line.startswith(";"))


def generate_key(directory: Path, origin: str, *, ksk: bool) -> Key:
    """A new ECDSAP256SHA256 key for ``origin`` in ``directory``."""
    args = [require_binary("dnssec-keygen"), "-q", "-K", str(directory), "-a", ALGORITHM]
    if ksk:
        args += ["-f", "KSK"]
    name = _run([*args, origin], directory).strip()
    match = _KEY_NAME.match(name)
    if match is None:
        raise RuntimeError(f"dnssec-keygen printed {name!r}, not a key name")
    return Key(directory / name, int(match.group("tag")), ksk)


def ds_of(key: Key) -> str:
    """The SHA-256 DS record of ``key`` (``dnssec-dsfromkey -2``), as one line of text."""
    out = _run([require_binary("dnssec-dsfromkey"), "-2", f"{key.base}.key"],
               key.base.parent)
    return out.strip()


@dataclass(frozen=True)
class Nsec3Spec:
    """``dnssec-signzone -3 salt -H iterations [-A]``."""

    salt: str = NSEC3_SALT
    iterations: int = NSEC3_ITERATIONS
    opt_out: bool = True

    def args(self) -> list[str]:
        return ["-3", self.salt, "-H", str(self.iterations), *(["-A"] if self.opt_out else [])]


@dataclass(frozen=True)
class SignedZone:
    """A signed zone file and what a validator needs to trust it."""

    origin: str
    path: Path
    ksk: Key
    zsk: Key
    nsec3: Nsec3Spec | None
    trust_anchor: str  # the KSK's DS record, "origin. IN DS tag 13 2 hex"
    child_ds: str  # the DS record of the signed delegation ``secure``

    @property
    def text(self) -> str:
        return self.path.read_text()

    @property
    def kind(self) -> str:
        return "nsec" if self.nsec3 is None else "nsec3"

    @property
    def name(self) -> str:
        """The origin without its final dot, as secondns's zone_files and peers.ZoneSpec want it."""
        return self.origin.rstrip(".")

    def fqdn(self, relative: str) -> str:
        """``relative`` (or ``@``) made absolute in this zone."""
        return self.origin if relative in ("@", "") else f"{relative}.{self.origin}"


def zone_body(origin: str, serial: int, child_ds: str) -> str:
    """The unsigned zone every DNSSEC test uses (see the module docstring)."""
    big = " ".join(f'"{i:02d}' + "b" * 47 + '"' for i in range(BIG_TXT_STRINGS))
    mid = " ".join(f'"{i:02d}' + "m" * 47 + '"' for i in range(MID_TXT_STRINGS))
    body = f"""\
        $ORIGIN {origin}
        $TTL 300
        @           SOA   ns1 hostmaster {serial} 3600 600 86400 {NEGATIVE_TTL}
        @           NS    ns1
        @           NS    ns2
        @           MX    10 mail
        @           MX    20 mail2
        ns1         A     192.0.2.1
        ns2         A     192.0.2.2
        ns2         AAAA  2001:db8::2
        mail        A     192.0.2.25
        mail        AAAA  2001:db8::25
        mail2       A     192.0.2.26
        www         A     192.0.2.80
        www         A     192.0.2.81
        www         A     192.0.2.82
        www         AAAA  2001:db8::80
        www         TXT   "web"
        alias       CNAME www
        chain       CNAME alias
        ext         CNAME www.example.net.
        *.w         A     192.0.2.99
        *.w         TXT   "wildcard"
        host.w      A     192.0.2.98
        *.cw        CNAME www
        a.b.c       TXT   "deep"
        secure      NS    ns.secure
        ns.secure   A     192.0.2.53
        {child_ds}
        insecure    NS    ns.insecure
        ns.insecure A     192.0.2.54
        remote      NS    ns.example.net.
        dn          DNAME inner
        www.inner   A     192.0.2.7
        big         TXT   {big}
        mid         TXT   {mid}
        """
    return textwrap.dedent(body)


def sign(text: str, out: Path, origin: str, keydir: Path, nsec3: Nsec3Spec | None) -> Path:
    """Sign zone ``text`` with the keys in ``keydir`` (smart signing, ``-S``); one record a line."""
    src = out.parent / f"{out.name}.in"
    src.write_text(text)
    args = [require_binary("dnssec-signzone"), "-S", "-K", str(keydir), "-O", "full", "-o", origin,
            "-f", str(out)]
    if nsec3 is not None:
        args += nsec3.args()
    _run([*args, str(src)], out.parent)
    return out


def make_signed_zone(directory: Path, origin: str, *, nsec3: Nsec3Spec | None = None,
                     serial: int = 1) -> SignedZone:
    """Keys (KSK, ZSK, and a KSK for the ``secure`` child), the zone, signed, in ``directory``."""
    require_signing_tools()
    origin = origin.rstrip(".") + "."
    directory.mkdir(parents=True, exist_ok=True)
    keydir = directory / "keys"
    keydir.mkdir(exist_ok=True)
    childdir = directory / "child-keys"
    childdir.mkdir(exist_ok=True)
    ksk = generate_key(keydir, origin, ksk=True)
    zsk = generate_key(keydir, origin, ksk=False)
    child_ds = ds_of(generate_key(childdir, f"secure.{origin}", ksk=True))
    path = sign(zone_body(origin, serial, child_ds), directory / f"{origin}signed", origin, keydir, nsec3)
    return SignedZone(origin, path, ksk, zsk, nsec3, ds_of(ksk), child_ds)


STANDARD_ZONES: dict[str, tuple[str, Nsec3Spec | None]] = {
    "nsec": ("nsec.example.", None),
    "nsec3": ("nsec3.example.", Nsec3Spec(opt_out=False)),
    "optout": ("optout.example.", Nsec3Spec(opt_out=True)),
}
"""The zones the DNSSEC tests use, by label: NSEC; NSEC3; NSEC3 with opt-out."""


def make_standard_zones(directory: Path) -> dict[str, SignedZone]:
    """Every zone of ``STANDARD_ZONES``, signed with keys of its own under ``directory``."""
    return {label: make_signed_zone(directory / label, origin, nsec3=spec)
            for label, (origin, spec) in STANDARD_ZONES.items()}


def _owner(line: str) -> str:
    return line.split(None, 1)[0].lower() if line and not line[0].isspace() else ""


def resign(zone: SignedZone, out: Path, *, serial: int, remove: Iterable[str] = (),
           add: Iterable[str] = ()) -> SignedZone:
    """The zone re-signed after an edit: owners in ``remove`` (absolute) go, ``add`` lines come.

    The input is the signed zone, so dnssec-signzone keeps the valid signatures of untouched
    RRsets and the two versions differ only by the edit, the SOA and the NSEC/NSEC3 records
    around the changed names.
    """
    gone = {name.lower() for name in remove}
    lines = []
    for line in zone.text.splitlines():
        if _owner(line) in gone:
            continue
        fields = line.split()
        if len(fields) > 3 and fields[2] == "IN" and fields[3] == "SOA" and _owner(line) == zone.origin:
            fields[6] = str(serial)
            line = " ".join(fields)
        elif len(fields) > 4 and fields[3] == "RRSIG" and fields[4] == "SOA":
            continue  # the new SOA needs a new signature
        lines.append(line)
    lines.extend(add)
    keydir = zone.ksk.base.parent
    path = sign("\n".join(lines) + "\n", out, zone.origin, keydir, zone.nsec3)
    return SignedZone(zone.origin, path, zone.ksk, zone.zsk, zone.nsec3, zone.trust_anchor, zone.child_ds)


def tamper(zone: SignedZone, out: Path, owner: str = "www", rtype: str = "A") -> SignedZone:
    """A copy of ``zone`` whose RRSIG over ``owner``/``rtype`` has one signature character changed.

    The record stays well formed (base64 of the same length), so every server loads and serves
    it; only a validator can tell, by the signature no longer verifying.
    """
    target = zone.fqdn(owner).lower()
    lines = zone.text.splitlines()
    for i, line in enumerate(lines):
        fields = line.split()
        if _owner(line) == target and len(fields) > 4 and fields[3] == "RRSIG" and fields[4] == rtype:
            sig = fields[-1]
            pos = len(sig) // 3
            flipped = "B" if sig[pos] != "B" else "C"
            fields[-1] = sig[:pos] + flipped + sig[pos + 1:]
            lines[i] = " ".join(fields)
            break
    else:
        raise ValueError(f"no RRSIG {rtype} at {target} in {zone.path}")
    out.write_text("\n".join(lines) + "\n")
    return SignedZone(zone.origin, out, zone.ksk, zone.zsk, zone.nsec3, zone.trust_anchor, zone.child_ds)
