"""director.net.control.result_of: how the CLI reads a control reply (no sockets needed)."""

from __future__ import annotations

import json

import pytest

from director.errors import DirectorError, ProtocolError
from director.net.control import result_of
from director.protocol.frames import Message, decode, encode


def _roundtrip(body: dict, payload: tuple[bytes, ...] = ()) -> Message:
    return decode(encode(Message("CTL_REPLY", body, payload)))


def test_result_in_the_body():
    assert result_of(_roundtrip({"ok": True, "result": {"a": 1}})) == {"a": 1}


def test_result_as_a_json_payload_frame():
    docs = [{"id": "abc", "status": "success", "results": {"n1": {"stdout": "héllo\n"}}}]
    msg = _roundtrip({"ok": True, "result_json": True, "failed": 0},
                     (json.dumps(docs).encode(),))
    assert result_of(msg) == docs


def test_result_json_without_payload_is_a_protocol_error():
    with pytest.raises(ProtocolError, match="without its payload"):
        result_of(_roundtrip({"ok": True, "result_json": True}))


def test_result_json_payload_that_is_not_json_is_a_protocol_error():
    with pytest.raises(ProtocolError, match="not valid JSON"):
        result_of(_roundtrip({"ok": True, "result_json": True}, (b"{nope",)))


def test_refusal_raises_with_its_exit_code():
    with pytest.raises(DirectorError) as info:
        result_of(_roundtrip({"ok": False, "error": "no such job", "code": 3}))
    assert info.value.exit_code == 3 and "no such job" in str(info.value)


def test_failed_count_must_be_an_int():
    with pytest.raises(ProtocolError):
        _roundtrip({"ok": True, "result_json": True, "failed": "2"})
