"""Running one instruction on the node: ``begin`` resolves it and hands it to its verb's step.

``begin`` is every decision before a process (resolve, then the verb's step from
``verbs.TABLE``: ARG/ENV/WORKDIR, cache hits and COPY finish there) and ``conclude``
every one after it (status, cache, --stdout-arg), so the node's event loop runs the
process in between (``director.jobs.shell``); ``execute`` is the three in a row,
blocking, with an injectable process runner.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Callable

from director.errors import DirectorError
from director.jobs.dsl import Instruction
from director.jobs.nodestate import JobCache, NodeState
from director.jobs.plan import job_hash, resolve, uses_node_values
from director.jobs.shell import OUTPUT_CAP, Ran, kill_running, run_shell
from director.jobs.steps import CachedResult, Node, Outcome, Pending
from director.jobs.verbs import TABLE

__all__ = ["OUTPUT_CAP", "TRUNCATED", "Outcome", "Pending", "Ran", "begin", "conclude",
           "execute", "kill_running", "run_shell", "spawn_failed"]
TRUNCATED = "\n[... output truncated at 1 MiB]"
_NO_SCOPE: Mapping[str, Any] = {}

Runner = Callable[["str | tuple[str, ...]", str, "dict | None", float], Ran]
Copier = Callable[[Instruction, str], Outcome]


def _text(data: bytes) -> str:
    if len(data) > OUTPUT_CAP:
        return data[:OUTPUT_CAP].decode("utf-8", "replace") + TRUNCATED
    return data.decode("utf-8", "replace")


def execute(instr: Instruction, state: NodeState, cache: JobCache, *,
            runner: Runner = run_shell, hash_extra: str = "",
            copier: Copier | None = None, scope: Mapping[str, Any] | None = None) -> Outcome:
    """Run one instruction with the node's current ARG/ENV/WORKDIR, blocking."""
    step = begin(instr, state, cache, hash_extra=hash_extra, copier=copier, scope=scope)
    if isinstance(step, Outcome):
        return step
    try:
        ran = runner(step.command, step.workdir, step.env, step.timeout)
    except OSError as exc:
        return spawn_failed(step, exc)
    return conclude(step, ran, state, cache)


def begin(instr: Instruction, state: NodeState, cache: JobCache, *, hash_extra: str = "",
          copier: Copier | None = None,
          scope: Mapping[str, Any] | None = None) -> Outcome | Pending:
    """Everything up to the process: the verb's step either finishes the job (an
    ``Outcome``) or returns the RUN to spawn as ``Pending`` so an event loop can run it.

    ``scope``: more values from nodes that templates see by name (``query``, ``facts``);
    they are data, like the node's own ``--stdout-arg`` values.
    """
    start = time.perf_counter()
    args, node_args, env, workdir = state.sourced()
    scope = scope or _NO_SCOPE
    try:
        res = resolve(instr, args, node_args, scope)
    except DirectorError as exc:
        return Outcome("failed", error=str(exc))
    return TABLE[res.verb].execute(res, Node(
        state, cache, env, workdir, start,
        lambda: job_hash(res, env=env, workdir=workdir, extra=hash_extra), copier,
        uses_node_values(instr, node_args, scope), scope))


def spawn_failed(step: Pending, exc: OSError) -> Outcome:
    prog = "/bin/sh" if isinstance(step.command, str) else repr(step.command[0])
    return Outcome("failed", error=f"cannot run {prog}: {exc.strerror}",
                   exec_time=time.perf_counter() - step.started)


def conclude(step: Pending, ran: Ran, state: NodeState, cache: JobCache) -> Outcome:
    """The outcome of a finished RUN; a success is cached (and may set an ARG)."""
    out, err = _text(ran.stdout), _text(ran.stderr)
    elapsed = time.perf_counter() - step.started
    if ran.timed_out:
        return Outcome("timeout", rc=ran.rc, stdout=out, stderr=err, exec_time=elapsed,
                       error=f"timed out after {step.timeout:g} s; process group killed")
    if ran.rc != 0:
        return Outcome("failed", rc=ran.rc, stdout=out, stderr=err, exec_time=elapsed)
    cache.put(step.hash, CachedResult(0, out, err))
    if step.stdout_arg:
        state.update(node_arg=(step.stdout_arg, out.strip()))
    if step.stderr_arg:
        state.update(node_arg=(step.stderr_arg, err.strip()))
    return Outcome("success", rc=0, stdout=out, stderr=err, exec_time=elapsed)
