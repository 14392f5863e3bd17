"""Job retention: old jobs and their results leave the database a slice at a time.

Part of the server core (no clock, no SQL here: ``now`` comes in, rows go through the
store seam).  Every few seconds a pass starts; while one runs, each loop turn deletes
at most ``SLICE`` rows (one short transaction) and the driver keeps turning, so a
backlog of a million rows drains without ever holding the sockets.  Limits are both
applied: jobs older than ``max_age`` go, and so does every job but the newest
``max_jobs``.  A job with tasks still queued or running is never purged.  Freed
pages are reused by SQLite, so under a steady stream the file stops growing.

``director jobs purge`` asks for one pass now, with its own limits, and is answered
when that pass is done.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Any, Container

from director.errors import DirectorError, StorageError
from director.protocol.messages import CtlReply, encode
from director.server.events import Reply

log = logging.getLogger("director.retention")
SLICE = 500          # rows deleted per loop turn
GIVE_BACK = 256      # free pages (1 MiB) returned to the file system per loop turn
CHECK_EVERY = 5.0    # s between automatic passes
DAY = 86400.0


@dataclass(frozen=True)
class Policy:
    max_age: float | None = 30 * DAY    # s; None: no age limit
    max_jobs: int | None = 100_000      # None: no count limit


@dataclass
class Pass:
    upto: int            # purge jobs inserted at or before this rowid ...
    before: float        # ... or created before this time
    rid: bytes | None    # the operator who asked for it (None: automatic)
    after: int = 0       # rowid the next step goes on after
    jobs: int = 0
    results: int = 0


class Retention:
    def __init__(self, store: Any, out: list, policy: Policy, now: float):
        self.store = store
        self.out = out
        self.policy = policy
        self.next_check = now + CHECK_EVERY
        self.current: Pass | None = None
        self.asked: deque[tuple[bytes, Policy]] = deque()   # operators' passes, in order
        self.shrinking = False   # after a pass: free pages are being given back
        self._failing = False

    def busy(self) -> bool:
        """A pass (or giving back what it freed) is under way: the driver should turn
        again without waiting."""
        return self.current is not None or self.shrinking

    def request(self, rid: bytes, args: dict) -> None:
        """``jobs.purge``: ``older_than`` (seconds) and/or ``keep`` (jobs); neither:
        the configured limits.  Answered when the pass is done."""
        older, keep = args.get("older_than"), args.get("keep")
        if older is not None and (isinstance(older, bool) or not isinstance(older, (int, float))
                                  or not 0 < older < 1e10):
            raise DirectorError("--older-than must be a duration like 30d, 12h or 2w")
        if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int)
                                 or not 0 <= keep <= 10**12):
            raise DirectorError("--keep must be a whole number of jobs, 0 or more")
        if len(self.asked) >= 16:
            raise DirectorError("too many purges are waiting; retry when they are done")
        policy = self.policy if older is None and keep is None else Policy(older, keep)
        self.asked.append((rid, policy))

    def step(self, now: float, open_jobs: Container[str]) -> None:
        """One slice of the current pass (starting one when it is due)."""
        if self.shrinking and self.current is None:
            self._shrink()
            return
        if self.current is None:
            if self.asked:
                rid, policy = self.asked.popleft()
            elif now >= self.next_check:
                rid, policy = None, self.policy
                self.next_check = now + CHECK_EVERY
            else:
                return
            try:
                self.current = self._start(policy, rid, now)
            except StorageError as exc:
                self._failed(rid, exc)
                return
        p = self.current
        try:
            jobs, results, p.after, more = self.store.purge_step(
                p.after, p.upto, p.before, open_jobs, SLICE)
        except StorageError as exc:
            self.current = None
            self._failed(p.rid, exc)
            return
        self._failing = False
        p.jobs += jobs
        p.results += results
        if not more:
            self.current = None
            self.shrinking = p.jobs > 0
            self._done(p)

    def _shrink(self) -> None:
        try:
            self.shrinking = self.store.give_back(GIVE_BACK) > 0
        except StorageError as exc:  # the pages stay free and are reused: no harm
            log.debug("cannot give free pages back: %s", exc)
            self.shrinking = False

    def _start(self, policy: Policy, rid: bytes | None, now: float) -> Pass:
        upto = -1
        if policy.max_jobs is not None:
            upto = self.store.newest_job_rowid() - policy.max_jobs
        before = now - policy.max_age if policy.max_age is not None else float("-inf")
        return Pass(upto, before, rid)

    def _done(self, p: Pass) -> None:
        if p.jobs or p.results:
            log.log(logging.INFO if p.rid else logging.DEBUG,
                    "purged %d job(s) and %d result(s)%s", p.jobs, p.results,
                    " (asked by the operator)" if p.rid else "")
        if p.rid is not None:
            self.out.append(Reply(p.rid, encode(CtlReply(True, {
                "jobs": p.jobs, "results": p.results}))))

    def _failed(self, rid: bytes | None, exc: StorageError) -> None:
        if rid is not None:
            self.out.append(Reply(rid, encode(CtlReply(
                False, error=f"cannot purge jobs: server storage failed: {exc}"))))
        elif not self._failing:  # automatic: once per outage, retried on the next check
            log.error("cannot purge old jobs (server storage failed: %s); retrying", exc)
        self._failing = True
