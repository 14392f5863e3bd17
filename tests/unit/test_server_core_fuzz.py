"""Hypothesis drives the server core with hostile sequences: strangers, pending keys and
nodes sending valid and malformed messages (huge ints, NaN, surrogates, wrong types,
unknown types, foreign and duplicate results, reconnects), operators, and time.

Invariants: nothing raises; a result is stored only from the node its job was sent
to, and only the first one; every task is final once time passes every deadline;
per-peer and per-job state stays bounded.  CI runs a small budget;
DIRECTOR_FUZZ_EXAMPLES=N runs N examples.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from coretools import CoreHarness, run_steps
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from director.protocol import frames as fr
from director.server.events import Reply
from director.protocol import messages as m
from director.trust import keystore

EXAMPLES = int(os.environ.get("DIRECTOR_FUZZ_EXAMPLES", "300"))

HOSTILE_VALUES = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70), st.floats(allow_nan=True),
    st.text(max_size=20), st.just("a\ud800b"), st.none(), st.booleans(),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(),
                                                          max_size=3))
RESULT_FIELDS = ("job_id", "status", "rc", "stdout", "stderr", "exec_time", "cached",
                 "transfer", "error")
NODE_TYPES = [t.encode() for t in m.TYPES] + [b"NOPE", b"", b"\xff"]


def raw_json(value) -> bytes:
    """JSON text as a hostile peer may write it (NaN, Infinity, lone surrogates)."""
    import json
    return json.dumps(value, allow_nan=True).encode("utf-8", "surrogatepass")


class ServerCoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="corefuzz"))
        self.h = CoreHarness(self.tmp, expiry=30.0, max_pending=3)
        self.nodes: dict[str, str] = {}        # name -> key
        self.strangers = [keystore.generate().public_z85 for _ in range(2)]
        self.sent: dict[tuple[str, str], str] = {}     # (job id, key) -> route it went to
        self.first: dict[tuple[str, str], str] = {}    # (job id, key) -> first stdout sent
        self.markers = 0
        self.keys_used = set(self.strangers)

    def teardown(self) -> None:
        self.h.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _feed(self, key: str, frames: list, route: bytes) -> None:
        self.keys_used.add(key)
        actions = self.h.from_node(key, frames, route)
        self._note(actions)

    def _note(self, actions: list) -> None:
        """Remember which node each newly sent job went to (the Send names the key)."""
        for a in actions:
            for job_id in getattr(a, "jobs", ()):
                self.sent.setdefault((job_id, a.key), "")
            if getattr(a, "key", "") and a.frames[1] == b"ACK":  # acked = committed, final
                for job_id in m.decode(a.frames).job_ids:
                    row = self.h.store.result_status(job_id, a.key)
                    assert row is not None and row[0] not in ("queued", "running"), row

    def _sent_in_order(self) -> list[tuple[str, str]]:
        """(job, key) pairs in an order that does not depend on the random keys, so
        hypothesis replays a failing example the same way."""
        name = {k: n for n, k in self.nodes.items()}
        return sorted(self.sent, key=lambda jk: (jk[0], name.get(jk[1], jk[1])))

    # -- who is there ------------------------------------------------------------------
    @precondition(lambda self: len(self.nodes) < 3)
    @rule(data=st.data())
    def enroll_node(self, data) -> None:
        name = f"n{len(self.nodes)}"
        key = self.h.accepted_node(name)
        self.nodes[name] = key
        self.keys_used.add(key)

    @rule(name=st.text(max_size=12), token=st.none() | st.text(max_size=30))
    def stranger_enrolls(self, name, token) -> None:
        key = keystore.generate().public_z85
        body = {"name": name} if token is None else {"name": name, "token": token}
        self._feed(key, fr.join("ENROLL", raw_json(body)), b"s-route")

    @rule(i=st.integers(0, 1), mtype=st.sampled_from(NODE_TYPES),
          body=st.dictionaries(st.sampled_from(RESULT_FIELDS + ("name", "chunks", "results")),
                               HOSTILE_VALUES, max_size=5))
    def stranger_sends_anything(self, i, mtype, body) -> None:
        self._feed(self.strangers[i], [fr.VERSION, mtype, raw_json(body)], b"x-route")

    @rule(frames=st.lists(st.binary(max_size=40), max_size=6))
    def garbage_frames(self, frames) -> None:
        for key in [*self.nodes.values(), self.strangers[0]]:
            self._feed(key, frames, b"g-route")

    # -- nodes -------------------------------------------------------------------------
    @precondition(lambda self: self.nodes)
    @rule(data=st.data(), lines=st.lists(st.sampled_from(
        ["RUN true", "RUN false", "ARG A=1", "RUN --timeout 5 sleep 9", "WORKDIR /tmp"]),
        min_size=1, max_size=4), wait=st.booleans())
    def submit(self, data, lines, wait) -> None:
        names = data.draw(st.lists(st.sampled_from(sorted(self.nodes)), max_size=2,
                                   unique=True))
        self.h.op("jobs.submit", **run_steps(*lines, targets=names, wait=wait))
        self._note(self.h.pending)

    @precondition(lambda self: self.sent)
    @rule(data=st.data(), status=st.sampled_from(sorted(m.RESULT_STATUSES)))
    def node_answers(self, data, status) -> None:
        """A result from the node the job went to, or from another one (foreign)."""
        job_id, _ = data.draw(st.sampled_from(self._sent_in_order()))
        key = self.nodes[data.draw(st.sampled_from(sorted(self.nodes)))]
        self.markers += 1
        marker = f"{key[:6]}:{job_id}:{self.markers}"
        sent = (job_id, key) in self.sent  # before: its arrival may get the job sent there
        self._feed(key, m.encode(m.Result(job_id, status, rc=0, stdout=marker)), b"res")
        if sent:  # it went there too: the first answer counts
            self.first.setdefault((job_id, key), marker)

    @precondition(lambda self: self.sent)
    @rule(data=st.data(), field=st.sampled_from([f for f in RESULT_FIELDS if f != "stdout"]),
          value=HOSTILE_VALUES)
    def node_sends_hostile_result(self, data, field, value) -> None:
        job_id, key = data.draw(st.sampled_from(self._sent_in_order()))
        body = {"job_id": job_id, "status": "success", "stdout": "hostile", field: value}
        self._feed(key, [fr.VERSION, b"RESULT", raw_json(body)], b"res")
        self.first.setdefault((job_id, key), "?")  # it may have been valid: then it is first

    @precondition(lambda self: self.nodes)
    @rule(data=st.data(), same_boot=st.booleans(), route=st.binary(min_size=1, max_size=4))
    def node_reconnects(self, data, same_boot, route) -> None:
        name = data.draw(st.sampled_from(sorted(self.nodes)))
        boot = "boot1" if same_boot else "boot2"
        self._feed(self.nodes[name], m.encode(m.Hello(name, "v", boot)), route)

    @precondition(lambda self: self.nodes)
    @rule(data=st.data(), facts=st.dictionaries(
        st.sampled_from(["hostname", "os", "cpus", "memory", "addresses", "arch", "x"]),
        HOSTILE_VALUES | st.just(["10.0.0.1"]) | st.just({"id": "debian"}), max_size=4))
    def node_says_hello_with_facts(self, data, facts) -> None:
        name = data.draw(st.sampled_from(sorted(self.nodes)))
        body = {"name": name, "version": "v", "boot": "boot1", "facts": facts}
        self._feed(self.nodes[name], [fr.VERSION, b"HELLO", raw_json(body)],
                   f"route-{name}".encode())

    @precondition(lambda self: self.nodes)
    @rule(data=st.data())
    def heartbeat(self, data) -> None:
        name = data.draw(st.sampled_from(sorted(self.nodes)))
        self._feed(self.nodes[name], m.encode(m.Heartbeat(1)), f"route-{name}".encode())

    @precondition(lambda self: self.nodes)
    @rule(data=st.data(), op=st.sampled_from(["keys.revoke", "keys.reject", "keys.accept",
                                              "keys.delete"]))
    def operator_changes_a_key(self, data, op) -> None:
        name = data.draw(st.sampled_from(sorted(self.nodes)))
        self.h.op(op, name=name)

    @rule(op=st.sampled_from(["jobs.list", "jobs.get", "nodes", "health", "bogus",
                              "token.revoke", "keys.accept", "jobs.submit", "node.get",
                              "nodes.label"]),
          args=st.dictionaries(st.sampled_from(["id", "name", "limit", "steps", "targets",
                                                "set", "remove"]),
                               HOSTILE_VALUES, max_size=3))
    def operator_sends_anything(self, op, args) -> None:
        body = raw_json({"op": op, "args": args})
        self.h.core.request(b"op", fr.join("CTL", body), self.h.now)
        replies = [m.decode(a.frames) for a in self.h.core.take() if isinstance(a, Reply)]
        assert replies and isinstance(replies[-1], (m.CtlReply, m.CtlEvent))

    @precondition(lambda self: self.nodes)
    @rule(data=st.data(), fd=st.integers(0, 3))
    def connection_comes_and_goes(self, data, fd) -> None:
        """A node speaks on a connection (fd), which may then close; or a send fails."""
        name = data.draw(st.sampled_from(sorted(self.nodes)))
        key = self.nodes[name]
        self.h.core.from_node(f"fd{fd}".encode(), key, None, m.encode(m.Heartbeat(0)),
                              self.h.now, fd=fd)
        if data.draw(st.booleans()):
            self.h.core.connection_closed(fd, self.h.now)
        else:
            ids = tuple(j for (j, k) in self.sent if k == key)[:3]
            back = [j for j in ids if self.h.core.jobs.sched.in_flight(key, j)]
            self.h.core.jobs.undelivered(key, ids, self.h.now)
            for j in back:  # put back unsent: the node never had them (sent again later)
                self.sent.pop((j, key), None)
        self.h.core.after_events(self.h.now)
        self._note(self.h.core.take())

    @rule(seconds=st.sampled_from([0.25, 5.0, 31.0]))
    def time_passes(self, seconds) -> None:
        self._note(self.h.tick(seconds))

    @rule()
    def every_deadline_passes(self) -> None:
        self.h.tick(600 + 30 + 31)
        self.h.tick(31)
        rows = self.h.store.state.conn.execute(
            "SELECT COUNT(*) FROM results WHERE status IN ('queued','running')").fetchone()
        assert rows[0] == 0

    # -- invariants --------------------------------------------------------------------
    @invariant()
    def results_only_from_their_node_and_only_the_first(self) -> None:
        self.h.core.jobs.flush()
        for job_id, key, stdout in self.h.store.state.conn.execute(
                "SELECT job_id, node, stdout FROM results"):
            if not stdout or stdout == "hostile":
                continue
            assert stdout.startswith(key[:6] + ":" + job_id + ":"), (stdout, key)
            expected = self.first.get((job_id, key))
            assert expected in ("?", stdout), (expected, stdout)

    @invariant()
    def state_stays_bounded(self) -> None:
        core = self.h.core
        assert len(core.peers.by_key) <= len(self.keys_used) + len(self.nodes)
        assert set(core.jobs.bodies) <= set(core.jobs.open)
        assert len(core.jobs.waiters) <= len(core.jobs.open) + 1
        assert len(core.jobs.building) == 0
        assert len(core.facts.pending) <= len(self.nodes)   # the latest HELLO of each


ServerCoreMachine.TestCase.settings = settings(
    max_examples=EXAMPLES, stateful_step_count=25, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
test_server_core_state_machine = ServerCoreMachine.TestCase
