"""director.cli.orchview: the progress line, an orchestration's summary and the jobs
listing stay bounded and terminal-safe whatever the server's documents hold."""

from __future__ import annotations

import re

from director.cli.orchview import NODE_ROWS, Progress, print_overview, print_summary

FORBIDDEN = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
HOSTILE = "n\x1b]0;owned\x07\x1b[2J\u202eok"


def test_progress_line_names_a_few_nodes_then_counts_the_rest(monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")
    p = Progress(enabled=False)
    p.update("submitted", {"tasks": 100, "jobs": ["a"], "orch": "o1"})
    line = p.line({"success": 40, "failed": 2, "cancelled": 1, "running": 30, "queued": 20,
                   "queued_offline": 7, "bytes_sent": 3 * 1048576, "nodes_left": 50,
                   "waiting_on": [HOSTILE, "web2", "web3", "web4"]}, elapsed=2.0)
    assert line == ("40/100 done, 3 failed, 30 running, 20 queued, 7 queued (node offline),"
                    " 3.0 MiB sent (2 MiB/s); waiting on nok, web2, web3 +47  (2.0s)")


def test_progress_line_fits_the_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "40")
    p = Progress(enabled=False)
    line = p.line({"success": 1, "running": 1, "queued": 1, "nodes_left": 3,
                   "waiting_on": ["a" * 100]}, elapsed=1.0)
    assert len(line) <= 39 and line.endswith("...")


def _summary(nodes: int) -> dict:
    return {"kind": "orchestration", "id": "o1\x1b[2J", "name": HOSTILE, "status": "failed",
            "running": False, "duration": 12.5, "job_count": 100000, "node_count": nodes,
            "tasks": 100000 * nodes, "counts": {"success": 5, "failed": 1, "lost": 1},
            "nodes": {f"{HOSTILE}{i:04d}": {"counts": {"success": 99999, "failed": i % 2},
                                            "offline": i == 3} for i in range(nodes)},
            "first_failure": {"job": "o1\x1b]0;x\x07", "node": HOSTILE, "status": "failed",
                              "rc": 3, "summary": HOSTILE * 40,
                              "stderr_tail": [HOSTILE * 500] * 9, "stdout_tail": ["x"]},
            "jobs": []}


def test_summary_is_bounded_and_safe(capsys):
    print_summary(_summary(500))
    out = capsys.readouterr().out
    lines = out.rstrip("\n").split("\n")
    assert len(lines) < 40 and not FORBIDDEN.search(out)
    assert lines[0] == "orchestration o1  nok  [failed]"
    assert lines[1] == "100000 jobs on 500 nodes, 50000000 tasks, took 12.50s"
    assert lines[2].split() == ["NODE", "SUCCESS", "FAILED", "CANCELLED", "LOST"]
    assert lines[3].split() == ["nok0001", "99999", "1", "0", "0"]  # trouble first
    assert "nok0003 (offline)" in out
    assert lines[3 + NODE_ROWS] == "... 480 more nodes (250 of them with no failure)"
    assert all(len(ln) <= 220 for ln in lines[-7:])
    assert lines[-1] == "every job: director job o1 --all; timings: director analyze o1"


def test_overview_shows_an_orchestration_as_one_line(capsys):
    print_overview([
        {"kind": "orchestration", "id": "o1", "name": "", "first_job": "RUN a", "job_count": 3,
         "node_count": 2, "status": "running", "counts": {"success": 2, "queued": 4},
         "duration": 1.5, "age": 2.0},
        {"id": "j1", "summary": HOSTILE, "targets": ["a"], "status": "success",
         "counts": {"success": 1}, "age": 1.0}])
    out = capsys.readouterr().out
    lines = out.rstrip("\n").split("\n")
    assert len(lines) == 3 and not FORBIDDEN.search(out)
    assert lines[1].split() == ["o1", "RUN", "a", "...", "(3", "jobs)", "2", "nodes", "running",
                                "queued=4", "success=2", "1.50s", "2s", "ago"]
    assert lines[2].split()[:3] == ["j1", "nok", "a"] and lines[2].split()[5] == "-"
