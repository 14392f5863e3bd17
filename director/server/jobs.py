"""Server-side jobs: submission, dispatch to nodes, results, waiting operators.

Part of the server core: no sockets, no SQL, no clock (``now`` comes in).
What it wants done goes to ``out`` as actions (events.py); storage goes
through the store seam (store.py) and a failing store is contained here:
results stay in memory and are written again on the next tick, and new
submissions are refused with one clear line until the store works again.

Identity rules from the design: a result is accepted only from the node the
job was sent to (the authenticated key), only while it is in flight, and only
once.  A node that vanishes ends its jobs as ``lost``, never as success.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any, Callable

from cachetools import LRUCache

from director.protocol.frames import MAX_BATCH, batch
from director.protocol.control import CtlPart
from director.protocol.messages import CtlEvent, CtlReply, Result, encode
from director.server import batches, submission
from director.server.cancel import send_cancels
from director.server.dryrun import DryRuns
from director.server.events import Reply, Send
from director.server.jobqueries import JobQueries
from director.server.jobsubmit import DEFERRED, Feed, JobSubmits
from director.server.jobwrites import SENT_DELAY, JobWrites
from director.server.peers import Peers
from director.server.queries import QueryGate
from director.server.rows import NO_ANSWER, NODE_WENT_AWAY, SERVER_LOST, blank, result_fields
from director.server.scheduler import Scheduler, Task
from director.server.waiters import PART_BYTES, Waiter, note_sent

log = logging.getLogger("director.jobs")
__all__ = ["DEFERRED", "JobBook"]  # DEFERRED: from jobsubmit.py, for core and ops
GRACE = 30.0
PROGRESS_EVERY = 0.2
PROGRESS_BIG = 1000  # nodes still to answer: progress once a second
BATCH_BYTES = 1024 * 1024  # a JOBS message grows to about this much, then another starts
FLUSH_ROWS = 1000          # result rows written in one go: one loop iteration's share
PUMP_NODES = 100           # nodes sent jobs in one go (the rest go on the next turn)
WALK_EVERY = 1.0           # s between the tick's walks over the nodes with work
ENCODE_ANSWERS = 10_000    # answers encoded into waiting operators' documents per turn


class JobBook(JobSubmits, JobWrites, JobQueries, DryRuns):
    node_attrs: Callable[[dict], dict] = staticmethod(lambda _: {})  # labels, facts: nodeinfo

    def __init__(self, store: Any, peers: Peers, name_of: Callable[[str], str], out: list,
                 node_expiry: float, now: float, new_id: Callable[[], str],
                 peer_log: Callable[..., None] | None = None):
        self.store = store
        self.peer_log = peer_log or (lambda level, key, reason, now, fmt, *a: log.log(
            level, fmt, *a))  # the core passes its rate-limited one
        self.peers = peers
        self.name_of = name_of
        self.out = out
        self.node_expiry = node_expiry
        self.new_id = new_id
        self.sched = Scheduler(window=64)
        self.max_live = submission.MAX_LIVE_TASKS
        self.feeding: deque[Feed] = deque()   # big submissions whose tasks are being made
        self.unfed = 0                         # their tasks not made yet
        self.stopped_lanes: set[tuple[str, str]] = set()  # (node, lane) failed meanwhile
        self.cancelled_jobs: set[str] = set()      # cancelled, tasks not all final yet
        self.streams: set[str] = set()             # orchestrations whose output is followed
        self.cancel_sent: dict[str, set[str]] = {}  # node key -> job ids it was told to stop
        self.bodies: dict[str, bytes] = {}         # job id -> encoded JOB body
        self.orch_of: dict[str, str] = {}          # job id -> orchestration id
        self.open: dict[str, int] = {}             # job id -> tasks not yet final
        self.closed: list[str] = []  # jobs all final: unmarked live once their rows are written
        self.dirty: dict[tuple[str, str], dict[str, Any]] = {}
        self.sent: deque[tuple[float, Task]] = deque()  # sent; 'running' rows not made yet
        self.walk_at = 0.0  # when the tick next looks for work of nodes gone quiet
        self.waiters: dict[str, Waiter] = {}       # orchestration id -> waiter
        self.encoding: set[str] = set()  # their orchestrations with documents to encode
        self.to_pump: set[str] = set()
        self.copies: dict[str, tuple[Any, tuple, set]] = {}  # job id -> (manifest, paths,
        #                                                        chunks vouched for)
        self.building: dict[int, tuple[bytes, dict]] = {}     # ticket -> (rid, args)
        self.tickets = 0
        self.storage_error: str | None = None
        self.to_ack: dict[str, list[str]] = {}     # node key -> job ids committed, to ack
        self.ack_wait: set[tuple[str, str]] = set()  # (job id, node key): ack once written
        # (job id, node) -> True when the server ended it ``lost`` (a node's word may
        # still replace that), False when it is final for good
        self.finals: LRUCache = LRUCache(maxsize=100_000)
        self.lost_copies: LRUCache = LRUCache(maxsize=64)  # job id -> copy, of server-lost
        self.rollouts = batches.Gate()             # --batch: later batches' tasks held
        self.queries = QueryGate()                 # jobs held behind a QUERY (queries.py)
        self._reload(now)

    # -- replies to operators -------------------------------------------------------
    def reply(self, rid: bytes, **fields: Any) -> None:
        self.out.append(Reply(rid, encode(CtlReply(**fields))))

    def event(self, rid: bytes, event: str, data: Any) -> None:
        self.out.append(Reply(rid, encode(CtlEvent(event, data))))

    def busy(self) -> bool:
        """Work waits for the next loop turn (the driver should not sleep till then)."""
        if self.storage_error is not None:  # retried on the tick, not in a spin
            return bool(self.to_pump or self.encoding)
        return bool(self.feeding or self.to_pump or self.encoding
                    or len(self.dirty) >= FLUSH_ROWS)

    def live_tasks(self) -> int:
        return self.sched.live + self.unfed + self.rollouts.held + self.queries.held

    # -- dispatch -------------------------------------------------------------------
    def pump(self, now: float) -> None:
        """Fill the windows of nodes with work to take, PUMP_NODES at a time (a
        submission to thousands of nodes goes out over several loop turns)."""
        if len(self.to_pump) <= PUMP_NODES:
            nodes, self.to_pump = self.to_pump, set()
        else:
            nodes = [self.to_pump.pop() for _ in range(PUMP_NODES)]
        for node in nodes:
            if self.peers.online(node, now) and self.peers.route(node) is not None:
                tasks = self.sched.take(node, now)
                if tasks:
                    self._send_jobs(node, tasks, now)

    def _send_jobs(self, node: str, tasks: list[Task], now: float | None) -> None:
        """Send tasks to a node, several per message; ``now`` marks them running
        (None: a resend of tasks already running there)."""
        route = self.peers.route(node)
        i = 0
        while i < len(tasks):
            group, size = [], 0
            while i < len(tasks) and len(group) < MAX_BATCH and (not group or size < BATCH_BYTES):
                body = self.bodies.get(tasks[i].job_id)
                if body is not None:
                    group.append((tasks[i], body))
                    size += len(body)
                i += 1
            if not group:
                continue
            ids = tuple(t.job_id for t, _ in group) if now is not None else ()
            if route is not None:
                self.out.append(Send(route, batch("JOBS", [b for _, b in group]), node, ids))
            if now is not None:  # 'running' is written later, if still so (mark_sent)
                self.sent.extend((now, task) for task, _ in group)
                if self.waiters:
                    note_sent(self.waiters, self.orch_of, node, ids)
                if route is None:  # pump() checks first: only a bug gets here
                    self.undelivered(node, ids, now)

    def undelivered(self, node: str, job_ids: tuple[str, ...], now: float) -> None:
        """A send of these (newly sent) jobs failed: its connection is gone.  They go
        back to the queue, unsent, until the node speaks on a new connection (or
        stays away past its expiry: then they end ``lost``); never lost while the
        server can still deliver them."""
        peer = self.peers.get(node)
        if peer is not None:
            peer.route, peer.fd = None, -1
        for task in self.sched.unsend(node, job_ids):
            self._mark(task, {"status": "queued", "sent": None})
            note_sent(self.waiters, self.orch_of, node, (task.job_id,), -1)

    def after_events(self, now: float) -> None:
        if self.feeding:
            self._feed(now)
        if self.to_pump:
            self.pump(now)
        if self.sent and self.sent[0][0] <= now - SENT_DELAY:
            self.mark_sent(now - SENT_DELAY)
        if self.encoding:
            self._answer_waiters()
        if len(self.dirty) >= FLUSH_ROWS:  # a backlog: written a slice per loop turn
            self.flush(FLUSH_ROWS)
        self._progress(now)

    def node_ready(self, key: str) -> None:
        if self.sched.has_work(key):
            self.to_pump.add(key)

    def node_lost(self, key: str, now: float, offline_since: float | None = None) -> None:
        """The node is gone: its work ends ``lost`` (but what was queued for it after it
        went offline, with --allow-offline, waits on as such work does)."""
        for task in self.sched.drop_node(key, "lost", offline_since):
            self._final(task, {"status": "lost", "error": NODE_WENT_AWAY}, now)

    def resend_inflight(self, key: str) -> None:
        """On every HELLO: the node's journal answers each one (its result again,
        still running, or lost), and runs those it never received.  CANCELs go first:
        a job cancelled meanwhile is answered ``cancelled``, never started."""
        inflight = self.sched.inflight(key)
        stop = self.cancel_sent.get(key)
        if stop:
            send_cancels(self, key, [t.job_id for t in inflight if t.job_id in stop])
        self._send_jobs(key, inflight, None)

    # -- results --------------------------------------------------------------------
    def on_result(self, key: str, msg: Result, now: float) -> None:
        task = self.sched.complete(key, msg.job_id, msg.status)
        if task is None:
            self._late_result(key, msg, now)
            return
        self.remember_copy(key, msg)  # a COPY done there: what the node has (dry runs)
        self._final(task, result_fields(msg, now - task.sent_at if task.sent_at
                                              else None), now, by_node=True)
        self._ack_later(key, msg.job_id)
        if msg.status != "success":
            if self.feeding:  # tasks of this lane still to be made are cancelled too
                self.stopped_lanes.add((key, task.lane))
            for t in self.sched.cancel_lane(key, task.lane):
                self._final(t, {"status": "cancelled", "error": "an earlier job failed"}, now)
        self.to_pump.add(key)

    def _late_result(self, key: str, msg: Result, now: float) -> None:
        """A result for a task not in flight: a resend of one already stored is acked
        again (idempotent); the node's first word on a task the *server* ended
        ``lost`` (it went silent) replaces that, once; one for a task never sent to
        this key is refused; one for a job no longer stored (purged) is acked and
        dropped, or the node would resend it after every reconnect."""
        replaceable = self.finals.get((msg.job_id, key))
        if replaceable is None:
            status, error = self.store.result_status(msg.job_id, key) or (None, "")
            if status is None and not self.store.jobs_by_ids([msg.job_id]):
                self.to_ack.setdefault(key, []).append(msg.job_id)
                return
            if status is None or status in ("queued", "running"):
                self.peer_log(logging.WARNING, key, "foreign_result", now,
                              "refused result for job %s from %s (not in flight there)",
                              msg.job_id, self.name_of(key))
                return
            replaceable = status == "lost" and error in SERVER_LOST
        if replaceable:
            row = self.dirty.setdefault((msg.job_id, key), blank(Task(msg.job_id, key, "", 0, 0)))
            row.update(result_fields(msg, None), finished=now)
        self.finals[(msg.job_id, key)] = False
        self._ack_later(key, msg.job_id)

    def _ack_later(self, key: str, job_id: str) -> None:
        """Ack a node's result once its row is committed (now, if it already is)."""
        if (job_id, key) in self.dirty:
            self.ack_wait.add((job_id, key))
        else:
            self.to_ack.setdefault(key, []).append(job_id)

    def _mark(self, task: Task, fields: dict[str, Any]) -> None:
        row = self.dirty.get((task.job_id, task.node))
        if row is None:
            row = self.dirty[(task.job_id, task.node)] = blank(task)
        row.update(fields)

    def _final(self, task: Task, fields: dict[str, Any], now: float,
               by_node: bool = False) -> None:
        fields.setdefault("finished", now)
        task.status = fields["status"]  # (a 'running' row still to be made is not: mark_sent)
        self._mark(task, fields)
        if self.cancel_sent:
            told = self.cancel_sent.get(task.node)
            if told is not None:
                told.discard(task.job_id)
                if not told:
                    del self.cancel_sent[task.node]
        # the server's 'lost' on a task the node was sent may give way to the node's own
        # word; on one it never was sent, nothing from that node is its word
        server_lost = fields["status"] == "lost" and not by_node and task.sent_at is not None
        self.finals[(task.job_id, task.node)] = server_lost
        if server_lost and task.job_id in self.copies:  # it may still be pulling: see
            self.lost_copies[task.job_id] = self.copies[task.job_id]  # serve_chunks
        orch = self.orch_of.get(task.job_id, "")
        left = self.open.get(task.job_id, 1) - 1
        if left <= 0:  # every node answered: the encoded job is no longer needed
            self.open.pop(task.job_id, None)
            self.closed.append(task.job_id)
            self.cancelled_jobs.discard(task.job_id)
            self.bodies.pop(task.job_id, None)
            self.orch_of.pop(task.job_id, None)
            self.copies.pop(task.job_id, None)
        else:
            self.open[task.job_id] = left
        w = self.waiters.get(orch)
        if w is not None:
            if w.add(task.node, self.dirty[(task.job_id, task.node)]) or w.todo:
                self.encoding.add(orch)  # its documents, parts, answer: _answer_waiters
        if self.rollouts.by_job:  # its batch may be done: the next starts, or none does
            batches.after_final(self, task, now)
        if self.queries.orchs:  # a QUERY ended, or a task after one: held tasks may go
            self._add_tasks(self.queries.final(task, fields, self.name_of), now)

    def _answer_waiters(self) -> None:
        """Waiting operators' job documents, ENCODE_ANSWERS answers' worth per loop turn,
        then the pieces ready and, once all are encoded, the answer."""
        budget = ENCODE_ANSWERS
        for orch in list(self.encoding):
            w = self.waiters.get(orch)
            if budget > 0 and w is not None:
                budget -= w.encode_some(budget)
            if w is None or not w.todo:
                self.encoding.discard(orch)
            if w is None:
                continue
            if w.remaining <= 0 and not w.todo:
                del self.waiters[orch]
                self.streams.discard(orch)
                self.reply(w.rid, ok=True, result_json=True, failed=w.failed,
                           data=w.payload())
            elif w.ready >= PART_BYTES:  # a client taking the answer in pieces
                for part in w.take_parts():
                    self.out.append(Reply(w.rid, encode(CtlPart(part))))

    # -- time -----------------------------------------------------------------------
    def _offline_work(self, now: float) -> None:
        """Work queued too long for nodes gone quiet ends ``lost`` (node_lost)."""
        for node in self.sched.nodes():  # nodes with work only; online ones cost a lookup
            if self.peers.online(node, now) or self.peers.connected(node):
                continue  # a node whose connection is up loses nothing: its work waits
            since = self.sched.queued_since(node)
            if since is not None and now - since > self.node_expiry:
                self.node_lost(node, now)

    def _progress(self, now: float) -> None:
        for w in self.waiters.values():
            # where the rest are is a walk over the nodes still to answer: for a big
            # run, once a second is news enough
            every = PROGRESS_EVERY if len(w.left) < PROGRESS_BIG else 1.0
            if now - w.last_event >= every:
                w.last_event = now
                self.event(w.rid, "progress", w.report(lambda k: self.peers.online(k, now)))

    def tick(self, now: float) -> None:
        if self.sent:
            self.mark_sent(now - SENT_DELAY)
        if len(self.dirty) < FLUSH_ROWS or self.storage_error is not None:
            self.flush(FLUSH_ROWS)  # (a backlog is after_events' each turn: not twice in one)
        if now >= self.walk_at:  # once a second is soon enough against a 30 s expiry
            self.walk_at = now + WALK_EVERY
            self._offline_work(now)
        for task in self.sched.overdue(now, GRACE):
            self._final(task, {"status": "lost", "error": NO_ANSWER}, now)
        self._progress(now)
