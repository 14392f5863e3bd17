"""GET's receiving side as pure logic: which names a node may give, and which chunk
the server asks for next and whether what came back is what was offered.

Everything here judges values a node chose, so it is hostile input: a name is
accepted only as a short relative path of plain components (no ``..``, no
absolute path, no NUL or control character, bounded length and depth), every
chunk must be one that was asked for, of the right length and BLAKE2b digest, and
each whole file must match its offered digest.  No file is touched here; the
server's driver (server/fetching.py) does the writing, one directory fd at a time.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

from director.errors import TransferError
from director.transfer.manifest import FileEntry, digest_of

MAX_NAME_CHARS = 1024       # characters of one offered relative name
MAX_DEPTH = 32              # components of one name
MAX_COMPONENT = 255         # bytes of one component (NAME_MAX)
TEMP_PREFIX = ".director-get-"
WINDOW_BYTES = 4 * 1024 * 1024  # chunks in flight (and buffered) per session


def _hasher() -> "hashlib._Hash":
    return hashlib.blake2b(digest_size=32)  # the one hash of transfers (hashing.hasher)


class FetchError(TransferError):
    """A GET cannot go on: the node's offer or data broke a rule, or writing failed."""


def name_problem(name: object) -> str | None:
    """Why ``name`` may not be written under DEST_DIR/NODE, or None when it may."""
    if not isinstance(name, str) or not name:
        return "empty name"
    if len(name) > MAX_NAME_CHARS:
        return f"name longer than {MAX_NAME_CHARS} characters"
    if any(ord(ch) < 0x20 or 0x7f <= ord(ch) <= 0x9f for ch in name):
        return "name holds NUL or control characters"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "name is not valid UTF-8"
    if name.startswith("/"):
        return "absolute name"
    parts = name.split("/")
    if len(parts) > MAX_DEPTH:
        return f"name deeper than {MAX_DEPTH} directories"
    for part in parts:
        if part in ("", ".", ".."):
            return "name has an empty, '.' or '..' component"
        if len(part.encode("utf-8")) > MAX_COMPONENT:
            return f"a name component is longer than {MAX_COMPONENT} bytes"
        if part.startswith(TEMP_PREFIX):
            return f"names starting {TEMP_PREFIX!r} are the server's temp files"
    return None


def split_name(name: str) -> tuple[str, ...]:
    """The components of a safe name; FetchError (quoting it, bounded) otherwise."""
    why = name_problem(name)
    if why:
        raise FetchError(f"the node sent an unsafe file name {shown_name(name)}: {why}")
    return tuple(name.split("/"))


def shown_name(name: object) -> str:
    """A node's name for an error line: repr (escapes control characters), bounded."""
    text = repr(name) if isinstance(name, str) else "(not a string)"
    return text if len(text) <= 120 else text[:117] + "..."


def check_layout(parts: Sequence[tuple[str, ...]]) -> None:
    """No name twice, and no name that is also the directory of another."""
    seen: set[tuple[str, ...]] = set()
    for p in parts:
        if p in seen:
            raise FetchError(f"the node sent {shown_name('/'.join(p))} twice")
        seen.add(p)
    for p in parts:
        for i in range(1, len(p)):
            if p[:i] in seen:
                raise FetchError(f"the node sent {shown_name('/'.join(p[:i]))} as both a file"
                                 " and a directory")


class FetchSession:
    """One GET from one node: offered files, the ones to fetch, and in-order arrival.

    Files are fetched one after another; within a file a window of chunks is in
    flight, and a chunk that arrives early waits (verified) until those before it
    came, so the driver can append in order and the whole-file digest builds up
    as it goes.
    """

    def __init__(self, files: Sequence[FileEntry], chunk_size: int, limit: int):
        total = sum(f.size for f in files)
        if total > limit:
            raise FetchError(f"the files matched come to {total:,} bytes, over the server's "
                             f"get_max_bytes limit of {limit:,} bytes: fetch fewer or raise"
                             " get_max_bytes")
        self.parts = [split_name(f.rel) for f in files]
        check_layout(self.parts)
        for f in files:
            if len(f.chunks) != -(-f.size // chunk_size):
                raise FetchError(f"the node offered {shown_name(f.rel)} with"
                                 f" {len(f.chunks)} chunk digest(s) for {f.size} bytes")
        self.files = tuple(files)
        self.chunk_size = chunk_size
        self.window = max(1, WINDOW_BYTES // chunk_size)
        self.queue: list[int] = []
        self.skipped = self.reused = 0
        self.bytes_received = self.chunks_received = 0
        self.current = -1
        self._next_req = self._next_write = 0
        self._early: dict[int, bytes] = {}
        self._whole = _hasher()

    def plan(self, unchanged: set[int]) -> None:
        """The driver found these files already in place with the offered digest."""
        self.queue = [i for i in range(len(self.files)) if i not in unchanged]
        self.queue.reverse()
        self.skipped = len(unchanged)
        self.reused = sum(len(self.files[i].chunks) for i in unchanged)

    def next_file(self) -> int | None:
        """Start the next file to fetch (its index), or None when all are done."""
        if not self.queue:
            self.current = -1
            return None
        self.current = self.queue.pop()
        self._next_req = self._next_write = 0
        self._early.clear()
        self._whole = _hasher()
        return self.current

    def requests(self) -> list[tuple[int, int]]:
        """Chunks of the current file to ask for now (keeps a window in flight)."""
        if self.current < 0:
            return []
        n = len(self.files[self.current].chunks)
        out = []
        while self._next_req < n and self._next_req - self._next_write < self.window:
            out.append((self.current, self._next_req))
            self._next_req += 1
        return out

    def accept(self, f: int, c: int, data: bytes) -> list[bytes]:
        """A chunk arrived: the chunks now ready to append, in order; FetchError when it
        was not asked for or is not what was offered."""
        if f != self.current or not self._next_write <= c < self._next_req or c in self._early:
            raise FetchError(f"the node sent chunk {c} of file {f}, which was not asked for")
        entry = self.files[f]
        want = min(self.chunk_size, entry.size - c * self.chunk_size)
        if len(data) != want:
            raise FetchError(f"chunk {c} of {shown_name(entry.rel)} has {len(data)} bytes,"
                             f" not {want}")
        if digest_of(data) != entry.chunks[c]:
            raise FetchError(f"chunk {c} of {shown_name(entry.rel)} failed its BLAKE2b check")
        self._early[c] = data
        ready = []
        while self._next_write in self._early:
            chunk = self._early.pop(self._next_write)
            self._whole.update(chunk)
            ready.append(chunk)
            self._next_write += 1
            self.bytes_received += len(chunk)
            self.chunks_received += 1
        return ready

    def file_complete(self) -> bool:
        return self.current >= 0 and self._next_write == len(self.files[self.current].chunks)

    def check_file(self) -> None:
        """The current file is complete: its whole digest must be the offered one."""
        entry = self.files[self.current]
        if self._whole.hexdigest() != entry.digest:
            raise FetchError(f"{shown_name(entry.rel)} failed its whole-file BLAKE2b check")

    def transfer(self) -> dict[str, int]:
        """COPY's statistics, from the server's side of a GET."""
        return {"files": len(self.files), "bytes_total": sum(f.size for f in self.files),
                "bytes_sent": self.bytes_received, "chunks_sent": self.chunks_received,
                "chunks_reused": self.reused, "skipped": self.skipped}
