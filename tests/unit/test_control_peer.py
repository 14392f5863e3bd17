"""The control socket's user check (SO_PEERCRED through libzmq's Peer-Address)."""

from __future__ import annotations

import os

import zmq

from director.net.control import peer_uid, refuses_peer


def test_libzmq_reports_the_connecting_users_uid_on_ipc(tmp_path):
    ctx = zmq.Context()
    router, dealer = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
    try:
        router.linger = dealer.linger = 0
        router.bind(f"ipc://{tmp_path}/c.sock")
        dealer.connect(f"ipc://{tmp_path}/c.sock")
        dealer.send(b"hi")
        assert router.poll(5000)
        frames = router.recv_multipart(copy=False)
        peer = frames[0].get("Peer-Address")
        assert peer_uid(peer) == os.getuid()
        assert not refuses_peer(peer, os.getuid())
    finally:
        router.close(0)
        dealer.close(0)
        ctx.term()


def test_other_users_are_refused_root_and_the_owner_are_served():
    assert refuses_peer("localhost:1001:1001:4242", 1000)
    assert not refuses_peer("localhost:1000:1000:4242", 1000)
    assert not refuses_peer("localhost:0:0:4242", 1000)
    # no credentials (a platform without SO_PEERCRED): the file permissions guard it
    assert not refuses_peer("", 1000)
    assert peer_uid("127.0.0.1") is None and peer_uid("h:x:1:2") is None
