"""The node's stat cache: digests of destination files, trusted only while a fresh
``lstat`` of the file still matches (device, inode, size, mtime and ctime), so an
unchanged redeploy costs one ``lstat`` per file and an edit is always seen.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
from pathlib import Path

from director.errors import TransferError
from director.transfer.chunking import hash_fd, open_regular

Digests = tuple[str, tuple[str, ...]]


def _stat_id(st: os.stat_result) -> str:
    # Text, not INTEGER: st_ino may not fit SQLite's signed 64 bits.  ctime too: an edit
    # that keeps size and mtime (touch -r, a careful editor) still moves ctime.
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"


class StatCache:
    """Digests of destination files, valid only while a fresh lstat still matches.

    Persisted in SQLite so a node restart does not re-hash every deployed file.
    """

    def __init__(self, path: Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")  # a commit per file, not a sync per file
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS stat (path TEXT PRIMARY KEY, "
                         "ident TEXT NOT NULL, chunk_size INTEGER NOT NULL, "
                         "digest TEXT NOT NULL, chunks TEXT NOT NULL)")
        self._db.execute("CREATE INDEX IF NOT EXISTS stat_digest ON stat(digest)")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def lookup(self, path: Path, chunk_size: int) -> Digests | None:
        with self._lock:
            row = self._db.execute("SELECT ident, chunk_size, digest, chunks FROM stat "
                                   "WHERE path = ?", (os.fspath(path),)).fetchone()
        try:
            st = os.lstat(path)
        except OSError:
            return None
        if row is None or row[1] != chunk_size or not stat.S_ISREG(st.st_mode) \
                or _stat_id(st) != row[0]:
            return None
        return row[2], tuple(row[3][i:i + 64] for i in range(0, len(row[3]), 64))

    def find(self, digest: str, chunk_size: int, exclude: Path) -> Path | None:
        """Another file this node holds with exactly this content (still fresh)."""
        with self._lock:
            rows = self._db.execute("SELECT path FROM stat WHERE digest = ? AND path != ?"
                                    " LIMIT 8", (digest, os.fspath(exclude))).fetchall()
        for (other,) in rows:
            found = self.lookup(Path(other), chunk_size)
            if found is not None and found[0] == digest:
                return Path(other)
        return None

    def record(self, path: Path, digest: str, chunks: tuple[str, ...], *, chunk_size: int,
               st: os.stat_result | None = None) -> None:
        """Remember ``path``'s digests against ``st`` (default: lstat it now)."""
        st = st if st is not None else os.lstat(path)
        if not stat.S_ISREG(st.st_mode):
            return self.forget(path)
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO stat VALUES (?, ?, ?, ?, ?)",
                             (os.fspath(path), _stat_id(st), chunk_size, digest, "".join(chunks)))

    def settle(self, path: Path) -> None:
        """After our own rename and chmod/chown of a file just recorded: those move its
        ctime, and only that may differ (same inode, size and mtime) to take the new one."""
        with self._lock:
            row = self._db.execute("SELECT ident FROM stat WHERE path = ?",
                                   (os.fspath(path),)).fetchone()
            try:
                st = os.lstat(path)
            except OSError:
                return
            now = _stat_id(st)
            if row is not None and row[0] != now and \
                    row[0].rsplit(":", 1)[0] == now.rsplit(":", 1)[0]:
                self._db.execute("UPDATE stat SET ident = ? WHERE path = ?",
                                 (now, os.fspath(path)))

    def forget(self, path: Path) -> None:
        with self._lock:
            self._db.execute("DELETE FROM stat WHERE path = ?", (os.fspath(path),))


def local_digest(path: Path, chunk_size: int, stat_cache: StatCache) -> Digests | None:
    """Digests of what the node has at ``path``, computed by the node itself."""
    hit = stat_cache.lookup(path, chunk_size)
    if hit is not None:
        return hit
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return None
        fd, before = open_regular(path)
    except (OSError, TransferError):
        return None
    try:
        value = hash_fd(fd, chunk_size)
        unchanged = _stat_id(os.fstat(fd)) == _stat_id(before)
    except OSError:
        return None
    finally:
        os.close(fd)
    if unchanged:
        stat_cache.record(path, *value, chunk_size=chunk_size, st=before)
    return value
