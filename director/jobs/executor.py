"""Running one instruction on the node: RUN, ARG, ENV, WORKDIR (COPY via transfer).

``execute`` is the whole decision (resolve, cache, run, record); the process
runner is injected so the logic is testable with a fake, while the real one
runs ``/bin/sh -c`` in its own process group and kills the whole group on
timeout.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from director.client.nodestate import CachedResult, JobCache, NodeState
from director.errors import DirectorError
from director.jobs.dsl import Instruction
from director.jobs.plan import job_hash, resolve

OUTPUT_CAP = 1024 * 1024
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


@dataclass(frozen=True)
class Ran:
    rc: int | None
    stdout: bytes
    stderr: bytes
    timed_out: bool


Runner = Callable[[str, str, "dict | None", float], Ran]


RUNNING: set[int] = set()  # process groups of RUNs in progress, killed when the agent stops


def kill_running() -> None:
    for pgid in list(RUNNING):
        _killpg(pgid)


def run_shell(command: str, cwd: str, env: dict | None, timeout: float) -> Ran:
    """``/bin/sh -c`` in a new session; on timeout SIGKILL the whole process group."""
    proc = subprocess.Popen(["/bin/sh", "-c", command], cwd=cwd, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    RUNNING.add(proc.pid)
    try:
        return _wait(proc, timeout)
    finally:
        RUNNING.discard(proc.pid)


def _wait(proc: subprocess.Popen, timeout: float) -> Ran:
    """Read both pipes and wait for exit on one selector, with the deadline.

    ``communicate(timeout=...)`` reaps the child by polling with sleeps, which
    costs about a millisecond a job; a pidfd makes the exit itself an event.
    Output beyond the cap is read and dropped, so memory stays bounded.
    """
    out, err = bytearray(), bytearray()
    bufs = {proc.stdout.fileno(): out, proc.stderr.fileno(): err}
    sel = selectors.DefaultSelector()
    for fd in bufs:
        sel.register(fd, selectors.EVENT_READ)
    try:
        pidfd = os.pidfd_open(proc.pid)
        sel.register(pidfd, selectors.EVENT_READ)
    except (AttributeError, OSError):
        pidfd = None
    deadline = time.monotonic() + timeout
    timed_out = False
    try:
        while bufs:
            left = deadline - time.monotonic()
            if left <= 0:
                if timed_out:  # a grandchild outside the group still holds a pipe
                    break
                timed_out = True
                _killpg(proc.pid)
                deadline = time.monotonic() + 5.0
                continue
            for key, _ in sel.select(left):
                fd = key.fd
                if fd == pidfd:
                    sel.unregister(fd)
                    continue
                data = os.read(fd, 65536)
                if not data:
                    sel.unregister(fd)
                    del bufs[fd]
                elif len(bufs[fd]) <= OUTPUT_CAP:
                    bufs[fd] += data
    finally:
        sel.close()
        if pidfd is not None:
            os.close(pidfd)
        proc.stdout.close()
        proc.stderr.close()
    try:
        rc = proc.wait(timeout=5 if timed_out else None)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = proc.wait()
    return Ran(rc, bytes(out), bytes(err), timed_out)


def _killpg(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


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


def execute(instr: Instruction, state: NodeState, cache: JobCache, *,
            runner: Runner = run_shell, hash_extra: str = "",
            copier: Callable[[Instruction, str], Outcome] | None = None) -> Outcome:
    """Run one instruction with the node's current ARG/ENV/WORKDIR."""
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
    full_env = _env_bytes(env) if env else None
    try:
        ran = runner(res.command, workdir, full_env, res.options.timeout)
    except OSError as exc:
        return Outcome("failed", error=f"cannot run /bin/sh: {exc.strerror}",
                       exec_time=time.perf_counter() - start)
    out, err = _text(ran.stdout), _text(ran.stderr)
    elapsed = time.perf_counter() - start
    if ran.timed_out:
        return Outcome("timeout", rc=ran.rc, stdout=out, stderr=err, exec_time=elapsed,
                       error=f"timed out after {res.options.timeout:g} s; process group killed")
    if ran.rc != 0:
        return Outcome("failed", rc=ran.rc, stdout=out, stderr=err, exec_time=elapsed)
    cache.put(h, CachedResult(0, out, err))
    if res.stdout_arg:
        state.update(arg=(res.stdout_arg, out.strip()))
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
