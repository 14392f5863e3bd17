"""``director client``: the node agent.

Keeps a CURVE link to its pinned server, says HELLO after every handshake,
sends heartbeats, runs the jobs it is sent and reports results.  It exits
non-zero with a clear message when its key is revoked or refused; anything
else (server restarts, network loss) it rides out by reconnecting.
"""

from __future__ import annotations

import logging
import secrets
import signal
import time
from pathlib import Path

import zmq

from director import __version__
from director.client import pinning
from director.client.link import Link
from director.config import Settings, server_endpoint
from director.errors import DirectorError
from director.net import control, transport
from director.protocol.frames import Message, ProtocolError, decode, encode
from director.trust import keystore
from director.trust.keyfmt import parse_public_key

log = logging.getLogger("director.client")


class Refused(DirectorError):
    """The server cut this node off; restarting will not help."""


class Agent:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.home = Path(settings.home)
        self.pair = keystore.load(self.home)
        pinned = pinning.load(self.home)
        address = settings.server_address or (pinned.address if pinned else "")
        if settings.server_key:
            server_key = parse_public_key(settings.server_key)
        elif pinned is not None:
            server_key = pinned.server_key
        else:
            raise DirectorError(
                f"{self.home} is not enrolled: run 'director enroll --server HOST --token TOKEN'"
            )
        if not address:
            raise DirectorError("no server address: enroll first or set --server-address")
        from dataclasses import replace

        self.endpoint = server_endpoint(replace(settings, server_address=address))
        self.server_key = server_key
        self.state = "connecting"
        self.boot = secrets.token_hex(8)  # tells the server when this agent restarted
        self.hello_at: float | None = None  # HELLO sent, no answer yet
        self.name = pinned.name if pinned is not None and pinned.name else settings.name
        self._stop = False
        self.ctx = zmq.Context()
        self.control = control.bind(self.ctx, self.home)
        self.link = Link(self.ctx, self.pair, server_key, self.endpoint,
                         settings.heartbeat_interval)
        self.poller = zmq.Poller()
        from director.client.runner import JobRunner

        self.jobs = JobRunner(self, _PollerWatcher(self.poller))

    def request_stop(self, *_: object) -> None:
        self._stop = True

    def send(self, mtype: str, payload: tuple[bytes, ...] = (), **body) -> bool:
        return transport.send_msg(self.link.sock, Message(mtype, body, payload))

    def run(self) -> int:
        poller = self.poller
        for s in (self.link.sock, self.link.monitor, self.control):
            poller.register(s, zmq.POLLIN)
        hb = self.settings.heartbeat_interval
        next_hb = time.monotonic() + hb
        log.info("client %s (%s) connecting to %s", self.name, self.pair.fingerprint,
                 self.endpoint)
        try:
            while not self._stop:
                jobs_due = self.jobs.next_deadline()
                timeout = max(0.0, min(next_hb, jobs_due) - time.monotonic())
                events = dict(poller.poll(int(timeout * 1000) + 1))
                if self.link.monitor in events:
                    self._on_link(self.link.read_event())
                if self.link.sock in events:
                    self._drain_server()
                if self.control in events:
                    self._on_control()
                self.jobs.handle(events)
                now = time.monotonic()
                if now >= next_hb:
                    if self.link.up:
                        self.send("HEARTBEAT", running=self.jobs.busy())
                    next_hb = now + hb
                    self._check_known()
                if now >= jobs_due:
                    self.jobs.tick()
                self.jobs.flush_results()
        except Refused as exc:
            log.error("%s", exc)
            return 1
        finally:
            self.close()
        return 0

    def close(self) -> None:
        clean = self.jobs.close()
        self.link.close()
        self.control.close(0)
        if clean:
            self.ctx.term()
        try:
            control.socket_path(self.home).unlink()
        except FileNotFoundError:
            pass

    # -- link and server messages ---------------------------------------------------
    def _on_link(self, what: str | None) -> None:
        if what == "up":
            log.info("secure link to %s is up", self.endpoint)
            self.send("HELLO", name=self.name, version=__version__, boot=self.boot)
            self.hello_at = time.monotonic()
        elif what == "auth":
            raise Refused("the server refused this node's key (revoked, rejected or deleted);"
                          " ask the operator, or enroll again with a new home")
        elif what == "handshake":
            log.warning("secure handshake with %s failed: is the pinned server key right?",
                        self.endpoint)
        elif what == "down":
            self.state = "connecting"
            log.warning("lost the server at %s; reconnecting", self.endpoint)

    def _drain_server(self) -> None:
        for _ in range(1000):
            try:
                frames = transport.recv_frames(self.link.sock, zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                msg = decode([f.buffer for f in frames])
            except ProtocolError as exc:
                log.warning("bad message from server: %s", exc)
                continue
            self._on_message(msg)

    def _on_message(self, msg: Message) -> None:
        self.hello_at = None  # the server knows this key: it answered
        if msg.type == "ENROLLED":
            state = msg.get("state")
            if state == "accepted":
                if self.state != "accepted":
                    log.info("accepted by the server as %s", msg.get("name"))
                    if self.state == "pending":
                        self.send("HELLO", name=self.name, version=__version__, boot=self.boot)
                self.state = "accepted"
                self.name = msg.get("name") or self.name
            elif state == "pending":
                self.state = "pending"
                log.info("waiting for an operator to accept this node")
            else:
                raise Refused(f"the server refused this node: {msg.get('reason') or state}")
        elif msg.type == "REVOKED":
            raise Refused(f"cut off by the server: {msg.get('reason')}")
        elif msg.type == "ERROR":
            if msg.get("code") == "not_permitted" and self.state != "accepted":
                self.state = "pending"
                self.send("ENROLL_STATUS")
            else:
                log.warning("server says: %s", msg.get("message"))
        else:
            self.jobs.on_message(msg)

    def _check_known(self) -> None:
        """An unknown (e.g. deleted) key gets no answer at all: say so and stop."""
        limit = max(5.0, 3 * self.settings.heartbeat_interval)
        if self.hello_at is not None and time.monotonic() - self.hello_at > limit:
            raise Refused("the server does not answer this node (its key is unknown there:"
                          " deleted?); enroll again: director enroll --server HOST --token TOKEN")

    # -- control ----------------------------------------------------------------------
    def _on_control(self) -> None:
        frames = self.control.recv_multipart()
        try:
            msg = decode(frames[1:])
            op = msg.get("op")
        except ProtocolError as exc:
            body = {"ok": False, "error": str(exc)}
        else:
            if op == "health":
                serving = self.link.up and self.state == "accepted"
                body = {"ok": True, "result": {"role": "client", "name": self.name,
                                                "state": self.state, "serving": serving,
                                                "version": __version__}}
            else:
                body = {"ok": False, "error": f"'{op}' is a server command; this home runs a client"}
        self.control.send_multipart([frames[0], *encode(Message("CTL_REPLY", body))])


class _PollerWatcher:
    """Job process fds on the agent's own poller, next to the server socket."""

    def __init__(self, poller: zmq.Poller):
        self.poller = poller

    def watch(self, fd: int) -> None:
        self.poller.register(fd, zmq.POLLIN)

    def unwatch(self, fd: int) -> None:
        self.poller.unregister(fd)


def run_client(settings: Settings) -> int:
    agent = Agent(settings)
    signal.signal(signal.SIGTERM, agent.request_stop)
    signal.signal(signal.SIGINT, agent.request_stop)
    return agent.run()
