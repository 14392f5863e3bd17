"""Rolling deploys: ``--batch N|P%`` and ``--max-failures N|P%`` (like Salt's ``-b``
and Ansible's ``serial`` / ``max_fail_percentage``).

A batched submission's targets are split, in target order, into batches of that
many nodes.  The tasks (every job on a node) of later batches are held here, out
of the scheduler; the next batch is released when every task of the current one is
final.  A target *fails* if any of its tasks ends failed, timeout or lost; once more
targets failed than ``--max-failures`` allows, no further batch starts and the held
tasks end ``cancelled``, saying why.

``Rollout`` and ``Gate`` are pure bookkeeping (no clock, no I/O); the functions at
the end are the JobBook's hooks (where tasks are made, end, are cancelled, and are
reloaded after a restart).  The settings and the target order are stored with the
submission (the ``rollouts`` table), and the progress is rebuilt from the stored
results, so a server killed mid-rollout resumes where it was: held tasks are neither
sent early nor lost.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from director.batchsize import parse_share, rollout_options
from director.errors import ConfigError
from director.server.scheduler import Task

log = logging.getLogger("director.jobs")

FAILING = frozenset({"failed", "timeout", "lost"})
OPEN = frozenset({"queued", "running"})
RUN, HOLD = "run", "hold"   # what ``admit`` says; anything else is a cancel reason


@dataclass
class Step:
    """What a task's end set going: tasks of the next batch(es) to queue, or (the
    rollout stopped) the held tasks to end ``cancelled`` with ``reason``."""

    release: list[Task] = field(default_factory=list)
    cancel: list[Task] = field(default_factory=list)
    reason: str = ""


class Rollout:
    """One batched submission: which batch runs, what is held, what failed."""

    def __init__(self, orch: str, order: list[str], expected: dict[str, int], size: int,
                 max_failures: int | None, label: str, job_ids: list[str]):
        self.orch = orch
        self.order = order                     # node keys, in target order
        self.size = max(1, size)
        self.max_failures = max_failures       # None: no limit
        self.label = label                     # --max-failures as the operator wrote it
        self.job_ids = job_ids
        self.expected = expected               # node -> its tasks in the submission
        self.batch_of = {n: i // self.size for i, n in enumerate(order)}
        self.batches = -(-len(order) // self.size)
        self.open_in = [0] * self.batches      # batch -> its tasks not final yet
        for node, n in expected.items():
            self.open_in[self.batch_of[node]] += n
        self.left = sum(expected.values())     # tasks not final yet, in every batch
        self.failed: set[str] = set()
        self.failed_in = [0] * self.batches    # batch -> its targets that failed
        self.current = 0                       # the newest batch released
        self.counted = 0                       # failed targets in batches released
        self.stopped = ""                      # why no further batch starts
        self.held: dict[int, list[Task]] = {}  # batch -> its tasks made and held

    def admit(self, task: Task) -> str:
        """RUN (its batch was released), HOLD (kept here till its batch is), or why it
        ends at once: the rollout stopped before its batch."""
        b = self.batch_of.get(task.node)
        if b is None or b <= self.current or task.status == "running":
            return RUN  # (a task already on its node is never held back)
        if self.stopped:
            return self.stopped
        self.held.setdefault(b, []).append(task)
        return HOLD

    def note_final(self, node: str, status: str) -> None:
        """One of ``node``'s tasks is final (counted once per task)."""
        b = self.batch_of.get(node)
        if b is None:
            return
        self.left -= 1
        self.open_in[b] -= 1
        if status in FAILING and node not in self.failed:
            self.failed.add(node)
            self.failed_in[b] += 1
            self.counted += b <= self.current

    def final(self, node: str, status: str) -> Step | None:
        self.note_final(node, status)
        if self.batch_of.get(node) != self.current or self.stopped:
            return None
        return self.advance()

    def advance(self) -> Step | None:
        """Past every finished batch: release the next, or stop (over the limit)."""
        step = Step()
        while self.current < self.batches - 1 and self.open_in[self.current] <= 0:
            # (after a restart, failures of later batches are known already: at each
            # boundary only those of the batches run so far count, as they did then)
            if self.max_failures is not None and self.counted > self.max_failures:
                self.stopped = (f"not started: {self.counted} of {len(self.order)}"
                                f" targets failed, over --max-failures {self.label}")
                step.cancel = [t for b in sorted(self.held) for t in self.held[b]]
                step.reason = self.stopped
                self.held.clear()
                return step
            self.current += 1
            self.counted += self.failed_in[self.current]
            step.release += self.held.pop(self.current, [])
        return step if step.release else None

    def held_count(self) -> int:
        return sum(len(ts) for ts in self.held.values())


class Gate:
    """Every rollout in progress, by job id; ``held``: tasks held, all rollouts."""

    def __init__(self) -> None:
        self.by_job: dict[str, Rollout] = {}
        self.held = 0
        self.settings: dict[str, Any] = {}            # orch -> stored row (None: none)
        self.reloaded: dict[str, list[Task]] = {}     # orch -> open tasks, at a restart

    def add(self, rollout: Rollout | None) -> None:
        if rollout is not None and rollout.left > 0:
            self.by_job.update(dict.fromkeys(rollout.job_ids, rollout))

    def admit(self, task: Task) -> str:
        rollout = self.by_job.get(task.job_id)
        if rollout is None:
            return RUN
        verdict = rollout.admit(task)
        self.held += verdict == HOLD
        return verdict

    def final(self, task: Task) -> Step | None:
        rollout = self.by_job.get(task.job_id)
        if rollout is None:
            return None
        before = rollout.held_count()
        step = rollout.final(task.node, task.status)
        self.held -= before - rollout.held_count()
        if rollout.left <= 0:
            for job_id in rollout.job_ids:
                self.by_job.pop(job_id, None)
        return step

    def take_held(self, job_ids: set[str]) -> list[Task]:
        """The operator cancelled ``job_ids``: their held tasks leave (ended by the
        caller, ``cancelled``; their rollout counts them as they end)."""
        out: list[Task] = []
        for rollout in {id(r): r for j in job_ids if (r := self.by_job.get(j))}.values():
            for b, tasks in list(rollout.held.items()):
                keep = [t for t in tasks if t.job_id not in job_ids]
                out += [t for t in tasks if t.job_id in job_ids]
                if keep:
                    rollout.held[b] = keep
                else:
                    del rollout.held[b]
        for t in out:
            t.status = "cancelled"
        self.held -= len(out)
        return out


# -- the JobBook's hooks ------------------------------------------------------------------
def plan(args: dict, sub: Any) -> Rollout | None:
    """The rollout of a planned submission (None without ``--batch``); its settings go
    with the first job row, so they are stored in the submission's transaction."""
    if args.get("batch") is None and args.get("max_failures") is None:
        return None
    given = rollout_options(args.get("batch"), args.get("max_failures"))
    order: list[str] = []
    expected: dict[str, int] = {}
    for _job_id, _lane, _seq, _timeout, names in sub.fanout:
        for name in names:
            key = sub.keys[name]
            if key not in expected:
                order.append(key)
                expected[key] = 0
            expected[key] += 1
    rollout = _made(sub.orch, order, expected, given, [j["id"] for j in sub.jobs])
    sub.jobs[0]["rollout"] = {"targets": json.dumps(order), "settings": json.dumps(given)}
    return rollout


def _made(orch: str, order: list[str], expected: dict[str, int], given: dict[str, str],
          job_ids: list[str]) -> Rollout:
    total = len(order)
    size = parse_share(given["batch"], "--batch").of(total)
    limit = given.get("max_failures")
    max_failures = None if limit is None else \
        parse_share(limit, "--max-failures", zero_ok=True).of(total)
    return Rollout(orch, order, expected, size, max_failures, limit or "", job_ids)


def held_back(book: Any, task: Task, now: float) -> bool:
    """Where a task is made: True if the gate keeps it (held, or ended at once)."""
    verdict = book.rollouts.admit(task)
    if verdict == RUN:
        return False
    if verdict != HOLD:
        task.status = "cancelled"
        book._final(task, {"status": "cancelled", "error": verdict}, now)
    return True


def after_final(book: Any, task: Task, now: float) -> None:
    """Where a task ends: its batch may be done, so the next starts (or none does)."""
    step = book.rollouts.final(task)
    if step is None:
        return
    for t in step.cancel:
        t.status = "cancelled"
        book._final(t, {"status": "cancelled", "error": step.reason}, now)
    for t in step.release:
        t.queued_at = now  # an offline node's expiry counts from its batch's start
    if step.release:
        book._add_tasks(step.release, now)


def reloading(book: Any, orch: str, task: Task) -> bool:
    """At a restart, for each open task: True if it belongs to a rollout (kept aside
    until ``resume`` has rebuilt that rollout from the stored results)."""
    gate = book.rollouts
    if orch not in gate.settings:
        gate.settings[orch] = book.store.rollout(orch)
    if gate.settings[orch] is None:
        return False
    gate.reloaded.setdefault(orch, []).append(task)
    return True


def resume(book: Any, now: float) -> list[Task]:
    """At a restart, after every open task was read: each rollout rebuilt from what
    its stored results say, its open tasks held or ended (it had stopped); returns the
    ones that may run (the caller queues them, past its other gates)."""
    gate = book.rollouts
    ended: list[tuple[Task, str]] = []
    run: list[Task] = []
    for orch, tasks in gate.reloaded.items():
        rollout = _rebuilt(book.store, orch, gate.settings[orch])
        gate.add(rollout)
        for task in tasks:
            verdict = RUN if rollout is None else gate.admit(task)
            if verdict == RUN:
                run.append(task)
            elif verdict != HOLD:
                ended.append((task, verdict))
    gate.reloaded.clear()
    gate.settings.clear()
    for task, reason in ended:
        task.status = "cancelled"
        book._final(task, {"status": "cancelled", "error": reason}, now)
    return run


def stored_settings(store: Any, orch: str) -> dict[str, str]:
    """``{"batch": ..., "max_failures": ...}`` as ``orch`` was submitted ({}: not in
    batches, or unreadable): ``job retry`` rolls out again the same way."""
    row = store.rollout(orch)
    try:
        given = json.loads(row["settings"]) if row is not None else {}
        return rollout_options(given.get("batch"), given.get("max_failures"))
    except (ValueError, TypeError, AttributeError, ConfigError):
        return {}


def _rebuilt(store: Any, orch: str, row: Any) -> Rollout | None:
    try:
        order = json.loads(row["targets"])
        given = json.loads(row["settings"])
        if not isinstance(order, list) or not isinstance(given, dict):
            raise ValueError("not a list and a dict")
        expected: dict[str, int] = dict.fromkeys(order, 0)
        done: list[tuple[str, str]] = []
        for node, status in store.rollout_results(orch):
            if node in expected:
                expected[node] += 1
                if status not in OPEN:
                    done.append((node, status))
        rollout = _made(orch, order, expected, given, store.orch_jobs(orch))
    except (ValueError, TypeError, KeyError, ConfigError) as exc:
        log.error("orchestration %s: its batch settings are unreadable (%s): its tasks run"
                  " unbatched", orch, exc)
        return None
    for node, status in done:
        rollout.note_final(node, status)
    rollout.advance()  # nothing is held yet: this only finds the batch (or the stop)
    return rollout
