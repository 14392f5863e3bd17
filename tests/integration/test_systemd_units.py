"""`director systemd server|client` prints units systemd accepts, whose ExecStart runs
(issue 15 item 3), and `director completion SHELL` prints a script that completes."""

from __future__ import annotations

import configparser
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time

import pytest
from conftest import BIN_DIR, DIRECTOR, clean_env, free_port

pytestmark = pytest.mark.integration

# Every directive the units may use, by section: a typo or an invented name fails here
# even where systemd-analyze is not installed.
KNOWN = {
    "Unit": {"Description", "Wants", "After"},
    "Service": {
        "Type", "NotifyAccess", "WatchdogSec", "ExecStart", "Restart", "RestartSec",
        "TimeoutStartSec", "TimeoutStopSec", "LimitNOFILE", "User", "StateDirectory",
        "StateDirectoryMode", "NoNewPrivileges", "ProtectSystem", "ReadWritePaths",
        "ProtectHome", "PrivateTmp", "PrivateDevices", "ProtectKernelTunables",
        "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups", "ProtectClock",
        "ProtectHostname", "RestrictAddressFamilies", "RestrictNamespaces", "RestrictRealtime",
        "RestrictSUIDSGID", "LockPersonality", "SystemCallArchitectures",
        "CapabilityBoundingSet", "UMask",
    },
    "Install": {"WantedBy"},
}


def _unit(*args: str) -> str:
    cp = subprocess.run([*DIRECTOR, "systemd", *args], capture_output=True, text=True,
                        timeout=30, env=clean_env())
    assert cp.returncode == 0, cp.stderr
    assert cp.stderr == ""
    return cp.stdout


def _parse(text: str) -> dict[str, dict[str, str]]:
    parser = configparser.ConfigParser(strict=True, interpolation=None, delimiters=("=",),
                                       comment_prefixes=("#",), empty_lines_in_values=False)
    parser.optionxform = str  # directive names are case-sensitive
    parser.read_string(text)
    for section in parser.sections():
        unknown = set(parser[section]) - KNOWN.get(section, set())
        assert not unknown, f"[{section}]: unknown directives {sorted(unknown)}"
    return {s: dict(parser[s]) for s in parser.sections()}


def _exec_start(unit: dict[str, dict[str, str]]) -> list[str]:
    value = unit["Service"]["ExecStart"].replace("%%", "%").replace("$$", "$")
    return shlex.split(value)


@pytest.mark.parametrize("role", ["server", "client"])
def test_units_pass_a_strict_check_and_systemd_analyze(role, tmp_path):
    home = str(tmp_path / "home")
    text = _unit(role, "--home", home, "--user", "director")
    unit = _parse(text)
    svc = unit["Service"]
    assert svc["Restart"] == "on-failure"
    assert svc["Type"] == "notify" and int(svc["WatchdogSec"]) > 0
    assert int(svc["LimitNOFILE"]) >= 65536
    assert svc["User"] == "director"
    argv = _exec_start(unit)
    assert argv[-3:] == ["--home", home, role] and os.access(argv[0], os.X_OK)
    if role == "server":
        for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict",
                           "ReadWritePaths": home, "ProtectHome": "yes",
                           "PrivateTmp": "yes"}.items():
            assert svc[key] == value, key
        assert set(svc["RestrictAddressFamilies"].split()) >= {"AF_UNIX", "AF_INET", "AF_INET6"}
    else:  # RUN jobs manage the node: no sandbox that would stop them
        for key in ("ProtectSystem", "NoNewPrivileges", "RestrictAddressFamilies",
                    "ProtectHome", "CapabilityBoundingSet"):
            assert key not in svc, key
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed: the strict check above ran")
    path = tmp_path / f"director-{role}.service"
    path.write_text(text)
    cp = subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True,
                        timeout=60)
    assert cp.returncode == 0, cp.stderr
    complaints = [line for line in cp.stderr.splitlines() if str(path) in line]
    assert complaints == []


def test_default_home_is_a_state_directory_and_a_home_under_home_stays_reachable():
    unit = _parse(_unit("server"))["Service"]
    assert unit["StateDirectory"] == "director" and unit["ReadWritePaths"] == "/var/lib/director"
    assert "User" not in unit
    under_home = _parse(_unit("server", "--home", "/home/ops/director"))["Service"]
    assert under_home["ProtectHome"] == "read-only"
    assert under_home["ReadWritePaths"] == "/home/ops/director"
    assert "StateDirectory" not in under_home


@pytest.mark.parametrize("args, words", [
    (["server", "--home", "relative/home"], "absolute path"),
    (["server", "--home", "/tmp/a b"], "absolute path"),
    (["client", "--user", "x;rm -rf /"], "--user"),
    (["desktop"], "server"),
])
def test_bad_values_give_one_line_and_no_unit(args, words):
    cp = subprocess.run([*DIRECTOR, "systemd", *args], capture_output=True, text=True,
                        timeout=30, env=clean_env())
    assert cp.returncode == 2 and cp.stdout == ""
    assert cp.stderr.startswith("director: ") and cp.stderr.count("\n") == 1
    assert words in cp.stderr


class _NotifySocket:
    """What systemd listens on for a Type=notify service: a unix datagram socket."""

    def __init__(self, path: str):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.messages: list[str] = []

    def wait_for(self, word: str, timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        while not any(word in m.split("\n") for m in self.messages):
            left = deadline - time.monotonic()
            assert left > 0, f"no {word} within {timeout} s; got {self.messages}"
            self.sock.settimeout(left)
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue
        return self.messages

    def close(self) -> None:
        self.sock.close()


def _run_exec_start(unit_text: str, notify: _NotifySocket, env: dict[str, str],
                    log) -> subprocess.Popen:
    argv = _exec_start(_parse(unit_text))
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=log, start_new_session=True,
                            env=clean_env({"NOTIFY_SOCKET": notify.path,
                                           "WATCHDOG_USEC": "2000000", **env}))


def _stop(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)
        raise AssertionError("the service ignored SIGTERM") from None


def test_server_exec_start_runs_reports_ready_and_feeds_the_watchdog(tmp_path):
    home = f"/tmp/dsd{os.getpid()}"  # short: the control socket path is bounded
    notify = _NotifySocket(str(tmp_path / "notify"))
    port = free_port()
    log = open(tmp_path / "server.log", "wb")
    proc = _run_exec_start(_unit("server", "--home", home), notify,
                           {"DIRECTOR_BIND": f"tcp://127.0.0.1:{port}"}, log)
    try:
        got = notify.wait_for("READY=1", timeout=20)
        assert "STATUS=serving" in got[0]
        health = subprocess.run([*DIRECTOR, "--home", home, "health", "--json"],
                                capture_output=True, text=True, timeout=30, env=clean_env())
        assert health.returncode == 0 and json.loads(health.stdout)["role"] == "server"
        notify.wait_for("WATCHDOG=1", timeout=10)  # every 0.5 s for a 2 s watchdog
    finally:
        rc = _stop(proc)
        log.close()
        notify.close()
        shutil.rmtree(home, ignore_errors=True)
    assert rc == 0, (tmp_path / "server.log").read_text()


def test_client_exec_start_runs_and_its_node_comes_online(mesh, tmp_path):
    mesh.server()
    home = mesh.new_home()
    cp = mesh.cli("enroll", "--server", mesh.address, "--token", mesh.token(), "--name", "unit1",
                  home=home)
    assert cp.returncode == 0, cp.stderr
    notify = _NotifySocket(str(tmp_path / "notify"))
    log = open(tmp_path / "client.log", "wb")
    proc = _run_exec_start(_unit("client", "--home", home), notify,
                           {"DIRECTOR_HEARTBEAT_INTERVAL": "0.5"}, log)
    try:
        notify.wait_for("READY=1", timeout=20)
        mesh.wait_online("unit1", timeout=15)
        [job] = mesh.json("exec", "--wait", "RUN env")  # systemd's variables stay with the agent
        out = job["results"]["unit1"]["stdout"]
        assert "HOME=" in out or "PATH=" in out
        assert "NOTIFY_SOCKET" not in out and "WATCHDOG_USEC" not in out
    finally:
        rc = _stop(proc)
        log.close()
        notify.close()
    assert rc == 0, (tmp_path / "client.log").read_text()


def test_bash_completion_completes_sub_commands_and_options(tmp_path):
    script = subprocess.run([*DIRECTOR, "completion", "bash"], capture_output=True, text=True,
                            timeout=30, env=clean_env())
    assert script.returncode == 0, script.stderr
    (tmp_path / "director.bash").write_text(script.stdout)
    probe = (f"source {shlex.quote(str(tmp_path / 'director.bash'))}\n"
             "complete -p director\n"
             "COMP_WORDS=(director ke); COMP_CWORD=1; _director_completion director ke director\n"
             "echo \"subs: ${COMPREPLY[*]}\"\n"
             "COMPREPLY=(); COMP_WORDS=(director enroll --na); COMP_CWORD=2\n"
             "_director_completion director --na enroll\n"
             "echo \"opts: ${COMPREPLY[*]}\"\n")
    env = clean_env({"PATH": f"{BIN_DIR}{os.pathsep}{os.environ.get('PATH', '')}"})
    cp = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, timeout=60,
                        env=env)
    assert cp.returncode == 0, cp.stderr
    assert "complete -o nosort -F _director_completion director" in cp.stdout
    assert "subs: keygen keys" in cp.stdout
    assert "opts: --name" in cp.stdout


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_zsh_and_fish_scripts_are_printed(shell):
    cp = subprocess.run([*DIRECTOR, "completion", shell], capture_output=True, text=True,
                        timeout=30, env=clean_env())
    assert cp.returncode == 0, cp.stderr
    assert "_DIRECTOR_COMPLETE" in cp.stdout and f"{shell}_complete" in cp.stdout
    if shutil.which(shell):
        syntax = subprocess.run([shell, "-n"], input=cp.stdout, capture_output=True, text=True,
                                timeout=30)
        assert syntax.returncode == 0, syntax.stderr
