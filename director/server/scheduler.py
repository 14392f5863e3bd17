"""Which job goes to which node next: per-node lanes and a window in flight.

Pure bookkeeping, no I/O.  A *lane* is an ordered run of jobs on one node
(one orchestration's sequential items, or one async item).  Up to ``window``
tasks per node are in flight at once, so a node always has its next job
queued locally and never idles for a round trip; the node runs each lane in
order and stops a lane at its first failure.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field

FINAL = frozenset({"success", "failed", "timeout", "lost", "cancelled"})


@dataclass(slots=True)
class Task:
    """One job on one node."""

    job_id: str
    node: str
    lane: str
    seq: int
    timeout: float
    status: str = "queued"
    queued_at: float = 0.0
    sent_at: float | None = None
    row: int = 0          # its result row's rowid (0: not known; found by job and node)


@dataclass
class _NodeQueue:
    lanes: dict[str, deque[Task]] = field(default_factory=dict)
    inflight: dict[str, Task] = field(default_factory=dict)


class Scheduler:
    def __init__(self, window: int = 64):
        self.window = window
        self._nodes: dict[str, _NodeQueue] = {}
        self.live = 0    # tasks queued or in flight, on every node
        # when each node with tasks in flight must next be looked at for overdue ones
        # (the earliest sent_at + timeout there): a heap, so a tick looks at those only
        self._checks: list[tuple[float, str]] = []
        self._check_at: dict[str, float] = {}

    def add(self, task: Task) -> None:
        q = self._nodes.setdefault(task.node, _NodeQueue())
        self.live += 1
        if task.status == "running":  # reloaded after a restart: already on the node
            q.inflight[task.job_id] = task
            self._due(task.node, (task.sent_at or 0.0) + task.timeout)
        else:
            q.lanes.setdefault(task.lane, deque()).append(task)

    def take(self, node: str, now: float) -> list[Task]:
        """Tasks to send to ``node`` now (marked running), filling its window."""
        q = self._nodes.get(node)
        if q is None:
            return []
        room = self.window - len(q.inflight)
        if q.inflight and room < self.window // 2:
            return []  # refill in batches: one wake-up on the node takes many jobs
        out: list[Task] = []
        while room > 0 and q.lanes:
            for lane in list(q.lanes):
                dq = q.lanes[lane]
                task = dq.popleft()
                if not dq:
                    del q.lanes[lane]
                task.status, task.sent_at = "running", now
                q.inflight[task.job_id] = task
                self._due(node, now + task.timeout)
                out.append(task)
                room -= 1
                if room == 0:
                    break
        return out

    def complete(self, node: str, job_id: str, status: str) -> Task | None:
        """Record a final status from ``node``; None if it was not in flight there."""
        q = self._nodes.get(node)
        task = q.inflight.pop(job_id, None) if q else None
        if task is None:
            return None
        self.live -= 1
        task.status = status
        if not q.inflight and not q.lanes:
            del self._nodes[node]  # idle nodes cost nothing
        return task

    def unsend(self, node: str, job_ids: tuple[str, ...]) -> list[Task]:
        """Tasks taken for ``node`` that never left: back to the front of their lanes,
        in order, queued again (the node never had them, so nothing is lost)."""
        q = self._nodes.get(node)
        back = sorted((t for t in (q.inflight.pop(j, None) for j in job_ids) if t is not None),
                      key=lambda t: t.seq, reverse=True) if q else []
        for t in back:
            t.status, t.sent_at = "queued", None
            q.lanes.setdefault(t.lane, deque()).appendleft(t)
        return back

    def cancel_lane(self, node: str, lane: str) -> list[Task]:
        """Cancel the not-yet-sent rest of ``lane`` on ``node`` (after a failure)."""
        q = self._nodes.get(node)
        dq = q.lanes.pop(lane, None) if q else None
        for t in dq or ():
            t.status = "cancelled"
        self.live -= len(dq or ())
        return list(dq or ())

    def drop_node(self, node: str, status: str = "lost",
                  queued_before: float | None = None) -> list[Task]:
        """Everything queued or in flight on ``node`` ends with ``status`` -- except,
        with ``queued_before``, tasks queued at or after it: they were queued for a node
        already known to be offline (``--allow-offline``) and wait on."""
        q = self._nodes.get(node)
        if q is None:
            return []
        kept: dict[str, deque[Task]] = {}
        if queued_before is not None:
            for lane, dq in q.lanes.items():
                later = deque(t for t in dq if t.queued_at >= queued_before)
                if later:
                    kept[lane] = later
                    q.lanes[lane] = deque(t for t in dq if t.queued_at < queued_before)
        self._check_at.pop(node, None)
        tasks = list(q.inflight.values()) + [t for dq in q.lanes.values() for t in dq]
        if kept:
            q.inflight, q.lanes = {}, kept
        else:
            del self._nodes[node]
        for t in tasks:
            t.status = status
        self.live -= len(tasks)
        return tasks

    def fail_inflight(self, node: str, status: str = "lost") -> list[Task]:
        """Tasks the node had when it restarted end with ``status``; queued ones stay."""
        q = self._nodes.get(node)
        if q is None:
            return []
        tasks = list(q.inflight.values())
        q.inflight.clear()
        for t in tasks:
            t.status = status
        self.live -= len(tasks)
        return tasks

    def cancel_jobs(self, job_ids: set[str]) -> tuple[list[Task], dict[str, list[Task]]]:
        """The operator cancelled ``job_ids``: their queued tasks leave the lanes (ended
        ``cancelled``, returned first); their in-flight ones stay until their nodes
        answer, returned by node.  One pass over the live tasks (an operator action)."""
        dropped: list[Task] = []
        flying: dict[str, list[Task]] = {}
        for node, q in list(self._nodes.items()):
            for lane, dq in list(q.lanes.items()):
                if any(t.job_id in job_ids for t in dq):
                    keep = deque(t for t in dq if t.job_id not in job_ids)
                    dropped += [t for t in dq if t.job_id in job_ids]
                    if keep:
                        q.lanes[lane] = keep
                    else:
                        del q.lanes[lane]
            mine = [t for j, t in q.inflight.items() if j in job_ids]
            if mine:
                flying[node] = mine
            if not q.inflight and not q.lanes:
                del self._nodes[node]
        for t in dropped:
            t.status = "cancelled"
        self.live -= len(dropped)
        return dropped, flying

    def inflight(self, node: str) -> list[Task]:
        q = self._nodes.get(node)
        return sorted(q.inflight.values(), key=lambda t: t.seq) if q else []

    def in_flight(self, node: str, job_id: str) -> bool:
        q = self._nodes.get(node)
        return bool(q and job_id in q.inflight)

    def has_work(self, node: str) -> bool:
        q = self._nodes.get(node)
        return bool(q and (q.lanes or q.inflight))

    def nodes(self) -> list[str]:
        return list(self._nodes)

    def _due(self, node: str, at: float) -> None:
        """Look at ``node`` for overdue tasks no later than ``at``."""
        if at < self._check_at.get(node, float("inf")):
            self._check_at[node] = at
            heapq.heappush(self._checks, (at, node))

    def overdue(self, now: float, grace: float) -> list[Task]:
        """In-flight tasks far past their timeout: the node will not answer.  Only
        nodes whose earliest deadline has passed are looked at."""
        late = []
        checks = self._checks
        while checks and checks[0][0] + grace < now:
            at, node = heapq.heappop(checks)
            if self._check_at.get(node) != at:
                continue  # superseded by an earlier deadline, or the node was dropped
            del self._check_at[node]
            q = self._nodes.get(node)
            if q is None:
                continue
            nxt = float("inf")
            for t in list(q.inflight.values()):
                if t.sent_at is not None and now - t.sent_at > t.timeout + grace:
                    q.inflight.pop(t.job_id)
                    t.status = "lost"
                    late.append(t)
                elif t.sent_at is not None:
                    nxt = min(nxt, t.sent_at + t.timeout)
            if nxt != float("inf"):
                self._due(node, nxt)
            if not q.inflight and not q.lanes:
                del self._nodes[node]
        self.live -= len(late)
        return late

    def queued_since(self, node: str) -> float | None:
        """When the oldest task still waiting for ``node`` was queued.

        In-flight tasks count too: after a server restart they are reloaded as in
        flight, and if their node never comes back they must still end (as lost).
        """
        q = self._nodes.get(node)
        if not q or not (q.lanes or q.inflight):
            return None
        return min([dq[0].queued_at for dq in q.lanes.values()]
                   + [t.queued_at for t in q.inflight.values()])
