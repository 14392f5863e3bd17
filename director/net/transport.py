"""The only data-path ZeroMQ code: CURVE ROUTER (server) and DEALER (node).

Every TCP socket here is CURVE; the server socket names a ZAP domain so the
ZAP handler decides every handshake.  Limits are set on every socket: maximum
message size, handshake timeout, ZMTP heartbeats, bounded queues and
non-blocking sends, so a slow or vanished peer never blocks the server.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass

import zmq

from director.protocol.frames import MAX_BODY
from director.protocol.messages import Msg, decode, encode
from director.protocol.timing import RECONNECT_MAX_MS, RECONNECT_MS
from director.trust.keystore import KeyPair
from director.trust.zap import ZAP_DOMAIN

log = logging.getLogger("director.net")

MAX_MSG = MAX_BODY + 80 * 1024 * 1024  # body + one chunk (chunk_size max 64 MiB)
MAX_FROM_NODE = MAX_BODY + 64 * 1024
HANDSHAKE_MS = 5000
SNDHWM = 10000
SERVER_PING_EVERY = 3   # the server PINGs a connection every this many heartbeat intervals


def _common(sock: zmq.Socket, heartbeat_s: float) -> None:
    sock.linger = 0
    sock.maxmsgsize = MAX_MSG
    sock.handshake_ivl = HANDSHAKE_MS
    ivl = max(100, int(heartbeat_s * 1000))
    sock.heartbeat_ivl = ivl
    sock.heartbeat_timeout = ivl * 3
    sock.heartbeat_ttl = ivl * 3
    sock.sndhwm = SNDHWM
    sock.rcvhwm = SNDHWM


def server_socket(ctx: zmq.Context, pair: KeyPair, bind: str, heartbeat_s: float) -> zmq.Socket:
    """A CURVE ROUTER that only talks to peers the ZAP handler admitted."""
    sock = ctx.socket(zmq.ROUTER)
    _common(sock, heartbeat_s)
    # Every node already sends a PING (and a HEARTBEAT) each interval, so the server's
    # own PINGs only find connections that died without a word: one every third
    # interval does that (a dead link is closed within 6 intervals) at a third of the
    # timer and CURVE work, which at thousands of nodes was most of the idle cost.
    ivl = max(100, int(heartbeat_s * 1000)) * SERVER_PING_EVERY
    sock.heartbeat_ivl = ivl
    sock.heartbeat_timeout = ivl
    sock.heartbeat_ttl = 2 * ivl
    # nodes send the server bodies only (chunks flow the other way): a frame past
    # this is refused by libzmq before it is kept whole
    sock.maxmsgsize = MAX_FROM_NODE
    sock.curve_server = True
    sock.curve_secretkey = pair.secret
    sock.curve_publickey = pair.public
    sock.zap_domain = ZAP_DOMAIN.encode()
    try:  # fail closed even if the ZAP handler vanished (libzmq >= 4.3)
        sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)
    except (zmq.ZMQError, AttributeError):
        pass
    sock.router_mandatory = True
    sock.bind(bind)
    return sock


def client_socket(ctx: zmq.Context, pair: KeyPair, server_key: bytes, endpoint: str | None,
                  heartbeat_s: float) -> zmq.Socket:
    """A CURVE DEALER pinned to ``server_key``; reconnects by itself with backoff.

    With ``endpoint=None`` it is not connected yet (attach a monitor first)."""
    sock = ctx.socket(zmq.DEALER)
    _common(sock, heartbeat_s)
    sock.curve_secretkey = pair.secret
    sock.curve_publickey = pair.public
    sock.curve_serverkey = server_key
    # No TTL in the node's PINGs: a TTL makes the server arm a timer on each PING and
    # cancel it on the next message, and libzmq cancels a timer by scanning all of an
    # I/O thread's timers -- at 5,000 nodes half the server's idle CPU.  The server
    # finds dead links with its own PINGs (server_socket) instead.
    sock.heartbeat_ttl = 0
    # Spread reconnects: libzmq adds at most one base interval of jitter per retry, so
    # thousands of nodes cut at the same moment (a server restart) would otherwise
    # retry -- and handshake -- in lockstep, every 5 s, all at once.
    sock.reconnect_ivl = random.randint(*RECONNECT_MS)
    sock.reconnect_ivl_max = random.randint(*RECONNECT_MAX_MS)
    sock.immediate = False  # queue while (re)connecting: results are not lost
    if endpoint is not None:
        sock.connect(endpoint)
    return sock


@dataclass(frozen=True)
class Incoming:
    """A message from a node, not decoded yet (the server core decodes it):
    ``key`` is the authenticated z85 key (ZAP User-Id), never a claim of the peer."""

    routing_id: bytes
    key: str
    address: str | None
    frames: list
    fd: int = -1   # the connection's socket, for messages that may move a node's route


_NB = int(zmq.NOBLOCK)
_NB_MORE = int(zmq.NOBLOCK | zmq.SNDMORE)
_ADDRESSED = (b"HELLO", b"ENROLL")  # only these record where a node connects from
# the types that may move a node's route (server/peers.py ROUTE_FROM): their connection's
# fd is read, so the socket monitor's "disconnected (fd)" can drop that route
_ROUTING = frozenset({b"HELLO", b"HEARTBEAT", b"ENROLL", b"ENROLL_STATUS", b"RESULT",
                      b"RESULTS"})


def recv_frames(sock: zmq.Socket, flags: int = 0) -> list[zmq.Frame]:
    """One whole message as zero-copy frames (``recv_multipart`` without its
    per-frame option lookups, a visible share of a small message's cost)."""
    frames = [sock.recv(flags, copy=False)]
    while frames[-1].more:  # the rest of a message is already here: no Again
        frames.append(sock.recv(_NB, copy=False))
    return frames


def recv_from_node(sock: zmq.Socket, flags: int = 0) -> Incoming:
    """Receive one message on the ROUTER, with its authenticated key."""
    frames = recv_frames(sock, flags)
    routing_id = frames[0].bytes
    if len(frames) < 2:
        return Incoming(routing_id, "", None, [])
    meta = frames[1]
    try:
        key = meta.get("User-Id")
    except zmq.ZMQError:
        key = ""
    address, fd = None, -1
    mtype = frames[2].bytes if len(frames) > 2 else b""
    if mtype in _ROUTING:
        try:
            fd = meta.get(zmq.SRCFD)
            if mtype in _ADDRESSED:
                address = meta.get("Peer-Address")
        except zmq.ZMQError:
            pass
    return Incoming(routing_id, key or "", address, [f.buffer for f in frames[1:]], fd)


def send_to(sock: zmq.Socket, routing_id: bytes, frames: list[bytes]) -> bool:
    """Non-blocking send to one peer; False when it is gone or too slow.

    Frame by frame with plain int flags: ``send_multipart`` builds enum flags per
    frame, which is a measurable share of the server's time per job."""
    try:
        sock.send(routing_id, _NB_MORE)
        last = len(frames) - 1
        for i, frame in enumerate(frames):
            sock.send(frame, _NB if i == last else _NB_MORE, copy=len(frame) < 65536)
        return True
    except zmq.Again:
        log.warning("peer queue full; message dropped")
        return False
    except zmq.ZMQError as exc:
        if exc.errno == zmq.EHOSTUNREACH:
            return False
        raise


def send_msg(sock: zmq.Socket, msg: Msg) -> bool:
    """Non-blocking send on a DEALER (frame by frame, int flags: see send_to)."""
    frames = encode(msg)
    try:
        last = len(frames) - 1
        for i, frame in enumerate(frames):
            sock.send(frame, _NB if i == last else _NB_MORE, copy=len(frame) < 65536)
        return True
    except zmq.Again:
        return False


def recv_msg(sock: zmq.Socket) -> Msg:
    return decode(sock.recv_multipart(copy=True))
