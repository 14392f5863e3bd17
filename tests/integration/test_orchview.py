"""Orchestrations as one thing in the CLI, with a real server and real clients: one id at
submit, one line in ``director jobs``, a bounded summary in ``director job ORCH`` and
after ``orchestrate --wait``; progress on a terminal; tasks queued for an offline node.
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from conftest import DIRECTOR, clean_env, shared_mesh

NODES = ("web1", "web2", "db1")


@pytest.fixture(scope="module")
def grid():
    yield from shared_mesh(NODES)


def _file(m, lines: list[str], name: str | None = None) -> Path:
    f = Path(m.root) / (name or f"Directorfile-{uuid.uuid4().hex[:8]}")
    f.write_text("\n".join(lines) + "\n")
    return f


def _lines(text: str) -> list[str]:
    return text.rstrip("\n").split("\n")


def test_orchestrate_prints_one_id_and_json_names_it(grid):
    tag = uuid.uuid4().hex[:8]
    f = _file(grid, [f"RUN echo a-{tag}", f"RUN echo b-{tag}", f"RUN echo c-{tag}"])
    cp = grid.cli("orchestrate", "-t", "web1", str(f))
    assert cp.returncode == 0, cp.stderr
    orch = cp.stdout.strip()
    assert _lines(cp.stdout) == [orch] and orch.isalnum()
    doc = json.loads(grid.cli("orchestrate", "-t", "web1", "--json", str(f)).stdout)
    assert doc["id"] == doc["orchestration"] == doc["orch"] and len(doc["jobs"]) == 3
    assert all(j.startswith(doc["id"]) for j in doc["jobs"]) and doc["tasks"] == 3
    for o in (orch, doc["id"]):
        grid.wait_for(lambda: grid.json("job", o)["status"] == "success", 20, "it to finish")
    summary = grid.json("job", orch)
    assert summary["kind"] == "orchestration" and summary["job_count"] == 3
    assert summary["name"] == f.name and summary["nodes"] == {
        "web1": {"counts": {"success": 3}, "tasks": 3, "offline": False}}
    every = grid.json("job", orch, "--all")
    assert [d["id"] for d in every] == summary["jobs"]
    assert every[1]["results"]["web1"]["stdout"] == f"b-{tag}\n"
    # a plain exec: its id is the job's, and `job ID` is the job, as before
    cp = grid.cli("exec", "-t", "web1", f"RUN echo d-{tag}")
    job = cp.stdout.strip()
    assert _lines(cp.stdout) == [job]
    grid.wait_for(lambda: grid.json("job", job)["status"] == "success", 20, "exec to finish")
    out = grid.cli("job", job).stdout
    assert out.startswith(f"job {job}  RUN echo d-{tag}  [success]\n")
    head = _lines(out)[1].split()
    assert head[:5] == ["NODE", "STATUS", "RC", "QUEUE", "WAIT"] and "EXEC" in head
    # `director jobs`: the exec is one line, the orchestration one line (3 jobs, 1 node)
    rows = _lines(grid.cli("jobs", "-n", "2").stdout)
    assert rows[0].split()[:7] == ["ID", "JOB", "TARGETS", "STATUS", "COUNTS", "DURATION",
                                   "AGE"]
    assert len(rows) == 3
    assert rows[1].split()[:2] == [job, "RUN"]
    assert rows[2].split()[:7] == [doc["id"], f.name, "(3", "jobs)", "1", "nodes", "success"]
    assert "success=3" in rows[2]


def _summary_run(m, n: int, fail_at: int | None = None) -> tuple[subprocess.CompletedProcess,
                                                                  list[str]]:
    lines = [f"RUN true # {i}" for i in range(n)]
    if fail_at is not None:
        lines[fail_at] = "RUN echo first; echo out; printf 'e1\\ne2\\ne3\\ne4\\ne5\\ne6\\e]0;x\\a\\n' >&2;" \
                         " exit 4"
    f = _file(m, lines)
    cp = m.cli("orchestrate", "--wait", "-t", "web1,web2,db1", str(f), timeout=300)
    return cp, _lines(cp.stdout)


def test_wait_prints_a_summary_whose_length_does_not_grow_with_the_jobs(grid):
    few, few_lines = _summary_run(grid, 10, fail_at=3)
    many, many_lines = _summary_run(grid, 1000, fail_at=3)
    assert few.returncode == many.returncode == 2, (few.stderr, many.stderr)
    assert len(many_lines) == len(few_lines) < 40, many.stdout
    orch = many_lines[0].split()[1]
    assert many_lines[0] == f"orchestration {orch}  {many_lines[0].split()[2]}  [failed]"
    assert many_lines[1].startswith("1000 jobs on 3 nodes, 3000 tasks, took ")
    assert many_lines[2].split() == ["NODE", "SUCCESS", "FAILED", "CANCELLED"]
    assert sorted(ln.split() for ln in many_lines[3:6]) == [
        ["db1", "3", "1", "996"], ["web1", "3", "1", "996"], ["web2", "3", "1", "996"]]
    assert many_lines[6].startswith("first failure: ")
    assert many_lines[6].endswith(": failed, rc 4") and f"job {orch}0004 " in many_lines[6]
    assert many_lines[7:] == ["  stderr (last lines):", "    e2", "    e3", "    e4", "    e5",
                              "    e6", f"every job: director job {orch} --all; timings:"
                              f" director analyze {orch}"]
    assert "\x1b" not in many.stdout and "\a" not in many.stdout
    # `job ORCH` and `job last` print the same summary; `--all` every job
    again = grid.cli("job", orch)
    assert _lines(again.stdout)[2:] == many_lines[2:]
    assert _lines(grid.cli("job", "last").stdout)[0] == many_lines[0]
    assert grid.cli("job", orch, "--all").stdout.count(f"job {orch}") == 1000
    doc = grid.json("job", orch)
    assert doc["counts"] == {"success": 9, "failed": 3, "cancelled": 2988}
    assert doc["first_failure"]["stderr_tail"][-1] == "e6\x1b]0;x\x07"  # raw in JSON
    assert len(doc["jobs"]) == 1000 and doc["jobs"][3] == f"{orch}0004"
    # --json still prints every job, as `job ID --json` does
    f = _file(grid, [f"RUN true # json {i}" for i in range(20)])
    cp = grid.cli("orchestrate", "--wait", "--json", "-t", "web1", str(f), timeout=60)
    docs = json.loads(cp.stdout)
    assert cp.returncode == 0 and len(docs) == 20 and docs[0]["results"]["web1"]["rc"] == 0


def _read_pty(fd: int, until: float, stop) -> str:
    seen = b""
    while time.monotonic() < until:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
            if stop(seen.decode(errors="replace")):
                break
    return seen.decode(errors="replace")


def test_progress_and_job_show_a_task_queued_for_an_offline_node(mesh):
    mesh.server()
    mesh.add_node("a")
    b = mesh.add_node("b")
    b.stop()
    mesh.wait_for(lambda: not mesh.is_online("b"), 15, "b offline")
    master, slave = pty.openpty()
    cli = subprocess.Popen(
        [*DIRECTOR, "--home", mesh.home, "exec", "--wait", "--allow-offline", "-t", "a,b",
         "RUN sleep 0.5"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave,
        env=clean_env({"COLUMNS": "200"}), cwd=mesh.root, text=True)
    os.close(slave)
    try:
        seen = _read_pty(master, time.monotonic() + 15,
                         lambda s: "1 queued (node offline)" in s and "1/2 done" in s)
        assert "1/2 done, 0 failed, 0 running, 0 queued, 1 queued (node offline);" \
               " waiting on b  (" in seen, seen
        job = mesh.json("job", "last")
        assert job["results"]["b"]["status"] == "queued" and job["results"]["b"]["offline"]
        assert job["results"]["a"]["queue_wait"] >= 0 and "offline" not in job["results"]["a"]
        rows = _lines(mesh.cli("job", "last").stdout)
        assert rows[3].split()[:4] == ["b", "queued", "(node", "offline)"], rows
        mesh.client("b")
        out, _ = cli.communicate(timeout=30)
        assert cli.returncode == 0, out
        assert mesh.json("job", "last")["results"]["b"]["status"] == "success"
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
        os.close(master)
