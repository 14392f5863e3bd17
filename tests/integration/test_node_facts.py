"""Node facts and operator labels end to end: real server and agents on loopback.

Facts are what each agent said at HELLO (``node NAME --json``), labels are set with
``nodes label``; both live in the server's SQLite and survive its restart, and
``--target label:K=V`` / ``fact:K=V`` select the nodes a job runs on.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import socket
import uuid

import pytest
from conftest import shared_mesh

NODES = ("web1", "web2", "db1")


@pytest.fixture(scope="module")
def grid():
    yield from shared_mesh(NODES)


def one_line_error(cp, *needles: str) -> str:
    assert cp.returncode not in (0, None), (cp.returncode, cp.stdout, cp.stderr)
    err = cp.stderr
    assert err.startswith("director: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def exec_wait(m, line: str, *targets: str, rc: int = 0) -> dict:
    opts = [a for t in targets for a in ("--target", t)]
    cp = m.cli("exec", "--wait", "--json", *opts, line)
    assert cp.returncode == rc, (cp.returncode, cp.stdout, cp.stderr)
    (doc,) = json.loads(cp.stdout)
    return doc


def job_count(m) -> int:
    return len(m.json("jobs", "-n", "10000"))


def os_id() -> str | None:
    try:
        text = open("/etc/os-release").read()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("ID="):
            return line[3:].strip().strip('"')
    return None


def test_each_node_reports_its_facts(grid):
    doc = grid.json("node", "web1")
    assert {"name", "state", "labels", "facts", "fingerprint", "last_seen"} <= set(doc)
    assert doc["name"] == "web1" and doc["state"] == "online"
    facts = doc["facts"]
    assert facts["hostname"] == socket.gethostname()
    assert facts["arch"] == platform.machine() and facts["kernel"] == platform.release()
    assert facts["cpus"] == os.cpu_count() and facts["memory"] > 0
    assert facts["version"] == grid.json("nodes")[0]["version"]
    if os_id():
        assert facts["os"]["id"] == os_id()
    assert all("\n" not in a and not a.startswith("127.") for a in facts.get("addresses", []))
    shown = grid.cli("node", "web1", check=True).stdout
    assert platform.machine() in shown and "hostname" in shown


def test_an_unknown_node_is_a_clear_error(grid):
    one_line_error(grid.cli("node", "ghost"), "no node named 'ghost'")
    one_line_error(grid.cli("nodes", "label", "ghost", "role=web"), "no node named 'ghost'")


@pytest.mark.parametrize("args", [
    ["role"], ["bad key=x"], ["role=web,db"], ["role=web*"], ["role=a", "--remove", "role"], [],
])
def test_bad_label_input_is_refused_with_one_line(grid, args):
    before = grid.json("node", "db1")["labels"]
    one_line_error(grid.cli("nodes", "label", "db1", *args))
    assert grid.json("node", "db1")["labels"] == before


def test_labels_select_the_nodes_a_job_runs_on(grid):
    grid.cli("nodes", "label", "web1", "role=web", "tier=front", check=True)
    grid.cli("nodes", "label", "web2", "role=web", check=True)
    grid.cli("nodes", "label", "db1", "role=db", check=True)
    listed = {n["name"]: n["labels"] for n in grid.json("nodes")}
    assert listed == {"web1": {"role": "web", "tier": "front"}, "web2": {"role": "web"},
                      "db1": {"role": "db"}}
    assert "role=web,tier=front" in grid.cli("nodes", check=True).stdout
    tag = uuid.uuid4().hex[:8]
    assert set(exec_wait(grid, f"RUN echo {tag}", "label:role=web")["results"]) == \
        {"web1", "web2"}
    assert set(exec_wait(grid, f"RUN echo {tag}-t", "label:tier=fr*")["results"]) == {"web1"}
    assert set(exec_wait(grid, f"RUN echo {tag}-m", "label:role=db,web2")["results"]) == \
        {"db1", "web2"}
    cp = grid.cli("exec", "--dry-run", "--json", "-t", "label:role=web", f"RUN echo {tag}")
    assert cp.returncode == 0, cp.stderr
    assert sorted(n["name"] for n in json.loads(cp.stdout)["nodes"]) == ["web1", "web2"]
    f = grid.root / f"{tag}.yaml"
    f.write_text(f"- targets: [label:role=db]\n  jobs: [RUN: echo {tag}-y]\n")
    cp = grid.cli("orchestrate", "--wait", "--json", str(f))
    assert cp.returncode == 0, cp.stderr
    assert [set(d["results"]) for d in json.loads(cp.stdout)] == [{"db1"}]
    before = job_count(grid)
    one_line_error(grid.cli("exec", "--wait", "-t", "label:role=cache", f"RUN echo {tag}"),
                   "label:role=cache")
    one_line_error(grid.cli("exec", "-t", "label:role", f"RUN echo {tag}"), "KEY=VALUE")
    assert job_count(grid) == before


def test_facts_select_nodes_and_fill_templates(grid):
    tag = uuid.uuid4().hex[:8]
    every = exec_wait(grid, f"RUN echo {tag}", f"fact:arch={platform.machine()}")
    assert set(every["results"]) == set(NODES)
    if os_id():
        assert set(exec_wait(grid, f"RUN echo {tag}-o", f"fact:os={os_id()}*")["results"]) \
            == set(NODES)
    before = job_count(grid)
    one_line_error(grid.cli("exec", "-t", "fact:arch=sparc64", f"RUN echo {tag}"),
                   "fact:arch=sparc64")
    assert job_count(grid) == before
    doc = exec_wait(grid, "RUN echo {{ facts.hostname }}:{{ facts.cpus }}:" + tag, "web1")
    assert doc["results"]["web1"]["stdout"] == f"{socket.gethostname()}:{os.cpu_count()}:{tag}\n"


def test_labels_and_facts_survive_a_server_killed(mesh):
    mesh.server()
    mesh.add_node("web1")
    mesh.cli("nodes", "label", "web1", "role=web", "zone=a", check=True)
    mesh.cli("nodes", "label", "web1", "--remove", "zone", "owner=ops", check=True)
    facts = mesh.json("node", "web1")["facts"]
    assert facts["hostname"] == socket.gethostname()
    mesh.clients["web1"].stop()
    mesh.server_proc.signal(signal.SIGKILL)  # no goodbye: only what is on disk is kept
    mesh.server_proc.wait(timeout=10)
    mesh.server()
    doc = mesh.json("node", "web1")   # the node is away: what the database kept
    assert doc["state"] == "offline"
    assert doc["labels"] == {"owner": "ops", "role": "web"}
    assert doc["facts"] == facts
    mesh.wait_online("web1", proc=mesh.client("web1"))
    tag = uuid.uuid4().hex[:8]
    assert set(exec_wait(mesh, f"RUN echo {tag}", "label:owner=ops")["results"]) == {"web1"}
    assert mesh.json("node", "web1")["labels"] == {"owner": "ops", "role": "web"}


def test_a_blueprint_file_renders_with_the_nodes_facts(grid, tmp_path):
    """ADD --blueprint renders the placed file with the node's values, facts among them
    (data: a fact is substituted, never rendered again)."""
    tag = uuid.uuid4().hex[:8]
    src = tmp_path / f"motd-{tag}"
    src.write_text("host={{ facts.hostname }} cpus={{ facts.cpus }}\n")
    dest = tmp_path / f"placed-{tag}"
    doc = exec_wait(grid, f"ADD --blueprint {src} {dest}", "web1")
    assert doc["results"]["web1"]["status"] == "success", doc
    assert dest.read_text() == f"host={socket.gethostname()} cpus={os.cpu_count()}\n"
