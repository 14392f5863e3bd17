"""What keeps one server loop iteration short at thousands of nodes (issue 12): result
rows written against a time budget, garbage collection scheduled, and the longest
iteration reported with where it spent its time."""

from __future__ import annotations

import gc

import pytest
from coretools import CoreHarness, jobs_in, sent, submit

from director.protocol import messages as m
from director.server import jobstore, jobwrites
from director.server.core import LoopStats
from director.server.daemon import GcClock


@pytest.fixture
def h(tmp_path):
    harness = CoreHarness(tmp_path, max_pending=500)
    yield harness
    harness.close()


def _results_of(h: CoreHarness, key: str, route: bytes, jobs: list) -> list:
    out = []
    for i in range(0, len(jobs), 64):
        out += h.from_node(key, m.Results(tuple(m.Result(j.job_id, "success", rc=0)
                                                for j in jobs[i:i + 64])), route)
    return out


def _statuses(h: CoreHarness) -> dict[str, str]:
    rows = h.store.state.conn.execute("SELECT job_id, status FROM results").fetchall()
    return {r[0]: r[1] for r in rows}


def test_a_budgeted_write_stops_after_the_slice_that_spent_it(h):
    key = h.accepted_node("web1")
    submit(h, *["RUN true"] * 450)
    h.tick()
    jobs = sorted(_statuses(h))
    assert len(jobs) == 450
    rows = [{"job_id": j, "node": key, "status": "success", "rc": 0, "stdout": "",
             "stderr": "", "cached": 0, "exec_time": 0.1, "roundtrip_time": 0.2,
             "transfer": None, "error": "", "sent": h.now, "finished": h.now} for j in jobs]
    written = h.store.update_results(rows, 0.0)  # spent at once: one slice only
    assert written == jobstore.WRITE_SLICE
    status = _statuses(h)
    assert [status[j] for j in jobs].count("success") == jobstore.WRITE_SLICE
    assert all(status[j] == "success" for j in jobs[:written])
    assert h.store.update_results(rows[written:]) == len(jobs) - written  # no budget: all
    assert set(_statuses(h).values()) == {"success"}


def test_a_task_knows_its_rows_rowid_and_a_row_that_moved_is_found_by_job_and_node(h):
    key = h.accepted_node("web1")
    _, jobs = submit(h, "RUN a", "RUN b", "RUN c")
    conn = h.store.state.conn
    stored = dict(conn.execute("SELECT job_id, rowid FROM results").fetchall())
    assert {t.job_id: t.row for t in h.core.jobs.sched.inflight(key)} == stored
    assert len(set(stored.values())) == 3 and all(stored.values())
    moved = jobs[1].job_id  # its rowid changes under the server (as a VACUUM may)
    conn.execute("UPDATE results SET rowid = rowid + 1000 WHERE job_id = ?", (moved,))
    _results_of(h, key, b"route-web1", jobs)
    h.tick(1.0)
    assert _statuses(h) == {j.job_id: "success" for j in jobs}
    assert conn.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 3


def test_rows_left_by_a_spent_budget_are_written_later_and_acked_only_then(h, monkeypatch):
    """A result is acked once its row is committed: rows a slice left for the next turn
    are acked on that turn, none before, none twice."""
    monkeypatch.setattr(jobwrites, "WRITE_BUDGET", 0.0)
    monkeypatch.setattr(jobstore, "WRITE_SLICE", 16)
    key = h.accepted_node("web1")
    _, jobs = submit(h, *["RUN true"] * 450)
    h.tick()
    answered: list[str] = []
    acked: list[str] = []
    left_over = 0
    for _ in range(200):  # bounded: the node answers what it was sent, the server writes
        if not jobs and not h.core.jobs.dirty:
            break
        out = _results_of(h, key, b"route-web1", jobs)
        answered += [j.job_id for j in jobs]
        out += h.tick()
        jobs = jobs_in(out)
        acks = [i for msg in sent(out) if isinstance(msg, m.Ack) for i in msg.job_ids]
        assert set(acks) <= set(answered) - set(acked)  # never before, never twice
        acked += acks
        left_over = max(left_over, len(h.core.jobs.dirty))
    assert left_over > 0  # a slice did leave rows for a later turn
    assert len(answered) == 450 and sorted(acked) == sorted(answered)
    assert not h.core.jobs.dirty
    assert set(_statuses(h).values()) == {"success"}


def test_the_longest_iteration_says_where_its_time_went():
    stats = LoopStats()
    stats.took(0.004, (("nodes", 0.003), ("after", 0.0005)))
    stats.took(0.120, (("nodes", 0.020), ("tick", 0.080), ("gc", 0.015)))
    stats.took(0.010, (("nodes", 0.010),))
    doc = stats.doc(reset=True)
    assert doc["longest_recent_ms"] == 120.0 and doc["slow_iterations"] == 1
    assert doc["longest_recent_stages_ms"] == {"nodes": 20.0, "tick": 80.0, "gc": 15.0}
    again = stats.doc(reset=False)
    assert again["longest_recent_ms"] == 0.0 and again["longest_recent_stages_ms"] == {}
    assert again["longest_ms"] == 120.0


def test_full_collections_wait_for_an_idle_tick_or_their_deadline():
    """Start-up objects are frozen, automatic full collections are off, and the tick
    runs one when nothing is in flight (or when one is overdue); stopping puts the
    interpreter's settings back."""
    before = gc.get_threshold()
    clock = GcClock()
    try:
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold()[2] >= 1_000_000
        full = []
        gc.callbacks.append(lambda phase, info: phase == "stop" and info["generation"] == 2
                            and full.append(1))
        try:
            t0 = clock._last_full
            clock.full(idle=True, mono=t0 + 1.0)                # idle, but one just ran
            clock.full(idle=False, mono=t0 + GcClock.IDLE_EVERY + 1)   # busy: waits
            assert full == []
            clock.full(idle=True, mono=t0 + GcClock.IDLE_EVERY + 1)
            assert full == [1]
            t1 = clock._last_full
            clock.full(idle=False, mono=t1 + GcClock.FULL_EVERY + 1)   # overdue: runs
            assert full == [1, 1]
        finally:
            gc.callbacks.pop()
        clock.spent = 0.0
        gc.collect(0)
        assert clock.spent > 0.0  # collections are timed into the iteration
    finally:
        clock.stop()
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


def test_the_loop_never_waits_for_a_checkpoint_to_write_results(h):
    """While the WAL is being copied back (the checkpointer holds the store's lock) a
    slice of result rows writes nothing and returns at once: the rows stay in memory,
    unacked, and go in on a later turn."""
    key = h.accepted_node("web1")
    _, jobs = submit(h, "RUN true", "RUN true")
    h.tick()
    for j in jobs:
        h.from_node(key, m.Result(j.job_id, "success", rc=0), b"route-web1")
    book = h.core.jobs
    with h.store.lock:  # as the checkpointer holds it
        assert book.flush(1000) is False
        assert len(book.dirty) == 2 and not book.to_ack
    assert book.flush(1000) is True
    acked = [i for msg in sent(h.core.take()) if isinstance(msg, m.Ack) for i in msg.job_ids]
    assert sorted(acked) == sorted(j.job_id for j in jobs)
    assert set(_statuses(h).values()) == {"success"}
