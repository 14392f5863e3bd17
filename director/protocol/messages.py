"""Every Director message as a frozen dataclass, decoded once at the edge, bounded.

h11's idea for our frames: ``decode(frames)`` gives one typed message or raises
ProtocolError naming the field and the rule; ``encode(msg)`` is the only way a
message becomes bytes.  Handlers never see a dict.  Unknown fields are ignored
(a newer peer may add some); everything known is checked: integers in ranges,
finite durations, valid UTF-8 of bounded length, closed sets, strict ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from director.errors import ProtocolError
from director.jobs.dsl import Instruction
from director.protocol import fields as F
from director.protocol.answers import decode_query
from director.protocol.base import Msg, checked, encode
from director.protocol.chunks import MAX_CHUNK_REQ, MAX_INDEX, Chunk, ChunkErr, ChunkReq
from director.protocol.fetch import TYPES as FETCH_TYPES
from director.protocol.jobcontrol import MAX_ACK, Cancel, Output, job_ids
from director.protocol.control import MAX_TEXT, Ctl, CtlEvent, CtlPart, CtlReply
from director.protocol.facts import Facts
from director.protocol.frames import MAX_BATCH, LoneSurrogate, batch, dumps, split
from director.transfer.manifest import Manifest

RESULT_STATUSES = frozenset({"success", "failed", "timeout", "cancelled", "lost"})
ENROLL_STATES = frozenset({"accepted", "pending", "refused", "rejected", "revoked"})
ERROR_CODES = frozenset({"not_permitted", "bad_request", "unsupported_version", "unknown_type",
                         "internal"})
MAX_OUTPUT = 2 * 1024 * 1024      # characters of stdout / stderr a node may report
MAX_NAME = 253
MAX_VERSION = 64
MAX_TOKEN = 4096


# -- node -> server ----------------------------------------------------------------
@dataclass(frozen=True)
class Enroll(Msg):
    TYPE: ClassVar[str] = "ENROLL"
    name: str
    token: str | None = None
    version: str | None = None

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.token is not None:
            out["token"] = self.token
        if self.version is not None:
            out["version"] = self.version
        return out

    @classmethod
    def decode_body(cls, b: dict, payload: tuple[bytes, ...]) -> Enroll:
        t = cls.TYPE
        return cls(F.text(t, b, "name", MAX_NAME, ident=True),
                   F.text(t, b, "token", MAX_TOKEN, ident=True, null=True),
                   F.text(t, b, "version", MAX_VERSION, ident=True, null=True))


@dataclass(frozen=True)
class EnrollStatus(Msg):
    TYPE: ClassVar[str] = "ENROLL_STATUS"


@dataclass(frozen=True)
class Hello(Msg):
    TYPE: ClassVar[str] = "HELLO"
    name: str
    version: str
    boot: str | None = None
    facts: Facts | None = None   # None: an agent older than facts

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "version": self.version}
        if self.boot is not None:
            out["boot"] = self.boot
        if self.facts is not None:
            out["facts"] = self.facts.to_dict()
        return out

    @classmethod
    def decode_body(cls, b: dict, payload: tuple[bytes, ...]) -> Hello:
        t = cls.TYPE
        raw_facts = F.mapping(t, b, "facts", null=True)
        return cls(F.text(t, b, "name", MAX_NAME, ident=True),
                   F.text(t, b, "version", MAX_VERSION, ident=True),
                   F.text(t, b, "boot", 64, ident=True, null=True),
                   None if raw_facts is None else Facts.from_body(t, raw_facts))


@dataclass(frozen=True)
class Heartbeat(Msg):
    TYPE: ClassVar[str] = "HEARTBEAT"
    running: int = 0

    def body(self) -> dict[str, Any]:
        return {"running": self.running}

    @classmethod
    def decode_body(cls, b: dict, payload: tuple[bytes, ...]) -> Heartbeat:
        return cls(F.integer(cls.TYPE, b, "running", 0, 10**6, default=0))


@dataclass(frozen=True)
class Transfer:
    """COPY statistics a node reports; every count is a bounded integer >= 0."""

    files: int = 0
    bytes_total: int = 0
    bytes_sent: int = 0
    chunks_sent: int = 0
    chunks_reused: int = 0
    skipped: int = 0

    FIELDS: ClassVar[tuple[str, ...]] = ("files", "bytes_total", "bytes_sent", "chunks_sent",
                                         "chunks_reused", "skipped")

    def to_dict(self) -> dict[str, int]:
        return {f: getattr(self, f) for f in self.FIELDS}

    @classmethod
    def from_body(cls, mtype: str, raw: dict) -> Transfer:
        return cls(*(F.integer(mtype, raw, f, 0, F.MAX_COUNT, default=0) for f in cls.FIELDS))


@dataclass(frozen=True)
class Result(Msg):
    TYPE: ClassVar[str] = "RESULT"
    job_id: str
    status: str
    rc: int | None = None
    stdout: str = ""
    stderr: str = ""
    exec_time: float | None = None
    cached: bool = False
    transfer: Transfer | None = None
    error: str = ""

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"job_id": self.job_id, "status": self.status, "rc": self.rc,
                               "stdout": self.stdout, "stderr": self.stderr,
                               "exec_time": self.exec_time, "cached": self.cached}
        if self.error != "":  # None and other non-strings go out, to be refused
            out["error"] = self.error
        if self.transfer is not None:
            out["transfer"] = self.transfer.to_dict()
        return out

    @classmethod
    def decode_body(cls, b: dict, payload: tuple[bytes, ...]) -> Result:
        t = cls.TYPE
        raw_transfer = F.mapping(t, b, "transfer", null=True)
        return cls(
            F.pattern(t, b, "job_id", F.JOB_ID_RE),
            F.choice(t, b, "status", RESULT_STATUSES),
            F.integer(t, b, "rc", *F.INT32, null=True),
            F.text(t, b, "stdout", MAX_OUTPUT, default=""),
            F.text(t, b, "stderr", MAX_OUTPUT, default=""),
            F.seconds(t, b, "exec_time"),
            F.flag(t, b, "cached"),
            None if raw_transfer is None else Transfer.from_body(t, raw_transfer),
            F.text(t, b, "error", MAX_TEXT, default=""),
        )


@dataclass(frozen=True)
class Batch(Msg):
    """JOBS / RESULTS: the items that decoded, and why the others did not (one bad
    item does not cost the others)."""

    items: tuple = ()
    problems: tuple[str, ...] = ()
    refused: tuple[tuple[str, str], ...] = ()   # (job id, problem) where the id read
    ITEM: ClassVar[type[Msg]] = Msg
    KEY: ClassVar[str] = ""

    def body(self) -> dict[str, Any]:
        return {self.KEY: [i.body() for i in self.items]}

    @classmethod
    def decode_body(cls, b: dict, payload: tuple[bytes, ...]) -> Batch:
        raw = F.array(cls.TYPE, b, cls.KEY, MAX_BATCH)
        good, bad, refused = [], [], []
        for item in raw:
            try:
                if item.__class__ is LoneSurrogate:
                    exc = ProtocolError(item.problem(cls.ITEM.TYPE))
                    if item.job_id is not None and cls.ITEM is Job:
                        exc.job_id = item.job_id  # type: ignore[attr-defined]
                    raise exc
                if item.__class__ is not dict:
                    raise ProtocolError(f"{cls.ITEM.TYPE}: an item must be an object")
                good.append(cls.ITEM.decode_body(item, ()))
            except ProtocolError as exc:
                bad.append(str(exc))
                job_id = getattr(exc, "job_id", None)
                if job_id is not None:  # a JOB that can still be answered as failed
                    refused.append((job_id, str(exc)))
        return cls(tuple(good), tuple(bad), tuple(refused))


@dataclass(frozen=True)
class Results(Batch):
    TYPE: ClassVar[str] = "RESULTS"
    ITEM: ClassVar[type[Msg]] = Result
    KEY: ClassVar[str] = "results"


# -- server -> node ----------------------------------------------------------------
@dataclass(frozen=True)
class Enrolled(Msg):
    TYPE: ClassVar[str] = "ENROLLED"
    state: str
    name: str
    reason: str = ""

    def body(self) -> dict[str, Any]:
        return {"state": self.state, "name": self.name, "reason": self.reason}

    @classmethod
    def decode_body(cls, b: dict, payload: tuple[bytes, ...]) -> Enrolled:
        t = cls.TYPE
        return cls(F.choice(t, b, "state", ENROLL_STATES),
                   F.text(t, b, "name", MAX_NAME, ident=True),
                   F.text(t, b, "reason", MAX_TEXT, default=""))


@dataclass(frozen=True)
class Job(Msg):
    """One job for a node.  A JOB whose id reads but whose instruction does not raises
    ProtocolError with ``job_id`` set, so the node can answer it as failed."""

    TYPE: ClassVar[str] = "JOB"
    job_id: str
    instruction: Instruction
    lane: str
    seq: int
    hash_extra: str = ""
    manifest: Manifest | None = None
    stream: bool = False     # send its output lines as they come (OUTPUT), not only at the end
    query: dict | None = None  # QUERY answers of earlier jobs: {NODE: {NAME: value}} (answers.py)

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"job_id": self.job_id, "instruction": self.instruction.to_dict(),
                               "lane": self.lane, "seq": self.seq}
        if self.hash_extra != "":
            out["hash_extra"] = self.hash_extra
        if self.manifest is not None:
            out["manifest"] = self.manifest.to_dict()
        if self.stream:
            out["stream"] = True
        if self.query is not None:
            out["query"] = self.query
        return out

    @classmethod
    def decode_body(cls, b: dict, payload: tuple[bytes, ...]) -> Job:
        t = cls.TYPE
        job_id = F.pattern(t, b, "job_id", F.JOB_ID_RE)
        try:
            raw_manifest = F.mapping(t, b, "manifest", null=True)
            return cls(job_id, Instruction.from_dict(F.mapping(t, b, "instruction")),
                       F.pattern(t, b, "lane", F.LANE_RE),
                       F.integer(t, b, "seq", 0, MAX_INDEX),
                       F.text(t, b, "hash_extra", 128, default="", ident=True),
                       None if raw_manifest is None else Manifest.from_dict(raw_manifest),
                       F.flag(t, b, "stream"), decode_query(t, b))
        except ProtocolError as exc:
            exc.job_id = job_id  # type: ignore[attr-defined]
            raise


def job_body(job_id: str, instruction_json: str, lane: str, seq: int,
             stream: bool = False) -> bytes:
    """A plain JOB body from instruction JSON already made (the server's fast path:
    ids and lanes are hex and digits, so nothing needs escaping)."""
    more = ',"stream":true' if stream else ""
    return (f'{{"job_id":"{job_id}","instruction":{instruction_json},'
            f'"lane":"{lane}","seq":{seq}{more}}}').encode()



@dataclass(frozen=True)
class Jobs(Batch):
    TYPE: ClassVar[str] = "JOBS"
    ITEM: ClassVar[type[Msg]] = Job
    KEY: ClassVar[str] = "jobs"


@dataclass(frozen=True)
class Ack(Msg):
    """The server committed these results of the node's: it may forget them (its
    outbox keeps every result until then, and resends it after a reconnect)."""

    TYPE: ClassVar[str] = "ACK"
    job_ids: tuple[str, ...]

    def body(self) -> dict[str, Any]:
        return {"job_ids": list(self.job_ids)}

    @classmethod
    def decode_body(cls, b: dict, payload: tuple[bytes, ...]) -> Ack:
        return cls(job_ids(cls.TYPE, b))


@dataclass(frozen=True)
class Revoked(Msg):
    TYPE: ClassVar[str] = "REVOKED"
    reason: str

    def body(self) -> dict[str, Any]:
        return {"reason": self.reason}

    @classmethod
    def decode_body(cls, b: dict, payload: tuple[bytes, ...]) -> Revoked:
        return cls(F.text(cls.TYPE, b, "reason", MAX_TEXT))


@dataclass(frozen=True)
class Error(Msg):
    TYPE: ClassVar[str] = "ERROR"
    code: str
    message: str

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message}

    @classmethod
    def decode_body(cls, b: dict, payload: tuple[bytes, ...]) -> Error:
        t = cls.TYPE
        return cls(F.choice(t, b, "code", ERROR_CODES), F.text(t, b, "message", MAX_TEXT))


TYPES: dict[str, type[Msg]] = {c.TYPE: c for c in (
    Enroll, EnrollStatus, Hello, Heartbeat, Result, Results, ChunkReq, Enrolled, Job, Jobs,
    Chunk, ChunkErr, Ack, Cancel, Output, Revoked, Error, Ctl, CtlReply, CtlEvent, CtlPart,
    *FETCH_TYPES)}


def decode(frames: Any) -> Msg:
    """Frames (routing id removed) -> one typed message, or ProtocolError."""
    mtype, body, payload = split(frames, TYPES)
    return TYPES[mtype].decode_body(body, payload)


def encode_body(msg: Msg) -> bytes:
    """Just the checked JSON body (for batching with ``frames.batch``)."""
    body, _ = checked(msg)
    try:
        return dumps(body).encode("utf-8")
    except (ValueError, TypeError, UnicodeEncodeError) as exc:
        raise ProtocolError(f"{msg.TYPE}: cannot encode the body ({exc})") from None


__all__ = ["TYPES", "Msg", "decode", "encode", "encode_body", "batch", "job_body",
           *(c.__name__ for c in TYPES.values()), "Batch", "Transfer", "Facts",
           "MAX_ACK", "MAX_CHUNK_REQ", "MAX_INDEX"]
