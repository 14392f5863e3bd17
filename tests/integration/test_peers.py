"""Odd and hostile peers on the CURVE socket: raw pyzmq DEALERs with real keys.

Identity is the authenticated key; what a peer may send depends on that key's state.
"""

from __future__ import annotations

import json
import os

import pytest

from director.jobs.dsl import parse_line
from director.protocol import messages as M
from director.protocol.frames import VERSION
from director.protocol.messages import decode, encode
from director.trust import keystore

pytestmark = pytest.mark.integration


def _next(peer, timeout: float = 5.0):
    frames = peer.recv(timeout)
    assert frames is not None, f"no reply within {timeout} s"
    return decode(frames)


def _health(mesh) -> dict:
    cp = mesh.cli("health", "--json")
    assert cp.returncode == 0, cp.stderr
    return json.loads(cp.stdout)


def test_unknown_key_gets_no_reply_and_is_never_listed(mesh):
    mesh.server()
    mesh.add_node("real")
    peer = mesh.raw_peer()  # fresh keypair, right server key
    peer.send(encode(M.Hello("intruder", "0.1.0")))
    peer.send(encode(M.Heartbeat(0)))
    peer.send(encode(M.EnrollStatus()))
    peer.send(encode(M.Result("0123abcd", "success")))
    assert peer.recv_all(1.5) == []
    assert "intruder" not in json.dumps(mesh.nodes())
    keys = mesh.keys()
    assert [k["name"] for k in keys] == ["real"]
    assert peer.public_z85 not in json.dumps(keys)
    assert _health(mesh)["nodes_online"] == 1


def test_garbage_from_accepted_key_does_not_stop_the_server(mesh):
    mesh.server()
    cp = mesh.enroll("raw")  # enrolled, but its agent is not running
    assert cp.returncode == 0, cp.stderr
    other = mesh.add_node("real")
    peer = mesh.raw_peer(pair=keystore.load(cp.home))
    garbage = [
        [os.urandom(64)],
        [os.urandom(5), os.urandom(7), os.urandom(3000)],
        [b""],
        [b"D9", b"HEARTBEAT", b"{}"],
        [VERSION, b"HEARTBEAT", b"{not json"],
        [VERSION, b"HEARTBEAT", b"[1,2]"],
        [VERSION, b"HEARTBEAT", b'{"running": true}'],
        [VERSION, b"NOPE", b"{}"],
        [VERSION, b"RESULT", b'{"job_id": 5}'],
        [VERSION, b"HEARTBEAT", b"{}", b"a", b"b", b"c", b"d"],
        [VERSION, b"HELLO", b'{"name": "x", "version": "' + b"v" * 100000 + b'"}'],
        [VERSION, b"HEARTBEAT", b"\xff\xfe\xfd"],
        [VERSION, b"CTL_REPLY", b'{"ok": true}'],
        # the values that once stopped the server (issue 9)
        [VERSION, b"RESULT", b'{"job_id": "0123abcd", "status": "success", "rc": 18446744073709551616}'],
        [VERSION, b"RESULT", b'{"job_id": "0123abcd", "status": "success", "stdout": "a\\ud800b"}'],
        [VERSION, b"RESULT", b'{"job_id": "0123abcd", "status": "success", "exec_time": 1e400}'],
        [VERSION, b"RESULT", b'{"job_id": "0123abcd", "status": "success", "exec_time": NaN}'],
        [VERSION, b"RESULTS", b'{"results": [{"job_id": "0123abcd", "status": "odd"}, 5]}'],
    ]
    for frames in garbage:
        peer.send(frames)
    # server-only message types from a node are refused, not obeyed
    # (well-formed, so that it is the dispatch table that refuses them)
    peer.send(encode(M.Job("0123abcd", parse_line("RUN true"), "0123abcd.1", 1)))
    peer.send(encode(M.Ctl("keys.revoke", {"name": "real"})))

    def not_permitted(frames) -> bool:
        msg = decode(frames)
        return isinstance(msg, M.Error) and msg.code == "not_permitted"

    replies = [decode(f) for f in peer.recv_until(
        lambda got: sum(not_permitted(f) for f in got) >= 2, 5.0)]
    # garbage gets an ERROR naming what was wrong (or nothing), server-only types
    # not_permitted
    assert sum(isinstance(m, M.Error) and m.code == "not_permitted" for m in replies) >= 2, replies
    assert all(isinstance(m, M.Error) and m.code in (
        "not_permitted", "bad_request", "unknown_type", "unsupported_version")
        for m in replies), replies
    codes = {m.code for m in replies}
    assert {"unknown_type", "unsupported_version", "bad_request"} <= codes, codes

    assert _health(mesh)["role"] == "server"
    assert other.alive()
    mesh.wait_online("real", timeout=3)
    assert mesh.key("real")["state"] == "accepted"

    # the accepted key still speaks the protocol afterwards
    peer.send(encode(M.Heartbeat(0)))
    peer.send(encode(M.Hello("raw", "9.9.9-raw")))

    def accepted(m) -> bool:
        return isinstance(m, M.Enrolled) and (m.state, m.name) == ("accepted", "raw")

    msgs = [decode(f) for f in peer.recv_until(
        lambda got: any(accepted(decode(f)) for f in got), 5.0)]
    assert any(accepted(m) for m in msgs), msgs
    mesh.wait_for(lambda: any(n["name"] == "raw" and n["version"] == "9.9.9-raw"
                              for n in mesh.ctl("nodes")), 5, "raw node version from HELLO")
    node = mesh.node("raw")
    assert node["version"] == "9.9.9-raw"
    assert node["state"] == "online"


def test_pending_key_may_only_ask_about_its_enrollment(mesh):
    mesh.server()
    cp = mesh.enroll("waiting", server_key=mesh.server_key())
    assert cp.returncode == 3, cp.stderr
    peer = mesh.raw_peer(pair=keystore.load(cp.home))
    peer.send(encode(M.Hello("waiting", "0.1.0")))
    reply = peer.recv(5.0)
    assert reply is not None, "a pending key must be told it is not permitted"
    msg = decode(reply)
    assert isinstance(msg, M.Error) and msg.code == "not_permitted"

    for sent in (M.Heartbeat(), M.Result("0123abcd", "success"), M.ChunkReq("0123abcd", ())):
        peer.send(encode(sent))
        msg = _next(peer)
        assert isinstance(msg, M.Error) and msg.code == "not_permitted", sent

    peer.send(encode(M.EnrollStatus()))
    msg = _next(peer)
    assert isinstance(msg, M.Enrolled) and msg.state == "pending"
    assert mesh.node("waiting") is None
    assert mesh.key("waiting")["state"] == "pending"
    assert _health(mesh)["nodes_online"] == 0


def test_stranger_enroll_with_spoofed_name_of_accepted_node_is_refused(mesh):
    mesh.server()
    holder = mesh.add_node("web1")
    fp = mesh.key("web1")["fingerprint"]
    peer = mesh.raw_peer()
    peer.send(encode(M.Enroll("web1", version="0.1.0")))
    msg = _next(peer)
    assert isinstance(msg, M.Enrolled) and msg.state == "refused"
    assert "already" in msg.reason
    assert [(k["name"], k["fingerprint"]) for k in mesh.keys()] == [("web1", fp)]
    assert holder.alive()


def test_revocation_applies_to_the_next_message_on_a_live_connection(mesh):
    mesh.server()
    cp = mesh.enroll("live")
    assert cp.returncode == 0, cp.stderr
    peer = mesh.raw_peer(pair=keystore.load(cp.home))
    peer.send(encode(M.Hello("live", "0.1.0")))
    assert isinstance(_next(peer), M.Enrolled)
    assert mesh.cli("keys", "revoke", "live").returncode == 0
    # the server tells the open connection at once ...
    msg = _next(peer)
    assert isinstance(msg, M.Revoked) and "revoked" in msg.reason
    # ... and every later message on it is answered with REVOKED, never obeyed
    peer.send(encode(M.Hello("live", "6.6.6")))
    peer.send(encode(M.Heartbeat(0)))
    msgs = [decode(f) for f in peer.recv_all(1.0)]
    assert msgs and all(isinstance(m, M.Revoked) for m in msgs), msgs
    assert mesh.node("live") is None
    assert _health(mesh)["nodes_online"] == 0


def test_peers_without_curve_get_nothing(mesh):
    import zmq

    mesh.server()
    mesh.add_node("real")
    ctx = zmq.Context()
    try:
        for mechanism in ("null", "plain"):
            sock = ctx.socket(zmq.DEALER)
            sock.linger = 0
            if mechanism == "plain":
                sock.plain_username = b"admin"
                sock.plain_password = b"admin"
            sock.connect(mesh.bind)
            sock.send_multipart(encode(M.Hello("real", "0.1.0")), flags=zmq.NOBLOCK)
            sock.send_multipart(encode(M.Enroll("sneaky")), flags=zmq.NOBLOCK)
            assert sock.poll(1000) == 0, f"{mechanism} peer got an answer"
            sock.close(0)
    finally:
        ctx.term()
    assert [k["name"] for k in mesh.keys()] == ["real"]
    assert _health(mesh)["nodes_online"] == 1
