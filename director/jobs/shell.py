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
        self.proc: subprocess.Popen | _Spawned
        if gated:
            self.proc, self.gate, out, err = _spawn_gated(command, cwd, env)
        else:
            argv = ["/bin/sh", "-c", command] if isinstance(command, str) else list(command)
            self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, start_new_session=True)
            out, err = self.proc.stdout.fileno(), self.proc.stderr.fileno()
        RUNNING.add(self.proc.pid)
        self.out, self.err = bytearray(), bytearray()
        self.pipes = {out: self.out, err: self.err}
        self.fds_open = (out, err)  # closed by result()
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
        if isinstance(self.proc, subprocess.Popen):
            for stream in (self.proc.stdout, self.proc.stderr):
                stream.close()
        else:
            for fd in self.fds_open:
                os.close(fd)
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


class _Spawned:
    """A child of ``os.posix_spawn``: the part of ``Popen`` a ShellProcess uses."""

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while (rc := self.poll()) is None:
            if time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(str(self.pid), timeout)
            time.sleep(0.005)
        return rc


# Before any of the job's own code the gated shell enters the job's directory, then
# waits for the agent's release line (see ShellProcess.release).  The directory is
# its $1, shifted away, so the command sees the arguments it was given ($0 "/bin/sh").
_HOLD = 'cd -- "$1" || exit 125; shift; IFS= read -r _ || exit 125; exec </dev/null\n'


_OWN_ENV: dict[bytes, bytes] = {}


def _own_env() -> dict[bytes, bytes]:
    """The agent's environment as a plain dict, copied once: handing ``os.environ``
    to ``posix_spawn`` decoded and re-encoded every variable at every spawn."""
    if not _OWN_ENV:
        _OWN_ENV.update(os.environb)
    return _OWN_ENV


def close_inherited() -> None:
    """Mark every descriptor this process inherited close-on-exec: ``posix_spawn``
    closes nothing itself, and an agent started with a leaked descriptor must not
    pass it on to every job (``Popen`` closed them one by one, at each spawn)."""
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        fds = list(range(3, 1024))
    for fd in fds:
        if fd > 2:
            try:
                os.set_inheritable(fd, False)
            except OSError:
                pass


def _spawn_gated(command: str | Sequence[str], cwd: str,
                 env: dict | None) -> tuple[_Spawned, int, int, int]:
    """Start a gated job with ``posix_spawn`` (half of ``Popen``'s cost in the agent, a
    visible share of a short job): (child, gate, stdout, stderr).  Every descriptor
    the agent holds is close-on-exec (PEP 446; libzmq and SQLite open theirs so), and
    the three given to the child are its only ones."""
    if isinstance(command, str):
        argv = ["/bin/sh", "-c", _HOLD + command, "/bin/sh", cwd]
    else:
        argv = ["/bin/sh", "-c", _HOLD + 'exec "$@"', "sh", cwd, *command]
    made: list[int] = []
    try:
        gate_r, gate = os.pipe2(os.O_CLOEXEC)
        made += (gate_r, gate)
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        made += (out_r, out_w)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        made += (err_r, err_w)
        pid = os.posix_spawn("/bin/sh", argv, _own_env() if env is None else env,
                             file_actions=[(os.POSIX_SPAWN_DUP2, gate_r, 0),
                                           (os.POSIX_SPAWN_DUP2, out_w, 1),
                                           (os.POSIX_SPAWN_DUP2, err_w, 2)],
                             setsid=True)
    except BaseException:
        for fd in made:
            os.close(fd)
        raise
    for fd in (gate_r, out_w, err_w):
        os.close(fd)
    return _Spawned(pid), gate, out_r, err_r


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
