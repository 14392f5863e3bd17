"""Jobs and per-node results in SQLite, written in batches off the hot path.

The scheduler keeps live state in memory and hands changed rows here; one
transaction per tick writes them, so thousands of results a second cost a
handful of commits.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any, Container, Iterable

from director.server.orchstore import OrchQueries
from director.server.rows import UPDATE_BY_KEY, UPDATE_BY_ROWID, columns

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    orch TEXT NOT NULL,
    lane TEXT NOT NULL,
    seq INTEGER NOT NULL,
    verb TEXT NOT NULL,
    summary TEXT NOT NULL,
    instruction TEXT NOT NULL,
    hash_extra TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    targets TEXT NOT NULL,
    label TEXT NOT NULL DEFAULT ''   -- the orchestration's name (its files), for display
);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs(created);
CREATE INDEX IF NOT EXISTS jobs_orch ON jobs(orch);
CREATE TABLE IF NOT EXISTS retries (
    orch TEXT PRIMARY KEY,           -- an orchestration made by 'job retry'
    retry_of TEXT NOT NULL           -- the job or orchestration it retried
);
CREATE TABLE IF NOT EXISTS feeding (
    orch TEXT PRIMARY KEY            -- answered, its tasks still being stored in slices
);
CREATE TABLE IF NOT EXISTS cancels (
    job_id TEXT PRIMARY KEY          -- cancelled by the operator with tasks still open
);
CREATE TABLE IF NOT EXISTS results (
    job_id TEXT NOT NULL,
    node TEXT NOT NULL,              -- node key (identity)
    name TEXT NOT NULL,              -- node name at submission, for display
    status TEXT NOT NULL,
    rc INTEGER,
    stdout TEXT NOT NULL DEFAULT '',
    stderr TEXT NOT NULL DEFAULT '',
    cached INTEGER NOT NULL DEFAULT 0,
    exec_time REAL,
    roundtrip_time REAL,
    transfer TEXT,
    error TEXT NOT NULL DEFAULT '',
    sent REAL,
    finished REAL,
    PRIMARY KEY (job_id, node)
);
-- jobs that may still have tasks queued or running: what a restart reloads.  (An index
-- on open statuses did this before; keeping it cost every result two index writes.)
CREATE TABLE IF NOT EXISTS live (
    job_id TEXT PRIMARY KEY
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollouts (
    orch TEXT PRIMARY KEY,           -- an orchestration run in batches (server/batches.py)
    targets TEXT NOT NULL,           -- its node keys in target order (JSON)
    settings TEXT NOT NULL           -- --batch / --max-failures as given (JSON)
);
"""

WRITE_SLICE = 200         # result rows per UPDATE batch when writing against a budget
SMALL_PAGES = 2560        # a database this small (10 MiB of 4 KiB pages) is rewritten at once
FREE_TO_GIVE_BACK = 1024  # free pages (and a quarter of the file) worth giving back


class JobStore(OrchQueries):
    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        conn.executescript(SCHEMA)
        self._add_label_column()
        self._open_index_to_live()
        self.incremental = self._incremental_vacuum()

    def _open_index_to_live(self) -> None:
        """A database made before ``live``: its open jobs are marked from the old index
        on open statuses, which then goes (one transaction: a crash keeps the index)."""
        if self.conn.execute("SELECT 1 FROM sqlite_master WHERE type='index'"
                             " AND name='results_open'").fetchone() is None:
            return
        with self.conn:
            self.conn.execute("BEGIN")
            self.conn.execute("INSERT OR IGNORE INTO live(job_id) SELECT DISTINCT job_id"
                              " FROM results WHERE status IN ('queued','running')")
            self.conn.execute("DROP INDEX results_open")

    def _incremental_vacuum(self) -> bool:
        """Incremental auto-vacuum, so what a large purge frees can be given back to the
        file system a few pages at a time.  Set on a database still small (VACUUM rewrites
        it: a moment); a large one made before is left as it is (its freed pages are
        reused by new rows, so it does not grow, it only does not shrink)."""
        if self.conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2:
            return True
        if self.conn.execute("PRAGMA page_count").fetchone()[0] > SMALL_PAGES:
            return False
        try:
            self.conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
            self.conn.execute("VACUUM")
        except sqlite3.OperationalError:
            return False
        return self.conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2

    def insert(self, jobs: Iterable[dict[str, Any]], results: Iterable[tuple],
               feeding: str | None = None) -> int:
        """Job rows and task rows; ``feeding``: that orchestration's other tasks are
        stored later, a slice at a time (``fed`` says when they all are).  Returns the
        rowid of the first task row (the others follow in order), or 0 if not known."""
        jobs = list(jobs)
        results = list(results)
        first = 0
        with self.conn:
            self.conn.execute("BEGIN")
            if feeding is not None:
                self.conn.execute("INSERT OR IGNORE INTO feeding(orch) VALUES(?)", (feeding,))
            self.conn.executemany(
                "INSERT INTO jobs(id,orch,lane,seq,verb,summary,instruction,hash_extra,created,"
                "targets,label) VALUES(?,?,?,?,?,?,?,?,?,?,?)",
                [(j["id"], j["orch"], j["lane"], j["seq"], j["verb"], j["summary"],
                  j["instruction"], j["hash_extra"], j["created"], j["targets"],
                  j.get("label", "")) for j in jobs])
            self.conn.executemany("INSERT OR IGNORE INTO live(job_id) VALUES(?)",
                                  [(j["id"],) for j in jobs])
            if results:  # rowids: one past the largest, in order (checked after)
                top = self.conn.execute("SELECT COALESCE(MAX(rowid), 0) FROM results").fetchone()[0]
                self.conn.executemany(
                    "INSERT INTO results(job_id,node,name,status) VALUES(?,?,?,?)", results)
                last = self.conn.execute("SELECT MAX(rowid) FROM results").fetchone()[0]
                first = top + 1 if last == top + len(results) else 0
            self.conn.executemany(
                "INSERT OR IGNORE INTO retries(orch, retry_of) VALUES(?,?)",
                [(j["orch"], j["retry_of"]) for j in jobs if j.get("retry_of")])
            self.conn.executemany(
                "INSERT OR IGNORE INTO rollouts(orch, targets, settings) VALUES(?,?,?)",
                [(j["orch"], j["rollout"]["targets"], j["rollout"]["settings"])
                 for j in jobs if j.get("rollout")])
        return first

    def fed(self, orch: str, rows: Iterable[tuple] = (), now: float | None = None) -> None:
        """Every task of ``orch`` is stored; ``rows`` (job_id, node, name, status, error):
        the ones made after a restart, in the same transaction."""
        with self.conn:
            self.conn.execute("BEGIN")
            self.conn.executemany(
                "INSERT OR IGNORE INTO results(job_id,node,name,status,error,finished)"
                " VALUES(?,?,?,?,?,?)",
                [(*r, None if r[3] == "queued" else now) for r in rows])
            self.conn.execute("DELETE FROM feeding WHERE orch=?", (orch,))

    def mark_cancelled(self, job_ids: Iterable[str]) -> None:
        """The operator cancelled these jobs: kept so that a restart still stops their
        running tasks and makes their unmade ones cancelled (refeed.py)."""
        with self.conn:
            self.conn.execute("BEGIN")
            self.conn.executemany("INSERT OR IGNORE INTO cancels(job_id) VALUES(?)",
                                  [(j,) for j in job_ids])

    def cancelled_open(self) -> list[tuple[str, str]]:
        """(job id, node key) of tasks still running whose job the operator cancelled."""
        return [(r[0], r[1]) for r in self.conn.execute(
            "SELECT r.job_id, r.node FROM cancels c CROSS JOIN results r ON r.job_id = c.job_id"
            " WHERE r.status IN ('queued','running')")]

    def unfed(self) -> list[tuple[str, list[sqlite3.Row], list[sqlite3.Row], set[str]]]:
        """Orchestrations a crash left with tasks not stored: (orch, its job rows, its
        task rows, its jobs the operator cancelled)."""
        out = []
        for (orch,) in self.conn.execute("SELECT orch FROM feeding").fetchall():
            jobs = self.conn.execute("SELECT id, lane, seq, targets FROM jobs WHERE orch=?"
                                     " ORDER BY seq", (orch,)).fetchall()
            tasks = self.conn.execute(
                "SELECT r.job_id, r.node, r.name, r.status, r.error FROM results r"
                " JOIN jobs j ON j.id = r.job_id WHERE j.orch=?", (orch,)).fetchall()
            cancelled = {r[0] for r in self.conn.execute(
                "SELECT c.job_id FROM cancels c JOIN jobs j ON j.id = c.job_id"
                " WHERE j.orch=?", (orch,))}
            out.append((orch, jobs, tasks, cancelled))
        return out

    def update_results(self, rows: Iterable[dict[str, Any]],
                       budget: float | None = None) -> int:
        """Write result rows in one transaction; returns how many were written.  With
        ``budget`` (seconds) it stops after the slice that used it up: a slice of
        UPDATEs now and then takes tens of milliseconds (pages read back, the WAL
        grown), and the loop that waits for it serves no node meanwhile."""
        rows = list(rows)
        if not rows:
            return 0
        until = None if budget is None else time.monotonic() + budget
        done = 0
        with self.conn:
            self.conn.execute("BEGIN")
            while done < len(rows):
                part = rows[done:done + WRITE_SLICE] if until is not None else rows
                known = [r for r in part if r.get("row")]
                if known and self.conn.executemany(UPDATE_BY_ROWID, [
                        (*columns(r), r["row"], r["job_id"], r["node"]) for r in known]
                        ).rowcount != len(known):
                    known = []  # a row not where it was: every one of them by job and node
                if len(known) < len(part):
                    self.conn.executemany(UPDATE_BY_KEY, [
                        (*columns(r), r["job_id"], r["node"])
                        for r in part if not (known and r.get("row"))])
                done += len(part)
                if until is not None and time.monotonic() >= until:
                    break
        return done

    def close_jobs(self, job_ids: Iterable[str]) -> None:
        """Every task of these jobs is final and written: a restart need not look at
        them (``open_results``)."""
        with self.conn:
            self.conn.execute("BEGIN")
            self.conn.executemany("DELETE FROM live WHERE job_id=?", [(j,) for j in job_ids])

    def live_jobs(self) -> list[str]:
        """Jobs marked as maybe having open tasks (a restart prunes those that do not)."""
        return [r[0] for r in self.conn.execute("SELECT job_id FROM live")]

    def recent(self, limit: int) -> list[sqlite3.Row]:
        return self.conn.execute(
            "SELECT * FROM jobs ORDER BY created DESC, orch DESC, seq DESC LIMIT ?", (limit,)
        ).fetchall()

    def job(self, job_id: str) -> sqlite3.Row | None:
        if job_id == "last":
            return self.conn.execute(
                "SELECT * FROM jobs ORDER BY created DESC, seq DESC LIMIT 1").fetchone()
        row = self.conn.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        if row is None and len(job_id) >= 4:
            pattern = job_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            rows = self.conn.execute("SELECT * FROM jobs WHERE id LIKE ? ESCAPE '\\' LIMIT 2",
                                     (pattern + "%",)).fetchall()
            if len(rows) == 1:
                row = rows[0]
        return row

    def retry_of(self, orch: str) -> str | None:
        row = self.conn.execute("SELECT retry_of FROM retries WHERE orch=?", (orch,)).fetchone()
        return row[0] if row else None

    def rollout(self, orch: str) -> sqlite3.Row | None:
        """The batch settings of ``orch`` (None: it was not run in batches)."""
        return self.conn.execute("SELECT * FROM rollouts WHERE orch=?", (orch,)).fetchone()

    def rollout_results(self, orch: str) -> list[tuple[str, str]]:
        """(node key, status) of every task of ``orch``: its rollout is rebuilt from
        these after a restart."""
        return [(r[0], r[1]) for r in self.conn.execute(
            "SELECT r.node, r.status FROM results r JOIN jobs j ON j.id = r.job_id"
            " WHERE j.orch=?", (orch,))]

    def orch_jobs(self, orch: str) -> list[str]:
        """The job ids of orchestration ``orch``, in order."""
        return [r[0] for r in self.conn.execute(
            "SELECT id FROM jobs WHERE orch=? ORDER BY seq", (orch,))]

    def result_status(self, job_id: str, node: str) -> tuple[str, str] | None:
        """(status, error) of one task, or None if there is no such task."""
        row = self.conn.execute("SELECT status, error FROM results WHERE job_id=? AND node=?",
                                (job_id, node)).fetchone()
        return (row[0], row[1]) if row else None

    def jobs_by_ids(self, job_ids: list[str]) -> dict[str, sqlite3.Row]:
        out: dict[str, sqlite3.Row] = {}
        for i in range(0, len(job_ids), 500):
            part = job_ids[i:i + 500]
            q = ",".join("?" * len(part))
            out.update((r["id"], r) for r in self.conn.execute(
                f"SELECT * FROM jobs WHERE id IN ({q})", part))
        return out

    def results(self, job_ids: list[str]) -> dict[str, list[sqlite3.Row]]:
        out: dict[str, list[sqlite3.Row]] = {j: [] for j in job_ids}
        for i in range(0, len(job_ids), 500):
            part = job_ids[i:i + 500]
            q = ",".join("?" * len(part))
            for r in self.conn.execute(
                    f"SELECT * FROM results WHERE job_id IN ({q}) ORDER BY name", part):
                out[r["job_id"]].append(r)
        return out

    def open_results(self) -> list[sqlite3.Row]:
        """Results not yet final, with their job: reloaded after a server restart."""
        return self.conn.execute(
            # CROSS JOIN: SQLite keeps this order (the few live jobs, then their rows)
            "SELECT r.*, r.rowid AS rid, j.orch, j.lane, j.seq, j.instruction, j.hash_extra"
            " FROM live l"
            " CROSS JOIN jobs j ON j.id = l.job_id CROSS JOIN results r ON r.job_id = l.job_id"
            " WHERE r.status IN ('queued','running') ORDER BY j.created, j.seq").fetchall()

    # -- retention (retention.py decides; these are its bounded steps) -----------------
    def newest_job_rowid(self) -> int:
        """The insertion number of the newest job (0: none); rowids grow with each job."""
        return self.conn.execute("SELECT COALESCE(MAX(rowid), 0) FROM jobs").fetchone()[0]

    def purge_step(self, after: int, upto: int, before: float, skip: Container[str],
                   budget: int, scan: int = 64) -> tuple[int, int, int, bool]:
        """Delete about ``budget`` rows of the oldest jobs past retention -- inserted at
        or before rowid ``upto`` or created before ``before`` -- oldest first from rowid
        ``after`` on, leaving those in ``skip`` (tasks still open).  A job's results go
        first and its row once they are all gone, so a job is never left without its row.
        Returns (jobs purged, results purged, the rowid to go on after, more to do)."""
        rows = self.conn.execute("SELECT rowid, id, created, orch FROM jobs WHERE rowid > ?"
                                 " ORDER BY rowid LIMIT ?", (after, scan)).fetchall()
        jobs = results = 0
        more = len(rows) == scan
        with self.conn:
            self.conn.execute("BEGIN")
            for rowid, job_id, created, orch in rows:
                if rowid > upto and created >= before:
                    more = False  # the rest are newer still
                    break
                if job_id in skip:
                    after = rowid
                    continue
                if budget <= 0:
                    more = True
                    break
                gone = self.conn.execute(
                    "DELETE FROM results WHERE rowid IN (SELECT rowid FROM results"
                    " WHERE job_id=? LIMIT ?)", (job_id, budget)).rowcount
                results += gone
                budget -= gone
                if budget <= 0 and self.conn.execute(
                        "SELECT 1 FROM results WHERE job_id=? LIMIT 1", (job_id,)).fetchone():
                    more = True  # this job's other results: next step
                    break
                self.conn.execute("DELETE FROM jobs WHERE rowid=?", (rowid,))
                self.conn.execute("DELETE FROM cancels WHERE job_id=?", (job_id,))
                self.conn.execute("DELETE FROM live WHERE job_id=?", (job_id,))
                self.conn.execute("DELETE FROM rollouts WHERE orch=? AND NOT EXISTS"
                                  " (SELECT 1 FROM jobs WHERE orch=?)", (orch, orch))
                jobs += 1
                budget -= 1
                after = rowid
        return jobs, results, after, more

    def give_back(self, pages: int) -> int:
        """Return up to ``pages`` free pages to the file system when many are free (after
        a large purge; a steady stream reuses them instead).  How many were freed."""
        if not self.incremental:
            return 0
        free = self.conn.execute("PRAGMA freelist_count").fetchone()[0]
        total = self.conn.execute("PRAGMA page_count").fetchone()[0]
        if free < FREE_TO_GIVE_BACK or free * 4 < total:
            return 0
        # run to completion (sqlite3_exec): one execute() step frees a single page
        self.conn.executescript(f"PRAGMA incremental_vacuum({int(pages)});")
        return min(free, pages)

    def query_rows(self, orchs: list[str]) -> list[sqlite3.Row]:
        """For the submissions among ``orchs`` that have a QUERY job: the results of
        their QUERY jobs (the answers) and their tasks that did not succeed (restart)."""
        out: list[sqlite3.Row] = []
        for i in range(0, len(orchs), 500):
            part = orchs[i:i + 500]
            q = ",".join("?" * len(part))
            out.extend(self.conn.execute(
                "SELECT j.orch, j.id AS job_id, j.seq, j.lane, j.verb, j.instruction, r.node,"
                " r.name, r.status, r.stdout FROM jobs j JOIN results r ON r.job_id = j.id"
                f" WHERE j.orch IN (SELECT orch FROM jobs WHERE verb='QUERY' AND orch IN ({q}))"
                " AND (j.verb='QUERY' OR r.status IN ('failed','timeout','lost','cancelled'))"
                " ORDER BY j.seq", part))
        return out

    def table_counts(self) -> tuple[int, int]:
        """(jobs, results) stored: for tests and the retention benchmark."""
        return (self.conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0],
                self.conn.execute("SELECT COUNT(*) FROM results").fetchone()[0])

    # -- analysis (analyze.py) ------------------------------------------------------------
    def timings(self, job_ids: list[str], limit: int) -> list[sqlite3.Row]:
        """The numbers ``director analyze`` works from, one row per task (no output
        text), at most ``limit`` of them."""
        out: list[sqlite3.Row] = []
        for i in range(0, len(job_ids), 500):
            if len(out) >= limit:
                break
            part = job_ids[i:i + 500]
            q = ",".join("?" * len(part))
            out.extend(self.conn.execute(
                "SELECT r.job_id, r.name, r.status, r.exec_time, r.roundtrip_time, r.sent,"
                f" r.finished, j.created, j.summary, j.seq FROM results r JOIN jobs j"
                f" ON j.id = r.job_id WHERE r.job_id IN ({q}) LIMIT ?", (*part, limit)))
        return out[:limit]


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
