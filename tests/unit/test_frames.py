"""Framing (director.protocol.frames): ``[VERSION, TYPE, BODY, *PAYLOAD]`` only.

What a message means is tested in test_messages.py; here, that ``split`` refuses
every malformed frame list with ProtocolError (wrong version, bad type, frame
counts, size, JSON that is not a strict UTF-8 object) and that ``join``/``batch``
produce only what ``split`` accepts.
"""

from __future__ import annotations

import json

import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from director.errors import ProtocolError
from director.protocol import frames as fr
from director.protocol.frames import MAX_BATCH, MAX_BODY, MAX_PAYLOAD_FRAMES, MAX_TYPE, VERSION

KNOWN = frozenset({"PING", "JOBS", "RESULTS", "JOB", "RESULT"})


def split(frames):
    return fr.split(frames, KNOWN)


def test_join_then_split_round_trips_body_and_payload():
    body = {"a": [1, 2.5, None, True], "é": "ü\n", "n": {"x": -(2**70)}}
    for payload in ((), (b"",), (b"\x00\xff", b"x" * 1000)):
        assert split(fr.join("PING", body, payload)) == ("PING", body, payload)


def test_join_takes_a_body_already_encoded():
    assert split(fr.join("PING", b'{"a":1}')) == ("PING", {"a": 1}, ())


def test_dumps_is_compact_utf8_and_strict():
    assert fr.dumps({"a": [1, "é"]}) == '{"a":[1,"é"]}'
    with pytest.raises(ValueError):
        fr.dumps({"a": float("nan")})


@pytest.mark.parametrize("frames, why", [
    ([], "too few frames"),
    ([VERSION], "too few frames"),
    ([VERSION, b"PING"], "too few frames"),
    ([VERSION, b"PING", b"{}", *[b"p"] * (MAX_PAYLOAD_FRAMES + 1)], "too many frames"),
    ("D1PING{}", "too few frames"),
    (None, "too few frames"),
    ([b"D2", b"PING", b"{}"], "unsupported protocol version"),
    ([b"", b"PING", b"{}"], "unsupported protocol version"),
    ([b"d1", b"PING", b"{}"], "unsupported protocol version"),
    ([VERSION, b"", b"{}"], "bad message type"),
    ([VERSION, b"P" * (MAX_TYPE + 1), b"{}"], "bad message type"),
    ([VERSION, "PÏNG".encode(), b"{}"], "bad message type"),
    ([VERSION, b"\xff", b"{}"], "bad message type"),
    ([VERSION, b"NOPE", b"{}"], "unknown message type 'NOPE'"),
    ([VERSION, b"ping", b"{}"], "unknown message type 'ping'"),
    ([VERSION, b"PING", b"{" + b" " * MAX_BODY + b"}"], "body too large"),
    ([VERSION, b"PING", b""], "not valid JSON"),
    ([VERSION, b"PING", b"{nope"], "not valid JSON"),
    ([VERSION, b"PING", b'{"a":1} trailing'], "not valid JSON"),
    ([VERSION, b"PING", b"\xff\xfe{}"], "not valid JSON"),
    ([VERSION, b"PING", b'{"a":"\xc3"}'], "not valid JSON"),
    ([VERSION, b"PING", b'{"a":"\xed\xa0\x80"}'], "not valid JSON"),  # UTF-8 of a surrogate
    ([VERSION, b"PING", b"\xef\xbb\xbf{}"], "not valid JSON"),  # a BOM is not JSON
    ([VERSION, b"PING", b'{"a":NaN}'], "not valid JSON"),
    ([VERSION, b"PING", b'{"a":[Infinity]}'], "not valid JSON"),
    ([VERSION, b"PING", b'{"a":{"b":-Infinity}}'], "not valid JSON"),
    ([VERSION, b"PING", b'{"a":1e400}'], "not valid JSON"),
    ([VERSION, b"PING", b'{"a":' + b"1" * 5000 + b"}"], "not valid JSON"),  # int digits limit
    ([VERSION, b"PING", b"[" * 100000 + b"]" * 100000], "not valid JSON"),
    ([VERSION, b"PING", b"[]"], "must be a JSON object"),
    ([VERSION, b"PING", b'"x"'], "must be a JSON object"),
    ([VERSION, b"PING", b"7"], "must be a JSON object"),
    ([VERSION, b"PING", b"null"], "must be a JSON object"),
    ([VERSION, b"PING", b'{"a":"\\ud800"}'], "field 'a' is not valid UTF-8"),
    ([VERSION, b"PING", b'{"a":{"b":["\\uDFFF"]}}'], "field 'a' is not valid UTF-8"),
    ([VERSION, b"PING", 17], "frames must be bytes"),
    ([VERSION, "PING", b"{}"], "frames must be bytes"),
    ([VERSION, b"PING", b"{}", None], "frames must be bytes"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_split_refuses(frames, why):
    with pytest.raises(ProtocolError, match=why.replace("(", r"\(")):
        split(frames)


def test_split_accepts_bytes_likes_and_zmq_frames():
    body = b'{"a":"\\ud83d\\ude00"}'  # an escaped surrogate *pair* is fine
    for frames in ([zmq.Frame(VERSION), zmq.Frame(b"PING"), zmq.Frame(body)],
                   [bytearray(VERSION), memoryview(b"PING"), body, bytearray(b"p")]):
        mtype, parsed, payload = split(frames)
        assert (mtype, parsed) == ("PING", {"a": "\U0001f600"})
        assert all(p.__class__ is bytes for p in payload)


def test_body_exactly_at_the_limit_is_accepted():
    body = b'{"a":"' + b"x" * (MAX_BODY - 8) + b'"}'
    assert len(body) == MAX_BODY
    assert split([VERSION, b"PING", body])[1]["a"].startswith("x")


@pytest.mark.parametrize("body, payload, why", [
    ({"a": float("nan")}, (), "cannot encode"),
    ({"a": [float("inf")]}, (), "cannot encode"),
    ({"a": "\ud800"}, (), "cannot encode"),
    ({"a": {1, 2}}, (), "cannot encode"),
    ({"a": "x" * MAX_BODY}, (), "exceeds"),
    (b"x" * (MAX_BODY + 1), (), "exceeds"),
    ({}, (b"",) * (MAX_PAYLOAD_FRAMES + 1), "too many payload frames"),
])
def test_join_refuses_what_split_would(body, payload, why):
    with pytest.raises(ProtocolError, match=why):
        fr.join("PING", body, payload)


def test_batch_joins_encoded_bodies_without_reencoding():
    bodies = [fr.dumps({"job_id": f"{i:08x}", "x": "é"}).encode() for i in range(3)]
    mtype, body, _ = split(fr.batch("RESULTS", bodies))
    assert mtype == "RESULTS" and body == {"results": [json.loads(b) for b in bodies]}
    assert split(fr.batch("JOBS", bodies[:2]))[1] == {"jobs": [json.loads(b) for b in bodies[:2]]}


def test_batch_of_one_goes_as_the_item_type():
    assert fr.batch("RESULTS", [b'{"a":1}']) == [VERSION, b"RESULT", b'{"a":1}']
    assert fr.batch("JOBS", [b'{"a":1}']) == [VERSION, b"JOB", b'{"a":1}']


@pytest.mark.parametrize("n", [0, MAX_BATCH + 1])
def test_batch_size_is_bounded(n):
    with pytest.raises(ProtocolError, match=f"1 to {MAX_BATCH} items"):
        fr.batch("RESULTS", [b"{}"] * n)


def test_batch_body_size_is_bounded():
    big = b'{"a":"' + b"x" * (MAX_BODY // 2) + b'"}'
    with pytest.raises(ProtocolError, match="exceeds"):
        fr.batch("RESULTS", [big, big, big])


def test_lone_surrogate_in_one_batch_item_spares_the_others():
    body = b'{"results":[{"a":"ok"},{"a":"\\ud800"},"\\udc00"]}'
    _, parsed, _ = split([VERSION, b"RESULTS", body])
    good, bad, worse = parsed["results"]
    assert good == {"a": "ok"}
    assert isinstance(bad, fr.LoneSurrogate) and bad.field == "a"
    assert isinstance(worse, fr.LoneSurrogate)
    with pytest.raises(ProtocolError, match="field 'x'"):
        split([VERSION, b"RESULTS", b'{"results":[],"x":"\\ud800"}'])


@settings(max_examples=500, deadline=None)
@given(st.lists(st.binary(max_size=40) | st.sampled_from([VERSION, b"PING", b"{}", b"RESULTS"]),
                max_size=7))
def test_split_raises_only_protocol_error(frames):
    try:
        mtype, body, payload = split(frames)
    except ProtocolError:
        return
    assert mtype in KNOWN and body.__class__ is dict
    assert len(payload) <= MAX_PAYLOAD_FRAMES
