"""Node-side job scheduling: lanes run in order, lanes run side by side.

The server pipelines several jobs ahead; this keeps each lane's queue,
runs lane heads on a small thread pool (spawning is the bound, and threads
spawn faster than asyncio), and reports each result the moment it is known.
A failure in a lane cancels the rest of that lane.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from cachetools import LRUCache

from director.client.nodestate import JobCache, NodeState
from director.errors import ProtocolError
from director.jobs.dsl import Instruction
from director.jobs.executor import Outcome, execute
from director.protocol.frames import Message

if TYPE_CHECKING:
    from director.client.agent import Agent

log = logging.getLogger("director.runner")
WORKERS = 8


class JobRunner:
    def __init__(self, agent: Agent):
        self.agent = agent
        self.state = NodeState(agent.home)
        self.cache = JobCache(agent.home / "jobcache.db")
        self.lanes: dict[str, deque[tuple[str, Instruction, dict]]] = {}
        self.busy: set[str] = set()           # lanes with a job running
        self.known: set[str] = set()          # job ids queued or running here
        self.failed_lanes: LRUCache = LRUCache(maxsize=10000)  # late jobs of these: cancelled
        self.finished: LRUCache = LRUCache(maxsize=10000)  # job id -> result, for resends
        self.lock = threading.Lock()          # lanes/busy/known/failed_lanes: main + workers
        self.pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="job")
        self.next_flush = time.monotonic() + 0.5
        from director.client.copying import Copier

        self.copier = Copier(agent)

    def next_deadline(self) -> float:
        return self.next_flush

    def running(self) -> int:
        return len(self.busy)

    # -- from the server -----------------------------------------------------------
    def on_message(self, msg: Message) -> None:
        if msg.type == "JOB":
            self._on_job(msg)

    def _on_job(self, msg: Message) -> None:
        job_id, lane = msg.get("job_id"), msg.get("lane")
        with self.lock:
            queued_here = job_id in self.known
            done = self.finished.get(job_id)
        if queued_here:
            return  # a resend (reconnect, server restart): it is already here
        if done is not None:  # already ran: answer again, never run it twice
            self.agent.send("RESULT", job_id=job_id, **done)
            return
        try:
            instr = Instruction.from_dict(msg.get("instruction"))
        except ProtocolError as exc:
            self._report(job_id, Outcome("failed", error=f"malformed job: {exc}"))
            return
        with self.lock:
            if lane in self.failed_lanes:  # pipelined before the server saw the failure
                late = True
            else:
                late = False
                self.known.add(job_id)
                self.lanes.setdefault(lane, deque()).append((job_id, instr, msg.body))
                start = lane not in self.busy
                if start:
                    self.busy.add(lane)
        if late:
            self._report(job_id, Outcome("cancelled", error="an earlier job failed"))
        elif start:
            self.pool.submit(self._work_lane, lane)

    def _work_lane(self, lane: str) -> None:
        """Run a lane's jobs one after another in this worker, without a round trip
        through the main thread between them; stop the lane at its first failure."""
        while True:
            with self.lock:
                dq = self.lanes.get(lane)
                if not dq:
                    self.lanes.pop(lane, None)
                    self.busy.discard(lane)
                    return
                job_id, instr, body = dq.popleft()
            out = self._execute(job_id, instr, body)
            cancelled: list = []
            if out.status != "success":
                with self.lock:
                    self.failed_lanes[lane] = True
                    cancelled = [jid for jid, _, _ in self.lanes.pop(lane, ())]
                    self.busy.discard(lane)
            self._post(job_id, out, cancelled)
            if cancelled or out.status != "success":
                return

    def _execute(self, job_id: str, instr: Instruction, body: dict) -> Outcome:
        try:
            return execute(instr, self.state, self.cache,
                           hash_extra=body.get("hash_extra") or "",
                           copier=lambda res, wd: self.copier.run(job_id, res, wd, body))
        except Exception as exc:  # noqa: BLE001 - a job must never take the agent down
            log.exception("job %s crashed", job_id)
            return Outcome("failed", error=f"internal error: {type(exc).__name__}: {exc}")

    def _post(self, job_id: str, out: Outcome, cancelled: list) -> None:
        """Report from this worker thread on its own connection: no hand-off to the
        main thread per job (the server knows the node by its key, not the connection)."""
        send = self.agent.worker_send
        body = out.to_body()
        gone = {"status": "cancelled", "error": "an earlier job failed"}
        with self.lock:  # recorded first: a resend arriving now is answered, not re-run
            self.finished[job_id] = body
            for jid in cancelled:
                self.finished[jid] = gone
            self.known.discard(job_id)
            self.known.difference_update(cancelled)
        send("RESULT", job_id=job_id, **body)
        for jid in cancelled:
            send("RESULT", job_id=jid, **gone)

    def _report(self, job_id: str, out: Outcome) -> None:
        self.agent.send("RESULT", job_id=job_id, **out.to_body())

    def tick(self) -> None:
        if time.monotonic() >= self.next_flush:
            self.cache.flush()
            self.next_flush = time.monotonic() + 0.5

    def close(self) -> bool:
        """Stop: kill running RUNs, let workers finish; True when all of them did."""
        from director.jobs.executor import kill_running

        self.pool.shutdown(wait=False, cancel_futures=True)
        self.copier.stopping.set()
        kill_running()  # a stopped agent leaves no job processes behind
        deadline = time.monotonic() + 3.0
        for t in list(getattr(self.pool, "_threads", ())):
            t.join(max(0.0, deadline - time.monotonic()))
        clean = not any(t.is_alive() for t in getattr(self.pool, "_threads", ()))
        if clean:  # a worker still running may still use them
            self.cache.close()
            self.copier.close()
        return clean

