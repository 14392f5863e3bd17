"""The server process: sockets, the poll loop, the ZAP thread and the SQLite store.

Every rule lives in the core (core.py); this driver only moves bytes: it turns
socket traffic into core calls with the current time and executes the actions
the core returns.  One thread owns every socket and the database; the ZAP
thread only reads the core's in-memory key table.  A failure in one step is
logged and the loop goes on: no single input stops the server.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
import time
from pathlib import Path
from typing import Callable

import zmq
from zmq.utils.monitor import recv_monitor_message

from director import __version__
from director.config import Settings
from director.errors import ConfigError, DirectorError
from director.logsafe import shown
from director.net import control, sockfd, transport
from director.protocol.messages import Chunk, ChunkErr, encode
from director.protocol.control import CtlReply
from director.protocol.control import encode as encode_ctl
from director.server.connections import ConnectionTable, Limits
from director.server.core import CoreConfig, ServerCore
from director.server.events import BuildManifests, Reply, Send, ServeChunk
from director.server.fetchgate import FetchChunk, FetchEnd, FetchStart
from director.server.fetching import Fetcher
from director.server.manifests import ManifestBuilder
from director.server.retention import Policy
from director.server.store import SqlStore
from director.transfer.chunking import read_chunk
from director.trust import keystore
from director.trust.zap import ZapGate

log = logging.getLogger("director.server")
BATCH = 2000  # messages handled per socket before looking at the others
DRAIN = 0.02  # s: ... or this long (a RESULTS message may hold 256 results)
TICK = 0.25
GUARD = 0.05      # how often the memory of unproven connections is looked at
RECOUNT = 2.0     # how often open files are counted
CHECKPOINT_EVERY = 0.5  # s: the WAL is copied back to the database by a thread this often


class Server:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.home = Path(settings.home)
        keystore.ensure_private_dir(self.home)
        self.pair, created = keystore.load_or_create(self.home)
        if created:
            log.info("created server keypair (%s)", self.pair.fingerprint)
        self.store = SqlStore(self.home / "server.db", checkpoint_every=CHECKPOINT_EVERY)
        self.core = ServerCore(self.store, CoreConfig(
            self.pair.public, self.pair.fingerprint, settings.node_expiry,
            settings.max_pending, retention=retention_policy(settings)), time.time())
        self._stop = False
        self.uid = os.getuid()
        self._refused_user_logged = float("-inf")
        self._owns_control = False  # never remove another live server's socket
        self.ctx = zmq.Context(io_threads=2)  # CURVE encryption of chunk fan-out runs here
        self.conns = ConnectionTable(unproven_limits(settings))
        self.gate = ZapGate(self.ctx, self.core.keys.state,
                            lambda address: self.conns.refusal(address, time.monotonic()))
        self.gate.start()  # before any CURVE socket exists: fail closed
        try:
            self.control = control.bind(self.ctx, self.home)
            self._owns_control = True
            self.router = transport.server_socket(self.ctx, self.pair, settings.bind,
                                                  settings.heartbeat_interval)
        except zmq.ZMQError as exc:
            self.close()
            raise ConfigError(f"cannot bind {settings.bind}: {exc.strerror}") from None
        except BaseException:
            self.close()
            raise
        # connections closing (ZMTP heartbeat expiry, resets): their routes are dropped
        self.monitor = self.router.get_monitor_socket(
            zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED)
        self.rss = sockfd.ResidentSize()
        self._cut_logged = float("-inf")
        endpoint = self.router.last_endpoint.decode()
        self.core.address = lambda: advertised_address(settings, endpoint)  # DNS: when asked
        self.builder = ManifestBuilder(settings.chunk_size)
        self.fetcher = Fetcher(settings.get_max_bytes,  # GET: files from nodes (fetching.py)
                               lambda route, frames: transport.send_to(self.router, route, frames),
                               self.core.fetches.finished)
        log.info("server %s listening on %s (key %s)", __version__,
                 self.router.last_endpoint.decode(), self.pair.fingerprint)

    # -- lifecycle -------------------------------------------------------------
    def request_stop(self, *_: object) -> None:
        self._stop = True

    def run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.monitor, zmq.POLLIN)
        poller.register(self.router, zmq.POLLIN)
        poller.register(self.control, zmq.POLLIN)
        poller.register(self.builder.wake_r, zmq.POLLIN)
        poller.register(self.fetcher.wake_r, zmq.POLLIN)
        next_tick = next_guard = next_count = time.monotonic()
        core = self.core
        conns = self.conns
        gc_clock = GcClock()
        while not self._stop:
            wake = min(next_tick, next_guard) if conns.unproven else next_tick
            timeout = max(0.0, wake - time.monotonic())
            events = dict(poller.poll(0 if core.busy() else int(timeout * 1000) + 1))
            began = mark = time.monotonic()  # the iteration's work, the poll's wait left out
            gc_clock.spent = 0.0
            stages = []
            if self.monitor in events:  # first: a closed route is dropped before new traffic
                self._on_monitor()
            if self.router in events:
                self._drain(self.router, self._on_node)
                mark = _stage(stages, "nodes", mark)
            if self.control in events:
                self._drain(self.control, self._on_control)
                mark = _stage(stages, "control", mark)
            if self.builder.wake_r in events:
                for r in self.builder.ready():
                    self._step(lambda now: core.jobs.on_manifests(r.ticket, r.built,
                                                                   r.error, now))
            if self.fetcher.wake_r in events:
                self._step(lambda now: self.fetcher.ready())
            self._step(core.after_events)
            mono = _stage(stages, "after", mark)
            if conns.unproven and mono >= next_guard:
                self._guard()
                next_guard = mono + GUARD
            if mono >= next_count:
                count = sockfd.open_files()
                if count is not None:
                    conns.recount(count)
                next_count = mono + RECOUNT
            if mono >= next_tick:
                core.check_stall(mono - began, time.time())  # a long step: nobody expires
                self._step(core.tick)
                self.fetcher.sweep(mono)
                self._step(lambda now: core.handshakes_refused(self.gate.denied, now))
                gc_clock.full(core.idle(), mono)
                next_tick = _stage(stages, "tick", mono) + TICK
            if gc_clock.spent:
                stages.append(("gc", gc_clock.spent))
            core.loop_took(time.monotonic() - began, time.time(), tuple(stages))
            if not self.gate.is_alive():
                log.error("ZAP handler died; stopping (fail closed)")
                break
        gc_clock.stop()
        self.close()

    def close(self) -> None:
        if hasattr(self, "core"):
            try:
                self.core.close()
            except Exception as exc:  # noqa: BLE001 - best effort on the way out
                log.error("while writing state on the way out: %s", exc)
        if hasattr(self, "builder"):
            self.builder.close()
        if hasattr(self, "fetcher"):
            self.fetcher.close()
        if getattr(self, "monitor", None) is not None:
            try:
                self.router.disable_monitor()
            except zmq.ZMQError:
                pass
            self.monitor.close(0)
        for name in ("router", "control"):
            sock = getattr(self, name, None)
            if sock is not None:
                sock.close(0)
        if hasattr(self, "gate"):
            self.gate.stop()
        if hasattr(self, "rss"):
            self.rss.close()
        if hasattr(self, "ctx"):
            self.ctx.term()
        if self._owns_control:
            control.socket_path(self.home).unlink(missing_ok=True)
        if hasattr(self, "store"):
            self.store.close()

    # -- moving bytes ------------------------------------------------------------
    def _drain(self, sock: zmq.Socket, handler: Callable[[zmq.Socket], None]) -> None:
        until = time.monotonic() + DRAIN  # then the tick and the other sockets get a turn
        for _ in range(BATCH):
            try:
                handler(sock)
            except zmq.Again:
                return
            if time.monotonic() > until:  # a RESULTS of 64 is milliseconds of work
                return

    def _on_monitor(self) -> None:
        for _ in range(BATCH):
            try:
                event = recv_monitor_message(self.monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            fd = int(event["value"])
            if event["event"] == zmq.EVENT_ACCEPTED:
                self.conns.opened(fd, sockfd.peer_of(fd) or ("?", -1), time.monotonic())
            elif event["event"] == zmq.EVENT_DISCONNECTED:
                self.conns.closed(fd)
                self._step(lambda now: self.core.connection_closed(fd, now))

    def _guard(self) -> None:
        """Cut every unproven connection when they cost too much (connections.py)."""
        self.conns.age(time.monotonic())
        doomed = self.conns.to_cut(self.rss())
        if not doomed:
            return
        peers = self.conns.peer
        cut = sum(sockfd.cut(fd, peers[fd]) for fd in doomed)
        now = time.monotonic()
        if cut and now - self._cut_logged >= 60.0:  # at most one line a minute
            self._cut_logged = now
            log.warning("cut %d unproven connection(s): memory or open files ran short "
                        "while they were open (see SECURITY.md, limits)", cut)

    def _on_node(self, sock: zmq.Socket) -> None:
        inc = transport.recv_from_node(sock, zmq.NOBLOCK)
        if inc.fd >= 0 and inc.fd not in self.conns.proven \
                and self.core.keys.state(inc.key) == "accepted":
            self.conns.proved(inc.fd)
        try:  # the hot path: _step without its closure
            self.core.from_node(inc.routing_id, inc.key, inc.address, inc.frames, time.time(),
                                inc.fd)
        except Exception as exc:  # noqa: BLE001 - the core contains its own; this is a bug
            log.error("internal error (the server goes on): %s: %s", type(exc).__name__,
                      shown(str(exc)))
        if self.core.out:
            self._execute(self.core.take())

    def _on_control(self, sock: zmq.Socket) -> None:
        parts = transport.recv_frames(sock, zmq.NOBLOCK)
        frames = [f.bytes for f in parts]
        try:
            peer = parts[0].get("Peer-Address")
        except zmq.ZMQError:
            peer = ""
        if control.refuses_peer(peer or "", self.uid):
            self._refuse_user(frames[0], peer)
            return
        self._step(lambda now: self.core.request(frames[0], frames[1:], now))

    def _refuse_user(self, rid: bytes, peer: str) -> None:
        """Another user reached the control socket (permissions loosened by hand)."""
        uid = control.peer_uid(peer)
        now = time.monotonic()
        if now - self._refused_user_logged >= 60.0:
            self._refused_user_logged = now
            log.warning("control request from uid %s refused: this server serves uid %d",
                        uid, self.uid)
        transport.send_to(self.control, rid, encode_ctl(CtlReply(
            False, error=f"this server serves only uid {self.uid}; run as that user",
            code=1)))

    def _step(self, call: Callable[[float], None]) -> None:
        """Run one core step with the time, then what it decided; contained."""
        try:
            call(time.time())
        except Exception as exc:  # noqa: BLE001 - the core contains its own; this is a bug
            log.error("internal error (the server goes on): %s: %s", type(exc).__name__,
                      shown(str(exc)), exc_info=log.isEnabledFor(logging.DEBUG))
        if self.core.out:
            self._execute(self.core.take())

    def _execute(self, actions: list) -> None:
        for action in actions:
            try:
                kind = type(action)
                if kind is Send:
                    if not transport.send_to(self.router, action.route, action.frames) \
                            and action.jobs:
                        self.core.jobs.undelivered(action.key, action.jobs, time.time())
                elif kind is Reply:
                    transport.send_to(self.control, action.rid, action.frames)
                elif kind is ServeChunk:
                    self._serve(action)
                elif kind is BuildManifests:
                    self.builder.start(action.ticket, action.base, action.copies)
                elif kind in (FetchStart, FetchChunk, FetchEnd):
                    self.fetcher.handle(action)
            except Exception as exc:  # noqa: BLE001 - one failed send never stops the loop
                log.error("while executing %s: %s: %s", type(action).__name__,
                          type(exc).__name__, shown(str(exc)))
        if self.core.out:  # what undelivered sends decided
            self._execute(self.core.take())

    def _serve(self, a: ServeChunk) -> None:
        try:
            data = read_chunk(a.path, a.entry, a.chunk, a.chunk_size, a.vouched)
        except DirectorError as exc:
            transport.send_to(self.router, a.route,
                              encode(ChunkErr(a.job_id, a.file, a.chunk, str(exc))))
            return
        transport.send_to(self.router, a.route, encode(Chunk(a.job_id, a.file, a.chunk, data)))


def _stage(stages: list, name: str, since: float) -> float:
    """Note how long a stage of the loop took; returns the time it ended."""
    now = time.monotonic()
    stages.append((name, now - since))
    return now


class GcClock:
    """Garbage collection, timed and scheduled.  A full collection walks every
    container the server holds -- 200 ms at 500,000 tasks in flight -- and CPython
    starts one whenever a quarter more objects have lived long, i.e. many times during
    a big run.  So: what start-up made is frozen (never walked again), the young
    generations are collected as usual, and the full collection runs from the tick,
    when nothing is in flight, or at the latest every FULL_EVERY seconds."""

    FULL_EVERY = 300.0
    IDLE_EVERY = 30.0

    def __init__(self) -> None:
        self.spent = 0.0      # seconds collecting in this loop iteration
        self._started = 0.0
        gc.collect()
        gc.freeze()
        young, middle, _ = gc.get_threshold()
        gc.set_threshold(young, middle, 1_000_000)  # never on its own (see full)
        self._last_full = time.monotonic()
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, _info: dict) -> None:
        if phase == "start":
            self._started = time.monotonic()
        elif self._started:
            self.spent += time.monotonic() - self._started
            self._started = 0.0

    def full(self, idle: bool, mono: float) -> None:
        """From the tick: a full collection when it costs nobody, or when overdue."""
        since = mono - self._last_full
        if since >= self.FULL_EVERY or (idle and since >= self.IDLE_EVERY):
            gc.collect()
            self._last_full = time.monotonic()

    def stop(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        gc.set_threshold(*_DEFAULT_GC)
        gc.unfreeze()


_DEFAULT_GC = gc.get_threshold()


def advertised_address(settings: Settings, last_endpoint: str) -> str:
    """HOST:PORT a node should use to reach this server (for join commands)."""
    hostport = last_endpoint.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if host in ("0.0.0.0", "*", "[::]", "::"):
        host = settings.server_address.rsplit(":", 1)[0] if settings.server_address else socket.getfqdn()
    return f"{host}:{port}"


def retention_policy(settings: Settings) -> Policy:
    """The ``job_retention`` settings as the core takes them (validated already)."""
    from director.values import parse_duration

    return Policy(parse_duration(settings.job_retention), settings.job_retention_count)


def unproven_limits(settings: Settings) -> Limits:
    """The caps on unproven connections, from the settings and the open-file limit."""
    import resource

    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    fd_limit = soft if soft != resource.RLIM_INFINITY else 1 << 20
    return Limits(settings.max_strangers, settings.max_strangers_per_address, fd_limit,
                  Limits.reserve_for(fd_limit), settings.stranger_buffer_mb << 20)


def raise_fd_limit() -> int:
    """Open files: the soft limit up to the hard one (the common soft 1,024 is few for
    a server with many nodes; at the limit libzmq aborts the process).  Returns it."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= want:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ValueError, OSError) as exc:
        log.warning("cannot raise the open-file limit from %d to %d: %s", soft, want, exc)
        return soft
    return want


def run_server(settings: Settings) -> int:
    limit = raise_fd_limit()
    server = Server(settings)
    log.info("open-file limit %d", limit)
    signal.signal(signal.SIGTERM, server.request_stop)
    signal.signal(signal.SIGINT, server.request_stop)
    log.info("pid %d, home %s", os.getpid(), settings.home)
    server.run()
    log.info("server stopped")
    return 0
