"""Configuration loading: every bad config is a fixture file with its exact messages."""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from secondns import names
from secondns.config import (
    Config,
    Endpoint,
    InvalidConfig,
    ServerConfig,
    TsigKey,
    ZoneConfig,
    load_config,
    parse_config,
    parse_endpoint,
)
from secondns.errors import ConfigError

CONFIGS = Path(__file__).parent / "configs"
REPO = Path(__file__).parent.parent
SECRET_B64 = "c2VjcmV0LWtleS1ieXRlcw=="
SECRET = b"secret-key-bytes"


@pytest.fixture(autouse=True)
def _in_configs(monkeypatch: pytest.MonkeyPatch) -> None:
    # Messages name the file as given; loading by bare name keeps the asserted text short.
    monkeypatch.chdir(CONFIGS)


def problems(name: str) -> list[str]:
    with pytest.raises(InvalidConfig) as info:
        load_config(name)
    return info.value.problems


def zone(text: str, name: str = "example.com.") -> ZoneConfig:
    return parse_config(text).zones[name]


# --- endpoints --------------------------------------------------------------


def test_endpoint_ipv4_with_port() -> None:
    ep = parse_endpoint("192.0.2.1:5300", 53)
    assert ep == Endpoint("192.0.2.1", 5300)
    assert ep.family == socket.AF_INET
    assert str(ep) == "192.0.2.1:5300"


def test_endpoint_default_port() -> None:
    assert parse_endpoint("192.0.2.1", 53) == Endpoint("192.0.2.1", 53)


def test_endpoint_bracketed_ipv6() -> None:
    ep = parse_endpoint("[2001:db8::1]:5300", 53)
    assert ep == Endpoint("2001:db8::1", 5300)
    assert ep.family == socket.AF_INET6
    assert str(ep) == "[2001:db8::1]:5300"


def test_endpoint_bare_ipv6_takes_default_port() -> None:
    assert parse_endpoint("2001:db8::1", 53) == Endpoint("2001:db8::1", 53)
    assert parse_endpoint("[::1]", 53) == Endpoint("::1", 53)


def test_endpoint_ipv6_is_normalised() -> None:
    assert parse_endpoint("[2001:DB8:0::1]:53", 53).host == "2001:db8::1"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("300.1.1.1", "'300.1.1.1' is not an IP address"),
        ("ns1.example.net", "'ns1.example.net' is not an IP address (use an address, not a hostname)"),
        ("192.0.2.1:0", "port 0 in '192.0.2.1:0' is not in 1..65535"),
        ("192.0.2.1:", "port '' in '192.0.2.1:' is not a number"),
        ("[::1", "'[::1' lacks the closing ']'"),
        ("[::1]53", "'[::1]53': expected ':PORT' after ']'"),
        ("[192.0.2.1]:53", "'[192.0.2.1]:53': brackets are only for IPv6 addresses"),
        ("", "'' is not an IP address"),
    ],
)
def test_endpoint_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_endpoint(text, 53)
    assert str(info.value) == message


@given(st.ip_addresses(), st.integers(1, 65535))
def test_endpoint_str_round_trips(address: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> None:
    ep = Endpoint(str(address), port)
    assert parse_endpoint(str(ep), 53) == ep


# --- good configs -----------------------------------------------------------


def test_empty_config_is_all_defaults() -> None:
    config = parse_config("", base_dir=CONFIGS)
    server = config.server
    assert server.listen == (Endpoint("127.0.0.1", 53),)
    assert server.http == Endpoint("127.0.0.1", 9153)
    assert server.storage == CONFIGS.resolve() / "zones"
    assert (server.identity, server.version, server.control_token, server.user) == (None, None, None, None)
    assert (server.udp_max_payload, server.tcp_idle_timeout, server.tcp_max_connections) == (1232, 10.0, 1000)
    assert (server.log_level, server.log_format) == ("info", "text")
    assert config.keys == {}
    assert config.zones == {}


def test_workers_default_to_the_cpus_we_may_run_on() -> None:
    assert parse_config("", base_dir=CONFIGS).server.workers == len(os.sched_getaffinity(0))
    assert parse_config("server:\n  workers: auto\n").server.workers == len(os.sched_getaffinity(0))
    assert parse_config("server:\n  workers: 3\n").server.workers == 3
    assert ServerConfig().workers == 1  # built in code (tests, embedding): one process


@pytest.mark.parametrize(("value", "message"), [
    ("0", "must be in 1..1024 or auto, got 0"),
    ("two", "expected an integer or auto, got string 'two'"),
    ("true", "expected an integer or auto, got boolean true"),
])
def test_workers_rejects(value: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(f"server:\n  listen: ['127.0.0.1:53']\n  workers: {value}\n", "w.yaml")
    assert str(err.value) == f"w.yaml:3: server.workers: {message}"


def test_answer_cache_size_takes_octets_or_k_m_g() -> None:
    assert parse_config("").server.answer_cache_size == 64 << 20
    assert parse_config("server:\n  answer-cache-size: 512K\n").server.answer_cache_size == 512 << 10
    assert parse_config("server:\n  answer-cache-size: 2g\n").server.answer_cache_size == 2 << 30
    assert parse_config("server:\n  answer-cache-size: 100000\n").server.answer_cache_size == 100000


@pytest.mark.parametrize(("value", "message"), [
    ("1K", "must be at least 65536 octets, got 1K"),
    ("64MB", "expected a size (65536, 512K, 64M, 1G), got string '64MB'"),
    ("true", "expected a size (65536, 512K, 64M, 1G), got boolean true"),
])
def test_answer_cache_size_rejects(value: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(f"server:\n  listen: ['127.0.0.1:53']\n  answer-cache-size: {value}\n", "w.yaml")
    assert str(err.value) == f"w.yaml:3: server.answer-cache-size: {message}"


def test_minimal_zone_gets_builtin_defaults() -> None:
    zc = zone("zones:\n  example.com:\n    primaries: ['192.0.2.1']\n")
    assert zc == ZoneConfig("example.com.", names.from_text("example.com."), (Endpoint("192.0.2.1", 53),))
    assert (zc.refresh_min, zc.refresh_max, zc.retry_min, zc.retry_max) == (5, 86400, 5, 3600)
    assert (zc.expire_min, zc.expire_max) == (60, 31536000)
    assert (zc.transfer_timeout, zc.transfer_idle_timeout, zc.max_records) == (300.0, 30.0, 10_000_000)
    assert (zc.key, zc.transfer, zc.zonemd) == (None, "ixfr", "verify")


def test_server_settings_are_read() -> None:
    config = parse_config(
        "server:\n"
        "  listen: ['127.0.0.1:5353', '[::1]:5353']\n"
        "  http: null\n"
        "  identity: ns2.example.net\n"
        "  version: '1.0'\n"
        "  udp-max-payload: 4096\n"
        "  tcp-idle-timeout: 2.5\n"
        "  tcp-max-connections: 10\n"
        "  control-token: tok\n"
        "  user: nobody\n"
        "  log-level: DEBUG\n"
        "  log-format: json\n"
    )
    server = config.server
    assert server.listen == (Endpoint("127.0.0.1", 5353), Endpoint("::1", 5353))
    assert server.http is None
    assert (server.identity, server.version, server.user) == ("ns2.example.net", "1.0", "nobody")
    assert (server.udp_max_payload, server.tcp_idle_timeout, server.tcp_max_connections) == (4096, 2.5, 10)
    assert server.control_token == "tok"
    assert (server.log_level, server.log_format) == ("debug", "json")


def test_defaults_apply_to_every_zone() -> None:
    config = parse_config(
        "defaults:\n  primaries: ['192.0.2.1']\n  refresh-max: 600\n  transfer: axfr\n"
        "zones:\n  example.com:\n  example.org: {}\n"
    )
    for zc in config.zones.values():
        assert zc.primaries == (Endpoint("192.0.2.1", 53),)
        assert (zc.refresh_max, zc.transfer) == (600, "axfr")


def test_zone_overrides_defaults() -> None:
    zc = zone(
        "defaults:\n  primaries: ['192.0.2.1']\n  refresh-max: 600\n"
        "zones:\n  example.com:\n    primaries: ['192.0.2.9:5300']\n    refresh-max: 60\n"
    )
    assert zc.primaries == (Endpoint("192.0.2.9", 5300),)
    assert zc.refresh_max == 60


def test_zone_with_empty_primaries_overrides_defaults_to_static() -> None:
    zc = zone("defaults:\n  primaries: ['192.0.2.1']\nzones:\n  example.com:\n    primaries: []\n")
    assert zc.static


def test_zone_without_primaries_is_static() -> None:
    config = parse_config("zones:\n  example.com:\n  example.org:\n    primaries: ['192.0.2.1']\n")
    assert config.zones["example.com."].static
    assert not config.zones["example.org."].static


def test_zone_names_are_normalised() -> None:
    config = parse_config("zones:\n  Example.COM:\n  example.org.:\n  .:\n")
    assert list(config.zones) == ["example.com.", "example.org.", "."]
    assert config.zones["example.com."].origin == b"\x07example\x03com\x00"
    assert config.zones["."].origin == names.ROOT


def test_allow_notify_takes_addresses_and_prefixes() -> None:
    zc = zone("zones:\n  example.com:\n    allow-notify: ['192.0.2.7', '2001:db8::/32']\n")
    assert zc.allow_notify == (ipaddress.ip_network("192.0.2.7/32"), ipaddress.ip_network("2001:db8::/32"))


def test_commented_out_list_is_empty() -> None:
    zc = zone("zones:\n  example.com:\n    primaries:\n    #  - 192.0.2.1\n")
    assert zc.primaries == ()


def test_inline_secret_is_decoded() -> None:
    config = parse_config(f"keys:\n  xfr-key:\n    secret: '{SECRET_B64}'\n"
                          "zones:\n  example.com:\n    key: xfr-key\n")
    key = TsigKey("xfr-key", "hmac-sha256", SECRET)
    assert config.keys == {"xfr-key": key}
    assert config.zones["example.com."].key == key


def test_secret_file_is_read_relative_to_config() -> None:
    config = load_config(CONFIGS / "good_secret_file.yaml")
    key = config.keys["xfr-key"]
    assert (key.name, key.algorithm, key.secret) == ("xfr-key", "hmac-sha512", SECRET)
    assert config.zones["example.com."].key is key


def test_key_repr_hides_secret() -> None:
    key = TsigKey("xfr-key", "hmac-sha256", SECRET)
    assert repr(key) == "TsigKey(name='xfr-key', algorithm='hmac-sha256', secret=<hidden>)"
    assert str(key) == repr(key)


def test_control_token_file_is_read_relative_to_config() -> None:
    config = load_config(CONFIGS / "good_control_token_file.yaml")
    assert config.server.control_token == "control-token-from-file"
    assert "control-token-from-file" not in repr(config)


def test_storage_is_relative_to_config_dir() -> None:
    config = load_config(CONFIGS / "good_storage.yaml")
    assert config.server.storage == CONFIGS.resolve() / "copies"


def test_storage_absolute_path_is_kept(tmp_path: Path) -> None:
    config = parse_config(f"server:\n  storage: {tmp_path}\n", base_dir=CONFIGS)
    assert config.server.storage == tmp_path.resolve()


def test_yaml_merge_override_is_not_a_duplicate() -> None:
    zc = zone(
        "defaults: &common\n  primaries: ['192.0.2.1']\n  transfer: axfr\n"
        "zones:\n  example.com:\n    <<: *common\n    transfer: ixfr\n"
    )
    assert (zc.primaries, zc.transfer) == ((Endpoint("192.0.2.1", 53),), "ixfr")


def test_shipped_example_loads() -> None:
    config = load_config(REPO / "secondns.yaml")
    assert config.server.listen == (Endpoint("127.0.0.1", 5353),)
    assert config.server.http == Endpoint("127.0.0.1", 9153)
    assert config.server.storage == REPO.resolve() / "zones"
    assert config.server.identity == "ns2.example.net"
    assert list(config.zones) == ["example.com."]
    assert config.zones["example.com."].static


def test_config_records_its_path() -> None:
    config = load_config("good_storage.yaml")
    assert isinstance(config, Config)
    assert config.path == Path("good_storage.yaml")


# --- bad configs ------------------------------------------------------------


def test_missing_file_names_the_path() -> None:
    with pytest.raises(ConfigError) as info:
        load_config("absent.yaml")
    assert str(info.value) == "absent.yaml: cannot read configuration: No such file or directory"


def test_error_message_is_one_problem_per_line() -> None:
    with pytest.raises(ConfigError) as info:
        load_config("bad_many.yaml")
    assert isinstance(info.value, InvalidConfig)
    assert str(info.value) == "\n".join(info.value.problems)


def test_unknown_key_suggests_the_close_one() -> None:
    assert problems("bad_unknown_key.yaml") == [
        "bad_unknown_key.yaml:3: zones.example.com: unknown key 'primares' (did you mean 'primaries'?)",
    ]


def test_unknown_key_without_close_match() -> None:
    assert problems("bad_unknown_key_no_match.yaml") == [
        "bad_unknown_key_no_match.yaml:3: unknown key 'colour'",
    ]


def test_bad_ip_names_the_list_item() -> None:
    assert problems("bad_ip.yaml") == [
        "bad_ip.yaml:6: zones.example.com.primaries[1]: '300.1.1.1' is not an IP address",
    ]


def test_hostname_primary_is_refused() -> None:
    assert problems("bad_hostname.yaml") == [
        "bad_hostname.yaml:3: zones.example.com.primaries[0]: "
        "'ns1.example.net' is not an IP address (use an address, not a hostname)",
    ]


def test_bad_ports() -> None:
    assert problems("bad_port.yaml") == [
        "bad_port.yaml:2: server.listen[0]: port 70000 in '127.0.0.1:70000' is not in 1..65535",
        "bad_port.yaml:2: server.listen[1]: port 'dns' in '[::1]:dns' is not a number",
    ]


def test_wrong_types_name_the_expected_type() -> None:
    assert problems("bad_types.yaml") == [
        "bad_types.yaml:2: server.listen: expected a list, got string '127.0.0.1:5353'",
        "bad_types.yaml:3: server.udp-max-payload: expected an integer, got string '1232'",
        "bad_types.yaml:4: server.tcp-idle-timeout: expected a number of seconds, got boolean true",
        "bad_types.yaml:5: server.identity: expected a string, got number 1.5 (put it in quotes)",
        "bad_types.yaml:7: zones.example.com: expected a mapping, got a list",
    ]


def test_out_of_range_values() -> None:
    assert problems("bad_ranges.yaml") == [
        "bad_ranges.yaml:2: server.listen: must list at least one address",
        "bad_ranges.yaml:3: server.udp-max-payload: must be in 512..65535, got 100",
        "bad_ranges.yaml:4: server.tcp-idle-timeout: must be greater than 0, got 0",
        "bad_ranges.yaml:5: server.tcp-max-connections: must be >= 1, got 0",
        "bad_ranges.yaml:6: server.log-level: "
        "expected one of debug, info, warning, error, got string 'verbose'",
        "bad_ranges.yaml:9: zones.example.com.transfer: expected one of ixfr, axfr, got string 'zone'",
        "bad_ranges.yaml:10: zones.example.com.zonemd: "
        "expected one of verify, ignore, require, got string 'maybe'",
        "bad_ranges.yaml:11: zones.example.com.max-records: must be >= 1, got 0",
    ]


def test_every_problem_is_collected_in_line_order() -> None:
    assert problems("bad_many.yaml") == [
        "bad_many.yaml:3: zones.example.com.primaries[0]: port 99999 in '192.0.2.1:99999' is not in 1..65535",
        "bad_many.yaml:4: zones.example.com.key: TSIG key 'missing' is not defined under keys",
        "bad_many.yaml:6: server.http: 'localhost' is not an IP address (use an address, not a hostname)",
        "bad_many.yaml:7: server.log-format: expected one of text, json, got string 'xml'",
        "bad_many.yaml:10: keys.k1.algorithm: expected one of hmac-sha256, hmac-sha384, hmac-sha512, "
        "hmac-sha224, hmac-sha1, hmac-md5, got string 'hmac-sha3'",
    ]


def test_zone_key_must_be_defined() -> None:
    assert problems("bad_missing_key.yaml") == [
        "bad_missing_key.yaml:7: zones.example.com.key: "
        "TSIG key 'xfr-kye' is not defined under keys (did you mean 'xfr-key'?)",
        "bad_missing_key.yaml:10: zones.example.org.key: TSIG key 'other' is not defined under keys",
    ]


def test_secret_must_be_base64() -> None:
    assert problems("bad_secret_not_base64.yaml") == [
        "bad_secret_not_base64.yaml:3: keys.xfr-key.secret: "
        "secret is not valid base64 (Only base64 data is allowed)",
        "bad_secret_not_base64.yaml:5: keys.file-key.secret-file: "
        f"'{CONFIGS.resolve() / 'secrets/not-base64.key'}' holds a secret that is "
        "not valid base64 (Only base64 data is allowed)",
    ]


def test_secret_file_must_exist() -> None:
    assert problems("bad_secret_file_missing.yaml") == [
        "bad_secret_file_missing.yaml:3: keys.xfr-key.secret-file: "
        f"cannot read '{CONFIGS.resolve() / 'secrets/absent.key'}': No such file or directory",
    ]


def test_secrets_never_appear_in_errors() -> None:
    found = problems("bad_secret_leak.yaml")
    assert found == [
        "bad_secret_leak.yaml:5: keys.typed-key.secret: expected a string, got integer (put it in quotes)",
        "bad_secret_leak.yaml:8: keys.both-key.secret-file: set either secret or secret-file, not both",
        "bad_secret_leak.yaml:9: keys.neither-key: needs a secret or a secret-file",
        "bad_secret_leak.yaml:12: server.control-token: expected a string, got integer (put it in quotes)",
        "bad_secret_leak.yaml:13: server.udp-max-payload: expected an integer, got string 'huge'",
    ]
    text = "\n".join(found)
    for secret in (SECRET_B64, SECRET.decode(), "987654321", "123456789"):
        assert secret not in text


def test_secret_on_a_yaml_syntax_error_line_is_not_quoted() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(f"keys:\n  k:\n    secret: {SECRET_B64}: oops\n", "x.yaml")
    assert str(info.value) == "x.yaml:3: invalid YAML: mapping values are not allowed here"


def test_control_token_and_file_are_exclusive() -> None:
    assert problems("bad_control_token_both.yaml") == [
        "bad_control_token_both.yaml:3: server.control-token-file: "
        "set either control-token or control-token-file, not both",
    ]


def test_clamp_min_above_max() -> None:
    assert problems("bad_clamps.yaml") == [
        "bad_clamps.yaml:2: defaults.retry-min: retry-min (600) is greater than retry-max (60)",
        "bad_clamps.yaml:6: zones.example.com.refresh-min: "
        "refresh-min (7200) is greater than refresh-max (3600)",
        "bad_clamps.yaml:9: zones.example.org.expire-max: expire-min (60) is greater than expire-max (30)",
    ]


def test_duplicate_zone_after_normalisation() -> None:
    assert problems("bad_duplicate_zone.yaml") == [
        "bad_duplicate_zone.yaml:4: zones.Example.COM.: same zone as 'example.com' on line 2",
    ]


def test_duplicate_yaml_key() -> None:
    assert problems("bad_duplicate_yaml_key.yaml") == [
        "bad_duplicate_yaml_key.yaml:5: zones.example.com: duplicate key (first on line 2)",
    ]


def test_bad_zone_names() -> None:
    assert problems("bad_zone_name.yaml") == [
        "bad_zone_name.yaml:2: zones.example..com: zone name is not a valid DNS name: "
        "empty label in 'example..com'",
        "bad_zone_name.yaml:3: zones: key 1.5 is not a string (put it in quotes)",
    ]


def test_allow_notify_rejects_host_bits_and_junk() -> None:
    assert problems("bad_allow_notify.yaml") == [
        "bad_allow_notify.yaml:3: zones.example.com.allow-notify[1]: "
        "'192.0.2.1/24' has host bits set (did you mean '192.0.2.0/24'?)",
        "bad_allow_notify.yaml:3: zones.example.com.allow-notify[3]: "
        "'anywhere' is not an IP address or prefix",
    ]


def test_yaml_syntax_error_has_line() -> None:
    assert problems("bad_syntax.yaml") == [
        "bad_syntax.yaml:6: invalid YAML: expected ',' or ']', but got '<scalar>' "
        "(while parsing a flow sequence started on line 5)",
    ]


def test_yaml_indentation_error_has_line() -> None:
    assert problems("bad_syntax_indent.yaml") == [
        "bad_syntax_indent.yaml:3: invalid YAML: expected <block end>, but found '<block mapping start>' "
        "(while parsing a block mapping started on line 2)",
    ]


def test_top_level_must_be_a_mapping() -> None:
    assert problems("bad_not_mapping.yaml") == [
        "bad_not_mapping.yaml:1: expected a mapping, got a list",
    ]


def test_cookie_secrets_are_read_one_a_line(tmp_path: Path) -> None:
    (tmp_path / "c.secret").write_text("000102030405060708090a0b0c0d0e0f\n\n"
                                       "FFEEDDCCBBAA99887766554433221100\n")
    cfg = parse_config("server:\n  cookies:\n    secret-file: c.secret\n", base_dir=tmp_path)
    assert cfg.server.cookie_secrets == (bytes(range(16)), bytes.fromhex("ffeeddccbbaa99887766554433221100"))
    assert parse_config("").server.cookie_secrets == ()  # a random one at start


def test_a_cookie_secret_that_is_not_16_hex_octets_is_refused(tmp_path: Path) -> None:
    (tmp_path / "c.secret").write_text("000102030405060708090a0b0c0d0e0f\nnot-hex\n")
    with pytest.raises(ConfigError) as err:
        parse_config("server:\n  cookies:\n    secret-file: c.secret\n", "w.yaml", base_dir=tmp_path)
    assert str(err.value) == ("w.yaml:3: server.cookies.secret-file: line 2 of the file is not a "
                              "secret of 32 hex digits")


LINE_CHECKED = (
    "defaults: &common\n  primaries: ['192.0.2.1']\n  transfer: axfr\n"
    "server:\n  storage: /tmp\n  storage: /var\n"  # a duplicate key: both lines named
    "zones:\n  example.com:\n    <<: *common\n    transfer: ixfr\n"
    "  example.net:\n    primaries: ['192.0.2.1']\n    refresh-min: -5\n"  # a bad value on line 13
    "  example.org:\n    - not a mapping\n"
)


def _problems(text: str) -> list[str]:
    with pytest.raises(InvalidConfig) as info:
        parse_config(text)
    return list(info.value.problems)


@pytest.mark.parametrize("text", [LINE_CHECKED, "zones:\n  a: [\n", "zones: {a: 1\n", "x:\n\t- 1\n"])
def test_libyaml_parser_reports_what_the_python_parser_reports(
        text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """libyaml parses large files (issue 14: 10,000 zones); lines and messages stay the same."""
    import secondns.config

    assert secondns.config._FastLoader is not None  # libyaml is there (Debian's python3-yaml has it)
    fast = _problems(text)
    monkeypatch.setattr(secondns.config, "_FastLoader", None)
    assert _problems(text) == fast
    assert any(":" in p for p in fast)


def test_libyaml_parser_gives_the_same_config() -> None:
    import secondns.config

    text = LINE_CHECKED.split("server:")[0] + "zones:\n  example.com:\n    <<: *common\n    transfer: ixfr\n"
    fast = parse_config(text)
    loader, secondns.config._FastLoader = secondns.config._FastLoader, None
    try:
        slow = parse_config(text)
    finally:
        secondns.config._FastLoader = loader
    assert fast == slow


def test_the_cyclic_collector_is_paused_while_a_configuration_is_parsed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Issue 14: at 10,000 zones the collector's passes over the growing heap were half the
    # CPU of parsing.  Checked by state, not time: off while the YAML is read, as before after.
    import gc

    import secondns.config as config_module

    seen: list[bool] = []
    real = config_module._load_yaml

    def spying(text: str) -> Any:
        seen.append(gc.isenabled())
        return real(text)

    monkeypatch.setattr(config_module, "_load_yaml", spying)
    assert gc.isenabled()
    parse_config("zones: {example.com: {primaries: ['192.0.2.1']}}")
    assert seen == [False] and gc.isenabled()
    gc.disable()
    try:  # a caller that had it off keeps it off
        parse_config("zones: {}")
        assert not gc.isenabled()
    finally:
        gc.enable()
    with pytest.raises(ConfigError):
        parse_config("zones: [")
    assert gc.isenabled()


def test_a_primary_named_by_many_zones_is_parsed_once_and_errors_are_not_remembered() -> None:
    zones = "\n".join(f"  z{i}.test: {{primaries: ['192.0.2.7:5300']}}" for i in range(50))
    config = parse_config(f"zones:\n{zones}\n")
    primaries = {id(zc.primaries[0]) for zc in config.zones.values()}
    assert len(primaries) == 1  # one Endpoint (immutable) shared by the 50 zones
    for _ in range(2):  # a bad address is refused every time, not cached as a value
        with pytest.raises(ConfigError, match="not an IP address"):
            parse_config("zones: {a.test: {primaries: ['ns1.example']}}")
