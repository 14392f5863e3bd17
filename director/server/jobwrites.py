"""JobBook's writes: result rows in slices, acks after each row's commit, what a
failing store does, and what a restart reloads (a mixin of JobBook; part of the core:
storage goes through the store seam, a failing store is contained here)."""

from __future__ import annotations

import itertools
import json
import logging

from director.errors import ProtocolError, StorageError
from director.jobs import verbs
from director.jobs.dsl import Instruction
from director.protocol.messages import MAX_ACK, Ack, encode, job_body
from director.protocol.timing import RECONNECT_GRACE
from director.server import batches
from director.server.cancel import BEFORE_SENT
from director.server.events import Send
from director.server.queries import held_back
from director.server.refeed import missing_tasks
from director.server.rows import SERVER_RESTARTED, blank
from director.server.scheduler import Task

log = logging.getLogger("director.jobs")
WRITE_BUDGET = 0.02  # s of result writes per slice: the loop serves nodes between slices
CLOSE_SLICE = 500    # jobs unmarked live in one go
# s a sent task's 'running' row waits: a task answered by then has one row write (its
# answer, with the time it was sent), not two -- a third of the server's time per result
# at 5,000 nodes was SQLite's.  Anyone who looks (a query, a cancel) flushes them first,
# so no 'running' an operator saw is lost by a crash; a node resent a job after a restart
# answers from its journal, never running it twice.
SENT_DELAY = 1.0


class JobWrites:
    """Needs the book's ``store``, ``dirty``, ``sent``, ``ack_wait``, ``to_ack``,
    ``peers``, ``out``, ``storage_error``, ``bodies``, ``orch_of``, ``open``, ``sched``,
    ``queries`` and ``_final``."""

    dirty: dict
    storage_error: str | None

    def flush(self, limit: int | None = None) -> bool:
        """Write changed result rows (the oldest ``limit`` of them, or all), then ack
        what is committed; on a storage failure keep both for the next try.  True
        when nothing is left to write."""
        if limit is None and self.sent:
            self.mark_sent(None)
        if not self.dirty:
            self._send_acks()  # repeats of results committed before
            self._close_jobs()
            return True
        if limit is None or len(self.dirty) <= limit:
            keys, rows = None, list(self.dirty.values())
        else:
            keys = list(itertools.islice(self.dirty, limit))
            rows = [self.dirty[k] for k in keys]
        try:
            written = self.store.update_results(rows, None if limit is None else WRITE_BUDGET)
        except StorageError as exc:
            self._storage_failed(exc)
            return False
        if keys is None and written == len(rows):
            keys = list(self.dirty)
            self.dirty = {}
        else:
            keys = (keys or list(self.dirty))[:written]
            for k in keys:
                del self.dirty[k]
        if self.ack_wait:
            for k in keys:
                if k in self.ack_wait:
                    self.ack_wait.discard(k)
                    self.to_ack.setdefault(k[1], []).append(k[0])
        if self.storage_error is not None:
            log.warning("server storage works again; results written")
            self.storage_error = None
        self._send_acks()
        if self.dirty:
            return False
        self._close_jobs()
        return True

    def mark_sent(self, before: float | None) -> None:
        """'running' rows for the tasks sent before ``before`` (None: all of them) that
        are still running (a later send of the same task has an entry of its own)."""
        sent, dirty = self.sent, self.dirty
        while sent and (before is None or sent[0][0] <= before):
            at, task = sent.popleft()
            if task.status == "running" and task.sent_at == at:
                row = dirty.get((task.job_id, task.node))
                if row is None:
                    dirty[(task.job_id, task.node)] = blank(task)
                else:  # (queued again after a failed send, then sent)
                    row.update(status="running", sent=at)

    def _close_jobs(self) -> None:
        """Jobs whose every task is final: with nothing left unwritten, their rows are
        committed, so a restart need not look at them.  (At scale the backlog seldom
        empties mid-run; they go when it does.  A mark left behind costs a restart
        one look at that job's rows, nothing else.)"""
        if not self.closed:
            return
        part = self.closed[:CLOSE_SLICE]
        try:
            self.store.close_jobs(part)
        except StorageError as exc:  # kept: tried again on the next tick
            self._storage_failed(exc)
            return
        del self.closed[:len(part)]
        if self.storage_error is not None:  # nothing unwritten (the caller checked)
            log.warning("server storage works again")
            self.storage_error = None

    def _send_acks(self) -> None:
        """Acknowledge results now committed, so their nodes may forget them."""
        acks, self.to_ack = self.to_ack, {}
        for key, ids in acks.items():
            route = self.peers.route(key)
            if route is None:
                continue  # gone: it resends after reconnecting, and is acked then
            for i in range(0, len(ids), MAX_ACK):
                self.out.append(Send(route, encode(Ack(tuple(ids[i:i + MAX_ACK]))), key))

    def _storage_failed(self, exc: StorageError) -> None:
        if self.storage_error is None:  # logged once per outage
            log.error("server storage failed (%s): results kept in memory, retrying", exc)
        self.storage_error = str(exc)

    def _reload(self, now: float) -> None:
        """After a restart: queued and in-flight results continue where they were
        (first, the tasks a crash left unmade are made)."""
        self._refeed(now)
        lost: list = []
        every: list[Task] = []   # every open task (a QUERY's barrier counts them all)
        tasks: list[Task] = []   # those not in a rollout (batches.resume decides those)
        # tasks of jobs the operator cancelled: unsent ones end cancelled, running ones
        # are told to stop again on HELLO
        stopped = set(self.store.cancelled_open())
        for r in self.store.open_results():
            if (r["job_id"], r["node"]) in stopped and r["status"] == "queued":
                lost.append({**blank(Task(r["job_id"], r["node"], r["lane"], r["seq"], 0)),
                             "status": "cancelled", "finished": now, "error": BEFORE_SENT})
                continue
            try:
                instr = Instruction.from_dict(json.loads(r["instruction"]))
            except (ProtocolError, ValueError):
                instr = None
            if instr is None or verbs.spec(instr.verb).transfers:  # its manifest died with
                lost.append({**blank(Task(r["job_id"], r["node"], r["lane"], r["seq"], 0)),
                             "status": "lost", "finished": now,  # the old process
                             "error": SERVER_RESTARTED})
                continue
            if (r["job_id"], r["node"]) in stopped:
                self.cancel_sent.setdefault(r["node"], set()).add(r["job_id"])
                self.cancelled_jobs.add(r["job_id"])
            self.bodies[r["job_id"]] = job_body(r["job_id"], r["instruction"], r["lane"],
                                                r["seq"])
            self.orch_of[r["job_id"]] = r["orch"]
            self.open[r["job_id"]] = self.open.get(r["job_id"], 0) + 1
            # (queued_at: its node may be in backoff)
            task = Task(r["job_id"], r["node"], r["lane"], r["seq"], instr.options.timeout,
                        status=r["status"], queued_at=now + RECONNECT_GRACE,
                        sent_at=r["sent"] or now, row=r["rid"])
            every.append(task)
            if not batches.reloading(self, r["orch"], task):  # --batch: rebuilt below
                tasks.append(task)
        if every:  # jobs behind a QUERY are held again, with the answers stored before
            self.queries.restore(self.store.query_rows(self.queries.orch_ids(every)), every)
        self.store.update_results(lost)
        stale = [j for j in self.store.live_jobs() if j not in self.open]
        if stale:  # all final before the restart (their marks had not gone yet)
            self.store.close_jobs(stale)
        for task in tasks + batches.resume(self, now):  # a batch not started stays held
            if not (self.queries.orchs and held_back(self, task, now)):
                self.sched.add(task)

    def _refeed(self, now: float) -> None:
        """Make the tasks of submissions the last process was still storing when it
        died (refeed.py); a failing store leaves them for the next start."""
        try:
            unfed = self.store.unfed()
        except StorageError as exc:
            self._storage_failed(exc)
            return
        if not unfed:
            return
        keys = {r.name: r.key for r in self.store.nodes() if r.state == "accepted"}
        for orch, jobs, tasks, cancelled in unfed:
            rows, gone = missing_tasks(jobs, tasks, keys, cancelled)
            try:
                self.store.fed(orch, rows, now)
            except StorageError as exc:
                self._storage_failed(exc)
                return
            log.warning("orchestration %s: %d task(s) the previous server process had not"
                        " stored yet were made now%s", orch, len(rows),
                        f" (no longer enrolled, skipped: {', '.join(gone)})" if gone else "")
