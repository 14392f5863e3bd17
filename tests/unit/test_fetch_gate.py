"""The server core's side of GET, in-process: only the node a GET is in flight on may
offer files and send chunks; the destination is the job's, never the node's; and a
GET's result is the server's record (a node's word of success does not make it so)."""

from __future__ import annotations

import pytest

from coretools import CoreHarness, jobs_in, run_steps, sent

from director.protocol import messages as m
from director.protocol.fetch import GetData, GetDone, GetOffer
from director.server.fetchgate import FetchChunk, FetchEnd, FetchStart


@pytest.fixture
def h(tmp_path):
    harness = CoreHarness(tmp_path)
    yield harness
    harness.close()


def submit(h: CoreHarness, line: str, **kw) -> m.Job:
    reply = h.op("jobs.submit", **run_steps(line, **kw))
    assert isinstance(reply, m.CtlReply) and reply.ok, reply
    (job,) = jobs_in(h.pending)
    return job


def test_an_offer_becomes_a_fetch_to_the_jobs_destination(h):
    web = h.accepted_node("web1")
    job = submit(h, "GET /var/log/app.log /srv/fetched")
    out = h.from_node(web, GetOffer(job.job_id, 4096), route=b"pull")
    (start,) = [a for a in out if isinstance(a, FetchStart)]
    assert (start.route, start.key, start.node, start.dest) == (b"pull", web, "web1",
                                                                "/srv/fetched")
    out = h.from_node(web, GetData(job.job_id, 0, 0, b"x"), route=b"pull")
    assert [type(a) for a in out] == [FetchChunk]


def test_offers_for_other_jobs_or_other_nodes_are_refused(h):
    web = h.accepted_node("web1")
    other = h.accepted_node("web2")
    get = submit(h, "GET /x /srv/f", targets=["web1"])
    run = submit(h, "RUN true", targets=["web1"])
    for key, job_id in ((other, get.job_id), (web, run.job_id), (web, "0badc0de")):
        out = h.from_node(key, GetOffer(job_id, 4096))
        assert not [a for a in out if isinstance(a, FetchStart)]
        (done,) = sent(out)
        assert isinstance(done, GetDone) and not done.ok and "not in flight" in done.error
    assert not h.from_node(other, GetData(get.job_id, 0, 0, b"x"))


def test_the_result_is_the_servers_record(h):
    web = h.accepted_node("web1")
    job = submit(h, "GET /x /srv/f")
    h.core.fetches.finished(job.job_id, web, "failed", "chunk 0 of 'x' failed its check",
                            {"files": 1, "bytes_total": 5})
    out = h.from_node(web, m.Result(job.job_id, "success", rc=0, exec_time=0.1))
    assert FetchEnd(web, job.job_id) in out
    r = h.ok("jobs.get", id=job.job_id)["results"]["web1"]
    assert r["status"] == "failed" and r["error"] == "chunk 0 of 'x' failed its check"
    assert r["transfer"]["files"] == 1 and r["transfer"]["bytes_sent"] == 0


def test_success_without_a_transfer_is_failed_and_stats_come_from_the_server(h):
    web = h.accepted_node("web1")
    lying = submit(h, "GET /x /srv/f")
    h.from_node(web, m.Result(lying.job_id, "success", rc=0, exec_time=0.1,
                              transfer=m.Transfer(9, 9, 9, 9, 9, 9)))
    r = h.ok("jobs.get", id=lying.job_id)["results"]["web1"]
    assert r["status"] == "failed" and "received no files" in r["error"]
    assert r["transfer"] is None
    honest = submit(h, "GET /y /srv/f")
    h.core.fetches.finished(honest.job_id, web, "success", "",
                            {"files": 2, "bytes_total": 10, "bytes_sent": 4, "skipped": 1})
    h.from_node(web, m.Result(honest.job_id, "success", rc=0, exec_time=0.1,
                              transfer=m.Transfer(9, 9, 9, 9, 9, 9)))
    r = h.ok("jobs.get", id=honest.job_id)["results"]["web1"]
    assert r["status"] == "success"
    assert r["transfer"] == {"files": 2, "bytes_total": 10, "bytes_sent": 4, "chunks_sent": 0,
                             "chunks_reused": 0, "skipped": 1}


def test_other_verbs_results_pass_untouched(h):
    web = h.accepted_node("web1")
    job = submit(h, """RUN echo '"verb":"GET"' GET""")  # quotes in JSON strings are escaped
    out = h.from_node(web, m.Result(job.job_id, "success", rc=0, stdout='"verb":"GET"'))
    assert not [a for a in out if isinstance(a, FetchEnd)]
    assert h.ok("jobs.get", id=job.job_id)["results"]["web1"]["status"] == "success"
