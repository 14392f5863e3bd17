"""``/bin/sh -c`` (or argv, RUN's exec form) for RUN: its own process group, capped
output, a hard timeout.

A :class:`ShellProcess` never blocks: its pipes and a pidfd are watched by the
caller's event loop (the node agent runs every job process from its one loop,
so no thread or extra connection sits between a job and its result), and
``run_shell`` is the same thing driven to the end by a private selector.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass

OUTPUT_CAP = 1024 * 1024
KILL_GRACE = 5.0        # after SIGKILL to the group, wait this long for the pipes to close
PIPE_GRACE = 0.01       # a job's pipes are watched once it has run this long (see ShellProcess)
REAP_EVERY = 0.01       # without a pidfd: how often to look for the exit

RUNNING: set[int] = set()  # process groups of RUNs in progress, killed when the agent stops


@dataclass(frozen=True)
class Ran:
    rc: int | None
    stdout: bytes
    stderr: bytes
    timed_out: bool


def kill_running() -> None:
    for pgid in list(RUNNING):
        _killpg(pgid)


def _killpg(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class ShellProcess:
    """One running ``/bin/sh -c COMMAND``; feed it readiness events until ``done``.

    ``command`` as a tuple or list is an argv run directly, with no shell at all.

    At first only the exit (a pidfd) is watched: a short job then costs one
    wake-up, which drains its pipes and reaps it together.  Its pipes are watched
    too once it has run ``PIPE_GRACE`` (or exited with a pipe still held open), so
    a job with a lot to say never blocks on a full pipe for longer than that.
    Output beyond the cap is read and dropped, so memory stays bounded.  On
    timeout the whole process group is killed; a grandchild that left the group
    and still holds a pipe is given ``KILL_GRACE`` seconds, then abandoned.
    Callers watch ``fds()`` after every call: the set changes as the job goes.
    """

    def __init__(self, command: str | Sequence[str], cwd: str, env: dict | None,
                 timeout: float, gated: bool = False):
        self.gate: int | None = None
        keep: tuple[int, ...] = ()
        stdin: int = subprocess.DEVNULL
        if gated:  # see release(); the gate is its stdin until then (dash: fds 0-9 only)
            r, self.gate = os.pipe2(os.O_CLOEXEC)
            keep, stdin = (r,), r
            hold = "IFS= read -r _ || exit 125; exec </dev/null\n"
            if isinstance(command, str):
                argv = ["/bin/sh", "-c", hold + command]
            else:
                argv = ["/bin/sh", "-c", hold + 'exec "$@"', "sh", *command]
        else:
            argv = ["/bin/sh", "-c", command] if isinstance(command, str) else list(command)
        try:
            self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=stdin,
                                         stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, start_new_session=True)
        except BaseException:
            for fd in (*keep, self.gate):
                if fd is not None:
                    os.close(fd)
            raise
        for fd in keep:
            os.close(fd)
        RUNNING.add(self.proc.pid)
        self.out, self.err = bytearray(), bytearray()
        self.pipes = {self.proc.stdout.fileno(): self.out, self.proc.stderr.fileno(): self.err}
        for fd in self.pipes:  # a stale readiness event (fd numbers are reused) must not block
            os.set_blocking(fd, False)
        try:
            self.pidfd: int | None = os.pidfd_open(self.proc.pid)
        except (AttributeError, OSError):
            self.pidfd = None
        self.exited = False
        self.timed_out = False
        self.started = time.monotonic()
        self.deadline = self.started + timeout
        self.watch_pipes = self.pidfd is None  # without a pidfd, pipe EOF is the only sign

    @property
    def pid(self) -> int:
        return self.proc.pid

    def release(self) -> None:
        """Let a gated job run.  A gated shell waits, before any of the job's own code,
        until this line arrives; if the agent dies first the pipe reads end-of-file and
        the shell exits 125 having run nothing -- so the agent can make the job's pid
        durable first, and a crash between spawn and journal never leaves a job it
        cannot find running."""
        if self.gate is not None:
            try:
                os.write(self.gate, b"\n")
            except OSError:
                pass  # it is gone already: its exit says so
            os.close(self.gate)
            self.gate = None

    def fds(self) -> list[int]:
        """File descriptors to watch for reading now."""
        out = list(self.pipes) if self.watch_pipes else []
        if self.pidfd is not None and not self.exited:
            out.append(self.pidfd)
        return out

    def on_ready(self) -> None:
        """Something of ours is readable: take what every pipe has and look for the
        exit.  Readiness is checked, never trusted: an event may be stale (fd
        numbers are reused), so reads never block and the exit is asked of the
        kernel."""
        for fd, buf in list(self.pipes.items()):
            while True:
                try:
                    data = os.read(fd, 65536)
                except BlockingIOError:
                    break
                if not data:
                    del self.pipes[fd]
                    break
                if len(buf) <= OUTPUT_CAP:
                    buf += data
        if not self.exited and (self.pidfd is not None or not self.pipes):
            self.exited = self.proc.poll() is not None
        if self.exited and self.pipes:  # something it started still holds a pipe
            self.watch_pipes = True

    @property
    def done(self) -> bool:
        return self.exited and not self.pipes

    def next_check(self) -> float:
        """When ``check_time`` must run next (monotonic seconds)."""
        if not self.watch_pipes:
            return min(self.deadline, self.started + PIPE_GRACE)
        if self.pidfd is None and not self.pipes and not self.exited:
            return min(self.deadline, time.monotonic() + REAP_EVERY)
        return self.deadline

    def check_time(self, now: float) -> None:
        """Start watching the pipes after the grace, enforce the deadline (and,
        without a pidfd, look for the exit)."""
        if not self.watch_pipes and now >= self.started + PIPE_GRACE:
            self.watch_pipes = True
            self.on_ready()
        if self.pidfd is None and not self.pipes and not self.exited:
            self.exited = self.proc.poll() is not None
        if now < self.deadline or self.done:
            return
        if not self.timed_out:
            self.timed_out = True
            _killpg(self.proc.pid)
            self.deadline = now + KILL_GRACE
            return
        # the group is dead but something outside it still holds a pipe: give up on it
        self.pipes.clear()
        self.exited = True

    def result(self) -> Ran:
        """Reap the process and close everything; call once ``done``."""
        if self.gate is not None:  # never released (killed first): it ran nothing
            os.close(self.gate)
            self.gate = None
        for stream in (self.proc.stdout, self.proc.stderr):
            stream.close()
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None
        try:
            rc = self.proc.wait(timeout=KILL_GRACE)
        except subprocess.TimeoutExpired:
            _killpg(self.proc.pid)
            rc = self.proc.wait()
        RUNNING.discard(self.proc.pid)
        return Ran(rc, bytes(self.out), bytes(self.err), self.timed_out)

    def kill(self) -> None:
        _killpg(self.proc.pid)


def run_shell(command: str | Sequence[str], cwd: str, env: dict | None, timeout: float) -> Ran:
    """Run to the end, blocking: a ShellProcess driven by a private selector."""
    proc = ShellProcess(command, cwd, env, timeout)
    watched: set[int] = set()
    with selectors.DefaultSelector() as sel:
        try:
            while True:
                want = set(proc.fds())
                for fd in watched - want:
                    sel.unregister(fd)
                for fd in want - watched:
                    sel.register(fd, selectors.EVENT_READ)
                watched = want
                if proc.done:
                    break
                if sel.select(max(0.0, proc.next_check() - time.monotonic())):
                    proc.on_ready()
                now = time.monotonic()
                if now >= proc.next_check():
                    proc.check_time(now)
        except BaseException:
            proc.kill()
            raise
    return proc.result()
