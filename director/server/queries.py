"""QUERY as a barrier of its submission (part of the server core: pure, no I/O, no clock).

``QUERY NAME`` asks every target for its value of ARG ``NAME``.  The jobs after it in
the same submission (any node, any lane) are *held* -- not handed to the scheduler, so
not sent -- until the QUERY is final on all its targets; then they go out with the
answers attached (the JOB's ``query`` field, ``{NODE: {NAME: value}}``), which their
templates read as ``{{ query.NODE.NAME }}``.  Only jobs whose text names ``query`` (and
``ADD --blueprint``, whose files may) carry the answers, so the rest cost nothing more.

When a QUERY does not succeed on a node (failed, timed out, lost, cancelled) the
submission goes on with what it has, as directord does: that node has no entry.  A node
where ``NAME`` is not set answers nothing (empty output): no entry either.  As with any
failed job, the later jobs on that node in that lane are cancelled.  An answer that is
not JSON or over ``MAX_ANSWER`` bytes, or answers over ``MAX_ENTRIES``/``MAX_TOTAL`` in
all, fail the later jobs that read ``query`` with one clear error; nothing else stops.

The answers live in the database as the QUERY's result rows (its stdout, written with
its final status in one transaction), so after a restart ``restore`` re-derives the
barrier and the answers from those rows and the tasks still open.
"""

from __future__ import annotations

import json
from bisect import bisect_left
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from director.protocol.answers import MAX_ANSWER, MAX_ENTRIES, MAX_TOTAL, encode_query
from director.server.cancel import BEFORE_SENT
from director.server.scheduler import Task

__all__ = ["HELD", "QueryGate", "held_back"]

HELD: dict[str, Any] = {}        # admit(): the task waits (identity matters, not contents)
EARLIER_FAILED = "an earlier job failed"
QUERY_VERB = "QUERY"


@dataclass
class _Query:
    job_id: str
    seq: int
    name: str
    left: int                                   # its tasks not final yet
    answers: dict[str, Any] = field(default_factory=dict)   # node name -> value
    error: str = ""                             # why later jobs cannot have the answers


@dataclass
class _Orch:
    """One submission with QUERY jobs: its queries in order and the tasks they hold."""

    queries: list[_Query]
    left: int                                   # tasks from the first QUERY on, not final
    held: list[Task] = field(default_factory=list)
    stopped: set[tuple[str, str]] = field(default_factory=set)  # (node, lane) that failed
    attached: set[str] = field(default_factory=set)   # job ids whose body has the answers
    views: dict[int, tuple[str, str]] = field(default_factory=dict)  # k -> (json, error)
    size: int = 0                               # bytes of answers kept

    def __post_init__(self) -> None:
        self.queries.sort(key=lambda q: q.seq)
        self.seqs = [q.seq for q in self.queries]
        self.by_job = {q.job_id: q for q in self.queries}

    def waiting(self, seq: int) -> bool:
        """Some QUERY before ``seq`` is not final on all its targets yet."""
        return any(q.left > 0 for q in self.queries[:bisect_left(self.seqs, seq)])

    def view(self, k: int) -> tuple[str, str]:
        """(answers JSON, error) of the first ``k`` queries; later ones override."""
        cached = self.views.get(k)
        if cached is not None:
            return cached
        merged: dict[str, dict[str, Any]] = {}
        error = ""
        for q in self.queries[:k]:
            error = error or q.error
            for node, value in q.answers.items():
                merged.setdefault(node, {})[q.name] = value
        if not error and sum(map(len, merged.values())) > MAX_ENTRIES:
            error = f"QUERY answers: more than {MAX_ENTRIES} (nodes x names) in one submission"
        text = "" if error else encode_query(merged)
        if not error and len(text.encode("utf-8")) > MAX_TOTAL:
            error, text = f"QUERY answers: more than {MAX_TOTAL} bytes in one submission", ""
        if not self.waiting(self.queries[k - 1].seq + 1):  # final: it cannot change
            self.views[k] = (text, error)
        return text, error

    def answer(self, q: _Query, node: str, stdout: str) -> None:
        """Record ``node``'s answer (its QUERY's stdout: JSON, or empty when unset)."""
        text = stdout.strip()
        if not text:
            return
        size = len(text.encode("utf-8"))
        if size > MAX_ANSWER:
            q.error = q.error or (f"QUERY {q.name}: the answer of node {node} is larger than "
                                  f"{MAX_ANSWER} bytes")
            return
        if self.size + size > MAX_TOTAL or len(q.answers) >= MAX_ENTRIES:
            q.error = q.error or (f"QUERY answers: more than {MAX_TOTAL} bytes or {MAX_ENTRIES}"
                                  " answers in one submission")
            return
        try:
            value = json.loads(text, parse_constant=_no_constant)
            encode_query({"": value}).encode("utf-8")   # strict JSON, valid UTF-8 only
        except (ValueError, RecursionError, UnicodeEncodeError):
            q.error = q.error or f"QUERY {q.name}: the answer of node {node} is not JSON"
            return
        self.size += size
        q.answers[node] = value


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


class QueryGate:
    """The held tasks and the answers of every live submission that has a QUERY."""

    def __init__(self) -> None:
        self.orchs: dict[str, _Orch] = {}
        self.held = 0                           # tasks held, in all submissions

    # -- what a submission brings ---------------------------------------------------
    def planned(self, jobs: Iterable[dict[str, Any]], counts: dict[str, int]) -> None:
        """A new submission's job rows (``submission.plan``) and tasks per job."""
        jobs = list(jobs)
        queries = [_Query(j["id"], j["seq"], _name(j["instruction"]), counts.get(j["id"], 0))
                   for j in jobs if j["verb"] == QUERY_VERB]
        if not queries:
            return
        first = min(q.seq for q in queries)
        left = sum(counts.get(j["id"], 0) for j in jobs if j["seq"] >= first)
        if left:
            self.orchs[jobs[0]["orch"]] = _Orch(queries, left)

    def restore(self, rows: Iterable[Any], tasks: list[Task]) -> None:
        """After a restart: ``rows`` are the stored results of those submissions' QUERY
        jobs and failed tasks (``JobStore.query_rows``), ``tasks`` the open tasks."""
        found: dict[str, dict[str, _Query]] = {}
        finals: list[Any] = []
        stopped: dict[str, set[tuple[str, str]]] = {}
        for r in rows:
            if r["status"] not in ("queued", "running", "success"):
                stopped.setdefault(r["orch"], set()).add((r["node"], r["lane"]))
            if r["verb"] != QUERY_VERB:
                continue
            q = found.setdefault(r["orch"], {}).get(r["job_id"])
            if q is None:
                q = found[r["orch"]][r["job_id"]] = _Query(r["job_id"], r["seq"],
                                                           _name(r["instruction"]), 0)
            if r["status"] in ("queued", "running"):
                q.left += 1
            elif r["status"] == "success":
                finals.append((r["orch"], q, r["name"], r["stdout"]))
        for orch, queries in found.items():
            first = min(q.seq for q in queries.values())
            left = sum(1 for t in tasks if t.seq >= first and _orch(t) == orch)
            if left:
                self.orchs[orch] = _Orch(list(queries.values()), left,
                                         stopped=stopped.get(orch, set()))
        for orch, q, name, stdout in sorted(finals, key=lambda f: f[2]):
            entry = self.orchs.get(orch)
            if entry is not None:
                entry.answer(q, name, stdout)

    # -- tasks going to the scheduler ------------------------------------------------
    def admit(self, task: Task, bodies: dict[str, bytes]) -> dict[str, Any] | None:
        """None: ``task`` may go to the scheduler (its body now has the answers it
        needs); ``HELD``: it waits (kept here); else the fields to end it with."""
        entry = self.orchs.get(_orch(task))
        if entry is None:
            return None
        k = bisect_left(entry.seqs, task.seq)   # the queries before it
        if k == 0:
            return None
        if (task.node, task.lane) in entry.stopped and task.status != "running":
            task.status = "cancelled"
            return {"status": "cancelled", "error": EARLIER_FAILED}
        if task.status != "running" and entry.waiting(task.seq):
            entry.held.append(task)
            self.held += 1
            return HELD
        if task.job_id not in entry.attached:
            body = bodies.get(task.job_id)
            if body is not None and (b"query" in body or b"--blueprint" in body):
                # its text, or the files it renders (ADD --blueprint), may read the answers
                text, error = entry.view(k)
                if error:
                    task.status = "failed"
                    return {"status": "failed", "error": error}
                bodies[task.job_id] = body[:-1] + b',"query":' + text.encode("utf-8") + b"}"
            entry.attached.add(task.job_id)
        return None

    # -- tasks ending -------------------------------------------------------------------
    def final(self, task: Task, fields: dict[str, Any],
              name_of: Callable[[str], str]) -> list[Task]:
        """``task`` is final with ``fields``: the held tasks that may now be admitted
        again (``admit`` decides: sent, or cancelled behind a failure), in job order."""
        orch = _orch(task)
        entry = self.orchs.get(orch)
        if entry is None:
            return []
        again: list[Task] = []
        status = fields.get("status")
        lane = (task.node, task.lane)
        # like a failure in the scheduler's lanes; the operator cancelling one job before
        # it was sent stops nothing else
        if status != "success" and lane not in entry.stopped and \
                fields.get("error") != BEFORE_SENT:
            entry.stopped.add(lane)
            again = [t for t in entry.held if (t.node, t.lane) == lane]
        q = entry.by_job.get(task.job_id)
        if q is not None:
            if status == "success":
                entry.answer(q, name_of(task.node), fields.get("stdout") or "")
            q.left -= 1
            if q.left <= 0:
                going = {id(t) for t in again}
                again += [t for t in entry.held
                          if id(t) not in going and not entry.waiting(t.seq)]
        if again:
            going = {id(t) for t in again}
            entry.held = [t for t in entry.held if id(t) not in going]
            self.held -= len(again)
        if task.seq >= entry.seqs[0]:
            entry.left -= 1
            if entry.left <= 0 and not entry.held:
                del self.orchs[orch]
        return sorted(again, key=lambda t: t.seq)

    def drop_jobs(self, job_ids: set[str]) -> list[Task]:
        """The operator cancelled ``job_ids``: their held tasks, ended ``cancelled``."""
        dropped: list[Task] = []
        for entry in self.orchs.values():
            if any(t.job_id in job_ids for t in entry.held):
                dropped += [t for t in entry.held if t.job_id in job_ids]
                entry.held = [t for t in entry.held if t.job_id not in job_ids]
        for t in dropped:
            t.status = "cancelled"
        self.held -= len(dropped)
        return dropped

    def orch_ids(self, tasks: Iterable[Task]) -> list[str]:
        """The submissions of ``tasks`` (a restart asks the store about these)."""
        return sorted({_orch(t) for t in tasks})


def held_back(book: Any, task: Task, now: float) -> bool:
    """JobBook's hook before a task goes to the scheduler: True when the gate keeps it
    (held) or ended it (``book._final``), False when it may go."""
    end = book.queries.admit(task, book.bodies)
    if end is None:
        return False
    if end is not HELD:
        book._final(task, end, now)
    return True


def _orch(task: Task) -> str:
    return task.lane.split(".", 1)[0]


def _name(instruction: str) -> str:
    try:
        name = json.loads(instruction).get("name")
    except (ValueError, AttributeError):
        return ""
    return name if isinstance(name, str) else ""
