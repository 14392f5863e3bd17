"""The job DSL: one Containerfile-style verb line -> one typed, validated Instruction.

Everything a job does is decided here, once, on the operator's side; the same rules
decode instructions received over the network (``from_dict``), where input is hostile.
What differs per verb (options, arguments, wire fields) comes from ``verbs.TABLE``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from director.errors import DSLError, ProtocolError
from director.jobs.rules import (DEFAULT_TIMEOUT, MAX_TIMEOUT, PLACEHOLDER_RE, TOKEN_RE, Invalid,
                                 check_chown, check_vars, short, unquote)
from director.jobs.verbs import COMMON_OPTIONS, TABLE, UNSUPPORTED, Verb

__all__ = [
    "VERBS", "DEFAULT_TIMEOUT", "MAX_TIMEOUT", "MAX_LINE_LENGTH", "MAX_INSTRUCTION_SIZE",
    "PLACEHOLDER_RE", "Options", "Instruction", "parse_line", "validate_chown",
]

MAX_LINE_LENGTH = 256 * 1024  # keeps every parsed Instruction far below MAX_INSTRUCTION_SIZE
MAX_INSTRUCTION_SIZE = 1024 * 1024  # total characters of all strings in a decoded instruction


def __getattr__(name: str) -> Any:
    if name == "VERBS":  # the verb names, read from the table so it is never stale
        return tuple(TABLE)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    argv: tuple[str, ...] = ()     # RUN's exec form: run without a shell
    stdout_arg: str | None = None
    sources: tuple[str, ...] = ()
    dest: str = ""
    chmod: str | None = None
    chown: str | None = None
    name: str = ""
    value: str = ""
    path: str = ""
    stderr_arg: str | None = None
    flags: tuple[str, ...] = ()    # the verb's bare options that were given (--blueprint)
    vars: str = ""                 # YAML per-job vars: a JSON object, seen by templates
    line: int | None = None
    source: str | None = None
    text: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A flat JSON-safe dict (str/float/bool/list/None, plus int ``line``) for the wire.

        ``argv``, ``stderr_arg``, ``flags`` and ``vars`` are only present when set, so the
        jobs that existed before them look as they always did.
        """
        out: dict[str, Any] = {
            "verb": self.verb, "timeout": float(self.options.timeout),
            "skip_cache": self.options.skip_cache, "run_once": self.options.run_once,
            "command": self.command, "stdout_arg": self.stdout_arg, "sources": list(self.sources),
            "dest": self.dest, "chmod": self.chmod, "chown": self.chown, "name": self.name,
            "value": self.value, "path": self.path, "line": self.line, "source": self.source,
            "text": self.text,
        }
        if self.argv:
            out["argv"] = list(self.argv)
        if self.stderr_arg is not None:
            out["stderr_arg"] = self.stderr_arg
        if self.flags:
            out["flags"] = list(self.flags)
        if self.vars:
            out["vars"] = self.vars
        return out

    @classmethod
    def from_dict(cls, data: Any) -> Instruction:
        """Decode a peer's dict strictly; anything malformed raises ProtocolError."""
        try:
            return _decode(data)
        except Invalid as exc:
            raise ProtocolError(f"malformed instruction: {exc}") from None

    def describe(self, max_len: int | None = None) -> str:
        """A short one-line human form (``RUN echo hi``) for tables and logs."""
        verb = TABLE[self.verb]
        parts = [self.verb]
        if self.options.timeout != DEFAULT_TIMEOUT:
            parts.append(f"--timeout {self.options.timeout:g}")
        parts += [flag for flag, on in (("--skip-cache", self.options.skip_cache),
                                        ("--run-once", self.options.run_once)) if on]
        for opt in verb.options:
            value = getattr(self, opt.field)
            if opt.field == "flags":
                if opt.name in value:
                    parts.append(opt.name)
            elif value:
                parts.append(f"{opt.name} {value}")
        parts.append(verb.describe(self))
        out = " ".join(parts).replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\r")
        if max_len is not None and len(out) > max_len:
            out = out[: max(max_len - 3, 0)] + "..."
        return out


def parse_line(text: str, *, source: str | None = None, line: int | None = None) -> Instruction:
    """Parse one logical job line ``VERB [--opt ...] ARGS``; raise DSLError on any problem."""
    try:
        return _parse(text, source, line)
    except Invalid as exc:
        raise DSLError(str(exc), source=source, line=line) from None


def validate_chown(value: str, *, templates: bool = True) -> str:
    """Return ``value`` if it is ``USER[:GROUP]`` (names or ids), else raise DSLError.

    With ``templates`` a ``${X}``/``{{ X }}`` may stand for a name: it is resolved later.
    """
    try:
        return check_chown(value, templates=templates)
    except Invalid as exc:
        raise DSLError(str(exc)) from None


def _verb_list() -> str:
    return ", ".join(TABLE)


def _parse(text: str, source: str | None, line: int | None) -> Instruction:
    if not isinstance(text, str):
        raise Invalid(f"a job line must be text, got {type(text).__name__}")
    if len(text) > MAX_LINE_LENGTH:
        raise Invalid(f"job line is {len(text)} characters long; the limit is {MAX_LINE_LENGTH}")
    if "\x00" in text:
        raise Invalid("job line contains a NUL character; remove it")
    first = TOKEN_RE.search(text)
    if first is None:
        raise Invalid(f"empty job line: expected 'VERB ARGS' with VERB one of {_verb_list()}")
    verb = _verb(first.group())
    values, rest = _parse_options(verb, text[first.end():])
    options = Options(
        timeout=float(values.get("--timeout", DEFAULT_TIMEOUT)),
        skip_cache="--skip-cache" in values, run_once="--run-once" in values,
    )
    fields = verb.parse(verb.name, rest.strip())
    for opt in verb.options:
        if opt.field != "flags":
            fields[opt.field] = values.get(opt.name)
    flags = tuple(o.name for o in verb.options if o.field == "flags" and o.name in values)
    if flags:
        verb.check_flags(verb.name, flags)
        fields["flags"] = flags
    return Instruction(verb=verb.name, options=options, line=line, source=source, text=text,
                       **fields)


def _verb(word: str) -> Verb:
    verb = TABLE.get(word.upper()) if word.isascii() else None
    if verb is None and word.isascii() and word.upper() in UNSUPPORTED:
        raise Invalid(f"unsupported verb {word.upper()} (directord)")
    if verb is None:
        raise Invalid(f"unknown verb {short(word)}: expected one of {_verb_list()}"
                      f"{_yaml_hint(word)}")
    return verb


def _yaml_hint(word: str) -> str:
    """A word that starts YAML, not a job line: say how each form is written."""
    if word in ("-", "---"):
        return ("; this looks like YAML: a YAML orchestration is a list like"
                " '- jobs: [RUN: echo hi]' from its first line")
    if word.endswith(":") and word[:-1].upper() in TABLE:
        return f"; write '{word[:-1].upper()} ARGS' ('{word[:-1]}: ARGS' is the YAML form)"
    return ""


def _owners(opt: str) -> str:
    """``RUN`` / ``COPY and ADD``: the verbs that take option ``opt``, for a message."""
    owners = [v.name for v in TABLE.values() if any(o.name == opt for o in v.options)]
    return " and ".join(owners) if len(owners) < 3 else \
        ", ".join(owners[:-1]) + " and " + owners[-1]


def _parse_options(verb: Verb, rest: str) -> tuple[dict[str, str], str]:
    """Consume leading ``--opt [value]`` tokens; return the raw text that follows them."""
    allowed = {o.name: o for o in (*COMMON_OPTIONS, *verb.options)}
    values: dict[str, str] = {}
    pos = 0
    while True:
        match = TOKEN_RE.search(rest, pos)
        if match is None:
            return values, ""
        token = match.group()
        if token == "--":
            return values, rest[match.end():]
        if not token.startswith("--"):
            return values, rest[match.start():]
        pos = match.end()
        name, eq, value = token.partition("=")
        opt = allowed.get(name)
        if opt is None:
            owners = _owners(name)
            if owners:
                raise Invalid(f"option {name} is not valid for {verb.name}: it only applies to "
                              f"{owners}")
            raise Invalid(f"unknown option {short(name)} for {verb.name}: {verb.name} accepts "
                          f"{', '.join(allowed)} (put -- before arguments that start with --)")
        if name in values:
            raise Invalid(f"option {name} is given twice; give it once")
        if opt.check is None:
            if eq:
                raise Invalid(f"option {name} takes no value; write just {name}")
            values[name] = ""
            continue
        if not eq:
            nxt = TOKEN_RE.search(rest, pos)
            if nxt is None:
                raise Invalid(f"option {name} needs a value: e.g. {name} {opt.example}")
            value, pos = nxt.group(), nxt.end()
        value = unquote(value)
        if not value:
            raise Invalid(f"option {name} needs a value: e.g. {name} {opt.example}")
        values[name] = opt.check(value)


# every field at its default
_DEFAULTS = {**Instruction(verb="").to_dict(), "argv": [], "stderr_arg": None, "flags": [],
             "vars": ""}
_OPTIONAL_STR = ("stdout_arg", "stderr_arg", "chmod", "chown", "source")
_STRING_FIELDS = ("verb", "command", "dest", "name", "value", "path", "text",
                  "vars") + _OPTIONAL_STR


def _decode(data: Any) -> Instruction:
    """Type-check, size-check, then apply the same rules parse_line enforces."""
    if not isinstance(data, dict):
        raise Invalid(f"expected an object, got {type(data).__name__}")
    unknown = [k for k in data if k not in _DEFAULTS]
    if unknown:
        raise Invalid(f"unknown field {short(str(unknown[0]))}")
    if "verb" not in data:
        raise Invalid("missing field 'verb'")
    d = {**_DEFAULTS, **data}
    sources = d["sources"]
    if not isinstance(sources, (list, tuple)) or not all(isinstance(s, str) for s in sources):
        raise Invalid("'sources' must be a list of strings")
    d["sources"] = strings = list(sources)
    argv = d["argv"]
    if not isinstance(argv, (list, tuple)) or not all(isinstance(a, str) for a in argv):
        raise Invalid("'argv' must be a list of strings")
    d["argv"] = list(argv)
    flags = d["flags"]
    if not isinstance(flags, (list, tuple)) or not all(isinstance(f, str) for f in flags):
        raise Invalid("'flags' must be a list of strings")
    d["flags"] = list(flags)
    strings = strings + d["argv"] + d["flags"]
    for key in ("skip_cache", "run_once"):
        if not isinstance(d[key], bool):
            raise Invalid(f"{key!r} must be a boolean")
    if isinstance(d["timeout"], bool) or not isinstance(d["timeout"], (int, float)):
        raise Invalid("'timeout' must be a number")
    line = d["line"]
    if line is not None and (isinstance(line, bool) or not isinstance(line, int)
                             or not 0 <= line <= 2**31):
        raise Invalid("'line' must be a non-negative integer or null")
    for key in _STRING_FIELDS:
        if not (isinstance(d[key], str) or (d[key] is None and key in _OPTIONAL_STR)):
            raise Invalid(f"{key!r} must be a string")
    strings = strings + [d[k] for k in _STRING_FIELDS if d[k] is not None]
    if sum(len(s) + 1 for s in strings) > MAX_INSTRUCTION_SIZE:
        raise Invalid(f"instruction is larger than {MAX_INSTRUCTION_SIZE} characters")
    if any("\x00" in s for s in strings):
        raise Invalid("a field contains a NUL character")
    verb = TABLE.get(d["verb"])
    if verb is None:
        raise Invalid(f"unknown verb {short(d['verb'])}: expected one of {_verb_list()}")
    for key in verb.foreign:
        if d[key] != _DEFAULTS[key]:
            raise Invalid(f"field {key!r} is not allowed for {verb.name}")
    timeout = d["timeout"]
    if not 0 < timeout <= MAX_TIMEOUT:  # also rejects NaN; inf and huge ints are out of range
        raise Invalid(f"'timeout' must be in (0, {MAX_TIMEOUT:g}]")
    verb.check(verb.name, d)
    for opt in verb.options:
        if opt.field != "flags" and d[opt.field] is not None:
            opt.check(d[opt.field])
    if d["flags"]:
        known = {o.name for o in verb.options if o.field == "flags"}
        if any(f not in known for f in d["flags"]) or len(set(d["flags"])) != len(d["flags"]):
            raise Invalid(f"'flags' must be distinct options of {verb.name}")
        verb.check_flags(verb.name, tuple(d["flags"]))
    if d["vars"]:
        check_vars(d["vars"])
    return Instruction(
        verb=verb.name, options=Options(float(timeout), d["skip_cache"], d["run_once"]),
        command=d["command"], argv=tuple(d["argv"]), stdout_arg=d["stdout_arg"], sources=tuple(d["sources"]),
        dest=d["dest"], chmod=d["chmod"], chown=d["chown"], name=d["name"], value=d["value"],
        path=d["path"], stderr_arg=d["stderr_arg"], flags=tuple(d["flags"]), vars=d["vars"],
        line=d["line"], source=d["source"], text=d["text"],
    )
