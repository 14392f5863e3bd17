"""The node's JobRunner: lanes run in order and a failure stops the rest of its lane.

A fake agent stands in for the network; the jobs really run (/bin/sh), so these are
quick but real.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from director.client.runner import JobRunner
from director.jobs.dsl import parse_line
from director.protocol.frames import Message


class FakeAgent:
    def __init__(self, home: Path):
        self.home = home
        self.sent: list[tuple[str, dict]] = []

    def send(self, mtype: str, payload: tuple[bytes, ...] = (), **body) -> bool:
        self.sent.append((mtype, body))
        return True

    worker_send = send


@pytest.fixture
def runner(tmp_path):
    agent = FakeAgent(tmp_path)
    r = JobRunner(agent)
    yield r
    r.close()


def _job(r: JobRunner, job_id: str, line: str, lane: str = "o.0", seq: int = 1) -> None:
    r.on_message(Message("JOB", {"job_id": job_id, "instruction": parse_line(line).to_dict(),
                                 "lane": lane, "seq": seq}))


def _results(r: JobRunner, count: int, timeout: float = 10.0) -> dict[str, dict]:
    """Drive the runner until ``count`` RESULTs were sent; {job_id: body}."""
    deadline = time.monotonic() + timeout
    while len(r.agent.sent) < count and time.monotonic() < deadline:
        time.sleep(0.02)  # workers report on their own (FakeAgent.worker_send)
    return {b["job_id"]: b for t, b in r.agent.sent if t == "RESULT"}


def test_lane_runs_in_order(runner, tmp_path):
    out = tmp_path / "order"
    for i in range(5):
        _job(runner, f"j{i}", f"RUN echo {i} >> {out}", seq=i)
    res = _results(runner, 5)
    assert [res[f"j{i}"]["status"] for i in range(5)] == ["success"] * 5
    assert out.read_text().split() == ["0", "1", "2", "3", "4"]


def test_failure_cancels_the_queued_rest_of_its_lane_only(runner, tmp_path):
    _job(runner, "a1", "RUN sleep 0.2; exit 1", lane="A")
    _job(runner, "a2", f"RUN touch {tmp_path}/a2", lane="A")
    _job(runner, "b1", f"RUN touch {tmp_path}/b1", lane="B")
    res = _results(runner, 3)
    assert res["a1"]["status"] == "failed" and res["a1"]["rc"] == 1
    assert res["a2"]["status"] == "cancelled"
    assert res["b1"]["status"] == "success"
    assert not (tmp_path / "a2").exists() and (tmp_path / "b1").exists()


def test_duplicate_job_id_is_ignored(runner):
    _job(runner, "j1", "RUN sleep 0.2")
    _job(runner, "j1", "RUN sleep 0.2")
    res = _results(runner, 2, timeout=0.8)
    assert list(res) == ["j1"] and len(runner.agent.sent) == 1


def test_job_arriving_after_its_lane_failed_is_cancelled(runner, tmp_path):
    _job(runner, "j1", "RUN exit 1")
    assert _results(runner, 1)["j1"]["status"] == "failed"
    _job(runner, "j2", f"RUN touch {tmp_path}/ran", seq=2)  # still in flight from the server
    res = _results(runner, 2)
    assert res["j2"]["status"] == "cancelled"
    assert not (tmp_path / "ran").exists()


def test_resent_job_that_already_ran_is_answered_not_rerun(runner, tmp_path):
    """After a reconnect the server resends what it thinks is in flight: a job that
    already ran is answered again from memory and never runs twice."""
    marker = tmp_path / "runs"
    _job(runner, "j1", f"RUN echo x >> {marker}")
    assert _results(runner, 1)["j1"]["status"] == "success"
    _job(runner, "j1", f"RUN echo x >> {marker}")  # the resend
    assert [b["status"] for t, b in runner.agent.sent if t == "RESULT"] == ["success"] * 2
    time.sleep(0.3)
    assert marker.read_text() == "x\n"
