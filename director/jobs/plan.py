"""Node-side resolution of ARG placeholders and the content hash that keys the job cache.

Pure functions: the node applies its ARG values to an Instruction, then hashes the result
together with its ENV and WORKDIR so that a job is answered from cache only when exactly
the same thing would run again.

Two kinds of ARG value exist.  The operator's (``ARG NAME=VALUE``) are substituted as
written: the operator wrote them.  Values that came from a node (``--stdout-arg``; later
QUERY and facts) are data: substituted once, never expanded again or rendered as a
template, and in a field a shell reads (RUN's command) shell-quoted with ``shlex.quote``
so that no quote, ``;``, ``$(...)`` or backtick in them ever becomes code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shlex
from collections.abc import Mapping

from director.errors import DSLError
from director.jobs.dsl import PLACEHOLDER_RE, Instruction, validate_chown
from director.jobs.verbs import TABLE

__all__ = ["HASH_VERSION", "substitute", "resolve", "job_hash", "uses_node_values",
           "definition_hash", "stored_hash", "referenced_names"]

HASH_VERSION = 1  # bump when the hashed content changes, so old cache entries stop matching

_EMPTY: Mapping[str, str] = {}
# fields newer than the hash: left out while unset, so the hashes of older jobs hold
_HASHED_WHEN_SET = {("RUN", "stderr_arg"), ("WORKDIR", "chmod"), ("WORKDIR", "chown")}


def substitute(text: str, args: Mapping[str, str], node: Mapping[str, str] = _EMPTY, *,
               shell: bool = False, field: str = "command") -> str:
    """Replace ``${NAME}`` / ``{{ NAME }}`` for names in ``args`` or ``node``; leave the rest.

    One pass only: a value that itself contains ``${X}`` is inserted as-is, never expanded.
    ``node`` holds values that came from a node: with ``shell`` (the text is read by
    ``/bin/sh``) they are inserted shell-quoted for the place they land in, and a place
    where no quoting is safe (inside backticks, a here-document, ...) raises DSLError.
    """
    if not _has_placeholder(text):
        return text
    if not shell or not node:
        def replace(match: re.Match[str]) -> str:
            name = match.group("a") or match.group("b")
            if name in node:
                return _text(node[name])
            return _text(args[name]) if name in args else match.group(0)

        return PLACEHOLDER_RE.sub(replace, text)
    # A node value in shell text: follow the shell's quoting in the text built so far
    # (operator values included, they may open or close quotes) to quote it correctly.
    out: list[str] = []
    lexer = _ShellContext()
    pos = 0
    for match in PLACEHOLDER_RE.finditer(text):
        name = match.group("a") or match.group("b")
        if name not in node and name not in args:
            continue
        piece = text[pos:match.start()]
        out.append(piece)
        lexer.feed(piece)
        if name in node:
            value = lexer.quote(_text(node[name]), match.group(0), field)
        else:
            value = _text(args[name])
        out.append(value)
        lexer.feed(value)
        pos = match.end()
    out.append(text[pos:])
    return "".join(out)


class _ShellContext:
    """Just enough of the POSIX shell's quoting to know where the next character lands.

    Tracks unquoted text (also inside ``$(...)``), '...' and "...", backslash escapes and
    comments.  Anything it cannot follow for sure (backticks, ``$'...'``, here-documents,
    a command substitution inside double quotes) makes every later position unsafe.
    """

    def __init__(self) -> None:
        self.stack = ["plain"]      # plain | paren | single | double | comment
        self.escaped = False
        self.unsure = ""            # why later positions cannot be quoted safely
        self.prev = ""

    def feed(self, text: str) -> None:
        for c in text:
            self._char(c)

    def _char(self, c: str) -> None:
        top = self.stack[-1]
        prev, self.prev = self.prev, c
        if self.escaped:
            self.escaped = False
            self.prev = ""
            return
        if top == "comment":
            if c == "\n":
                self.stack.pop()
        elif top == "single":
            if c == "'":
                self.stack.pop()
        elif top == "double":
            if c == "\\":
                self.escaped = True
            elif c == '"':
                self.stack.pop()
            elif c == "`" or (c == "(" and prev == "$"):
                self.unsure = self.unsure or "a command substitution inside double quotes"
        else:  # plain or paren (inside $(...), also unquoted)
            if c == "\\":
                self.escaped = True
            elif c == "'":
                if prev == "$":
                    self.unsure = self.unsure or "$'...' quoting"
                self.stack.append("single")
            elif c == '"':
                self.stack.append("double")
            elif c == "`":
                self.unsure = self.unsure or "backticks"
            elif c == "(" and prev == "$":
                self.stack.append("paren")
            elif c == ")" and top == "paren":
                self.stack.pop()
            elif c == "<" and prev == "<":
                self.unsure = self.unsure or "a here-document"
            elif c == "#" and prev in ("", " ", "\t", "\n", ";", "&", "|", "(", ")"):
                self.stack.append("comment")

    def quote(self, value: str, placeholder: str, field: str) -> str:
        """``value`` quoted for the current position, which it leaves unchanged."""
        where = self.unsure or ("a backslash escape" if self.escaped else "")
        top = self.stack[-1]
        if where:
            raise DSLError(f"the node value {placeholder} in RUN's {field} comes after {where},"
                           " where it cannot be quoted safely; use it unquoted (it is quoted for"
                           " you) or use the exec form RUN [\"prog\", \"arg\", ...]")
        quoted = shlex.quote(value)
        if top == "single":
            return "'" + quoted + "'"       # close the quotes, the value, open them again
        if top == "double":
            return '"' + quoted + '"'
        if top == "comment":  # it does nothing there, but a newline would end the comment
            return shlex.quote(value.replace("\n", " "))
        return quoted


def _has_placeholder(text: str) -> bool:
    return "${" in text or "{{" in text or "{%" in text


def _text(value: object) -> str:
    """A node value as text: CACHEFILE may hold numbers, lists and mappings."""
    return value if isinstance(value, str) else str(value)


def _is_template(text: str, args: Mapping[str, object], node: Mapping[str, object]) -> bool:
    """More than ``${NAME}`` and ``{{ NAME }}`` of names that are set: Jinja renders it."""
    if "{%" in text:
        return True
    if "{{" not in text:
        return False
    rest = PLACEHOLDER_RE.sub(
        lambda m: "" if m.group("a") or m.group("b") in args or m.group("b") in node
        else m.group(0), text)
    return "{{" in rest or "{%" in rest


def _names(text: str) -> set[str]:
    names = {m.group("a") or m.group("b") for m in PLACEHOLDER_RE.finditer(text)}
    if "{{" in text or "{%" in text:
        from director.jobs.templates import template_names
        names |= template_names(text)
    return names


def uses_node_values(instr: Instruction, node: Mapping[str, object],
                     scope: Mapping[str, object] = _EMPTY) -> bool:
    """Whether resolving ``instr`` inserts any value that came from a node."""
    if not node and not scope:
        return False
    for name in TABLE[instr.verb].substituted:
        value = getattr(instr, name)
        texts = value if isinstance(value, tuple) else (value,)
        for text in texts:
            if text and _has_placeholder(text):
                names = _names(text)
                if not names.isdisjoint(node) or not names.isdisjoint(scope):
                    return True
    return False


def referenced_names(instr: Instruction) -> set[str]:
    """The ARG names ``instr`` reads (``${NAME}``, ``{{ NAME }}``, names in templates)."""
    out: set[str] = set()
    for name in TABLE[instr.verb].substituted:
        value = getattr(instr, name)
        for text in value if isinstance(value, tuple) else (value,):
            if text and _has_placeholder(text):
                out |= _names(text)
    return out


def _resolve_text(text: str, args: Mapping[str, str], node: Mapping[str, object],
                  scope: Mapping[str, object], *, shell: bool, field: str) -> str:
    if not _is_template(text, args, node):
        return substitute(text, args, node, shell=shell, field=field)  # type: ignore[arg-type]
    from director.jobs.templates import render
    return render(text, args, node, scope, shell=shell, field=field, quote=_ShellContext)


def resolve(instr: Instruction, args: Mapping[str, str],
            node: Mapping[str, object] = _EMPTY,
            scope: Mapping[str, object] = _EMPTY) -> Instruction:
    """A copy with ARG values substituted into the fields its verb declares ``substituted``.

    ``args`` are the operator's values (inserted as written), ``node`` the values that came
    from a node (quoted in the fields the verb's ``shell`` names, literal elsewhere); a name
    in both takes the ``node`` value.  ``scope`` holds more values from nodes that only
    templates see (``query``, ``facts``).  A field with more than ``${NAME}``/``{{ NAME }}``
    is a Jinja template (``director.jobs.templates``), which also sees the job's ``vars``.
    The verb, options, names and chmod are never substituted.  A ``--chown`` that is not
    ``USER[:GROUP]`` once resolved (e.g. an ARG it names is unset) raises DSLError, and so
    do a node value where it cannot be quoted and a template that fails.
    """
    changes: dict[str, object] = {}
    verb = TABLE[instr.verb]
    if instr.vars:
        args = {**args, "vars": json.loads(instr.vars)}  # type: ignore[dict-item]
    for name in verb.substituted:
        value = getattr(instr, name)
        shell = name in verb.shell
        try:
            if isinstance(value, tuple):
                if any(_has_placeholder(v) for v in value):
                    changes[name] = tuple(
                        _resolve_text(v, args, node, scope, shell=shell, field=name)
                        for v in value)
            elif value is not None and _has_placeholder(value):
                changes[name] = _resolve_text(value, args, node, scope, shell=shell, field=name)
        except DSLError as exc:
            raise DSLError(exc.message, source=instr.source, line=instr.line) from None
    chown = changes.get("chown", instr.chown)
    if chown is not None:
        try:
            validate_chown(chown, templates=False)  # type: ignore[arg-type]
        except DSLError as exc:
            raise DSLError(f"{exc.message} after substituting ARG values; set every ARG it "
                           "names", source=instr.source, line=instr.line) from None
    return dataclasses.replace(instr, **changes) if changes else instr  # type: ignore[arg-type]


def job_hash(instr: Instruction, *, env: Mapping[str, str], workdir: str, extra: str = "") -> str:
    """BLAKE2b-256 hex of the job's content: verb, its fields, env, workdir and ``extra``.

    Pass the resolved instruction.  ``timeout``, ``skip_cache`` and ``run_once`` only steer
    execution, so they are left out: changing them must not invalidate the cache.  An
    empty tuple field (RUN's ``argv`` in the shell form), an unset ``--stderr-arg`` and
    empty ``vars`` are left out too, so the hash of every job that existed before those
    fields is unchanged.
    """
    content: dict[str, object] = {
        "v": HASH_VERSION,
        "verb": instr.verb,
        "env": dict(env),
        "workdir": workdir,
        "extra": extra,
    }
    for name in TABLE[instr.verb].hash_fields:
        value = getattr(instr, name)
        if isinstance(value, tuple):
            if not value:
                continue
            value = list(value)
        elif value is None and (instr.verb, name) in _HASHED_WHEN_SET:
            continue
        content[name] = value
    if instr.vars:
        content["vars"] = instr.vars
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.blake2b(canonical.encode("ascii"), digest_size=32).hexdigest()


def definition_hash(instr: Instruction, extra: str = "") -> str:
    """The job's content hash as submitted (its fingerprint, as directord has one): the
    instruction as written (ARG references unresolved) and, for COPY/ADD, the digest of
    what would be sent.  ``director job --json`` shows it and a dry run prints it; each
    node's cache key (``job_hash``) also takes in that node's ARG, ENV and WORKDIR."""
    return job_hash(instr, env={}, workdir="", extra=extra)


_UNSET_LISTS = {"argv": [], "flags": [], "sources": []}


def stored_hash(d: Mapping[str, object], extra: str = "") -> str:
    """``definition_hash`` of the instruction whose ``to_dict()`` is ``d`` (as the server
    stores and sends it), without decoding it again: job documents show it for every job,
    so it must cost little.  KeyError for a verb there is no such instruction of."""
    verb = str(d["verb"])
    content: dict[str, object] = {"v": HASH_VERSION, "verb": verb, "env": {}, "workdir": "",
                                  "extra": extra}
    for name in TABLE[verb].hash_fields:
        value = d.get(name, _UNSET_LISTS.get(name))
        if isinstance(value, list):
            if not value:
                continue
        elif value is None and (verb, name) in _HASHED_WHEN_SET:
            continue
        content[name] = value
    if d.get("vars"):
        content["vars"] = d["vars"]
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.blake2b(canonical.encode("ascii"), digest_size=32).hexdigest()
