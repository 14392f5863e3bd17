"""What unproven connections may cost a real server (SECURITY.md, "Limits").

Strangers are raw CURVE DEALERs with fresh keys: the handshake outcome is read from
each one's socket monitor.  Accepted nodes and operator commands must keep working
while the caps are full, and one stranger message may not grow the server's memory
past the budget.
"""

from __future__ import annotations

import time

import pytest
import zmq
import zmq.utils.z85
from zmq.utils.monitor import recv_monitor_message

pytestmark = pytest.mark.integration

MiB = 1 << 20


class Strangers:
    """``n`` DEALERs with fresh keys, connected to ``endpoint`` (closed by ``close``)."""

    def __init__(self, endpoint: str, server_key: bytes, n: int):
        self.ctx = zmq.Context()
        self.socks, self.monitors = [], []
        for _ in range(n):
            pub, sec = zmq.curve_keypair()
            s = self.ctx.socket(zmq.DEALER)
            s.linger = 0
            s.curve_publickey, s.curve_secretkey = pub, sec
            s.curve_serverkey = zmq.utils.z85.encode(server_key)
            self.monitors.append(s.get_monitor_socket(
                zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH
                | zmq.EVENT_DISCONNECTED))
            s.connect(endpoint)
            self.socks.append(s)
        self.admitted = [False] * n   # ever admitted
        self.up = [False] * n         # admitted and still connected
        self.refused = [0] * n
        self.dropped = [0] * n

    def watch(self, seconds: float) -> None:
        """Read every monitor for ``seconds``."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for i, mon in enumerate(self.monitors):
                for _ in range(1000):
                    try:
                        ev = recv_monitor_message(mon, zmq.NOBLOCK)["event"]
                    except zmq.Again:
                        break
                    if ev == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                        self.admitted[i] = self.up[i] = True
                    elif ev == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                        self.refused[i] += 1
                    elif ev == zmq.EVENT_DISCONNECTED:
                        self.dropped[i] += 1
                        self.up[i] = False
            time.sleep(0.05)

    def close(self) -> None:
        for s in self.socks:
            s.disable_monitor()
            s.close(0)
        for m in self.monitors:
            m.close(0)
        self.ctx.term()


def _server_key(mesh) -> bytes:
    return zmq.utils.z85.decode(mesh.server_key().encode())


def _job_runs(mesh, node: str) -> None:
    cp = mesh.cli("exec", "--wait", "--target", node, "RUN true", timeout=30)
    assert cp.returncode == 0, cp.stderr


def test_strangers_per_address_are_capped_and_nodes_still_get_in(mesh):
    mesh.server(env={"DIRECTOR_MAX_STRANGERS_PER_ADDRESS": "3"})
    mesh.add_node("web1")
    time.sleep(1.2)  # web1's enrollment no longer counts as a recent admission
    crowd = Strangers(mesh.bind, _server_key(mesh), 8)
    try:
        crowd.watch(2.0)
        assert sum(crowd.admitted) == 3, (crowd.admitted, crowd.refused)
        assert sum(1 for r in crowd.refused if r) == 5
        # an accepted node reconnecting is never capped; operator commands work
        mesh.clients["web1"].stop()
        mesh.client("web1")
        mesh.wait_online("web1", timeout=10)
        _job_runs(mesh, "web1")
        log = mesh.server_proc.log()
        assert "more than 3 unproven connections from 127.0.0.1" in log
        assert log.count("handshake refused") <= 2   # rate-limited, not one per try
    finally:
        crowd.close()
    # once the strangers are gone, enrollment is open again
    mesh.add_node("web2")


def test_strangers_cannot_take_the_open_files_nodes_need(mesh):
    """Under a low open-file limit, more strangers than fit: the server refuses the
    excess at the handshake, keeps files for the control socket and accepted nodes."""
    mesh.server(nofile=256, env={"DIRECTOR_MAX_STRANGERS_PER_ADDRESS": "100000"})
    mesh.add_node("web1")
    crowd = Strangers(mesh.bind, _server_key(mesh), 300)
    try:
        crowd.watch(4.0)
        up = sum(crowd.up)
        assert 0 < up < 256 - 32, (up, sum(crowd.admitted), sum(map(bool, crowd.dropped)))
        assert sum(1 for r in crowd.refused if r) >= 300 - up - 10
        for _ in range(3):
            assert mesh.cli("nodes", "--json", timeout=10).returncode == 0
        mesh.clients["web1"].stop()
        mesh.client("web1")
        mesh.wait_online("web1", timeout=15)
        _job_runs(mesh, "web1")
        assert mesh.server_proc.alive()
    finally:
        crowd.close()


def _peak_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_one_stranger_message_cannot_grow_the_server_without_bound(mesh):
    """400 frames of 1 MiB in one message (libzmq keeps a message whole before the
    server sees its first frame): the stranger is cut once memory grows past the
    budget; the server's peak stays far below the 400 MiB sent, and it keeps serving."""
    mesh.server(env={"DIRECTOR_STRANGER_BUFFER_MB": "32"})
    mesh.add_node("web1")
    before = _peak_rss(mesh.server_proc.pid)
    peer = mesh.raw_peer()
    mon = peer.sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    peer.sock.sndhwm = 0
    frame = b"x" * MiB
    peer.sock.send(b"ENROLL", zmq.SNDMORE)
    for _ in range(399):
        peer.sock.send(frame, zmq.SNDMORE, copy=False)
    peer.sock.send(frame, copy=False)
    cut = bool(mon.poll(20000))
    grown = _peak_rss(mesh.server_proc.pid) - before
    peer.sock.disable_monitor()
    mon.close(0)
    assert cut, "the stranger's connection was never cut"
    assert grown < 150 * MiB, f"peak grew {grown / MiB:.0f} MiB"
    assert "cut 1 unproven connection" in mesh.server_proc.log()
    _job_runs(mesh, "web1")


def test_a_frame_past_the_limit_is_refused_before_it_is_kept(mesh):
    mesh.server()
    before = _peak_rss(mesh.server_proc.pid)
    peer = mesh.raw_peer()
    mon = peer.sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    peer.sock.send_multipart([b"ENROLL", b"x" * (64 * MiB)])
    assert mon.poll(20000), "a 64 MiB frame was taken"
    grown = _peak_rss(mesh.server_proc.pid) - before
    peer.sock.disable_monitor()
    mon.close(0)
    assert grown < 24 * MiB, f"peak grew {grown / MiB:.0f} MiB"
    assert mesh.cli("nodes", "--json").returncode == 0
