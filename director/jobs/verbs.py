"""The verb table: everything about a verb is one ``Verb`` entry in ``TABLE``.

An entry says how a line of the verb parses, which Instruction fields it carries on
the wire and how they are checked there, which of them go into the job hash and take
``${NAME}`` substitution, how it prints, what the node does for it (a function in
``steps``), and whether the server must build a file manifest for it.  ``dsl``,
``plan`` and ``executor`` consult the table; none of them names a verb.

Outside ``jobs/``, ask the table instead of naming verbs:

    from director.jobs import verbs
    verbs.spec(instr.verb).transfers   # True for COPY/ADD: the server builds a manifest
    verbs.spec(instr.verb).sends       # True for GET: the node sends files to the server
    verbs.names()                      # every verb, in table order

Adding a verb: one ``Verb(...)`` in ``TABLE`` plus its step function.  It can use the
existing Instruction fields (``PAYLOAD_FIELDS``); a verb needing a new kind of argument
also adds that field to ``dsl.Instruction``.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the node steps load when a node first runs one: the CLI never does
    from director.jobs import steps
from director.jobs.rules import (Invalid, check_chmod, check_chown, check_name, check_timeout,
                                 check_unit, name_value, split_paths)

__all__ = ["COMMON_OPTIONS", "PAYLOAD_FIELDS", "TABLE", "UNSUPPORTED", "Option", "Verb", "names",
           "spec"]

# The Instruction fields that carry a verb's arguments (the rest: verb, options, line,
# source, text, are the same for every verb).
PAYLOAD_FIELDS = ("command", "argv", "stdout_arg", "sources", "dest", "chmod", "chown", "name",
                  "value", "path", "stderr_arg", "flags")
# directord verbs director refuses by name (a clear line, not "unknown verb").
UNSUPPORTED = ("FACTER", "CONTAINER_IMAGE", "POD")


@dataclass(frozen=True)
class Option:
    """``--name VALUE`` (or a bare flag when ``check`` is None) and the field it sets.

    A bare flag whose field is ``flags`` is collected, by name, into that tuple.
    """

    name: str
    field: str
    check: Callable[[str], str] | None = None   # returns the value or raises Invalid
    example: str = ""


@dataclass(frozen=True)
class Verb:
    name: str
    parse: Callable[[str, str], dict[str, Any]]  # (verb, text after the options) -> fields
    check: Callable[[str, Mapping[str, Any]], None]  # wire rules on the decoded fields
    describe: Callable[[Any], str]               # the arguments part of Instruction.describe
    execute: Callable[[Any, steps.Node], steps.Outcome | steps.Pending]  # node side
    fields: tuple[str, ...]                      # PAYLOAD_FIELDS it uses (options' too)
    hash_fields: tuple[str, ...]                 # what decides the job: keys the node's cache
    substituted: tuple[str, ...] = ()            # fields where ${NAME} is replaced by ARGs
    shell: tuple[str, ...] = ()                  # of those, the ones /bin/sh reads: a value
                                                 # from a node is shell-quoted there
    options: tuple[Option, ...] = ()             # its own options, after the common ones
    transfers: bool = False                      # the server builds a file manifest for it
    sends: bool = False                          # the node sends files to the server (GET)
    exec_form: bool = False                      # takes a JSON array of strings (argv); YAML
                                                 # may give it as a list
    check_flags: Callable[[str, tuple[str, ...]], None] = lambda verb, flags: None
    foreign: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Fields this verb must leave at their defaults; precomputed for from_dict.
        object.__setattr__(self, "foreign",
                           tuple(f for f in PAYLOAD_FIELDS if f not in self.fields))


COMMON_OPTIONS = (
    Option("--timeout", "timeout", check_timeout, "60"),
    Option("--skip-cache", "skip_cache"),
    Option("--run-once", "run_once"),
)
_STDOUT_ARG = Option("--stdout-arg", "stdout_arg", lambda v: check_name("--stdout-arg", v),
                     "NAME")
_CHMOD = Option("--chmod", "chmod", check_chmod, "0644")
_CHOWN = Option("--chown", "chown", check_chown, "user:group")
_STDERR_ARG = Option("--stderr-arg", "stderr_arg", lambda v: check_name("--stderr-arg", v),
                     "NAME")
_BLUEPRINT = Option("--blueprint", "flags")


def _parse_command(verb: str, rest: str) -> dict[str, Any]:
    """``COMMAND`` for ``/bin/sh -c``, or the exec form: a JSON array of strings (argv).

    As in a Containerfile, text that starts with ``[`` but is not a JSON array is a shell
    command (``[ -f x ] && ...``); a JSON array of anything but strings is an error.
    """
    if not rest:
        raise Invalid(f"{verb} needs a command: e.g. {verb} echo hello")
    if rest.startswith("["):
        try:
            argv = json.loads(rest, parse_constant=_no_constant)
        except ValueError:
            argv = None
        if isinstance(argv, list):
            _check_argv(verb, argv)
            return {"command": "", "argv": tuple(argv)}
    return {"command": rest, "argv": ()}


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _check_argv(verb: str, argv: Any) -> None:
    if not argv:
        raise Invalid(f'{verb} exec form needs a program: e.g. {verb} ["echo", "hello"]')
    if not all(isinstance(a, str) for a in argv):
        raise Invalid(f'{verb} exec form must be a JSON array of strings: e.g. '
                      f'{verb} ["echo", "hello"]')
    if not argv[0]:
        raise Invalid(f"{verb} exec form needs a program name as its first element")


def _check_command(verb: str, d: Mapping[str, Any]) -> None:
    argv = d.get("argv") or ()
    if argv:
        _check_argv(verb, argv)
        if d["command"]:
            raise Invalid(f"{verb} takes either 'command' or 'argv', not both")
    elif not d["command"].strip():
        raise Invalid(f"{verb} needs a non-empty 'command'")


def _describe_command(i: Any) -> str:
    if i.argv:
        return json.dumps(list(i.argv), ensure_ascii=False)
    return i.command


def _parse_copy(verb: str, rest: str) -> dict[str, Any]:
    paths = split_paths(verb, rest)
    if len(paths) < 2:
        raise Invalid(f"{verb} needs at least one source and a destination: {verb} SRC... DEST")
    if "" in paths:
        raise Invalid(f"{verb} got an empty path (''); give real file names")
    return {"sources": tuple(paths[:-1]), "dest": paths[-1]}


def _check_copy(verb: str, d: Mapping[str, Any]) -> None:
    if not d["sources"] or "" in d["sources"] or not d["dest"]:
        raise Invalid(f"{verb} needs non-empty 'sources' and 'dest'")


def _parse_name_value(verb: str, rest: str) -> dict[str, Any]:
    name, value = name_value(verb, rest)
    return {"name": name, "value": value}


def _check_name_value(verb: str, d: Mapping[str, Any]) -> None:
    check_name(verb, d["name"])


def _parse_path(verb: str, rest: str) -> dict[str, Any]:
    paths = split_paths(verb, rest)
    if len(paths) != 1:
        raise Invalid(f"{verb} takes exactly one path, got {len(paths)}; "
                      "quote a path with spaces")
    if not paths[0]:
        raise Invalid(f"{verb} got an empty path (''); give a directory")
    return {"path": paths[0]}


def _check_path(verb: str, d: Mapping[str, Any]) -> None:
    if not d["path"]:
        raise Invalid(f"{verb} needs a non-empty 'path'")


def _copy_entry(name: str) -> Verb:
    return Verb(name, _parse_copy, _check_copy,
                lambda i: shlex.join((*i.sources, i.dest)), _node_step("copy_files"),
                fields=("sources", "dest", "chmod", "chown", "flags"),
                hash_fields=("sources", "dest", "chmod", "chown", "flags"),
                substituted=("sources", "dest", "chown"), options=(_CHMOD, _CHOWN, _BLUEPRINT),
                transfers=True)


def _node_step(name: str) -> Callable[..., Any]:
    """``jobs.steps.NAME``, imported on its first call (on a node, never by the CLI)."""
    def run(instr: Any, node: Any) -> Any:
        from director.jobs import steps as node_steps

        return getattr(node_steps, name)(instr, node)
    run.__name__ = name
    return run


def _name_value_entry(name: str, execute: Callable[[Any, steps.Node], steps.Outcome]) -> Verb:
    return Verb(name, _parse_name_value, _check_name_value, lambda i: f"{i.name}={i.value}",
                execute, fields=("name", "value"), hash_fields=("name", "value"),
                substituted=("value",))

# SERVICE: one flag of each group at most; the unit names are systemctl's arguments.
SERVICE_RUNNING = ("--restarted", "--stopped", "--reloaded")
SERVICE_STATE = ("--enable", "--disable", "--mask", "--unmask")
SERVICE_FLAGS = (*SERVICE_RUNNING, "--daemon-reload", *SERVICE_STATE)


def _check_service_flags(verb: str, flags: tuple[str, ...]) -> None:
    for group in (SERVICE_RUNNING, SERVICE_STATE):
        given = [f for f in flags if f in group]
        if len(given) > 1:
            raise Invalid(f"{verb} takes one of {', '.join(group)}, not {' and '.join(given)}")


def _parse_units(verb: str, rest: str) -> dict[str, Any]:
    units = split_paths(verb, rest)
    if not units:
        raise Invalid(f"{verb} needs at least one unit: e.g. {verb} --restarted nginx.service")
    for unit in units:
        check_unit(verb, unit)
    return {"argv": tuple(units)}


def _check_units(verb: str, d: Mapping[str, Any]) -> None:
    if not d["argv"]:
        raise Invalid(f"{verb} needs at least one unit in 'argv'")
    for unit in d["argv"]:
        check_unit(verb, unit)


def _parse_evict(verb: str, rest: str) -> dict[str, Any]:
    words = rest.split()
    if len(words) != 1:
        raise Invalid(f"{verb} takes one NAME (an ARG or ENV name), or all, args, envs, jobs")
    check_name(verb, words[0])
    return {"name": words[0]}


def _check_evict(verb: str, d: Mapping[str, Any]) -> None:
    check_name(verb, d["name"])


def _parse_query(verb: str, rest: str) -> dict[str, Any]:
    words = rest.split()
    if len(words) != 1:
        raise Invalid(f"{verb} takes one NAME (an ARG of the targets): e.g. {verb} address")
    check_name(verb, words[0])
    return {"name": words[0]}


TABLE: dict[str, Verb] = {v.name: v for v in (
    Verb("RUN", _parse_command, _check_command, _describe_command, _node_step("run_command"),
         fields=("command", "argv", "stdout_arg", "stderr_arg"),
         # an empty argv and an unset stderr_arg are not hashed
         hash_fields=("command", "argv", "stdout_arg", "stderr_arg"),
         substituted=("command", "argv"), shell=("command",), options=(_STDOUT_ARG, _STDERR_ARG),
         exec_form=True),
    _copy_entry("COPY"),
    _copy_entry("ADD"),
    _name_value_entry("ARG", _node_step("set_arg")),
    _name_value_entry("ENV", _node_step("set_env")),
    Verb("WORKDIR", _parse_path, _check_path, lambda i: i.path, _node_step("make_workdir"),
         fields=("path", "chmod", "chown"), hash_fields=("path", "chmod", "chown"),
         substituted=("path", "chown"), options=(_CHMOD, _CHOWN)),
    Verb("SERVICE", _parse_units, _check_units, lambda i: shlex.join(i.argv),
         _node_step("manage_service"), fields=("argv", "flags"), hash_fields=("argv", "flags"),
         substituted=("argv",), options=tuple(Option(f, "flags") for f in SERVICE_FLAGS),
         check_flags=_check_service_flags),
    Verb("ECHO", lambda verb, rest: {"value": rest}, lambda verb, d: None, lambda i: i.value,
         _node_step("echo"), fields=("value",), hash_fields=("value",), substituted=("value",)),
    Verb("CACHEFILE", _parse_path, _check_path, lambda i: i.path, _node_step("load_cachefile"),
         fields=("path",), hash_fields=("path",), substituted=("path",)),
    Verb("CACHEEVICT", _parse_evict, _check_evict, lambda i: i.name, _node_step("evict"),
         fields=("name",), hash_fields=("name",)),
    # GET: DEST_DIR is the server's (the CLI makes it absolute); only the sources are
    # the node's, so only they take ${NAME}
    Verb("GET", _parse_copy, _check_copy, lambda i: shlex.join((*i.sources, i.dest)),
         _node_step("fetch_files"), fields=("sources", "dest"), hash_fields=("sources", "dest"),
         substituted=("sources",), sends=True),
    # QUERY: each target answers its value of NAME; later jobs see them (server/queries.py)
    Verb("QUERY", _parse_query, _check_evict, lambda i: i.name, _node_step("query"),
         fields=("name",), hash_fields=("name",)),
)}


def spec(name: str) -> Verb:
    """The entry of verb ``name`` (as on an Instruction: upper case); KeyError if none."""
    return TABLE[name]


def names() -> tuple[str, ...]:
    return tuple(TABLE)
