"""Routes belong to keys: a connection that presents another node's old routing id
(ZMQ_ROUTING_ID) after that node's connection closed gets none of its jobs.  Raw pyzmq
CURVE peers against a real server process.
"""

from __future__ import annotations

import time

import pytest
import zmq

from director.protocol import messages as m
from director.trust import keystore

pytestmark = pytest.mark.integration
STOLEN = b"victim-route"


def _dealer(mesh, pair, routing_id: bytes) -> tuple[zmq.Context, zmq.Socket]:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.routing_id = routing_id
    sock.curve_publickey, sock.curve_secretkey = pair.public, pair.secret
    sock.curve_serverkey = zmq.utils.z85.decode(mesh.server_key().encode())
    sock.connect(mesh.bind)
    return ctx, sock


def _messages(sock: zmq.Socket, seconds: float, until=lambda got: False) -> list[m.Msg]:
    out: list[m.Msg] = []
    deadline = time.monotonic() + seconds
    for _ in range(1000):
        left = deadline - time.monotonic()
        if until(out):
            break
        if left <= 0 or not sock.poll(int(left * 1000)):
            break
        out.append(m.decode(sock.recv_multipart()))
    return out


def test_a_reused_routing_id_never_receives_another_keys_jobs(mesh):
    mesh.server(node_expiry=10)  # the victim stays online through the test on a busy machine
    cp = mesh.enroll("victim")
    assert cp.returncode == 0, cp.stderr
    victim_pair = keystore.load(cp.home)
    ctx, victim = _dealer(mesh, victim_pair, STOLEN)
    try:
        victim.send_multipart(m.encode(m.Hello("victim", "1.0", "boot")))
        got = _messages(victim, 3.0, lambda out: any(isinstance(x, m.Enrolled) for x in out))
        assert any(isinstance(x, m.Enrolled) for x in got), got
        mesh.wait_online("victim", timeout=2)
    finally:
        victim.close(0)
        ctx.term()
    time.sleep(0.3)  # the server notices the closed connection

    thief_pair = keystore.generate()
    tctx, thief = _dealer(mesh, thief_pair, STOLEN)
    try:
        thief.send_multipart(m.encode(m.Enroll("thief")))  # a stranger on the old id
        assert mesh.node("victim")["state"] == "online"  # within its expiry still
        out = mesh.cli("exec", "--target", "victim", "RUN echo secret", check=True)
        job_id = out.stdout.strip()
        got = _messages(thief, 2.0)
        assert not any(isinstance(x, (m.Job, m.Jobs)) for x in got), got
        doc = mesh.ctl("jobs.get", {"id": job_id})
        assert doc["results"]["victim"]["status"] == "queued"  # waits for the real node
    finally:
        thief.close(0)
        tctx.term()
