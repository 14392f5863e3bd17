"""Tests for director.server.scheduler: per-node lanes, the window in flight, final states."""

from __future__ import annotations

from director.server.scheduler import FINAL, Scheduler, Task


def task(job: str, node: str = "n1", lane: str = "o.0", seq: int = 0, timeout: float = 600.0,
         queued_at: float = 100.0, **kw) -> Task:
    return Task(job, node, lane, seq, timeout, queued_at=queued_at, **kw)


def ids(tasks) -> list[str]:
    return [t.job_id for t in tasks]


def test_take_unknown_node_is_empty():
    s = Scheduler()
    assert s.take("nobody", 1.0) == []
    assert not s.has_work("nobody")
    assert s.nodes() == []


def test_take_marks_running_and_records_sent_at():
    s = Scheduler()
    t = task("j1")
    s.add(t)
    assert s.has_work("n1")
    out = s.take("n1", 123.0)
    assert out == [t]
    assert t.status == "running" and t.sent_at == 123.0
    assert s.has_work("n1")  # still in flight
    assert s.take("n1", 124.0) == []  # nothing left to send


def test_window_limits_tasks_in_flight():
    s = Scheduler(window=3)
    for i in range(5):
        s.add(task(f"j{i}", seq=i))
    assert ids(s.take("n1", 1.0)) == ["j0", "j1", "j2"]
    assert s.take("n1", 1.0) == []  # window full
    assert s.complete("n1", "j0", "success") is not None
    assert ids(s.take("n1", 2.0)) == ["j3"]  # one slot freed
    assert s.take("n1", 2.0) == []
    s.complete("n1", "j1", "success")
    s.complete("n1", "j2", "success")
    assert ids(s.take("n1", 3.0)) == ["j4"]
    s.complete("n1", "j3", "success")
    s.complete("n1", "j4", "success")
    assert not s.has_work("n1")


def test_window_refills_in_batches_of_half():
    """One answer does not send one job: the node gets a batch once half the window is
    free, so it takes many jobs per wake-up."""
    s = Scheduler(window=8)
    for i in range(20):
        s.add(task(f"j{i}", seq=i))
    assert len(s.take("n1", 1.0)) == 8
    for i in range(3):
        s.complete("n1", f"j{i}", "success")
        assert s.take("n1", 2.0) == []  # 3 of 8 free: not yet
    s.complete("n1", "j3", "success")
    assert ids(s.take("n1", 3.0)) == ["j8", "j9", "j10", "j11"]


def test_idle_node_is_sent_work_at_once():
    s = Scheduler(window=8)
    for i in range(10):
        s.add(task(f"j{i}", seq=i))
    s.take("n1", 1.0)
    for i in range(8):
        s.complete("n1", f"j{i}", "success")
    assert ids(s.take("n1", 2.0)) == ["j8", "j9"]


def test_lane_order_is_kept_and_lanes_interleave():
    s = Scheduler(window=10)
    for i in range(3):
        s.add(task(f"a{i}", lane="o.0", seq=i))
    for i in range(2):
        s.add(task(f"b{i}", lane="o.1", seq=10 + i))
    out = ids(s.take("n1", 1.0))
    assert sorted(out) == ["a0", "a1", "a2", "b0", "b1"]
    # Within a lane the order is submission order.
    assert [j for j in out if j.startswith("a")] == ["a0", "a1", "a2"]
    assert [j for j in out if j.startswith("b")] == ["b0", "b1"]
    # Lanes are served round-robin, so an async lane is not starved behind a long one.
    assert out[:2] == ["a0", "b0"]


def test_window_one_round_robin_keeps_lane_order():
    s = Scheduler(window=1)
    for i in range(3):
        s.add(task(f"a{i}", lane="L", seq=i))
    seen = []
    for step in range(3):
        got = s.take("n1", float(step))
        assert len(got) == 1
        seen.append(got[0].job_id)
        s.complete("n1", got[0].job_id, "success")
    assert seen == ["a0", "a1", "a2"]


def test_nodes_are_independent():
    s = Scheduler(window=1)
    s.add(task("j", node="n1"))
    s.add(task("j", node="n2"))  # the same job on two nodes
    assert ids(s.take("n1", 1.0)) == ["j"]
    assert ids(s.take("n2", 1.0)) == ["j"]
    assert sorted(s.nodes()) == ["n1", "n2"]
    assert s.complete("n1", "j", "success").node == "n1"
    assert s.complete("n2", "j", "failed").status == "failed"


def test_complete_refuses_job_not_sent_to_that_node():
    s = Scheduler()
    s.add(task("j1", node="n1"))
    s.add(task("j2", node="n2"))
    s.take("n1", 1.0)
    assert s.complete("n2", "j1", "success") is None  # n2 never got j1
    assert s.complete("ghost", "j1", "success") is None  # unknown node
    assert s.complete("n1", "nope", "success") is None  # unknown job


def test_complete_refuses_a_queued_job_not_yet_sent():
    s = Scheduler()
    s.add(task("j1"))
    assert s.complete("n1", "j1", "success") is None
    assert ids(s.take("n1", 1.0)) == ["j1"]  # still queued, still sent later


def test_complete_refuses_a_second_answer():
    s = Scheduler()
    s.add(task("j1"))
    s.take("n1", 1.0)
    first = s.complete("n1", "j1", "failed")
    assert first is not None and first.status == "failed"
    assert s.complete("n1", "j1", "success") is None
    assert first.status == "failed"  # the second answer changed nothing


def test_cancel_lane_cancels_only_unsent_rest_of_that_lane():
    s = Scheduler(window=2)
    for i in range(4):
        s.add(task(f"a{i}", lane="A", seq=i))
    s.add(task("b0", lane="B", seq=10))
    sent = ids(s.take("n1", 1.0))
    assert sent == ["a0", "b0"]
    s.complete("n1", "a0", "failed")
    cancelled = s.cancel_lane("n1", "A")
    assert ids(cancelled) == ["a1", "a2", "a3"]
    assert all(t.status == "cancelled" for t in cancelled)
    # Lane B is untouched and still in flight; nothing of A is sent any more.
    assert s.take("n1", 2.0) == []
    assert s.complete("n1", "b0", "success") is not None
    assert not s.has_work("n1")


def test_cancel_lane_unknown_is_harmless():
    s = Scheduler()
    assert s.cancel_lane("n1", "A") == []
    s.add(task("a0", lane="A"))
    assert s.cancel_lane("n1", "other") == []
    assert s.cancel_lane("n2", "A") == []
    assert ids(s.take("n1", 1.0)) == ["a0"]


def test_drop_node_ends_queued_and_inflight_as_lost():
    s = Scheduler(window=1)
    s.add(task("j1"))
    s.add(task("j2"))
    s.add(task("k1", node="n2"))
    s.take("n1", 1.0)
    dropped = s.drop_node("n1")
    assert sorted(ids(dropped)) == ["j1", "j2"]
    assert all(t.status == "lost" for t in dropped)
    assert not s.has_work("n1")
    assert s.complete("n1", "j1", "success") is None  # a late answer is refused
    assert s.drop_node("n1") == []
    assert s.has_work("n2")  # other nodes untouched


def test_drop_node_custom_status():
    s = Scheduler()
    s.add(task("j1"))
    assert [t.status for t in s.drop_node("n1", "cancelled")] == ["cancelled"]


def test_overdue_only_in_flight_tasks_past_timeout_plus_grace():
    s = Scheduler()
    s.add(task("short", timeout=1.0))
    s.add(task("long", timeout=100.0))
    s.add(task("queued", node="n2", timeout=1.0))  # never sent: not overdue
    s.take("n1", 10.0)
    assert s.overdue(10.0 + 1.0 + 5.0, grace=5.0) == []  # exactly at the limit: not yet
    late = s.overdue(10.0 + 1.0 + 5.1, grace=5.0)
    assert ids(late) == ["short"] and late[0].status == "lost"
    assert s.complete("n1", "short", "success") is None  # no longer in flight
    assert s.overdue(1000.0, grace=5.0)[0].job_id == "long"
    assert s.has_work("n2")


def test_reloaded_running_task_is_in_flight_not_resent():
    s = Scheduler()
    s.add(task("j1", status="running", sent_at=5.0))
    assert s.take("n1", 6.0) == []
    assert s.has_work("n1")
    assert s.complete("n1", "j1", "success") is not None


def test_queued_since_is_oldest_waiting_task():
    s = Scheduler(window=1)
    assert s.queued_since("n1") is None
    s.add(task("a", lane="A", queued_at=50.0))
    s.add(task("b", lane="B", queued_at=40.0))
    s.add(task("c", lane="A", queued_at=60.0))
    assert s.queued_since("n1") == 40.0
    s.take("n1", 70.0)  # sends "a" (lane A first)
    assert s.queued_since("n1") == 40.0


def test_queued_since_counts_tasks_in_flight():
    # After a server restart, in-flight tasks are reloaded; if their node never returns
    # the server must still be able to end them (it asks queued_since for offline nodes).
    s = Scheduler()
    s.add(task("r", status="running", sent_at=1.0, queued_at=500.0))
    assert s.queued_since("n1") == 500.0
    s.add(task("q", queued_at=600.0))
    assert s.queued_since("n1") == 500.0
    s.complete("n1", "r", "success")
    assert s.queued_since("n1") == 600.0
    s.take("n1", 700.0)
    assert s.queued_since("n1") == 600.0
    s.complete("n1", "q", "success")
    assert s.queued_since("n1") is None


def test_final_statuses():
    assert FINAL == {"success", "failed", "timeout", "lost", "cancelled"}
