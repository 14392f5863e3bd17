"""Issue 12 against a real server: a node heard from on a live connection is online,
and a submission beyond the live-task cap is refused with one clear line."""

from __future__ import annotations

import json

import pytest

from director.protocol import messages as M
from director.protocol.messages import decode, encode
from director.trust import keystore

pytestmark = pytest.mark.integration


def _jobs(frames_list: list[list[bytes]]) -> list[M.Job]:
    out: list[M.Job] = []
    for frames in frames_list:
        msg = decode(frames)
        if isinstance(msg, M.Job):
            out.append(msg)
        elif isinstance(msg, M.Jobs):
            out.extend(msg.items)
    return out


def test_a_silent_node_whose_connection_lives_is_online_again_when_it_speaks(mesh):
    mesh.server()  # heartbeat 0.5 s, node expiry 3 s
    cp = mesh.enroll("quiet")
    assert cp.returncode == 0, cp.stderr
    peer = mesh.raw_peer(pair=keystore.load(cp.home))
    peer.send(encode(M.Hello("quiet", "test", "boot1")))
    assert isinstance(decode(peer.recv(5.0)), M.Enrolled)
    mesh.wait_for(lambda: mesh.is_online("quiet"), 5, "quiet online")
    # no word from it past the expiry; its connection stays up (ZMTP heartbeats)
    mesh.wait_for(lambda: not mesh.is_online("quiet"), 10, "quiet offline after expiry")
    # ... and the server's tick has seen it (online() is read from the clock at once; the
    # expiry is acted on by the next tick, which a loaded machine may run a little later)
    mesh.wait_for(lambda: "went offline (silent" in mesh.server_proc.log(), 10,
                  "the server's expiry of quiet")
    # one heartbeat on that same connection, and no HELLO: online again
    peer.send(encode(M.Heartbeat(0)))
    mesh.wait_for(lambda: mesh.is_online("quiet"), 5, "quiet online again")
    assert "online again" in mesh.server_proc.log()
    # and it is served: a job reaches it, its result is the operator's answer
    run = mesh.spawn("exec", "--wait", "--json", "RUN true", name="exec", capture_stdout=True)
    jobs = _jobs(peer.recv_until(lambda got: bool(_jobs(got)), 10.0))
    assert [j.instruction.command for j in jobs] == ["true"]
    peer.send(encode(M.Result(jobs[0].job_id, "success", rc=0, exec_time=0.001)))
    assert run.wait(15) == 0, run.log()
    doc = json.loads(run.stdout())
    assert doc[0]["results"]["quiet"]["status"] == "success"
