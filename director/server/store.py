"""The server core's storage seam: what it reads and writes, and how failure looks.

The core calls these methods and never sees SQL; ``SqlStore`` is the SQLite
implementation the daemon plugs in.  Every failure of the storage (disk full,
database locked, I/O error) arrives as ``StorageError``, which the core
contains: it refuses new work with one clear line and retries, never exits.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any, Callable

from director.errors import StorageError
from director.server.jobstore import JobStore
from director.server.nodemeta import NodeMetaStore
from director.server.state import StateDB

log = logging.getLogger("director.server")
WAL_KEEP = 8 * 1024 * 1024  # bytes of write-ahead log kept once it was copied back


class SqlStore:
    """StateDB (keys, tokens), NodeMetaStore (facts, labels) and JobStore (jobs,
    results) behind one object.

    Methods are those of the three classes; each call turns a SQLite failure into
    StorageError (a value too large for SQLite too: it must never escape)."""

    def __init__(self, path: Path, checkpoint_every: float | None = None):
        self.state = StateDB(path)
        self.jobs = JobStore(self.state.conn)
        self.meta = NodeMetaStore(self.state.conn)   # node facts and labels
        self.checkpointer: Checkpointer | None = None
        # held by each call and by each checkpoint: a commit that meets a checkpoint
        # of the same WAL can sit in SQLite's read-lock retries (sleeps growing to
        # 100 ms each) -- commits of over a second, seen at 5,000 nodes
        self.lock = threading.Lock()
        if checkpoint_every is not None:  # the daemon: copying the WAL back is not the loop's
            self.state.conn.execute("PRAGMA wal_autocheckpoint=0")
            self.state.conn.execute(f"PRAGMA journal_size_limit={WAL_KEEP}")
            self.checkpointer = Checkpointer(path, checkpoint_every, self.lock)
            self.checkpointer.start()

    def __getattr__(self, name: str) -> Callable[..., Any]:
        target = (getattr(self.state, name, None) or getattr(self.meta, name, None)
                  or getattr(self.jobs, name))
        lock = self.lock

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                with lock:
                    return target(*args, **kwargs)
            except (sqlite3.Error, OverflowError, UnicodeEncodeError) as exc:
                raise StorageError(f"{type(exc).__name__}: {exc}") from None

        setattr(self, name, call)  # looked up once per method
        return call

    def update_results(self, rows: list, budget: float | None = None) -> int:
        """Result rows; with a ``budget`` (the loop's slices) none at all while the WAL
        is being copied back: they stay in memory for the next turn, never waited for."""
        if budget is not None and not self.lock.acquire(blocking=False):
            return 0
        if budget is None:
            self.lock.acquire()
        try:
            return self.jobs.update_results(rows, budget)
        except (sqlite3.Error, OverflowError, UnicodeEncodeError) as exc:
            raise StorageError(f"{type(exc).__name__}: {exc}") from None
        finally:
            self.lock.release()

    def close(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.stop()
        self.state.close()  # the last connection: SQLite checkpoints the WAL on close


class Checkpointer(threading.Thread):
    """Copies the write-ahead log back into the database file from a thread of its own.

    SQLite's automatic checkpoint runs inside the commit that crosses its threshold:
    on the server's one event-loop thread, tens to hundreds of milliseconds (and an
    fsync) during which no node is heard.  A PASSIVE checkpoint never blocks the
    writer, so the loop's commits only append to the log."""

    def __init__(self, path: Path, every: float, lock: threading.Lock):
        super().__init__(name="wal-checkpoint", daemon=True)
        self.path, self.every, self.lock = path, every, lock
        self._stop_event = threading.Event()

    def run(self) -> None:
        conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        failed = False
        try:
            conn.execute("PRAGMA busy_timeout=1000")
            while not self._stop_event.wait(self.every):
                try:
                    with self.lock:  # never beside a commit of the loop (see SqlStore)
                        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    failed = False
                except sqlite3.Error as exc:
                    if not failed:  # once per outage; the loop's writes go on regardless
                        log.warning("WAL checkpoint failed (%s); retrying", exc)
                    failed = True
        finally:
            conn.close()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)
