"""The server core: every rule of the server, fed events, emitting actions.

No sockets, no SQL, no threads, no clock: the driver (daemon.py) turns socket
traffic into calls here, passes ``now``, and executes what ``take()`` returns
(events.py).  Identity is the authenticated key the driver read from ZAP,
checked against the key's *current* state on every message, so revocation
applies to the very next message on a live connection.  Each message and
each operator request is contained: a failure is logged once, answered
(an ERROR for a node with a role, an error reply for an operator, nothing
for a stranger) and never ends the server.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from typing import Any, Callable

from director.errors import DirectorError, ProtocolError, StorageError
from director.logsafe import shown
from director.protocol import messages as m
from director.protocol import fetch as fetch_msgs
from director.server.fetchgate import FetchGate
from director.server.events import (FromNode, ManifestsBuilt, Reply, Request, Send, Tick,
                                    Undelivered)
from director.server.jobs import DEFERRED, JobBook
from director.server.streaming import on_output
from director.server.nodeinfo import FactsBook
from director.server.ops import OPS
from director.server.audit import Audit
from director.server.peers import Peers
from director.server.ratelimit import LogLimiter, ReplyLimiter
from director.server.registry import KeyTable, Registry
from director.server.retention import Policy, Retention
from director.trust.zap import Role, role_of

log = logging.getLogger("director.server")
STALL = 1.0  # s: a loop iteration longer than this restarts every node's expiry

# Which messages each role may send.  Anything else: "not permitted".
DISPATCH: dict[Role, frozenset[type]] = {
    Role.STRANGER: frozenset({m.Enroll}),
    Role.PENDING: frozenset({m.Enroll, m.EnrollStatus}),
    Role.NODE: frozenset({m.Enroll, m.EnrollStatus, m.Hello, m.Heartbeat, m.Result,
                          m.Results, m.ChunkReq, m.Output, fetch_msgs.GetOffer,
                          fetch_msgs.GetData}),
}


@dataclass(frozen=True)
class CoreConfig:
    server_key: bytes
    fingerprint: str
    node_expiry: float = 30.0
    max_pending: int = 1000
    address: Callable[[], str] = lambda: ""   # HOST:PORT nodes use to reach this server
    retention: Policy = Policy()               # how long finished jobs are kept


class ServerCore:
    def __init__(self, store: Any, config: CoreConfig, now: float,
                 new_id: Callable[[], str] = lambda: secrets.token_hex(4)):
        self.store = store
        self.server_key = config.server_key
        self.fingerprint = config.fingerprint
        self.address = config.address
        self.started = now
        self.out: list = []
        self.keys = KeyTable()
        self.registry = Registry(store, self.keys, config.server_key, config.max_pending)
        self.peers = Peers(config.node_expiry)
        self._seen_error = False
        self.logs = LogLimiter()
        self.replies = ReplyLimiter()
        self.audit = Audit()
        self.loop = LoopStats()
        self._address: str | None = None     # of the message being handled
        self._refused = (0, float("-inf"))    # handshake refusals reported, and when
        self.jobs = JobBook(store, self.peers, self.who, self.out, config.node_expiry, now,
                            new_id, self.peer_log)
        self.retention = Retention(store, self.out, config.retention, now)
        self.fetches = FetchGate(self.jobs, self.keys.name, self.out, self.peer_log)  # GET
        self.facts = FactsBook()  # what nodes said of themselves at HELLO, not yet written
        self.jobs.node_attrs = lambda accepted: self.facts.attrs(store, accepted)
        self._handlers: dict[type, Callable[[str, bytes, Any, float], None]] = {
            m.Enroll: self._enroll, m.EnrollStatus: self._enroll_status, m.Hello: self._hello,
            m.Heartbeat: _ignore, m.Result: self._result, m.Results: self._results,
            m.ChunkReq: self._chunk_req,
            m.Output: lambda key, route, msg, now: on_output(self.jobs, key, msg, now),
            fetch_msgs.GetOffer: self.fetches.on_offer, fetch_msgs.GetData: self.fetches.on_data,
        }

    # -- driver interface ----------------------------------------------------------
    def take(self) -> list:
        """The actions decided since the last call, in order."""
        actions = self.out[:]
        self.out.clear()
        return actions

    def handle(self, event: Any, now: float) -> list:
        """Feed one event; returns the actions it (and anything before) produced."""
        if isinstance(event, FromNode):
            self.from_node(event.route, event.key, event.address, event.frames, now)
        elif isinstance(event, Request):
            self.request(event.rid, event.frames, now)
        elif isinstance(event, Tick):
            self.tick(now)
        elif isinstance(event, ManifestsBuilt):
            self.jobs.on_manifests(event.ticket, event.built, event.error, now)
        elif isinstance(event, Undelivered):
            self.jobs.undelivered(event.key, event.jobs, now)
        self.after_events(now)
        return self.take()

    def loop_took(self, seconds: float, now: float | None = None,
                  stages: tuple = ()) -> None:
        """The driver's measure of one loop iteration (its work, not its wait), with
        ``stages`` as (name, seconds) pairs.  One over STALL left the sockets unread
        that long: nodes get a full expiry again."""
        self.loop.took(seconds, stages)
        if seconds > STALL and now is not None:
            log.warning("the server did not read its sockets for %.1f s", seconds)
            self.peers.stalled(now)

    def check_stall(self, seconds: float, now: float) -> None:
        """Before a tick: the iteration so far took ``seconds``; over STALL, what nodes
        sent meanwhile is unread, so no node expires in this tick for it."""
        if seconds > STALL:
            self.peers.stalled(now)

    def idle(self) -> bool:
        """Nothing in flight, queued or waited for: a pause now costs nobody."""
        jobs = self.jobs
        return not (jobs.sched.live or jobs.dirty or jobs.waiters or jobs.feeding) \
            and not self.busy()

    def busy(self) -> bool:
        """More work is due on the next loop turn: the driver polls without waiting."""
        return self.jobs.busy() or self.retention.busy()

    def who(self, key: str) -> str:
        return self.keys.name(key) or (key[:8] + "...")

    # -- nodes -----------------------------------------------------------------------
    def from_node(self, route: bytes, key: str, address: str | None, frames: list,
                  now: float, fd: int = -1) -> None:
        state = self.keys.state(key) if key else "revoked"
        role = role_of(state)
        if role is None:  # revoked/rejected on a live connection: cut it
            self.peers.forget(key)
            self.out.append(Send(route, m.encode(m.Revoked(f"this node's key is {state}"))))
            return
        try:
            msg = m.decode(frames)
        except ProtocolError as exc:
            code = getattr(exc, "code", "bad_request")
            self.peer_log(logging.WARNING, key, code, now, "bad message from %s: %s",
                          self.who(key), shown(str(exc)))
            if role is not Role.STRANGER:  # strangers get nothing at all
                self._error(route, key, code, str(exc), now)
            return
        if type(msg) not in DISPATCH[role]:
            if role is not Role.STRANGER:
                self._error(route, key, "not_permitted",
                            f"{msg.TYPE} is not permitted for a {role.value} key", now)
            self.peer_log(logging.INFO, key, "not_permitted", now, "refused %s from %s (%s)",
                          msg.TYPE, self.who(key), role.value)
            return
        if role is not Role.STRANGER:
            before = self.peers.get(key)
            serving = before is not None and before.hello
            peer, moved = self.peers.seen(key, route, address, msg.TYPE, now,
                                          role is Role.NODE, fd)
            if moved and role is Role.NODE:
                if peer.hello:  # a new connection of a node already serving: go on there
                    if not serving:
                        log.info("node %s is online again (heard from on a live"
                                 " connection)", self.who(key))
                    self.jobs.node_ready(key)
                else:
                    log.info("node %s is online from %s", self.who(key), address)
        self._address = address
        try:
            self._handlers[type(msg)](key, route, msg, now)
        except DirectorError as exc:  # StorageError included
            self.peer_log(logging.ERROR, key, "internal", now, "while handling %s from %s: %s",
                          msg.TYPE, self.who(key), shown(str(exc)))
            if role is not Role.STRANGER:
                self._error(route, key, "internal", f"the server could not handle {msg.TYPE}",
                            now)
        except Exception as exc:  # noqa: BLE001 - one bad message never stops the server
            self.peer_log(logging.ERROR, key, "internal", now,
                          "while handling %s from %s: %s: %s", msg.TYPE, self.who(key),
                          type(exc).__name__, shown(str(exc)),
                          exc_info=log.isEnabledFor(logging.DEBUG))
            if role is not Role.STRANGER:
                self._error(route, key, "internal", f"the server could not handle {msg.TYPE}",
                            now)

    def peer_event(self, now: float, event: str, key: str, name: str, detail: str) -> None:
        """A security event a peer caused: recorded once a minute per key and kind."""
        if self.logs.allow(key, "event:" + event, now)[0]:
            self.audit.record(now, event, key, name, self._address, detail)

    def handshakes_refused(self, total: int, now: float) -> None:
        """The ZAP handler's count of refused handshakes: summarised once a minute."""
        seen, at = self._refused
        if total > seen and now - at >= 60.0:
            self.audit.record(now, "handshake_refused", detail=f"{total - seen} refused"
                              " handshake(s) (revoked or rejected keys, or past the caps"
                              " on unproven connections)")
            self._refused = (total, now)

    def _error(self, route: bytes, key: str, code: str, text: str, now: float) -> None:
        """Tell a node what was wrong, a few times a second at most per key."""
        if self.replies.allow(key, now):
            self.out.append(Send(route, m.encode(m.Error(code, text[:1000]))))

    def peer_log(self, level: int, key: str, reason: str, now: float, fmt: str,
                 *args: Any, exc_info: bool = False) -> None:
        """A log line caused by a peer: one per key and reason a minute, with a count."""
        emit, skipped = self.logs.allow(key, reason, now)
        if emit:
            if skipped:
                fmt += f" ({skipped} more like it in the last minute)"
            log.log(level, fmt, *args, exc_info=exc_info)

    def _enroll(self, key: str, route: bytes, msg: m.Enroll, now: float) -> None:
        out = self.registry.enroll(key, msg.name, msg.token, now)
        if out.event:
            self.peer_event(now, out.event, key, out.name, out.reason)
        if out.state != "refused":
            self.peers.seen(key, route, None, msg.TYPE, now, False)
        self.out.append(Send(route, m.encode(m.Enrolled(out.state, out.name, out.reason))))

    def _enroll_status(self, key: str, route: bytes, msg: m.EnrollStatus, now: float) -> None:
        rec = self.store.node_by_key(key)
        state = rec.state if rec else "refused"
        self.out.append(Send(route, m.encode(m.Enrolled(state, rec.name if rec else ""))))

    def _hello(self, key: str, route: bytes, msg: m.Hello, now: float) -> None:
        peer = self.peers.by_key[key]
        if msg.name != self.keys.name(key):  # names come from the key, never the message
            self.peer_event(now, "name_claim", key, self.keys.name(key) or "",
                            f"said HELLO as {msg.name!r}")
        peer.version = msg.version[:32]
        peer.boot = msg.boot
        peer.hello = True
        self.peers.mark_dirty(peer)
        self.facts.heard(key, msg.facts)
        self.out.append(Send(route, m.encode(m.Enrolled("accepted", self.keys.name(key) or ""))))
        # after a reconnect, an agent or a server restart alike: the node's journal says
        # what became of each job in flight there (never run twice)
        self.jobs.resend_inflight(key)
        self.jobs.node_ready(key)

    def _result(self, key: str, route: bytes, msg: m.Result, now: float) -> None:
        self.jobs.on_result(key, self.fetches.settle(key, msg), now)

    def _results(self, key: str, route: bytes, msg: m.Results, now: float) -> None:
        for item in msg.items:
            self.jobs.on_result(key, self.fetches.settle(key, item), now)
        if msg.problems:
            self.peer_log(logging.WARNING, key, "bad_result", now, "%d bad result(s) from %s: %s",
                          len(msg.problems), self.who(key), shown(msg.problems[0]))

    def _chunk_req(self, key: str, route: bytes, msg: m.ChunkReq, now: float) -> None:
        self.jobs.serve_chunks(key, route, msg, now)

    def connection_closed(self, fd: int, now: float) -> None:
        """The socket monitor saw the connection on ``fd`` close."""
        for key in self.peers.closed(fd):
            peer = self.peers.get(key)
            if peer is not None and peer.silent:  # offline already: now it is gone
                self.peers.forget(key)
                log.info("node %s went offline (its connection closed)", self.who(key))
                self.jobs.node_lost(key, now)
                continue
            log.info("connection of %s closed; waiting for it to come back", self.who(key))

    def cut_off(self, key: str, state: str, now: float) -> None:
        """Tell a connected node it is cut off, forget it, and fail its jobs."""
        peer = self.peers.forget(key)
        if peer is not None and peer.route is not None:
            self.out.append(Send(peer.route, m.encode(m.Revoked(f"this node's key is {state}"))))
        self.jobs.node_lost(key, now)

    # -- operators -----------------------------------------------------------------------
    def request(self, rid: bytes, frames: list, now: float) -> None:
        try:
            msg = m.decode(frames)
            if not isinstance(msg, m.Ctl):
                raise DirectorError(f"expected CTL, got {msg.TYPE}")
            op = OPS.get(msg.op)
            if op is None:
                raise DirectorError(f"unknown control operation {msg.op!r}")
            result = op(self, rid, msg.args, now)
            if result is not DEFERRED:
                self.out.append(Reply(rid, m.encode(m.CtlReply(True, result))))
        except DirectorError as exc:
            self.jobs.reply(rid, ok=False, error=str(exc), code=exc.exit_code)
        except Exception as exc:  # noqa: BLE001 - a bad request never stops the server
            log.error("control request failed: %s: %s", type(exc).__name__, exc,
                      exc_info=log.isEnabledFor(logging.DEBUG))
            self.jobs.reply(rid, ok=False, error=f"internal error: {type(exc).__name__}: {exc}")

    # -- time ------------------------------------------------------------------------------
    def after_events(self, now: float) -> None:
        self.jobs.after_events(now)
        self.retention.step(now, self.jobs.open)

    def tick(self, now: float) -> None:
        gone, silent = self.peers.expired(now)
        for key in silent:  # its connection is up: its work waits for its next word
            log.info("node %s went offline (silent; its connection is up, its jobs wait)",
                     self.who(key))
        for key in gone:
            if self.keys.state(key) == "accepted":
                log.info("node %s went offline", self.who(key))
            self.jobs.node_lost(key, now, self.peers.went_offline.get(key))
        self.flush_seen()
        self.facts.flush(self.store)
        try:
            self.audit.flush(self.store)
        except StorageError as exc:
            self.peer_log(logging.ERROR, "", "storage", now, "cannot record events: %s", exc)
        self.jobs.tick(now)

    def flush_seen(self) -> None:
        seen = self.peers.take_dirty()
        if not seen:
            return
        try:
            self.store.touch_many(seen)
            self._seen_error = False
        except StorageError as exc:  # last-seen times are not worth keeping: drop them
            if not self._seen_error:
                log.error("cannot record when nodes were last seen: %s", exc)
            self._seen_error = True

    def close(self) -> None:
        """Write what is still in memory (best effort: the driver is stopping)."""
        self.jobs.flush()
        self.flush_seen()
        self.facts.flush(self.store)


class LoopStats:
    """How long the driver's loop iterations take: a frozen loop leaves heartbeats
    unread, so the longest one is what operators and the scale benchmark watch."""

    SLOW = 0.05

    def __init__(self) -> None:
        self.count = 0
        self.slow = 0          # iterations over SLOW
        self.longest = 0.0     # since the server started
        self.recent = 0.0      # since the last ``take_recent``
        self.recent_stages: tuple = ()  # where the recent longest one spent its time

    def took(self, seconds: float, stages: tuple = ()) -> None:
        self.count += 1
        if seconds > self.recent:
            self.recent = seconds
            self.recent_stages = stages
            if seconds > self.longest:
                self.longest = seconds
        if seconds > self.SLOW:
            self.slow += 1

    def doc(self, reset: bool) -> dict:
        out = {"iterations": self.count, "slow_iterations": self.slow,
               "longest_ms": round(self.longest * 1000, 3),
               "longest_recent_ms": round(self.recent * 1000, 3),
               "longest_recent_stages_ms": {name: round(sec * 1000, 1)
                                            for name, sec in self.recent_stages if sec >= 0.001}}
        if reset:
            self.recent = 0.0
            self.recent_stages = ()
        return out


def _ignore(key: str, route: bytes, msg: Any, now: float) -> None:
    """HEARTBEAT: recording the peer as seen was all it asked for."""
