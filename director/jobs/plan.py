"""Node-side resolution of ARG placeholders and the content hash that keys the job cache.

Pure functions: the node applies its ARG values to an Instruction, then hashes the result
together with its ENV and WORKDIR so that a job is answered from cache only when exactly
the same thing would run again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping

from director.errors import DSLError
from director.jobs.dsl import PLACEHOLDER_RE, Instruction, validate_chown
from director.jobs.verbs import TABLE

__all__ = ["HASH_VERSION", "substitute", "resolve", "job_hash"]

HASH_VERSION = 1  # bump when the hashed content changes, so old cache entries stop matching


def substitute(text: str, args: Mapping[str, str]) -> str:
    """Replace ``${NAME}`` / ``{{ NAME }}`` for names in ``args``; leave the rest for the shell.

    One pass only: a value that itself contains ``${X}`` is inserted as-is, never expanded.
    """
    if not _has_placeholder(text):
        return text

    def replace(match: re.Match[str]) -> str:
        name = match.group("a") or match.group("b")
        return args[name] if name in args else match.group(0)

    return PLACEHOLDER_RE.sub(replace, text)


def _has_placeholder(text: str) -> bool:
    return "${" in text or "{{" in text


def resolve(instr: Instruction, args: Mapping[str, str]) -> Instruction:
    """A copy with ARG values substituted into the fields its verb declares ``substituted``.

    The verb, options, names and chmod are never substituted.  A ``--chown`` that is not
    ``USER[:GROUP]`` once resolved (e.g. an ARG it names is unset) raises DSLError.
    """
    changes: dict[str, object] = {}
    for name in TABLE[instr.verb].substituted:
        value = getattr(instr, name)
        if isinstance(value, tuple):
            if any(_has_placeholder(v) for v in value):
                changes[name] = tuple(substitute(v, args) for v in value)
        elif value is not None and _has_placeholder(value):
            changes[name] = substitute(value, args)
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
    execution, so they are left out: changing them must not invalidate the cache.
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
        content[name] = list(value) if isinstance(value, tuple) else value
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.blake2b(canonical.encode("ascii"), digest_size=32).hexdigest()
