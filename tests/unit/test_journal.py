"""The node journal over a real SQLite file, and the core's rules over it."""

from __future__ import annotations

import os
import subprocess
import time

from director.client import core as C
from director.client.actions import Send, StartRun
from director.client.journal import Journal, proc_started_at
from director.client.runner import kill_leftover
from director.jobs.dsl import parse_line
from director.jobs.executor import Outcome
from director.protocol import messages as M


def jid(n: int) -> str:
    return f"{n:08x}"


def job(n: int, lane: str = "aaaaaaaa.0") -> M.Job:
    return M.Job(jid(n), parse_line("RUN true"), lane, n)


def res(n: int, status: str = "success") -> M.Result:
    return M.Result(jid(n), status, 0, "out\n", exec_time=0.5)


def results(actions) -> list[M.Result]:
    out = []
    for a in actions:
        if isinstance(a, Send):
            m = a.msg
            out += list(m.items) if isinstance(m, M.Results) else (
                [m] if isinstance(m, M.Result) else [])
    return out


def core(j, boot="b1") -> C.AgentCore:
    c = C.AgentCore("n", boot, 1.0, 0.0, journal=j)
    c.link_up(0.0)
    c.message(M.Enrolled("accepted", "n"), 0.0)
    return c


def test_file_is_private_and_wal(tmp_path):
    j = Journal(tmp_path / "journal.db")
    assert (tmp_path / "journal.db").stat().st_mode & 0o777 == 0o600
    assert j.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    j.close()


def test_states_survive_a_reopen_only_once_committed(tmp_path):
    j = Journal(tmp_path / "j.db")
    j.received(jid(1), "l", "b1")
    j.starting(jid(1), "b1")
    assert j.must_commit
    j.commit()
    j.started(jid(1), 123, 123, 456)
    j.received(jid(2), "l", "b1")
    j.db.close()  # a crash: the last writes were never committed
    j = Journal(tmp_path / "j.db")
    e = j.get(jid(1))
    assert (e.state, e.boot, e.pid) == ("starting", "b1", None)
    assert j.get(jid(2)) is None
    assert [x.job_id for x in j.interrupted("b2")] == [jid(1)]
    assert j.interrupted("b1") == []


def test_results_stay_unacked_until_acked_across_reopen(tmp_path):
    j = Journal(tmp_path / "j.db")
    for n in range(3):
        j.finished(res(n), "b1", "l")
    j.commit()
    assert j.acked([jid(1), "ffffffff"]) == 1  # a foreign id is ignored
    j.commit()
    j.close()
    j = Journal(tmp_path / "j.db")
    assert [r.job_id for r in j.unacked()] == [jid(0), jid(2)]
    assert j.get(jid(1)).acked and j.get(jid(1)).result == res(1)
    assert j.get(jid(0)).result == res(0)


def test_bounded_by_count_trimmed_in_batches(tmp_path):
    j = Journal(tmp_path / "j.db", keep_ids=10)
    for n in range(30):
        j.finished(res(n), "b1", "l")
    j.acked([jid(n) for n in range(30)])
    j.commit()
    j.trim()
    (count,) = j.db.execute("SELECT count(*) FROM jobs").fetchone()
    assert count == 10
    assert j.get(jid(0)) is None and j.get(jid(29)) is not None


def test_a_write_failure_goes_on_in_memory(tmp_path):
    j = Journal(tmp_path / "j.db")
    j.db.execute("PRAGMA query_only=1")  # every write now fails, as on a full disk
    j.received(jid(1), "l", "b1")
    j.finished(res(1), "b1", "l")
    j.commit()
    assert j.broken and [r.job_id for r in j.unacked()] == [jid(1)]
    j.acked([jid(1)])
    assert j.get(jid(1)).acked


def test_core_never_runs_a_job_twice_across_restarts(tmp_path):
    j = Journal(tmp_path / "j.db")
    c = core(j)
    acts = c.message(job(1), 0.0) + c.message(job(2, "bbbbbbbb.0"), 0.0)
    assert [a.job.job_id for a in acts if isinstance(a, StartRun)] == [jid(1), jid(2)]
    for n in (1, 2):  # as the driver: spawned gated, pid journaled, then released
        j.started(jid(n), 4000 + n, 4000 + n, 1)
    j.commit()
    c.job_ended(jid(1), Outcome("success", rc=0, exec_time=0.1), 0.1)
    c.flush()
    j.commit()
    j.db.close()  # kill -9
    j = Journal(tmp_path / "j.db")
    c2 = core(j, "b2")
    # finished: its result again, never run; started by the previous run: lost
    acts = c2.message(M.Jobs((job(1), job(2, "bbbbbbbb.0"))), 1.0) + c2.flush()
    assert not [a for a in acts if isinstance(a, StartRun)]
    got = {r.job_id: r for r in results(acts)}
    assert got[jid(1)].status == "success"
    assert got[jid(2)].status == "lost" and got[jid(2)].error == C.RESTARTED


def test_received_but_never_started_runs_after_a_restart(tmp_path):
    j = Journal(tmp_path / "j.db")
    c = core(j)
    c.message(job(1), 0.0)
    c.message(job(2), 0.0)  # same lane: waits behind job 1
    j.commit()
    j.db.close()
    j = Journal(tmp_path / "j.db")
    c2 = core(j, "b2")
    for e in j.interrupted("b2"):
        c2.interrupted(e.job_id, False, 1.0)
    acts = c2.message(job(2), 1.0)
    assert [a.job.job_id for a in acts if isinstance(a, StartRun)] == [jid(2)]


def test_accepted_again_resends_every_unacked_result_in_bounded_batches(tmp_path):
    j = Journal(tmp_path / "j.db")
    c = core(j)
    n = C.RESULT_BATCH * 2 + 5
    for i in range(n):
        c.message(job(i, f"{i:08x}.0"), 0.0)
        c.job_ended(jid(i), Outcome("success", rc=0, exec_time=0.1), 0.0)
    c.flush()
    c.message(M.Ack(tuple(jid(i) for i in range(10))), 0.1)
    c.link_down(0.2)
    acts = c.link_up(0.3) + c.message(M.Enrolled("accepted", "n"), 0.3) + c.flush()
    sends = [a.msg for a in acts if isinstance(a, Send) and
             isinstance(a.msg, (M.Result, M.Results))]
    assert all(len(getattr(m, "items", (m,))) <= C.RESULT_BATCH for m in sends)
    assert sorted(r.job_id for r in results(acts)) == [jid(i) for i in range(10, n)]


def test_leftover_group_killed_only_with_matching_start_time():
    start = time.time()  # as the agent records it when it spawns
    p = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        assert abs(proc_started_at(p.pid) - start) < 2.0
        assert not kill_leftover(p.pid, start - 3600)  # a reused pid: never killed
        assert p.poll() is None
        assert kill_leftover(p.pid, start)
        assert p.wait(timeout=5) == -9
    finally:
        if p.poll() is None:
            os.killpg(p.pid, 9)
            p.wait()
    assert not kill_leftover(p.pid, start)  # gone
