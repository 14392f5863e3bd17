"""--stream: output lines from every node as they are produced, in order per node."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from conftest import DIRECTOR, clean_env

pytestmark = pytest.mark.integration

SLOW = "RUN for i in 1 2 3 4 5; do echo line$i; sleep 0.3; done; echo oops >&2"


def test_stream_shows_lines_as_they_come_in_order_per_node(mesh):
    mesh.server()
    mesh.add_node("a")
    mesh.add_node("b")
    cli = subprocess.Popen([*DIRECTOR, "--home", mesh.home, "exec", "--stream", SLOW],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env=clean_env(), cwd=mesh.root)
    try:
        started = time.monotonic()
        first = cli.stdout.readline()
        took = time.monotonic() - started
        out, err = cli.communicate(timeout=30)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    assert cli.returncode == 0, err
    assert first.strip() in ("a: line1", "b: line1")
    assert took < 1.2, f"the first line came after {took:.1f} s (the job takes 1.5 s)"
    lines = (first + out).splitlines()
    for node in ("a", "b"):
        mine = [ln for ln in lines if ln.startswith(f"{node}: line")]
        assert mine == [f"{node}: line{i}" for i in range(1, 6)], lines
    assert sorted(ln for ln in err.splitlines() if "oops" in ln) == ["a: oops", "b: oops"]


def test_stream_json_is_one_object_per_line_and_node_text_is_data(mesh):
    mesh.server()
    mesh.add_node("a")
    cp = mesh.cli("exec", "--stream", "--json",
                  "RUN printf 'x\\033]0;title\\007y\\n'; printf 'no newline'")
    assert cp.returncode == 0, cp.stderr
    docs = [json.loads(ln) for ln in cp.stdout.splitlines()]
    lines = [d for d in docs if "line" in d]
    assert [d["line"] for d in lines] == ["x\x1b]0;title\x07y", "no newline"]
    assert all(d["node"] == "a" and d["stream"] == "out" for d in lines)
    results = [d for d in docs if "results" in d]
    assert len(results) == 1 and results[0]["status"] == "success"
    plain = mesh.cli("exec", "--stream", "RUN printf 'x\\033]0;title\\007y\\n'")
    assert plain.stdout.splitlines()[0] == "a: xy"
    assert "\x1b" not in plain.stdout and "\x07" not in plain.stdout
