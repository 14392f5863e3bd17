"""README's shell blocks marked `<!-- runnable -->` run as written, on loopback (issue 15).

What the test changes is only what a reader changes for their machines, and it says so:
- `# on the server machine` / `# on each node` / `# back on the server` comments switch
  between two homes (DIRECTOR_HOME), as two machines would have two;
- the placeholders `SERVER:5555` and `dj1.…` become the server's loopback address and the
  token the block's own `director token create` printed;
- the server binds 127.0.0.1 on a free port (DIRECTOR_BIND), HOME is a temp directory;
- a line ending in `&` runs in the background and the next line waits until that daemon
  answers `director health` (a person would wait those few seconds too).
Blocks marked `<!-- runnable: as root -->` install systemd units: their `director` parts run
for real and what they print must be the units systemd accepts under the names the
`systemctl` lines use; the root-only parts (`sudo`, `useradd`, `systemctl`) do not run.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from conftest import BIN_DIR, DIRECTOR, clean_env, free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def blocks(marker: str) -> list[list[str]]:
    """The ```sh blocks right after a line ``<!-- MARKER -->``."""
    lines = README.read_text(encoding="utf-8").splitlines()
    out = []
    for i, line in enumerate(lines):
        if line.strip() == f"<!-- {marker} -->" and lines[i + 1].strip() == "```sh":
            end = lines.index("```", i + 2)
            out.append(lines[i + 2:end])
    return out


def commands(block: list[str]) -> list[tuple[str | None, str]]:
    """(machine, command line) pairs; `\\` continuations joined, comment lines dropped."""
    machine, out, pending = None, [], ""
    for raw in block:
        line = pending + raw
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        text = line.strip()
        if text.startswith("#"):
            if re.match(r"# (on|back on) ", text):
                machine = "node" if "node" in text else "server"
            continue
        if text:
            out.append((machine, text))
    return out


def _background(line: str) -> str | None:
    """The command of a line that ends in ``&`` (before any comment), else None."""
    code = line.split(" #", 1)[0].rstrip()
    return code[:-1].rstrip() if code.endswith("&") else None


class Machines:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="d", dir="/tmp"))  # short: ipc paths
        self.port = free_port()
        (self.root / "user").mkdir()
        self.procs: list[subprocess.Popen] = []
        self.token: str | None = None

    def env(self, machine: str | None) -> dict[str, str]:
        env = clean_env({"HOME": str(self.root / "user"),
                         "PATH": f"{BIN_DIR}{os.pathsep}{os.environ.get('PATH', '')}"})
        if machine is not None:
            env["DIRECTOR_HOME"] = str(self.root / machine)
        if machine == "server":
            env["DIRECTOR_BIND"] = f"tcp://127.0.0.1:{self.port}"
        return env

    def fill(self, line: str) -> str:
        line = line.replace("SERVER:5555", f"127.0.0.1:{self.port}")
        if "dj1.…" in line:
            assert self.token, f"{line!r} needs the token an earlier line printed"
            line = line.replace("dj1.…", self.token)
        return line

    def run(self, machine: str | None, line: str) -> subprocess.CompletedProcess | None:
        line = self.fill(line)
        env = self.env(machine)
        bg = _background(line)
        if bg is not None:
            log = open(self.root / f"bg{len(self.procs)}.log", "wb")
            self.procs.append(subprocess.Popen(["bash", "-c", f"exec {bg}"], env=env, cwd=ROOT,
                                               stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                               start_new_session=True))
            log.close()
            self._wait_healthy(env, len(self.procs) - 1)
            return None
        cp = subprocess.run(["bash", "-c", line], env=env, cwd=ROOT, capture_output=True,
                            text=True, timeout=120, stdin=subprocess.DEVNULL)
        assert cp.returncode == 0, f"{line!r} exited {cp.returncode}:\n{cp.stdout}\n{cp.stderr}"
        if line.startswith("director token create"):
            self.token = cp.stdout.split()[0]
            assert self.token.startswith("dj1."), cp.stdout
        return cp

    def _wait_healthy(self, env: dict[str, str], n: int) -> None:
        deadline = time.monotonic() + 20
        while subprocess.run([*DIRECTOR, "health"], env=env, capture_output=True,
                             timeout=30).returncode != 0:
            proc = self.procs[n]
            assert proc.poll() is None and time.monotonic() < deadline, \
                (self.root / f"bg{n}.log").read_text(errors="replace")[-3000:]
            time.sleep(0.2)

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=5)
        shutil.rmtree(self.root, ignore_errors=True)


def test_readme_marks_its_quick_start_and_completion_blocks_runnable():
    runnable = blocks("runnable")
    assert len(runnable) >= 2
    assert any("director server &" in line for line in runnable[0])
    assert len(blocks("runnable: as root")) >= 2


@pytest.mark.parametrize("index", range(len(blocks("runnable"))))
def test_runnable_block_runs_as_written(index):
    block = blocks("runnable")[index]
    machines = Machines()
    try:
        results = {line: machines.run(machine, line) for machine, line in commands(block)}
        if any(line.startswith("director enroll") for line in results):
            nodes = json.loads(machines.run("server", "director nodes --json").stdout)
            assert [n["state"] for n in nodes] == ["online"]
            last = json.loads(machines.run("server", "director job last --json").stdout)
            assert last["status"] == "success", last
        for line, cp in results.items():
            target = re.search(r"> (\S+)$", line)
            if target and line.startswith("director completion"):
                written = Path(target.group(1).replace("~", str(machines.root / "user"), 1))
                assert "_DIRECTOR_COMPLETE" in written.read_text()
    finally:
        machines.close()


@pytest.mark.parametrize("index", range(len(blocks("runnable: as root"))))
def test_systemd_install_block_prints_the_units_it_installs(index, tmp_path):
    block = blocks("runnable: as root")[index]
    units: dict[str, str] = {}
    enabled: list[str] = []
    for _, line in commands(block):
        parts = [p.strip() for p in line.split("|")]
        if parts[0].startswith("director "):
            cp = subprocess.run(["bash", "-c", parts[0]], capture_output=True, text=True,
                                timeout=60, env=clean_env({"PATH": f"{BIN_DIR}{os.pathsep}"
                                                           f"{os.environ.get('PATH', '')}"}))
            assert cp.returncode == 0 and cp.stderr == "", cp.stderr
            tee = shlex.split(parts[1])
            assert tee[:2] == ["sudo", "tee"] and tee[2].startswith("/etc/systemd/system/")
            units[Path(tee[2]).name] = cp.stdout
        enabled += re.findall(r"systemctl enable --now (\S+)", line)
    assert enabled and {f"{name}.service" for name in enabled} == set(units)
    analyze = shutil.which("systemd-analyze")
    for name, text in units.items():
        assert "ExecStart=" in text and "Type=notify" in text
        if analyze:
            path = tmp_path / name
            path.write_text(text)
            cp = subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True,
                                timeout=60)
            assert cp.returncode == 0 and str(path) not in cp.stderr, cp.stderr
