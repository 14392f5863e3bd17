"""`director events`: what a stranger tried is visible to operators, never a secret."""

from __future__ import annotations

import json

import pytest

from director.protocol import messages as m
from director.trust import keystore

pytestmark = pytest.mark.integration


def test_events_show_conflicts_claims_and_key_changes(mesh):
    mesh.server()
    mesh.add_node("web1")
    token = mesh.token()
    intruder = mesh.raw_peer()
    intruder.send(m.encode(m.Enroll("web1", token)))  # a new key asking for a taken name
    assert intruder.recv(5.0) is not None
    cp = mesh.enroll("db1")
    assert cp.returncode == 0, cp.stderr
    liar = mesh.raw_peer(pair=keystore.load(cp.home))
    liar.send(m.encode(m.Hello("web1", "1", "b")))  # claims another node's name
    assert liar.recv(5.0) is not None
    mesh.cli("keys", "revoke", "db1", check=True)

    def kinds():
        out = mesh.cli("events", "--since", "10m", "--json", check=True)
        return [e["event"] for e in json.loads(out.stdout)]

    mesh.wait_for(lambda: {"name_conflict", "name_claim", "key_revoked"} <= set(kinds()), 5,
                  "the events to be recorded")
    docs = json.loads(mesh.cli("events", "--json", check=True).stdout)
    assert all(set(d) == {"time", "event", "fingerprint", "name", "address", "detail"}
               for d in docs)
    conflict = next(d for d in docs if d["event"] == "name_conflict")
    assert conflict["name"] == "web1" and conflict["address"] and conflict["fingerprint"]
    assert token not in json.dumps(docs)
    table = mesh.cli("events", check=True).stdout
    assert "name_claim" in table and "web1" in table
    bad = mesh.cli("events", "--since", "soon")
    assert bad.returncode != 0 and "--since" in bad.stderr and len(bad.stderr.splitlines()) == 1
