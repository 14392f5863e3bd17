"""What each verb does on the node once its instruction is resolved (``verbs`` points here).

A step gets the resolved Instruction and a ``Node`` (the node's state, cache and copier
plus this job's ENV, WORKDIR and start time) and returns an ``Outcome`` when it is done
or a ``Pending`` when a process must run (``executor.conclude`` finishes it).  No
process, socket or database is touched here: steps see NodeState and JobCache only
through the methods they call, so the wire-facing DSL that imports the verb table stays
free of I/O imports.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["CachedResult", "Node", "Outcome", "Pending", "copy_files", "make_workdir",
           "run_command", "set_arg", "set_env"]


@dataclass
class Outcome:
    """How a job ended on this node (the agent turns it into a RESULT)."""

    status: str                     # success | failed | timeout | cancelled
    rc: int | None = None
    stdout: str = ""
    stderr: str = ""
    exec_time: float = 0.0
    cached: bool = False
    error: str = ""
    transfer: dict[str, Any] | None = None


@dataclass(frozen=True)
class Pending:
    """A RUN that passed every check and now needs its process (see ``executor.conclude``)."""

    command: str | tuple[str, ...]  # /bin/sh -c text, or argv (exec form: no shell)
    workdir: str
    env: dict | None
    timeout: float
    hash: str
    stdout_arg: str | None
    started: float


@dataclass(frozen=True)
class CachedResult:
    rc: int
    stdout: str
    stderr: str


@dataclass(slots=True)
class Node:
    """The node around one job: ``state``/``cache`` are NodeState/JobCache (duck-typed)."""

    state: Any
    cache: Any
    env: dict[str, str]
    workdir: str
    started: float
    job_hash: Callable[[], str]   # the job's content hash, computed only by steps that need it
    copier: Callable[[Any, str], Outcome] | None
    from_node: bool = False       # the job's resolved fields hold a value from a node

    def done(self) -> Outcome:
        return Outcome("success", rc=0, exec_time=time.perf_counter() - self.started)


def set_arg(res: Any, node: Node) -> Outcome:
    # An ARG built from a node's value is a node value too: it stays data.
    if node.from_node:
        node.state.update(node_arg=(res.name, res.value))
    else:
        node.state.update(arg=(res.name, res.value))
    return node.done()


def set_env(res: Any, node: Node) -> Outcome:
    node.state.update(env=(res.name, res.value))
    return node.done()


def make_workdir(res: Any, node: Node) -> Outcome:
    # Relative to the node's base work directory, not the previous WORKDIR, so
    # re-running an orchestration lands in the same place (idempotent).
    path = os.path.normpath(os.path.join(node.state.default_workdir, res.path))
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        return Outcome("failed", error=f"WORKDIR {path}: {exc.strerror}")
    node.state.update(workdir=path)
    return node.done()


def run_command(res: Any, node: Node) -> Outcome | Pending:
    """A cache hit answers at once; otherwise the process to spawn, as ``Pending``."""
    h = node.job_hash()
    if not res.options.skip_cache:
        hit = node.cache.get(h)
        if hit is not None:
            if res.stdout_arg:
                node.state.update(node_arg=(res.stdout_arg, hit.stdout.strip()))
            return Outcome("success", rc=hit.rc, stdout=hit.stdout, stderr=hit.stderr,
                           cached=True, exec_time=time.perf_counter() - node.started)
    workdir = node.workdir
    try:
        if not os.path.isdir(workdir):  # it may have been removed since WORKDIR
            os.makedirs(workdir, exist_ok=True)
    except OSError as exc:
        return Outcome("failed", error=f"WORKDIR {workdir}: {exc.strerror}",
                       exec_time=time.perf_counter() - node.started)
    # No ENV set: inherit ours (env=None); building an env makes subprocess encode
    # every variable on each spawn, a third of the agent's CPU per trivial job.
    return Pending(res.argv or res.command, workdir, _env_bytes(node.env) if node.env else None,
                   res.options.timeout, h, res.stdout_arg, node.started)


def copy_files(res: Any, node: Node) -> Outcome:
    """COPY always checks the destination; it counts as cached only when nothing moved."""
    if node.copier is None:
        return Outcome("failed", error="COPY/ADD is not available on this node")
    h = node.job_hash()
    out = node.copier(res, node.workdir)
    if out.status == "success":
        t = out.transfer or {}
        untouched = t.get("skipped") == t.get("files") and not t.get("bytes_sent")
        out.cached = untouched and not res.options.skip_cache and node.cache.get(h) is not None
        node.cache.put(h, CachedResult(0, "", ""))
    return out


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
