"""Node-side job scheduling: lanes run in order, lanes run side by side.

The server pipelines several jobs ahead; this keeps each lane's queue and runs
lane heads from the agent's one event loop: a RUN's pipes and pidfd are
watched next to the server socket, so a job's result goes out the moment its
process ends, on the agent's own connection, with no thread hand-off (spawning
is the bound for short jobs; every extra hop costs a share of it).  COPY jobs,
which block on disk and network, run on a small thread pool and report back
through a wake-up pipe.  A failure in a lane cancels the rest of that lane.
"""

from __future__ import annotations

import logging
import os
import queue
import selectors
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Iterable, Protocol

from cachetools import LRUCache

from director.client.nodestate import JobCache, NodeState
from director.errors import ProtocolError
from director.jobs.dsl import Instruction
from director.jobs.executor import Outcome, Pending, begin, conclude, execute, spawn_failed
from director.jobs.shell import ShellProcess, kill_running
from director.protocol.frames import Message, unbatch

if TYPE_CHECKING:
    from director.client.agent import Agent

log = logging.getLogger("director.runner")
MAX_PROCESSES = 8      # RUN processes at once; more lanes wait for a free slot
COPY_WORKERS = 4
FLUSH_EVERY = 0.5
RESULT_DELAY = 0.02   # a result waits at most this long for others to share its message
RESULT_BATCH = 64
GONE = {"status": "cancelled", "error": "an earlier job failed"}


class Watcher(Protocol):
    """The event loop's side: which fds to wake up for."""

    def watch(self, fd: int) -> None: ...
    def unwatch(self, fd: int) -> None: ...


class SelectorWatcher:
    """A stand-alone watcher (tests, tools): ``poll`` returns the readable fds."""

    def __init__(self) -> None:
        self.sel = selectors.DefaultSelector()

    def watch(self, fd: int) -> None:
        self.sel.register(fd, selectors.EVENT_READ)

    def unwatch(self, fd: int) -> None:
        self.sel.unregister(fd)

    def poll(self, timeout: float) -> list[int]:
        if not self.sel.get_map():
            time.sleep(timeout)
            return []
        return [key.fd for key, _ in self.sel.select(timeout)]

    def close(self) -> None:
        self.sel.close()


class _Running:
    __slots__ = ("lane", "job_id", "step", "proc", "watched")

    def __init__(self, lane: str, job_id: str, step: Pending, proc: ShellProcess):
        self.lane, self.job_id, self.step, self.proc = lane, job_id, step, proc
        self.watched: tuple[int, ...] = ()


class JobRunner:
    def __init__(self, agent: Agent, watcher: Watcher | None = None):
        self.agent = agent
        self.watcher = watcher if watcher is not None else SelectorWatcher()
        self.state = NodeState(agent.home)
        self.cache = JobCache(agent.home / "jobcache.db")
        self.lanes: dict[str, deque[tuple[str, Instruction, dict]]] = {}
        self.active: set[str] = set()         # lanes with a job running (process or COPY)
        self.waiting: dict[str, None] = {}    # lanes whose head RUN waits for a free slot
        self.known: set[str] = set()          # job ids queued or running here
        self.failed_lanes: LRUCache = LRUCache(maxsize=10000)  # late jobs of these: cancelled
        self.finished: LRUCache = LRUCache(maxsize=10000)  # job id -> result, for resends
        self.procs: dict[int, _Running] = {}  # watched fd -> its running job
        self.running: list[_Running] = []
        self.pool = ThreadPoolExecutor(max_workers=COPY_WORKERS, thread_name_prefix="copy")
        self.copied: queue.SimpleQueue = queue.SimpleQueue()
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.watcher.watch(self.wake_r)
        self.next_flush = time.monotonic() + FLUSH_EVERY
        self.outbox: list[dict] = []          # results not sent yet (see flush_results)
        self.outbox_since = 0.0
        from director.client.copying import Copier

        self.copier = Copier(agent)

    def next_deadline(self) -> float:
        soon = [self.next_flush, *(r.proc.next_check() for r in self.running)]
        if self.outbox:
            soon.append(self.outbox_since + RESULT_DELAY)
        return min(soon)

    def busy(self) -> int:
        return len(self.active)

    # -- from the server -----------------------------------------------------------
    def on_message(self, msg: Message) -> None:
        if msg.type == "JOB":
            self._on_job(msg)
        elif msg.type == "JOBS":
            good, bad = unbatch(msg)
            for job in good:
                self._on_job(job)
            if bad:
                log.warning("%d malformed job(s) from the server: %s", len(bad), bad[0])

    def _on_job(self, msg: Message) -> None:
        job_id, lane = msg.get("job_id"), msg.get("lane")
        if job_id in self.known:
            return  # a resend (reconnect, server restart): it is already here
        done = self.finished.get(job_id)
        if done is not None:  # already ran: answer again, never run it twice
            self._send(job_id, done)
            return
        try:
            instr = Instruction.from_dict(msg.get("instruction"))
        except ProtocolError as exc:
            self._send(job_id, Outcome("failed", error=f"malformed job: {exc}").to_body())
            return
        if lane in self.failed_lanes:  # pipelined before the server saw the failure
            self._send(job_id, GONE)
            return
        self.known.add(job_id)
        self.lanes.setdefault(lane, deque()).append((job_id, instr, msg.body))
        if lane not in self.active and lane not in self.waiting:
            self._advance(lane)

    # -- lanes ----------------------------------------------------------------------
    def _advance(self, lane: str) -> None:
        """Run the lane's next jobs: those that finish at once (ARG, cache hits...)
        right here, until one needs a process or a COPY worker, or the lane is empty."""
        dq = self.lanes.get(lane)
        while dq:
            job_id, instr, body = dq[0]
            if instr.verb == "RUN" and len(self.running) >= MAX_PROCESSES:
                self.waiting[lane] = None
                return
            dq.popleft()
            if instr.verb in ("COPY", "ADD"):
                self.active.add(lane)
                self.pool.submit(self._copy, lane, job_id, instr, body)
                return
            try:
                step = begin(instr, self.state, self.cache,
                             hash_extra=body.get("hash_extra") or "")
                if isinstance(step, Pending):
                    try:
                        proc = ShellProcess(step.command, step.workdir, step.env, step.timeout)
                    except OSError as exc:
                        step = spawn_failed(step, exc)
                    else:
                        self._start(lane, job_id, step, proc)
                        return
            except Exception as exc:  # noqa: BLE001 - a job must never take the agent down
                step = _crashed(job_id, exc)
            if not self._finish(lane, job_id, step):
                return
        self.lanes.pop(lane, None)

    def _start(self, lane: str, job_id: str, step: Pending, proc: ShellProcess) -> None:
        run = _Running(lane, job_id, step, proc)
        self.active.add(lane)
        self.running.append(run)
        self._sync(run)

    def _sync(self, run: _Running) -> None:
        """Watch exactly the fds the process wants watched now."""
        want = tuple(run.proc.fds())
        if want == run.watched:
            return
        for fd in run.watched:
            if fd not in want:
                self._unwatch(fd)
        for fd in want:
            if fd not in run.watched:
                self.procs[fd] = run
                self.watcher.watch(fd)
        run.watched = want

    def _finish(self, lane: str, job_id: str, out: Outcome) -> bool:
        """Record and report one result; False when the lane stops here."""
        body = out.to_body()
        cancelled: list[str] = []
        if out.status != "success":
            self.failed_lanes[lane] = True
            cancelled = [jid for jid, _, _ in self.lanes.pop(lane, ())]
        self.finished[job_id] = body  # first: a resend arriving later is answered, not re-run
        self.known.discard(job_id)
        self._send(job_id, body)
        for jid in cancelled:
            self.finished[jid] = GONE
            self.known.discard(jid)
            self._send(jid, GONE)
        return not cancelled and out.status == "success"

    def _send(self, job_id: str, body: dict) -> None:
        """Queue a result: ``flush_results`` sends the queue as one message."""
        if not self.outbox:
            self.outbox_since = time.monotonic()
        self.outbox.append({**body, "job_id": job_id})

    def flush_results(self, force: bool = False) -> None:
        """Send queued results once nothing else is about to finish soon: the node is
        idle, the oldest has waited RESULT_DELAY, or a batch is full.  A lone job's
        result goes at once; a stream of short jobs reports a few per message."""
        if not self.outbox:
            return
        if not (force or not self.running or len(self.outbox) >= RESULT_BATCH
                or time.monotonic() - self.outbox_since >= RESULT_DELAY):
            return
        out, self.outbox = self.outbox, []
        if len(out) == 1:
            self.agent.send("RESULT", **out[0])
        else:
            self.agent.send("RESULTS", results=out)

    def _lane_free(self, lane: str, go_on: bool) -> None:
        """The lane's running job ended: go on with it (unless it failed), then with
        lanes waiting for a free process slot."""
        self.active.discard(lane)
        if go_on:
            self._advance(lane)
        while self.waiting and len(self.running) < MAX_PROCESSES:
            nxt = next(iter(self.waiting))
            del self.waiting[nxt]
            self._advance(nxt)

    # -- events from the loop ---------------------------------------------------------
    def handle(self, fds: Iterable[int]) -> None:
        """Readable fds from the event loop (others' fds are ignored)."""
        touched: dict[int, _Running] = {}  # each process once, however many fds woke
        for fd in fds:
            if fd == self.wake_r:
                self._on_copied()
                continue
            run = self.procs.get(fd)
            if run is not None:
                touched[id(run)] = run
        for run in touched.values():
            if run.proc.done:
                continue  # ended while handling another one's events
            try:
                run.proc.on_ready()
            except OSError as exc:  # a pipe gone bad: stop waiting for its output
                log.warning("job %s: reading its output failed: %s", run.job_id, exc)
                run.proc.pipes.clear()
            self._step(run)

    def _step(self, run: _Running) -> None:
        if run.proc.done:
            self._ended(run)
        else:
            self._sync(run)

    def tick(self) -> None:
        """Deadlines and the cache flush; the loop calls it by ``next_deadline``."""
        now = time.monotonic()
        for run in [r for r in self.running if r.proc.next_check() <= now]:
            run.proc.check_time(now)
            self._step(run)
        if now >= self.next_flush:
            self.cache.flush()
            self.next_flush = now + FLUSH_EVERY

    def _unwatch(self, fd: int) -> None:
        if self.procs.pop(fd, None) is not None:
            self.watcher.unwatch(fd)

    def _ended(self, run: _Running) -> None:
        for fd in run.watched:
            self._unwatch(fd)
        run.watched = ()
        self.running.remove(run)
        try:
            out = conclude(run.step, run.proc.result(), self.state, self.cache)
        except Exception as exc:  # noqa: BLE001 - a job must never take the agent down
            out = _crashed(run.job_id, exc)
        self._lane_free(run.lane, self._finish(run.lane, run.job_id, out))

    # -- COPY on a worker thread ------------------------------------------------------
    def _copy(self, lane: str, job_id: str, instr: Instruction, body: dict) -> None:
        try:
            out = execute(instr, self.state, self.cache, hash_extra=body.get("hash_extra") or "",
                          copier=lambda res, wd: self.copier.run(job_id, res, wd, body))
        except Exception as exc:  # noqa: BLE001 - a job must never take the agent down
            out = _crashed(job_id, exc)
        self.copied.put((lane, job_id, out))
        try:
            os.write(self.wake_w, b"x")
        except OSError:  # the pipe is full (the loop wakes anyway) or closed (stopping)
            pass

    def _on_copied(self) -> None:
        try:
            while os.read(self.wake_r, 4096):
                pass
        except OSError:
            pass
        while True:
            try:
                lane, job_id, out = self.copied.get_nowait()
            except queue.Empty:
                return
            self._lane_free(lane, self._finish(lane, job_id, out))

    def close(self) -> bool:
        """Stop: kill running RUNs, let COPY workers finish; True when all of them did."""
        self.flush_results(force=True)
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.copier.stopping.set()
        kill_running()  # a stopped agent leaves no job processes behind
        for run in list(self.running):
            for fd in run.watched:
                self._unwatch(fd)
            run.proc.result()
        self.running.clear()
        deadline = time.monotonic() + 3.0
        for t in list(getattr(self.pool, "_threads", ())):
            t.join(max(0.0, deadline - time.monotonic()))
        clean = not any(t.is_alive() for t in getattr(self.pool, "_threads", ()))
        if clean:  # a worker still running may still use them
            self.cache.close()
            self.copier.close()
            os.close(self.wake_r)
            os.close(self.wake_w)
        return clean


def _crashed(job_id: str, exc: Exception) -> Outcome:
    log.error("job %s crashed: %s: %s", job_id, type(exc).__name__, exc, exc_info=exc)
    return Outcome("failed", error=f"internal error: {type(exc).__name__}: {exc}")
