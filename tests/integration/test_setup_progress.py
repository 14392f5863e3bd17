"""scripts/_venv.sh (behind ./scripts/demo and ./scripts/test) says what it is doing: one
line per set-up step that runs, none when there is nothing to do (issue 15 item 6).

venv and pip are stood in for by a small python3 wrapper that records its calls (the real
ones take ~40 s and the network); everything else is the real script and the real Python.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

STUB = """#!/bin/bash
# python3 stand-in: '-m venv DIR' makes DIR/bin/python (this stub), '-m pip' is recorded
echo "$*" >> "$CALLS"
if [ "$1 $2" = "-m venv" ]; then mkdir -p "$3/bin" && ln -s "$0" "$3/bin/python"; exit 0; fi
if [ "$1 $2" = "-m pip" ]; then exit 0; fi
exec {python} "$@"
"""


def _tree(tmp_path: Path) -> Path:
    root = tmp_path / "clone"
    (root / "scripts").mkdir(parents=True)
    (root / "director").mkdir()
    (root / "director" / "__init__.py").write_text("")
    shutil.copy(ROOT / "scripts" / "_venv.sh", root / "scripts")
    shutil.copy(ROOT / "pyproject.toml", root)
    return root


def _setup(root: Path, stub: Path, calls: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": str(stub), "CALLS": str(calls)}
    return subprocess.run(["bash", "-c", f"source {root}/scripts/_venv.sh"], capture_output=True,
                          text=True, timeout=120, env=env)


def test_each_setup_step_prints_one_line_and_a_ready_tree_prints_none(tmp_path):
    root = _tree(tmp_path)
    stub, calls = tmp_path / "python3", tmp_path / "calls"
    stub.write_text(STUB.format(python=sys.executable))
    stub.chmod(0o755)

    first = _setup(root, stub, calls)
    assert first.returncode == 0, first.stderr
    lines = first.stderr.splitlines()
    assert [line.split(" ", 2)[1] for line in lines] == ["creating", "installing", "compiling"]
    assert all(line.startswith("setup: ") for line in lines)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    count = len(project["dependencies"]) + len(project["optional-dependencies"]["test"])
    assert f"installing director and its {count} packages" in lines[1]
    assert "-m pip install" in calls.read_text()

    again = _setup(root, stub, calls)
    assert again.returncode == 0 and again.stderr == ""

    time.sleep(0.01)
    os.utime(root / "pyproject.toml")  # a changed pyproject: install again, no new venv
    changed = _setup(root, stub, calls)
    assert [line.split(" ", 2)[1] for line in changed.stderr.splitlines()] == [
        "installing", "compiling"]


def test_a_python_without_venv_gets_one_line_saying_what_to_install(tmp_path):
    root = _tree(tmp_path)
    stub = tmp_path / "python3"
    stub.write_text(f"#!/bin/bash\nif [ \"$1 $2\" = \"-m venv\" ]; then echo 'No module named"
                    f" venv' >&2; exit 1; fi\nexec {sys.executable} \"$@\"\n")
    stub.chmod(0o755)
    cp = _setup(root, stub, tmp_path / "calls")
    assert cp.returncode == 1
    assert "apt install python3-venv" in cp.stderr.splitlines()[-1]
    assert not (root / ".venv").exists()
