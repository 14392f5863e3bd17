"""GET's messages: a node offers the files it matched, the server pulls the chunks it
lacks by index, the node sends each chunk (one payload frame), the server says how it
ended.  Every value is typed and bounded here; what the names *mean* (safe or not,
over the size limit) is the fetch session's judgement (transfer/fetch.py), so a
hostile offer fails its job with a clear error instead of vanishing at decode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from director.errors import ProtocolError
from director.protocol import fields as F
from director.protocol.base import Msg
from director.protocol.chunks import MAX_INDEX, chunk_pairs
from director.protocol.control import MAX_TEXT
from director.transfer.manifest import MAX_PATH, FileEntry, is_digest

MAX_GET_FILES = 10_000            # files one GET may offer
MIN_GET_CHUNK = 4 * 1024
MAX_GET_CHUNK = 4 * 1024 * 1024   # a chunk is one message: far below the server's cap
MAX_SIZE = F.MAX_COUNT            # bytes of one offered file (the limit is a setting)
TRANSFER_FIELDS = ("files", "bytes_total", "bytes_sent", "chunks_sent", "chunks_reused",
                   "skipped")


@dataclass(frozen=True)
class GetOffer(Msg):
    """Node -> server: the files a GET matched.  ``problem`` is set (and the files
    empty) when the job id read but the rest did not: the job can still fail."""

    TYPE: ClassVar[str] = "GET_OFFER"
    job_id: str
    chunk_size: int
    files: tuple[FileEntry, ...] = ()
    problem: str = ""

    def body(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "chunk_size": self.chunk_size,
                "files": [f.to_dict() for f in self.files]}

    @classmethod
    def decode_body(cls, b: dict, payload: tuple[bytes, ...]) -> GetOffer:
        t = cls.TYPE
        job_id = F.pattern(t, b, "job_id", F.JOB_ID_RE)
        try:
            chunk_size = F.integer(t, b, "chunk_size", MIN_GET_CHUNK, MAX_GET_CHUNK)
            files = tuple(_entry(t, raw) for raw in F.array(t, b, "files", MAX_GET_FILES))
        except ProtocolError as exc:
            return cls(job_id, 0, (), str(exc)[:MAX_TEXT])
        return cls(job_id, chunk_size, files)


def _entry(t: str, raw: Any) -> FileEntry:
    if raw.__class__ is not dict:
        raise F.fail(t, "files", "must hold objects")
    chunks = F.array(t, raw, "chunks", MAX_INDEX)
    if not all(is_digest(c) for c in chunks):
        raise F.fail(t, "chunks", "must hold 64-hex BLAKE2b digests")
    digest = F.text(t, raw, "digest", 64)
    if not is_digest(digest):
        raise F.fail(t, "digest", "must be a 64-hex BLAKE2b digest")
    return FileEntry(F.text(t, raw, "rel", MAX_PATH), F.integer(t, raw, "size", 0, MAX_SIZE),
                     F.integer(t, raw, "mode", 0, 0o7777), digest, tuple(chunks))


@dataclass(frozen=True)
class GetPull(Msg):
    """Server -> node: send these chunks (file index, chunk index) of your offer."""

    TYPE: ClassVar[str] = "GET_PULL"
    job_id: str
    chunks: tuple[tuple[int, int], ...]

    def body(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "chunks": [list(c) for c in self.chunks]}

    @classmethod
    def decode_body(cls, b: dict, payload: tuple[bytes, ...]) -> GetPull:
        return cls(F.pattern(cls.TYPE, b, "job_id", F.JOB_ID_RE), chunk_pairs(cls.TYPE, b))


@dataclass(frozen=True)
class GetData(Msg):
    """Node -> server: one chunk's bytes, or (``error``) why the node cannot send it."""

    TYPE: ClassVar[str] = "GET_DATA"
    job_id: str
    file: int
    chunk: int
    data: bytes = b""
    error: str = ""

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"job_id": self.job_id, "file": self.file, "chunk": self.chunk}
        if self.error != "":  # None and other non-strings go out, to be refused
            out["error"] = self.error
        return out

    def payload(self) -> tuple[bytes, ...]:
        return (self.data,)

    @classmethod
    def decode_body(cls, b: dict, payload: tuple[bytes, ...]) -> GetData:
        t = cls.TYPE
        if len(payload) != 1:
            raise ProtocolError(f"{t}: expected one payload frame")
        if len(payload[0]) > MAX_GET_CHUNK:
            raise ProtocolError(f"{t}: a chunk is at most {MAX_GET_CHUNK} bytes")
        return cls(F.pattern(t, b, "job_id", F.JOB_ID_RE),
                   F.integer(t, b, "file", 0, MAX_INDEX), F.integer(t, b, "chunk", 0, MAX_INDEX),
                   payload[0], F.text(t, b, "error", MAX_TEXT, default=""))


@dataclass(frozen=True)
class GetDone(Msg):
    """Server -> node: the GET ended (``ok``) or why not; the server's own counts."""

    TYPE: ClassVar[str] = "GET_DONE"
    job_id: str
    ok: bool
    error: str = ""
    transfer: tuple[tuple[str, int], ...] = ()

    def body(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "ok": self.ok, "error": self.error,
                "transfer": dict(self.transfer)}

    @classmethod
    def decode_body(cls, b: dict, payload: tuple[bytes, ...]) -> GetDone:
        t = cls.TYPE
        raw = F.mapping(t, b, "transfer")
        return cls(F.pattern(t, b, "job_id", F.JOB_ID_RE), F.flag(t, b, "ok"),
                   F.text(t, b, "error", MAX_TEXT, default=""),
                   tuple((k, F.integer(t, raw, k, 0, F.MAX_COUNT, default=0))
                         for k in TRANSFER_FIELDS))


TYPES = (GetOffer, GetPull, GetData, GetDone)
