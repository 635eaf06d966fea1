"""The YAML configuration, checked in full before anything starts.

A secondary is configured rarely and restarted at awkward moments, so a bad
file must be fixed in one pass: every problem is collected (as octodns does)
and reported once as ``FILE:LINE: KEY.PATH: message``.  Line numbers come
from a small loader that remembers where each mapping key and list item was
written.

Primaries are IP literals only: a secondary that needs DNS to find its
primaries cannot recover when that DNS is itself the thing that broke.
Secrets (TSIG keys, the control token) never appear in an error or a repr.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import difflib
import functools
import gc
import ipaddress
import os
import socket
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from secondns import names
from secondns.errors import ConfigError, NameError_

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

TSIG_ALGORITHMS = ("hmac-sha256", "hmac-sha384", "hmac-sha512", "hmac-sha224", "hmac-sha1", "hmac-md5")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
TRANSFER_MODES = ("ixfr", "axfr")
ZONEMD_MODES = ("verify", "ignore", "require")
DNS_PORT = 53
DOT_PORT = 853  # RFC 9103 7.3: XoT uses the DNS-over-TLS port (RFC 7858) unless agreed otherwise
HTTP_PORT = 9153
TLS_OPPORTUNISTIC = "opportunistic"


class InvalidConfig(ConfigError):
    """Keeps the problems apart so a caller (reload, tests) need not re-split the message."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    @property
    def family(self) -> socket.AddressFamily:
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_endpoint(text: str, default_port: int) -> Endpoint:
    """``ADDR``, ``ADDR:PORT``, ``[V6]:PORT`` or a bare IPv6 address.

    An unbracketed IPv6 address never carries a port: ``::1:53`` is itself a
    valid address, so guessing would silently pick the wrong one.
    """
    return _parse_endpoint(text, default_port)


@functools.lru_cache(maxsize=1024)
def _parse_endpoint(text: str, default_port: int) -> Endpoint:
    # Memoised (an Endpoint is immutable; a ValueError is not cached): 10,000 zones that name
    # the same primary parsed its address 10,000 times, ~14% of parsing such a file.
    host, port_text = text, None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"{text!r} lacks the closing ']'")
        host, rest = text[1:end], text[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{text!r}: expected ':PORT' after ']'")
            port_text = rest[1:]
        if ":" not in host:
            raise ValueError(f"{text!r}: brackets are only for IPv6 addresses")
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        named = ":" not in host and any(c.isalpha() for c in host)
        hint = " (use an address, not a hostname)" if named else ""
        raise ValueError(f"{host!r} is not an IP address{hint}")
    port = default_port
    if port_text is not None:
        if not (port_text.isascii() and port_text.isdigit()):
            raise ValueError(f"port {port_text!r} in {text!r} is not a number")
        port = int(port_text)
        if not 1 <= port <= 65535:
            raise ValueError(f"port {port} in {text!r} is not in 1..65535")
    return Endpoint(str(address), port)


@dataclass(frozen=True)
class PrimaryTls:
    """How a primary is reached over TLS (RFC 9103 9.3): strict with *ca* and *name*,
    opportunistic (encrypted, not authenticated) when both are None."""

    ca: Path | None = None
    name: str | None = None

    @property
    def strict(self) -> bool:
        return self.ca is not None


@dataclass(frozen=True)
class TlsPrimary(Endpoint):
    """A primary reached over TLS (XoT): its SOA checks and transfers all use TLS, one
    connection each, as BIND does for a primary with a `tls` transport."""

    tls: PrimaryTls = PrimaryTls()


@dataclass(frozen=True)
class TlsServer:
    """``server.tls``: DNS over TLS listeners (RFC 7858) that also serve XoT (RFC 9103)."""

    listen: tuple[Endpoint, ...]
    certificate: Path
    key: Path


@dataclass(frozen=True)
class TsigKey:
    name: str
    algorithm: str
    secret: bytes = field(repr=False)

    def __repr__(self) -> str:
        return f"TsigKey(name={self.name!r}, algorithm={self.algorithm!r}, secret=<hidden>)"


def source_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """A peer's address as ACLs compare it: IPv4-mapped IPv6 (dual-stack sockets) unmapped."""
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


@dataclass(frozen=True)
class TransferAcl:
    """One `allow-transfer` entry: both halves that are set must match (docs/configuration.md)."""

    network: Network | None = None
    key: TsigKey | None = None


@dataclass(frozen=True)
class ZoneConfig:
    """One zone's settings; the defaults here are the built-in ones a config may override."""

    name: str
    origin: bytes
    primaries: tuple[Endpoint, ...] = ()
    allow_notify: tuple[Network, ...] = ()
    refresh_min: int = 5
    refresh_max: int = 86400
    retry_min: int = 5
    retry_max: int = 3600
    expire_min: int = 60
    expire_max: int = 31536000
    transfer_timeout: float = 300.0
    transfer_idle_timeout: float = 30.0
    max_records: int = 10_000_000
    key: TsigKey | None = None
    transfer: str = "ixfr"
    zonemd: str = "verify"
    catalog: bool = False  # RFC 9432 catalog zone: transferred, never served; lists member zones
    # Transfer-out (secondns/xfrout.py): empty means every AXFR/IXFR is REFUSED.
    allow_transfer: tuple[TransferAcl, ...] = ()
    # NOTIFY out (secondns/notify_out.py): explicit targets, as BIND's also-notify.
    notify: tuple[Endpoint, ...] = ()
    notify_key: TsigKey | None = None

    @property
    def static(self) -> bool:
        """A zone with no primaries is served from its copy on disk and never expires."""
        return not self.primaries


@dataclass(frozen=True)
class MetricsConfig:
    """``server.metrics``: what /metrics exports."""

    per_zone: bool = True  # per-zone series; the summary series are always there


@dataclass(frozen=True)
class RateLimitConfig:
    """``server.rate-limit``: response rate limiting with BIND 9's option names and defaults
    (secondns/serve/rrl.py; docs/configuration.md "Response rate limiting").

    A rate of 0 does not limit that kind of response, as in BIND; the four per-kind rates
    default to ``responses-per-second``.
    """

    responses_per_second: int = 0
    nodata_per_second: int | None = None
    nxdomains_per_second: int | None = None
    referrals_per_second: int | None = None
    errors_per_second: int | None = None
    window: int = 15
    slip: int = 2
    ipv4_prefix_length: int = 24
    ipv6_prefix_length: int = 56
    exempt: tuple[Network, ...] = ()
    log_only: bool = False
    max_table_size: int = 20000

    def rate(self, kind: str) -> int:
        """The per-second credit of responses of *kind* (``nodata``, ``nxdomains``, ...)."""
        value: int | None = getattr(self, f"{kind}_per_second")
        return self.responses_per_second if value is None else value

    def to_plain(self) -> dict[str, Any]:
        """Plain data for the worker channel (marshal): prefixes as text."""
        return {**{k: getattr(self, k) for k in self.__dataclass_fields__ if k != "exempt"},
                "exempt": [str(n) for n in self.exempt]}

    @classmethod
    def from_plain(cls, plain: dict[str, Any] | None) -> RateLimitConfig | None:
        if plain is None:
            return None
        return cls(**{**plain, "exempt": tuple(ipaddress.ip_network(n) for n in plain["exempt"])})


@dataclass(frozen=True)
class ServerConfig:
    listen: tuple[Endpoint, ...] = (Endpoint("127.0.0.1", DNS_PORT),)
    http: Endpoint | None = Endpoint("127.0.0.1", HTTP_PORT)
    storage: Path = Path("zones")
    identity: str | None = None
    version: str | None = None
    udp_max_payload: int = 1232
    tcp_idle_timeout: float = 10.0
    tcp_max_connections: int = 1000
    # Per-client TCP limits (secondns/serve/server.py TCPLimits; docs/configuration.md).
    tcp_initial_timeout: float = 5.0
    tcp_max_connections_per_client: int = 100
    tcp_max_connection_duration: float = 120.0
    answer_cache_size: int = 64 << 20  # octets, per serving process
    # RFC 9018 server-cookie secrets from server.cookies.secret-file, current first; empty: a
    # random secret at each start.
    cookie_secrets: tuple[bytes, ...] = field(default=(), repr=False)
    control_token: str | None = field(default=None, repr=False)
    user: str | None = None
    log_level: str = "info"
    log_format: str = "text"
    # Serving processes (docs/architecture.md "Workers"); the file's default is `auto`, a
    # programmatic ServerConfig keeps the single-process mode.
    workers: int = 1
    # Paces refresh across zones, named as BIND's transfers-in and serial-query-rate.
    transfers_in: int = 10
    soa_queries_per_second: float = 20.0
    metrics: MetricsConfig = MetricsConfig()
    # Transfer-out limits (secondns/xfrout.py), named after BIND's transfers-out.
    transfers_out: int = 10
    transfers_out_per_client: int = 2
    transfer_out_idle_timeout: float = 30.0
    # DNS over TLS and XoT listeners (secondns/transfer/tls.py); None: no TLS listener.
    tls: TlsServer | None = None
    rate_limit: RateLimitConfig | None = None  # server.rate-limit; None: no RRL


@dataclass(frozen=True)
class Config:
    path: Path
    server: ServerConfig
    keys: dict[str, TsigKey]
    zones: dict[str, ZoneConfig]
    # What catalog members are built from (membership.py): the `defaults` settings as written,
    # and each `catalog-groups` template's settings (only the keys it sets).
    defaults: dict[str, Any] = field(default_factory=dict)
    catalog_groups: dict[str, dict[str, Any]] = field(default_factory=dict)


def load_config(path: str | Path) -> Config:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidConfig([f"{path}: cannot read configuration: {exc.strerror}"])
    except UnicodeDecodeError:
        raise InvalidConfig([f"{path}: configuration is not UTF-8 text"])
    return parse_config(text, str(path))


def parse_config(text: str, path: str = "<string>", base_dir: Path | None = None) -> Config:
    """Relative paths in the file resolve against *base_dir*, by default the file's own directory.

    That way the same config works whatever directory the server is started from.
    """
    with _gc_paused():
        return _parse_config(text, path, base_dir)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """The cyclic collector off while a configuration is built (back as it was afterwards).

    Parsing allocates a few objects per line and frees almost none until the end, so the
    collector ran its full passes over an ever larger heap: half the CPU of parsing 10,000
    zones (0.69 s with it, 0.36 s without).  What parsing builds holds no cycles of note;
    anything it does leave is collected at the next pass after this.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _parse_config(text: str, path: str, base_dir: Path | None) -> Config:
    ck = _Checker(path, (base_dir or Path(path).parent).resolve())
    try:
        root = _load_yaml(text)
    except yaml.MarkedYAMLError as exc:
        # Only problem/context: str(exc) quotes the offending line, which may hold a secret.
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        detail = exc.problem or exc.context or "syntax error"
        if exc.problem and exc.context:
            start = exc.context_mark.line + 1 if exc.context_mark is not None else line
            detail += f" ({exc.context} started on line {start})" if start != line else f" ({exc.context})"
        raise InvalidConfig([f"{path}:{line}: invalid YAML: {detail}"])
    except yaml.YAMLError as exc:
        raise InvalidConfig([f"{path}:1: invalid YAML: {type(exc).__name__}"])
    config = ck.config(root)
    if ck.problems:
        ck.problems.sort(key=lambda p: p[0])
        raise InvalidConfig([message for _, message in ck.problems])
    assert config is not None
    return config


# --- YAML with line numbers -------------------------------------------------


class _Map(dict[Any, Any]):
    """A YAML mapping that remembers the line of each key."""

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self.lines: dict[Any, int] = {}
        self.duplicates: list[tuple[Any, int, int]] = []  # key, line, line of the first one


class _Seq(list[Any]):
    """A YAML list that remembers the line of each item."""

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self.lines: list[int] = []


class _Loader(yaml.SafeLoader):
    def map_with_lines(self, node: yaml.MappingNode) -> Iterator[_Map]:
        data = _Map(node.start_mark.line + 1)
        yield data
        # Keys brought in by a '<<' merge may be overridden; only keys written twice are duplicates.
        explicit = {id(key_node) for key_node, _ in node.value}
        seen: set[Any] = set()
        self.flatten_mapping(node)
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable):
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    "found unhashable key", key_node.start_mark,
                )
            line = key_node.start_mark.line + 1
            if id(key_node) in explicit:
                if key in seen:
                    data.duplicates.append((key, line, data.lines[key]))
                seen.add(key)
            data.lines[key] = line
            data[key] = self.construct_object(value_node)

    def seq_with_lines(self, node: yaml.SequenceNode) -> Iterator[_Seq]:
        data = _Seq(node.start_mark.line + 1)
        yield data
        data.lines = [child.start_mark.line + 1 for child in node.value]
        data.extend(self.construct_object(child) for child in node.value)


_Loader.add_constructor("tag:yaml.org,2002:map", _Loader.map_with_lines)
_Loader.add_constructor("tag:yaml.org,2002:seq", _Loader.seq_with_lines)

# libyaml's parser with the same constructors: a 10,000-zone file parses in a fraction of the
# time.  Only for files that parse; an error is reported by _Loader, whose messages we quote.
_FastLoader: type[Any] | None = None
if getattr(yaml, "__with_libyaml__", False):
    class _CLoader(yaml.CSafeLoader):
        map_with_lines = _Loader.map_with_lines
        seq_with_lines = _Loader.seq_with_lines

    _CLoader.add_constructor("tag:yaml.org,2002:map", _CLoader.map_with_lines)
    _CLoader.add_constructor("tag:yaml.org,2002:seq", _CLoader.seq_with_lines)
    _FastLoader = _CLoader


def _load_yaml(text: str) -> Any:
    if _FastLoader is not None:
        try:
            return yaml.load(text, Loader=_FastLoader)
        except yaml.YAMLError:
            pass  # parsed again below for the error as the pure-Python parser words it
    return yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader: no arbitrary objects


# --- checking ---------------------------------------------------------------


class _Bad:
    """Returned by a parser that has already reported its problem."""


BAD = _Bad()

# A parser turns one YAML value into a setting, or reports why not and returns BAD.
_Parser = Callable[["_Checker", Any, int, str], Any]


def _describe(value: object, secret: bool = False) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean" if secret else f"boolean {str(value).lower()}"
    if isinstance(value, _Map):
        return "a mapping"
    if isinstance(value, _Seq):
        return "a list"
    kind = {int: "integer", float: "number", str: "string"}.get(type(value), type(value).__name__)
    return kind if secret else f"{kind} {value!r}"


class _Checker:
    def __init__(self, file: str, base_dir: Path) -> None:
        self.file = file
        self.base_dir = base_dir
        self.problems: list[tuple[int, str]] = []
        self.keys: dict[str, TsigKey] = {}
        self.key_names: set[str] = set()  # valid or not, so a zone's reference is not reported twice
        self.defaults: dict[str, Any] = {}

    def report(self, line: int, path: str, message: str) -> _Bad:
        where = f"{path}: " if path else ""
        self.problems.append((line, f"{self.file}:{line}: {where}{message}"))
        return BAD

    def section(self, value: Any, line: int, path: str, allowed: tuple[str, ...] | None) -> _Map | None:
        """A mapping with string keys; *allowed* None means any key (zone and key names)."""
        if value is None:
            return _Map(line)
        if not isinstance(value, _Map):
            self.report(line, path, f"expected a mapping, got {_describe(value)}")
            return None
        for key, key_line, first in value.duplicates:
            self.report(key_line, _join(path, str(key)), f"duplicate key (first on line {first})")
        for key in list(value):
            key_line = value.lines[key]
            if not isinstance(key, str):
                self.report(key_line, path, f"key {key!r} is not a string (put it in quotes)")
                del value[key]
            elif allowed is not None and key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                self.report(key_line, path, f"unknown key {key!r}{hint}")
                del value[key]
        return value

    def read(self, m: _Map, path: str, parsers: dict[str, _Parser]) -> dict[str, Any]:
        """Parsed settings for the keys present, by attribute name; absent and bad keys are left out."""
        out: dict[str, Any] = {}
        for key, parser in parsers.items():
            if key in m:
                value = parser(self, m[key], m.lines[key], _join(path, key))
                if value is not BAD:
                    out[key.replace("-", "_")] = value
        return out

    def config(self, root: Any) -> Config | None:
        top = self.section(root, 1, "", ("server", "keys", "defaults", "zones", "catalog-groups"))
        if top is None:
            return None
        server = self.server(top)
        self.read_keys(top)
        zones = self.zones(top)
        groups = self.catalog_groups(top)
        if server is None:
            return None
        return Config(Path(self.file), server, dict(self.keys), zones, self.defaults, groups)

    def catalog_groups(self, top: _Map) -> dict[str, dict[str, Any]]:
        """RFC 9432 4.4.2 group templates: zone settings a catalog member with that group gets."""
        m = self.section(top.get("catalog-groups"), top.lines.get("catalog-groups", 1), "catalog-groups",
                         None)
        if m is None:
            return {}
        out: dict[str, dict[str, Any]] = {}
        for name, value in m.items():
            path = f"catalog-groups.{name}"
            g = self.section(value, m.lines[name], path, tuple(k for k in _ZONE if k != "catalog"))
            if g is None:
                continue
            full = self.zone_settings(g, path, self.defaults)
            out[name] = {k.replace("-", "_"): full[k.replace("-", "_")] for k in g
                         if k.replace("-", "_") in full}
        return out

    def server(self, top: _Map) -> ServerConfig | None:
        m = self.section(top.get("server"), top.lines.get("server", 1), "server", tuple(_SERVER))
        if m is None:
            return None
        settings = self.read(m, "server", _SERVER)
        if "control-token" in m and "control-token-file" in m:
            self.report(m.lines["control-token-file"], "server.control-token-file",
                        "set either control-token or control-token-file, not both")
        if "cookies" in settings:
            settings["cookie_secrets"] = settings.pop("cookies")
        if "control_token_file" in settings:
            settings["control_token"] = settings.pop("control_token_file")
        settings.setdefault("storage", self.base_dir / "zones")
        if "workers" not in m:
            settings["workers"] = auto_workers()
        return ServerConfig(**settings)

    def read_keys(self, top: _Map) -> None:
        keys = self.section(top.get("keys"), top.lines.get("keys", 1), "keys", None)
        if keys is None:
            return
        for name, value in keys.items():
            self.key_names.add(name)
            path = f"keys.{name}"
            line = keys.lines[name]
            m = self.section(value, line, path, ("algorithm", "secret", "secret-file"))
            try:
                names.from_text(name, names.ROOT)
            except NameError_ as exc:
                self.report(line, path, f"key name is not a valid DNS name: {exc}")
                continue
            if m is None:
                continue
            before = len(self.problems)
            settings = self.read(m, path, _KEY)
            if "secret" in m and "secret-file" in m:
                self.report(m.lines["secret-file"], f"{path}.secret-file",
                            "set either secret or secret-file, not both")
            elif "secret" not in m and "secret-file" not in m:
                self.report(line, path, "needs a secret or a secret-file")
            if len(self.problems) == before:
                secret: bytes = settings.get("secret") or settings["secret_file"]
                self.keys[name] = TsigKey(name, settings.get("algorithm", "hmac-sha256"), secret)

    def zones(self, top: _Map) -> dict[str, ZoneConfig]:
        allowed = tuple(k for k in _ZONE if k != "catalog")  # a default catalog makes no sense
        defaults = self.section(top.get("defaults"), top.lines.get("defaults", 1), "defaults", allowed)
        base = self.zone_settings(defaults, "defaults", {}) if defaults is not None else {}
        self.defaults = base
        zones_map = self.section(top.get("zones"), top.lines.get("zones", 1), "zones", None)
        if zones_map is None:
            return {}
        zones: dict[str, ZoneConfig] = {}
        first_line: dict[str, tuple[str, int]] = {}
        for written, value in zones_map.items():
            path = f"zones.{written}"
            line = zones_map.lines[written]
            try:
                origin = names.from_text(written, names.ROOT).lower()
            except NameError_ as exc:
                self.report(line, path, f"zone name is not a valid DNS name: {exc}")
                continue
            canonical = names.to_text(origin)
            if canonical in first_line:
                other, other_line = first_line[canonical]
                self.report(line, path, f"same zone as {other!r} on line {other_line}")
                continue
            first_line[canonical] = (written, line)
            m = self.section(value, line, path, tuple(_ZONE))
            if m is None:
                continue
            settings = self.zone_settings(m, path, base)
            zones[canonical] = ZoneConfig(canonical, origin, **settings)
        return zones

    def zone_settings(self, m: _Map, path: str, base: dict[str, Any]) -> dict[str, Any]:
        """*base* overlaid with *m*; a clamp pair is checked where either half is set."""
        settings = {**base, **self.read(m, path, _ZONE)}
        for what in ("refresh", "retry", "expire"):
            lo_key, hi_key = f"{what}-min", f"{what}-max"
            written = [k for k in (lo_key, hi_key) if k in m]
            if not written:
                continue
            lo = settings.get(f"{what}_min", getattr(_BUILTIN, f"{what}_min"))
            hi = settings.get(f"{what}_max", getattr(_BUILTIN, f"{what}_max"))
            if lo > hi:
                self.report(m.lines[written[0]], _join(path, written[0]),
                            f"{lo_key} ({lo}) is greater than {hi_key} ({hi})")
        return settings


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# --- parsers ----------------------------------------------------------------


def _int(lo: int, hi: int | None = None) -> _Parser:
    def parse(ck: _Checker, value: Any, line: int, path: str) -> Any:
        if not isinstance(value, int) or isinstance(value, bool):
            return ck.report(line, path, f"expected an integer, got {_describe(value)}")
        if value < lo or (hi is not None and value > hi):
            bounds = f"in {lo}..{hi}" if hi is not None else f">= {lo}"
            return ck.report(line, path, f"must be {bounds}, got {value}")
        return value
    return parse


def _bool(ck: _Checker, value: Any, line: int, path: str) -> Any:
    if not isinstance(value, bool):
        return ck.report(line, path, f"expected true or false, got {_describe(value)}")
    return value


_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def _size(lo: int) -> _Parser:
    """Octets: an integer, or a number with K, M or G (powers of 1024, as BIND's sizes)."""
    def parse(ck: _Checker, value: Any, line: int, path: str) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            octets = value
        elif isinstance(value, str) and value[:-1].isdigit() and value[-1:].upper() in _SIZE_UNITS:
            octets = int(value[:-1]) * _SIZE_UNITS[value[-1].upper()]
        elif isinstance(value, str) and value.isdigit():
            octets = int(value)
        else:
            return ck.report(line, path, f"expected a size (65536, 512K, 64M, 1G), got {_describe(value)}")
        if octets < lo:
            return ck.report(line, path, f"must be at least {lo} octets, got {value}")
        return octets
    return parse


def _seconds(ck: _Checker, value: Any, line: int, path: str) -> Any:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return ck.report(line, path, f"expected a number of seconds, got {_describe(value)}")
    if not value > 0:
        return ck.report(line, path, f"must be greater than 0, got {value}")
    return float(value)


def _string(nullable: bool = False, secret: bool = False, max_bytes: int | None = None) -> _Parser:
    def parse(ck: _Checker, value: Any, line: int, path: str) -> Any:
        if value is None and nullable:
            return None
        if not isinstance(value, str):
            hint = " (put it in quotes)" if not isinstance(value, _Map | _Seq) and value is not None else ""
            return ck.report(line, path, f"expected a string, got {_describe(value, secret)}{hint}")
        if not value:
            return ck.report(line, path, "must not be empty")
        if max_bytes is not None and len(value.encode("utf-8")) > max_bytes:
            return ck.report(line, path, f"longer than {max_bytes} bytes")
        return value
    return parse


def _choice(choices: tuple[str, ...]) -> _Parser:
    def parse(ck: _Checker, value: Any, line: int, path: str) -> Any:
        if isinstance(value, str) and value.lower() in choices:
            return value.lower()
        return ck.report(line, path, f"expected one of {', '.join(choices)}, got {_describe(value)}")
    return parse


def _endpoint(default_port: int, nullable: bool = False) -> _Parser:
    def parse(ck: _Checker, value: Any, line: int, path: str) -> Any:
        if value is None and nullable:
            return None
        if not isinstance(value, str):
            return ck.report(line, path, f"expected an address string, got {_describe(value)}")
        try:
            return parse_endpoint(value, default_port)
        except ValueError as exc:
            return ck.report(line, path, str(exc))
    return parse


def _rate(ck: _Checker, value: Any, line: int, path: str) -> Any:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return ck.report(line, path, f"expected a number per second, got {_describe(value)}")
    if not value > 0:
        return ck.report(line, path, f"must be greater than 0, got {value}")
    return float(value)


def _metrics(ck: _Checker, value: Any, line: int, path: str) -> Any:
    m = ck.section(value, line, path, ("per-zone",))
    if m is None:
        return BAD
    per_zone = m.get("per-zone", True)
    if not isinstance(per_zone, bool):
        return ck.report(m.lines["per-zone"], f"{path}.per-zone",
                         f"expected true or false, got {_describe(per_zone)}")
    return MetricsConfig(per_zone=per_zone)


# BIND rate-limit options secondns does not offer, and why (docs/configuration.md).
_RRL_UNSUPPORTED = {
    "all-per-second": "not supported (it limits every response to a prefix, legitimate ones "
                      "included; BIND's ARM advises against it)",
    "qps-scale": "not supported",
    "min-table-size": "not needed (the table grows as used, up to max-table-size)",
}
_RRL_RATE = _int(0, 1000)  # BIND's DNS_RRL_MAX_RATE


def _rate_limit(ck: _Checker, value: Any, line: int, path: str) -> Any:
    """``rate-limit:`` with BIND's option names and ranges (bin/named/server.c configure_rrl)."""
    parsers: dict[str, _Parser] = {
        "responses-per-second": _RRL_RATE,
        "nodata-per-second": _RRL_RATE,
        "nxdomains-per-second": _RRL_RATE,
        "referrals-per-second": _RRL_RATE,
        "errors-per-second": _RRL_RATE,
        "window": _int(1, 3600),
        "slip": _int(0, 10),
        "ipv4-prefix-length": _int(8, 32),
        "ipv6-prefix-length": _int(16, 128),
        "exempt": _list(_network),
        "exempt-clients": _list(_network),
        "log-only": _bool,
        "max-table-size": _int(1, 10_000_000),
    }
    m = ck.section(value, line, path, (*parsers, *_RRL_UNSUPPORTED))
    if m is None:
        return BAD
    bad = False
    for key, why in _RRL_UNSUPPORTED.items():
        if key in m:
            ck.report(m.lines[key], _join(path, key), why)
            bad = True
    if "exempt" in m and "exempt-clients" in m:
        ck.report(m.lines["exempt-clients"], _join(path, "exempt-clients"),
                  "set either exempt or exempt-clients (its BIND name), not both")
        bad = True
    before = len(ck.problems)
    settings = ck.read(m, path, parsers)
    if "exempt_clients" in settings:
        settings["exempt"] = settings.pop("exempt_clients")
    if bad or len(ck.problems) != before:
        return BAD
    return RateLimitConfig(**settings)


def _network(ck: _Checker, value: Any, line: int, path: str) -> Any:
    if not isinstance(value, str):
        return ck.report(line, path, f"expected an address or prefix string, got {_describe(value)}")
    try:
        return ipaddress.ip_network(value)
    except ValueError:
        pass
    try:
        network = ipaddress.ip_network(value, strict=False)
    except ValueError:
        return ck.report(line, path, f"{value!r} is not an IP address or prefix")
    return ck.report(line, path, f"{value!r} has host bits set (did you mean {str(network)!r}?)")


def _transfer_acl(ck: _Checker, value: Any, line: int, path: str) -> Any:
    """An address or prefix string, {key: NAME}, or {address: ..., key: NAME}."""
    if isinstance(value, str):
        network = _network(ck, value, line, path)
        return BAD if network is BAD else TransferAcl(network, None)
    if not isinstance(value, _Map):
        return ck.report(line, path, "expected an address or prefix string or a mapping with "
                                     f"address and/or key, got {_describe(value)}")
    m = ck.section(value, line, path, ("address", "key"))
    if m is None:
        return BAD
    if not m:
        return ck.report(line, path, "needs an address, a key or both")
    network = _network(ck, m["address"], m.lines["address"], f"{path}.address") if "address" in m else None
    key = _key_ref(ck, m["key"], m.lines["key"], f"{path}.key") if "key" in m else None
    if network is BAD or key is BAD:
        return BAD
    if network is None and key is None:
        return ck.report(line, path, "needs an address, a key or both")
    return TransferAcl(network, key)


def _config_file(ck: _Checker, value: Any, line: int, path: str) -> Any:
    """A readable file named relative to the config's directory (certificates, keys)."""
    name = _string()(ck, value, line, path)
    if name is BAD:
        return BAD
    file = (ck.base_dir / name).resolve()
    try:
        with file.open("rb") as handle:
            handle.read(1)
    except OSError as exc:
        return ck.report(line, path, f"cannot read {str(file)!r}: {exc.strerror}")
    return file


def _tls_server(ck: _Checker, value: Any, line: int, path: str) -> Any:
    """`tls: {listen: [...], certificate: FILE, key: FILE}`; the files are loaded here, so a
    bad certificate or key is reported with the rest instead of failing at start-up."""
    m = ck.section(value, line, path, ("listen", "certificate", "key"))
    if m is None:
        return BAD
    missing = [k for k in ("listen", "certificate", "key") if k not in m]
    if missing:
        return ck.report(line, path, f"needs {', '.join(missing)}")
    listen = _list(_endpoint(DOT_PORT), non_empty=True)(ck, m["listen"], m.lines["listen"],
                                                        _join(path, "listen"))
    files = {k: _config_file(ck, m[k], m.lines[k], _join(path, k)) for k in ("certificate", "key")}
    if listen is BAD or any(f is BAD for f in files.values()):
        return BAD
    from secondns.transfer import tls  # pyOpenSSL is imported only where TLS is configured

    problem = tls.check_server_files(files["certificate"], files["key"])
    if problem is not None:
        which, message = problem
        return ck.report(m.lines[which], _join(path, which), message)
    return TlsServer(listen, files["certificate"], files["key"])


def _primary_tls(ck: _Checker, value: Any, line: int, path: str) -> Any:
    """`tls: opportunistic` or `tls: {ca: FILE, name: HOSTNAME}` (RFC 9103 9.3.1, 9.3.2)."""
    if isinstance(value, str) and value.lower() == TLS_OPPORTUNISTIC:
        return PrimaryTls()
    if not isinstance(value, _Map):
        return ck.report(line, path, f"expected {TLS_OPPORTUNISTIC} or a mapping with ca and name, "
                                     f"got {_describe(value)}")
    m = ck.section(value, line, path, ("ca", "name"))
    if m is None:
        return BAD
    missing = [k for k in ("ca", "name") if k not in m]
    if missing:
        return ck.report(line, path, f"needs {' and '.join(missing)} (or use tls: {TLS_OPPORTUNISTIC})")
    ca = _config_file(ck, m["ca"], m.lines["ca"], _join(path, "ca"))
    name = _string()(ck, m["name"], m.lines["name"], _join(path, "name"))
    if ca is BAD or name is BAD:
        return BAD
    if not _tls_name_ok(name):
        return ck.report(m.lines["name"], _join(path, "name"),
                         f"{name!r} is neither a host name nor an IP address")
    from secondns.transfer import tls

    problem = tls.check_ca_file(ca)
    if problem is not None:
        return ck.report(m.lines["ca"], _join(path, "ca"), problem)
    return PrimaryTls(ca, name.rstrip("."))


def _tls_name_ok(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        pass
    try:
        names.from_text(name, names.ROOT)
    except NameError_:
        return False
    return all(c.isalnum() or c in "-._*" for c in name)


def _primary(ck: _Checker, value: Any, line: int, path: str) -> Any:
    """`"HOST:PORT"`, or `{address: "HOST:PORT", tls: ...}` for a primary reached over TLS."""
    if not isinstance(value, _Map):
        return _endpoint(DNS_PORT)(ck, value, line, path)
    m = ck.section(value, line, path, ("address", "tls"))
    if m is None:
        return BAD
    if "address" not in m:
        return ck.report(line, path, "needs an address")
    tls = _primary_tls(ck, m["tls"], m.lines["tls"], _join(path, "tls")) if "tls" in m else None
    port = DOT_PORT if tls is not None else DNS_PORT
    endpoint = _endpoint(port)(ck, m["address"], m.lines["address"], _join(path, "address"))
    if endpoint is BAD or tls is BAD:
        return BAD
    return endpoint if tls is None else TlsPrimary(endpoint.host, endpoint.port, tls)


def _list(item: _Parser, non_empty: bool = False) -> _Parser:
    """A YAML list of *item*; null (every entry commented out) is an empty list."""
    def parse(ck: _Checker, value: Any, line: int, path: str) -> Any:
        if value is None:
            value = _Seq(line)
        if not isinstance(value, _Seq):
            return ck.report(line, path, f"expected a list, got {_describe(value)}")
        if non_empty and not value:
            return ck.report(line, path, "must list at least one address")
        items = [item(ck, v, value.lines[i], f"{path}[{i}]") for i, v in enumerate(value)]
        return BAD if any(i is BAD for i in items) else tuple(items)
    return parse


def _file_text(ck: _Checker, value: Any, line: int, path: str) -> Any:
    """Contents of a file named relative to the config's directory, stripped; never quoted in errors."""
    name = _string()(ck, value, line, path)
    if name is BAD:
        return BAD
    file = ck.base_dir / name
    try:
        text = file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        return ck.report(line, path, f"cannot read {str(file)!r}: {exc.strerror}")
    except UnicodeDecodeError:
        return ck.report(line, path, f"{str(file)!r} is not UTF-8 text")
    if not text:
        return ck.report(line, path, f"{str(file)!r} is empty")
    return text


def _base64(text: str) -> bytes | str:
    """Decoded bytes, or why not; wrapped lines (as in BIND key files) are fine."""
    try:
        decoded = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        return f"not valid base64 ({exc})"
    return decoded if decoded else "decodes to nothing"


def _secret(ck: _Checker, value: Any, line: int, path: str) -> Any:
    text = _string(secret=True)(ck, value, line, path)
    if text is BAD:
        return BAD
    decoded = _base64(text)
    return ck.report(line, path, f"secret is {decoded}") if isinstance(decoded, str) else decoded


def _secret_file(ck: _Checker, value: Any, line: int, path: str) -> Any:
    text = _file_text(ck, value, line, path)
    if text is BAD:
        return BAD
    decoded = _base64(text)
    if isinstance(decoded, str):
        return ck.report(line, path, f"{str(ck.base_dir / value)!r} holds a secret that is {decoded}")
    return decoded


def _cookies(ck: _Checker, value: Any, line: int, path: str) -> Any:
    """`cookies: {secret-file: FILE}`: one secret a line, 32 hex digits (16 octets, as BIND's
    cookie-secret); the first makes new cookies, the others are still accepted (rotation)."""
    m = ck.section(value, line, path, ("secret-file",))
    if m is None:
        return BAD
    if "secret-file" not in m:
        return ()
    text = _file_text(ck, m["secret-file"], m.lines["secret-file"], _join(path, "secret-file"))
    if text is BAD:
        return BAD
    secrets = []
    for number, raw in enumerate(text.splitlines(), 1):
        word = raw.strip()
        if not word:
            continue
        try:
            secret = bytes.fromhex(word)
        except ValueError:
            secret = b""
        if len(secret) != 16:
            return ck.report(m.lines["secret-file"], _join(path, "secret-file"),
                             f"line {number} of the file is not a secret of 32 hex digits")
        secrets.append(secret)
    return tuple(secrets)


def _storage(ck: _Checker, value: Any, line: int, path: str) -> Any:
    name = _string()(ck, value, line, path)
    return BAD if name is BAD else (ck.base_dir / name).resolve()


def _key_ref(ck: _Checker, value: Any, line: int, path: str) -> Any:
    name = _string(nullable=True)(ck, value, line, path)
    if name is None or name is BAD:
        return name
    if name in ck.keys:
        return ck.keys[name]
    if name in ck.key_names:
        return BAD  # defined but invalid, reported there
    close = difflib.get_close_matches(name, list(ck.key_names), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ck.report(line, path, f"TSIG key {name!r} is not defined under keys{hint}")


def auto_workers() -> int:
    """`workers: auto`: one serving process per CPU this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _workers(ck: _Checker, value: Any, line: int, path: str) -> Any:
    if value == "auto":
        return auto_workers()
    if not isinstance(value, int) or isinstance(value, bool):
        return ck.report(line, path, f"expected an integer or auto, got {_describe(value)}")
    if not 1 <= value <= 1024:
        return ck.report(line, path, f"must be in 1..1024 or auto, got {value}")
    return value


_SERVER: dict[str, _Parser] = {
    "listen": _list(_endpoint(DNS_PORT), non_empty=True),
    "http": _endpoint(HTTP_PORT, nullable=True),
    "storage": _storage,
    "identity": _string(nullable=True, max_bytes=255),
    "version": _string(nullable=True, max_bytes=255),
    "udp-max-payload": _int(512, 65535),
    "tcp-idle-timeout": _seconds,
    "tcp-max-connections": _int(1),
    "tcp-max-connections-per-client": _int(1),
    "tcp-initial-timeout": _seconds,
    "tcp-max-connection-duration": _seconds,
    "answer-cache-size": _size(64 << 10),
    "cookies": _cookies,
    "control-token": _string(nullable=True, secret=True),
    "control-token-file": _file_text,
    "user": _string(nullable=True),
    "log-level": _choice(LOG_LEVELS),
    "log-format": _choice(LOG_FORMATS),
    "workers": _workers,
    "transfers-in": _int(1, 10000),
    "soa-queries-per-second": _rate,
    "metrics": _metrics,
    "transfers-out": _int(1),
    "transfers-out-per-client": _int(1),
    "transfer-out-idle-timeout": _seconds,
    "tls": _tls_server,
    "rate-limit": _rate_limit,
}

_KEY: dict[str, _Parser] = {
    "algorithm": _choice(TSIG_ALGORITHMS),
    "secret": _secret,
    "secret-file": _secret_file,
}

_ZONE: dict[str, _Parser] = {
    "primaries": _list(_primary),
    "allow-notify": _list(_network),
    "refresh-min": _int(1),
    "refresh-max": _int(1),
    "retry-min": _int(1),
    "retry-max": _int(1),
    "expire-min": _int(1),
    "expire-max": _int(1),
    "transfer-timeout": _seconds,
    "transfer-idle-timeout": _seconds,
    "max-records": _int(1),
    "key": _key_ref,
    "transfer": _choice(TRANSFER_MODES),
    "zonemd": _choice(ZONEMD_MODES),
    "catalog": _bool,
    "allow-transfer": _list(_transfer_acl),
    "notify": _list(_endpoint(DNS_PORT)),
    "notify-key": _key_ref,
}

_BUILTIN = ZoneConfig("", b"")
