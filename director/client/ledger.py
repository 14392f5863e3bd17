"""The node journal's rules without a file (no sqlite3 here: the core imports it).

The node journal: what this node did with every job id, in its home.

One row per job id: its lane, its state (``received`` -> ``starting`` ->
``started`` -> ``finished``), the pid / pgid / process start time of a RUN, the
agent boot that took it, the final result and whether the server acknowledged
it.  ``AgentCore`` decides with it (a job id seen once is never run twice, even
across agent restarts; a result stays in the outbox until acked); the agent
driver commits it (``commit``) before a process is spawned and before results
are sent, so everything started in one loop turn shares one commit.

SQLite in WAL mode with ``synchronous=NORMAL``: a killed agent (kill -9) loses
nothing committed, and no fsync is paid per job (only a power loss can take the
last commits).  Bounded: the last ``KEEP_IDS`` job ids or ``KEEP_SECONDS``,
trimmed a batch at a time.

Live entries (not finished, or finished and not acknowledged) are also held in
memory, so the hot path reads SQLite only to look up an id it does not hold (a
new job: one indexed miss).  When a write fails (a full disk) the journal logs
once and goes on in memory: the agent keeps serving, it only loses what a crash
would need.

``MemoryJournal`` is the same rules without a file (tests, a home that cannot
hold a database).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Iterable, Iterator

from director.protocol import messages as M

log = logging.getLogger("director.journal")

KEEP_IDS = 100_000          # job ids remembered at least...
KEEP_SECONDS = 7 * 86400    # ...or for this long, whichever is fewer
TRIM_BATCH = 500            # rows deleted per commit at most
TRIM_EVERY = 2.0            # seconds between trims
COMMIT_DELAY = 0.05         # other writes (pids, acks) wait at most this long for a commit
LIVE_RESULTS = 20_000       # unacked results held in memory (the rest stay in SQLite)

STATES = ("received", "starting", "started", "finished")


class Entry:
    """One job id as the journal knows it."""

    __slots__ = ("job_id", "lane", "state", "boot", "pid", "pgid", "start", "result", "acked")

    def __init__(self, job_id: str, lane: str, state: str, boot: str, pid: int | None = None,
                 pgid: int | None = None, start: int | None = None,
                 result: M.Result | None = None, acked: bool = False):
        self.job_id, self.lane, self.state, self.boot = job_id, lane, state, boot
        self.pid, self.pgid, self.start = pid, pgid, start
        self.result, self.acked = result, acked

    def __repr__(self) -> str:
        return (f"Entry({self.job_id!r}, {self.lane!r}, {self.state!r}, boot={self.boot!r},"
                f" pid={self.pid}, acked={self.acked})")


def encode_result(r: M.Result) -> str:
    return json.dumps(r.body(), ensure_ascii=False, separators=(",", ":"))


def decode_result(text: str | bytes) -> M.Result | None:
    try:
        return M.Result.decode_body(json.loads(text), ())
    except Exception as exc:  # noqa: BLE001 - a bad row is dropped, not fatal
        log.warning("journal: unreadable result (ignored): %s", exc)
        return None


class MemoryJournal:
    """The journal's rules over a dict: what the core sees, without a file."""

    def __init__(self) -> None:
        self.live: dict[str, Entry] = {}   # not finished, or finished and unacked
        self.done: dict[str, Entry] = {}   # finished and acked (bounded)
        self.unacked_ids: dict[str, None] = {}  # finished, unacked, in order

    # -- reads (the core) ---------------------------------------------------------------
    def get(self, job_id: str) -> Entry | None:
        e = self.live.get(job_id)
        if e is None:
            e = self.done.get(job_id)
            if e is None:
                e = self._load(job_id)
        return e

    def _load(self, job_id: str) -> Entry | None:
        return None

    def unacked(self) -> Iterator[M.Result]:
        """Every result not acknowledged yet, oldest first."""
        for job_id in list(self.unacked_ids):
            e = self.live.get(job_id)
            if e is not None and e.result is not None:
                yield e.result
        yield from self._unacked_elsewhere()

    def _unacked_elsewhere(self) -> Iterator[M.Result]:
        return iter(())

    def unacked_count(self) -> int:
        return len(self.unacked_ids)

    def interrupted(self, boot: str) -> list[Entry]:
        """Jobs a previous agent run started (or was starting) and never finished."""
        return [e for e in self.live.values()
                if e.state in ("starting", "started") and e.boot != boot]

    # -- writes (the core, then the driver) ----------------------------------------------
    def received(self, job_id: str, lane: str, boot: str) -> None:
        """Held in memory only: a job that was received and never started is provably
        not run, so after a crash it may run when the server sends it again."""
        e = self.live.get(job_id)
        if e is None:
            self.done.pop(job_id, None)
            e = self.live[job_id] = Entry(job_id, lane, "received", boot)
        else:
            e.lane, e.state, e.boot = lane, "received", boot

    def starting(self, job_id: str, boot: str, durable: bool = True) -> None:
        """``durable``: written now, and committed before the job begins (a COPY); else
        the start is written with its pid (``started``): a RUN is spawned gated and runs
        nothing until that is committed."""
        e = self.live.get(job_id)
        if e is None:
            return
        e.state, e.boot = "starting", boot
        if durable:
            self._upsert(e, start=True)

    def started(self, job_id: str, pid: int, pgid: int, start: int | None) -> None:
        e = self.live.get(job_id)
        if e is None or e.state != "starting":
            return
        e.state, e.pid, e.pgid, e.start = "started", pid, pgid, start
        self._upsert(e)
        self._pids = True  # committed at the end of this loop turn, then it is released

    def _upsert(self, e: Entry, start: bool = False) -> None:
        self._write("INSERT INTO jobs(job_id, lane, state, boot, pid, pgid, start_time, at)"
                    " VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(job_id) DO UPDATE SET"
                    " lane=excluded.lane, state=excluded.state, boot=excluded.boot,"
                    " pid=excluded.pid, pgid=excluded.pgid, start_time=excluded.start_time,"
                    " at=excluded.at",
                    (e.job_id, e.lane, e.state, e.boot, e.pid, e.pgid, e.start, time.time()),
                    start=start)

    def finished(self, result: M.Result, boot: str, lane: str = "") -> None:
        job_id = result.job_id
        e = self.live.get(job_id)
        if e is None:
            self.done.pop(job_id, None)
            e = self.live[job_id] = Entry(job_id, lane, "finished", boot)
        e.state, e.result, e.acked = "finished", result, False
        self.unacked_ids.pop(job_id, None)
        self.unacked_ids[job_id] = None
        self._write("INSERT INTO jobs(job_id, lane, state, boot, result, acked, at)"
                    " VALUES (?,?,?,?,?,0,?) ON CONFLICT(job_id) DO UPDATE SET"
                    " state='finished', result=excluded.result, acked=0, at=excluded.at",
                    (job_id, e.lane, "finished", boot, encode_result(result), time.time()))
        self._spill()

    def resend(self, entry: Entry) -> None:
        """A finished job asked for again: its result is unacked until acked again."""
        if not entry.acked:
            return
        entry.acked = False
        self.done.pop(entry.job_id, None)
        self.live[entry.job_id] = entry
        self.unacked_ids[entry.job_id] = None
        self._write("UPDATE jobs SET acked=0 WHERE job_id=?", (entry.job_id,))
        self._spill()

    def acked(self, job_ids: Iterable[str]) -> int:
        """The server committed these results; returns how many were ours and unacked."""
        n = 0
        rows = []
        for job_id in job_ids:
            if self.unacked_ids.pop(job_id, 0) is None:
                e = self.live.pop(job_id)
                e.acked = True
                self._remember(e)
                rows.append((job_id,))
                n += 1
            elif self._ack_elsewhere(job_id):
                rows.append((job_id,))
                n += 1
        if rows:
            self._writemany("UPDATE jobs SET acked=1 WHERE job_id=?", rows)
        return n

    def _ack_elsewhere(self, job_id: str) -> bool:
        return False

    def _remember(self, e: Entry) -> None:
        self.done[e.job_id] = e
        if len(self.done) > KEEP_IDS:
            del self.done[next(iter(self.done))]

    def _spill(self) -> None:
        """Memory holds at most LIVE_RESULTS unacked results (a file keeps the rest)."""

    # -- storage hooks --------------------------------------------------------------------
    def _write(self, sql: str, args: tuple, start: bool = False) -> None:
        pass

    def _writemany(self, sql: str, rows: list) -> None:
        pass

    @property
    def must_commit(self) -> bool:
        """A 'starting' write is not committed yet: commit before spawning anything."""
        return False

    @property
    def results_dirty(self) -> bool:
        """A result is not committed yet: commit before sending results."""
        return False

    @property
    def dirty(self) -> bool:
        return False

    def commit_due(self) -> float:
        """When the writes so far must be committed at the latest (inf: none wait)."""
        return float("inf")

    def commit(self) -> None:
        pass

    def close(self) -> None:
        pass


