"""The node journal in SQLite (see ``director.client.ledger`` for its rules)."""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Iterator

from director.client.ledger import (COMMIT_DELAY, KEEP_IDS, KEEP_SECONDS, LIVE_RESULTS,
                                    TRIM_BATCH, TRIM_EVERY, Entry, MemoryJournal,
                                    decode_result, encode_result)
from director.protocol import messages as M

__all__ = ["Journal", "MemoryJournal", "Entry", "open_journal", "proc_start_time", "proc_started_at",
           "proc_pgid", "encode_result", "decode_result"]
log = logging.getLogger("director.journal")

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY,
    job_id TEXT NOT NULL UNIQUE,
    lane TEXT NOT NULL,
    state TEXT NOT NULL,
    boot TEXT NOT NULL,
    pid INTEGER, pgid INTEGER, start_time REAL,  -- spawn time (wall clock)
    result TEXT,
    acked INTEGER NOT NULL DEFAULT 0,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_live ON jobs(state, acked) WHERE state != 'finished' OR acked = 0;
"""


class Journal(MemoryJournal):
    """The journal in ``HOME/journal.db`` (0600), WAL, written in batches by ``commit``."""

    def __init__(self, path: Path, keep_ids: int = KEEP_IDS, keep_seconds: float = KEEP_SECONDS):
        super().__init__()
        self.path = Path(path)
        self.keep_ids, self.keep_seconds = keep_ids, keep_seconds
        self.broken: str | None = None      # why writes stopped (memory only since)
        self._dirty = False
        self._must = False
        self._results = False
        self._pids = False
        self._since = 0.0                    # monotonic time of the first uncommitted write
        self._spilled = 0                    # unacked results only in SQLite
        self._next_trim = 0.0
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        os.close(fd)
        os.chmod(self.path, 0o600)
        self.db = sqlite3.connect(str(self.path), isolation_level=None,
                                  check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        self._load_live()

    def _load_live(self) -> None:
        # ids the file holds (or held: trimmed ones just miss): only those are worth a
        # look-up; kept up to date by _write
        self.on_disk = {r[0] for r in self.db.execute("SELECT job_id FROM jobs")}
        rows = self.db.execute(
            "SELECT job_id, lane, state, boot, pid, pgid, start_time, result FROM jobs"
            " WHERE state != 'finished' OR acked = 0 ORDER BY seq").fetchall()
        for job_id, lane, state, boot, pid, pgid, start, result in rows:
            r = decode_result(result) if state == "finished" and result else None
            if state == "finished" and r is None:
                continue
            if state == "finished" and len(self.unacked_ids) >= LIVE_RESULTS:
                self._spilled += 1
                continue
            self.live[job_id] = Entry(job_id, lane, state, boot, pid, pgid, start, r)
            if state == "finished":
                self.unacked_ids[job_id] = None

    # -- reads ------------------------------------------------------------------------------
    def _load(self, job_id: str) -> Entry | None:
        if job_id not in self.on_disk:
            return None  # never written: spares a query for every new job
        try:
            row = self.db.execute(
                "SELECT lane, state, boot, pid, pgid, start_time, result, acked FROM jobs"
                " WHERE job_id=?", (job_id,)).fetchone()
        except sqlite3.Error as exc:
            self._fail(exc)
            return None
        if row is None:
            return None
        lane, state, boot, pid, pgid, start, result, acked = row
        r = decode_result(result) if result else None
        if state == "finished" and r is None:
            return None  # unreadable: as if never seen
        return Entry(job_id, lane, state, boot, pid, pgid, start, r, bool(acked))

    def _unacked_elsewhere(self) -> Iterator[M.Result]:
        if not self._spilled or self.broken:
            return
        held = set(self.unacked_ids)
        try:
            rows = self.db.execute("SELECT job_id, result FROM jobs WHERE state='finished'"
                                   " AND acked=0 ORDER BY seq").fetchall()
        except sqlite3.Error as exc:
            self._fail(exc)
            return
        for job_id, result in rows:
            if job_id not in held and result:
                r = decode_result(result)
                if r is not None:
                    yield r

    def unacked_count(self) -> int:
        return len(self.unacked_ids) + self._spilled

    def _ack_elsewhere(self, job_id: str) -> bool:
        if not self._spilled or self.broken:
            return False
        e = self._load(job_id)
        if e is None or e.state != "finished" or e.acked:
            return False
        self._spilled -= 1
        return True

    def _remember(self, e: Entry) -> None:
        if self.broken:  # memory is all there is
            super()._remember(e)

    def _spill(self) -> None:
        if len(self.unacked_ids) <= LIVE_RESULTS or self.broken:
            return  # without a working file, memory is all there is
        job_id = next(iter(self.unacked_ids))
        del self.unacked_ids[job_id]
        self.live.pop(job_id, None)
        self._spilled += 1

    # -- writes -----------------------------------------------------------------------------
    def _write(self, sql: str, args: tuple, start: bool = False) -> None:
        if self.broken:
            return
        if sql[0] == "I":  # an INSERT names its job first
            if len(self.on_disk) > 2 * self.keep_ids:  # trimmed ids linger: start afresh
                self.on_disk = {r[0] for r in self.db.execute("SELECT job_id FROM jobs")}
            self.on_disk.add(args[0])
        try:
            if not self._dirty:
                self.db.execute("BEGIN")
                self._dirty = True
                self._since = time.monotonic()
            self.db.execute(sql, args)
        except sqlite3.Error as exc:
            self._fail(exc)
            return
        if start:
            self._must = True
        elif " result," in sql:  # a result: committed before it is sent
            self._results = True

    def _writemany(self, sql: str, rows: list) -> None:
        if self.broken:
            return
        try:
            if not self._dirty:
                self.db.execute("BEGIN")
                self._dirty = True
                self._since = time.monotonic()
            self.db.executemany(sql, rows)
        except sqlite3.Error as exc:
            self._fail(exc)

    @property
    def must_commit(self) -> bool:
        return self._must

    @property
    def results_dirty(self) -> bool:
        return self._results

    @property
    def dirty(self) -> bool:
        return self._dirty

    def commit_due(self) -> float:
        if not self._dirty:
            return float("inf")
        return 0.0 if self._pids else self._since + COMMIT_DELAY

    def commit(self) -> None:
        """Make every write so far durable against a crash of this process (one commit)."""
        if not self._dirty:
            return
        try:
            now = time.time()
            if now >= self._next_trim:
                self._next_trim = now + TRIM_EVERY
                self._trim(now)
            self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._fail(exc)
        self._dirty = self._must = self._results = self._pids = False

    def _trim(self, now: float) -> None:
        """Forget the oldest finished ids beyond the bounds, a batch at a time."""
        row = self.db.execute("SELECT max(seq) FROM jobs").fetchone()
        top = row[0] or 0
        self.db.execute(
            "DELETE FROM jobs WHERE seq IN (SELECT seq FROM jobs WHERE state='finished'"
            " AND (seq <= ? OR at < ?) ORDER BY seq LIMIT ?)",
            (top - self.keep_ids, now - self.keep_seconds, TRIM_BATCH))

    def trim(self) -> None:
        """Trim now (tests, tools)."""
        self._write("SELECT 1", ())
        self._next_trim = 0.0
        self.commit()

    def _fail(self, exc: Exception) -> None:
        """A write failed (a full disk, a broken file): log once, go on in memory."""
        if self.broken is None:
            self.broken = f"{type(exc).__name__}: {exc}"
            log.error("the node journal %s cannot be written (%s); going on in memory:"
                      " a crash of the agent now loses what it holds", self.path, exc)
            try:
                self.db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
        self._dirty = self._must = self._results = self._pids = False

    def close(self) -> None:
        self.commit()
        try:
            self.db.close()
        except sqlite3.Error:
            pass


def open_journal(home: Path) -> MemoryJournal:
    """The journal in ``home``; in memory (logged) when the file cannot be opened."""
    try:
        return Journal(Path(home) / "journal.db")
    except (OSError, sqlite3.Error) as exc:
        log.error("cannot open the node journal in %s (%s); keeping it in memory", home, exc)
        return MemoryJournal()


def _stat_field(pid: int, index: int) -> int | None:
    """Field ``index + 3`` of ``/proc/PID/stat`` as an int, or None (no such process)."""
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
        try:
            data = os.read(fd, 4096)
        finally:
            os.close(fd)
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after the last ')'
    rest = data[data.rfind(b")") + 2:].split()
    try:
        return int(rest[index])
    except (IndexError, ValueError):
        return None


def proc_start_time(pid: int) -> int | None:
    """Field 22 of ``/proc/PID/stat`` (start time in clock ticks since boot), or None."""
    return _stat_field(pid, 19)


_BOOT: list[float] = []   # the boot time (``btime`` of /proc/stat), read once


def proc_started_at(pid: int) -> float | None:
    """When process ``pid`` started, in wall-clock seconds (1 s precise), or None.  The
    agent records ``time.time()`` as it spawns a job (no /proc read on the hot path)
    and compares the two only after a crash, to tell its job from a reused pid."""
    ticks = proc_start_time(pid)
    if ticks is None:
        return None
    if not _BOOT:
        try:
            with open("/proc/stat", "rb") as f:
                line = next(ln for ln in f if ln.startswith(b"btime "))
            _BOOT.append(float(line.split()[1]))
        except (OSError, StopIteration, ValueError, IndexError):
            return None
    return _BOOT[0] + ticks / os.sysconf("SC_CLK_TCK")


def proc_pgid(pid: int) -> int | None:
    """Field 5 of ``/proc/PID/stat`` (the process group), or None."""
    return _stat_field(pid, 2)
