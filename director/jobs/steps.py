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
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from director.jobs.rules import Invalid, check_unit, plain_data

__all__ = ["CachedResult", "Node", "Outcome", "Pending", "copy_files", "echo", "evict",
           "fetch_files", "load_cachefile", "make_workdir", "manage_service", "query",
           "run_command", "set_arg", "set_env"]

CACHEFILE_LIMIT = 1024 * 1024   # bytes of a CACHEFILE
_CACHEFILE_ITEMS = 100_000      # values (nested ones too) one CACHEFILE may hold


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
    placed: list[str] | None = None  # COPY/ADD: the files it put in place (not sent)


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
    stderr_arg: str | None = None


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
    scope: Any = None             # more values from nodes by name (``query``): data

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
    if res.chmod or res.chown:
        from director.errors import TransferError
        from director.transfer.placing import apply_attrs
        try:
            apply_attrs(Path(path), int(res.chmod, 8) if res.chmod else None, res.chown)
        except TransferError as exc:
            return Outcome("failed", error=f"WORKDIR {path}: {exc}")
    node.state.update(workdir=path)
    return node.done()


def echo(res: Any, node: Node) -> Outcome:
    out = node.done()
    out.stdout = res.value + "\n"
    return out


def query(res: Any, node: Node) -> Outcome:
    """QUERY: this node's value of NAME, as JSON on stdout (nothing when it is not set
    here: not a failure); never from the job cache, the value is read each time."""
    import json

    from director.protocol.answers import MAX_ANSWER

    args, node_args, _, _ = node.state.sourced()
    out = node.done()
    if res.name not in node_args and res.name not in args:
        return out
    value = node_args[res.name] if res.name in node_args else args[res.name]
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if len(text.encode("utf-8", "surrogatepass")) > MAX_ANSWER:
        return Outcome("failed", error=f"QUERY {res.name}: its value is larger than "
                       f"{MAX_ANSWER} bytes as JSON", exec_time=out.exec_time)
    out.stdout = text + "\n"
    return out


def evict(res: Any, node: Node) -> Outcome:
    """CACHEEVICT: ``all``, ``args``, ``envs``, ``jobs`` (the job cache) or one NAME."""
    what = res.name
    if what in ("all", "jobs"):
        node.cache.clear()
    if what != "jobs":
        node.state.evict(what)
    return node.done()


def load_cachefile(res: Any, node: Node) -> Outcome:
    """CACHEFILE: a YAML or JSON mapping on this node becomes its values (node data)."""
    path = os.path.join(node.workdir, res.path)
    try:
        with open(path, "rb") as f:
            data = f.read(CACHEFILE_LIMIT + 1)
    except OSError as exc:
        return Outcome("failed", error=f"CACHEFILE {path}: {exc.strerror}")
    if len(data) > CACHEFILE_LIMIT:
        return Outcome("failed", error=f"CACHEFILE {path}: larger than {CACHEFILE_LIMIT} bytes")
    try:
        values = _mapping(data)
    except ValueError as exc:
        return Outcome("failed", error=f"CACHEFILE {path}: {exc}")
    node.state.update(node_values=values)
    return node.done()


def _mapping(data: bytes) -> dict[str, Any]:
    import json

    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None
    try:
        if text.lstrip().startswith("{"):
            try:
                loaded = json.loads(text)
            except ValueError:
                loaded = _yaml(text)
        else:
            loaded = _yaml(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ValueError(f"expected a mapping of NAME: value, got a {type(loaded).__name__}")
    for key in loaded:
        if not isinstance(key, str) or not _NAME_RE.fullmatch(key):
            raise ValueError(f"{str(key)[:40]!r} is not a name (letters, digits and _)")
    return plain_data(loaded, _CACHEFILE_ITEMS)  # type: ignore[return-value]


def _yaml(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ValueError(f"invalid YAML{where}") from None


def run_command(res: Any, node: Node) -> Outcome | Pending:
    """A cache hit answers at once; otherwise the process to spawn, as ``Pending``."""
    return _process(res, node, res.argv or res.command, res.stdout_arg, res.stderr_arg)


def manage_service(res: Any, node: Node) -> Outcome | Pending:
    """SERVICE: systemctl with the units as arguments, never read by a shell.

    One systemctl is run directly; more (daemon-reload, enable, restart) run in order
    from a constant ``/bin/sh`` script that gets the units as its arguments (``"$@"``).
    """
    try:
        for unit in res.argv:
            check_unit("SERVICE", unit, templates=False)
    except Invalid as exc:
        return Outcome("failed", error=str(exc), exec_time=time.perf_counter() - node.started)
    flags = set(res.flags)
    actions = ["daemon-reload"] if "--daemon-reload" in flags else []
    state = [a for f, a in _SERVICE_STATE if f in flags]
    running = [a for f, a in _SERVICE_RUNNING if f in flags]
    if not running and not {"--disable", "--mask"} & flags:
        running = ["start"]
    calls = [(a,) for a in actions] + [(a, *res.argv) for a in state + running]
    if len(calls) == 1:
        command: tuple[str, ...] = ("systemctl", *calls[0])
    else:
        script = " && ".join("systemctl " + (c[0] if len(c) == 1 else f'{c[0]} "$@"')
                             for c in calls)
        command = ("/bin/sh", "-c", script, "sh", *res.argv)
    return _process(res, node, command, None, None)


_SERVICE_STATE = (("--enable", "enable"), ("--disable", "disable"), ("--mask", "mask"),
                  ("--unmask", "unmask"))
_SERVICE_RUNNING = (("--restarted", "restart"), ("--stopped", "stop"), ("--reloaded", "reload"))


def _process(res: Any, node: Node, command: str | tuple[str, ...], stdout_arg: str | None,
             stderr_arg: str | None) -> Outcome | Pending:
    h = node.job_hash()
    if not res.options.skip_cache:
        hit = node.cache.get(h)
        if hit is not None:
            if stdout_arg:
                node.state.update(node_arg=(stdout_arg, hit.stdout.strip()))
            if stderr_arg:
                node.state.update(node_arg=(stderr_arg, hit.stderr.strip()))
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
    return Pending(command, workdir, _env_bytes(node.env) if node.env else None,
                   res.options.timeout, h, stdout_arg, node.started, stderr_arg)


def copy_files(res: Any, node: Node) -> Outcome:
    """COPY always checks the destination; it counts as cached only when nothing moved."""
    if node.copier is None:
        return Outcome("failed", error="COPY/ADD is not available on this node")
    h = node.job_hash()
    out = node.copier(res, node.workdir)
    if out.status == "success" and "--blueprint" in res.flags:
        error = _blueprint(res, node, out.placed or [])
        if error:
            return Outcome("failed", error=error, transfer=out.transfer,
                           exec_time=time.perf_counter() - node.started)
    out.placed = None
    if out.status == "success":
        t = out.transfer or {}
        untouched = t.get("skipped") == t.get("files") and not t.get("bytes_sent")
        out.cached = untouched and not res.options.skip_cache and node.cache.get(h) is not None
        node.cache.put(h, CachedResult(0, "", ""))
    return out


def fetch_files(res: Any, node: Node) -> Outcome:
    """GET: the node's files go to the server (client/sending.py); never cached, since
    only the server knows what it already has."""
    if node.copier is None:
        return Outcome("failed", error="GET is not available on this node")
    return node.copier(res, node.workdir)


_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
def _blueprint(res: Any, node: Node, paths: list[str]) -> str:
    """ADD --blueprint: each placed file rendered as a template with this node's values
    (its text replaced atomically, keeping mode and owner).  Returns an error or ""."""
    import json
    import tempfile

    from director.errors import DSLError
    from director.jobs.templates import MAX_OUTPUT, render_text

    args, node_args, _, _ = node.state.sourced()
    values: dict[str, Any] = {**args, **node_args, **(node.scope or {})}
    if res.vars:
        values["vars"] = json.loads(res.vars)
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            with os.fdopen(fd, "rb") as f:
                st = os.fstat(f.fileno())
                data = f.read(MAX_OUTPUT + 1)
            if len(data) > MAX_OUTPUT:
                return f"--blueprint {path}: larger than {MAX_OUTPUT} bytes"
            text = render_text(data.decode("utf-8"), values, f"--blueprint {path}")
            tmp_fd, tmp = tempfile.mkstemp(prefix=".director-tmp-", dir=os.path.dirname(path))
            try:
                with os.fdopen(tmp_fd, "wb") as f:
                    f.write(text.encode("utf-8"))
                    os.fchmod(f.fileno(), st.st_mode & 0o7777)
                    if (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
                        os.fchown(f.fileno(), st.st_uid, st.st_gid)
                os.replace(tmp, path)
            except BaseException:
                os.unlink(tmp)
                raise
        except UnicodeDecodeError:
            return f"--blueprint {path}: not UTF-8 text"
        except DSLError as exc:
            return exc.message
        except OSError as exc:
            return f"--blueprint {path}: {exc.strerror}"
    return ""


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
