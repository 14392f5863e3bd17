"""COPY manifests as values: what a node must end up with, and nothing server-local.

Pure (no file access), so the protocol layer can decode a manifest at the edge.
A manifest arriving from the wire is hostile input: :meth:`Manifest.from_dict`
refuses anything malformed with ``ProtocolError``.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Sequence

from director.errors import ProtocolError

_HEX64 = re.compile(r"[0-9a-f]{64}")


def digest_of(data: bytes) -> str:
    """Hex BLAKE2b-256 of ``data`` (the one hash of Director's transfers)."""
    return hashlib.blake2b(data, digest_size=32).hexdigest()


def is_digest(value: object) -> bool:
    """True for a 64-character lower-case hex string (our digest form)."""
    return isinstance(value, str) and _HEX64.fullmatch(value) is not None


DEFAULT_CHUNK_SIZE = 1024 * 1024
MIN_CHUNK_SIZE = 4 * 1024
MAX_CHUNK_SIZE = 64 * 1024 * 1024
MAX_FILES = 100_000
MAX_PATH = 4096
MAX_NAME = 255


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates, from JSON or from os.fsdecode
        return False
    return True


def check_rel(rel: object) -> str | None:
    """Why ``rel`` is not a safe relative POSIX path, or None if it is.

    "" is allowed (it means DEST itself).  Shared by both sides so the server
    never builds a manifest the node would refuse.
    """
    if not isinstance(rel, str):
        return "path is not a string"
    if rel == "":
        return None
    if len(rel) > MAX_PATH or "\x00" in rel or not _utf8(rel):
        return "path too long, not UTF-8 or contains NUL"
    if rel.startswith("/"):
        return "path is absolute"
    for part in rel.split("/"):
        if part in ("", ".", ".."):
            return "path is not normalized (empty, '.' or '..' component)"
        if len(part.encode("utf-8")) > MAX_NAME:
            return "path component too long"
    return None


def _valid_dest(dest: object) -> bool:
    return (isinstance(dest, str) and 0 < len(dest) <= MAX_PATH and "\x00" not in dest
            and _utf8(dest))


@dataclass(frozen=True)
class FileEntry:
    """One file to deliver: where (relative to DEST), how big, which mode, what content."""

    rel: str
    size: int
    mode: int
    digest: str
    chunks: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"rel": self.rel, "size": self.size, "mode": self.mode,
                "digest": self.digest, "chunks": list(self.chunks)}


def _int(value: object, what: str, lo: int, hi: int) -> int:
    # bool is an int in Python: refuse it where a number is meant.
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ProtocolError(f"manifest: {what} must be an integer in [{lo}, {hi}]")
    return value


def _entry_from_dict(raw: object, chunk_size: int) -> FileEntry:
    if not isinstance(raw, dict) or set(raw) != {"rel", "size", "mode", "digest", "chunks"}:
        raise ProtocolError("manifest: a file entry needs exactly rel, size, mode, digest, chunks")
    rel = raw["rel"]
    why = check_rel(rel)
    if why:
        raise ProtocolError(f"manifest: bad file path {str(rel)[:80]!r}: {why}")
    size = _int(raw["size"], "file size", 0, 2**63 - 1)
    mode = _int(raw["mode"], "file mode", 0, 0o7777)
    if not is_digest(raw["digest"]):
        raise ProtocolError("manifest: file digest must be 64 lower-case hex characters")
    chunks = raw["chunks"]
    if not isinstance(chunks, (list, tuple)) or not all(is_digest(c) for c in chunks):
        raise ProtocolError("manifest: chunks must be a list of 64-hex digests")
    if len(chunks) != -(-size // chunk_size):
        raise ProtocolError(f"manifest: {rel!r} has {len(chunks)} chunks for {size} bytes")
    return FileEntry(rel, size, mode, raw["digest"], tuple(chunks))


def _check_layout(files: Sequence[FileEntry], dirs: Sequence[str]) -> None:
    """No duplicates, no file used as a directory, "" only as the sole file."""
    rels = [f.rel for f in files]
    fileset = set(rels)
    if len(fileset) != len(rels):
        raise ProtocolError("manifest: duplicate file path")
    if len(set(dirs)) != len(dirs) or fileset & set(dirs):
        raise ProtocolError("manifest: duplicate directory path")
    if "" in fileset and (len(rels) != 1 or dirs):
        raise ProtocolError("manifest: DEST cannot be both a file and a directory")
    for path in (*rels, *dirs):
        parts = path.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in fileset:
                raise ProtocolError(f"manifest: {path!r} lies under a file")


@dataclass(frozen=True)
class Manifest:
    """Everything a node needs to reproduce one COPY, and nothing server-local."""

    dest: str
    chunk_size: int
    files: tuple[FileEntry, ...]
    dirs: tuple[str, ...] = ()

    @property
    def bytes_total(self) -> int:
        return sum(f.size for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        return {"dest": self.dest, "chunk_size": self.chunk_size,
                "files": [f.to_dict() for f in self.files], "dirs": list(self.dirs)}

    def canonical_json(self) -> bytes:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False).encode("utf-8")

    def digest(self) -> str:
        """Content identity of the whole COPY (an input of the job-cache key)."""
        return digest_of(self.canonical_json())

    @classmethod
    def from_dict(cls, raw: object) -> Manifest:
        """Parse a manifest from JSON-decoded data; anything wrong -> ProtocolError."""
        if not isinstance(raw, dict) or set(raw) != {"dest", "chunk_size", "files", "dirs"}:
            raise ProtocolError("manifest must be an object with dest, chunk_size, files, dirs")
        dest = raw["dest"]
        if not _valid_dest(dest):
            raise ProtocolError("manifest: dest must be a non-empty path string")
        chunk_size = _int(raw["chunk_size"], "chunk_size", MIN_CHUNK_SIZE, MAX_CHUNK_SIZE)
        files, dirs = raw["files"], raw["dirs"]
        if not isinstance(files, (list, tuple)) or not isinstance(dirs, (list, tuple)):
            raise ProtocolError("manifest: files and dirs must be lists")
        if len(files) > MAX_FILES or len(dirs) > MAX_FILES:
            raise ProtocolError(f"manifest: more than {MAX_FILES} entries")
        entries = tuple(_entry_from_dict(f, chunk_size) for f in files)
        for d in dirs:
            why = check_rel(d)
            if why:
                raise ProtocolError(f"manifest: bad directory path {str(d)[:80]!r}: {why}")
        _check_layout(entries, dirs)
        return cls(dest, chunk_size, entries, tuple(dirs))
