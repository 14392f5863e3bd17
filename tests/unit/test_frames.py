"""The wire format (director.protocol.frames): one table drives encode and decode.

Every message type in SCHEMAS has a valid body that must round-trip, and a set of
broken bodies derived from its schema (missing required field, wrong type,
bool where a number is meant) that both ``encode`` and ``decode`` must refuse
with ProtocolError -- whole, and with payload frames after the body.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from director.errors import ProtocolError
from director.protocol import frames as fr
from director.protocol.frames import (
    MAX_BODY,
    MAX_PAYLOAD_FRAMES,
    MAX_TYPE,
    SCHEMAS,
    VERSION,
    Message,
    decode,
    encode,
    make,
)

# One valid body per message type, with every optional field filled in.
VALID: dict[str, dict[str, Any]] = {
    "ENROLL": {"name": "web1", "token": "dj1.x.y.z", "version": "0.1.0"},
    "ENROLL_STATUS": {},
    "HELLO": {"name": "web1", "version": "0.1.0"},
    "HEARTBEAT": {"running": 2},
    "RESULT": {"job_id": "j1", "status": "success", "rc": 0, "stdout": "out", "stderr": "",
               "exec_time": 0.25, "cached": False, "transfer": {"files": 1}, "args": {"A": "1"},
               "error": "none"},
    "RESULTS": {"results": [{"job_id": "j1", "status": "success"}]},
    "CHUNK_REQ": {"job_id": "j1", "chunks": [[0, 1], [0, 2]]},
    "ENROLLED": {"state": "accepted", "name": "web1", "reason": ""},
    "JOB": {"job_id": "j1", "instruction": {"verb": "RUN", "args": ["true"]}, "lane": "main",
            "seq": 3, "hash_extra": "x", "manifest": None, "stop_on_failure": True},
    "JOBS": {"jobs": [{"job_id": "j1", "instruction": {"verb": "RUN"}, "lane": "m", "seq": 1}]},
    "CHUNK": {"job_id": "j1", "file": 0, "chunk": 7},
    "CHUNK_ERR": {"job_id": "j1", "file": 0, "chunk": 7, "error": "gone"},
    "REVOKED": {"reason": "this node's key is revoked"},
    "ERROR": {"code": "not_permitted", "message": "no"},
    "CTL": {"op": "health", "args": {}},
    "CTL_REPLY": {"ok": True, "result": [1, {"a": None}], "error": "", "code": 0},
    "CTL_EVENT": {"event": "progress", "data": {"done": 1}},
}

# Candidate wrong values, tried in order; the first one the schema refuses is used.
_CANDIDATES: list[Any] = ["text", 7, 1.5, {"k": 1}, [1], None, True]


def _accepts(types: Any, value: Any) -> bool:
    if types is fr._ANY:
        return True
    tup = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool) and bool not in tup:
        return False
    return isinstance(value, tup)


def _wrong_value(types: Any) -> Any:
    for v in _CANDIDATES:
        if not _accepts(types, v):
            return v
    return None  # pragma: no cover - every typed field refuses something


def _required(mtype: str) -> dict[str, Any]:
    return {k.rstrip("?"): v for k, v in VALID[mtype].items() if f"{k}?" not in SCHEMAS[mtype]}


def _invalid_cases() -> list[tuple[str, str, dict[str, Any]]]:
    cases = []
    for mtype, schema in SCHEMAS.items():
        base = VALID[mtype]
        for spec, types in schema.items():
            name = spec.rstrip("?")
            if not spec.endswith("?"):
                body = dict(base)
                del body[name]
                cases.append((mtype, f"missing {name}", body))
            if types is fr._ANY:
                continue
            cases.append((mtype, f"{name} wrong type", {**base, name: _wrong_value(types)}))
            tup = types if isinstance(types, tuple) else (types,)
            if int in tup and bool not in tup:
                cases.append((mtype, f"{name} bool for int", {**base, name: True}))
    return cases


INVALID = _invalid_cases()
PAYLOADS = [(), (b"",), (b"\x00chunk",), tuple(b"p%d" % i for i in range(MAX_PAYLOAD_FRAMES))]


def _raw(mtype: str, body: Any) -> list[bytes]:
    return [VERSION, mtype.encode(), json.dumps(body).encode()]


def test_table_covers_every_message_type() -> None:
    assert set(VALID) == set(SCHEMAS)
    for mtype, body in VALID.items():  # the table itself uses only schema fields
        assert {k.rstrip("?") for k in SCHEMAS[mtype]} >= set(body), mtype
    # every type with a typed field contributes refused bodies
    assert {c[0] for c in INVALID} == {t for t, s in SCHEMAS.items() if s}


@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda p: f"{len(p)}payload")
@pytest.mark.parametrize("mtype", sorted(VALID))
def test_valid_bodies_round_trip(mtype: str, payload: tuple[bytes, ...]) -> None:
    for body in (VALID[mtype], _required(mtype)):
        frames = encode(Message(mtype, body, payload))
        assert frames[:2] == [VERSION, mtype.encode()]
        assert frames[3:] == list(payload)
        msg = decode(frames)
        assert msg == Message(mtype, body, payload)
        # memoryviews (what zmq copy=False gives) decode the same
        assert decode([memoryview(f) for f in frames]) == msg


@pytest.mark.parametrize("mtype", sorted(VALID))
def test_make_is_encode(mtype: str) -> None:
    assert make(mtype, **VALID[mtype]) == encode(Message(mtype, VALID[mtype]))
    assert make(mtype, (b"x",), **VALID[mtype])[3:] == [b"x"]


@pytest.mark.parametrize("payload", [(), (b"trailing",), (b"a", b"b")], ids=["whole", "1extra", "2extra"])
@pytest.mark.parametrize("mtype,what,body", INVALID, ids=[f"{c[0]}-{c[1]}" for c in INVALID])
def test_invalid_bodies_are_refused_by_encode_and_decode(mtype: str, what: str, body: dict,
                                                         payload: tuple[bytes, ...]) -> None:
    with pytest.raises(ProtocolError):
        encode(Message(mtype, body, payload))
    with pytest.raises(ProtocolError):
        decode(_raw(mtype, body) + list(payload))


def _frames_cases() -> list[tuple[str, list[bytes]]]:
    ok = encode(Message("HEARTBEAT", {"running": 1}))
    return [
        ("wrong version", [b"D2", *ok[1:]]),
        ("empty version", [b"", *ok[1:]]),
        ("lower-case version", [b"d1", *ok[1:]]),
        ("unknown type", [VERSION, b"NOPE", b"{}"]),
        ("lower-case type", [VERSION, b"heartbeat", b"{}"]),
        ("empty type", [VERSION, b"", b"{}"]),
        ("non-ascii type", [VERSION, "HÉLLO".encode(), b"{}"]),
        ("type too long", [VERSION, b"H" * (MAX_TYPE + 1), b"{}"]),
        ("too few frames", ok[:2]),
        ("one frame", ok[:1]),
        ("no frames", []),
        ("too many frames", [*ok, *(b"p" for _ in range(MAX_PAYLOAD_FRAMES + 1))]),
        ("non-JSON", [VERSION, b"HEARTBEAT", b"{not json"]),
        ("empty body", [VERSION, b"HEARTBEAT", b""]),
        ("non-UTF-8 body", [VERSION, b"HEARTBEAT", b"\xff\xfe\x00{"]),
        ("JSON list", [VERSION, b"HEARTBEAT", b"[]"]),
        ("JSON string", [VERSION, b"HEARTBEAT", b'"x"']),
        ("JSON number", [VERSION, b"HEARTBEAT", b"1"]),
        ("JSON null", [VERSION, b"HEARTBEAT", b"null"]),
        ("deeply nested", [VERSION, b"CTL_EVENT", b'{"event":"e","data":' + b"[" * 100000]),
        ("oversize body", [VERSION, b"CTL_EVENT", b" " * (MAX_BODY + 1)]),
    ]


FRAME_CASES = _frames_cases()


@pytest.mark.parametrize("what,frames", FRAME_CASES, ids=[c[0] for c in FRAME_CASES])
def test_malformed_frames_raise_protocol_error(what: str, frames: list[bytes]) -> None:
    with pytest.raises(ProtocolError):
        decode(frames)


def test_not_a_list_is_refused() -> None:
    with pytest.raises(ProtocolError):
        decode(b"D1HEARTBEAT{}")  # type: ignore[arg-type]
    with pytest.raises(ProtocolError):
        decode(None)  # type: ignore[arg-type]


def test_encode_refuses_unknown_type_oversize_body_and_too_many_payload_frames() -> None:
    with pytest.raises(ProtocolError, match="unknown"):
        encode(Message("NOPE", {}))
    with pytest.raises(ProtocolError, match="exceeds"):
        encode(Message("CTL_EVENT", {"event": "e", "data": "x" * MAX_BODY}))
    with pytest.raises(ProtocolError, match="payload"):
        encode(Message("CHUNK", VALID["CHUNK"], tuple(b"x" for _ in range(MAX_PAYLOAD_FRAMES + 1))))


def test_body_just_under_the_limit_is_accepted() -> None:
    data = "x" * (MAX_BODY - 64)
    frames = encode(Message("CTL_EVENT", {"event": "e", "data": data}))
    assert len(frames[2]) <= MAX_BODY
    assert decode(frames).get("data") == data


def test_unknown_extra_fields_are_kept_and_message_get() -> None:
    msg = decode(_raw("HEARTBEAT", {"running": 0, "extra": "ok"}))
    assert msg.get("extra") == "ok"
    assert msg.get("missing", 42) == 42


def test_error_messages_do_not_echo_huge_input() -> None:
    with pytest.raises(ProtocolError) as info:
        decode([VERSION, b"X" * MAX_TYPE, b"{}"])
    assert len(str(info.value)) < 200


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=8))
def test_decode_of_arbitrary_bytes_only_raises_protocol_error(frames: list[bytes]) -> None:
    try:
        msg = decode(frames)
    except ProtocolError:
        return
    assert msg.type in SCHEMAS


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(sorted(SCHEMAS)),
    st.one_of(
        _json,
        st.dictionaries(st.sampled_from(sorted({k.rstrip("?") for s in SCHEMAS.values() for k in s})),
                        _json, max_size=6),
    ),
    st.lists(st.binary(max_size=16), max_size=4),
)
def test_decode_of_well_framed_arbitrary_json_only_raises_protocol_error(
    mtype: str, body: Any, payload: list[bytes]
) -> None:
    frames = [VERSION, mtype.encode(), json.dumps(body).encode(), *payload]
    try:
        msg = decode(frames)
    except ProtocolError:
        return
    # what decodes must also encode back to the same message
    assert decode(encode(msg)) == msg


# -- batches ---------------------------------------------------------------------------------
def _job_body(i: int) -> bytes:
    return make("JOB", job_id=f"j{i}", instruction={"verb": "RUN"}, lane="L", seq=i)[2]


def test_batch_of_one_is_the_single_message():
    assert fr.batch("JOBS", [_job_body(1)]) == make("JOB", job_id="j1",
                                                    instruction={"verb": "RUN"}, lane="L", seq=1)


def test_batch_round_trips_through_unbatch():
    msg = decode(fr.batch("JOBS", [_job_body(i) for i in range(5)]))
    assert msg.type == "JOBS"
    good, bad = fr.unbatch(msg)
    assert bad == [] and [m.type for m in good] == ["JOB"] * 5
    assert [m.get("seq") for m in good] == list(range(5))


def test_batch_refuses_empty_and_oversized():
    with pytest.raises(ProtocolError):
        fr.batch("RESULTS", [])
    with pytest.raises(ProtocolError):
        fr.batch("RESULTS", [b"{}"] * (fr.MAX_BATCH + 1))


def test_unbatch_keeps_good_items_and_reports_bad_ones():
    msg = Message("RESULTS", {"results": [{"job_id": "a", "status": "success"}, {"job_id": 5},
                                          "not an object", {"job_id": "b", "status": "failed"}]})
    good, bad = fr.unbatch(msg)
    assert [m.get("job_id") for m in good] == ["a", "b"]
    assert len(bad) == 2


def test_unbatch_refuses_too_many_items():
    items = [{"job_id": str(i), "status": "success"} for i in range(fr.MAX_BATCH + 1)]
    good, bad = fr.unbatch(Message("RESULTS", {"results": items}))
    assert good == [] and "more than" in bad[0]
