"""``director analyze``'s numbers (analyze.py) from stored rows: a pure function, fed rows
as the store gives them, and once through the real core and SQLite."""

from __future__ import annotations

import pytest
from coretools import CoreHarness, jobs_in, run_steps

from director.errors import DirectorError
from director.protocol import messages as m
from director.server.analyze import analyze, stats


def row(job, name, status="success", exec_time=1.0, trip=1.5, sent=10.0, finished=12.0,
        created=9.0, seq=0):
    return (job, name, status, exec_time, trip, sent, finished, created, f"RUN {job}", seq)


def test_stats_nearest_rank_p95_and_median():
    s = stats([float(i) for i in range(1, 101)])
    assert (s["count"], s["total"], s["mean"], s["median"], s["p95"], s["min"], s["max"]) \
        == (100, 5050.0, 50.5, 50.5, 95.0, 1.0, 100.0)
    assert stats([3.0])["p95"] == 3.0 and stats([])["mean"] is None


def test_an_orchestration_of_two_jobs_on_two_nodes():
    rows = [row("a", "web1", exec_time=1.0, trip=1.2, sent=10.0, finished=11.2, seq=0),
            row("a", "web2", exec_time=3.0, trip=3.5, sent=10.5, finished=14.0, seq=0),
            row("b", "web1", exec_time=0.5, trip=0.6, sent=11.2, finished=11.8, seq=1),
            row("b", "web2", "failed", exec_time=0.25, trip=0.5, sent=14.0, finished=14.5,
                seq=1)]
    doc = analyze("o1", "orchestration", rows, now=100.0)
    assert doc["id"] == "o1" and doc["running"] is False
    assert doc["wall_time"] == doc["actual_runtime"] == 14.5 - 9.0
    assert doc["exec_time_total"] == doc["combined_execution_time"] == 4.75
    assert doc["queue_wait_total"] == (1.0 + 1.5 + 2.2 + 5.0)
    assert doc["roundtrip_time_total"] == 5.8 and doc["overhead_total"] == 1.05
    assert doc["total_jobs"] == 2 and doc["total_node_count"] == 2 and doc["total_tasks"] == 4
    assert (doc["total_successes"], doc["total_failures"]) == (3, 1)
    assert doc["total_avg_execution_time"] == 4.75 / 2
    assert doc["exec_time"]["median"] == 0.75 and doc["exec_time"]["max"] == 3.0
    assert doc["slowest_node"] == {"name": "web2", "exec_time": 3.25}
    assert doc["fastest_node"] == {"name": "web1", "exec_time": 1.5}
    assert doc["slowest_node_execution"] == "web2" and doc["fastest_node_execution"] == "web1"
    assert doc["slowest_node_roundtrip"] == "web2" and doc["fastest_node_roundtrip"] == "web1"
    assert doc["slowest_job"] == {"id": "a", "summary": "RUN a", "exec_time": 3.0,
                                  "node": "web2"}
    assert doc["fastest_job"]["id"] == "b"
    assert [j["id"] for j in doc["jobs"]] == ["a", "b"]
    assert doc["jobs"][1]["status"] == "failed" and doc["jobs"][0]["wall_time"] == 5.0
    assert doc["nodes"]["web2"]["failed"] == 1 and doc["nodes"]["web1"]["success"] == 2
    assert doc["nodes"]["web1"]["queue_wait"] == 1.0 + 2.2


def test_open_and_unsent_tasks_count_but_have_no_times():
    rows = [row("a", "web1", exec_time=2.0),
            row("a", "web2", "queued", exec_time=None, trip=None, sent=None, finished=None)]
    doc = analyze("a", "job", rows, now=20.0)
    assert doc["running"] is True and doc["wall_time"] == 11.0   # still going: until now
    assert doc["exec_time"]["count"] == 1 and doc["queue_wait"]["count"] == 1
    assert doc["counts"] == {"success": 1, "queued": 1}
    assert doc["jobs"][0]["status"] == "running"
    with pytest.raises(DirectorError):
        analyze("x", "job", [], now=1.0)


def test_through_the_core_the_numbers_are_the_stored_ones(tmp_path):
    h = CoreHarness(tmp_path)
    try:
        key = h.accepted_node("web1")
        reply = h.op("jobs.submit", **run_steps("RUN echo a", "RUN echo b"))
        jobs = jobs_in(h.pending)
        h.now += 2.0
        for job, took in zip(jobs, (0.5, 1.25)):
            h.from_node(key, m.Result(job.job_id, "success", rc=0, exec_time=took))
        doc = h.ok("jobs.analyze", id="last")
        assert doc["id"] == reply.result["orch"] and doc["kind"] == "orchestration"
        assert doc["exec_time_total"] == 1.75 and doc["wall_time"] == 2.0
        assert doc["nodes"]["web1"]["tasks"] == 2
        one = h.ok("jobs.analyze", id=jobs[1].job_id)
        assert one["kind"] == "job" and one["exec_time_total"] == 1.25
        bad = h.op("jobs.analyze", id="nope")
        assert not bad.ok and "no job or orchestration" in bad.error
    finally:
        h.close()
