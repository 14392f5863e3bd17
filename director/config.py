"""Layered configuration: defaults < config file < environment < command line.

One place decides every setting and remembers where it came from, so ``director config``
can explain the effective value and every mistake is reported against the file, variable
or option that caused it.  Pure apart from reading the config file and the host name.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


from director.errors import ConfigError, KeyFileError, NameError_
from director.values import parse_address, parse_duration  # parse_duration: re-exported
from director.trust.keyfmt import parse_public_key
from director.trust.names import name_from_hostname, validate_name

SYSTEM_CONFIG = "/etc/director/config.yaml"
ENV_PREFIX = "DIRECTOR_"
SECRET_KEYS = frozenset({"enroll_token"})
SOURCES = ("default", "home", "file", "env", "cli")
LOG_LEVELS = ("debug", "info", "warning", "error")
MODES = ("server", "client")
MIN_CHUNK, MAX_CHUNK = 4096, 64 * 1024 * 1024

__all__ = ["Settings", "Effective", "SECRET_KEYS", "SYSTEM_CONFIG", "default_home",
           "default_name", "load_settings", "server_endpoint", "parse_address", "with_home",
           "parse_duration"]


def default_home() -> str:
    """``/var/lib/director`` for root, else ``~/.local/share/director``."""
    if os.geteuid() == 0:
        return "/var/lib/director"
    return os.path.expanduser("~/.local/share/director")


def default_name() -> str:
    """The short host name, made into a valid node name."""
    return name_from_hostname(socket.gethostname())


@dataclass(frozen=True)
class Settings:
    """Every setting of one server or client; see CONTRACT.md "Configuration"."""

    home: str = field(default_factory=default_home)
    server_address: str = ""
    port: int = 5555
    bind: str = "tcp://0.0.0.0:5555"
    name: str = field(default_factory=default_name)
    heartbeat_interval: float = 5.0
    node_expiry: float = 30.0
    chunk_size: int = 1048576
    log_level: str = "info"
    mode: str = "client"
    enroll_token: str = field(default="", repr=False)
    server_key: str = ""
    max_pending: int = 100
    max_strangers: int = 1000             # open connections not yet proven by an accepted key
    max_strangers_per_address: int = 64   # ... from one source address
    stranger_buffer_mb: int = 128         # memory growth tolerated while they are open
    job_retention: str = "30d"            # server: jobs older than this are purged
    job_retention_count: int = 100000     # server: at most this many jobs are kept
    get_max_bytes: int = 1 << 30          # server: bytes one GET may bring from one node


# Field name -> Python type (annotations are strings under ``from __future__``).
FIELDS: dict[str, type] = {
    f.name: {"str": str, "int": int, "float": float}[str(f.type)]
    for f in dataclasses.fields(Settings)
}
KNOWN = ", ".join(sorted(FIELDS))


def _display(key: str, value: object) -> str:
    if key in SECRET_KEYS:
        return "<set>" if value else ""
    return str(value)


@dataclass(frozen=True)
class Effective:
    """The settings plus where each value came from (default/file/env/cli)."""

    settings: Settings
    sources: Mapping[str, str]
    config_file: str | None = None

    def as_table(self) -> list[tuple[str, str, str]]:
        """Rows of (key, display value, source); secrets show only ``<set>``."""
        return [
            (key, _display(key, getattr(self.settings, key)), self.sources[key])
            for key in FIELDS
        ]

    def as_json(self) -> dict[str, dict[str, Any]]:
        """``{KEY: {"value": v, "source": s}}``; secrets show only ``<set>``."""
        out: dict[str, dict[str, Any]] = {}
        for key in FIELDS:
            value = getattr(self.settings, key)
            shown = _display(key, value) if key in SECRET_KEYS else value
            out[key] = {"value": shown, "source": self.sources[key]}
        return out


def with_home(eff: Effective, *, address: str, server_key: str, name: str) -> Effective:
    """``eff`` as an enrolled client runs it: the server address, server key and name kept
    in its home (by ``director enroll``) fill what no file, variable or option set, and the
    kept name is the one the client uses (source ``home``).  For ``director config``."""
    values: dict[str, object] = {}
    sources = dict(eff.sources)
    s = eff.settings
    for key, kept in (("server_address", address), ("server_key", server_key)):
        if kept and not getattr(s, key):
            values[key], sources[key] = kept, "home"
    if name:
        values["name"], sources["name"] = name, "home"
    if not values:
        return eff
    shown = dataclasses.replace(s, **values)  # type: ignore[arg-type]
    return Effective(shown, MappingProxyType(sources), eff.config_file)


class _Bad(Exception):
    """Internal: a value problem, before we know how to name its origin."""


def _subject(key: str, source: str, path: str | None) -> str:
    if source == "file":
        return f"{path}: '{key}'"
    if source == "env":
        return f"environment variable {ENV_PREFIX}{key.upper()}"
    if source == "cli":
        return f"option --{key.replace('_', '-')}"
    return f"default '{key}'"


def _shown(key: str, value: object) -> str:
    return "<hidden>" if key in SECRET_KEYS else repr(value)


def _convert(key: str, value: object) -> object:
    """Coerce one raw value (YAML scalar, env string, CLI value) to the field's type."""
    kind = FIELDS[key]
    if kind is str:
        if not isinstance(value, str):
            raise _Bad(f"must be a string, got {_shown(key, value)} (put it in quotes)")
        return value
    if isinstance(value, bool):
        raise _Bad(f"must be a number, got {_shown(key, value)}")
    if kind is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value.strip(), 10)
            except ValueError:
                pass
        raise _Bad(f"must be an integer, got {_shown(key, value)}")
    number: float | None = None
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if number is None or not math.isfinite(number):
        raise _Bad(f"must be a number, got {_shown(key, value)}")
    return number


def _layer(raw: Mapping[str, object], source: str, path: str | None) -> dict[str, object]:
    """Convert one layer's raw values, naming the file/variable/option on error."""
    out: dict[str, object] = {}
    for key, value in raw.items():
        try:
            out[key] = _convert(key, value)
        except _Bad as exc:
            raise ConfigError(f"{_subject(key, source, path)} {exc}") from None
    return out


def _unknown(key: object, where: str) -> ConfigError:
    import difflib

    close = difflib.get_close_matches(str(key), list(FIELDS), n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return ConfigError(f"{where}unknown key {str(key)!r} ({hint}known: {KNOWN})")


def _read_file(path: str) -> dict[str, object]:
    """Read and shape-check a YAML config file (keys normalised, nulls dropped)."""
    import yaml  # here, not at the top: most commands run without a config file

    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot read it: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid syntax"
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: must be a YAML mapping of settings (key: value), "
            f"got a {type(data).__name__}"
        )
    out: dict[str, object] = {}
    for key, value in data.items():
        norm = key.replace("-", "_") if isinstance(key, str) else key
        if norm not in FIELDS:
            raise _unknown(key, f"{path}: ")
        if norm in out:
            raise ConfigError(f"{path}: key '{norm}' is given twice")
        if value is not None:
            out[norm] = value
    return out


def _find_config(cli_home: object, environ: Mapping[str, str], system: str) -> str | None:
    """``$DIRECTOR_HOME/config.yaml`` (home from --home or env), else the system file."""
    home = cli_home if isinstance(cli_home, str) and cli_home else environ.get("DIRECTOR_HOME")
    if home:
        candidate = os.path.join(os.path.abspath(os.path.expanduser(home)), "config.yaml")
        if os.path.isfile(candidate):
            return candidate
    return system if os.path.isfile(system) else None


def load_settings(
    *,
    cli: Mapping[str, object],
    environ: Mapping[str, str],
    config_path: str | None,
    system_config: str = SYSTEM_CONFIG,
) -> Effective:
    """Merge defaults < file < environment < cli into validated Settings."""
    cli_raw: dict[str, object] = {}
    for key, value in cli.items():
        norm = key.replace("-", "_")
        if norm not in FIELDS:
            raise _unknown(key, "command line: ")
        if value is not None:
            cli_raw[norm] = value
    if config_path is not None:
        path: str | None = os.path.abspath(os.path.expanduser(config_path))
        if not os.path.exists(path):
            raise ConfigError(f"config file {config_path} does not exist (given with --config)")
    else:
        path = _find_config(cli_raw.get("home"), environ, system_config)

    env_raw = {
        key: environ[ENV_PREFIX + key.upper()]
        for key in FIELDS
        if environ.get(ENV_PREFIX + key.upper(), "").strip()
    }
    layers = [
        ("file", _layer(_read_file(path), "file", path) if path else {}),
        ("env", _layer({k: v.strip() for k, v in env_raw.items()}, "env", None)),
        ("cli", _layer(cli_raw, "cli", None)),
    ]
    values: dict[str, object] = {}
    sources = {key: "default" for key in FIELDS}
    for source, layer in layers:
        for key, value in layer.items():
            values[key] = value
            sources[key] = source
    if "bind" not in values and "port" in values:
        values["bind"] = f"tcp://0.0.0.0:{values['port']}"
    settings = Settings(**values)  # type: ignore[arg-type]
    settings = _validate(settings, sources, path)
    return Effective(settings, MappingProxyType(dict(sources)), path)


def _validate(s: Settings, sources: Mapping[str, str], path: str | None) -> Settings:
    """Range and format checks; returns Settings with normalised values."""

    def fail(key: str, problem: str) -> ConfigError:
        return ConfigError(f"{_subject(key, sources[key], path)} {problem}")

    changes: dict[str, object] = {}
    home = s.home.strip()
    if not home:
        raise fail("home", "must not be empty")
    changes["home"] = os.path.abspath(os.path.expanduser(home))
    if not 1 <= s.port <= 65535:
        raise fail("port", f"must be between 1 and 65535, got {s.port}")
    for key in ("heartbeat_interval", "node_expiry"):
        if getattr(s, key) <= 0:
            raise fail(key, f"must be a positive number of seconds, got {getattr(s, key)}")
    if s.node_expiry <= s.heartbeat_interval:
        raise ConfigError(
            f"node_expiry {s.node_expiry} ({_subject('node_expiry', sources['node_expiry'], path)})"
            f" must be longer than heartbeat_interval {s.heartbeat_interval} "
            f"({_subject('heartbeat_interval', sources['heartbeat_interval'], path)})"
        )
    if not MIN_CHUNK <= s.chunk_size <= MAX_CHUNK:
        raise fail("chunk_size", f"must be between {MIN_CHUNK} and {MAX_CHUNK}, got {s.chunk_size}")
    for key in ("max_pending", "max_strangers", "max_strangers_per_address",
                "stranger_buffer_mb"):
        if getattr(s, key) < 1:
            raise fail(key, f"must be at least 1, got {getattr(s, key)}")
    if s.get_max_bytes < 0:
        raise fail("get_max_bytes", f"must be 0 or more, got {s.get_max_bytes}")
    if s.job_retention_count < 0:
        raise fail("job_retention_count", f"must be 0 or more, got {s.job_retention_count}")
    try:
        parse_duration(s.job_retention)
    except ConfigError as exc:
        raise fail("job_retention", f"is invalid: {exc}") from None
    changes["job_retention"] = s.job_retention.strip().lower()
    level = s.log_level.strip().lower()
    level = "warning" if level == "warn" else level
    if level not in LOG_LEVELS:
        raise fail("log_level", f"must be one of {', '.join(LOG_LEVELS)}, got {s.log_level!r}")
    mode = s.mode.strip().lower()
    if mode not in MODES:
        raise fail("mode", f"must be 'server' or 'client', got {s.mode!r}")
    changes.update(log_level=level, mode=mode)
    try:
        validate_name(s.name)
    except NameError_ as exc:
        raise fail("name", f"is not a valid node name: {exc}") from None
    if not re.fullmatch(r"(tcp|ipc|inproc)://\S+", s.bind):
        raise fail("bind", f"must be a ZeroMQ endpoint like tcp://0.0.0.0:5555, got {s.bind!r}")
    if s.server_address:
        try:
            parse_address(s.server_address, s.port)
        except ConfigError as exc:
            raise fail("server_address", f"is invalid: {exc}") from None
    if s.server_key:
        try:
            parse_public_key(s.server_key)
        except KeyFileError as exc:
            raise fail("server_key", f"is invalid: {exc}") from None
    return dataclasses.replace(s, **changes)  # type: ignore[arg-type]


def server_endpoint(settings: Settings) -> str:
    """The ZeroMQ endpoint ``tcp://HOST:PORT`` for ``settings.server_address``."""
    host, port = parse_address(settings.server_address, settings.port)
    if ":" in host:
        host = f"[{host}]"
    return f"tcp://{host}:{port}"
