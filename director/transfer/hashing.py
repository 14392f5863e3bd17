"""Reading and hashing sources: BLAKE2b per chunk and per file, cached by stat.

Everything here reads local files; nothing here trusts a peer.  The digest
cache makes a redeploy of unchanged sources cost one ``lstat`` per file.
"""

from __future__ import annotations

import hashlib
import os
import queue
import re
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cachetools import LRUCache

from director.errors import TransferError

_HEX64 = re.compile(r"[0-9a-f]{64}")


def hasher(data: bytes = b"") -> "hashlib._Hash":
    """The one hash of Director's transfers: BLAKE2b with a 32-byte digest."""
    return hashlib.blake2b(data, digest_size=32)


def digest_of(data: bytes) -> str:
    """Hex BLAKE2b-256 of ``data``."""
    return hasher(data).hexdigest()


def is_digest(value: object) -> bool:
    """True for a 64-character lower-case hex string (our digest form)."""
    return isinstance(value, str) and _HEX64.fullmatch(value) is not None


def pread_full(fd: int, size: int, offset: int) -> bytes:
    """Up to ``size`` bytes at ``offset`` (short only at end of file); one read normally."""
    data = os.pread(fd, size, offset)
    while 0 < len(data) < size:
        more = os.pread(fd, size - len(data), offset + len(data))
        if not more:
            break
        data += more
    return data


_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hash")
    return _POOL


def hash_fd(fd: int, chunk_size: int) -> tuple[str, tuple[str, ...]]:
    """Whole-file and per-chunk digests of an open file, one read per chunk.

    BLAKE2b releases the GIL, so each chunk's own digest is computed on a helper
    thread while this one feeds the whole-file digest: two hashes, one pass.
    """
    whole, chunks, offset = hasher(), [], 0
    pending = None  # at most one chunk in the helper: memory stays at two chunks
    small = chunk_size < 256 * 1024
    while data := pread_full(fd, chunk_size, offset):
        if pending is not None:
            chunks.append(pending.result())
            pending = None
        if small:
            chunks.append(digest_of(data))
        else:
            pending = _pool().submit(digest_of, data)
        whole.update(data)
        offset += len(data)
    if pending is not None:
        chunks.append(pending.result())
    return whole.hexdigest(), tuple(chunks)


def open_regular(path: str | os.PathLike[str]) -> tuple[int, os.stat_result]:
    """Open a regular file read-only without following a symlink; returns (fd, fstat)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise TransferError(f"cannot open {os.fspath(path)!s}: {exc.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise TransferError(f"{os.fspath(path)!s} is not a regular file")
    return fd, st


def hash_file(path: str | os.PathLike[str], chunk_size: int) -> tuple[str, tuple[str, ...]]:
    """Whole-file digest and per-chunk digests, reading each chunk once."""
    fd, _ = open_regular(path)
    try:
        return hash_fd(fd, chunk_size)
    except OSError as exc:
        raise TransferError(f"cannot read {os.fspath(path)!s}: {exc.strerror}") from None
    finally:
        os.close(fd)


def _lstat(path: str | os.PathLike[str]) -> os.stat_result:
    try:
        return os.lstat(path)
    except OSError as exc:
        raise TransferError(f"cannot stat {os.fspath(path)}: {exc.strerror}") from None


def _stat_key(st: os.stat_result, chunk_size: int) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, chunk_size)


class DigestCache:
    """Digests of unchanged sources, keyed by their stat, so a redeploy re-reads nothing.

    A stale entry cannot corrupt a node: the node checks every chunk it receives
    against the manifest and each file's whole digest, and the server re-hashes
    a chunk it serves whenever its file's stat is not the one vouched for here.
    """

    def __init__(self, maxsize: int = 100_000) -> None:
        self._lru: LRUCache = LRUCache(maxsize=maxsize)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._lru)

    def digests(self, path: Path, chunk_size: int) -> tuple[os.stat_result, str, tuple[str, ...]]:
        """(stat, digest, chunks) of ``path``; re-read only when its stat changed.

        The stat returned is the one the digests belong to (checked before and
        after reading), so size and mode in a manifest always match its chunks.
        """
        for _ in range(3):
            st = _lstat(path)
            key = _stat_key(st, chunk_size)
            with self._lock:
                hit = self._lru.get(key)
            if hit is not None:
                return (st, *hit)
            value = hash_file(path, chunk_size)
            if _stat_key(_lstat(path), chunk_size) == key:
                with self._lock:
                    self._lru[key] = value
                return (st, *value)
        raise TransferError(f"source {path} keeps changing while it is read; try again")


    def vouched(self, path: Path, chunk_size: int, chunks: tuple[str, ...]) -> tuple | None:
        """The stat key of ``path`` if this cache holds exactly ``chunks`` for it as it
        is now (None otherwise): serving it under that stat needs no second hashing."""
        try:
            key = _stat_key(os.lstat(path), chunk_size)
        except OSError:
            return None
        with self._lock:
            hit = self._lru.get(key)
        return key if hit is not None and tuple(hit[1]) == tuple(chunks) else None


class BackgroundDigest:
    """A whole-file BLAKE2b fed in order on a helper thread.

    BLAKE2b releases the GIL, so a node hashes one chunk on the second core while
    it receives, checks and writes the next: the whole-file check costs no wall time.
    """

    def __init__(self) -> None:
        self._h = hasher()
        self._q: queue.Queue[bytes | None] = queue.Queue(maxsize=8)
        self._t = threading.Thread(target=self._run, daemon=True, name="digest")
        self._t.start()
        self._open = True

    def _run(self) -> None:
        while (data := self._q.get()) is not None:
            self._h.update(data)

    def update(self, data: bytes) -> None:
        self._q.put(data)

    def close(self) -> None:
        if self._open:
            self._open = False
            self._q.put(None)
            self._t.join()

    def hexdigest(self) -> str:
        self.close()
        return self._h.hexdigest()
