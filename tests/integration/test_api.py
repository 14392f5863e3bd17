"""director.api end to end (issue 15 item 4): a Python program drives a real server with
real enrolled clients through ``Client(home=...)`` -- submit, wait, job, jobs, nodes,
cancel -- and gets the documents ``--json`` prints, or a DirectorError.

One mesh (server + web1 + web2) is shared by the module; every test uses its own tag.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from conftest import clean_env, shared_mesh

from director import api
from director.errors import ConnectionFailed, DirectorError, DSLError

NODES = ("web1", "web2")


@pytest.fixture(scope="module")
def grid():
    yield from shared_mesh(NODES)


@pytest.fixture
def client(grid) -> api.Client:
    return api.Client(home=grid.home)


def uid() -> str:
    return uuid.uuid4().hex[:10]


def as_json(doc) -> object:
    """What ``--json`` would print for ``doc``, parsed back."""
    return json.loads(json.dumps(doc))


def test_nodes_are_typed_nodes_json_documents(grid, client):
    nodes = client.nodes()
    assert all(isinstance(n, api.Node) for n in nodes)
    assert sorted(n.name for n in nodes) == sorted(NODES)
    assert all(n.online and n.state == "online" and len(n.fingerprint) == 19 for n in nodes)
    cli = {n["name"]: n for n in grid.json("nodes")}
    for n in as_json(nodes):
        assert set(n) == set(cli[n["name"]])
        assert n["fingerprint"] == cli[n["name"]]["fingerprint"]


def test_submit_and_wait_returns_the_job_json_documents(grid, client):
    tag = uid()
    events: list[tuple[str, dict]] = []
    docs = client.submit(f"RUN echo {tag}", targets=list(NODES), wait=True,
                         on_event=lambda e, d: events.append((e, d)))
    assert len(docs) == 1 and isinstance(docs[0], api.Job)
    job = docs[0]
    assert job.ok and job.status == "success" and job.done and job.verb == "RUN"
    assert sorted(job.results) == sorted(NODES)
    for r in job.results.values():
        assert r.ok and r.rc == 0 and r.stdout == f"{tag}\n" and r.stderr == ""
        assert r.exec_time is not None and r.exec_time >= 0
    assert events and events[0][0] == "submitted" and events[0][1]["jobs"] == [job.id]
    assert as_json(job) == grid.json("job", job.id)  # the same document --json prints
    assert as_json(client.job(job.id)) == as_json(job)


def test_a_failing_job_is_a_result_not_an_error(client):
    (job,) = client.submit("RUN echo oops >&2; exit 3", targets="web1", wait=True)
    assert not job.ok and job.status == "failed"
    assert list(job.results) == ["web1"]
    r = job.results["web1"]
    assert r.status == "failed" and r.rc == 3 and r.stderr == "oops\n"


def test_submit_without_wait_then_wait_job_and_jobs(client):
    tag = uid()
    sub = client.submit([f"RUN echo {tag}-a", f"RUN echo {tag}-b"], targets=["web*"])
    assert isinstance(sub, api.Submission) and len(sub.jobs) == 2 and sub.tasks == 4
    done = [client.wait(j, timeout=30) for j in sub.jobs]
    assert [d.id for d in done] == sub.jobs
    assert all(d.ok and d.orchestration == sub.orchestration for d in done)
    assert done[1].results["web2"].stdout == f"{tag}-b\n"
    listed = {j.id: j for j in client.jobs(limit=50)}
    assert set(sub.jobs) <= set(listed)
    first = listed[sub.jobs[0]]
    assert isinstance(first, api.JobSummary) and "results" not in first
    assert first.status == "success" and first.counts == {"success": 2} and first.age >= 0


def test_submit_files_directorfile_and_suffixless_yaml(grid, client, tmp_path):
    tag = uid()
    directorfile = tmp_path / "Directorfile"
    directorfile.write_text(f"ARG T={tag}\nRUN echo df-${{T}}\n")
    site = tmp_path / "site"  # YAML without a suffix: recognised by content
    site.write_text(f"# site\n- targets: [web2]\n  jobs:\n    - RUN: echo yaml-{tag}\n")
    docs = client.submit([directorfile, site], targets=(), wait=True)
    assert [d.verb for d in docs] == ["ARG", "RUN", "RUN"] and all(d.ok for d in docs)
    assert docs[1].results["web1"].stdout == f"df-{tag}\n"
    assert list(docs[2].results) == ["web2"] and docs[2].results["web2"].stdout == f"yaml-{tag}\n"


def test_wait_gives_up_with_a_director_error_and_last_resolves(client):
    sub = client.submit(f"RUN sleep 1.5; echo {uid()}", targets="web1")
    with pytest.raises(api.WaitTimedOut) as info:
        client.wait(sub.jobs[0], timeout=0.3)
    assert isinstance(info.value, DirectorError) and info.value.exit_code == 2
    assert sub.jobs[0] in str(info.value)
    job = client.wait("last", timeout=30)  # the job goes on after the caller gave up
    assert job.id == sub.jobs[0] and job.ok


def test_cancel_sends_jobs_cancel_and_explains_an_older_server(client):
    # the server's words for an operation it does not know, which cancel() relies on
    with pytest.raises(DirectorError, match=r"^unknown control operation 'jobs\.nope'"):
        client.request("jobs.nope", {})
    sub = client.submit(f"RUN sleep 2; echo {uid()}", targets="web1")
    try:
        answer = client.cancel(sub.jobs[0])
    except api.Unsupported as exc:  # this server has no jobs.cancel yet
        assert isinstance(exc, DirectorError) and api.CANCEL_OP in str(exc)
        assert "cannot cancel" in str(exc) and "\n" not in str(exc)
    else:  # a server with jobs.cancel: the job ends cancelled
        assert answer is not None
        assert client.wait(sub.jobs[0], timeout=30).status == "cancelled"
    client.wait(sub.jobs[0], timeout=30)


def test_errors_are_director_errors_and_nothing_is_sent(client, tmp_path):
    before = [j.id for j in client.jobs(limit=10000)]
    with pytest.raises(DSLError, match="unknown verb 'RUNN'"):
        client.submit("RUNN echo", wait=True)
    with pytest.raises(DSLError, match="cannot read orchestration file"):
        client.submit(tmp_path / "missing.yaml")
    with pytest.raises(DirectorError, match="ghost"):
        client.submit(f"RUN echo {uid()}", targets=["web1", "ghost"], wait=True)
    with pytest.raises(DirectorError, match="ghost"):
        client.submit(f"RUN echo {uid()}", targets="ghost")
    with pytest.raises(TypeError):
        client.submit(42)  # type: ignore[arg-type]
    assert [j.id for j in client.jobs(limit=10000)] == before
    with pytest.raises(DirectorError, match="no job 'nope-nope'"):
        client.job("nope-nope")
    with pytest.raises(ConnectionFailed, match="no director running"):
        api.Client(home=tmp_path / "empty").nodes()


def test_client_home_defaults_to_director_home(grid, monkeypatch):
    monkeypatch.setenv("DIRECTOR_HOME", grid.home)
    c = api.Client()
    assert str(c.home) == grid.home
    assert sorted(n.name for n in c.nodes()) == sorted(NODES)


def test_cli_job_commands_start_through_the_api_and_nothing_heavier(grid):
    """``director exec --wait`` goes through director.api and imports no server, node
    agent or node protocol module (CLI start-up latency)."""
    cp = subprocess.run([sys.executable, "-X", "importtime", "-m", "director", "--home",
                         grid.home, "exec", "--wait", "--target", "web1", "RUN true"],
                        capture_output=True, text=True, timeout=60, env=clean_env(),
                        stdin=subprocess.DEVNULL)
    assert cp.returncode == 0, cp.stderr[-2000:]
    mods = {line.rsplit("|", 1)[1].strip() for line in cp.stderr.splitlines() if "|" in line}
    assert {"director.api", "director.net.control"} <= mods
    heavy = {m for m in mods if m.startswith(("director.server", "director.client",
                                              "director.transfer", "director.jobs.executor"))
             or m in ("director.protocol.messages", "yaml", "nacl", "sqlite3")}
    assert not heavy, heavy


def test_python_api_example_in_readme_runs(grid, tmp_path):
    """README's "Python API" example, run as written against this mesh."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Python API", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    (tmp_path / "site.yaml").write_text("- jobs:\n    - RUN: echo from-site\n")
    cp = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                        timeout=60, cwd=tmp_path, stdin=subprocess.DEVNULL,
                        env=clean_env({"DIRECTOR_HOME": grid.home}))
    assert cp.returncode == 0, cp.stderr[-2000:]
    assert "web1 success" in cp.stdout and "web2 success" in cp.stdout
    assert "\nsuccess\n" in cp.stdout  # the orchestration job waited for


def test_server_gone_during_a_waiting_submit_names_the_job_to_follow(mesh):
    mesh.server()
    mesh.add_node("web1")
    c = api.Client(home=mesh.home)
    seen: list[str] = []

    def on_event(event: str, data: dict) -> None:
        if event == "submitted":
            seen.extend(data["jobs"])
            assert mesh.stop_server() == 0  # the work is queued: the server goes away
    with pytest.raises(ConnectionFailed) as info:
        c.submit("RUN sleep 1", wait=True, on_event=on_event)
    assert seen and f"follow them with: director job {seen[-1]}" in str(info.value)


def test_a_large_answer_comes_in_parts_and_joins_to_what_json_prints(grid, tmp_path):
    """Past a mebibyte the server sends a waiting client its answer in pieces as jobs
    finish (CTL_PART), never holding or joining all of it in one loop turn; the pieces
    and the final reply are exactly the list ``--json`` prints."""
    from director.jobs.dsl import parse_line
    from director.net.control import ControlClient
    from director.protocol.control import CtlPart, CtlReply, join_parts

    tag = uuid.uuid4().hex[:8]
    lines = [f"RUN --skip-cache printf '%*s' 400000 '' | tr ' ' {c}; echo {tag}"
             for c in "abcdef"]
    payload = {"steps": [{"targets": list(NODES), "async": False, "name": None,
                          "jobs": [parse_line(ln).to_dict() for ln in lines]}],
               "targets": [], "wait": True, "parts": True}
    parts: list[bytes] = []
    final = None
    with ControlClient(grid.home, timeout=60) as c:
        for msg in c.stream("jobs.submit", payload, timeout=60):
            if isinstance(msg, CtlPart):
                parts.append(msg.data)
            elif isinstance(msg, CtlReply):
                final = msg
    assert final is not None and final.ok and final.result_json, final
    assert 1 <= len(parts) < 6  # in pieces, each at least one job's document
    docs = json.loads(join_parts(parts, final.data))
    assert [d["summary"] for d in docs] == [parse_line(ln).describe(200) for ln in lines]
    for d, c in zip(docs, "abcdef"):
        assert {n: r["stdout"] for n, r in d["results"].items()} == \
            dict.fromkeys(NODES, c * 400000 + tag + "\n")
    # the CLI takes the same pieces and prints one strict document
    f = tmp_path / "big.director"
    f.write_text("\n".join(lines) + "\n")
    cp = grid.cli("orchestrate", "--wait", "--json", "-t", ",".join(NODES), str(f),
                  timeout=60)
    assert cp.returncode == 0, cp.stderr
    assert [len(d["results"]) for d in json.loads(cp.stdout)] == [2] * 6
