"""``jobs.plan`` in the server core, in-process: the submission is planned by the same
path as ``jobs.submit`` (targets, COPY manifests), answered as a plan, and nothing is
stored, queued or sent; a COPY a node reports done is what the next plan compares with."""

from __future__ import annotations

import pytest

from coretools import CoreHarness, builds, jobs_in, run_steps, sent

from director.protocol import messages as m
from director.transfer.chunking import DigestCache, build_manifest


@pytest.fixture
def h(tmp_path):
    harness = CoreHarness(tmp_path)
    yield harness
    harness.close()


def _finish_build(h, tmp_path, actions):
    (build,) = builds(actions)
    (pos, instr), = build.copies
    manifest, paths = build_manifest(list(instr.sources), instr.dest, base=tmp_path,
                                     chunk_size=4096, cache=DigestCache())
    h.core.jobs.on_manifests(build.ticket, {pos: (manifest, paths, set())}, None, h.now)
    h.core.after_events(h.now)
    return h.core.take()


def test_a_plan_stores_queues_and_sends_nothing(h):
    h.accepted_node("web1")
    h.accepted_node("web2")
    plan = h.ok("jobs.plan", **run_steps("RUN --stdout-arg X true", "RUN echo ${X}",
                                         wait=True))
    assert plan["dry_run"] is True and plan["tasks"] == 4
    assert [j["unresolved"] for j in plan["jobs"]] == [[], ["X"]]
    assert [(n["name"], [e["n"] for e in n["plan"]]) for n in plan["nodes"]] == [
        ("web1", [1, 2]), ("web2", [1, 2])]
    h.core.after_events(h.now)
    assert jobs_in(h.core.take()) == [] and h.ok("jobs.list") == []
    assert h.core.jobs.live_tasks() == 0 and not h.core.jobs.waiters
    # the hash is the one the stored job shows once submitted for real
    h.op("jobs.submit", **run_steps("RUN --stdout-arg X true", "RUN echo ${X}"))
    assert sorted(d["hash"] for d in h.ok("jobs.list")) == sorted(
        j["hash"] for j in plan["jobs"])


def test_jobs_submit_never_takes_a_dry_run_flag(h):
    h.accepted_node("web1")
    done = h.ok("jobs.submit", **run_steps("RUN true"), dry_run=True)
    assert "dry_run" not in done and len(h.ok("jobs.list")) == 1


def test_plan_errors_are_the_submit_errors(h):
    h.accepted_node("web1")
    reply = h.op("jobs.plan", **run_steps("RUN true", targets=["nosuch"]))
    assert isinstance(reply, m.CtlReply) and not reply.ok
    assert "unknown target 'nosuch'" in reply.error
    (build,) = builds(h.op("jobs.plan", **run_steps("COPY nothere /srv/")))
    h.core.jobs.on_manifests(build.ticket, None, "COPY source 'nothere' not found", h.now)
    (reply,) = [m.decode(a.frames) for a in h.core.take()]
    assert not reply.ok and "not found" in reply.error
    assert h.ok("jobs.list") == []


def test_a_copy_done_on_a_node_is_what_the_next_plan_compares_with(h, tmp_path):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "a.txt").write_bytes(b"a" * 5000)
    (tmp_path / "site" / "b.txt").write_bytes(b"b" * 10)
    web = h.accepted_node("web1")
    args = {**run_steps("COPY site/ /srv/www/"), "base": str(tmp_path)}

    def plan_files():
        reply = _finish_build(h, tmp_path, h.op("jobs.plan", **args))
        (doc,) = [m.decode(a.frames) for a in reply]
        copy = doc.result["nodes"][0]["plan"][0]["copy"]
        return copy["known"], {f["path"]: (f["status"], f["bytes"]) for f in copy["files"]}

    assert plan_files() == (False, {"/srv/www/a.txt": ("would send", 5000),
                                    "/srv/www/b.txt": ("would send", 10)})
    (job,) = jobs_in(_finish_build(h, tmp_path, h.op("jobs.submit", **args)))
    h.from_node(web, m.Result(job.job_id, "failed", rc=1, exec_time=0.01))
    assert plan_files()[0] is False  # a failed COPY tells nothing of the node's files
    (job,) = jobs_in(_finish_build(h, tmp_path, h.op("jobs.submit", **args)))
    h.from_node(web, m.Result(job.job_id, "success", rc=0, exec_time=0.01))
    assert plan_files() == (True, {"/srv/www/a.txt": ("unchanged", 0),
                                   "/srv/www/b.txt": ("unchanged", 0)})
    (tmp_path / "site" / "a.txt").write_bytes(b"a" * 4096 + b"c" * 904)
    assert plan_files() == (True, {"/srv/www/a.txt": ("would change", 904),
                                   "/srv/www/b.txt": ("unchanged", 0)})
    assert sent(h.core.take()) == []


def test_a_big_plan_is_bounded(h, tmp_path, monkeypatch):
    from director.server import dryrun

    (tmp_path / "site").mkdir()
    for name in "ab":
        (tmp_path / "site" / name).write_bytes(b"x")
    h.accepted_node("web1")
    h.accepted_node("web2")
    monkeypatch.setattr(dryrun, "MAX_PLAN_TASKS", 3)
    plan = h.ok("jobs.plan", **run_steps("RUN a", "RUN b"))
    assert plan["detailed"] is False and plan["tasks"] == 4
    assert [(n["name"], n["jobs"], "plan" in n) for n in plan["nodes"]] == [
        ("web1", 2, False), ("web2", 2, False)]
    assert [j["nodes"] for j in plan["jobs"]] == [2, 2] and "targets" not in plan["jobs"][0]
    monkeypatch.setattr(dryrun, "MAX_PLAN_TASKS", 100)
    monkeypatch.setattr(dryrun, "MAX_PLAN_FILES", 3)  # web1's two, then none for web2
    reply = _finish_build(h, tmp_path, h.op("jobs.plan", **{**run_steps("COPY site/ /s/"),
                                                            "base": str(tmp_path)}))
    (doc,) = [m.decode(a.frames) for a in reply]
    copies = [n["plan"][0]["copy"] for n in doc.result["nodes"]]
    assert [len(c["files"]) for c in copies] == [2, 0]
    assert [c["counts"]["would send"] for c in copies] == [2, 2]
