"""What a node remembers between jobs and restarts: ARG/ENV/WORKDIR and its job cache.

Both live in the node's home.  The job cache is an LRU (cachetools) in memory,
written through to SQLite in batches so a busy node does not commit per job.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cachetools import LRUCache

from director.jobs.steps import CachedResult
from director.trust.keystore import write_private_file

__all__ = ["CachedResult", "JobCache", "NodeState"]


class NodeState:
    """ARG values, ENV values and the WORKDIR, persisted atomically on change.

    ARG values are kept in two sets: ``args`` the operator wrote (``ARG NAME=VALUE``) and
    ``node_args`` that came from a node (``--stdout-arg``/``--stderr-arg``, CACHEFILE; an
    ARG built from one), which are data: ``plan.resolve`` quotes them for the shell.  A
    name is in one set at a time: setting it in one removes it from the other.  Node values
    are text, except CACHEFILE's, which may be numbers, lists and mappings.
    """

    def __init__(self, home: Path, path: Path | None = None):
        self.path = path or home / "state.json"
        self.default_workdir = str(home / "work")
        self.lock = threading.Lock()
        self.args: dict[str, str] = {}
        self.node_args: dict[str, Any] = {}
        self.env: dict[str, str] = {}
        self.workdir = self.default_workdir
        if self.path.exists():
            try:
                data = json.loads(self.path.read_text())
                self.args = {str(k): str(v) for k, v in data.get("args", {}).items()}
                self.node_args = {str(k): v for k, v in data.get("node_args", {}).items()}
                for name in self.node_args:
                    self.args.pop(name, None)
                self.env = {str(k): str(v) for k, v in data.get("env", {}).items()}
                self.workdir = str(data.get("workdir") or self.default_workdir)
            except (OSError, ValueError, AttributeError):
                pass  # a damaged state file starts clean rather than stopping the node

    def snapshot(self) -> tuple[dict[str, Any], dict[str, str], str]:
        """Every ARG value (both sets together), ENV and WORKDIR."""
        with self.lock:
            return {**self.args, **self.node_args}, dict(self.env), self.workdir

    def sourced(self) -> tuple[dict[str, str], dict[str, Any], dict[str, str], str]:
        """The operator's ARG values, the node's, ENV and WORKDIR, read together."""
        with self.lock:
            return dict(self.args), dict(self.node_args), dict(self.env), self.workdir

    def update(self, *, arg: tuple[str, str] | None = None, env: tuple[str, str] | None = None,
               workdir: str | None = None, node_arg: tuple[str, str] | None = None,
               node_values: Mapping[str, Any] | None = None) -> None:
        """Set an operator ARG (``arg``), node-sourced ones (``node_arg``, ``node_values``),
        ENV, WORKDIR."""
        with self.lock:
            if arg:
                self.args[arg[0]] = arg[1]
                self.node_args.pop(arg[0], None)
            for name, value in (*(node_values or {}).items(), *([node_arg] if node_arg else [])):
                self.node_args[name] = value
                self.args.pop(name, None)
            if env:
                self.env[env[0]] = env[1]
            if workdir:
                self.workdir = workdir
            self._write()

    def evict(self, what: str) -> None:
        """CACHEEVICT: ``all`` (ARG and ENV values, WORKDIR), ``args``, ``envs`` or one name."""
        with self.lock:
            if what in ("all", "args"):
                self.args.clear()
                self.node_args.clear()
            if what in ("all", "envs"):
                self.env.clear()
            if what == "all":
                self.workdir = self.default_workdir
            for values in (self.args, self.node_args, self.env):
                values.pop(what, None)
            self._write()

    def _write(self) -> None:
        data = {"args": self.args, "node_args": self.node_args, "env": self.env,
                "workdir": self.workdir}
        write_private_file(self.path, json.dumps(data).encode())


class JobCache:
    """Job hash -> result of a job that succeeded; bounded, survives restarts."""

    def __init__(self, path: Path, maxsize: int = 10000):
        self.lock = threading.Lock()
        self.lru: LRUCache = LRUCache(maxsize=maxsize)
        self.pending: dict[str, CachedResult] = {}
        self.conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("CREATE TABLE IF NOT EXISTS cache (hash TEXT PRIMARY KEY, rc INTEGER,"
                          " stdout TEXT, stderr TEXT, at REAL DEFAULT (julianday('now')))")
        rows = self.conn.execute(
            "SELECT hash, rc, stdout, stderr FROM cache ORDER BY at DESC, rowid DESC LIMIT ?",
            (maxsize,))
        for h, rc, out, err in reversed(rows.fetchall()):
            self.lru[h] = CachedResult(rc, out, err)

    def get(self, h: str) -> CachedResult | None:
        with self.lock:
            return self.lru.get(h)

    def put(self, h: str, result: CachedResult) -> None:
        with self.lock:
            self.lru[h] = result
            self.pending.pop(h, None)  # re-put: written last, so it counts as newest
            self.pending[h] = result

    def clear(self) -> None:
        """Forget every cached result (CACHEEVICT jobs/all)."""
        with self.lock:
            self.lru.clear()
            self.pending.clear()
            with self.conn:
                self.conn.execute("DELETE FROM cache")

    def flush(self) -> None:
        with self.lock:
            rows, self.pending = self.pending, {}
        if rows:
            with self.conn:
                self.conn.execute("BEGIN")
                self.conn.executemany(
                    "INSERT OR REPLACE INTO cache(hash, rc, stdout, stderr) VALUES(?,?,?,?)",
                    [(h, r.rc, r.stdout, r.stderr) for h, r in rows.items()])
                # Newer rows have larger rowids (a replaced row is re-inserted), so
                # keeping the newest is a range delete on the rowid, not a sort.
                self.conn.execute(
                    "DELETE FROM cache WHERE rowid <= (SELECT MAX(rowid) FROM cache) - ?",
                    (self.lru.maxsize,))

    def close(self) -> None:
        self.flush()
        self.conn.close()
