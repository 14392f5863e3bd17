"""The server core's rules for many nodes (issue 12), in-process: a node heard from is
online, a stalled loop strands nobody, last-seen rows are written in bounded batches,
and live tasks (jobs x nodes) are capped."""

from __future__ import annotations

import json

import pytest
from coretools import CoreHarness, jobs_in, run_steps, submit
from director.server.events import Reply, Send
from director.server.jobwrites import SENT_DELAY

from director.protocol import messages as m
from director.server import peers as peers_mod


@pytest.fixture
def h(tmp_path):
    harness = CoreHarness(tmp_path)
    yield harness
    harness.close()


def state(h: CoreHarness, name: str) -> str:
    return {n["name"]: n["state"] for n in h.ok("nodes")}[name]


def test_a_node_heard_from_after_expiry_is_online_again_and_gets_jobs(h):
    key = h.accepted_node("web1")
    _, jobs = submit(h, "RUN sleep 1000")
    h.tick(31.0)  # its heartbeats went unread: the server gave up on it
    assert state(h, "web1") == "offline"
    assert h.ok("jobs.get", id="last")["results"]["web1"]["status"] == "lost"
    # its connection never dropped, so its agent never says HELLO again: a heartbeat
    # on that connection is enough
    h.from_node(key, m.Heartbeat(1), b"route-web1")
    assert state(h, "web1") == "online"
    assert h.ok("health")["nodes_online"] == 1
    _, more = submit(h, "RUN echo again")
    assert [j.instruction.command for j in more] == ["echo again"]
    # and what it ran meanwhile is its word, not 'lost'
    h.from_node(key, m.Result(jobs[0].job_id, "success", rc=0), b"route-web1")
    h.tick()
    assert h.ok("jobs.get", id=jobs[0].job_id)["results"]["web1"]["status"] == "success"


def test_an_enroll_only_connection_of_an_accepted_key_is_not_online(h):
    key = h.accepted_node("web1")
    h.tick(31.0)
    h.from_node(key, m.EnrollStatus(), b"route-enroll")
    assert state(h, "web1") == "offline"


def test_after_a_stalled_loop_no_node_expires_before_it_could_be_heard(h):
    key = h.accepted_node("web1")
    _, jobs = submit(h, "RUN sleep 1000")
    h.now += 29.0
    h.core.loop_took(25.0, h.now)  # one step held the loop: heartbeats are queued
    h.tick(5.0)                    # 34 s since it was last read from
    assert state(h, "web1") == "online"
    assert h.ok("jobs.get", id="last")["results"]["web1"]["status"] == "running"
    h.from_node(key, m.Heartbeat(1), b"route-web1")  # the queued heartbeat, read at last
    h.tick(29.0)
    assert state(h, "web1") == "online"
    h.tick(2.0)  # and a node really silent for a whole expiry after that does expire
    assert state(h, "web1") == "offline"
    assert h.ok("server.stats")["loop"]["slow_iterations"] == 1


def test_expiry_looks_only_at_the_quietest_peers(h):
    keys = [h.accepted_node(f"n{i}") for i in range(5)]
    h.now += 20.0
    for k in keys[2:]:
        h.from_node(k, m.Heartbeat(0), f"route-n{keys.index(k)}".encode())
    h.tick(11.0)
    assert [state(h, f"n{i}") for i in range(5)] == ["offline"] * 2 + ["online"] * 3


def test_last_seen_rows_are_written_once_a_minute_not_per_heartbeat(h, monkeypatch):
    key = h.accepted_node("web1")
    writes: list[int] = []
    real = h.store.touch_many
    monkeypatch.setattr(h.store, "touch_many", lambda rows: (writes.append(len(rows)),
                                                             real(rows))[1])
    for _ in range(100):  # 100 heartbeats over 50 s
        h.now += 0.5
        h.from_node(key, m.Heartbeat(0), b"route-web1")
        h.tick(0.0)
    assert sum(writes) <= 1
    h.now += peers_mod.SEEN_EVERY
    h.from_node(key, m.Heartbeat(0), b"route-web1")
    h.tick()
    assert sum(writes) >= 1
    row = next(r for r in h.store.nodes() if r.name == "web1")
    assert row.last_seen == pytest.approx(h.now - 0.25)


def test_live_tasks_are_capped_with_a_clear_refusal_and_nothing_stored(h):
    keys = [h.accepted_node(f"n{i}") for i in range(3)]
    h.core.jobs.max_live = 10
    _, jobs = submit(h, "RUN one", "RUN two", "RUN three")   # 3 jobs x 3 nodes live
    reply = h.op("jobs.submit", **run_steps("RUN four", "RUN five"))
    assert isinstance(reply, m.CtlReply) and not reply.ok
    assert reply.error.startswith("too many tasks at once: the server holds at most 10 ")
    assert "(9 now)" in reply.error
    assert jobs_in(h.pending) == []
    assert len(h.ok("jobs.list", limit=100)) == 3  # the refused one left no trace
    assert h.ok("server.stats")["tasks_live"] == 9
    # as tasks end, room comes back
    for i, key in enumerate(keys):
        mine = {j.job_id for j in jobs}  # every job went to every node
        h.from_node(key, m.Results(tuple(m.Result(j, "success", rc=0) for j in sorted(mine))),
                    f"route-n{i}".encode())
    assert h.ok("server.stats")["tasks_live"] == 0
    _, again = submit(h, "RUN four", "RUN five")
    assert len(again) == 6


def test_a_big_submission_is_made_a_slice_per_turn_and_a_failed_lane_stays_cancelled(
        h, monkeypatch):
    from director.server import jobsubmit as jobs_mod
    from director.server import submission

    monkeypatch.setattr(jobs_mod, "SUBMIT_SLICE", 1)
    monkeypatch.setattr(submission, "ROW_RUN", 1)  # tasks made job by job, not node by node
    keys = [h.accepted_node(f"n{i}") for i in range(3)]
    res, first = submit(h, "RUN one", "RUN two", "RUN three", "RUN four")
    assert res["tasks"] == 12
    assert len(first) == 2  # one slice with the job rows, one at the same turn's end
    assert h.ok("server.stats")["tasks_live"] == 12
    # n0 fails its first job before the rest of its lane was even made
    one = next(j for j in first if j.instruction.command == "one")
    h.from_node(keys[0], m.Result(one.job_id, "failed", rc=1), b"route-n0")
    sent = []
    for _ in range(10):  # the rest comes a slice per loop turn
        sent += jobs_in(h.tick(0.01))
    assert {j.job_id for j in first + sent} == set(res["jobs"])
    docs = [h.ok("jobs.get", id=j) for j in res["jobs"]]
    assert [len(d["results"]) for d in docs] == [3, 3, 3, 3]  # every row stored
    assert docs[0]["results"]["n0"]["status"] == "failed"
    assert [d["results"]["n0"]["status"] for d in docs[1:]] == ["cancelled"] * 3
    assert all(d["results"]["n1"]["status"] in ("queued", "running") for d in docs)
    assert h.ok("server.stats")["tasks_live"] == 12 - 4


def test_no_task_is_lost_while_its_node_is_connected(h):
    key = h.accepted_node("web1")
    h.core.from_node(b"route-web1", key, None, m.encode(m.Heartbeat(0)), h.now, fd=7)
    h.core.jobs.sched.window = 1  # one in flight, the other queued
    _, jobs = submit(h, "RUN first", "RUN second")
    assert [j.instruction.command for j in jobs] == ["first"]
    h.tick(31.0)  # silent past its expiry, but the socket monitor says its connection is up
    h.tick(31.0)
    assert state(h, "web1") == "offline"
    assert h.ok("jobs.get", id=jobs[0].job_id)["results"]["web1"]["status"] == "running"
    assert h.ok("jobs.get", id="last")["results"]["web1"]["status"] == "queued"
    assert h.ok("server.stats")["tasks_live"] == 2
    # its queued heartbeat is read at last: online again, the result counts, work goes on
    h.core.from_node(b"route-web1", key, None, m.encode(m.Heartbeat(1)), h.now, fd=7)
    out = h.from_node(key, m.Result(jobs[0].job_id, "success", rc=0), b"route-web1")
    assert state(h, "web1") == "online"
    assert [j.instruction.command for j in jobs_in(out)] == ["second"]


def test_a_silent_node_whose_connection_closes_is_gone_and_its_tasks_lost(h):
    key = h.accepted_node("web1")
    h.core.from_node(b"route-web1", key, None, m.encode(m.Heartbeat(0)), h.now, fd=7)
    res, _ = submit(h, "RUN sleep 1000")
    h.tick(31.0)
    assert h.ok("jobs.get", id="last")["results"]["web1"]["status"] == "running"
    h.core.connection_closed(7, h.now)
    h.tick()
    doc = h.ok("jobs.get", id="last")
    assert doc["results"]["web1"]["status"] == "lost"
    assert h.ok("server.stats")["tasks_live"] == 0


def test_a_long_step_in_the_same_turn_as_the_tick_expires_nobody(h):
    h.accepted_node("web1")
    submit(h, "RUN sleep 1000")
    h.now += 40.0                     # one step of this loop turn took 40 s ...
    h.core.check_stall(40.0, h.now)   # ... and the driver says so before the tick
    h.tick(0.0)
    assert state(h, "web1") == "online"
    assert h.ok("jobs.get", id="last")["results"]["web1"]["status"] == "running"


def test_nodes_retry_on_their_own_schedules_so_a_restart_is_no_stampede():
    """Every node's reconnect interval and backoff ceiling are drawn from a range:
    thousands cut at once (a server restart) do not handshake again in lockstep."""
    import zmq
    from director.net import transport
    from director.trust import keystore

    server = keystore.generate()
    ctx = zmq.Context()
    socks = [transport.client_socket(ctx, keystore.generate(), server.public, None, 1.0)
             for _ in range(40)]
    try:
        ivls = [s.reconnect_ivl for s in socks]
        ceilings = [s.reconnect_ivl_max for s in socks]
        lo, hi = transport.RECONNECT_MS
        assert all(lo <= v <= hi for v in ivls) and len(set(ivls)) > 10
        lo, hi = transport.RECONNECT_MAX_MS
        assert all(lo <= v <= hi for v in ceilings) and len(set(ceilings)) > 10
    finally:
        for s in socks:
            s.close(0)
        ctx.term()


def _restarted(h: CoreHarness):
    """A new core on the same database: the server process after a kill -9."""
    from director.server.core import CoreConfig, ServerCore
    return ServerCore(h.store, CoreConfig(h.pair.public, h.pair.fingerprint), h.now + 5)


def _get(core, job_id: str, now: float) -> dict:
    core.request(b"op", m.encode(m.Ctl("jobs.get", {"id": job_id})), now)
    (reply,) = [m.decode(a.frames) for a in core.take() if isinstance(a, Reply)]
    assert reply.ok, reply
    return reply.result


def test_tasks_a_crash_left_unmade_are_made_at_the_next_start(h, monkeypatch):
    from director.server import jobsubmit as jobs_mod
    from director.server import submission

    monkeypatch.setattr(jobs_mod, "SUBMIT_SLICE", 1)
    monkeypatch.setattr(submission, "ROW_RUN", 1)  # tasks made job by job
    keys = [h.accepted_node(f"n{i}") for i in range(3)]
    res, first = submit(h, "RUN one", "RUN two", "RUN three", "RUN four")
    assert len(first) == 2 and h.store.table_counts() == (4, 2)  # the rest not stored yet
    one = next(j for j in first if j.instruction.command == "one" and j in first)
    failed_on = next(k for k in keys if h.core.jobs.sched.in_flight(k, one.job_id))
    h.from_node(failed_on, m.Result(one.job_id, "failed", rc=1))
    h.core.jobs.flush()  # that result is stored; then the process dies mid-feeding
    core2 = _restarted(h)
    assert h.store.table_counts() == (4, 12)
    docs = [_get(core2, j, h.now + 5) for j in res["jobs"]]
    by_node = {k: [d["results"][h.core.who(k)]["status"] for d in docs] for k in keys}
    assert by_node[failed_on] == ["failed", "cancelled", "cancelled", "cancelled"]
    for k, statuses in by_node.items():
        if k != failed_on:  # its first job may have been sent before the crash
            assert statuses[0] in ("queued", "running") and statuses[1:] == ["queued"] * 3
    assert not h.store.unfed()  # made once: the next start has nothing to do
    # and they run: a node saying HELLO to the new process gets its lane in order
    other = next(k for k in keys if k != failed_on)
    core2.from_node(b"again", other, None, m.encode(m.Hello(h.core.who(other), "t", "b")),
                    h.now + 5)
    core2.after_events(h.now + 5)
    got = [j.instruction.command for j in jobs_in(core2.take())]
    assert got == ["one", "two", "three", "four"]


def test_a_cancelled_submission_stays_cancelled_across_the_crash(h, monkeypatch):
    from director.server import jobsubmit as jobs_mod
    from director.server import submission

    monkeypatch.setattr(jobs_mod, "SUBMIT_SLICE", 1)
    monkeypatch.setattr(submission, "ROW_RUN", 1)  # tasks made job by job
    keys = [h.accepted_node(f"n{i}") for i in range(2)]
    res, _ = submit(h, "RUN one", "RUN two", "RUN three")
    assert h.store.table_counts() == (3, 2)
    h.ok("jobs.cancel", id=res["orch"])  # the 2 sent are told to stop; the rest is unmade
    core2 = _restarted(h)
    docs = [_get(core2, j, h.now + 5) for j in res["jobs"]]
    statuses = sorted(r["status"] for d in docs for r in d["results"].values())
    assert statuses == ["cancelled"] * 4 + ["running"] * 2
    # the two sent are told to stop again when their nodes say HELLO to the new process
    running = [(k, n) for d in docs for n, r in d["results"].items() if r["status"] == "running"
               for k in keys if h.core.who(k) == n]
    for key, name in running:
        core2.from_node(b"r-" + name.encode(), key, None, m.encode(m.Hello(name, "t", "b")),
                        h.now + 5)
    core2.after_events(h.now + 5)
    told = [i for a in core2.take() if isinstance(a, Send) for msg in [m.decode(a.frames)]
            if isinstance(msg, m.Cancel) for i in msg.job_ids]
    assert sorted(told) == sorted(d["id"] for d in docs
                                  for r in d["results"].values() if r["status"] == "running")


def test_after_a_restart_a_node_in_reconnect_backoff_is_given_its_longest_wait(h):
    """A node cut by the restart may sit in its backoff up to the ceiling: its reloaded
    work is not lost before node expiry plus that wait, and is lost after it."""
    from director.protocol.timing import RECONNECT_GRACE

    h.accepted_node("web1")
    _, jobs = submit(h, "RUN sleep 100")
    h.tick(SENT_DELAY)  # its 'running' row is written
    core2 = _restarted(h)
    start = h.now + 5

    def status(at: float) -> str:
        core2.tick(at)
        return _get(core2, jobs[0].job_id, at)["results"]["web1"]["status"]

    assert status(start + 30.0 + 1) == "running"          # past expiry alone
    assert status(start + 30.0 + RECONNECT_GRACE + 1) == "lost"


def test_the_server_pings_each_connection_every_third_interval():
    """Nodes PING every interval; the server's own PINGs only find dead links, so they
    come a third as often (idle cost at thousands of nodes) -- and a node is told to
    wait longer than that before it gives up on a silent server.  A node's PINGs carry
    no TTL: the server would arm a timer on each and cancel it on the next message, by
    a scan of all its timers (half its idle CPU at 5,000 nodes)."""
    import zmq
    from director.net import transport
    from director.trust import keystore

    ctx = zmq.Context()
    server = transport.server_socket(ctx, keystore.generate(), "tcp://127.0.0.1:*", 2.0)
    client = transport.client_socket(ctx, keystore.generate(), keystore.generate().public,
                                     None, 2.0)
    try:
        assert client.heartbeat_ivl == 2000
        assert client.heartbeat_ttl == 0
        assert server.heartbeat_ivl == 2000 * transport.SERVER_PING_EVERY
        assert server.heartbeat_ttl > server.heartbeat_ivl
    finally:
        server.close(0)
        client.close(0)
        ctx.term()


def test_work_queued_for_a_node_already_offline_outlives_the_tick_that_forgets_it(h):
    """The operator sees a node offline as soon as its expiry passes; the tick that
    forgets it comes a moment later.  A task queued in between with --allow-offline
    waits for the node as such tasks do -- a task it had before it went is lost."""
    key = h.accepted_node("web1")
    _, before = submit(h, "RUN sleep 1000")
    h.now += 31.0                                    # expired by the clock, no tick yet
    assert state(h, "web1") == "offline"
    reply = h.op("jobs.submit", **run_steps("RUN echo later", targets=["web1"]),
                 allow_offline=True)
    assert isinstance(reply, m.CtlReply) and reply.ok, reply
    h.tick()                                         # the connection is gone: forgotten
    assert h.ok("jobs.get", id=before[0].job_id)["results"]["web1"]["status"] == "lost"
    assert h.ok("jobs.get", id="last")["results"]["web1"]["status"] == "queued"
    back = h.from_node(key, m.Hello("web1", "test", "boot2"), b"route-web1b")
    assert [j.instruction.command for j in jobs_in(back)] == ["echo later"]


def test_a_restart_reloads_only_jobs_still_open_and_finished_ones_are_unmarked(h):
    """Open tasks are found through the jobs marked live, not an index on status that
    every result would pay two index writes for: a job leaves the mark once its rows
    are final and written, and a restart still reloads every open task."""
    key = h.accepted_node("web1")
    _, done = submit(h, "RUN one")
    _, still = submit(h, "RUN two")
    assert set(h.store.live_jobs()) == {done[0].job_id, still[0].job_id}
    h.from_node(key, m.Result(done[0].job_id, "success", rc=0))
    assert done[0].job_id in h.store.live_jobs()  # its row is not written yet
    h.tick(SENT_DELAY)  # (and the other's 'running' row)
    assert h.store.live_jobs() == [still[0].job_id]
    core2 = _restarted(h)
    (reloaded,) = core2.jobs.sched.inflight(key)  # its row's rowid known again
    assert reloaded.row == h.store.state.conn.execute(
        "SELECT rowid FROM results WHERE job_id = ?", (still[0].job_id,)).fetchone()[0] > 0
    assert _get(core2, still[0].job_id, h.now + 5)["results"]["web1"]["status"] == "running"
    assert _get(core2, done[0].job_id, h.now + 5)["results"]["web1"]["status"] == "success"
    assert list(core2.jobs.open) == [still[0].job_id]


def _failing_close(job_ids):
    from director.errors import StorageError
    raise StorageError("database or disk is full")


@pytest.mark.parametrize("then", ["tick", "restart"])
def test_a_mark_the_store_could_not_drop_goes_on_the_next_try(h, monkeypatch, then):
    key = h.accepted_node("web1")
    _, jobs = submit(h, "RUN one")
    real = h.store.close_jobs
    monkeypatch.setattr(h.store, "close_jobs", _failing_close)
    h.from_node(key, m.Result(jobs[0].job_id, "success", rc=0))
    h.tick()  # its row is written; dropping its mark fails (or the process dies here)
    assert h.store.live_jobs() == [jobs[0].job_id] and h.core.jobs.storage_error
    monkeypatch.setattr(h.store, "close_jobs", real)
    if then == "tick":
        h.tick()
        assert h.core.jobs.storage_error is None
    else:
        assert not _restarted(h).jobs.open
    assert h.store.live_jobs() == []
    assert h.ok("jobs.get", id=jobs[0].job_id)["results"]["web1"]["status"] == "success"


def test_a_database_with_the_old_open_index_is_moved_to_live_marks(tmp_path):
    """A database from before ``live``: its open jobs are marked from the old index,
    which is dropped, and a restart reloads their tasks."""
    import sqlite3
    from director.server.store import SqlStore

    path = tmp_path / "server.db"
    store = SqlStore(path)
    conn = store.state.conn
    conn.execute("DROP TABLE live")
    conn.execute("CREATE INDEX results_open ON results(status)"
                 " WHERE status IN ('queued','running')")
    for job, status in (("aaaaaaaa", "success"), ("bbbbbbbb", "running"),
                        ("cccccccc", "queued")):
        conn.execute("INSERT INTO jobs(id,orch,lane,seq,verb,summary,instruction,created,"
                     "targets) VALUES(?,?,?,1,'RUN','x','{}',1.0,'[]')",
                     (job, job, job + ".0"))
        conn.execute("INSERT INTO results(job_id,node,name,status) VALUES(?,?,?,?)",
                     (job, "k", "n", status))
    store.close()
    store = SqlStore(path)
    try:
        assert sorted(store.live_jobs()) == ["bbbbbbbb", "cccccccc"]
        assert sorted(r["job_id"] for r in store.open_results()) == ["bbbbbbbb", "cccccccc"]
        assert store.state.conn.execute("SELECT COUNT(*) FROM sqlite_master WHERE"
                                        " name='results_open'").fetchone()[0] == 0
    finally:
        store.close()
    assert sqlite3.connect(path).execute("SELECT COUNT(*) FROM live").fetchone()[0] == 2


def test_a_task_answered_soon_after_it_was_sent_costs_one_row_write(h, monkeypatch):
    """Its 'running' row is made only if it still runs SENT_DELAY after the send: the
    answer's row carries the send time, and the row is written once, not twice."""
    key = h.accepted_node("web1")
    written: list[str] = []
    real = h.store.update_results

    def counting(rows, budget=None):
        rows = list(rows)
        done = real(rows, budget)
        written.extend(r["status"] for r in rows[:done])
        return done

    monkeypatch.setattr(h.store, "update_results", counting)
    _, (quick,) = submit(h, "RUN quick")
    h.tick(SENT_DELAY / 4)
    assert h.store.result_status(quick.job_id, key) == ("queued", "")  # not yet
    h.from_node(key, m.Result(quick.job_id, "success", rc=0, exec_time=0.01))
    h.tick(SENT_DELAY)
    assert written == ["success"]
    row = h.ok("jobs.get", id=quick.job_id)["results"]["web1"]
    assert row["status"] == "success" and row["roundtrip_time"] is not None
    _, (slow,) = submit(h, "RUN slow")
    h.tick(SENT_DELAY / 4)
    assert h.store.result_status(slow.job_id, key) == ("queued", "")
    h.tick(SENT_DELAY)  # still running: its row says so now
    assert h.store.result_status(slow.job_id, key) == ("running", "")
    assert written == ["success", "running"]


def test_a_running_task_an_operator_saw_is_running_after_a_crash(h):
    h.accepted_node("web1")
    _, (job,) = submit(h, "RUN sleep 100")
    assert h.ok("jobs.get", id=job.job_id)["results"]["web1"]["status"] == "running"
    core2 = _restarted(h)  # no tick: the query wrote it
    assert _get(core2, job.job_id, h.now + 5)["results"]["web1"]["status"] == "running"


def test_a_job_sent_just_before_a_crash_is_sent_again_and_its_answer_counts(h):
    """Its row still said queued: the new process sends it again; the node's journal
    answers it (never running it twice: the agent's side) and the answer is taken."""
    key = h.accepted_node("web1")
    _, (job,) = submit(h, "RUN date >> runs")
    core2 = _restarted(h)
    now = h.now + 5
    core2.from_node(b"route-web1b", key, None, m.encode(m.Hello("web1", "test", "boot1")), now)
    core2.after_events(now)
    assert [j.job_id for j in jobs_in(core2.take())] == [job.job_id]
    core2.from_node(b"route-web1b", key, None,
                    m.encode(m.Result(job.job_id, "success", rc=0)), now + 1)
    core2.after_events(now + 1)
    core2.tick(now + 2)
    acked = [msg for msg in (m.decode(a.frames) for a in core2.take() if isinstance(a, Send))
             if isinstance(msg, m.Ack)]
    assert [a.job_ids for a in acked] == [(job.job_id,)]
    assert _get(core2, job.job_id, now + 3)["results"]["web1"]["status"] == "success"


def test_jobs_that_finish_together_are_encoded_over_several_turns(h, monkeypatch):
    """The last node to answer often ends many jobs in one message: their documents for
    a waiting operator are encoded ENCODE_ANSWERS answers' worth per loop turn, and the
    answer goes once all are."""
    from director.server import jobs as jobs_mod

    monkeypatch.setattr(jobs_mod, "ENCODE_ANSWERS", 2)
    key = h.accepted_node("web1")
    h.op("jobs.submit", **run_steps(*[f"RUN echo {i}" for i in range(5)], wait=True))
    sent_jobs = jobs_in(h.pending)
    assert len(sent_jobs) == 5

    def answers(actions: list) -> list:
        return [r for r in (m.decode(a.frames) for a in actions if isinstance(a, Reply))
                if isinstance(r, m.CtlReply)]

    out = h.from_node(key, m.Results(tuple(m.Result(j.job_id, "success", rc=0)
                                           for j in sent_jobs)))
    assert answers(out) == [] and len(h.core.jobs.waiters[sent_jobs[0].job_id[:8]].todo) == 3
    assert answers(h.tick(0.01)) == []
    (reply,) = answers(h.tick(0.01))
    assert reply.ok and [d["id"] for d in json.loads(reply.data)] == [
        j.job_id for j in sent_jobs]
    assert not h.core.jobs.encoding and not h.core.jobs.waiters
