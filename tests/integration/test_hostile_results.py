"""A node with an accepted key answering its own job with hostile values: a raw pyzmq
CURVE peer against a real server process.  One such message used to stop the server
at its next flush (SQLite OverflowError / UnicodeEncodeError); now it is refused at
decode with an ERROR naming the field, and the job waits for a real answer.
"""

from __future__ import annotations

import json
import time

import pytest

from director.protocol import frames as fr
from director.protocol import messages as m
from director.trust import keystore

pytestmark = pytest.mark.integration

HOSTILE = [
    b'{"job_id":"%s","status":"success","rc":18446744073709551616}',
    b'{"job_id":"%s","status":"success","rc":0,"stdout":"a\\ud800b"}',
    b'{"job_id":"%s","status":"success","rc":0,"exec_time":Infinity}',
    b'{"job_id":"%s","status":"success","rc":0,"transfer":{"bytes_sent":-5}}',
]


def _job_for(peer, timeout: float = 5.0) -> m.Job:
    got = peer.recv_until(lambda msgs: any(
        isinstance(m.decode(f), (m.Job, m.Jobs)) for f in msgs), timeout)
    for frames in got:
        msg = m.decode(frames)
        if isinstance(msg, m.Job):
            return msg
        if isinstance(msg, m.Jobs) and msg.items:
            return msg.items[0]
    raise AssertionError(f"no JOB reached the raw node: {got}")


def test_hostile_results_are_refused_and_the_server_keeps_serving(mesh):
    mesh.server()
    cp = mesh.enroll("raw")
    assert cp.returncode == 0, cp.stderr
    real = mesh.add_node("real")
    peer = mesh.raw_peer(pair=keystore.load(cp.home))
    peer.send(m.encode(m.Hello("raw", "9.9.9", "rawboot")))
    mesh.wait_online("raw", timeout=5)
    out = mesh.cli("exec", "--target", "raw", "RUN true", check=True)
    job_id = out.stdout.strip()
    job = _job_for(peer)
    assert job.job_id == job_id

    for body in HOSTILE:
        peer.send([fr.VERSION, b"RESULT", body % job_id.encode()])
        errors = [m.decode(f) for f in peer.recv_until(
            lambda msgs: any(isinstance(m.decode(f), m.Error) for f in msgs), 5.0)]
        refused = [e for e in errors if isinstance(e, m.Error)]
        assert refused and refused[0].code == "bad_request", errors
        assert refused[0].message.startswith("RESULT: "), refused  # names what was wrong
    time.sleep(0.6)  # past the server's 0.25 s flush, where the old server died

    health = json.loads(mesh.cli("health", "--json", check=True).stdout)
    assert health["role"] == "server" and health["nodes_online"] == 2
    assert real.alive()
    doc = json.loads(mesh.cli("job", job_id, "--json", check=True).stdout)  # valid JSON
    assert doc["results"]["raw"]["status"] == "running"

    peer.send(m.encode(m.Result(job_id, "success", rc=0, stdout="fine", exec_time=0.01)))
    mesh.wait_for(lambda: mesh.ctl("jobs.get", {"id": job_id})["status"] == "success", 5,
                  "the honest result after the hostile ones")
    doc = json.loads(mesh.cli("job", job_id, "--json", check=True).stdout)
    assert doc["results"]["raw"]["stdout"] == "fine"
