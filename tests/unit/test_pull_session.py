"""The pure windowed pull: window, verification, retries, failure."""

from __future__ import annotations

import pytest

from director.errors import ProtocolError
from director.transfer.chunking import digest_of
from director.transfer.session import PullSession


def data_for(f: int, c: int) -> bytes:
    return f"file{f}-chunk{c}".encode() * 10


def expected(f: int, c: int) -> str:
    return digest_of(data_for(f, c))


def session(n: int = 20, **kw) -> PullSession:
    return PullSession([(0, i) for i in range(n)], expected, **kw)


def test_window_fills_and_refills():
    s = session(20, window=8)
    first = s.next_requests()
    assert first == [(0, i) for i in range(8)]
    assert s.next_requests() == []  # window full
    assert s.on_chunk(0, 0, data_for(0, 0)) is True
    assert s.next_requests() == [(0, 8)]
    assert s.in_flight == 8 and s.remaining == 19


def test_complete_pull_and_stats():
    s = session(10, window=3)
    while not s.done:
        for f, c in s.next_requests():
            assert s.on_chunk(f, c, data_for(f, c))
    st = s.stats
    assert (st.chunks_received, st.retries) == (10, 0)
    assert st.bytes_received == sum(len(data_for(0, i)) for i in range(10))
    assert s.failed is None and s.next_requests() == []


def test_empty_session_is_done():
    assert PullSession([], expected).done


def test_duplicates_in_needed_are_requested_once():
    s = PullSession([(1, 0), (1, 0), (1, 1)], expected)
    assert s.next_requests() == [(1, 0), (1, 1)]


@pytest.mark.parametrize("key", [(9, 9), (0, 5)])
def test_unknown_or_unrequested_chunk_is_protocol_error(key):
    s = session(10, window=2)
    s.next_requests()
    with pytest.raises(ProtocolError):
        s.on_chunk(*key, data_for(*key))


def test_duplicate_chunk_is_protocol_error():
    s = session(2)
    s.next_requests()
    assert s.on_chunk(0, 0, data_for(0, 0))
    with pytest.raises(ProtocolError, match="duplicate"):
        s.on_chunk(0, 0, data_for(0, 0))


@pytest.mark.parametrize("f,c,data", [(True, 0, b""), (0, "0", b""), (0, 0, "text")])
def test_malformed_reply_is_protocol_error(f, c, data):
    s = session(2)
    s.next_requests()
    with pytest.raises(ProtocolError):
        s.on_chunk(f, c, data)


def test_bad_digest_requeued_then_accepted():
    s = session(2, window=1)
    assert s.next_requests() == [(0, 0)]
    assert s.on_chunk(0, 0, b"garbage") is False
    assert s.stats.retries == 1 and not s.failed
    assert s.next_requests() == [(0, 0)]  # retried before moving on
    assert s.on_chunk(0, 0, data_for(0, 0)) is True


def test_bad_digest_fails_after_max_retries():
    s = session(3, max_retries=2)
    s.next_requests()
    for attempt in range(3):
        assert s.on_chunk(0, 0, b"garbage") is False
        if attempt < 2:
            assert (0, 0) in s.next_requests()
    assert s.failed and "0/0" in s.failed and "failed verification" in s.failed
    assert not s.done and s.next_requests() == []
    assert s.on_chunk(0, 1, data_for(0, 1)) is False  # nothing accepted after failure


def test_timeout_requeues_in_flight_and_counts_retries():
    s = session(5, window=2)
    assert s.next_requests() == [(0, 0), (0, 1)]
    s.on_timeout()
    assert s.in_flight == 0 and s.stats.retries == 2
    assert s.next_requests() == [(0, 0), (0, 1)]  # same order, before the rest


def test_late_reply_after_timeout_is_accepted_once():
    s = session(3, window=1)
    s.next_requests()
    s.on_timeout()
    assert s.next_requests() == [(0, 0)]  # re-sent: two requests outstanding
    assert s.on_chunk(0, 0, data_for(0, 0)) is True  # the late first answer
    assert s.on_chunk(0, 0, data_for(0, 0)) is False  # answer to the re-send: ignored
    with pytest.raises(ProtocolError):
        s.on_chunk(0, 0, data_for(0, 0))  # a third answer nobody asked for


def test_timeouts_exhaust_retries():
    s = session(2, window=2, max_retries=1)
    s.next_requests()
    s.on_timeout()
    s.next_requests()
    s.on_timeout()
    assert s.failed and "timed out" in s.failed
    assert s.next_requests() == [] and not s.done


def test_server_error_fails_session():
    s = session(2)
    s.next_requests()
    s.on_error(0, 1, "source changed")
    assert s.failed and "source changed" in s.failed
    with pytest.raises(ProtocolError):
        session(2).on_error(0, 0, "never requested")
