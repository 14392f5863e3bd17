"""director job cancel, end to end: process groups gone, COPY given up, nothing
further runs, and --cancel-on-interrupt."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import DIRECTOR, clean_env
from procs import live_in_group

pytestmark = pytest.mark.integration


def _final(mesh, job_id: str, timeout: float = 15) -> dict:
    return mesh.wait_for(
        lambda: (d := mesh.json("job", job_id)) and d["status"] not in ("queued", "running")
        and d, timeout=timeout, what=f"job {job_id} to end")


def test_cancel_stops_every_process_group_on_three_nodes(mesh, tmp_path):
    mesh.server()
    for name in ("a", "b", "c"):
        mesh.add_node(name)
    pids = tmp_path / "pids"
    job_id = mesh.cli("exec", f"RUN echo $$ >> {pids}; sleep 600; echo never",
                      check=True).stdout.strip()
    groups = mesh.wait_for(lambda: pids.exists() and len(pids.read_text().split()) == 3
                           and [int(p) for p in pids.read_text().split()], timeout=10,
                           what="three sleeps running")
    assert all(live_in_group(g) for g in groups)
    cp = mesh.cli("job", "cancel", job_id, check=True)
    assert cp.stdout.strip() == "cancelled 0 queued task(s); stopping 3 running", cp.stdout
    started = time.monotonic()
    mesh.wait_for(lambda: not any(live_in_group(g) for g in groups), timeout=2,
                  what="every process group gone within 2 s", interval=0.02)
    assert time.monotonic() - started <= 2.5
    doc = _final(mesh, job_id)
    assert {n: r["status"] for n, r in doc["results"].items()} == \
        {"a": "cancelled", "b": "cancelled", "c": "cancelled"}
    assert all("never" not in r["stdout"] for r in doc["results"].values())


def test_cancelling_a_long_orchestration_midway_runs_nothing_further(mesh, tmp_path):
    mesh.server()
    mesh.add_node("a")
    runs = tmp_path / "runs"
    plan = tmp_path / "plan"
    plan.write_text("".join(f"RUN sleep 0.01; echo {i} >> {runs}\n" for i in range(1000)))
    sub = mesh.json("orchestrate", str(plan))
    mesh.wait_for(lambda: runs.exists() and len(runs.read_text().split()) >= 20, timeout=20,
                  what="the orchestration under way")
    done = mesh.json("job", "cancel", "last")
    assert done["id"] == sub["orch"] and done["jobs"] == 1000
    assert done["cancelled"] + done["stopping"] > 0
    ids = sub["jobs"]
    docs = [_final(mesh, j) for j in (ids[0], ids[-1])]
    assert docs[0]["status"] == "success" and docs[1]["status"] == "cancelled"
    time.sleep(1.0)
    ran = len(runs.read_text().split())
    time.sleep(1.0)
    assert len(runs.read_text().split()) == ran < 1000   # nothing more runs
    statuses = [mesh.json("job", j)["status"] for j in ids[ran - 2:ran + 3]]
    assert set(statuses) <= {"success", "cancelled"}, statuses
    listing = mesh.json("jobs", "--limit", "1000")
    mine = [r for r in listing if r["id"] in set(ids)]
    assert not [r for r in mine if r["status"] in ("queued", "running")]
    assert sum(1 for r in mine if r["status"] == "success") == ran


def test_cancel_on_interrupt_cancels_instead_of_leaving_it(mesh, tmp_path):
    mesh.server()
    mesh.add_node("a")
    cli = subprocess.Popen([*DIRECTOR, "--home", mesh.home, "exec", "--wait",
                            "--cancel-on-interrupt", "RUN sleep 600"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env=clean_env(), cwd=mesh.root)
    try:
        job_id = mesh.wait_for(lambda: next((j["id"] for j in mesh.json("jobs")
                                             if j["status"] == "running"), None),
                               timeout=10, what="the job running")
        time.sleep(0.3)  # the node has it
        cli.send_signal(signal.SIGINT)
        _, err = cli.communicate(timeout=10)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    assert cli.returncode == 130, err
    assert "interrupted; cancelled 0 queued task(s); stopping 1 running" in err, err
    assert _final(mesh, job_id)["results"]["a"]["status"] == "cancelled"


def test_cancel_during_a_copy_gives_it_up_and_leaves_no_temp_file(mesh, tmp_path):
    mesh.server()
    mesh.add_node("a")
    src = tmp_path / "big"
    with open(src, "wb") as fh:
        for _ in range(256):
            fh.write(os.urandom(1 << 20))
    dest_dir = tmp_path / "dest"
    job_id = mesh.cli("exec", f"COPY {src} {dest_dir}/big", check=True).stdout.strip()

    def landed() -> int:
        return sum(p.stat().st_size for p in dest_dir.glob("*")) if dest_dir.exists() else 0
    mesh.wait_for(lambda: landed() >= 4 << 20, timeout=20, what="the COPY under way",
                  interval=0.005)
    mesh.cli("job", "cancel", job_id, check=True)
    doc = _final(mesh, job_id)
    result = doc["results"]["a"]
    assert result["status"] == "cancelled", result
    assert not (dest_dir / "big").exists()
    assert list(dest_dir.iterdir()) == []    # its temp file went with it
    # a retry takes what arrived from the node's store: it sends less than everything
    cp = mesh.json("exec", "--wait", f"COPY {src} {dest_dir}/big", timeout=60)
    assert cp[0]["results"]["a"]["status"] == "success"
    assert Path(dest_dir / "big").stat().st_size == 256 << 20


def test_retry_failed_runs_again_only_where_it_did_not_succeed(mesh, tmp_path):
    mesh.server()
    for name in ("a", "b", "c"):
        mesh.add_node(name)
    lock, allow = tmp_path / "lock", tmp_path / "allow"
    cp = mesh.cli("exec", "--wait", "--json", f"RUN mkdir {lock} 2>/dev/null || test -e {allow}")
    assert cp.returncode == 2, cp.stderr                 # one node got the lock
    import json
    first = json.loads(cp.stdout)[0]
    won = {n for n, r in first["results"].items() if r["status"] == "success"}
    assert len(won) == 1
    allow.touch()
    cp = mesh.cli("job", "retry", "last", "--failed", "--wait", "--json")
    assert cp.returncode == 0, (cp.stdout, cp.stderr)
    again = json.loads(cp.stdout)[0]
    assert set(again["results"]) == {"a", "b", "c"} - won
    assert mesh.json("job", again["id"])["retry_of"] == first["id"]
    # without --failed: every node it ran on; nothing left to retry with --failed
    cp = mesh.cli("job", "retry", again["id"], "--failed")
    assert cp.returncode == 1 and "succeeded on every node" in cp.stderr
    sub = mesh.json("job", "retry", first["id"])
    doc = _final(mesh, sub["jobs"][0])
    assert set(doc["results"]) == {"a", "b", "c"}
