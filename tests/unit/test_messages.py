"""Typed messages (director.protocol.messages): one table drives encode and decode.

``VALID`` holds a valid instance of every message type; each must round-trip
(``decode(encode(m)) == m``), also with payload frames after the body.  ``FIELDS``
states every bounded field of every type once; from it the broken values are
derived (missing, wrong type, bool for a number, out of range, over-long, lone
surrogate, control characters in identifying strings, outside a closed set, bad
id formats), and each is refused with a ProtocolError naming the field -- by
``decode`` (sent as raw JSON, as a hostile peer would) and by ``encode`` (built
as an instance, as a buggy caller would).  A hypothesis property: no frame list
and no JSON body makes ``decode`` raise anything but ProtocolError.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from director.errors import ProtocolError
from director.jobs.dsl import parse_line
from director.protocol import fields as F
from director.protocol import frames
from director.protocol import fetch as FM
from director.protocol import messages as M
from director.transfer.manifest import FileEntry, Manifest, digest_of

JOB_ID = "0123456789abcdef"
LANE = "0123456789abcdef.2"
_ABC = digest_of(b"abc")
MANIFEST = Manifest("/srv/app/", 4096, (FileEntry("a.txt", 3, 0o644, _ABC, (_ABC,)),), ("sub",))
RUN = parse_line("RUN echo hi")
COPY = parse_line("COPY a.txt /srv/app/")
RESULT_FULL = M.Result(JOB_ID, "failed", -(2**31), "out\n", "é err", 0.25, True,
                       M.Transfer(1, 3, 3, 1, 0, 0), "boom")

# A valid instance of every message type (some more than once: optional fields set and not).
VALID: list[M.Msg] = [
    M.Enroll("web1"),
    M.Enroll("web-1.example", token="dj1.abc_DEF-9", version="0.1.0"),
    M.EnrollStatus(),
    M.Hello("web1", "0.1.0"),
    M.Hello("web1", "0.1.0", boot="b00t-id"),
    M.Hello("web1", "0.1.0", "b", M.Facts("h", "debian", "12", "6.1", "x86_64", 2, 2**30,
                                          ("10.0.0.1", "::2"), "0.1.0")),
    M.Heartbeat(),
    M.Heartbeat(running=10**6),
    M.Result(JOB_ID, "success"),
    RESULT_FULL,
    M.Result("0" * 8, "timeout", 2**31 - 1, exec_time=0.0),
    M.Results((M.Result(JOB_ID, "success", 0), RESULT_FULL)),
    M.ChunkReq(JOB_ID, ((0, 0), (0, 1), (M.MAX_INDEX, M.MAX_INDEX))),
    M.ChunkReq(JOB_ID, ()),
    M.Enrolled("accepted", "web1"),
    M.Enrolled("refused", "web1", "name already taken"),
    M.Job(JOB_ID, RUN, LANE, 0),
    M.Job(JOB_ID, COPY, "abcdef01.123456789", M.MAX_INDEX, "extra", MANIFEST),
    M.Jobs((M.Job(JOB_ID, RUN, LANE, 1), M.Job("f" * 24, COPY, LANE, 2, manifest=MANIFEST))),
    M.Chunk(JOB_ID, 0, 7, b"\x00\xffdata"),
    M.Chunk(JOB_ID, M.MAX_INDEX, 0, b""),
    M.ChunkErr(JOB_ID, -1, -1, "request refused"),
    M.ChunkErr(JOB_ID, 2, 5, "gone"),
    M.Ack((JOB_ID, "f" * 24)),
    M.Ack(()),
    M.Cancel((JOB_ID, "f" * 24)),
    M.Output(((JOB_ID, "out", "line 1\nline 2\n"), (JOB_ID, "err", "é"))),
    M.Output(()),
    M.Revoked("this node's key is revoked"),
    M.Error("not_permitted", "no"),
    M.Ctl("health", {}),
    M.Ctl("jobs.submit", {"steps": [{"jobs": [1.5, None, "x"]}], "wait": True}),
    M.CtlReply(True, {"a": [1, None, "é"]}),
    M.CtlReply(False, error="no such job", code=3),
    M.CtlReply(True, code=0, failed=0),
    M.CtlReply(True, result_json=True, failed=2, data=b'[{"id": "x"}]'),
    M.CtlEvent("progress", {"success": 1}),
    M.CtlEvent("submitted"),
    M.CtlPart(b'{"id": "x"}, {"id": "y"}'),
    FM.GetOffer(JOB_ID, 4096, (FileEntry("a/b.txt", 3, 0o755, _ABC, (_ABC,)),)),
    FM.GetOffer(JOB_ID, FM.MAX_GET_CHUNK),
    FM.GetPull(JOB_ID, ((0, 0), (3, M.MAX_INDEX))),
    FM.GetData(JOB_ID, 0, 1, b"\x00abc"),
    FM.GetData(JOB_ID, 2, 0, b"", "cannot read"),
    FM.GetDone(JOB_ID, True, "", tuple((k, 1) for k in FM.TRANSFER_FIELDS)),
    FM.GetDone(JOB_ID, False, "over the limit", tuple((k, 0) for k in FM.TRANSFER_FIELDS)),
]


def _id(msg: M.Msg) -> str:
    return msg.TYPE


def test_every_type_has_a_valid_case():
    assert {m.TYPE for m in VALID} == set(M.TYPES)


@pytest.mark.parametrize("msg", VALID, ids=_id)
def test_valid_message_round_trips(msg):
    wire = M.encode(msg)
    assert wire[:2] == [frames.VERSION, msg.TYPE.encode()]
    assert M.decode(wire) == msg
    # the same through the pieces: encode_body + frames.join
    assert M.decode(frames.join(msg.TYPE, M.encode_body(msg), msg.payload())) == msg
    # frames as zmq may hand them over (bytearray / memoryview)
    assert M.decode([bytearray(f) if i % 2 else memoryview(f) for i, f in enumerate(wire)]) == msg


@pytest.mark.parametrize("msg", [m for m in VALID if not m.payload()], ids=_id)
def test_payload_frames_after_a_body_without_payload_are_ignored(msg):
    wire = M.encode(msg)
    for extra in ([b"x"], [b"x", b"y" * 1000]):
        assert M.decode(wire + extra) == msg


def test_payload_frames_are_kept_byte_for_byte():
    data = bytes(range(256)) * 4
    assert M.decode(M.encode(M.Chunk(JOB_ID, 1, 2, data))).data == data
    reply = M.decode(M.encode(M.CtlReply(True, result_json=True, data=b"[1]")))
    assert reply.data == b"[1]" and reply.result_json


@pytest.mark.parametrize("msg", VALID, ids=_id)
def test_unknown_fields_are_ignored(msg):
    body = json.loads(M.encode_body(msg))
    body.update({"zz_new": {"deep": [1, 2.5, None]}, "another": "x"})
    wire = M.encode(msg)
    assert M.decode([wire[0], wire[1], json.dumps(body).encode(), *wire[3:]]) == msg


# -- every bounded field, once ------------------------------------------------------
# (field, kind, options): kinds ident/text (cap), int (lo, hi), seconds, flag,
# choice (allowed), job_id, lane, mapping; "req" marks fields that must be present,
# "null" fields where null is allowed.
def ident(cap, **o):
    return ("ident", {"cap": cap, **o})


def text(cap, **o):
    return ("text", {"cap": cap, **o})


def integer(lo, hi, **o):
    return ("int", {"lo": lo, "hi": hi, **o})


FIELDS: dict[type[M.Msg], tuple[M.Msg, dict[str, tuple[str, dict]]]] = {
    M.Enroll: (M.Enroll("web1", "tok", "0.1"), {
        "name": ident(M.MAX_NAME, req=True), "token": ident(M.MAX_TOKEN, null=True),
        "version": ident(M.MAX_VERSION, null=True)}),
    M.Hello: (M.Hello("web1", "0.1", "boot"), {
        "name": ident(M.MAX_NAME, req=True), "version": ident(M.MAX_VERSION, req=True),
        "boot": ident(64, null=True), "facts": ("mapping", {"null": True})}),
    M.Heartbeat: (M.Heartbeat(1), {"running": integer(0, 10**6)}),
    M.Result: (RESULT_FULL, {
        "job_id": ("job_id", {"req": True}),
        "status": ("choice", {"allowed": M.RESULT_STATUSES, "req": True}),
        "rc": integer(*F.INT32, null=True),
        "stdout": text(M.MAX_OUTPUT), "stderr": text(M.MAX_OUTPUT),
        "exec_time": ("seconds", {"null": True}), "cached": ("flag", {}),
        "transfer": ("mapping", {"null": True}), "error": text(M.MAX_TEXT)}),
    M.ChunkReq: (M.ChunkReq(JOB_ID, ((0, 1),)), {"job_id": ("job_id", {"req": True})}),
    M.Enrolled: (M.Enrolled("pending", "web1", "wait"), {
        "state": ("choice", {"allowed": M.ENROLL_STATES, "req": True}),
        "name": ident(M.MAX_NAME, req=True), "reason": text(M.MAX_TEXT)}),
    M.Job: (M.Job(JOB_ID, COPY, LANE, 3, "x", MANIFEST), {
        "job_id": ("job_id", {"req": True}), "instruction": ("mapping", {"req": True}),
        "lane": ("lane", {"req": True}), "seq": integer(0, M.MAX_INDEX, req=True),
        "hash_extra": ident(128), "manifest": ("mapping", {"null": True})}),
    M.Chunk: (M.Chunk(JOB_ID, 1, 2, b"x"), {
        "job_id": ("job_id", {"req": True}), "file": integer(0, M.MAX_INDEX, req=True),
        "chunk": integer(0, M.MAX_INDEX, req=True)}),
    M.ChunkErr: (M.ChunkErr(JOB_ID, 1, 2, "e"), {
        "job_id": ("job_id", {"req": True}), "file": integer(-1, M.MAX_INDEX, req=True),
        "chunk": integer(-1, M.MAX_INDEX, req=True), "error": text(M.MAX_TEXT, req=True)}),
    M.Ack: (M.Ack((JOB_ID,)), {}),
    M.Cancel: (M.Cancel((JOB_ID,)), {}),
    M.Output: (M.Output(((JOB_ID, "out", "x"),)), {}),
    M.Revoked: (M.Revoked("r"), {"reason": text(M.MAX_TEXT, req=True)}),
    M.Error: (M.Error("internal", "m"), {
        "code": ("choice", {"allowed": M.ERROR_CODES, "req": True}),
        "message": text(M.MAX_TEXT, req=True)}),
    M.Ctl: (M.Ctl("nodes", {}), {"op": ident(64, req=True), "args": ("mapping", {"req": True})}),
    M.CtlReply: (M.CtlReply(True, [1], "e", 2, False, 1), {
        "ok": ("flag", {}), "error": text(M.MAX_TEXT), "code": integer(0, 255, null=True),
        "failed": integer(0, F.MAX_COUNT, null=True), "result_json": ("flag", {})}),
    M.CtlEvent: (M.CtlEvent("progress", {"a": 1}), {"event": ident(64, req=True)}),
    M.CtlPart: (M.CtlPart(b"{}"), {}),  # its bytes are a payload frame, not a field
    # GET_OFFER: only the job id is refused at decode; the rest fails the job (problem)
    FM.GetOffer: (FM.GetOffer(JOB_ID, 4096), {"job_id": ("job_id", {"req": True})}),
    FM.GetPull: (FM.GetPull(JOB_ID, ((0, 1),)), {"job_id": ("job_id", {"req": True})}),
    FM.GetData: (FM.GetData(JOB_ID, 1, 2, b"x"), {
        "job_id": ("job_id", {"req": True}), "file": integer(0, M.MAX_INDEX, req=True),
        "chunk": integer(0, M.MAX_INDEX, req=True), "error": text(M.MAX_TEXT)}),
    FM.GetDone: (FM.GetDone(JOB_ID, True), {
        "job_id": ("job_id", {"req": True}), "ok": ("flag", {}), "error": text(M.MAX_TEXT),
        "transfer": ("mapping", {"req": True})}),
}

BIG = 18446744073709551616
NAN, INF = float("nan"), float("inf")


def _bad_values(kind: str, o: dict) -> list[tuple[str, Any]]:
    """(label, value) pairs the field must refuse; ``MISSING`` means "leave it out"."""
    out: list[tuple[str, Any]] = []
    if o.get("req"):
        out.append(("missing", MISSING))
    if not o.get("null") and kind not in ("flag",):
        out.append(("null", None))
    if kind in ("ident", "text"):
        cap = o["cap"]
        out += [("int", 5), ("bool", True), ("list", ["a"]), ("too long", "x" * (cap + 1)),
                ("lone surrogate", "a\ud800b"), ("lone low surrogate", "\udfff")]
        if kind == "ident":
            out += [("NUL", "a\x00b"), ("newline", "a\nb"), ("escape", "a\x1b[2Jb"), ("DEL", "\x7f")]
    elif kind == "int":
        lo, hi = o["lo"], o["hi"]
        out += [("string", "1"), ("float", 1.5), ("integral float", 1.0), ("bool", True),
                ("bool false", False), ("below", lo - 1), ("above", hi + 1), ("huge", BIG),
                ("huge negative", -BIG)]
    elif kind == "seconds":
        out += [("string", "1"), ("bool", True), ("negative", -0.5),
                ("too large", F.MAX_SECONDS + 1), ("huge int", BIG), ("NaN", NAN),
                ("Infinity", INF), ("-Infinity", -INF), ("list", [1])]
    elif kind == "flag":
        out += [("int", 1), ("string", "true"), ("null", None)]
    elif kind == "choice":
        out += [("unknown", "nope"), ("case", sorted(o["allowed"])[0].upper()), ("int", 5),
                ("padded", " " + sorted(o["allowed"])[0])]
    elif kind == "job_id":
        out += [("int", 5), ("too short", "0123abc"), ("too long", "0" * 25),
                ("upper case", "0123ABCD"), ("not hex", "0123abcg"), ("old style", "j1"),
                ("NUL", "0123abcd\x00"), ("newline", "0123abcd\n"), ("empty", "")]
    elif kind == "lane":
        out += [("int", 5), ("name", "main"), ("no seq", "0123abcd"), ("empty seq", "0123abcd."),
                ("letters", "0123abcd.x"), ("long seq", "0123abcd.1234567890"),
                ("upper", "0123ABCD.1"), ("newline", "0123abcd.1\n")]
    elif kind == "mapping":
        out += [("list", [1]), ("string", "x"), ("int", 5)]
    return out


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()

BROKEN = [pytest.param(cls, name, value, id=f"{cls.TYPE}.{name}:{label}")
          for cls, (_, fields) in FIELDS.items()
          for name, (kind, o) in fields.items()
          for label, value in _bad_values(kind, o)]


def test_fields_table_covers_every_type_with_fields():
    with_fields = {c for c in M.TYPES.values()
                   if dataclasses.fields(c) and not issubclass(c, M.Batch)}
    assert with_fields == set(FIELDS)


def _raw_frames(cls: type[M.Msg], body: dict) -> list[bytes]:
    """A hostile peer's frames: any JSON (NaN, surrogate escapes) however it likes."""
    valid = FIELDS[cls][0]
    return [frames.VERSION, cls.TYPE.encode(), json.dumps(body).encode(), *valid.payload()]


@pytest.mark.parametrize("cls, name, value", BROKEN)
def test_decode_refuses_broken_field(cls, name, value):
    body = json.loads(M.encode_body(FIELDS[cls][0]))
    if value is MISSING:
        del body[name]
    else:
        body[name] = value
    with pytest.raises(ProtocolError) as info:
        M.decode(_raw_frames(cls, body))
    if isinstance(value, float) and not math.isfinite(value):
        assert "not valid JSON" in str(info.value)  # refused while parsing, before any field
    else:
        assert f"'{name}'" in str(info.value) and cls.TYPE in str(info.value)


@pytest.mark.parametrize("cls, name, value", [
    p for p in BROKEN if p.values[2] is not MISSING
    and FIELDS[p.values[0]][1][p.values[1]][0] != "mapping"])
def test_encode_refuses_broken_field(cls, name, value):
    broken = dataclasses.replace(FIELDS[cls][0], **{name: value})
    for encoder in (M.encode, M.encode_body):
        with pytest.raises(ProtocolError) as info:
            encoder(broken)
        assert f"'{name}'" in str(info.value) and cls.TYPE in str(info.value)


# -- fields inside fields ------------------------------------------------------------
@pytest.mark.parametrize("field", M.Transfer.FIELDS)
@pytest.mark.parametrize("value", [-1, BIG, True, "1", 1.5, None])
def test_transfer_counts_are_bounded_integers(field, value):
    body = json.loads(M.encode_body(RESULT_FULL))
    body["transfer"][field] = value
    with pytest.raises(ProtocolError, match=f"'{field}'"):
        M.decode(_raw_frames(M.Result, body))
    with pytest.raises(ProtocolError, match=f"'{field}'"):
        M.encode(dataclasses.replace(
            RESULT_FULL, transfer=dataclasses.replace(RESULT_FULL.transfer, **{field: value})))


@pytest.mark.parametrize("chunks", [
    "x", {"a": 1}, [[0]], [[0, 1, 2]], [[0, -1]], [[-1, 0]], [[0, M.MAX_INDEX + 1]],
    [[0, True]], [[0, 1.0]], [["0", 1]], [[0, BIG]], [0, 1], [[0, 1]] * (M.MAX_CHUNK_REQ + 1),
    None])
def test_chunk_req_chunks_are_bounded_pairs(chunks):
    body = {"job_id": JOB_ID, "chunks": chunks}
    with pytest.raises(ProtocolError, match="'chunks'"):
        M.decode(_raw_frames(M.ChunkReq, body))


def test_chunk_req_without_chunks_is_refused():
    with pytest.raises(ProtocolError, match="'chunks'"):
        M.decode(_raw_frames(M.ChunkReq, {"job_id": JOB_ID}))


@pytest.mark.parametrize("payload", [(), (b"a", b"b")])
def test_chunk_needs_exactly_one_payload_frame(payload):
    wire = frames.join("CHUNK", {"job_id": JOB_ID, "file": 0, "chunk": 0}, payload)
    with pytest.raises(ProtocolError, match="CHUNK: expected one payload frame"):
        M.decode(wire)


def test_ctl_reply_result_json_needs_its_payload_frame():
    with pytest.raises(ProtocolError, match="result_json needs one payload frame"):
        M.decode(frames.join("CTL_REPLY", {"ok": True, "result_json": True}))


@pytest.mark.parametrize("instruction", [
    {}, {"verb": "NOPE"}, {"verb": 5}, {"verb": "RUN", "command": 5},
    {"verb": "RUN", "timeout": "soon"}, {"verb": "RUN", "command": "a\ud800"}])
def test_job_with_a_bad_instruction_is_refused_and_names_its_job(instruction):
    body = {"job_id": JOB_ID, "instruction": instruction, "lane": LANE, "seq": 1}
    with pytest.raises(ProtocolError, match="instruction") as info:
        M.decode(_raw_frames(M.Job, body))
    if "surrogate" not in str(info.value):  # that one is refused while framing
        assert info.value.job_id == JOB_ID  # so the node can answer it as failed


@pytest.mark.parametrize("manifest", [
    {}, {"dest": "/x", "chunk_size": 4096, "files": [], "dirs": ["../up"]},
    {"dest": "/x", "chunk_size": True, "files": [], "dirs": []},
    {"dest": "/x", "chunk_size": 4096, "files": [{"rel": "a"}], "dirs": []}])
def test_job_with_a_bad_manifest_is_refused(manifest):
    body = {"job_id": JOB_ID, "instruction": COPY.to_dict(), "lane": LANE, "seq": 1,
            "manifest": manifest}
    with pytest.raises(ProtocolError, match="manifest") as info:
        M.decode(_raw_frames(M.Job, body))
    assert info.value.job_id == JOB_ID


def test_job_body_fast_path_decodes_like_encode():
    body = M.job_body(JOB_ID, json.dumps(RUN.to_dict()), LANE, 4)
    assert M.decode(frames.join("JOB", body)) == M.Job(JOB_ID, RUN, LANE, 4)


# -- batches ---------------------------------------------------------------------------
def test_results_batch_keeps_good_items_and_reports_bad_ones():
    good = json.loads(M.encode_body(RESULT_FULL))
    body = {"results": [good, {**good, "rc": BIG}, "not an object", {**good, "stdout": "\ud800"},
                        {**good, "job_id": "J1"}, good]}
    msg = M.decode([frames.VERSION, b"RESULTS", json.dumps(body).encode()])
    assert msg == M.Results((RESULT_FULL, RESULT_FULL), msg.problems)
    assert len(msg.problems) == 4
    for problem, field in zip(msg.problems, ("'rc'", "must be an object", "'stdout'", "'job_id'")):
        assert field in problem and "RESULT" in problem


def test_lone_surrogates_nested_anywhere_are_refused_but_valid_pairs_pass():
    pair = json.dumps({"op": "x", "args": {"a": ["\U0001f600"]}}).encode()
    assert b"\\ud83d\\ude00" in pair
    assert M.decode([frames.VERSION, b"CTL", pair]) == M.Ctl("x", {"a": ["\U0001f600"]})
    for body in ({"op": "x", "args": {"a": ["\ud800"]}}, {"op": "x", "args": {"\udc00": 1}},
                 {"op": "x", "args": {}, "unknown": "\ud800"}):
        with pytest.raises(ProtocolError, match="lone surrogate"):
            M.decode([frames.VERSION, b"CTL", json.dumps(body).encode()])


def test_jobs_batch_keeps_good_items_and_reports_bad_ones():
    good = json.loads(M.encode_body(M.Job(JOB_ID, RUN, LANE, 1)))
    sneaky = {**good, "instruction": {**good["instruction"], "command": "a\ud800"}}
    body = {"jobs": [{**good, "lane": "main"}, good, 7, {**good, "seq": -1}, sneaky, "\udfff"]}
    msg = M.decode([frames.VERSION, b"JOBS", json.dumps(body).encode()])
    assert msg.items == (M.Job(JOB_ID, RUN, LANE, 1),)
    assert ["'lane'" in msg.problems[0], "must be an object" in msg.problems[1],
            "'seq'" in msg.problems[2], "'instruction'" in msg.problems[3],
            "surrogate" in msg.problems[4]] == [True] * 5


@pytest.mark.parametrize("cls", [M.Results, M.Jobs])
@pytest.mark.parametrize("items", [MISSING, None, "x", {"a": 1}, [{}] * (frames.MAX_BATCH + 1)])
def test_batch_list_itself_is_bounded(cls, items):
    body = {} if items is MISSING else {cls.KEY: items}
    with pytest.raises(ProtocolError, match=f"'{cls.KEY}'"):
        M.decode([frames.VERSION, cls.TYPE.encode(), json.dumps(body).encode()])


def test_batch_with_a_bad_item_is_refused_at_encode():
    with pytest.raises(ProtocolError, match="'rc'"):
        M.encode(M.Results((RESULT_FULL, dataclasses.replace(RESULT_FULL, rc=BIG))))


def test_frames_batch_of_encoded_bodies_decodes_to_the_batch():
    results = [dataclasses.replace(RESULT_FULL, job_id=f"{i:08x}") for i in range(5)]
    msg = M.decode(M.batch("RESULTS", [M.encode_body(r) for r in results]))
    assert msg == M.Results(tuple(results))
    one = M.decode(M.batch("RESULTS", [M.encode_body(results[0])]))
    assert one == results[0]  # a batch of one goes alone


# -- NaN / Infinity and other hostile JSON anywhere ------------------------------------
@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e999"])
@pytest.mark.parametrize("where", ["field", "unknown", "nested"])
def test_non_finite_numbers_are_refused_anywhere(literal, where):
    body = {"field": b'{"op":"x","args":{},"zz":%s}',
            "unknown": b'{"op":"x","args":{},"zz":[1,{"a":%s}]}',
            "nested": b'{"op":"x","args":{"a":[%s]}}'}[where] % literal
    with pytest.raises(ProtocolError, match="not valid JSON"):
        M.decode([frames.VERSION, b"CTL", body])


def test_encode_refuses_values_json_cannot_carry():
    for msg in (M.CtlReply(True, {"a": NAN}), M.CtlEvent("progress", {"a": INF}),
                M.Ctl("x", {"a": "\ud800"}), M.CtlReply(True, {1, 2})):
        with pytest.raises(ProtocolError):
            M.encode(msg)


# -- property: nothing but ProtocolError ------------------------------------------------
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(min_value=-BIG, max_value=BIG)
    | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20)
FRAME = st.binary(max_size=64) | st.sampled_from(
    [frames.VERSION, *(t.encode() for t in M.TYPES), b"{}", b"[]", b"null", b'{"a":NaN}'])


def _decode_or_protocol_error(wire: list) -> None:
    try:
        msg = M.decode(wire)
    except ProtocolError:
        return
    assert isinstance(msg, M.Msg)
    M.encode(msg)  # whatever decodes also encodes


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(FRAME, max_size=7))
def test_arbitrary_frame_lists_raise_only_protocol_error(wire):
    _decode_or_protocol_error(wire)


_KNOWN_FIELDS = sorted({n for _, fs in FIELDS.values() for n in fs} | {"results", "jobs", "chunks"})


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(M.TYPES)),
       st.dictionaries(st.sampled_from(_KNOWN_FIELDS) | st.text(max_size=6), JSON, max_size=8),
       st.lists(st.binary(max_size=8), max_size=2), st.booleans())
def test_arbitrary_bodies_of_known_types_raise_only_protocol_error(mtype, changes, payload, ascii_):
    base = next(m for m in VALID if m.TYPE == mtype)
    body = {**json.loads(M.encode_body(base)), **changes}
    raw = json.dumps(body, ensure_ascii=ascii_).encode("utf-8", "surrogatepass")
    _decode_or_protocol_error([frames.VERSION, mtype.encode(), raw, *payload])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["RESULTS", "JOBS"]), st.lists(JSON, max_size=5))
def test_arbitrary_batch_items_raise_only_protocol_error(mtype, items):
    key = frames.BATCHES[mtype][0]
    _decode_or_protocol_error([frames.VERSION, mtype.encode(),
                               json.dumps({key: items}).encode()])


@pytest.mark.parametrize("mtype", ["ACK", "CANCEL"])
@pytest.mark.parametrize("ids", [["j1"], [5], ["A" * 8], ["0" * 8] * (M.MAX_ACK + 1), "x"])
def test_ack_and_cancel_hold_only_job_ids_and_are_bounded(mtype, ids):
    with pytest.raises(ProtocolError, match=f"{mtype}: field 'job_ids'"):
        M.decode(frames.join(mtype, {"job_ids": ids}))


@pytest.mark.parametrize("items", [
    [["j1", "out", "x"]], [[JOB_ID, "both", "x"]], [[JOB_ID, "out", 5]], [[JOB_ID, "out"]],
    "x", [[JOB_ID, "out", "x" * (256 * 1024 + 1)]],
    [[JOB_ID, "out", "x" * 200_000], [JOB_ID, "err", "y" * 100_000]],
    [[JOB_ID, "out", "x"]] * 257])
def test_output_is_bounded_and_names_jobs(items):
    with pytest.raises(ProtocolError, match="OUTPUT: field"):
        M.decode(frames.join("OUTPUT", {"items": items}))


def test_get_offer_with_a_bad_file_still_names_its_job():
    """A hostile offer (a name that is not a string, a bad digest, a huge chunk size)
    decodes with its job id and a problem, so its GET fails instead of hanging."""
    for files, chunk_size in (([{"rel": 5}], 4096), ([{"rel": "a", "size": 1, "mode": 0,
                              "digest": "x", "chunks": []}], 4096), ([], 2**40)):
        body = {"job_id": JOB_ID, "chunk_size": chunk_size, "files": files}
        msg = M.decode([frames.VERSION, b"GET_OFFER", json.dumps(body).encode()])
        assert isinstance(msg, FM.GetOffer) and msg.job_id == JOB_ID
        assert msg.problem.startswith("GET_OFFER: field ") and msg.files == ()
