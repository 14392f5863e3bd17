"""An orchestration as one thing (orchviews.py, orchstore.py, the waiter's progress), through
the real core and SQLite: summary, listing entries, queue wait, offline tasks."""

from __future__ import annotations

from coretools import CoreHarness, jobs_in, run_steps

from director.protocol import messages as m
from director.protocol.control import CtlEvent
from director.server.waiters import Waiter


def _events(actions: list) -> list:
    return [msg for msg in (m.decode(a.frames) for a in actions if hasattr(a, "frames"))
            if isinstance(msg, CtlEvent)]


def test_summary_counts_per_node_and_names_the_first_failure(tmp_path):
    h = CoreHarness(tmp_path)
    try:
        web1, web2 = h.accepted_node("web1"), h.accepted_node("web2")
        sub = h.ok("jobs.submit", **run_steps("RUN a", "RUN b", "RUN c"), label="site.yaml")
        assert len(jobs_in(h.pending)) == 6  # 3 jobs to each node, all in their windows
        h.now += 1.5
        ids = sub["jobs"]
        for job_id in ids:
            h.from_node(web1, m.Result(job_id, "success", rc=0, exec_time=0.1))
        h.from_node(web2, m.Result(ids[0], "success", rc=0, exec_time=0.1))
        h.now += 1.0
        h.from_node(web2, m.Result(ids[1], "failed", rc=3, exec_time=0.2,
                                   stderr="".join(f"line {i}\n" for i in range(9))))
        h.from_node(web2, m.Result(ids[2], "cancelled", error="an earlier job failed"))
        doc = h.ok("jobs.get", id=sub["orch"], orchestration=True)
        assert doc["kind"] == "orchestration" and doc["id"] == sub["orch"]
        assert doc["name"] == "site.yaml" and doc["job_count"] == 3 and doc["node_count"] == 2
        assert doc["status"] == "failed" and doc["running"] is False
        assert doc["nodes"]["web1"]["counts"] == {"success": 3}
        assert doc["nodes"]["web2"]["counts"] == {"success": 1, "failed": 1, "cancelled": 1}
        assert doc["counts"] == {"success": 4, "failed": 1, "cancelled": 1}
        assert doc["jobs"] == ids and doc["duration"] == 2.5
        f = doc["first_failure"]
        assert (f["job"], f["node"], f["status"], f["rc"]) == (ids[1], "web2", "failed", 3)
        assert f["stderr_tail"] == [f"line {i}" for i in range(4, 9)]
        # 'last' is that orchestration; a job of it is still shown as a job
        assert h.ok("jobs.get", id="last", orchestration=True)["kind"] == "orchestration"
        one = h.ok("jobs.get", id=ids[1], orchestration=True)
        assert "kind" not in one and one["results"]["web2"]["status"] == "failed"
        assert one["results"]["web2"]["queue_wait"] == 0.0  # sent at once
        every = h.ok("jobs.get", id=sub["orch"], orchestration=True, all=True)
        assert [d["id"] for d in every] == ids
        # jobs.list grouped: the orchestration is one entry, a single job another
        single = h.ok("jobs.submit", **run_steps("RUN d"))
        h.from_node(web1, m.Result(single["jobs"][0], "success", rc=0))
        h.from_node(web2, m.Result(single["jobs"][0], "success", rc=0))
        entries = h.ok("jobs.list", limit=20, grouped=True)
        assert [(e["kind"], e["id"]) for e in entries] == [
            ("job", single["jobs"][0]), ("orchestration", sub["orch"])]
        assert entries[1]["job_count"] == 3 and entries[1]["counts"]["failed"] == 1
        assert h.ok("jobs.get", id="last", orchestration=True)["id"] == single["jobs"][0]
        assert len(h.ok("jobs.list", limit=20)) == 4  # ungrouped: every job, as before
        assert h.ok("jobs.list", limit=1, grouped=True)[0]["id"] == single["jobs"][0]
        bad = h.op("jobs.get", id="nope", orchestration=True)
        assert not bad.ok and "no job or orchestration 'nope'" in bad.error
    finally:
        h.close()


def test_progress_tells_running_from_queued_and_offline_nodes(tmp_path):
    h = CoreHarness(tmp_path, expiry=3.0)
    try:
        web1 = h.accepted_node("web1")
        h.accepted_node("web2")  # says nothing more: offline past its expiry
        h.now += 2.0
        h.from_node(web1, m.Heartbeat())
        h.now += 2.0
        h.from_node(web1, m.Heartbeat())  # web2 silent past its expiry: offline
        h.tick(0.01)
        args = run_steps("RUN a", "RUN b", targets=["web1", "web2"], wait=True)
        args["allow_offline"] = True
        h.op("jobs.submit", **args)
        events = _events(h.tick(0.3))
        progress = [e.data for e in events if e.event == "progress"][-1]
        assert progress["running"] == 2 and progress["queued_offline"] == 2
        assert progress["queued"] == 0 and progress["nodes_left"] == 2
        assert progress["waiting_on"] == ["web2", "web1"]  # offline first
        orch = h.ok("jobs.get", id="last", orchestration=True)
        assert orch["nodes"]["web2"]["offline"] is True
        job = h.ok("jobs.get", id=orch["jobs"][0], orchestration=True)
        assert job["results"]["web2"].get("offline") is True
        assert "offline" not in job["results"]["web1"]
    finally:
        h.close()


def test_waiter_counts_what_is_left_per_node():
    jobs = [{"id": j, "orch": "o", "lane": "o.0", "seq": 1, "verb": "RUN", "summary": j,
             "instruction": "{}", "hash_extra": "", "created": 1.0, "targets": '["a","b"]'}
            for j in ("j1", "j2")]
    w = Waiter(b"r", jobs, {"ka": "a", "kb": "b"}, remaining=4, expect={"j1": 2, "j2": 2})
    assert w.left == {"ka": 2, "kb": 2}
    w.sent("ka", 2)
    row = {"job_id": "j1", "status": "success", "rc": 0, "stdout": "", "stderr": "",
           "cached": 0, "exec_time": 0.1, "roundtrip_time": 0.1, "transfer": None,
           "error": "", "sent": 2.0, "finished": 3.0}
    w.add("ka", row)
    got = w.outstanding(lambda key: key != "kb")
    assert got == {"running": 1, "queued": 0, "queued_offline": 2, "nodes_left": 2,
                   "nodes_offline": 1, "waiting_on": ["b", "a"]}


def test_a_database_from_before_labels_gets_the_column(tmp_path):
    import sqlite3

    from director.server.jobstore import JobStore

    conn = sqlite3.connect(tmp_path / "old.db")
    conn.execute("CREATE TABLE jobs (id TEXT PRIMARY KEY, orch TEXT NOT NULL, lane TEXT NOT NULL,"
                 " seq INTEGER NOT NULL, verb TEXT NOT NULL, summary TEXT NOT NULL,"
                 " instruction TEXT NOT NULL, hash_extra TEXT NOT NULL DEFAULT '',"
                 " created REAL NOT NULL, targets TEXT NOT NULL)")
    conn.execute("INSERT INTO jobs VALUES ('o1','o1','o1.0',1,'RUN','RUN a','{}','',5.0,'[]')")
    conn.commit()
    store = JobStore(conn)
    store.insert([{"id": "o2x", "orch": "o2", "lane": "o2.0", "seq": 1, "verb": "RUN",
                   "summary": "RUN b", "instruction": "{}", "hash_extra": "", "created": 6.0,
                   "targets": "[]", "label": "site.yaml"}], [])
    assert store.orch_head("o1") == (1, "", 5.0, "RUN a")
    assert store.orch_head("o2") == (1, "site.yaml", 6.0, "RUN b")
    assert store.recent_orchs(5) == [("o2", 1, 6.0), ("o1", 1, 5.0)]
    conn.close()
