"""The server core's rules, in-process: enrollment, roles, dispatch, results,
revocation, expiry, chunk serving and containment -- no sockets, no processes."""

from __future__ import annotations

import pytest
from coretools import CoreHarness, jobs_in, run_steps, sent, submit

from director.protocol import frames as fr
from director.protocol import messages as m
from director.trust import keystore


@pytest.fixture
def h(tmp_path):
    harness = CoreHarness(tmp_path)
    yield harness
    harness.close()


def result(job: m.Job, status: str = "success", **kw) -> m.Result:
    return m.Result(job.job_id, status, rc=kw.pop("rc", 0), exec_time=0.01, **kw)


# -- enrollment and roles ------------------------------------------------------------
def test_token_enrolls_at_once_and_hello_makes_the_node_online(h):
    key = h.accepted_node("web1")
    nodes = h.ok("nodes")
    assert [(n["name"], n["state"]) for n in nodes] == [("web1", "online")]
    assert h.core.keys.state(key) == "accepted"


def test_without_token_a_key_is_pending_and_may_only_ask(h):
    key = keystore.generate().public_z85
    out = sent(h.from_node(key, m.Enroll("db1")))
    assert out[0].state == "pending"
    refused = sent(h.from_node(key, m.Hello("db1", "v", "b")))
    assert refused == [m.Error("not_permitted", "HELLO is not permitted for a pending key")]
    assert h.ok("nodes") == []


def test_a_stranger_gets_nothing_for_anything_but_enroll(h):
    stranger = keystore.generate().public_z85
    assert h.from_node(stranger, m.Hello("x", "v", "b")) == []
    assert h.from_node(stranger, [b"D1", b"RESULT", b"{nonsense"]) == []
    assert h.core.peers.get(stranger) is None


def test_name_conflict_is_refused_and_the_holder_untouched(h):
    h.accepted_node("web1")
    other = keystore.generate().public_z85
    token = h.ok("token.create")["token"]
    out = sent(h.from_node(other, m.Enroll("web1", token)))
    assert out[0].state == "refused" and "already held" in out[0].reason
    assert [k["state"] for k in h.ok("keys.list")] == ["accepted"]


def test_pending_queue_is_bounded(h):
    states = [sent(h.from_node(keystore.generate().public_z85, m.Enroll(f"n{i}")))[0].state
              for i in range(7)]
    assert states == ["pending"] * 5 + ["refused"] * 2


def test_revoked_key_is_cut_off_on_its_next_message_and_its_jobs_lost(h):
    key = h.accepted_node("web1")
    submit(h, "RUN sleep 100")
    reply = h.ok("keys.revoke", name="web1")
    assert reply["state"] == "revoked"
    assert isinstance(sent(h.pending)[0], m.Revoked)
    out = sent(h.from_node(key, m.Heartbeat(0)))
    assert out == [m.Revoked("this node's key is revoked")]
    doc = h.ok("jobs.get", id="last")
    assert doc["results"]["web1"]["status"] == "lost"


# -- jobs and results ----------------------------------------------------------------
def test_job_goes_to_the_node_and_its_result_is_stored(h):
    key = h.accepted_node("web1")
    res, jobs = submit(h, "RUN echo hi")
    assert [j.instruction.command for j in jobs] == ["echo hi"]
    h.from_node(key, result(jobs[0], stdout="hi\n"))
    doc = h.ok("jobs.get", id=res["jobs"][0])
    assert doc["status"] == "success" and doc["results"]["web1"]["stdout"] == "hi\n"


def test_result_only_from_the_node_it_was_sent_to_and_only_once(h):
    web = h.accepted_node("web1")
    other = h.accepted_node("web2")
    res, jobs = submit(h, "RUN true", targets=["web1"])
    h.from_node(other, result(jobs[0], stdout="forged"))
    assert h.ok("jobs.get", id="last")["results"]["web1"]["status"] == "running"
    h.from_node(web, result(jobs[0], stdout="real"))
    h.from_node(web, result(jobs[0], "failed", rc=1, stdout="again"))
    doc = h.ok("jobs.get", id="last")
    assert doc["results"]["web1"]["stdout"] == "real"
    assert doc["status"] == "success"


@pytest.mark.parametrize("body", [
    b'{"job_id":"%s","status":"success","rc":18446744073709551616}',
    b'{"job_id":"%s","status":"success","stdout":"a\\ud800b"}',
    b'{"job_id":"%s","status":"success","exec_time":Infinity}',
    b'{"job_id":"%s","status":"success","exec_time":NaN}',
    b'{"job_id":"%s","status":"gone"}',
    b'{"job_id":"%s","status":"success","transfer":{"files":-1}}',
])
def test_hostile_result_is_refused_with_an_error_and_the_job_stays_in_flight(h, body):
    key = h.accepted_node("web1")
    _, jobs = submit(h, "RUN true")
    out = sent(h.from_node(key, [fr.VERSION, b"RESULT", body % jobs[0].job_id.encode()]))
    assert len(out) == 1 and isinstance(out[0], m.Error) and out[0].code == "bad_request"
    h.tick()  # the flush that used to raise in SQLite
    assert h.ok("jobs.get", id="last")["results"]["web1"]["status"] == "running"
    h.from_node(key, result(jobs[0]))
    assert h.ok("jobs.get", id="last")["status"] == "success"


def test_a_batch_keeps_its_good_results(h):
    key = h.accepted_node("web1")
    _, jobs = submit(h, "RUN a", "RUN b")
    good = m.encode_body(result(jobs[0]))
    bad = b'{"job_id":"%s","status":"success","rc":1e3}' % jobs[1].job_id.encode()
    h.from_node(key, fr.batch("RESULTS", [good, bad]))
    doc = h.ok("jobs.get", id=jobs[0].job_id)
    assert doc["status"] == "success"


def test_a_failure_cancels_the_rest_of_the_lane(h):
    key = h.accepted_node("web1")
    res, jobs = submit(h, "RUN false", "RUN never")
    h.from_node(key, result(jobs[0], "failed", rc=1))
    if len(jobs) > 1:  # pipelined: the node cancels the rest itself
        h.from_node(key, result(jobs[1], "cancelled"))
    statuses = [h.ok("jobs.get", id=j)["status"] for j in res["jobs"]]
    assert statuses == ["failed", "cancelled"]


def test_waiting_operator_gets_every_document_in_one_reply(h):
    key = h.accepted_node("web1")
    reply = h.op("jobs.submit", **run_steps("RUN one", wait=True))
    assert isinstance(reply, list)  # deferred: only a "submitted" event so far
    jobs = jobs_in(reply)
    actions = h.from_node(key, result(jobs[0], stdout="1"))
    final = [m.decode(a.frames) for a in actions if hasattr(a, "rid")]
    done = [r for r in final if isinstance(r, m.CtlReply)]
    assert len(done) == 1 and done[0].result_json and done[0].failed == 0
    import json
    assert json.loads(done[0].data)[0]["results"]["web1"]["stdout"] == "1"


def test_a_silent_node_expires_and_its_jobs_end_lost(h):
    h.accepted_node("web1")
    submit(h, "RUN sleep 1000")
    h.tick(31.0)
    assert h.ok("jobs.get", id="last")["results"]["web1"]["status"] == "lost"
    assert h.ok("nodes")[0]["state"] == "offline"


def test_a_restarted_agent_is_asked_again_and_its_journal_answers(h):
    key = h.accepted_node("web1")
    _, jobs = submit(h, "RUN sleep 1000")
    again = h.from_node(key, m.Hello("web1", "test", "boot2"), b"route-web1")
    assert [j.job_id for j in jobs_in(again)] == [jobs[0].job_id]
    h.from_node(key, result(jobs[0], "lost", rc=None, error="the agent restarted"))
    doc = h.ok("jobs.get", id="last")
    assert doc["results"]["web1"]["status"] == "lost"
    assert doc["results"]["web1"]["error"] == "the agent restarted"


def test_the_same_agent_reconnecting_gets_its_jobs_again_on_the_new_route(h):
    key = h.accepted_node("web1")
    _, jobs = submit(h, "RUN sleep 1")
    again = h.from_node(key, m.Hello("web1", "test", "boot1"), b"new-route")
    assert [j.job_id for j in jobs_in(again)] == [jobs[0].job_id]
    assert all(a.route == b"new-route" for a in again)


# -- chunks --------------------------------------------------------------------------
def test_chunks_are_refused_for_jobs_not_in_flight_on_that_node(h):
    key = h.accepted_node("web1")
    refused = m.ChunkErr("deadbeef", -1, -1, "this job is not in flight on this node")
    assert sent(h.from_node(key, m.ChunkReq("deadbeef", ((0, 0),)))) == [refused]


def test_copy_waits_for_its_manifest_then_serves_only_its_chunks(h, tmp_path):
    from coretools import builds

    from director.server.events import ServeChunk
    from director.transfer.chunking import DigestCache, build_manifest

    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "a.txt").write_bytes(b"x" * 10_000)
    web = h.accepted_node("web1")
    other = h.accepted_node("web2")
    args = run_steps("COPY site/ /srv/www/", targets=["web1"])
    args["base"] = str(tmp_path)
    pending = h.op("jobs.submit", **args)
    (build,) = builds(pending)
    assert jobs_in(pending) == []  # nothing is sent before the manifest exists
    cache = DigestCache()
    (pos, instr), = build.copies
    manifest, paths = build_manifest(list(instr.sources), instr.dest, base=tmp_path,
                                     chunk_size=4096, cache=cache)
    h.core.jobs.on_manifests(build.ticket, {pos: (manifest, paths, set())}, None, h.now)
    h.core.after_events(h.now)
    actions = h.core.take()
    (job,) = jobs_in(actions)
    assert job.manifest == manifest and job.hash_extra == manifest.digest()
    assert [r for r in sent(actions) if isinstance(r, m.CtlReply)] == []
    served = h.from_node(web, m.ChunkReq(job.job_id, ((0, 0), (0, 2))), b"side")
    assert [(a.file, a.chunk, a.route) for a in served if isinstance(a, ServeChunk)] == [
        (0, 0, b"side"), (0, 2, b"side")]
    assert all(a.path == paths[0] for a in served if isinstance(a, ServeChunk))
    theirs = h.from_node(other, m.ChunkReq(job.job_id, ((0, 0),)))  # not its job
    assert not any(isinstance(a, ServeChunk) for a in theirs)
    assert [x.file for x in sent(theirs)] == [-1]
    same = h.from_node(web, m.ChunkReq(job.job_id, ((0, 1),) * 64), b"side")
    assert len([a for a in same if isinstance(a, ServeChunk)]) == 1  # once per request
    bad = sent(h.from_node(web, m.ChunkReq(job.job_id, ((5, 0),)), b"side"))
    assert bad == [m.ChunkErr(job.job_id, -1, -1, "bad chunk request")]


def test_a_failed_manifest_build_is_the_operators_error(h):
    from coretools import builds

    h.accepted_node("web1")
    (build,) = builds(h.op("jobs.submit", **run_steps("COPY nothere /srv/")))
    h.core.jobs.on_manifests(build.ticket, None, "COPY source 'nothere' not found", h.now)
    (reply,) = [m.decode(a.frames) for a in h.core.take()]
    assert not reply.ok and "not found" in reply.error
    assert h.ok("jobs.list") == []  # nothing was stored


# -- operators and containment -------------------------------------------------------
def test_bad_operator_requests_get_clear_errors(h):
    assert "unknown control operation" in h.op("nope").error
    reply = h.op("jobs.submit", steps="x")
    assert not reply.ok and "nothing to run" in reply.error
    h.core.request(b"op", [b"D1", b"CTL", b"[]"], h.now)
    bad = m.decode(h.core.take()[0].frames)
    assert not bad.ok and "must be a JSON object" in bad.error
    assert h.ok("health")["role"] == "server"


def test_storage_full_refuses_submissions_keeps_results_and_recovers(h):
    key = h.accepted_node("web1")
    _, jobs = submit(h, "RUN one")
    conn = h.store.state.conn
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count={pages}")  # the database file cannot grow: full
    filler = "x" * 200_000
    h.from_node(key, result(jobs[0], stdout=filler))
    h.tick()
    assert h.core.jobs.storage_error is not None
    reply = h.op("jobs.submit", **run_steps("RUN two"))
    assert not reply.ok and reply.error.startswith("server storage full:")
    assert h.ok("health")["role"] == "server"  # still serving
    conn.execute("PRAGMA max_page_count=1073741823")
    h.tick()
    assert h.core.jobs.storage_error is None
    assert h.ok("jobs.get", id=jobs[0].job_id)["results"]["web1"]["stdout"] == filler
    res, _ = submit(h, "RUN three")
    assert res["tasks"] == 1


# -- delivery: acks, idempotent results, routes, restarts ----------------------------
def acks(actions: list, route: bytes | None = None) -> list[str]:
    return [i for msg in sent(actions, route) if isinstance(msg, m.Ack) for i in msg.job_ids]


def test_results_are_acked_only_after_they_are_committed(h):
    key = h.accepted_node("web1")
    _, jobs = submit(h, "RUN one")
    assert acks(h.from_node(key, result(jobs[0]), b"route-web1")) == []
    assert acks(h.tick(), b"route-web1") == [jobs[0].job_id]
    assert h.store.result_status(jobs[0].job_id, key)[0] == "success"


def test_no_ack_while_storage_fails_and_the_ack_follows_the_write(h):
    key = h.accepted_node("web1")
    _, jobs = submit(h, "RUN one")
    conn = h.store.state.conn
    conn.execute(f"PRAGMA max_page_count={conn.execute('PRAGMA page_count').fetchone()[0]}")
    h.from_node(key, result(jobs[0], stdout="y" * 300_000))
    assert acks(h.tick()) == []
    conn.execute("PRAGMA max_page_count=1073741823")
    assert acks(h.tick()) == [jobs[0].job_id]


def test_a_resent_result_is_acked_again_and_stored_once(h):
    key = h.accepted_node("web1")
    _, jobs = submit(h, "RUN one")
    h.from_node(key, result(jobs[0], stdout="first"))
    h.tick()
    h.from_node(key, result(jobs[0], stdout="second"))
    assert acks(h.tick()) == [jobs[0].job_id]
    assert h.ok("jobs.get", id="last")["results"]["web1"]["stdout"] == "first"


def test_a_real_result_replaces_lost_and_a_foreign_one_is_never_acked(h):
    key = h.accepted_node("web1")
    other = h.accepted_node("web2")
    _, jobs = submit(h, "RUN one", targets=["web1"])
    h.tick(31.0)  # web1 silent past expiry: lost
    assert h.ok("jobs.get", id="last")["results"]["web1"]["status"] == "lost"
    h.from_node(other, m.Hello("web2", "test", "boot1"), b"route-web2")
    h.from_node(other, result(jobs[0], stdout="forged"), b"route-web2")
    assert acks(h.tick(), b"route-web2") == []
    h.from_node(key, m.Hello("web1", "test", "boot1"), b"route-web1")
    h.from_node(key, result(jobs[0], stdout="it ran"), b"route-web1")
    assert acks(h.tick(), b"route-web1") == [jobs[0].job_id]
    doc = h.ok("jobs.get", id="last")
    assert doc["results"]["web1"]["status"] == "success"
    assert doc["results"]["web1"]["stdout"] == "it ran"


def test_a_result_for_a_purged_job_is_acked_and_dropped(h):
    key = h.accepted_node("web1")
    _, jobs = submit(h, "RUN one")
    h.from_node(key, result(jobs[0], stdout="first"))
    h.tick()
    assert h.ok("jobs.purge", keep=0)["jobs"] == 1
    h.from_node(key, result(jobs[0], stdout="resent after a reconnect"))
    assert acks(h.tick()) == [jobs[0].job_id]  # or the node resends it forever
    assert h.store.table_counts() == (0, 0)


def test_results_on_a_new_route_make_it_current_before_any_hello(h):
    key = h.accepted_node("web1")
    _, jobs = submit(h, "RUN a", "RUN b", "RUN c")
    actions = h.from_node(key, result(jobs[0]), b"fresh-route") + h.tick()
    assert all(a.route == b"fresh-route" for a in actions if hasattr(a, "route"))
    assert acks(actions, b"fresh-route") == [jobs[0].job_id]


def test_after_a_server_restart_running_jobs_are_resent_on_hello(h, tmp_path):
    from director.server.core import CoreConfig, ServerCore

    key = h.accepted_node("web1")
    _, jobs = submit(h, "RUN sleep 5")
    h.tick()
    core2 = ServerCore(h.store, CoreConfig(h.pair.public, h.pair.fingerprint), h.now + 5)
    core2.from_node(b"after", key, None, m.encode(m.Hello("web1", "test", "boot1")), h.now + 5)
    core2.after_events(h.now + 5)
    again = core2.take()
    assert [j.job_id for j in jobs_in(again)] == [jobs[0].job_id]
    core2.from_node(b"after", key, None, m.encode(result(jobs[0])), h.now + 6)
    core2.tick(h.now + 6)
    assert acks(core2.take(), b"after") == [jobs[0].job_id]
    assert h.store.result_status(jobs[0].job_id, key)[0] == "success"


def test_a_closed_connection_loses_its_route_and_a_stranger_reusing_it_gets_nothing(h):
    key = h.accepted_node("web1")
    h.core.from_node(b"route-web1", key, None, m.encode(m.Heartbeat(0)), h.now, fd=41)
    h.core.take()
    h.core.connection_closed(41, h.now)
    res, _ = submit(h, "RUN secret")
    assert jobs_in(h.pending) == []  # queued: no live route for web1
    stranger = keystore.generate().public_z85
    assert h.from_node(stranger, m.Enroll("x"), b"route-web1") != []  # pending reply only
    assert jobs_in(h.tick()) == []
    assert h.ok("jobs.get", id="last")["results"]["web1"]["status"] == "queued"
    back = h.from_node(key, m.Heartbeat(0), b"route-web1b")  # web1 speaks again
    assert [(j.job_id, a.route) for a in back for j in jobs_in([a])] == [
        (res["jobs"][0], b"route-web1b")]


def test_a_failed_send_puts_the_jobs_back_unsent_never_lost(h):
    key = h.accepted_node("web1")
    _, jobs = submit(h, "RUN a", "RUN b")
    h.core.jobs.undelivered(key, tuple(j.job_id for j in jobs), h.now)
    doc = [h.ok("jobs.get", id=j.job_id)["results"]["web1"]["status"] for j in jobs]
    assert doc == ["queued", "queued"]
    again = h.from_node(key, m.Heartbeat(0), b"route-web1c")
    assert [j.job_id for j in jobs_in(again)] == [j.job_id for j in jobs]


# -- answering bad messages, quietly -------------------------------------------------
def test_bad_messages_are_answered_with_what_was_wrong(h):
    key = h.accepted_node("web1")
    codes = [sent(h.from_node(key, frames))[0].code for frames in (
        [b"D9", b"HEARTBEAT", b"{}"], [fr.VERSION, b"NOPE", b"{}"],
        [fr.VERSION, b"RESULT", b'{"job_id":"deadbeef","status":"success","rc":1e3}'])]
    assert codes == ["unsupported_version", "unknown_type", "bad_request"]


def test_a_flood_of_bad_messages_costs_a_few_replies_and_one_log_line(h, caplog):
    import logging

    key = h.accepted_node("web1")
    caplog.set_level(logging.INFO, logger="director.server")
    replies = sum(len(sent(h.from_node(key, [fr.VERSION, b"NOPE", b"{}"])))
                  for _ in range(1000))
    assert 1 <= replies <= 25
    lines = [r for r in caplog.records if "bad message" in r.getMessage()]
    assert len(lines) == 1
    h.now += 61
    h.from_node(key, [fr.VERSION, b"NOPE", b"{}"])
    lines = [r.getMessage() for r in caplog.records if "bad message" in r.getMessage()]
    assert len(lines) == 2 and "999 more like it in the last minute" in lines[1]


# -- security events -----------------------------------------------------------------
def test_security_events_are_kept_for_operators_without_secrets(h):
    key = h.accepted_node("web1")
    intruder = keystore.generate().public_z85
    token = h.ok("token.create")
    h.from_node(intruder, m.Enroll("web1", token["token"]))        # name conflict
    h.from_node(intruder, m.Enroll("db1", "dj1.bad.token.x"))      # refused token
    h.from_node(key, m.Hello("db9", "v", "boot1"), b"route-web1")  # claims another name
    h.ok("keys.revoke", name="web1")
    h.ok("token.revoke", id=token["id"])
    h.core.handshakes_refused(7, h.now)
    h.tick()
    events = h.ok("events.list", since=3600)
    kinds = [e["event"] for e in events]
    for kind in ("token_created", "token_used", "name_conflict", "token_refused",
                 "name_claim", "key_revoked", "token_revoked", "handshake_refused"):
        assert kind in kinds, (kind, kinds)
    claim = next(e for e in events if e["event"] == "name_claim")
    assert claim["name"] == "web1" and "db9" in claim["detail"] and claim["fingerprint"]
    assert token["token"] not in str(events)  # ids only, never a secret
    assert set(events[0]) == {"time", "event", "fingerprint", "name", "address", "detail"}


def test_a_node_repeating_a_false_claim_is_recorded_once_a_minute(h):
    key = h.accepted_node("web1")
    for _ in range(50):
        h.from_node(key, m.Hello("other", "v", "boot1"), b"route-web1")
    h.tick()
    assert [e["event"] for e in h.ok("events.list")].count("name_claim") == 1


def test_a_node_given_up_on_may_finish_pulling_and_its_result_replaces_lost(h, tmp_path):
    from coretools import builds

    from director.server.events import ServeChunk
    from director.transfer.chunking import DigestCache, build_manifest

    (tmp_path / "f.bin").write_bytes(b"z" * 9000)
    web = h.accepted_node("web1")
    args = run_steps("COPY f.bin /srv/f.bin")
    args["base"] = str(tmp_path)
    (build,) = builds(h.op("jobs.submit", **args))
    (pos, instr), = build.copies
    manifest, paths = build_manifest(list(instr.sources), instr.dest, base=tmp_path,
                                     chunk_size=4096, cache=DigestCache())
    h.core.jobs.on_manifests(build.ticket, {pos: (manifest, paths, set())}, None, h.now)
    h.core.after_events(h.now)
    (job,) = jobs_in(h.core.take())
    h.tick(31.0)  # silent past its expiry: the server ends it lost
    assert h.ok("jobs.get", id=job.job_id)["results"]["web1"]["status"] == "lost"
    back = h.from_node(web, m.ChunkReq(job.job_id, ((0, 2),)), b"side")
    assert [a.chunk for a in back if isinstance(a, ServeChunk)] == [2]
    h.from_node(web, result(job), b"route-web1")
    assert h.ok("jobs.get", id=job.job_id)["results"]["web1"]["status"] == "success"
