"""The agent killed (kill -9) mid-RUN, then restarted: its journal decides.

The job ends ``lost`` with the reason, the process group the killed agent left
is killed by the new agent (verified by pgid and start time), the RUN's side
effect happened exactly once, and the server re-sending the job id after the
restart (it does on every HELLO) does not run it again.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest
from procs import live_in_group

pytestmark = pytest.mark.integration
FINAL = {"success", "failed", "timeout", "lost", "cancelled"}


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def test_agent_killed_mid_run_restarts_kills_the_group_and_reports_lost(mesh):
    mesh.server(node_expiry=5, heartbeat_interval=0.5)
    mesh.add_node("a")
    pidfile = mesh.root / "job.pid"
    lines = mesh.root / "lines.txt"
    cp = mesh.cli("exec", "--target", "a",
                  f"RUN echo $$ > {pidfile}; echo ran >> {lines}; sleep 300")
    assert cp.returncode == 0, cp.stderr
    job_id = cp.stdout.strip()
    mesh.wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), timeout=10,
                  what="the job to start")
    pgid = int(pidfile.read_text())
    try:
        # the journal committed the job's start (with pid, pgid, start time) before long
        db = Path(mesh.homes["a"]) / "journal.db"
        assert db.stat().st_mode & 0o777 == 0o600

        def recorded():
            with sqlite3.connect(db) as c:
                row = c.execute("SELECT state, pgid, start_time FROM jobs WHERE job_id=?",
                                (job_id,)).fetchone()
            return row if row and row[0] == "started" else None

        state, jpgid, start = mesh.wait_for(recorded, timeout=5, what="the start journaled")
        assert jpgid == pgid and start > 0
        mesh.clients["a"].signal(signal.SIGKILL)
        mesh.clients["a"].wait(timeout=5)
        assert live_in_group(pgid), "the job's group should outlive the killed agent"
        mesh.wait_online("a", proc=mesh.client("a"))

        def final():
            d = mesh.json("job", job_id)
            return d if d["status"] in FINAL else None

        doc = mesh.wait_for(final, timeout=10, what="the job to end", interval=0.25)
        r = doc["results"]["a"]
        assert r["status"] == "lost", r
        assert "the agent restarted while it ran; its process group was killed" in \
            json.dumps(r), r
        mesh.wait_for(lambda: not live_in_group(pgid), timeout=5,
                      what=f"no process left in group {pgid}")
        # the server re-sent the job on the new HELLO: answered from the journal, not run
        time.sleep(1.0)
        assert lines.read_text() == "ran\n"
        with sqlite3.connect(db) as c:
            (state,) = c.execute("SELECT state FROM jobs WHERE job_id=?", (job_id,)).fetchone()
        assert state == "finished"
    finally:
        _kill_group(pgid)
    # the node goes on serving
    cp = mesh.cli("exec", "--wait", "--json", "--target", "a", f"RUN echo again >> {lines}")
    assert cp.returncode == 0, cp.stderr
    assert lines.read_text() == "ran\nagain\n"

