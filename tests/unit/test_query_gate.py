"""The QUERY barrier core (server/queries.py) against a model: tasks after a QUERY are
never let through before it is final on every target, each task ends once, nothing is
held for ever, the answers a job carries are exactly those of the QUERYs before it, and
the gate forgets a submission once it is done (hypothesis state machine)."""

from __future__ import annotations

import json

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from director.server.cancel import BEFORE_SENT
from director.server.queries import HELD, QueryGate
from director.server.scheduler import Task

ORCH = "0123abcd"
NODES = ("n1", "n2", "n3")


class Gate(RuleBasedStateMachine):
    @initialize(verbs=st.lists(st.sampled_from(["QUERY", "RUN", "READ"]), min_size=1,
                               max_size=6),
                lanes=st.lists(st.sampled_from([".0", ".0", ".1"]), min_size=6, max_size=6))
    def submit(self, verbs, lanes):
        self.gate = QueryGate()
        self.jobs = []
        self.bodies: dict[str, bytes] = {}
        for seq, verb in enumerate(verbs, 1):
            job_id = f"{ORCH}{seq:04x}"
            self.jobs.append((job_id, seq, verb, ORCH + lanes[seq - 1]))
            text = "echo {{ query }}" if verb == "READ" else "x"
            self.bodies[job_id] = json.dumps({"job_id": job_id, "text": text}).encode()
        self.gate.planned([{"id": j, "orch": ORCH, "seq": s, "verb": "QUERY" if v == "QUERY"
                            else "RUN", "instruction": '{"name": "a"}'}
                           for j, s, v, _ in self.jobs], {j: len(NODES) for j, *_ in self.jobs})
        self.sent: list[Task] = []
        self.held: list[Task] = []
        self.ended: dict[tuple[str, str], str] = {}
        self.answers: dict[str, dict[str, object]] = {}   # query job id -> node -> value
        self.stopped: set[tuple[str, str]] = set()
        tasks = [Task(j, n, lane, s, 60.0) for j, s, _, lane in self.jobs for n in NODES]
        self._add(tasks)

    # -- the book's side, as JobBook does it ----------------------------------------
    def _add(self, tasks):
        for t in tasks:
            if t in self.held:  # released by the gate: admitted again
                self.held.remove(t)
            verdict = self.gate.admit(t, self.bodies)
            if verdict is None:
                self.sent.append(t)
            elif verdict is HELD:
                self.held.append(t)
            else:
                assert verdict["status"] in ("cancelled", "failed")
                self._end(t, verdict)

    def _end(self, t, fields):
        key = (t.job_id, t.node)
        assert key not in self.ended, "a task ended twice"
        self.ended[key] = fields["status"]
        if t in self.held:
            self.held.remove(t)
        if fields["status"] != "success" and fields.get("error") != BEFORE_SENT:
            self.stopped.add((t.node, t.lane))  # as a failure stops a lane
        self._add(self.gate.final(t, fields, lambda key: key))

    def _verb(self, t):
        return next(v for j, _, v, _ in self.jobs if j == t.job_id)

    def _open_before(self, seq):
        return [j for j, s, v, _ in self.jobs if v == "QUERY" and s < seq and any(
            (j, n) not in self.ended for n in NODES)]

    # -- rules ------------------------------------------------------------------------
    @precondition(lambda self: self.sent)
    @rule(data=st.data(), status=st.sampled_from(["success", "success", "failed", "lost"]),
          value=st.one_of(st.none(), st.integers(), st.text(max_size=5),
                          st.lists(st.booleans(), max_size=2)))
    def finish(self, data, status, value):
        t = self.sent.pop(data.draw(st.integers(0, len(self.sent) - 1)))
        stdout = "" if value is None else json.dumps(value)
        if status == "success" and self._verb(t) == "QUERY" and value is not None:
            self.answers.setdefault(t.job_id, {})[t.node] = value
        self._end(t, {"status": status, "stdout": stdout})

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def cancel(self, data):
        job_id = data.draw(st.sampled_from(sorted({t.job_id for t in self.held})))
        for t in self.gate.drop_jobs({job_id}):
            assert t.job_id == job_id
            self._end(t, {"status": "cancelled", "error": BEFORE_SENT})
        assert all(t.job_id != job_id for t in self.held)

    @precondition(lambda self: not self.sent and not self.held)
    @rule()
    def all_done(self):
        assert self.gate.orchs == {} and self.gate.held == 0

    # -- what must always hold ------------------------------------------------------------
    @invariant()
    def nothing_passes_an_open_query(self):
        for t in self.sent:
            assert not self._open_before(t.seq), (t, self._open_before(t.seq))

    @invariant()
    def held_tasks_wait_for_a_query_and_are_counted(self):
        for t in self.held:
            assert self._open_before(t.seq)
            assert (t.node, t.lane) not in self.stopped
        assert self.gate.held == len(self.held)

    @invariant()
    def readers_carry_the_answers_of_the_queries_before_them(self):
        for t in self.sent:
            body = json.loads(self.bodies[t.job_id])
            if self._verb(t) != "READ":
                assert "query" not in body
                continue
            want: dict[str, dict] = {}
            for j, s, v, _ in self.jobs:
                if v == "QUERY" and s < t.seq:
                    for node, value in self.answers.get(j, {}).items():
                        want.setdefault(node, {})["a"] = value
            assert body.get("query", {}) == want if any(
                v == "QUERY" and s < t.seq for _, s, v, _ in self.jobs) else "query" not in body

    @invariant()
    def a_finished_submission_is_forgotten(self):
        if not self.sent and not self.held:
            assert len(self.ended) == len(self.jobs) * len(NODES)
            assert self.gate.orchs == {} and self.gate.held == 0


Gate.TestCase.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)
test_query_gate = Gate.TestCase
