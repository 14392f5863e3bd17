"""director.client.link.Link against a real server: handshake outcomes become events."""

from __future__ import annotations

import time

import pytest
import zmq

from director.client.link import Link
from director.net import transport
from director.trust import keystore

pytestmark = pytest.mark.integration


class SlowConnectSocket(zmq.Socket):
    """A real socket whose connect() returns late, as on a busy machine: the CURVE
    handshake completes in the I/O thread before the caller gets control back."""

    def connect(self, addr):  # type: ignore[override]
        result = super().connect(addr)
        time.sleep(0.5)
        return result


class SlowContext(zmq.Context):
    _socket_class = SlowConnectSocket


def _events(link: Link, until: set[str], timeout: float = 5.0) -> list[str]:
    out: list[str] = []
    deadline = time.monotonic() + timeout
    for _ in range(1000):
        left = deadline - time.monotonic()
        if left <= 0 or not link.monitor.poll(int(left * 1000)):
            break
        ev = link.read_event()
        if ev is not None:
            out.append(ev)
        if until & set(out):
            break
    return out


def _server_pub(mesh) -> bytes:
    return keystore.load(mesh.home).public


def test_link_reports_up_even_if_the_handshake_beats_connect_returning(mesh):
    mesh.server()
    cp = mesh.enroll("slow")
    assert cp.returncode == 0, cp.stderr
    ctx = SlowContext()
    link = Link(ctx, keystore.load(cp.home), _server_pub(mesh), mesh.bind, 0.5)
    try:
        assert "up" in _events(link, {"up"}), "a handshake that finished early was missed"
        assert link.up
    finally:
        link.close()
        ctx.term()


def test_link_reports_auth_for_a_refused_key(mesh):
    mesh.server()
    cp = mesh.enroll("nope", server_key=mesh.server_key())
    assert cp.returncode == 3
    assert mesh.cli("keys", "reject", "nope").returncode == 0
    ctx = zmq.Context()
    link = Link(ctx, keystore.load(cp.home), _server_pub(mesh), mesh.bind, 0.5)
    try:
        events = _events(link, {"auth", "up"})
        assert "auth" in events and "up" not in events, events
        assert not link.up
    finally:
        link.close()
        ctx.term()


def test_link_reports_handshake_failure_for_a_wrong_server_key(mesh):
    mesh.server()
    ctx = zmq.Context()
    link = Link(ctx, keystore.generate(), keystore.generate().public, mesh.bind, 0.5)
    try:
        events = _events(link, {"up", "auth"}, timeout=2.0)
        assert "handshake" in events and "up" not in events, events
        assert link.failed_handshakes >= 1 and not link.up
    finally:
        link.close()
        ctx.term()


# (CURVE keys are not readable through pyzmq; the tests above show they are right)
OPTIONS = [zmq.LINGER, zmq.MAXMSGSIZE, zmq.HANDSHAKE_IVL, zmq.HEARTBEAT_IVL,
           zmq.HEARTBEAT_TIMEOUT, zmq.HEARTBEAT_TTL, zmq.SNDHWM, zmq.RCVHWM, zmq.CURVE_SERVER,
           zmq.IMMEDIATE, zmq.TYPE, zmq.MECHANISM]


def test_link_socket_has_the_transport_client_options():
    pair, server = keystore.generate(), keystore.generate().public
    ctx = zmq.Context()
    endpoint = "tcp://127.0.0.1:9"  # never answers; nothing is sent
    ref = transport.client_socket(ctx, pair, server, endpoint, 0.7)
    link = Link(ctx, pair, server, endpoint, 0.7)
    try:
        for opt in OPTIONS:
            assert link.sock.getsockopt(opt) == ref.getsockopt(opt), opt
        # drawn per socket from the same ranges (reconnects spread out)
        lo, hi = transport.RECONNECT_MS
        assert lo <= link.sock.reconnect_ivl <= hi
        lo, hi = transport.RECONNECT_MAX_MS
        assert lo <= link.sock.reconnect_ivl_max <= hi
        assert link.sock.mechanism == zmq.CURVE
        assert link.sock.last_endpoint == ref.last_endpoint
    finally:
        link.close()
        ref.close(0)
        ctx.term()


def test_an_agent_facing_another_server_key_exits_with_one_line(mesh):
    """The pinned server's address now answers with another key: the agent retries a
    bounded while (one log line), then exits 1 saying so; never forever."""
    from director.client.linkstate import MISMATCH_SPAN

    mesh.server()
    mesh.add_node("web1")
    mesh.clients["web1"].stop()
    mesh.stop_server()
    mesh.server(home=mesh.new_home("other"))    # same port, another key
    started = time.monotonic()
    agent = mesh.client("web1")
    rc = agent.wait(timeout=MISMATCH_SPAN + 30)
    took = time.monotonic() - started
    log = agent.log()
    assert rc == 1, log
    assert MISMATCH_SPAN <= took < MISMATCH_SPAN + 25, took
    assert "does not hold the pinned server key" in log
    warnings = [ln for ln in log.splitlines() if " WARNING " in ln]
    assert len(warnings) <= 2, warnings


def test_an_agent_whose_server_is_down_waits_quietly_and_comes_back(mesh):
    mesh.server()
    mesh.add_node("web1")
    mesh.stop_server()
    time.sleep(6)  # connects refused, and handshakes with nothing behind them
    agent = mesh.clients["web1"]
    assert agent.alive()
    warnings = [ln for ln in agent.log().splitlines() if " WARNING " in ln]
    assert len(warnings) <= 2, warnings
    mesh.server()
    mesh.wait_online("web1", timeout=15)
