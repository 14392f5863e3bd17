"""Layered configuration: precedence, sources, and errors that name their origin."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from director.config import (
    SECRET_KEYS,
    Effective,
    Settings,
    default_home,
    load_settings,
    parse_address,
    server_endpoint,
)
from director.errors import ConfigError
from director.trust.keyfmt import key_to_z85

SECRET = "dj1.s3cr3t-value-that-must-never-print"


@pytest.fixture()
def nosys(tmp_path: Path) -> str:
    """A system config path that does not exist, so /etc never leaks into tests."""
    return str(tmp_path / "no-etc" / "config.yaml")


def load(nosys: str, *, cli=None, env=None, path=None) -> Effective:
    return load_settings(cli=cli or {}, environ=env or {}, config_path=path, system_config=nosys)


def write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def test_defaults(nosys: str) -> None:
    eff = load(nosys)
    s = eff.settings
    assert s.home == default_home()
    assert (s.port, s.bind, s.mode, s.log_level) == (5555, "tcp://0.0.0.0:5555", "client", "info")
    assert (s.heartbeat_interval, s.node_expiry, s.chunk_size) == (5.0, 30.0, 1048576)
    assert (s.max_pending, s.enroll_token, s.server_address) == (100, "", "")
    assert s.name and "." not in s.name
    assert set(eff.sources.values()) == {"default"}
    assert eff.config_file is None


def test_each_layer_overrides_the_one_before(tmp_path: Path, nosys: str) -> None:
    cfg = write(tmp_path / "c.yaml", "port: 6001\nname: from-file\nlog_level: debug\nmode: server\n")
    env = {"DIRECTOR_PORT": "6002", "DIRECTOR_NAME": "from-env", "DIRECTOR_LOG_LEVEL": "warning"}
    cli = {"port": 6003, "name": None, "log_level": None}
    eff = load(nosys, cli=cli, env=env, path=cfg)
    s, src = eff.settings, eff.sources
    assert (s.port, src["port"]) == (6003, "cli")
    assert (s.name, src["name"]) == ("from-env", "env")
    assert (s.log_level, src["log_level"]) == ("warning", "env")
    assert (s.mode, src["mode"]) == ("server", "file")
    assert (s.chunk_size, src["chunk_size"]) == (1048576, "default")
    assert eff.config_file == cfg


def test_home_config_file_found_via_env_and_cli(tmp_path: Path, nosys: str) -> None:
    home_env = tmp_path / "h1"
    home_cli = tmp_path / "h2"
    write(home_env / "config.yaml", "port: 7001\n")
    write(home_cli / "config.yaml", "port: 7002\n")
    eff = load(nosys, env={"DIRECTOR_HOME": str(home_env)})
    assert eff.settings.port == 7001 and eff.sources["port"] == "file"
    assert eff.settings.home == str(home_env) and eff.sources["home"] == "env"
    eff = load(nosys, cli={"home": str(home_cli)}, env={"DIRECTOR_HOME": str(home_env)})
    assert eff.settings.port == 7002
    assert eff.config_file == str(home_cli / "config.yaml")


def test_system_config_used_only_when_it_exists(tmp_path: Path) -> None:
    system = write(tmp_path / "etc" / "config.yaml", "port: 7100\n")
    eff = load_settings(cli={"home": str(tmp_path / "empty-home")}, environ={},
                        config_path=None, system_config=system)
    assert eff.settings.port == 7100 and eff.config_file == system
    eff = load_settings(cli={}, environ={}, config_path=None, system_config=system + ".missing")
    assert eff.config_file is None


def test_explicit_config_wins_over_home_config(tmp_path: Path, nosys: str) -> None:
    write(tmp_path / "home" / "config.yaml", "port: 1111\n")
    cfg = write(tmp_path / "other.yaml", "port: 2222\n")
    eff = load(nosys, cli={"home": str(tmp_path / "home")}, path=cfg)
    assert eff.settings.port == 2222


def test_missing_explicit_config_is_an_error(tmp_path: Path, nosys: str) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load(nosys, path=str(tmp_path / "nope.yaml"))


def test_unknown_key_names_key_file_and_suggestion(tmp_path: Path, nosys: str) -> None:
    cfg = write(tmp_path / "config.yaml", "prot: 5555\n")
    with pytest.raises(ConfigError) as info:
        load(nosys, path=cfg)
    msg = str(info.value)
    assert cfg in msg and "unknown key 'prot'" in msg and "did you mean 'port'" in msg
    assert "chunk_size" in msg


@pytest.mark.parametrize(
    ("body", "key", "fragment"),
    [
        ("port: abc\n", "port", "must be an integer, got 'abc'"),
        ("port: true\n", "port", "must be a number"),
        ("heartbeat_interval: soon\n", "heartbeat_interval", "must be a number"),
        ("name: [a, b]\n", "name", "must be a string"),
        ("server_address: 10\n", "server_address", "must be a string"),
    ],
)
def test_wrong_type_in_file_names_key_and_file(tmp_path: Path, nosys: str, body, key, fragment) -> None:
    cfg = write(tmp_path / "config.yaml", body)
    with pytest.raises(ConfigError) as info:
        load(nosys, path=cfg)
    msg = str(info.value)
    assert msg.startswith(f"{cfg}: '{key}'") and fragment in msg


def test_file_accepts_dashed_keys_empty_file_and_nulls(tmp_path: Path, nosys: str) -> None:
    cfg = write(tmp_path / "a.yaml", "chunk-size: 8192\nserver_address:\n")
    eff = load(nosys, path=cfg)
    assert eff.settings.chunk_size == 8192 and eff.sources["chunk_size"] == "file"
    assert eff.sources["server_address"] == "default"
    assert load(nosys, path=write(tmp_path / "b.yaml", "")).settings.port == 5555


@pytest.mark.parametrize(
    ("body", "fragment"),
    [("- port\n", "must be a YAML mapping"), ("port: [\n", "not valid YAML"),
     ("port: 1\nport: 2\n", None), ("port: 1\nchunk-size: 8192\nchunk_size: 8192\n", "twice")],
)
def test_bad_file_shapes(tmp_path: Path, nosys: str, body: str, fragment) -> None:
    cfg = write(tmp_path / "config.yaml", body)
    if fragment is None:  # YAML allows duplicate keys; last wins
        assert load(nosys, path=cfg).settings.port == 2
        return
    with pytest.raises(ConfigError, match=fragment) as info:
        load(nosys, path=cfg)
    assert cfg in str(info.value)


def test_env_type_error_names_the_variable(nosys: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(nosys, env={"DIRECTOR_PORT": "fifty"})
    assert "DIRECTOR_PORT" in str(info.value) and "'fifty'" in str(info.value)
    with pytest.raises(ConfigError, match="DIRECTOR_NODE_EXPIRY"):
        load(nosys, env={"DIRECTOR_NODE_EXPIRY": "x"})


def test_env_converts_every_type_and_ignores_empty(nosys: str, tmp_path: Path) -> None:
    env = {"DIRECTOR_HEARTBEAT_INTERVAL": "2.5", "DIRECTOR_MAX_PENDING": " 7 ",
           "DIRECTOR_SERVER_ADDRESS": "10.0.0.2", "DIRECTOR_MODE": "SERVER",
           "DIRECTOR_PORT": "", "DIRECTOR_HOME": str(tmp_path / "h"), "DIRECTOR_UNRELATED": "x"}
    eff = load(nosys, env=env)
    s = eff.settings
    assert (s.heartbeat_interval, s.max_pending, s.server_address, s.mode) == (2.5, 7, "10.0.0.2", "server")
    assert eff.sources["port"] == "default" and eff.sources["max_pending"] == "env"


def test_cli_type_error_names_the_option(nosys: str) -> None:
    with pytest.raises(ConfigError, match="option --chunk-size must be an integer"):
        load(nosys, cli={"chunk_size": "big"})
    with pytest.raises(ConfigError, match="unknown key 'bogus'"):
        load(nosys, cli={"bogus": 1})


@pytest.mark.parametrize(
    ("cli", "fragment"),
    [
        ({"port": 0}, "option --port must be between 1 and 65535"),
        ({"port": 70000}, "got 70000"),
        ({"heartbeat_interval": 0}, "positive"),
        ({"node_expiry": -1.0}, "positive"),
        ({"chunk_size": 100}, "between 4096"),
        ({"chunk_size": 2**27}, "between 4096"),
        ({"mode": "proxy"}, "'server' or 'client'"),
        ({"log_level": "loud"}, "one of debug, info, warning, error"),
        ({"name": "-bad"}, "option --name is not a valid node name"),
        ({"bind": "0.0.0.0:5555"}, "ZeroMQ endpoint"),
        ({"server_address": "host:99999"}, "option --server-address is invalid"),
        ({"server_key": "short"}, "option --server-key is invalid"),
        ({"heartbeat_interval": 40.0}, "longer than heartbeat_interval"),
        ({"max_pending": 0}, "at least 1"),
        ({"home": "  "}, "must not be empty"),
    ],
)
def test_range_errors_name_key_and_source(nosys: str, cli: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(")):
        load(nosys, cli=cli)


def test_range_error_from_file_names_the_file(tmp_path: Path, nosys: str) -> None:
    cfg = write(tmp_path / "config.yaml", "port: 0\n")
    with pytest.raises(ConfigError, match=f"{cfg}: 'port' must be between"):
        load(nosys, path=cfg)


def test_normalisation(tmp_path: Path, nosys: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    key = key_to_z85(bytes(32))
    eff = load(nosys, cli={"home": "rel/dir", "log_level": "WARN", "server_key": key, "port": 6100})
    assert eff.settings.home == str(tmp_path / "rel" / "dir")
    assert eff.settings.log_level == "warning"
    assert eff.settings.bind == "tcp://0.0.0.0:6100" and eff.sources["bind"] == "default"
    assert load(nosys, cli={"home": "~/x"}).settings.home == os.path.expanduser("~/x")
    eff = load(nosys, cli={"port": 6100, "bind": "tcp://127.0.0.1:9"})
    assert eff.settings.bind == "tcp://127.0.0.1:9"


def test_secrets_never_printed(tmp_path: Path, nosys: str) -> None:
    assert SECRET_KEYS == frozenset({"enroll_token"})
    eff = load(nosys, env={"DIRECTOR_ENROLL_TOKEN": SECRET})
    assert eff.settings.enroll_token == SECRET
    assert SECRET not in json.dumps(eff.as_json()) and SECRET not in repr(eff.as_table())
    assert SECRET not in repr(eff.settings)
    assert eff.as_json()["enroll_token"] == {"value": "<set>", "source": "env"}
    assert ("enroll_token", "<set>", "env") in eff.as_table()
    assert load(nosys).as_json()["enroll_token"]["value"] == ""


def test_secret_type_error_hides_the_value(tmp_path: Path, nosys: str) -> None:
    cfg = write(tmp_path / "config.yaml", "enroll_token: 12345678\n")
    with pytest.raises(ConfigError) as info:
        load(nosys, path=cfg)
    assert "12345678" not in str(info.value) and "'enroll_token'" in str(info.value)


def test_as_table_and_json_cover_every_field(nosys: str) -> None:
    eff = load(nosys, cli={"port": 6200})
    table = eff.as_table()
    assert [row[0] for row in table] == list(eff.as_json())
    assert ("port", "6200", "cli") in table
    assert eff.as_json()["port"] == {"value": 6200, "source": "cli"}
    assert len(table) == len(Settings.__dataclass_fields__)


@pytest.mark.parametrize(
    ("address", "endpoint"),
    [
        ("10.0.0.2", "tcp://10.0.0.2:5555"),
        ("server.example:6000", "tcp://server.example:6000"),
        ("[::1]:7000", "tcp://[::1]:7000"),
        ("[fe80::1]", "tcp://[fe80::1]:5555"),
        ("::1", "tcp://[::1]:5555"),
        ("tcp://db_host:1234", "tcp://db_host:1234"),
    ],
)
def test_server_endpoint(address: str, endpoint: str) -> None:
    assert server_endpoint(Settings(server_address=address, name="n")) == endpoint


def test_server_endpoint_uses_port_setting() -> None:
    assert server_endpoint(Settings(server_address="h", port=6123, name="n")) == "tcp://h:6123"


@pytest.mark.parametrize("address", ["", "  ", "host:", "host:abc", "host:0", "[::1", "[zz::1]:5",
                                     "bad host", "-x:1", "[::1]x"])
def test_server_endpoint_rejects(address: str) -> None:
    with pytest.raises(ConfigError):
        server_endpoint(Settings(server_address=address, name="n"))
    assert parse_address("h:1") == ("h", 1)
