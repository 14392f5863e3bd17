"""How durations and server addresses are written (config values, CLI options):
parsed into plain values, or one ConfigError line naming what is wrong."""

from __future__ import annotations

import re

from director.errors import ConfigError


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw]?)")
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
MAX_DURATION = 100 * 365 * 86400.0


def parse_duration(text: str) -> float:
    """Seconds in ``90``, ``45s``, ``30m``, ``12h``, ``30d``, ``2w`` or ``1d12h`` (more
    than zero, at most 100 years): how retention and ``--older-than`` are written."""
    spec = text.strip().lower() if isinstance(text, str) else ""
    pos, seconds = 0, 0.0
    while pos < len(spec):
        match = _DURATION_PART.match(spec, pos)
        if match is None or (not match.group(2) and match.end() != len(spec)):
            break
        seconds += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if not spec or pos != len(spec) or not 0 < seconds <= MAX_DURATION:
        raise ConfigError(f"{text!r} is not a duration like 30d, 12h, 30m or 2w"
                          " (more than zero, at most 100 years)")
    return seconds


_HOST_RE = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]{0,252})")


def parse_address(address: str, default_port: int = 5555) -> tuple[str, int]:
    """Split ``HOST``, ``HOST:PORT``, ``[v6]:PORT`` (or bare v6) into (host, port)."""
    text = address.strip()
    if text.startswith("tcp://"):
        text = text[len("tcp://") :]
    if not text:
        raise ConfigError(
            "no server address: give --server HOST[:PORT] or set DIRECTOR_SERVER_ADDRESS"
        )
    port_text: str | None = None
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ConfigError(f"invalid server address {address!r}: use [IPV6]:PORT")
        port_text, v6 = (rest[1:] if rest else None), True
    elif text.count(":") > 1:
        host, v6 = text, True
    else:
        host, sep, rest = text.partition(":")
        port_text, v6 = (rest if sep else None), False
    if v6:
        import ipaddress

        try:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            raise ConfigError(f"invalid server address {address!r}: bad IPv6 address") from None
    elif not _HOST_RE.fullmatch(host):
        raise ConfigError(f"invalid server address {address!r}: bad host name")
    if port_text is None:
        port = default_port
    elif port_text.isdigit() and 1 <= int(port_text) <= 65535:
        port = int(port_text)
    else:
        raise ConfigError(f"invalid server address {address!r}: port must be 1-65535")
    return host, port
