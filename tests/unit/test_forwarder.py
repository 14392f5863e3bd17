"""The test-suite TCP forwarder (tests/forwarder.py) with plain sockets on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from forwarder import Forwarder


class EchoServer:
    """Upper-cases what it receives and sends it back; one thread per connection, bounded."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.conns: list[socket.socket] = []
        self.threads: list[threading.Thread] = []
        self.received = 0
        self.errors: list[str] = []
        self.t = threading.Thread(target=self._accept, daemon=True)
        self.t.start()

    def _accept(self) -> None:
        deadline = time.monotonic() + 60
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            c.settimeout(0.1)
            self.conns.append(c)
            t = threading.Thread(target=self._serve, args=(c,), daemon=True)
            self.threads.append(t)
            t.start()

    def _serve(self, c: socket.socket) -> None:
        deadline = time.monotonic() + 60
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                data = c.recv(65536)
            except TimeoutError:
                continue
            except OSError as exc:
                self.errors.append(type(exc).__name__)
                return
            if not data:
                self.errors.append("eof")
                return
            self.received += len(data)
            try:
                c.sendall(data.upper())
            except OSError as exc:
                self.errors.append(type(exc).__name__)
                return

    def close(self) -> None:
        self.stop.set()
        self.t.join(2)
        for t in self.threads:
            t.join(2)
        for c in self.conns:
            c.close()
        self.sock.close()
        assert not self.t.is_alive() and not any(t.is_alive() for t in self.threads)


@pytest.fixture
def echo():
    srv = EchoServer()
    yield srv
    srv.close()


@pytest.fixture
def fwd(echo):
    f = Forwarder(echo.port)
    yield f
    f.close()
    assert not f.alive()


def connect(fwd: Forwarder) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", fwd.port), timeout=2)
    s.settimeout(2)
    return s


def recv_exactly(s: socket.socket, n: int, timeout: float = 5.0) -> bytes:
    out = b""
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        s.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = s.recv(n - len(out))
        except TimeoutError:
            break
        if not chunk:
            break
        out += chunk
    return out


def nothing_within(s: socket.socket, seconds: float) -> bool:
    s.settimeout(seconds)
    try:
        data = s.recv(1)
    except TimeoutError:
        return True
    return data == b"" and False


def wait_until(pred, timeout: float = 3.0):
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.01) + 10):
        v = pred()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(0.01)
    return pred()


def test_forwards_both_ways(fwd):
    with connect(fwd) as s:
        s.sendall(b"hello")
        assert recv_exactly(s, 5) == b"HELLO"
        big = bytes(range(97, 123)) * 40000  # ~1 MB: backpressure paths
        t = threading.Thread(target=s.sendall, args=(big,), daemon=True)
        t.start()
        assert recv_exactly(s, len(big), timeout=10) == big.upper()
        t.join(5)
    assert fwd.accepted == 1
    assert fwd.bytes_up == 5 + len(big) and fwd.bytes_down == 5 + len(big)


def test_several_connections_are_independent(fwd):
    socks = [connect(fwd) for _ in range(5)]
    try:
        for i, s in enumerate(socks):
            s.sendall(f"c{i}".encode())
        for i, s in enumerate(socks):
            assert recv_exactly(s, 2) == f"C{i}".encode()
        assert wait_until(lambda: fwd.open_connections() == 5)
    finally:
        for s in socks:
            s.close()
    assert wait_until(lambda: fwd.open_connections() == 0)


def test_blackhole_holds_bytes_both_ways_and_restore_delivers_them(fwd, echo):
    with connect(fwd) as s:
        s.sendall(b"a")
        assert recv_exactly(s, 1) == b"A"
        fwd.blackhole()
        s.sendall(b"bc")
        assert nothing_within(s, 0.5), "bytes crossed a blackholed link"
        assert echo.received == 1
        assert fwd.open_connections() == 1  # the connection itself stays open
        fwd.restore()
        assert recv_exactly(s, 2) == b"BC"
    assert echo.errors in ([], ["eof"])


def test_blackhole_stops_the_server_to_client_direction_too(fwd, echo):
    with connect(fwd) as s:
        s.sendall(b"x")
        assert recv_exactly(s, 1) == b"X"
        # the echo server answers this, but the answer must not come through
        s.sendall(b"y")
        fwd.blackhole()
        time.sleep(0.3)
        # y either reached the server before the cut (answer held) or is held itself
        assert nothing_within(s, 0.5)
        fwd.restore()
        assert recv_exactly(s, 1) == b"Y"


def test_blackhole_drop_discards(fwd, echo):
    with connect(fwd) as s:
        s.sendall(b"a")
        assert recv_exactly(s, 1) == b"A"
        fwd.blackhole(drop=True)
        s.sendall(b"lost")
        assert nothing_within(s, 0.4)
        assert wait_until(lambda: fwd.dropped == 4)
        fwd.restore()
        s.sendall(b"z")
        assert recv_exactly(s, 1) == b"Z"
    assert echo.received == 2


def test_connection_opened_during_blackhole_is_held_then_forwarded(fwd, echo):
    fwd.blackhole()
    with connect(fwd) as s:
        s.sendall(b"early")
        assert nothing_within(s, 0.4)
        assert echo.conns == []  # no upstream connection yet
        fwd.restore()
        assert recv_exactly(s, 5) == b"EARLY"


def test_reset_sends_rst_and_new_connections_still_work(fwd, echo):
    s = connect(fwd)
    s.sendall(b"a")
    assert recv_exactly(s, 1) == b"A"
    assert fwd.reset() == 1
    with pytest.raises(ConnectionResetError):
        s.settimeout(2)
        for _ in range(10):  # the RST shows on recv (or on a send after it)
            if s.recv(10) == b"":
                raise AssertionError("orderly close (FIN), not a reset (RST)")
    s.close()
    # the server side was reset too
    assert wait_until(lambda: "ConnectionResetError" in echo.errors), echo.errors
    with connect(fwd) as s2:
        s2.sendall(b"again")
        assert recv_exactly(s2, 5) == b"AGAIN"


def test_peer_close_closes_the_other_side(fwd, echo):
    s = connect(fwd)
    s.sendall(b"a")
    assert recv_exactly(s, 1) == b"A"
    s.close()
    assert wait_until(lambda: "eof" in echo.errors), echo.errors
    assert wait_until(lambda: fwd.open_connections() == 0)


def test_unreachable_target_refuses_by_reset():
    with socket.socket() as tmp:
        tmp.bind(("127.0.0.1", 0))
        dead_port = tmp.getsockname()[1]  # nothing listens there once closed
    with Forwarder(dead_port) as f:
        socks: list[socket.socket] = []
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            socks.append(connect(f))  # the reset may already show on connect
            for _ in range(10):
                socks[0].sendall(b"x")
                if socks[0].recv(1) == b"":
                    raise AssertionError("orderly close, expected a reset")
        for s in socks:
            s.close()
    assert not f.alive()


def test_close_stops_thread_and_frees_the_port(echo):
    f = Forwarder(echo.port)
    s = connect(f)
    port = f.port
    assert f._thread in threading.enumerate()
    f.close()
    assert not f.alive()
    assert f._thread not in threading.enumerate()
    assert not [t for t in threading.enumerate() if t.name == f"forwarder-{port}"]
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    s.close()
    with pytest.raises(RuntimeError):
        f.blackhole()
    f.close()  # twice is fine


def test_lifetime_bound_stops_by_itself(echo):
    f = Forwarder(echo.port, max_lifetime=0.3)
    assert wait_until(lambda: not f.alive(), timeout=3)
    f.close()


def test_connection_limit(echo):
    with Forwarder(echo.port, max_connections=2) as f:
        a, b = connect(f), connect(f)
        assert wait_until(lambda: f.open_connections() == 2)
        extra: list[socket.socket] = []
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            extra.append(connect(f))  # the reset may already show on connect
            for _ in range(10):
                extra[0].sendall(b"x")
                if extra[0].recv(1) == b"":
                    raise AssertionError("expected a reset")
        assert f.refused == 1
        for s in (a, b, *extra):
            s.close()
