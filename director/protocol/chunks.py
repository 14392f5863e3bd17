"""COPY's chunk messages: a node asks for chunks of its job's manifest by index, the
server answers each with its bytes (one payload frame) or with why it cannot."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from director.errors import ProtocolError
from director.protocol import fields as F
from director.protocol.base import Msg
from director.protocol.control import MAX_TEXT

MAX_CHUNK_REQ = 64                # chunks asked for in one CHUNK_REQ
MAX_INDEX = 2**31 - 1             # file and chunk indexes


@dataclass(frozen=True)
class ChunkReq(Msg):
    TYPE: ClassVar[str] = "CHUNK_REQ"
    job_id: str
    chunks: tuple[tuple[int, int], ...]

    def body(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "chunks": [list(c) for c in self.chunks]}

    @classmethod
    def decode_body(cls, b: dict, payload: tuple[bytes, ...]) -> ChunkReq:
        return cls(F.pattern(cls.TYPE, b, "job_id", F.JOB_ID_RE), chunk_pairs(cls.TYPE, b))


def chunk_pairs(t: str, b: dict) -> tuple[tuple[int, int], ...]:
    """A request's ``chunks``: at most MAX_CHUNK_REQ [file, chunk] index pairs (COPY's
    CHUNK_REQ from a node, GET's GET_PULL from the server)."""
    pairs = []
    for item in F.array(t, b, "chunks", MAX_CHUNK_REQ):
        if (item.__class__ is not list or len(item) != 2
                or not all(i.__class__ is int and 0 <= i <= MAX_INDEX for i in item)):
            raise F.fail(t, "chunks", f"must hold [file, chunk] pairs of integers"
                         f" from 0 to {MAX_INDEX}")
        pairs.append((item[0], item[1]))
    return tuple(pairs)


@dataclass(frozen=True)
class Chunk(Msg):
    TYPE: ClassVar[str] = "CHUNK"
    job_id: str
    file: int
    chunk: int
    data: bytes = b""

    def body(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "file": self.file, "chunk": self.chunk}

    def payload(self) -> tuple[bytes, ...]:
        return (self.data,)

    @classmethod
    def decode_body(cls, b: dict, payload: tuple[bytes, ...]) -> Chunk:
        t = cls.TYPE
        if len(payload) != 1:
            raise ProtocolError(f"{t}: expected one payload frame")
        return cls(F.pattern(t, b, "job_id", F.JOB_ID_RE),
                   F.integer(t, b, "file", 0, MAX_INDEX), F.integer(t, b, "chunk", 0, MAX_INDEX),
                   payload[0])


@dataclass(frozen=True)
class ChunkErr(Msg):
    TYPE: ClassVar[str] = "CHUNK_ERR"
    job_id: str
    file: int            # -1: the request as a whole was refused
    chunk: int
    error: str

    def body(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "file": self.file, "chunk": self.chunk,
                "error": self.error}

    @classmethod
    def decode_body(cls, b: dict, payload: tuple[bytes, ...]) -> ChunkErr:
        t = cls.TYPE
        return cls(F.pattern(t, b, "job_id", F.JOB_ID_RE),
                   F.integer(t, b, "file", -1, MAX_INDEX), F.integer(t, b, "chunk", -1, MAX_INDEX),
                   F.text(t, b, "error", MAX_TEXT))
