"""A small loopback TCP forwarder for tests: a link between a node and the server
that a test can cut.

    fwd = Forwarder(server_port)          # listens on 127.0.0.1:fwd.port
    ... start a client with --server-address 127.0.0.1:{fwd.port} ...
    fwd.blackhole()    # connections stay open, no byte moves either way (a dead network)
    fwd.restore()      # bytes flow again (held bytes are delivered, as TCP would)
    fwd.reset()        # every open connection is closed abruptly (RST, SO_LINGER 0)
    fwd.close()        # stop: the thread ends, every socket is closed

``blackhole()`` holds bytes by default (nothing is read, so nothing moves: TCP
retransmits until the peers give up, exactly as on a cut cable); ``blackhole(drop=True)``
reads and discards instead.  New connections accepted during a blackhole are held
too: their upstream side is opened only when the link is restored.

Everything is bounded: one thread, a select loop with a short timeout, a maximum
lifetime (``max_lifetime`` s) after which it stops by itself, at most
``max_connections`` connections, and ``close()`` joins the thread with a timeout.
Stdlib only.
"""

from __future__ import annotations

import queue
import select
import socket
import struct
import threading
import time

_CHUNK = 65536
_MAX_PENDING = 1 << 20  # bytes buffered per direction before reading stops (backpressure)


def _abort(sock: socket.socket | None) -> None:
    """Close ``sock`` with an RST (SO_LINGER on, 0 s)."""
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class _Pair:
    """One forwarded connection: the accepted ``down`` side and the ``up`` side to the server."""

    def __init__(self, down: socket.socket):
        self.down = down
        self.up: socket.socket | None = None
        self.to_up = bytearray()    # bytes read from down, waiting to be written up
        self.to_down = bytearray()  # bytes read from up, waiting to be written down
        self.closed = False


class Forwarder:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1", *,
                 max_lifetime: float = 900.0, max_connections: int = 2000,
                 connect_timeout: float = 2.0):
        self.target = (target_host, target_port)
        self.max_lifetime = max_lifetime
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.listener.setblocking(False)
        self.port: int = self.listener.getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._commands: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._pairs: list[_Pair] = []
        self.mode = "forward"  # "forward" | "hold" | "drop"
        # counters (read them from the test thread; ints are updated atomically enough)
        self.accepted = 0
        self.refused = 0
        self.resets = 0
        self.bytes_up = 0
        self.bytes_down = 0
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name=f"forwarder-{self.port}",
                                        daemon=True)
        self._thread.start()

    # -- API (any thread) ---------------------------------------------------------------
    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def blackhole(self, drop: bool = False) -> None:
        self._call("mode", "drop" if drop else "hold")

    def restore(self) -> None:
        self._call("mode", "forward")

    def reset(self) -> int:
        """Close every open connection with an RST; returns how many were open."""
        return self._call("reset", None)

    def open_connections(self) -> int:
        return self._call("count", None)

    def alive(self) -> bool:
        return self._thread.is_alive()

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake()
        self._thread.join(timeout)
        if self._thread.is_alive():  # pragma: no cover - would be a bug in _run
            raise RuntimeError(f"forwarder thread still running {timeout} s after close()")
        self._close_all()

    def __enter__(self) -> Forwarder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------------
    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    def _call(self, op: str, arg, timeout: float = 5.0):
        if not self._thread.is_alive():
            if op == "count":
                return 0
            raise RuntimeError("forwarder is closed")
        done: queue.Queue = queue.Queue(maxsize=1)
        self._commands.put((op, arg, done))
        self._wake()
        try:
            return done.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"forwarder did not answer {op!r} within {timeout} s") from None

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_lifetime
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                self._commands_now()
                readers: list = [self.listener, self._wake_r]
                writers: list = []
                owner: dict = {}
                for p in self._pairs:
                    if p.closed:
                        continue
                    for sock, out_buf, in_buf in ((p.down, p.to_down, p.to_up),
                                                  (p.up, p.to_up, p.to_down)):
                        if sock is None:
                            continue
                        owner[sock] = p
                        if self.mode == "drop":
                            readers.append(sock)
                        elif self.mode == "forward":
                            if p.up is not None and len(in_buf) < _MAX_PENDING:
                                readers.append(sock)
                            if out_buf:
                                writers.append(sock)
                        # "hold": neither: bytes wait in the kernel, as on a cut cable
                try:
                    r, w, _ = select.select(readers, writers, [], 0.05)
                except (OSError, ValueError):
                    self._pairs = [p for p in self._pairs if not p.closed and self._ok(p)]
                    continue
                for sock in w:
                    self._write(owner[sock], sock)
                for sock in r:
                    if sock is self.listener:
                        self._accept()
                    elif sock is self._wake_r:
                        try:
                            self._wake_r.recv(4096)
                        except OSError:
                            pass
                    else:
                        self._read(owner[sock], sock)
                self._pairs = [p for p in self._pairs if not p.closed]
        finally:
            self._stop.set()
            self._commands_now()  # answer whoever waits
            self._close_all()

    def _ok(self, pair: _Pair) -> bool:
        for sock in (pair.down, pair.up):
            if sock is not None and sock.fileno() < 0:
                self._drop_pair(pair, rst=True)
                return False
        return True

    def _commands_now(self) -> None:
        for _ in range(100):
            try:
                op, arg, done = self._commands.get_nowait()
            except queue.Empty:
                return
            result = None
            if op == "mode":
                self.mode = arg
                if arg == "forward":
                    for p in self._pairs:
                        if p.up is None and not p.closed:
                            self._connect_up(p)
            elif op == "reset":
                result = sum(1 for p in self._pairs if not p.closed)
                for p in self._pairs:
                    self._drop_pair(p, rst=True)
                self.resets += 1
                self._pairs = []
            elif op == "count":
                result = sum(1 for p in self._pairs if not p.closed)
            done.put(result)

    def _accept(self) -> None:
        for _ in range(64):
            try:
                sock, _addr = self.listener.accept()
            except OSError:  # BlockingIOError: nothing more to accept
                return
            if len(self._pairs) >= self.max_connections:
                self.refused += 1
                _abort(sock)
                continue
            self.accepted += 1
            sock.setblocking(False)
            pair = _Pair(sock)
            self._pairs.append(pair)
            if self.mode == "forward":
                self._connect_up(pair)

    def _connect_up(self, pair: _Pair) -> None:
        try:
            up = socket.create_connection(self.target, timeout=self.connect_timeout)
        except OSError:
            self._drop_pair(pair, rst=True)  # like a refused connection
            return
        up.setblocking(False)
        pair.up = up

    def _write(self, pair: _Pair, sock: socket.socket) -> None:
        if pair.closed:
            return
        buf = pair.to_down if sock is pair.down else pair.to_up
        try:
            n = sock.send(buf)
            del buf[:n]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self._drop_pair(pair, rst=True)

    def _read(self, pair: _Pair, sock: socket.socket) -> None:
        if pair.closed:
            return
        try:
            data = sock.recv(_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop_pair(pair, rst=True)
            return
        if not data:  # EOF: close the pair once what is held for the other side is sent
            self._flush_and_close(pair)
            return
        if self.mode == "drop":
            self.dropped += len(data)
            return
        if sock is pair.down:
            pair.to_up += data
            self.bytes_up += len(data)
        else:
            pair.to_down += data
            self.bytes_down += len(data)

    def _flush_and_close(self, pair: _Pair) -> None:
        for sock, buf in ((pair.up, pair.to_up), (pair.down, pair.to_down)):
            if sock is not None and buf and self.mode == "forward":
                try:
                    sock.setblocking(True)
                    sock.settimeout(1.0)
                    sock.sendall(bytes(buf))
                except OSError:
                    pass
        self._drop_pair(pair, rst=False)

    def _drop_pair(self, pair: _Pair, rst: bool) -> None:
        if pair.closed:
            return
        pair.closed = True
        for sock in (pair.down, pair.up):
            if sock is None:
                continue
            if rst:
                _abort(sock)
            else:
                try:
                    sock.close()
                except OSError:
                    pass

    def _close_all(self) -> None:
        for p in self._pairs:
            self._drop_pair(p, rst=True)
        self._pairs = []
        for s in (self.listener, self._wake_r, self._wake_w):
            try:
                s.close()
            except OSError:
                pass
