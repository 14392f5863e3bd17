"""The server process: wiring of sockets, the event loop and the dispatch table.

One thread owns every socket and the database; the ZAP thread only reads the
in-memory key table.  Every message from a node is checked against the
*current* state of the key that authenticated it, so revocation applies to
the very next message on a live connection.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import zmq

from director import __version__
from director.config import Settings
from director.errors import ConfigError, DirectorError
from director.net import control, transport
from director.protocol.frames import Message, encode, make
from director.server.registry import Registry
from director.server.state import KeyTable, StateDB
from director.trust import keystore
from director.trust.zap import Role, ZapGate, role_of

log = logging.getLogger("director.server")

# Which message types each role may send.  Anything else: "not permitted".
DISPATCH: dict[Role, frozenset[str]] = {
    Role.STRANGER: frozenset({"ENROLL"}),
    Role.PENDING: frozenset({"ENROLL", "ENROLL_STATUS"}),
    Role.NODE: frozenset({"ENROLL", "ENROLL_STATUS", "HELLO", "HEARTBEAT", "RESULT",
                          "RESULTS", "CHUNK_REQ"}),
}
# Messages that tell where to send a node's jobs: its agent's main connection.
# Results and chunk pulls come over the node's side connections (same key).
ROUTE_FROM = frozenset({"HELLO", "HEARTBEAT", "ENROLL", "ENROLL_STATUS"})
BATCH = 2000  # messages handled per socket before looking at the others


@dataclass
class Peer:
    """What the server knows about a connected key (bounded by the key table)."""

    key: str
    routing_id: bytes
    last_seen: float
    address: str | None = None
    version: str | None = None
    boot: str | None = None
    hello: bool = False  # an agent said HELLO (an enroll-only connection is not online)


class Server:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.home = Path(settings.home)
        keystore.ensure_private_dir(self.home)
        self.pair, created = keystore.load_or_create(self.home)
        if created:
            log.info("created server keypair (%s)", self.pair.fingerprint)
        self.db = StateDB(self.home / "server.db")
        self.keys = KeyTable()
        self.registry = Registry(self.db, self.keys, self.pair.public, settings.max_pending)
        self.peers: dict[str, Peer] = {}
        self.seen_dirty: dict[str, tuple[float, str | None, str | None]] = {}
        self.started = time.time()
        self._stop = False
        self._owns_control = False  # never remove another live server's socket
        self.ctx = zmq.Context(io_threads=2)  # CURVE encryption of chunk fan-out runs here
        self.gate = ZapGate(self.ctx, self.keys.state,
                            lambda: (self.keys.pending_count(), settings.max_pending))
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
        from director.server.jobs import JobManager

        self.jobs = JobManager(self)
        self.ops: dict[str, Callable[[bytes, dict], Any]] = {}
        self._register_ops()
        log.info("server %s listening on %s (key %s)", __version__,
                 self.router.last_endpoint.decode(), self.pair.fingerprint)

    # -- lifecycle -------------------------------------------------------------
    def request_stop(self, *_: object) -> None:
        self._stop = True

    def run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(self.control, zmq.POLLIN)
        poller.register(self.jobs.builder.wake_r, zmq.POLLIN)
        next_tick = time.monotonic()
        while not self._stop:
            timeout = max(0.0, next_tick - time.monotonic())
            events = dict(poller.poll(int(timeout * 1000) + 1))
            if self.router in events:
                self._drain(self.router, self._on_node)
            if self.control in events:
                self._drain(self.control, self._on_control)
            if self.jobs.builder.wake_r in events:
                self.jobs.on_manifests()
            self.jobs.after_events()
            if time.monotonic() >= next_tick:
                self._tick()
                next_tick = time.monotonic() + 0.25
            if not self.gate.is_alive():
                log.error("ZAP handler died; stopping (fail closed)")
                break
        self.close()

    def close(self) -> None:
        try:
            if hasattr(self, "jobs"):
                self.jobs.flush()
                self.jobs.builder.close()
            self._flush_seen()
        except Exception:  # noqa: BLE001 - best effort on the way out
            log.exception("while flushing state")
        for name in ("router", "control"):
            sock = getattr(self, name, None)
            if sock is not None:
                sock.close(0)
        self.gate.stop()
        self.ctx.term()
        if self._owns_control:
            control.socket_path(self.home).unlink(missing_ok=True)
        self.db.close()

    def _drain(self, sock: zmq.Socket, handler: Callable[[zmq.Socket], None]) -> None:
        for _ in range(BATCH):
            try:
                handler(sock)
            except zmq.Again:
                return

    def _tick(self) -> None:
        now = time.time()
        expiry = self.settings.node_expiry
        for key, peer in list(self.peers.items()):
            if now - peer.last_seen > expiry:
                del self.peers[key]
                log.info("node %s went offline", self.keys.name(key))
                self.jobs.node_lost(key)
        self._flush_seen()
        self.jobs.tick(now)

    def _flush_seen(self) -> None:
        if self.seen_dirty:
            self.db.touch_many(self.seen_dirty)
            self.seen_dirty = {}

    # -- node side -------------------------------------------------------------
    def online(self, key: str) -> bool:
        peer = self.peers.get(key)
        return (peer is not None and peer.hello
                and time.time() - peer.last_seen <= self.settings.node_expiry)

    def send_node(self, key: str, frames: list[bytes]) -> bool:
        peer = self.peers.get(key)
        return peer is not None and transport.send_to(self.router, peer.routing_id, frames)

    def _on_node(self, sock: zmq.Socket) -> None:
        inc = transport.recv_from_node(sock, zmq.NOBLOCK)
        key = inc.key
        state = self.keys.state(key) if key else "revoked"
        role = role_of(state)
        if role is None:  # revoked/rejected on a live connection: cut it
            self.peers.pop(key, None)
            transport.send_to(sock, inc.routing_id,
                              make("REVOKED", reason=f"this node's key is {state}"))
            return
        if inc.msg is None:
            log.warning("bad message from %s: %s", self._who(key), inc.error)
            return
        msg = inc.msg
        if msg.type not in DISPATCH[role]:
            if role is not Role.STRANGER:  # strangers get nothing at all
                transport.send_to(sock, inc.routing_id, make(
                    "ERROR", code="not_permitted",
                    message=f"{msg.type} is not permitted for a {role.value} key"))
            log.info("refused %s from %s (%s)", msg.type, self._who(key), role.value)
            return
        if role is not Role.STRANGER:
            self._seen(key, inc, role)
        handler = getattr(self, f"_msg_{msg.type.lower()}", None)
        try:
            if handler is not None:
                handler(key, inc.routing_id, msg)
            else:
                self.jobs.on_message(key, msg)
        except Exception:  # noqa: BLE001 - one bad message never stops the server
            log.exception("while handling %s from %s", msg.type, self._who(key))

    def _who(self, key: str) -> str:
        return self.keys.name(key) or (key[:8] + "...")

    def _seen(self, key: str, inc: transport.Incoming, role: Role) -> None:
        now = time.time()
        peer = self.peers.get(key)
        if peer is None:
            peer = self.peers[key] = Peer(key, inc.routing_id, now, inc.address)
            if role is Role.NODE:
                log.info("node %s is online from %s", self._who(key), inc.address)
        if inc.msg is not None and inc.msg.type in ROUTE_FROM:
            peer.routing_id = inc.routing_id
        peer.last_seen = now
        if inc.address:
            peer.address = inc.address
        if role is Role.NODE:
            self.seen_dirty[key] = (now, peer.address, peer.version)

    def _msg_enroll(self, key: str, rid: bytes, msg: Message) -> None:
        out = self.registry.enroll(key, msg.get("name", ""), msg.get("token"))
        if out.state != "refused":
            self._seen(key, transport.Incoming(rid, key, None, msg), Role.PENDING)
        transport.send_to(self.router, rid,
                          make("ENROLLED", state=out.state, name=out.name, reason=out.reason))

    def _msg_enroll_status(self, key: str, rid: bytes, msg: Message) -> None:
        rec = self.db.node_by_key(key)
        state = rec.state if rec else "refused"
        transport.send_to(self.router, rid, make("ENROLLED", state=state,
                                                 name=rec.name if rec else ""))

    def _msg_hello(self, key: str, rid: bytes, msg: Message) -> None:
        peer = self.peers[key]
        peer.version = msg.get("version")[:32]
        boot = msg.get("boot")
        if peer.boot and boot != peer.boot:  # the agent restarted: what it ran is gone
            self.jobs.node_restarted(key)
        elif peer.boot:  # the same agent reconnected: jobs sent on the dropped connection
            self.jobs.resend_inflight(key)  # may be gone; it answers repeats from memory
        peer.boot = boot
        peer.hello = True
        self.seen_dirty[key] = (peer.last_seen, peer.address, peer.version)
        transport.send_to(self.router, rid, make("ENROLLED", state="accepted",
                                                 name=self.keys.name(key) or ""))
        self.jobs.node_ready(key)

    def _msg_chunk_req(self, key: str, rid: bytes, msg: Message) -> None:
        self.jobs.on_chunk_req(key, rid, msg)

    def _msg_heartbeat(self, key: str, rid: bytes, msg: Message) -> None:
        pass  # _seen already recorded it

    def cut_off(self, key: str, state: str) -> None:
        """Tell a connected node it is cut off, forget it, and fail its jobs."""
        peer = self.peers.pop(key, None)
        if peer is not None:
            transport.send_to(self.router, peer.routing_id,
                              make("REVOKED", reason=f"this node's key is {state}"))
        self.jobs.node_lost(key)

    # -- control side ------------------------------------------------------------
    def _on_control(self, sock: zmq.Socket) -> None:
        frames = sock.recv_multipart(flags=zmq.NOBLOCK)
        rid = frames[0]
        from director.protocol.frames import decode

        try:
            msg = decode(frames[1:])
            if msg.type != "CTL":
                raise DirectorError(f"expected CTL, got {msg.type}")
            op = self.ops.get(msg.get("op"))
            if op is None:
                raise DirectorError(f"unknown control operation {msg.get('op')!r}")
            result = op(rid, msg.get("args"))
        except DirectorError as exc:
            self.reply(rid, ok=False, error=str(exc), code=exc.exit_code)
            return
        except Exception as exc:  # noqa: BLE001 - a bad request never stops the server
            log.exception("control request failed")
            self.reply(rid, ok=False, error=f"internal error: {type(exc).__name__}: {exc}")
            return
        if result is not _DEFERRED:
            self.reply(rid, ok=True, result=result)

    def reply(self, rid: bytes, payload: tuple[bytes, ...] = (), **body: Any) -> None:
        transport.send_to(self.control, rid, encode(Message("CTL_REPLY", body, payload)))

    def event(self, rid: bytes, event: str, data: Any) -> None:
        transport.send_to(self.control, rid, make("CTL_EVENT", event=event, data=data))

    def _register_ops(self) -> None:
        from director.server import ops

        self.ops.update(ops.build(self))
        self.ops.update(self.jobs.ops())


_DEFERRED = object()
DEFERRED = _DEFERRED  # an op returns this when it will reply later (waits)


def advertised_address(settings: Settings, last_endpoint: str) -> str:
    """HOST:PORT a node should use to reach this server (for join commands)."""
    hostport = last_endpoint.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if host in ("0.0.0.0", "*", "[::]", "::"):
        host = settings.server_address.rsplit(":", 1)[0] if settings.server_address else socket.getfqdn()
    return f"{host}:{port}"


def run_server(settings: Settings) -> int:
    server = Server(settings)
    signal.signal(signal.SIGTERM, server.request_stop)
    signal.signal(signal.SIGINT, server.request_stop)
    log.info("pid %d, home %s", os.getpid(), settings.home)
    server.run()
    log.info("server stopped")
    return 0
