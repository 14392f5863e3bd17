"""The job DSL: one Containerfile-style verb line -> one typed, validated Instruction.

Everything a job does is decided here, once, on the operator's side; the same rules
decode instructions received over the network (``from_dict``), where input is hostile.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from director.errors import DSLError, ProtocolError

__all__ = [
    "VERBS", "DEFAULT_TIMEOUT", "MAX_TIMEOUT", "MAX_LINE_LENGTH", "MAX_INSTRUCTION_SIZE",
    "NAME_RE", "PLACEHOLDER_RE", "Options", "Instruction", "parse_line", "validate_chown",
]

VERBS = ("RUN", "COPY", "ADD", "ARG", "ENV", "WORKDIR")
DEFAULT_TIMEOUT = 600.0
MAX_TIMEOUT = 86400.0
MAX_LINE_LENGTH = 256 * 1024  # keeps every parsed Instruction far below MAX_INSTRUCTION_SIZE
MAX_INSTRUCTION_SIZE = 1024 * 1024  # total characters of all strings in a decoded instruction
NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# ${NAME} and {{ NAME }}: the placeholders plan.substitute() replaces.
PLACEHOLDER_RE = re.compile(
    r"\$\{(?P<a>[A-Za-z_][A-Za-z0-9_]*)\}|\{\{\s*(?P<b>[A-Za-z_][A-Za-z0-9_]*)\s*\}\}"
)
_OWNER_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,255}\$?")
_OWNER_ID_RE = re.compile(r"[0-9]{1,10}")
_NUMBER_RE = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")
# A word; quoted parts and {{ NAME }} count as one piece so option values may hold spaces.
_TOKEN_RE = re.compile(r"""(?:"[^"]*"|'[^']*'|\{\{\s*[A-Za-z_][A-Za-z0-9_]*\s*\}\}|\S)+""")
_VERB_LIST = ", ".join(VERBS)
_COMMON_OPTIONS = ("--timeout", "--skip-cache", "--run-once")
_VERB_OPTIONS = {"RUN": ("--stdout-arg",), "COPY": ("--chmod", "--chown"),
                 "ADD": ("--chmod", "--chown")}
_FLAGS = ("--skip-cache", "--run-once")
_OPTION_OWNER = {"--stdout-arg": "RUN", "--chmod": "COPY and ADD", "--chown": "COPY and ADD"}


class _Invalid(ValueError):
    """A rule was broken; parse_line turns it into DSLError, from_dict into ProtocolError."""


@dataclass(frozen=True)
class Options:
    """Options every verb accepts; they steer execution, not what the job does."""

    timeout: float = DEFAULT_TIMEOUT
    skip_cache: bool = False
    run_once: bool = False


@dataclass(frozen=True)
class Instruction:
    """One parsed job line; only the fields of its verb are set, the rest keep defaults."""

    verb: str
    options: Options = field(default_factory=Options)
    command: str = ""
    stdout_arg: str | None = None
    sources: tuple[str, ...] = ()
    dest: str = ""
    chmod: str | None = None
    chown: str | None = None
    name: str = ""
    value: str = ""
    path: str = ""
    line: int | None = None
    source: str | None = None
    text: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A flat JSON-safe dict (str/float/bool/list/None, plus int ``line``) for the wire."""
        return {
            "verb": self.verb, "timeout": float(self.options.timeout),
            "skip_cache": self.options.skip_cache, "run_once": self.options.run_once,
            "command": self.command, "stdout_arg": self.stdout_arg, "sources": list(self.sources),
            "dest": self.dest, "chmod": self.chmod, "chown": self.chown, "name": self.name,
            "value": self.value, "path": self.path, "line": self.line, "source": self.source,
            "text": self.text,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Instruction:
        """Decode a peer's dict strictly; anything malformed raises ProtocolError."""
        try:
            return _decode(data)
        except _Invalid as exc:
            raise ProtocolError(f"malformed instruction: {exc}") from None

    def describe(self, max_len: int | None = None) -> str:
        """A short one-line human form (``RUN echo hi``) for tables and logs."""
        parts = [self.verb]
        if self.options.timeout != DEFAULT_TIMEOUT:
            parts.append(f"--timeout {self.options.timeout:g}")
        parts += [flag for flag, on in (("--skip-cache", self.options.skip_cache),
                                        ("--run-once", self.options.run_once)) if on]
        if self.verb == "RUN":
            if self.stdout_arg is not None:
                parts.append(f"--stdout-arg {self.stdout_arg}")
            parts.append(self.command)
        elif self.verb in ("COPY", "ADD"):
            parts += [f"--{k} {v}" for k, v in (("chmod", self.chmod), ("chown", self.chown)) if v]
            parts.append(shlex.join((*self.sources, self.dest)))
        elif self.verb in ("ARG", "ENV"):
            parts.append(f"{self.name}={self.value}")
        else:
            parts.append(self.path)
        out = " ".join(parts).replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\r")
        if max_len is not None and len(out) > max_len:
            out = out[: max(max_len - 3, 0)] + "..."
        return out


def parse_line(text: str, *, source: str | None = None, line: int | None = None) -> Instruction:
    """Parse one logical job line ``VERB [--opt ...] ARGS``; raise DSLError on any problem."""
    try:
        return _parse(text, source, line)
    except _Invalid as exc:
        raise DSLError(str(exc), source=source, line=line) from None


def _parse(text: str, source: str | None, line: int | None) -> Instruction:
    if not isinstance(text, str):
        raise _Invalid(f"a job line must be text, got {type(text).__name__}")
    if len(text) > MAX_LINE_LENGTH:
        raise _Invalid(f"job line is {len(text)} characters long; the limit is {MAX_LINE_LENGTH}")
    if "\x00" in text:
        raise _Invalid("job line contains a NUL character; remove it")
    first = _TOKEN_RE.search(text)
    if first is None:
        raise _Invalid(f"empty job line: expected 'VERB ARGS' with VERB one of {_VERB_LIST}")
    verb = _verb(first.group())
    values, rest = _parse_options(verb, text[first.end():])
    options = Options(
        timeout=float(values.get("--timeout", DEFAULT_TIMEOUT)),
        skip_cache="--skip-cache" in values, run_once="--run-once" in values,
    )
    base = {"verb": verb, "options": options, "line": line, "source": source, "text": text}
    rest = rest.strip()
    if verb == "RUN":
        if not rest:
            raise _Invalid("RUN needs a command: e.g. RUN echo hello")
        return Instruction(command=rest, stdout_arg=values.get("--stdout-arg"), **base)
    if verb in ("COPY", "ADD"):
        paths = _split(verb, rest)
        if len(paths) < 2:
            raise _Invalid(f"{verb} needs at least one source and a destination: "
                           f"{verb} SRC... DEST")
        if "" in paths:
            raise _Invalid(f"{verb} got an empty path (''); give real file names")
        return Instruction(sources=tuple(paths[:-1]), dest=paths[-1], chmod=values.get("--chmod"),
                           chown=values.get("--chown"), **base)
    if verb in ("ARG", "ENV"):
        name, value = _name_value(verb, rest)
        return Instruction(name=name, value=value, **base)
    paths = _split(verb, rest)
    if len(paths) != 1:
        raise _Invalid(f"WORKDIR takes exactly one path, got {len(paths)}; "
                       "quote a path with spaces")
    if not paths[0]:
        raise _Invalid("WORKDIR got an empty path (''); give a directory")
    return Instruction(path=paths[0], **base)


def _verb(word: str) -> str:
    upper = word.upper()
    if not word.isascii() or upper not in VERBS:
        raise _Invalid(f"unknown verb {_short(word)}: expected one of {_VERB_LIST}")
    return upper


def _parse_options(verb: str, rest: str) -> tuple[dict[str, str], str]:
    """Consume leading ``--opt [value]`` tokens; return the raw text that follows them."""
    allowed = _COMMON_OPTIONS + _VERB_OPTIONS.get(verb, ())
    values: dict[str, str] = {}
    pos = 0
    while True:
        match = _TOKEN_RE.search(rest, pos)
        if match is None:
            return values, ""
        token = match.group()
        if token == "--":
            return values, rest[match.end():]
        if not token.startswith("--"):
            return values, rest[match.start():]
        pos = match.end()
        opt, eq, value = token.partition("=")
        if opt not in allowed:
            if opt in _OPTION_OWNER:
                raise _Invalid(f"option {opt} is not valid for {verb}: it only applies to "
                               f"{_OPTION_OWNER[opt]}")
            raise _Invalid(f"unknown option {_short(opt)} for {verb}: {verb} accepts "
                           f"{', '.join(allowed)} (put -- before arguments that start with --)")
        if opt in values:
            raise _Invalid(f"option {opt} is given twice; give it once")
        if opt in _FLAGS:
            if eq:
                raise _Invalid(f"option {opt} takes no value; write just {opt}")
            values[opt] = ""
            continue
        if not eq:
            nxt = _TOKEN_RE.search(rest, pos)
            if nxt is None:
                raise _Invalid(f"option {opt} needs a value: e.g. {opt} {_EXAMPLES[opt]}")
            value, pos = nxt.group(), nxt.end()
        value = _unquote(value)
        if not value:
            raise _Invalid(f"option {opt} needs a value: e.g. {opt} {_EXAMPLES[opt]}")
        values[opt] = _OPTION_CHECKS[opt](value)


def _split(verb: str, rest: str) -> list[str]:
    """shlex-split paths; ``{{ NAME }}`` is first tightened to ``{{NAME}}`` so it stays whole."""
    rest = PLACEHOLDER_RE.sub(lambda m: m.group(0) if m.group("a") else f"{{{{{m.group('b')}}}}}",
                              rest)
    try:
        return shlex.split(rest)
    except ValueError as exc:
        raise _Invalid(f"{verb}: cannot split the arguments ({exc}); check the quotes") from None


def _name_value(verb: str, rest: str) -> tuple[str, str]:
    match = re.match(r"([^\s=]*)(=|\s+|$)", rest)
    assert match is not None  # the pattern always matches
    name, sep = match.group(1), match.group(2)
    if not name:
        raise _Invalid(f"{verb} needs NAME=VALUE or NAME VALUE: e.g. {verb} VERSION=1.2")
    _check_name(verb, name)
    if not sep:
        name = name if len(name) <= 40 else "NAME"
        raise _Invalid(f"{verb} {name} needs a value: write {verb} {name}=VALUE "
                       f"(or {name}= for an empty value)")
    return name, _unquote(rest[match.end():].strip())


def _short(text: str, limit: int = 40) -> str:
    """Quote user text for a message, cut short: messages must stay one readable line."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def _check_name(what: str, name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise _Invalid(f"invalid name {_short(name)} for {what}: use letters, digits and _, "
                       "not starting with a digit")
    return name


def _check_timeout(value: str) -> str:
    seconds = float(value) if _NUMBER_RE.fullmatch(value) else -1.0
    if not 0 < seconds <= MAX_TIMEOUT:
        raise _Invalid(f"--timeout must be a positive number of seconds up to {MAX_TIMEOUT:g}, "
                       f"got {_short(value)}")
    return value


def _check_chmod(value: str) -> str:
    if not re.fullmatch(r"[0-7]{1,5}", value) or int(value, 8) > 0o7777:
        raise _Invalid(f"--chmod must be an octal mode like 644 or 0755 (at most 7777), "
                       f"got {_short(value)}")
    return value


def _owner_ok(part: str) -> bool:
    if _OWNER_ID_RE.fullmatch(part):
        return int(part) <= 0xFFFFFFFE
    return bool(_OWNER_NAME_RE.fullmatch(part))


def validate_chown(value: str, *, templates: bool = True) -> str:
    """Return ``value`` if it is ``USER[:GROUP]`` (names or ids), else raise DSLError.

    With ``templates`` a ``${X}``/``{{ X }}`` may stand for a name: it is resolved later.
    """
    try:
        return _check_chown(value, templates=templates)
    except _Invalid as exc:
        raise DSLError(str(exc)) from None


def _check_chown(value: str, *, templates: bool = True) -> str:
    probe = PLACEHOLDER_RE.sub("x", value) if templates else value
    user, sep, group = probe.partition(":")
    if not _owner_ok(user) or (sep and not _owner_ok(group)):
        raise _Invalid(f"--chown must be USER or USER:GROUP (names or numeric ids), "
                       f"got {_short(value)}")
    return value


_EXAMPLES = {"--timeout": "60", "--stdout-arg": "NAME", "--chmod": "0644", "--chown": "user:group"}
_OPTION_CHECKS = {
    "--timeout": _check_timeout,
    "--stdout-arg": lambda v: _check_name("--stdout-arg", v),
    "--chmod": _check_chmod,
    "--chown": _check_chown,
}
_DEFAULTS = Instruction(verb="RUN").to_dict()
_OPTIONAL_STR = ("stdout_arg", "chmod", "chown", "source")
_STRING_FIELDS = ("verb", "command", "dest", "name", "value", "path", "text") + _OPTIONAL_STR
_VERB_FIELDS = {
    "RUN": {"command", "stdout_arg"}, "COPY": {"sources", "dest", "chmod", "chown"},
    "ADD": {"sources", "dest", "chmod", "chown"}, "ARG": {"name", "value"},
    "ENV": {"name", "value"}, "WORKDIR": {"path"},
}
_ALL_VERB_FIELDS = frozenset(k for fields in _VERB_FIELDS.values() for k in fields)


def _decode(data: Any) -> Instruction:
    """Type-check, size-check, then apply the same rules parse_line enforces."""
    if not isinstance(data, dict):
        raise _Invalid(f"expected an object, got {type(data).__name__}")
    unknown = [k for k in data if k not in _DEFAULTS]
    if unknown:
        raise _Invalid(f"unknown field {_short(str(unknown[0]))}")
    if "verb" not in data:
        raise _Invalid("missing field 'verb'")
    d = {**_DEFAULTS, **data}
    sources = d["sources"]
    if not isinstance(sources, (list, tuple)) or not all(isinstance(s, str) for s in sources):
        raise _Invalid("'sources' must be a list of strings")
    d["sources"] = strings = list(sources)
    for key in ("skip_cache", "run_once"):
        if not isinstance(d[key], bool):
            raise _Invalid(f"{key!r} must be a boolean")
    if isinstance(d["timeout"], bool) or not isinstance(d["timeout"], (int, float)):
        raise _Invalid("'timeout' must be a number")
    line = d["line"]
    if line is not None and (isinstance(line, bool) or not isinstance(line, int)
                             or not 0 <= line <= 2**31):
        raise _Invalid("'line' must be a non-negative integer or null")
    for key in _STRING_FIELDS:
        if not (isinstance(d[key], str) or (d[key] is None and key in _OPTIONAL_STR)):
            raise _Invalid(f"{key!r} must be a string")
    strings = strings + [d[k] for k in _STRING_FIELDS if d[k] is not None]
    if sum(len(s) + 1 for s in strings) > MAX_INSTRUCTION_SIZE:
        raise _Invalid(f"instruction is larger than {MAX_INSTRUCTION_SIZE} characters")
    if any("\x00" in s for s in strings):
        raise _Invalid("a field contains a NUL character")
    verb = d["verb"]
    if verb not in VERBS:
        raise _Invalid(f"unknown verb {_short(verb)}: expected one of {_VERB_LIST}")
    for key in _ALL_VERB_FIELDS - _VERB_FIELDS[verb]:
        if d[key] != _DEFAULTS[key]:
            raise _Invalid(f"field {key!r} is not allowed for {verb}")
    timeout = d["timeout"]
    if not 0 < timeout <= MAX_TIMEOUT:  # also rejects NaN; inf and huge ints are out of range
        raise _Invalid(f"'timeout' must be in (0, {MAX_TIMEOUT:g}]")
    if verb == "RUN" and not d["command"].strip():
        raise _Invalid("RUN needs a non-empty 'command'")
    if d["stdout_arg"] is not None:
        _check_name("--stdout-arg", d["stdout_arg"])
    if verb in ("COPY", "ADD") and (not d["sources"] or "" in d["sources"] or not d["dest"]):
        raise _Invalid(f"{verb} needs non-empty 'sources' and 'dest'")
    if d["chmod"] is not None:
        _check_chmod(d["chmod"])
    if d["chown"] is not None:
        _check_chown(d["chown"])
    if verb in ("ARG", "ENV"):
        _check_name(verb, d["name"])
    if verb == "WORKDIR" and not d["path"]:
        raise _Invalid("WORKDIR needs a non-empty 'path'")
    return Instruction(
        verb=verb, options=Options(float(timeout), d["skip_cache"], d["run_once"]),
        command=d["command"], stdout_arg=d["stdout_arg"], sources=tuple(d["sources"]),
        dest=d["dest"], chmod=d["chmod"], chown=d["chown"], name=d["name"], value=d["value"],
        path=d["path"], line=d["line"], source=d["source"], text=d["text"],
    )
