"""``director client``: the node agent's I/O driver.

Owns the sockets (the CURVE link to the pinned server, its monitor, the local
control socket), the one poll loop, and the process and COPY drivers; every
decision is ``AgentCore``'s.  Each turn turns what happened into core events
and carries out the actions the core returns.  It exits non-zero with a clear
message when its key is revoked or refused; anything else (server restarts,
network loss, a bad message) it rides out.
"""

from __future__ import annotations

import logging
import secrets
import signal
import time
from collections import deque
from dataclasses import replace
from functools import partial
from pathlib import Path

import zmq

from director.client import pinning
from director.client.actions import Reply, Send, StartCopy, StartRun, Stop, StopJob
from director.client.copying import CopyDriver
from director.client.core import AgentCore
from director.client.facts import collect
from director.client.journal import open_journal
from director.client.link import Link
from director.jobs.nodestate import JobCache
from director.jobs.scopes import Scopes
from director.client.runner import ProcessDriver, crashed, kill_leftover
from director.config import Settings, server_endpoint
from director.errors import DirectorError
from director.net import control, transport
from director.protocol.jobcontrol import MAX_OUTPUT_ITEMS, MAX_OUTPUT_TEXT, Output
from director.protocol.messages import Result, Results, encode
from director.trust import keystore
from director.trust.keyfmt import parse_public_key

log = logging.getLogger("director.client")
STREAM_DELAY = 0.05  # streamed lines wait at most this long to share a message
DRAIN = 1000   # server messages read per wake-up at most (then the rest of the loop runs)


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
        self.endpoint = server_endpoint(replace(settings, server_address=address))
        name = pinned.name if pinned is not None and pinned.name else settings.name
        hb = settings.heartbeat_interval
        # boot tells the server (and the journal) when this agent restarted
        self.journal = open_journal(self.home)
        facts = collect()  # said at HELLO; templates on this node see them as facts.NAME
        self.core = AgentCore(name, secrets.token_hex(8), hb, time.monotonic(),
                              journal=self.journal, facts=facts)
        self.exit_code: int | None = None
        self._stop = False
        self.ctx = zmq.Context()
        self.control = control.bind(self.ctx, self.home)
        self.link = Link(self.ctx, self.pair, server_key, self.endpoint, hb)
        self.core.link.where = f"the server at {self.endpoint}"
        self.poller = zmq.Poller()
        watcher = _PollerWatcher(self.poller)
        self.state = Scopes(self.home)  # ARG/ENV/WORKDIR per submission
        self.cache = JobCache(self.home / "jobcache.db")
        self.procs = ProcessDriver(self.state, self.cache, watcher, facts.to_dict())
        connect = partial(transport.client_socket, self.ctx, self.pair, server_key,
                          self.endpoint, hb)
        self.copies = CopyDriver(self.home, self.state, self.cache, watcher, connect,
                                 facts.to_dict())

    def request_stop(self, *_: object) -> None:
        self._stop = True

    def run(self) -> int:
        poller, core, link, procs, copies = (self.poller, self.core, self.link, self.procs,
                                             self.copies)
        journal = self.journal
        for s in (link.sock, link.monitor, self.control):
            poller.register(s, zmq.POLLIN)
        log.info("client %s (%s) connecting to %s", core.name, self.pair.fingerprint,
                 self.endpoint)
        try:
            self._recover()
            while not self._stop:
                due = min(core.next_deadline(), procs.next_deadline(), journal.commit_due())
                if procs.streamed:
                    due = min(due, procs.streamed_since + STREAM_DELAY)
                timeout = max(0.0, due - time.monotonic())
                events = dict(poller.poll(int(timeout * 1000) + 1))
                now = time.monotonic()
                if link.monitor in events:
                    self._on_link(link.read_event(), now)
                if link.sock in events:
                    self._drain_server(now)
                if self.control in events:
                    self._on_control()
                for job_id, out in procs.handle(events):
                    self._do(core.job_ended(job_id, out, now))
                for job_id, out in copies.handle(events):
                    self._do(core.job_ended(job_id, out, now))
                now = time.monotonic()
                for job_id, out in procs.tick(now):
                    self._do(core.job_ended(job_id, out, now))
                self._do(core.tick(now))
                if procs.streamed and now - procs.streamed_since >= STREAM_DELAY:
                    self._send_streamed()
                if procs.gated:  # the spawned jobs' pids are durable, then they may run
                    journal.commit()
                    procs.release()
                elif journal.dirty and now >= journal.commit_due():
                    journal.commit()  # acks, trims: they rode along no commit for a while
        finally:
            self.close()
        return self.exit_code or 0

    def _send_streamed(self) -> None:
        """Streamed output lines, in order, a few OUTPUT messages at most (best effort:
        the whole output still comes with the result)."""
        pieces, self.procs.streamed = self.procs.streamed, []
        batch: list = []
        size = 0
        for piece in pieces:
            if batch and (len(batch) >= MAX_OUTPUT_ITEMS
                          or size + len(piece[2]) > MAX_OUTPUT_TEXT):
                transport.send_msg(self.link.sock, Output(tuple(batch)))
                batch, size = [], 0
            batch.append(piece)
            size += len(piece[2])
        if batch:
            transport.send_msg(self.link.sock, Output(tuple(batch)))

    def _recover(self) -> None:
        """What a previous run of this agent left: its job process groups are killed
        (verified by pgid and start time) and those jobs reported lost."""
        now = time.monotonic()
        left = self.journal.interrupted(self.core.boot)
        for entry in left:
            killed = kill_leftover(entry.pgid, entry.start)
            if killed:
                log.warning("job %s: killed process group %d left by the previous agent run",
                            entry.job_id, entry.pgid)
            self._do(self.core.interrupted(entry.job_id, killed, now))
        if left:
            log.warning("%d job(s) interrupted by the agent's restart reported lost", len(left))
        self.journal.commit()

    def close(self) -> None:
        self._do(self.core.flush())
        self.procs.close()
        self.journal.close()
        clean = self.copies.close()
        if clean:  # a COPY worker still running may still use them
            self.cache.close()
        self.link.close()
        self.control.close(0)
        if clean:
            self.ctx.term()
        try:
            control.socket_path(self.home).unlink()
        except FileNotFoundError:
            pass

    # -- events in, actions out -------------------------------------------------------
    def _on_link(self, what: str | None, now: float) -> None:
        core = self.core
        if what == "up":
            self._do(core.link_up(now))
        elif what == "down":
            self._do(core.link_down(now))
        elif what == "auth":
            self._do(core.auth_refused(now))
        elif what == "handshake":
            self._do(core.handshake_failed(now, self.link.quick))

    def _drain_server(self, now: float) -> None:
        sock, core = self.link.sock, self.core
        for _ in range(DRAIN):
            try:
                frames = transport.recv_frames(sock, zmq.NOBLOCK)
            except zmq.Again:
                return
            self._do(core.frames([f.buffer for f in frames], now))

    def _on_control(self) -> None:
        frames = self.control.recv_multipart()
        if len(frames) < 2:
            return
        self._do(self.core.control(frames[0], frames[1:]))

    def _do(self, actions: list) -> None:
        """Carry out the core's actions in order; a started job that ends at once
        feeds its end back to the core, whose next actions join the queue."""
        if not actions:
            return
        todo = deque(actions)
        core, procs, journal = self.core, self.procs, self.journal
        while todo:
            act = todo.popleft()
            cls = act.__class__
            try:
                if cls is StartRun:
                    # a RUN spawns gated (it runs nothing until released): its pid is
                    # committed first, at the end of this loop turn (see run())
                    out = procs.start(act.job)
                    if out is not None:
                        todo.extend(core.job_ended(act.job.job_id, out, time.monotonic()))
                    else:
                        pid, start = procs.last_started
                        journal.started(act.job.job_id, pid, pid, start)
                elif cls is Send:
                    if act.msg.__class__ in (Result, Results):
                        if procs.streamed:  # a job's lines go before its result
                            self._send_streamed()
                        if journal.results_dirty:
                            journal.commit()  # a result is journaled before it is sent
                    transport.send_msg(self.link.sock, act.msg)
                elif cls is StartCopy:
                    if journal.must_commit:
                        journal.commit()
                    self.copies.start(act.job)
                elif cls is Reply:
                    self.control.send_multipart([act.ident, *encode(act.msg)])
                elif cls is StopJob:
                    if not procs.stop(act.job_id):
                        self.copies.stop(act.job_id)
                elif cls is Stop:
                    log.error("%s", act.reason)
                    self.exit_code = act.code
                    self._stop = True
            except Exception as exc:  # noqa: BLE001 - one action never ends the agent
                log.error("%s failed: %s: %s", cls.__name__, type(exc).__name__, exc)
                if cls is StartRun or cls is StartCopy:
                    todo.extend(core.job_ended(act.job.job_id, crashed(act.job.job_id, exc),
                                               time.monotonic()))


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
