"""Director's framing: ``[VERSION, TYPE, BODY, *PAYLOAD]`` <-> (type, JSON object, payload).

* ``VERSION`` is ``b"D1"`` -- anything else is refused, so a future format
  can never be misread as this one;
* ``TYPE`` is a short ASCII name (``director.protocol.messages`` owns the set);
* ``BODY`` is a UTF-8 JSON object: strict JSON (``NaN``/``Infinity`` refused);
* ``PAYLOAD`` frames carry raw bytes (file chunks) without re-encoding.

Only this module and ``messages`` turn JSON into bytes and back.  Decoding
treats every input as hostile: every failure is a
:class:`~director.errors.ProtocolError`, never another exception.  The ROUTER
routing id is not part of a message: identity comes from the CURVE key.
"""

from __future__ import annotations

import json
import re
from typing import Any

from director.errors import ProtocolError

VERSION = b"D1"
MAX_BODY = 16 * 1024 * 1024
MAX_BATCH = 256     # items in one JOBS / RESULTS message
MAX_PAYLOAD_FRAMES = 2
MAX_TYPE = 32


def _coded(exc: ProtocolError, code: str) -> ProtocolError:
    """Tag a refusal with the ERROR code a node is told (default: bad_request)."""
    exc.code = code  # type: ignore[attr-defined]
    return exc


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(literal: str) -> float:
    value = float(literal)
    if value - value != 0.0:  # 1e400 parses as Infinity: refused like the constant
        raise ValueError(f"{literal} is not a finite number")
    return value


# A JSON escape of a UTF-16 surrogate: only then can a decoded body hold a lone one
# (raw UTF-8 cannot: the decode refuses it), so only then is the body walked.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _lone_surrogate(value: Any) -> bool:
    if value.__class__ is str:
        return _SURROGATE.search(value) is not None
    if value.__class__ is dict:
        return any(_lone_surrogate(k) or _lone_surrogate(v) for k, v in value.items())
    if value.__class__ is list:
        return any(_lone_surrogate(v) for v in value)
    return False


class LoneSurrogate:
    """Stands in for a batch item holding a lone surrogate, so the batch's other
    items survive and this one is reported (``field``: where it was found)."""

    __slots__ = ("field", "job_id")

    def __init__(self, field: str, job_id: str | None = None):
        self.field = field
        self.job_id = job_id

    def problem(self, item_type: str) -> str:
        return f"{item_type}: field {self.field!r} is not valid UTF-8 (lone surrogate)"


def _first_lone_surrogate(obj: dict) -> str | None:
    for key, value in obj.items():
        if _lone_surrogate(key) or _lone_surrogate(value):
            return key
    return None


_DECODER = json.JSONDecoder(parse_constant=_no_constants, parse_float=_finite)
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def dumps(value: Any) -> str:
    """Compact strict JSON (NaN/Infinity refused with ValueError)."""
    return _ENCODER.encode(value)


def _raw(frame: Any) -> bytes:
    """bytes of a frame (bytes, bytearray, memoryview, zmq.Frame); TypeError otherwise."""
    return frame if frame.__class__ is bytes else memoryview(frame).tobytes()


def split(frames: Any, known: frozenset[str] | dict) -> tuple[str, dict, tuple[bytes, ...]]:
    """Frames (routing id removed) -> (type, body object, payload); refuses anything off."""
    if not isinstance(frames, (list, tuple)) or len(frames) < 3:
        raise ProtocolError("message has too few frames")
    if len(frames) > 3 + MAX_PAYLOAD_FRAMES:
        raise ProtocolError("message has too many frames")
    try:
        version, raw_type, raw_body = _raw(frames[0]), _raw(frames[1]), _raw(frames[2])
        payload = tuple(_raw(f) for f in frames[3:])
    except TypeError:
        raise ProtocolError("message frames must be bytes") from None
    if version != VERSION:
        raise _coded(ProtocolError("unsupported protocol version"), "unsupported_version")
    if not raw_type or len(raw_type) > MAX_TYPE:
        raise ProtocolError("bad message type")
    try:
        mtype = raw_type.decode("ascii")
    except UnicodeDecodeError:
        raise ProtocolError("bad message type") from None
    if mtype not in known:
        raise _coded(ProtocolError(f"unknown message type {mtype!r}"), "unknown_type")
    if len(raw_body) > MAX_BODY:
        raise ProtocolError(f"{mtype}: body too large")
    try:  # UTF-8 by definition: decoding it here spares json its encoding sniffing
        body = _DECODER.decode(raw_body.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise ProtocolError(f"{mtype}: body is not valid JSON") from None
    if body.__class__ is not dict:
        raise ProtocolError(f"{mtype}: body must be a JSON object")
    if _SURROGATE_ESCAPE.search(raw_body):  # strings must be valid UTF-8, nested ones too
        _refuse_lone_surrogates(mtype, body)
    return mtype, body, payload


def _refuse_lone_surrogates(mtype: str, body: dict) -> None:
    items_key = BATCHES[mtype][0] if mtype in BATCHES else None
    items = body.get(items_key)
    if items.__class__ is list:  # a batch: only the items holding one are refused
        for i, item in enumerate(items):
            if item.__class__ is dict:
                bad = _first_lone_surrogate(item)
                if bad is not None:
                    items[i] = LoneSurrogate(bad, _readable_id(item, bad))
            elif _lone_surrogate(item):
                items[i] = LoneSurrogate("(item)")
    bad = _first_lone_surrogate({k: v for k, v in body.items() if k != items_key or
                                 items.__class__ is not list})
    if bad is not None:
        exc = ProtocolError(f"{mtype}: field {bad!r} is not valid UTF-8 (lone surrogate)")
        job_id = _readable_id(body, bad) if mtype == "JOB" else None
        if job_id is not None:  # a JOB the node can still answer as failed
            exc.job_id = job_id  # type: ignore[attr-defined]
        raise exc


_JOB_ID = re.compile(r"[0-9a-f]{8,24}")


def _readable_id(obj: dict, bad: str) -> str | None:
    """The object's job id when it is well formed and not where the problem is."""
    job_id = obj.get("job_id")
    if bad != "job_id" and job_id.__class__ is str and _JOB_ID.fullmatch(job_id):
        return job_id
    return None


def join(mtype: str, body: dict | bytes, payload: tuple[bytes, ...] = ()) -> list[bytes]:
    """Frames of one message; ``body`` is an object or JSON bytes already made here."""
    if not isinstance(body, bytes):
        try:
            body = dumps(body).encode("utf-8")
        except (ValueError, TypeError, UnicodeEncodeError) as exc:
            raise ProtocolError(f"{mtype}: cannot encode the body ({exc})") from None
    if len(body) > MAX_BODY:
        raise ProtocolError(f"{mtype}: body of {len(body)} bytes exceeds {MAX_BODY}")
    if len(payload) > MAX_PAYLOAD_FRAMES:
        raise ProtocolError(f"{mtype}: too many payload frames")
    return [VERSION, mtype.encode("ascii"), body, *payload]


# A batch type -> (its list field, the type of each item).  Batches exist for speed:
# thousands of tiny jobs a second cost less as fewer, larger messages.
BATCHES = {"JOBS": ("jobs", "JOB"), "RESULTS": ("results", "RESULT")}


def batch(mtype: str, bodies: list[bytes]) -> list[bytes]:
    """Frames of a JOBS / RESULTS message from item bodies already encoded, so a
    batch costs no second encoding; one item goes alone as a JOB / RESULT."""
    key, item_type = BATCHES[mtype]
    if len(bodies) == 1:
        return [VERSION, item_type.encode("ascii"), bodies[0]]
    if not 1 < len(bodies) <= MAX_BATCH:
        raise ProtocolError(f"{mtype}: 1 to {MAX_BATCH} items, not {len(bodies)}")
    body = b'{"' + key.encode("ascii") + b'":[' + b",".join(bodies) + b"]}"
    if len(body) > MAX_BODY:
        raise ProtocolError(f"{mtype}: body of {len(body)} bytes exceeds {MAX_BODY}")
    return [VERSION, mtype.encode("ascii"), body]
