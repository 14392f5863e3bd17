"""Enrollment end to end: tokens, pending keys, accept/reject, conflicts, wrong keys.

Real ``director`` processes over CURVE on 127.0.0.1 (see conftest.py).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from conftest import free_port
from director.trust import keystore
from director.trust.keyfmt import fingerprint, z85_to_key

pytestmark = pytest.mark.integration

TOKEN_RE = re.compile(r"[A-Za-z0-9._-]+")


def _one_error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    assert "Traceback" not in stderr, stderr
    assert lines, "expected an error message on stderr"
    return lines[-1]


def _key_state(mesh, name: str) -> str | None:
    """Cheap in-process poll of a key's state (assertions use the CLI)."""
    return next((k["state"] for k in mesh.ctl("keys.list") or [] if k["name"] == name), None)


def test_token_enroll_is_accepted_and_json_fields(mesh):
    mesh.server()
    cp = mesh.enroll("web1", extra=["--json"])
    assert cp.returncode == 0, cp.stderr
    doc = json.loads(cp.stdout)
    assert {"name", "state", "fingerprint"} <= set(doc)
    assert doc["name"] == "web1" and doc["state"] == "accepted"
    pair = keystore.load(cp.home)
    assert doc["fingerprint"] == pair.fingerprint
    # the key is secret-safe on disk
    kdir = Path(cp.home) / "keys"
    assert (kdir.stat().st_mode & 0o777) == 0o700
    assert ((kdir / "node.key_secret").stat().st_mode & 0o777) == 0o600
    # the server knows it by that name and fingerprint, as accepted
    key = mesh.key("web1")
    assert key is not None and key["state"] == "accepted"
    assert key["fingerprint"] == pair.fingerprint
    # server address and key are pinned: a plain 'director client' needs no options
    pinned = json.loads((kdir / "server.json").read_text())
    assert pinned["address"] == mesh.address
    assert pinned["server_key"] == mesh.server_key()
    proc = mesh.client("web1")
    mesh.wait_online("web1", proc=proc)
    assert mesh.cli("health", home=cp.home).returncode == 0


def test_enrolled_node_is_offline_until_its_agent_connects(mesh):
    mesh.server()
    cp = mesh.enroll("ghost")
    assert cp.returncode == 0, cp.stderr
    assert mesh.node("ghost")["state"] == "offline"
    assert json.loads(mesh.cli("health", "--json").stdout)["nodes_online"] == 0


def test_enroll_plain_output_shows_fingerprint(mesh):
    mesh.server()
    cp = mesh.enroll("plain1")
    assert cp.returncode == 0, cp.stderr
    fp = keystore.load(cp.home).fingerprint
    assert fp in cp.stdout and "accepted" in cp.stdout


def test_pending_then_accept_brings_client_online(mesh):
    mesh.server()
    cp = mesh.enroll("pend1", server_key=mesh.server_key(), extra=["--json"])
    assert cp.returncode == 3, (cp.stdout, cp.stderr)
    doc = json.loads(cp.stdout)
    assert doc["state"] == "pending" and doc["name"] == "pend1"
    assert doc["fingerprint"] == keystore.load(cp.home).fingerprint
    assert mesh.key("pend1")["state"] == "pending"
    assert mesh.node("pend1") is None  # nodes lists accepted nodes only

    proc = mesh.client("pend1")
    time.sleep(1.5)  # a pending client gets nowhere
    assert proc.alive(), proc.log()
    assert mesh.node("pend1") is None
    assert mesh.key("pend1")["state"] == "pending"

    acc = mesh.cli("keys", "accept", "pend1", "--json")
    assert acc.returncode == 0, acc.stderr
    assert json.loads(acc.stdout)["state"] == "accepted"
    mesh.wait_online("pend1", timeout=10, proc=proc)
    assert mesh.key("pend1")["state"] == "accepted"


def test_enroll_wait_returns_0_once_accepted(mesh):
    mesh.server()
    home = mesh.new_home()
    mesh.homes["waiter"] = home
    proc = mesh.spawn("--name", "waiter", "enroll", "--server", mesh.address,
                      "--server-key", mesh.server_key(), "--wait", "--json",
                      home=home, name="enroll-wait", capture_stdout=True)
    mesh.wait_for(lambda: _key_state(mesh, "waiter") == "pending", 10, "waiter pending")
    time.sleep(0.5)
    assert proc.alive(), "enroll --wait must keep waiting while pending"
    assert mesh.cli("keys", "accept", "waiter").returncode == 0
    rc = proc.wait(timeout=15)
    assert rc == 0, proc.log()
    assert json.loads(proc.stdout())["state"] == "accepted"
    proc2 = mesh.client("waiter")
    mesh.wait_online("waiter", proc=proc2)


def test_reject_refuses_waiting_enroll_later_enroll_and_client(mesh):
    mesh.server()
    home = mesh.new_home()
    mesh.homes["bad1"] = home
    waiting = mesh.spawn("--name", "bad1", "enroll", "--server", mesh.address,
                         "--server-key", mesh.server_key(), "--wait",
                         home=home, name="enroll-wait")
    mesh.wait_for(lambda: _key_state(mesh, "bad1") == "pending", 10, "bad1 pending")
    rej = mesh.cli("keys", "reject", "bad1", "--json")
    assert rej.returncode == 0, rej.stderr
    assert json.loads(rej.stdout)["state"] == "rejected"
    assert waiting.wait(timeout=15) == 1, waiting.log()
    assert "Traceback" not in waiting.log()

    again = mesh.enroll("bad1", server_key=mesh.server_key(), timeout=20)
    assert again.returncode == 1, (again.stdout, again.stderr)
    assert "refused" in (again.stdout + again.stderr)
    # even a valid token does not rescue a rejected key
    tok = mesh.enroll("bad1", token=mesh.token(), timeout=20)
    assert tok.returncode == 1, (tok.stdout, tok.stderr)

    client = mesh.client("bad1")
    assert client.wait(timeout=15) != 0
    assert "refused" in client.log()
    assert "Traceback" not in client.log()
    assert mesh.key("bad1")["state"] == "rejected"
    assert mesh.node("bad1") is None


def test_name_conflict_is_refused_and_holder_untouched(mesh):
    mesh.server()
    holder = mesh.add_node("web1")
    before = mesh.key("web1")
    token = mesh.token()
    other_home = mesh.new_home()
    cp = mesh.enroll("web1", token=token, home=other_home)
    assert cp.returncode == 1, (cp.stdout, cp.stderr)
    assert "already" in cp.stdout + cp.stderr
    # the refused key got no record, the holder keeps its key, state and connection
    keys = mesh.keys()
    assert [k["name"] for k in keys] == ["web1"]
    assert keys[0]["fingerprint"] == before["fingerprint"]
    assert keys[0]["state"] == "accepted"
    assert holder.alive()
    mesh.wait_online("web1", timeout=2)
    # the conflict did not burn the token
    tokens = mesh.json("token", "list")
    assert [t["state"] for t in tokens if t["uses_left"] == 1] == ["valid"]
    # nor can a pending request take the name
    cp2 = mesh.enroll("web1", server_key=mesh.server_key(), home=mesh.new_home())
    assert cp2.returncode == 1, (cp2.stdout, cp2.stderr)
    assert [k["name"] for k in mesh.keys()] == ["web1"]
    # the token still works for a free name
    ok = mesh.enroll("web2", token=token, home=other_home)
    assert ok.returncode == 0, ok.stderr


def test_reused_token_is_refused(mesh):
    mesh.server()
    token = mesh.token(uses=1)
    assert mesh.enroll("a1", token=token).returncode == 0
    cp = mesh.enroll("a2", token=token)
    assert cp.returncode == 1
    assert "used" in cp.stdout + cp.stderr
    assert mesh.key("a2") is None
    # a two-use token serves exactly two nodes
    two = mesh.token(uses=2)
    assert mesh.enroll("b1", token=two).returncode == 0
    assert mesh.enroll("b2", token=two).returncode == 0
    assert mesh.enroll("b3", token=two).returncode == 1
    assert {k["name"] for k in mesh.keys()} == {"a1", "b1", "b2"}


def test_expired_token_is_refused(mesh):
    mesh.server()
    token = mesh.token(ttl="1s")
    time.sleep(1.3)
    cp = mesh.enroll("late", token=token)
    assert cp.returncode == 1, (cp.stdout, cp.stderr)
    assert "expired" in cp.stdout + cp.stderr
    assert mesh.key("late") is None
    states = [t["state"] for t in mesh.json("token", "list")]
    assert states == ["expired"]


def test_token_create_list_revoke(mesh):
    mesh.server()
    before = time.time()
    doc = mesh.json("token", "create", "--ttl", "2h", "--uses", "3")
    assert {"id", "token", "expires", "command"} <= set(doc)
    assert TOKEN_RE.fullmatch(doc["token"])
    assert before + 7200 - 5 <= doc["expires"] <= time.time() + 7200 + 5
    assert doc["command"] == f"director enroll --server {mesh.address} --token {doc['token']}"
    assert doc["id"] in doc["token"]

    plain = mesh.cli("token", "create", check=True)
    text_token = plain.stdout.strip()
    assert TOKEN_RE.fullmatch(text_token) and len(plain.stdout.strip().splitlines()) == 1
    assert "director enroll" in plain.stderr

    rows = mesh.json("token", "list")
    by_id = {r["id"]: r for r in rows}
    assert by_id[doc["id"]]["state"] == "valid" and by_id[doc["id"]]["uses_left"] == 3
    assert len(rows) == 2
    listing = json.dumps(rows) + mesh.cli("token", "list", check=True).stdout
    assert doc["token"] not in listing and text_token not in listing
    assert doc["token"].rsplit(".", 1)[1] not in listing  # the secret part

    rv = mesh.cli("token", "revoke", doc["id"])
    assert rv.returncode == 0, rv.stderr
    assert {r["id"]: r for r in mesh.json("token", "list")}[doc["id"]]["state"] == "revoked"
    cp = mesh.enroll("x1", token=doc["token"])
    assert cp.returncode == 1 and "revoked" in cp.stdout + cp.stderr

    for args in (["--ttl", "soon"], ["--ttl", "0"], ["--ttl", "400d"], ["--uses", "0"]):
        cp = mesh.cli("token", "create", *args)
        assert cp.returncode == 1, args
        _one_error_line(cp.stderr)
    assert len(mesh.json("token", "list")) == 2  # nothing created by the refused ones

    bad = mesh.cli("token", "revoke", "zzzzzzzz")
    assert bad.returncode == 1
    assert "no token" in _one_error_line(bad.stderr)


def test_keys_list_and_keys_server_json(mesh):
    mesh.server()
    mesh.add_node("n1")
    mesh.enroll("n2", server_key=mesh.server_key())
    server_pair = keystore.load(mesh.home)
    ks = mesh.json("keys", "server")
    assert {"public_key", "fingerprint"} <= set(ks)
    assert ks["public_key"] == server_pair.public_z85 and len(ks["public_key"]) == 40
    assert ks["fingerprint"] == server_pair.fingerprint == fingerprint(z85_to_key(ks["public_key"]))
    text = mesh.cli("keys", "server", check=True).stdout
    assert ks["public_key"] in text and ks["fingerprint"] in text

    rows = mesh.keys()
    assert all({"name", "state", "fingerprint"} <= set(r) for r in rows)
    assert {r["name"]: r["state"] for r in rows} == {"n1": "accepted", "n2": "pending"}
    for r in rows:
        assert r["fingerprint"] == keystore.load(mesh.homes[r["name"]]).fingerprint

    nodes = mesh.nodes()
    assert [n["name"] for n in nodes] == ["n1"]
    assert {"name", "state", "last_seen", "fingerprint"} <= set(nodes[0])
    assert nodes[0]["state"] == "online"
    assert abs(nodes[0]["last_seen"] - time.time()) < 5

    missing = mesh.cli("keys", "accept", "nosuch")
    assert missing.returncode == 1
    assert "nosuch" in _one_error_line(missing.stderr)


def test_wrong_server_key_fails_fast_with_clear_message(mesh):
    mesh.server()
    wrong = keystore.generate().public_z85
    t0 = time.monotonic()
    cp = mesh.enroll("lost", server_key=wrong, timeout=25)
    took = time.monotonic() - t0
    assert cp.returncode == 1, (cp.stdout, cp.stderr)
    line = _one_error_line(cp.stderr)
    assert "key" in line and ("match" in line or "handshake" in line), line
    assert took < 15
    assert not (Path(cp.home) / "keys" / "server.json").exists()  # nothing pinned
    assert mesh.keys() == []


def test_token_from_another_server_fails_with_clear_message(mesh):
    mesh.server()
    # a token for a different server key: the client pins that key, the handshake fails
    from director.trust.tokens import new_token

    foreign = new_token(keystore.generate().public).encode()
    cp = mesh.enroll("lost", token=foreign, timeout=25)
    assert cp.returncode == 1, (cp.stdout, cp.stderr)
    line = _one_error_line(cp.stderr)
    assert "key" in line
    assert mesh.keys() == []


def test_unreachable_server_is_an_error_not_a_hang(mesh):
    key = keystore.generate().public_z85  # no server runs at all
    home = mesh.new_home()
    dead = f"127.0.0.1:{free_port()}"
    cp = mesh.cli("--name", "x", "enroll", "--server", dead, "--server-key", key,
                  "--timeout", "2", home=home, timeout=20)
    assert cp.returncode == 1, (cp.stdout, cp.stderr)
    assert "no answer" in _one_error_line(cp.stderr)


def test_pending_queue_is_bounded(mesh):
    mesh.server(env={"DIRECTOR_MAX_PENDING": "1"})
    key = mesh.server_key()
    assert mesh.enroll("p1", server_key=key).returncode == 3
    cp = mesh.enroll("p2", server_key=key, timeout=25)
    assert cp.returncode == 1, (cp.stdout, cp.stderr)
    assert {k["name"] for k in mesh.keys()} == {"p1"}
    assert "pending" in _one_error_line(cp.stderr)
    # a full queue never blocks enrollment by token
    assert mesh.enroll("t1", token=mesh.token()).returncode == 0
    # accepting the pending key frees the queue for the next stranger
    assert mesh.cli("keys", "accept", "p1").returncode == 0
    assert mesh.enroll("p3", server_key=key).returncode == 3
