"""The value rules and small lexers shared by the DSL and the verb table.

Kept apart from ``dsl`` so that ``verbs`` (which ``dsl`` consults) can use them
without an import cycle.  Every check raises ``Invalid``; ``parse_line`` turns it into
a DSLError, ``Instruction.from_dict`` into a ProtocolError.
"""

from __future__ import annotations

import re
import shlex

__all__ = [
    "Invalid", "DEFAULT_TIMEOUT", "MAX_TIMEOUT", "NAME_RE", "PLACEHOLDER_RE", "TOKEN_RE",
    "check_chmod", "check_chown", "check_name", "check_timeout", "check_unit", "check_vars",
    "name_value", "plain_data", "short", "split_paths", "unquote",
]

DEFAULT_TIMEOUT = 600.0
MAX_TIMEOUT = 86400.0
NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# ${NAME} and {{ NAME }}: the placeholders plan.substitute() replaces.
PLACEHOLDER_RE = re.compile(
    r"\$\{(?P<a>[A-Za-z_][A-Za-z0-9_]*)\}|\{\{\s*(?P<b>[A-Za-z_][A-Za-z0-9_]*)\s*\}\}"
)
# A word; quoted parts and {{ NAME }} count as one piece so option values may hold spaces.
TOKEN_RE = re.compile(r"""(?:"[^"]*"|'[^']*'|\{\{\s*[A-Za-z_][A-Za-z0-9_]*\s*\}\}|\S)+""")
_OWNER_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,255}\$?")
_OWNER_ID_RE = re.compile(r"[0-9]{1,10}")
_NUMBER_RE = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")
_NAME_VALUE_RE = re.compile(r"([^\s=]*)(=|\s+|$)")
_CHMOD_RE = re.compile(r"[0-7]{1,5}")
_TEMPLATE_SPAN_RE = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.DOTALL)
_KEPT_RE = re.compile("\x00([0-9]+)\x00")
# a systemd unit name or pattern; never an option (no leading '-')
_UNIT_RE = re.compile(r"[A-Za-z0-9:_.\\@*?\[\]][A-Za-z0-9:_.\\@*?\[\]-]{0,255}")


class Invalid(ValueError):
    """A rule was broken; parse_line turns it into DSLError, from_dict into ProtocolError."""


def short(text: str, limit: int = 40) -> str:
    """Quote user text for a message, cut short: messages must stay one readable line."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def split_paths(verb: str, rest: str) -> list[str]:
    """shlex-split paths; ``{{ NAME }}`` is first tightened to ``{{NAME}}``, and any other
    ``{{ ... }}`` / ``{% ... %}`` is kept whole as written (quotes and spaces included)."""
    rest = PLACEHOLDER_RE.sub(lambda m: m.group(0) if m.group("a") else f"{{{{{m.group('b')}}}}}",
                              rest)
    kept: list[str] = []
    if "{{" in rest or "{%" in rest:
        def keep(match: re.Match[str]) -> str:
            kept.append(match.group(0))
            return f"\x00{len(kept) - 1}\x00"
        rest = _TEMPLATE_SPAN_RE.sub(keep, rest)
    try:
        words = shlex.split(rest)
    except ValueError as exc:
        raise Invalid(f"{verb}: cannot split the arguments ({exc}); check the quotes") from None
    if kept:
        words = [_KEPT_RE.sub(lambda m: kept[int(m.group(1))], w) for w in words]
    return words


def name_value(verb: str, rest: str) -> tuple[str, str]:
    """``NAME=VALUE`` or ``NAME VALUE`` (ARG, ENV)."""
    match = _NAME_VALUE_RE.match(rest)
    assert match is not None  # the pattern always matches
    name, sep = match.group(1), match.group(2)
    if not name:
        raise Invalid(f"{verb} needs NAME=VALUE or NAME VALUE: e.g. {verb} VERSION=1.2")
    check_name(verb, name)
    if not sep:
        name = name if len(name) <= 40 else "NAME"
        raise Invalid(f"{verb} {name} needs a value: write {verb} {name}=VALUE "
                      f"(or {name}= for an empty value)")
    return name, unquote(rest[match.end():].strip())


def check_name(what: str, name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise Invalid(f"invalid name {short(name)} for {what}: use letters, digits and _, "
                      "not starting with a digit")
    return name


def check_timeout(value: str) -> str:
    seconds = float(value) if _NUMBER_RE.fullmatch(value) else -1.0
    if not 0 < seconds <= MAX_TIMEOUT:
        raise Invalid(f"--timeout must be a positive number of seconds up to {MAX_TIMEOUT:g}, "
                      f"got {short(value)}")
    return value


def check_chmod(value: str) -> str:
    if not _CHMOD_RE.fullmatch(value) or int(value, 8) > 0o7777:
        raise Invalid(f"--chmod must be an octal mode like 644 or 0755 (at most 7777), "
                      f"got {short(value)}")
    return value


def _owner_ok(part: str) -> bool:
    if _OWNER_ID_RE.fullmatch(part):
        return int(part) <= 0xFFFFFFFE
    return bool(_OWNER_NAME_RE.fullmatch(part))


def check_chown(value: str, *, templates: bool = True) -> str:
    """``USER[:GROUP]`` (names or ids); with ``templates`` a placeholder may stand for a name."""
    probe = PLACEHOLDER_RE.sub("x", value) if templates else value
    user, sep, group = probe.partition(":")
    if not _owner_ok(user) or (sep and not _owner_ok(group)):
        raise Invalid(f"--chown must be USER or USER:GROUP (names or numeric ids), "
                      f"got {short(value)}")
    return value


def check_unit(verb: str, unit: str, *, templates: bool = True) -> str:
    """A systemd unit name (or pattern) for systemctl's argv; with ``templates`` a
    placeholder may stand for part of it (checked again once resolved)."""
    probe = unit
    if templates and ("{{" in unit or "${" in unit or "{%" in unit):
        probe = "x" if not unit.startswith("-") else unit
    if not _UNIT_RE.fullmatch(probe):
        raise Invalid(f"{verb}: {short(unit)} is not a unit name (letters, digits and :_.@\\-, "
                      "not starting with -)")
    return unit


def check_vars(text: str) -> str:
    """A job's ``vars``: a JSON object whose keys are names."""
    import json

    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise Invalid("'vars' must be a JSON object") from None
    if not isinstance(value, dict):
        raise Invalid("'vars' must be a JSON object")
    for key in value:
        check_name("vars", key)
    return text


def plain_data(value: object, limit: int) -> object:
    """``value`` as JSON-like data (YAML dates become text), at most ``limit`` values in
    all, so YAML aliases cannot expand it without bound; ValueError otherwise."""
    budget = [limit]

    def walk(value: object, depth: int) -> object:
        budget[0] -= 1
        if budget[0] < 0 or depth > 64:
            raise ValueError("too many or too deeply nested values")
        if value is None or isinstance(value, (str, bool, int, float)):
            return value
        if isinstance(value, (list, tuple)):
            return [walk(v, depth + 1) for v in value]
        if isinstance(value, dict):
            return {str(k): walk(v, depth + 1) for k, v in value.items()}
        if hasattr(value, "isoformat"):
            return value.isoformat()  # type: ignore[attr-defined]
        raise ValueError(f"unsupported value of type {type(value).__name__}")
    return walk(value, 0)
