"""Hostile sequences against the agent core: a hypothesis state machine.

Random interleavings of valid and malformed server messages (huge ints,
NaN/Infinity, lone surrogates, wrong types, unknown types, duplicate jobs, jobs
for failed lanes), link changes, control requests, jobs ending with odd
outcomes and ticks, ACKs (of ids it answered and foreign ones), reconnects and
agent restarts -- a clean stop or a crash that loses every uncommitted journal
write -- each a new core over the same SQLite journal file.  The harness commits
the journal the way the agent driver does (before any spawn, before any result
is sent, at the end of a turn).  Invariants: nothing raises; a job id starts at
most once across restarts and never after it was answered; every result sent
stays in the journal's outbox until an ACK names it and goes again after each
accepted (re)connection; every answer for an id is the same; everything sent
encodes and decodes back unchanged; per-job state stays bounded.

CI runs a small budget; ``DIRECTOR_FUZZ_EXAMPLES=5000`` runs many more.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from director.client import core as C
from director.client.actions import Reply, Send, StartCopy, StartRun, Stop, StopJob
from director.client.journal import Journal
from director.jobs.dsl import parse_line
from director.jobs.executor import Outcome
from director.protocol import messages as M

EXAMPLES = int(os.environ.get("DIRECTOR_FUZZ_EXAMPLES", "200"))
IDS = [f"{n:08x}" for n in range(24)]
LANES = ["aaaaaaaa.0", "aaaaaaaa.1", "bbbbbbbb.0", "cccccccc.7"]
LINES = ["RUN true", "RUN echo hi", "ARG x=1", "ENV A=b", "WORKDIR sub", "COPY a /tmp/b"]
INSTR = {line: parse_line(line) for line in LINES}

nasty_scalar = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70), st.just(2**64), st.floats(),
    st.text(max_size=20), st.sampled_from(["a\ud800b", "\udfff", "\x00", "NaN"]),
    st.booleans(), st.none())
nasty_value = st.recursive(nasty_scalar, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=6)
field_names = st.sampled_from(["job_id", "instruction", "lane", "seq", "state", "name",
                               "reason", "code", "message", "jobs", "manifest", "hash_extra",
                               "verb", "command", "timeout"])
mtypes = st.sampled_from(["JOB", "JOBS", "ENROLLED", "REVOKED", "ERROR", "CHUNK", "RESULT",
                          "HELLO", "CTL", "NOPE", "", "J\u00d8B"])
outcome_st = st.builds(
    Outcome,
    status=st.sampled_from(["success", "success", "failed", "timeout", "cancelled", "bogus"]),
    rc=st.one_of(st.none(), st.integers(min_value=-(2**40), max_value=2**40)),
    stdout=st.text(max_size=20) | st.just("x\ud800"),
    stderr=st.text(max_size=20),
    exec_time=st.floats(),
    cached=st.booleans(),
    error=st.text(max_size=10),
    transfer=st.none() | st.dictionaries(st.sampled_from(list(M.Transfer.FIELDS)),
                                         st.integers(min_value=-5, max_value=2**60)))


def _raw(mtype: str, body: object) -> list[bytes]:
    # json.dumps writes NaN/Infinity and \ud800 escapes: exactly what a hostile peer may send
    return [b"D1", mtype.encode("utf-8", "surrogatepass"), json.dumps(body).encode()]


def _strict(value: object) -> bool:
    """True when ``value`` is strict JSON (NaN/Infinity make the whole body unreadable)."""
    try:
        json.dumps(value, allow_nan=False)
    except ValueError:
        return False
    return True


class AgentCoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.dir = Path(tempfile.mkdtemp(prefix="agentfuzz-"))
        self.boots = 0
        self.journal = Journal(self.dir / "journal.db")
        self.core = self._new_core()
        self.started: set[str] = set()          # across every restart
        self.running: dict[str, bool] = {}      # job id -> is a COPY
        self.ended: set[str] = set()
        self.answered: set[str] = set()         # ids with a result sent
        self.unacked: set[str] = set()          # sent, and no ACK named them since
        self.results: dict[str, list[M.Result]] = {}
        self.last_sent: list[str] = []
        self.acked_names: set[str] = set()

    def _new_core(self) -> C.AgentCore:
        self.boots += 1
        return C.AgentCore("node", f"boot{self.boots}", 1.0, self.now, journal=self.journal)

    # -- bookkeeping of everything the core asks for -----------------------------------
    def _apply(self, actions: list) -> None:
        self.last_sent = []
        j = self.journal
        for a in actions:
            cls = a.__class__
            if cls is StartCopy and j.must_commit:
                j.commit()  # as the driver: a COPY's start is durable before it begins
            if cls is Send and j.dirty and isinstance(a.msg, (M.Result, M.Results)):
                j.commit()  # as the driver: a result is journaled before it is sent
            if cls in (StartRun, StartCopy):
                jid = a.job.job_id
                assert jid not in self.started, f"job {jid} started twice"
                assert jid not in self.answered, f"job {jid} started after it was answered"
                self.started.add(jid)
                self.running[jid] = cls is StartCopy
                if cls is StartRun:  # as the driver: spawned gated, its pid journaled
                    j.started(jid, 4000 + len(self.started), 4000 + len(self.started), 1)
            elif cls is Send:
                msg = a.msg
                assert M.decode(M.encode(msg)) == msg  # the server reads what was meant
                items = msg.items if isinstance(msg, M.Results) else (
                    (msg,) if isinstance(msg, M.Result) else ())
                for r in items:
                    assert r.job_id not in self.running, f"result for running job {r.job_id}"
                    self.answered.add(r.job_id)
                    e = j.get(r.job_id)
                    assert e is not None and e.state == "finished", (r, e)
                    if e.acked:  # acked before it was sent (an ACK may name any id)
                        assert r.job_id in self.acked_names
                    else:
                        self.unacked.add(r.job_id)
                    self.last_sent.append(r.job_id)
                    self.results.setdefault(r.job_id, []).append(r)
            elif cls is Reply:
                M.decode(M.encode(a.msg))
            elif cls is StopJob:  # the driver kills it; its end comes later (job_ends)
                assert a.job_id in self.running, f"stop for {a.job_id}, not running"
            else:
                assert cls is Stop and a.code == 1
        if j.dirty:
            j.commit()  # as the driver: the rest of a turn rides on one commit

    def _delivered(self, job_id: str) -> None:
        pass

    # -- link ----------------------------------------------------------------------------
    @rule(what=st.sampled_from(["up", "down", "handshake", "auth"]))
    def link(self, what):
        fn = {"up": self.core.link_up, "down": self.core.link_down,
              "handshake": self.core.handshake_failed, "auth": self.core.auth_refused}[what]
        self._apply(fn(self.now))

    # -- server messages -------------------------------------------------------------------
    @rule(jid=st.sampled_from(IDS), lane=st.sampled_from(LANES), line=st.sampled_from(LINES),
          seq=st.integers(0, 10))
    def job(self, jid, lane, line, seq):
        self._delivered(jid)
        self._apply(self.core.frames(M.encode(M.Job(jid, INSTR[line], lane, seq)), self.now))

    @rule(jobs=st.lists(st.tuples(st.sampled_from(IDS), st.sampled_from(LANES),
                                  st.sampled_from(LINES)), min_size=2, max_size=8))
    def jobs_batch(self, jobs):
        items = tuple(M.Job(j, INSTR[line], lane, 0) for j, lane, line in jobs)
        for j, _, _ in jobs:
            self._delivered(j)
        self._apply(self.core.frames(M.encode(M.Jobs(items)), self.now))

    @rule(jid=st.sampled_from(IDS), instr=nasty_value, lane=st.sampled_from(LANES))
    def job_with_bad_instruction(self, jid, instr, lane):
        if _strict(instr):  # a job id that reads is answered, whatever the rest holds
            self._delivered(jid)
        self._apply(self.core.frames(_raw("JOB", {"job_id": jid, "instruction": instr,
                                                  "lane": lane, "seq": 0}), self.now))

    @rule(mtype=mtypes, body=st.dictionaries(field_names, nasty_value, max_size=5))
    def hostile_message(self, mtype, body):
        if (mtype == "JOB" and isinstance(body.get("job_id"), str) and body["job_id"] in IDS
                and _strict(body)):
            self._delivered(body["job_id"])
        self._apply(self.core.frames(_raw(mtype, body), self.now))

    @rule(fr=st.lists(st.binary(max_size=30), max_size=6))
    def garbage_frames(self, fr):
        self._apply(self.core.frames(fr, self.now))

    @rule(msg=st.sampled_from([M.Enrolled("accepted", "node"), M.Enrolled("pending", "node"),
                               M.Enrolled("rejected", "node", "no"), M.Revoked("gone"),
                               M.Error("not_permitted", "wait"), M.Error("internal", "x")]))
    def enrollment(self, msg):
        self._apply(self.core.frames(M.encode(msg), self.now)
                    + (self.core.flush() if getattr(msg, "state", "") == "accepted" else []))
        if getattr(msg, "state", "") == "accepted" and self.core.stopped is None:
            # accepted on a (re)connection: everything unacknowledged went again
            assert self.unacked <= set(self.last_sent), self.unacked - set(self.last_sent)

    @rule(ids=st.lists(st.sampled_from(IDS) | st.sampled_from(["ffffffff", "deadbeef"]),
                       max_size=6))
    def ack(self, ids):
        self._apply(self.core.frames(M.encode(M.Ack(tuple(ids))), self.now))
        self.unacked -= set(ids)
        self.acked_names |= set(ids)

    @rule(ids=st.lists(st.sampled_from(IDS) | st.sampled_from(["ffffffff", "deadbeef"]),
                       max_size=4))
    def cancel(self, ids):
        self._apply(self.core.frames(M.encode(M.Cancel(tuple(ids))), self.now))
        for jid in ids:  # nothing cancelled is queued here afterwards
            assert all(j.job_id != jid for dq in self.core.lanes.values() for j in dq)

    @rule()
    def reconnect(self):
        self._apply(self.core.link_down(self.now))
        self._apply(self.core.link_up(self.now))
        self.enrollment(M.Enrolled("accepted", "node"))

    @rule(crash=st.booleans())
    def restart(self, crash):
        """The agent stops (cleanly, or kill -9: uncommitted writes are gone) and a new
        one starts over the same journal file; what ran is killed with it."""
        if not crash:
            self._apply(self.core.flush())
            self.journal.close()
        else:
            self.journal.db.close()  # no COMMIT: SQLite rolls the open transaction back
        self.running.clear()
        self.journal = Journal(self.dir / "journal.db")
        self.core = self._new_core()
        for e in self.journal.interrupted(self.core.boot):
            assert e.job_id in self.started  # only what really started is "interrupted"
            self._apply(self.core.interrupted(e.job_id, False, self.now))

    # -- jobs ending, time, control --------------------------------------------------------
    @precondition(lambda self: self.running)
    @rule(data=st.data(), out=outcome_st)
    def job_ends(self, data, out):
        jid = data.draw(st.sampled_from(sorted(self.running)))
        del self.running[jid]
        self.ended.add(jid)
        self._apply(self.core.job_ended(jid, out, self.now))

    @rule(jid=st.sampled_from(IDS), out=outcome_st)
    def stray_end(self, jid, out):
        if jid not in self.running:
            before = len(self.core.running)
            self._apply(self.core.job_ended(jid, out, self.now))
            assert len(self.core.running) == before

    @rule(dt=st.sampled_from([0.0, 0.001, C.RESULT_DELAY, 0.5, 2.0, 10.0]))
    def tick(self, dt):
        self.now += dt
        self._apply(self.core.tick(self.now))

    @rule(body=st.dictionaries(st.sampled_from(["op", "args"]), nasty_value, max_size=2)
          | st.just({"op": "health", "args": {}}))
    def control(self, body):
        acts = self.core.control(b"who", _raw("CTL", body))
        assert len(acts) == 1 and acts[0].ident == b"who"
        self._apply(acts)

    # -- invariants ------------------------------------------------------------------------
    @invariant()
    def bounded(self):
        c = self.core
        assert 0 <= c.slots <= C.MAX_PROCESSES
        assert c.slots == sum(1 for copy in self.running.values() if not copy)
        assert set(c.running) == set(self.running)
        assert len(c.known) <= C.MAX_QUEUED and len(c.failed_lanes) <= C.REMEMBER
        assert len(c.outbox) < C.RESULT_BATCH
        assert len(c.active) == len(c.running)

    @invariant()
    def every_answer_for_an_id_is_the_same(self):
        for jid, got in self.results.items():
            assert all(r == got[0] for r in got), got  # never run twice: the same answer
        for jid in self.started:  # a started job is answered only once it ended
            if jid in self.running:
                assert jid not in self.answered or self.results[jid][0].status == "lost"

    @invariant()
    def every_sent_result_stays_until_acked(self):
        outbox = {r.job_id: r for r in self.journal.unacked()}
        for jid in self.unacked:
            assert jid in outbox, f"result of {jid} left the outbox unacked"
            assert outbox[jid] == self.results[jid][0]

    def teardown(self):
        try:
            self._apply(self.core.flush())
            if self.core.stopped is None:
                self.reconnect()  # what a crash kept in the journal goes on the next link
            for jid in self.ended:  # every job that ended was answered (or waits to be)
                e = self.journal.get(jid)
                assert e is not None and e.state == "finished", (jid, e)
                if self.core.stopped is None:
                    assert self.results.get(jid) or jid in self.acked_names, jid
        finally:
            self.journal.close()
            shutil.rmtree(self.dir, ignore_errors=True)


AgentCoreMachine.TestCase.settings = settings(
    max_examples=EXAMPLES, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
TestAgentCore = AgentCoreMachine.TestCase
