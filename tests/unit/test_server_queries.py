"""QUERY as a barrier in the server core, in-process (real SQLite, real encoding):
later jobs are held until the QUERY is final everywhere, then go out with the answers;
failures, cancels, bounds and a restart (server/queries.py)."""

from __future__ import annotations

import json

import pytest
from coretools import CoreHarness, jobs_in, submit

from director.jobs.dsl import parse_line
from director.protocol import messages as m
from director.protocol.answers import MAX_ANSWER
from director.server.core import CoreConfig, ServerCore


@pytest.fixture
def h(tmp_path):
    harness = CoreHarness(tmp_path)
    yield harness
    harness.close()


def answer(h: CoreHarness, key: str, job: m.Job, status: str = "success",
           stdout: str = "", route: bytes | None = None) -> list[m.Job]:
    """The node's result for ``job``; the jobs the server sends in return."""
    msg = m.Result(job.job_id, status, rc=0 if status == "success" else 1, stdout=stdout,
                   exec_time=0.01)
    return jobs_in(h.from_node(key, msg, route or b"r1"))


def by_node(jobs: list[m.Job]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for j in jobs:
        out.setdefault(j.instruction.verb, []).append(j.job_id)
    return out


def nodes(h: CoreHarness, *names: str) -> dict[str, str]:
    return {n: h.accepted_node(n, route=f"route-{n}".encode()) for n in names}


def doc(h: CoreHarness, job_id: str) -> dict:
    return h.ok("jobs.get", id=job_id)


def test_jobs_after_a_query_wait_for_every_target_then_carry_the_answers(h):
    keys = nodes(h, "n1", "n2")
    _, first = submit(h, "ARG a=1", "QUERY a", "RUN echo {{ query.n1.a }}")
    # each node gets ARG and QUERY; the RUN after the QUERY is held
    assert sorted(j.instruction.verb for j in first) == ["ARG", "ARG", "QUERY", "QUERY"]
    q = {j.job_id for j in first if j.instruction.verb == "QUERY"}.pop()
    qjob = next(j for j in first if j.job_id == q)
    arg = next(j for j in first if j.instruction.verb == "ARG")
    for name, key in keys.items():
        assert answer(h, key, arg, route=f"route-{name}".encode()) == []
    assert answer(h, keys["n1"], qjob, stdout='"10.0.0.1"\n', route=b"route-n1") == []
    # n2 has not answered: nothing after the QUERY has gone anywhere
    assert h.core.jobs.queries.held == 2
    released = answer(h, keys["n2"], qjob, stdout="", route=b"route-n2")
    assert [j.instruction.verb for j in released] == ["RUN", "RUN"]
    assert all(j.query == {"n1": {"a": "10.0.0.1"}} for j in released)  # n2: unset, no entry


def test_a_job_that_does_not_read_query_goes_without_the_answers(h):
    keys = nodes(h, "n1")
    _, jobs = submit(h, "QUERY a", "RUN true")
    released = answer(h, keys["n1"], jobs[0], stdout="1\n", route=b"route-n1")
    assert [j.instruction.command for j in released] == ["true"]
    assert released[0].query is None


def test_a_failed_query_stops_that_node_only_and_the_others_go_on_without_it(h):
    keys = nodes(h, "n1", "n2")
    _, jobs = submit(h, "QUERY a", "RUN echo {{ query | length }}")
    q = jobs[0]
    assert answer(h, keys["n1"], q, "failed", route=b"route-n1") == []
    released = answer(h, keys["n2"], q, stdout='"x"', route=b"route-n2")
    assert len(released) == 1 and released[0].query == {"n2": {"a": "x"}}
    run = doc(h, released[0].job_id)["results"]
    assert run["n1"]["status"] == "cancelled" and run["n1"]["error"] == "an earlier job failed"
    assert run["n2"]["status"] == "running"


@pytest.mark.parametrize("stdout, error", [
    ("x" * (MAX_ANSWER + 1), "larger than 65536 bytes"),
    ("not json", "is not JSON"),
    ('"\\ud800"', "is not JSON"),
    ("NaN", "is not JSON"),
    ("[" * 60_000, "is not JSON"),
])
def test_a_bad_answer_fails_the_jobs_that_read_query_and_nothing_else(h, stdout, error):
    keys = nodes(h, "n1")
    _, jobs = submit(h, "QUERY a", "RUN echo {{ query.n1.a }}", "RUN true")
    released = answer(h, keys["n1"], jobs[0], stdout=stdout, route=b"route-n1")
    assert released == []  # the reader failed, so its lane on n1 stops
    reader = doc(h, f"{jobs[0].job_id[:-4]}0002")["results"]["n1"]
    assert reader["status"] == "failed" and error in reader["error"]
    assert doc(h, f"{jobs[0].job_id[:-4]}0003")["results"]["n1"]["status"] == "cancelled"


def test_cancelling_held_jobs_ends_them_at_once(h):
    keys = nodes(h, "n1")
    _, jobs = submit(h, "QUERY a", "RUN echo {{ query }}")
    held = f"{jobs[0].job_id[:-4]}0002"
    done = h.ok("jobs.cancel", id=held)
    assert done["cancelled"] == 1
    assert doc(h, held)["results"]["n1"]["status"] == "cancelled"
    assert answer(h, keys["n1"], jobs[0], stdout="1", route=b"route-n1") == []
    assert h.core.jobs.queries.orchs == {}  # nothing left held or kept


def test_a_restarted_server_holds_the_rest_again_and_keeps_the_answers(h):
    keys = nodes(h, "n1", "n2")
    _, jobs = submit(h, "QUERY a", "RUN echo {{ query.n1.a }}")
    answer(h, keys["n1"], jobs[0], stdout='{"x": [1, 2]}', route=b"route-n1")
    h.tick()  # written
    core2 = ServerCore(h.store, CoreConfig(h.pair.public, h.pair.fingerprint), h.now + 5)
    assert core2.jobs.queries.held == 2
    for name, key in keys.items():
        core2.from_node(f"again-{name}".encode(), key, None,
                        m.encode(m.Hello(name, "test", "boot1")), h.now + 5)
    core2.after_events(h.now + 5)
    resent = jobs_in(core2.take())
    assert [j.instruction.verb for j in resent] == ["QUERY"]  # n2's, still in flight
    core2.from_node(b"again-n2", keys["n2"], None,
                    m.encode(m.Result(jobs[0].job_id, "success", rc=0, stdout='"b"')), h.now + 6)
    core2.after_events(h.now + 6)
    released = jobs_in(core2.take())
    assert len(released) == 2
    assert all(j.query == {"n1": {"a": {"x": [1, 2]}}, "n2": {"a": "b"}} for j in released)


def test_jobs_between_two_queries_wait_only_for_the_first(h):
    keys = nodes(h, "n1")
    _, jobs = submit(h, "QUERY a", "RUN echo {{ query.n1.a }}", "QUERY b",
                     "RUN echo {{ query.n1.b }}")
    first = answer(h, keys["n1"], jobs[0], stdout="1", route=b"route-n1")
    # the RUN and the second QUERY (it reads nothing) go; the last RUN waits for it
    assert [j.instruction.verb for j in first] == ["RUN", "QUERY"]
    assert first[0].query == {"n1": {"a": 1}}
    assert answer(h, keys["n1"], first[0], route=b"route-n1") == []
    last = answer(h, keys["n1"], first[1], stdout='"two"', route=b"route-n1")
    assert [j.query for j in last] == [{"n1": {"a": 1, "b": "two"}}]


def test_the_job_body_with_answers_is_a_valid_job(h):
    keys = nodes(h, "n1")
    _, jobs = submit(h, "QUERY a", 'RUN printf %s "{{ query.n1.a }}"')
    released = answer(h, keys["n1"], jobs[0], stdout=json.dumps("$(touch /tmp/x) {{ 7*7 }}"),
                      route=b"route-n1")
    assert released[0].query == {"n1": {"a": "$(touch /tmp/x) {{ 7*7 }}"}}
    assert released[0].instruction == parse_line('RUN printf %s "{{ query.n1.a }}"')


def test_after_a_restart_a_node_whose_query_failed_stays_stopped(h):
    keys = nodes(h, "n1", "n2")
    _, jobs = submit(h, "QUERY a", "RUN echo {{ query | length }}")
    answer(h, keys["n1"], jobs[0], "failed", route=b"route-n1")
    h.tick()
    core2 = ServerCore(h.store, CoreConfig(h.pair.public, h.pair.fingerprint), h.now + 5)
    assert core2.jobs.queries.held == 1  # n2's; n1's ended with its QUERY
    for name, key in keys.items():
        core2.from_node(f"again-{name}".encode(), key, None,
                        m.encode(m.Hello(name, "test", "boot1")), h.now + 5)
    core2.after_events(h.now + 5)
    core2.take()
    core2.from_node(b"again-n2", keys["n2"], None,
                    m.encode(m.Result(jobs[0].job_id, "success", rc=0, stdout='"x"')), h.now + 6)
    core2.after_events(h.now + 6)
    released = jobs_in(core2.take())
    assert [(j.instruction.verb, j.query) for j in released] == [("RUN", {"n2": {"a": "x"}})]
    core2.tick(h.now + 7)
    run = doc(h, f"{jobs[0].job_id[:-4]}0002")["results"]
    assert (run["n1"]["status"], run["n2"]["status"]) == ("cancelled", "running")
