"""The agent's rules, in-process: AgentCore fed plain events, its actions checked.

No sockets, no processes, no clock: ``now`` is passed in, frames are built with
the real protocol encoder, outcomes are the executor's own ``Outcome``.
"""

from __future__ import annotations

import math

import pytest

from director.client import core as core_mod
from director.client.core import (MAX_PROCESSES, RESULT_BATCH, RESULT_DELAY, AgentCore,
                                  Reply, Send, StartCopy, StartRun, Stop)
from director.jobs.dsl import parse_line
from director.jobs.executor import Outcome
from director.protocol import messages as M
from director.protocol.frames import dumps

HB = 1.0


def new(now: float = 0.0) -> AgentCore:
    return AgentCore("web1", "b00t", HB, now, version="9.9")


def accepted(now: float = 0.0) -> AgentCore:
    c = new(now)
    c.link_up(now)
    c.frames(M.encode(M.Enrolled("accepted", "web1")), now)
    return c


def jid(n: int) -> str:
    return f"{n:08x}"


def job(n: int, line: str = "RUN true", lane: str = "aaaaaaaa.0", **kw) -> M.Job:
    return M.Job(jid(n), parse_line(line), lane, n, **kw)


def frames(*msgs: M.Msg) -> list[bytes]:
    assert len(msgs) == 1
    return M.encode(msgs[0])


def raw(mtype: str, body: dict) -> list[bytes]:
    return [b"D1", mtype.encode(), dumps(body).encode()]


def sent(actions: list) -> list[M.Msg]:
    return [a.msg for a in actions if isinstance(a, Send)]


def results(actions: list) -> list[M.Result]:
    out = []
    for m in sent(actions):
        if isinstance(m, M.Result):
            out.append(m)
        elif isinstance(m, M.Results):
            out.extend(m.items)
    return out


def started(actions: list) -> list[str]:
    return [a.job.job_id for a in actions if isinstance(a, (StartRun, StartCopy))]


def ok(rc: int = 0, **kw) -> Outcome:
    return Outcome("success", rc=rc, exec_time=0.01, **kw)


def bad(rc: int = 1) -> Outcome:
    return Outcome("failed", rc=rc, exec_time=0.01)


# -- link, enrollment, HELLO ---------------------------------------------------------
def test_link_up_says_hello_with_name_version_and_boot():
    c = new()
    assert sent(c.link_up(0.0)) == [M.Hello("web1", "9.9", "b00t")]
    assert c.linked and c.state == "connecting"


def test_auth_refused_stops_with_exit_1_once():
    c = new()
    acts = c.auth_refused(0.0)
    assert [type(a) for a in acts] == [Stop] and acts[0].code == 1
    assert "refused this node's key" in acts[0].reason
    assert c.auth_refused(0.1) == []  # one stop is enough


def test_handshake_failure_is_not_fatal():
    c = new()
    assert c.handshake_failed(0.0) == []
    assert c.stopped is None


def test_handshakes_closed_by_the_peer_stop_the_agent_only_after_many_and_long():
    from director.client.linkstate import MISMATCH_SPAN, MISMATCH_TRIES

    c = new()
    for i in range(MISMATCH_TRIES * 3):       # many, but all within the span
        assert c.handshake_failed(i * MISMATCH_SPAN / (MISMATCH_TRIES * 4), quick=True) == []
    acts = c.handshake_failed(MISMATCH_SPAN + 1, quick=True)
    assert [type(a) for a in acts] == [Stop] and acts[0].code == 1
    assert "does not hold the pinned server key" in acts[0].reason


def test_a_silent_failure_or_a_good_handshake_resets_the_count():
    from director.client.linkstate import MISMATCH_SPAN, MISMATCH_TRIES

    c = new()
    step = MISMATCH_SPAN / (MISMATCH_TRIES + 2)      # many closes, within the span
    for i in range(MISMATCH_TRIES):
        c.handshake_failed(i * step, quick=True)
    c.handshake_failed(MISMATCH_SPAN, quick=False)   # nothing answered: a server down
    assert c.handshake_failed(MISMATCH_SPAN + 1, quick=True) == []   # counting anew
    for i in range(MISMATCH_TRIES):
        c.handshake_failed(MISMATCH_SPAN + 2 + i * step, quick=True)
    c.link_up(MISMATCH_SPAN * 2 + 3)                 # a good handshake
    for i in range(MISMATCH_TRIES):
        assert not any(isinstance(a, Stop) for a in
                       c.handshake_failed(MISMATCH_SPAN * 3 + i * step, quick=True))
    assert c.stopped is None


def test_a_server_down_for_long_is_one_log_line(caplog):
    c = new()
    with caplog.at_level("WARNING", logger="director.client"):
        for i in range(500):
            c.handshake_failed(i * 5.0)
        c.link_up(5000.0)
        c.link_down(5001.0)
        for i in range(100):
            c.handshake_failed(5002.0 + i * 5)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines
    assert "no handshake answer" in lines[0] and "lost the server" in lines[1]


def test_accepted_takes_the_servers_name_and_serves():
    c = new()
    c.link_up(0.0)
    c.frames(frames(M.Enrolled("accepted", "renamed")), 0.1)
    assert c.state == "accepted" and c.name == "renamed"
    (reply,) = c.control(b"id", frames(M.Ctl("health", {})))
    assert isinstance(reply, Reply) and reply.ident == b"id"
    assert reply.msg.ok and reply.msg.result["serving"] is True
    assert reply.msg.result["name"] == "renamed" and reply.msg.result["role"] == "client"


def test_pending_then_accepted_says_hello_again():
    c = new()
    c.link_up(0.0)
    assert sent(c.frames(frames(M.Enrolled("pending", "web1")), 0.1)) == []
    assert c.state == "pending"
    assert sent(c.frames(frames(M.Enrolled("accepted", "web1")), 0.2)) == [
        M.Hello("web1", "9.9", "b00t")]


@pytest.mark.parametrize("msg,words", [
    (M.Enrolled("rejected", "web1", "operator said no"), "refused this node: operator said no"),
    (M.Enrolled("revoked", "web1"), "refused this node: revoked"),
    (M.Revoked("key revoked"), "cut off by the server: key revoked"),
])
def test_refusal_and_revocation_stop_the_agent(msg, words):
    c = new()
    c.link_up(0.0)
    (stop,) = c.frames(frames(msg), 0.1)
    assert isinstance(stop, Stop) and stop.code == 1 and words in stop.reason


def test_not_permitted_while_not_accepted_asks_for_enrollment_status():
    c = new()
    c.link_up(0.0)
    assert sent(c.frames(frames(M.Error("not_permitted", "pending")), 0.1)) == [M.EnrollStatus()]
    assert c.state == "pending"


def test_other_errors_are_only_logged():
    c = accepted()
    assert c.frames(frames(M.Error("not_permitted", "x")), 0.1) == []
    assert c.frames(frames(M.Error("internal", "oops")), 0.1) == []
    assert c.state == "accepted" and c.stopped is None


def test_link_down_goes_back_to_connecting_and_stops_serving():
    c = accepted()
    c.link_down(1.0)
    assert c.state == "connecting"
    (reply,) = c.control(b"i", frames(M.Ctl("health", {})))
    assert reply.msg.result["serving"] is False


def test_unanswered_hello_means_the_key_is_unknown():
    c = new()
    c.link_up(10.0)
    limit = max(5.0, 3 * HB)
    assert not any(isinstance(a, Stop) for a in c.tick(10.0 + limit - 0.01))
    assert c.next_deadline() <= 10.0 + limit
    (stop,) = [a for a in c.tick(10.0 + limit + 0.01) if isinstance(a, Stop)]
    assert "does not answer" in stop.reason


def test_any_answer_clears_the_unknown_key_deadline():
    c = new()
    c.link_up(0.0)
    c.frames(frames(M.Error("internal", "busy")), 1.0)
    assert not any(isinstance(a, Stop) for a in c.tick(100.0))


def test_heartbeat_carries_busy_lanes_and_only_when_link_is_up():
    c = accepted()
    c.frames(frames(job(1, lane="aaaaaaaa.0")), 0.0)
    c.frames(frames(job(2, lane="bbbbbbbb.0")), 0.0)
    assert sent(c.tick(HB)) == [M.Heartbeat(running=2)]
    assert sent(c.tick(HB + 0.5)) == []  # not due yet
    c.link_down(HB + 0.6)
    assert sent(c.tick(2 * HB + 0.1)) == []


# -- malformed input ------------------------------------------------------------------
@pytest.mark.parametrize("fr", [
    [b"D1"], [b"XX", b"JOB", b"{}"], [b"D1", b"NOPE", b"{}"], [b"D1", b"JOB", b"not json"],
    [b"D1", b"JOB", b'{"job_id": 5}'], [b"D1", b"RESULT", b'{"rc": NaN}'],
    [b"D1", b"ENROLLED", b'{"state": "accepted", "name": "\\ud800"}'],
    [b"D1", b"JOB", b"\xff\xfe"], "not frames", None,
])
def test_malformed_messages_are_dropped_without_raising(fr):
    c = accepted()
    assert c.frames(fr, 1.0) == []
    assert c.stopped is None and c.state == "accepted"


def test_job_whose_instruction_does_not_decode_is_answered_failed():
    c = accepted()
    acts = c.frames(raw("JOB", {"job_id": jid(7), "instruction": {"verb": "NOPE"},
                                "lane": "aaaaaaaa.0", "seq": 0}), 1.0) + c.tick(1.0)
    assert started(acts) == []
    (r,) = results(acts)
    assert r.job_id == jid(7) and r.status == "failed" and "malformed job" in r.error
    # and a resend of it is answered the same, never run
    again = c.frames(raw("JOB", {"job_id": jid(7), "instruction": {"verb": "RUN"},
                                 "lane": "aaaaaaaa.0", "seq": 0}), 2.0) + c.tick(2.0)
    assert started(again) == [] and results(again) == [r]


def test_unexpected_message_types_are_ignored():
    c = accepted()
    assert c.frames(frames(M.Hello("x", "1")), 0.0) == []
    assert c.frames(frames(M.Chunk(jid(1), 0, 0, b"x")), 0.0) == []


def test_jobs_batch_runs_the_good_items_and_drops_the_bad():
    c = accepted()
    body = {"jobs": [job(1, lane="aaaaaaaa.0").body(), {"job_id": 3},
                     job(2, lane="bbbbbbbb.0").body(), "junk"]}
    acts = c.frames(raw("JOBS", body), 0.0)
    assert started(acts) == [jid(1), jid(2)]


def test_a_batched_job_whose_instruction_does_not_decode_is_answered_failed():
    c = accepted()
    bad_instr = {"job_id": jid(3), "instruction": {"verb": "NOPE"}, "lane": "aaaaaaaa.0",
                 "seq": 3}
    surrogate = [b"D1", b"JOBS", b'{"jobs":[{"job_id":"%s","instruction":{"verb":"RUN",'
                 b'"command":"a\\ud800"},"lane":"aaaaaaaa.1","seq":4}]}' % jid(4).encode()]
    acts = c.frames(raw("JOBS", {"jobs": [job(1).body(), bad_instr]}), 0.0)
    acts += c.frames(surrogate, 0.0) + c.tick(1.0)
    assert started(acts) == [jid(1)]
    failed = {r.job_id: r for r in results(acts) if r.status == "failed"}
    assert set(failed) == {jid(3), jid(4)}
    assert "malformed job" in failed[jid(4)].error and "surrogate" in failed[jid(4)].error


# -- job intake -----------------------------------------------------------------------
def test_one_job_starts_runs_and_reports_once():
    c = accepted()
    acts = c.frames(frames(job(1)), 0.0)
    assert [type(a) for a in acts] == [StartRun] and acts[0].job.job_id == jid(1)
    assert c.frames(frames(job(1)), 0.1) == []  # a resend while it runs: nothing
    acts = c.job_ended(jid(1), ok(), 0.2) + c.tick(0.2)
    (r,) = results(acts)
    assert r == M.Result(jid(1), "success", 0, exec_time=0.01)


def test_a_finished_job_is_answered_from_memory_never_run_twice():
    c = accepted()
    c.frames(frames(job(1)), 0.0)
    first = results(c.job_ended(jid(1), ok(stdout="hi"), 0.1) + c.tick(0.1))
    again = c.frames(frames(job(1)), 5.0) + c.tick(5.0)
    assert started(again) == []
    assert results(again) == first and first[0].stdout == "hi"


def test_lane_runs_in_order_one_at_a_time():
    c = accepted()
    acts = []
    for n in range(1, 4):
        acts += c.frames(frames(job(n)), 0.0)
    assert started(acts) == [jid(1)]
    assert started(c.job_ended(jid(1), ok(), 0.1)) == [jid(2)]
    assert started(c.job_ended(jid(2), ok(), 0.2)) == [jid(3)]
    assert started(c.job_ended(jid(3), ok(), 0.3)) == []
    assert c.lanes == {} and c.active == {} and c.known == set()


def test_failure_cancels_the_rest_of_its_lane_only():
    c = accepted()
    for n, lane in ((1, "aaaaaaaa.0"), (2, "aaaaaaaa.0"), (3, "aaaaaaaa.0"), (4, "bbbbbbbb.0")):
        c.frames(frames(job(n, lane=lane)), 0.0)
    acts = c.job_ended(jid(1), bad(), 0.1) + c.tick(0.1 + RESULT_DELAY)
    by_id = {r.job_id: r for r in results(acts)}
    assert by_id[jid(1)].status == "failed" and by_id[jid(1)].rc == 1
    assert by_id[jid(2)].status == "cancelled" and by_id[jid(3)].status == "cancelled"
    assert "earlier job failed" in by_id[jid(2)].error
    assert jid(4) not in by_id and jid(4) in c.running  # the other lane goes on
    # a job pipelined into the failed lane later is cancelled at once, never started
    late = c.frames(frames(job(5, lane="aaaaaaaa.0")), 0.2) + c.flush()
    assert started(late) == [] and [r.status for r in results(late)] == ["cancelled"]


@pytest.mark.parametrize("status", ["timeout", "cancelled"])
def test_timeout_or_cancel_also_stops_the_lane(status):
    c = accepted()
    c.frames(frames(job(1)), 0.0)
    c.frames(frames(job(2)), 0.0)
    acts = c.job_ended(jid(1), Outcome(status, rc=-9), 0.1) + c.tick(0.1)
    assert started(acts) == []
    assert {r.job_id: r.status for r in results(acts)} == {jid(1): status, jid(2): "cancelled"}


def test_at_most_max_processes_run_and_a_freed_slot_starts_a_waiting_lane():
    c = accepted()
    acts = []
    for n in range(MAX_PROCESSES + 2):
        acts += c.frames(frames(job(n + 1, lane=f"{n + 1:08x}.0")), 0.0)
    assert started(acts) == [jid(n + 1) for n in range(MAX_PROCESSES)]
    assert started(c.job_ended(jid(3), ok(), 0.1)) == [jid(MAX_PROCESSES + 1)]
    assert started(c.job_ended(jid(4), ok(), 0.1)) == [jid(MAX_PROCESSES + 2)]
    assert c.waiting == {}


def test_a_lane_waiting_for_a_slot_goes_on_in_order():
    c = accepted()
    for n in range(MAX_PROCESSES):
        c.frames(frames(job(n + 1, lane=f"{n + 1:08x}.0")), 0.0)
    c.frames(frames(job(100, lane="ffffffff.0")), 0.0)
    c.frames(frames(job(101, lane="ffffffff.0")), 0.0)
    assert "ffffffff.0" in c.waiting
    assert started(c.job_ended(jid(1), ok(), 0.1)) == [jid(100)]
    assert started(c.job_ended(jid(100), ok(), 0.2)) == [jid(101)]


def test_copy_does_not_take_a_process_slot():
    c = accepted()
    for n in range(MAX_PROCESSES):
        c.frames(frames(job(n + 1, lane=f"{n + 1:08x}.0")), 0.0)
    acts = c.frames(frames(job(50, "COPY a /tmp/b", lane="cccccccc.0")), 0.0)
    assert [type(a) for a in acts] == [StartCopy]
    # and its end frees no slot it never held
    c.job_ended(jid(50), ok(), 0.1)
    assert c.slots == MAX_PROCESSES


def test_an_end_for_a_job_not_running_is_ignored():
    c = accepted()
    assert c.job_ended(jid(9), ok(), 0.0) == []
    assert c.slots == 0 and c.journal.get(jid(9)) is None


def test_queue_is_bounded(monkeypatch):
    monkeypatch.setattr(core_mod, "MAX_QUEUED", 3)
    c = accepted()
    for n in range(1, 4):
        c.frames(frames(job(n)), 0.0)
    acts = c.frames(frames(job(4)), 0.0) + c.flush()
    (r,) = results(acts)
    assert r.job_id == jid(4) and r.status == "failed" and "too many jobs" in r.error
    assert len(c.known) == 3


# -- result batching --------------------------------------------------------------------
def test_an_idle_nodes_result_goes_at_once():
    c = accepted()
    c.frames(frames(job(1)), 0.0)
    assert results(c.job_ended(jid(1), ok(), 0.0)) == []  # queued...
    assert [r.job_id for r in results(c.tick(0.0))] == [jid(1)]  # ...and sent this turn


def test_results_wait_for_company_while_jobs_run_but_at_most_result_delay():
    c = accepted()
    c.frames(frames(job(1, lane="aaaaaaaa.0")), 0.0)
    c.frames(frames(job(2, lane="bbbbbbbb.0")), 0.0)
    c.job_ended(jid(1), ok(), 1.0)
    assert results(c.tick(1.0 + RESULT_DELAY / 2)) == []  # job 2 still runs
    assert c.next_deadline() == pytest.approx(1.0 + RESULT_DELAY)
    assert [r.job_id for r in results(c.tick(1.0 + RESULT_DELAY))] == [jid(1)]


def test_results_close_together_share_one_message():
    c = accepted()
    for n in range(1, 4):
        c.frames(frames(job(n, lane=f"{n:08x}.0")), 0.0)
    c.job_ended(jid(1), ok(), 0.0)
    c.job_ended(jid(2), ok(), 0.001)
    c.job_ended(jid(3), ok(), 0.002)
    (msg,) = sent(c.tick(0.002))
    assert isinstance(msg, M.Results) and [r.job_id for r in msg.items] == [
        jid(1), jid(2), jid(3)]
    assert M.decode(M.encode(msg)) == msg  # what goes out is what the server reads


def test_a_full_batch_goes_at_once():
    c = accepted()
    n_jobs = RESULT_BATCH + 1
    for n in range(1, n_jobs + 1):
        c.frames(frames(job(n, "ARG x=1", lane="aaaaaaaa.0")), 0.0)
    c.frames(frames(job(999, lane="bbbbbbbb.0")), 0.0)  # keeps the node busy
    acts = []
    for n in range(1, n_jobs + 1):
        acts += c.job_ended(jid(n), ok(), 0.0)
    msgs = sent(acts)
    assert len(msgs) == 1 and len(msgs[0].items) == RESULT_BATCH
    assert len(c.outbox) == 1


def test_stopping_flushes_what_is_queued():
    c = accepted()
    c.frames(frames(job(1, lane="aaaaaaaa.0")), 0.0)
    c.frames(frames(job(2, lane="bbbbbbbb.0")), 0.0)
    c.job_ended(jid(1), ok(), 0.0)
    assert [r.job_id for r in results(c.flush())] == [jid(1)]


# -- results fit the protocol's bounds ---------------------------------------------------
def test_results_are_made_to_fit_what_the_server_accepts():
    c = accepted()
    c.frames(frames(job(1)), 0.0)
    odd = Outcome("success", rc=2**40, stdout="a\ud800b", stderr="x" * (M.MAX_OUTPUT + 5),
                  exec_time=math.nan, error="f\udcff", transfer={"files": -1, "bytes_sent": 2**70})
    (r,) = results(c.job_ended(jid(1), odd, 0.0) + c.tick(0.0))
    assert r.rc is None and r.exec_time is None and len(r.stderr) == M.MAX_OUTPUT
    assert "\ud800" not in r.stdout and r.stdout.startswith("a") and r.stdout.endswith("b")
    assert r.transfer.files == 0 and r.transfer.bytes_sent <= 2**53
    assert M.decode(M.encode(r)) == r


def test_infinite_exec_time_and_unknown_status_become_valid():
    c = accepted()
    c.frames(frames(job(1)), 0.0)
    (r,) = results(c.job_ended(jid(1), Outcome("weird", exec_time=math.inf), 0.0) + c.tick(0))
    assert r.status == "failed" and r.exec_time is None
    assert M.decode(M.encode(r)) == r


# -- control --------------------------------------------------------------------------
def test_control_refuses_server_commands_and_malformed_requests():
    c = accepted()
    (r1,) = c.control(b"a", frames(M.Ctl("submit", {})))
    assert not r1.msg.ok and "server command" in r1.msg.error
    (r2,) = c.control(b"b", [b"junk"])
    assert not r2.msg.ok and r2.ident == b"b"
    (r3,) = c.control(b"c", frames(M.Hello("x", "1")))
    assert not r3.msg.ok and "expected CTL" in r3.msg.error


# -- CANCEL ---------------------------------------------------------------------------
def _all_results(c: AgentCore, acts: list, now: float) -> dict[str, M.Result]:
    acts = acts + c.tick(now + 1.0) + c.flush()
    return {r.job_id: r for r in results(acts)}


def test_cancel_ends_queued_jobs_unstarted_and_stops_the_running_one():
    from director.client.actions import StopJob

    c = accepted()
    acts = c.frames(frames(M.Jobs((job(1, "RUN sleep 100"), job(2), job(3)))), 0.0)
    assert [a.job.job_id for a in acts if isinstance(a, StartRun)] == [jid(1)]
    acts = c.frames(frames(M.Cancel((jid(1), jid(2)))), 0.1)
    assert [a.job_id for a in acts if isinstance(a, StopJob)] == [jid(1)]
    got = _all_results(c, acts, 0.1)
    assert got[jid(2)].status == "cancelled" and "before it started" in got[jid(2)].error
    # the killed process ends as a failure (SIGKILL): reported as cancelled
    acts = c.job_ended(jid(1), Outcome("failed", rc=-9, stdout="partial\n"), 0.2)
    got = _all_results(c, acts, 0.2)
    assert got[jid(1)].status == "cancelled" and got[jid(1)].stdout == "partial\n"
    # the lane's rest (job 3, not cancelled) follows a failed lane's rule: not run
    assert got[jid(3)].status == "cancelled"
    assert not c.running and not c.lanes and not c.cancelling


def test_a_job_that_succeeded_before_the_stop_says_so():
    c = accepted()
    c.frames(frames(M.Job(jid(1), parse_line("RUN true"), "aaaaaaaa.0", 0)), 0.0)
    c.frames(frames(M.Cancel((jid(1),))), 0.1)
    got = _all_results(c, c.job_ended(jid(1), Outcome("success", rc=0), 0.2), 0.2)
    assert got[jid(1)].status == "success"


def test_a_job_cancelled_before_it_arrived_is_answered_never_run():
    c = accepted()
    got = _all_results(c, c.frames(frames(M.Cancel((jid(7),))), 0.0), 0.0)
    assert got[jid(7)].status == "cancelled"
    acts = c.frames(frames(M.Job(jid(7), parse_line("RUN true"), "aaaaaaaa.0", 0)), 1.0)
    assert not [a for a in acts if isinstance(a, StartRun)]
    assert _all_results(c, acts, 1.0)[jid(7)].status == "cancelled"


def test_cancelling_a_finished_job_changes_nothing():
    c = accepted()
    c.frames(frames(M.Job(jid(1), parse_line("RUN true"), "aaaaaaaa.0", 0)), 0.0)
    first = _all_results(c, c.job_ended(jid(1), Outcome("success", rc=0), 0.1), 0.1)
    assert first[jid(1)].status == "success"
    assert results(c.frames(frames(M.Cancel((jid(1),))), 0.5) + c.flush()) == []
