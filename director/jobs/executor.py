"""Running one instruction on the node: RUN, ARG, ENV, WORKDIR (COPY via transfer).

``begin`` is every decision before a process (resolve, cache, ARG/ENV/WORKDIR,
COPY) and ``conclude`` every one after it (status, cache, --stdout-arg), so the
node's event loop runs the process in between (``director.jobs.shell``);
``execute`` is the three in a row, blocking, with an injectable process runner.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from director.client.nodestate import CachedResult, JobCache, NodeState
from director.errors import DirectorError
from director.jobs.dsl import Instruction
from director.jobs.plan import job_hash, resolve
from director.jobs.shell import OUTPUT_CAP, RUNNING, Ran, kill_running, run_shell

__all__ = ["OUTPUT_CAP", "RUNNING", "TRUNCATED", "Outcome", "Pending", "Ran", "begin",
           "conclude", "execute", "kill_running", "run_shell"]
TRUNCATED = "\n[... output truncated at 1 MiB]"


@dataclass
class Outcome:
    status: str                     # success | failed | timeout | cancelled
    rc: int | None = None
    stdout: str = ""
    stderr: str = ""
    exec_time: float = 0.0
    cached: bool = False
    error: str = ""
    transfer: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_body(self) -> dict[str, Any]:
        body = {"status": self.status, "rc": self.rc, "stdout": self.stdout,
                "stderr": self.stderr, "exec_time": self.exec_time, "cached": self.cached}
        if self.error:
            body["error"] = self.error
        if self.transfer is not None:
            body["transfer"] = self.transfer
        return body


Runner = Callable[[str, str, "dict | None", float], Ran]


_ENV_CACHE: dict[frozenset, dict[bytes, bytes]] = {}


def _env_bytes(env: dict[str, str]) -> dict[bytes, bytes]:
    """The agent's environment plus ``env``, as bytes, built once per distinct ENV."""
    key = frozenset(env.items())
    built = _ENV_CACHE.get(key)
    if built is None:
        if len(_ENV_CACHE) > 64:
            _ENV_CACHE.clear()
        merged = {**os.environ, **env}
        built = _ENV_CACHE[key] = {os.fsencode(k): os.fsencode(v) for k, v in merged.items()}
    return built


def _text(data: bytes) -> str:
    if len(data) > OUTPUT_CAP:
        return data[:OUTPUT_CAP].decode("utf-8", "replace") + TRUNCATED
    return data.decode("utf-8", "replace")


@dataclass(frozen=True)
class Pending:
    """A RUN that passed every check and now needs its process (see ``conclude``)."""

    command: str
    workdir: str
    env: dict | None
    timeout: float
    hash: str
    stdout_arg: str | None
    started: float


def execute(instr: Instruction, state: NodeState, cache: JobCache, *,
            runner: Runner = run_shell, hash_extra: str = "",
            copier: Callable[[Instruction, str], Outcome] | None = None) -> Outcome:
    """Run one instruction with the node's current ARG/ENV/WORKDIR, blocking."""
    step = begin(instr, state, cache, hash_extra=hash_extra, copier=copier)
    if isinstance(step, Outcome):
        return step
    try:
        ran = runner(step.command, step.workdir, step.env, step.timeout)
    except OSError as exc:
        return spawn_failed(step, exc)
    return conclude(step, ran, state, cache)


def begin(instr: Instruction, state: NodeState, cache: JobCache, *, hash_extra: str = "",
          copier: Callable[[Instruction, str], Outcome] | None = None) -> Outcome | Pending:
    """Everything up to the process: ARG/ENV/WORKDIR, cache hits and COPY finish here;
    a RUN to spawn comes back as ``Pending`` so an event loop can run it."""
    start = time.perf_counter()
    args, env, workdir = state.snapshot()
    try:
        res = resolve(instr, args)
    except DirectorError as exc:
        return Outcome("failed", error=str(exc))
    if res.verb == "ARG":
        state.update(arg=(res.name, res.value))
        return Outcome("success", rc=0, exec_time=time.perf_counter() - start)
    if res.verb == "ENV":
        state.update(env=(res.name, res.value))
        return Outcome("success", rc=0, exec_time=time.perf_counter() - start)
    if res.verb == "WORKDIR":
        # Relative to the node's base work directory, not the previous WORKDIR, so
        # re-running an orchestration lands in the same place (idempotent).
        path = os.path.normpath(os.path.join(state.default_workdir, res.path))
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as exc:
            return Outcome("failed", error=f"WORKDIR {path}: {exc.strerror}")
        state.update(workdir=path)
        return Outcome("success", rc=0, exec_time=time.perf_counter() - start)
    h = job_hash(res, env=env, workdir=workdir, extra=hash_extra)
    if res.verb in ("COPY", "ADD"):
        return _copy(res, workdir, h, cache, copier)
    if not res.options.skip_cache:
        hit = cache.get(h)
        if hit is not None:
            if res.stdout_arg:
                state.update(arg=(res.stdout_arg, hit.stdout.strip()))
            return Outcome("success", rc=hit.rc, stdout=hit.stdout, stderr=hit.stderr,
                           cached=True, exec_time=time.perf_counter() - start)
    try:
        if not os.path.isdir(workdir):  # it may have been removed since WORKDIR
            os.makedirs(workdir, exist_ok=True)
    except OSError as exc:
        return Outcome("failed", error=f"WORKDIR {workdir}: {exc.strerror}",
                       exec_time=time.perf_counter() - start)
    # No ENV set: inherit ours (env=None); building an env makes subprocess encode
    # every variable on each spawn, a third of the agent's CPU per trivial job.
    return Pending(res.command, workdir, _env_bytes(env) if env else None,
                   res.options.timeout, h, res.stdout_arg, start)


def spawn_failed(step: Pending, exc: OSError) -> Outcome:
    return Outcome("failed", error=f"cannot run /bin/sh: {exc.strerror}",
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
        state.update(arg=(step.stdout_arg, out.strip()))
    return Outcome("success", rc=0, stdout=out, stderr=err, exec_time=elapsed)


def _copy(res: Instruction, workdir: str, h: str, cache: JobCache,
          copier: Callable[[Instruction, str], Outcome] | None) -> Outcome:
    """COPY always checks the destination; it counts as cached only when nothing moved."""
    if copier is None:
        return Outcome("failed", error="COPY/ADD is not available on this node")
    out = copier(res, workdir)
    if out.status == "success":
        t = out.transfer or {}
        untouched = t.get("skipped") == t.get("files") and not t.get("bytes_sent")
        out.cached = untouched and not res.options.skip_cache and cache.get(h) is not None
        cache.put(h, CachedResult(0, "", ""))
    return out
