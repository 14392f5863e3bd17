"""The server core keeps each node's facts (latest HELLO) and labels in SQLite, shows
them (node.get, nodes), changes labels (nodes.label) and selects targets by them."""

from __future__ import annotations

import pytest
from coretools import CoreHarness, jobs_in, run_steps, sent

from director.errors import StorageError
from director.protocol import facts as PF
from director.protocol import messages as m
from director.server.core import CoreConfig, ServerCore


@pytest.fixture
def h(tmp_path):
    harness = CoreHarness(tmp_path)
    yield harness
    harness.close()

DEBIAN = PF.Facts("web1.example", "debian", "12", "6.1.0", "x86_64", 4, 2**33,
                  ("10.0.0.1",), "0.1.0")
UBUNTU = PF.Facts("web2.example", "ubuntu", "24.04", "6.8.0", "aarch64", 2, 2**32, (), "0.1.0")


def hello(h: CoreHarness, name: str, facts: PF.Facts | None) -> None:
    key = h.core.store.node_by_name(name).key
    out = sent(h.from_node(key, m.Hello(name, "0.1.0", "boot2", facts), f"r-{name}".encode()))
    assert out[0] == m.Enrolled("accepted", name)


def test_facts_of_the_latest_hello_are_shown_and_kept(h, tmp_path):
    h.accepted_node("web1")
    assert h.ok("node.get", name="web1")["facts"] == {}   # its HELLO had none
    hello(h, "web1", DEBIAN)
    doc = h.ok("node.get", name="web1")
    assert doc["facts"] == DEBIAN.to_dict()               # seen before it is written
    assert {"name", "state", "labels", "facts", "fingerprint", "last_seen"} <= set(doc)
    assert doc["state"] == "online" and doc["labels"] == {}
    h.tick()
    assert h.store.facts_of(h.store.node_by_name("web1").key) == DEBIAN.to_dict()
    newer = PF.Facts(hostname="web1.example", cpus=8)
    hello(h, "web1", newer)
    h.tick()
    again = ServerCore(h.store, CoreConfig(h.pair.public, h.pair.fingerprint), h.now)
    again.request(b"op", m.encode(m.Ctl("node.get", {"name": "web1"})), h.now)
    reply = m.decode(again.take()[-1].frames)
    assert reply.ok and reply.result["facts"] == newer.to_dict()
    assert reply.result["state"] == "offline"


def test_an_older_agent_keeps_the_facts_it_had(h):
    h.accepted_node("web1")
    hello(h, "web1", DEBIAN)
    hello(h, "web1", None)
    h.tick()
    assert h.ok("node.get", name="web1")["facts"] == DEBIAN.to_dict()


def test_labels_are_set_removed_listed_and_survive_a_restart(h):
    h.accepted_node("web1")
    h.accepted_node("web2")
    assert h.ok("nodes.label", name="web1", set={"role": "web", "tier": "front"},
                remove=[]) == {"name": "web1", "labels": {"role": "web", "tier": "front"}}
    assert h.ok("nodes.label", name="web1", set={"zone": "a"}, remove=["tier"])["labels"] == \
        {"role": "web", "zone": "a"}
    listed = {n["name"]: n["labels"] for n in h.ok("nodes")}
    assert listed == {"web1": {"role": "web", "zone": "a"}, "web2": {}}
    again = ServerCore(h.store, CoreConfig(h.pair.public, h.pair.fingerprint), h.now)
    again.request(b"op", m.encode(m.Ctl("node.get", {"name": "web1"})), h.now)
    assert m.decode(again.take()[-1].frames).result["labels"] == {"role": "web", "zone": "a"}


@pytest.mark.parametrize(("args", "message"), [
    ({"name": "nosuch", "set": {"a": "b"}, "remove": []}, "no node named 'nosuch'"),
    ({"name": "web1", "set": {"bad key": "b"}, "remove": []}, "bad label key"),
    ({"name": "web1", "set": {"a": "x,y"}, "remove": []}, "bad value"),
    ({"name": "web1", "set": {"ok": "1"}, "remove": ["ok"]}, "both set and removed"),
    ({"name": "web1", "set": "role=web", "remove": []}, "malformed"),
    ({"name": "web1"}, "nothing to change"),
    ({"set": {"a": "b"}}, "a node NAME is required"),
])
def test_bad_label_requests_write_nothing(h, args, message):
    h.accepted_node("web1")
    h.ok("nodes.label", name="web1", set={"keep": "me"}, remove=[])
    reply = h.op("nodes.label", **args)
    assert isinstance(reply, m.CtlReply) and not reply.ok and message in reply.error, reply
    assert h.ok("node.get", name="web1")["labels"] == {"keep": "me"}


def test_a_deleted_node_takes_its_facts_and_labels_with_it(h):
    h.accepted_node("web1")
    hello(h, "web1", DEBIAN)
    h.ok("nodes.label", name="web1", set={"role": "web"}, remove=[])
    h.tick()
    key = h.store.node_by_name("web1").key
    h.ok("keys.delete", name="web1")
    assert h.store.facts_of(key) is None and h.store.labels_of(key) == {}


def test_submissions_select_nodes_by_label_and_fact(h):
    for name, facts in (("web1", DEBIAN), ("web2", UBUNTU), ("db1", None)):
        h.accepted_node(name)
        hello(h, name, facts)
    h.ok("nodes.label", name="web2", set={"role": "web"}, remove=[])
    h.ok("nodes.label", name="db1", set={"role": "db"}, remove=[])

    def targets(*patterns: str) -> list[str]:
        reply = h.op("jobs.submit", **run_steps("RUN true", targets=list(patterns)))
        assert isinstance(reply, m.CtlReply), reply
        if not reply.ok:
            return [reply.error]
        routes = {j_route for j_route in (a.route for a in h.pending if hasattr(a, "route"))}
        assert jobs_in(h.pending)
        return sorted(r.decode()[2:] for r in routes if r.startswith(b"r-"))

    assert targets("label:role=web") == ["web2"]
    assert targets("fact:os=debian*") == ["web1"]        # before the facts are written
    h.tick()
    assert targets("fact:arch=aarch64", "label:role=db") == ["db1", "web2"]
    refused = targets("label:role=cache")
    assert refused[0].startswith("unknown target 'label:role=cache'")


def test_facts_wait_in_memory_while_the_store_fails(h, monkeypatch):
    h.accepted_node("web1")
    hello(h, "web1", DEBIAN)

    def full(rows):
        raise StorageError("disk full")
    monkeypatch.setattr(h.store, "put_facts", full)
    h.tick()
    assert h.ok("node.get", name="web1")["facts"] == DEBIAN.to_dict()
    monkeypatch.undo()
    h.tick()
    assert h.core.facts.pending == {}
    assert h.store.facts_of(h.store.node_by_name("web1").key) == DEBIAN.to_dict()


def test_the_node_list_outlives_a_failing_label_table(h, monkeypatch):
    h.accepted_node("web1")

    def broken():
        raise StorageError("database disk image is malformed")
    monkeypatch.setattr(h.store, "all_labels", broken)
    assert [(n["name"], n["labels"]) for n in h.ok("nodes")] == [("web1", {})]
