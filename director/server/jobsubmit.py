"""JobBook's submissions: an operator's jobs checked, stored and queued (a mixin of
JobBook).  A big submission is stored a slice per loop turn (``_feed``), so no turn
makes and writes hundreds of thousands of task rows at once; while it is, the store
marks it (refeed.py makes what a crash left unmade).
"""

from __future__ import annotations

import logging
from typing import Any, Iterator

from director.errors import DirectorError, StorageError
from director.server import batches, submission
from director.server.cancel import BEFORE_SENT
from director.server.events import BuildManifests
from director.server.orchstore import label_jobs
from director.server.queries import held_back
from director.server.scheduler import Task
from director.server.waiters import Waiter

log = logging.getLogger("director.jobs")
MAX_BUILDING = 64          # submissions waiting for their manifests at once
SUBMIT_SLICE = 2000        # tasks (jobs x nodes) of a submission made and stored at once
DEFERRED = object()        # an operation returns this when it will reply later


def _is_id(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 64 and value.isalnum()


class Feed:
    """A submission whose tasks are still being made, a slice per loop turn."""

    __slots__ = ("slices", "left", "pending", "orch")

    def __init__(self, slices: Iterator[tuple[list, list]], left: int, orch: str):
        self.slices = slices
        self.left = left
        self.orch = orch   # marked in the store until every task is stored (refeed.py)
        self.pending: tuple[list, list] | None = None   # a slice the store refused


class JobSubmits:
    """Needs the book's store, peers, scheduler, gates (``rollouts``, ``queries``),
    waiters and the rest of JobBook: a mixin of it, kept apart for its size."""

    def submit(self, rid: bytes, args: dict, now: float) -> Any:
        """Check and queue a submission; with COPY jobs, after their manifests exist."""
        copies = submission.copy_jobs(args.get("steps"))
        if not copies:
            return self._submit(rid, args, {}, now)
        if len(self.building) >= MAX_BUILDING:
            raise DirectorError("too many submissions are building COPY manifests; retry")
        self.tickets += 1
        self.building[self.tickets] = (rid, args)
        self.out.append(BuildManifests(self.tickets, args.get("base"), copies))
        return DEFERRED

    def on_manifests(self, ticket: int, built: dict | None, error: str | None,
                     now: float) -> None:
        """A submission's manifests are built (or failed): finish it."""
        rid, args = self.building.pop(ticket, (None, None))
        if rid is None:
            return
        try:
            if error is not None:
                raise DirectorError(error)
            result = self._submit(rid, args, built or {}, now)
        except DirectorError as exc:
            self.reply(rid, ok=False, error=str(exc), code=exc.exit_code)
            return
        if result is not DEFERRED:
            self.reply(rid, ok=True, result=result)

    def _submit(self, rid: bytes, args: dict, built: dict, now: float) -> Any:
        if self.storage_error and self.dirty and not self.flush():
            raise DirectorError(f"server storage full: {self.storage_error}; free space"
                                " under the server's home (work in flight resumes by itself)")
        accepted = {r.name: r.key for r in self.store.nodes() if r.state == "accepted"}
        online = [n for n, k in accepted.items() if self.peers.online(k, now)]
        sub = submission.plan(args, built, accepted, online, now, self.new_id(),
                              self.live_tasks(), self.max_live, lambda: self.node_attrs(accepted))
        rollout = batches.plan(args, sub)  # None unless --batch
        if sub.jobs and _is_id(args.get("retry_of")):  # made by 'job retry': linked
            sub.jobs[0]["retry_of"] = args["retry_of"]
        if args.get("dry_run") is True:  # jobs.plan (dryrun.py): nothing stored or sent
            return self.plan_doc(sub, accepted, online)
        label_jobs(sub.jobs, args)  # its files' names: one line in 'director jobs'
        feed = submission.slices(sub, SUBMIT_SLICE)
        rows, tasks = next(feed, ([], []))
        more = sub.ntasks > len(tasks)  # the rest: a slice per loop turn (after_events)
        try:  # the job rows and the first slice of tasks in one transaction
            _numbered(tasks, self.store.insert(sub.jobs, rows,
                                               feeding=sub.orch if more else None))
        except StorageError as exc:
            self._storage_failed(exc)
            raise DirectorError(f"server storage full: {exc}; nothing was submitted") from None
        # only now, with nothing left to refuse, does the submission touch live state
        self.bodies.update(sub.bodies)
        self.copies.update(sub.copies)
        self.open.update(sub.open_counts)
        self.closed.extend(j for j, n in sub.open_counts.items() if n == 0)  # no targets
        self.orch_of.update(dict.fromkeys(sub.open_counts, sub.orch))
        self.rollouts.add(rollout)
        self.queries.planned(sub.jobs, sub.open_counts)
        self._add_tasks(tasks, now)
        if more:
            self.feeding.append(Feed(feed, sub.ntasks - len(tasks), sub.orch))
            self.unfed += sub.ntasks - len(tasks)
        ids = [j["id"] for j in sub.jobs]
        log.info("orchestration %s: %d job(s), %d task(s)", sub.orch, len(ids), sub.ntasks)
        summary = {"orch": sub.orch, "jobs": ids, "tasks": sub.ntasks}
        if args.get("wait"):
            names = {accepted[n]: n for n in accepted}
            self.waiters[sub.orch] = Waiter(rid, sub.jobs, names, sub.ntasks,
                                            sub.open_counts, parts=args.get("parts") is True)
            if args.get("stream") is True:
                self.streams.add(sub.orch)
            self.event(rid, "submitted", summary)
            self.pump(now)
            return DEFERRED
        self.pump(now)
        return summary

    def _add_tasks(self, tasks: list[Task], now: float) -> None:
        stopped = self.stopped_lanes
        for t in tasks:
            if self.cancelled_jobs and t.job_id in self.cancelled_jobs:
                t.status = "cancelled"  # made after the operator cancelled its job
                self._final(t, {"status": "cancelled", "error": BEFORE_SENT}, now)
                continue
            if self.rollouts.by_job and batches.held_back(self, t, now):
                continue  # its batch has not started (or never will)
            if self.queries.orchs and held_back(self, t, now):  # behind a QUERY (queries.py)
                continue
            self.sched.add(t)
            if stopped and (t.node, t.lane) in stopped:  # its lane failed on that node
                self.sched.cancel_lane(t.node, t.lane)   # before this task was made
                self._final(t, {"status": "cancelled", "error": "an earlier job failed"}, now)
            else:
                self.to_pump.add(t.node)

    def _feed(self, now: float) -> None:
        """One slice of a big submission's tasks: rows stored, tasks queued.  A failing
        store keeps the slice for the next turn (the submission was accepted)."""
        feed = self.feeding[0]
        if feed.pending is None:
            feed.pending = next(feed.slices, None)
            if feed.pending is None:
                try:
                    self.store.fed(feed.orch)
                except StorageError as exc:  # the mark stays: a restart finds nothing missing
                    self._storage_failed(exc)
                self.feeding.popleft()
                if not self.feeding:
                    self.stopped_lanes.clear()
                return
        rows, tasks = feed.pending
        try:
            _numbered(tasks, self.store.insert([], rows))
        except StorageError as exc:
            self._storage_failed(exc)
            return
        feed.pending = None
        self.unfed -= len(tasks)
        self._add_tasks(tasks, now)


def _numbered(tasks: list[Task], first: int | None) -> None:
    """Each task its row's rowid (``first`` and on, as the store inserted them)."""
    if first:
        for row, task in enumerate(tasks, first):
            task.row = row
