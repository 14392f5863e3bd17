"""Job retention (retention.py) through the real core and a real SQLite file: old jobs go
a slice at a time, open ones never, and the file stays bounded under a stream of results."""

from __future__ import annotations

import os
import time

import pytest
from coretools import CoreHarness, jobs_in, run_steps

from director.protocol import messages as m
from director.server import retention as ret
from director.server.retention import Policy, Retention


@pytest.fixture
def h(tmp_path):
    harness = CoreHarness(tmp_path)
    yield harness
    harness.close()


def keep(h: CoreHarness, policy: Policy) -> None:
    h.core.retention = Retention(h.store, h.core.out, policy, h.now)


def submit_done(h: CoreHarness, key: str, line: str, status: str = "success") -> str:
    reply = h.op("jobs.submit", **run_steps(line))
    assert isinstance(reply, m.CtlReply) and reply.ok, reply
    [job] = jobs_in(h.pending)
    h.from_node(key, m.Result(job.job_id, status, rc=0, exec_time=0.01))
    h.tick(0.01)  # written
    return job.job_id


def stored_ids(h: CoreHarness) -> set[str]:
    return {r["id"] for r in h.store.recent(10_000)}


def settle(h: CoreHarness, seconds: float = ret.CHECK_EVERY + 1) -> None:
    h.tick(seconds)
    for _ in range(100):  # a pass runs a slice per loop turn, as the driver turns
        if not h.core.busy():
            return
        h.core.after_events(h.now)
    raise AssertionError("retention did not finish")


def test_only_the_newest_jobs_are_kept_and_an_open_one_never_goes(h):
    keep(h, Policy(max_age=None, max_jobs=3))
    key = h.accepted_node("web1")
    open_reply = h.op("jobs.submit", **run_steps("RUN sleep 600"))  # never answered
    open_id = open_reply.result["jobs"][0]
    done = [submit_done(h, key, f"RUN echo {i}") for i in range(8)]
    settle(h)
    assert stored_ids(h) == {open_id, *done[-3:]}
    assert h.store.table_counts() == (4, 4)
    assert h.ok("jobs.get", id=open_id)["status"] == "running"


def test_jobs_older_than_the_age_limit_go(h):
    keep(h, Policy(max_age=3600, max_jobs=None))
    key = h.accepted_node("web1")
    old = [submit_done(h, key, f"RUN echo old{i}") for i in range(3)]
    h.tick(1800)
    h.from_node(key, m.Heartbeat())
    young = [submit_done(h, key, "RUN echo young")]
    settle(h)
    assert stored_ids(h) == set(old + young)  # nothing is an hour old yet
    h.tick(1801)
    h.from_node(key, m.Heartbeat())
    settle(h)
    assert stored_ids(h) == set(young)


def test_purge_by_the_operator_is_answered_when_done(h):
    keep(h, Policy(max_age=None, max_jobs=None))  # nothing automatic
    key = h.accepted_node("web1")
    open_id = h.op("jobs.submit", **run_steps("RUN sleep 600")).result["jobs"][0]
    for i in range(5):
        submit_done(h, key, f"RUN echo {i}")
    assert purge(h, keep=2) == m.CtlReply(True, {"jobs": 3, "results": 3})
    assert open_id in stored_ids(h) and len(stored_ids(h)) == 3
    # everything finished goes; the open job stays
    assert purge(h, keep=0) == m.CtlReply(True, {"jobs": 2, "results": 2})
    assert stored_ids(h) == {open_id}


def purge(h: CoreHarness, **args) -> m.CtlReply:
    """The reply to jobs.purge: deferred, it comes on a later loop turn."""
    reply = h.op("jobs.purge", **args)
    for _ in range(50):
        if isinstance(reply, m.CtlReply):
            return reply
        h.core.after_events(h.now)
        replies = [m.decode(a.frames) for a in h.core.take() if hasattr(a, "rid")]
        reply = replies[-1] if replies else None
    raise AssertionError("no reply to jobs.purge")


@pytest.mark.parametrize("args", [{"keep": -1}, {"keep": "2"}, {"older_than": 0},
                                  {"older_than": True}, {"older_than": 1e300}])
def test_bad_purge_arguments_are_refused(h, args):
    reply = h.op("jobs.purge", **args)
    assert isinstance(reply, m.CtlReply) and not reply.ok
    assert "--keep" in reply.error or "--older-than" in reply.error


def test_a_job_with_many_results_goes_a_slice_at_a_time(tmp_path):
    h = CoreHarness(tmp_path)
    try:
        job = {"id": "j1", "orch": "o1", "lane": "l", "seq": 0, "verb": "RUN",
               "summary": "RUN true", "instruction": "{}", "hash_extra": "",
               "created": 1.0, "targets": "[]"}
        h.store.insert([job], [("j1", f"n{i}", f"n{i}", "success") for i in range(1200)])
        step = h.store.purge_step(0, 10, 0.0, set(), ret.SLICE)
        assert step[:2] == (0, ret.SLICE) and step[3] is True
        assert h.store.table_counts() == (1, 1200 - ret.SLICE)  # the job row stays meanwhile
        h.store.purge_step(0, 10, 0.0, set(), ret.SLICE)
        assert h.store.purge_step(0, 10, 0.0, set(), ret.SLICE)[:2] == (1, 200)
        assert h.store.table_counts() == (0, 0)
    finally:
        h.close()


def test_the_database_stays_bounded_under_a_stream_of_results(tmp_path):
    """100,000 results (2,000 jobs x 50 nodes), at most 20 jobs kept: the file stops
    growing once the first jobs are purged (freed pages are reused), and no step holds
    the loop.  ``RETENTION_RESULTS=1000000`` runs the million of BENCHMARKS.md."""
    total = int(os.environ.get("RETENTION_RESULTS", "100000"))
    h = CoreHarness(tmp_path)
    try:
        r = Retention(h.store, [], Policy(max_age=None, max_jobs=20), 0.0)
        path = tmp_path / "server.db"
        sizes, now, longest, began = [], 0.0, 0.0, time.perf_counter()
        for n in range(total // 50):
            jid = f"job{n:07d}"
            h.store.insert([{"id": jid, "orch": jid, "lane": "l", "seq": 0, "verb": "RUN",
                             "summary": "RUN true", "instruction": "{}", "hash_extra": "",
                             "created": now, "targets": "[]"}],
                           [(jid, f"k{i}", f"node{i}", "queued") for i in range(50)])
            h.store.update_results([{"job_id": jid, "node": f"k{i}", "status": "success",
                                     "rc": 0, "stdout": "hello world\n" * 4, "stderr": "",
                                     "cached": 0, "exec_time": 0.01, "roundtrip_time": 0.02,
                                     "transfer": None, "error": "", "sent": now,
                                     "finished": now} for i in range(50)])
            now += 0.5
            t0 = time.perf_counter()
            r.step(now, {})                      # one loop turn each
            longest = max(longest, time.perf_counter() - t0)
            if n % 100 == 99:
                sizes.append(os.path.getsize(path) + _wal(path))
        jobs, results = h.store.table_counts()
        print(f"\n{total} results in {time.perf_counter() - began:.1f} s; kept {jobs} jobs,"
              f" {results} results; file {sizes[4] / 1e6:.2f} MB after 25,000 results,"
              f" at most {max(sizes) / 1e6:.2f} MB, {sizes[-1] / 1e6:.2f} MB at the end;"
              f" longest retention step {longest * 1000:.1f} ms")
        assert jobs <= 20 + 60 and results <= jobs * 50   # the cap, plus one check's worth
        assert max(sizes[5:]) <= sizes[4] * 1.5, sizes     # bounded, not growing with n
        assert longest < 0.5
    finally:
        h.close()


def _wal(path) -> int:
    wal = path.with_name(path.name + "-wal")
    return os.path.getsize(wal) if wal.exists() else 0


def test_after_a_large_purge_the_file_is_given_back_a_slice_at_a_time(tmp_path):
    h = CoreHarness(tmp_path)
    try:
        assert h.store.jobs.incremental   # a new database: incremental auto-vacuum
        out: list = []
        r = Retention(h.store, out, Policy(max_age=None, max_jobs=None), 0.0)
        for n in range(200):
            jid = f"job{n:04d}"
            h.store.insert([{"id": jid, "orch": jid, "lane": "l", "seq": 0, "verb": "RUN",
                             "summary": "RUN true", "instruction": "{}", "hash_extra": "",
                             "created": 0.0, "targets": "[]"}],
                           [(jid, f"k{i}", f"node{i}", "success") for i in range(50)])
            h.store.state.conn.execute("UPDATE results SET stdout=? WHERE job_id=?",
                                       ("x" * 2000, jid))
        pages = lambda: h.store.state.conn.execute("PRAGMA page_count").fetchone()[0]
        full = pages()
        assert full > 5000
        r.request(b"op", {"keep": 0})
        turns = 0
        while True:
            r.step(1.0, {})
            turns += 1
            if not r.busy():
                break
            assert turns < 1000
        assert out and h.store.table_counts() == (0, 0)
        assert pages() < full / 4   # given back, 256 pages per turn
        assert turns > 20 + full // 256 // 2   # ... over many turns, never at once
    finally:
        h.close()
