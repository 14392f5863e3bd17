"""Orchestration files: Directorfiles and directord-style YAML, turned into Steps.

Every error is a DSLError carrying the file and the 1-based line, so an operator can go
straight to the mistake.  YAML is only ever composed into nodes with the SafeLoader; no
Python object is ever constructed from a file.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from director.errors import DSLError
from director.jobs import verbs
from director.jobs.dsl import Instruction, parse_line
from director.jobs.rules import Invalid, check_vars, plain_data

if TYPE_CHECKING:
    import yaml  # imported when a YAML file is parsed: 'director exec' never needs it

__all__ = ["Step", "load_orchestration", "looks_like_yaml", "parse_directorfile", "parse_yaml",
           "parse_job_text"]

_STR = "tag:yaml.org,2002:str"
_BOOL = "tag:yaml.org,2002:bool"
_PLAIN_TAGS = ("tag:yaml.org,2002:seq", "tag:yaml.org,2002:map")
_ITEM_KEYS = ("targets", "jobs", "async", "name")
_VERB_WORD_RE = re.compile(r"[A-Za-z]+")
_YAML_START_RE = re.compile(r"-(?:\s|$)|---|%|\[|\{")
_ASYNC_WORDS = {**{w: True for w in ("true", "yes", "on", "y", "1")},
                **{w: False for w in ("false", "no", "off", "n", "0")}}
_JOB_KEYS = ("name", "vars")  # besides the verb, a job may have these (directord)
_VARS_ITEMS = 10_000  # values (nested ones too) a job's vars may hold


@dataclass(frozen=True)
class Step:
    """A group of jobs sent to the same targets; ``async_`` may overlap its neighbours."""

    jobs: tuple[Instruction, ...]
    targets: tuple[str, ...] = ()
    async_: bool = False
    name: str | None = None


def load_orchestration(path: str | Path) -> list[Step]:
    """Read and parse one orchestration file: YAML by its suffix (``.yaml``/``.yml``) or
    its first line, else a Directorfile."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DSLError("file is not UTF-8 text; save it as UTF-8", source=source) from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise DSLError(f"cannot read orchestration file: {reason}; check the path",
                       source=source) from None
    if Path(path).suffix.lower() in (".yaml", ".yml") or looks_like_yaml(text):
        return parse_yaml(text, source)
    return parse_directorfile(text, source)


def looks_like_yaml(text: str) -> bool:
    """True when the first line that is not blank or a comment can only start YAML: a
    list item (``- ...``), a document marker or directive (``---``, ``%YAML``) or a flow
    collection (``[``, ``{``); a Directorfile line starts with a verb word."""
    for raw in _physical_lines(text):
        line = raw.strip()
        if line and not line.startswith("#"):
            return bool(_YAML_START_RE.match(line))
    return False


def parse_directorfile(text: str, source: str) -> list[Step]:
    """One verb line per line, ``#`` comment lines, trailing ``\\`` continuation."""
    jobs = tuple(_parse_lines(text, source, numbered=True))
    if not jobs:
        raise DSLError(f"no jobs in {source}: add lines like 'RUN echo hello'", source=source)
    return [Step(jobs=jobs)]


def parse_job_text(text: str, source: str = "<command line>") -> list[Step]:
    """Jobs given on the command line: one line, or several lines like a Directorfile."""
    numbered = len(_physical_lines(text)) > 1
    jobs = tuple(_parse_lines(text, source, numbered=numbered))
    if not jobs:
        raise DSLError("no job given: expected 'VERB ARGS' with VERB one of "
                       f"{', '.join(verbs.names())}",
                       source=source)
    return [Step(jobs=jobs)]


def _physical_lines(text: str) -> list[str]:
    """Split on \\n, \\r\\n and \\r only, so line numbers match what editors show."""
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _parse_lines(text: str, source: str, *, numbered: bool) -> list[Instruction]:
    """Join continuations (like a Containerfile) and parse each logical line."""
    out: list[Instruction] = []
    pieces: list[str] = []
    start = 0
    for number, raw in enumerate(_physical_lines(text), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue  # blank and comment lines are skipped, also inside a continuation
        if not pieces:
            start = number
        continued = stripped.endswith("\\")
        piece = stripped[:-1].strip() if continued else stripped
        if piece:
            pieces.append(piece)
        if not continued:
            out.append(_finish(pieces, source, start if numbered else None))
            pieces = []
    if pieces:  # a continuation at the end of the text ends the instruction
        out.append(_finish(pieces, source, start if numbered else None))
    return out


def _finish(pieces: list[str], source: str, line: int | None) -> Instruction:
    return parse_line(" ".join(pieces), source=source, line=line)


def parse_yaml(text: str, source: str) -> list[Step]:
    """The directord format: a list of ``{targets, jobs: [{VERB: ARGS}], async, name}``."""
    import yaml

    # libyaml's parser when PyYAML has it (~10x faster on big files); same safe node graph
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        root = yaml.compose(text, Loader=loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "syntax error"
        if "nesting depth" in problem:  # libyaml's words for what RecursionError means below
            problem = "nested too deeply"
        raise DSLError(f"invalid YAML: {problem}; check indentation and quoting", source=source,
                       line=mark.line + 1 if mark is not None else None) from None
    except yaml.YAMLError as exc:
        raise DSLError(f"invalid YAML: {exc}", source=source) from None
    except RecursionError:
        raise DSLError("invalid YAML: nested too deeply", source=source) from None
    if root is None or (isinstance(root, yaml.SequenceNode) and not root.value):
        raise DSLError(f"no jobs in {source}: add items like '- jobs: [RUN: echo hello]'",
                       source=source)
    if not isinstance(root, yaml.SequenceNode):
        raise DSLError("the top level must be a list of items like '- jobs: [...]'",
                       source=source, line=_line(root))
    _check_tags(root, source)
    return [_parse_item(item, index, source) for index, item in enumerate(root.value, start=1)]


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _check_tags(root: yaml.Node, source: str) -> None:
    """Refuse explicit tags (``!!python/...``, ``!foo``) on lists and mappings outright."""
    import yaml

    stack, seen = [root], set()
    while stack:
        node = stack.pop()
        if id(node) in seen or isinstance(node, yaml.ScalarNode):
            continue  # aliases may repeat a node; scalar tags are checked where used
        seen.add(id(node))
        if node.tag not in _PLAIN_TAGS:
            raise DSLError(f"unsupported YAML tag {node.tag[:60]!r}; remove it",
                           source=source, line=_line(node))
        if isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        else:
            stack.extend(n for pair in node.value for n in pair)


def _parse_item(item: yaml.Node, index: int, source: str) -> Step:
    import yaml

    def fail(message: str, node: yaml.Node) -> DSLError:
        return DSLError(message, source=source, line=_line(node))

    if not isinstance(item, yaml.MappingNode):
        raise fail(f"item {index} must be a mapping with 'jobs' (and optionally targets, "
                   "async, name)", item)
    fields: dict[str, tuple[yaml.Node, yaml.Node]] = {}
    for key, value in item.value:
        if not (isinstance(key, yaml.ScalarNode) and key.tag == _STR):
            raise fail(f"item {index} has a key that is not a plain word", key)
        if key.value not in _ITEM_KEYS:
            raise fail(f"unknown key {key.value[:40]!r} in item {index}: expected "
                       f"{', '.join(_ITEM_KEYS)}", key)
        if key.value in fields:
            raise fail(f"key {key.value!r} appears twice in item {index}; keep one", key)
        fields[key.value] = (key, value)

    if "jobs" not in fields:
        raise fail(f"item {index} has no 'jobs': add 'jobs: [RUN: ...]'", item)
    jobs_key, jobs_node = fields["jobs"]
    if not isinstance(jobs_node, yaml.SequenceNode) or not jobs_node.value:
        raise fail(f"'jobs' in item {index} must be a non-empty list of {{VERB: ARGS}}",
                   jobs_node if isinstance(jobs_node, yaml.SequenceNode) else jobs_key)
    jobs = tuple(_parse_job(job, source) for job in jobs_node.value)

    targets: tuple[str, ...] = ()
    if "targets" in fields:
        node = fields["targets"][1]
        if not (isinstance(node, yaml.SequenceNode) and all(
                isinstance(t, yaml.ScalarNode) and t.tag == _STR and t.value for t in node.value)):
            raise fail(f"'targets' in item {index} must be a list of node names or globs "
                       "(strings)", node)
        targets = tuple(t.value for t in node.value)

    async_ = False
    if "async" in fields:
        node = fields["async"][1]
        value = None
        if isinstance(node, yaml.ScalarNode) and node.tag in (_BOOL, _STR):
            # a bool, or a string directord takes for one ("true", "no", ...)
            value = _ASYNC_WORDS.get(node.value.strip().lower())
        if value is None:
            raise fail(f"'async' in item {index} must be true or false", node)
        async_ = value

    name = None
    if "name" in fields:
        node = fields["name"][1]
        if not (isinstance(node, yaml.ScalarNode) and node.tag == _STR):
            raise fail(f"'name' in item {index} must be a string (quote it)", node)
        name = node.value
    return Step(jobs=jobs, targets=targets, async_=async_, name=name)


def _parse_job(job: yaml.Node, source: str) -> Instruction:
    import yaml

    line = _line(job)
    extra: dict[str, yaml.Node] = {}
    pairs = []
    for k, v in job.value if isinstance(job, yaml.MappingNode) else ():
        word = k.value if isinstance(k, yaml.ScalarNode) and k.tag == _STR else None
        if word in _JOB_KEYS and word not in extra:
            extra[word] = v
        else:
            pairs.append((k, v))
    if not (isinstance(job, yaml.MappingNode) and len(pairs) == 1):
        raise DSLError("each job must be a mapping with exactly one verb key (and optionally "
                       "name and vars): e.g. '- RUN: echo hello'", source=source, line=line)
    key, value = pairs[0]
    verb = key.value if isinstance(key, yaml.ScalarNode) and key.tag == _STR else ""
    if verb.upper() in verbs.UNSUPPORTED:
        raise DSLError(f"unsupported verb {verb.upper()} (directord)", source=source, line=line)
    if not _VERB_WORD_RE.fullmatch(verb) or verb.upper() not in verbs.TABLE:
        shown = verb[:40] if verb else "(not a word)"
        raise DSLError(f"unknown verb {shown!r}: expected one of {', '.join(verbs.names())}",
                       source=source, line=line)
    if isinstance(value, yaml.SequenceNode) and verbs.spec(verb.upper()).exec_form:
        # '- RUN: ["prog", "arg"]': the exec form written as a YAML list of strings
        if not all(isinstance(v, yaml.ScalarNode) and v.tag == _STR for v in value.value):
            raise DSLError(f"the exec form of {verb.upper()} is a list of strings: quote each",
                           source=source, line=_line(value))
        argv = json.dumps([v.value for v in value.value], ensure_ascii=False)
        return _with_job_keys(f"{verb} {argv}", extra, source, line)
    if not (isinstance(value, yaml.ScalarNode) and value.tag == _STR):
        raise DSLError(f"the arguments of {verb.upper()} must be a string: quote them, "
                       f"e.g. '{verb.upper()}: \"...\"'", source=source, line=_line(value))
    return _with_job_keys(f"{verb} {value.value}", extra, source, line)


def _with_job_keys(text: str, extra: dict[str, yaml.Node], source: str,
                   line: int) -> Instruction:
    """The job line with directord's per-job keys: ``name`` (a label, not used) and ``vars``
    (values for its options, e.g. ``stdout_arg``/``skip_cache``; the rest are ``vars`` in
    its templates)."""
    if not extra:
        return parse_line(text, source=source, line=line)
    import yaml

    name = extra.get("name")
    if name is not None and not (isinstance(name, yaml.ScalarNode) and name.tag == _STR):
        raise DSLError("a job's 'name' must be a string (quote it)", source=source,
                       line=_line(name))
    node = extra.get("vars")
    if node is None:
        return parse_line(text, source=source, line=line)
    try:
        values = yaml.SafeLoader("").construct_document(node)
    except (yaml.YAMLError, RecursionError):
        values = None
    if not isinstance(values, dict) or not all(isinstance(k, str) for k in values):
        raise DSLError("a job's 'vars' must be a mapping of names to values", source=source,
                       line=_line(node))
    verb = verbs.spec(text.split(None, 1)[0].upper())
    options = {o.name: o for o in (*verbs.COMMON_OPTIONS, *verb.options)}
    words, rest = [], {}
    for key, value in values.items():
        opt = options.get("--" + key.replace("_", "-"))
        if opt is None:
            rest[key] = value
        elif opt.check is None:  # a flag: on when true
            if value is True or str(value).lower() in ("true", "yes", "on", "1"):
                words.append(opt.name)
        else:
            words.append(f"{opt.name}={shlex.quote(str(value))}")
    head, _, tail = text.partition(" ")
    instr = parse_line(" ".join([head, *words, tail]), source=source, line=line)
    if rest:
        try:
            encoded = check_vars(json.dumps(plain_data(rest, _VARS_ITEMS), sort_keys=True))
        except (Invalid, ValueError) as exc:
            raise DSLError(f"a job's 'vars': {exc}", source=source, line=_line(node)) from None
        instr = dataclasses.replace(instr, vars=encoded)
    return instr
