"""The process driver: runs what the core starts, from the agent's one event loop.

A RUN's pipes and pidfd are watched next to the server socket, so a job's
result goes out the moment its process ends, on the agent's own connection,
with no thread hand-off (spawning is the bound for short jobs; every extra hop
costs a share of it).  Verbs that need no process (ARG, ENV, WORKDIR, cache
hits) end inside ``start``.  Which job runs when is not decided here: that is
``AgentCore``; this module only touches processes, the node's files and its
job cache.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import time
from typing import Any, Iterable, Protocol

from director.jobs.nodestate import JobCache, NodeState
from director.jobs.scopes import state_for
from director.jobs.executor import Outcome, Pending, begin, conclude, spawn_failed
from director.client.journal import proc_pgid, proc_started_at
from director.jobs.shell import ShellProcess, close_inherited, kill_running
from director.protocol.messages import Job

log = logging.getLogger("director.runner")
FLUSH_EVERY = 0.5     # the job cache is written to disk this often
STREAM_PIECE = 64 * 1024   # bytes of streamed output in one piece at most


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
    __slots__ = ("job_id", "step", "proc", "watched", "stream", "shown", "state")

    def __init__(self, job_id: str, step: Pending, proc: ShellProcess, stream: bool,
                 state: Any):
        self.job_id, self.step, self.proc, self.state = job_id, step, proc, state
        self.watched: tuple[int, ...] = ()
        self.stream = stream          # the operator follows its output as it comes
        self.shown = [0, 0]           # bytes of stdout, stderr streamed so far


Ended = list[tuple[str, Outcome]]


class ProcessDriver:
    """Starts jobs, watches their processes, reports ``(job_id, Outcome)`` when they end."""

    def __init__(self, state: NodeState, cache: JobCache, watcher: Watcher):
        self.state, self.cache, self.watcher = state, cache, watcher
        close_inherited()  # jobs get their three descriptors and nothing of ours
        self.procs: dict[int, _Running] = {}  # watched fd -> its running job
        self.running: list[_Running] = []
        self.next_flush = time.monotonic() + FLUSH_EVERY
        # (pid, start time) of the process ``start`` spawned last: the journal's record of
        # it (its pid is its process group; the start time tells it from a reused pid)
        self.last_started: tuple[int, float | None] = (0, None)
        self.gated: list[ShellProcess] = []   # spawned, held until their pids are durable
        # streamed output not sent yet: (job id, "out"/"err", text), oldest first
        self.streamed: list[tuple[str, str, str]] = []
        self.streamed_since = 0.0

    def next_deadline(self) -> float:
        soon = self.next_flush
        for r in self.running:
            t = r.proc.next_check()
            if t < soon:
                soon = t
        return soon

    def start(self, job: Job) -> Outcome | None:
        """Begin ``job``: its Outcome if it ended at once, None if a process now runs."""
        try:
            state = state_for(self.state, job.lane)  # its submission's ARG/ENV/WORKDIR
            step = begin(job.instruction, state, self.cache, hash_extra=job.hash_extra)
            if not isinstance(step, Pending):
                return step
            try:
                proc = ShellProcess(step.command, step.workdir, step.env, step.timeout,
                                    gated=True)
            except OSError as exc:
                return spawn_failed(step, exc)
        except Exception as exc:  # noqa: BLE001 - a job must never take the agent down
            return crashed(job.job_id, exc)
        run = _Running(job.job_id, step, proc, job.stream, state)
        self.running.append(run)
        self.gated.append(proc)
        # its spawn time, by our clock (reading /proc/PID/stat here cost ~40 us a job):
        # after a crash it tells this process from another that reuses its pid
        self.last_started = (proc.pid, time.time())
        self._sync(run)
        return None

    def stop(self, job_id: str) -> bool:
        """Kill the process group of running ``job_id`` (cancelled): its end is then
        seen as usual.  False when no process of that job runs here."""
        for run in self.running:
            if run.job_id == job_id:
                run.proc.kill()
                return True
        return False

    def release(self) -> None:
        """Let the jobs spawned since the last call run (their pids are durable now)."""
        gated, self.gated = self.gated, []
        for proc in gated:
            proc.release()

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

    def _unwatch(self, fd: int) -> None:
        if self.procs.pop(fd, None) is not None:
            self.watcher.unwatch(fd)

    def handle(self, fds: Iterable[int]) -> Ended:
        """Readable fds from the event loop (others' fds are ignored)."""
        touched: dict[int, _Running] = {}  # each process once, however many fds woke
        for fd in fds:
            run = self.procs.get(fd)
            if run is not None:
                touched[id(run)] = run
        ended: Ended = []
        for run in touched.values():
            if run.proc.done:
                continue  # ended while handling another one's events
            try:
                run.proc.on_ready()
            except OSError as exc:  # a pipe gone bad: stop waiting for its output
                log.warning("job %s: reading its output failed: %s", run.job_id, exc)
                run.proc.pipes.clear()
            self._step(run, ended)
        return ended

    def _step(self, run: _Running, ended: Ended) -> None:
        if run.stream:
            self._stream(run, run.proc.done)
        if run.proc.done:
            ended.append((run.job_id, self._ended(run)))
        else:
            self._sync(run)

    def _stream(self, run: _Running, final: bool) -> None:
        """Whole new lines of a streamed job (all that is left once it ended; a line
        longer than a piece goes in pieces), for the agent to send in OUTPUT."""
        for i, (name, buf) in enumerate((("out", run.proc.out), ("err", run.proc.err))):
            done = run.shown[i]
            if len(buf) <= done:
                continue
            end = len(buf) if final or len(buf) - done > STREAM_PIECE else \
                buf.rfind(b"\n", done) + 1
            if end <= done:
                continue
            if not self.streamed:
                self.streamed_since = time.monotonic()
            for at in range(done, end, STREAM_PIECE):
                piece = bytes(buf[at:min(end, at + STREAM_PIECE)])
                self.streamed.append((run.job_id, name, piece.decode("utf-8", "replace")))
            run.shown[i] = end

    def tick(self, now: float) -> Ended:
        """Deadlines and the cache flush; the loop calls it by ``next_deadline``."""
        ended: Ended = []
        for run in [r for r in self.running if r.proc.next_check() <= now]:
            run.proc.check_time(now)
            self._step(run, ended)
        if now >= self.next_flush:
            try:
                self.cache.flush()
            except Exception as exc:  # noqa: BLE001 - a full disk must not end the agent
                log.error("writing the job cache failed: %s", exc)
            self.next_flush = now + FLUSH_EVERY
        return ended

    def _ended(self, run: _Running) -> Outcome:
        for fd in run.watched:
            self._unwatch(fd)
        run.watched = ()
        self.running.remove(run)
        try:
            return conclude(run.step, run.proc.result(), run.state, self.cache)
        except Exception as exc:  # noqa: BLE001 - a job must never take the agent down
            return crashed(run.job_id, exc)

    def close(self) -> None:
        """Stop: a stopped agent leaves no job processes behind."""
        kill_running()
        for run in list(self.running):
            for fd in run.watched:
                self._unwatch(fd)
            run.proc.result()
        self.running.clear()


def crashed(job_id: str, exc: Exception) -> Outcome:
    log.error("job %s crashed: %s: %s", job_id, type(exc).__name__, exc, exc_info=exc)
    return Outcome("failed", error=f"internal error: {type(exc).__name__}: {exc}")


START_SLACK = 2.0   # seconds between our spawn clock and the kernel's start time


def kill_leftover(pgid: int | None, start: float | None) -> bool:
    """Kill a process group a previous agent run left, only when its leader is still
    there and started when the journal says it was spawned (never a reused pid: a pid
    comes round again only after the whole pid space, never within seconds).  True
    when killed."""
    if not pgid or pgid <= 1 or start is None:
        return False
    began = proc_started_at(pgid)
    if proc_pgid(pgid) != pgid or began is None or abs(began - start) > START_SLACK:
        return False  # gone, or the pid now belongs to another process
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    except PermissionError as exc:
        log.warning("cannot kill process group %d: %s", pgid, exc)
        return False
    return True
