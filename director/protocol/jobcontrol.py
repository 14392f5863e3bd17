"""The operator's hand on running work: CANCEL (server to node) and OUTPUT (node to
server, the lines of jobs being streamed)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from director.protocol import fields as F
from director.protocol.base import Msg

MAX_ACK = 4096                     # job ids acknowledged (or cancelled) in one message
MAX_OUTPUT_ITEMS = 256             # pieces of streamed output in one OUTPUT
MAX_OUTPUT_TEXT = 256 * 1024       # characters of streamed output in one OUTPUT


def job_ids(mtype: str, body: dict) -> tuple[str, ...]:
    """The ``job_ids`` field of an ACK or a CANCEL: at most MAX_ACK job ids."""
    ids = F.array(mtype, body, "job_ids", MAX_ACK)
    if not all(i.__class__ is str and F.JOB_ID_RE.fullmatch(i) for i in ids):
        raise F.fail(mtype, "job_ids", "must hold job ids")
    return tuple(ids)


@dataclass(frozen=True)
class Cancel(Msg):
    """The operator cancelled these jobs: queued ones end unstarted, running ones are
    stopped (the whole process group; a COPY gives up and removes its temp files); each
    ends ``cancelled`` -- unless it had already ended, which the node reports as it was."""

    TYPE: ClassVar[str] = "CANCEL"
    job_ids: tuple[str, ...]

    def body(self) -> dict[str, Any]:
        return {"job_ids": list(self.job_ids)}

    @classmethod
    def decode_body(cls, b: dict, payload: tuple[bytes, ...]) -> Cancel:
        return cls(job_ids(cls.TYPE, b))


@dataclass(frozen=True)
class Output(Msg):
    """Output lines of jobs the operator is streaming, as they are produced (node to
    server, in order per job): items of (job id, "out" or "err", text)."""

    TYPE: ClassVar[str] = "OUTPUT"
    items: tuple[tuple[str, str, str], ...]

    def body(self) -> dict[str, Any]:
        return {"items": [list(i) for i in self.items]}

    @classmethod
    def decode_body(cls, b: dict, payload: tuple[bytes, ...]) -> Output:
        t = cls.TYPE
        items = []
        size = 0
        for raw in F.array(t, b, "items", MAX_OUTPUT_ITEMS):
            if raw.__class__ is not list or len(raw) != 3:
                raise F.fail(t, "items", "must hold [job_id, stream, text] triples")
            job_id, stream, text = raw
            if job_id.__class__ is not str or not F.JOB_ID_RE.fullmatch(job_id):
                raise F.fail(t, "items", "must name jobs by id")
            if stream not in ("out", "err"):
                raise F.fail(t, "items", "stream must be out or err")
            item = {"text": text}
            size += len(F.text(t, item, "text", MAX_OUTPUT_TEXT))
            if size > MAX_OUTPUT_TEXT:
                raise F.fail(t, "items", f"more than {MAX_OUTPUT_TEXT} characters in all")
            items.append((job_id, stream, text))
        return cls(tuple(items))
