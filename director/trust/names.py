"""Node names: the rules every name (enrollment, targets, config) must follow.

Names end up in file names, log lines and shell commands, so they are kept to a small,
safe alphabet and never look like an option (``-x``) or a hidden/relative path (``.x``).
"""

from __future__ import annotations

import re

from director.errors import NameError_

MAX_NAME_LENGTH = 64
NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")
_BAD_CHARS_RE = re.compile(r"[^A-Za-z0-9._-]")

__all__ = ["MAX_NAME_LENGTH", "NAME_RE", "validate_name", "name_from_hostname"]


def validate_name(name: str) -> str:
    """Return ``name`` unchanged if it is a valid node name, else raise NameError_."""
    if not isinstance(name, str):
        raise NameError_(f"a node name must be text, got {type(name).__name__}")
    if not name:
        raise NameError_("a node name must not be empty")
    if len(name) > MAX_NAME_LENGTH:
        raise NameError_(
            f"node name {name[:20]!r}... is {len(name)} characters long "
            f"(at most {MAX_NAME_LENGTH})"
        )
    if name[0] in ".-":
        raise NameError_(f"node name {name!r} must not start with {name[0]!r}")
    bad = _BAD_CHARS_RE.search(name)
    if bad is not None or not NAME_RE.fullmatch(name):
        char = bad.group(0) if bad is not None else name
        raise NameError_(
            f"node name {name!r} contains {char!r}; "
            "use only letters, digits, '.', '-' and '_'"
        )
    return name


def name_from_hostname(hostname: str) -> str:
    """Turn a host name into a valid node name (short name, bad characters -> '-')."""
    short = hostname.split(".", 1)[0]
    cleaned = _BAD_CHARS_RE.sub("-", short).lstrip(".-")[:MAX_NAME_LENGTH]
    return cleaned or "node"
