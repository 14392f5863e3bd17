"""--batch / --max-failures in the server core: a real SQLite store, real message
encoding, the clock a number; a restart is a new core on the same database file
(what a server killed -9 finds: rows written so far, nothing of its memory)."""

from __future__ import annotations

import itertools

import pytest
from coretools import CoreHarness, jobs_in, run_steps

from director.protocol import messages as m
from director.server.cancel import BEFORE_SENT
from director.server.core import CoreConfig, ServerCore


@pytest.fixture
def h(tmp_path):
    harness = CoreHarness(tmp_path)
    yield harness
    harness.close()


def nodes(h: CoreHarness, *names: str) -> dict[str, str]:
    return {n: h.accepted_node(n) for n in names}


def submit(h: CoreHarness, *lines: str, **args) -> dict:
    reply = h.op("jobs.submit", **run_steps(*lines), **args)
    assert isinstance(reply, m.CtlReply) and reply.ok, reply
    return reply.result


def to(actions: list, name: str) -> list[str]:
    """Job ids sent to node ``name`` among ``actions``."""
    return [j.job_id for j in jobs_in([a for a in actions
                                       if getattr(a, "route", None) == f"route-{name}".encode()])]


def answer(h: CoreHarness, key: str, job_ids: list[str], status: str = "success") -> list:
    return h.from_node(key, m.Results(tuple(m.Result(j, status, rc=0 if status == "success"
                                                     else 1) for j in job_ids)),
                       b"route-" + next(n for n, k in h.keys.items() if k == key).encode())


def results(h: CoreHarness, job_id: str) -> dict[str, dict]:
    return h.ok("jobs.get", id=job_id)["results"]


def restart(h: CoreHarness) -> None:
    """A new core on the same store, as after kill -9 (nothing flushed on the way)."""
    ids = itertools.count(0x20000000)
    h.core = ServerCore(h.store, CoreConfig(h.pair.public, h.pair.fingerprint, 30.0, 5,
                                            lambda: "server.test:5555"), h.now,
                        new_id=lambda: f"{next(ids):08x}")


@pytest.fixture
def three(h):
    h.keys = nodes(h, "a", "b", "c")
    return h


def test_one_at_a_time_and_the_rest_never_sent_past_max_failures(three):
    h = three
    res = submit(h, "RUN deploy", batch="1", max_failures="0")
    first = h.pending
    assert to(first, "a") == res["jobs"] and to(first, "b") == to(first, "c") == []
    out = answer(h, h.keys["a"], res["jobs"], "failed")
    assert to(out, "b") == to(out, "c") == []
    got = results(h, res["jobs"][0])
    assert got["a"]["status"] == "failed"
    reason = "not started: 1 of 3 targets failed, over --max-failures 0"
    assert got["b"] == {**got["b"], "status": "cancelled", "error": reason}
    assert got["c"]["status"] == "cancelled" and got["c"]["error"] == reason
    assert to(h.tick(5.0), "b") == []          # and never later either


def test_failures_up_to_the_limit_go_on(three):
    h = three
    res = submit(h, "RUN deploy", batch="1", max_failures="1")
    out = answer(h, h.keys["a"], res["jobs"], "failed")      # 1 failed: not over 1
    assert to(out, "b") == res["jobs"]
    out = answer(h, h.keys["b"], res["jobs"], "timeout")     # 2 failed: over 1
    assert to(out, "c") == []
    assert results(h, res["jobs"][0])["c"]["error"] == \
        "not started: 2 of 3 targets failed, over --max-failures 1"


def test_batch_of_two_starts_the_third_when_both_are_final(three):
    h = three
    res = submit(h, "RUN one", "RUN two", batch="2")
    first = h.pending
    assert to(first, "a") == to(first, "b") == res["jobs"] and to(first, "c") == []
    assert h.ok("server.stats")["tasks_live"] == 6    # held tasks count against the cap
    assert to(answer(h, h.keys["a"], res["jobs"]), "c") == []
    assert to(answer(h, h.keys["b"], res["jobs"][:1]), "c") == []
    out = answer(h, h.keys["b"], res["jobs"][1:], "failed")   # no limit: failures go on
    assert to(out, "c") == res["jobs"]


def test_a_percentage_rounds_up(three):
    h = three
    res = submit(h, "RUN x", batch="50%")    # 1.5 of 3 -> 2 at a time
    assert sorted(n for n in "abc" if to(h.pending, n)) == ["a", "b"]
    assert res["tasks"] == 3


def test_waiting_operator_gets_every_result_cancelled_ones_too(three):
    h = three
    actions = h.op("jobs.submit", **run_steps("RUN x", wait=True), batch="1",
                   max_failures="0")
    job = to(actions, "a")
    assert job and to(actions, "b") == []
    out = answer(h, h.keys["a"], job, "failed")
    from director.server.events import Reply
    final = [m.decode(a.frames) for a in out if isinstance(a, Reply)]
    done = [r for r in final if isinstance(r, m.CtlReply)]
    assert len(done) == 1 and done[0].ok and done[0].failed == 1
    assert b'"cancelled"' in done[0].data and b"over --max-failures 0" in done[0].data


def test_cancel_ends_held_batches_unsent(three):
    h = three
    res = submit(h, "RUN x", batch="1")
    done = h.ok("jobs.cancel", id=res["orch"])
    assert done["cancelled"] == 2 and done["stopping"] == 1
    out = answer(h, h.keys["a"], res["jobs"], "cancelled")
    assert to(out, "b") == to(out, "c") == []
    got = results(h, res["jobs"][0])
    assert got["b"]["status"] == got["c"]["status"] == "cancelled"
    assert got["b"]["error"] == BEFORE_SENT
    assert h.ok("server.stats")["tasks_live"] == 0


@pytest.mark.parametrize("bad", [{"batch": "0"}, {"batch": "-1"}, {"batch": "101%"},
                                 {"batch": "x"}, {"batch": 1.5}, {"max_failures": "1"},
                                 {"batch": "1", "max_failures": "-1"}])
def test_bad_values_are_refused_and_nothing_is_stored(three, bad):
    h = three
    reply = h.op("jobs.submit", **run_steps("RUN x"), **bad)
    assert isinstance(reply, m.CtlReply) and not reply.ok
    assert "--batch" in reply.error or "--max-failures" in reply.error
    assert "\n" not in reply.error
    assert h.ok("jobs.list") == [] and jobs_in(h.pending) == []


def test_restart_mid_rollout_resumes_and_holds_the_rest(three):
    h = three
    res = submit(h, "RUN one", "RUN two", batch="1")
    answer(h, h.keys["a"], res["jobs"])
    h.tick(1.0)                               # a's results committed, b's tasks sent
    restart(h)
    assert to(h.from_node(h.keys["c"], m.Hello("c", "test", "boot1"), b"route-c"), "c") == []
    again = h.from_node(h.keys["b"], m.Hello("b", "test", "boot1"), b"route-b")
    assert to(again, "b") == res["jobs"]      # b's tasks, sent again (its journal answers)
    assert to(answer(h, h.keys["b"], res["jobs"][:1]), "c") == []
    out = answer(h, h.keys["b"], res["jobs"][1:])
    assert to(out, "c") == res["jobs"]
    answer(h, h.keys["c"], res["jobs"])
    assert {r["status"] for j in res["jobs"] for r in results(h, j).values()} == {"success"}


def test_restart_before_the_failure_was_written_still_stops(three):
    """The failure that stops the rollout arrives only after the restart (the node
    resends it): the held targets are cancelled then, never sent."""
    h = three
    res = submit(h, "RUN x", batch="1", max_failures="0")
    restart(h)                                # nothing of a's answer was stored
    for n in "bc":
        assert to(h.from_node(h.keys[n], m.Hello(n, "test", "boot1"), f"route-{n}".encode()),
                  n) == []
    assert to(h.from_node(h.keys["a"], m.Hello("a", "test", "boot1"), b"route-a"),
              "a") == res["jobs"]
    out = answer(h, h.keys["a"], res["jobs"], "failed")
    assert to(out, "b") == to(out, "c") == []
    assert {n: r["status"] for n, r in results(h, res["jobs"][0]).items()} == \
        {"a": "failed", "b": "cancelled", "c": "cancelled"}


def test_restart_after_the_stop_was_decided_but_not_written(three):
    """kill -9 after a's failure was stored but before b's and c's cancellations were:
    the restarted server decides the same from the stored results."""
    h = three
    res = submit(h, "RUN x", batch="1", max_failures="0")
    h.core.jobs.store.update_results([{**r, "status": "failed", "rc": 1, "finished": h.now}
                                      for r in [_row(res["jobs"][0], h.keys["a"])]])
    restart(h)
    for n in "abc":
        assert to(h.from_node(h.keys[n], m.Hello(n, "test", "boot1"), f"route-{n}".encode()),
                  n) == []
    got = results(h, res["jobs"][0])
    assert got["b"]["status"] == got["c"]["status"] == "cancelled"
    assert got["c"]["error"] == "not started: 1 of 3 targets failed, over --max-failures 0"


def _row(job_id: str, key: str) -> dict:
    return {"job_id": job_id, "node": key, "status": "", "rc": None, "stdout": "",
            "stderr": "", "cached": 0, "exec_time": None, "roundtrip_time": None,
            "transfer": None, "error": "", "sent": None, "finished": None}


def test_steps_with_their_own_targets_batch_by_node(three):
    """An orchestration whose steps target different nodes: a node's every job is in
    its batch; the order is the targets' as first met."""
    h = three
    from director.jobs.dsl import parse_line
    args = {"steps": [{"targets": ["c"], "async": False,
                       "jobs": [parse_line("RUN first").to_dict()]},
                      {"targets": ["a", "b", "c"], "async": False,
                       "jobs": [parse_line("RUN second").to_dict()]}],
            "targets": [], "wait": False, "base": "/", "batch": "2"}
    res = h.ok("jobs.submit", **args)
    first = h.pending
    assert to(first, "c") == res["jobs"] and to(first, "a") == [res["jobs"][1]]
    assert to(first, "b") == []
    answer(h, h.keys["c"], res["jobs"])
    out = answer(h, h.keys["a"], res["jobs"][1:])
    assert to(out, "b") == res["jobs"][1:]


def test_retry_rolls_out_again_in_batches(three):
    h = three
    res = submit(h, "RUN x", batch="1", max_failures="0")
    answer(h, h.keys["a"], res["jobs"], "failed")
    h.tick(1.0)
    again = h.ok("jobs.retry", id=res["orch"])
    assert to(h.pending, "a") == again["jobs"] and to(h.pending, "b") == []
    answer(h, h.keys["a"], again["jobs"], "failed")
    assert results(h, again["jobs"][0])["c"]["error"] == \
        "not started: 1 of 3 targets failed, over --max-failures 0"


def test_purging_a_rollout_forgets_its_settings(three):
    h = three
    res = submit(h, "RUN x", "RUN y", batch="2")
    for n in "abc":
        answer(h, h.keys[n], res["jobs"])
    h.tick(1.0)
    assert h.store.rollout(res["orch"]) is not None
    done = h.store.purge_step(0, 10, 0.0, set(), 1000)
    assert done[0] == 2 and h.store.rollout(res["orch"]) is None


def test_a_big_submission_made_a_slice_at_a_time_waits_for_its_unmade_tasks(three):
    """Past SUBMIT_SLICE tasks a submission's tasks are made over several loop turns:
    a batch is over only once its tasks not made yet have been made and have ended."""
    from director.server.jobsubmit import SUBMIT_SLICE

    h = three
    n = SUBMIT_SLICE // 3 + 50
    res = submit(h, *[f"RUN step {i}" for i in range(n)], batch="1")
    assert h.core.jobs.feeding                    # not every task was made at once
    out, done = h.pending, []
    for _ in range(1000):
        assert to(out, "b") == to(out, "c") == [], f"b or c started after {len(done)} of a's"
        mine = to(out, "a")
        if not mine:
            out = h.tick(0.01)
            if not to(out, "a"):
                break
            continue
        done += mine
        out = answer(h, h.keys["a"], mine)
        if len(done) == n:
            break
    assert sorted(done) == sorted(res["jobs"])
    assert len(to(out, "b")) > 0 and to(out, "c") == []


def test_a_cancel_not_yet_written_still_ends_the_held_batches_after_a_restart(three):
    h = three
    res = submit(h, "RUN x", batch="1")
    h.ok("jobs.cancel", id=res["orch"])
    restart(h)                                # the cancelled rows were not written
    for n in "bc":
        assert to(h.from_node(h.keys[n], m.Hello(n, "test", "boot1"), f"route-{n}".encode()),
                  n) == []
    answer(h, h.keys["a"], res["jobs"], "cancelled")
    got = results(h, res["jobs"][0])
    assert {n: r["status"] for n, r in got.items()} == dict.fromkeys("abc", "cancelled")


def test_a_big_rollout_killed_while_its_tasks_were_stored_resumes_in_batches(three):
    """kill -9 while a big batched submission was still being stored: the restart makes
    its missing tasks (refeed.py), and they are held in their batches like the rest."""
    from director.server.jobsubmit import SUBMIT_SLICE

    h = three
    n = SUBMIT_SLICE // 3 + 50
    res = submit(h, *[f"RUN step {i}" for i in range(n)], batch="1")
    assert h.core.jobs.feeding
    restart(h)                                # the second slice was never stored
    out = h.from_node(h.keys["b"], m.Hello("b", "test", "boot1"), b"route-b")
    out += h.from_node(h.keys["c"], m.Hello("c", "test", "boot1"), b"route-c")
    out += h.from_node(h.keys["a"], m.Hello("a", "test", "boot1"), b"route-a")
    done: list[str] = []
    for _ in range(1000):
        assert to(out, "b") == to(out, "c") == [], f"b or c started after {len(done)} of a's"
        mine = to(out, "a")
        if not mine:
            break
        done += mine
        out = answer(h, h.keys["a"], mine)
        if len(set(done)) == n:
            break
    assert set(done) == set(res["jobs"])
    assert to(out, "b") and to(out, "c") == []
