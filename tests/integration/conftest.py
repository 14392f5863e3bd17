"""A reusable harness for integration tests: a real mesh of ``director`` processes.

Everything is real: ``director`` subprocesses (server, clients, CLI), ZeroMQ CURVE
over TCP on 127.0.0.1, SQLite in throw-away homes.  The ``mesh`` fixture is
function-scoped; every process it starts is stopped at teardown (SIGTERM, 5 s,
then SIGKILL) and its homes are removed.

    def test_x(mesh):
        mesh.server()
        node = mesh.add_node("web1")            # token + enroll + client + online
        assert mesh.node("web1")["state"] == "online"
        r = mesh.cli("keys", "list", "--json")  # runs in the server's home
        mesh.wait_for(lambda: ..., timeout=5, what="...")

Homes live under a short ``/tmp/dXXXXXXXX`` directory because the control socket
is an ``ipc://`` path (at most ~100 characters).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.utils.z85

BIN_DIR = Path(sys.executable).parent
_SCRIPT = BIN_DIR / "director"
DIRECTOR: list[str] = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "director"]

HEARTBEAT = 0.5
EXPIRY = 3
START_TIMEOUT = 10.0
STOP_GRACE = 5.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test process environment without any DIRECTOR_* variable (hermetic runs)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIRECTOR_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("PYTHONWARNINGS", None)
    if extra:
        env.update(extra)
    return env


def _options(settings: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    for key, value in settings.items():
        if value is None:
            continue
        out += [f"--{key.replace('_', '-')}", str(value)]
    return out


def _limit_files(n: int) -> Callable[[], None]:
    def limit() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
    return limit


class Proc:
    """A long-running director process started by the mesh."""

    def __init__(self, name: str, argv: list[str], home: str, log: Path,
                 popen: subprocess.Popen, out: Path | None = None):
        self.name = name
        self.argv = argv
        self.home = home
        self.log_path = log
        self.out_path = out
        self.popen = popen

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait(self, timeout: float) -> int:
        """Exit status; raises subprocess.TimeoutExpired if still running after timeout."""
        return self.popen.wait(timeout=timeout)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stdout(self) -> str:
        if self.out_path is None:
            return ""
        try:
            return self.out_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def signal(self, sig: int) -> None:
        if self.popen.poll() is None:
            try:
                os.kill(self.popen.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, grace: float = STOP_GRACE) -> tuple[int, bool]:
        """SIGTERM, wait ``grace`` s, then SIGKILL. Returns (status, needed_kill)."""
        if self.popen.poll() is not None:
            return self.popen.returncode, False
        self.signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout=grace), False
        except subprocess.TimeoutExpired:
            pass
        try:  # the process and anything it started (its own session)
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            self.popen.kill()
        return self.popen.wait(timeout=grace), True

    def __repr__(self) -> str:
        return f"<Proc {self.name} pid={self.pid} rc={self.returncode}>"


class RawPeer:
    """A bare pyzmq CURVE DEALER talking to the server: for hostile/odd peers.

    ``pair`` is any object with ``public``/``secret`` raw 32-byte keys (for example
    ``director.trust.keystore.load(home)``); a fresh keypair when omitted.
    """

    def __init__(self, endpoint: str, server_key: bytes, pair: Any = None):
        if pair is None:
            pub, sec = zmq.curve_keypair()
            public, secret = zmq.utils.z85.decode(pub), zmq.utils.z85.decode(sec)
        else:
            public, secret = pair.public, pair.secret
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.linger = 0
        self.sock.curve_publickey = public
        self.sock.curve_secretkey = secret
        self.sock.curve_serverkey = server_key
        self.sock.connect(endpoint)
        self.public = public

    @property
    def public_z85(self) -> str:
        return zmq.utils.z85.encode(self.public).decode()

    def send(self, frames: Sequence[bytes]) -> None:
        self.sock.send_multipart(list(frames), flags=zmq.NOBLOCK)

    def recv(self, timeout: float = 5.0) -> list[bytes] | None:
        """The next message, or None if nothing arrives within ``timeout`` s."""
        if not self.sock.poll(int(timeout * 1000)):
            return None
        return self.sock.recv_multipart()

    def recv_all(self, timeout: float) -> list[list[bytes]]:
        """Every message that arrives within ``timeout`` s (bounded count)."""
        return self.recv_until(lambda _: False, timeout)

    def recv_until(self, predicate: Callable[[list[list[bytes]]], bool],
                   timeout: float = 5.0) -> list[list[bytes]]:
        """Collect messages until ``predicate(all_so_far)`` holds or ``timeout`` s pass."""
        out: list[list[bytes]] = []
        deadline = time.monotonic() + timeout
        for _ in range(10000):
            if predicate(out):
                return out
            left = deadline - time.monotonic()
            if left <= 0:
                break
            msg = self.recv(left)
            if msg is None:
                break
            out.append(msg)
        return out

    def close(self) -> None:
        if not self.ctx.closed:
            self.sock.close(0)
            self.ctx.term()


class Mesh:
    """One server and any number of clients, each in its own home under ``root``."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="d", dir="/tmp"))
        self.logdir = self.root / "logs"
        self.logdir.mkdir()
        self.procs: list[Proc] = []
        self.homes: dict[str, str] = {}       # node name -> client home
        self.clients: dict[str, Proc] = {}    # node name -> its latest client process
        self.server_proc: Proc | None = None
        self.home: str = str(self.root / "s")  # the server's home
        self.port: int | None = None
        self._n = 0
        self.raw_peers: list[RawPeer] = []

    # -- paths -----------------------------------------------------------------
    @property
    def address(self) -> str:
        assert self.port is not None, "start the server first: mesh.server()"
        return f"127.0.0.1:{self.port}"

    @property
    def bind(self) -> str:
        return f"tcp://{self.address}"

    def new_home(self, prefix: str = "c") -> str:
        self._n += 1
        path = self.root / f"{prefix}{self._n}"
        return str(path)

    def _log(self, name: str) -> Path:
        self._n += 1
        return self.logdir / f"{self._n:03d}-{name}.log"

    # -- processes -------------------------------------------------------------
    def spawn(self, *args: str, home: str | None = None, name: str = "proc",
              env: Mapping[str, str] | None = None, capture_stdout: bool = False,
              global_opts: Sequence[str] = (), nofile: int | None = None) -> Proc:
        """Start ``director --home HOME [global_opts] ARGS...`` in the background
        (``nofile``: its open-file limit, soft and hard)."""
        home = home or self.home
        argv = [*DIRECTOR, "--home", home, *global_opts, *args]
        log = self._log(name)
        out = log.with_suffix(".out") if capture_stdout else None
        with open(log, "wb") as err_fh:
            out_fh = open(out, "wb") if out else subprocess.DEVNULL
            try:
                popen = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=out_fh, stderr=err_fh,
                    env=clean_env(env), start_new_session=True, cwd=str(self.root),
                    preexec_fn=None if nofile is None else _limit_files(nofile),
                )
            finally:
                if out:
                    out_fh.close()  # type: ignore[union-attr]
        proc = Proc(name, argv, home, log, popen, out)
        self.procs.append(proc)
        return proc

    def server(self, *, home: str | None = None, port: int | None = None, wait: bool = True,
               env: Mapping[str, str] | None = None, args: Sequence[str] = ("server",),
               nofile: int | None = None, **settings: Any) -> Proc:
        """Start the server (same home/port as before unless given) and wait until healthy."""
        if home is not None:
            self.home = home
        if port is not None:
            self.port = port
        elif self.port is None:
            self.port = free_port()
        opts = {"bind": self.bind, "heartbeat_interval": HEARTBEAT, "node_expiry": EXPIRY}
        opts.update(settings)
        proc = self.spawn(*args, home=self.home, name="server", env=env,
                          global_opts=_options(opts), nofile=nofile)
        self.server_proc = proc
        if wait:
            self.wait_healthy(proc)
        return proc

    def wait_healthy(self, proc: Proc, home: str | None = None,
                     timeout: float = START_TIMEOUT) -> None:
        home = home or proc.home
        deadline = time.monotonic() + timeout
        while True:
            if not proc.alive():
                raise AssertionError(
                    f"{proc.name} exited with {proc.returncode} before it was healthy:\n"
                    f"{proc.log()[-3000:]}")
            if self.ping(home, timeout=1.0) and \
                    self.cli("health", home=home, timeout=5).returncode == 0:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{proc.name} not healthy within {timeout} s:\n"
                                     f"{proc.log()[-3000:]}")
            time.sleep(0.1)

    def stop_server(self) -> int:
        assert self.server_proc is not None
        rc, killed = self.server_proc.stop()
        assert not killed, f"server ignored SIGTERM for {STOP_GRACE} s"
        return rc

    def cli(self, *args: str, home: str | None = None, check: bool = False,
            input: str | None = None, timeout: float = 30,
            env: Mapping[str, str] | None = None,
            cwd: str | os.PathLike[str] | None = None) -> subprocess.CompletedProcess:
        """Run ``director --home HOME ARGS...`` to completion (text output).

        ``cwd`` is the working directory of the CLI process (default: the mesh root);
        relative COPY sources are resolved against it.
        """
        argv = [*DIRECTOR, "--home", home or self.home, *args]
        try:
            cp = subprocess.run(argv, input=input, capture_output=True, text=True,
                                timeout=timeout, env=clean_env(env),
                                cwd=str(cwd) if cwd is not None else str(self.root),
                                stdin=None if input is not None else subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"'director {' '.join(args)}' did not finish within "
                                 f"{timeout} s (hang)") from exc
        if check and cp.returncode != 0:
            raise AssertionError(f"'director {' '.join(args)}' exited {cp.returncode}:\n"
                                 f"stdout: {cp.stdout}\nstderr: {cp.stderr}")
        return cp

    def json(self, *args: str, home: str | None = None, **kw: Any) -> Any:
        """Run a ``--json`` command that must succeed and parse its stdout."""
        cp = self.cli(*args, "--json", home=home, check=True, **kw)
        try:
            return json.loads(cp.stdout)
        except ValueError as exc:
            raise AssertionError(f"'director {' '.join(args)} --json' printed non-JSON:\n"
                                 f"{cp.stdout!r}") from exc

    # -- enrollment ------------------------------------------------------------
    def token(self, uses: int = 1, ttl: str = "1h") -> str:
        doc = self.json("token", "create", "--uses", str(uses), "--ttl", str(ttl))
        return doc["token"]

    def server_key(self) -> str:
        return self.json("keys", "server")["public_key"]

    def enroll(self, name: str, token: str | None = None, server_key: str | None = None,
               extra: Iterable[str] = (), home: str | None = None,
               timeout: float = 30) -> subprocess.CompletedProcess:
        """``director enroll`` from a (new) client home; the home is ``mesh.homes[name]``.

        Without ``token`` and ``server_key`` a fresh one-use token is made.
        """
        home = home or self.homes.get(name) or self.new_home()
        self.homes[name] = home
        if token is None and server_key is None:
            token = self.token()
        args = ["--name", name, "enroll", "--server", self.address]
        args += ["--token", token] if token is not None else ["--server-key", server_key]
        args += list(extra)
        cp = self.cli(*args, home=home, timeout=timeout)
        cp.home = home  # type: ignore[attr-defined]
        return cp

    def client(self, name: str, home: str | None = None, extra: Sequence[str] = (),
               env: Mapping[str, str] | None = None,
               global_opts: Sequence[str] = ()) -> Proc:
        """Start ``director --home CH --heartbeat-interval 0.5 client`` for node ``name``."""
        home = home or self.homes.get(name) or self.new_home()
        self.homes[name] = home
        proc = self.spawn("client", *extra, home=home, name=f"client-{name}", env=env,
                          global_opts=["--heartbeat-interval", str(HEARTBEAT), *global_opts])
        self.clients[name] = proc
        return proc

    def add_node(self, name: str, timeout: float = 10) -> Proc:
        """Token + enroll + client + wait until ``nodes --json`` shows it online."""
        cp = self.enroll(name)
        assert cp.returncode == 0, f"enroll {name} exited {cp.returncode}: {cp.stderr}"
        proc = self.client(name)
        self.wait_online(name, timeout=timeout, proc=proc)
        return proc

    def raw_peer(self, pair: Any = None, server_key: bytes | None = None) -> RawPeer:
        """A raw CURVE DEALER to this server (closed at teardown)."""
        if server_key is None:
            server_key = zmq.utils.z85.decode(self.server_key().encode())
        peer = RawPeer(self.bind, server_key, pair)
        self.raw_peers.append(peer)
        return peer

    # -- looking ---------------------------------------------------------------
    def ctl(self, op: str, args: dict | None = None, home: str | None = None,
            timeout: float = 5.0) -> Any:
        """One control-socket request in-process (cheap polling); None if unreachable.

        Same socket and operation the CLI uses; assertions about what users see
        should still go through ``cli``/``json``.
        """
        from director.errors import ConnectionFailed
        from director.net.control import ControlClient

        try:
            with ControlClient(home or self.home, timeout=timeout) as c:
                return c.call(op, args)
        except ConnectionFailed:
            return None

    def ping(self, home: str | None = None, timeout: float = 2.0) -> dict | None:
        """The ``health`` answer of whatever runs in ``home`` (in-process), or None."""
        from director.net.control import ping

        return ping(home or self.home, timeout=timeout)

    def nodes(self) -> list[dict]:
        return self.json("nodes")

    def node(self, name: str) -> dict | None:
        return next((n for n in self.nodes() if n["name"] == name), None)

    def keys(self) -> list[dict]:
        return self.json("keys", "list")

    def key(self, name: str) -> dict | None:
        return next((k for k in self.keys() if k["name"] == name), None)

    def is_online(self, name: str) -> bool:
        n = self.node(name)
        return n is not None and n["state"] == "online"

    def wait_online(self, name: str, timeout: float = 10, proc: Proc | None = None) -> None:
        """Until ``nodes --json`` shows ``name`` online and, given its client ``proc``,
        that client's own ``health`` says it is serving (its link is up and accepted:
        the server's view alone can be stale)."""
        def check() -> bool:
            if proc is not None and not proc.alive():
                raise AssertionError(f"client {name} exited with {proc.returncode}:\n"
                                     f"{proc.log()[-3000:]}")
            if proc is not None and not (self.ping(proc.home) or {}).get("serving"):
                return False
            return any(n["name"] == name and n["state"] == "online"
                       for n in self.ctl("nodes") or [])
        self.wait_for(check, timeout, f"node {name} online")
        assert self.is_online(name), f"'nodes --json' does not show {name} online"

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 10, what: str = "condition",
                 interval: float = 0.1) -> Any:
        """Poll ``predicate`` until it returns something truthy; bounded in time and count."""
        deadline = time.monotonic() + timeout
        max_tries = int(timeout / interval) + 50
        value = None
        for _ in range(max_tries):
            value = predicate()
            if value:
                return value
            if time.monotonic() >= deadline:
                break
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {value!r})")

    def logs(self) -> str:
        """Every log (stderr) and captured stdout of every process started so far."""
        parts = []
        for p in self.procs:
            parts.append(p.log())
            parts.append(p.stdout())
        return "\n".join(parts)

    # -- teardown --------------------------------------------------------------
    def close(self) -> list[str]:
        """Stop everything: SIGTERM to all at once, wait up to 5 s, then SIGKILL."""
        problems = []
        for peer in self.raw_peers:
            peer.close()
        running = [p for p in self.procs if p.alive()]
        for p in running:
            p.signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for p in running:
            try:
                p.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                problems.append(f"{p!r} ignored SIGTERM for {STOP_GRACE} s and was killed")
                try:  # the process and anything it started (its own session)
                    os.killpg(p.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    p.popen.kill()
                try:
                    p.popen.wait(timeout=STOP_GRACE)
                except subprocess.TimeoutExpired:
                    pass
        left = [p for p in self.procs if p.popen.poll() is None]
        if left:
            problems.append(f"processes still running: {left}")
        return problems

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


def shared_mesh(nodes: Sequence[str]) -> Iterator[Mesh]:
    """A server with ``nodes`` enrolled and running, shared by one module's tests: use it
    from a module-scoped fixture as ``yield from shared_mesh(NODES)``."""
    m = Mesh()
    try:
        m.server()
        for name in nodes:
            m.add_node(name)
        yield m
    finally:
        problems = m.close()
        m.cleanup()
        assert not problems, "; ".join(problems)


@pytest.fixture
def mesh(request) -> Iterable[Mesh]:
    m = Mesh()
    try:
        yield m
    finally:
        problems = m.close()
        rep = getattr(request.node, "rep_call", None)
        if rep is not None and rep.failed:
            for p in m.procs:
                text = p.log()
                if text:
                    sys.stderr.write(f"\n----- {p.name} ({' '.join(p.argv[-3:])}) -----\n"
                                     f"{text[-4000:]}")
        m.cleanup()
        assert not problems, "; ".join(problems)
