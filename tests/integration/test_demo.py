"""`director demo` (the README's first command) runs the example orchestration to the end."""

from __future__ import annotations

import subprocess

import pytest
from conftest import DIRECTOR, clean_env

pytestmark = pytest.mark.integration


def test_demo_runs_the_example_twice_and_every_job_succeeds(tmp_path):
    cp = subprocess.run([*DIRECTOR, "demo"], capture_output=True, text=True, timeout=180,
                        env=clean_env({"TMPDIR": str(tmp_path)}), cwd=tmp_path)
    assert cp.returncode == 0, (cp.stdout[-3000:], cp.stderr[-3000:])
    assert "demo finished" in cp.stdout
    assert cp.stdout.count("said: hello from") >= 6  # three nodes, two runs
    assert "failed" not in cp.stdout.split("== director job last")[0].replace("0 failed", "")
