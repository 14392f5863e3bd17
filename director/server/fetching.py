"""The server's GET driver: receives a node's files into DEST_DIR/NODE, on the loop.

The core decided the node may send (its GET is in flight there); this driver does
the file work, and only through directory file descriptors: DEST_DIR/NODE is
opened once, every directory below it is opened component by component with
O_NOFOLLOW (a symlink or a file where a directory should be stops the GET), and
each file is written to a temp file beside its target and renamed over it (which
replaces a symlink itself, never what it points to).  Nothing outside
DEST_DIR/NODE can be created or changed, whatever names the node sends.

Work per loop turn is bounded: a chunk (at most 4 MiB) is appended as it
arrives.  Which files are already in place is found on a thread (hashing them
may take seconds), through its own fd of DEST_DIR/NODE; a file whose stat is the
one this server gave it is not hashed again.  The loop learns the answer
through a pipe it polls (``wake_r``, ``ready``).
"""

from __future__ import annotations

import logging
import os
import queue
import secrets
import stat
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from cachetools import LRUCache

from director.errors import DirectorError
from director.logsafe import shown
from director.protocol.fetch import GetDone, GetPull
from director.protocol.messages import encode
from director.server.fetchgate import FetchChunk, FetchEnd, FetchStart
from director.transfer.fetch import TEMP_PREFIX, FetchError, FetchSession, name_problem, shown_name
from director.transfer.hashing import hash_fd

log = logging.getLogger("director.server")
MAX_SESSIONS = 32     # GETs receiving at once (server-wide)
IDLE = 300.0          # s without a word from the node: the session is dropped
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class _Receive:
    route: bytes
    session: FetchSession
    root: int                     # fd of DEST_DIR/NODE
    seen: float
    parent: int = -1              # fd of the current file's directory
    tmp: str = ""                 # name of its temp file there
    fd: int = -1                  # the temp file
    written: list = field(default_factory=list)

    def drop_current(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.tmp:
            try:
                os.unlink(self.tmp, dir_fd=self.parent)
            except OSError:
                pass
            self.tmp = ""
        if self.parent >= 0:
            os.close(self.parent)
            self.parent = -1

    def close(self) -> None:
        self.drop_current()
        if self.root >= 0:
            os.close(self.root)
            self.root = -1


def open_root(dest: str, node: str) -> int:
    """A directory fd of DEST_DIR/NODE (created); DEST_DIR is the operator's own path."""
    if not isinstance(dest, str) or not os.path.isabs(dest):
        raise FetchError(f"GET needs an absolute DEST_DIR on the server, not {shown_name(dest)}")
    if name_problem(node) or "/" in node:
        raise FetchError(f"node name {shown_name(node)} cannot name a directory")
    try:
        os.makedirs(dest, exist_ok=True)
        top = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise FetchError(f"GET destination {dest}: {exc.strerror}") from None
    try:
        return open_dirs(top, (node,), create=True)
    except FetchError:
        raise FetchError(f"GET destination {os.path.join(dest, node)} is not a directory"
                         " (a symlink or a file is in the way)") from None
    finally:
        os.close(top)


def open_dirs(root: int, parts: tuple[str, ...], create: bool) -> int:
    """The directory ``root``/``parts`` as a new fd, never through a symlink.  Missing
    ones are made with ``create``; FileNotFoundError without."""
    fd = os.dup(root)
    try:
        for part in parts:
            if create:
                try:
                    os.mkdir(part, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass
            try:
                nfd = os.open(part, _DIR, dir_fd=fd)
            except FileNotFoundError:
                raise
            except OSError:  # ELOOP (a symlink), ENOTDIR (a file or special file)
                raise FetchError(f"{shown_name(part)} on the server is not a plain directory"
                                 " (a symlink or a file is in the way)") from None
            os.close(fd)
            fd = nfd
        return fd
    except BaseException:
        os.close(fd)
        raise


class Fetcher:
    """GET sessions by (job id, node key); ``send(route, frames)`` to a node,
    ``finished(job_id, key, status, error, transfer)`` tells the core how one ended."""

    def __init__(self, limit: int, send: Callable[[bytes, list], Any],
                 finished: Callable[[str, str, str, str, dict], None]):
        self.limit = limit
        self.send = send
        self.finished = finished
        self.sessions: dict[tuple[str, str], _Receive] = {}
        # stat of a file this server wrote -> its digest: an unchanged GET re-hashes nothing
        self.digests: LRUCache = LRUCache(maxsize=100_000)
        self.lock = threading.Lock()  # the digests, shared with the checking threads
        self.checked: queue.SimpleQueue = queue.SimpleQueue()
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.threads: set[threading.Thread] = set()
        self.ended: LRUCache = LRUCache(maxsize=4096)  # sessions over: late chunks ignored

    def handle(self, action: Any) -> None:
        kind = type(action)
        if kind is FetchStart:
            self.start(action)
        elif kind is FetchChunk:
            self.chunk(action)
        elif kind is FetchEnd:
            rec = self.sessions.pop((action.job_id, action.key), None)
            if rec is not None:
                rec.close()

    # -- a session --------------------------------------------------------------------
    def start(self, a: FetchStart) -> None:
        self.sweep(time.monotonic())
        sid = (a.job_id, a.key)
        if sid in self.sessions or sid in self.ended:
            self._fail(sid, a.route, "the node offered its GET files twice")
            return
        if len(self.sessions) >= MAX_SESSIONS:
            self._end(sid, a.route, None, f"the server is receiving {MAX_SESSIONS} GETs"
                      " already; retry later")
            return
        try:
            if a.offer.problem:
                raise FetchError(f"the node's offer was malformed: {a.offer.problem}")
            session = FetchSession(a.offer.files, a.offer.chunk_size, self.limit)
            rec = _Receive(a.route, session, open_root(a.dest, a.node), time.monotonic())
        except DirectorError as exc:
            self._end(sid, a.route, None, str(exc))
            return
        self.sessions[sid] = rec
        root = os.dup(rec.root)  # the thread's own: the session may end meanwhile
        thread = threading.Thread(target=self._check, args=(sid, rec, root), daemon=True,
                                  name="get-check")
        self.threads = {t for t in self.threads if t.is_alive()} | {thread}
        thread.start()

    def _check(self, sid: tuple[str, str], rec: _Receive, root: int) -> None:
        """(thread) Which offered files are in place already; then wake the loop."""
        try:
            result: set[int] | str = self._unchanged(rec.session, root)
        except (DirectorError, OSError) as exc:
            result = _why(exc)
        except Exception as exc:  # noqa: BLE001 - reported as the GET's failure
            result = f"internal error: {type(exc).__name__}: {exc}"
        finally:
            os.close(root)
        self.checked.put((sid, rec, result))
        try:
            os.write(self.wake_w, b"x")
        except OSError:  # full (the loop wakes anyway) or closed (stopping)
            pass

    def ready(self) -> None:
        """(loop) Start pulling for the sessions whose check is done."""
        try:
            while os.read(self.wake_r, 4096):
                pass
        except OSError:
            pass
        while True:
            try:
                sid, rec, result = self.checked.get_nowait()
            except queue.Empty:
                return
            if self.sessions.get(sid) is not rec:
                continue  # ended while it was checked
            try:
                if isinstance(result, str):
                    raise FetchError(result)
                rec.session.plan(result)
                self._advance(sid, rec)
            except (DirectorError, OSError) as exc:
                self._fail(sid, rec.route, _why(exc))

    def chunk(self, a: FetchChunk) -> None:
        sid = (a.data.job_id, a.key)
        rec = self.sessions.get(sid)
        if rec is None:
            if sid in self.ended:  # sent before the node heard that its GET ended
                return
            self._end(sid, a.route, None, "no GET of this job is being received from this"
                      " node")
            return
        rec.seen = time.monotonic()
        msg = a.data
        try:
            if msg.error:
                name = shown_name(rec.session.files[msg.file].rel) \
                    if msg.file < len(rec.session.files) else f"file {msg.file}"
                raise FetchError(f"the node could not send {name}: {shown_name(msg.error)}")
            for data in rec.session.accept(msg.file, msg.chunk, msg.data):
                view = memoryview(data)
                while view:
                    view = view[os.write(rec.fd, view):]
            self._advance(sid, rec)
        except (DirectorError, OSError) as exc:
            self._fail(sid, rec.route, _why(exc))

    def _advance(self, sid: tuple[str, str], rec: _Receive) -> None:
        """Place every complete file, open the next, ask for the next window."""
        s = rec.session
        while True:
            if rec.fd >= 0 and s.file_complete():
                self._place(rec)
            if rec.fd < 0:
                f = s.next_file()
                if f is None:
                    self._end(sid, rec.route, rec, "")
                    return
                self._open(rec, f)
                continue
            break
        reqs = s.requests()
        if reqs:
            self.send(rec.route, encode(GetPull(sid[0], tuple(reqs))))

    def _open(self, rec: _Receive, f: int) -> None:
        parts = rec.session.parts[f]
        rec.parent = open_dirs(rec.root, parts[:-1], create=True)
        _check_target(rec.parent, parts[-1])
        rec.tmp = TEMP_PREFIX + secrets.token_hex(8)
        rec.fd = os.open(rec.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600, dir_fd=rec.parent)

    def _place(self, rec: _Receive) -> None:
        s = rec.session
        s.check_file()
        entry = s.files[s.current]
        os.fchmod(rec.fd, 0o755 if entry.mode & 0o111 else 0o644)  # no setuid, no o+w
        name = s.parts[s.current][-1]
        os.rename(rec.tmp, name, src_dir_fd=rec.parent, dst_dir_fd=rec.parent)
        rec.tmp = ""
        with self.lock:  # stat after the rename (it moves the ctime)
            self.digests[_stat_key(os.fstat(rec.fd))] = entry.digest
        rec.drop_current()

    def _unchanged(self, s: FetchSession, root: int) -> set[int]:
        """(thread) Files already in DEST_DIR/NODE with the offered content."""
        same = set()
        for i, (entry, parts) in enumerate(zip(s.files, s.parts)):
            try:
                parent = open_dirs(root, parts[:-1], create=False)
            except FileNotFoundError:
                continue
            try:
                fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
                             | os.O_CLOEXEC, dir_fd=parent)
            except OSError:  # missing, or a symlink: fetched and renamed over it
                continue
            finally:
                os.close(parent)
            try:
                st = os.fstat(fd)
                if stat.S_ISREG(st.st_mode) and st.st_size == entry.size:
                    key = _stat_key(st)
                    with self.lock:
                        digest = self.digests.get(key)
                    if digest is None:
                        digest = hash_fd(fd, s.chunk_size)[0]
                        with self.lock:
                            self.digests[key] = digest
                    if digest == entry.digest:
                        same.add(i)
            finally:
                os.close(fd)
        return same

    def _fail(self, sid: tuple[str, str], route: bytes, error: str) -> None:
        rec = self.sessions.get(sid)
        self._end(sid, route, rec, error)

    def _end(self, sid: tuple[str, str], route: bytes, rec: _Receive | None,
             error: str) -> None:
        """Tell the core, then the node, how the GET ended; free the session."""
        transfer = rec.session.transfer() if rec is not None else {}
        self.ended[sid] = True
        if rec is not None:
            rec.close()
            self.sessions.pop(sid, None)
        if error:
            log.warning("GET of job %s failed: %s", sid[0], shown(error))
        self.finished(sid[0], sid[1], "failed" if error else "success", error, transfer)
        self.send(route, encode(GetDone(sid[0], not error, error[:4000],
                                        tuple(transfer.items()))))

    def sweep(self, now: float) -> None:
        """Drop sessions whose node went quiet (its job ended without a word)."""
        for sid, rec in list(self.sessions.items()):
            if now - rec.seen > IDLE:
                rec.close()
                del self.sessions[sid]

    def close(self) -> None:
        for rec in self.sessions.values():
            rec.close()
        self.sessions.clear()
        deadline = time.monotonic() + 2.0
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        if not any(t.is_alive() for t in self.threads):  # one still running writes to it
            os.close(self.wake_r)
            os.close(self.wake_w)


def _check_target(parent: int, name: str) -> None:
    """What is at the target now may be replaced only if it is a file or a symlink."""
    try:
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
        raise FetchError(f"{shown_name(name)} on the server is a directory or a special"
                         " file; it is not replaced")


def _stat_key(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return f"writing on the server failed: {exc.strerror or exc}"
    return str(exc)
