"""The operator's CANCEL on a node: part of the agent core (a mixin of AgentCore).

Queued jobs end ``cancelled`` without starting; running ones are stopped by their
driver (the whole process group; a COPY gives up and removes its temp files) and
end ``cancelled`` -- unless they succeeded before the stop took hold, which is the
truth and is reported.  A job cancelled before it even arrived is journaled as
cancelled, so a later delivery is answered, never run.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from director.client.actions import StopJob
from director.protocol import messages as M

BEFORE_START = "cancelled by the operator before it started"
WHILE_RUNNING = "cancelled by the operator while it ran"


class Cancelling:
    """Needs the core's ``running``, ``known``, ``lanes``, ``waiting``, ``journal``,
    ``_out`` and ``_record``; keeps ``cancelling``: jobs being stopped."""

    cancelling: set[str]

    def _cancel(self: Any, job_ids: tuple[str, ...], now: float) -> None:
        for job_id in job_ids:
            job = self.running.get(job_id)
            if job is not None:
                if job_id not in self.cancelling:
                    self.cancelling.add(job_id)
                    self._out.append(StopJob(job_id))
                continue
            if job_id in self.known:
                self._record(M.Result(job_id, "cancelled", error=BEFORE_START), now,
                             self._unqueue(job_id))
            elif self.journal.get(job_id) is None:  # not here (yet): it never runs
                self._record(M.Result(job_id, "cancelled", error=BEFORE_START), now)
            # else it ended already: its result went (or goes) as it was

    def _unqueue(self: Any, job_id: str) -> str:
        """Take a queued job out of its lane; the lane goes on with its next job."""
        for lane, dq in self.lanes.items():
            for job in dq:
                if job.job_id == job_id:
                    dq.remove(job)
                    if not dq:
                        del self.lanes[lane]
                        self.waiting.pop(lane, None)
                    return lane
        return ""

    def _as_cancelled(self, result: M.Result) -> M.Result:
        """A stopped job's result: ``cancelled`` unless it succeeded first."""
        if result.job_id not in self.cancelling:
            return result
        self.cancelling.discard(result.job_id)
        if result.status == "success":
            return result
        return dataclasses.replace(result, status="cancelled", error=WHILE_RUNNING)
