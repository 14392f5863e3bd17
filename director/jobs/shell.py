"""``/bin/sh -c`` for RUN: its own process group, capped output, a hard timeout.

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
from dataclasses import dataclass

OUTPUT_CAP = 1024 * 1024
KILL_GRACE = 5.0        # after SIGKILL to the group, wait this long for the pipes to close
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

    Output beyond the cap is read and dropped, so memory stays bounded.  On
    timeout the whole process group is killed; a grandchild that left the group
    and still holds a pipe is given ``KILL_GRACE`` seconds, then abandoned.
    """

    def __init__(self, command: str, cwd: str, env: dict | None, timeout: float):
        self.proc = subprocess.Popen(["/bin/sh", "-c", command], cwd=cwd, env=env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, start_new_session=True)
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
        self.deadline = time.monotonic() + timeout

    def fds(self) -> list[int]:
        """File descriptors to watch for reading."""
        return [*self.pipes, *([self.pidfd] if self.pidfd is not None and not self.exited else [])]

    def on_ready(self) -> list[int]:
        """Something of ours is readable: take what every pipe has and look for the
        exit, so one wake-up usually finishes a short job.  Returns the fds the
        caller should stop watching.  Readiness is checked, never trusted: an event
        may be stale (fd numbers are reused)."""
        closed = []
        for fd, buf in list(self.pipes.items()):
            while True:
                try:
                    data = os.read(fd, 65536)
                except BlockingIOError:
                    break
                if not data:
                    del self.pipes[fd]
                    closed.append(fd)
                    break
                if len(buf) <= OUTPUT_CAP:
                    buf += data
        if not self.pipes and not self.exited:
            self.exited = self.proc.poll() is not None
            if self.exited and self.pidfd is not None:
                closed.append(self.pidfd)
        return closed

    @property
    def done(self) -> bool:
        return self.exited and not self.pipes

    def next_check(self) -> float:
        """When ``check_time`` must run next (monotonic seconds)."""
        if self.pidfd is None and not self.pipes and not self.exited:
            return min(self.deadline, time.monotonic() + REAP_EVERY)
        return self.deadline

    def check_time(self, now: float) -> list[int]:
        """Enforce the deadline (and, without a pidfd, look for the exit); returns
        fds the caller should stop watching."""
        if self.pidfd is None and not self.pipes and not self.exited:
            self.exited = self.proc.poll() is not None
        if now < self.deadline or self.done:
            return []
        if not self.timed_out:
            self.timed_out = True
            _killpg(self.proc.pid)
            self.deadline = now + KILL_GRACE
            return []
        # the group is dead but something outside it still holds a pipe: give up on it
        dropped = self.fds()
        self.pipes.clear()
        self.exited = True
        return dropped

    def result(self) -> Ran:
        """Reap the process and close everything; call once ``done``."""
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


def run_shell(command: str, cwd: str, env: dict | None, timeout: float) -> Ran:
    """Run to the end, blocking: a ShellProcess driven by a private selector."""
    proc = ShellProcess(command, cwd, env, timeout)
    with selectors.DefaultSelector() as sel:
        for fd in proc.fds():
            sel.register(fd, selectors.EVENT_READ)
        try:
            while not proc.done:
                now = time.monotonic()
                for fd in proc.check_time(now):
                    sel.unregister(fd)
                if sel.select(max(0.0, proc.next_check() - now)):
                    for fd in proc.on_ready():
                        sel.unregister(fd)
        except BaseException:
            proc.kill()
            raise
    return proc.result()
