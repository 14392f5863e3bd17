"""The server core's storage seam: what it reads and writes, and how failure looks.

The core calls these methods and never sees SQL; ``SqlStore`` is the SQLite
implementation the daemon plugs in.  Every failure of the storage (disk full,
database locked, I/O error) arrives as ``StorageError``, which the core
contains: it refuses new work with one clear line and retries, never exits.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, Callable

from director.errors import StorageError
from director.server.jobstore import JobStore
from director.server.nodemeta import NodeMetaStore
from director.server.state import StateDB


class SqlStore:
    """StateDB (keys, tokens), NodeMetaStore (facts, labels) and JobStore (jobs,
    results) behind one object.

    Methods are those of the three classes; each call turns a SQLite failure into
    StorageError (a value too large for SQLite too: it must never escape)."""

    def __init__(self, path: Path):
        self.state = StateDB(path)
        self.jobs = JobStore(self.state.conn)
        self.meta = NodeMetaStore(self.state.conn)   # node facts and labels

    def __getattr__(self, name: str) -> Callable[..., Any]:
        target = (getattr(self.state, name, None) or getattr(self.meta, name, None)
                  or getattr(self.jobs, name))

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return target(*args, **kwargs)
            except (sqlite3.Error, OverflowError, UnicodeEncodeError) as exc:
                raise StorageError(f"{type(exc).__name__}: {exc}") from None

        setattr(self, name, call)  # looked up once per method
        return call

    def close(self) -> None:
        self.state.close()
