"""Rolling deploys with real processes: ``--batch N|P%`` and ``--max-failures N|P%``.

Every RUN records its own run: a line appended to a file in the node's work dir (so
"never ran" and "ran exactly once" are counted), and for the overlap proofs the
time it started and ended, written by the command itself.
"""

from __future__ import annotations

import json
import signal
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

NODES = ["a", "b", "c"]
FINAL = {"success", "failed", "timeout", "lost", "cancelled"}


def work(mesh, node: str) -> Path:
    path = Path(mesh.homes[node]) / "work"
    path.mkdir(parents=True, exist_ok=True)
    return path


def lines(mesh, node: str, name: str) -> list[str]:
    try:
        return (work(mesh, node) / name).read_text().splitlines()
    except FileNotFoundError:
        return []


def spans(mesh, side: str) -> dict[str, tuple[float, float]]:
    """node -> (start, end) of each node's one run, as its command wrote them."""
    out = {}
    for n in NODES:
        got = lines(mesh, n, side)
        assert len(got) == 1, f"{n} ran {len(got)} times: {got}"
        start, end = got[0].split()
        out[n] = (float(start), float(end))
    return out


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    edges = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    now = peak = 0
    for _, step in edges:
        now += step
        peak = max(peak, now)
    return peak


def timed(side: str, seconds: float) -> str:
    """A RUN line that records when it started and ended (one line per run)."""
    return (f"RUN s=$(date +%s.%N); sleep {seconds}; echo \"$s $(date +%s.%N)\" >> {side}")


def three(mesh) -> None:
    mesh.server()
    for n in NODES:
        mesh.add_node(n)


def wait_job_final(mesh, job_id: str, timeout: float) -> dict:
    def final():
        doc = mesh.ctl("jobs.get", {"id": job_id})
        if doc and doc["results"] and all(r["status"] in FINAL
                                           for r in doc["results"].values()):
            return doc
        return None
    return mesh.wait_for(final, timeout, f"job {job_id} final on every node", interval=0.1)


@pytest.mark.parametrize("limit, failing", [("1", ["a", "b"]), ("0", ["a"])])
def test_max_failures_stops_the_rollout_and_the_rest_never_run(mesh, limit, failing):
    """--batch 1 over a, b, c: the command fails where a marker file exists.  Once more
    targets failed than the limit allows, the others never run it and end cancelled,
    saying why."""
    three(mesh)
    for n in failing:
        (work(mesh, n) / "broken").write_text("")
    cp = mesh.cli("exec", "--wait", "--json", "--batch", "1", "--max-failures", limit,
                  "-t", "a,b,c", "RUN echo ran >> ran.log; test ! -e broken", timeout=60)
    assert cp.returncode == 2, (cp.returncode, cp.stdout, cp.stderr)
    [doc] = json.loads(cp.stdout)
    res = doc["results"]
    reason = (f"not started: {len(failing)} of 3 targets failed,"
              f" over --max-failures {limit}")
    for n in NODES:
        if n in failing:
            assert res[n]["status"] == "failed" and lines(mesh, n, "ran.log") == ["ran"]
        else:
            assert res[n]["status"] == "cancelled", res[n]
            assert res[n]["error"] == reason
            assert lines(mesh, n, "ran.log") == [], f"{n} ran it"
    shown = mesh.cli("job", "last")          # the text view says why, too
    assert reason in shown.stdout, shown.stdout


def test_batch_of_two_runs_at_most_two_at_a_time(mesh):
    three(mesh)
    side = f"span-{uuid.uuid4().hex[:6]}"
    cp = mesh.cli("exec", "--wait", "--json", "--batch", "2", "-t", "a,b,c",
                  timed(side, 0.6), timeout=60)
    assert cp.returncode == 0, (cp.stdout, cp.stderr)
    at = spans(mesh, side)
    assert most_at_once(list(at.values())) == 2, at   # two at once, never three
    first, second = sorted(NODES, key=lambda n: at[n][0])[:2], \
        sorted(NODES, key=lambda n: at[n][0])[2]
    assert sorted(first) == ["a", "b"] and second == "c"   # in target order
    assert at["c"][0] >= max(at["a"][1], at["b"][1]), at   # the next batch waited


def test_server_kill9_mid_rollout_resumes_each_side_effect_once(mesh):
    """--batch 1: the server is killed -9 while the first node runs; after the restart
    the rollout completes, one node at a time, each command exactly once."""
    three(mesh)
    side = f"span-{uuid.uuid4().hex[:6]}"
    cp = mesh.cli("exec", "--batch", "1", "-t", "a,b,c",
                  "RUN echo started >> began.log; " + timed(side, 2.5)[4:], timeout=30)
    assert cp.returncode == 0, cp.stderr
    job_id = cp.stdout.split()[0]
    mesh.wait_for(lambda: lines(mesh, "a", "began.log"), 15, "a to start")
    mesh.server_proc.signal(signal.SIGKILL)
    mesh.server_proc.wait(timeout=5)
    assert not lines(mesh, "b", "began.log") and not lines(mesh, "c", "began.log")
    mesh.server()
    doc = wait_job_final(mesh, job_id, 40)
    assert {n: r["status"] for n, r in doc["results"].items()} == dict.fromkeys(NODES,
                                                                                "success")
    for n in NODES:
        assert lines(mesh, n, "began.log") == ["started"], n
    at = spans(mesh, side)
    assert most_at_once(list(at.values())) == 1, at
    assert at["a"][1] <= at["b"][0] and at["b"][1] <= at["c"][0], at


BAD = [["--batch", "0"], ["--batch=-1"], ["--batch", "101%"], ["--batch", "junk"],
       ["--batch", "1.5"], ["--batch", "0%"], ["--max-failures", "1"],
       ["--batch", "1", "--max-failures=-1"], ["--batch", "1", "--max-failures", "200%"]]


def test_bad_values_one_line_nothing_submitted(mesh):
    mesh.server()
    mesh.add_node("a")
    (mesh.root / "Directorfile").write_text("RUN echo ran >> ran.log\n")
    for args in BAD:
        for command in (["exec", *args, "RUN echo ran >> ran.log"],
                        ["orchestrate", *args, "Directorfile"]):
            cp = mesh.cli(*command)
            assert cp.returncode != 0, command
            err = cp.stderr.strip()
            assert err.startswith("director: ") and "\n" not in err, (command, err)
            assert "--batch" in err or "--max-failures" in err, (command, err)
    dry = mesh.cli("exec", "--dry-run", "--batch", "0", "RUN true")   # not sent: still one line
    assert dry.returncode != 0 and dry.stderr.startswith("director: --batch '0'"), dry.stderr
    assert mesh.json("jobs") == []
    assert lines(mesh, "a", "ran.log") == []
