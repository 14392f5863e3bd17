"""Server side of COPY: manifests of BLAKE2b-digested fixed-size chunks.

The server turns ``COPY SRC... DEST`` into a :class:`Manifest` (what the node
must end up with) plus the local paths it will serve chunks from.  The node
only ever sees the manifest and asks for chunks *by index*, so it can never
name a server-side path.  A manifest arriving from the wire is hostile input:
:meth:`Manifest.from_dict` refuses anything malformed with ``ProtocolError``.
"""

from __future__ import annotations

import glob
import os
import stat
from pathlib import Path
from typing import Sequence

from director.errors import ProtocolError, TransferError
from director.transfer.hashing import (
    DigestCache, _lstat, _stat_key, digest_of, hash_fd, hash_file, hasher, is_digest,
    open_regular, pread_full,
)

from director.transfer.manifest import (
    DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE, MAX_FILES, MIN_CHUNK_SIZE, FileEntry, Manifest,
    _check_layout, _valid_dest, check_rel,
)

__all__ = [  # the transfer API for callers, including what hashing.py provides
    "DigestCache", "FileEntry", "Manifest", "build_manifest", "check_rel", "digest_of",
    "hash_fd", "hash_file", "hasher", "is_digest", "open_regular", "pread_full", "read_chunk",
    "vouched_chunks",
]

def _expand(source: str, base: Path) -> list[str]:
    """Absolute paths a source names (sorted glob matches, or the path itself)."""
    pattern = source if os.path.isabs(source) else os.path.join(glob.escape(str(base)), source)
    path = source if os.path.isabs(source) else os.path.join(str(base), source)
    matches = sorted(glob.glob(pattern)) if glob.has_magic(source) else []
    if not matches and os.path.lexists(path):  # also a literal name like "file[1].txt"
        matches = [path]
    if not matches:
        raise TransferError(f"COPY source {source!r} not found (relative to {base})")
    return [os.path.abspath(m) for m in matches]


def _walk(top: str) -> tuple[list[tuple[str, str]], list[str]]:
    """Regular files (rel, path) and directories (rel) under ``top``; symlinks skipped."""
    files: list[tuple[str, str]] = []
    dirs: list[str] = []

    def onerror(exc: OSError) -> None:
        raise TransferError(f"cannot read directory {exc.filename}: {exc.strerror}")

    for dirpath, dirnames, filenames in os.walk(top, onerror=onerror, followlinks=False):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, top)
        rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/")
        dirs.append(rel_dir)
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            if stat.S_ISREG(_lstat(path).st_mode):  # symlinks, fifos, devices: skipped
                files.append((f"{rel_dir}/{name}" if rel_dir else name, path))
    return files, dirs


def _leaf_dirs(dirs: set[str], file_rels: Sequence[str]) -> tuple[str, ...]:
    """Directories nothing else will create: empty ones (and DEST for an empty tree)."""
    covered: set[str] = set()
    for path in (*file_rels, *dirs):
        parts = path.split("/") if path else []
        covered.update("/".join(parts[:i]) for i in range(len(parts)))
    return tuple(sorted(d for d in dirs if d not in covered))


def build_manifest(sources: Sequence[str], dest: str, *, base: Path,
                   chunk_size: int = DEFAULT_CHUNK_SIZE,
                   cache: DigestCache | None = None) -> tuple[Manifest, tuple[Path, ...]]:
    """Containerfile COPY semantics -> (manifest, absolute local path of each file entry).

    Fails with TransferError before anything is sent: missing source, symlink
    source, two sources landing on the same path, too many files.
    """
    if not _valid_dest(dest):
        raise TransferError(f"COPY destination {dest!r} is not a valid path")
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise TransferError(f"chunk size {chunk_size} out of range")
    if not sources:
        raise TransferError("COPY needs at least one source")
    cache = cache if cache is not None else DigestCache()
    base = Path(os.path.abspath(base))
    expanded = [(src, _expand(src, base)) for src in sources]
    many = dest.endswith("/") or sum(len(m) for _, m in expanded) > 1
    found: dict[str, str] = {}  # rel -> local path
    dirs: set[str] = set()

    def add(rel: str, path: str) -> None:
        if _pseudo(path):  # e.g. reached through a symlinked directory
            raise TransferError(f"COPY source {path!r} is on /proc, /sys or /dev: "
                                "only real files can be sent")
        why = check_rel(rel)
        if why:
            raise TransferError(f"COPY source {path!r} cannot be sent: {why}")
        if rel in found:
            raise TransferError(f"COPY sources {found[rel]!r} and {path!r} both go to "
                                f"{rel or dest!r} in {dest!r}")
        found[rel] = path

    for src, matches in expanded:
        for path in matches:
            if _pseudo(path):
                raise TransferError(f"COPY source {path!r} is on /proc, /sys or /dev: "
                                    "only real files can be sent")
            st = _lstat(path)
            if stat.S_ISLNK(st.st_mode):
                raise TransferError(f"COPY source {path!r} is a symlink; refusing to follow it "
                                    "(copy its target instead)")
            if stat.S_ISDIR(st.st_mode):
                tree_files, tree_dirs = _walk(path)
                dirs.update(tree_dirs)
                for rel, fpath in tree_files:
                    add(rel, fpath)
            elif stat.S_ISREG(st.st_mode):
                add(os.path.basename(path) if many else "", path)
            else:
                raise TransferError(f"COPY source {path!r} is not a regular file or directory")
            if len(found) > MAX_FILES:
                raise TransferError(f"COPY of more than {MAX_FILES} files is not supported")

    rels = sorted(found)
    entries, paths = [], []
    for rel in rels:
        st, digest, chunks = cache.digests(Path(found[rel]), chunk_size)
        entries.append(FileEntry(rel, st.st_size, stat.S_IMODE(st.st_mode), digest, chunks))
        paths.append(Path(found[rel]))
    dir_rels = _leaf_dirs(dirs, rels)
    try:
        _check_layout(entries, dir_rels)
    except ProtocolError as exc:
        raise TransferError(f"COPY to {dest!r}: {exc}") from None
    return Manifest(dest, chunk_size, tuple(entries), dir_rels), tuple(paths)


PSEUDO_ROOTS = ("/proc", "/sys", "/dev")  # kernel views: a file there is not content


def _pseudo(path: str) -> bool:
    """True for a path whose real location is under /proc, /sys or /dev (e.g.
    /proc/self/environ, which stats as an empty regular file but reads secrets)."""
    real = os.path.realpath(path)
    return any(real == root or real.startswith(root + "/") for root in PSEUDO_ROOTS)


def vouched_chunks(manifest: Manifest, paths: Sequence[Path], cache: DigestCache) -> set:
    """``read_chunk``'s ``verified`` keys for the files whose digests ``cache`` took
    under their current stat: the manifest was just built from them, so serving
    them unchanged needs no second hashing of the whole source."""
    seed = set()
    for entry, path in zip(manifest.files, paths):
        key = cache.vouched(path, manifest.chunk_size, entry.chunks)
        if key is not None:
            seed.update((key, i) for i in range(len(entry.chunks)))
    return seed


def read_chunk(path: Path, entry: FileEntry, index: int, chunk_size: int,
               verified: set | None = None) -> bytes:
    """Chunk ``index`` of a manifest file, verified against the manifest (serve side).

    With ``verified`` (one set per job), a chunk already checked -- or vouched for
    by the digest cache under the same stat -- is not hashed again while its
    file's stat is unchanged: fan-out to N nodes hashes at most once.  The node
    checks every chunk it receives in any case.
    """
    name = repr(entry.rel or "file")  # errors go to a node: never the server's own path
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(entry.chunks):
        raise TransferError(f"chunk index {index!r} out of range for {name}")
    try:
        fd, st = open_regular(path)
    except TransferError:
        raise TransferError(f"cannot open the source of {name} on the server") from None
    key = (_stat_key(st, chunk_size), index)
    try:
        data = pread_full(fd, chunk_size, index * chunk_size)
    except OSError as exc:
        raise TransferError(f"cannot read the source of {name}: {exc.strerror}") from None
    finally:
        os.close(fd)
    if verified is not None and key in verified:
        return data
    if digest_of(data) != entry.chunks[index]:
        raise TransferError(f"the source of {name} changed since its manifest was built")
    if verified is not None:
        verified.add(key)
    return data
