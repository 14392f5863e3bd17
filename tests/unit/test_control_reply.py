"""director.net.control.result_of: how the CLI reads a control reply (no sockets needed)."""

from __future__ import annotations

import json

import pytest

from director.errors import DirectorError, ProtocolError
from director.net.control import result_of
from director.protocol import frames
from director.protocol.messages import CtlEvent, CtlReply, decode, encode


def _roundtrip(msg):
    return decode(encode(msg))


def test_result_in_the_body():
    assert result_of(_roundtrip(CtlReply(True, {"a": 1}))) == {"a": 1}


def test_result_as_a_json_payload_frame():
    docs = [{"id": "abc", "status": "success", "results": {"n1": {"stdout": "héllo\n"}}}]
    msg = _roundtrip(CtlReply(True, result_json=True, failed=0, data=json.dumps(docs).encode()))
    assert msg.failed == 0
    assert result_of(msg) == docs


def test_result_json_without_payload_is_a_protocol_error():
    with pytest.raises(ProtocolError, match="result_json needs one payload frame"):
        decode(frames.join("CTL_REPLY", {"ok": True, "result_json": True}))


def test_result_json_payload_that_is_not_json_is_a_protocol_error():
    with pytest.raises(ProtocolError, match="not valid JSON"):
        result_of(_roundtrip(CtlReply(True, result_json=True, data=b"{nope")))


def test_refusal_raises_with_its_exit_code():
    with pytest.raises(DirectorError) as info:
        result_of(_roundtrip(CtlReply(False, error="no such job", code=3)))
    assert info.value.exit_code == 3 and "no such job" in str(info.value)


def test_refusal_without_code_or_error_exits_1():
    with pytest.raises(DirectorError, match="request failed") as info:
        result_of(_roundtrip(CtlReply(False)))
    assert info.value.exit_code == 1


def test_an_event_is_not_a_result():
    with pytest.raises(ProtocolError, match="unexpected CTL_EVENT"):
        result_of(_roundtrip(CtlEvent("progress", {})))


def test_failed_count_must_be_an_int():
    with pytest.raises(ProtocolError, match="'failed'"):
        decode(frames.join("CTL_REPLY", {"ok": True, "failed": "2"}))


def test_a_part_carries_its_bytes_and_needs_exactly_one_frame():
    from director.protocol.control import CtlPart, decode as decode_control, join_parts

    part = decode_control(encode(CtlPart(b'{"id": "a"}')))
    assert isinstance(part, CtlPart) and part.data == b'{"id": "a"}'
    frames_ = encode(CtlPart(b"x"))
    with pytest.raises(ProtocolError):
        decode_control(frames_[:-1])          # no payload frame
    with pytest.raises(ProtocolError):
        decode_control([*frames_, b"more"])   # two
    assert join_parts([], b"[1, 2]") == b"[1, 2]"          # no part: the whole list came
    assert join_parts([b"1, 2", b"3"], b"4") == b"[1, 2, 3, 4]"
    assert join_parts([b"1, 2"], b"") == b"[1, 2]"
    assert json.loads(join_parts([b'{"a": 1}'], b'{"b": 2}')) == [{"a": 1}, {"b": 2}]
