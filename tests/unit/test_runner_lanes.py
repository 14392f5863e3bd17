"""The node's JobRunner: lanes run in order and a failure stops the rest of its lane.

A fake agent stands in for the network; the jobs really run (/bin/sh), so these are
quick but real.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from director.client import runner as runner_module
from director.client.runner import JobRunner
from director.jobs.dsl import parse_line
from director.protocol.frames import Message
from procs import live_in_group


class FakeAgent:
    def __init__(self, home: Path):
        self.home = home
        self.sent: list[tuple[str, dict]] = []
        self.batches: list[int] = []

    def send(self, mtype: str, payload: tuple[bytes, ...] = (), **body) -> bool:
        if mtype == "RESULTS":  # a batch: record its results one by one
            self.batches.append(len(body["results"]))
            self.sent.extend(("RESULT", b) for b in body["results"])
        else:
            self.sent.append((mtype, body))
        return True


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
        drive(r, 0.02)
    return {b["job_id"]: b for t, b in r.agent.sent if t == "RESULT"}


def drive(r: JobRunner, seconds: float) -> None:
    """One turn of an event loop, as the agent's: readable fds, then the clock."""
    left = max(0.0, min(seconds, r.next_deadline() - time.monotonic()))
    r.handle(r.watcher.poll(left))
    r.tick()
    r.flush_results()


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
    _results(runner, 2)
    assert [b["status"] for t, b in runner.agent.sent if t == "RESULT"] == ["success"] * 2
    _results(runner, 3, timeout=0.3)
    assert marker.read_text() == "x\n"


# -- the event loop: processes watched, not waited for --------------------------------------
def test_lanes_overlap(runner):
    start = time.monotonic()
    for lane in ("A", "B", "C"):
        _job(runner, f"{lane}1", "RUN sleep 0.5", lane=lane)
    res = _results(runner, 3)
    took = time.monotonic() - start
    assert [res[f"{x}1"]["status"] for x in "ABC"] == ["success"] * 3
    assert took < 1.2, f"three 0.5 s jobs in separate lanes took {took:.2f} s: not side by side"


def test_process_slots_bound_parallel_lanes(runner, monkeypatch, tmp_path):
    monkeypatch.setattr(runner_module, "MAX_PROCESSES", 2)
    log = tmp_path / "log"
    for lane in "ABCD":  # each job notes how many others are running when it starts
        _job(runner, lane, f"RUN echo start >> {log}; sleep 0.3; echo end >> {log}", lane=lane)
    res = _results(runner, 4)
    assert {b["status"] for b in res.values()} == {"success"}
    running = peak = 0
    for word in log.read_text().split():
        running += 1 if word == "start" else -1
        peak = max(peak, running)
    assert peak == 2


def test_arg_then_run_in_one_lane(runner):
    _job(runner, "j1", "ARG WHO=world", seq=1)
    _job(runner, "j2", "RUN echo hello ${WHO}", seq=2)
    res = _results(runner, 2)
    assert res["j1"]["status"] == "success"
    assert res["j2"]["stdout"] == "hello world\n"


def test_timeout_in_the_loop_kills_the_group(runner):
    start = time.monotonic()
    _job(runner, "t1", "RUN --timeout 0.3 sleep 30")
    res = _results(runner, 1)
    assert res["t1"]["status"] == "timeout" and "process group killed" in res["t1"]["error"]
    assert time.monotonic() - start < 5


def test_large_output_is_read_whole_across_wakeups(runner):
    _job(runner, "big", "RUN head -c 300000 /dev/zero | tr '\\0' x; printf err >&2")
    res = _results(runner, 1)
    assert res["big"]["status"] == "success"
    assert res["big"]["stdout"] == "x" * 300000 and res["big"]["stderr"] == "err"


def test_copy_runs_on_a_worker_and_reports_through_the_loop(runner):
    """No manifest in the job: the COPY worker fails it, and the result still comes back
    through the wake-up pipe and stops its lane."""
    _job(runner, "c1", "COPY a.txt /tmp/x/", lane="L", seq=1)
    _job(runner, "c2", "RUN true", lane="L", seq=2)
    res = _results(runner, 2)
    assert res["c1"]["status"] == "failed" and "manifest" in res["c1"]["error"]
    assert res["c2"]["status"] == "cancelled"


def test_close_kills_running_processes(tmp_path):
    agent = FakeAgent(tmp_path)
    r = JobRunner(agent)
    _job(r, "s1", "RUN sleep 30 & echo $!; wait")
    drive(r, 0.3)
    pids = [run.proc.pid for run in r.running]
    assert len(pids) == 1
    assert r.close()
    assert r.running == [] and r.procs == {}
    deadline = time.monotonic() + 5
    while live_in_group(pids[0]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not live_in_group(pids[0]), "a job process survived close()"



def test_results_of_a_stream_share_messages_and_a_lone_one_goes_at_once(runner):
    for i in range(30):
        _job(runner, f"s{i}", "RUN true", seq=i)
    res = _results(runner, 30)
    assert {b["status"] for b in res.values()} == {"success"}
    assert runner.agent.batches, "30 short jobs in a row were reported one message each"
    sent = len(runner.agent.sent)
    _job(runner, "lone", "RUN true", lane="other")
    deadline = time.monotonic() + 5
    while len(runner.agent.sent) == sent and time.monotonic() < deadline:
        drive(runner, 0.05)
    assert runner.agent.sent[-1][1]["job_id"] == "lone"


def test_output_of_a_background_child_after_the_shell_exits_is_kept(runner):
    """The shell exits first (its pidfd fires) while a child it started still writes:
    the job ends when the pipes close, with all the output."""
    _job(runner, "bg", "RUN (sleep 0.3; echo late) & echo early")
    res = _results(runner, 1)
    assert res["bg"]["status"] == "success"
    assert res["bg"]["stdout"] == "early\nlate\n"
