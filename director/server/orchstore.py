"""The store's answers about orchestrations (a mixin of JobStore): their name, their jobs'
results counted per node and status, the first failure, and the newest ones for
``director jobs``.  Aggregates are computed by SQLite, so an orchestration of 100,000
jobs is summed there rather than loaded row by row into the server's loop.
"""

from __future__ import annotations

from typing import Any

LABEL_MAX = 200      # characters of an orchestration's name (its files) kept
TAIL_CHARS = 4096    # the end of the first failure's output read (its last lines shown)
FAILED = ("failed", "timeout", "lost")


def label_of(args: dict) -> str:
    """An operator's ``label`` (the orchestration's file names), bounded; '' if none."""
    label = args.get("label")
    if not isinstance(label, str):
        return ""
    return label[:LABEL_MAX]


class OrchQueries:
    """Needs ``conn`` (the jobs database)."""

    conn: Any

    def _add_label_column(self) -> None:
        """Databases made before orchestrations had names get the column (empty)."""
        cols = {r[1] for r in self.conn.execute("PRAGMA table_info(jobs)")}
        if "label" not in cols:
            with self.conn:
                self.conn.execute("ALTER TABLE jobs ADD COLUMN label TEXT NOT NULL DEFAULT ''")

    def orch_head(self, orch: str) -> tuple[int, str, float, str] | None:
        """(jobs, label, created, first job's summary) of ``orch``; None if it has no jobs."""
        row = self.conn.execute(
            "SELECT COUNT(*), MIN(created) FROM jobs WHERE orch=?", (orch,)).fetchone()
        if not row or not row[0]:
            return None
        first = self.conn.execute(
            "SELECT label, summary FROM jobs WHERE orch=? ORDER BY seq LIMIT 1", (orch,)
        ).fetchone()
        return row[0], first[0], row[1], first[1]

    def orch_tasks(self, orch: str) -> list[tuple[str, str, str, int, float | None]]:
        """(node key, node name, status, tasks, last finished) per node and status."""
        return [tuple(r) for r in self.conn.execute(
            "SELECT r.node, MAX(r.name), r.status, COUNT(*), MAX(r.finished) FROM results r"
            " JOIN jobs j ON j.id = r.job_id WHERE j.orch=? GROUP BY r.node, r.status",
            (orch,))]

    def orch_first_failure(self, orch: str) -> dict[str, Any] | None:
        """The task of ``orch`` that failed first (by when it ended, then job order), with
        the end of its output; None if none failed."""
        row = self.conn.execute(
            "SELECT r.job_id, r.name, r.status, r.rc, substr(r.stderr, -?),"
            " substr(r.stdout, -?), r.error, r.finished, j.summary FROM results r"
            " JOIN jobs j ON j.id = r.job_id WHERE j.orch=? AND r.status IN (?,?,?)"
            " ORDER BY r.finished IS NULL, r.finished, j.seq, r.name LIMIT 1",
            (TAIL_CHARS, TAIL_CHARS, orch, *FAILED)).fetchone()
        if row is None:
            return None
        keys = ("job", "node", "status", "rc", "stderr", "stdout", "error", "finished",
                "summary")
        return dict(zip(keys, row))

    def status_counts(self, job_ids: list[str]) -> dict[str, dict[str, int]]:
        """job id -> {status: tasks}, summed by SQLite: a listing of jobs sent to 10,000
        nodes reads 20 small rows, not 200,000 results into the loop."""
        out: dict[str, dict[str, int]] = {j: {} for j in job_ids}
        for i in range(0, len(job_ids), 500):
            part = job_ids[i:i + 500]
            q = ",".join("?" * len(part))
            for job_id, status, n in self.conn.execute(
                    f"SELECT job_id, status, COUNT(*) FROM results WHERE job_id IN ({q})"
                    " GROUP BY job_id, status", part):
                out[job_id][status] = n
        return out

    def recent_orchs(self, limit: int) -> list[tuple[str, int, float]]:
        """The newest ``limit`` orchestrations, newest first: (orch, jobs, created).
        A submission's jobs share one ``created``, so this steps from one creation time
        to the next older one (the index on ``created``), never through every job."""
        out: list[tuple[str, int, float]] = []
        before = float("inf")
        while len(out) < limit:
            row = self.conn.execute("SELECT MAX(created) FROM jobs WHERE created < ?",
                                    (before,)).fetchone()
            if row is None or row[0] is None:
                break
            before = row[0]
            out.extend((orch, n, before) for orch, n in self.conn.execute(
                "SELECT orch, COUNT(*) FROM jobs WHERE created = ? GROUP BY orch"
                " ORDER BY orch DESC", (before,)))
        return out[:limit]


def label_jobs(jobs: list[dict[str, Any]], args: dict) -> None:
    """Name a submission's job rows: its files (``label``), or what it retried."""
    label = label_of(args)
    if not label and isinstance(args.get("retry_of"), str):
        label = f"retry of {args['retry_of']}"[:LABEL_MAX]
    for job in jobs:
        job["label"] = label
