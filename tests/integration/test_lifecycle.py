"""Starting, stopping and configuring processes: health, restarts, key files, config,
and that no secret ever leaks into logs or JSON output."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from pathlib import Path

import pytest

from director.trust import keystore

pytestmark = pytest.mark.integration


def _one_line_error(cp) -> str:
    assert "Traceback" not in cp.stderr, cp.stderr
    lines = [ln for ln in cp.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{cp.stderr}"
    return lines[0]


def test_health_fails_when_nothing_runs(mesh):
    cp = mesh.cli("health", home=mesh.new_home())
    assert cp.returncode != 0
    assert "nothing serving" in cp.stderr
    cp = mesh.cli("health", "--json", home=mesh.new_home())
    assert cp.returncode != 0
    assert json.loads(cp.stdout) == {"serving": False}
    nodes = mesh.cli("nodes", home=mesh.new_home())
    assert nodes.returncode == 1
    assert "no director running" in _one_line_error(nodes)


def test_health_follows_server_and_client(mesh):
    srv = mesh.server()
    doc = json.loads(mesh.cli("health", "--json", check=True).stdout)
    assert doc["role"] == "server" and doc["nodes_online"] == 0
    client = mesh.add_node("h1")
    home = mesh.homes["h1"]
    c = json.loads(mesh.cli("health", "--json", home=home, check=True).stdout)
    assert c["role"] == "client" and c["serving"] is True and c["state"] == "accepted"
    mesh.wait_for(lambda: (mesh.ping() or {}).get("nodes_online") == 1, 5, "nodes_online == 1")
    assert json.loads(mesh.cli("health", "--json", check=True).stdout)["nodes_online"] == 1
    # a client whose server is gone is not serving
    mesh.stop_server()
    assert srv.returncode == 0
    assert mesh.cli("health").returncode != 0
    assert not (Path(mesh.home) / "run" / "control.sock").exists()
    mesh.wait_for(lambda: (mesh.ping(home) or {}).get("serving") is False, 10,
                  "client to say it is not serving")
    assert mesh.cli("health", home=home).returncode == 1
    assert client.alive()


def test_client_reconnects_after_server_restart(mesh):
    mesh.server()
    client = mesh.add_node("r1")
    token = mesh.token()
    pid = client.pid
    rc = mesh.stop_server()
    assert rc == 0
    time.sleep(1.0)
    assert client.alive(), client.log()
    mesh.server()  # same home, same port
    mesh.wait_online("r1", timeout=15, proc=client)
    assert client.pid == pid and client.alive()
    assert mesh.key("r1")["state"] == "accepted"  # state survived the restart (SQLite)
    assert "Traceback" not in client.log()
    assert mesh.enroll("r2", token=token).returncode == 0  # so did the token


def test_killed_client_goes_offline_and_stopped_client_exits_0(mesh):
    import signal

    mesh.server()
    a = mesh.add_node("k1")
    b = mesh.add_node("k2")
    a.signal(signal.SIGKILL)
    a.wait(timeout=5)
    t0 = time.monotonic()
    mesh.wait_for(lambda: [n["state"] for n in mesh.ctl("nodes") if n["name"] == "k1"]
                  == ["offline"], 8, "k1 offline after SIGKILL")
    assert mesh.node("k1")["state"] == "offline"
    assert time.monotonic() - t0 < 8
    assert mesh.node("k2")["state"] == "online"
    rc, killed = b.stop()
    assert (rc, killed) == (0, False)
    assert not (Path(mesh.homes["k2"]) / "run" / "control.sock").exists()


def test_private_files_and_directories_are_private(mesh):
    mesh.server()
    mesh.add_node("p1")

    def mode(p: Path) -> int:
        return os.lstat(p).st_mode & 0o777

    for home in (Path(mesh.home), Path(mesh.homes["p1"])):
        assert mode(home / "keys") == 0o700
        assert mode(home / "keys" / "node.key_secret") == 0o600
        assert mode(home / "run") == 0o700
        assert mode(home / "run" / "control.sock") & 0o077 == 0
    db_files = sorted(Path(mesh.home).glob("server.db*"))
    assert Path(mesh.home) / "server.db" in db_files
    for f in db_files:  # the WAL and shared-memory files too
        assert mode(f) & 0o077 == 0, f


def test_restart_after_sigkill_clears_stale_control_sockets(mesh):
    import signal

    srv = mesh.server()
    client = mesh.add_node("s1")
    for proc in (srv, client):
        proc.signal(signal.SIGKILL)
        proc.wait(timeout=5)
    # both left their control socket behind; nothing answers on it
    assert (Path(mesh.home) / "run" / "control.sock").exists()
    assert mesh.cli("health").returncode != 0
    mesh.server()
    proc = mesh.client("s1")
    mesh.wait_online("s1", proc=proc)


def test_bare_director_with_mode_server_runs_the_server(mesh):
    srv = mesh.server(args=(), env={"DIRECTOR_MODE": "server"})
    assert srv.alive()
    doc = json.loads(mesh.cli("health", "--json", check=True).stdout)
    assert doc["role"] == "server"
    mesh.add_node("m1")


def test_bare_director_defaults_to_client(mesh):
    mesh.server()
    assert mesh.enroll("bare").returncode == 0
    home = mesh.homes["bare"]
    proc = mesh.spawn(home=home, name="bare-client",
                      global_opts=["--heartbeat-interval", "0.5"])
    mesh.wait_online("bare", proc=proc)


def test_second_server_on_same_home_refuses_to_start(mesh):
    from conftest import free_port

    mesh.server()
    cp = mesh.cli("--bind", f"tcp://127.0.0.1:{free_port()}", "server", timeout=20)
    assert cp.returncode != 0
    assert "already running" in _one_line_error(cp)
    assert mesh.server_proc.alive()
    # the refused one must not remove the running server's control socket
    assert json.loads(mesh.cli("health", "--json", check=True).stdout)["role"] == "server"
    assert mesh.cli("nodes", "--json").returncode == 0
    mesh.add_node("after")


def test_second_client_on_same_home_refuses_to_start(mesh):
    mesh.server()
    first = mesh.add_node("dup")
    second = mesh.client("dup")
    assert second.wait(timeout=10) != 0
    assert "already running" in second.log()
    assert first.alive()
    assert mesh.cli("health", home=mesh.homes["dup"]).returncode == 0


def test_readable_secret_is_refused_by_client_and_server(mesh):
    mesh.server()
    assert mesh.enroll("loose").returncode == 0
    home = mesh.homes["loose"]
    secret = Path(home) / "keys" / "node.key_secret"
    os.chmod(secret, 0o644)
    cp = mesh.cli("client", home=home, timeout=15)
    assert cp.returncode == 1
    line = _one_line_error(cp)
    assert "node.key_secret" in line and "chmod 600" in line

    mesh.stop_server()
    server_secret = Path(mesh.home) / "keys" / "node.key_secret"
    os.chmod(server_secret, 0o644)
    cp = mesh.cli("--bind", mesh.bind, "server", timeout=15)
    assert cp.returncode == 1
    line = _one_line_error(cp)
    assert "chmod 600" in line
    # after fixing the mode both start again
    os.chmod(server_secret, 0o600)
    os.chmod(secret, 0o600)
    mesh.server()
    proc = mesh.client("loose")
    mesh.wait_online("loose", proc=proc)


def test_client_without_enrollment_is_a_clear_error(mesh):
    home = mesh.new_home()
    assert mesh.cli("keygen", home=home).returncode == 0
    cp = mesh.cli("client", home=home, timeout=15)
    assert cp.returncode == 1
    assert "enroll" in _one_line_error(cp)


def test_keygen_refuses_overwrite_and_force_keeps_backup(mesh):
    home = mesh.new_home()
    first = mesh.cli("keygen", "--json", home=home, check=True)
    doc = json.loads(first.stdout)
    assert doc["public_key"] == keystore.load(home).public_z85
    again = mesh.cli("keygen", home=home)
    assert again.returncode == 1 and "--force" in _one_line_error(again)
    assert keystore.load(home).public_z85 == doc["public_key"]
    forced = json.loads(mesh.cli("keygen", "--force", "--json", home=home, check=True).stdout)
    assert forced["public_key"] != doc["public_key"]
    assert (Path(forced["backup"]) / "node.key").read_text().strip() == doc["public_key"]
    secrets = [json.dumps(doc), json.dumps(forced)]
    for text in secrets:
        assert keystore.load(home).secret_z85 not in text


def test_config_json_sources_and_secret_hidden(mesh):
    home = mesh.new_home()
    os.makedirs(home)
    token = "dj1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA.abcdefgh.supersecretvalue"
    Path(home, "config.yaml").write_text("port: 6001\nlog_level: warning\nchunk_size: 65536\n")
    env = {"DIRECTOR_NAME": "envnode", "DIRECTOR_ENROLL_TOKEN": token,
           "DIRECTOR_CHUNK_SIZE": "131072"}
    cp = mesh.cli("--heartbeat-interval", "0.7", "--log-level", "error", "config", "--json",
                  home=home, env=env, check=True)
    doc = json.loads(cp.stdout)
    assert all({"value", "source"} <= set(v) for v in doc.values())
    expect = {
        "home": (home, "cli"),
        "port": (6001, "file"),
        "name": ("envnode", "env"),
        "chunk_size": (131072, "env"),             # env beats file
        "log_level": ("error", "cli"),             # cli beats file
        "heartbeat_interval": (0.7, "cli"),
        "node_expiry": (30.0, "default"),
        "server_address": ("", "default"),
    }
    for key, (value, source) in expect.items():
        assert (doc[key]["value"], doc[key]["source"]) == (value, source), key
    assert doc["enroll_token"]["source"] == "env"
    assert doc["enroll_token"]["value"] != token
    text = mesh.cli("config", home=home, env=env, check=True)
    for out in (cp.stdout, cp.stderr, text.stdout, text.stderr):
        assert token not in out and "supersecretvalue" not in out
    assert "config.yaml" in text.stdout

    # a token in the file is hidden too
    Path(home, "config.yaml").write_text(f"enroll_token: {token}\n")
    cp = mesh.cli("config", "--json", home=home, check=True)
    doc = json.loads(cp.stdout)
    assert doc["enroll_token"]["source"] == "file"
    assert token not in cp.stdout


def test_config_file_errors_name_key_and_file(mesh):
    home = mesh.new_home()
    os.makedirs(home)
    cfg = Path(home, "config.yaml")
    cfg.write_text("prot: 6001\n")
    cp = mesh.cli("config", home=home)
    assert cp.returncode == 1
    line = _one_line_error(cp)
    assert "prot" in line and str(cfg) in line
    cfg.write_text("port: lots\n")
    cp = mesh.cli("config", home=home)
    assert cp.returncode == 1
    line = _one_line_error(cp)
    assert "port" in line and str(cfg) in line


def test_no_secret_or_token_in_logs_json_or_database(mesh):
    mesh.server(log_level="debug")
    tokens = [mesh.token(uses=2)]
    enroll_out = []
    for name in ("s1", "s2"):
        cp = mesh.enroll(name, token=tokens[0], extra=["--json"])
        assert cp.returncode == 0, cp.stderr
        enroll_out += [cp.stdout, cp.stderr]
    proc = mesh.client("s1", global_opts=["--log-level", "debug"])
    mesh.wait_online("s1", proc=proc)
    tokens.append(mesh.token())
    pend = mesh.enroll("s3", server_key=mesh.server_key())
    assert pend.returncode == 3
    # a client that enrolls by DIRECTOR_ENROLL_TOKEN, as in the container image
    tokens.append(mesh.token())
    env_home = mesh.new_home()
    envc = mesh.client("s4", home=env_home,
                       env={"DIRECTOR_ENROLL_TOKEN": tokens[-1],
                            "DIRECTOR_SERVER_ADDRESS": mesh.address, "DIRECTOR_NAME": "s4"})
    mesh.wait_online("s4", proc=envc)
    # a refused token use, which is logged
    refused = mesh.enroll("s5", token=tokens[0])
    assert refused.returncode == 1
    enroll_out += [refused.stdout, refused.stderr, pend.stdout, pend.stderr]

    secrets = [keystore.load(h).secret_z85 for h in [mesh.home, *mesh.homes.values()]]
    token_secrets = [t.rsplit(".", 1)[1] for t in tokens]
    outputs = [
        mesh.cli("nodes", "--json", check=True).stdout,
        mesh.cli("keys", "list", "--json", check=True).stdout,
        mesh.cli("keys", "server", "--json", check=True).stdout,
        mesh.cli("token", "list", "--json", check=True).stdout,
        mesh.cli("token", "list", check=True).stdout,
        mesh.cli("health", "--json", check=True).stdout,
        mesh.cli("config", "--json", check=True).stdout,
        mesh.cli("config", "--json", home=env_home,
                 env={"DIRECTOR_ENROLL_TOKEN": tokens[-1]}).stdout,
        mesh.cli("health", "--json", home=env_home).stdout,
        *enroll_out,
    ]
    logs = mesh.logs()
    assert "enrolled by token" in logs  # the logs are really there
    db = sqlite3.connect(Path(mesh.home) / "server.db")
    try:
        dump = "\n".join(db.iterdump())
    finally:
        db.close()
    for secret in secrets + tokens + token_secrets:
        assert secret not in logs
        assert secret not in dump
        for out in outputs:
            assert secret not in out
    # the database holds only hashes of token secrets
    assert re.search(r"[0-9a-f]{64}", dump)
