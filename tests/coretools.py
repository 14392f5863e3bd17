"""Driving the server core in-process: a real SQLite store in a temp dir, real keys,
real message encoding; events in, actions out, the clock a number the test moves.

Used by the core's example tests and its hypothesis state machine.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from director.protocol import messages as m
from director.server.core import CoreConfig, ServerCore
from director.server.events import BuildManifests, Reply, Send
from director.server.store import SqlStore
from director.trust import keystore


class CoreHarness:
    def __init__(self, tmp: Path, expiry: float = 30.0, max_pending: int = 5):
        self.store = SqlStore(tmp / "server.db")
        self.pair = keystore.generate()
        self.now = 1_000_000.0
        ids = itertools.count(0x10000000)
        self.core = ServerCore(self.store, CoreConfig(
            self.pair.public, self.pair.fingerprint, expiry, max_pending,
            lambda: "server.test:5555"), self.now, new_id=lambda: f"{next(ids):08x}")
        self.routes = itertools.count(1)

    def close(self) -> None:
        self.store.close()

    # -- events -----------------------------------------------------------------
    def from_node(self, key: str, msg: m.Msg | list, route: bytes = b"r1") -> list:
        frames = msg if isinstance(msg, list) else m.encode(msg)
        self.core.from_node(route, key, "tcp://127.0.0.1:1", frames, self.now)
        self.core.after_events(self.now)
        return self.core.take()

    def op(self, op: str, **args: Any) -> m.CtlReply | list:
        """An operator request; the reply (or, when deferred, the actions so far)."""
        self.core.request(b"op", m.encode(m.Ctl(op, args)), self.now)
        self.core.after_events(self.now)
        actions = self.core.take()
        replies = [m.decode(a.frames) for a in actions if isinstance(a, Reply)]
        final = [r for r in replies if isinstance(r, m.CtlReply)]
        self.pending = actions
        return final[-1] if final else actions

    def ok(self, op: str, **args: Any) -> Any:
        reply = self.op(op, **args)
        assert isinstance(reply, m.CtlReply) and reply.ok, reply
        return reply.result

    def tick(self, seconds: float = 0.25) -> list:
        self.now += seconds
        self.core.tick(self.now)
        self.core.after_events(self.now)
        return self.core.take()

    # -- set-up -----------------------------------------------------------------
    def accepted_node(self, name: str, route: bytes | None = None) -> str:
        """A node enrolled by token and online (said HELLO); returns its key."""
        key = keystore.generate().public_z85
        token = self.ok("token.create")["token"]
        route = route or f"route-{name}".encode()
        out = sent(self.from_node(key, m.Enroll(name, token), route))
        assert out == [m.Enrolled("accepted", name, "")], out
        self.from_node(key, m.Hello(name, "test", "boot1"), route)
        return key


def sent(actions: list, route: bytes | None = None) -> list[m.Msg]:
    """Decoded node messages among ``actions`` (to ``route`` only, if given)."""
    return [m.decode(a.frames) for a in actions
            if isinstance(a, Send) and (route is None or a.route == route)]


def jobs_in(actions: list) -> list[m.Job]:
    out: list[m.Job] = []
    for msg in sent(actions):
        if isinstance(msg, m.Job):
            out.append(msg)
        elif isinstance(msg, m.Jobs):
            out.extend(msg.items)
    return out


def builds(actions: list) -> list[BuildManifests]:
    return [a for a in actions if isinstance(a, BuildManifests)]


def submit(h: CoreHarness, *lines: str, **kw) -> tuple[dict, list[m.Job]]:
    """Submit ``lines`` through the core, which must accept them: (its answer, the
    jobs it sent)."""
    reply = h.op("jobs.submit", **run_steps(*lines, **kw))
    assert isinstance(reply, m.CtlReply) and reply.ok, reply
    return reply.result, jobs_in(h.pending)


def run_steps(*lines: str, targets: list[str] | None = None, wait: bool = False) -> dict:
    from director.jobs.dsl import parse_line

    return {"steps": [{"targets": targets or [], "async": False,
                       "jobs": [parse_line(line).to_dict() for line in lines]}],
            "targets": [], "wait": wait, "base": "/"}
