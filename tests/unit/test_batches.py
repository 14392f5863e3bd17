"""The batch gate (server/batches.py) and how N|P% is written (batchsize.py): pure.

The state machine drives a Gate the way the JobBook does -- tasks made a slice at a
time, tasks ending with any status, the operator cancelling jobs, the server
restarting (the rollout rebuilt from the statuses a store would hold) -- and checks
that batches never overlap, no batch starts past --max-failures, and nothing is
left held when nothing runs."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant, precondition,
                                 rule)

from director.batchsize import Share, parse_share, rollout_options
from director.errors import ConfigError
from director.server import batches
from director.server.batches import FAILING, HOLD, RUN, Gate, Rollout
from director.server.scheduler import Task


# -- N|P% -------------------------------------------------------------------------------
@pytest.mark.parametrize("text, total, want", [
    ("1", 3, 1), ("2", 3, 2), ("10", 3, 10), (" 3 ", 5, 3), (4, 9, 4),
    ("50%", 3, 2), ("10%", 3, 1), ("1%", 1000, 10), ("100%", 7, 7), ("34%", 3, 2),
])
def test_a_share_is_a_count_or_a_percentage_rounded_up_to_at_least_one(text, total, want):
    assert parse_share(text, "--batch").of(total) == want


@pytest.mark.parametrize("text", ["0", "-1", "0%", "101%", "abc", "1.5", "", "%", "5 %",
                                  "2%%", "1e3", None, True, 2.0, "99999999999", "-5%"])
def test_a_bad_batch_is_one_clear_line(text):
    with pytest.raises(ConfigError) as exc:
        parse_share(text, "--batch")
    assert str(exc.value).startswith("--batch ")
    assert "\n" not in str(exc.value)


def test_max_failures_may_be_zero_and_zero_percent_is_none():
    assert parse_share("0", "--max-failures", zero_ok=True).of(5) == 0
    assert parse_share("0%", "--max-failures", zero_ok=True).of(5) == 0
    assert parse_share("20%", "--max-failures", zero_ok=True).of(5) == 1
    for bad in ("-1", "101%", "x"):
        with pytest.raises(ConfigError):
            parse_share(bad, "--max-failures", zero_ok=True)


def test_max_failures_needs_batch():
    assert rollout_options(None, None) == {}
    assert rollout_options("2", None) == {"batch": "2"}
    assert rollout_options(" 25% ", 0) == {"batch": "25%", "max_failures": "0"}
    with pytest.raises(ConfigError, match="--max-failures needs --batch"):
        rollout_options(None, "1")


def test_share_text_is_what_the_operator_wrote():
    assert parse_share("30%", "--batch") == Share("30%", percent=30)


# -- the gate, by example ---------------------------------------------------------------
def _rollout(nodes: list[str], per_node: int, size: int, max_failures: int | None,
             jobs: list[str]) -> Rollout:
    return Rollout("o", nodes, dict.fromkeys(nodes, per_node), size, max_failures,
                   str(max_failures), jobs)


def test_the_next_batch_starts_when_every_task_of_the_last_is_final():
    gate = Gate()
    gate.add(_rollout(["a", "b", "c"], 2, 2, None, ["j1", "j2"]))
    tasks = {(j, n): Task(j, n, "o.0", i, 60) for i, j in enumerate(["j1", "j2"])
             for n in "abc"}
    verdicts = {k: gate.admit(t) for k, t in tasks.items()}
    assert {k for k, v in verdicts.items() if v == HOLD} == {("j1", "c"), ("j2", "c")}
    assert gate.held == 2
    for k in [("j1", "a"), ("j2", "a"), ("j1", "b")]:
        tasks[k].status = "success"
        assert gate.final(tasks[k]) is None      # b's second task still runs
    tasks[("j2", "b")].status = "failed"
    step = gate.final(tasks[("j2", "b")])
    assert step is not None and step.release == [tasks[("j1", "c")], tasks[("j2", "c")]]
    assert step.cancel == [] and gate.held == 0
    for k in [("j1", "c"), ("j2", "c")]:
        tasks[k].status = "success"
        gate.final(tasks[k])
    assert gate.by_job == {}                     # done: forgotten


def test_over_max_failures_the_held_batches_end_saying_why():
    gate = Gate()
    gate.add(_rollout(["a", "b", "c"], 1, 1, 1, ["j"]))
    ts = [Task("j", n, "o.0", 1, 60) for n in "abc"]
    assert [gate.admit(t) for t in ts] == [RUN, HOLD, HOLD]
    ts[0].status = "failed"
    step = gate.final(ts[0])                     # 1 failed: not over 1
    assert step is not None and step.release == [ts[1]]
    ts[1].status = "timeout"
    step = gate.final(ts[1])                     # 2 failed: over 1
    assert step is not None and step.release == [] and step.cancel == [ts[2]]
    assert step.reason == "not started: 2 of 3 targets failed, over --max-failures 1"
    ts[2].status = "cancelled"
    assert gate.final(ts[2]) is None and gate.by_job == {} and gate.held == 0
    late = Task("j", "c", "o.0", 1, 60)
    assert gate.admit(late) == RUN               # forgotten rollouts hold nothing


def test_the_operator_cancelling_takes_the_held_tasks_of_those_jobs_only():
    gate = Gate()
    gate.add(_rollout(["a", "b"], 2, 1, None, ["j1", "j2"]))
    ts = {(j, n): Task(j, n, "o.0", 1, 60) for j in ("j1", "j2") for n in "ab"}
    for t in ts.values():
        gate.admit(t)
    taken = gate.take_held({"j2"})
    assert taken == [ts[("j2", "b")]] and taken[0].status == "cancelled"
    assert gate.held == 1
    gate.final(taken[0])
    for k in [("j1", "a"), ("j2", "a")]:
        ts[k].status = "success"
        step = gate.final(ts[k])
    assert step is not None and step.release == [ts[("j1", "b")]]


# -- the gate, as a state machine ---------------------------------------------------------
class FakeStore:
    """What a restart reads from the results table (pure logic: a dict)."""

    def __init__(self, statuses: dict[tuple[str, str], str], jobs: list[str]):
        self.statuses, self.jobs = statuses, jobs

    def rollout_results(self, orch: str) -> list[tuple[str, str]]:
        return [(node, st) for (_job, node), st in self.statuses.items()]

    def orch_jobs(self, orch: str) -> list[str]:
        return self.jobs


class GateMachine(RuleBasedStateMachine):
    @initialize(nodes=st.integers(1, 6), jobs=st.integers(1, 3), size=st.integers(1, 4),
                limit=st.one_of(st.none(), st.integers(0, 3)), data=st.data())
    def start(self, nodes, jobs, size, limit, data):
        self.nodes = [f"n{i}" for i in range(nodes)]
        self.jobs = [f"j{i}" for i in range(jobs)]
        # each job on a subset of the nodes (steps with their own targets)
        self.fanout = []
        for j in self.jobs:
            on = data.draw(st.lists(st.sampled_from(self.nodes), min_size=1, unique=True))
            self.fanout += [(j, n) for n in sorted(on)]
        order = []
        for _, n in self.fanout:
            if n not in order:
                order.append(n)
        expected = {n: sum(1 for _, m in self.fanout if m == n) for n in order}
        self.order, self.size, self.limit = order, size, limit
        self.gate = Gate()
        self.gate.add(Rollout("o", order, expected, size, limit, str(limit), self.jobs))
        self.batch_of = {n: i // size for i, n in enumerate(order)}
        self.unmade = list(self.fanout)          # made in job order, a slice at a time
        self.tasks: dict[tuple[str, str], Task] = {}
        self.state: dict[tuple[str, str], str] = {}   # run / held / final status
        self.failed: set[str] = set()
        self.started: set[int] = set()            # batches with a task that ran

    # -- what the JobBook does ------------------------------------------------------
    def _ended(self, task: Task, status: str) -> None:
        key = (task.job_id, task.node)
        assert self.state[key] in ("run", "held", "new"), f"{key} ended twice"
        task.status = status
        self.state[key] = status
        if status in FAILING:
            self.failed.add(task.node)
        self._apply(self.gate.final(task))

    def _apply(self, step) -> None:
        if step is None:
            return
        for t in step.cancel:
            assert self.state[(t.job_id, t.node)] == "held"
            assert len(self.failed) > self.limit
            assert step.reason == (f"not started: {len(self.failed)} of {len(self.order)}"
                                   f" targets failed, over --max-failures {self.limit}")
            self._ended(t, "cancelled")
        for t in step.release:
            assert self.state[(t.job_id, t.node)] == "held"
            self._run(t)

    def _run(self, task: Task) -> None:
        b = self.batch_of[task.node]
        if b not in self.started:
            # a batch starts only when every earlier one is over, within the limit
            assert all(self.state.get(k) not in (None, "run", "held", "new")
                       for k in self.fanout if self.batch_of[k[1]] < b), "batches overlap"
            assert self.limit is None or b == 0 or len(self.failed) <= self.limit
            self.started.add(b)
        self.state[(task.job_id, task.node)] = "run"

    @precondition(lambda self: self.unmade)
    @rule(n=st.integers(1, 8))
    def make(self, n):
        for key in self.unmade[:n]:
            task = self.tasks[key] = Task(key[0], key[1], "o.0", 1, 60)
            self.state[key] = "new"
            verdict = self.gate.admit(task)
            if verdict == RUN:
                self._run(task)
            elif verdict == HOLD:
                self.state[key] = "held"
            else:
                assert verdict.startswith("not started: ")
                self._ended(task, "cancelled")
        del self.unmade[:n]

    @precondition(lambda self: any(s == "run" for s in self.state.values()))
    @rule(data=st.data(), status=st.sampled_from(
        ["success", "failed", "timeout", "lost", "cancelled"]))
    def end(self, data, status):
        key = data.draw(st.sampled_from(sorted(k for k, s in self.state.items() if s == "run")))
        self._ended(self.tasks[key], status)

    @rule(data=st.data())
    def operator_cancels(self, data):
        wanted = set(data.draw(st.lists(st.sampled_from(self.jobs), max_size=2)))
        for t in self.gate.take_held(wanted):
            assert t.job_id in wanted
            assert self.state[(t.job_id, t.node)] == "held"
            self._ended(t, "cancelled")

    @precondition(lambda self: not self.unmade)
    @rule()
    def restart(self):
        """kill -9 and back: the rollout rebuilt from the stored statuses holds,
        runs and ends exactly what the live one did (a task queued in a released
        batch runs; one in a held batch stays held)."""
        stored = {k: ("queued" if s in ("run", "held") else s) for k, s in self.state.items()}
        gate = Gate()
        row = {"targets": batches.json.dumps(self.order),
               "settings": batches.json.dumps({"batch": str(self.size), **(
                   {} if self.limit is None else {"max_failures": str(self.limit)})})}
        rebuilt = batches._rebuilt(FakeStore(stored, self.jobs), "o", row)
        assert rebuilt is not None
        gate.add(rebuilt)
        for key, s in self.state.items():
            if s in ("run", "held"):
                task = self.tasks[key]
                task.status = "queued"
                verdict = gate.admit(task)
                assert verdict == {"run": RUN, "held": HOLD}[s], (key, s, verdict)
        assert gate.held == self.gate.held
        self.gate = gate

    @invariant()
    def held_count_is_right(self):
        if hasattr(self, "gate"):
            assert self.gate.held == sum(1 for s in self.state.values() if s == "held")

    @invariant()
    def at_most_one_batch_runs(self):
        if hasattr(self, "gate"):
            running = {self.batch_of[n] for (_, n), s in self.state.items() if s == "run"}
            assert len(running) <= 1
            nodes = {n for (_, n), s in self.state.items() if s == "run"}
            assert len(nodes) <= self.size

    @invariant()
    def nothing_stuck(self):
        """When nothing runs and everything is made, nothing is held either."""
        if hasattr(self, "gate") and not self.unmade and \
                not any(s == "run" for s in self.state.values()):
            assert not any(s == "held" for s in self.state.values())
            assert self.gate.by_job == {}


TestGate = GateMachine.TestCase
TestGate.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)
