"""What an operator types and reads around enrollment (issue 15 items 1, 2, 8, 9): the
server key as a line that pastes into a shell, `enroll --name`, truthful `config` on an
enrolled client, and the quiet fixes said out loud."""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
import time
from pathlib import Path

import pytest
from conftest import BIN_DIR, clean_env

from director.trust.keyfmt import parse_public_key

pytestmark = pytest.mark.integration


def _shell(line: str, home: str) -> subprocess.CompletedProcess:
    """Run ``line`` as a user pastes it: through bash, ``director`` found on PATH."""
    env = clean_env({"DIRECTOR_HOME": home,
                     "PATH": f"{BIN_DIR}{os.pathsep}{os.environ.get('PATH', '')}"})
    return subprocess.run(["bash", "-c", line], capture_output=True, text=True, timeout=60,
                          env=env, stdin=subprocess.DEVNULL)


def test_keys_server_prints_a_shell_safe_key_and_an_enroll_line_that_pastes(mesh):
    mesh.server()
    doc = mesh.json("keys", "server")
    raw = parse_public_key(doc["public_key"])
    assert parse_public_key(doc["public_key_hex"]) == raw
    assert doc["public_key_hex"] == raw.hex()
    assert doc["address"] == mesh.address
    shown = mesh.cli("keys", "server", check=True).stdout
    assert doc["public_key"] in shown and doc["public_key_hex"] in shown
    line = shown.strip().splitlines()[-1]
    assert line == doc["command"]
    assert shlex.split(line)[:6] == ["director", "enroll", "--server", mesh.address,
                                     "--server-key", doc["public_key"]]
    home = mesh.new_home()
    cp = _shell(line.replace("NAME", "paste1"), home)
    assert cp.returncode == 3, cp.stderr  # pending: the key went through the shell intact
    assert "paste1: pending" in cp.stdout
    rows = {r["name"]: r["state"] for r in mesh.json("keys", "list")}
    assert rows["paste1"] == "pending"


def test_enroll_takes_name_and_a_refusal_is_one_prefixed_line(mesh):
    mesh.server()
    home = mesh.new_home()
    ok = mesh.cli("enroll", "--server", mesh.address, "--token", mesh.token(), "--name", "web1",
                  home=home)
    assert ok.returncode == 0, ok.stderr
    assert "node web1: accepted" in ok.stdout
    again = mesh.cli("enroll", "--server", mesh.address, "--token", mesh.token(),
                     "--name", "web1", home=mesh.new_home())
    assert again.returncode == 1
    assert again.stderr.startswith("director: enrollment refused: name 'web1' is already held")
    assert again.stderr.count("\n") == 1, again.stderr
    assert "choose another --name" in again.stderr
    assert {r["name"]: r["state"] for r in mesh.json("keys", "list")} == {"web1": "accepted"}


def test_config_on_an_enrolled_client_shows_what_it_runs_with(mesh):
    mesh.server()
    mesh.add_node("web7")
    doc = mesh.json("config", home=mesh.homes["web7"])
    assert doc["name"] == {"value": "web7", "source": "home"}
    assert doc["server_address"] == {"value": mesh.address, "source": "home"}
    assert doc["server_key"] == {"value": mesh.server_key(), "source": "home"}
    table = mesh.cli("config", home=mesh.homes["web7"], check=True).stdout
    assert any(row.split() == ["server_address", mesh.address, "home"]
               for row in table.splitlines())
    given = mesh.json("--server-address", "10.9.9.9:7", "config", home=mesh.homes["web7"])
    assert given["server_address"] == {"value": "10.9.9.9:7", "source": "cli"}


def test_unresolvable_server_says_so_at_once_and_writes_nothing(tmp_path, mesh):
    home = tmp_path / "node"
    key = "0" * 64
    t0 = time.monotonic()
    cp = mesh.cli("enroll", "--server", "no-such-host.invalid:5555", "--server-key", key,
                  home=str(home))
    assert time.monotonic() - t0 < 8
    assert cp.returncode == 1
    assert cp.stderr.startswith("director: cannot resolve no-such-host.invalid")
    assert cp.stderr.count("\n") == 1
    assert not (home / "keys").exists()


def test_server_says_when_it_makes_its_home_private(mesh):
    home = Path(mesh.root) / "loose"
    home.mkdir(mode=0o755)
    os.chmod(home, 0o755)
    proc = mesh.server(home=str(home))
    assert stat.S_IMODE(os.stat(home).st_mode) == 0o700
    lines = [line for line in proc.log().splitlines() if "changed to 0700" in line]
    assert len(lines) == 1 and f"{home} had mode 0755" in lines[0], proc.log()[-2000:]
    mesh.stop_server()
    proc = mesh.server()
    assert "changed to 0700" not in proc.log()
