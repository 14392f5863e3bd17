"""Director's wire format: typed messages <-> lists of frames.  No I/O here.

A message on the wire is ``[VERSION, TYPE, BODY, *PAYLOAD]``:

* ``VERSION`` is ``b"D1"`` -- anything else is refused, so a future format
  can never be misread as this one;
* ``TYPE`` is a short ASCII name from :data:`SCHEMAS`;
* ``BODY`` is a UTF-8 JSON object whose fields are checked against the schema;
* ``PAYLOAD`` frames carry raw bytes (file chunks) without re-encoding.

Decoding treats every input as hostile: every failure is a
:class:`~director.errors.ProtocolError` saying what was wrong, never another
exception.  The ROUTER routing id is not part of a message: the transport
strips it, and identity comes from the CURVE key, never from here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from director.errors import ProtocolError

VERSION = b"D1"
MAX_BODY = 16 * 1024 * 1024
MAX_BATCH = 256     # items in one JOBS / RESULTS message
MAX_PAYLOAD_FRAMES = 2
MAX_TYPE = 32

_ANY = object()
# field -> accepted python types (after JSON decoding); optional fields end in "?".
_S, _I, _F, _B, _D, _L = str, int, (int, float), bool, dict, list
SCHEMAS: dict[str, dict[str, Any]] = {
    # node -> server
    "ENROLL": {"name": _S, "token?": _S, "version?": _S},
    "ENROLL_STATUS": {},
    "HELLO": {"name": _S, "version": _S, "boot?": _S},
    "HEARTBEAT": {"running?": _I},
    "RESULT": {"job_id": _S, "status": _S, "rc?": (int, type(None)), "stdout?": _S,
               "stderr?": _S, "exec_time?": _F, "cached?": _B, "transfer?": (dict, type(None)),
               "args?": _D, "error?": _S},
    "RESULTS": {"results": _L},  # several RESULT bodies: see unbatch()
    "CHUNK_REQ": {"job_id": _S, "chunks": _L},
    # server -> node
    "ENROLLED": {"state": _S, "name": _S, "reason?": _S},
    "JOB": {"job_id": _S, "instruction": _D, "lane": _S, "seq": _I, "hash_extra?": _S,
            "manifest?": (dict, type(None)), "stop_on_failure?": _B},
    "JOBS": {"jobs": _L},  # several JOB bodies: see unbatch()
    "CHUNK": {"job_id": _S, "file": _I, "chunk": _I},
    "CHUNK_ERR": {"job_id": _S, "file": _I, "chunk": _I, "error": _S},
    "REVOKED": {"reason": _S},
    "ERROR": {"code": _S, "message": _S},
    # operator CLI <-> local control socket
    "CTL": {"op": _S, "args": _D},
    "CTL_REPLY": {"ok": _B, "result?": _ANY, "error?": _S, "code?": _I,
                  "result_json?": _B, "failed?": _I},  # result_json: result is payload[0]
    "CTL_EVENT": {"event": _S, "data": _ANY},
}


@dataclass(frozen=True)
class Message:
    """One decoded message: its type, its JSON body and raw payload frames."""

    type: str
    body: dict[str, Any] = field(default_factory=dict)
    payload: tuple[bytes, ...] = ()

    def get(self, key: str, default: Any = None) -> Any:
        return self.body.get(key, default)


def _compile(schema: dict[str, Any]) -> tuple[tuple[str, Any, bool, bool], ...]:
    """(name, types, optional, bool_ok) per field: the hot path does no string work."""
    out = []
    for spec, types in schema.items():
        bool_ok = types is bool or (isinstance(types, tuple) and bool in types)
        out.append((spec.rstrip("?"), types, spec.endswith("?"), bool_ok))
    return tuple(out)


_COMPILED = {name: _compile(schema) for name, schema in SCHEMAS.items()}


def _check_body(mtype: str, body: Any) -> None:
    if not isinstance(body, dict):
        raise ProtocolError(f"{mtype}: body must be a JSON object")
    for name, types, optional, bool_ok in _COMPILED[mtype]:
        if name not in body:
            if optional:
                continue
            raise ProtocolError(f"{mtype}: missing field '{name}'")
        if types is _ANY:
            continue
        value = body[name]
        # bool is an int in Python: refuse it where a number is meant.
        if not isinstance(value, types) or (value.__class__ is bool and not bool_ok):
            raise ProtocolError(f"{mtype}: field '{name}' has the wrong type")


def encode(msg: Message) -> list[bytes]:
    """Encode a message; refuses (LocalProtocolError-style) what we would not accept."""
    if msg.type not in SCHEMAS:
        raise ProtocolError(f"unknown message type {msg.type!r}")
    _check_body(msg.type, msg.body)
    body = json.dumps(msg.body, separators=(",", ":"), ensure_ascii=False).encode()
    if len(body) > MAX_BODY:
        raise ProtocolError(f"{msg.type}: body of {len(body)} bytes exceeds {MAX_BODY}")
    if len(msg.payload) > MAX_PAYLOAD_FRAMES:
        raise ProtocolError(f"{msg.type}: too many payload frames")
    return [VERSION, msg.type.encode("ascii"), body, *msg.payload]


# A batch type -> (its list field, the type of each item).  Batches exist for speed:
# thousands of tiny jobs a second cost less as fewer, larger messages.
BATCHES = {"JOBS": ("jobs", "JOB"), "RESULTS": ("results", "RESULT")}


def unbatch(msg: Message) -> tuple[list[Message], list[str]]:
    """The messages a JOBS / RESULTS batch carries, each checked like a single one.

    Returns (good ones, problems): one bad item does not cost the others."""
    key, item_type = BATCHES[msg.type]
    items = msg.body[key]
    if len(items) > MAX_BATCH:
        return [], [f"{msg.type}: more than {MAX_BATCH} items"]
    good, bad = [], []
    for item in items:
        try:
            _check_body(item_type, item)
        except ProtocolError as exc:
            bad.append(str(exc))
            continue
        good.append(Message(item_type, item))
    return good, bad


def batch(mtype: str, bodies: list[bytes]) -> list[bytes]:
    """Frames of a JOBS / RESULTS message from item bodies already encoded (each as
    ``encode`` made it), so a batch costs no second encoding; one item goes alone."""
    key, item_type = BATCHES[mtype]
    if len(bodies) == 1:
        return [VERSION, item_type.encode("ascii"), bodies[0]]
    if not 1 < len(bodies) <= MAX_BATCH:
        raise ProtocolError(f"{mtype}: 1 to {MAX_BATCH} items, not {len(bodies)}")
    body = b'{"' + key.encode("ascii") + b'":[' + b",".join(bodies) + b"]}"
    if len(body) > MAX_BODY:
        raise ProtocolError(f"{mtype}: body of {len(body)} bytes exceeds {MAX_BODY}")
    return [VERSION, mtype.encode("ascii"), body]


def make(mtype: str, payload: tuple[bytes, ...] = (), **body: Any) -> list[bytes]:
    """Shorthand: ``make("HEARTBEAT")`` -> frames."""
    return encode(Message(mtype, body, payload))


def decode(frames: list[bytes] | list[memoryview]) -> Message:
    """Decode frames (routing id already removed) into a checked Message."""
    if not isinstance(frames, (list, tuple)) or len(frames) < 3:
        raise ProtocolError("message has too few frames")
    if len(frames) > 3 + MAX_PAYLOAD_FRAMES:
        raise ProtocolError("message has too many frames")
    version, raw_type, raw_body = bytes(frames[0]), bytes(frames[1]), bytes(frames[2])
    if version != VERSION:
        raise ProtocolError("unsupported protocol version")
    if not raw_type or len(raw_type) > MAX_TYPE:
        raise ProtocolError("bad message type")
    try:
        mtype = raw_type.decode("ascii")
    except UnicodeDecodeError:
        raise ProtocolError("bad message type") from None
    if mtype not in SCHEMAS:
        raise ProtocolError(f"unknown message type {mtype[:MAX_TYPE]!r}")
    if len(raw_body) > MAX_BODY:
        raise ProtocolError(f"{mtype}: body too large")
    try:  # UTF-8 by definition: decoding it here spares json its encoding sniffing
        body = json.loads(raw_body.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise ProtocolError(f"{mtype}: body is not valid JSON") from None
    _check_body(mtype, body)
    return Message(mtype, body, tuple(bytes(f) for f in frames[3:]))
