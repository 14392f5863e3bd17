"""`director jobs purge`, automatic retention and `director analyze`, end to end: a real
server and agents, the CLI as an operator runs it."""

from __future__ import annotations

import time

import pytest



def _ids(mesh) -> set[str]:
    return {j["id"] for j in mesh.json("jobs", "--limit", "1000")}


def test_analyze_numbers_are_the_job_rows(mesh, tmp_path):
    mesh.server()
    mesh.add_node("web1")
    mesh.add_node("web2")
    f = tmp_path / "Directorfile"
    f.write_text("RUN sleep 0.3\nRUN true\nRUN sleep 0.1\n")
    docs = mesh.json("orchestrate", "--wait", str(f))
    got = mesh.json("analyze", "last")
    tasks = [(d["id"], node, r) for d in docs for node, r in d["results"].items()]
    assert got["id"] == docs[0]["orchestration"] and got["kind"] == "orchestration"
    assert got["total_jobs"] == 3 and got["total_node_count"] == 2 and got["total_tasks"] == 6
    assert got["total_successes"] == 6 and got["total_failures"] == 0
    execs = [r["exec_time"] for _, _, r in tasks]
    assert got["exec_time_total"] == pytest.approx(sum(execs), abs=1e-5)
    assert got["combined_execution_time"] == got["exec_time_total"]
    assert got["roundtrip_time_total"] == pytest.approx(
        sum(r["roundtrip_time"] for _, _, r in tasks), abs=1e-5)
    assert got["exec_time"]["max"] == pytest.approx(max(execs), abs=1e-6)
    assert got["exec_time"]["min"] == pytest.approx(min(execs), abs=1e-6)
    wall = max(r["finished"] for _, _, r in tasks) - min(d["created"] for d in docs)
    assert got["wall_time"] == pytest.approx(wall, abs=1e-5)
    assert got["wall_time"] >= 0.4   # the sleeps of one node run one after the other
    slowest = max(tasks, key=lambda t: t[2]["exec_time"])
    assert got["slowest_job"]["id"] == slowest[0] and got["slowest_job"]["node"] == slowest[1]
    assert docs[0]["summary"] == got["slowest_job"]["summary"] == "RUN sleep 0.3"
    for node in ("web1", "web2"):
        mine = [r["exec_time"] for _, n, r in tasks if n == node]
        assert got["nodes"][node]["exec_time"] == pytest.approx(sum(mine), abs=1e-5)
        assert got["nodes"][node]["tasks"] == 3 and got["nodes"][node]["success"] == 3
    assert [j["id"] for j in got["jobs"]] == [d["id"] for d in docs]
    assert got["queue_wait_total"] >= 0 and got["queue_wait"]["count"] == 6

    one = mesh.json("analyze", docs[1]["id"])
    assert one["kind"] == "job" and one["total_tasks"] == 2
    text = mesh.cli("analyze", "last", check=True).stdout
    assert "wall time" in text and "slowest job" in text and "web1" in text and "web2" in text
    bad = mesh.cli("analyze", "nosuchjob")
    assert bad.returncode != 0 and bad.stdout == ""
    assert bad.stderr.startswith("director: no job or orchestration 'nosuchjob'")


def test_purge_by_hand_keeps_running_jobs(mesh):
    mesh.server()
    mesh.add_node("web1")
    done = [mesh.json("exec", "--wait", "-t", "web1", f"RUN echo {i}")[0]["id"]
            for i in range(4)]
    running = mesh.json("exec", "-t", "web1", "RUN sleep 60")["jobs"][0]
    assert mesh.json("jobs", "purge", "--keep", "2") == {"jobs": 3, "results": 3}
    assert _ids(mesh) == {done[-1], running}
    line = mesh.cli("jobs", "purge", "--keep", "0", check=True).stdout
    assert line == "purged 1 job(s) and 1 result(s)\n"
    assert _ids(mesh) == {running}   # still running: kept
    mesh.cli("job", "cancel", running, check=True)
    deadline = time.monotonic() + 10
    while mesh.json("job", running)["status"] != "cancelled":
        assert time.monotonic() < deadline, "the job was not cancelled"
        time.sleep(0.1)
    time.sleep(1.1)
    assert mesh.json("jobs", "purge", "--older-than", "1s") == {"jobs": 1, "results": 1}
    assert _ids(mesh) == set()
    bad = mesh.cli("jobs", "purge", "--older-than", "soon")
    assert bad.returncode != 0 and bad.stdout == "" and "--older-than" in bad.stderr


def test_retention_settings_purge_by_themselves(mesh):
    mesh.server(env={"DIRECTOR_JOB_RETENTION_COUNT": "2"})
    mesh.add_node("web1")
    ids = [mesh.json("exec", "--wait", "-t", "web1", f"RUN echo {i}")[0]["id"]
           for i in range(5)]
    deadline = time.monotonic() + 15   # a pass every 5 s
    while _ids(mesh) != set(ids[-2:]):
        assert time.monotonic() < deadline, _ids(mesh)
        time.sleep(0.25)
