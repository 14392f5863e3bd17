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
from typing import Any

from director.errors import ProtocolError

VERSION = b"D1"
MAX_BODY = 16 * 1024 * 1024
MAX_BATCH = 256     # items in one JOBS / RESULTS message
MAX_PAYLOAD_FRAMES = 2
MAX_TYPE = 32


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_no_constants)
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def dumps(value: Any) -> str:
    """Compact strict JSON (NaN/Infinity refused with ValueError)."""
    return _ENCODER.encode(value)


def split(frames: Any, known: frozenset[str] | dict) -> tuple[str, dict, tuple[bytes, ...]]:
    """Frames (routing id removed) -> (type, body object, payload); refuses anything off."""
    if not isinstance(frames, (list, tuple)) or len(frames) < 3:
        raise ProtocolError("message has too few frames")
    if len(frames) > 3 + MAX_PAYLOAD_FRAMES:
        raise ProtocolError("message has too many frames")
    version, raw_type, raw_body = bytes(frames[0]), bytes(frames[1]), frames[2]
    if version != VERSION:
        raise ProtocolError("unsupported protocol version")
    if not raw_type or len(raw_type) > MAX_TYPE:
        raise ProtocolError("bad message type")
    try:
        mtype = raw_type.decode("ascii")
    except UnicodeDecodeError:
        raise ProtocolError("bad message type") from None
    if mtype not in known:
        raise ProtocolError(f"unknown message type {mtype!r}")
    if len(raw_body) > MAX_BODY:
        raise ProtocolError(f"{mtype}: body too large")
    try:  # UTF-8 by definition: decoding it here spares json its encoding sniffing
        body = _DECODER.decode(bytes(raw_body).decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise ProtocolError(f"{mtype}: body is not valid JSON") from None
    if body.__class__ is not dict:
        raise ProtocolError(f"{mtype}: body must be a JSON object")
    return mtype, body, tuple(bytes(f) for f in frames[3:])


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
