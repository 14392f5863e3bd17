"""The node agent's rules as a sans-IO core: events in, actions out.

Every decision the agent makes lives here -- what to say when the link comes
up, how to react to ENROLLED / REVOKED / ERROR, when an unanswered HELLO means
the server forgot this key, which job starts next (lanes in order, a failed
lane cancels its rest, at most MAX_PROCESSES at once, a job id never runs
twice, even across agent restarts: the journal says what became of it), and
when results leave (batched, never held longer than RESULT_DELAY; each stays in
the journal's outbox until the server's ACK names it, and every unacknowledged
one is sent again once a (re)connection is accepted: outbox.py).  It does no I/O and
reads no clock: the drivers (``agent``,
``runner``, ``copying``) pass ``now`` with each event, then carry out the
actions returned, so every rule is testable with plain values in microseconds.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

from cachetools import LRUCache

from director import __version__
from director.errors import ProtocolError
from director.jobs import verbs
from director.protocol import messages as M
from director.client.ledger import MemoryJournal
from director.client.results import GONE, result_of
from director.client.actions import Reply, Send, StartCopy, StartRun, Stop
from director.client.controlops import answer
from director.client.cancelling import Cancelling
from director.client.linkstate import LinkState
from director.client.outbox import RESULT_BATCH, Outbox

log = logging.getLogger("director.client")

MAX_PROCESSES = 8        # jobs running at once (other than COPY); more lanes wait for a slot
RESULT_DELAY = 0.02      # a result waits at most this long for others to share its message
MAX_QUEUED = 50_000      # jobs queued here at once; beyond that a job is refused
REMEMBER = 10_000        # failed lanes kept to cancel what was pipelined after a failure
RESTARTED = "the agent restarted while it ran"
KILLED = RESTARTED + "; its process group was killed"

__all__ = ["AgentCore", "MAX_PROCESSES", "RESULT_DELAY", "RESULT_BATCH", "MAX_QUEUED",
           "REMEMBER", "Reply", "Send", "StartCopy", "StartRun", "Stop"]


def is_copy(instr: Any) -> bool:
    """COPY-like verbs pull files over their own connection, off the event loop."""
    return instr.verb in _COPY_VERBS


# which verbs pull files (COPY, ADD): the verb table says, once, at import
_COPY_VERBS = frozenset(n for n in verbs.names() if verbs.spec(n).transfers
                        or verbs.spec(n).sends)  # GET sends files: the same workers


class AgentCore(Cancelling, Outbox):
    """All agent state and rules.  Each event method returns the actions to carry out."""

    def __init__(self, name: str, boot: str, heartbeat_interval: float, now: float,
                 version: str = __version__, journal: MemoryJournal | None = None,
                 facts: M.Facts | None = None):
        self.name = name
        self.facts = facts  # said at every HELLO (client/facts.py gathered them)
        self.boot = boot
        self.version = version
        self.heartbeat = heartbeat_interval
        self.state = "connecting"         # connecting | pending | accepted
        self.linked = False
        self.hello_at: float | None = None  # HELLO sent, nothing heard since
        self.next_hb = now + heartbeat_interval
        self.stopped: Stop | None = None
        self.link = LinkState()
        # jobs
        self.lanes: dict[str, deque[M.Job]] = {}
        self.active: dict[str, str] = {}      # lane -> job id running (process or COPY)
        self.running: dict[str, M.Job] = {}   # job id -> job started, not ended
        self.slots = 0                        # running jobs holding a process slot
        self.waiting: dict[str, None] = {}    # lanes whose head waits for a free slot
        self.known: set[str] = set()          # job ids queued or running here
        self.cancelling: set[str] = set()     # running jobs the operator cancelled
        self.failed_lanes: LRUCache = LRUCache(maxsize=REMEMBER)
        # every job id this node has seen, across restarts, and the unacked outbox
        self.journal = journal if journal is not None else MemoryJournal()
        # results not sent yet
        self.outbox: list[M.Result] = []
        self.outbox_size = 0
        self.outbox_since = 0.0
        self._out: list = []

    # -- what the driver asks ---------------------------------------------------------
    def busy(self) -> int:
        return len(self.active)

    def next_deadline(self) -> float:
        """When ``tick`` must run next."""
        soon = self.next_hb
        if self.outbox and self.outbox_since + RESULT_DELAY < soon:
            soon = self.outbox_since + RESULT_DELAY
        if self.hello_at is not None:
            soon = min(soon, self.hello_at + self._known_limit())
        return soon

    def _take(self) -> list:
        out, self._out = self._out, []
        return out

    # -- link events ------------------------------------------------------------------
    def link_up(self, now: float) -> list:
        log.info("secure link to the server is up")
        self.linked = True
        self.link.up()
        self._hello(now)
        return self._take()

    def link_down(self, now: float) -> list:
        self.linked = False
        if self.state != "connecting":
            self.state = "connecting"
        self.link.down()
        return self._take()

    def auth_refused(self, now: float) -> list:
        self.linked = False
        self._stop("the server refused this node's key (revoked, rejected or deleted);"
                   " ask the operator, or enroll again with a new home")
        return self._take()

    def handshake_failed(self, now: float, quick: bool = False) -> list:
        """A handshake failed; ``quick`` when the peer closed it (linkstate.py)."""
        self.linked = False
        reason = self.link.failed(now, quick)
        if reason is not None:
            self._stop(reason)
        return self._take()

    def _hello(self, now: float) -> None:
        self._out.append(Send(M.Hello(self.name, self.version, self.boot, self.facts)))
        self.hello_at = now

    def _stop(self, reason: str, code: int = 1) -> None:
        if self.stopped is None:
            self.stopped = Stop(code, reason)
            self._out.append(self.stopped)

    # -- server messages --------------------------------------------------------------
    def frames(self, frames: Any, now: float) -> list:
        """One message from the server, as frames; anything malformed is dropped."""
        try:
            msg = M.decode(frames)
        except ProtocolError as exc:
            job_id = getattr(exc, "job_id", None)
            if job_id is None:
                log.warning("bad message from the server (dropped): %s", exc)
                return self._take()
            self.hello_at = None  # it decoded far enough to be the server talking
            self._malformed_job(job_id, exc, now)
            return self._take()
        except Exception as exc:  # noqa: BLE001 - one message never ends the agent
            log.error("bad message from the server (dropped): %s: %s",
                      type(exc).__name__, exc)
            return self._take()
        return self.message(msg, now)

    def message(self, msg: M.Msg, now: float) -> list:
        """One decoded message from the server."""
        try:
            self._message(msg, now)
        except Exception as exc:  # noqa: BLE001 - one message never ends the agent
            log.error("handling %s from the server failed: %s: %s", msg.TYPE,
                      type(exc).__name__, exc, exc_info=exc)
        return self._take()

    def _message(self, msg: M.Msg, now: float) -> None:
        self.hello_at = None  # the server knows this key: it answered
        cls = msg.__class__
        if cls is M.Jobs:
            for job in msg.items:
                self._job(job, now)
            for job_id, problem in msg.refused:  # its id read: answered as failed
                self._malformed_job(job_id, problem, now)
            if len(msg.problems) > len(msg.refused):
                log.warning("%d malformed job(s) from the server (dropped): %s",
                            len(msg.problems), msg.problems[0])
        elif cls is M.Job:
            self._job(msg, now)
        elif cls is M.Ack:
            self.journal.acked(msg.job_ids)
        elif cls is M.Cancel:
            self._cancel(msg.job_ids, now)
        elif cls is M.Enrolled:
            self._enrolled(msg, now)
        elif cls is M.Revoked:
            self._stop(f"cut off by the server: {msg.reason}")
        elif cls is M.Error:
            if msg.code == "not_permitted" and self.state != "accepted":
                self.state = "pending"
                self._out.append(Send(M.EnrollStatus()))
            else:
                log.warning("server says: %s", msg.message)
        else:
            log.warning("unexpected %s from the server (ignored)", msg.TYPE)

    def _enrolled(self, msg: M.Enrolled, now: float) -> None:
        if msg.state == "accepted":
            if self.state != "accepted":
                log.info("accepted by the server as %s", msg.name)
                if self.state == "pending":
                    self._hello(now)
            self.state = "accepted"
            self.name = msg.name or self.name
            self._resend_unacked(now)
        elif msg.state == "pending":
            self.state = "pending"
            log.info("waiting for an operator to accept this node")
        else:
            self._stop(f"the server refused this node: {msg.reason or msg.state}")

    # -- job intake -------------------------------------------------------------------
    def _job(self, job: M.Job, now: float) -> None:
        job_id = job.job_id
        if job_id in self.known:
            return  # a resend (reconnect, server restart): it is already here
        lane = job.lane
        seen = self.journal.get(job_id)
        if seen is not None:
            if seen.state == "finished":  # already ran: answer again, never run it twice
                self.journal.resend(seen)
                self._result(seen.result, now)
                return
            if seen.boot == self.boot:
                return  # this run has it (a journal that lost track: never run twice)
            if seen.state != "received":  # a previous run started it: it may have run
                self._record(M.Result(job_id, "lost", error=RESTARTED), now, lane)
                return
            # received by a previous run but provably never started: run it now
        if lane in self.failed_lanes:  # pipelined before the server saw the failure
            self._record(GONE(job_id), now, lane)
            return
        if len(self.known) >= MAX_QUEUED:
            self._record(M.Result(job_id, "failed", error="too many jobs queued on this node"),
                         now, lane)
            return
        self.journal.received(job_id, lane, self.boot)
        self.known.add(job_id)
        dq = self.lanes.get(lane)
        if dq is None:
            dq = self.lanes[lane] = deque()
        dq.append(job)
        if lane not in self.active and lane not in self.waiting:
            self._advance(lane)

    def _malformed_job(self, job_id: str, exc: ProtocolError | str, now: float) -> None:
        log.warning("malformed job %s from the server: %s", job_id, exc)
        if job_id in self.known:
            return
        seen = self.journal.get(job_id)
        if seen is not None:
            if seen.state == "finished":
                self.journal.resend(seen)
                self._result(seen.result, now)
                return
            if seen.boot == self.boot:
                return
            if seen.state != "received":
                self._record(M.Result(job_id, "lost", error=RESTARTED), now)
                return
        self._record(M.Result(job_id, "failed", error=f"malformed job: {exc}"[:M.MAX_TEXT]),
                     now)

    def _advance(self, lane: str) -> None:
        """Start the lane's next job, unless it must wait for a process slot."""
        dq = self.lanes.get(lane)
        if not dq:
            self.lanes.pop(lane, None)
            return
        job = dq[0]
        copy = is_copy(job.instruction)
        if not copy and self.slots >= MAX_PROCESSES:
            self.waiting[lane] = None
            return
        dq.popleft()
        if not dq:
            del self.lanes[lane]
        self.active[lane] = job.job_id
        self.running[job.job_id] = job
        # a COPY's start is committed before it begins; a RUN is spawned gated and its
        # start (with its pid) is committed before it is released
        self.journal.starting(job.job_id, self.boot, durable=copy)
        if copy:
            self._out.append(StartCopy(job))
        else:
            self.slots += 1
            self._out.append(StartRun(job))

    # -- jobs ending ------------------------------------------------------------------
    def job_ended(self, job_id: str, outcome: Any, now: float) -> list:
        """A job started here ended (process exit, immediate verb, COPY) with an
        ``executor.Outcome``: report it, then go on with its lane and waiting lanes."""
        try:
            self._ended(job_id, outcome, now)
        except Exception as exc:  # noqa: BLE001 - a job never ends the agent
            log.error("job %s: recording its end failed: %s: %s", job_id,
                      type(exc).__name__, exc, exc_info=exc)
        return self._take()

    def _ended(self, job_id: str, outcome: Any, now: float) -> None:
        job = self.running.pop(job_id, None)
        if job is None:
            log.warning("job %s ended but was not running here (ignored)", job_id)
            return
        lane = job.lane
        if self.active.get(lane) == job_id:
            del self.active[lane]
        if not is_copy(job.instruction):
            self.slots -= 1
        result = result_of(job_id, outcome)
        if self.cancelling:
            result = self._as_cancelled(result)
        self._record(result, now, lane)
        if result.status != "success":
            self.failed_lanes[lane] = True
            self.waiting.pop(lane, None)
            for queued in self.lanes.pop(lane, ()):
                self.known.discard(queued.job_id)
                self._record(GONE(queued.job_id), now, lane)
        else:
            self._advance(lane)
        while self.waiting and self.slots < MAX_PROCESSES:
            nxt = next(iter(self.waiting))
            del self.waiting[nxt]
            self._advance(nxt)

    def _record(self, result: M.Result, now: float, lane: str = "") -> None:
        """A job's final result: journaled first (a resend is answered, not re-run;
        it stays in the outbox until acknowledged)."""
        self.journal.finished(result, self.boot, lane)
        self.known.discard(result.job_id)
        self._result(result, now)

    # -- after a restart --------------------------------------------------------------
    def interrupted(self, job_id: str, killed: bool, now: float) -> list:
        """A job a previous run of the agent started and never finished (its process
        group, when still there, was killed by the driver): it is lost, never re-run."""
        seen = self.journal.get(job_id)
        if seen is not None and seen.state != "finished" and seen.boot != self.boot:
            self._record(M.Result(job_id, "lost", error=KILLED if killed else RESTARTED),
                         now, seen.lane)
        return self._take()

    # -- time -------------------------------------------------------------------------
    def tick(self, now: float) -> list:
        """Heartbeats, the unknown-key deadline, and sending queued results once
        nothing else is about to finish: the node has no job running, or the
        oldest has waited RESULT_DELAY (a lone job's result goes at once; a stream
        of short jobs reports several per message)."""
        if self.outbox and (not self.slots or now - self.outbox_since >= RESULT_DELAY):
            self._flush()
        if now >= self.next_hb:
            if self.linked:
                self._out.append(Send(M.Heartbeat(running=len(self.active))))
            self.next_hb = now + self.heartbeat
        if self.hello_at is not None and now - self.hello_at > self._known_limit():
            self._stop("the server does not answer this node (its key is unknown there:"
                       " deleted?); enroll again: director enroll --server HOST --token TOKEN")
        return self._take()

    def _known_limit(self) -> float:
        """An unknown (e.g. deleted) key gets no answer at all: this long after HELLO."""
        return max(5.0, 3 * self.heartbeat)

    # -- control socket ---------------------------------------------------------------
    def control(self, ident: Any, frames: Any) -> list:
        """One operator request from the local control socket; always one reply."""
        self._out.append(Reply(ident, answer(frames, {
            "role": "client", "name": self.name, "state": self.state,
            "serving": self.linked and self.state == "accepted", "version": self.version})))
        return self._take()
