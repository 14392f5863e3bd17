"""Node side of COPY: content store, planning and safe assembly (the stat cache is in
``statcache``; it is re-exported here).

Security rules this module keeps (DESIGN.md, "Security properties"):
a "skip, unchanged" decision compares the manifest digest only with a digest
the node computed itself (or cached against its own stat of the file); a
destination is resolved without following symlinks (directories are opened
one component at a time with ``O_NOFOLLOW``); files are written to a temp file
in the target directory, verified, fsynced and renamed into place.
"""

from __future__ import annotations

import os
import secrets
import stat
import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from director.errors import TransferError
from director.transfer.chunking import (
    FileEntry, Manifest, digest_of, hasher, is_digest, open_regular, pread_full,
)
from director.transfer.hashing import BackgroundDigest
from director.transfer.placing import (
    TEMP_PREFIX, _open_dir, _symlink_refusal, apply_attrs, cleanup_temp_files, create_dirs,
    parse_owner, safe_target,
)
from director.transfer.statcache import StatCache, local_digest

__all__ = [  # the node's transfer API, including what placing.py provides
    "TEMP_PREFIX", "ContentStore", "StatCache", "FilePlan", "apply_attrs", "assemble",
    "chunk_source", "cleanup_temp_files", "create_dirs", "local_digest", "parse_owner",
    "plan_transfer", "safe_target",
]

BACKGROUND_HASH = 8 * 1024 * 1024  # files this big hash their whole digest on a helper thread


class ContentStore:
    """Chunks by digest under ``root/ab/abcd...``, bounded, evicting least recently used.

    Every read is verified, so a corrupt chunk is never used: it is deleted and
    reported missing.  ``pin`` protects chunks a transfer in progress relies on.
    """

    def __init__(self, root: Path, max_bytes: int = 1 << 30) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock = threading.Lock()
        self._lru: OrderedDict[str, int] = OrderedDict()
        self._pins: Counter[str] = Counter()
        self.total_bytes = 0
        cleanup_temp_files(self.root.glob("[0-9a-f][0-9a-f]"))
        found = [(f.lstat(), f.name) for f in self.root.glob("[0-9a-f][0-9a-f]/*")
                 if is_digest(f.name)]
        for st, d in sorted((s for s in found if stat.S_ISREG(s[0].st_mode)),
                            key=lambda s: s[0].st_mtime_ns):
            self._add(d, st.st_size)

    def __len__(self) -> int:
        return len(self._lru)

    def _path(self, d: str) -> Path:
        if not is_digest(d):
            raise TransferError(f"not a chunk digest: {str(d)[:80]!r}")
        return self.root / d[:2] / d

    def _drop(self, d: str) -> None:
        self.total_bytes -= self._lru.pop(d, 0)

    def _add(self, d: str, size: int) -> None:
        self._drop(d)
        self._lru[d] = size
        self.total_bytes += size

    def has(self, d: str) -> bool:
        path = self._path(d)
        with self._lock:
            if d in self._lru and path.is_file():
                return True
            self._drop(d)
            return False

    def get(self, d: str, *, verify: bool = True) -> bytes | None:
        """The chunk, or None.  ``verify=False`` is for callers that verify the
        whole file anyway (assembly): hashing every byte twice halves throughput."""
        path = self._path(d)
        with self._lock:
            try:
                data = path.read_bytes()
            except OSError:
                self._drop(d)
                return None
            if verify and digest_of(data) != d:
                path.unlink(missing_ok=True)
                self._drop(d)
                return None
            self._add(d, len(data))
            os.utime(path)  # recency survives a restart
            return data

    def put(self, d: str, data: bytes, *, verified: bool = False) -> None:
        """Store a chunk; ``verified=True`` when the caller just checked its digest."""
        path = self._path(d)
        if not verified and digest_of(data) != d:
            raise TransferError(f"chunk data does not match digest {d[:16]}...")
        with self._lock:
            if d in self._lru and path.is_file():
                self._lru.move_to_end(d)
                return
            tmp = path.parent / f"{TEMP_PREFIX}{secrets.token_hex(8)}"
            try:
                path.parent.mkdir(mode=0o700, exist_ok=True)
                with open(tmp, "xb") as f:  # O_EXCL: never through an existing name
                    f.write(data)
                os.replace(tmp, path)  # a reader sees the whole chunk or none
            except OSError as exc:
                tmp.unlink(missing_ok=True)
                raise TransferError(f"cannot store chunk: {exc.strerror}") from None
            self._add(d, len(data))
            self._evict(keep=d)

    def _evict(self, keep: str) -> None:
        for d in list(self._lru):
            if self.total_bytes <= self.max_bytes:
                return
            if d != keep and not self._pins[d]:
                self._path(d).unlink(missing_ok=True)
                self._drop(d)

    def pin(self, digests: Iterable[str]) -> None:
        with self._lock:
            self._pins.update(digests)

    def unpin(self, digests: Iterable[str]) -> None:
        with self._lock:
            self._pins.subtract(digests)
            self._pins = +self._pins


@dataclass(frozen=True)
class FilePlan:
    """What to do for manifest file ``index``: nothing, or fetch chunks ``need``."""

    index: int
    target: Path
    unchanged: bool
    need: tuple[int, ...]
    reused: int = 0  # chunks not fetched from the server (content store or local copy)
    local: dict[int, int] = field(default_factory=dict)  # chunk -> same chunk's index in
    #                                                      ``local_path`` (else ``target``)
    local_path: Path | None = None


def plan_transfer(manifest: Manifest, stat_cache: StatCache,
                  store: ContentStore) -> list[FilePlan]:
    """Decide per file: unchanged, or which chunk indexes the server must send.

    A chunk is fetched once per transfer even if several files or offsets use it.
    """
    cs = manifest.chunk_size
    plans: list[FilePlan] = []
    wanted: set[str] = set()
    for index, entry in enumerate(manifest.files):
        target = safe_target(manifest.dest, entry.rel)
        local = local_digest(target, cs, stat_cache)
        if local is not None and local[0] == entry.digest:
            plans.append(FilePlan(index, target, True, (), len(entry.chunks)))
            continue
        other = stat_cache.find(entry.digest, cs, target)
        if other is not None:  # the node already holds this very file elsewhere: copy it
            n = len(entry.chunks)
            plans.append(FilePlan(index, target, False, (), n, {i: i for i in range(n)}, other))
            continue
        at: dict[str, int] = {}
        for i, d in enumerate(local[1] if local else ()):
            at.setdefault(d, i)
        need: list[int] = []
        local: dict[int, int] = {}
        for ci, d in enumerate(entry.chunks):
            if d in at:  # read from the current file at assembly (verified there)
                local[ci] = at[d]
            elif not (d in wanted or store.has(d)):
                need.append(ci)
                wanted.add(d)
        plans.append(FilePlan(index, target, False, tuple(need),
                              len(entry.chunks) - len(need), local))
    return plans


def chunk_source(plan: FilePlan, chunk_size: int, store: ContentStore, stat_cache: StatCache,
                 fetch: Callable[[int], bytes] | None = None) -> Callable[[int, str], bytes | None]:
    """Where each chunk of one planned file comes from while it is assembled:
    ``fetch(i)`` for chunks the server sends, a file this node holds (verified as it
    is read), else the content store."""
    need = set(plan.need)

    def source(i: int, d: str) -> bytes | None:
        if fetch is not None and i in need:
            return fetch(i)
        if i in plan.local:
            path = plan.local_path or plan.target
            try:
                fd, _ = open_regular(path)
                try:
                    data = pread_full(fd, chunk_size, plan.local[i] * chunk_size)
                finally:
                    os.close(fd)
            except OSError:
                data = b""
            if digest_of(data) != d:
                stat_cache.forget(path)  # never trusted again without re-hashing
                raise TransferError(f"{path} changed behind the node's back; run the COPY"
                                    " again to fetch the content from the server")
            return data
        return store.get(d, verify=False)

    return source


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def assemble(entry: FileEntry, target: Path, chunk_size: int, store: ContentStore,
             stat_cache: StatCache, mode: int | None = None,
             source: Callable[[int, str], bytes | None] | None = None) -> os.stat_result:
    """Write ``entry`` to a temp file, verify, fsync, rename into place; returns the
    placed file's stat (its inode is what ``apply_attrs`` may touch afterwards).

    Chunk ``i`` (digest ``d``) comes from ``source(i, d)`` when given (a stream
    from the server, the file being replaced, ...), else from the content store.
    The whole-file digest is checked as the bytes go by, so nothing is read twice.
    """
    parent, name = os.path.split(os.fspath(target))
    if not name:
        raise TransferError(f"cannot write a file at {target}")
    dfd = _open_dir(parent, create=True)
    tmp: str | None = None
    try:
        try:
            existing = os.stat(name, dir_fd=dfd, follow_symlinks=False).st_mode
        except FileNotFoundError:
            existing = 0
        if stat.S_ISLNK(existing):
            raise _symlink_refusal(os.fspath(target))
        if stat.S_ISDIR(existing):
            raise TransferError(f"cannot replace directory {target} with a file "
                                "(end the COPY destination with '/' to copy into it)")
        tmp = f"{TEMP_PREFIX}{secrets.token_hex(8)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=dfd)
        whole = BackgroundDigest() if entry.size >= BACKGROUND_HASH else hasher()
        try:
            size = 0
            for i, d in enumerate(entry.chunks):
                data = source(i, d) if source else store.get(d, verify=False)
                if data is None:
                    raise TransferError(f"chunk {i} of {target} is missing from the content store")
                whole.update(data)
                size += len(data)
                _write_all(fd, data)
            if size != entry.size or whole.hexdigest() != entry.digest:
                for d in entry.chunks:  # drop any corrupt stored chunk so a retry refetches it
                    store.get(d)
                raise TransferError(f"assembled {target} does not match its manifest digest")
            os.fchmod(fd, entry.mode if mode is None else mode)
            os.fsync(fd)
            os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
            tmp = None
            written = os.fstat(fd)  # after the rename, which moves its ctime
        finally:
            if isinstance(whole, BackgroundDigest):
                whole.close()
            os.close(fd)
        os.fsync(dfd)
    except OSError as exc:
        raise TransferError(f"cannot write {target}: {exc.strerror}") from None
    finally:
        if tmp is not None:  # cut short (a timeout, a lost link): what arrived is kept,
            _keep_written(dfd, tmp, chunk_size, store)  # so a retry pulls only the rest
            try:
                os.unlink(tmp, dir_fd=dfd)
            except OSError:
                pass
        os.close(dfd)
    stat_cache.record(Path(target), entry.digest, entry.chunks, chunk_size=chunk_size, st=written)
    return written


def _keep_written(dfd: int, name: str, chunk_size: int, store: ContentStore) -> None:
    """The chunks a failed assembly had written to temp file ``name``, into ``store``
    under the digest of their own bytes (never trusted for anything else)."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
    except OSError:
        return
    try:
        with os.fdopen(fd, "rb") as f:
            kept = 0
            while kept < store.max_bytes:
                data = f.read(chunk_size)
                if len(data) < chunk_size:  # the end, or a chunk only partly written
                    break
                store.put(digest_of(data), data, verified=True)
                kept += len(data)
    except (OSError, TransferError):
        pass


def harvest_temp_files(dirs: Iterable[Path], chunk_size: int, store: ContentStore) -> int:
    """Keep the chunks a transfer cut short had already written: each ``chunk_size``
    piece of its temp files goes into ``store`` under the digest of its own bytes
    (so whatever is kept is correct for its digest), within the store's bound.
    Only after an interruption: a normal transfer writes each chunk once.
    Returns the bytes kept."""
    if chunk_size <= 0:
        return 0
    kept = 0
    for path in (p for root in dirs for p in Path(root).glob(TEMP_PREFIX + "*")):
        try:
            if not stat.S_ISREG(path.lstat().st_mode):
                continue
            with open(path, "rb") as f:
                while kept < store.max_bytes:
                    data = f.read(chunk_size)
                    if not data:
                        break
                    store.put(digest_of(data), data, verified=True)
                    kept += len(data)
        except (OSError, TransferError):
            continue
    return kept
