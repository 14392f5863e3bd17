"""jobs.cancel in the server core: queued tasks end unsent, in-flight ones are told
to stop (again before any resend after a reconnect) and end as their node says."""

from __future__ import annotations

import pytest

from coretools import CoreHarness, jobs_in, run_steps, sent

from director.protocol import messages as m


@pytest.fixture
def h(tmp_path):
    harness = CoreHarness(tmp_path)
    yield harness
    harness.close()


def submit(h: CoreHarness, *lines: str, allow_offline: bool = False,
           **kw) -> tuple[dict, list[m.Job]]:
    reply = h.op("jobs.submit", **run_steps(*lines, **kw), allow_offline=allow_offline)
    assert isinstance(reply, m.CtlReply) and reply.ok, reply
    return reply.result, jobs_in(h.pending)


def cancels(actions: list) -> list[str]:
    return [j for msg in sent(actions) if isinstance(msg, m.Cancel) for j in msg.job_ids]


def statuses(h: CoreHarness, ids: list[str]) -> list[str]:
    return [h.ok("jobs.get", id=j)["results"]["web1"]["status"] for j in ids]


def test_cancel_ends_queued_tasks_unsent_and_tells_the_node_to_stop_the_rest(h):
    key = h.accepted_node("web1")
    res, flying = submit(h, *["RUN sleep 100"] * 100)
    assert 0 < len(flying) < 100            # a window in flight, the rest queued here
    done = h.ok("jobs.cancel", id="last")
    assert done == {"id": res["orch"], "jobs": 100, "cancelled": 100 - len(flying),
                    "stopping": len(flying)}
    assert cancels(h.core.take() or h.pending) == [j.job_id for j in flying]
    unsent = [j for j in res["jobs"] if j not in {f.job_id for f in flying}]
    assert set(statuses(h, unsent)) == {"cancelled"}
    # nothing more goes out, however long we wait
    assert jobs_in(h.tick(1.0)) == []
    # the node stops them: each ends as the node says
    h.from_node(key, m.Results(tuple(m.Result(j.job_id, "cancelled", error="stopped")
                                     for j in flying)))
    assert set(statuses(h, res["jobs"])) == {"cancelled"}
    assert h.ok("jobs.cancel", id=res["orch"])["stopping"] == 0   # nothing left to stop


def test_a_reconnecting_node_hears_the_cancel_before_its_jobs_again(h):
    key = h.accepted_node("web1")
    _, flying = submit(h, "RUN sleep 100")
    h.ok("jobs.cancel", id=flying[0].job_id)
    again = h.from_node(key, m.Hello("web1", "test", "boot1"), b"route-2")
    kinds = [type(msg).__name__ for msg in sent(again)]
    assert kinds.index("Cancel") < kinds.index("Jobs" if "Jobs" in kinds else "Job")
    h.from_node(key, m.Result(flying[0].job_id, "cancelled", error="stopped"), b"route-2")
    assert cancels(h.from_node(key, m.Hello("web1", "test", "boot1"), b"route-3")) == []


def test_a_job_that_finished_is_not_touched_and_unknown_ids_are_refused(h):
    key = h.accepted_node("web1")
    res, jobs = submit(h, "RUN true")
    h.from_node(key, m.Result(jobs[0].job_id, "success", rc=0))
    assert h.ok("jobs.cancel", id=jobs[0].job_id)["stopping"] == 0
    assert statuses(h, res["jobs"]) == ["success"]
    for bad in ("ffffffffffff", "", 5):
        reply = h.op("jobs.cancel", id=bad)
        assert isinstance(reply, m.CtlReply) and not reply.ok and reply.error


def test_tasks_for_an_offline_node_end_at_once(h):
    h.accepted_node("web1")
    h.tick(31.0)                              # web1 expired: offline
    res, sent_jobs = submit(h, "RUN true", targets=["web1"], allow_offline=True)
    assert sent_jobs == []
    assert h.ok("jobs.cancel", id="last")["cancelled"] == 1
    assert statuses(h, res["jobs"]) == ["cancelled"]
